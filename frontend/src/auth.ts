// Sign-in with the control plane's OIDC provider (authorization code + PKCE), through this
// origin: riptides-frontend proxies /oidc/* and the discovery document to the control plane.

const CLIENT_ID = "riptides-ui";
const KEY = "riptides.session";
const PENDING = "riptides.pending";

export interface Session {
  accessToken: string;
  refreshToken: string;
  expiresAt: number;
}

function b64url(bytes: Uint8Array): string {
  let s = "";
  bytes.forEach((b) => (s += String.fromCharCode(b)));
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function random(n: number): string {
  const b = new Uint8Array(n);
  crypto.getRandomValues(b);
  return b64url(b);
}

async function sha256(s: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s));
  return b64url(new Uint8Array(d));
}

function redirectUri(): string {
  return `${location.origin}/auth/callback`;
}

export function session(): Session | null {
  const raw = sessionStorage.getItem(KEY);
  return raw ? (JSON.parse(raw) as Session) : null;
}

function save(tokens: { access_token: string; refresh_token: string; expires_in: number }): Session {
  const s = {
    accessToken: tokens.access_token,
    refreshToken: tokens.refresh_token,
    expiresAt: Date.now() + tokens.expires_in * 1000,
  };
  sessionStorage.setItem(KEY, JSON.stringify(s));
  return s;
}

export async function signIn(): Promise<void> {
  const verifier = random(48);
  const state = random(16);
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state, back: location.hash || "#/" }));
  const q = new URLSearchParams({
    response_type: "code",
    client_id: CLIENT_ID,
    redirect_uri: redirectUri(),
    scope: "openid email offline_access",
    state,
    nonce: random(16),
    code_challenge: await sha256(verifier),
    code_challenge_method: "S256",
  });
  location.assign(`/oidc/authorize?${q}`);
}

async function tokenRequest(body: Record<string, string>): Promise<Session> {
  const resp = await fetch("/oidc/token", {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ client_id: CLIENT_ID, ...body }),
  });
  const json = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    throw new Error(`sign-in failed: ${json.error_description || json.error || resp.status}`);
  }
  return save(json);
}

/** Completes a sign-in on /auth/callback; returns the page to go back to. */
export async function completeSignIn(): Promise<string> {
  const q = new URLSearchParams(location.search);
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  sessionStorage.removeItem(PENDING);
  if (q.get("error")) {
    throw new Error(`sign-in refused: ${q.get("error_description") || q.get("error")}`);
  }
  if (!pending || pending.state !== q.get("state")) {
    throw new Error("sign-in answer does not belong to this browser tab; sign in again");
  }
  await tokenRequest({
    grant_type: "authorization_code",
    code: q.get("code") || "",
    redirect_uri: redirectUri(),
    code_verifier: pending.verifier,
  });
  return pending.back;
}

/** A valid access token, refreshed when it is about to expire; null when signed out. */
export async function accessToken(): Promise<string | null> {
  const s = session();
  if (!s) return null;
  if (s.expiresAt - Date.now() > 30_000) return s.accessToken;
  try {
    return (await tokenRequest({ grant_type: "refresh_token", refresh_token: s.refreshToken })).accessToken;
  } catch {
    sessionStorage.removeItem(KEY);
    return null;
  }
}

export async function signOut(): Promise<void> {
  const s = session();
  sessionStorage.removeItem(KEY);
  if (s) {
    await fetch("/oidc/revoke", {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ token: s.refreshToken, client_id: CLIENT_ID }),
    }).catch(() => undefined);
  }
}

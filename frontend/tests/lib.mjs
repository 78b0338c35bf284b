// Shared by the browser tests (browser.mjs, demo.mjs): the upstream test identity provider,
// the admin client of the resource API, Debian's headless Chromium, and TAP-like steps.

import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import path from "node:path";
import { chromium } from "playwright-core";

export function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const b64url = (b) => Buffer.from(b).toString("base64url");

// The upstream identity provider: signs in ed@example.com without asking (authorization code,
// ES256 ID tokens, nonce echoed). On `port` (default: a free one) on 127.0.0.1.
export async function startIdp(port) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  const jwk = publicKey.export({ format: "jwk" });
  const codes = new Map();
  port = port || (await freePort());
  const issuer = `http://127.0.0.1:${port}`;
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, issuer);
    const json = (v, code = 200) => {
      res.writeHead(code, { "content-type": "application/json" });
      res.end(JSON.stringify(v));
    };
    if (url.pathname === "/.well-known/openid-configuration") {
      return json({ issuer, authorization_endpoint: `${issuer}/authorize`, token_endpoint: `${issuer}/token`, jwks_uri: `${issuer}/jwks` });
    }
    if (url.pathname === "/jwks") return json({ keys: [{ ...jwk, kid: "idp", alg: "ES256", use: "sig" }] });
    if (url.pathname === "/authorize") {
      const code = crypto.randomBytes(16).toString("hex");
      codes.set(code, url.searchParams.get("nonce"));
      res.writeHead(302, { location: `${url.searchParams.get("redirect_uri")}?code=${code}&state=${encodeURIComponent(url.searchParams.get("state"))}` });
      return res.end();
    }
    if (url.pathname === "/token" && req.method === "POST") {
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => {
        const f = new URLSearchParams(body);
        const nonce = codes.get(f.get("code"));
        codes.delete(f.get("code"));
        if (!nonce) return json({ error: "invalid_grant" }, 400);
        const now = Math.floor(Date.now() / 1000);
        const claims = { iss: issuer, aud: f.get("client_id"), sub: "ed", email: "ed@example.com", iat: now, exp: now + 300, nonce };
        const input = `${b64url(JSON.stringify({ alg: "ES256", kid: "idp" }))}.${b64url(JSON.stringify(claims))}`;
        const sig = crypto.sign("sha256", Buffer.from(input), { key: privateKey, dsaEncoding: "ieee-p1363" });
        json({ id_token: `${input}.${b64url(sig)}`, access_token: "upstream", token_type: "Bearer" });
      });
      return;
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return { issuer, server };
}

function kubeconfigField(text, field) {
  return Buffer.from(text.match(new RegExp(`${field}: (\\S+)`))[1], "base64");
}

// The API server, CA and client certificate of an admin kubeconfig.
export function readKubeconfig(file) {
  const text = fs.readFileSync(file, "utf8");
  return {
    server: text.match(/server: (\S+)/)[1],
    ca: kubeconfigField(text, "certificate-authority-data"),
    cert: kubeconfigField(text, "client-certificate-data"),
    key: kubeconfigField(text, "client-key-data"),
  };
}

// A request to the resource API as the admin of `kc`; the parsed JSON reply.
export function adminRequest(kc, method, urlPath, body) {
  const server = new URL(kc.server);
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: server.hostname, port: server.port, path: urlPath, method, ca: kc.ca, cert: kc.cert, key: kc.key, headers: { "content-type": "application/json" } },
      (res) => {
        let data = "";
        res.on("data", (d) => (data += d));
        res.on("end", () => (res.statusCode < 300 ? resolve(JSON.parse(data)) : reject(new Error(`${method} ${urlPath}: ${res.statusCode} ${data}`))));
      },
    );
    req.on("error", reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

// Named steps: `ok - name` / `not ok - name` with the error; a failed step does not stop the
// ones after it. `summary()` prints `N passed, M failed`.
export function steps() {
  const t = { passed: 0, failed: 0 };
  t.step = async (name, fn) => {
    try {
      await fn();
      t.passed++;
      console.log(`ok - ${name}`);
    } catch (e) {
      t.failed++;
      console.log(`not ok - ${name}\n  ${String(e.stack || e).split("\n").slice(0, 6).join("\n  ")}`);
    }
  };
  t.summary = () => console.log(`${t.passed} passed, ${t.failed} failed`);
  return t;
}

// Debian's headless Chromium (CHROMIUM, default /usr/bin/chromium) and one page on it, with
// `shot(name)` (full-page screenshot into `artifacts`), `see(text)` (wait until some element
// shows it) and the console errors seen so far.
export async function openPage(artifacts) {
  fs.mkdirSync(artifacts, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  const consoleErrors = [];
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  const shot = (name) => page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
  const see = (text, timeout = 15000) => page.getByText(text, { exact: false }).first().waitFor({ timeout });
  return { browser, page, shot, see, consoleErrors };
}

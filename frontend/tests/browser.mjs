// Browser test: Debian's headless Chromium, driven by playwright-core, against the real
// riptides-controlplane and riptides-frontend binaries and an upstream OIDC issuer started
// here on loopback. Signs in, reads every page, changes a policy through the UI and sees it
// take effect, sees an invalid change refused with its reason, signs out.
// Screenshots go to frontend/test-artifacts/.
//
// Needs: the built UI (npm run build), the binaries (cargo build -p riptides-cp --bins;
// RIPTIDES_BIN_DIR, default ../target/debug), /usr/bin/chromium (or CHROMIUM).
//
// Attached mode (cp/tests/graphql_browser.rs): RIPTIDES_UI_URL names a running frontend whose
// control plane (admin kubeconfig RIPTIDES_KUBECONFIG) signs in through an upstream issuer that
// maps ed@example.com to editor; nothing is started here. With RIPTIDES_EXPECT_DAEMON set, that
// daemon must show as connected with a live mTLS connection and a refused one.

import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const here = path.dirname(new URL(import.meta.url).pathname);
const root = path.resolve(here, "..");
const binDir = process.env.RIPTIDES_BIN_DIR || path.resolve(root, "../target/debug");
const artifacts = process.env.RIPTIDES_ARTIFACTS || path.join(root, "test-artifacts");
fs.mkdirSync(artifacts, { recursive: true });
const children = [];
let passed = 0;
let failed = 0;

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const b64url = (b) => Buffer.from(b).toString("base64url");

// ---- the upstream identity provider: signs in ed@example.com without asking ----
async function startIdp() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  const jwk = publicKey.export({ format: "jwk" });
  const codes = new Map();
  const port = await freePort();
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

function start(bin, args, readyPattern) {
  const child = spawn(path.join(binDir, bin), args, { stdio: ["ignore", "ignore", "pipe"] });
  children.push(child);
  let log = "";
  return new Promise((resolve, reject) => {
    child.stderr.on("data", (d) => {
      log += d;
      const m = log.match(readyPattern);
      if (m) resolve({ child, match: m });
    });
    child.on("exit", (code) => reject(new Error(`${bin} exited with ${code}:\n${log}`)));
  });
}

function kubeconfigField(text, field) {
  return Buffer.from(text.match(new RegExp(`${field}: (\\S+)`))[1], "base64");
}

function adminRequest(kc, method, urlPath, body) {
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

async function step(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok - ${name}`);
  } catch (e) {
    failed++;
    console.log(`not ok - ${name}\n  ${String(e.stack || e).split("\n").slice(0, 6).join("\n  ")}`);
  }
}

async function launch() {
  const idp = await startIdp();
  const data = fs.mkdtempSync(path.join(os.tmpdir(), "riptides-ui-"));
  const uiPort = await freePort();
  const ui = `http://127.0.0.1:${uiPort}`;
  const cp = await start(
    "riptides-controlplane",
    [
      "--data-dir", data, "--trust-domain", "example.com",
      "--api-addr", "127.0.0.1:0", "--quic-addr", "127.0.0.1:0", "--tunnel-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0",
      "--oidc-issuer", ui, "--oidc-upstream-issuer", idp.issuer, "--oidc-upstream-client-id", "riptides-cp",
      "--oidc-role", "email_domain=example.com:editor",
    ],
    /API (https:\/\/127\.0\.0\.1:\d+)/,
  );
  const apiUrl = cp.match[1];
  const kc = readKubeconfig(path.join(data, "admin.kubeconfig"));
  const caFile = path.join(data, "cp-ca.pem");
  fs.writeFileSync(caFile, kc.ca);
  await start("riptides-frontend", ["--listen", `127.0.0.1:${uiPort}`, "--cp-url", apiUrl, "--cp-ca", caFile, "--assets", path.join(root, "dist")], /riptides-frontend: http/);
  return {
    ui,
    kc,
    close: () => {
      idp.server.close();
      for (const c of children) c.kill("SIGTERM");
      fs.rmSync(data, { recursive: true, force: true });
    },
  };
}

function readKubeconfig(file) {
  const text = fs.readFileSync(file, "utf8");
  return {
    server: text.match(/server: (\S+)/)[1],
    ca: kubeconfigField(text, "certificate-authority-data"),
    cert: kubeconfigField(text, "client-certificate-data"),
    key: kubeconfigField(text, "client-key-data"),
  };
}

async function main() {
  const attached = process.env.RIPTIDES_UI_URL;
  const env = attached
    ? { ui: attached, kc: readKubeconfig(process.env.RIPTIDES_KUBECONFIG), close: () => {} }
    : await launch();
  const { ui, kc } = env;
  const expectDaemon = process.env.RIPTIDES_EXPECT_DAEMON;

  // What the operator will look at.
  const ns = "/apis/core.riptides.io/v1alpha1/namespaces/riptides-system";
  await adminRequest(kc, "POST", `${ns}/services`, {
    apiVersion: "core.riptides.io/v1alpha1", kind: "Service", metadata: { name: "orders" },
    spec: { labels: { tier: "backend" }, addresses: [{ address: "10.0.0.5", port: 8080 }] },
  });
  await adminRequest(kc, "POST", `${ns}/workloadidentities`, {
    apiVersion: "core.riptides.io/v1alpha1", kind: "WorkloadIdentity", metadata: { name: "web" },
    spec: {
      workloadID: "app/web", scope: { daemon: { id: "node-a" } }, selectors: [{ "process:name": "web" }],
      egress: [{ selectors: [{ tier: "backend" }], connection: { tls: { mode: "MUTUAL" } }, allowedSPIFFEIDs: ["spiffe://example.com/app/orders"] }],
      ingress: [{ port: 8000, allowedSPIFFEIDs: ["spiffe://example.com/app/frontend"] }],
    },
  });

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  const consoleErrors = [];
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  const shot = (name) => page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
  const see = (text) => page.getByText(text, { exact: false }).first().waitFor({ timeout: 15000 });

  await step("signed-out visitors see the sign-in page", async () => {
    await page.goto(ui);
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    await shot("01-signin");
  });
  await step("sign-in goes through the upstream issuer and maps the editor role", async () => {
    await page.getByRole("button", { name: "Sign in" }).click();
    await see("(editor)");
    await see("Trust domain");
    await shot("02-overview");
  });
  await step("the workloads page lists the identity with its SPIFFE ID", async () => {
    await page.getByRole("link", { name: "Workloads" }).click();
    await see("spiffe://example.com/app/web");
    // The identity is scoped to daemon node-a: enforced there once it is registered.
    await see(expectDaemon ? expectDaemon : "no daemon in scope");
    await shot("03-workloads");
  });
  await step("the policy page shows what the egress rule secures and who may connect", async () => {
    await page.getByRole("link", { name: "web" }).click();
    await see("riptides-system/orders");
    await see("spiffe://example.com/app/orders");
    await see("spiffe://example.com/app/frontend");
    await shot("04-policy");
  });
  await step("a policy change applied in the UI takes effect", async () => {
    const area = page.getByLabel("resource JSON");
    const obj = JSON.parse(await area.inputValue());
    obj.spec.ingress[0].allowedSPIFFEIDs.push("spiffe://example.com/app/monitoring");
    await area.fill(JSON.stringify(obj, null, 2));
    await page.getByRole("button", { name: "Apply" }).click();
    await see("WorkloadIdentity web updated");
    await see("spiffe://example.com/app/frontend, spiffe://example.com/app/monitoring");
    const stored = await adminRequest(kc, "GET", `${ns}/workloadidentities/web`);
    if (stored.spec.ingress[0].allowedSPIFFEIDs.length !== 2) throw new Error(`not stored: ${JSON.stringify(stored.spec)}`);
    await shot("05-policy-applied");
  });
  await step("an invalid change is refused and its reason shown", async () => {
    const area = page.getByLabel("resource JSON");
    const obj = JSON.parse(await area.inputValue());
    obj.spec.ingress[0].allowedSPIFFEIDs = ["not-a-spiffe-id"];
    await area.fill(JSON.stringify(obj, null, 2));
    await page.getByRole("button", { name: "Apply" }).click();
    await page.getByRole("alert").filter({ hasText: "is invalid" }).waitFor({ timeout: 15000 });
    await shot("06-policy-refused");
  });
  await step("daemons, connections and services pages render", async () => {
    await page.getByRole("link", { name: "Daemons" }).click();
    if (expectDaemon) {
      await see(expectDaemon);
      await page.locator("td .badge.ok", { hasText: "connected" }).first().waitFor();
      await page.locator("td .badge.bad", { hasText: "unhealthy" }).first().waitFor();
      await shot("07-daemons");
    } else {
      await see("no daemon has registered yet");
    }
    await page.getByRole("link", { name: "Connections" }).click();
    if (expectDaemon) {
      await page.locator("td .badge.ok", { hasText: "mTLS" }).first().waitFor();
      await page.locator("td .badge.bad", { hasText: "refused" }).first().waitFor();
      await see("spiffe://example.com/app/orders");
      if ((await page.locator("svg.graph line.edge.mtls").count()) < 1) throw new Error("no mTLS edge in the graph");
      if ((await page.locator("svg.graph line.edge.refused").count()) < 1) throw new Error("no refused edge in the graph");
    } else {
      await see("no live connections");
    }
    await shot("08-connections");
    await page.getByRole("link", { name: "Services" }).click();
    await see("tier=backend");
    // Live: a Service another operator adds appears without a reload (GraphQL subscription
    // over WebSocket through riptides-frontend).
    await see("● live");
    await adminRequest(kc, "POST", `${ns}/services`, {
      apiVersion: "core.riptides.io/v1alpha1", kind: "Service", metadata: { name: "payments" },
      spec: { labels: { tier: "payments" }, addresses: [{ address: "10.0.0.9", port: 443 }] },
    });
    await see("tier=payments");
    await shot("09-services");
  });
  await step("sign-out ends the session", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    await page.reload();
    await page.getByRole("button", { name: "Sign in" }).waitFor();
  });
  await step("no errors in the browser console", async () => {
    if (consoleErrors.length) throw new Error(consoleErrors.join("\n"));
  });
  await browser.close();
  env.close();
}

try {
  await main();
} catch (e) {
  failed++;
  console.log(`not ok - setup\n  ${e.stack || e}`);
} finally {
  for (const c of children) c.kill("SIGTERM");
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);

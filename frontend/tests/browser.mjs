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
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { adminRequest, freePort, openPage, readKubeconfig, startIdp, steps } from "./lib.mjs";

const here = path.dirname(new URL(import.meta.url).pathname);
const root = path.resolve(here, "..");
const binDir = process.env.RIPTIDES_BIN_DIR || path.resolve(root, "../target/debug");
const artifacts = process.env.RIPTIDES_ARTIFACTS || path.join(root, "test-artifacts");
const children = [];
const t = steps();
const step = t.step;

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

  const { browser, page, shot, see, consoleErrors } = await openPage(artifacts);

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
  t.failed++;
  console.log(`not ok - setup\n  ${e.stack || e}`);
} finally {
  for (const c of children) c.kill("SIGTERM");
}
t.summary();
process.exit(t.failed ? 1 : 0);

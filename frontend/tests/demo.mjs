// Browser test of the real product in the demo topology, driven by
// chaos-tests/tests/ui_demo.rs: that test builds the namespaces of `riptides demo` (cp, node-a,
// node-b on one LAN), starts the real riptides-controlplane (with sign-in through this
// script's upstream issuer), two riptides-daemons (userspace dataplane), python3's
// http.server on node-b, the demo policy and riptides-frontend, and runs this script inside the
// cp namespace (`ip netns exec`), so Chromium, the frontend, the control plane and the issuer
// meet on that namespace's loopback.
//
// Debian's headless Chromium (playwright-core): sign in through the test issuer, both daemons
// connected, a live mTLS connection (curl on node-a as the frontend identity, held open by the
// Rust side), a refused one (curl as the unlisted intruder identity) flagged, then a policy
// change applied on the policies page (orders also admits the intruder) and the intruder's
// next connection shown as mTLS. Screenshots in RIPTIDES_ARTIFACTS.
//
// Environment: RIPTIDES_UI_URL (the frontend), RIPTIDES_IDP_PORT (the issuer's port on
// 127.0.0.1, as the control plane's --oidc-upstream-issuer names it), RIPTIDES_ARTIFACTS.
//
// Line protocol with the driver: `riptides-demo: wait <what>` on stdout asks it to act on the
// real dataplane (`traffic`: the refused connection; `policy-applied`: retry the intruder until
// the change took effect, then hold a connection open); it answers `go <what>` or
// `fail <what> <reason>` on stdin. Steps after a failed one still run; the exit status is 1 if
// any failed.

import readline from "node:readline";
import { openPage, startIdp, steps } from "./lib.mjs";

const FRONTEND = "spiffe://example.com/frontend";
const ORDERS = "spiffe://example.com/orders-service";
const INTRUDER = "spiffe://example.com/intruder";
const ui = process.env.RIPTIDES_UI_URL;
const artifacts = process.env.RIPTIDES_ARTIFACTS;
const t = steps();
const { step } = t;

// Whatever happens, never outlive the driver's patience.
setTimeout(() => {
  console.log("not ok - the whole run took longer than 10 minutes");
  process.exit(1);
}, 10 * 60 * 1000).unref();

const answers = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

// Ask the driver to do `what` on the real dataplane; resolves when it is done.
async function driver(what) {
  console.log(`riptides-demo: wait ${what}`);
  const { value, done } = await answers.next();
  if (done) throw new Error(`the driver went away while waiting for ${what}`);
  if (value.trim() !== `go ${what}`) throw new Error(`the driver could not do ${what}: ${value.trim()}`);
}

async function main() {
  if (!ui || !artifacts || !process.env.RIPTIDES_IDP_PORT) {
    throw new Error("run by chaos-tests/tests/ui_demo.rs (RIPTIDES_UI_URL, RIPTIDES_IDP_PORT, RIPTIDES_ARTIFACTS)");
  }
  const idp = await startIdp(Number(process.env.RIPTIDES_IDP_PORT));
  const { browser, page, shot, see: seeSoon, consoleErrors } = await openPage(artifacts);
  // Generous: the suite runs on two shared cores.
  const see = (text) => seeSoon(text, 30000);
  // Rows of the connections table.
  const row = (...texts) => texts.reduce((l, text) => l.filter({ hasText: text }), page.locator("tr"));
  const badge = (kind, text) => page.locator(`.badge.${kind}`, { hasText: text });
  const connections = async () => {
    await page.getByRole("link", { name: "Connections" }).click();
    await page.getByRole("heading", { name: "Connections" }).waitFor();
  };

  await step("sign-in goes through the test identity provider (editor)", async () => {
    await page.goto(ui);
    await page.getByRole("button", { name: "Sign in" }).click();
    await see("(editor)");
    await see("Trust domain");
    await shot("01-overview");
  });
  await step("the daemons page shows both real daemons connected, userspace dataplane", async () => {
    await page.getByRole("link", { name: "Daemons" }).click();
    for (const id of ["node-a", "node-b"]) {
      await row(id)
        .filter({ has: badge("ok", "connected") })
        .filter({ hasText: "userspace" })
        .first()
        .waitFor({ timeout: 30000 });
    }
    await shot("02-daemons");
  });
  await step("a live mTLS connection frontend -> orders-service shows with its badge, TLS 1.3 and graph edge", async () => {
    await connections();
    await row(FRONTEND, ORDERS, "TLSv1.3").filter({ has: badge("ok", "mTLS") }).first().waitFor({ timeout: 30000 });
    await page.locator("svg.graph line.edge.mtls").first().waitFor({ state: "attached" });
    await shot("03-connections-mtls");
  });
  await driver("traffic");
  await step("the intruder's refused connection is flagged in the table and the graph", async () => {
    await connections();
    await row(INTRUDER).filter({ has: badge("bad", "refused") }).first().waitFor({ timeout: 30000 });
    await page.locator("svg.graph line.edge.refused").first().waitFor({ state: "attached" });
    await shot("04-connections-refused");
  });
  let applied = false;
  await step("a policy change applied on the policies page: orders also admits the intruder", async () => {
    await page.getByRole("link", { name: "Workloads" }).click();
    await see(INTRUDER);
    await page.getByRole("link", { name: "orders", exact: true }).click();
    await see(`${ORDERS}`);
    const area = page.getByLabel("resource JSON");
    await area.waitFor();
    const obj = JSON.parse(await area.inputValue());
    obj.spec.ingress[0].allowedSPIFFEIDs.push(INTRUDER);
    await area.fill(JSON.stringify(obj, null, 2));
    await page.getByRole("button", { name: "Apply" }).click();
    await see("WorkloadIdentity orders updated");
    applied = true;
    await see(`${FRONTEND}, ${INTRUDER}`);
    await shot("05-policy-applied");
  });
  if (applied) {
    await driver("policy-applied");
    await step("the change took effect: the intruder's new connection shows as mTLS", async () => {
      await connections();
      await row(INTRUDER, ORDERS).filter({ has: badge("ok", "mTLS") }).first().waitFor({ timeout: 30000 });
      await shot("06-connections-after-change");
    });
  }
  await step("no errors in the browser console", async () => {
    if (consoleErrors.length) throw new Error(consoleErrors.join("\n"));
  });
  await browser.close();
  idp.server.close();
}

try {
  await main();
} catch (e) {
  t.failed++;
  console.log(`not ok - setup\n  ${e.stack || e}`);
}
t.summary();
process.exit(t.failed ? 1 : 0);

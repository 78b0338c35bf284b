// The Riptides web UI: a small single-page app on the control plane's GraphQL API.
// Every value from the API goes into the page as text (never as HTML).
import { ApiError, gql } from "./api";
import { completeSignIn, session, signIn, signOut } from "./auth";
import { connectionGraph } from "./graph";
import { startLive, stopLive } from "./live";

type Child = Node | string | null | undefined | false;

export function h(tag: string, attrs: Record<string, string> = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return el;
}

function badge(text: string, kind: "ok" | "bad" | "warn" | "muted"): HTMLElement {
  return h("span", { class: `badge ${kind}` }, text);
}

function yesNo(v: boolean | null | undefined, yes = "healthy", no = "unhealthy"): HTMLElement {
  if (v === null || v === undefined) return badge("unknown", "muted");
  return v ? badge(yes, "ok") : badge(no, "bad");
}

/** `rowClass` names a class for row `i` (e.g. to flag a refused connection), or "" for none. */
function table(headers: string[], rows: Child[][], empty = "nothing here yet", rowClass?: (i: number) => string): HTMLElement {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  const tr = (r: Child[], i: number) => {
    const cls = rowClass ? rowClass(i) : "";
    return h("tr", cls ? { class: cls } : {}, ...r.map((c) => h("td", {}, c)));
  };
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, ...headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, ...rows.map(tr)),
  );
}

/** Key-exchange groups that are post-quantum (ML-KEM alone or in a hybrid such as X25519MLKEM768). */
function isPqc(group: string): boolean {
  return /MLKEM|KYBER/i.test(group);
}

/** The TLS cell of a connection: the version and key exchange the daemon negotiated, as it reported them. */
function tlsCell(x: { tlsVersion: string | null; keyExchange: string | null }): Child {
  if (!x.tlsVersion && !x.keyExchange) return "";
  return h(
    "span",
    { class: "tls" },
    x.tlsVersion || "",
    x.keyExchange ? h("code", { class: "kx" }, x.keyExchange) : null,
    x.keyExchange && isPqc(x.keyExchange) ? badge("PQC", "ok") : null,
  );
}

function showError(e: unknown): HTMLElement {
  const msg = e instanceof Error ? e.message : String(e);
  const code = e instanceof ApiError && e.code ? ` [${e.code}]` : "";
  return h("div", { class: "error", role: "alert" }, `Error: ${msg}${code}`);
}

let me: { subject: string; role: string; canEdit: boolean; canAdmin: boolean } | null = null;
let refreshTimer: number | undefined;
let liveTimer: number | undefined;
let live = false;
/** The store revision read before the current page's data. */
let pageRevision = "0";

/**
 * An apply form holds the operator's unsaved edit or the reason a change was refused. A live
 * re-render would wipe either (focus is on the button by then, not the text), so it waits
 * until the operator navigates or a change is applied.
 */
let formHeld = false;

/** A stored object changed: re-render the page, unless the operator is editing a change. */
function onChange(): void {
  window.clearTimeout(liveTimer);
  liveTimer = window.setTimeout(() => {
    const editing = document.activeElement instanceof HTMLTextAreaElement;
    if (!editing && !formHeld) route();
  }, 300);
}

const PAGES: Record<string, { title: string; render: () => Promise<HTMLElement> }> = {
  "": { title: "Overview", render: overview },
  daemons: { title: "Daemons", render: daemons },
  workloads: { title: "Workloads", render: workloads },
  connections: { title: "Connections", render: connections },
  policies: { title: "Policies", render: policies },
  services: { title: "Services", render: services },
};

async function overview(): Promise<HTMLElement> {
  const d = await gql(`{ overview { trustDomain daemons daemonsConnected daemonsUnhealthy workloadIdentities services joinTokensUnused }
    daemons { meta { name } connected daemonHealthy driverHealthy lastSeen } }`);
  const o = d.overview;
  const card = (label: string, value: number, kind: "ok" | "bad" | "muted" = "muted") =>
    h("div", { class: `card ${kind}` }, h("div", { class: "value" }, String(value)), h("div", { class: "label" }, label));
  const unhealthy = d.daemons.filter((x: any) => !x.connected || x.daemonHealthy === false || x.driverHealthy === false);
  return h(
    "section",
    {},
    h("p", {}, "Trust domain ", h("code", {}, o.trustDomain)),
    h(
      "div",
      { class: "cards" },
      card("daemons", o.daemons),
      card("connected", o.daemonsConnected, o.daemonsConnected === o.daemons ? "ok" : "bad"),
      card("unhealthy", o.daemonsUnhealthy, o.daemonsUnhealthy ? "bad" : "ok"),
      card("workload identities", o.workloadIdentities),
      card("services", o.services),
      card("unused join tokens", o.joinTokensUnused),
    ),
    h("h3", {}, "Needs attention"),
    table(
      ["daemon", "connected", "daemon", "driver", "last seen"],
      unhealthy.map((x: any) => [x.meta.name, yesNo(x.connected, "connected", "disconnected"), yesNo(x.daemonHealthy), yesNo(x.driverHealthy), x.lastSeen || "never"]),
      "all daemons are connected and healthy",
    ),
  );
}

async function daemons(): Promise<HTMLElement> {
  const d = await gql(`{ daemons { meta { name } id spiffeId group connected lastSeen version dataplane daemonHealthy driverHealthy policyRevision transport attestationMethod } }`);
  return h(
    "section",
    {},
    table(
      ["name", "SPIFFE ID", "group", "status", "daemon", "driver", "dataplane", "version", "transport", "policy rev", "attested by", "last seen"],
      d.daemons.map((x: any) => [
        x.meta.name,
        h("code", {}, x.spiffeId || ""),
        x.group || "",
        yesNo(x.connected, "connected", "disconnected"),
        yesNo(x.daemonHealthy),
        yesNo(x.driverHealthy),
        x.dataplane || "",
        x.version || "",
        x.transport || "",
        x.policyRevision || "",
        x.attestationMethod || "",
        x.lastSeen || "never",
      ]),
      "no daemon has registered yet: create a join token and start a daemon",
    ),
  );
}

async function workloads(): Promise<HTMLElement> {
  const d = await gql(`{ workloadIdentities { meta { name namespace } spiffeId scopeDaemon scopeDaemonGroup tlsMode spec
    effectivePolicy { daemons } } }`);
  return h(
    "section",
    {},
    table(
      ["name", "SPIFFE ID", "scope", "default mode", "selectors", "enforced on"],
      d.workloadIdentities.map((w: any) => [
        h("a", { href: `#/policies/${encodeURIComponent(w.meta.namespace)}/${encodeURIComponent(w.meta.name)}` }, w.meta.name),
        h("code", {}, w.spiffeId),
        w.scopeDaemon ? `daemon ${w.scopeDaemon}` : `group ${w.scopeDaemonGroup || "?"}`,
        w.tlsMode,
        h("code", {}, JSON.stringify(w.spec.selectors || [])),
        w.effectivePolicy.daemons.length ? w.effectivePolicy.daemons.join(", ") : badge("no daemon in scope", "warn"),
      ]),
      "no workload identities yet",
    ),
  );
}

async function connections(): Promise<HTMLElement> {
  const d = await gql(`{ connections { connections { daemon local remote workloadId peerId mode state mtls refused tlsVersion keyExchange bytesIn bytesOut } errors { daemon message } } }`);
  const c = d.connections;
  const rows = c.connections.map((x: any) => [
    x.daemon,
    h("code", {}, x.workloadId || "(unidentified)"),
    x.local,
    x.remote,
    x.peerId ? h("code", {}, x.peerId) : "",
    x.refused ? badge("refused", "bad") : x.mtls ? badge("mTLS", "ok") : badge(x.mode, "warn"),
    tlsCell(x),
    x.refused ? h("span", { class: "refused-reason" }, x.state) : x.state,
    `${x.bytesIn} / ${x.bytesOut}`,
  ]);
  const section = h(
    "section",
    {},
    ...c.errors.map((e: any) => h("div", { class: "error", role: "alert" }, `daemon ${e.daemon}: ${e.message}`)),
    h("p", { class: "hint" }, "Live from the daemons over the tunnel, with the connections they refused in the last minutes; refreshes every 5 s. TLS shows the version and key exchange each handshake negotiated (PQC: a post-quantum hybrid such as X25519MLKEM768)."),
    connectionGraph(c.connections),
    table(
      ["daemon", "workload", "local", "remote", "peer identity", "security", "TLS", "state", "bytes in/out"],
      rows,
      "no live connections",
      (i) => (c.connections[i].refused ? "refused" : ""),
    ),
  );
  refreshTimer = window.setTimeout(() => route(), 5000);
  return section;
}

function policyView(p: any): HTMLElement {
  return h(
    "div",
    { class: "policy" },
    h("p", {}, "Default mode ", badge(p.defaultMode, "muted"), " · enforced on ", p.daemons.length ? p.daemons.join(", ") : badge("no daemon", "warn")),
    h("h4", {}, "Egress: what this workload may reach"),
    table(
      ["service", "addresses", "decision", "mode", "server must be"],
      p.destinations.map((x: any) => [
        x.service,
        x.addresses.join(", "),
        x.decision === "SECURED" ? badge(`rule ${x.ruleIndex}`, "ok") : badge("passthrough", "muted"),
        x.mode || "",
        x.allowedSpiffeIds.length ? x.allowedSpiffeIds.join(", ") : x.decision === "SECURED" ? "any identity of the trust domain" : "",
      ]),
      "no services defined",
    ),
    h("h4", {}, "Ingress: who may connect"),
    table(
      ["port", "mode", "enforcement", "clients allowed"],
      p.ingress.map((x: any) => [
        String(x.port),
        x.mode,
        x.enforcement === "PLAINTEXT_ALLOWED" ? badge("plaintext allowed", "warn") : badge(x.enforcement.toLowerCase().replace("_", " "), "ok"),
        x.allowedSpiffeIds.length ? x.allowedSpiffeIds.join(", ") : "any identity of the trust domain (others refused)",
      ]),
      "no ingress rules: inbound connections are not intercepted",
    ),
    h("ul", { class: "notes" }, ...p.notes.map((n: string) => h("li", {}, n))),
  );
}

function applyForm(initial: unknown): HTMLElement {
  const area = h("textarea", { rows: "14", spellcheck: "false", "aria-label": "resource JSON" }) as HTMLTextAreaElement;
  area.value = JSON.stringify(initial, null, 2);
  const out = h("div", {});
  const button = h("button", { type: "button" }, "Apply");
  area.addEventListener("input", () => {
    formHeld = true;
  });
  button.addEventListener("click", async () => {
    out.replaceChildren();
    formHeld = true;
    try {
      const object = JSON.parse(area.value);
      const r = await gql(`mutation($o: JSON!) { apply(object: $o) { kind name created resourceVersion } }`, { o: object });
      out.append(h("div", { class: "ok-msg", role: "status" }, `${r.apply.kind} ${r.apply.name} ${r.apply.created ? "created" : "updated"} (revision ${r.apply.resourceVersion})`));
      formHeld = false;
      window.setTimeout(() => route(), 800);
    } catch (e) {
      out.append(showError(e));
    }
  });
  return h("div", { class: "apply" }, h("h4", {}, "Change it"), area, button, out);
}

async function policies(): Promise<HTMLElement> {
  const [, , ns, name] = location.hash.split("/");
  const d = await gql(`{ workloadIdentities { meta { name namespace resourceVersion } spiffeId spec effectivePolicy {
    spiffeId defaultMode daemons notes destinations { service addresses decision mode ruleIndex allowedSpiffeIds }
    ingress { port mode enforcement allowedSpiffeIds } } } }`);
  const list = d.workloadIdentities.filter((w: any) => !name || (w.meta.name === decodeURIComponent(name) && w.meta.namespace === decodeURIComponent(ns)));
  return h(
    "section",
    {},
    ...list.map((w: any) =>
      h(
        "article",
        {},
        h("h3", {}, `${w.meta.name} `, h("code", {}, w.spiffeId)),
        policyView(w.effectivePolicy),
        me?.canEdit && name
          ? applyForm({ apiVersion: "core.riptides.io/v1alpha1", kind: "WorkloadIdentity", metadata: { name: w.meta.name, namespace: w.meta.namespace }, spec: w.spec })
          : null,
      ),
    ),
    list.length ? null : h("p", { class: "empty" }, "no workload identities"),
  );
}

async function services(): Promise<HTMLElement> {
  const d = await gql(`{ services { meta { name namespace } labels { key value } addresses { address port } external tlsMode serverName } }`);
  return h(
    "section",
    {},
    table(
      ["name", "labels", "addresses", "external", "TLS mode"],
      d.services.map((s: any) => [
        s.meta.name,
        s.labels.map((l: any) => `${l.key}=${l.value}`).join(", "),
        s.addresses.map((a: any) => `${a.address}:${a.port}`).join(", "),
        s.external ? "yes" : "no",
        s.tlsMode || "(from the workload's rule)",
      ]),
      "no services defined",
    ),
  );
}

function header(active: string): HTMLElement {
  const nav = h(
    "nav",
    {},
    ...Object.entries(PAGES).map(([k, p]) => h("a", { href: `#/${k}`, class: k === active ? "active" : "" }, p.title)),
  );
  const who = me
    ? h("span", { class: "who", title: me.subject }, live ? h("span", { class: "live", title: "changes appear as they happen" }, "● live ") : null, `${me.subject.replace(/^.*#/, "")} (${me.role}) `, button("Sign out", async () => {
        stopLive();
        await signOut();
        me = null;
        route();
      }))
    : null;
  return h("header", {}, h("strong", {}, "Riptides"), nav, who);
}

function button(text: string, onClick: () => void): HTMLElement {
  const b = h("button", { type: "button" }, text);
  b.addEventListener("click", onClick);
  return b;
}

async function route(): Promise<void> {
  window.clearTimeout(refreshTimer);
  const root = document.getElementById("app")!;
  if (!session()) {
    me = null;
    root.replaceChildren(
      header(""),
      h("main", { class: "signin" }, h("h2", {}, "Sign in"), h("p", {}, "Operators sign in through the control plane's identity provider."), button("Sign in", () => signIn())),
    );
    return;
  }
  const key = location.hash.replace(/^#\/?/, "").split("/")[0];
  const page = PAGES[key] ?? PAGES[""];
  let body: HTMLElement;
  try {
    const first = await gql(`{ revision me { subject role canEdit canAdmin } }`);
    pageRevision = first.revision;
    me = first.me;
    startLive(async () => pageRevision, onChange, (on) => {
      if (on !== live) {
        live = on;
        document.querySelector("header")?.replaceWith(header(location.hash.replace(/^#\/?/, "").split("/")[0]));
      }
    });
    body = await page.render();
  } catch (e) {
    if (e instanceof ApiError && e.code === "UNAUTHENTICATED") {
      sessionStorage.clear();
      return route();
    }
    body = showError(e);
  }
  root.replaceChildren(header(key), h("main", {}, h("h2", {}, page.title), body));
}

async function start(): Promise<void> {
  if (location.pathname === "/auth/callback") {
    try {
      const back = await completeSignIn();
      history.replaceState(null, "", `/${back}`);
    } catch (e) {
      history.replaceState(null, "", "/");
      document.getElementById("app")!.replaceChildren(header(""), h("main", {}, showError(e), button("Try again", () => signIn())));
      return;
    }
  }
  window.addEventListener("hashchange", () => {
    formHeld = false;
    route();
  });
  await route();
}

start();

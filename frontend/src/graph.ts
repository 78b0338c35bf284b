// Which workloads talk to which: nodes on a circle, one edge per (source, target) pair,
// green when every connection of the pair is mTLS, red when one was refused, amber otherwise.

const NS = "http://www.w3.org/2000/svg";

function svg(tag: string, attrs: Record<string, string | number>): SVGElement {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

export interface Conn {
  daemon: string;
  workloadId: string | null;
  peerId: string | null;
  remote: string;
  mtls: boolean;
  refused: boolean;
}

function short(id: string): string {
  return id.replace(/^spiffe:\/\/[^/]+/, "");
}

export function connectionGraph(conns: Conn[]): Element {
  const edges = new Map<string, { from: string; to: string; mtls: boolean; refused: boolean; n: number }>();
  for (const c of conns) {
    const from = c.workloadId ? short(c.workloadId) : `${c.daemon} (unidentified)`;
    const to = c.peerId ? short(c.peerId) : c.remote;
    const key = `${from}\u0000${to}`;
    const e = edges.get(key) ?? { from, to, mtls: true, refused: false, n: 0 };
    e.mtls = e.mtls && c.mtls;
    e.refused = e.refused || c.refused;
    e.n += 1;
    edges.set(key, e);
  }
  const names = [...new Set([...edges.values()].flatMap((e) => [e.from, e.to]))].sort();
  const W = 640;
  const H = Math.max(220, Math.min(480, 80 + names.length * 30));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "graph", role: "img", "aria-label": "workload connection graph" });
  if (!names.length) return root;
  const pos = new Map<string, [number, number]>();
  names.forEach((n, i) => {
    const a = (2 * Math.PI * i) / names.length - Math.PI / 2;
    pos.set(n, [W / 2 + (W / 2 - 140) * Math.cos(a), H / 2 + (H / 2 - 30) * Math.sin(a)]);
  });
  for (const e of edges.values()) {
    const [x1, y1] = pos.get(e.from)!;
    const [x2, y2] = pos.get(e.to)!;
    const cls = e.refused ? "edge refused" : e.mtls ? "edge mtls" : "edge plain";
    const line = svg("line", { x1, y1, x2, y2, class: cls, "stroke-width": Math.min(6, 1 + e.n) });
    const title = svg("title", {});
    title.textContent = `${e.from} → ${e.to}: ${e.n} connection(s), ${e.refused ? "refused" : e.mtls ? "mTLS" : "not mTLS"}`;
    line.append(title);
    root.append(line);
  }
  for (const n of names) {
    const [x, y] = pos.get(n)!;
    root.append(svg("circle", { cx: x, cy: y, r: 6, class: "node" }));
    const t = svg("text", { x: x + 9, y: y + 4, class: "label" });
    t.textContent = n;
    root.append(t);
  }
  return root;
}

// Live updates: a GraphQL subscription (graphql-transport-ws over WebSocket, through
// riptides-frontend) to the control plane's resource changes. The access token goes in
// connection_init, as browsers cannot set headers on a WebSocket. Reconnects while signed in.
import { accessToken } from "./auth";

export interface Change {
  change: string;
  kind: string;
  namespace: string;
  name: string;
}

let socket: WebSocket | null = null;
let stopped = true;

/** Subscribes to changes after `revision` (read before the page's data, so none is missed). */
export function startLive(revision: () => Promise<string>, onChange: (c: Change) => void, onState: (live: boolean) => void): void {
  if (socket) return;
  stopped = false;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/graphql`, "graphql-transport-ws");
  socket = ws;
  ws.onopen = async () => {
    const token = await accessToken();
    ws.send(JSON.stringify({ type: "connection_init", payload: { Authorization: `Bearer ${token}` } }));
  };
  ws.onmessage = (ev) => {
    const m = JSON.parse(String(ev.data));
    if (m.type === "connection_ack") {
      onState(true);
      revision().then((rv) =>
        ws.send(
          JSON.stringify({
            id: "changes",
            type: "subscribe",
            payload: { query: "subscription($rv: String) { resourceChanges(resourceVersion: $rv) { change kind namespace name } }", variables: { rv } },
          }),
        ),
      );
    } else if (m.type === "next" && m.payload?.data?.resourceChanges) {
      onChange(m.payload.data.resourceChanges as Change);
    } else if (m.type === "ping") {
      ws.send(JSON.stringify({ type: "pong" }));
    }
  };
  ws.onclose = () => {
    socket = null;
    onState(false);
    if (!stopped) window.setTimeout(() => !stopped && startLive(revision, onChange, onState), 5000);
  };
}

export function stopLive(): void {
  stopped = true;
  socket?.close();
  socket = null;
}

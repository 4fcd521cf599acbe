// The JavaScript client through a load balancer while the nodes behind it restart: the Go test
// TestLoadBalancerJSClients (cmd/sessiond) starts HAProxy and three nodes, runs this with
// SESSIOND_URL (the balancer) and DEVICES, and talks to it over stdin/stdout:
//   this → "ready"        every device is signed in (one user per three devices)
//   Go   → "check"        after restarting every node in turn
//   this → {JSON figures} signed in, reconnects, API calls that failed, ended events
// Each device calls the API (authFetch) every half second throughout.
import readline from "node:readline";
import WebSocket from "ws";
import { SessiondClient } from "@sessiond/client";

const BASE = process.env.SESSIOND_URL;
const N = Number(process.env.DEVICES || 30);
if (!BASE) throw new Error("SESSIOND_URL must be set (run through TestLoadBalancerJSClients)");

class NodeWS extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols, { headers: { "User-Agent": "node" } });
  }
}
const newClient = () =>
  new SessiondClient({ baseURL: BASE, WebSocket: NodeWS, storage: "memory", reconnect: { baseMs: 100, maxMs: 1000 } });

const run = `js-${process.pid}-${Date.now().toString(36)}`;
const devices = [];
const figures = { devices: N, reconnecting: 0, reopened: 0, ended: [], calls: 0, failed: 0, errors: [] };
for (let u = 0; u < Math.ceil(N / 3); u++) {
  const reg = newClient();
  await reg.register(`${run}-${u}`, "correct horse");
  reg.close();
}
await Promise.all(
  Array.from({ length: N }, async (_, i) => {
    const c = newClient();
    await c.login(`${run}-${Math.floor(i / 3)}`, "correct horse", { device: `js ${i}` });
    c.addEventListener("connection", (e) => {
      if (e.detail.state === "reconnecting") figures.reconnecting++;
      if (e.detail.state === "open") figures.reopened++;
    });
    c.addEventListener("ended", (e) => figures.ended.push(e.detail.reason));
    devices.push(c);
  }),
);

let stop = false;
const loops = devices.map(async (c) => {
  while (!stop) {
    await new Promise((r) => setTimeout(r, 400 + Math.random() * 200));
    if (stop) break;
    figures.calls++;
    // An app's call: authFetch resumes on a 401 and the client waits out a reconnect; a
    // refused connection (the balancer between health checks) is tried again.
    let ok = false;
    for (let attempt = 0; attempt < 10 && !ok; attempt++) {
      try {
        const r = await c.authFetch(new URL("/api/v1/session", BASE));
        ok = r.ok;
        if (!ok && r.status !== 503) break;
      } catch (err) {
        if (attempt === 9) figures.errors.push(String(err.code || err.message));
      }
      if (!ok) await new Promise((r) => setTimeout(r, 200));
    }
    if (!ok) figures.failed++;
  }
});
console.log("ready");

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (line.trim() !== "check") continue;
  await new Promise((r) => setTimeout(r, 1000)); // a last round on the settled cluster
  stop = true;
  await Promise.all(loops);
  figures.signedIn = devices.filter((c) => c.state.status === "signed_in").length;
  console.log(JSON.stringify(figures));
  for (const c of devices) c.close();
  break;
}
process.exit(0);

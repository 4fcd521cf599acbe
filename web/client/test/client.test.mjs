// The package's own tests, with Node's test runner, against a real sessiond: the Go test
// TestClientPackage (cmd/sessiond) starts two nodes and runs `node --test` with
//   SESSIOND_URL      a node with the default settings
//   SESSIOND_POP_URL  a node with proof of possession on
// Real OPAQUE with the library's default Argon2id, real WebSockets (the `ws` package: Node 20 has
// no WebSocket of its own), real HTTP.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import WebSocket from "ws";
import { SessiondClient, SessiondError } from "@sessiond/client";

const BASE = process.env.SESSIOND_URL;
const POP_BASE = process.env.SESSIOND_POP_URL;
if (!BASE || !POP_BASE) throw new Error("SESSIOND_URL and SESSIOND_POP_URL must be set (run through TestClientPackage)");

// Node's fetch says "User-Agent: node"; the WebSocket says the same, so the server's fingerprint
// policy sees one client.
class NodeWS extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols, { headers: { "User-Agent": "node" } });
  }
}

// tracked returns a WebSocket class that remembers its sockets, and the newest open one, so a
// test can cut a client's connection as a network would.
function tracked() {
  const list = [];
  class TrackedWS extends NodeWS {
    constructor(url, protocols) {
      super(url, protocols);
      list.push(this);
    }
  }
  return { WebSocket: TrackedWS, open: () => list.filter((s) => s.readyState === WebSocket.OPEN).at(-1) };
}

let seq = 0;
const uniqueName = (p) => `${p}-${process.pid}-${Date.now().toString(36)}-${++seq}`;
const newClient = (opts = {}) => new SessiondClient({ baseURL: BASE, WebSocket: NodeWS, storage: "memory", ...opts });

// waitEvent resolves with the detail of the next `type` event, or rejects after ms.
function waitEvent(target, type, ms = 15_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} event within ${ms} ms`)), ms);
    target.addEventListener(type, (e) => (clearTimeout(timer), resolve(e.detail)), { once: true });
  });
}

async function account(base = BASE) {
  const name = uniqueName("js");
  const c = newClient({ baseURL: base });
  await c.register(name, "correct horse");
  c.close();
  return name;
}

test("register, login, resume, refresh and getToken", async () => {
  const name = await account();
  const storage = (() => {
    const m = new Map();
    return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, v), removeItem: (k) => m.delete(k) };
  })();
  const a = newClient({ storage });
  const states = [];
  const unsubscribe = a.subscribe((s) => states.push(s.status));
  const { session, exportKey } = await a.login(name, "correct horse", { device: "node test" });
  assert.equal(session.device, "node test");
  assert.equal(typeof exportKey, "string");
  assert.match(a.getToken(), /^sdt_/);
  assert.equal(a.state.status, "signed_in");
  assert.deepEqual(states.slice(0, 2), ["signed_out", "signed_in"]);
  const before = a.state;
  assert.equal(a.state, before, "an unchanged state keeps its identity");

  // A second client on the same storage (a reload) resumes the same session.
  const b = newClient({ storage });
  const resumed = await b.resume();
  assert.equal(resumed.id, session.id);

  const oldToken = a.getToken();
  const r = await a.refresh();
  assert.ok(Date.parse(r.idle_expires_at) > 0);
  assert.notEqual(a.getToken(), oldToken, "refresh rotates the token");
  unsubscribe();
  await a.logout();
  b.close();
  assert.equal(a.getToken(), null);
});

test("wrong password is auth_failed", async () => {
  const name = await account();
  const c = newClient();
  await assert.rejects(c.login(name, "wrong"), (e) => e instanceof SessiondError && e.code === "auth_failed");
  c.close();
});

test("authFetch adds the token; a 401 resumes once and repeats the request", async () => {
  const name = await account();
  const c = newClient();
  const { session } = await c.login(name, "correct horse");
  // sessiond's own API through authFetch.
  const res = await c.authFetch(`${BASE}/api/v1/session`);
  assert.equal(res.status, 200);
  assert.equal((await res.json()).session.id, session.id);

  // An upstream that refuses the first request, as an API would while its cache is stale.
  let calls = 0;
  const seen = [];
  const upstream = http.createServer((req, resp) => {
    calls++;
    seen.push(req.headers.authorization);
    resp.statusCode = calls === 1 ? 401 : 200;
    resp.end(calls === 1 ? "" : "ok");
  });
  await new Promise((r) => upstream.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${upstream.address().port}/orders`;
  const out = await c.authFetch(url, { method: "POST", body: "{}", headers: { "Content-Type": "application/json" } });
  assert.equal(out.status, 200);
  assert.equal(calls, 2, "one retry after the resume");
  assert.equal(seen[0], `Bearer ${c.getToken()}`);
  assert.equal(c.session.id, session.id, "the resume keeps the session");
  upstream.close();
  await c.logout();
});

test("authFetch reports ended when the session is over", async () => {
  const name = await account();
  const net = tracked();
  const a = newClient({ WebSocket: net.WebSocket, reconnect: { baseMs: 60_000, maxMs: 60_000 } });
  await a.login(name, "correct horse");
  const b = newClient();
  await b.login(name, "correct horse");
  // Cut a's socket (the client now waits a minute to reconnect), then sign a out from b: no
  // notice can reach a; only its next request can tell.
  const closed = waitEvent(a, "connection");
  net.open().terminate();
  await closed;
  await b.revokeOthers();
  const ended = waitEvent(a, "ended");
  const res = await a.authFetch(`${BASE}/api/v1/session`);
  assert.equal(res.status, 401);
  const detail = await ended;
  assert.equal(detail.forced, true);
  assert.equal(a.state.status, "signed_out");
  assert.equal(a.getToken(), null);
  await b.logout();
});

test("reauth keeps the session and yields the same export key", async () => {
  const name = await account();
  const c = newClient();
  const { session, exportKey } = await c.login(name, "correct horse");
  const again = await c.reauth("correct horse");
  assert.equal(again.exportKey, exportKey);
  assert.equal(c.session.id, session.id);
  await assert.rejects(c.reauth("wrong"), (e) => e.code === "auth_failed");
  assert.equal(c.session.id, session.id);
  await c.logout();
});

test("a revocation from another device reaches the client as ended", async () => {
  const name = await account();
  const a = newClient();
  await a.login(name, "correct horse");
  const b = newClient();
  await b.login(name, "correct horse");
  const statuses = [];
  a.subscribe((s) => statuses.push(s.status));
  const revoked = waitEvent(a, "notice.revoked");
  const ended = waitEvent(a, "ended");
  await b.revokeSession(a.session.id);
  assert.equal((await revoked).reason, "revoked_by_user");
  assert.deepEqual(await ended, { reason: "revoked_by_user", forced: true });
  assert.equal(statuses.at(-1), "signed_out");
  await b.logout();
});

test("a session revoked while the page was away: resume says why", async () => {
  const name = await account();
  const storage = (() => {
    const m = new Map();
    return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, v), removeItem: (k) => m.delete(k) };
  })();
  const a = newClient({ storage });
  const { session } = await a.login(name, "correct horse");
  a.close(); // the page goes away; its token stays stored
  const b = newClient();
  await b.login(name, "correct horse");
  await b.revokeSession(session.id);
  const reloaded = newClient({ storage });
  const ended = waitEvent(reloaded, "ended");
  assert.equal(await reloaded.resume(), null);
  assert.deepEqual(await ended, { reason: "revoked_by_user", forced: true });
  assert.equal(reloaded.getToken(), null);
  await b.logout();
});

test("proof of possession: authFetch, the vault and resume are signed", async () => {
  const name = await account(POP_BASE);
  const net = tracked();
  const c = newClient({ baseURL: POP_BASE, WebSocket: net.WebSocket, reconnect: { baseMs: 50, maxMs: 200 } });
  const { session } = await c.login(name, "correct horse");
  assert.equal(session.pop, true);
  const res = await c.authFetch(`${POP_BASE}/api/v1/session`);
  assert.equal(res.status, 200);
  // The bare token, without the proof, is refused.
  const bare = await fetch(`${POP_BASE}/api/v1/session`, { headers: { Authorization: `Bearer ${c.getToken()}` } });
  assert.equal(bare.status, 401);
  assert.equal((await bare.json()).code, "proof_invalid");
  const etag = await c.http.putVault(new TextEncoder().encode("secret note"), { ifNoneMatch: true });
  assert.ok(etag);
  const v = await c.http.getVault();
  assert.equal(new TextDecoder().decode(v.data), "secret note");
  // A reconnect resumes with a proof: cut the socket and wait for the client to come back.
  const back = new Promise((resolve) => {
    c.addEventListener("connection", (e) => e.detail.state === "open" && resolve(), { once: false });
  });
  net.open().terminate();
  await back;
  assert.equal(c.session.id, session.id);
  assert.equal((await c.authFetch(`${POP_BASE}/api/v1/session`)).status, 200);
  await c.logout();
});

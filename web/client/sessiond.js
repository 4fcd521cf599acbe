// @sessiond/client: the browser (and Node) client of the sessiond wire protocol (v1).
// Types: sessiond.d.ts next to this file. Documentation: README.md of this package.
//
//   import { SessiondClient } from "@sessiond/client";
//   const client = new SessiondClient({ baseURL: "https://auth.example.com" });
//   client.subscribe((state) => render(state.status, state.session));
//   client.addEventListener("ended", (e) => showSignedOut(e.detail.reason));
//   const resumed = await client.resume();            // after a reload: null when signed out
//   const { session, exportKey } = await client.login("alice", "correct horse");
//   const orders = await client.authFetch("/api/orders");   // your API, with the token
//
// What it does for you:
//   - one WebSocket to /ws with the subprotocol "sessiond.v1"; request/reply by message id;
//   - OPAQUE registration, login, re-authentication and password change through the peer
//     dependency @serenity-kit/opaque, imported by name on first use (a bundler resolves it; a
//     page without one maps it with an import map, as the demo page does);
//   - resume after a reload from the token it keeps (sessionStorage by default; see `storage`);
//   - session.refresh, storing the rotated token;
//   - proof of possession when the server turns it on (every HTTP request and resume signed);
//   - reconnect with exponential back-off and jitter (and resume) after 1001, 1013,
//     1011/1012/1014, 4429 or a dropped network, but never after 1000, 4401 (expired) or 4403
//     (revoked), which end the session for good;
//   - an event for every server notice, plus "session", "ended" and "connection", and
//     subscribe()/state for UI stores;
//   - authFetch() for your own API and client.http for sessiond's: session, refresh, sessions,
//     revoke, revoke-others and the vault with ETags.
//
// Events (all CustomEvents; the payload is in event.detail):
//   "notice.refresh_due"      the wire notice {type, idle_expires_at, in_ms}: ask the user, then
//                             call refresh() to stay signed in
//   "notice.reauth_due"       {type, expires_at, in_ms}: the absolute deadline is near; only a new
//                             login helps (login() works while signed in: it replaces the session)
//   "notice.expired"          {type, reason: "idle"|"absolute"}; "ended" follows
//   "notice.revoked"          {type, reason}; "ended" follows
//   "notice.sessions_changed" {type, sessions}: the user's whole device list
//   "session"                 the current session object (no token) after login, resume,
//                             refresh or a deadline change the client learned of
//   "ended"                   {reason, forced}: the session is over and the token is gone.
//                             forced=false for this client's own logout(); otherwise reason is
//                             the wire reason (idle, absolute, logout, revoked_by_user,
//                             password_changed, token_reuse, ...; also when the session ended
//                             while the page was away: the server says why on the resume) or
//                             "session_invalid" when the server refused a resume without saying why
//   "connection"              {state: "open"|"reconnecting"|"closed", attempt?, delay_ms?}
//
// Errors: every method rejects with a SessiondError {code, message, status?, reason?}. Codes are the
// server's (auth_failed, username_taken, rate_limited, session_invalid, ...) plus client-side
// ones: "connect_failed", "closed", "timeout", "offline", "protocol", "opaque_unavailable".
//
// ---------------------------------------------------------------------------------------------
// Where the token lives, and why (see also README.md, "Token storage")
//
// By default the session token is kept in sessionStorage (key "sessiond", with the session id,
// the username and, with proof of possession, the proof key):
//   + it survives a reload of the tab, so the page resumes without asking for the password;
//   + it is not shared with other tabs (each tab signs in as its own device) and is gone when the
//     tab or the browser closes;
//   + it is never a cookie, so the browser never attaches it by itself: no CSRF, and the API is
//     called with an explicit Authorization: Bearer header;
//   - like anything in the page's reach, script injected into the origin (XSS) can read it.
//     Keep a strict Content-Security-Policy (the demo page does) and no third-party script.
// A tab duplicated by the browser copies its sessionStorage. Both copies then hold one session;
// when one rotates the token (refresh), it tells the others through a BroadcastChannel so that
// none of them later presents an old token, which the server would treat as token theft.
//
// The OPAQUE export key is NOT persisted anywhere: login() and register() return it and forget
// it. It is a stable per-password secret (the demo derives its note-encryption key from it), so
// storing it would put a long-lived key where XSS can read it. The trade-off: after a reload the
// session resumes but the export key is gone, and whatever it protects needs the password again:
// reauth(password) proves it on the signed-in connection and yields the key, keeping the session.
// ---------------------------------------------------------------------------------------------

/** The WebSocket subprotocol of the wire contract. */
export const SUBPROTOCOL = "sessiond.v1";

const CONNECT_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
const HEARTBEAT_MS = 25_000; // pings keep NATs open and detect dead sockets; they are not activity
const READY_WAIT_MS = 15_000; // how long a call waits for a reconnect before failing "offline"
const ANON_REUSE_MS = 10_000; // an unauthenticated socket older than this is not reused

// Close codes after which a client with a live session reconnects and resumes.
const RECONNECT_CODES = new Set([1001, 1005, 1006, 1011, 1012, 1013, 1014, 4429]);

/** An error from the server (its code and message) or from this client. */
export class SessiondError extends Error {
  constructor(code, message, status) {
    super(message || code);
    this.name = "SessiondError";
    this.code = code;
    if (status !== undefined) this.status = status;
  }
}

/**
 * The delay before reconnect attempt `attempt` (0-based): exponential from baseMs, capped at
 * maxMs, with "equal jitter" so that many clients dropped at once do not return in lockstep.
 */
export function backoffDelay(attempt, baseMs = 500, maxMs = 30_000) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

let opaquePromise = null;

/**
 * Loads @serenity-kit/opaque (a peer dependency, imported by name: a bundler resolves it, a page
 * without one maps it with an import map) and waits for its WebAssembly to be ready. Rejects
 * with code "opaque_unavailable" when it cannot be loaded.
 */
export function loadOpaque() {
  if (!opaquePromise) {
    opaquePromise = import("@serenity-kit/opaque")
      .then(async (mod) => {
        await mod.ready;
        return mod;
      })
      .catch((err) => {
        opaquePromise = null;
        throw new SessiondError(
          "opaque_unavailable",
          "The OPAQUE library (@serenity-kit/opaque) could not be loaded. " + `(${err && err.message ? err.message : err})`,
        );
      });
  }
  return opaquePromise;
}

// Lets the browser paint (a "working..." state) before a CPU-heavy, blocking OPAQUE step:
// Argon2id with 64 MiB runs on the main thread for about a second.
function nextPaint() {
  return new Promise((resolve) => {
    if (typeof requestAnimationFrame === "function") requestAnimationFrame(() => setTimeout(resolve, 0));
    else setTimeout(resolve, 0);
  });
}

// ---------------------------------------------------------------------------------------------
// Proof of possession (PROTOCOL.md section 5): when the server turns it on, every request
// carries an HMAC under a key derived from the OPAQUE session key, which never travels.

const POP_INFO = "sessiond proof-of-possession v1";
const utf8 = (s) => new TextEncoder().encode(s);

function b64u(bytes) {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let bin = "";
  for (let i = 0; i < b.length; i++) bin += String.fromCharCode(b[i]);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function b64uDecode(s) {
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** Derives the proof-of-possession key (base64url) from the OPAQUE session key. */
async function derivePopKey(sessionKey, sessionId) {
  const ikm = await crypto.subtle.importKey("raw", b64uDecode(sessionKey), "HKDF", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: utf8(sessionId), info: utf8(POP_INFO) },
    ikm,
    256,
  );
  return b64u(bits);
}

/** The Sessiond-PoP value for a request: "t=<unix ms>, sig=<base64url HMAC-SHA256>". */
async function signProof(popKey, method, pathAndQuery, body, tMs) {
  const key = await crypto.subtle.importKey("raw", b64uDecode(popKey), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const bodyHash = b64u(await crypto.subtle.digest("SHA-256", body || new Uint8Array(0)));
  const t = Math.round(tMs);
  const sig = await crypto.subtle.sign("HMAC", key, utf8(`sessiond-pop-v1\n${method}\n${pathAndQuery}\n${t}\n${bodyHash}`));
  return `t=${t}, sig=${b64u(sig)}`;
}

// The bytes of a fetch body, for signing; null when it cannot be read twice (a stream, a form).
async function bodyBytes(body) {
  if (body === undefined || body === null) return new Uint8Array(0);
  if (typeof body === "string") return utf8(body);
  if (body instanceof URLSearchParams) return utf8(body.toString());
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  if (typeof Blob === "function" && body instanceof Blob) return new Uint8Array(await body.arrayBuffer());
  return null;
}

// ---------------------------------------------------------------------------------------------
// Key stretching off the main thread: finishLogin/finishRegistration (Argon2id) in a Worker.

class StretchWorker {
  constructor(worker, moduleURL) {
    this.worker = worker;
    this.moduleURL = moduleURL;
    this.seq = 0;
    this.pending = new Map();
    worker.onmessage = (ev) => {
      const p = this.pending.get(ev.data && ev.data.id);
      if (!p) return;
      this.pending.delete(ev.data.id);
      if (ev.data.error !== undefined) p.reject(new Error(ev.data.error));
      else p.resolve(ev.data.result);
    };
    worker.onerror = (ev) => {
      ev.preventDefault();
      this.fail(new Error(ev.message || "the worker failed"));
    };
  }

  run(op, args) {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, op, args, moduleURL: this.moduleURL });
    });
  }

  fail(err) {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.worker.terminate();
  }
}

// The default worker: opaque-worker.js next to this file, given @serenity-kit/opaque's URL as
// this page resolves it (its import map). Null where that cannot work (no Worker, no
// import.meta.resolve, a bundle that moved this file): the steps then run on the main thread.
function defaultStretchWorker() {
  try {
    if (typeof Worker !== "function" || typeof import.meta.resolve !== "function") return null;
    const moduleURL = import.meta.resolve("@serenity-kit/opaque");
    if (!/^(https?|blob|data):/.test(moduleURL)) return null;
    return new StretchWorker(new Worker(new URL("./opaque-worker.js", import.meta.url), { type: "module" }), moduleURL);
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Channel: one WebSocket with request/reply by id. It knows nothing about sessions.

class Channel {
  constructor(ws, handlers) {
    this.ws = ws;
    this.handlers = handlers; // {onNotice(msg), onClose(code, reason)}; null once detached
    this.pending = new Map(); // id -> {resolve, reject, expect, timer}
    this.seq = 0;
    this.closed = false;
    this.authenticated = false;
    this.heartbeat = null;
    this.missedPongs = 0;
    this.openedAt = Date.now();
    ws.addEventListener("message", (ev) => this.onMessage(ev));
    ws.addEventListener("close", (ev) => this.onClose(ev.code, ev.reason));
  }

  static open(url, handlers, WebSocketImpl) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocketImpl(url, SUBPROTOCOL);
      } catch (err) {
        reject(new SessiondError("connect_failed", `cannot open ${url}: ${err.message}`));
        return;
      }
      const timer = setTimeout(() => {
        ws.close();
        reject(new SessiondError("connect_failed", "the server did not answer in time"));
      }, CONNECT_TIMEOUT_MS);
      const fail = () => {
        clearTimeout(timer);
        reject(new SessiondError("connect_failed", "cannot reach the server"));
      };
      ws.addEventListener("error", fail, { once: true });
      ws.addEventListener(
        "open",
        () => {
          clearTimeout(timer);
          ws.removeEventListener("error", fail);
          if (ws.protocol !== SUBPROTOCOL) {
            ws.close(1000);
            reject(new SessiondError("protocol", `the server chose subprotocol "${ws.protocol}"`));
            return;
          }
          resolve(new Channel(ws, handlers));
        },
        { once: true },
      );
    });
  }

  onMessage(ev) {
    if (typeof ev.data !== "string") return; // the protocol has text frames only
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (!msg || typeof msg !== "object" || typeof msg.type !== "string") return;
    if (msg.type === "pong") this.missedPongs = 0;
    if (msg.type.startsWith("notice.")) {
      if (this.handlers) this.handlers.onNotice(msg);
      return;
    }
    const p = msg.id !== undefined ? this.pending.get(msg.id) : undefined;
    if (!p) return; // a reply to a request we gave up on, or an id-less error
    this.pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.type === "error") {
      const e = new SessiondError(String(msg.code || "error"), String(msg.message || ""));
      if (typeof msg.reason === "string" && msg.reason) e.reason = msg.reason; // why a session ended
      p.reject(e);
    }
    else if (p.expect && msg.type !== p.expect) p.reject(new SessiondError("protocol", `expected ${p.expect}, got ${msg.type}`));
    else p.resolve(msg);
  }

  onClose(code, reason) {
    if (this.closed) return;
    this.closed = true;
    this.stopHeartbeat();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new SessiondError("closed", `connection closed (${code}${reason ? `: ${reason}` : ""})`));
    }
    this.pending.clear();
    if (this.handlers) this.handlers.onClose(code, reason);
  }

  // Sends {type, id, ...fields}; resolves with the reply of type `expect` (any type when null).
  request(type, fields = {}, expect = null, timeoutMs = REQUEST_TIMEOUT_MS) {
    if (this.closed || this.ws.readyState !== 1) {
      return Promise.reject(new SessiondError("closed", "not connected"));
    }
    const id = `c${++this.seq}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new SessiondError("timeout", `no reply to ${type}`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, expect, timer });
      this.ws.send(JSON.stringify({ type, id, ...fields }));
    });
  }

  startHeartbeat() {
    this.stopHeartbeat();
    this.heartbeat = setInterval(() => {
      if (this.missedPongs >= 2) {
        // Two pings without a pong: the socket is dead even if the browser has not noticed.
        this.ws.close(4000, "heartbeat lost");
        this.onClose(1006, "heartbeat lost");
        return;
      }
      this.missedPongs++;
      try {
        this.ws.send(JSON.stringify({ type: "ping" }));
      } catch {
        /* the close event follows */
      }
    }, HEARTBEAT_MS);
  }

  stopHeartbeat() {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  // Stops delivering events; used for a channel that is being retired.
  detach() {
    this.handlers = null;
    this.stopHeartbeat();
  }

  close(code = 1000, reason = "") {
    this.detach();
    if (!this.closed) {
      try {
        this.ws.close(code, reason);
      } catch {
        /* already closing */
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Token storage.

/** Keeps {token, session_id, username} in a Storage (default: sessionStorage). */
class TokenStore {
  constructor(storage, key) {
    this.storage = storage;
    this.key = key;
  }
  load() {
    try {
      const v = JSON.parse(this.storage.getItem(this.key) || "null");
      return v && typeof v.token === "string" ? v : null;
    } catch {
      return null;
    }
  }
  save(v) {
    try {
      this.storage.setItem(this.key, JSON.stringify(v));
    } catch {
      /* storage full or disabled: the session then lasts as long as the page */
    }
  }
  clear() {
    try {
      this.storage.removeItem(this.key);
    } catch {
      /* ignore */
    }
  }
}

function memoryStorage() {
  const m = new Map();
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => m.set(k, String(v)),
    removeItem: (k) => m.delete(k),
  };
}

function webStorage(name) {
  try {
    const s = globalThis[name];
    if (s && typeof s.getItem === "function") return s;
  } catch {
    /* access denied (e.g. sandboxed iframe) */
  }
  return memoryStorage(); // Node, workers, or storage disabled: the session lasts as long as the page
}

/**
 * The token storage for the `storage` option: "session" (default: sessionStorage, falling back
 * to memory where there is none), "local" (localStorage), "memory", or any object with
 * getItem/setItem/removeItem (synchronous, string values).
 */
function resolveStorage(s) {
  if (s === undefined || s === "session") return webStorage("sessionStorage");
  if (s === "local") return webStorage("localStorage");
  if (s === "memory") return memoryStorage();
  if (s && typeof s.getItem === "function" && typeof s.setItem === "function" && typeof s.removeItem === "function") return s;
  throw new TypeError('storage must be "session", "local", "memory" or an object with getItem, setItem and removeItem');
}

// ---------------------------------------------------------------------------------------------
// HTTP API.

/**
 * The HTTP API with the client's current token (client.http). Every method rejects with a
 * SessiondError carrying the server's code and the HTTP status.
 */
export class SessiondHTTP {
  constructor(baseURL, getToken, onRotated, sign) {
    this.baseURL = baseURL;
    this.getToken = getToken;
    this.onRotated = onRotated;
    this.sign = sign || (async () => null); // (method, pathAndQuery, body) -> Sessiond-PoP value or null
  }

  async request(method, path, { body, headers = {}, raw = false } = {}) {
    const token = this.getToken();
    if (!token) throw new SessiondError("unauthenticated", "not signed in", 401);
    const proof = await this.sign(method, path, body);
    if (proof) headers = { ...headers, "Sessiond-PoP": proof };
    let res;
    try {
      res = await fetch(this.baseURL + path, {
        method,
        headers: { Authorization: `Bearer ${token}`, ...headers },
        body,
        cache: "no-store",
        credentials: "omit", // the token is the credential; no cookies involved
      });
    } catch (err) {
      throw new SessiondError("connect_failed", `cannot reach the server: ${err.message}`);
    }
    if (!res.ok) {
      let code = "http_" + res.status;
      let message = res.statusText;
      try {
        const e = await res.json();
        if (e && typeof e.code === "string") ({ code, message } = e);
      } catch {
        /* not JSON */
      }
      throw new SessiondError(code, message, res.status);
    }
    if (raw || res.status === 204) return res;
    return res.json();
  }

  /** GET /api/v1/session -> the session object (no token). */
  async session() {
    return (await this.request("GET", "/api/v1/session")).session;
  }

  /** POST /api/v1/session/refresh -> {idle_expires_at, expires_at}; the new token is stored. */
  async refresh() {
    const r = await this.request("POST", "/api/v1/session/refresh");
    this.onRotated(r);
    return { idle_expires_at: r.idle_expires_at, expires_at: r.expires_at };
  }

  /** GET /api/v1/sessions -> the device list. */
  async sessions() {
    return (await this.request("GET", "/api/v1/sessions")).sessions;
  }

  /** DELETE /api/v1/sessions/{id}. */
  async revoke(sessionId) {
    await this.request("DELETE", `/api/v1/sessions/${encodeURIComponent(sessionId)}`);
  }

  /** POST /api/v1/sessions/revoke-others -> the revoked session ids. */
  async revokeOthers() {
    return (await this.request("POST", "/api/v1/sessions/revoke-others")).session_ids;
  }

  /** GET /api/v1/vault -> {data: Uint8Array, etag} or null when nothing was ever stored. */
  async getVault() {
    try {
      const res = await this.request("GET", "/api/v1/vault", { raw: true });
      return { data: new Uint8Array(await res.arrayBuffer()), etag: res.headers.get("ETag") };
    } catch (err) {
      if (err.status === 404) return null;
      throw err;
    }
  }

  /**
   * PUT /api/v1/vault -> the new ETag. Pass {ifMatch: etag} to replace the version you read, or
   * {ifNoneMatch: true} to create it only if none exists; a lost race rejects with status 412
   * (code "precondition_failed").
   */
  async putVault(data, { ifMatch, ifNoneMatch } = {}) {
    const headers = { "Content-Type": "application/octet-stream" };
    if (ifMatch) headers["If-Match"] = ifMatch;
    if (ifNoneMatch) headers["If-None-Match"] = "*";
    const res = await this.request("PUT", "/api/v1/vault", { body: data, headers, raw: true });
    return res.headers.get("ETag");
  }
}

// ---------------------------------------------------------------------------------------------
// The client.

/**
 * A sessiond client for one browser tab.
 *
 * Options (all optional):
 *   baseURL        the server, default location.origin (the WebSocket URL is derived from it)
 *   storage        where the token lives, default sessionStorage (see the note at the top)
 *   storageKey     default "sessiond"
 *   device         default device label sent at login (the server derives one when empty)
 *   WebSocket      WebSocket implementation, default globalThis.WebSocket
 *   reconnect      {baseMs: 500, maxMs: 30000} back-off bounds
 */
export class SessiondClient extends EventTarget {
  #base;
  #wsURL;
  #store;
  #WS;
  #device;
  #reconnectOpts;
  #chan = null; // the current channel (anonymous or authenticated)
  #session = null; // current session object, without token
  #creds = null; // {token, session_id, username}
  #skewMs = 0; // server clock minus local clock, estimated
  #attempt = 0;
  #reconnectTimer = null;
  #reconnecting = false;
  #resuming = false; // a reconnect attempt is in flight
  #readyWaiters = [];
  #refreshInFlight = false;
  #refreshUncertain = false;
  #loggingOut = false;
  #bc = null;
  #subs = new Set();
  #workerOpt;
  #worker; // StretchWorker, null (main thread), or undefined (not decided yet)
  #stretching = "";
  #snap = null;
  #revalidating = null;

  constructor(opts = {}) {
    super();
    this.#base = (opts.baseURL || globalThis.location.origin).replace(/\/+$/, "");
    const u = new URL(this.#base + "/ws");
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    this.#wsURL = u.href;
    this.#store = new TokenStore(resolveStorage(opts.storage), opts.storageKey || "sessiond");
    this.#WS = opts.WebSocket || globalThis.WebSocket;
    this.#device = opts.device || "";
    this.#reconnectOpts = { baseMs: 500, maxMs: 30_000, ...(opts.reconnect || {}) };
    this.#workerOpt = opts.worker;
    this.#creds = this.#store.load();
    this.http = new SessiondHTTP(
      this.#base,
      () => this.#creds && this.#creds.token,
      (r) => this.#rotated(r),
      (method, path, body) => this.#proof(method, path, body),
    );
    if (typeof BroadcastChannel === "function") {
      this.#bc = new BroadcastChannel(`sessiond:${opts.storageKey || "sessiond"}`);
      if (typeof this.#bc.unref === "function") this.#bc.unref(); // Node: do not keep the process alive
      this.#bc.onmessage = (ev) => {
        const m = ev.data;
        // A duplicated tab holding the same session adopts the rotated token.
        if (m && m.type === "token" && this.#creds && m.session_id === this.#creds.session_id) {
          this.#creds = { ...this.#creds, token: m.token };
          this.#store.save(this.#creds);
        }
      };
    }
    if (typeof addEventListener === "function") {
      addEventListener("online", () => {
        if (this.#reconnecting) this.#reconnectNow();
      });
    }
  }

  /** The current session (no token), or null when signed out. */
  get session() {
    return this.#session;
  }

  /** The username this session was signed in with (kept with the token), or "". */
  get username() {
    return (this.#creds && this.#creds.username) || "";
  }

  /** Whether a token is stored (a session may be resumable). */
  get hasStoredSession() {
    return !!(this.#creds && this.#creds.token);
  }

  /** The server's current time in ms since the epoch, corrected for the estimated clock skew. */
  serverNow() {
    return Date.now() + this.#skewMs;
  }

  // --- connection handling -------------------------------------------------------------------

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
    if (type === "session" || type === "ended" || type === "connection") this.#changed();
  }

  /**
   * A snapshot of the client's state, {status, session, username}: status is "signed_out",
   * "signed_in" or "reconnecting". The same object until something changes, so it can back a
   * React useSyncExternalStore or a Svelte/Vue store directly.
   */
  get state() {
    if (!this.#snap) {
      const status = !this.#session ? "signed_out" : this.#reconnecting ? "reconnecting" : "signed_in";
      this.#snap = Object.freeze({ status, session: this.#session, username: this.username });
    }
    return this.#snap;
  }

  /** Calls fn(state) now and on every change of state; returns the function that unsubscribes. */
  subscribe(fn) {
    this.#subs.add(fn);
    fn(this.state);
    return () => {
      this.#subs.delete(fn);
    };
  }

  #changed() {
    const prev = this.#snap;
    this.#snap = null;
    const next = this.state;
    if (prev && prev.status === next.status && prev.session === next.session && prev.username === next.username) {
      this.#snap = prev; // nothing a subscriber can see changed: keep the snapshot's identity
      return;
    }
    for (const fn of [...this.#subs]) {
      try {
        fn(next);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  /**
   * Where the last OPAQUE step with key stretching ran: "worker", "main-thread", or "" before
   * the first.
   */
  get stretching() {
    return this.#stretching;
  }

  // Runs client.finishLogin / finishRegistration, in the worker when there is one; a worker
  // that fails is dropped and the step runs on the main thread (where it always works).
  async #finish(opaque, op, args) {
    if (this.#worker === undefined) {
      const w = this.#workerOpt;
      this.#worker = w === false ? null : typeof w === "function" ? new StretchWorker(w(), undefined) : defaultStretchWorker();
    }
    if (this.#worker) {
      try {
        const result = await this.#worker.run(op, args);
        this.#stretching = "worker";
        return result;
      } catch {
        this.#worker.fail(new Error("dropped"));
        this.#worker = null;
      }
    }
    await nextPaint();
    this.#stretching = "main-thread";
    return opaque.client[op](args);
  }

  /** The current session token, or null. Prefer authFetch, which also signs when needed. */
  getToken() {
    return (this.#creds && this.#creds.token) || null;
  }

  // The Sessiond-PoP value for a request when this session has proof of possession, else null
  // (the body is only read when there is something to sign).
  async #proof(method, pathAndQuery, body) {
    const key = this.#creds && this.#creds.pop_key;
    if (!key) return null;
    const bytes = await bodyBytes(body);
    if (bytes === null) {
      throw new SessiondError("unsupported_body", "with proof of possession the body must be a string, bytes, a Blob or URLSearchParams");
    }
    return signProof(key, method.toUpperCase(), pathAndQuery, bytes, this.serverNow());
  }

  async #resumeFields() {
    const fields = { token: this.#creds.token };
    const proof = await this.#proof("RESUME", "/ws", this.#creds.token);
    if (proof) fields.proof = proof;
    return fields;
  }

  #handlers() {
    const handlers = {
      onNotice: (msg) => this.#onNotice(msg),
      onClose: (code, reason) => this.#onClose(handlers, code, reason),
    };
    return handlers;
  }

  async #openChannel() {
    return Channel.open(this.#wsURL, this.#handlers(), this.#WS);
  }

  // The current channel when it is anonymous, open and young enough to finish an OPAQUE flow
  // well within the server's handshake deadline (default 30 s from the upgrade); else null, and
  // an anonymous one that is too old is closed.
  #reusableAnon() {
    const c = this.#chan;
    if (!c || c.closed || c.authenticated) return null;
    if (Date.now() - c.openedAt < ANON_REUSE_MS) return c;
    c.close();
    this.#chan = null;
    return null;
  }

  // An unauthenticated channel for register/login: the current anonymous one (see above), else
  // a fresh one. `temporary` tells the caller to close it when done.
  async #anonChannel() {
    const reuse = this.#reusableAnon();
    if (reuse) return { chan: reuse, temporary: false };
    const chan = await this.#openChannel();
    if (!this.#chan || this.#chan.closed) {
      this.#chan = chan;
      return { chan, temporary: false };
    }
    return { chan, temporary: true };
  }

  // The authenticated channel, waiting for a reconnect in progress.
  async #authedChannel() {
    if (!this.#session) throw new SessiondError("unauthenticated", "not signed in");
    if (this.#chan && this.#chan.authenticated && !this.#chan.closed) return this.#chan;
    if (!this.#reconnecting) throw new SessiondError("offline", "not connected");
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#readyWaiters = this.#readyWaiters.filter((w) => w.resolve !== resolve);
        reject(new SessiondError("offline", "not connected; reconnecting"));
      }, READY_WAIT_MS);
      this.#readyWaiters.push({
        resolve: () => (clearTimeout(timer), resolve()),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
    });
    return this.#chan;
  }

  #settleWaiters(err) {
    const ws = this.#readyWaiters;
    this.#readyWaiters = [];
    for (const w of ws) err ? w.reject(err) : w.resolve();
  }

  #adopt(chan, session, { token, username, popKey } = {}) {
    if (this.#chan && this.#chan !== chan) this.#chan.detach();
    this.#chan = chan;
    chan.authenticated = true;
    chan.startHeartbeat();
    const prev = this.#creds || {};
    this.#creds = {
      token: token || prev.token,
      session_id: session.id,
      username: username !== undefined ? username : prev.username || "",
      pop_key: popKey !== undefined ? popKey : prev.pop_key || null,
    };
    this.#store.save(this.#creds);
    this.#setSession(session);
  }

  #setSession(s) {
    const { token, ...rest } = s; // the token never leaves the store
    if (token) {
      // A login.ok: created_at is "now" on the server. Estimate the clock skew from it, so that
      // countdowns are right even when this device's clock is not.
      const stamp = Date.parse(rest.created_at);
      this.#skewMs = !Number.isNaN(stamp) && Math.abs(stamp - Date.now()) > 1000 ? stamp - Date.now() : 0;
    }
    this.#session = rest;
    this.#emit("session", this.#session);
  }

  #patchSession(fields) {
    if (!this.#session) return;
    const next = { ...this.#session };
    let changed = false;
    for (const [k, v] of Object.entries(fields)) {
      if (v !== undefined && next[k] !== v) {
        next[k] = v;
        changed = true;
      }
    }
    if (changed) {
      this.#session = next;
      this.#emit("session", next);
    }
  }

  #rotated(r) {
    this.#creds = { ...this.#creds, token: r.token };
    this.#store.save(this.#creds);
    if (this.#bc) this.#bc.postMessage({ type: "token", session_id: this.#creds.session_id, token: r.token });
    this.#patchSession({ idle_expires_at: r.idle_expires_at, expires_at: r.expires_at });
  }

  #onNotice(msg) {
    switch (msg.type) {
      case "notice.refresh_due":
        this.#patchSession({ idle_expires_at: msg.idle_expires_at });
        break;
      case "notice.sessions_changed": {
        const me = Array.isArray(msg.sessions) && this.#session ? msg.sessions.find((s) => s.id === this.#session.id) : null;
        if (me) this.#patchSession({ idle_expires_at: me.idle_expires_at, last_seen_at: me.last_seen_at });
        break;
      }
    }
    this.#emit(msg.type, msg);
    if (msg.type === "notice.expired" || msg.type === "notice.revoked") {
      // Our own logout may reach this connection as notice.revoked before the reply does.
      const own = this.#loggingOut && msg.type === "notice.revoked" && msg.reason === "logout";
      this.#end(msg.reason || "unknown", !own);
    }
  }

  #onClose(handlers, code, reason) {
    const chan = this.#chan;
    if (!chan || chan.handlers !== handlers) return; // a retired channel
    this.#emit("connection", { state: "closed", code, reason });
    if (!this.#session || !chan.authenticated) {
      this.#chan = null; // anonymous: the next register/login opens a new one
      return;
    }
    if (this.#refreshInFlight) this.#refreshUncertain = true;
    if (code === 4401) return this.#end(this.#guessExpiry(), true); // notice lost: still over
    if (code === 4403) return this.#end("unknown", true);
    if (code === 1000) return this.#end("logout", !this.#loggingOut);
    if (RECONNECT_CODES.has(code)) return this.#scheduleReconnect();
    this.#end("closed_" + code, true); // a protocol violation: do not loop
  }

  #guessExpiry() {
    const s = this.#session;
    if (!s) return "session_invalid";
    const now = this.serverNow();
    if (now >= Date.parse(s.expires_at) - 1000) return "absolute";
    if (now >= Date.parse(s.idle_expires_at) - 1000) return "idle";
    return "session_invalid";
  }

  #scheduleReconnect() {
    this.#reconnecting = true;
    clearTimeout(this.#reconnectTimer);
    const delay = backoffDelay(this.#attempt++, this.#reconnectOpts.baseMs, this.#reconnectOpts.maxMs);
    this.#emit("connection", { state: "reconnecting", attempt: this.#attempt, delay_ms: delay });
    this.#reconnectTimer = setTimeout(() => this.#reconnectNow(), delay);
  }

  async #reconnectNow() {
    clearTimeout(this.#reconnectTimer);
    if (!this.#session || !this.#creds || this.#resuming) return;
    this.#resuming = true;
    try {
      // Not wanted any more once the session ended or a login replaced it meanwhile.
      const outcome = await this.#resumeOnFreshChannel(() => !!this.#session && this.#reconnecting);
      if (outcome === "adopted" && this.#refreshUncertain) {
        // A refresh was in flight when the socket dropped: the server may have rotated the
        // token. Rotate again now, while the old token is within its grace period.
        this.#refreshUncertain = false;
        this.refresh().catch(() => {});
      }
    } catch {
      if (this.#reconnecting && this.#session) this.#scheduleReconnect();
    } finally {
      this.#resuming = false;
    }
  }

  // Resumes the stored session on a new connection and makes it the current one, unless
  // stillWanted() says otherwise by the time the server answers. Resolves "adopted", "skipped"
  // (not wanted any more) or "ended" (the server no longer accepts the session: "ended" has
  // fired); rejects when the server cannot be reached or answers another error.
  async #resumeOnFreshChannel(stillWanted) {
    const chan = await this.#openChannel();
    try {
      const ok = await chan.request("session.resume", await this.#resumeFields(), "session.ok");
      if (!stillWanted()) {
        chan.close();
        return "skipped";
      }
      const old = this.#chan;
      const wasReconnecting = this.#reconnecting;
      clearTimeout(this.#reconnectTimer);
      this.#reconnecting = false;
      this.#attempt = 0;
      this.#adopt(chan, ok.session);
      if (old && old !== chan) old.close();
      if (wasReconnecting) this.#emit("connection", { state: "open" });
      this.#settleWaiters();
      return "adopted";
    } catch (err) {
      chan.close();
      if (err.code !== "session_invalid" || !stillWanted()) throw err;
      this.#end(err.reason || this.#guessExpiry(), true);
      return "ended";
    }
  }

  #end(reason, forced) {
    const had = !!(this.#session || this.#creds);
    clearTimeout(this.#reconnectTimer);
    this.#reconnecting = false;
    this.#attempt = 0;
    this.#session = null;
    this.#creds = null;
    this.#refreshInFlight = this.#refreshUncertain = false;
    this.#loggingOut = false;
    this.#store.clear();
    if (this.#chan) {
      this.#chan.close();
      this.#chan = null;
    }
    this.#settleWaiters(new SessiondError("session_ended", "the session has ended"));
    if (had) this.#emit("ended", { reason, forced });
  }

  // --- registration and login ------------------------------------------------------------------

  /**
   * Creates an account. Resolves with {userId, exportKey}. Works signed in or out (a signed-in
   * client uses a separate, temporary connection). Does not sign in.
   */
  async register(username, password) {
    const opaque = await loadOpaque();
    const { chan, temporary } = await this.#anonChannel();
    try {
      const { clientRegistrationState, registrationRequest } = opaque.client.startRegistration({ password });
      const ch = await chan.request("register.start", { username, request: registrationRequest }, "register.challenge");
      const { registrationRecord, exportKey } = await this.#finish(opaque, "finishRegistration", {
        clientRegistrationState,
        registrationResponse: ch.response,
        password,
      });
      const ok = await chan.request("register.finish", { record: registrationRecord }, "register.ok");
      return { userId: ok.user_id, exportKey };
    } finally {
      if (temporary) chan.close();
    }
  }

  /**
   * Signs in with OPAQUE. Resolves with {session, exportKey}; the token is stored and the
   * connection stays open for notices. A wrong password or unknown user rejects with
   * "auth_failed". Called while signed in (re-authentication before the absolute deadline, or
   * to obtain the export key again after a reload), it signs in on a new connection and then
   * logs the previous session out, so the device keeps exactly one session.
   */
  async login(username, password, { device } = {}) {
    const opaque = await loadOpaque();
    const previous = this.#session ? this.#chan : null;
    const reuse = previous ? null : this.#reusableAnon();
    const fresh = !reuse;
    const chan = reuse || (await this.#openChannel());
    if (!previous) this.#chan = chan;
    try {
      const { clientLoginState, startLoginRequest } = opaque.client.startLogin({ password });
      const label = device !== undefined ? device : this.#device;
      const fields = { username, ke1: startLoginRequest };
      if (label) fields.device = label;
      const ch = await chan.request("login.start", fields, "login.challenge");
      const result = await this.#finish(opaque, "finishLogin", { clientLoginState, loginResponse: ch.ke2, password });
      if (!result) {
        // The server's response did not verify: wrong password or unknown user. Tell the server
        // nothing more; its own answer for this attempt would be the same auth_failed.
        throw new SessiondError("auth_failed", "wrong username or password");
      }
      const ok = await chan.request("login.finish", { ke3: result.finishLoginRequest }, "login.ok");
      const session = ok.session;
      if (previous && this.#session && session.user_id !== this.#session.user_id) {
        await chan.request("session.logout", {}, "session.ended").catch(() => {});
        chan.close();
        throw new SessiondError("forbidden", "that is a different account; sign out first");
      }
      const popKey = session.pop ? await derivePopKey(result.sessionKey, session.id) : null;
      // Adopt the new session, then end the previous one quietly.
      clearTimeout(this.#reconnectTimer);
      this.#reconnecting = false;
      this.#attempt = 0;
      this.#adopt(chan, session, { token: session.token, username, popKey });
      this.#settleWaiters();
      if (previous && !previous.closed) {
        previous.request("session.logout", {}, "session.ended").catch(() => {}).finally(() => previous.close());
      }
      return { session: this.#session, exportKey: result.exportKey };
    } catch (err) {
      if (fresh && previous) chan.close();
      throw err;
    }
  }

  /**
   * Resumes the stored session (after a reload): resolves with the session, or null when no
   * token is stored or the server no longer accepts it (the token is then dropped). Rejects with
   * "connect_failed" when the server cannot be reached (the token is kept; try again later).
   */
  async resume() {
    if (this.#session) return this.#session;
    if (!this.#creds) return null;
    const chan = await this.#openChannel();
    if (this.#chan) this.#chan.close();
    this.#chan = chan;
    try {
      const ok = await chan.request("session.resume", await this.#resumeFields(), "session.ok");
      this.#adopt(chan, ok.session);
      return this.#session;
    } catch (err) {
      if (err.code === "session_invalid") {
        // A session that ended while the page was away: the server says why, and the app
        // hears it as "ended" (e.g. to say "signed out from another device").
        if (err.reason) {
          this.#end(err.reason, true); // clears the credentials and the store too
        } else {
          this.#creds = null;
          this.#store.clear();
        }
        return null;
      }
      throw err;
    }
  }

  // --- calling your own API ------------------------------------------------------------------

  /**
   * fetch() with the session: adds Authorization (and Sessiond-PoP when the session has proof
   * of possession, signed over the method, path and body). On a 401 it resumes the session once
   * over a fresh connection and repeats the request; when the session is over, "ended" fires and
   * the 401 response is returned. `input` is a URL or string (relative to the page), or a Request
   * whose URL, method and headers are used; pass the body in init. Rejects with
   * "unauthenticated" when signed out.
   */
  async authFetch(input, init = {}) {
    const req = typeof Request === "function" && input instanceof Request ? input : null;
    const url = new URL(req ? req.url : String(input), globalThis.location ? globalThis.location.href : this.#base + "/");
    const method = (init.method || (req && req.method) || "GET").toUpperCase();
    const streamed = typeof ReadableStream === "function" && init.body instanceof ReadableStream;
    const send = async () => {
      const token = this.getToken();
      if (!token) throw new SessiondError("unauthenticated", "not signed in", 401);
      const headers = new Headers(init.headers || (req ? req.headers : undefined));
      headers.set("Authorization", `Bearer ${token}`);
      const proof = await this.#proof(method, url.pathname + url.search, init.body);
      if (proof) headers.set("Sessiond-PoP", proof);
      return fetch(url.href, { ...init, method, headers });
    };
    const res = await send();
    if (res.status !== 401 || !this.#creds) return res;
    if (!(await this.#revalidate())) return res;
    return streamed ? res : send(); // a streamed body cannot be sent twice
  }

  // Resumes the stored session on a fresh connection (one at a time): true when it is still
  // live; false, after "ended", when the server no longer accepts it.
  #revalidate() {
    if (!this.#revalidating) {
      this.#revalidating = this.#resumeFresh().finally(() => {
        this.#revalidating = null;
      });
    }
    return this.#revalidating;
  }

  async #resumeFresh() {
    if (!this.#creds) return false;
    const sid = this.#creds.session_id;
    // Not wanted any more when the session ended or a login replaced it meanwhile.
    const outcome = await this.#resumeOnFreshChannel(() => !!this.#creds && this.#creds.session_id === sid);
    return outcome === "adopted" || (outcome === "skipped" && !!this.#creds);
  }

  /**
   * Proves the password again on the signed-in connection (reauth.*): the session stays the
   * same. Resolves with {exportKey}, e.g. to unlock what the export key protects after a reload.
   * A wrong password rejects with "auth_failed" (counted like a failed login). It also opens
   * the window in which changePassword() is accepted.
   */
  async reauth(password) {
    const opaque = await loadOpaque();
    const chan = await this.#authedChannel();
    const { clientLoginState, startLoginRequest } = opaque.client.startLogin({ password });
    const ch = await chan.request("reauth.start", { ke1: startLoginRequest }, "reauth.challenge");
    const result = await this.#finish(opaque, "finishLogin", { clientLoginState, loginResponse: ch.ke2, password });
    if (!result) throw new SessiondError("auth_failed", "wrong password");
    await chan.request("reauth.finish", { ke3: result.finishLoginRequest }, "reauth.ok");
    return { exportKey: result.exportKey };
  }

  // --- on a signed-in connection -----------------------------------------------------------------

  /** session.refresh: a new token (stored) and a later idle deadline. Resolves with the reply. */
  async refresh() {
    const chan = await this.#authedChannel();
    this.#refreshInFlight = true;
    try {
      const r = await chan.request("session.refresh", {}, "session.refreshed");
      this.#rotated(r);
      return { idle_expires_at: r.idle_expires_at, expires_at: r.expires_at };
    } finally {
      this.#refreshInFlight = false;
    }
  }

  /** session.logout. The token is dropped and "ended" fires with {reason: "logout", forced: false}. */
  async logout() {
    if (!this.#session) return;
    this.#loggingOut = true;
    try {
      const chan = await this.#authedChannel();
      await chan.request("session.logout", {}, "session.ended");
    } catch {
      // Offline or already over: still forget the token here; the server ends it at its deadline.
    }
    this.#end("logout", false);
  }

  /** sessions.list: the user's devices [{id, current, device, created_at, last_seen_at, ...}]. */
  async listSessions() {
    const chan = await this.#authedChannel();
    const r = await chan.request("sessions.list", {}, "sessions");
    const me = r.sessions.find((s) => s.current);
    if (me) this.#patchSession({ idle_expires_at: me.idle_expires_at, last_seen_at: me.last_seen_at });
    return r.sessions;
  }

  /** sessions.revoke: signs one device out. Revoking the current session is a logout. */
  async revokeSession(sessionId) {
    const chan = await this.#authedChannel();
    if (sessionId !== this.#session.id) {
      return (await chan.request("sessions.revoke", { session_id: sessionId }, "sessions.revoked")).session_ids;
    }
    // The current session: a logout, whose reply may be overtaken by the close.
    this.#loggingOut = true;
    try {
      await chan.request("sessions.revoke", { session_id: sessionId }, "sessions.revoked");
    } catch (err) {
      if (err.code !== "closed" && err.code !== "session_ended") {
        this.#loggingOut = false;
        throw err;
      }
    }
    this.#end("logout", false);
    return [sessionId];
  }

  /** sessions.revoke_others: signs every other device out; resolves with their ids. */
  async revokeOthers() {
    const chan = await this.#authedChannel();
    return (await chan.request("sessions.revoke_others", {}, "sessions.revoked")).session_ids;
  }

  /**
   * Changes the password (OPAQUE re-registration while signed in). Every other session of the
   * user is revoked by the server. Resolves with {exportKey}: the NEW export key, since a new
   * registration has a new one; re-encrypt whatever the old key protected.
   */
  async changePassword(newPassword) {
    const opaque = await loadOpaque();
    const chan = await this.#authedChannel();
    const { clientRegistrationState, registrationRequest } = opaque.client.startRegistration({ password: newPassword });
    const ch = await chan.request("password.change.start", { request: registrationRequest }, "password.change.challenge");
    const { registrationRecord, exportKey } = await this.#finish(opaque, "finishRegistration", {
      clientRegistrationState,
      registrationResponse: ch.response,
      password: newPassword,
    });
    await chan.request("password.change.finish", { record: registrationRecord }, "password.change.ok");
    return { exportKey };
  }

  /** Closes the connection without ending the session (it can be resumed later). */
  close() {
    clearTimeout(this.#reconnectTimer);
    this.#reconnecting = false;
    if (this.#chan) {
      this.#chan.close(1000, "client closed");
      this.#chan = null;
    }
    this.#session = null;
  }
}

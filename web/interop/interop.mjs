#!/usr/bin/env node
// interop.mjs — an independent sessiond protocol client built on @serenity-kit/opaque.
//
// The Go end-to-end tests run this script to prove that the server speaks the wire contract
// (shared PROTOCOL.md / docs/PROTOCOL.md) with a third-party OPAQUE implementation: an account
// registered by the project's Go client logs in here, and one registered here logs in with the
// Go client.
//
// Usage:
//   node web/interop/interop.mjs <register|login> <baseURL> <username> <password>
//   e.g. node web/interop/interop.mjs register http://127.0.0.1:1234 alice 'correct horse'
//
// It reads nothing else (no environment, no stdin, no files).
//
// Output contract:
//   - success: exactly ONE JSON line on stdout, then exit 0:
//       register -> {"ok":true,"user_id":"..."}
//       login    -> {"ok":true,"session_id":"...","user_id":"...","api_status":200}
//   - failure: one JSON line on stdout {"ok":false,"code":"...","message":"..."} plus a human
//     line on stderr, then exit 1. `code` is the server's error code for an {"type":"error"}
//     reply (e.g. "auth_failed", "username_taken", "bad_request"); for failures detected by this
//     client it is one of: "auth_failed" (finishLogin rejected the server's KE2: wrong password
//     or wrong server key), "connect_failed", "closed", "protocol", "api_failed", "timeout".
//   - usage error: a message on stderr, exit 2.
//   The password, the session token and the OPAQUE messages are never printed.
//
// Wire details (see PROTOCOL.md): WebSocket at <baseURL>/ws (http -> ws, https -> wss) with the
// subprotocol "sessiond.v1", no Origin header (non-browser client), no compression; text frames,
// one JSON object each; OPAQUE messages travel as base64url-without-padding strings, which is
// exactly what @serenity-kit/opaque produces and consumes, so they pass through unchanged.
// @serenity-kit/opaque is used with its default key stretching (Argon2id t=3, m=64 MiB, p=4,
// 16 zero-byte salt, 64-byte output), which is what the server's published configuration says.

import * as opaque from "@serenity-kit/opaque";
import WebSocket from "ws";

const SUBPROTOCOL = "sessiond.v1";
const TIMEOUT_MS = 60_000; // whole run, including two Argon2id computations for login
const CLOSE_WAIT_MS = 2_000; // how long to wait for the server's close frame at the end

// ---------------------------------------------------------------------------------------------
// Output helpers. Exactly one JSON line goes to stdout per run.

function usage(msg) {
  if (msg) process.stderr.write(`interop: ${msg}\n`);
  process.stderr.write(
    "usage: node web/interop/interop.mjs <register|login> <baseURL> <username> <password>\n",
  );
  process.exit(2);
}

// A failure that ends the run with exit code 1. `code` is a stable word (see header).
class Failure extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function succeed(result) {
  process.stdout.write(JSON.stringify({ ok: true, ...result }) + "\n");
}

function reportFailure(err) {
  const code = err instanceof Failure ? err.code : "internal";
  const message = err instanceof Failure ? err.message : String(err && err.message ? err.message : err);
  process.stdout.write(JSON.stringify({ ok: false, code, message }) + "\n");
  process.stderr.write(`interop: ${code}: ${message}\n`);
}

// ---------------------------------------------------------------------------------------------
// Arguments.

const args = process.argv.slice(2);
if (args.length !== 4) usage(`expected 4 arguments, got ${args.length}`);
const [command, baseArg, username, password] = args;
if (command !== "register" && command !== "login") usage(`unknown command ${JSON.stringify(command)}`);

let baseURL;
try {
  baseURL = new URL(baseArg);
} catch {
  usage(`invalid baseURL ${JSON.stringify(baseArg)}`);
}
if (baseURL.protocol !== "http:" && baseURL.protocol !== "https:") {
  usage("baseURL must start with http:// or https://");
}
// Keep any path prefix of the base (e.g. behind a proxy), without a trailing slash.
const basePath = baseURL.pathname.replace(/\/+$/, "");
const httpBase = `${baseURL.protocol}//${baseURL.host}${basePath}`;
const wsURL = `${baseURL.protocol === "https:" ? "wss:" : "ws:"}//${baseURL.host}${basePath}/ws`;

// ---------------------------------------------------------------------------------------------
// A tiny request/reply layer over one WebSocket connection.

class Conn {
  constructor(ws) {
    this.ws = ws;
    this.queue = []; // replies received but not yet consumed
    this.waiter = null; // {resolve, reject} of the pending next()
    this.closed = null; // {code, reason} once the socket closed
    this.closedPromise = new Promise((resolve) => {
      ws.on("close", (code, reason) => {
        this.closed = { code, reason: reason.toString() };
        this.wake();
        resolve();
      });
    });
    ws.on("message", (data, isBinary) => {
      if (isBinary) {
        this.queue.push(new Failure("protocol", "server sent a binary frame"));
      } else {
        let msg;
        try {
          msg = JSON.parse(data.toString("utf8"));
        } catch {
          msg = new Failure("protocol", "server sent a frame that is not JSON");
        }
        // Server pushes (notice.*) are not replies: a login elsewhere, e.g., may interleave
        // notice.sessions_changed. This client does not need them.
        if (msg && typeof msg.type === "string" && msg.type.startsWith("notice.")) return;
        this.queue.push(msg);
      }
      this.wake();
    });
    ws.on("error", () => {}); // a failed socket also emits "close", handled above
  }

  wake() {
    if (!this.waiter) return;
    const { resolve, reject } = this.waiter;
    if (this.queue.length > 0) {
      this.waiter = null;
      const item = this.queue.shift();
      if (item instanceof Failure) reject(item);
      else resolve(item);
    } else if (this.closed) {
      this.waiter = null;
      reject(new Failure("closed", `connection closed (code ${this.closed.code}${this.closed.reason ? `, ${this.closed.reason}` : ""})`));
    }
  }

  next() {
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.wake();
    });
  }

  // Sends {type, id, ...fields} and returns the reply carrying the same id, which must be of
  // type `expect`. An {"type":"error"} reply becomes a Failure with the server's code.
  async request(type, id, fields, expect) {
    this.ws.send(JSON.stringify({ type, id, ...fields }));
    for (;;) {
      const reply = await this.next();
      if (reply === null || typeof reply !== "object" || Array.isArray(reply)) {
        throw new Failure("protocol", `reply to ${type} is not a JSON object`);
      }
      if (reply.type === "error") {
        throw new Failure(String(reply.code ?? "error"), String(reply.message ?? ""));
      }
      if (reply.id !== id) continue; // not ours (should not happen on this connection)
      if (reply.type !== expect) {
        throw new Failure("protocol", `expected ${expect} in reply to ${type}, got ${JSON.stringify(reply.type)}`);
      }
      return reply;
    }
  }

  // Normal closure: send 1000 and wait briefly for the server's close frame.
  async close() {
    if (this.closed) return;
    this.ws.close(1000);
    const timer = new Promise((resolve) => setTimeout(resolve, CLOSE_WAIT_MS).unref());
    await Promise.race([this.closedPromise, timer]);
    if (!this.closed) this.ws.terminate();
  }
}

function connect() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsURL, SUBPROTOCOL, {
      perMessageDeflate: false, // the protocol uses no compression
      handshakeTimeout: 10_000,
      // no `origin` option: ws sends no Origin header, as a non-browser client should
    });
    const onError = (err) => reject(new Failure("connect_failed", `WebSocket connect to ${wsURL} failed: ${err.message}`));
    ws.once("error", onError);
    ws.once("open", () => {
      ws.off("error", onError);
      if (ws.protocol !== SUBPROTOCOL) {
        ws.terminate();
        reject(new Failure("protocol", `server selected subprotocol ${JSON.stringify(ws.protocol)}`));
        return;
      }
      resolve(new Conn(ws));
    });
  });
}

function requireString(obj, field, what) {
  const v = obj[field];
  if (typeof v !== "string" || v === "") throw new Failure("protocol", `${what}: missing string field ${field}`);
  return v;
}

// ---------------------------------------------------------------------------------------------
// The two flows.

// register.start {username, request} -> register.challenge {response}
// register.finish {record}            -> register.ok {user_id}
async function register(conn) {
  const { clientRegistrationState, registrationRequest } = opaque.client.startRegistration({ password });
  const challenge = await conn.request(
    "register.start", "r1", { username, request: registrationRequest }, "register.challenge",
  );
  const response = requireString(challenge, "response", "register.challenge");
  const { registrationRecord } = opaque.client.finishRegistration({
    clientRegistrationState,
    registrationResponse: response,
    password,
  });
  const ok = await conn.request("register.finish", "r2", { record: registrationRecord }, "register.ok");
  return { user_id: requireString(ok, "user_id", "register.ok") };
}

// login.start {username, ke1, device} -> login.challenge {ke2}
// login.finish {ke3}                  -> login.ok {session}
// then GET /api/v1/session with the new token must answer 200 with the same session.
async function login(conn) {
  const { clientLoginState, startLoginRequest } = opaque.client.startLogin({ password });
  const challenge = await conn.request(
    "login.start", "l1", { username, ke1: startLoginRequest, device: "node interop" }, "login.challenge",
  );
  const ke2 = requireString(challenge, "ke2", "login.challenge");
  // finishLogin returns undefined when the server's KE2 does not authenticate under this
  // password (wrong password, unknown user's fake record, or a different server key).
  const result = opaque.client.finishLogin({ clientLoginState, loginResponse: ke2, password });
  if (!result) {
    throw new Failure("auth_failed", "login failed: the server's response did not verify (wrong password or unknown user)");
  }
  const ok = await conn.request("login.finish", "l2", { ke3: result.finishLoginRequest }, "login.ok");
  const session = ok.session;
  if (!session || typeof session !== "object") throw new Failure("protocol", "login.ok: missing session object");
  const sessionID = requireString(session, "id", "login.ok session");
  const userID = requireString(session, "user_id", "login.ok session");
  const token = requireString(session, "token", "login.ok session");

  // The token must work on the HTTP API too.
  let res;
  try {
    res = await fetch(`${httpBase}/api/v1/session`, {
      headers: { Authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    throw new Failure("api_failed", `GET /api/v1/session failed: ${err.message}`);
  }
  const body = await res.text();
  if (res.status !== 200) {
    throw new Failure("api_failed", `GET /api/v1/session answered ${res.status}`);
  }
  let got;
  try {
    got = JSON.parse(body);
  } catch {
    throw new Failure("api_failed", "GET /api/v1/session: body is not JSON");
  }
  if (!got || !got.session || got.session.id !== sessionID) {
    throw new Failure("api_failed", "GET /api/v1/session: body does not describe the new session");
  }
  return { session_id: sessionID, user_id: userID, api_status: res.status };
}

// ---------------------------------------------------------------------------------------------
// Main.

const deadline = setTimeout(() => {
  reportFailure(new Failure("timeout", `no result after ${TIMEOUT_MS / 1000}s`));
  process.exit(1);
}, TIMEOUT_MS);

let exitCode = 1;
let conn = null;
try {
  await opaque.ready; // the WebAssembly module must be instantiated before any call
  conn = await connect();
  const result = command === "register" ? await register(conn) : await login(conn);
  await conn.close();
  succeed(result);
  exitCode = 0;
} catch (err) {
  if (conn) await conn.close().catch(() => {});
  reportFailure(err);
}
clearTimeout(deadline);
process.exit(exitCode);

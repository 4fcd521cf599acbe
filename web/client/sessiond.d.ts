// Types of @sessiond/client (sessiond.js). Checked by a strict TypeScript compile of a consumer
// file in CI (web/client/test/consumer.ts), against the package as installed from its tarball.

/** The WebSocket subprotocol of the wire contract. */
export declare const SUBPROTOCOL: "sessiond.v1";

/** Server error codes (PROTOCOL.md) and the ones this client adds. */
export type ErrorCode =
  | "bad_request"
  | "auth_failed"
  | "username_taken"
  | "rate_limited"
  | "session_invalid"
  | "out_of_order"
  | "reauth_required"
  | "proof_invalid"
  | "not_found"
  | "conflict"
  | "precondition_failed"
  | "forbidden"
  | "unavailable"
  | "internal"
  // client-side
  | "connect_failed"
  | "closed"
  | "timeout"
  | "offline"
  | "protocol"
  | "opaque_unavailable"
  | "unauthenticated"
  | "session_ended"
  | "unsupported_body"
  | (string & {});

/** An error from the server (its code, message and HTTP status) or from this client. */
export declare class SessiondError extends Error {
  constructor(code: ErrorCode, message?: string, status?: number);
  readonly name: "SessiondError";
  readonly code: ErrorCode;
  readonly status?: number;
  /** On session_invalid for a session that has ended: why ("revoked_by_user", "idle", ...). */
  readonly reason?: string;
}

/** The delay in ms before reconnect attempt `attempt` (0-based): exponential, capped, jittered. */
export declare function backoffDelay(attempt: number, baseMs?: number, maxMs?: number): number;

/** Loads the peer dependency @serenity-kit/opaque and waits for its WebAssembly. */
export declare function loadOpaque(): Promise<unknown>;

/** Times are RFC 3339 strings with milliseconds, in UTC, as the wire carries them. */
export type Timestamp = string;

/** The current session as this client knows it (the token is never in it: see getToken()). */
export interface Session {
  id: string;
  user_id: string;
  vault_id: string;
  device: string;
  created_at: Timestamp;
  last_seen_at: Timestamp;
  idle_expires_at: Timestamp;
  expires_at: Timestamp;
  /** True when the session requires proof of possession (signed requests). */
  pop?: boolean;
}

/** One of the user's devices (sessions.list, notice.sessions_changed). */
export interface Device {
  id: string;
  /** True for the session of the client that received the list. */
  current: boolean;
  device: string;
  created_at: Timestamp;
  last_seen_at: Timestamp;
  idle_expires_at: Timestamp;
  expires_at: Timestamp;
}

/** Why a session ended, as the server says it (plus what this client infers). */
export type EndReason =
  | "logout"
  | "revoked_by_user"
  | "password_changed"
  | "token_reuse"
  | "fingerprint_mismatch"
  | "session_limit"
  | "admin"
  | "idle"
  | "absolute"
  | "session_invalid"
  | "unknown"
  | (string & {});

export interface RefreshDueNotice {
  type: "notice.refresh_due";
  idle_expires_at: Timestamp;
  in_ms: number;
}
export interface ReauthDueNotice {
  type: "notice.reauth_due";
  expires_at: Timestamp;
  in_ms: number;
}
export interface ExpiredNotice {
  type: "notice.expired";
  reason: "idle" | "absolute";
}
export interface RevokedNotice {
  type: "notice.revoked";
  reason: EndReason;
}
export interface SessionsChangedNotice {
  type: "notice.sessions_changed";
  sessions: Device[];
}

export interface EndedDetail {
  reason: EndReason;
  /** false only for this client's own logout(). */
  forced: boolean;
}

export type ConnectionDetail =
  | { state: "open" }
  | { state: "reconnecting"; attempt: number; delay_ms: number }
  | { state: "closed"; code: number; reason: string };

/** The payload (event.detail) of every event the client dispatches. */
export interface SessiondEventMap {
  "notice.refresh_due": RefreshDueNotice;
  "notice.reauth_due": ReauthDueNotice;
  "notice.expired": ExpiredNotice;
  "notice.revoked": RevokedNotice;
  "notice.sessions_changed": SessionsChangedNotice;
  session: Session;
  ended: EndedDetail;
  connection: ConnectionDetail;
}

/** What subscribe() reports; the same object until something in it changes. */
export interface SessiondState {
  readonly status: "signed_out" | "signed_in" | "reconnecting";
  readonly session: Session | null;
  readonly username: string;
}

/** A synchronous string store (the Web Storage shape). */
export interface TokenStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface SessiondClientOptions {
  /** The server, default location.origin; the WebSocket URL is derived from it. */
  baseURL?: string;
  /** Where the token lives: "session" (default), "local", "memory" or your own store. */
  storage?: "session" | "local" | "memory" | TokenStorage;
  /** The storage key, default "sessiond". */
  storageKey?: string;
  /** The device label sent at login (the server derives one when empty). */
  device?: string;
  /** A WebSocket implementation, default globalThis.WebSocket (in Node 20: the `ws` package). */
  WebSocket?: unknown;
  /** Reconnect back-off bounds, default {baseMs: 500, maxMs: 30000}. */
  reconnect?: { baseMs?: number; maxMs?: number };
  /**
   * Where Argon2id key stretching runs. Default: a module Worker (opaque-worker.js next to
   * sessiond.js) where the page can resolve @serenity-kit/opaque to a URL (an import map),
   * else the main thread. false: always the main thread. A function: your Worker running
   * @sessiond/client/opaque-worker.js (bundlers: new Worker(new URL(...), {type: "module"})).
   */
  worker?: false | (() => Worker);
}

export interface Refreshed {
  idle_expires_at: Timestamp;
  expires_at: Timestamp;
}

export interface Vault {
  data: Uint8Array;
  etag: string | null;
}

/** sessiond's own HTTP API with the client's token (client.http). */
export declare class SessiondHTTP {
  session(): Promise<Session>;
  refresh(): Promise<Refreshed>;
  sessions(): Promise<Device[]>;
  revoke(sessionId: string): Promise<void>;
  revokeOthers(): Promise<string[]>;
  getVault(): Promise<Vault | null>;
  putVault(data: Uint8Array | ArrayBuffer | Blob | string, opts?: { ifMatch?: string; ifNoneMatch?: boolean }): Promise<string | null>;
}

type Listener<K extends keyof SessiondEventMap> = (ev: CustomEvent<SessiondEventMap[K]>) => void;

/** A sessiond client for one browser tab (or one Node process). */
export declare class SessiondClient extends EventTarget {
  constructor(opts?: SessiondClientOptions);

  /** sessiond's own HTTP API. */
  readonly http: SessiondHTTP;
  /** The current session (no token), or null when signed out. */
  readonly session: Session | null;
  /** The username this session was signed in with, or "". */
  readonly username: string;
  /** Whether a token is stored (a session may be resumable). */
  readonly hasStoredSession: boolean;
  /** The current state; see subscribe(). */
  readonly state: SessiondState;
  /** Where the last key stretching ran: "worker", "main-thread", or "" before the first. */
  readonly stretching: "worker" | "main-thread" | "";

  /** Calls fn(state) now and on every change; returns the function that unsubscribes. */
  subscribe(fn: (state: SessiondState) => void): () => void;
  /** The current token, or null. */
  getToken(): string | null;
  /** The server's clock in ms since the epoch (corrected for the estimated skew). */
  serverNow(): number;

  /** Creates an account; does not sign in. */
  register(username: string, password: string): Promise<{ userId: string; exportKey: string }>;
  /** Signs in; a signed-in client replaces its session. */
  login(username: string, password: string, opts?: { device?: string }): Promise<{ session: Session; exportKey: string }>;
  /** Resumes the stored session; null when there is none or it is over. */
  resume(): Promise<Session | null>;
  /** Proves the password again on the signed-in connection; the session stays the same. */
  reauth(password: string): Promise<{ exportKey: string }>;
  /** fetch() with the session's Authorization (and proof); on 401 resumes once and retries. */
  authFetch(input: string | URL | Request, init?: RequestInit): Promise<Response>;
  /** A new token and a later idle deadline. */
  refresh(): Promise<Refreshed>;
  /** Ends this session; "ended" fires with forced=false. */
  logout(): Promise<void>;
  listSessions(): Promise<Device[]>;
  /** Signs one device out; the current one is a logout. Resolves with the revoked ids. */
  revokeSession(sessionId: string): Promise<string[]>;
  /** Signs every other device out; resolves with their ids. */
  revokeOthers(): Promise<string[]>;
  /** Changes the password (needs a login or reauth within 10 minutes); resolves with the NEW export key. */
  changePassword(newPassword: string): Promise<{ exportKey: string }>;
  /** Closes the connection without ending the session. */
  close(): void;

  addEventListener<K extends keyof SessiondEventMap>(type: K, listener: Listener<K>, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof SessiondEventMap>(type: K, listener: Listener<K>, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

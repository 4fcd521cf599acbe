// app.js: the sessiond demo page. It uses the client package (@sessiond/client, web/client/sessiond.js) for everything that
// talks to the server, and note.js for the end-to-end encrypted note. Browser tests drive it
// through the data-test attributes listed in DESIGN.md; keep them stable.

import { SessiondClient, SessiondError, loadOpaque, backoffDelay } from "@sessiond/client";
import { deriveNoteKey, sealNote, openNote, cryptoAvailable } from "./note.js";

const $ = (id) => document.getElementById(id);
const q = (sel, root = document) => root.querySelector(sel);

const ui = {
  conn: $("conn"),
  who: $("who"),
  logout: $("logout"),
  bundleMissing: $("bundle-missing"),
  error: $("error"),
  status: $("status"),
  viewSignin: $("view-signin"),
  viewApp: $("view-app"),
  forced: $("forced"),
  forcedTitle: $("forced-title"),
  forcedText: $("forced-text"),
  forcedCode: $("forced-code"),
  signinForm: $("signin-form"),
  username: $("username"),
  password: $("password"),
  deviceName: $("device-name"),
  login: $("login"),
  register: $("register"),
  reauth: $("reauth"),
  reauthLeft: $("reauth-left"),
  reauthAt: $("reauth-at"),
  reauthForm: $("reauth-form"),
  reauthPassword: $("reauth-password"),
  sessionTitle: $("session-title"),
  sDevice: $("s-device"),
  sCreated: $("s-created"),
  sId: $("s-id"),
  idle: q('[data-test="idle-countdown"]'),
  idleBar: $("idle-bar"),
  idleSub: $("idle-sub"),
  abs: q('[data-test="absolute-countdown"]'),
  absBar: $("abs-bar"),
  absSub: $("abs-sub"),
  devices: $("devices"),
  devicesSummary: $("devices-summary"),
  revokeOthers: $("revoke-others"),
  noteOpen: $("note-open"),
  note: $("note"),
  noteSave: $("note-save"),
  noteReload: $("note-reload"),
  noteState: $("note-state"),
  noteLocked: $("note-locked"),
  unlock: $("unlock"),
  pwForm: $("pw-form"),
  newPassword: $("new-password"),
  refreshPrompt: $("refresh-prompt"),
  refreshLeft: $("refresh-left"),
  stay: $("stay-signed-in"),
  refreshSignout: $("refresh-signout"),
};

const client = new SessiondClient();

// Page state that is not the session itself (the client holds that).
const state = {
  devices: [],
  noteKey: null, // AES-GCM CryptoKey derived from the export key; memory only
  noteEtag: null, // ETag of the vault version the note was read from / last saved as
  noteExists: false, // whether the server holds a note
  noteSaved: "", // plaintext of the version the server holds (for re-encryption)
  noteConflict: null, // {etag, text} of a newer version found on a 412
  idleWindowMs: 0, // length of the current idle window, for the progress bar
  refreshDue: null, // idle deadline (ms) the refresh prompt counts down to
  reauthDue: null, // absolute deadline (ms) the re-auth notice counts down to
};

// ---------------------------------------------------------------------------------------------
// Messages.

const FORCED = {
  idle: ["Signed out after inactivity", "Your session ended because it was not used for a while. Sign in again to continue."],
  absolute: ["Session reached its time limit", "Every session has a maximum lifetime, and this one has reached it. Sign in again to continue."],
  logout: ["Signed out", "This session was signed out in another window of this browser."],
  revoked_by_user: ["Signed out from another device", "This device was signed out from another of your devices. If that was not you, sign in and change your password."],
  password_changed: ["Your password was changed", "The password of this account was changed on another device, which signs out every other session. Sign in with the new password."],
  token_reuse: ["Session ended for your safety", "An old copy of this session's token was used, which can mean it was stolen, so the whole session was ended. Sign in again."],
  fingerprint_mismatch: ["Session ended for your safety", "The session was used from a different device or network than the one it was created on, so it was ended. Sign in again."],
  session_limit: ["Too many devices", "You signed in on more devices than allowed, so this, the oldest session, was ended."],
  admin: ["Signed out by an administrator", "An administrator ended this session."],
  session_invalid: ["Your session has ended", "The server no longer accepts this session (it expired or was revoked while this page was away). Sign in again."],
};

function describe(err) {
  const code = err && err.code;
  switch (code) {
    case "auth_failed":
      return "Sign-in failed: wrong username or password.";
    case "username_taken":
      return "That username is taken. Choose another, or sign in.";
    case "rate_limited":
      return "Too many attempts. Wait a minute, then try again.";
    case "session_limit":
      return "You are signed in on too many devices. Sign one of them out first.";
    case "connect_failed":
    case "closed":
    case "offline":
      return "Cannot reach the server. Check your connection and try again.";
    case "timeout":
      return "The server did not answer in time. Try again.";
    case "opaque_unavailable":
      return "Sign-in is unavailable: the OPAQUE library bundle is not built (run `make web`, then restart the server).";
    case "bad_request":
      return `The server rejected this: ${err.message}`;
    case "precondition_failed":
      return "The note was changed on another device.";
    default:
      return (err && err.message) || String(err);
  }
}

function showError(msg) {
  ui.error.textContent = msg;
}

function clearMessages() {
  ui.error.textContent = "";
  ui.status.textContent = "";
}

function showStatus(msg) {
  ui.status.textContent = msg;
}

// Runs an action with its controls disabled and a progress message; errors go to the error
// region.
async function run(controls, progress, fn) {
  clearMessages();
  const els = controls.filter(Boolean);
  for (const el of els) el.disabled = true;
  document.body.setAttribute("aria-busy", "true");
  if (progress) showStatus(progress);
  try {
    return await fn();
  } catch (err) {
    if (progress) showStatus("");
    showError(describe(err));
    if (!(err instanceof SessiondError)) console.error(err);
    return undefined;
  } finally {
    for (const el of els) el.disabled = false;
    document.body.removeAttribute("aria-busy");
  }
}

// ---------------------------------------------------------------------------------------------
// Formatting.

function fmtLeft(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

function fmtClock(ms) {
  const d = new Date(ms);
  const sameDay = new Date().toDateString() === d.toDateString();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return sameDay ? time : `${d.toLocaleDateString([], { month: "short", day: "numeric" })}, ${time}`;
}

function fmtAgo(ms) {
  const s = Math.round((client.serverNow() - ms) / 1000);
  if (s < 45) return "active just now";
  if (s < 90) return "active a minute ago";
  if (s < 3600) return `active ${Math.round(s / 60)} min ago`;
  if (s < 86400) return `active ${Math.round(s / 3600)} h ago`;
  return `active ${Math.round(s / 86400)} days ago`;
}

// ---------------------------------------------------------------------------------------------
// Views.

function showView(name) {
  const signedIn = name === "app";
  ui.viewApp.hidden = !signedIn;
  ui.viewSignin.hidden = signedIn;
  ui.logout.hidden = !signedIn;
  ui.who.hidden = !signedIn;
  ui.conn.hidden = !signedIn;
}

function showSignin({ forcedReason } = {}) {
  closeRefreshPrompt();
  ui.reauth.hidden = true;
  if (forcedReason) {
    const [title, text] = FORCED[forcedReason] || ["You were signed out", "This session was ended by the server."];
    ui.forced.dataset.reason = forcedReason;
    ui.forcedTitle.textContent = title;
    ui.forcedText.textContent = text;
    ui.forcedCode.textContent = forcedReason;
    ui.forced.hidden = false;
  } else {
    ui.forced.hidden = true;
    ui.forced.dataset.reason = "";
  }
  showView("signin");
  if (forcedReason) ui.forced.focus();
  else (ui.username.value ? ui.password : ui.username).focus();
}

function showApp() {
  ui.conn.className = "pill ok";
  ui.conn.textContent = "Connected";
  ui.forced.hidden = true;
  ui.forced.dataset.reason = "";
  showView("app");
  renderSession();
  renderNoteLock();
}

function resetAccountState() {
  state.devices = [];
  state.noteKey = null;
  state.noteEtag = null;
  state.noteExists = false;
  state.noteSaved = "";
  state.noteConflict = null;
  state.refreshDue = null;
  state.reauthDue = null;
  ui.note.value = "";
  ui.noteState.textContent = "";
  ui.noteReload.hidden = true;
  ui.devices.replaceChildren();
  ui.password.value = "";
  ui.unlock.value = "";
  ui.newPassword.value = "";
  ui.reauthPassword.value = "";
}

// --- the session panel ---------------------------------------------------------------------------

function renderSession() {
  const s = client.session;
  if (!s) return;
  ui.who.textContent = client.username;
  ui.sDevice.textContent = s.device || "unknown device";
  ui.sCreated.textContent = fmtClock(Date.parse(s.created_at));
  ui.sId.textContent = s.id.length > 12 ? `${s.id.slice(0, 12)}…` : s.id;
  ui.sId.title = s.id;
  if (ui.idle.dataset.expiresAt !== s.idle_expires_at) {
    ui.idle.dataset.expiresAt = s.idle_expires_at;
    state.idleWindowMs = Math.max(1, Date.parse(s.idle_expires_at) - client.serverNow());
  }
  ui.abs.dataset.expiresAt = s.expires_at;
  const idleAt = Date.parse(s.idle_expires_at);
  const absAt = Date.parse(s.expires_at);
  const idleIsAbs = idleAt >= absAt;
  ui.idleSub.textContent = idleIsAbs
    ? "Same as the session's end"
    : `at ${fmtClock(idleAt)}; any action here moves it`;
  ui.absSub.textContent = `at ${fmtClock(absAt)}; a new sign-in is needed then`;
  tick();
}

function setBar(el, frac) {
  el.style.width = `${Math.max(0, Math.min(1, frac)) * 100}%`;
  el.parentElement.classList.toggle("low", frac < 0.2);
}

// Runs four times a second: countdowns only, no network (a timer must never look like activity).
function tick() {
  const s = client.session;
  if (!s) return;
  const now = client.serverNow();
  const idleAt = Date.parse(s.idle_expires_at);
  const absAt = Date.parse(s.expires_at);
  const created = Date.parse(s.created_at);
  ui.idle.textContent = fmtLeft(idleAt - now);
  ui.abs.textContent = fmtLeft(absAt - now);
  setBar(ui.idleBar, (idleAt - now) / state.idleWindowMs);
  setBar(ui.absBar, (absAt - now) / Math.max(1, absAt - created));
  if (state.refreshDue !== null) ui.refreshLeft.textContent = fmtLeft(state.refreshDue - now);
  if (state.reauthDue !== null) ui.reauthLeft.textContent = fmtLeft(state.reauthDue - now);
}

// --- the device list -----------------------------------------------------------------------------

function deviceIcon(label) {
  const l = (label || "").toLowerCase();
  if (/android|ios|iphone|phone/.test(l)) return "phone";
  if (/ipad|tablet/.test(l)) return "tablet";
  if (/go client|curl|node/.test(l)) return "terminal";
  return "laptop";
}

function renderDevices(list) {
  state.devices = Array.isArray(list) ? list : [];
  const rows = state.devices.map((d) => {
    const li = document.createElement("li");
    li.className = "device" + (d.current ? " current" : "");
    li.dataset.test = "device";
    li.dataset.sessionId = d.id;
    li.dataset.current = d.current ? "true" : "false";

    const icon = document.createElement("span");
    icon.className = `device-icon icon-${deviceIcon(d.device)}`;
    icon.setAttribute("aria-hidden", "true");

    const main = document.createElement("div");
    main.className = "device-main";
    const name = document.createElement("div");
    name.className = "device-name";
    name.textContent = d.device || "unknown device";
    if (d.current) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "This device";
      name.append(" ", badge);
    }
    const meta = document.createElement("div");
    meta.className = "device-meta";
    meta.dataset.lastSeen = d.last_seen_at;
    meta.textContent = `Signed in ${fmtClock(Date.parse(d.created_at))} · ${fmtAgo(Date.parse(d.last_seen_at))}`;
    main.append(name, meta);

    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "small-btn";
    btn.dataset.test = "revoke";
    btn.textContent = "Sign out";
    btn.setAttribute("aria-label", `Sign out ${d.device || "unknown device"}${d.current ? " (this device)" : ""}`);
    btn.addEventListener("click", () => revokeDevice(d, btn));

    li.append(icon, main, btn);
    return li;
  });
  ui.devices.replaceChildren(...rows);
  const others = state.devices.filter((d) => !d.current).length;
  ui.devicesSummary.textContent =
    state.devices.length === 1 ? "Signed in on this device only." : `Signed in on ${state.devices.length} devices.`;
  ui.revokeOthers.disabled = others === 0;
}

function refreshDeviceTimes() {
  for (const el of ui.devices.querySelectorAll(".device-meta")) {
    const d = state.devices.find((x) => x.id === el.closest("li").dataset.sessionId);
    if (d) el.textContent = `Signed in ${fmtClock(Date.parse(d.created_at))} · ${fmtAgo(Date.parse(d.last_seen_at))}`;
  }
}

async function loadDevices() {
  try {
    renderDevices(await client.listSessions());
  } catch (err) {
    showError(describe(err));
  }
}

async function revokeDevice(d, btn) {
  await run([btn], "", async () => {
    await client.revokeSession(d.id);
    if (!d.current) showStatus(`Signed out ${d.device || "the device"}.`);
  });
}

// --- the note ------------------------------------------------------------------------------------

function renderNoteLock() {
  const locked = !state.noteKey;
  ui.noteLocked.hidden = !locked;
  ui.noteOpen.hidden = locked;
}

async function adoptExportKey(exportKey) {
  state.noteKey = cryptoAvailable() ? await deriveNoteKey(exportKey) : null;
}

// Reads the vault. With the key, decrypts it into the note field; without, only learns whether
// a note exists (the password change needs to know).
async function loadNote() {
  state.noteConflict = null;
  ui.noteReload.hidden = true;
  const v = await client.http.getVault();
  state.noteExists = !!v;
  state.noteEtag = v ? v.etag : null;
  if (!state.noteKey) {
    renderNoteLock();
    return;
  }
  if (!v) {
    state.noteSaved = "";
    ui.note.value = "";
    ui.noteState.textContent = "No note yet.";
  } else {
    try {
      state.noteSaved = await openNote(state.noteKey, v.data);
      ui.note.value = state.noteSaved;
      ui.noteState.textContent = "Decrypted in this browser.";
    } catch {
      state.noteSaved = "";
      ui.note.value = "";
      ui.noteState.textContent = "";
      showError("The stored note cannot be decrypted with this password's key (it was written under another password). Saving replaces it.");
    }
  }
  renderNoteLock();
}

async function saveNote() {
  await run([ui.noteSave], "", async () => {
    if (!state.noteKey) throw new Error("Unlock the note first.");
    const text = ui.note.value;
    const blob = await sealNote(state.noteKey, text);
    const cond = state.noteConflict
      ? { ifMatch: state.noteConflict.etag } // the user chose to overwrite the newer version
      : state.noteEtag
        ? { ifMatch: state.noteEtag }
        : { ifNoneMatch: true };
    try {
      state.noteEtag = await client.http.putVault(blob, cond);
    } catch (err) {
      if (err.status !== 412) throw err;
      // Someone saved first. Keep the user's text; offer theirs.
      const v = await client.http.getVault();
      let theirs = "";
      try {
        theirs = v ? await openNote(state.noteKey, v.data) : "";
      } catch {
        /* unreadable: overwrite is the only choice */
      }
      state.noteConflict = { etag: v ? v.etag : null, text: theirs };
      ui.noteReload.hidden = false;
      throw new SessiondError(
        "precondition_failed",
        "The note was changed on another device since you opened it. Save again to replace it with your text, or load the other version.",
      );
    }
    state.noteExists = true;
    state.noteSaved = text;
    state.noteConflict = null;
    ui.noteReload.hidden = true;
    ui.noteState.textContent = `Saved, encrypted, at ${fmtClock(Date.now())}.`;
    loadDevices(); // the save was activity: show the moved idle deadline
  });
}

function loadConflictVersion() {
  if (!state.noteConflict) return;
  ui.note.value = state.noteSaved = state.noteConflict.text;
  state.noteEtag = state.noteConflict.etag;
  state.noteConflict = null;
  ui.noteReload.hidden = true;
  clearMessages();
  ui.noteState.textContent = "Loaded the version saved on another device.";
}

// ---------------------------------------------------------------------------------------------
// Sign-in, registration, re-authentication.

function credentials(passwordInput) {
  const username = ui.username.value;
  const password = passwordInput.value;
  if (!username.trim()) throw new SessiondError("bad_request_local", "Enter a username.");
  if (!password) throw new SessiondError("bad_request_local", "Enter a password.");
  return { username, password };
}

async function signIn() {
  await run([ui.login, ui.register], "Signing in… (your browser is stretching the password; this takes a moment)", async () => {
    const { username, password } = credentials(ui.password);
    const { exportKey } = await client.login(username, password, { device: ui.deviceName.value.trim() });
    ui.password.value = "";
    await afterLogin(exportKey);
  });
}

async function afterLogin(exportKey) {
  document.body.dataset.stretching = client.stretching; // "worker": the page stayed responsive
  await adoptExportKey(exportKey);
  state.refreshDue = state.reauthDue = null;
  closeRefreshPrompt();
  ui.reauth.hidden = true;
  showStatus("");
  showApp();
  ui.sessionTitle.focus();
  await Promise.all([loadDevices(), loadNote().catch((err) => showError(describe(err)))]);
}

async function register() {
  await run([ui.login, ui.register], "Creating your account… (this takes a moment)", async () => {
    const { username, password } = credentials(ui.password);
    await client.register(username, password);
    showStatus(`Account “${username}” created. Sign in to continue.`);
    ui.login.focus();
  });
}

// The password again while signed in. To unlock the note after a reload, reauth() proves it on
// the signed-in connection and yields the export key: the session stays the same. Before the
// absolute deadline only a new session helps: login() replaces the current one.
async function reauthenticate(input, controls, progress, { newSession = false } = {}) {
  await run(controls, progress, async () => {
    const password = input.value;
    if (!password) throw new SessiondError("bad_request_local", "Enter your password.");
    const { exportKey } = newSession
      ? await client.login(client.username, password, { device: client.session ? client.session.device : undefined })
      : await client.reauth(password);
    input.value = "";
    await afterLogin(exportKey);
  });
}

// ---------------------------------------------------------------------------------------------
// Prompts.

function openRefreshPrompt(msg) {
  state.refreshDue = Date.parse(msg.idle_expires_at);
  tick();
  if (!ui.refreshPrompt.open) ui.refreshPrompt.showModal();
  ui.stay.focus();
}

function closeRefreshPrompt() {
  state.refreshDue = null;
  if (ui.refreshPrompt.open) ui.refreshPrompt.close();
}

async function staySignedIn() {
  await run([ui.stay], "", async () => {
    await client.refresh();
    closeRefreshPrompt();
  });
}

// ---------------------------------------------------------------------------------------------
// Client events.

client.addEventListener("session", () => renderSession());
client.addEventListener("notice.sessions_changed", (e) => renderDevices(e.detail.sessions));
client.addEventListener("notice.refresh_due", (e) => openRefreshPrompt(e.detail));
client.addEventListener("notice.reauth_due", (e) => {
  state.reauthDue = Date.parse(e.detail.expires_at);
  ui.reauthAt.textContent = fmtClock(state.reauthDue);
  ui.reauth.hidden = false;
  tick();
});
client.addEventListener("ended", (e) => {
  const { reason, forced } = e.detail;
  resetAccountState();
  clearMessages();
  showSignin(forced ? { forcedReason: reason } : {});
  if (!forced) showStatus("You are signed out.");
});
client.addEventListener("connection", (e) => {
  const d = e.detail;
  ui.conn.className = "pill";
  if (d.state === "open") {
    ui.conn.textContent = "Connected";
    ui.conn.classList.add("ok");
  } else if (d.state === "reconnecting") {
    ui.conn.textContent = `Reconnecting in ${Math.ceil(d.delay_ms / 1000)} s…`;
    ui.conn.classList.add("warn");
  }
});

// ---------------------------------------------------------------------------------------------
// Wiring.

ui.signinForm.addEventListener("submit", (e) => {
  e.preventDefault();
  signIn();
});
ui.register.addEventListener("click", () => register());
ui.logout.addEventListener("click", () => run([ui.logout], "", () => client.logout()));
ui.revokeOthers.addEventListener("click", () =>
  run([ui.revokeOthers], "", async () => {
    const ids = await client.revokeOthers();
    showStatus(ids.length === 1 ? "Signed out 1 other device." : `Signed out ${ids.length} other devices.`);
  }),
);
ui.noteSave.addEventListener("click", () => saveNote());
ui.noteReload.addEventListener("click", () => loadConflictVersion());
ui.noteLocked.addEventListener("submit", (e) => {
  e.preventDefault();
  reauthenticate(ui.unlock, [q('[data-test="unlock-submit"]')], "Unlocking… (checking your password)");
});
ui.reauthForm.addEventListener("submit", (e) => {
  e.preventDefault();
  reauthenticate(ui.reauthPassword, [q('[data-test="reauth-submit"]')], "Signing in again…", { newSession: true });
});
ui.pwForm.addEventListener("submit", (e) => {
  e.preventDefault();
  changePassword();
});
ui.stay.addEventListener("click", () => staySignedIn());
ui.refreshSignout.addEventListener("click", () => {
  closeRefreshPrompt();
  run([], "", () => client.logout());
});
ui.refreshPrompt.addEventListener("cancel", () => (state.refreshDue = null)); // Escape: not now

async function changePassword() {
  const button = q('[data-test="change-password"]');
  await run([button], "Changing your password…", async () => {
    const password = ui.newPassword.value;
    if (!password) throw new SessiondError("bad_request_local", "Enter the new password.");
    if (state.noteExists && !state.noteKey) {
      throw new SessiondError("locked", "Unlock your note first: it must be re-encrypted under the new password.");
    }
    const { exportKey } = await client.changePassword(password);
    ui.newPassword.value = "";
    const oldKey = state.noteKey;
    await adoptExportKey(exportKey);
    if (state.noteExists && oldKey) {
      // The old key is gone with the old password: re-encrypt what the server holds.
      state.noteEtag = await client.http.putVault(await sealNote(state.noteKey, state.noteSaved), { ifMatch: state.noteEtag });
    }
    showStatus("Password changed. Every other device was signed out.");
  });
}

// ---------------------------------------------------------------------------------------------
// Start.

async function start() {
  setInterval(tick, 250);
  setInterval(refreshDeviceTimes, 15_000);
  // Load the OPAQUE bundle early: the first sign-in is then quicker, and a missing bundle is
  // reported before anyone types a password.
  loadOpaque().catch((err) => {
    if (err.code === "opaque_unavailable") ui.bundleMissing.hidden = false;
  });
  if (!client.hasStoredSession) {
    showSignin();
    return;
  }
  // A reload: resume the session from sessionStorage. The export key is gone, so the note
  // stays locked until the password is entered again.
  for (let attempt = 0; !client.session; attempt++) {
    try {
      const s = await client.resume();
      if (!s) {
        showSignin();
        showStatus("Your previous session has ended. Please sign in again.");
        return;
      }
      ui.username.value = client.username;
      showApp();
      await Promise.all([loadDevices(), loadNote().catch((err) => showError(describe(err)))]);
      return;
    } catch (err) {
      const delay = backoffDelay(attempt);
      showSignin();
      showError(`${describe(err)} Retrying in ${Math.ceil(delay / 1000)} s…`);
      await new Promise((r) => setTimeout(r, delay));
      clearMessages();
    }
  }
}

start();

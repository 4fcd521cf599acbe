// note.js: end-to-end encryption of the demo's private note, with WebCrypto only.
//
// The key is derived in the browser from the OPAQUE export key, a secret that the login yields
// on the client and that the server never learns:
//
//   key  = HKDF-SHA-256(ikm = export key (64 bytes), salt = empty, info = "sessiond demo note v1")
//          -> AES-256-GCM, non-extractable
//   blob = "SDN1" || 12-byte random IV || AES-GCM(plaintext UTF-8, AAD = "SDN1")
//
// The server stores only the blob (PUT /api/v1/vault). A new password means a new export key
// (OPAQUE re-registration), so the page re-encrypts the note after a password change.

const MAGIC = new TextEncoder().encode("SDN1");
const INFO = new TextEncoder().encode("sessiond demo note v1");

/** Decodes base64url without padding (the encoding of @serenity-kit/opaque's keys). */
export function fromBase64url(s) {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4);
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Whether WebCrypto is available (it needs a secure context: HTTPS, or http://localhost). */
export function cryptoAvailable() {
  return typeof crypto !== "undefined" && !!crypto.subtle;
}

/** Derives the note key (a non-extractable AES-GCM CryptoKey) from an export key. */
export async function deriveNoteKey(exportKey) {
  if (!cryptoAvailable()) throw new Error("WebCrypto is unavailable: serve the page over HTTPS or from localhost");
  const ikm = fromBase64url(exportKey);
  try {
    const base = await crypto.subtle.importKey("raw", ikm, "HKDF", false, ["deriveKey"]);
    return await crypto.subtle.deriveKey(
      { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: INFO },
      base,
      { name: "AES-GCM", length: 256 },
      false,
      ["encrypt", "decrypt"],
    );
  } finally {
    ikm.fill(0);
  }
}

/** Encrypts text into a vault blob. */
export async function sealNote(key, text) {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const ct = new Uint8Array(
    await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: MAGIC }, key, new TextEncoder().encode(text)),
  );
  const blob = new Uint8Array(MAGIC.length + iv.length + ct.length);
  blob.set(MAGIC, 0);
  blob.set(iv, MAGIC.length);
  blob.set(ct, MAGIC.length + iv.length);
  return blob;
}

/** Decrypts a vault blob; throws when it is not ours or the key does not fit. */
export async function openNote(key, blob) {
  if (blob.length < MAGIC.length + 12 + 16 || MAGIC.some((b, i) => blob[i] !== b)) {
    throw new Error("not a sessiond note");
  }
  const iv = blob.subarray(MAGIC.length, MAGIC.length + 12);
  const pt = await crypto.subtle.decrypt(
    { name: "AES-GCM", iv, additionalData: MAGIC },
    key,
    blob.subarray(MAGIC.length + 12),
  );
  return new TextDecoder().decode(pt);
}

// @sessiond/client's worker: runs the OPAQUE steps that include Argon2id key stretching
// (finishLogin, finishRegistration: about a second of CPU with 64 MiB) off the page's main
// thread, so the page keeps painting and answering input during sign-in.
//
// Messages: {id, op: "finishLogin" | "finishRegistration", args, moduleURL?} -> {id, result} or
// {id, error}. moduleURL is where @serenity-kit/opaque is (the page resolves it, e.g. through
// its import map, which workers do not see); without it the worker imports the package by name,
// which a bundler resolves when it bundles this file as a worker.
let opaque = null;

self.onmessage = async (ev) => {
  const { id, op, args, moduleURL } = ev.data || {};
  try {
    if (!opaque) {
      const mod = await (moduleURL ? import(moduleURL) : import("@serenity-kit/opaque"));
      await mod.ready;
      opaque = mod;
    }
    if (op !== "finishLogin" && op !== "finishRegistration") throw new Error(`unknown operation ${op}`);
    const result = opaque.client[op](args);
    self.postMessage({ id, result: result === undefined ? null : result });
  } catch (err) {
    self.postMessage({ id, error: String((err && err.message) || err) });
  }
};

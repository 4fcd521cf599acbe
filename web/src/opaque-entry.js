// Entry point of the browser bundle static/vendor/opaque.js, built by `npm run build`
// (esbuild) from the pinned @serenity-kit/opaque in node_modules. The bundle is build output
// and is not committed. Only the client half of the library is re-exported: a browser never
// plays the OPAQUE server.
export { ready, client } from "@serenity-kit/opaque";

// A Svelte store over the client's state (README.md, "Frameworks"); compiled by the example's
// strict type check, not bundled. `$session.status` in a component follows sign-in and sign-out.
import { readable, type Readable } from "svelte/store";
import type { SessiondClient, SessiondState } from "@sessiond/client";

export function sessionStore(client: SessiondClient): Readable<SessiondState> {
  return readable(client.state, (set) => client.subscribe(set));
}

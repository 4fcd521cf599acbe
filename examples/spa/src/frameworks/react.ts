// A React hook over the client's state (README.md, "Frameworks"); compiled by the example's
// strict type check, not bundled.
import { useSyncExternalStore } from "react";
import type { SessiondClient, SessiondState } from "@sessiond/client";

export function useSession(client: SessiondClient): SessiondState {
  return useSyncExternalStore(
    (onChange) => client.subscribe(() => onChange()),
    () => client.state,
  );
}

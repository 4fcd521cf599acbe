// The example single-page app: it runs on its own origin, signs in against sessiond on another
// (CORS and the WebSocket's Origin list allow it), calls its own API with authFetch, and shows
// the moment the session is ended from elsewhere. Strict TypeScript against the package's types.
import { SessiondClient, SessiondError, type SessiondState, type EndedDetail } from "@sessiond/client";

const params = new URLSearchParams(location.search);
const client = new SessiondClient({
  baseURL: params.get("sessiond") ?? "http://127.0.0.1:8080",
  storage: "session",
  device: "example SPA",
});

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing`);
  return el as T;
};
const status = $<HTMLParagraphElement>("status");
const form = $<HTMLFormElement>("signin");
const signedIn = $<HTMLElement>("signed-in");
const orders = $<HTMLPreElement>("orders");

function render(state: SessiondState): void {
  status.dataset.status = state.status;
  form.hidden = state.status !== "signed_out";
  signedIn.hidden = state.status === "signed_out";
  if (state.session) status.textContent = `Signed in as ${state.username || state.session.user_id} (${state.status})`;
}

function explain(err: unknown): string {
  return err instanceof SessiondError ? `${err.code}: ${err.message}` : String(err);
}

client.subscribe(render);
client.addEventListener("ended", (e: CustomEvent<EndedDetail>) => {
  status.textContent = e.detail.forced ? `Signed out: ${e.detail.reason}` : "Signed out";
  status.dataset.ended = e.detail.reason;
});

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const user = $<HTMLInputElement>("username").value;
  const password = $<HTMLInputElement>("password").value;
  const submitter = (e as SubmitEvent).submitter;
  void (async () => {
    try {
      if (submitter instanceof HTMLButtonElement && submitter.value === "register") await client.register(user, password);
      await client.login(user, password);
    } catch (err) {
      status.textContent = explain(err);
    }
  })();
});

$<HTMLButtonElement>("load").addEventListener("click", () => {
  void (async () => {
    try {
      const res = await client.authFetch("/api/orders");
      orders.textContent = res.ok ? await res.text() : `HTTP ${res.status}`;
      orders.dataset.status = String(res.status);
    } catch (err) {
      orders.textContent = explain(err);
      orders.dataset.status = "error";
    }
  })();
});

$<HTMLButtonElement>("logout").addEventListener("click", () => void client.logout());

void client.resume().catch((err: unknown) => (status.textContent = explain(err)));

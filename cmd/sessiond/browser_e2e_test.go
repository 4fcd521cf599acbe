package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The browser tests drive the demo page (web/static) in headless Chromium through its data-test
// hooks, on the real server booted by startNode. Each browser is its own profile, so two of them
// are two devices of one user. The page runs real OPAQUE with Argon2id (64 MiB) in the browser,
// so every registration or login takes a moment: the waits are generous.
//
// Locally they are skipped without /usr/bin/chromium (apt-get install chromium) or without the
// built OPAQUE bundle (make web); in CI (CI=true) both are required.

const chromiumPath = "/usr/bin/chromium"

// browserWait bounds a step that includes an OPAQUE computation in the browser.
const browserWait = 60 * time.Second

func requireBrowser(t *testing.T) {
	t.Helper()
	var missing []string
	if _, err := os.Stat(chromiumPath); err != nil {
		missing = append(missing, chromiumPath+" (apt-get install chromium)")
	}
	bundle, _ := filepath.Abs("../../web/static/vendor/opaque.js")
	if _, err := os.Stat(bundle); err != nil {
		missing = append(missing, "web/static/vendor/opaque.js (make web)")
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("the browser test needs %s", strings.Join(missing, " and "))
	}
	t.Skipf("browser test skipped: missing %s", strings.Join(missing, " and "))
}

// browser is one Chromium profile with one tab on the demo page.
type browser struct {
	t    *testing.T
	name string
	base string
	ctx  context.Context

	mu       sync.Mutex
	problems []string // uncaught exceptions and console errors of the page
	console  []string // everything the page logged, for failure reports
}

func newBrowser(t *testing.T, name, base string) *browser {
	t.Helper()
	profile, err := os.MkdirTemp("", "sessiond-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, name: name, base: base}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(profile),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.WindowSize(1280, 900),
	)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(b.listen))
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		_ = chromedp.Cancel(cctx)
		cancel()
		cancelAlloc()
		// Chromium's helpers may still be writing into the profile: retry briefly.
		for i := 0; i < 20; i++ {
			if os.RemoveAll(profile) == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser (no timeout on this first run)
		t.Fatalf("browser %s: start %s: %v", name, chromiumPath, err)
	}
	b.ctx = ctx
	return b
}

func (b *browser) listen(ev any) {
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg += " " + d.Exception.Description
		}
		b.mu.Lock()
		b.problems = append(b.problems, "exception: "+msg)
		b.mu.Unlock()
	case *runtime.EventConsoleAPICalled:
		var parts []string
		for _, a := range ev.Args {
			if len(a.Value) > 0 {
				parts = append(parts, string(a.Value))
			} else {
				parts = append(parts, a.Description)
			}
		}
		line := string(ev.Type) + ": " + strings.Join(parts, " ")
		b.mu.Lock()
		b.console = append(b.console, line)
		if ev.Type == runtime.ConsoleAPICalledTypeError {
			b.problems = append(b.problems, line)
		}
		b.mu.Unlock()
	}
}

// do runs actions within timeout; on failure it stops the test with what the page showed.
func (b *browser) do(what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser %s: %s: %v\n%s", b.name, what, err, b.report())
	}
}

// eval evaluates a JavaScript expression into out.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("browser %s: evaluate %s: %v\n%s", b.name, expr, err, b.report())
	}
	return v
}

// waitFor polls a JavaScript predicate until it is truthy.
func (b *browser) waitFor(what string, timeout time.Duration, predicate string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		b.t.Fatalf("browser %s: waiting for %s: %v\n%s", b.name, what, err, b.report())
	}
}

// report describes the page for a failure message.
func (b *browser) report() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	state, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({
		url: location.href,
		error: document.querySelector('[data-test=error]')?.textContent,
		status: document.getElementById('status')?.textContent,
		visible: [...document.querySelectorAll('[data-test]')].filter(e => e.checkVisibility()).map(e => e.dataset.test),
		forcedReason: document.querySelector('[data-test=forced-logout]')?.dataset.reason,
	})`))
	if err != nil {
		state = "(page state unavailable: " + err.Error() + ")"
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return fmt.Sprintf("page %s: %s\nconsole:\n  %s", b.name, state, strings.Join(b.console, "\n  "))
}

func (b *browser) checkNoProblems() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.problems) > 0 {
		b.t.Errorf("browser %s: the page reported errors:\n  %s", b.name, strings.Join(b.problems, "\n  "))
	}
}

func hook(name string) string { return fmt.Sprintf(`[data-test=%q]`, name) }

// visibleJS is a predicate: the element exists and is rendered.
func visibleJS(sel string) string {
	s, _ := json.Marshal(sel)
	return fmt.Sprintf(`(() => { const e = document.querySelector(%s); return !!e && e.checkVisibility(); })()`, s)
}

func (b *browser) waitVisible(name string, timeout time.Duration) {
	b.t.Helper()
	b.waitFor(name+" visible", timeout, visibleJS(hook(name)))
}

// fill replaces an input's value by typing, as a person would.
func (b *browser) fill(name, text string) {
	b.t.Helper()
	sel := hook(name)
	q, _ := json.Marshal(sel)
	b.do("fill "+name, 15*time.Second,
		chromedp.WaitVisible(chromedp.CSS(sel)),
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := chromedp.Evaluate[bool](fmt.Sprintf(`(document.querySelector(%s).value = "") === ""`, q))(ctx, t)
			return err
		}),
		chromedp.SendKeys(chromedp.CSS(sel), text))
}

func (b *browser) click(sel string) {
	b.t.Helper()
	b.do("click "+sel, 15*time.Second, chromedp.Click(chromedp.CSS(sel)))
}

func (b *browser) open() {
	b.t.Helper()
	b.do("open the page", 30*time.Second, chromedp.Navigate(b.base+"/"), chromedp.WaitVisible(chromedp.CSS(hook("username"))))
}

// register creates the account through the page; it does not sign in.
func (b *browser) register(user, password string) {
	b.t.Helper()
	b.fill("username", user)
	b.fill("password", password)
	b.click(hook("register"))
	b.waitFor("registration", browserWait, `document.getElementById('status').textContent.includes('created')`)
}

// signIn fills the form and waits for the session panel.
func (b *browser) signIn(user, password string) {
	b.t.Helper()
	b.fill("username", user)
	b.fill("password", password)
	b.click(hook("login"))
	b.waitVisible("session", browserWait)
}

func (b *browser) currentSessionID() string {
	b.t.Helper()
	b.waitFor("the current device row", 10*time.Second, `document.querySelector('[data-test=device][data-current=true]')`)
	return eval[string](b, `document.querySelector('[data-test=device][data-current=true]').dataset.sessionId`)
}

func (b *browser) deviceCount() int {
	return eval[int](b, `document.querySelectorAll('[data-test=device]').length`)
}

func (b *browser) waitDevices(n int) {
	b.t.Helper()
	b.waitFor(fmt.Sprintf("%d device rows", n), 10*time.Second, fmt.Sprintf(`document.querySelectorAll('[data-test=device]').length === %d`, n))
}

func (b *browser) waitForcedLogout(reason string, timeout time.Duration) {
	b.t.Helper()
	b.waitFor("forced-logout with reason "+reason, timeout, fmt.Sprintf(
		`(() => { const e = document.querySelector('[data-test=forced-logout]'); return !!e && e.checkVisibility() && e.dataset.reason === %q; })()`, reason))
}

func (b *browser) waitNote(text string) {
	b.t.Helper()
	b.waitFor("the note "+text, 60*time.Second, fmt.Sprintf(`document.querySelector('[data-test=note]').value === %q`, text))
}

func (b *browser) saveNote(text string) {
	b.t.Helper()
	b.fill("note", text)
	_ = eval[bool](b, `(document.getElementById('note-state').textContent = '') === ''`)
	b.click(hook("note-save"))
	b.waitFor("the note saved", 20*time.Second, `document.getElementById('note-state').textContent.startsWith('Saved')`)
}

// screenshot writes the page to SESSIOND_SCREENSHOT_DIR/name when that variable is set. It is
// how docs/screenshot-*.png are made: SESSIOND_SCREENSHOT_DIR=$PWD/docs go test ./cmd/sessiond -run Browser.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	dir := os.Getenv("SESSIOND_SCREENSHOT_DIR")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	// Let the countdown bars and fonts settle, and hide the caret.
	_ = chromedp.Do(ctx, chromedp.Sleep(400*time.Millisecond))
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("wrote %s", filepath.Join(dir, name))
}

// TestBrowserTwoDevices: one user on two browser profiles. Registration, sign-in, the live device
// list, revocation pushed to the other device, the end-to-end encrypted note, a wrong password,
// resume after a reload with the note unlocked by password, and a password change.
func TestBrowserTwoDevices(t *testing.T) {
	requireBrowser(t)
	n := startNode(t, nil)
	a := newBrowser(t, "A", n.Base)
	bb := newBrowser(t, "B", n.Base)
	user := uniqueName("browser")
	const password = "correct horse battery staple"

	a.open()
	if got := eval[bool](a, visibleJS(hook("bundle-missing"))); got {
		t.Fatal("the page says the OPAQUE bundle is missing although it is built")
	}
	a.register(user, password)
	a.fill("device-name", "Laptop")
	a.signIn(user, password)
	// Argon2id ran in the client package's Worker, off the page's main thread.
	if where := eval[string](a, `document.body.dataset.stretching || ""`); where != "worker" {
		t.Fatalf("key stretching ran on %q, want the worker", where)
	}
	for _, h := range []string{"idle-countdown", "absolute-countdown"} {
		v := eval[string](a, fmt.Sprintf(`document.querySelector(%q).dataset.expiresAt`, hook(h)))
		if _, err := time.Parse(time.RFC3339, v); err != nil {
			t.Fatalf("%s data-expires-at = %q, not RFC 3339", h, v)
		}
	}
	a.saveNote("first note")

	// B: a wrong password shows an error; the right one signs in.
	bb.open()
	bb.fill("device-name", "Phone")
	bb.fill("username", user)
	bb.fill("password", "not the password")
	bb.click(hook("login"))
	bb.waitFor("an error message", browserWait, `document.querySelector('[data-test=error]').textContent.trim() !== ''`)
	t.Logf("wrong password: %q", eval[string](bb, `document.querySelector('[data-test=error]').textContent`))
	if eval[bool](bb, visibleJS(hook("session"))) {
		t.Fatal("a wrong password signed in")
	}
	bb.signIn(user, password)
	bb.waitNote("first note")
	bID := bb.currentSessionID()

	// A sees both devices, B's as not current.
	a.waitDevices(2)
	aID := a.currentSessionID()
	if aID == bID {
		t.Fatal("both browsers show the same session")
	}
	if got := eval[string](a, fmt.Sprintf(`document.querySelector('[data-test=device][data-session-id=%q]')?.dataset.current`, bID)); got != "false" {
		t.Fatalf("B's row on A has data-current=%q", got)
	}
	a.screenshot("screenshot-signed-in.png")

	// A signs B out: B shows the forced-logout screen at once.
	start := time.Now()
	a.click(fmt.Sprintf(`[data-test=device][data-session-id=%q] [data-test=revoke]`, bID))
	bb.waitForcedLogout("revoked_by_user", 10*time.Second)
	elapsed := time.Since(start)
	t.Logf("revoke on A -> forced-logout on B: %v", elapsed.Round(time.Millisecond))
	// B's page learns of a revocation only from the pushed notice (it never polls), so this is
	// a ceiling against a lost notice, generous enough for a loaded machine under -race; the
	// latency itself is measured by sessionbench (BENCHMARKS.md).
	if elapsed > 5*time.Second {
		t.Errorf("forced-logout took %v, want within 5s", elapsed)
	}
	if eval[bool](bb, visibleJS(hook("session"))) {
		t.Error("B still shows the session panel after its revocation")
	}
	a.waitDevices(1)
	bb.screenshot("screenshot-forced-logout.png")

	// A note written on A is readable on B once B signs in again.
	a.saveNote("second note, written on A")
	bb.fill("password", password)
	bb.click(hook("login"))
	bb.waitVisible("session", browserWait)
	bb.waitNote("second note, written on A")
	if eval[bool](bb, visibleJS(hook("forced-logout"))) {
		t.Error("forced-logout still shown after signing in again")
	}

	// A reload resumes B's session from sessionStorage; the note needs the password again.
	before := bb.currentSessionID()
	bb.do("reload", 30*time.Second, chromedp.Reload())
	bb.waitVisible("session", 20*time.Second)
	if got := bb.currentSessionID(); got != before {
		t.Fatalf("after a reload the session is %s, want the resumed %s", got, before)
	}
	bb.waitVisible("unlock", 10*time.Second)
	bb.fill("unlock", password)
	bb.click(hook("unlock-submit"))
	bb.waitNote("second note, written on A")
	// The unlock proved the password with reauth.* on B's connection: the session is the same
	// one, and A still lists it.
	if got := bb.currentSessionID(); got != before {
		t.Fatalf("after the unlock B's session is %s, want the same %s (reauth must not replace it)", got, before)
	}
	a.waitFor("B's same session on A", 10*time.Second, fmt.Sprintf(
		`(() => { const rows = [...document.querySelectorAll('[data-test=device]')]; return rows.length === 2 && rows.some(r => r.dataset.sessionId === %q); })()`, before))

	// A changes the password: B is signed out with that reason, then signs in with the new one
	// and still reads the note, which A re-encrypted under the new export key.
	const newPassword = "a new and longer passphrase"
	a.fill("new-password", newPassword)
	a.click(hook("change-password"))
	bb.waitForcedLogout("password_changed", browserWait)
	a.waitFor("the password-change confirmation", browserWait, `document.getElementById('status').textContent.includes('Password changed')`)
	bb.fill("password", newPassword)
	bb.click(hook("login"))
	bb.waitVisible("session", browserWait)
	bb.waitNote("second note, written on A")

	// Sign out from the header.
	a.click(hook("logout"))
	a.waitVisible("login", 10*time.Second)
	if eval[bool](a, visibleJS(hook("forced-logout"))) {
		t.Error("an own logout shows the forced-logout screen")
	}
	if got := eval[string](a, `sessionStorage.getItem('sessiond') ?? ''`); got != "" {
		t.Errorf("the token is still in sessionStorage after logout: %q", got)
	}
	a.checkNoProblems()
	bb.checkNoProblems()
}

// TestBrowserRefreshPrompt: with a short idle timeout the page asks "Stay signed in?" before
// the idle deadline; the button refreshes the session (the deadline moves), and ignoring the
// prompt ends the session with reason idle.
func TestBrowserRefreshPrompt(t *testing.T) {
	requireBrowser(t)
	n := startNode(t, map[string]string{"SESSIOND_IDLE_TIMEOUT": "6s", "SESSIOND_REFRESH_LEAD": "4s"})
	b := newBrowser(t, "A", n.Base)
	user := uniqueName("idle")
	const password = "idle password"
	b.open()
	b.register(user, password)
	b.signIn(user, password)

	b.waitVisible("refresh-prompt", 15*time.Second)
	idleSel := hook("idle-countdown")
	before := eval[string](b, fmt.Sprintf(`document.querySelector(%q).dataset.expiresAt`, idleSel))
	deadline, err := time.Parse(time.RFC3339, before)
	if err != nil {
		t.Fatalf("idle data-expires-at %q: %v", before, err)
	}
	b.click(hook("stay-signed-in"))
	b.waitFor("the idle deadline to move", 10*time.Second, fmt.Sprintf(
		`Date.parse(document.querySelector(%q).dataset.expiresAt) > Date.parse(%q)`, idleSel, before))
	after := eval[string](b, fmt.Sprintf(`document.querySelector(%q).dataset.expiresAt`, idleSel))
	t.Logf("idle deadline %s -> %s", before, after)

	// Past the old deadline the session is alive.
	time.Sleep(time.Until(deadline.Add(time.Second)))
	if eval[bool](b, visibleJS(hook("forced-logout"))) || !eval[bool](b, visibleJS(hook("session"))) {
		t.Fatalf("the session ended although it was refreshed\n%s", b.report())
	}

	// Ignore the next prompt: the session expires for inactivity.
	b.waitVisible("refresh-prompt", 15*time.Second)
	b.waitForcedLogout("idle", 15*time.Second)
	if eval[bool](b, visibleJS(hook("refresh-prompt"))) {
		t.Error("the refresh prompt is still open after the session expired")
	}
	b.checkNoProblems()
}

// TestBrowserReauthPrompt: before the absolute deadline the page shows the re-auth notice; a new
// login from it replaces the session, and the absolute deadline then ends it with reason
// absolute.
func TestBrowserReauthPrompt(t *testing.T) {
	requireBrowser(t)
	n := startNode(t, map[string]string{
		"SESSIOND_IDLE_TIMEOUT": "12s", "SESSIOND_ABSOLUTE_TIMEOUT": "12s", "SESSIOND_REFRESH_LEAD": "9s",
	})
	b := newBrowser(t, "A", n.Base)
	user := uniqueName("reauth")
	const password = "reauth password"
	b.open()
	b.register(user, password)
	b.signIn(user, password)
	first := b.currentSessionID()

	b.waitVisible("reauth-prompt", 15*time.Second)
	b.fill("reauth-password", password)
	b.click(hook("reauth-submit"))
	b.waitFor("a new session", browserWait, fmt.Sprintf(
		`document.querySelector('[data-test=device][data-current=true]')?.dataset.sessionId !== %q && !!document.querySelector('[data-test=device][data-current=true]')`, first))
	b.waitDevices(1) // the previous session was logged out
	b.waitForcedLogout("absolute", 20*time.Second)
	b.checkNoProblems()
}

// TestBrowserReconnect: when the server goes away (close 1001) the page reconnects with back-off
// and resumes the same session on the restarted server.
func TestBrowserReconnect(t *testing.T) {
	requireBrowser(t)
	addr := freeAddr(t)
	env := map[string]string{"SESSIOND_ADDR": addr, "SESSIOND_DATA_DIR": t.TempDir()}
	n1 := startNode(t, env)
	b := newBrowser(t, "A", n1.Base)
	user := uniqueName("reconnect")
	const password = "reconnect password"
	b.open()
	b.register(user, password)
	b.signIn(user, password)
	id := b.currentSessionID()

	n1.stop()
	b.waitFor("the reconnecting state", 10*time.Second, `document.getElementById('conn').textContent.startsWith('Reconnecting')`)
	startNode(t, env)
	b.waitFor("the resumed connection", 30*time.Second, `document.getElementById('conn').textContent === 'Connected'`)
	if got := b.currentSessionID(); got != id {
		t.Fatalf("after the reconnect the session is %s, want %s", got, id)
	}
	if eval[bool](b, visibleJS(hook("forced-logout"))) || !eval[bool](b, visibleJS(hook("session"))) {
		t.Fatalf("the session did not survive the reconnect\n%s", b.report())
	}
	// The session works after the reconnect: the note is saved over HTTP, and the device list
	// is then re-read over the resumed WebSocket.
	b.click(hook("note-save"))
	b.waitFor("the note saved", 20*time.Second, `document.getElementById('note-state').textContent.startsWith('Saved')`)
	b.checkNoProblems()
}

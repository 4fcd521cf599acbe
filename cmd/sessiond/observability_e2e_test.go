package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/sessiond/sessiond/client"
)

// TestObservabilityRules: deploy/observability/alerts.yaml passes `promtool check rules`, and
// every alert passes its unit tests (alerts_test.yaml: each fires on what it is about, a
// healthy node fires none).
func TestObservabilityRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool (Debian package prometheus) is required in CI")
		}
		t.Skip("promtool not installed")
	}
	for _, args := range [][]string{{"check", "rules", "alerts.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "../../deploy/observability"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestObservabilityMatchesMetrics: every sessiond_* series the dashboard and the alerts query
// is exported by a real node. A node is put through what makes its series appear (logins, a
// wrong password, a revocation, API calls, a refused token over a limit) and a second node
// with a certificate exports the certificate's expiry; their /metrics are read and compared.
func TestObservabilityMatchesMetrics(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_BAD_TOKENS_PER_ADDRESS": "1"})
	ctx := ctxT(t)
	name, _ := account(t, n, "obs", "pw")
	a, _ := loginOn(t, n, name, "pw", "a")
	_, sb := loginOn(t, n, name, "pw", "b")
	if _, err := dial(t, n, cheap).Login(ctx, name, "wrong", ""); !client.IsCode(err, "auth_failed") {
		t.Fatalf("a wrong password: %v", err)
	}
	if r := apiDo(t, n, sb.Token, "GET", "/api/v1/session", nil, nil); r.Status != 200 {
		t.Fatalf("an API call: %d", r.Status)
	}
	if _, err := a.Revoke(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	for range 3 { // over SESSIOND_BAD_TOKENS_PER_ADDRESS
		apiDo(t, n, "sdt_"+strings.Repeat("A", 43), "GET", "/api/v1/session", nil, nil)
	}
	certPath, keyPath, _ := selfSigned(t)
	tlsNode := startNode(t, map[string]string{"SESSIOND_TLS_CERT": certPath, "SESSIOND_TLS_KEY": keyPath})

	exported := map[string]bool{}
	signedIn := false
	for _, base := range []string{n.Metrics, tlsNode.Metrics} {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			// Device a is still signed in on node n.
			if strings.HasPrefix(sc.Text(), `sessiond_connections_by_state{state="signed_in"} `) && !strings.HasSuffix(sc.Text(), " 0") {
				signedIn = true
			}
			if f := strings.Fields(sc.Text()); len(f) >= 4 && f[0] == "#" && f[1] == "TYPE" {
				exported[f[2]] = f[3] == "histogram"
			}
		}
		resp.Body.Close()
	}

	if !signedIn {
		t.Fatal("sessiond_connections_by_state does not count the signed-in device")
	}
	var exprs []string
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
	}
	b, err := os.ReadFile("../../deploy/observability/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	rules, err := os.ReadFile("../../deploy/observability/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	exprs = append(exprs, string(rules))
	used := seriesIn(exprs)
	if len(used) < 10 {
		t.Fatalf("only %d sessiond series found in the dashboard and rules: %v", len(used), used)
	}
	if missing := notExported(used, exported); len(missing) > 0 {
		t.Fatalf("the dashboard or the alerts use series no node exports: %v", missing)
	}
	// The comparison itself catches a wrong name.
	if missing := notExported([]string{"sessiond_logins_totl"}, exported); len(missing) != 1 {
		t.Fatal("a misspelt series was not reported")
	}
}

var seriesName = regexp.MustCompile(`sessiond_[a-z_]+`)

// seriesIn lists the sessiond_* series named in the expressions.
func seriesIn(exprs []string) []string {
	set := map[string]bool{}
	for _, e := range exprs {
		for _, m := range seriesName.FindAllString(e, -1) {
			set[m] = true
		}
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// notExported returns the names that are neither an exported family nor a histogram's
// _bucket/_sum/_count series.
func notExported(names []string, exported map[string]bool) []string {
	var missing []string
	for _, s := range names {
		if _, ok := exported[s]; ok {
			continue
		}
		found := false
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(s, suffix); ok && exported[base] {
				found = true
			}
		}
		if !found {
			missing = append(missing, s)
		}
	}
	return missing
}

package main

import (
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/sessiond/sessiond/client"
)

// TestMetricsNotOnPublicListener: /metrics is not served on the main listener, even with no
// management address configured.
func TestMetricsNotOnPublicListener(t *testing.T) {
	n := startNode(t, map[string]string{"SESSIOND_METRICS_ADDR": ""})
	r, body := secGet(t, n.Base+"/metrics")
	if r.StatusCode != http.StatusNotFound || strings.Contains(string(body), "sessiond_") {
		t.Fatalf("GET /metrics on the public listener: HTTP %d %.200s", r.StatusCode, body)
	}
	if !strings.Contains(n.logs.String(), "metrics are not served") {
		t.Fatal("the start-up log does not say that metrics are not served")
	}
}

// storeSeries returns the samples of the store and security-event counters, by series.
func storeSeries(text string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "sessiond_store_ops_total{") && !strings.HasPrefix(line, "sessiond_security_events_total{") {
			continue
		}
		i := strings.LastIndex(line, " ")
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// delta is what moved between two scrapes, on the operations a login touches.
func delta(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if strings.Contains(k, `op="Touch"`) || strings.Contains(k, `op="DeleteEnded"`) || strings.Contains(k, `op="DeleteEventsBefore"`) {
			continue // background work, on its own schedule
		}
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// TestLoginFailureLooksTheSameForUnknownUsers: a failed login of a registered user and of an
// unknown name move the same counters by the same amounts (no outcome label, no extra store
// write for one of them), so even the operator's metrics do not enumerate usernames.
func TestLoginFailureLooksTheSameForUnknownUsers(t *testing.T) {
	n := startNode(t, nil)
	ctx := ctxT(t)
	known, _ := account(t, n, "enum-known", "right password")
	attempt := func(name string) map[string]float64 {
		t.Helper()
		before := storeSeries(secMetrics(t, n.Metrics))
		c := dial(t, n, cheap)
		if _, err := c.Login(ctx, name, "wrong password", ""); !client.IsCode(err, "auth_failed") {
			t.Fatalf("login of %s: %v", name, err)
		}
		return delta(before, storeSeries(secMetrics(t, n.Metrics)))
	}
	for i := 0; i < 3; i++ {
		k := attempt(known)
		u := attempt(uniqueName("enum-unknown"))
		if !maps.Equal(k, u) {
			t.Fatalf("a failed login moved different counters for a known user and an unknown one:\nknown:   %s\nunknown: %s", fmtSeries(k), fmtSeries(u))
		}
	}
}

func fmtSeries(m map[string]float64) string {
	var b strings.Builder
	for k, v := range m {
		fmt.Fprintf(&b, "%s %+g; ", k, v)
	}
	return b.String()
}

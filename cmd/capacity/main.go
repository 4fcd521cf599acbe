// Command capacity prints how many sessiond nodes, how much PostgreSQL and how many Redis
// shards a number of concurrent devices needs, from per-operation costs and a usage profile.
// Every input is a flag whose default is the figure measured on this project's machine
// (BENCHMARKS.md) or, where marked, an assumption to replace with your own; see docs/SCALING.md.
//
//	go run ./cmd/capacity
//	go run ./cmd/capacity -devices 250000,2000000 -api-per-min 6 -cores 8
package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// inputs are the model's parameters.
type inputs struct {
	// Per-operation costs on a node (CPU seconds) and per connection (bytes).
	loginCPU, refreshCPU, apiCPU, noticeCPU float64
	connBytes                               float64
	// Store: statements (each a commit) per operation, and what one PostgreSQL instance takes.
	pgPerLogin, pgPerRefresh, pgPerRevoke, pgPerFlush float64
	pgCapacity                                        float64 // statements/s one instance sustains
	// Broker: messages per revocation and per device-list change, what one shard takes.
	redisPerRevoke, redisCapacity float64
	// Usage profile, per device.
	loginsPerDay, refreshesPerHour, apiPerMin, revokesPerDay float64
	// A node.
	cores, utilisation, memGiB, connsPerNode float64
	flushSeconds                             float64
}

func defaults() inputs {
	return inputs{
		loginCPU: 1.46e-3, refreshCPU: 0.5e-3, apiCPU: 35e-6, noticeCPU: 106e-6, connBytes: 11.5 * 1024,
		pgPerLogin: 3, pgPerRefresh: 2, pgPerRevoke: 4, pgPerFlush: 1, pgCapacity: 5000,
		redisPerRevoke: 3, redisCapacity: 100_000,
		loginsPerDay: 1, refreshesPerHour: 4, apiPerMin: 2, revokesPerDay: 0.05,
		cores: 4, utilisation: 0.6, memGiB: 8, connsPerNode: 100_000, flushSeconds: 10,
	}
}

// row is the model's answer for one number of devices.
type row struct {
	devices                                         float64
	cpuCores, memGiB                                float64
	nodesCPU, nodesMem, nodesConns, nodes           float64
	pgStatements, pgInstances                       float64
	redisMessages, redisShards                      float64
	firstLimit                                      string
	loginsPerS, refreshesPerS, apiPerS, revokesPerS float64
}

func model(in inputs, devices float64) row {
	r := row{devices: devices}
	r.loginsPerS = devices * in.loginsPerDay / 86400
	r.refreshesPerS = devices * in.refreshesPerHour / 3600
	r.apiPerS = devices * in.apiPerMin / 60
	r.revokesPerS = devices * in.revokesPerDay / 86400
	// Every revocation or login tells the user's other devices (about 3 per user) once.
	notices := (r.revokesPerS + r.loginsPerS) * 3
	r.cpuCores = r.loginsPerS*in.loginCPU + r.refreshesPerS*in.refreshCPU + r.apiPerS*in.apiCPU + notices*in.noticeCPU
	r.memGiB = devices * in.connBytes / (1 << 30)
	r.nodesCPU = math.Ceil(r.cpuCores / (in.cores * in.utilisation))
	r.nodesMem = math.Ceil(r.memGiB / (in.memGiB * in.utilisation))
	r.nodesConns = math.Ceil(devices / in.connsPerNode)
	r.nodes = max(r.nodesCPU, r.nodesMem, r.nodesConns, 2) // two at least, to survive one
	// Activity is written in one statement per node per flush interval.
	r.pgStatements = r.loginsPerS*in.pgPerLogin + r.refreshesPerS*in.pgPerRefresh + r.revokesPerS*in.pgPerRevoke +
		r.nodes*in.pgPerFlush/in.flushSeconds
	r.pgInstances = math.Ceil(r.pgStatements / (in.pgCapacity * in.utilisation))
	// A revocation's messages reach every node (the invalidation) or the user's (the notices).
	r.redisMessages = r.revokesPerS*in.redisPerRevoke*r.nodes + r.loginsPerS
	r.redisShards = math.Max(1, math.Ceil(r.redisMessages/(in.redisCapacity*in.utilisation)))
	limits := []struct {
		name string
		n    float64
	}{{"node CPU", r.nodesCPU}, {"node memory", r.nodesMem}, {"connections per node", r.nodesConns}}
	r.firstLimit = "none (two nodes for redundancy)"
	best := 2.0
	for _, l := range limits {
		if l.n >= best {
			best, r.firstLimit = l.n, l.name
		}
	}
	if r.pgInstances > 1 {
		r.firstLimit += "; PostgreSQL needs " + strconv.Itoa(int(r.pgInstances)) + " instances' worth of writes (shard by user, or a bigger instance)"
	}
	return r
}

func printTable(w io.Writer, in inputs, devices []float64) {
	fmt.Fprintf(w, "| devices | logins/s | refreshes/s | API calls/s | node cores busy | node memory | nodes (CPU / memory / connections) | PostgreSQL statements/s | PostgreSQL instances | Redis messages/s | Redis shards | sets the node count |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, d := range devices {
		r := model(in, d)
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %.0f | %.1f | %.1f GiB | **%.0f** (%.0f / %.0f / %.0f) | %.0f | %.0f | %.0f | %.0f | %s |\n",
			human(d), r.loginsPerS, r.refreshesPerS, r.apiPerS, r.cpuCores, r.memGiB, r.nodes, r.nodesCPU, r.nodesMem, r.nodesConns,
			r.pgStatements, r.pgInstances, r.redisMessages, r.redisShards, r.firstLimit)
	}
}

func human(d float64) string {
	switch {
	case d >= 1e6 && math.Mod(d, 1e6) == 0:
		return fmt.Sprintf("%.0fM", d/1e6)
	case d >= 1e3 && math.Mod(d, 1e3) == 0:
		return fmt.Sprintf("%.0fk", d/1e3)
	}
	return fmt.Sprintf("%.0f", d)
}

func parseDevices(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("-devices: %q is not a positive number", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func main() {
	in := defaults()
	devices := flag.String("devices", "100000,1000000,10000000", "concurrent devices, comma-separated")
	flag.Float64Var(&in.loginCPU, "login-cpu", in.loginCPU, "node CPU seconds per login (measured: sessionbench login)")
	flag.Float64Var(&in.refreshCPU, "refresh-cpu", in.refreshCPU, "node CPU seconds per token refresh (assumed: a third of a login, no OPAQUE)")
	flag.Float64Var(&in.apiCPU, "api-cpu", in.apiCPU, "node CPU seconds per validated API call (measured: sessionbench validate)")
	flag.Float64Var(&in.noticeCPU, "notice-cpu", in.noticeCPU, "node CPU seconds per notice written to a device (measured: revoke burst)")
	flag.Float64Var(&in.connBytes, "conn-bytes", in.connBytes, "node memory per idle connection (measured: sessionbench connections)")
	flag.Float64Var(&in.pgPerLogin, "pg-per-login", in.pgPerLogin, "PostgreSQL statements per login (session, event, outbox)")
	flag.Float64Var(&in.pgPerRefresh, "pg-per-refresh", in.pgPerRefresh, "PostgreSQL statements per refresh")
	flag.Float64Var(&in.pgPerRevoke, "pg-per-revoke", in.pgPerRevoke, "PostgreSQL statements per revocation (revoke, events, outbox, device list)")
	flag.Float64Var(&in.pgCapacity, "pg-capacity", in.pgCapacity, "statements/s one PostgreSQL instance sustains (assumed; measure yours)")
	flag.Float64Var(&in.redisPerRevoke, "redis-per-revoke", in.redisPerRevoke, "Redis messages per revocation per node (invalidation, notice, device list)")
	flag.Float64Var(&in.redisCapacity, "redis-capacity", in.redisCapacity, "messages/s one Redis shard delivers (assumed; measure yours)")
	flag.Float64Var(&in.loginsPerDay, "logins-per-day", in.loginsPerDay, "logins per device per day")
	flag.Float64Var(&in.refreshesPerHour, "refreshes-per-hour", in.refreshesPerHour, "token refreshes per device per hour")
	flag.Float64Var(&in.apiPerMin, "api-per-min", in.apiPerMin, "API calls per device per minute")
	flag.Float64Var(&in.revokesPerDay, "revokes-per-day", in.revokesPerDay, "revocations per device per day")
	flag.Float64Var(&in.cores, "cores", in.cores, "cores per node")
	flag.Float64Var(&in.memGiB, "mem-gib", in.memGiB, "memory per node, GiB")
	flag.Float64Var(&in.connsPerNode, "conns-per-node", in.connsPerNode, "connections a node may hold (its open-file limit, less headroom)")
	flag.Float64Var(&in.utilisation, "utilisation", in.utilisation, "the share of each resource planned for (headroom for one node's loss and spikes)")
	flag.Float64Var(&in.flushSeconds, "flush-seconds", in.flushSeconds, "SESSIOND_TOUCH_INTERVAL in seconds (one activity write per node per interval)")
	flag.Parse()
	ds, err := parseDevices(*devices)
	if err != nil {
		fmt.Fprintln(os.Stderr, "capacity:", err)
		os.Exit(2)
	}
	printTable(os.Stdout, in, ds)
}

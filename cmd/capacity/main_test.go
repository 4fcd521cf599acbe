package main

import (
	"bytes"
	"math"
	"os"
	"strings"
	"testing"
)

// The model's arithmetic on a case worked by hand: 864,000 devices, one login a day each (10
// logins/s), nothing else, 1 ms per login on 1-core nodes planned at 50 %.
func TestModelByHand(t *testing.T) {
	in := inputs{loginCPU: 1e-3, connBytes: 1024, pgPerLogin: 3, pgCapacity: 100, redisCapacity: 1000,
		loginsPerDay: 1, cores: 1, utilisation: 0.5, memGiB: 1, connsPerNode: 1e6, flushSeconds: 10}
	r := model(in, 864_000)
	if r.loginsPerS != 10 {
		t.Fatalf("logins/s %v, want 10", r.loginsPerS)
	}
	// 10 logins/s × 1 ms = 0.01 cores, plus 10 × 3 notices × 0 = 0.01.
	if math.Abs(r.cpuCores-0.01) > 1e-9 {
		t.Fatalf("cores %v, want 0.01", r.cpuCores)
	}
	// 864,000 KiB = 0.824 GiB: 2 nodes of 1 GiB at 50 %.
	if r.nodesMem != 2 || r.nodes != 2 {
		t.Fatalf("nodes by memory %v, nodes %v; want 2 and 2", r.nodesMem, r.nodes)
	}
	// 30 statements/s for logins + 2 nodes × 1 flush per 10 s × 0 statements = 30: one instance.
	if r.pgStatements != 30 || r.pgInstances != 1 {
		t.Fatalf("PostgreSQL %v statements/s on %v instances, want 30 on 1", r.pgStatements, r.pgInstances)
	}
}

// docs/SCALING.md shows the table this tool prints with its defaults, so that the two cannot
// drift apart.
func TestScalingDocMatchesTheTool(t *testing.T) {
	doc, err := os.ReadFile("../../docs/SCALING.md")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ds, _ := parseDevices("100000,1000000,10000000")
	printTable(&out, defaults(), ds)
	if !strings.Contains(string(doc), out.String()) {
		t.Fatalf("docs/SCALING.md does not contain the table of `go run ./cmd/capacity`:\n%s", out.String())
	}
}

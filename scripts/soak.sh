#!/usr/bin/env bash
# Soak test: two sessiond nodes on PostgreSQL + Redis holding many signed-in devices for a long
# time while refreshes, revocations, logouts, logins and API calls keep running. Every node's RSS,
# Go heap, goroutines and connections are sampled from /metrics into a CSV; errors are counted by
# wire code. See docs/OPERATIONS.md ("Soak").
#
#   scripts/soak.sh                                  # 10,000 devices for 30 minutes
#   SOAK_CONNECTIONS=2000 SOAK_DURATION=5m scripts/soak.sh
#
# Settings (environment):
#   SOAK_CONNECTIONS   devices to hold (default 10000), split evenly over the nodes
#   SOAK_DURATION      steady-state time after the ramp-up (default 30m)
#   SOAK_SAMPLE        sampling interval (default 30s)
#   SOAK_RATE          actions per second: API calls, lists, refreshes, revocations, logouts+logins (default 50)
#   SOAK_SOURCES       client source addresses 127.0.0.1..N the devices are spread over (default 8)
#   SOAK_NODES         number of nodes (default 2)
#   SOAK_OUT           output directory (default $TMPDIR/sessiond-soak-YYYYmmdd-HHMMSS)
#   SOAK_POSTGRES_URL  PostgreSQL (default $TEST_POSTGRES_URL, else postgres://postgres@127.0.0.1:5432/test?sslmode=disable);
#                      a fresh schema is created in it and dropped at the end
#   SOAK_REDIS_URL     Redis (default $TEST_REDIS_URL, else redis://127.0.0.1:6379/0); a fresh channel prefix is used
#
# Output in SOAK_OUT: samples.csv, summary.json, node*.log. Exit status 1 when any request failed
# with a code other than rate_limited or a device was closed unasked.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${SOAK_CONNECTIONS:-10000}
DURATION=${SOAK_DURATION:-30m}
SAMPLE=${SOAK_SAMPLE:-30s}
RATE=${SOAK_RATE:-50}
SOURCES=${SOAK_SOURCES:-8}
NODES=${SOAK_NODES:-2}
OUT=${SOAK_OUT:-${TMPDIR:-/tmp}/sessiond-soak-$(date +%Y%m%d-%H%M%S)}
PG=${SOAK_POSTGRES_URL:-${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}}
REDIS=${SOAK_REDIS_URL:-${TEST_REDIS_URL:-redis://127.0.0.1:6379/0}}

# Each device is one socket in the load generator and one in a node: raise the soft limit of
# open files to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
need=$((CONNECTIONS + 1000))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
	echo "soak: the open-file limit ($(ulimit -n)) is below $need; raise it (ulimit -Hn) or lower SOAK_CONNECTIONS" >&2
	exit 1
fi

mkdir -p "$OUT"
echo "soak: building into $OUT" >&2
go build -o "$OUT/sessiond" ./cmd/sessiond
go build -o "$OUT/soak" ./scripts/soak
rm -f "$OUT/keys.json"
"$OUT/sessiond" keygen -o "$OUT/keys.json" >/dev/null
DB=$("$OUT/soak" prepare -database-url "$PG")
PREFIX="soak-$(date +%s)-$RANDOM:"

pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	"$OUT/soak" cleanup -database-url "$DB" || true
}
trap cleanup EXIT

bases=()
metrics=()
for i in $(seq 1 "$NODES"); do
	mkdir -p "$OUT/node$i"
	SESSIOND_ADDR=127.0.0.1:0 SESSIOND_METRICS_ADDR=127.0.0.1:0 SESSIOND_LOG_FORMAT=json SESSIOND_DATA_DIR="$OUT/node$i" \
		SESSIOND_DATABASE_URL="$DB" SESSIOND_REDIS_URL="$REDIS" SESSIOND_REDIS_PREFIX="$PREFIX" \
		SESSIOND_KEY_FILE="$OUT/keys.json" \
		SESSIOND_CONNECTIONS_PER_ADDRESS=$((CONNECTIONS + 100)) \
		SESSIOND_LOGIN_LIMIT_PER_ADDRESS=1000000 SESSIOND_REGISTER_LIMIT_PER_ADDRESS=1000000 \
		SESSIOND_BAD_TOKENS_PER_ADDRESS=1000000 \
		"$OUT/sessiond" 2>"$OUT/node$i.log" &
	pids+=($!)
	addr=""
	for _ in $(seq 1 300); do
		addr=$(grep -m1 'sessiond listening' "$OUT/node$i.log" 2>/dev/null | sed -E 's/.*"addr":"([^"]+)".*/\1/' || true)
		[ -n "$addr" ] && break
		kill -0 "${pids[-1]}" 2>/dev/null || { cat "$OUT/node$i.log" >&2; exit 1; }
		sleep 0.1
	done
	[ -n "$addr" ] || { echo "soak: node $i did not start" >&2; cat "$OUT/node$i.log" >&2; exit 1; }
	echo "soak: node $i at http://$addr" >&2
	bases+=("http://$addr")
	maddr=$(grep -m1 'metrics listening' "$OUT/node$i.log" | sed -E 's/.*"addr":"([^"]+)".*/\1/')
	metrics+=("http://$maddr")
done

status=0
"$OUT/soak" run -nodes "$(IFS=,; echo "${bases[*]}")" -metrics "$(IFS=,; echo "${metrics[*]}")" -connections "$CONNECTIONS" -duration "$DURATION" \
	-sample "$SAMPLE" -rate "$RATE" -sources "$SOURCES" -csv "$OUT/samples.csv" >"$OUT/summary.json" || status=$?
cat "$OUT/summary.json"
echo "soak: samples in $OUT/samples.csv, node logs in $OUT/node*.log" >&2
exit "$status"

#!/usr/bin/env bash
# Three sessiond nodes behind HAProxy on this machine, sharing PostgreSQL, Redis and one key
# file: the multi-node topology to try by hand (the load-balancer tests use the same
# haproxy.cfg). Ctrl-C stops everything.
#
#   SESSIOND_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
#   SESSIOND_REDIS_URL=redis://127.0.0.1:6379/0 deploy/local/up.sh
#
# Then open http://127.0.0.1:8080/ (LB_ADDR). Restart a node without signing anyone out:
#   kill -INT <its pid>; start it again with the same command (printed below).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${SESSIOND_DATABASE_URL:?set SESSIOND_DATABASE_URL (PostgreSQL)}"
: "${SESSIOND_REDIS_URL:?set SESSIOND_REDIS_URL (Redis)}"
export LB_ADDR="${LB_ADDR:-127.0.0.1:8080}"
export NODE1_ADDR="${NODE1_ADDR:-127.0.0.1:8081}" NODE2_ADDR="${NODE2_ADDR:-127.0.0.1:8082}" NODE3_ADDR="${NODE3_ADDR:-127.0.0.1:8083}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; wait; rm -rf "$work"' EXIT
go build -o "$work/sessiond" ./cmd/sessiond
"$work/sessiond" keygen -o "$work/keys.json"
export SESSIOND_KEY_FILE="$work/keys.json" SESSIOND_TRUSTED_PROXIES=127.0.0.1/32 \
  SESSIOND_DRAIN_DELAY=1s SESSIOND_DRAIN_SPREAD=2s
for i in 1 2 3; do
  addr_var="NODE${i}_ADDR"
  SESSIOND_ADDR="${!addr_var}" SESSIOND_DATA_DIR="$work/node$i" "$work/sessiond" 2>"$work/node$i.log" &
  echo "node$i: pid $! on ${!addr_var} (log $work/node$i.log)"
  sleep 1 # the first node applies the migrations
done
haproxy -db -f deploy/local/haproxy.cfg &
echo "HAProxy on http://$LB_ADDR/ in front of the three nodes; Ctrl-C stops all"
wait

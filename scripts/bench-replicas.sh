#!/usr/bin/env bash
# GET /api/v1/tasks/{id} throughput: a follower on Redis against a single
# replica on SQLite, side by side in one run, with wrk on loopback.
#
#   KUBECONFIG=<local control plane> scripts/bench-replicas.sh [seconds] [connections]
#
# Needs a control plane (scripts/local-cluster.sh up), redis-server and wrk.
# Starts and stops its own redis-server and prewarm processes (by PID).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=${1:-10}
CONNS=${2:-16}
BIN=${PREWARM_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/debug/prewarm}
: "${KUBECONFIG:?set KUBECONFIG to a control plane (scripts/local-cluster.sh up)}"
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

redis-server --port 0 --unixsocket "$work/redis.sock" --dir "$work" --save "" --appendonly yes >/dev/null &
pids+=($!)
for _ in $(seq 100); do [ -S "$work/redis.sock" ] && break; sleep 0.05; done

# start NAME NAMESPACE ARGS...: sets $url (not in a subshell, so its PID is
# recorded for the cleanup).
start() {
  local name=$1 ns=$2; shift 2
  "$BIN" serve --listen 127.0.0.1:0 --kubeconfig "$KUBECONFIG" --namespace "$ns" \
    --replica-name "$name" --log-level warn --rate-limit-rps 0 "$@" >"$work/$name.out" 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 600); do
    if grep -q '^listening on ' "$work/$name.out"; then
      url=$(sed -n 's/^listening on //p' "$work/$name.out" | head -1)
      return
    fi
    sleep 0.1
  done
  echo "$name did not start:" >&2; cat "$work/$name.log" >&2; exit 1
}

start bench-sqlite bench-sqlite --store sqlite --database "$work/bench.db"
sqlite=$url
start bench-leader bench-redis --store redis --redis-url "unix://$work/redis.sock"
leader=$url
start bench-follower bench-redis --store redis --redis-url "unix://$work/redis.sock"
follower=$url

task() {
  curl -sf -X POST "$1/api/v1/tasks" -H 'content-type: application/json' \
    -d '{"images":["nginx:1.25"],"nodeSelector":{"bench":"none"}}' | sed -n 's/.*"taskId":"\([^"]*\)".*/\1/p'
}
id_sqlite=$(task "$sqlite")
id_redis=$(task "$leader")

rps() {
  wrk -t2 -c"$CONNS" -d"${SECS}s" "$1" | awk '/Requests\/sec/ {print $2}'
}
r_sqlite=$(rps "$sqlite/api/v1/tasks/$id_sqlite")
r_follower=$(rps "$follower/api/v1/tasks/$id_redis")
printf 'GET /api/v1/tasks/{id}, wrk -t2 -c%s -d%ss, %s build\n' "$CONNS" "$SECS" "$(basename "$(dirname "$BIN")")"
printf '  single replica, SQLite:  %8.0f req/s\n' "$r_sqlite"
printf '  follower, Redis:         %8.0f req/s\n' "$r_follower"
awk -v a="$r_follower" -v b="$r_sqlite" 'BEGIN { printf "  follower (Redis) / SQLite: %.2f\n", a / b }'

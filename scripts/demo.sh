#!/usr/bin/env bash
# The demo: a local control plane, 50 simulated nodes, the prewarm service,
# and a task created with curl and followed to 100%.
#
#   scripts/demo.sh          keep everything running after the task (Ctrl-C stops it all)
#   scripts/demo.sh --once   stop everything once the task has ended
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
ONCE=0
[ "${1:-}" = "--once" ] && ONCE=1
PORT=${PREWARM_DEMO_PORT:-8080}
URL=http://127.0.0.1:$PORT

"$REPO/scripts/setup.sh"
# shellcheck source=scripts/env.sh
. "$REPO/scripts/env.sh"

echo "== building prewarm and kube-sim"
cargo build -q -p prewarm -p kube-sim

export LOCAL_CLUSTER_DIR="$REPO/.local-cluster"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$REPO/scripts/local-cluster.sh" down >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== starting the local control plane"
"$REPO/scripts/local-cluster.sh" down >/dev/null 2>&1 || true
KUBECONFIG=$("$REPO/scripts/local-cluster.sh" up | tail -n 1 | sed 's/^KUBECONFIG=//')
export KUBECONFIG
LOGS=$LOCAL_CLUSTER_DIR/logs

echo "== starting kube-sim with 50 nodes"
"$TARGET"/debug/kube-sim --kubeconfig "$KUBECONFIG" --scenario examples/demo-scenario.yaml --cleanup \
  >"$LOGS/kube-sim.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 300); do grep -q '^ready:' "$LOGS/kube-sim.log" && break; sleep 0.2; done
grep '^ready:' "$LOGS/kube-sim.log" || { tail "$LOGS/kube-sim.log"; exit 1; }
# Print the first lines without cutting kubectl's output short: under pipefail a
# reader that exits early (head) kills kubectl with SIGPIPE and the demo with 141.
NODES_TABLE=$(kubectl get nodes --no-headers)
printf '%s\n' "$NODES_TABLE" | sed -n 1,3p; echo "   …"

echo "== starting prewarm on $URL"
"$TARGET"/debug/prewarm serve --listen "127.0.0.1:$PORT" --kubeconfig "$KUBECONFIG" \
  --database "$LOCAL_CLUSTER_DIR/prewarm.db" --helper-image prewarm:demo \
  >"$LOGS/prewarm.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.2; done
curl -s "$URL/healthz"; echo

echo "== creating a task"
TASK_ID=$(curl -s -X POST "$URL/api/v1/tasks" \
  -H "Content-Type: application/json" \
  -d '{"images": ["nginx:latest", "redis:7"], "batchSize": 10, "nodeSelector": {"workload": "compute"}}' \
  | jq -r .taskId)
echo "task: $TASK_ID"

while true; do
  STATUS=$(curl -s "$URL/api/v1/tasks/$TASK_ID" | jq -r .status)
  PROGRESS=$(curl -s "$URL/api/v1/tasks/$TASK_ID" | jq -r .progress.percentage)
  echo "status: $STATUS, progress: $PROGRESS%"
  [ "$STATUS" = completed ] && break
  if [ "$STATUS" = failed ] || [ "$STATUS" = cancelled ]; then
    curl -s "$URL/api/v1/tasks/$TASK_ID" | jq .
    exit 1
  fi
  sleep 1
done
curl -s "$URL/api/v1/tasks/$TASK_ID" | jq '{taskId, status, progress, imageStatuses}'

if [ $ONCE -eq 1 ]; then exit 0; fi
echo
echo "The service keeps running at $URL (logs in $LOGS); the web UI is $URL/. Try:"
echo "  curl -s $URL/api/v1/tasks | jq ."
echo "  KUBECONFIG=$KUBECONFIG kubectl get nodes"
echo "Ctrl-C stops everything."
wait

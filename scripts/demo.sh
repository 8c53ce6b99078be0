#!/usr/bin/env bash
# The demo: a local control plane, 50 simulated nodes, the prewarm service,
# and a task created with curl and followed to 100%.
#
#   scripts/demo.sh          keep everything running after the task (Ctrl-C stops it all)
#   scripts/demo.sh --once   stop everything once the task has ended
#
# PREWARM_DEMO_PORT (default 8080) is the service's port; LOCAL_CLUSTER_DIR
# (default <repo>/.local-cluster) holds the control plane's state and the logs.
# On exit the demo stops exactly what it started, by PID, and nothing else.
# When it fails, the logs of the control plane, kube-sim and prewarm are kept
# in PREWARM_DEMO_LOGS (default: a new directory under ${TMPDIR:-/tmp}) and
# the demo says where.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
ONCE=0
[ "${1:-}" = "--once" ] && ONCE=1
PORT=${PREWARM_DEMO_PORT:-8080}
URL=http://127.0.0.1:$PORT
TASK_DEADLINE_SECS=${PREWARM_DEMO_TASK_DEADLINE:-300}

"$REPO/scripts/setup.sh"
# shellcheck source=scripts/env.sh
. "$REPO/scripts/env.sh"

echo "== building prewarm and kube-sim"
cargo build -q -p prewarm -p kube-sim

export LOCAL_CLUSTER_DIR=${LOCAL_CLUSTER_DIR:-$REPO/.local-cluster}
PIDS=()
CLUSTER_STARTED=0
cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  # Stopping the control plane deletes its directory: keep the logs of a
  # failed run first (an interrupt, 130, is how the demo is meant to end).
  if [ $CLUSTER_STARTED -eq 1 ] && [ "$status" -ne 0 ] && [ "$status" -ne 130 ] && [ -d "$LOCAL_CLUSTER_DIR/logs" ]; then
    local kept=${PREWARM_DEMO_LOGS:-}
    if [ -z "$kept" ]; then kept=$(mktemp -d "${TMPDIR:-/tmp}/prewarm-demo-logs.XXXXXX"); fi
    mkdir -p "$kept" && cp -a "$LOCAL_CLUSTER_DIR/logs/." "$kept/" &&
      echo "demo: failed (exit $status); logs of the control plane, kube-sim and prewarm kept in $kept" >&2
  fi
  if [ $CLUSTER_STARTED -eq 1 ]; then
    "$REPO/scripts/local-cluster.sh" down >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "demo: $*" >&2; exit 1; }
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# Never take over, or stop, what someone else runs.
CLUSTER_STATUS=$("$REPO/scripts/local-cluster.sh" status)
if [[ $CLUSTER_STATUS == *": running"* ]]; then
  die "a local control plane already runs in $LOCAL_CLUSTER_DIR; stop it with
  LOCAL_CLUSTER_DIR=$LOCAL_CLUSTER_DIR scripts/local-cluster.sh down   (or set another LOCAL_CLUSTER_DIR)"
fi
port_in_use && die "something already answers on $URL; set PREWARM_DEMO_PORT to a free port"

echo "== starting the local control plane"
CLUSTER_STARTED=1
KUBECONFIG=$("$REPO/scripts/local-cluster.sh" up | tail -n 1 | sed 's/^KUBECONFIG=//')
export KUBECONFIG
LOGS=$LOCAL_CLUSTER_DIR/logs

echo "== starting kube-sim with 50 nodes"
"$TARGET"/debug/kube-sim --kubeconfig "$KUBECONFIG" --scenario examples/demo-scenario.yaml --cleanup \
  >"$LOGS/kube-sim.log" 2>&1 &
SIM_PID=$!
PIDS+=("$SIM_PID")
deadline=$((SECONDS + 60))
until grep -q '^ready:' "$LOGS/kube-sim.log"; do
  if ! kill -0 "$SIM_PID" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
    tail "$LOGS/kube-sim.log" >&2; die "kube-sim did not report ready"
  fi
  sleep 0.2
done
grep '^ready:' "$LOGS/kube-sim.log"
# Print the first lines without cutting kubectl's output short: under pipefail a
# reader that exits early (head) kills kubectl with SIGPIPE and the demo with 141.
NODES_TABLE=$(kubectl get nodes --no-headers)
printf '%s\n' "$NODES_TABLE" | sed -n 1,3p; echo "   …"

echo "== starting prewarm on $URL"
"$TARGET"/debug/prewarm serve --listen "127.0.0.1:$PORT" --kubeconfig "$KUBECONFIG" \
  --database "$LOCAL_CLUSTER_DIR/prewarm.db" --helper-image prewarm:demo \
  >"$LOGS/prewarm.log" 2>&1 &
SERVICE_PID=$!
PIDS+=("$SERVICE_PID")
deadline=$((SECONDS + 30))
until curl -sf "$URL/healthz" >/dev/null; do
  if ! kill -0 "$SERVICE_PID" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
    tail "$LOGS/prewarm.log" >&2; die "prewarm did not answer on $URL/healthz"
  fi
  sleep 0.2
done
curl -s "$URL/healthz"; echo

echo "== creating a task"
TASK_ID=$(curl -s -X POST "$URL/api/v1/tasks" \
  -H "Content-Type: application/json" \
  -d '{"images": ["nginx:latest", "redis:7"], "batchSize": 10, "nodeSelector": {"workload": "compute"}}' \
  | jq -r .taskId)
echo "task: $TASK_ID"

deadline=$((SECONDS + TASK_DEADLINE_SECS))
while true; do
  TASK=$(curl -s "$URL/api/v1/tasks/$TASK_ID")
  STATUS=$(printf '%s' "$TASK" | jq -r .status)
  PROGRESS=$(printf '%s' "$TASK" | jq -r .progress.percentage)
  echo "status: $STATUS, progress: $PROGRESS%"
  [ "$STATUS" = completed ] && break
  if [ "$STATUS" = failed ] || [ "$STATUS" = cancelled ]; then
    printf '%s\n' "$TASK" | jq .
    exit 1
  fi
  [ $SECONDS -lt $deadline ] || die "task $TASK_ID not completed within ${TASK_DEADLINE_SECS}s"
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

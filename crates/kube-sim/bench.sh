#!/usr/bin/env bash
# Registration benchmark: bring up a private control plane, register N simulated
# nodes, print the time until kube-sim says `ready` and its peak RSS, tear down.
#
#   crates/kube-sim/bench.sh [NODES]        # default 5000
#   PROFILE=debug crates/kube-sim/bench.sh  # use the debug build (default: release)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NODES=${1:-5000}
PROFILE=${PROFILE:-release}
cd "$REPO"

if [ "$PROFILE" = release ]; then
  cargo build -q -p kube-sim --release
else
  cargo build -q -p kube-sim
fi
BIN=${CARGO_TARGET_DIR:-$REPO/target}/$PROFILE/kube-sim

STATE=$(mktemp -d "${TMPDIR:-/tmp}/kube-sim-bench.XXXXXX")
SIM_PID=
cleanup() {
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null || true
  LOCAL_CLUSTER_DIR=$STATE/cluster scripts/local-cluster.sh down >/dev/null 2>&1 || true
  rm -rf "$STATE"
}
trap cleanup EXIT

KUBECONFIG=$(LOCAL_CLUSTER_DIR=$STATE/cluster scripts/local-cluster.sh up | tail -n 1 | sed 's/^KUBECONFIG=//')
export KUBECONFIG

start=$(date +%s.%N)
"$BIN" --nodes "$NODES" --name-prefix bench- >"$STATE/sim.out" 2>"$STATE/sim.err" &
SIM_PID=$!
until grep -q '^ready:' "$STATE/sim.out"; do
  if ! kill -0 "$SIM_PID" 2>/dev/null; then
    echo "kube-sim exited early:" >&2; cat "$STATE/sim.err" >&2; exit 1
  fi
  sleep 0.05
done
end=$(date +%s.%N)
hwm_ready=$(awk '/VmHWM/ {print $2}' "/proc/$SIM_PID/status")
registered=$(kubectl get nodes --no-headers -o custom-columns=N:.metadata.name | grep -c '^bench-' || true)
ready_nodes=$(kubectl get nodes --no-headers | awk '$1 ~ /^bench-/ && $2 == "Ready"' | wc -l)
sleep 5
hwm_idle=$(awk '/VmHWM/ {print $2}' "/proc/$SIM_PID/status")
rss_idle=$(awk '/VmRSS/ {print $2}' "/proc/$SIM_PID/status")

printf 'nodes requested:        %s\n' "$NODES"
printf 'nodes listed / Ready:   %s / %s\n' "$registered" "$ready_nodes"
printf 'time to ready:          %s s\n' "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')"
printf 'peak RSS at ready:      %d MiB (VmHWM %s kB)\n' $((hwm_ready / 1024)) "$hwm_ready"
printf 'peak RSS after 5 s:     %d MiB (VmRSS now %d MiB)\n' $((hwm_idle / 1024)) $((rss_idle / 1024))
printf 'profile / cores:        %s / %s\n' "$PROFILE" "$(nproc)"

#!/usr/bin/env bash
# The README's first command, as a new user runs it: `scripts/demo.sh --once`
# from a clean clone of this repository (HEAD, committed files only), on a
# free port and with its own control-plane directory, so it collides with
# nothing else running. Passes when the demo's task completes, the demo exits
# 0, and nothing the demo started is still running afterwards. When it fails,
# the demo's output and its logs are kept and the test says where.
#
#   scripts/test-demo.sh
#
# Compiled dependencies come from CARGO_TARGET_DIR (default <repo>/target), so
# only the workspace's own crates are compiled again: the clone builds in a
# private target dir made of hard links to the shared one's dependency
# artifacts. The workspace's crates are left out of it, because their
# binaries embed the clone's path (CARGO_MANIFEST_DIR) and must not be mixed
# with the shared dir's.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/prewarm-demo-test.XXXXXX")
# Outside $WORK, which goes at exit: the demo's output and logs of a failed run.
KEPT=$(mktemp -d "${TMPDIR:-/tmp}/prewarm-demo-test-logs.XXXXXX")
PASSED=0
cleanup() {
  if [ $PASSED -eq 1 ]; then
    rm -rf "$KEPT"
  else
    if [ -f "$WORK/demo.out" ]; then cp "$WORK/demo.out" "$KEPT/"; fi
    echo "demo test: the demo's output (demo.out) and its logs are kept in $KEPT" >&2
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "demo test: $*" >&2; exit 1; }

git clone -q --no-hardlinks "$REPO" "$WORK/prewarm"
SHARED_TARGET=${CARGO_TARGET_DIR:-$REPO/target}
mkdir -p "$WORK/target"
if [ -d "$SHARED_TARGET/debug" ]; then
  cp -al "$SHARED_TARGET/debug" "$WORK/target/debug"
  # Hard links are safe for artifacts cargo only reads (fresh dependencies);
  # everything of the workspace's own crates is removed so it is written anew.
  find "$WORK/target/debug" -maxdepth 2 \( -name 'prewarm*' -o -name 'libprewarm*' -o -name 'kube_sim*' \
    -o -name 'libkube_sim*' -o -name 'kube-sim*' -o -name 'kubectl*prewarm*' -o -name 'incremental' \) \
    -exec rm -rf {} +
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')

set +e
(
  cd "$WORK/prewarm"
  export CARGO_TARGET_DIR=$WORK/target
  export PREWARM_DEMO_PORT=$PORT LOCAL_CLUSTER_DIR=$WORK/cluster TMPDIR=$WORK PREWARM_DEMO_LOGS=$KEPT
  scripts/demo.sh --once
) >"$WORK/demo.out" 2>&1
status=$?
set -e

if [ $status -ne 0 ] || ! grep -q '^status: completed, progress: 100%' "$WORK/demo.out"; then
  tail -n 40 "$WORK/demo.out" >&2
  fail "scripts/demo.sh --once exited $status without a completed task"
fi
sed -n '/^== creating a task/,$p' "$WORK/demo.out" | grep -E '^(task|status):' | tail -n 2

# Everything the demo started names a path under $WORK (kubeconfig, database,
# etcd data dir) or listens on $PORT: none of it may outlive the demo.
left=$(ps -eo pid=,args= | awk -v w="$WORK" 'index($0, w) && !/awk/ {print}')
[ -z "$left" ] || fail "processes left running after the demo:
$left"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then fail "port $PORT still answers after the demo"; fi
[ ! -e "$WORK/cluster" ] || fail "the demo left its control-plane state in $WORK/cluster"
PASSED=1
echo "demo test: passed (port $PORT; nothing left running)"

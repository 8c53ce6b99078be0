#!/usr/bin/env bash
# Every check and test, from a fresh clone.
#
#   scripts/test.sh            the full tier (CI, .ci/run): installs what is needed,
#                              then every group below; needs the local control plane
#   scripts/test.sh --quick    the fast tier: fmt, clippy, unit and handler tests;
#                              no control plane, nothing installed (< 2 min warm)
#   scripts/test.sh GROUP...   only the named groups (e.g. `scripts/test.sh unit demo`)
#   scripts/test.sh --list     the groups of each tier
#
# A group is a shell function `group_<name>`; add yours below and name it in
# QUICK_GROUPS (no control plane, no installs) or SLOW_GROUPS. Quick groups run
# one after another; slow groups run TEST_JOBS at a time (default 2), each
# with its output in its own log, printed when it ends. Every group prints its
# wall time, and a summary closes the run. Slow groups run concurrently, so
# each must start its own isolated services (free ports, its own
# LOCAL_CLUSTER_DIR) and must not run cargo on the shared target dir after
# the build step (`build` runs first and builds every binary and test).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

QUICK_GROUPS=(fmt clippy unit)
SLOW_GROUPS=(integration faults real_node go_sdk monitoring_rules schemathesis web demo)
# Test binaries that need no control plane; every other tests/*.rs is in `integration`.
QUICK_TEST_BINARIES=(prewarm:openapi prewarm:hostile_input kube-sim:cli prewarm-cli:plugin)
# Slow test binaries with a group of their own, so they run beside `integration`.
OWN_GROUP_TEST_BINARIES=(prewarm:faults)
THREADS=${TEST_THREADS:-4}

# --- groups ------------------------------------------------------------------

group_fmt() { cargo fmt --all -- --check; }

group_clippy() { cargo clippy --workspace --all-targets -- -D warnings; }

group_unit() {
  # One cargo invocation over the workspace: per-package runs would resolve
  # features differently and compile dependencies again.
  local entry args=()
  for entry in "${QUICK_TEST_BINARIES[@]}"; do args+=(--test "${entry#*:}"); done
  cargo test --workspace --lib --bins "${args[@]}" -- --test-threads "$THREADS"
}

# Builds every binary and test binary once, so the slow groups only run them.
group_build() {
  cargo build --workspace --bins
  cargo test --workspace --no-run
}

# Every test binary not in QUICK_TEST_BINARIES or OWN_GROUP_TEST_BINARIES, and the doc tests.
group_integration() {
  local dir pkg name args
  for dir in crates/*/; do
    pkg=$(awk -F'"' '/^name = /{print $2; exit}' "$dir/Cargo.toml")
    args=()
    for f in "$dir"tests/*.rs; do
      [ -f "$f" ] || continue
      name=$(basename "$f" .rs)
      if [[ " ${QUICK_TEST_BINARIES[*]} ${OWN_GROUP_TEST_BINARIES[*]} " != *" $pkg:$name "* ]]; then args+=(--test "$name"); fi
    done
    # --no-fail-fast: one failing binary must not hide how the others fare.
    if [ ${#args[@]} -gt 0 ]; then cargo test --no-fail-fast -p "$pkg" "${args[@]}" -- --test-threads "$THREADS"; fi
  done
  cargo test --workspace --doc
}

group_faults() { # the engine under API faults, an API server restart and kill -9 (tests/faults.rs)
  cargo test -p prewarm --test faults -- --test-threads "$THREADS"
}

group_go_sdk() { # gofmt and vet (its tests run against the live service in `integration`)
  (cd clients/go && PATH=/usr/lib/go-1.19/bin:$PATH GOPROXY=off GOFLAGS= sh -c 'test -z "$(gofmt -l .)" && go vet ./...')
}

group_real_node() { # kubelet + containerd + registries on loopback (scripts/real-node.sh)
  cargo test -p prewarm --test real_node -- --ignored --test-threads 2
}

group_monitoring_rules() { # promtool on the rules and dashboard; the real Prometheus test is in `integration`
  "$REPO/scripts/monitoring-check.sh"
}

group_schemathesis() { "$REPO/scripts/schemathesis.sh" "${SCHEMATHESIS_EXAMPLES:-50}"; }

group_web() { "$REPO/web/tests/run.sh"; }

group_demo() { "$REPO/scripts/test-demo.sh"; }

# --- runner ------------------------------------------------------------------

LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/prewarm-test.XXXXXX")
SUMMARY=()
FAILED=()

record() { # name, status, seconds
  local line
  line=$(printf '%-14s %-6s %4ds' "$1" "$([ "$2" -eq 0 ] && echo ok || echo FAILED)" "$3")
  SUMMARY+=("$line")
  [ "$2" -eq 0 ] || FAILED+=("$1")
  echo "== $1: $([ "$2" -eq 0 ] && echo ok || echo "FAILED (exit $2)") in $3s"
}

run_inline() { # name: output straight to the terminal
  local start=$SECONDS status
  echo "== $1"
  # Not `( … ) || status=$?`: that would switch off `set -e` inside the group.
  set +e
  ( set -euo pipefail; "group_$1" )
  status=$?
  set -e
  record "$1" "$status" $((SECONDS - start))
}

run_parallel() { # names...: TEST_JOBS at a time, output in $LOGDIR/<name>.log
  local jobs=${TEST_JOBS:-2} name pid
  declare -A name_of=() start_of=()
  local queue=("$@")
  while [ ${#queue[@]} -gt 0 ] || [ ${#name_of[@]} -gt 0 ]; do
    while [ ${#queue[@]} -gt 0 ] && [ ${#name_of[@]} -lt "$jobs" ]; do
      name=${queue[0]}; queue=("${queue[@]:1}")
      echo "== $name (started; log $LOGDIR/$name.log)"
      ( set -euo pipefail; "group_$name" ) >"$LOGDIR/$name.log" 2>&1 &
      name_of[$!]=$name; start_of[$!]=$SECONDS
    done
    local status=0
    wait -n -p pid "${!name_of[@]}" || status=$?
    name=${name_of[$pid]}
    echo "== $name output:"; cat "$LOGDIR/$name.log"
    record "$name" "$status" $((SECONDS - start_of[$pid]))
    unset "name_of[$pid]" "start_of[$pid]"
  done
}

summary() {
  echo "== summary (wall time per group)"
  printf '   %s\n' "${SUMMARY[@]}"
  if [ ${#FAILED[@]} -gt 0 ]; then echo "== FAILED: ${FAILED[*]}"; exit 1; fi
  echo "== all tests passed"
}

case "${1:-}" in
  --list)
    echo "quick: ${QUICK_GROUPS[*]}"; echo "full:  ${QUICK_GROUPS[*]} build ${SLOW_GROUPS[*]}"; exit 0 ;;
  --quick)
    for g in "${QUICK_GROUPS[@]}"; do run_inline "$g"; done
    summary ;;
  "")
    "$REPO/scripts/setup.sh"
    # shellcheck source=scripts/env.sh
    . "$REPO/scripts/env.sh"
    for g in "${QUICK_GROUPS[@]}" build; do run_inline "$g"; done
    [ ${#FAILED[@]} -eq 0 ] || summary
    run_parallel "${SLOW_GROUPS[@]}"
    summary ;;
  *)
    for g in "$@"; do declare -F "group_$g" >/dev/null || { echo "no group $g (see --list)" >&2; exit 2; }; done
    # shellcheck source=scripts/env.sh
    . "$REPO/scripts/env.sh"
    for g in "$@"; do run_inline "$g"; done
    summary ;;
esac

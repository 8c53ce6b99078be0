#!/usr/bin/env bash
# The service's memory and list latency with 10,000 stored tasks and a
# running 5,000-node task, per allocator, side by side in one run:
#
#   scripts/bench-memory.sh [history bench options, e.g. --nodes 1000 --tasks 2000]
#
# Builds two release binaries into $CARGO_TARGET_DIR (default
# /tmp/prewarm-memory-release; delete it afterwards): the system allocator
# (glibc here, the default build) and jemalloc (`--features jemalloc`), then runs
# benches/history.rs (debug harness: it only stores tasks, sends requests and
# reads /proc) on each. Variants measured:
#   system          glibc malloc as it comes
#   system-mmap     glibc with a fixed mmap threshold (GLIBC_TUNABLES)
#   jemalloc        jemalloc with the build's settings
# Extra `--service 'LABEL=PATH [NAME=VALUE ...]'` options add variants.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/prewarm-memory-release}
bins=$CARGO_TARGET_DIR/memory-bins
mkdir -p "$bins"
cd "$REPO"
cargo build -q --release -p prewarm --bin prewarm --no-default-features
cp "$CARGO_TARGET_DIR/release/prewarm" "$bins/prewarm-system"
cargo build -q --release -p prewarm --bin prewarm --features jemalloc
cp "$CARGO_TARGET_DIR/release/prewarm" "$bins/prewarm-jemalloc"
# The harness builds in the workspace's own target (debug).
unset CARGO_TARGET_DIR
exec cargo bench -q --profile dev -p prewarm --bench history -- \
  --service "system=$bins/prewarm-system" \
  --service "system-mmap=$bins/prewarm-system GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072" \
  --service "jemalloc=$bins/prewarm-jemalloc" \
  "$@"

#!/usr/bin/env bash
# Runs every check and test from a fresh clone: installs what is needed,
# then formatting, lints, unit tests and the integration tests against a
# real local control plane with simulated nodes.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
"$REPO/scripts/setup.sh"
# shellcheck source=scripts/env.sh
. "$REPO/scripts/env.sh"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== Go SDK: gofmt, vet (its tests run against the live service in cargo test)"
(cd clients/go && PATH=/usr/lib/go-1.19/bin:$PATH GOPROXY=off GOFLAGS= sh -c 'test -z "$(gofmt -l .)" && go vet ./...')
echo "== monitoring rules and dashboard (promtool; the real Prometheus test runs in cargo test)"
"$REPO/scripts/monitoring-check.sh"
echo "== build binaries used by the integration tests"
cargo build --workspace --bins
echo "== cargo test"
cargo test --workspace -- --test-threads "${TEST_THREADS:-4}"
echo "== real node: kubelet + containerd + registries on loopback (scripts/real-node.sh)"
cargo test -p prewarm --test real_node -- --ignored --test-threads 2
echo "== schemathesis against the served OpenAPI document"
"$REPO/scripts/schemathesis.sh" "${SCHEMATHESIS_EXAMPLES:-50}"
echo "== web UI in a real browser (web/tests/run.sh)"
"$REPO/web/tests/run.sh"
echo "== all tests passed"

#!/usr/bin/env bash
# Runs the web UI's browser tests against the live service: an isolated local
# control plane, kube-sim with scenario.yaml, `prewarm serve` on free ports
# (one open, one with tokens when this build supports them), then
# `node e2e.mjs` in Debian's chromium; with tokens, also one serving HTTPS
# with a certificate made here by openssl. Stops everything it started, also on failure.
#
#   web/tests/run.sh            (after scripts/setup.sh; builds prewarm and kube-sim)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
cd "$REPO"
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
# shellcheck source=scripts/env.sh
. "$REPO/scripts/env.sh"

[ -d "$HERE/node_modules/playwright-core" ] || (cd "$HERE" && npm ci --no-audit --no-fund)
cargo build -q -p prewarm -p kube-sim

WORK=$(mktemp -d /tmp/prewarm-webui.XXXXXX)
export LOCAL_CLUSTER_DIR=$WORK/cluster
LOGS=$WORK/logs
mkdir -p "$LOGS"
PIDS=()
cleanup() {
  status=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$REPO/scripts/local-cluster.sh" down >/dev/null 2>&1 || true
  if [ "$status" -ne 0 ]; then
    echo "== web UI tests failed; service logs:" >&2
    tail -n 40 "$LOGS"/*.log >&2 || true
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_healthy() { # URL [curl options…]
  local url=$1; shift
  for _ in $(seq 1 150); do curl -sf "$@" "$url/healthz" >/dev/null && return 0; sleep 0.2; done
  echo "prewarm at $1 did not become healthy" >&2; return 1
}

echo "== web: local control plane"
KUBECONFIG=$("$REPO/scripts/local-cluster.sh" up | tail -n 1 | sed 's/^KUBECONFIG=//')
export KUBECONFIG

echo "== web: kube-sim"
"$TARGET"/debug/kube-sim --kubeconfig "$KUBECONFIG" --scenario "$HERE/scenario.yaml" --cleanup >"$LOGS/kube-sim.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 300); do grep -q '^ready:' "$LOGS/kube-sim.log" && break; sleep 0.2; done
grep -q '^ready:' "$LOGS/kube-sim.log" || { echo "kube-sim did not get ready" >&2; exit 1; }

serve() { # serve NAME PORT [extra flags…]
  local name=$1 port=$2; shift 2
  "$TARGET"/debug/prewarm serve --listen "127.0.0.1:$port" --kubeconfig "$KUBECONFIG" \
    --namespace "prewarm-ui-$name" --database "$WORK/$name.db" --helper-image prewarm:test "$@" \
    >"$LOGS/prewarm-$name.log" 2>&1 &
  PIDS+=($!)
}

PORT=$(free_port)
echo "== web: prewarm serve on 127.0.0.1:$PORT"
serve open "$PORT"
export PREWARM_URL=http://127.0.0.1:$PORT
wait_healthy "$PREWARM_URL"

# A second instance with bearer tokens, when this build has them. The token
# file holds only digests: `<name> <role> sha256:<hex>` per line.
SERVE_HELP=$("$TARGET"/debug/prewarm serve --help)
if [[ $SERVE_HELP == *--auth-tokens-file* ]]; then
  AUTH_PORT=$(free_port)
  export PREWARM_ADMIN_TOKEN=ui-admin-$RANDOM$RANDOM PREWARM_VIEWER_TOKEN=ui-viewer-$RANDOM$RANDOM
  digest() { printf 'sha256:%s' "$(printf '%s' "$1" | sha256sum | cut -d' ' -f1)"; }
  {
    echo "ui-admin admin $(digest "$PREWARM_ADMIN_TOKEN")"
    echo "ui-viewer viewer $(digest "$PREWARM_VIEWER_TOKEN")"
  } >"$WORK/tokens"
  echo "== web: prewarm serve with tokens on 127.0.0.1:$AUTH_PORT"
  serve auth "$AUTH_PORT" --auth-tokens-file "$WORK/tokens"
  export PREWARM_AUTH_URL=http://127.0.0.1:$AUTH_PORT
  wait_healthy "$PREWARM_AUTH_URL"

  # The same tokens over HTTPS: a CA and a certificate for 127.0.0.1 made here.
  TLS=$WORK/tls
  mkdir -p "$TLS"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=prewarm-ui-test-ca \
    -keyout "$TLS/ca.key" -out "$TLS/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$TLS/key.pem" -out "$TLS/req.pem" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$TLS/ext"
  openssl x509 -req -in "$TLS/req.pem" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial -days 2 \
    -extfile "$TLS/ext" -out "$TLS/cert.pem" 2>/dev/null
  TLS_PORT=$(free_port)
  echo "== web: prewarm serve with tokens over HTTPS on 127.0.0.1:$TLS_PORT"
  serve tls "$TLS_PORT" --auth-tokens-file "$WORK/tokens" --tls-cert "$TLS/cert.pem" --tls-key "$TLS/key.pem"
  export PREWARM_TLS_URL=https://127.0.0.1:$TLS_PORT
  # Chromium accepts the server's key (its SPKI hash; Chromium keeps no CA
  # file of its own); node's fetch trusts the CA through NODE_EXTRA_CA_CERTS.
  PREWARM_TLS_SPKI=$(openssl x509 -in "$TLS/cert.pem" -pubkey -noout | openssl pkey -pubin -outform der \
    | openssl dgst -sha256 -binary | base64)
  export PREWARM_TLS_SPKI NODE_EXTRA_CA_CERTS=$TLS/ca.pem
  wait_healthy "$PREWARM_TLS_URL" --cacert "$TLS/ca.pem"
fi

echo "== web: unit tests of the UI modules"
node --test --test-reporter=spec "$HERE"/*.test.mjs
echo "== web: browser tests"
ARTIFACTS=${ARTIFACTS:-$REPO/artifacts} node "$HERE/e2e.mjs"

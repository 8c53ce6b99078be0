#!/usr/bin/env bash
# Hostile input against the real service: schemathesis generates requests from
# the served OpenAPI document (valid and invalid bodies, parameters, headers)
# and checks that no answer is a 5xx and every answer matches its schema.
#
#   scripts/schemathesis.sh [MAX_EXAMPLES]     (default 40 per operation)
#
# Starts what it needs (an isolated local control plane, `prewarm serve` with a
# memory store and an admin token) and stops it again.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EXAMPLES=${1:-40}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/prewarm-schemathesis.XXXXXX")
SERVICE_PID=

cleanup() {
  [ -n "$SERVICE_PID" ] && kill "$SERVICE_PID" 2>/dev/null && wait "$SERVICE_PID" 2>/dev/null || true
  LOCAL_CLUSTER_DIR=$WORK/cluster "$REPO/scripts/local-cluster.sh" down >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v schemathesis >/dev/null || python3 -m pip install -q --disable-pip-version-check schemathesis
BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug/prewarm
[ -x "$BIN" ] || cargo build -p prewarm --manifest-path "$REPO/Cargo.toml"

KUBECONFIG_LINE=$(LOCAL_CLUSTER_DIR=$WORK/cluster "$REPO/scripts/local-cluster.sh" up | tail -n 1)
KUBECONFIG=${KUBECONFIG_LINE#KUBECONFIG=}
TOKEN=$(openssl rand -hex 16)
echo "fuzz admin $(printf '%s' "$TOKEN" | "$BIN" token hash)" >"$WORK/tokens"

"$BIN" serve --listen 127.0.0.1:0 --kubeconfig "$KUBECONFIG" --namespace schemathesis \
  --store memory --auth-tokens-file "$WORK/tokens" --audit-log "$WORK/audit.log" \
  --rate-limit-rps 0 >"$WORK/stdout" 2>"$WORK/service.log" &
SERVICE_PID=$!
for _ in $(seq 1 300); do
  grep -q '^listening on ' "$WORK/stdout" 2>/dev/null && break
  kill -0 "$SERVICE_PID" 2>/dev/null || { cat "$WORK/service.log" >&2; exit 1; }
  sleep 0.1
done
URL=$(sed -n '/^listening on /{s///p;q}' "$WORK/stdout")
[ -n "$URL" ] || { echo "prewarm did not start" >&2; cat "$WORK/service.log" >&2; exit 1; }

echo "schemathesis against $URL ($EXAMPLES examples per operation)"
status=0
schemathesis run "$URL/api/v1/openapi.json" \
  --url "$URL" \
  --header "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$EXAMPLES" \
  --generation-deterministic \
  --workers 2 \
  --no-color || status=$?
if grep -q '"result":5' "$WORK/audit.log"; then
  echo "a 5xx is in the audit log" >&2
  status=1
fi
if grep -qi 'panicked' "$WORK/service.log"; then
  echo "the service panicked:" >&2
  grep -i -A5 panicked "$WORK/service.log" >&2
  status=1
fi
exit $status

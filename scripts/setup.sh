#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh Debian machine,
# idempotently: Debian packages, the kubectl client, Python test packages,
# and the locally built Kubernetes control plane binaries.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/prewarm

log() { printf '[setup] %s\n' "$*" >&2; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

wanted=(etcd-server golang-1.19-go rsync openssl golang-github-modern-go-reflect2-dev dpkg-dev curl jq python3 procps)
missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# kubectl: the machine's own, else Debian's kubernetes-client unpacked privately.
if ! command -v kubectl >/dev/null 2>&1 && [ ! -x "$CACHE/kubectl/usr/bin/kubectl" ]; then
  log "fetching Debian's kubernetes-client for kubectl"
  mkdir -p "$CACHE/kubectl-dl" && (cd "$CACHE/kubectl-dl" && apt-get download kubernetes-client >/dev/null)
  dpkg -x "$CACHE"/kubectl-dl/kubernetes-client_*.deb "$CACHE/kubectl"
fi

# Python: a second real Kubernetes client and pytest for the client tests.
if ! python3 -c 'import kubernetes, pytest, requests' >/dev/null 2>&1; then
  log "installing Python packages"
  python3 -m pip install -q --disable-pip-version-check kubernetes pytest requests
fi

# schemathesis: hostile-input tests against the served OpenAPI document.
if ! command -v schemathesis >/dev/null 2>&1; then
  log "installing schemathesis"
  python3 -m pip install -q --disable-pip-version-check schemathesis
fi

"$REPO/scripts/local-cluster.sh" build

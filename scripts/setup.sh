#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh Debian machine,
# idempotently: Debian packages, the kubectl client, Python test packages,
# and the locally built Kubernetes control plane binaries.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/prewarm

log() { printf '[setup] %s\n' "$*" >&2; }
# shellcheck source=scripts/debian-packages.sh
. "$REPO/scripts/debian-packages.sh"

wanted=(etcd-server golang-1.19-go rsync openssl golang-github-modern-go-reflect2-dev dpkg-dev curl jq python3 procps)
# The real node (scripts/real-node.sh): runtime, CNI plugins, registry, offline image tools.
wanted+=(containerd runc containernetworking-plugins docker-registry skopeo umoci apache2-utils busybox-static iproute2 libc6-dev)
ensure_debian_packages "${wanted[@]}"

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

# Web UI browser tests: Debian's chromium driven by playwright-core (never a browser download).
web_missing=()
command -v chromium >/dev/null 2>&1 || web_missing+=(chromium)
command -v node >/dev/null 2>&1 || web_missing+=(nodejs)
command -v npm >/dev/null 2>&1 || web_missing+=(npm)
if [ ${#web_missing[@]} -gt 0 ]; then
  log "installing Debian packages for the web UI tests: ${web_missing[*]}"
  ensure_debian_packages "${web_missing[@]}"
fi
if [ ! -d "$REPO/web/tests/node_modules/playwright-core" ] \
  || [ "$REPO/web/tests/package-lock.json" -nt "$REPO/web/tests/node_modules/.package-lock.json" ]; then
  log "installing the web UI test packages (npm ci in web/tests)"
  (cd "$REPO/web/tests" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

"$REPO/scripts/local-cluster.sh" build

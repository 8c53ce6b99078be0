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

wanted=(etcd-server golang-1.19-go rsync openssl golang-github-modern-go-reflect2-dev dpkg-dev curl jq python3 procps redis-server)
# The real node (scripts/real-node.sh): runtime, CNI plugins, registry, offline image tools.
wanted+=(containerd runc containernetworking-plugins docker-registry skopeo umoci apache2-utils busybox-static iproute2 libc6-dev)
ensure_debian_packages "${wanted[@]}"

# Prometheus, promtool and Alertmanager for the monitoring tests. The tests
# start their own instances on loopback; the packages' own daemons (which
# would listen on every address) are kept from starting and stopped if a
# package started them anyway.
mon_missing=()
for p in prometheus prometheus-alertmanager; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || mon_missing+=("$p")
done
if [ ${#mon_missing[@]} -gt 0 ]; then
  log "installing Debian packages for the monitoring tests: ${mon_missing[*]}"
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | sudo_if_needed tee /usr/sbin/policy-rc.d >/dev/null
    sudo_if_needed chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${mon_missing[@]}" >/dev/null
  [ -z "$own_policy" ] || sudo_if_needed rm -f /usr/sbin/policy-rc.d
fi
for svc in prometheus prometheus-alertmanager; do
  if [ -d /run/systemd/system ] && systemctl is-enabled --quiet "$svc" 2>/dev/null; then
    log "stopping and disabling the system $svc service (tests start their own on loopback)"
    sudo_if_needed systemctl disable --now --quiet "$svc"
  fi
  pidfile=/run/prometheus/$svc.pid
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    log "stopping the system $svc daemon (tests start their own on loopback)"
    pid=$(cat "$pidfile")
    sudo_if_needed /etc/init.d/"$svc" stop >/dev/null 2>&1 || true
    if kill -0 "$pid" 2>/dev/null; then sudo_if_needed kill "$pid"; fi
  fi
done

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

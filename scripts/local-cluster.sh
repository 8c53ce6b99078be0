#!/usr/bin/env bash
# A real Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager
# v1.20.2, built from Debian's source package) on 127.0.0.1.
#
#   scripts/local-cluster.sh up       start it; last line printed is KUBECONFIG=<path>
#   scripts/local-cluster.sh down     stop exactly what `up` started and remove its data
#   scripts/local-cluster.sh status   say what runs
#   scripts/local-cluster.sh build    only install packages and build the binaries
#   scripts/local-cluster.sh stop-apiserver | start-apiserver
#                                     take only the API server down / up again (outage tests)
#
# KCM_QPS (default 500) sets the controller-manager's client QPS (burst twice
# that); upstream's default is 20, which benchmarks set to see what a stock
# cluster's Job controller allows.
#
# State lives in $LOCAL_CLUSTER_DIR (default: <repo>/.local-cluster), so tests can
# run their own isolated control plane. Binaries are cached in
# ${XDG_CACHE_HOME:-$HOME/.cache}/prewarm/kubernetes-1.20.2/: only the first run builds.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${LOCAL_CLUSTER_DIR:-$REPO/.local-cluster}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/prewarm
K8S_VERSION=1.20.2
BIN=$CACHE/kubernetes-$K8S_VERSION
GO=/usr/lib/go-1.19/bin

log() { printf '[local-cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- installation ---------------------------------------------------------

# shellcheck source=scripts/debian-packages.sh
. "$REPO/scripts/debian-packages.sh"
install_packages() {
  ensure_debian_packages etcd-server golang-1.19-go rsync openssl golang-github-modern-go-reflect2-dev dpkg-dev curl python3
}

# deb-src lines for the same archives the system's deb lines use (one-line and deb822 formats).
source_lines() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -n 's/^[[:space:]]*deb[[:space:]]\+/deb-src /p' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && uris != "" && suites != "") {
          n = split(suites, s, " ")
          for (i = 1; i <= n; i++) {
            opt = signed != "" ? "[signed-by=" signed "] " : ""
            print "deb-src " opt uris " " s[i] " " comps
          }
        }
        types = uris = suites = comps = signed = ""
      }
      /^[[:space:]]*$/ { flush(); next }
      /^#/ { next }
      /^Types:/      { sub(/^Types:[[:space:]]*/, "");      types = $0 }
      /^URIs:/       { sub(/^URIs:[[:space:]]*/, "");       uris = $0 }
      /^Suites:/     { sub(/^Suites:[[:space:]]*/, "");     suites = $0 }
      /^Components:/ { sub(/^Components:[[:space:]]*/, ""); comps = $0 }
      /^Signed-By:/  { sub(/^Signed-By:[[:space:]]*/, "");  signed = $0 }
      END { flush() }
    ' "$f"
  done
}

fetch_source() {
  local work=$CACHE/build
  if [ -d "$work/src" ] && [ -f "$work/src/.unpacked" ]; then return; fi
  rm -rf "$work"
  mkdir -p "$work/apt/lists/partial" "$work/dl"
  source_lines | sort -u >"$work/apt/sources.list"
  [ -s "$work/apt/sources.list" ] \
    || die "no apt sources configured (/etc/apt/sources.list, /etc/apt/sources.list.d/): cannot derive deb-src lines to fetch the kubernetes source package"
  local opts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/apt/lists" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  log "fetching Debian source package kubernetes"
  apt-get "${opts[@]}" update -qq
  (cd "$work/dl" && apt-get "${opts[@]}" source --download-only kubernetes >/dev/null)
  local dsc
  dsc=$(find "$work/dl" -maxdepth 1 -name 'kubernetes_*.dsc' -print -quit)
  [ -n "$dsc" ] || die "no kubernetes .dsc downloaded"
  log "unpacking $(basename "$dsc")"
  dpkg-source --no-check -x "$dsc" "$work/src" >/dev/null
  touch "$work/src/.unpacked"
}

# The binaries built and cached: the control plane, and the kubelet for scripts/real-node.sh.
BINARIES=(kube-apiserver kube-controller-manager kubelet)

have_binaries() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}

build_binaries() {
  if have_binaries; then return; fi
  # One build per machine: a second caller waits for the first and reuses its result.
  mkdir -p "$CACHE"
  exec 9>"$CACHE/build.lock"
  flock 9
  if have_binaries; then flock -u 9; return; fi
  install_packages
  fetch_source
  local src=$CACHE/build/src
  # reflect2 1.0.1 faults at runtime with Go >= 1.18; Debian ships 1.0.2.
  local r2=/usr/share/gocode/src/github.com/modern-go/reflect2
  [ -d "$r2" ] || die "$r2 missing (package golang-github-modern-go-reflect2-dev)"
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  rsync -a --exclude '*_test.go' "$r2/" "$src/vendor/github.com/modern-go/reflect2/"
  local gopath=$CACHE/build/gopath
  mkdir -p "$gopath/src/k8s.io"
  ln -sfn "$src" "$gopath/src/k8s.io/kubernetes"
  log "building ${BINARIES[*]} (a cold build takes about 8 minutes)"
  (
    cd "$gopath/src/k8s.io/kubernetes"
    export PATH=$GO:$PATH GOPATH=$gopath CGO_ENABLED=0 GOPROXY=off GOFLAGS=-mod=vendor
    export GOCACHE=$CACHE/build/gocache
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kubelet" >"$CACHE/build/make.log" 2>&1
  ) || { tail -n 40 "$CACHE/build/make.log" >&2; die "build failed (log: $CACHE/build/make.log)"; }
  mkdir -p "$BIN"
  local out
  for b in "${BINARIES[@]}"; do
    out=$(find "$src/_output" -type f -name "$b" -perm -u+x -print -quit)
    [ -n "$out" ] || die "built $b not found"
    cp "$out" "$BIN/$b.tmp" && mv "$BIN/$b.tmp" "$BIN/$b"
  done
  log "binaries cached in $BIN"
  # The source tree and Go cache are large; the binaries are all that is kept.
  rm -rf "$CACHE/build"
  flock -u 9
}

# --- running --------------------------------------------------------------

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_bg() { # name, command...
  local name=$1; shift
  "$@" >"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/pids/$name.pid"
}

stop_all() {
  local name pidf pid
  for name in kube-controller-manager kube-apiserver etcd; do
    pidf=$STATE/pids/$name.pid
    [ -f "$pidf" ] || continue
    pid=$(cat "$pidf")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
  done
}

fail_up() {
  local name=$1
  log "$name did not come up; last lines of its log:"
  tail -n 30 "$STATE/logs/$name.log" >&2 || true
  stop_all
  [ -f "$STATE/etcd-dir" ] && rm -rf "$(cat "$STATE/etcd-dir")"
  exit 1
}

wait_for() { # name, seconds, check command...
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    pid_alive "$STATE/pids/$name.pid" || fail_up "$name"
    [ $SECONDS -lt $deadline ] || fail_up "$name"
    sleep 0.2
  done
}

start_apiserver() { # reads $STATE/ports (written by `up`)
  local ETCD_PORT API_PORT TOKEN
  # shellcheck disable=SC1091
  . "$STATE/ports"
  local etcd_port=$ETCD_PORT api_port=$API_PORT
  start_bg kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$STATE/pki" --token-auth-file "$STATE/pki/tokens.csv" \
    --authorization-mode RBAC --endpoint-reconciler-type none \
    --service-account-key-file "$STATE/pki/sa.pub" \
    --service-account-signing-key-file "$STATE/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.0.0.0/24 \
    --feature-gates TTLAfterFinished=true \
    --max-requests-inflight 2000 --max-mutating-requests-inflight 1000 \
    --event-ttl 10m --logtostderr --v 0
}

# Stop or restart only the API server (tests of how clients cope with an outage).
cmd_stop_apiserver() {
  local pidf=$STATE/pids/kube-apiserver.pid pid
  [ -f "$pidf" ] || die "no API server recorded in $STATE"
  pid=$(cat "$pidf")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidf"
  log "kube-apiserver stopped"
}

cmd_start_apiserver() {
  [ -f "$STATE/ports" ] || die "no cluster state in $STATE (run up first)"
  if pid_alive "$STATE/pids/kube-apiserver.pid"; then log "kube-apiserver already running"; return; fi
  local ETCD_PORT API_PORT TOKEN
  # shellcheck disable=SC1091
  . "$STATE/ports"
  start_apiserver
  wait_for kube-apiserver 60 curl -skf -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$API_PORT/readyz"
  log "kube-apiserver started"
}

cmd_up() {
  if pid_alive "$STATE/pids/kube-apiserver.pid"; then
    log "already running"
    echo "KUBECONFIG=$STATE/kubeconfig"
    return
  fi
  build_binaries
  command -v etcd >/dev/null || install_packages
  rm -rf "$STATE"
  mkdir -p "$STATE/pids" "$STATE/logs" "$STATE/pki"
  local etcd_dir
  etcd_dir=$(mktemp -d "${TMPDIR:-/tmp}/prewarm-etcd.XXXXXX")
  echo "$etcd_dir" >"$STATE/etcd-dir"
  local etcd_port etcd_peer api_port token
  etcd_port=$(free_port); etcd_peer=$(free_port); api_port=$(free_port)
  token=$(openssl rand -hex 24)
  echo "$token,admin,admin,system:masters" >"$STATE/pki/tokens.csv"
  openssl genrsa -out "$STATE/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$STATE/pki/sa.key" -pubout -out "$STATE/pki/sa.pub" 2>/dev/null

  start_bg etcd etcd --name local --data-dir "$etcd_dir" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "local=http://127.0.0.1:$etcd_peer" --quota-backend-bytes 4294967296 \
    --unsafe-no-fsync
  wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health"

  printf 'ETCD_PORT=%s\nAPI_PORT=%s\nTOKEN=%s\n' "$etcd_port" "$api_port" "$token" >"$STATE/ports"
  start_apiserver
  wait_for kube-apiserver 60 curl -skf -H "Authorization: Bearer $token" "https://127.0.0.1:$api_port/readyz"

  cat >"$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$api_port
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: $token
contexts:
- name: local
  context:
    cluster: local
    user: admin
current-context: local
EOF
  chmod 600 "$STATE/kubeconfig"

  local kcm_qps=${KCM_QPS:-500}
  case $kcm_qps in ''|*[!0-9]*|0) echo "KCM_QPS must be a positive integer, got '$kcm_qps'" >&2; exit 2 ;; esac
  start_bg kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$STATE/kubeconfig" --controllers '*,-nodelifecycle' \
    --kube-api-qps "$kcm_qps" --kube-api-burst "$((kcm_qps * 2))" \
    --feature-gates TTLAfterFinished=true \
    --service-account-private-key-file "$STATE/pki/sa.key" \
    --root-ca-file "$STATE/pki/apiserver.crt" \
    --leader-elect=false --port 0 --secure-port 0 --logtostderr --v 0
  # The controller-manager is up once it has made the default ServiceAccount
  # (pods cannot be admitted in a namespace before that).
  wait_for kube-controller-manager 60 curl -skf -H "Authorization: Bearer $token" \
    "https://127.0.0.1:$api_port/api/v1/namespaces/default/serviceaccounts/default"
  log "control plane up: apiserver https://127.0.0.1:$api_port, state in $STATE"
  echo "KUBECONFIG=$STATE/kubeconfig"
}

cmd_down() {
  # A real node (scripts/real-node.sh) registered here goes first: it puts host settings back.
  if [ -d "$STATE/real-node" ]; then LOCAL_CLUSTER_DIR=$STATE "$REPO/scripts/real-node.sh" down || true; fi
  stop_all
  if [ -f "$STATE/etcd-dir" ]; then rm -rf "$(cat "$STATE/etcd-dir")"; fi
  rm -rf "$STATE"
  log "down"
}

cmd_status() {
  local any=0 name
  for name in etcd kube-apiserver kube-controller-manager; do
    if pid_alive "$STATE/pids/$name.pid"; then
      echo "$name: running (pid $(cat "$STATE/pids/$name.pid"))"; any=1
    else
      echo "$name: stopped"
    fi
  done
  [ $any -eq 1 ] && [ -f "$STATE/kubeconfig" ] && echo "KUBECONFIG=$STATE/kubeconfig"
  return 0
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  build) build_binaries ;;
  stop-apiserver) cmd_stop_apiserver ;;
  start-apiserver) cmd_start_apiserver ;;
  *) echo "usage: $0 up|down|status|build|stop-apiserver|start-apiserver" >&2; exit 2 ;;
esac

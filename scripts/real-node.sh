#!/usr/bin/env bash
# A real node in the local cluster: a kubelet 1.20.2 (built with the control
# plane by local-cluster.sh) on Debian's containerd and runc, registered as
# node `real-0`, plus two image registries on 127.0.0.1 (one open, one with
# htpasswd basic auth) holding test images built offline with umoci/skopeo.
#
#   scripts/real-node.sh up       start it (the control plane must be up: local-cluster.sh up)
#   scripts/real-node.sh down     stop exactly what `up` started and put the host back as it was
#   scripts/real-node.sh status   say what runs
#   scripts/real-node.sh images   only build the test images (cached per machine)
#   scripts/real-node.sh push-image OCI_LAYOUT:REF NAME:TAG
#                                 push an image from an OCI layout to the open registry
#
# `up` and `status` end with NODE=, REGISTRY=, AUTH_REGISTRY= and AUTH_USER= lines
# (and CONTAINERD= for the runtime socket). The cluster's state dir is
# $LOCAL_CLUSTER_DIR (default <repo>/.local-cluster); this node's state lives in
# its real-node/ subdirectory. The kubelet uses fixed host paths, so one real
# node runs per host (a host-wide lock).
#
# Nothing listens or is dialled outside 127.0.0.0/8: the kubelet listens on
# 127.0.0.1 (no read-only port), its cloud credential lookups are off
# (AWS_EC2_METADATA_DISABLED), pods get addresses on a bridge with no gateway,
# no masquerading and no iptables rules. Never run kubectl logs/exec/attach/
# port-forward against this node: those dial the node's address.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${LOCAL_CLUSTER_DIR:-$REPO/.local-cluster}
STATE=$CLUSTER/real-node
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/prewarm
BIN=$CACHE/kubernetes-1.20.2
IMAGES=$CACHE/real-node-images
NODE=real-0
HOST_LOCK=/run/lock/prewarm-real-node.lock
HOST_OWNER=/run/lock/prewarm-real-node.owner
# Host paths the kubelet, containerd and CNI use whatever their configuration says.
FIXED_PATHS=(/var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cni /run/containerd /run/netns)
# Kernel settings the kubelet rewrites at start.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
BRIDGE=prewarm0
POD_SUBNET=10.244.0.0/24

log() { printf '[real-node] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

kc() { kubectl --kubeconfig "$CLUSTER/kubeconfig" "$@"; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# shellcheck source=scripts/debian-packages.sh
. "$REPO/scripts/debian-packages.sh"
install_packages() {
  ensure_debian_packages containerd runc containernetworking-plugins docker-registry skopeo umoci \
    apache2-utils busybox-static iproute2 libc6-dev
}

start_bg() { # name, command... (environment via `env` in the command)
  local name=$1; shift
  # fd 8 is the host lock, held only while up/down run.
  "$@" >"$STATE/logs/$name.log" 2>&1 8>&- &
  echo $! >"$STATE/pids/$name.pid"
}

stop_pid() { # name
  local pidf=$STATE/pids/$1.pid pid
  [ -f "$pidf" ] || return 0
  pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidf"
}

fail_up() {
  log "$1; last lines of ${2:-kubelet}.log:"
  tail -n 30 "$STATE/logs/${2:-kubelet}.log" >&2 || true
  cmd_down
  exit 1
}

wait_until() { # what, seconds, log name, command...
  local what=$1 secs=$2 name=$3; shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    pid_alive "$STATE/pids/$name.pid" || fail_up "$name exited while waiting for $what" "$name"
    [ $SECONDS -lt $deadline ] || fail_up "$what not reached in ${secs}s" "$name"
    sleep 0.2
  done
}

# --- test images ------------------------------------------------------------

# Builds the test images (cached in $IMAGES, keyed on their inputs) as OCI layouts.
build_images() {
  local noop
  noop=$(build_noop)
  local key
  key=$( { sha256sum "$noop" /bin/busybox; echo v1; } | sha256sum | cut -c1-16)
  local oci=$IMAGES/$key
  if [ ! -f "$oci/.done" ]; then
    log "building test images into $oci"
    rm -rf "$oci" && mkdir -p "$IMAGES"
    local work
    work=$(mktemp -d "$IMAGES/tmp.XXXXXX")
    umoci init --layout "$work/oci"
    # pause: the sandbox image containerd runs for every pod.
    new_image "$work/oci" pause /bin/busybox /bin/busybox --config.entrypoint /bin/busybox --config.cmd sleep --config.cmd 2147483647
    new_image "$work/oci" prewarm-noop "$noop" /usr/local/bin/prewarm-noop --config.entrypoint /usr/local/bin/prewarm-noop
    new_image "$work/oci" busybox /bin/busybox /bin/busybox --config.entrypoint /bin/busybox --config.cmd true
    printf '#include <stdio.h>\nint main(void) { puts("hello from a static binary"); return 0; }\n' >"$work/hello.c"
    gcc -static -Os -o "$work/hello" "$work/hello.c"
    new_image "$work/oci" hello "$work/hello" /hello --config.entrypoint /hello
    # The private image (auth registry only): same binary, its own label, so its own digest.
    new_image "$work/oci" private "$work/hello" /hello --config.entrypoint /hello --config.label prewarm.test/private=true
    touch "$work/oci/.done"
    mv "$work/oci" "$oci"
    rm -rf "$work"
  fi
  # The large image: 64 MiB of random data in four layers, built once per machine.
  local big=$IMAGES/big
  if [ ! -f "$big/.done" ]; then
    log "building the large test image (64 MiB)"
    rm -rf "$big" && mkdir -p "$IMAGES"
    local work i
    work=$(mktemp -d "$IMAGES/tmp.XXXXXX")
    umoci init --layout "$work/oci"
    umoci new --image "$work/oci:big"
    for i in 1 2 3 4; do
      head -c 16777216 /dev/urandom >"$work/blob"
      umoci insert --image "$work/oci:big" "$work/blob" "/data/part$i"
    done
    umoci config --image "$work/oci:big" --config.entrypoint /data/none
    umoci gc --layout "$work/oci"
    touch "$work/oci/.done"
    mv "$work/oci" "$big"
    rm -rf "$work"
  fi
  echo "$oci"
}

new_image() { # layout, name, source file, path in image, umoci config args...
  local layout=$1 name=$2 src=$3 dest=$4; shift 4
  umoci new --image "$layout:$name"
  umoci insert --image "$layout:$name" "$src" "$dest"
  umoci config --image "$layout:$name" "$@"
  umoci gc --layout "$layout"
}

# The static no-op binary (std only, so a separate static build is quick).
build_noop() {
  local target=${CARGO_TARGET_DIR:-$REPO/target}/static
  (cd "$REPO" && RUSTFLAGS='-C target-feature=+crt-static' cargo build -q -p prewarm-noop \
    --target x86_64-unknown-linux-gnu --target-dir "$target") >&2
  echo "$target/x86_64-unknown-linux-gnu/debug/prewarm-noop"
}

push() { # layout:ref, registry, repo:tag, [creds]
  local args=(--insecure-policy copy -q --dest-tls-verify=false)
  [ -z "${4:-}" ] || args+=(--dest-creds "$4")
  skopeo "${args[@]}" "oci:$1" "docker://$2/$3"
}

push_images() { # oci dir
  local oci=$1 reg=127.0.0.1:$REG_PORT
  push "$oci:pause" "$reg" pause:3.2
  push "$oci:prewarm-noop" "$reg" prewarm-noop:1
  push "$oci:busybox" "$reg" busybox:1
  push "$oci:hello" "$reg" hello:1
  push "$IMAGES/big:big" "$reg" big:1
  push "$oci:private" "127.0.0.1:$AUTH_PORT" private/hello:1 "$AUTH_USER"
}

# --- host state -------------------------------------------------------------

take_host_lock() {
  mkdir -p /run/lock
  exec 8>"$HOST_LOCK"
  flock -w 120 8 || die "timed out waiting for $HOST_LOCK"
  if [ -f "$HOST_OWNER" ]; then
    local owner
    owner=$(cat "$HOST_OWNER")
    if [ "$owner" != "$STATE" ] && [ -d "$owner" ]; then
      if pid_alive "$owner/pids/kubelet.pid" || pid_alive "$owner/pids/containerd.pid"; then
        die "a real node already runs on this host (state: $owner); one per host"
      fi
      log "cleaning up after a real node that did not go down ($owner)"
      LOCAL_CLUSTER_DIR=$(dirname "$owner") REAL_NODE_LOCK_HELD=1 "$0" down
    fi
  fi
  echo "$STATE" >"$HOST_OWNER"
}

record_host() {
  local s p
  : >"$STATE/sysctl.saved"
  for s in "${SYSCTLS[@]}"; do
    echo "$s=$(sysctl -n "$s")" >>"$STATE/sysctl.saved"
  done
  : >"$STATE/created-paths"
  for p in "${FIXED_PATHS[@]}"; do
    [ -e "$p" ] || echo "$p" >>"$STATE/created-paths"
  done
  ls /run/netns 2>/dev/null | sort >"$STATE/netns.before" || true
}

restore_sysctls() {
  [ -f "$STATE/sysctl.saved" ] || return 0
  local line
  while IFS= read -r line; do
    [ "$(sysctl -n "${line%%=*}")" = "${line#*=}" ] || sysctl -q -w "$line" >/dev/null
  done <"$STATE/sysctl.saved"
}

# Unmounts everything mounted under a path, deepest first.
unmount_under() {
  local m
  awk -v p="$1" '$2 == p || index($2, p "/") == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

# --- commands ---------------------------------------------------------------

cmd_up() {
  [ -f "$CLUSTER/kubeconfig" ] || die "no control plane in $CLUSTER (run scripts/local-cluster.sh up first)"
  if pid_alive "$STATE/pids/kubelet.pid"; then
    log "already running"
    print_env
    return
  fi
  local t0=$SECONDS
  "$REPO/scripts/local-cluster.sh" build
  install_packages
  take_host_lock
  rm -rf "$STATE"
  mkdir -p "$STATE"/{pids,logs,registry,auth-registry,containerd,cni/net.d,cni/ipam,kubelet}
  record_host

  local node_ip
  node_ip=$(ip -4 -o addr show scope global | awk '{ sub(/\/.*/, "", $4); print $4; exit }')
  [ -n "$node_ip" ] || die "no non-loopback IPv4 address for --node-ip (the kubelet rejects loopback)"

  REG_PORT=$(free_port); AUTH_PORT=$(free_port)
  local kubelet_port user pass
  kubelet_port=$(free_port)
  user=prewarm; pass=$(openssl rand -hex 12)
  AUTH_USER=$user:$pass
  printf 'NODE=%s\nREGISTRY=127.0.0.1:%s\nAUTH_REGISTRY=127.0.0.1:%s\nAUTH_USER=%s\nCONTAINERD=%s\n' \
    "$NODE" "$REG_PORT" "$AUTH_PORT" "$AUTH_USER" "unix://$STATE/containerd.sock" >"$STATE/env"

  # Registries.
  htpasswd -Bbn "$user" "$pass" >"$STATE/auth-registry/htpasswd" 2>/dev/null
  registry_config "$REG_PORT" "$STATE/registry" >"$STATE/registry/config.yml"
  registry_config "$AUTH_PORT" "$STATE/auth-registry" auth >"$STATE/auth-registry/config.yml"
  start_bg registry docker-registry serve "$STATE/registry/config.yml"
  start_bg auth-registry docker-registry serve "$STATE/auth-registry/config.yml"

  # containerd with its own root, state and socket.
  containerd_config >"$STATE/containerd/config.toml"
  cni_config >"$STATE/cni/net.d/10-prewarm.conflist"
  start_bg containerd containerd --config "$STATE/containerd/config.toml"

  # The kubelet.
  kubelet_config "$kubelet_port" >"$STATE/kubelet/config.yaml"
  wait_until "containerd's socket" 30 containerd ctr --address "$STATE/containerd.sock" version
  start_bg kubelet env AWS_EC2_METADATA_DISABLED=true "$BIN/kubelet" \
    --config "$STATE/kubelet/config.yaml" \
    --kubeconfig "$CLUSTER/kubeconfig" \
    --root-dir "$STATE/kubelet/root" --cert-dir "$STATE/kubelet/pki" \
    --container-runtime remote \
    --container-runtime-endpoint "unix://$STATE/containerd.sock" \
    --image-service-endpoint "unix://$STATE/containerd.sock" \
    --hostname-override "$NODE" --node-ip "$node_ip" \
    --node-labels prewarm.test/real-node=true \
    --logtostderr --v 1

  # Images, while the kubelet starts (pods need the pause image, Ready does not).
  local oci
  oci=$(build_images)
  wait_until "the registry" 30 registry curl -sf "http://127.0.0.1:$REG_PORT/v2/"
  wait_until "the auth registry" 30 auth-registry \
    sh -c "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$AUTH_PORT/v2/ | grep -qx 401"
  push_images "$oci"

  wait_until "node $NODE Ready" 90 kubelet node_ready
  restore_sysctls
  # Registration adds the not-ready taint and no node-lifecycle controller lifts it.
  kc taint node "$NODE" node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
  log "node $NODE Ready in $((SECONDS - t0))s; state in $STATE"
  print_env
}

node_ready() {
  [ "$(kc get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

print_env() { cat "$STATE/env"; }

registry_config() { # port, dir, [auth]
  cat <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $2/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$1
EOF
  if [ "${3:-}" = auth ]; then
    cat <<EOF
auth:
  htpasswd:
    realm: prewarm-test
    path: $2/htpasswd
EOF
  fi
}

containerd_config() {
  cat <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
[grpc]
  address = "$STATE/containerd.sock"
[ttrpc]
  address = "$STATE/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "127.0.0.1:$REG_PORT/pause:3.2"
  # Without CAP_SYS_RESOURCE every sandbox fails ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$STATE/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."127.0.0.1:$REG_PORT"]
    endpoint = ["http://127.0.0.1:$REG_PORT"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."127.0.0.1:$AUTH_PORT"]
    endpoint = ["http://127.0.0.1:$AUTH_PORT"]
EOF
}

cni_config() {
  cat <<EOF
{
  "cniVersion": "0.4.0",
  "name": "prewarm-real-node",
  "plugins": [{
    "type": "bridge",
    "bridge": "$BRIDGE",
    "isGateway": false,
    "ipMasq": false,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET"}]], "dataDir": "$STATE/cni/ipam"}
  }]
}
EOF
}

kubelet_config() { # port
  cat <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $1
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
failSwapOn: false
serializeImagePulls: true
makeIPTablesUtilChains: false
evictionHard:
  nodefs.available: 1Gi
  imagefs.available: 1Gi
  memory.available: 100Mi
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 10s
EOF
}

cmd_down() {
  if [ ! -d "$STATE" ]; then log "not running"; return 0; fi
  local kubelet_was_up=0
  pid_alive "$STATE/pids/kubelet.pid" && kubelet_was_up=1
  # Let the kubelet stop its pods, so sandboxes and their network are torn down properly.
  if [ $kubelet_was_up -eq 1 ] && [ -f "$CLUSTER/kubeconfig" ]; then
    kc delete pods --all-namespaces --field-selector "spec.nodeName=$NODE" \
      --grace-period 0 --force --wait=false >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 30))
    while [ $SECONDS -lt $deadline ] && [ -n "$(sandboxes)" ]; do sleep 0.2; done
  fi
  stop_pid kubelet
  # Whatever is left in containerd: kill and delete its tasks.
  if pid_alive "$STATE/pids/containerd.pid"; then
    local ns t
    for ns in $(ctr --address "$STATE/containerd.sock" namespaces ls -q 2>/dev/null); do
      for t in $(ctr --address "$STATE/containerd.sock" -n "$ns" tasks ls -q 2>/dev/null); do
        ctr --address "$STATE/containerd.sock" -n "$ns" tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
        ctr --address "$STATE/containerd.sock" -n "$ns" tasks delete -f "$t" >/dev/null 2>&1 || true
      done
    done
  fi
  # containerd and the registries shut down gracefully, each in a second or two: together.
  stop_pid containerd & stop_pid registry & stop_pid auth-registry &
  wait
  # Shims of this containerd (they outlive it by design).
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $STATE/containerd.sock" || true); do
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ -f "$CLUSTER/kubeconfig" ]; then
    kc delete node "$NODE" --wait=false >/dev/null 2>&1 || true
  fi
  restore_sysctls
  # Network namespaces made for pods, the bridge, and the kubelet's cgroups.
  if [ -f "$STATE/netns.before" ]; then
    local n
    for n in $(comm -13 "$STATE/netns.before" <(ls /run/netns 2>/dev/null | sort)); do
      ip netns delete "$n" 2>/dev/null || true
    done
  fi
  ip link delete "$BRIDGE" 2>/dev/null || true
  local cg
  for cg in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  unmount_under "$STATE"
  if [ -f "$STATE/created-paths" ]; then
    local p
    while IFS= read -r p; do
      [ -n "$p" ] || continue
      unmount_under "$p"
      rm -rf "$p"
    done <"$STATE/created-paths"
  fi
  rm -rf "$STATE"
  if [ -f "$HOST_OWNER" ] && [ "$(cat "$HOST_OWNER")" = "$STATE" ]; then rm -f "$HOST_OWNER"; fi
  log "down"
}

sandboxes() {
  pid_alive "$STATE/pids/containerd.pid" || return 0
  ctr --address "$STATE/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null
}

cmd_status() {
  local any=0 name
  for name in registry auth-registry containerd kubelet; do
    if pid_alive "$STATE/pids/$name.pid"; then
      echo "$name: running (pid $(cat "$STATE/pids/$name.pid"))"; any=1
    else
      echo "$name: stopped"
    fi
  done
  if [ $any -eq 1 ] && [ -f "$STATE/env" ]; then print_env; fi
  return 0
}

cmd_push_image() { # oci-layout:ref name:tag
  [ -f "$STATE/env" ] || die "no real node in $STATE"
  local REGISTRY
  REGISTRY=$(sed -n 's/^REGISTRY=//p' "$STATE/env")
  skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$1" "docker://$REGISTRY/$2"
  echo "IMAGE=$REGISTRY/$2"
}

case "${1:-}" in
  up) cmd_up ;;
  down)
    if [ -z "${REAL_NODE_LOCK_HELD:-}" ]; then
      mkdir -p /run/lock
      exec 8>"$HOST_LOCK"
      flock -w 120 8 || die "timed out waiting for $HOST_LOCK"
    fi
    cmd_down ;;
  status) cmd_status ;;
  push-image) shift; cmd_push_image "$@" ;;
  images) build_images ;;
  *) echo "usage: $0 up|down|status|push-image OCI_LAYOUT:REF NAME:TAG" >&2; exit 2 ;;
esac

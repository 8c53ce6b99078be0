#!/usr/bin/env bash
# The service's container image without a Docker engine (umoci + skopeo), with
# the layout of deploy/Dockerfile:
#   /usr/local/bin/prewarm        the service (entrypoint, `serve`)
#   /usr/local/bin/prewarm-noop   static no-op binary for the pull pods' helper
#   user 65532:65532, port 8080
#
#   scripts/service-image.sh DEST     build and push to DEST (e.g. 127.0.0.1:5000/prewarm:dev,
#                                     a plain-HTTP registry on loopback); prints IMAGE=<DEST>
#
# The service binary is $PREWARM_BIN if set, else the workspace's build
# (PROFILE=debug|release, default debug; CARGO_TARGET_DIR honoured), stripped, with the shared libraries it
# links (glibc) copied beside it, since this toolchain has no musl target.
# prewarm-noop is linked statically (crt-static) as it runs inside arbitrary images.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROFILE=${PROFILE:-debug}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}

log() { printf '[service-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

dest=${1:-}
[ -n "$dest" ] || { echo "usage: $0 REGISTRY/REPO:TAG" >&2; exit 2; }
for tool in umoci skopeo; do
  command -v "$tool" >/dev/null || die "$tool missing (scripts/setup.sh installs it)"
done

release=()
[ "$PROFILE" = release ] && release=(--release)
service=${PREWARM_BIN:-$TARGET/$PROFILE/prewarm}
if [ -z "${PREWARM_BIN:-}" ]; then
  log "building prewarm ($PROFILE)"
  (cd "$REPO" && cargo build -q "${release[@]}" -p prewarm --bin prewarm)
fi
# A separate target dir: the static build never invalidates the workspace's.
log "building a static prewarm-noop"
(cd "$REPO" && RUSTFLAGS='-C target-feature=+crt-static' cargo build -q "${release[@]}" -p prewarm-noop \
  --target x86_64-unknown-linux-gnu --target-dir "$TARGET/static")
noop=$TARGET/static/x86_64-unknown-linux-gnu/$PROFILE/prewarm-noop
[ -x "$service" ] || die "$service not built"

work=$(mktemp -d "${TMPDIR:-/tmp}/prewarm-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp"
chmod 1777 "$root/tmp"
objcopy --strip-debug "$service" "$root/usr/local/bin/prewarm"
objcopy --strip-debug "$noop" "$root/usr/local/bin/prewarm-noop"
# The dynamic loader and every library the service links, at their own paths.
ldd "$service" | awk '/=> \// { print $3 } /^[ \t]*\/[^ ]+ \(/ { print $1 }' | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"

umoci init --layout "$work/oci"
umoci new --image "$work/oci:prewarm"
umoci insert --image "$work/oci:prewarm" "$root" /
umoci config --image "$work/oci:prewarm" \
  --config.entrypoint /usr/local/bin/prewarm --config.cmd serve \
  --config.user 65532:65532 --config.exposedports 8080/tcp \
  --config.label org.opencontainers.image.source=deploy/Dockerfile
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$work/oci:prewarm" "docker://$dest"
log "pushed $dest"
echo "IMAGE=$dest"

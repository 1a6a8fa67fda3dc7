#!/usr/bin/env bash
# Builds Earshot's images with no registry, skipping what is unchanged:
#
#   localhost/earshot-base:bookworm   a Debian 12 root made with mmdebstrap:
#                                     libc6, libgcc-s1 (what the binaries link;
#                                     libopus is static), the CA bundle,
#                                     tzdata, netbase, a `nonroot` user 65532;
#                                     no shell, as distroless cc-debian12
#   localhost/earshot-recorder:dev    recorder/Dockerfile (recorder + console)
#   localhost/earshot-operator:dev    operator/Dockerfile
#   localhost/pause:3.10.1            the pod sandbox (scripts/node.sh builds
#                                     its program)
#
# The Dockerfiles are the ones users build from a registry; here they get
# BASE_IMAGE=localhost/earshot-base:bookworm and BINARIES=prebuilt with a
# context directory holding the host's `cargo build --release` binaries
# (Debian 12 host, Debian 12 base: same glibc).
#
# Output: docker-archive files in $EARSHOT_IMAGES (default target/images),
# one per image, which tests/src/node.rs imports into its containerd
# (`ctr -n k8s.io images import`); `scripts/images.sh --import SOCKET`
# imports them into a running containerd too. buildah's storage lives there
# as well, not in /var/lib/containers.
#
# Caching: the base is rebuilt when its package list changes (or with
# EARSHOT_IMAGES_REFRESH=1, to take Debian's updates); an image is rebuilt
# when the SHA-256 of its binaries, its Dockerfile or the base changes.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${EARSHOT_IMAGES:-$PWD/target/images}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
CTR="${EARSHOT_NODE:-/usr/local/lib/earshot-node}/containerd-v2.2.9/bin/ctr"
PAUSE="${EARSHOT_NODE:-/usr/local/lib/earshot-node}/kubernetes-v1.35.4/bin/pause"
SUITE="bookworm"
BASE_PACKAGES="libc6,libgcc-s1,ca-certificates,tzdata,netbase,base-files"
MIRRORS=("deb http://deb.debian.org/debian $SUITE main" "deb http://deb.debian.org/debian-security $SUITE-security main")
BASE="localhost/earshot-base:$SUITE"
PAUSE_IMAGE="localhost/pause:3.10.1"
import_to=""
[ "${1:-}" = "--import" ] && import_to="${2:?--import needs the containerd socket}"

need_apt=()
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
command -v buildah >/dev/null || need_apt+=(buildah)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "images: installing ${need_apt[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
[ -x "$PAUSE" ] || { echo "images: $PAUSE missing: run scripts/node.sh" >&2; exit 1; }

# Each buildah call in a mount namespace of its own: the storage's overlay
# mounts end with the call instead of staying on the host.
bah() { unshare --mount --propagation private buildah --root "$OUT/storage" --runroot "$OUT/run" "$@"; }
image_id() { bah images --quiet --no-trunc "$1" 2>/dev/null | head -1; }
sha() { sha256sum "$@" | sha256sum | cut -c1-64; }
started=$(date +%s)

# --- the base root ------------------------------------------------------------
base_key="$(printf '%s\n' "$SUITE" "$BASE_PACKAGES" "${MIRRORS[@]}" "recipe 1" | sha256sum | cut -c1-64)"
if [ -n "$(image_id "$BASE")" ] && [ "$(cat "$OUT/base.key" 2>/dev/null)" = "$base_key" ] && [ -z "${EARSHOT_IMAGES_REFRESH:-}" ]; then
  echo "images: $BASE is current"
else
  echo "images: building $BASE from Debian packages (mmdebstrap)"
  t=$(date +%s)
  root="$OUT/base-root"
  rm -rf "$root"
  # `extract`: the packages' files, no maintainer scripts, no dpkg, no shell.
  mmdebstrap --quiet --variant=extract --include="$BASE_PACKAGES" "$SUITE" "$root" "${MIRRORS[@]}"
  # What update-ca-certificates would have written.
  mkdir -p "$root/etc/ssl/certs"
  cat "$root"/usr/share/ca-certificates/mozilla/*.crt > "$root/etc/ssl/certs/ca-certificates.crt"
  # Pulled in only as dependencies of ca-certificates and tzdata (their
  # maintainer scripts, which never run here): openssl, debconf, mawk.
  rm -rf "$root"/usr/bin/openssl "$root"/usr/lib/ssl/misc "$root"/usr/lib/x86_64-linux-gnu/libssl.so.3 \
    "$root"/usr/lib/x86_64-linux-gnu/libcrypto.so.3 "$root"/usr/lib/x86_64-linux-gnu/engines-3 \
    "$root"/usr/lib/x86_64-linux-gnu/ossl-modules "$root"/usr/bin/debconf* "$root"/usr/share/debconf \
    "$root"/usr/share/perl5 "$root"/usr/bin/mawk "$root"/usr/sbin/update-ca-certificates \
    "$root"/usr/lib/x86_64-linux-gnu/gconv "$root"/usr/share/doc "$root"/usr/share/man \
    "$root"/usr/share/info "$root"/usr/share/lintian "$root"/usr/share/locale "$root"/var/cache/* \
    "$root"/var/lib/apt "$root"/var/lib/dpkg "$root"/var/log/*
  # Users as distroless has them.
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' > "$root/etc/group"
  printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
  mkdir -p "$root/home/nonroot" "$root/tmp" "$root/root"
  chown 65532:65532 "$root/home/nonroot"
  chmod 1777 "$root/tmp"
  c="$(bah from scratch)"
  bah copy --quiet "$c" "$root" / >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --user 65532:65532 --workingdir / "$c"
  bah commit --quiet --rm "$c" "$BASE" >/dev/null
  rm -rf "$root"
  echo "$base_key" > "$OUT/base.key"
  echo "images: $BASE built in $(( $(date +%s) - t )) s"
fi
base_id="$(image_id "$BASE")"

# --- the sandbox image: the static pause program alone ---------------------
pause_key="$(sha "$PAUSE")"
if [ -f "$OUT/pause.tar" ] && [ "$(cat "$OUT/pause.key" 2>/dev/null)" = "$pause_key" ]; then
  echo "images: $PAUSE_IMAGE is current"
else
  c="$(bah from scratch)"
  bah copy --quiet "$c" "$PAUSE" /pause >/dev/null
  bah config --entrypoint '["/pause"]' --user 65535:65535 "$c"
  bah commit --quiet --rm "$c" "$PAUSE_IMAGE" >/dev/null
  rm -f "$OUT/pause.tar"
  bah push --quiet "$PAUSE_IMAGE" "docker-archive:$OUT/pause.tar:$PAUSE_IMAGE"
  echo "$pause_key" > "$OUT/pause.key"
  echo "images: $PAUSE_IMAGE built"
fi

# --- the binaries --------------------------------------------------------------
# Release by default (what ships); `EARSHOT_IMAGE_PROFILE=debug` takes the
# test build's binaries instead, so `make test` builds the workspace once and
# not a second time in release (about 15 minutes on 2 cores, cold).
PROFILE="${EARSHOT_IMAGE_PROFILE:-release}"
case "$PROFILE" in
  release) echo "images: cargo build --release (recorder, operator, console)"
           cargo build --release -p earshot-recorder -p earshot-operator -p earshot-console ;;
  debug)   echo "images: cargo build (recorder, operator, console; the test build's profile)"
           cargo build -p earshot-recorder -p earshot-operator -p earshot-console ;;
  *) echo "images: EARSHOT_IMAGE_PROFILE must be release or debug, not $PROFILE" >&2; exit 2 ;;
esac
BIN="target/$PROFILE"

# build NAME DOCKERFILE BINARIES...: one image from a staged context.
build() {
  local name="$1" dockerfile="$2"; shift 2
  local image="localhost/$name:dev" ctx="$OUT/context/$name" key archive="$OUT/$name.tar" b
  key="$( { sha "$@" "$dockerfile"; echo "$base_id strip-debug"; } | sha256sum | cut -c1-64)"
  if [ -f "$archive" ] && [ "$(cat "$OUT/$name.key" 2>/dev/null)" = "$key" ]; then
    echo "images: $image is current ($archive)"
    return
  fi
  local t; t=$(date +%s)
  rm -rf "$ctx"; mkdir -p "$ctx"
  # The release profile keeps line tables (for perf in make bench); the
  # images do without them (a fifth of the size).
  for b in "$@"; do cp "$b" "$ctx/"; strip --strip-debug "$ctx/$(basename "$b")"; done
  bah bud --quiet --pull=never --layers=false -f "$dockerfile" \
    --build-arg BASE_IMAGE="$BASE" --build-arg BINARIES=prebuilt -t "$image" "$ctx" >/dev/null
  rm -f "$archive"
  bah push --quiet "$image" "docker-archive:$archive:$image"
  echo "$key" > "$OUT/$name.key"
  echo "images: $image built in $(( $(date +%s) - t )) s ($(du -h "$archive" | cut -f1))"
}

build earshot-recorder recorder/Dockerfile "$BIN/earshot-recorder" "$BIN/earshot-console"
build earshot-operator operator/Dockerfile "$BIN/earshot-operator"

# Stages of earlier builds that no tag names any more.
bah rmi --prune >/dev/null 2>&1 || true

if [ -n "$import_to" ]; then
  for a in pause earshot-recorder earshot-operator; do
    "$CTR" --address "$import_to" -n k8s.io images import "$OUT/$a.tar" >/dev/null
  done
  echo "images: imported into the containerd at $import_to"
fi
echo "images: done in $(( $(date +%s) - started )) s: $OUT/{pause,earshot-recorder,earshot-operator}.tar"

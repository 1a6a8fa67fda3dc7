#!/usr/bin/env bash
# Builds and installs the node side of Earshot's test cluster, once, skipping
# whatever is already there (tests/src/node.rs starts it):
#
#   kube-scheduler, kubelet, kube-proxy  Kubernetes v1.35.4, from
#                                        tests/node/kubernetes/go.mod: the same
#                                        k8s.io/kubernetes release and staging
#                                        pins as tests/controlplane/go.mod
#                                        (checked below), the same ldflags
#   containerd, containerd-shim-runc-v2, ctr
#                                        containerd v2.2.9, from its own module
#                                        (tests/node/containerd/go.mod) so its
#                                        dependencies never meet Kubernetes' pins
#   pause                                the pod sandbox's program, compiled from
#                                        the k8s.io/kubernetes module's
#                                        build/pause/linux/pause.c (static)
#   runc, CNI plugins (bridge, host-local, loopback), nftables (kube-proxy's
#   nftables mode), mmdebstrap and buildah (scripts/images.sh)  from Debian
#
# Binaries go to $EARSHOT_NODE (default /usr/local/lib/earshot-node), beside
# the control plane's prefix, never into it (controlplane.sh replaces its
# bin/ whole when it rebuilds).
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes release (K8S_VERSION) and its version ldflags.
source scripts/k8s-version.sh
CONTAINERD_VERSION="v2.2.9"
ROOT="${EARSHOT_NODE:-/usr/local/lib/earshot-node}"
KBIN="$ROOT/kubernetes-${K8S_VERSION}/bin"
CBIN="$ROOT/containerd-${CONTAINERD_VERSION}/bin"
export GOTOOLCHAIN=local

# The node must run the control plane's release.
kube_required() { sed -nE 's/^(require)?[[:space:]]*k8s\.io\/kubernetes (v[^ ]+).*/\2/p' "$1"; }
cp_version="$(kube_required tests/controlplane/go.mod)"
node_version="$(kube_required tests/node/kubernetes/go.mod)"
if [ "$cp_version" != "$K8S_VERSION" ] || [ "$node_version" != "$K8S_VERSION" ]; then
  echo "node: k8s.io/kubernetes is $cp_version in tests/controlplane and $node_version in tests/node/kubernetes; both must be $K8S_VERSION" >&2
  exit 1
fi

# --- Debian packages ---------------------------------------------------------
need_apt=()
command -v runc >/dev/null || need_apt+=(runc)
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] || need_apt+=(containernetworking-plugins)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v nft >/dev/null || need_apt+=(nftables)
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
command -v buildah >/dev/null || need_apt+=(buildah)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "node: installing ${need_apt[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# --- Kubernetes node binaries ------------------------------------------------
# Versions are matched on captured output: `cmd | grep -q` under pipefail
# fails at random when grep exits before a multi-line writer is done.
have_kube() {
  local out b
  for b in kubelet kube-proxy kube-scheduler; do
    [ -x "$KBIN/$b" ] || return 1
    out="$("$KBIN/$b" --version 2>/dev/null)"; [ "$out" = "Kubernetes ${K8S_VERSION}" ] || return 1
  done
  [ -x "$KBIN/pause" ] && out="$("$KBIN/pause" -v 2>&1)" && grep -q "^pause\.c v" <<<"$out"
}

if have_kube; then
  echo "node: kubelet, kube-proxy, kube-scheduler ${K8S_VERSION} and pause in ${KBIN}"
else
  command -v go >/dev/null || { echo "node: Go is required (the machine's Go 1.26)" >&2; exit 1; }
  echo "node: building kubelet, kube-proxy and kube-scheduler ${K8S_VERSION} from Go modules (once)"
  started=$(date +%s)
  mkdir -p "$KBIN.partial"
  vflags="$(k8s_version_ldflags)"
  (
    cd tests/node/kubernetes
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w${vflags}" -o "$KBIN.partial/" \
      k8s.io/kubernetes/cmd/kubelet \
      k8s.io/kubernetes/cmd/kube-proxy \
      k8s.io/kubernetes/cmd/kube-scheduler
    # The sandbox's pause program, as upstream builds it (static C).
    src="$(GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
    gcc -Os -Wall -Werror -static -DVERSION=v3.10.1 -o "$KBIN.partial/pause" "$src"
  )
  for b in kubelet kube-proxy kube-scheduler pause; do
    [ -x "$KBIN.partial/$b" ] || { echo "node: the build left no $b" >&2; exit 1; }
  done
  rm -rf "$KBIN"
  mv "$KBIN.partial" "$KBIN"
  have_kube || { echo "node: the built binaries do not report ${K8S_VERSION}" >&2; exit 1; }
  echo "node: Kubernetes node binaries built in $(( $(date +%s) - started )) s into ${KBIN}"
fi

# --- containerd ---------------------------------------------------------------
have_containerd() {
  local out
  [ -x "$CBIN/containerd" ] && [ -x "$CBIN/ctr" ] && [ -x "$CBIN/containerd-shim-runc-v2" ] || return 1
  out="$("$CBIN/containerd" --version 2>/dev/null)"; grep -q " ${CONTAINERD_VERSION}\( \|$\)" <<<"$out" || return 1
  out="$("$CBIN/ctr" --version 2>/dev/null)"; grep -q " ${CONTAINERD_VERSION}$" <<<"$out" || return 1
  out="$("$CBIN/containerd-shim-runc-v2" -v 2>/dev/null)"; grep -q "Version: *${CONTAINERD_VERSION}$" <<<"$out"
}

if have_containerd; then
  echo "node: containerd ${CONTAINERD_VERSION} in ${CBIN}"
else
  command -v go >/dev/null || { echo "node: Go is required (the machine's Go 1.26)" >&2; exit 1; }
  echo "node: building containerd ${CONTAINERD_VERSION} from Go modules (once)"
  started=$(date +%s)
  mkdir -p "$CBIN.partial"
  m="github.com/containerd/containerd/v2"
  (
    cd tests/node/containerd
    # Static, without the btrfs and devmapper snapshotters (cgo); overlayfs
    # and native are what the node uses.
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -tags "no_btrfs no_devmapper no_zfs" \
      -ldflags "-s -w -X $m/version.Version=${CONTAINERD_VERSION} -X $m/version.Revision=earshot -X $m/version.Package=$m" \
      -o "$CBIN.partial/" "$m/cmd/containerd" "$m/cmd/containerd-shim-runc-v2" "$m/cmd/ctr"
  )
  for b in containerd containerd-shim-runc-v2 ctr; do
    [ -x "$CBIN.partial/$b" ] || { echo "node: the build left no $b" >&2; exit 1; }
  done
  rm -rf "$CBIN"
  mv "$CBIN.partial" "$CBIN"
  have_containerd || { echo "node: the built containerd does not report ${CONTAINERD_VERSION}" >&2; exit 1; }
  echo "node: containerd built in $(( $(date +%s) - started )) s into ${CBIN}"
fi

#!/usr/bin/env bash
# Builds the real Kubernetes control plane Earshot's tests run against —
# etcd, kube-apiserver, kube-controller-manager and kubectl — from the Go
# modules pinned in tests/controlplane/go.mod, once. Skips the build when
# the pinned binaries are already installed. No kubelet or scheduler: pods
# stay Pending and the test harness plays the kubelet's part.
#
#   Kubernetes v1.35.4 (k8s.io/kubernetes and its staging modules v0.35.4)
#   etcd v3.6.5 (go.etcd.io/etcd/server/v3, the version Kubernetes pins)
#
# Cold build, measured on a 2-core machine: 452 s including the module
# download (~0.9 GB of modules, ~3 GB of build cache); afterwards a check of four
# version strings (< 1 s).
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes release (K8S_VERSION) and its version ldflags.
source scripts/k8s-version.sh
ETCD_VERSION="3.6.5"
PREFIX="${EARSHOT_CONTROLPLANE:-/usr/local/lib/earshot-controlplane/${K8S_VERSION}}"
BIN="$PREFIX/bin"

have() {
  # Each binary's output is taken whole before it is matched: `cmd | grep -q`
  # under pipefail fails at random when grep exits before a multi-line
  # writer (kubectl, etcd) is done and the writer dies of SIGPIPE.
  local out
  [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/kubectl" ] && [ -x "$BIN/etcd" ] || return 1
  out="$("$BIN/kube-apiserver" --version 2>/dev/null)"; [ "$out" = "Kubernetes ${K8S_VERSION}" ] || return 1
  out="$("$BIN/kube-controller-manager" --version 2>/dev/null)"; [ "$out" = "Kubernetes ${K8S_VERSION}" ] || return 1
  out="$("$BIN/kubectl" version --client 2>/dev/null)"; grep -q "^Client Version: ${K8S_VERSION}$" <<<"$out" || return 1
  out="$("$BIN/etcd" --version 2>/dev/null)"; grep -q "^etcd Version: ${ETCD_VERSION}$" <<<"$out"
}

if have; then
  echo "controlplane: Kubernetes ${K8S_VERSION} and etcd ${ETCD_VERSION} in ${BIN}"
  exit 0
fi

command -v go >/dev/null || { echo "controlplane: Go is required (the machine's Go 1.26)" >&2; exit 1; }
echo "controlplane: building Kubernetes ${K8S_VERSION} and etcd ${ETCD_VERSION} from Go modules (once; about 8 minutes on 2 cores)"
started=$(date +%s)
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$BIN.partial"
vflags="$(k8s_version_ldflags)"
(
  cd tests/controlplane
  go build -trimpath -ldflags "-s -w${vflags}" -o "$BIN.partial/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl
  go build -trimpath -ldflags "-s -w" -o "$BIN.partial/etcd" go.etcd.io/etcd/server/v3
)
rm -rf "$BIN"
mv "$BIN.partial" "$BIN"
have || { echo "controlplane: the built binaries do not report the pinned versions" >&2; exit 1; }
echo "controlplane: built in $(( $(date +%s) - started )) s into ${BIN}"

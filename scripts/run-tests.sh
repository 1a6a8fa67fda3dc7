#!/usr/bin/env bash
# Runs every test of the workspace once: unit, simulated-time, property and
# end-to-end suites (SIPp, real recorder processes). Uses cargo-nextest when
# present, so test binaries run in parallel as separate processes.
set -euo pipefail
cd "$(dirname "$0")/.."

# No core dump, build output or large binary tracked (make lint runs it too).
scripts/check-large-files.sh

# The project's images for the real-node suite (tests/tests/node.rs), from
# the test build's binaries: the Dockerfiles with a Debian base made by
# mmdebstrap, built by buildah, no registry (scripts/images.sh).
cargo build -q -p earshot-recorder -p earshot-operator -p earshot-console
EARSHOT_IMAGE_PROFILE=debug scripts/images.sh

if cargo nextest --version >/dev/null 2>&1; then
  # End-to-end tests mostly wait on real-time calls: run more at once than cores.
  status=0
  cargo nextest run --workspace --no-fail-fast --test-threads 4 --failure-output final || status=$?
  # The relay and recording suites again, every recorder with the kernel
  # fast path (on loopback: rewritten and delivered locally). The suites
  # that capture packets on lo are left out: tcpdump on lo sees a packet
  # once, before the program rewrites it (e2e_fastpath covers those on
  # veth pairs).
  echo "run-tests: the relay and recording suites with kernelFastPath: Required"
  EARSHOT_KERNEL_FAST_PATH=Required cargo nextest run -p earshot-recorder \
    --test e2e_sipp --test e2e_recordings --test e2e_field --test e2e_baresip \
    --no-fail-fast --test-threads 4 --failure-output final || status=$?
  cargo test --workspace --doc -q
  exit $status
else
  cargo test --workspace --no-fail-fast
fi

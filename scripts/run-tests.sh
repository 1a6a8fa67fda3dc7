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
  cargo nextest run --workspace --no-fail-fast --test-threads 4 --failure-output final
  cargo test --workspace --doc -q
else
  cargo test --workspace --no-fail-fast
fi

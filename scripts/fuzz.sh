#!/usr/bin/env bash
# Coverage-guided fuzzing of the recorder core (cargo-fuzz, libFuzzer): each
# target in recorder/core/fuzz for FUZZ_SECONDS (default 120), growing the
# committed corpus (recorder/core/fuzz/corpus/<target>/) that `make test`
# replays. The toolchain is stable; RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass
# the sanitizer flags it needs. A crash leaves its input in
# recorder/core/fuzz/artifacts/<target>/ and fails this script; copy it into
# the corpus once fixed so it stays a test.
set -euo pipefail
cd "$(dirname "$0")/../recorder/core/fuzz"
SECONDS_EACH="${FUZZ_SECONDS:-120}"
CARGO_FUZZ_VERSION="0.13.2"
if ! grep -q "${CARGO_FUZZ_VERSION}" <<<"$(cargo fuzz --version 2>/dev/null)"; then
  echo "fuzz: building cargo-fuzz ${CARGO_FUZZ_VERSION} from crates.io (once)"
  cargo install cargo-fuzz --version "${CARGO_FUZZ_VERSION}" --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for t in framing message sdp rtp engine srtp siprec; do
  mkdir -p "corpus/$t"
  start=$(date +%s)
  out=$(cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="${SECONDS_EACH}" -print_final_stats=1 2>&1) || {
    echo "$out" | tail -40
    echo "fuzz: $t crashed; the input is in recorder/core/fuzz/artifacts/$t/" >&2
    exit 1
  }
  runs=$(echo "$out" | grep -o 'stat::number_of_executed_units: [0-9]*' | grep -o '[0-9]*$')
  # Keep the committed corpus small: only inputs that add coverage.
  cargo fuzz cmin -O "$t" "corpus/$t" >/dev/null 2>&1
  echo "fuzz: $t: ${runs} executions in $(( $(date +%s) - start )) s, corpus $(ls "corpus/$t" | wc -l) inputs"
done

#!/usr/bin/env bash
# Instructions per recorded call-minute, counted by callgrind (user space:
# the recorder's own code and LAME; the kernel's UDP and file I/O are not
# counted). The same workload (recorder/examples/instructions.rs) at two
# sizes, 2 and 6 calls of 30 s of G.711: the difference is what 2 more
# recorded call-minutes cost, without the process's fixed start-up.
# Repeats within about 0.3 % run to run, whatever else the machine does.
# Writes target/instructions.json.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "instructions: valgrind missing (scripts/bench-deps.sh installs it)" >&2; exit 1; }
cargo build --release -q -p earshot-recorder --example instructions
bin=target/release/examples/instructions
count() {
  local out
  out=$(mktemp)
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$1" 30 >/dev/null 2>"$out.log"
  grep -o 'Collected : [0-9]*' "$out.log" | grep -o '[0-9]*$'
  rm -f "$out" "$out.log"
}
small=$(count 2)
large=$(count 6)
per=$(( (large - small) / 2 ))
printf '{"instructionsPerRecordedCallMinute": %d, "twoCallsTotal": %d, "sixCallsTotal": %d, "workload": "G.711 both sides, 8 kHz stereo MP3 at 32 kbit/s, 30 s calls"}\n' \
  "$per" "$small" "$large" | tee target/instructions.json

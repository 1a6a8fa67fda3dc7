#!/usr/bin/env bash
# Instructions per recorded call-minute, per codec, counted by callgrind
# (user space: the recorder's own code, the decoders and LAME; the kernel's
# UDP and file I/O are not counted). The same workload
# (recorder/examples/instructions.rs) at two sizes, 2 and 6 calls of 30 s:
# the difference is what 2 more recorded call-minutes cost, without the
# process's fixed start-up. Repeats within about 0.3 % run to run, whatever
# else the machine does. Writes target/instructions.json.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "instructions: valgrind missing (scripts/bench-deps.sh installs it)" >&2; exit 1; }
cargo build --release -q -p earshot-recorder --example instructions
bin=target/release/examples/instructions
count() {
  local out
  out=$(mktemp)
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$1" 30 "$2" >/dev/null 2>"$out.log"
  grep -o 'Collected : [0-9]*' "$out.log" | grep -o '[0-9]*$'
  rm -f "$out" "$out.log"
}
rows=()
base=""
for codec in PCMU G722 G729 OPUS; do
  small=$(count 2 "$codec")
  large=$(count 6 "$codec")
  per=$(( (large - small) / 2 ))
  [ -n "$base" ] || base=$per
  ratio=$(awk -v a="$per" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
  echo "instructions: $codec: $per per recorded call-minute (${ratio}× PCMU)"
  rows+=("\"$codec\": {\"instructionsPerRecordedCallMinute\": $per, \"timesPcmu\": $ratio}")
done
# The core's own work per RTP packet of a recorded call: relayed in
# userspace, or read as the kernel fast path's copy (the socket calls, and
# the kernel's relaying, are kernel work callgrind does not see).
cargo build --release -q -p earshot-recorder-core --example relay_instructions
relay=target/release/examples/relay_instructions
relay_count() {
  local out
  out=$(mktemp)
  valgrind --tool=callgrind --callgrind-out-file="$out" "$relay" "$1" "$2" >/dev/null 2>"$out.log"
  grep -o 'Collected : [0-9]*' "$out.log" | grep -o '[0-9]*$'
  rm -f "$out" "$out.log"
}
for mode in userspace kernel; do
  small=$(relay_count "$mode" 1500)
  large=$(relay_count "$mode" 4500)
  # 3000 more packets a side; a call-minute is 3000 packets a side.
  per=$(( large - small ))
  echo "instructions: core per recorded call-minute, packets $mode: $per ($(( per / 6000 )) per packet)"
  rows+=("\"relay-$mode\": {\"coreInstructionsPerRecordedCallMinute\": $per}")
done
(IFS=,; printf '{%s}\n' "${rows[*]}") > target/instructions.json

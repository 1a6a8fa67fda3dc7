#!/usr/bin/env bash
# Fails when the repository tracks a file over the limit that is not a
# documented fixture: a core dump (88 MB of one once landed at the root),
# build output or a large binary makes every clone pay for it.
#
#   scripts/check-large-files.sh [LIMIT_KIB]   (default 2048: 2 MiB)
#
# Documented fixtures: one path per line in .large-files-allowed, each with
# a comment saying why it must be there.
set -euo pipefail
cd "$(dirname "$0")/.."
limit_kib="${1:-2048}"
allowed=()
if [ -f .large-files-allowed ]; then
  while read -r path _; do
    [[ -z "$path" || "$path" == \#* ]] || allowed+=("$path")
  done < .large-files-allowed
fi
bad=0
while IFS= read -r -d '' f; do
  [ -f "$f" ] || continue
  size=$(( ($(stat -c %s "$f") + 1023) / 1024 ))
  if [ "$size" -gt "$limit_kib" ]; then
    ok=0
    for a in "${allowed[@]+"${allowed[@]}"}"; do [ "$a" = "$f" ] && ok=1; done
    if [ "$ok" = 0 ]; then
      echo "large file tracked: $f (${size} KiB > ${limit_kib} KiB); remove it or document it in .large-files-allowed" >&2
      bad=1
    fi
  fi
done < <(git ls-files -z)
exit "$bad"

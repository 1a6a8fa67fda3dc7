#!/usr/bin/env bash
# What `make bench` needs beyond the tests' tools: rtpengine (userspace
# forwarding, pcap recording) and Kamailio in front of it, and valgrind
# (callgrind counts instructions: a figure that repeats on a shared
# machine), from Debian.
# Idempotent: installs only what is missing.
set -euo pipefail
need=()
command -v rtpengine >/dev/null || need+=(rtpengine-daemon)
command -v kamailio >/dev/null || need+=(kamailio)
command -v valgrind >/dev/null || need+=(valgrind)
if [ ${#need[@]} -gt 0 ]; then
  echo "bench-deps: installing ${need[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "bench-deps: $(rtpengine --version 2>&1 | head -1), $(kamailio -v 2>&1 | head -1)"

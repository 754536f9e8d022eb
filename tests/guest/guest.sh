#!/usr/bin/env bash
# Run a command inside a QEMU guest booting Debian's stock kernel. See README.md.
#   tests/guest/guest.sh [--mem 4G] [--insmod X.ko]... [--slub-debug] [--timeout SECS] -- CMD ARGS...
# Exit: the command's status; 124 timeout; 125 boot failed / not set up; 126 insmod failed;
# 127 the guest died while the command ran.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
# Build quietly (a no-op when up to date), then run the binary directly.
if ! out="$(cd "$root" && cargo build -q -p stasis-guest --bin stasis-guest 2>&1)"; then
    echo "$out" >&2
    echo "guest.sh: building stasis-guest failed" >&2
    exit 125
fi
exec "$target/debug/stasis-guest" "$@"

#!/usr/bin/env bash
# Kernel-engine tests: build stasis.ko/stasis_files.ko, the stasisctl test client and
# the workloads on the host, then boot Debian's stock 6.1 kernel in QEMU (slub_debug)
# and run tests/kmod/in-guest.sh there. Exit 0 only if every check held and dmesg is
# clean (no WARN/BUG/Oops, no "stasis: N allocations leaked").
#   tests/kmod/run.sh [--no-build] [-v]
# Build output goes to $STASIS_KMOD_OUT (default target/kmod); the .ko files are built
# in kmod/ (Kbuild M=).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${STASIS_KMOD_OUT:-$root/target/kmod}"
build=1 verbose=()
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        -v) verbose=(-v) ;;
        *) echo "usage: $0 [--no-build] [-v]" >&2; exit 2 ;;
    esac
done
t0=$SECONDS
if ((build)); then
    # C warnings are errors in the tests (not in a user's DKMS build, where a newer
    # kernel's headers may warn).
    make -s -C "$root/kmod" CARGO_TARGET_DIR="$out/kmod" KCFLAGS=-Werror >/dev/null
    (cd "$root" && CARGO_TARGET_DIR="$out/host" cargo build -q -p stasis-abi --example stasisctl)
    make -s -C "$root/tests/workloads" O="$out/workloads" >/dev/null
    gcc -O2 -pthread -Wall -Werror -o "$out/spawner" "$here/spawner.c"
    (cd "$root/kmod/tools/imgcheck" && CARGO_TARGET_DIR="$out/tools" cargo build -q)
    # The CLI (debug build, rebuilt every run), for the cross-engine and CLI tests (kernel
    # checkpoint, user-engine restart). Its failure to build only skips those tests (a
    # stale binary is removed, so it cannot be tested instead).
    (cd "$root" && CARGO_TARGET_DIR="$out/host" cargo build -q -p stasis-cli) || {
        rm -f "$out/host/debug/stasis"
        echo "kmod tests: stasis-cli does not build; the cross-engine and CLI tests are skipped" >&2
    }
fi
echo "kmod tests: build $((SECONDS - t0)) s" >&2
"$root/tests/guest/guest.sh" --slub-debug --timeout 900 --check-dmesg "${verbose[@]}" \
    --env "KMOD=$root/kmod" --env "CTL=$out/host/debug/examples/stasisctl" \
    --env "WL=$out/workloads" --env "SPAWNER=$out/spawner" \
    --env "IMG=$out/tools/debug/stasis-kimgcheck" --env "STASIS=$out/host/debug/stasis" \
    -- bash "$here/in-guest.sh"

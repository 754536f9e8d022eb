#!/usr/bin/env bash
# The CPU-model (and kernel) matrix: boots the QEMU guest once per CPU model (and per
# kernel) and runs tests/matrix/in-guest.sh there: every workload with both engines and
# across engines, a killed checkpointer, and images from the other CPU models' boots.
#   tests/matrix/run.sh [--cpus "Haswell qemu64 max SandyBridge"] [--workloads "..."]
#                       [--kernels "REL ..."] [--record FILE] [--no-build] [-v]
# --kernels: releases fetched by scripts/fetch-kernels.sh (default: the 6.1 kernel the
# guest harness uses). The order of --cpus matters: each boot restarts the images of
# the boots before it, so an order that goes up and down tests both directions.
# Exit 0 only if every boot passed and dmesg stayed clean.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${STASIS_MATRIX_OUT:-$root/target/matrix}"
cpus="Haswell qemu64 max SandyBridge"
workloads="counters fpu blocked signals tls"
kernels="" record="" build=1 verbose=()
while [ $# -gt 0 ]; do
    case "$1" in
        --cpus) cpus="$2"; shift ;;
        --workloads) workloads="$2"; shift ;;
        --kernels) kernels="$2"; shift ;;
        --record) record="$2"; shift ;;
        --no-build) build=0 ;;
        -v) verbose=(-v) ;;
        *) echo "usage: $0 [--cpus LIST] [--workloads LIST] [--kernels LIST] [--record FILE] [--no-build] [-v]" >&2; exit 2 ;;
    esac
    shift
done
t0=$SECONDS
if ((build)); then
    (cd "$root" && CARGO_TARGET_DIR="$out/host" cargo build -q -p stasis-cli)
    (cd "$root" && CARGO_TARGET_DIR="$out/host" cargo build -q -p stasis-user --example dump_one)
    make -s -C "$root/tests/workloads" O="$out/workloads" >/dev/null
fi
# kmod_make KDIR REL DIR ARGS...: run Kbuild (M=DIR, C warnings as errors) for kernel
# REL (empty: the installed headers) with the compiler its headers name: this
# machine's when it has it; this machine's newer GCC for a kernel built with an older
# one (5.10: gcc-10); else (a kernel built by a newer GCC than this machine has: sid's)
# inside a minimal chroot of the kernel's own suite, made once with debootstrap (never
# installed into this system). The Rust object is built on the host first
# (kmod/Makefile's build/stasis_rust.ro): it does not depend on the kernel.
kmod_make() {
    local kdir=$1 rel=$2 m=$3 cc="" suite c rc=0
    shift 3
    [ -z "$rel" ] || cc="$(bash "$root/scripts/fetch-kernels.sh" --cc "$rel")"
    if [ -z "$cc" ] || command -v "$cc" >/dev/null; then
        make -s -C "$kdir" M="$m" KCFLAGS=-Werror "$@" || rc=$?
    elif [ "$(gcc -dumpversion | cut -d. -f1)" -ge "${cc#gcc-}" ]; then
        make -s -C "$kdir" M="$m" KCFLAGS=-Werror CC=gcc "$@" || rc=$?
    else
        suite="$(cat "$kdir/../../../.suite")"
        c="$root/tests/guest/cache/chroot/$suite"
        if [ ! -x "$c/usr/bin/$cc" ]; then
            command -v debootstrap >/dev/null || apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
            echo "matrix: debootstrap $suite with $cc into $c" >&2
            debootstrap --variant=minbase --include="$cc,make,libc6-dev,binutils,libelf1t64,dwarves,xz-utils" \
                "$suite" "$c" http://deb.debian.org/debian >"$out/debootstrap.log" 2>&1 \
                || { tail -5 "$out/debootstrap.log" >&2; return 1; }
        fi
        # objtool reads /proc; the headers and DIR live under $root (target/, tests/guest/cache).
        mkdir -p "$c$root" "$c/proc"
        mountpoint -q "$c$root" || mount --bind "$root" "$c$root"
        mountpoint -q "$c/proc" || mount -t proc proc "$c/proc"
        chroot "$c" make -s -C "$kdir" M="$m" KCFLAGS=-Werror "$@" || rc=$?
        # Nothing stays mounted: the chroot lives under $root, which it would loop into.
        umount "$c/proc" "$c$root" || true
    fi
    return $rc
}
# kmod_for REL: the module directory built for kernel REL (built here unless --no-build).
kmod_for() {
    local rel=$1 kdir dir
    if [ -z "$rel" ]; then
        dir="$out/kmod-default"
        kdir=""
    else
        dir="$out/kmod-$rel"
        kdir="$(bash "$root/scripts/fetch-kernels.sh" --kdir "$rel")"
    fi
    if ((build)); then
        rm -rf "$dir" && mkdir -p "$dir"
        # The Rust object for this kernel's configuration, then Kbuild (M=) on a copy
        # of the C sources in the kernel's own directory, so that kernels (and a
        # tests/kmod run using kmod/) do not share build products.
        make -s -C "$root/kmod" ${kdir:+KDIR="$kdir"} CARGO_TARGET_DIR="$out/kmod-rust" rust-obj >/dev/null
        local src="$dir/src"
        mkdir -p "$src/build"
        cp -r "$root"/kmod/Kbuild "$root"/kmod/*.c "$root"/kmod/include "$src/"
        cp "$root/kmod/build/stasis_rust.ro" "$src/build/"
        [ -n "$kdir" ] || kdir="$(make -s -C "$root/kmod" --no-print-directory print-kdir)"
        kmod_make "$kdir" "$rel" "$src" modules >/dev/null
        cp "$src"/*.ko "$dir/"
    fi
    echo "$dir"
}
share="$out/share"
rm -rf "$share" && mkdir -p "$share"
results=()
status=0
for rel in ${kernels:-""}; do
    kmod="$(kmod_for "$rel")"
    kargs=()
    [ -n "$rel" ] && kargs=(--kernel-release "$rel")
    for cpu in $cpus; do
        echo "== matrix: kernel ${rel:-default}, cpu $cpu" >&2
        log="$out/log.${rel:-default}.$cpu"
        set +e
        "$root/tests/guest/guest.sh" "${kargs[@]}" --cpu "$cpu" --mem 2G --slub-debug --timeout 1500 \
            --check-dmesg --share "$share" "${verbose[@]}" \
            --env "STASIS=$out/host/debug/stasis" --env "WL=$out/workloads" \
            --env "DUMPONE=$out/host/debug/examples/dump_one" --env "KMOD=$kmod" \
            --env "CPU=$cpu" --env "WORKLOADS=$workloads" --env "STASIS_KMOD_ARGS=allow_untested_kernel=1" \
            -- bash "$here/in-guest.sh" >"$log" 2>&1
        rc=$?
        set -e
        grep -E '^(FAIL|kernel |cpu flags)' "$log" >&2 || true
        line="$(grep '^MATRIX ' "$log" | tail -1)"
        [ -n "$line" ] || line="MATRIX cpu=$cpu kernel=${rel:-default} pass=0 fail=1 (no summary: exit $rc)"
        [ $rc = 0 ] || { status=1; tail -5 "$log" >&2; }
        echo "$line (exit $rc)" >&2
        results+=("$line")
    done
done
echo "matrix: $((SECONDS - t0)) s" >&2
printf '%s\n' "${results[@]}"
if [ -n "$record" ]; then
    {
        echo "Last run: \`tests/matrix/run.sh --cpus \"$cpus\" --workloads \"$workloads\"${kernels:+ --kernels \"$kernels\"}\`, $(date -u +%Y-%m-%d), $((SECONDS - t0)) s."
        echo
        echo "| kernel | CPU model | PASS | FAIL |"
        echo "|---|---|---:|---:|"
        for l in "${results[@]}"; do
            set -- $l
            c=${2#cpu=} k=${3#kernel=} p=${4#pass=} f=${5#fail=}
            echo "| $k | $c | $p | $f |"
        done
    } >"$record"
fi
exit $status

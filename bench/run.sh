#!/usr/bin/env bash
# stasis vs CRIU, side by side in one QEMU guest (Debian's stock 6.1 kernel, TCG).
#   bash bench/run.sh [--reps N] [--configs "1x64 16x64 1x1024 16x1024"] [--tools "criu stasis"]
#                     [--out FILE] [--no-build] [--no-kernel] [-v]
# Builds target/release/stasis (CARGO_TARGET_DIR, default /work/target-bench) and the
# bench programs, boots ONE 6 GiB guest that runs bench/in-guest.sh, then writes the
# table with bench/report.py into bench/RESULTS.md (or --out). See bench/README.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target-bench}"
reps=5 configs="1x64 16x64 1x1024 16x1024" tools="criu stasis" out="$here/RESULTS.md"
build=1 verbose=() timeout=2400 kernel=1
cmdline="bash bench/run.sh${*:+ $*}"
while (($#)); do
    case "$1" in
        --reps) reps=$2; shift 2 ;;
        --configs) configs=$2; shift 2 ;;
        --tools) tools=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --no-kernel) kernel=0; shift ;;
        -v) verbose=(-v); shift ;;
        *) sed -n '2,7p' "$0" >&2; exit 2 ;;
    esac
done

t_start=$(date +%s)
started="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
if ((build)); then
    echo "bench: building stasis (release) and the bench programs" >&2
    (cd "$root" && cargo build -q --release -p stasis-cli)
    make -s -C "$here" O="$CARGO_TARGET_DIR/bench-bin" >/dev/null
fi
stasis="$CARGO_TARGET_DIR/release/stasis"
bin="$CARGO_TARGET_DIR/bench-bin"
[ -x "$stasis" ] && [ -x "$bin/bench_workload" ] && [ -x "$bin/memcpy_bw" ] || {
    echo "bench: missing $stasis or $bin/{bench_workload,memcpy_bw} (run without --no-build)" >&2
    exit 2
}

# The host's state while timing: TCG timings are meaningless next to another QEMU.
load="$(cut -d' ' -f1-3 /proc/loadavg)"
others="$(pgrep -a qemu-system || true)"
[ -n "$others" ] && echo "bench: WARNING: another QEMU is running; timings will be skewed:"$'\n'"$others" >&2
echo "bench: host load average $load" >&2

share="$(mktemp -d "${TMPDIR:-/tmp}/stasis-bench.XXXXXX")"
# Snapshot the kernel modules (others may rebuild them while we run).
mkdir -p "$share/kmod"
cp "$root"/kmod/*.ko "$share/kmod/" 2>/dev/null || true
git_rev="$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git_dirty="$(cd "$root" && git status --porcelain --untracked-files=no 2>/dev/null | grep -c . || true)"

echo "bench: booting the guest (share $share); progress on the guest console with -v" >&2
set +e
"$root/tests/guest/guest.sh" --mem 6G --timeout "$timeout" --share "$share" "${verbose[@]}" \
    --env "BIN=$bin" --env "STASIS=$stasis" --env "OUT=/run/stasis-guest/results.txt" \
    --env "KMOD_DIR=/run/stasis-guest/kmod" --env "REPS=$reps" --env "CONFIGS=$configs" \
    --env "TOOLS=$tools" --env "KERNEL=$kernel" \
    -- bash "$here/in-guest.sh" >"$share/stdout" 2>"$share/stderr"
grc=$?
set -e
t_end=$(date +%s)
cat "$share/stderr" >&2
others_after="$(pgrep -a qemu-system || true)"
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 "$here/report.py" --results "$share/results.txt" --out "$out" \
    --command "$cmdline" --started "$started" --seconds $((t_end - t_start)) \
    --guest-status "$grc" --guest-summary "$(grep -a 'guest.sh: status' "$share/stderr" | tail -1)" \
    --host "$(uname -srm); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); $(nproc) cores; $(qemu-system-x86_64 --version | head -1)" \
    --host-load "$load (at the end: $load_end)" --other-qemu "$( [ -n "$others$others_after" ] && echo yes || echo no)" \
    --revision "$git_rev$( [ "${git_dirty:-0}" != 0 ] && echo " (+$git_dirty modified tracked files in the shared tree)")"
# Keep the raw lines next to the table (only for the default output).
if [ "$out" = "$here/RESULTS.md" ] && [ -f "$share/results.txt" ]; then
    cp "$share/results.txt" "$here/RESULTS.raw.txt"
fi
echo "bench: $out written ($((t_end - t_start)) s; guest status $grc; raw results in $share/results.txt)" >&2

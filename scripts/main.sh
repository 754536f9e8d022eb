#!/usr/bin/env bash
# The main job: real checkpoints and restarts of the multithreaded `counters`
# workload (scripts/cr-counters.sh), with both engines:
#   1. the user engine, on this machine (no kernel module needed);
#   2. the kernel engine (stasis.ko + stasis_files.ko), inside a QEMU guest booting
#      Debian's stock 6.1 kernel (this machine's kernel cannot load modules).
# Sets the machine up first (scripts/setup.sh). Exits 0 only when both restarted
# workloads report `ok`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash scripts/setup.sh
cargo build --release -q -p stasis-cli
make -s -C tests/workloads O="$root/target/workloads"
stasis=$root/target/release/stasis

bash scripts/cr-counters.sh "$stasis" "$root/target/workloads" user

echo "== building the kernel modules (make -C kmod)"
make -s -C kmod >/dev/null
echo "== booting the stock Debian 6.1 kernel in QEMU, loading stasis.ko and stasis_files.ko"
tests/guest/guest.sh --timeout 600 --insmod kmod/stasis.ko --insmod kmod/stasis_files.ko \
    -- bash "$root/scripts/cr-counters.sh" "$stasis" "$root/target/workloads" kernel

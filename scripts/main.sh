#!/usr/bin/env bash
# The main job: a real checkpoint and restart of the multithreaded `counters`
# workload. Sets the machine up first (scripts/setup.sh), builds stasis and the
# workloads, starts counters (8 threads, checksummed state), checkpoints it with
# --kill, restarts it from the image, and lets it verify its own state.
# Exits 0 only when the restarted workload reports `ok`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash scripts/setup.sh
cargo build --release -q -p stasis-cli
make -s -C tests/workloads O="$root/target/workloads"
stasis=$root/target/release/stasis

work=$(mktemp -d /tmp/stasis-main.XXXXXX)
trap 'rm -rf "$work"' EXIT
verdict=$work/counters.verdict
ready=$work/counters.ready
stop=$verdict.stop

echo "== starting counters (8 threads)"
setsid "$root/target/workloads/counters" --verdict "$verdict" --ready "$ready" --stop "$stop" \
    </dev/null >"$work/counters.log" 2>&1 &
for _ in $(seq 200); do [ -s "$ready" ] && break; sleep 0.05; done
[ -s "$ready" ] || { echo "counters never became ready"; exit 1; }
pid=$(sed -n 's/.*pid=\([0-9]*\).*/\1/p' "$ready")
echo "   pid $pid, threads: $(ls /proc/$pid/task | wc -l)"
sleep 0.5

echo "== stasis checkpoint $pid --kill"
"$stasis" checkpoint "$pid" -o "$work/counters.img" --kill
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
wait 2>/dev/null || true
"$stasis" verify "$work/counters.img"
"$stasis" inspect "$work/counters.img" | head -40

echo "== stasis restart (detached)"
"$stasis" restart "$work/counters.img" --detach
sleep 1
echo "   restored pid $pid threads: $(ls /proc/$pid/task | wc -l)"
touch "$stop"
for _ in $(seq 600); do [ -s "$verdict" ] && break; sleep 0.05; done
v=$(cat "$verdict" 2>/dev/null || echo "no verdict")
echo "== verdict of the restarted counters: $v"
[ "$v" = ok ]

#!/usr/bin/env bash
# One real checkpoint and restart of the multithreaded `counters` workload with the
# given engine: start it (9 threads, checksummed state), checkpoint it with --kill,
# verify and inspect the image, restart it (detached), let it verify its own state.
# Exits 0 only when the restarted workload reports `ok`. Used by scripts/main.sh on
# the host (user engine) and inside the QEMU guest (kernel engine).
#   scripts/cr-counters.sh STASIS_BINARY WORKLOADS_DIR ENGINE
set -euo pipefail
stasis=$1 wl=$2 engine=$3

work=$(mktemp -d /tmp/stasis-main.XXXXXX)
trap 'rm -rf "$work"' EXIT
verdict=$work/counters.verdict
ready=$work/counters.ready
stop=$verdict.stop

echo "== [$engine engine] starting counters (8 worker threads)"
setsid "$wl/counters" --verdict "$verdict" --ready "$ready" --stop "$stop" \
    </dev/null >"$work/counters.log" 2>&1 &
for _ in $(seq 400); do [ -s "$ready" ] && break; sleep 0.05; done
[ -s "$ready" ] || { echo "counters never became ready"; exit 1; }
pid=$(sed -n 's/.*pid=\([0-9]*\).*/\1/p' "$ready")
echo "   pid $pid, threads: $(ls /proc/$pid/task | wc -l)"
sleep 0.5

echo "== stasis checkpoint $pid --kill --engine $engine"
"$stasis" checkpoint "$pid" -o "$work/counters.img" --kill --engine "$engine"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
wait 2>/dev/null || true
"$stasis" verify "$work/counters.img"
"$stasis" inspect "$work/counters.img" | head -40

echo "== stasis restart --detach --engine $engine"
"$stasis" restart "$work/counters.img" --detach --engine "$engine"
sleep 1
echo "   restored pid $pid threads: $(ls /proc/$pid/task 2>/dev/null | wc -l)"
touch "$stop"
for _ in $(seq 600); do [ -s "$verdict" ] && break; sleep 0.05; done
v=$(cat "$verdict" 2>/dev/null || echo "no verdict")
echo "== [$engine engine] verdict of the restarted counters: $v"
[ "$v" = ok ]

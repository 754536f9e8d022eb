#!/usr/bin/env bash
# Runs inside one QEMU guest boot of tests/matrix/run.sh (one CPU model, one kernel).
# From the environment: STASIS (CLI), WL (workloads), DUMPONE (stasis-user's dump_one
# example), KMOD (dir with the .ko files, built for this kernel; empty: user engine
# only), CPU (the QEMU CPU model name), WORKLOADS (names), and the guest harness's
# STASIS_GUEST_RUN (a share that keeps its contents across the boots of one matrix run).
#
# 1. Every workload, checkpointed with --kill and restarted, with each pair of engines
#    (user/user, kernel/kernel, kernel/user, user/kernel).
# 2. The checkpointer killed (SIGKILL) at every phase of a user-engine checkpoint of
#    fpu and blocked: the target runs on untraced with its registers intact.
# 3. Across CPUs: images that earlier boots (other CPU models) left in the share are
#    restarted here. An image from a CPU with no more features than this one and
#    the same XSAVE components (or none: qemu64) must restart and pass; one from a
#    CPU with features this one lacks, or with fewer XSAVE components than this
#    one enables (SandyBridge/Haswell XCR0 0x7 on max, which adds MPX and PKRU:
#    glibc's XSAVE buffers would overflow), must be refused (exit 3 or 125, a
#    message naming them) with nothing started.
# Prints PASS:/FAIL: lines and a summary line `MATRIX cpu=.. kernel=.. pass=N fail=M`.
set -u
fails=0 passes=0
pass() { echo "PASS: [$CPU] $*"; passes=$((passes + 1)); }
fail() { echo "FAIL: [$CPU] $*"; fails=$((fails + 1)); }
echo "kernel $(uname -r), cpu model $CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo "cpu flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(fxsr|xsave|avx|avx2|avx512f|pku)$' | tr '\n' ' ')"

D=/tmp/matrixtest
mkdir -p $D
X=$STASIS_GUEST_RUN/images
mkdir -p $X/$CPU
rank() { case $1 in qemu64) echo 0 ;; SandyBridge) echo 1 ;; Haswell) echo 2 ;; max) echo 3 ;; *) echo -1 ;; esac; }
# The XSAVE components (XCR0) QEMU's TCG gives each model ("none": no XSAVE).
xcr0() { case $1 in qemu64) echo none ;; SandyBridge | Haswell) echo 0x7 ;; max) echo 0x21f ;; *) echo ? ;; esac; }
# restartable FROM: may an image taken on model FROM restart on this one?
restartable() {
    [ "$(rank $1)" -le "$(rank $CPU)" ] && { [ "$(xcr0 $1)" = none ] || [ "$(xcr0 $1)" = "$(xcr0 $CPU)" ]; }
}

kernel=0
if [ -n "${KMOD:-}" ]; then
    if insmod $KMOD/stasis.ko ${STASIS_KMOD_ARGS:-} && insmod $KMOD/stasis_files.ko; then
        kernel=1; pass "insmod stasis.ko stasis_files.ko"
    else
        fail "insmod"; dmesg | tail -20
    fi
fi

wait_file() { # FILE SECS
    local i
    for ((i = 0; i < $2 * 20; i++)); do [ -s "$1" ] && return 0; sleep 0.05; done
    return 1
}
start_wl() { # NAME -> WPID
    rm -f $D/$1.v $D/$1.v.ready $D/$1.v.stop
    case $1 in
        *.py) setsid python3 "$WL/$1" --verdict $D/$1.v </dev/null >$D/$1.log 2>&1 & ;;
        *.sh) setsid bash "$WL/$1" --verdict $D/$1.v </dev/null >$D/$1.log 2>&1 & ;;
        *) setsid "$WL/$1" --verdict $D/$1.v </dev/null >$D/$1.log 2>&1 & ;;
    esac
    WPID=$!
    wait_file $D/$1.v.ready 90 || { fail "$1 did not get ready"; tail -5 $D/$1.log; kill -9 $WPID; return 1; }
}
# verdict NAME LABEL: ask the (restored) workload to stop and check its verdict.
verdict() {
    touch $D/$1.v.stop
    if wait_file $D/$1.v 60 && [ "$(cat $D/$1.v)" = ok ]; then pass "$2: verdict ok"
    else fail "$2: verdict '$(cat $D/$1.v 2>/dev/null)'"; return 1; fi
}
# cr NAME CKPT_ENGINE RESTART_ENGINE: checkpoint --kill, restart --detach, verdict.
cr() {
    local w=$1 ce=$2 re=$3 img=$D/$1.$2.img p
    start_wl $w || return 1
    p=$WPID
    if ! $STASIS checkpoint --engine $ce --kill $p -o $img >$D/$w.ck.log 2>&1; then
        fail "$w: checkpoint --engine $ce: $(tail -1 $D/$w.ck.log)"; kill -9 $p 2>/dev/null; return 1
    fi
    wait $p 2>/dev/null
    rm -f $D/$w.v
    if ! $STASIS restart --engine $re --detach $img >$D/$w.rs.log 2>&1; then
        fail "$w: $ce checkpoint, restart --engine $re: $(tail -1 $D/$w.rs.log)"; return 1
    fi
    verdict $w "$w: $ce-engine checkpoint, $re-engine restart"
    case $w in counters|fpu) cp $img $X/$CPU/$w.$ce.img ;; esac
}

engines="user"
[ $kernel = 1 ] && engines="user kernel"
for w in $WORKLOADS; do
    for ce in $engines; do
        for re in $engines; do
            cr $w $ce $re
        done
    done
done

# --- the checkpointer dies --------------------------------------------------------
# dump_one prints STASIS_DUMP_TRACE phases on stderr; kill it right after each one (and
# a little later), then the workload must run on, untraced, and pass.
tracer_of() { awk '/^TracerPid:/ {print $2}' /proc/$1/status 2>/dev/null; }
for w in fpu blocked; do
    start_wl $w || continue
    p=$WPID kills=0 bad=0
    for phase in "" frozen "threads read" "injections done" "pagemap scanned" "image written"; do
        for delay in 0 0.002 0.02; do
            STASIS_DUMP_TRACE=1 $DUMPONE $p $D/k.img --hold-ms 3000 2>$D/k.trace &
            c=$!
            if [ -n "$phase" ]; then
                for _ in $(seq 400); do grep -q "$phase" $D/k.trace 2>/dev/null && break; sleep 0.01; done
            fi
            sleep $delay
            kill -9 $c 2>/dev/null; wait $c 2>/dev/null
            kills=$((kills + 1))
            for _ in $(seq 100); do [ "$(tracer_of $p)" = 0 ] && break; sleep 0.05; done
            [ "$(tracer_of $p)" = 0 ] || { bad=$((bad + 1)); echo "  $w still traced after a kill at '$phase' +$delay"; }
        done
    done
    [ $bad = 0 ] && pass "$w: checkpointer killed $kills times, target untraced each time" || fail "$w: traced after $bad of $kills kills"
    verdict $w "$w: after $kills killed checkpointers"
    wait $p 2>/dev/null
done

# --- across CPU models ------------------------------------------------------------
# Images from the other models' boots, restarted in a new PID namespace (the PIDs
# may be taken in this boot).
for dir in $X/*/; do
    from=$(basename $dir)
    [ "$from" = "$CPU" ] && continue
    for img in $dir*.img; do
        [ -e "$img" ] || continue
        base=$(basename $img .img) w=${base%%.*}
        for re in $engines; do
            label="$w image from $from (${base#*.} engine), $re-engine restart on $CPU"
            rm -f $D/$w.v $D/$w.v.stop
            $STASIS restart --engine $re --pidns --detach $img >$D/x.log 2>&1; rc=$?
            if restartable $from; then
                if [ $rc = 0 ]; then verdict $w "$label"
                else fail "$label: exit $rc: $(tail -1 $D/x.log)"; fi
            else
                sleep 0.5
                if [ $rc != 0 ] && grep -qE 'lacks|enables XSAVE' $D/x.log && [ ! -e $D/$w.v ]; then
                    pass "$label refused (exit $rc): $(grep -oE '(lacks|enables XSAVE)[^;:]*' $D/x.log | head -1)"
                else
                    fail "$label: exit $rc, not refused: $(tail -1 $D/x.log)"
                    touch $D/$w.v.stop
                fi
            fi
        done
    done
done

if [ $kernel = 1 ]; then
    rmmod stasis_files stasis || fail "rmmod"
fi
echo "MATRIX cpu=$CPU kernel=$(uname -r) pass=$passes fail=$fails"
[ $fails = 0 ]

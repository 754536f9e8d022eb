#!/usr/bin/env bash
# Runs inside the QEMU guest (see run.sh): KMOD (the kmod dir with the .ko files),
# CTL (stasisctl), WL (the built workloads) come from the environment.
set -u
fails=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
check() { local what="$1"; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
echo "kernel $(uname -r)"

D=/tmp/kmodtest
mkdir -p $D

wait_file() { # FILE SECS
    local i
    for ((i = 0; i < $2 * 20; i++)); do [ -s "$1" ] && return 0; sleep 0.05; done
    return 1
}
start_wl() { # NAME -> sets WPID
    rm -f $D/$1.v $D/$1.v.ready $D/$1.v.stop
    setsid "$WL/$1" --verdict $D/$1.v </dev/null >$D/$1.log 2>&1 &
    WPID=$!
    wait_file $D/$1.v.ready 60 || { fail "$1 did not get ready"; cat $D/$1.log; return 1; }
}
stop_wl() { # NAME PID -> checks the verdict
    touch $D/$1.v.stop
    wait "$2"; local rc=$?
    local v; v="$(cat $D/$1.v 2>/dev/null)"
    if [ "$rc" = 0 ] && [ "$v" = ok ]; then pass "$1 verdict ok"; else fail "$1 verdict '$v' rc $rc"; cat $D/$1.log; fi
}
cputicks() { awk '{print $14 + $15}' /proc/$1/stat; }

# --- load and talk ----------------------------------------------------------------
t=$(date +%s%N)
check "insmod stasis.ko" insmod $KMOD/stasis.ko
echo "insmod took $(( ($(date +%s%N) - t) / 1000000 )) ms"
check "/dev/stasis exists" test -c /dev/stasis
check "VERSION without files" $CTL version --expect-no-ext files
check "insmod stasis_files.ko" insmod $KMOD/stasis_files.ko
check "VERSION lists files" $CTL version --expect-ext files
if rmmod stasis 2>$D/rmmod.err; then fail "rmmod stasis while stasis_files loaded"; insmod $KMOD/stasis.ko
else pass "rmmod stasis refused while stasis_files is loaded ($(cat $D/rmmod.err))"; fi
check "bad requests fail cleanly" $CTL abuse

# --- quiesce ----------------------------------------------------------------------
if start_wl counters; then
    p=$WPID
    check "freeze counters (9 threads), thaw" $CTL freeze $p --expect-threads 9 --hold 500
    check "freeze counters again" $CTL freeze $p --expect-threads 9
    stop_wl counters $p
fi
if start_wl blocked; then
    p=$WPID
    $CTL freeze $p --hold 300 | tee $D/blocked.freeze
    [ "${PIPESTATUS[0]}" = 0 ] && pass "freeze blocked, thaw" || fail "freeze blocked, thaw"
    n=$(grep -c 'in syscall' $D/blocked.freeze)
    [ "$n" -ge 6 ] && pass "blocked: $n threads seen inside a system call" || fail "blocked: only $n threads in a syscall"
    stop_wl blocked $p
fi
# The freezer dies (SIGKILL) while holding the threads: they must run on.
if start_wl counters; then
    p=$WPID
    $CTL freeze $p --hold-forever >$D/hold.log 2>&1 &
    cpid=$!
    for i in $(seq 100); do grep -q holding $D/hold.log && break; sleep 0.05; done
    grep -q holding $D/hold.log && pass "frozen by a freezer that will be killed" || { fail "freeze for kill test"; cat $D/hold.log; }
    c0=$(cputicks $p); sleep 0.5; c1=$(cputicks $p)
    [ $((c1 - c0)) -le 1 ] && pass "no CPU time while frozen ($((c1 - c0)) ticks)" || fail "ran while frozen ($((c1 - c0)) ticks)"
    kill -9 $cpid; wait $cpid 2>/dev/null
    sleep 0.3; c0=$(cputicks $p); sleep 0.5; c1=$(cputicks $p)
    [ $((c1 - c0)) -ge 5 ] && pass "runs again after the freezer was killed ($((c1 - c0)) ticks)" || fail "still stuck after the freezer died ($((c1 - c0)) ticks)"
    stop_wl counters $p
fi
# The target is killed while frozen: SIGKILL must still end it.
if start_wl counters; then
    p=$WPID
    $CTL freeze $p --hold-forever >$D/hold2.log 2>&1 &
    cpid=$!
    for i in $(seq 100); do grep -q holding $D/hold2.log && break; sleep 0.05; done
    kill -9 $p
    for i in $(seq 100); do [ -e /proc/$p/stat ] && [ "$(awk '{print $3}' /proc/$p/stat)" != Z ] || break; sleep 0.05; done
    wait $p; rc=$?
    [ "$rc" = 137 ] && pass "a frozen target dies on SIGKILL" || fail "frozen target: wait status $rc"
    kill -9 $cpid; wait $cpid 2>/dev/null
fi

# Other workloads: freeze, thaw, and the workload still passes its own checks.
for w in tls fpu signals memory python_threads.py bash_loop.sh; do
    if start_wl $w; then
        p=$WPID
        check "freeze $w, thaw" $CTL freeze $p --quiet --hold 300
        stop_wl $w $p
    fi
done
# Threads created and exiting all the time: every freeze must still catch them all.
rm -f $D/sp.ready $D/sp.stop
$SPAWNER $D/sp.ready $D/sp.stop >$D/sp.log 2>&1 &
sp=$!
wait_file $D/sp.ready 30
ok=0
for i in $(seq 10); do $CTL freeze $sp --quiet --hold 100 >$D/sp.freeze 2>&1 && ok=$((ok + 1)) || cat $D/sp.freeze; done
[ $ok = 10 ] && pass "10 freezes of a thread spawner ($(head -n1 $D/sp.freeze))" || fail "spawner: $ok/10 freezes"
touch $D/sp.stop; wait $sp; rc=$?
[ $rc = 0 ] && pass "spawner ran on ($(cat $D/sp.log))" || fail "spawner exit $rc"
# A second freezer waits for the first and gives up (ETIMEDOUT) without harm.
if start_wl counters; then
    p=$WPID
    $CTL freeze $p --hold-forever >$D/hold3.log 2>&1 &
    cpid=$!
    for i in $(seq 100); do grep -q holding $D/hold3.log && break; sleep 0.05; done
    check "second freezer times out" $CTL freeze $p --timeout 500 --expect-errno 110
    kill -9 $cpid; wait $cpid 2>/dev/null
    check "freeze after both freezers are gone" $CTL freeze $p --quiet
    # A stopped (SIGSTOP) target cannot run its task_work: ETIMEDOUT, then fine.
    kill -STOP $p
    check "stopped target: freeze times out" $CTL freeze $p --timeout 500 --expect-errno 110
    kill -CONT $p
    check "freeze after SIGCONT" $CTL freeze $p --quiet
    # Permissions: another uid may not freeze root's process.
    check "nobody cannot freeze root's process (EPERM)" \
        setpriv --reuid=65534 --regid=65534 --clear-groups $CTL freeze $p --expect-errno 1
    stop_wl counters $p
fi
# ... but may freeze its own.
chmod 1777 $D
rm -f $D/counters.v $D/counters.v.ready $D/counters.v.stop
setpriv --reuid=65534 --regid=65534 --clear-groups setsid "$WL/counters" --verdict $D/counters.v </dev/null >/dev/null 2>&1 &
p=$!
if wait_file $D/counters.v.ready 60; then
    p=$(sed -n 's/.*pid=\([0-9]*\).*/\1/p' $D/counters.v.ready)
    check "nobody freezes its own process" setpriv --reuid=65534 --regid=65534 --clear-groups $CTL freeze $p --quiet
    touch $D/counters.v.stop
    for i in $(seq 200); do [ -s $D/counters.v ] && break; sleep 0.05; done
    [ "$(cat $D/counters.v)" = ok ] && pass "counters (nobody) verdict ok" || fail "counters (nobody) verdict $(cat $D/counters.v)"
else
    fail "counters as nobody did not start"
fi

# --- checkpoint ------
# Without stasis_files.ko, open descriptors cannot be written: refused.
rmmod stasis_files
if start_wl counters; then
    p=$WPID
    check "checkpoint without stasis_files refused (EOPNOTSUPP)" $CTL checkpoint $p $D/nofiles.img --expect-errno 95
    if [ -x "${STASIS:-}" ]; then
        $STASIS checkpoint $p -o $D/nofiles.cli.img --engine kernel >$D/nofiles.cli 2>&1; rc=$?
        if [ $rc = 4 ] && grep -q "needs extension files (module stasis_files.ko)" $D/nofiles.cli && [ ! -e $D/nofiles.cli.img ]
        then pass "stasis checkpoint --engine kernel without stasis_files: exit 4 ($(head -n1 $D/nofiles.cli))"
        else fail "stasis checkpoint without stasis_files: exit $rc"; cat $D/nofiles.cli; fi
    fi
    stop_wl counters $p
fi
check "insmod stasis_files.ko again" insmod $KMOD/stasis_files.ko
# --------------------------------------------------------------
# The image must pass stasis-image's full ProcessImage validation, and the workload,
# released after the checkpoint, must still pass its own checks.
for w in counters blocked tls fpu memory python_threads.py bash_loop.sh signals files; do
    if start_wl $w; then
        p=$WPID
        nt=$(ls /proc/$p/task | wc -l)
        if $CTL checkpoint $p $D/$w.img >$D/$w.ck 2>&1; then
            cat $D/$w.ck
            check "$w: checkpoint image valid ($nt threads)" $IMG $D/$w.img --expect-threads $nt
        elif grep -q "errno 95" $D/$w.ck; then
            pass "$w: checkpoint refused (EOPNOTSUPP): $(dmesg | grep 'checkpoint refused' | tail -n1 | sed 's/.*refused: //')"
        else
            fail "$w: checkpoint"; cat $D/$w.ck
        fi
        stop_wl $w $p
    fi
done
if [ -f $D/blocked.img ]; then
    n=$($IMG $D/blocked.img | grep -c ' flags .F ')
    [ "$n" -ge 6 ] && pass "blocked: $n threads saved with the syscall-restart fixup" || fail "blocked: $n fixed threads"
fi
# --kill: the target is gone after a successful checkpoint.
if start_wl counters; then
    p=$WPID
    check "checkpoint --kill" $CTL checkpoint $p $D/kill.img --kill
    wait $p; rc=$?
    [ "$rc" = 137 ] && pass "checkpoint --kill killed the target" || fail "checkpoint --kill: wait status $rc"
    check "checkpoint --kill image valid" $IMG $D/kill.img --expect-threads 9
fi
# --keep-frozen, then THAW (stasisctl does it): still fine.
if start_wl counters; then
    p=$WPID
    check "checkpoint --keep-frozen + thaw" $CTL checkpoint $p $D/keep.img --keep-frozen
    stop_wl counters $p
fi

# Streamed to a pipe.
if start_wl counters; then
    p=$WPID
    $CTL checkpoint $p - 2>$D/pipe.err | cat > $D/pipe.img
    if grep -q "checkpoint: ok" $D/pipe.err; then pass "checkpoint to a pipe ($(stat -c %s $D/pipe.img) bytes)"; else fail "checkpoint to a pipe"; cat $D/pipe.err; fi
    check "piped image valid" $IMG $D/pipe.img --expect-threads 9
    stop_wl counters $p
fi
# The checkpointer is killed while the image is being written (memory takes seconds):
# the target runs on and passes; the module stays usable.
if start_wl memory; then
    p=$WPID
    $CTL checkpoint $p $D/killed.img >$D/killed.log 2>&1 &
    cpid=$!
    sleep 0.7
    kill -9 $cpid; wait $cpid 2>/dev/null
    sleep 0.5
    # Parked threads sleep TASK_KILLABLE, shown as D.
    nd=$(cat /proc/$p/task/*/stat | awk '$3 == "D"' | wc -l)
    [ "$nd" = 0 ] && pass "memory runs on after its checkpointer was killed mid-write ($(cat $D/killed.log | tr '\n' ' '))" || fail "memory: $nd threads still parked after the checkpointer was killed"
    check "checkpoint again after that" $CTL checkpoint $p $D/again.img
    stop_wl memory $p
fi

# The stasis CLI's kernel engine: `stasis checkpoint` (auto -> kernel: /dev/stasis exists)
# left running, --stop, to a pipe, --kill; verify, inspect ("kernel engine"); `stasis
# restart --detach` (auto -> kernel engine: /dev/stasis exists) passes the verdict.
if [ -x "${STASIS:-}" ] && start_wl counters; then
    p=$WPID
    check "stasis checkpoint (auto -> kernel), left running" $STASIS checkpoint $p -o $D/cli.run.img
    check "stasis verify of it" $STASIS verify -q $D/cli.run.img
    check "stasis checkpoint --stop" $STASIS checkpoint $p -o $D/cli.stop.img --stop
    st=$(awk '{print $3}' /proc/$p/stat)
    [ "$st" = T ] && pass "stasis checkpoint --stop left it stopped" || fail "after --stop: state $st"
    kill -CONT $p
    $STASIS checkpoint $p -o - 2>$D/cli.pipe.err | cat >$D/cli.pipe.img
    check "stasis checkpoint -o - | cat: image valid" $STASIS verify -q $D/cli.pipe.img
    if $STASIS checkpoint $p -o $D/cli.img --kill >$D/cli.ck 2>&1; then pass "stasis checkpoint --kill: $(cat $D/cli.ck)"
    else fail "stasis checkpoint --kill"; cat $D/cli.ck; fi
    wait $p; rc=$?
    [ "$rc" = 137 ] && pass "stasis checkpoint --kill killed the target" || fail "stasis checkpoint --kill: wait status $rc"
    check "stasis verify (kernel image)" $STASIS verify $D/cli.img
    $STASIS inspect $D/cli.img >$D/cli.inspect 2>&1
    if grep -q "with the kernel engine" $D/cli.inspect; then pass "stasis inspect: $(grep -m1 'written' $D/cli.inspect | sed 's/^ *//')"
    else fail "stasis inspect does not show the kernel engine"; head -n 5 $D/cli.inspect; fi
    rm -f $D/counters.v $D/counters.v.stop
    if r=$($STASIS restart $D/cli.img --detach 2>$D/cli.r.err); then
        pass "stasis restart --detach (auto -> kernel engine): PID $r"
        sleep 1
        touch $D/counters.v.stop
        for i in $(seq 600); do [ -s $D/counters.v ] && break; sleep 0.1; done
        v="$(cat $D/counters.v 2>/dev/null)"
        [ "$v" = ok ] && pass "counters: stasis kernel checkpoint, stasis restart, verdict ok" || { fail "counters after stasis restart: verdict '$v'"; cat $D/cli.r.err; }
    else
        fail "stasis restart --detach"; cat $D/cli.r.err
    fi
fi

# --- restart: validation -----------------------------------------------------------
# STASIS_IOC_RESTART reads the image into kernel memory, validates all of it with
# stasis-image and checks it against this machine before anything changes. stasisctl
# checks after every call that its own memory map and data are unchanged.
check "RESTART/RESTART_THREAD: bad arguments and descriptors fail cleanly" $CTL restart-abuse
for w in counters blocked tls fpu memory python_threads.py bash_loop.sh signals; do
    [ -f $D/$w.img ] || continue
    nt=$($IMG $D/$w.img | sed -n 's/.* \([0-9]*\) threads.*/\1/p')
    check "RESTART validates the kernel image of $w ($nt threads)" $CTL restart --validate-only --expect-threads $nt $D/$w.img
done
# A RESTART for a process whose threads never park: ETIMEDOUT, both sides intact.
if [ -f $D/counters.img ] && start_wl counters; then
    p=$WPID
    check "RESTART of a running process that did not park: ETIMEDOUT, caller intact" \
        $CTL restart --pid $p --timeout 300 --expect-errno 110 $D/counters.img
    check "RESTART of a non-existent pid: ESRCH" $CTL restart --pid 999999 --timeout 100 --expect-errno 3 $D/counters.img
    stop_wl counters $p
fi
if [ -f $D/counters.img ] && $IMG --mutate $D/counters.img $D/mut >$D/mut.log 2>&1; then
    cat $D/mut.log
    check "RESTART refuses malformed images (EINVAL), caller intact" $CTL restart --pid 1 --expect-errno 22 $D/mut/einval-*
    check "RESTART refuses malformed images with VALIDATE_ONLY too" $CTL restart --validate-only --expect-errno 22 $D/mut/einval-*
    check "RESTART refuses XSAVE features this CPU lacks, 5009 threads (EOPNOTSUPP)" $CTL restart --validate-only --expect-errno 95 $D/mut/eopnotsupp-*
    check "RESTART validates 4009 threads (the parser's deep sort, on the module's big stack)" \
        $CTL restart --validate-only --expect-threads 4009 $D/mut/valid-many-threads
else
    fail "hostile images: mutate"; cat $D/mut.log
fi

# --- restart in the kernel ---------------------------------------------------------
# `stasis restart --engine kernel`: the CLI forks the future process with the image's
# PID/TIDs, files and handlers; its threads park in RESTART_THREAD; RESTART replaces the
# address space and sets every thread's state. The restored workload checks itself.
restart_check() { # NAME IMAGE ENGINE LABEL [EXTRA ARGS]
    local w=$1 img=$2 eng=$3 label=$4; shift 4
    rm -f $D/$w.v $D/$w.v.stop
    $STASIS restart --engine $eng "$@" $img >$D/$w.rs.log 2>&1 &
    local r=$!
    sleep 1
    touch $D/$w.v.stop
    wait $r; local rc=$?
    local v; v="$(cat $D/$w.v 2>/dev/null)"
    if [ "$rc" = 0 ] && [ "$v" = ok ]; then pass "$label: verdict ok"
    else fail "$label: exit $rc verdict '$v'"; tail -n 5 $D/$w.rs.log; fi
}
# cr NAME CKPT_ENGINE RESTART_ENGINE TAG: start NAME, checkpoint it with --kill into
# $D/NAME.TAG.img, restart that. Every workload must pass with every pair of engines.
cr() {
    local w=$1 ce=$2 re=$3 tag=$4 p
    start_wl $w || return 1
    p=$WPID
    if $STASIS checkpoint --engine $ce --kill $p -o $D/$w.$tag.img >$D/$w.$tag.log 2>&1; then
        wait $p 2>/dev/null
        restart_check $w $D/$w.$tag.img $re "$w: $ce-engine checkpoint --kill, $re-engine restart"
    else
        fail "$w: stasis checkpoint --engine $ce --kill"; cat $D/$w.$tag.log; kill -9 $p
        return 1
    fi
}
if [ -x "${STASIS:-}" ]; then
    for w in counters blocked tls fpu memory python_threads.py bash_loop.sh signals files; do
        cr $w kernel kernel k
    done
    # The same image restarted twice in turn.
    [ -f $D/counters.k.img ] && restart_check counters $D/counters.k.img kernel "counters: the same image restarted again"
    # --leave-running, three times in a row: the original keeps passing; each image restarts.
    if start_wl counters; then
        p=$WPID
        ok=0
        for i in 1 2 3; do $STASIS checkpoint --engine kernel $p -o $D/lr$i.img >$D/lr.log 2>&1 && ok=$((ok + 1)); done
        [ $ok = 3 ] && pass "three kernel checkpoints in a row, left running" || { fail "three checkpoints: $ok/3"; cat $D/lr.log; }
        stop_wl counters $p
        for i in 1 3; do [ -f $D/lr$i.img ] && restart_check counters $D/lr$i.img kernel "counters: restart of left-running checkpoint $i"; done
    fi
    # Interchange: user-engine images restarted by the kernel, kernel images by the user
    # engine (fresh images: memory's restored process deletes its mapped file at exit).
    for w in counters blocked tls fpu memory python_threads.py bash_loop.sh signals files; do
        cr $w user kernel u
        [ -f $D/$w.k.img ] && cr $w kernel user k2
    done
    # `stasis restart` killed (SIGKILL) at some moment of a kernel restart: the future
    # process goes away (parked threads time out, or the module kills a half-replaced
    # process), the module stays usable; the leak check at rmmod covers the rest.
    if [ -f $D/memory.u.img ]; then
        live_memory() { local q n=0; for q in $(pgrep -x memory); do [ "$(awk '{print $3}' /proc/$q/stat 2>/dev/null)" = Z ] || n=$((n + 1)); done; echo $n; }
        for delay in 0.2 0.6 1.2; do
            $STASIS restart --engine kernel $D/memory.u.img >/dev/null 2>&1 &
            r=$!
            sleep $delay
            kill -9 $r; wait $r 2>/dev/null
            for i in $(seq 450); do [ "$(live_memory)" = 0 ] && break; sleep 0.1; done
            n=$(live_memory)
            [ "$n" = 0 ] && pass "stasis restart killed after ${delay}s: no restored process left (${i}00 ms)" || { fail "restart killed after ${delay}s: $n memory processes still alive"; ps -eo pid,stat,comm | grep memory; pkill -9 -x memory; }
        done
        check "VERSION after killed restarts" $CTL version --expect-ext files
    fi
    # --detach: `stasis restart` prints the PID and leaves the process running.
    if [ -f $D/counters.k.img ]; then
        rm -f $D/counters.v $D/counters.v.stop
        if r=$($STASIS restart --engine kernel --detach $D/counters.k.img 2>$D/det.err); then
            pass "stasis restart --engine kernel --detach: PID $r"
            sleep 0.5; touch $D/counters.v.stop
            for i in $(seq 300); do [ -s $D/counters.v ] && break; sleep 0.1; done
            [ "$(cat $D/counters.v 2>/dev/null)" = ok ] && pass "counters (detached kernel restart): verdict ok" || fail "detached kernel restart: verdict '$(cat $D/counters.v 2>/dev/null)'"
        else
            fail "stasis restart --engine kernel --detach"; cat $D/det.err
        fi
    fi
    # --pidns: the same image inside a new PID namespace (its PID may be in use here).
    [ -f $D/counters.k.img ] && restart_check counters $D/counters.k.img kernel "counters: kernel restart with --pidns" --pidns
    # A PID in use: a clear error, nothing restarted.
    if start_wl counters; then
        p=$WPID
        $STASIS checkpoint --engine kernel $p -o $D/inuse.img >/dev/null 2>&1
        $STASIS restart --engine kernel $D/inuse.img >$D/inuse.log 2>&1; rc=$?
        [ $rc != 0 ] && grep -qi "in use" $D/inuse.log && pass "kernel restart with the PID in use: exit $rc ($(head -n1 $D/inuse.log))" || { fail "PID in use: exit $rc"; cat $D/inuse.log; }
        stop_wl counters $p
    fi
    # A corrupt image: refused before anything is forked.
    if [ -f $D/counters.k.img ]; then
        cp $D/counters.k.img $D/corrupt.img
        printf '\xff' | dd of=$D/corrupt.img bs=1 seek=5000 conv=notrunc 2>/dev/null
        $STASIS restart --engine kernel $D/corrupt.img >$D/corrupt.log 2>&1; rc=$?
        [ $rc = 125 ] && grep -q checksum $D/corrupt.log && pass "kernel restart of a corrupt image refused: exit 125 ($(head -n1 $D/corrupt.log))" || { fail "corrupt image: exit $rc"; cat $D/corrupt.log; }
        $STASIS restart --engine kernel --detach $D/corrupt.img >$D/corrupt.log 2>&1; rc=$?
        [ $rc = 3 ] && pass "kernel restart --detach of a corrupt image: exit 3" || { fail "corrupt image --detach: exit $rc"; cat $D/corrupt.log; }
    fi
else
    echo "SKIP: kernel restart (no stasis binary)"
fi

# --- unload -----------------------------------------------------------------------
check "rmmod stasis_files" rmmod stasis_files
check "VERSION without files again" $CTL version --expect-no-ext files
sleep 0.2
check "rmmod stasis" rmmod stasis
if dmesg | grep -E 'stasis.*(leaked|panic)|WARNING:|BUG:|Oops' >$D/bad; then fail "dmesg:"; cat $D/bad; else pass "dmesg clean (no leak, WARN, BUG, Oops)"; fi
dmesg | grep -E 'stasis' | tail -n 8
echo "kmod tests: $fails failed"
[ $fails = 0 ]

#!/usr/bin/env bash
# Runs INSIDE the QEMU guest (started by bench/run.sh). Prints machine-readable lines
# to $OUT (and stdout):
#   INFO key=value ...
#   LIMIT name=memcpy|tmpfs_write ...
#   RESULT tool=criu|stasis|stasis-kernel threads=N mib=M rep=R ckpt_ms= frozen_ms=
#          restore_ms= image_bytes= verdict=ok [extra=...]
#   FAIL tool=... threads=N mib=M rep=R stage=... error="..."
#   NOTE tool=... text="..."
#   KERNEL available=yes|no reason="..."
# Environment (set by run.sh): BIN (bench programs), STASIS (stasis binary), OUT,
# KMOD_DIR (copies of kmod/*.ko, optional), REPS, CONFIGS ("THREADSxMIB ..."), TOOLS.
set -u
BIN=${BIN:?}
STASIS=${STASIS:?}
OUT=${OUT:-${STASIS_GUEST_RUN:-/tmp}/results.txt}
REPS=${REPS:-5}
CONFIGS=${CONFIGS:-"1x64 16x64 1x1024 16x1024"}
TOOLS=${TOOLS:-"criu stasis"}
KMOD_DIR=${KMOD_DIR:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3
ROOT=/tmp/bench                     # tmpfs in the guest
STASIS_REL=--kill                   # may become "stop" after the probe below

emit() { echo "$*" >>"$OUT"; echo "$*"; }
progress() { echo "bench: $*" >/dev/console 2>/dev/null || true; }
# Microseconds since the epoch, no fork.
now_us() { local t=$EPOCHREALTIME; echo -n "${t/./}"; }
ms() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
# One line, quotes and newlines squashed, for error="..." fields.
oneline() { tr '\n"' " '" | cut -c1-300; }
# Poll for a file (sleep is cheap enough outside the timed sections).
wait_file() {
    local f=$1 end=$((SECONDS + $2))
    while [ ! -e "$f" ]; do
        ((SECONDS >= end)) && return 1
        sleep 0.05
    done
}
alive() { # pid exists and is not a zombie
    local s
    s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$s" ] && [ "$s" != Z ] && [ "$s" != X ]
}
wait_gone() {
    local end=$((SECONDS + $2))
    while alive "$1"; do
        ((SECONDS >= end)) && return 1
        sleep 0.05
    done
}

mkdir -p "$ROOT"
: >"$OUT"
emit "INFO kernel=$(uname -r) machine=$(uname -m) cpus=$(nproc) mem_kib=$(awk '/MemTotal/{print $2}' /proc/meminfo) thp=$(sed 's/.*\[\(.*\)\].*/\1/' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null) tmpfs_kib=$(df -k "$ROOT" | awk 'NR==2{print $2}')"
emit "INFO criu=\"criu $(criu --version 2>&1 | sed -n 's/^Version: *//p' | head -1 | oneline)\" stasis=\"$($STASIS --version 2>&1 | head -1 | oneline)\""

# ---- machine limits (measured at the start and again at the end: the host's load moves) ----
limits() {
    progress "limits ($1)"
    emit "$("$BIN/memcpy_bw" 256 5) when=$1"
    for i in 1 2; do
        rm -f "$ROOT/dd"
        t0=$(now_us)
        dd if=/dev/zero of="$ROOT/dd" bs=1M count=1024 conv=fsync status=none
        t1=$(now_us)
        emit "LIMIT name=tmpfs_write mib=1024 rep=$i ms=$(ms $((t1 - t0))) mib_s=$(awk -v d=$((t1 - t0)) 'BEGIN{printf "%.1f", 1024/(d/1e6)}') when=$1"
    done
    rm -f "$ROOT/dd"
    emit "$("$BIN/memcpy_bw" --write "$ROOT/wr" 1024) when=$1"
}
limits start

# ---- criu check (caches its kernel probes in /run) ----
if [[ " $TOOLS " == *" criu "* ]]; then
    progress "criu check"
    if out=$(criu check 2>&1); then
        emit "INFO criu_check=\"$(echo "$out" | tail -1 | oneline)\""
    else
        emit "NOTE tool=criu text=\"criu check failed: $(echo "$out" | tail -3 | oneline)\""
    fi
fi

# ---- one repetition ----
# start_workload THREADS MIB -> sets WPID, W (work dir)
start_workload() {
    W=$ROOT/w
    rm -rf "$W"
    mkdir -p "$W"
    # cwd and stdio on tmpfs, stdin /dev/null; the workload makes itself a session leader.
    (cd "$W" && exec "$BIN/bench_workload" --threads "$1" --touch-mib "$2" \
        --verdict "$W/v" --ready "$W/v.ready" --stop "$W/v.stop" </dev/null >"$W/log" 2>&1) &
    WPID=$!
    T_START=$SECONDS
    T_SETUP=NA
}

# fail TOOL T M REP STAGE MSG
fail() {
    emit "FAIL tool=$1 threads=$2 mib=$3 rep=$4 stage=$5 error=\"$(echo "$6" | oneline)\""
}

cleanup_pids() {
    for p in "$@"; do
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null
    done
    wait 2>/dev/null
}

# finish TOOL T M REP PID -> verdict check after a restart; prints nothing, sets VERDICT
finish() {
    local tool=$1 t=$2 m=$3 rep=$4 pid=$5 ts=$SECONDS
    touch "$W/v.stop"
    local end=$((SECONDS + 600)) gone=""
    while [ ! -e "$W/v" ]; do
        if ! alive "$pid"; then
            # Exited (or died) without a verdict? Give the rename a moment.
            [ -n "$gone" ] && ((SECONDS >= gone)) && break
            [ -z "$gone" ] && gone=$((SECONDS + 2))
        fi
        ((SECONDS >= end)) && break
        sleep 0.05
    done
    if [ ! -e "$W/v" ]; then
        fail "$tool" "$t" "$m" "$rep" verdict "no verdict (pid $pid $(alive "$pid" && echo 'still alive after 600 s' || echo 'exited without one')); log: $(tail -3 "$W/log" 2>/dev/null)"
        cleanup_pids "$pid"
        return 1
    fi
    VERDICT=$(head -1 "$W/v")
    PHASES="setup_s=$T_SETUP verify_s=$((SECONDS - ts))"
    wait_gone "$pid" 60 || { kill -9 "$pid" 2>/dev/null; }
    if [ "$VERDICT" != ok ]; then
        fail "$tool" "$t" "$m" "$rep" verdict "$VERDICT"
        return 1
    fi
}

ready_timeout() { echo $((120 + $1 / 4)); } # seconds, by MiB

rep_criu() {
    local t=$1 m=$2 rep=$3 D=$ROOT/criu-img rc t0 t1 t2 t3 bytes stats
    rm -rf "$D" "$ROOT/criu-wd"
    mkdir -p "$D" "$ROOT/criu-wd"
    start_workload "$t" "$m"
    if ! wait_file "$W/v.ready" "$(ready_timeout "$m")"; then
        fail criu "$t" "$m" "$rep" ready "workload not ready; log: $(tail -3 "$W/log")"
        cleanup_pids "$WPID"
        return
    fi
    T_SETUP=$((SECONDS - T_START))
    t0=$(now_us)
    criu dump -t "$WPID" -D "$D" -W "$ROOT/criu-wd" -o dump.log
    rc=$?
    t1=$(now_us)
    if [ $rc -ne 0 ]; then
        fail criu "$t" "$m" "$rep" dump "criu dump exit $rc: $(grep -i error "$ROOT/criu-wd/dump.log" | tail -2)"
        cleanup_pids "$WPID"
        return
    fi
    wait "$WPID" 2>/dev/null # reap the killed target: its PID must be free for restore
    bytes=$(du -sb --exclude='*.log' "$D" | cut -f1)
    t2=$(now_us)
    criu restore -D "$D" -W "$ROOT/criu-wd" -d -o restore.log
    rc=$?
    t3=$(now_us)
    if [ $rc -ne 0 ]; then
        fail criu "$t" "$m" "$rep" restore "criu restore exit $rc: $(grep -i error "$ROOT/criu-wd/restore.log" | tail -2)"
        return
    fi
    # criu restores the same PID.
    finish criu "$t" "$m" "$rep" "$WPID" || return
    # criu writes stats-dump / stats-restore into its work dir (-W).
    stats=$($PY "$HERE/criu_stats.py" "$ROOT/criu-wd" 2>&1 | oneline)
    # frozen = freezing + frozen_time (seize of the first task until the dump is written
    # and the tree killed), the same span stasis reports (seize to image written).
    local frozen
    frozen=$(echo "$stats" | awk '{for(i=1;i<=NF;i++){split($i,a,"=");v[a[1]]=a[2]}} END{if(("criu_freezing_ms" in v)&&("criu_frozen_ms" in v)) printf "%.1f", v["criu_freezing_ms"]+v["criu_frozen_ms"]; else print "NA"}')
    emit "RESULT tool=criu threads=$t mib=$m rep=$rep ckpt_ms=$(ms $((t1 - t0))) frozen_ms=$frozen restore_ms=$(ms $((t3 - t2))) image_bytes=$bytes verdict=$VERDICT $PHASES $stats"
    rm -rf "$D"
}

# rep_stasis TOOL CHECKPOINT_ENGINE_ARGS RESTART_ENGINE_ARGS T M REP
rep_stasis() {
    local tool=$1 eng=$2 reng=$3 t=$4 m=$5 rep=$6 I=$ROOT/img.stasis rc t0 t1 t2 t3 bytes frozen npid
    rm -f "$I"
    start_workload "$t" "$m"
    if ! wait_file "$W/v.ready" "$(ready_timeout "$m")"; then
        fail "$tool" "$t" "$m" "$rep" ready "workload not ready; log: $(tail -3 "$W/log")"
        cleanup_pids "$WPID"
        return
    fi
    T_SETUP=$((SECONDS - T_START))
    t0=$(now_us)
    # shellcheck disable=SC2086
    timeout -s TERM 600 "$STASIS" checkpoint "$WPID" -o "$I" $STASIS_REL $eng 2>"$W/ckpt.err"
    rc=$?
    t1=$(now_us)
    if [ $rc -ne 0 ]; then
        fail "$tool" "$t" "$m" "$rep" checkpoint "stasis checkpoint exit $rc: $(grep -v '^$' "$W/ckpt.err" | tail -2)"
        cleanup_pids "$WPID"
        rm -f "$I" "$I".tmp.*
        return
    fi
    [ "$STASIS_REL" = --stop ] && kill -9 "$WPID" 2>/dev/null
    wait "$WPID" 2>/dev/null # reap: the restart takes the same PID
    frozen=$(sed -n 's/.*frozen \([0-9.]*\) ms.*/\1/p' "$W/ckpt.err" | tail -1)
    bytes=$(stat -c %s "$I")
    t2=$(now_us)
    # shellcheck disable=SC2086
    timeout -s TERM 600 "$STASIS" restart "$I" --detach $reng >"$W/restart.out" 2>"$W/restart.err"
    rc=$?
    t3=$(now_us)
    if [ $rc -ne 0 ]; then
        fail "$tool" "$t" "$m" "$rep" restart "stasis restart exit $rc: $(grep -v '^$' "$W/restart.err" | tail -2)"
        rm -f "$I" # a 1 GiB image left in the tmpfs would starve the next runs
        return
    fi
    npid=$(head -1 "$W/restart.out" | tr -dc 0-9)
    finish "$tool" "$t" "$m" "$rep" "${npid:-$WPID}" || return
    emit "RESULT tool=$tool threads=$t mib=$m rep=$rep ckpt_ms=$(ms $((t1 - t0))) frozen_ms=${frozen:-NA} restore_ms=$(ms $((t3 - t2))) image_bytes=$bytes verdict=$VERDICT $PHASES release=${STASIS_REL#--} restart_engine=${reng#--engine } restored_pid=${npid:-?}"
    rm -f "$I"
}

# ---- stasis --kill probe: a checkpoint with --kill of a multithreaded target must
# return; if it hangs, time with --stop + SIGKILL instead (the release happens after
# the frozen span and the image is already durable then) and say so.
if [[ " $TOOLS " == *" stasis "* ]]; then
    progress "stasis --kill probe"
    start_workload 2 16
    if wait_file "$W/v.ready" 120; then
        timeout -s TERM 30 "$STASIS" checkpoint "$WPID" -o "$ROOT/probe.img" --kill 2>"$W/probe.err"
        rc=$?
        if [ $rc -eq 124 ]; then
            STASIS_REL=--stop
            emit "NOTE tool=stasis text=\"stasis checkpoint --kill of a 3-thread target did not return within 30 s (killed by timeout); timed runs use --stop, then kill -9 from the script (outside the timed span)\""
        elif [ $rc -ne 0 ]; then
            emit "NOTE tool=stasis text=\"probe: stasis checkpoint --kill exit $rc: $(tail -2 "$W/probe.err" | oneline)\""
        fi
    else
        emit "NOTE tool=stasis text=\"probe workload not ready\""
    fi
    cleanup_pids "$WPID"
    rm -f "$ROOT/probe.img"*
fi

# ---- kernel engine: measured (interleaved with the others) only if a round trip works ----
RUN_TOOLS=$TOOLS
kreason=""
if [ "${KERNEL:-1}" = 0 ]; then
    kreason="skipped (run.sh --no-kernel)"
fi
progress "kernel engine probe"
if [ -z "${kreason:-}" ] && [ ! -e /dev/stasis ]; then
    if [ -n "$KMOD_DIR" ] && [ -f "$KMOD_DIR/stasis.ko" ]; then
        if ! msg=$(insmod "$KMOD_DIR/stasis.ko" 2>&1); then
            kreason="insmod stasis.ko failed: $msg"
        elif [ -f "$KMOD_DIR/stasis_files.ko" ]; then
            insmod "$KMOD_DIR/stasis_files.ko" 2>/dev/null
        fi
    else
        kreason="no kmod/stasis.ko built"
    fi
fi
if [ -z "${kreason:-}" ] && [ ! -e /dev/stasis ]; then
    kreason="stasis.ko loaded but /dev/stasis does not exist"
fi
KRESTART="--engine kernel"
knote=""
if [ -z "${kreason:-}" ]; then
    start_workload 2 16
    if wait_file "$W/v.ready" 120; then
        if timeout -s TERM 120 "$STASIS" checkpoint "$WPID" -o "$ROOT/k.img" --kill --engine kernel 2>"$W/k.err"; then
            wait "$WPID" 2>/dev/null
            if ! timeout -s TERM 120 "$STASIS" restart "$ROOT/k.img" --detach --engine kernel >"$W/k.out" 2>"$W/k.rerr"; then
                # The image format is shared: restart a kernel-engine image with the user engine.
                knote="restart --engine kernel: $(grep -v '^$' "$W/k.rerr" | tail -2 | oneline); restarts use the user engine"
                KRESTART="--engine user"
                timeout -s TERM 120 "$STASIS" restart "$ROOT/k.img" --detach --engine user >"$W/k.out" 2>"$W/k.rerr" ||
                    kreason="kernel-engine image, user-engine restart: $(grep -v '^$' "$W/k.rerr" | tail -2)"
            fi
            if [ -z "$kreason" ]; then
                kpid=$(tr -dc 0-9 <"$W/k.out")
                finish stasis-kernel 2 16 probe "${kpid:-$WPID}" ||
                    kreason="kernel round trip: verdict $(cat "$W/v" 2>/dev/null || echo none)"
            fi
        else
            kreason="stasis checkpoint --engine kernel: $(grep -v '^$' "$W/k.err" | tail -2)"
        fi
    else
        kreason="probe workload not ready"
    fi
    cleanup_pids "$WPID"
    rm -f "$ROOT/k.img"*
fi
if [ -n "${kreason:-}" ]; then
    emit "KERNEL available=no reason=\"$(echo "$kreason" | oneline)\""
else
    emit "KERNEL available=yes restart_engine=${KRESTART#--engine } note=\"$(echo "$knote" | oneline)\""
    RUN_TOOLS="$RUN_TOOLS stasis-kernel"
fi

# ---- the runs: per configuration, repetitions interleave the tools ----
for cfg in $CONFIGS; do
    t=${cfg%x*}
    m=${cfg#*x}
    for rep in $(seq 1 "$REPS"); do
        for tool in $RUN_TOOLS; do
            progress "$tool threads=$t mib=$m rep=$rep ($(date +%T))"
            case $tool in
                criu) rep_criu "$t" "$m" "$rep" ;;
                stasis) rep_stasis stasis "--engine user" "--engine user" "$t" "$m" "$rep" ;;
                stasis-kernel) rep_stasis stasis-kernel "--engine kernel" "$KRESTART" "$t" "$m" "$rep" ;;
            esac
        done
    done
done

limits end

emit "INFO done=1"

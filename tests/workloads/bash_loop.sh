#!/bin/bash
# bash_loop: the stasis workload protocol in bash, without child processes
# inside the loop. A counter n and a running checksum cs (an LCG-like mix of
# n, 62-bit) are advanced 10 steps per tick; chk = cs ^ n ^ SALT is kept
# alongside and checked every tick; cs is also recorded every 100 steps in an
# array. At the end the whole sequence is recomputed from the start and every
# recorded value compared. Waiting uses `read -t` on a FIFO opened read-write
# (never written), so the loop runs builtins only.
#
# Usage: bash_loop.sh --verdict FILE [--ready FILE] [--stop FILE] [--damage-self]
# No address to poke from outside: the ready line says damage=0x0 len=0, and
# --damage-self corrupts cs right after the ready file is written.

verdict= ready= stop= damage=0
while (($#)); do
    case $1 in
    --verdict) verdict=$2; shift 2 ;;
    --ready) ready=$2; shift 2 ;;
    --stop) stop=$2; shift 2 ;;
    --damage-self) damage=1; shift ;;
    *) printf 'bash_loop: unknown option %s\n' "$1" >&2; exit 2 ;;
    esac
done
[[ -n $verdict ]] || { printf 'usage: bash_loop.sh --verdict FILE [--ready FILE] [--stop FILE]\n' >&2; exit 2; }
: "${ready:=$verdict.ready}" "${stop:=$verdict.stop}"

MASK=$(( (1 << 62) - 1 ))
SALT=$(( 0x5a17c0de ))
fifo=$verdict.fifo
rm -f "$fifo" && mkfifo "$fifo" || exit 3
exec 3<>"$fifo"

n=0 cs=7 chk=$(( 7 ^ 0 ^ SALT )) fail=
declare -a hist

tick() {
    local k
    for ((k = 0; k < 10; k++)); do
        n=$(( n + 1 ))
        cs=$(( (cs * 6364136223846793005 + n * 1442695040888963407 + (cs >> 17)) & MASK ))
        chk=$(( cs ^ n ^ SALT ))
        if (( n % 100 == 0 )); then hist[n / 100]=$cs; fi
    done
}

tick
printf 'ready pid=%d damage=0x0 len=0\n' "$$" > "$ready.tmp" && mv -f "$ready.tmp" "$ready" || exit 3
if ((damage)); then cs=$(( cs ^ 1 )); fi

while [[ ! -e $stop ]]; do
    if (( chk != (cs ^ n ^ SALT) )); then
        fail="checksum of cs/n broken at step $n"
        break
    fi
    tick
    read -r -t 0.01 -u 3 _
done

# Recompute everything from the start.
if [[ -z $fail ]]; then
    x=7
    for ((i = 1; i <= n; i++)); do
        x=$(( (x * 6364136223846793005 + i * 1442695040888963407 + (x >> 17)) & MASK ))
        if (( i % 100 == 0 )) && [[ ${hist[i / 100]} != "$x" ]]; then
            fail="recorded value at step $i differs from recomputation"
            break
        fi
    done
    if [[ -z $fail ]] && (( x != cs )); then fail="cs differs from recomputation at step $n"; fi
    if [[ -z $fail ]] && (( ${#hist[@]} != n / 100 )); then fail="${#hist[@]} records for $n steps"; fi
fi
exec 3>&-
if [[ -z $fail ]]; then
    printf 'ok\n' > "$verdict"
    exit 0
fi
printf 'FAIL: bash_loop: %s\n' "$fail" > "$verdict"
exit 1

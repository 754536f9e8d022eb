//! The user engine inside the stock 6.1 kernel: boot ONE QEMU guest (Debian
//! 12's kernel, see tests/guest/README.md) and, in one script, for every
//! workload: start it (session leader, stdio to a log), wait until ready,
//! `stasis checkpoint PID -o IMG --kill`, `stasis verify IMG`,
//! `stasis restart IMG --detach`, ask it to stop, and wait for its verdict.
//! Also the `timers` restart fixture of stasis-user (POSIX timers: their ids
//! come back without PR_TIMER_CREATE_RESTORE_IDS, which 6.1 lacks).
//! The script prints one `WORKLOAD name ok|FAIL: ...` line per workload.
//!
//! Needs tests/guest/setup.sh; `STASIS_SKIP_GUEST=1` skips it.

use std::time::{Duration, Instant};

use stasis_guest::{check_setup, skip_requested, GuestOpts, GuestRun};

/// Every workload, with the arguments that keep it quick under TCG.
const WORKLOADS: &[(&str, &str)] = &[
    ("counters", ""),
    ("fpu", ""),
    ("tls", ""),
    ("blocked", ""),
    ("signals", ""),
    ("files", ""),
    ("memory", "--reserve-mib 256 --touch-mib 16"),
    ("python_threads.py", ""),
    ("bash_loop.sh", ""),
];

/// Runs in the guest (bash). @STASIS@ and @WORKLOADS_DIR@ are host paths the
/// guest sees through its overlay of the host root; @LIST@ is "name args"
/// lines. Work files go to a fresh directory under the guest's /tmp (writes
/// there stay in the guest).
const SCRIPT: &str = r#"
STASIS=@STASIS@
WL=@WORKLOADS_DIR@
export STASIS_WORKLOADS_DIR=$WL
ROOT=$(mktemp -d /tmp/stasis-cli-guest.XXXXXX)
echo "kernel $(uname -r)"

# wait_file FILE SECONDS: until FILE exists (1 on timeout).
wait_file() {
    local i=0 n=$(( $2 * 10 ))
    while [ ! -e "$1" ]; do
        i=$((i + 1)); [ $i -gt $n ] && return 1
        sleep 0.1
    done
    return 0
}

# gone PID SECONDS: until PID no longer exists or is a zombie.
gone() {
    local i=0 n=$(( $2 * 10 )) st
    while [ -e /proc/$1 ]; do
        st=$(sed -e 's/^.*) //' /proc/$1/stat 2>/dev/null | cut -d' ' -f1)
        [ "$st" = Z ] && return 0
        i=$((i + 1)); [ $i -gt $n ] && return 1
        sleep 0.1
    done
    return 0
}

fail() {
    echo "--- $name: $1"
    for f in "$D"/*.log "$D"/*.err; do
        [ -s "$f" ] && { echo "--- $f:"; tail -n 20 "$f"; }
    done
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    echo "WORKLOAD $name FAIL: $1"
}

run_one() {
    name=$1; shift
    # A name with a slash is a program path (a fixture), else a workload.
    case $name in
        /*) cmd=("$name"); name=${name##*/} ;;
        *.py) cmd=(python3 "$WL/$name") ;;
        *.sh) cmd=(bash "$WL/$name") ;;
        *) cmd=("$WL/$name") ;;
    esac
    stem=${name%.*}
    D=$ROOT/$stem
    pid=
    mkdir -p "$D"
    local t0=$SECONDS
    setsid "${cmd[@]}" --verdict "$D/$stem.verdict" --ready "$D/$stem.ready" \
        --stop "$D/$stem.stop" "$@" </dev/null >"$D/$stem.log" 2>&1 &
    local child=$!
    pid=$child
    if ! wait_file "$D/$stem.ready" 60; then fail "not ready within 60 s"; return; fi
    pid=$(sed -n 's/^ready pid=\([0-9]*\).*/\1/p' "$D/$stem.ready")
    [ "$pid" = "$child" ] || { fail "ready file says pid '$pid', started $child"; return; }
    local t1=$SECONDS
    local rc
    timeout 120 "$STASIS" checkpoint "$pid" -o "$D/img" --kill 2>"$D/checkpoint.err"
    rc=$?
    if [ $rc -ne 0 ]; then fail "checkpoint exited $rc: $(tail -n1 "$D/checkpoint.err")"; return; fi
    # Its parent is this shell: reap it so its PID is free for the restart.
    wait "$child" 2>/dev/null
    local st=$?
    [ $st -eq 137 ] || { fail "after checkpoint --kill the workload exited $st, not 137"; return; }
    local t2=$SECONDS
    "$STASIS" verify "$D/img" >"$D/verify.out" 2>"$D/verify.err"
    rc=$?
    if [ $rc -ne 0 ]; then fail "verify exited $rc: $(tail -n1 "$D/verify.err")"; return; fi
    local rpid
    rpid=$(timeout 120 "$STASIS" restart "$D/img" --detach 2>"$D/restart.err")
    rc=$?
    if [ $rc -ne 0 ]; then fail "restart exited $rc: $(tail -n1 "$D/restart.err")"; return; fi
    [ "$rpid" = "$pid" ] || { fail "restart printed pid '$rpid', expected $pid"; return; }
    local t3=$SECONDS
    sleep 1
    touch "$D/$stem.stop"
    if ! wait_file "$D/$stem.verdict" 60; then fail "no verdict within 60 s of stop"; return; fi
    local v
    v=$(cat "$D/$stem.verdict")
    if [ "$v" != ok ]; then fail "verdict: $v"; return; fi
    if ! gone "$pid" 30; then fail "restored process still runs after its ok verdict"; return; fi
    echo "--- $name: ready $((t1 - t0)) s, checkpoint $((t2 - t1)) s, verify+restart $((t3 - t2)) s, stop to verdict $((SECONDS - t3)) s; $(cat "$D/checkpoint.err" | tail -n1)"
    rm -f "$D/img"
    echo "WORKLOAD $name ok"
}

while read -r name args; do
    [ -n "$name" ] || continue
    # shellcheck disable=SC2086
    run_one "$name" $args
done <<'EOF'
@LIST@
EOF
echo "done in $SECONDS s"
"#;

/// The workloads the script reported ok, and the failure lines of the others.
fn verdicts(output: &str) -> (Vec<&str>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (name, _) in WORKLOADS {
        let prefix = format!("WORKLOAD {name} ");
        match output.lines().find_map(|l| l.strip_prefix(prefix.as_str())) {
            Some("ok") => ok.push(*name),
            Some(other) => bad.push(format!("{name}: {other}")),
            None => bad.push(format!(
                "{name}: no WORKLOAD line (the script did not get to it)"
            )),
        }
    }
    (ok, bad)
}

#[test]
fn every_workload_round_trips_in_the_stock_6_1_guest() {
    if skip_requested() {
        eprintln!("skipped (STASIS_SKIP_GUEST=1)");
        return;
    }
    if let Err(e) = check_setup(&GuestOpts::default()) {
        panic!(
            "{e}\nThis test needs QEMU, busybox-static and Debian's stock kernel: run \
             tests/guest/setup.sh (or set STASIS_SKIP_GUEST=1 to skip it)."
        );
    }
    let stasis = env!("CARGO_BIN_EXE_stasis");
    let wl = stasis_workloads::build_dir().expect("build the workloads");
    let timers = build_fixture("timers");
    let mut list: String = WORKLOADS
        .iter()
        .map(|(n, a)| format!("{n} {a}\n"))
        .collect();
    list.push_str(&format!("{}\n", timers.display()));
    let script = SCRIPT
        .replace("@STASIS@", &shell_quote(stasis))
        .replace("@WORKLOADS_DIR@", &shell_quote(&wl.display().to_string()))
        .replace("@LIST@", list.trim_end());
    let t0 = Instant::now();
    let out = GuestRun::new()
        .mem("3G")
        .timeout(Duration::from_secs(270))
        .run_script(&script);
    let out = match out {
        Ok(o) => o,
        Err(stasis_guest::GuestError::Timeout { after, output, .. }) => {
            panic!("the guest run timed out after {after:?}; its output:\n{output}")
        }
        Err(e) => panic!("guest run failed: {e}"),
    };
    eprintln!(
        "guest: status {}, boot-to-command {:.1} s, total {:.1} s\n{}",
        out.status,
        out.boot_to_command.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        out.output
    );
    let (ok, mut bad) = verdicts(&out.output);
    if !out.output.contains("WORKLOAD timers ok") {
        bad.push("timers (POSIX timers, crates/user/tests/fixtures/timers.c): not ok".into());
    }
    assert!(
        out.output.contains("kernel 6.1."),
        "the guest does not run a 6.1 kernel"
    );
    let problems = out.dmesg_problems();
    assert!(
        bad.is_empty() && problems.is_empty(),
        "in the 6.1 guest, ok: {ok:?}; failed:\n  {}\nguest dmesg problems: {problems:#?}",
        bad.join("\n  ")
    );
}

/// Compile a restart fixture of stasis-user (crates/user/tests/fixtures) on
/// the host; the guest runs it through its view of the host's root.
fn build_fixture(name: &str) -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../user/tests/fixtures");
    let wl = stasis_workloads::source_dir();
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guest-fixtures");
    std::fs::create_dir_all(&out).expect("fixture dir");
    let exe = out.join(name);
    let st = std::process::Command::new("cc")
        .args(["-O2", "-g", "-pthread", "-Wall", "-Werror", "-I"])
        .arg(&wl)
        .arg("-o")
        .arg(&exe)
        .arg(src.join(format!("{name}.c")))
        .arg(wl.join("common.c"))
        .status()
        .expect("cc");
    assert!(st.success(), "compiling fixture {name}");
    exe
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

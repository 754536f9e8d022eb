//! Boot Debian's stock kernel in QEMU and run things inside it.
//!
//! These tests need tests/guest/setup.sh to have run. Without it they fail with a message
//! naming it, unless STASIS_SKIP_GUEST=1, in which case they say they were skipped.

use std::fs;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use stasis_guest::{check_setup, skip_requested, GuestError, GuestOpts, GuestRun};

/// One guest at a time: the machine has 2 cores and each guest uses 2 vCPUs.
static ONE_GUEST: Mutex<()> = Mutex::new(());

/// The lock and a builder, or None when the guest tests are skipped.
fn guest(test: &str) -> Option<(MutexGuard<'static, ()>, GuestRun)> {
    if skip_requested() {
        eprintln!("{test}: skipped (STASIS_SKIP_GUEST=1)");
        return None;
    }
    if let Err(e) = check_setup(&GuestOpts::default()) {
        panic!(
            "{test}: {e}\nThe guest tests need QEMU, busybox-static and Debian's stock kernel: \
             run tests/guest/setup.sh (or set STASIS_SKIP_GUEST=1 to skip them)."
        );
    }
    let lock = ONE_GUEST.lock().unwrap_or_else(|p| p.into_inner());
    Some((lock, GuestRun::new().timeout(Duration::from_secs(240))))
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("create test temp dir");
    d
}

#[test]
fn stock_kernel_runs_host_binaries() {
    let Some((_l, g)) = guest("stock_kernel_runs_host_binaries") else {
        return;
    };
    let release = stasis_guest::kernel_release().expect("kernel release");
    let share = tmp("share");
    fs::write(share.join("input.txt"), "from the host\n").expect("write input");
    let me = env!("CARGO_BIN_EXE_stasis-guest");
    let script = format!(
        "set -e\n\
         echo \"release=$(uname -r)\"\n\
         python3 -c 'import sys; print(\"python\", 6*7, sys.version_info[0])'\n\
         {me} --help 2>&1 | head -n1\n\
         echo \"cwd=$PWD\"\n\
         echo \"env=$HOME:$TERM\"\n\
         cat \"$STASIS_GUEST_RUN/input.txt\"\n\
         echo back > \"$STASIS_GUEST_RUN/result.txt\"\n\
         touch /usr/overlay-is-writable && echo overlay-ok\n\
         ip -o link show lo | grep -q UP && echo lo-up\n"
    );
    let out = g.share_dir(&share).run_script(&script).expect("guest run");
    eprintln!("{}", out.output);
    assert_eq!(out.status, 0, "output:\n{}", out.output);
    assert!(release.starts_with("6.1."), "release {release}");
    assert!(out.output.contains(&format!("release={release}")), "{}", out.output);
    assert!(out.output.contains("python 42 3"), "{}", out.output);
    assert!(out.output.contains("usage: guest.sh"), "{}", out.output);
    let cwd = std::env::current_dir().expect("cwd");
    assert!(out.output.contains(&format!("cwd={}", cwd.display())), "{}", out.output);
    assert!(out.output.contains("env=/root:dumb"), "{}", out.output);
    assert!(out.output.contains("from the host"), "{}", out.output);
    assert!(out.output.contains("overlay-ok"), "{}", out.output);
    assert!(out.output.contains("lo-up"), "{}", out.output);
    assert_eq!(fs::read_to_string(share.join("result.txt")).expect("result"), "back\n");
    assert!(out.dmesg.contains("Linux version 6.1."), "dmesg:\n{}", out.dmesg);
    assert!(out.dmesg_problems().is_empty(), "{:?}", out.dmesg_problems());
    assert!(out.boot_to_command > Duration::ZERO);
    eprintln!(
        "boot-to-command {:.2}s (guest uptime {:?}), total {:.2}s",
        out.boot_to_command.as_secs_f64(),
        out.guest_uptime_at_command,
        out.total.as_secs_f64()
    );
}

#[test]
fn exit_status_propagates() {
    let Some((_l, g)) = guest("exit_status_propagates") else {
        return;
    };
    let out = g.run(&["sh", "-c", "echo 'quoted arg'; exit 3"]).expect("guest run");
    assert_eq!(out.status, 3, "output:\n{}", out.output);
    assert_eq!(out.output, "quoted arg\n");
}

#[test]
fn timeout_kills_the_guest() {
    let Some((_l, g)) = guest("timeout_kills_the_guest") else {
        return;
    };
    let t0 = Instant::now();
    let r = g
        .timeout(Duration::from_secs(25))
        .run_script("echo started; sleep 600; echo not reached");
    let el = t0.elapsed();
    match r {
        Err(e @ GuestError::Timeout { .. }) => {
            assert_eq!(e.exit_code(), 124);
            if let GuestError::Timeout { output, .. } = &e {
                assert!(output.contains("started"), "{output}");
                assert!(!output.contains("not reached"), "{output}");
            }
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(el < Duration::from_secs(40), "took {el:?}");
}

#[test]
fn criu_check_dump_restore_inside() {
    let Some((_l, g)) = guest("criu_check_dump_restore_inside") else {
        return;
    };
    // criu check, then a dump and a restore of a counting shell loop (a session leader
    // with stdio away from the console, as criu needs).
    let script = r#"set -e
criu --version
criu check
setsid bash -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done' \
    </dev/null >/dev/null 2>&1 &
sleep 1
pid=$(pgrep -f 'while :' | head -n1)
mkdir -p /tmp/img
criu dump -t "$pid" -D /tmp/img -o dump.log || { cat /tmp/img/dump.log; exit 1; }
echo dumped
kill -0 "$pid" 2>/dev/null && { echo "still running after dump"; exit 1; }
a=$(cat /tmp/counter)
criu restore -D /tmp/img -d -o restore.log || { cat /tmp/img/restore.log; exit 1; }
echo restored
sleep 1
b=$(cat /tmp/counter)
[ "$b" -gt "$a" ] && echo "counting again: $a -> $b"
"#;
    let out = g.run_script(script).expect("guest run");
    eprintln!("{}", out.output);
    assert_eq!(out.status, 0, "criu failed:\n{}", out.output);
    assert!(out.output.contains("Looks good."), "{}", out.output);
    assert!(out.output.contains("counting again"), "{}", out.output);
}

#[test]
fn insmod_and_slub_debug() {
    let Some((_l, g)) = guest("insmod_and_slub_debug") else {
        return;
    };
    let setup = check_setup(&GuestOpts::default()).expect("setup");
    // A stock module without dependencies stands in for stasis.ko.
    let ko = setup.modules_dir.join("kernel/lib/crc7.ko");
    let out = g
        .insmod(&ko)
        .slub_debug(true)
        .run_script("grep -o 'slub_debug=[A-Z]*' /proc/cmdline; grep -c '^crc7 ' /proc/modules")
        .expect("guest run");
    assert_eq!(out.status, 0, "{}", out.output);
    assert_eq!(out.output, "slub_debug=FZPU\n1\n");
    assert!(out.dmesg_problems().is_empty(), "{:?}", out.dmesg_problems());
}

#[test]
fn insmod_failure_is_reported() {
    let Some((_l, g)) = guest("insmod_failure_is_reported") else {
        return;
    };
    let d = tmp("bogus-ko");
    let ko = d.join("bogus.ko");
    fs::write(&ko, b"this is not an ELF module").expect("write bogus.ko");
    match g.insmod(&ko).run(&["echo", "must not run"]) {
        Err(GuestError::Insmod { module, log, .. }) => {
            assert!(module.ends_with("bogus.ko"), "{module}");
            assert!(!log.is_empty());
        }
        other => panic!("expected an insmod error, got {other:?}"),
    }
}

#[test]
fn boot_failure_is_reported() {
    let Some((_l, g)) = guest("boot_failure_is_reported") else {
        return;
    };
    // No init: the kernel panics, panic=-1 reboots, -no-reboot ends QEMU.
    match g.kernel_arg("rdinit=/nonexistent").run(&["true"]) {
        Err(e @ GuestError::BootFailed { .. }) => {
            assert_eq!(e.exit_code(), 125);
            if let GuestError::BootFailed { console, .. } = &e {
                assert!(console.contains("Kernel panic"), "{console}");
            }
        }
        other => panic!("expected a boot failure, got {other:?}"),
    }
}

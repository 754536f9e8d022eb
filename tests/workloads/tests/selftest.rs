//! Self-test of every workload without checkpointing: a normal run must
//! report exactly `ok` and exit 0; a damaged run (the `poke`d damage range,
//! or `--damage-self` for the scripts, which cannot expose an address) must
//! report `FAIL...` and exit 1.

use stasis_workloads::{poke, Running, Workload};
use std::fs;
use std::thread::sleep;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

fn log_of(w: &Running) -> String {
    fs::read_to_string(&w.paths().log).unwrap_or_default()
}

fn spawn_ready(
    name: &str,
    dir: &std::path::Path,
    extra: &[&str],
) -> (Running, stasis_workloads::Ready) {
    let mut w = Workload::spawn(name, dir, extra).expect("spawn");
    let r = w.wait_ready(TIMEOUT).expect("ready");
    assert_eq!(r.pid, w.pid(), "{name}: ready pid is not the spawned pid");
    (w, r)
}

fn run_ok(name: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = spawn_ready(name, dir.path(), extra);
    sleep(Duration::from_millis(300));
    let (verdict, status) = w.finish(TIMEOUT).expect("finish");
    assert_eq!(verdict, "ok", "{name}: verdict; log:\n{}", log_of(&w));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{name}: exit status"
    );
}

fn check_fail(name: &str, w: &mut Running) {
    let (verdict, status) = w.finish(TIMEOUT).expect("finish");
    assert!(
        verdict.starts_with("FAIL"),
        "{name}: damage not detected, verdict {verdict:?}; log:\n{}",
        log_of(w)
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "{name}: exit status"
    );
}

fn run_damage(name: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, r) = spawn_ready(name, dir.path(), extra);
    assert!(r.damage_addr != 0 && r.len > 0, "{name}: no damage range");
    poke(r.pid, r.damage_addr, r.len).expect("poke");
    sleep(Duration::from_millis(100));
    check_fail(name, &mut w);
}

fn run_damage_self(name: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, r) = spawn_ready(name, dir.path(), &["--damage-self"]);
    assert_eq!(
        (r.damage_addr, r.len),
        (0, 0),
        "{name}: scripts expose no range"
    );
    sleep(Duration::from_millis(100));
    check_fail(name, &mut w);
}

const SMALL_MEMORY: &[&str] = &["--reserve-mib", "64", "--touch-mib", "4"];

macro_rules! c_workload {
    ($ok:ident, $damage:ident, $name:expr) => {
        #[test]
        fn $ok() {
            run_ok($name, &[]);
        }
        #[test]
        fn $damage() {
            run_damage($name, &[]);
        }
    };
}

c_workload!(counters_ok, counters_damage, "counters");
c_workload!(fpu_ok, fpu_damage, "fpu");
c_workload!(tls_ok, tls_damage, "tls");
c_workload!(blocked_ok, blocked_damage, "blocked");
c_workload!(signals_ok, signals_damage, "signals");
c_workload!(files_ok, files_damage, "files");

#[test]
fn memory_ok_small() {
    run_ok("memory", SMALL_MEMORY);
}

#[test]
fn memory_damage_small() {
    run_damage("memory", SMALL_MEMORY);
}

#[test]
fn memory_ok_full_1gib_reserve_64mib_touched() {
    run_ok("memory", &[]);
}

#[test]
fn python_threads_ok() {
    run_ok("python_threads.py", &[]);
}

#[test]
fn python_threads_damage_self() {
    run_damage_self("python_threads.py");
}

#[test]
fn bash_loop_ok() {
    run_ok("bash_loop.sh", &[]);
}

#[test]
fn bash_loop_damage_self() {
    run_damage_self("bash_loop.sh");
}

#[test]
fn files_in_other_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    fs::create_dir(&data).expect("mkdir");
    let data_s = data.to_str().expect("utf-8 path");
    run_ok_in("files", dir.path(), &["--dir", data_s]);
}

fn run_ok_in(name: &str, dir: &std::path::Path, extra: &[&str]) {
    let (mut w, _) = spawn_ready(name, dir, extra);
    let (verdict, status) = w.finish(TIMEOUT).expect("finish");
    assert_eq!(verdict, "ok", "{name}: verdict; log:\n{}", log_of(&w));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{name}: exit status"
    );
}

#[test]
fn restarted_style_driving_by_paths() {
    // Drive a workload only through its paths and PID, as for a restarted
    // process that is not our child.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = Workload::spawn("tls", dir.path(), &[]).expect("spawn");
    let paths = w.paths().clone();
    let r = stasis_workloads::wait_ready(&paths.ready, TIMEOUT).expect("ready");
    stasis_workloads::request_stop(&paths.stop).expect("stop");
    let v = stasis_workloads::wait_verdict(&paths.verdict, TIMEOUT).expect("verdict");
    assert_eq!(v, "ok");
    let st = w.wait_exit(TIMEOUT).expect("exit");
    assert!(st.success());
    assert!(!stasis_workloads::pid_alive(r.pid));
}

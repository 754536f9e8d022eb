//! Checkpoint (user engine) + restart (user engine) of every workload.
//!
//! For each workload: spawn, wait ready, checkpoint with After::Kill, restart
//! (detach = false, in a thread), create the stop file: the verdict must be
//! `ok` and the restart must report exit code 0. The same image is restarted
//! twice in turn. A restart while the original PID is in use fails clearly,
//! and succeeds in a new PID namespace.
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use stasis_user::{checkpoint, restart, After, RestartOpts, RestartOutcome, RestoreError};
use stasis_workloads::{request_stop, wait_verdict, Paths, Workload};

const T: Duration = Duration::from_secs(60);

/// Restarts fork the test process: keep them (and checkpoints) one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kills the restarted process (same PID as the original) if the test fails
/// while it runs; the restart thread then reaps it.
struct KillOnPanic(i32);
impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // SAFETY: kill of the process we restarted.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

fn workdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("stasis-rt-{name}-")).tempdir_in("/tmp").expect("tempdir")
}

/// Spawn `name`, wait for ready, checkpoint it into `dir/image` and kill it.
fn dump(name: &str, dir: &Path) -> (PathBuf, Paths, u32) {
    let mut w = Workload::spawn(name, dir, &[]).expect("spawn");
    w.wait_ready(T).expect("ready");
    let img = dir.join("image");
    let f = BufWriter::new(File::create(&img).expect("create image"));
    let (frozen, f, stats) = checkpoint(w.pid() as i32, f, None).expect("checkpoint");
    drop(f.into_inner().expect("flush image"));
    frozen.release(After::Kill).expect("release (kill)");
    let pid = w.pid();
    w.kill_and_reap().expect("reap");
    eprintln!("{name}: checkpointed pid {pid}: {stats:?}");
    (img, w.paths().clone(), pid)
}

/// Restart `img` (not detached, in a thread), stop the workload and check.
fn restart_and_check(name: &str, img: &Path, paths: &Paths, pid: u32) {
    let _ = std::fs::remove_file(&paths.verdict);
    let _ = std::fs::remove_file(&paths.stop);
    let img2 = img.to_path_buf();
    let h = thread::spawn(move || restart(&img2, &RestartOpts::default()));
    let _kill = KillOnPanic(pid as i32);
    // Let it run a little after the restart, then ask it to stop.
    thread::sleep(Duration::from_millis(300));
    if h.is_finished() {
        let r = h.join().expect("restart thread");
        panic!("{name}: restart returned before the stop request: {r:?}");
    }
    request_stop(&paths.stop).expect("stop");
    let verdict = wait_verdict(&paths.verdict, T);
    let r = h.join().expect("restart thread");
    let log = std::fs::read_to_string(&paths.log).unwrap_or_default();
    let verdict = verdict.unwrap_or_else(|e| panic!("{name}: no verdict ({e}); restart: {r:?}; log:\n{log}"));
    assert_eq!(verdict.trim(), "ok", "{name}: verdict; restart: {r:?}; log:\n{log}");
    match r {
        Ok(RestartOutcome::Exited { pid: p, code: Some(0), signal: None }) => assert_eq!(p, pid as i32),
        other => panic!("{name}: restart outcome {other:?}; log:\n{log}"),
    }
}

/// The files a workload keeps in its directory (mapped, open, FIFOs) are part
/// of what a restart needs, like any file system state: workloads delete them
/// when they finish, so save them after the checkpoint and put them back
/// before each restart.
fn save_files(dir: &Path) -> PathBuf {
    let save = dir.join("saved");
    std::fs::create_dir_all(&save).expect("mkdir saved");
    for e in std::fs::read_dir(dir).expect("readdir") {
        let e = e.expect("dirent");
        let name = e.file_name();
        let ft = e.file_type().expect("file type");
        if ft.is_file() && name != "image" {
            std::fs::copy(e.path(), save.join(&name)).expect("save file");
        }
    }
    save
}

fn restore_files(dir: &Path, save: &Path) {
    for e in std::fs::read_dir(save).expect("readdir") {
        let e = e.expect("dirent");
        let to = dir.join(e.file_name());
        let _ = std::fs::remove_file(&to);
        std::fs::copy(e.path(), &to).expect("restore file");
    }
}

fn roundtrip(name: &str) {
    let _g = lock();
    let dir = workdir(name);
    let (img, paths, pid) = dump(name, dir.path());
    let save = save_files(dir.path());
    restart_and_check(name, &img, &paths, pid);
    // The same image again.
    restore_files(dir.path(), &save);
    restart_and_check(name, &img, &paths, pid);
}

#[test]
fn counters() {
    roundtrip("counters");
}
#[test]
fn fpu() {
    roundtrip("fpu");
}
#[test]
fn tls() {
    roundtrip("tls");
}
#[test]
fn blocked() {
    roundtrip("blocked");
}
#[test]
fn signals() {
    roundtrip("signals");
}
#[test]
fn files() {
    roundtrip("files");
}
#[test]
fn memory() {
    roundtrip("memory");
}
#[test]
fn python_threads() {
    roundtrip("python_threads.py");
}
#[test]
fn bash_loop() {
    roundtrip("bash_loop.sh");
}

/// While the original runs, its PID is taken: the restart must fail clearly
/// and change nothing; inside a new PID namespace it works.
#[test]
fn pid_in_use_and_pidns() {
    let _g = lock();
    let name = "counters";
    let dir = workdir("pidns");
    let mut w = Workload::spawn(name, dir.path(), &[]).expect("spawn");
    w.wait_ready(T).expect("ready");
    let img = dir.path().join("image");
    let f = BufWriter::new(File::create(&img).expect("create image"));
    let (frozen, f, _) = checkpoint(w.pid() as i32, f, None).expect("checkpoint");
    drop(f.into_inner().expect("flush image"));
    frozen.release(After::LeaveRunning).expect("release");

    match restart(&img, &RestartOpts::default()) {
        Err(RestoreError::PidInUse { pid }) => assert_eq!(pid, w.pid() as i32),
        other => panic!("expected PidInUse, got {other:?}"),
    }
    let msg = restart(&img, &RestartOpts::default()).unwrap_err().to_string();
    assert!(msg.contains(&format!("PID {} is in use", w.pid())), "{msg}");

    // Stop the original (its verdict must be ok too), then restart in a new
    // PID namespace while... the original's PID is free again, so take it
    // with another process to be sure the namespace is what makes it work.
    let (v, _) = w.finish(T).expect("finish original");
    assert_eq!(v.trim(), "ok");
    let paths = w.paths().clone();
    let _ = std::fs::remove_file(&paths.verdict);
    let _ = std::fs::remove_file(&paths.stop);
    let img2 = img.clone();
    let h = thread::spawn(move || restart(&img2, &RestartOpts { pidns: true, ..Default::default() }));
    thread::sleep(Duration::from_millis(300));
    request_stop(&paths.stop).expect("stop");
    let verdict = wait_verdict(&paths.verdict, T);
    let r = h.join().expect("restart thread");
    let verdict = verdict.unwrap_or_else(|e| panic!("pidns: no verdict ({e}); restart: {r:?}"));
    assert_eq!(verdict.trim(), "ok", "pidns restart: {r:?}");
    match r {
        Ok(RestartOutcome::Exited { code: Some(0), .. }) => {}
        other => panic!("pidns restart outcome {other:?}"),
    }
}

/// Two restarts at once from two threads of this process (each forks the
/// multithreaded test process and traces its own restored threads).
#[test]
fn two_restarts_at_once() {
    let _g = lock();
    let (d1, d2) = (workdir("par1"), workdir("par2"));
    let (img1, p1, pid1) = dump("counters", d1.path());
    let (img2, p2, pid2) = dump("signals", d2.path());
    let (i1, i2) = (img1.clone(), img2.clone());
    let h1 = thread::spawn(move || restart(&i1, &RestartOpts::default()));
    let h2 = thread::spawn(move || restart(&i2, &RestartOpts::default()));
    let (_k1, _k2) = (KillOnPanic(pid1 as i32), KillOnPanic(pid2 as i32));
    thread::sleep(Duration::from_millis(400));
    request_stop(&p1.stop).expect("stop 1");
    request_stop(&p2.stop).expect("stop 2");
    let v1 = wait_verdict(&p1.verdict, T).expect("verdict 1");
    let v2 = wait_verdict(&p2.verdict, T).expect("verdict 2");
    let (r1, r2) = (h1.join().expect("join 1"), h2.join().expect("join 2"));
    assert_eq!(v1.trim(), "ok", "{r1:?}");
    assert_eq!(v2.trim(), "ok", "{r2:?}");
    assert!(matches!(r1, Ok(RestartOutcome::Exited { pid, code: Some(0), .. }) if pid == pid1 as i32), "{r1:?}");
    assert!(matches!(r2, Ok(RestartOutcome::Exited { pid, code: Some(0), .. }) if pid == pid2 as i32), "{r2:?}");
}

//! Restart of small test programs (tests/fixtures) that cover what the
//! workloads do not: interval and POSIX timers.
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stasis_user::{checkpoint, restart, After, RestartOpts, RestartOutcome};
use stasis_workloads::{request_stop, wait_ready, wait_verdict};

const T: Duration = Duration::from_secs(60);
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Kills the original fixture process if the test fails before it is gone.
struct KillOnDrop(u32);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill of a process we spawned (harmless if already gone and reaped
        // meanwhile: the PID is then ours again only after restart, which this
        // guard is disarmed for).
        if self.0 != 0 {
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
}

fn build(name: &str, out: &Path) -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let wl = stasis_workloads::source_dir();
    let exe = out.join(name);
    let st = Command::new("cc")
        .args(["-O2", "-g", "-pthread", "-Wall", "-Werror", "-I"])
        .arg(&wl)
        .arg("-o")
        .arg(&exe)
        .arg(here.join(format!("tests/fixtures/{name}.c")))
        .arg(wl.join("common.c"))
        .status()
        .expect("cc");
    assert!(st.success(), "compiling fixture {name}");
    exe
}

/// Build and start fixture `name`, checkpoint it (kill), restart it, stop it,
/// and return its verdict and the restart outcome.
fn run_fixture(name: &str, debug: impl Fn(&stasis_image::ProcessImage<'_>) -> String) {
    run_fixture_with(name, |_| {}, debug)
}

fn run_fixture_with(
    name: &str,
    setup: impl FnOnce(&mut Command),
    debug: impl Fn(&stasis_image::ProcessImage<'_>) -> String,
) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let exe = build(name, dir.path());
    let verdict = dir.path().join(format!("{name}.verdict"));
    let ready = dir.path().join(format!("{name}.verdict.ready"));
    let stop = dir.path().join(format!("{name}.verdict.stop"));
    let mut cmd = Command::new(&exe);
    cmd.arg("--verdict").arg(&verdict);
    setup(&mut cmd);
    let mut child = cmd.spawn().expect("spawn");
    let pid = child.id();
    let mut guard = KillOnDrop(pid);
    wait_ready(&ready, T).expect("ready");
    let img = dir.path().join("image");
    let f = BufWriter::new(File::create(&img).expect("create"));
    let (frozen, f, _) = checkpoint(pid as i32, f, None).expect("checkpoint");
    drop(f.into_inner().expect("flush"));
    frozen.release(After::Kill).expect("kill");
    child.wait().expect("reap");
    guard.0 = 0;
    let bytes = std::fs::read(&img).expect("read image");
    let pi = stasis_image::ProcessImage::parse(&bytes, &stasis_image::ParseOptions::ALL).expect("parse");
    let info = debug(&pi);

    let img2 = img.clone();
    let h = std::thread::spawn(move || restart(&img2, &RestartOpts::default()));
    std::thread::sleep(Duration::from_millis(200));
    request_stop(&stop).expect("stop");
    let v = wait_verdict(&verdict, T);
    let r = h.join().expect("join");
    let v = v.unwrap_or_else(|e| panic!("{name}: no verdict: {e}; restart: {r:?}; image: {info}"));
    assert_eq!(v.trim(), "ok", "{name}: restart: {r:?}; image: {info}");
    assert_eq!(r.expect("restart"), RestartOutcome::Exited { pid: pid as i32, code: Some(0), signal: None });
}

#[test]
fn timers_keep_ticking_with_their_ids() {
    run_fixture("timers", |pi| format!("{:?} {:?}", pi.posix_timers, pi.itimers));
}

#[test]
fn shared_anonymous_memory_stays_shared() {
    run_fixture("shared", |pi| {
        let v: Vec<String> = pi
            .vmas
            .iter()
            .filter(|v| v.rec.kind == stasis_image::records::vma_kind::ANON_SHARED)
            .map(|v| format!("{:#x}-{:#x} prot {} off {:#x} shm {:#x}", v.rec.start, v.rec.end, v.rec.prot, v.rec.offset, v.rec.shm_id))
            .collect();
        v.join("; ")
    });
}

/// Terminal fds come back (on our terminal, or /dev/null without one).
#[test]
fn terminal_fds_come_back() {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two fds.
    let r = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(r, 0, "openpty");
    // SAFETY: fds we own; close-on-exec so that only stdio reaches the fixture.
    let (m, s) = unsafe {
        libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(slave, libc::F_SETFD, libc::FD_CLOEXEC);
        (std::fs::File::from_raw_fd(master), std::fs::File::from_raw_fd(slave))
    };
    run_fixture_with(
        "tty",
        |c| {
            c.stdin(s.try_clone().unwrap()).stdout(s.try_clone().unwrap()).stderr(s.try_clone().unwrap());
        },
        |pi| {
            let f: Vec<String> = pi.files.iter().map(|f| format!("fd {} kind {} {}", f.rec.fd, f.rec.kind, String::from_utf8_lossy(f.path))).collect();
            f.join("; ")
        },
    );
    drop((m, s));
}

/// A deleted-but-open file and a memfd, mapped shared: the same files after restart (the
/// restart side maps such a VMA from the fd it recreates from FILE_DATA).
#[test]
fn deleted_open_file_mapping() {
    run_fixture("deleted", |pi| {
        let v: Vec<String> = pi
            .vmas
            .iter()
            .filter(|v| v.rec.kind == stasis_image::records::vma_kind::FILE_SHARED)
            .map(|v| format!("{} flags {} dev {} ino {}", String::from_utf8_lossy(v.path), v.rec.flags, v.rec.dev, v.rec.ino))
            .collect();
        let f: Vec<String> = pi
            .files
            .iter()
            .map(|f| format!("fd {} kind {} flags {} dev {} ino {} data {:?} {}", f.rec.fd, f.rec.kind, f.rec.file_flags, f.rec.dev, f.rec.ino, f.data.map(|d| d.len()), String::from_utf8_lossy(f.path)))
            .collect();
        format!("{v:?} {f:?}")
    });
}

/// ITIMER_REAL with its SIGALRM pending at checkpoint time (value reads 0).
#[test]
fn pending_alarm_keeps_the_itimer_going() {
    run_fixture("alarm_pending", |pi| format!("{:?} shared pending {}", pi.itimers, pi.shared_pending.len()));
}

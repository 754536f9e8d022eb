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

#[test]
fn timers_keep_ticking_with_their_ids() {
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let exe = build("timers", dir.path());
    let verdict = dir.path().join("timers.verdict");
    let ready = dir.path().join("timers.verdict.ready");
    let stop = dir.path().join("timers.verdict.stop");
    let mut child = Command::new(&exe).arg("--verdict").arg(&verdict).spawn().expect("spawn");
    let pid = child.id();
    wait_ready(&ready, T).expect("ready");
    let img = dir.path().join("image");
    let f = BufWriter::new(File::create(&img).expect("create"));
    let (frozen, f, _) = checkpoint(pid as i32, f, None).expect("checkpoint");
    drop(f.into_inner().expect("flush"));
    frozen.release(After::Kill).expect("kill");
    child.wait().expect("reap");

    let bytes = std::fs::read(&img).expect("read image");
    let pi = stasis_image::ProcessImage::parse(&bytes, &stasis_image::ParseOptions::ALL).expect("parse");
    let timers = format!("{:?} {:?}", pi.posix_timers, pi.itimers);
    let img2 = img.clone();
    let h = std::thread::spawn(move || restart(&img2, &RestartOpts::default()));
    std::thread::sleep(Duration::from_millis(200));
    let proc_timers = std::fs::read_to_string(format!("/proc/{pid}/timers")).unwrap_or_default();
    let timers = format!("{timers}\n/proc/{pid}/timers after restart:\n{proc_timers}\n{}", std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default());
    request_stop(&stop).expect("stop");
    let v = wait_verdict(&verdict, T);
    let r = h.join().expect("join");
    let v = v.unwrap_or_else(|e| panic!("no verdict: {e}; restart: {r:?}; timers in the image: {timers}"));
    assert_eq!(v.trim(), "ok", "restart: {r:?}; timers in the image: {timers}");
    assert_eq!(r.expect("restart"), RestartOutcome::Exited { pid: pid as i32, code: Some(0), signal: None });
}

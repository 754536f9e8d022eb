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

/// Build and start fixture `name`, checkpoint it (kill), restart it, stop it,
/// and return its verdict and the restart outcome.
fn run_fixture(name: &str, debug: impl Fn(&stasis_image::ProcessImage<'_>) -> String) {
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let exe = build(name, dir.path());
    let verdict = dir.path().join(format!("{name}.verdict"));
    let ready = dir.path().join(format!("{name}.verdict.ready"));
    let stop = dir.path().join(format!("{name}.verdict.stop"));
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

//! End-to-end tests of the `stasis` binary.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use stasis_image::records::kind;
use stasis_image::Image;

fn stasis() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stasis"));
    c.stdin(Stdio::null());
    c
}

fn run(args: &[&str]) -> Output {
    stasis().args(args).output().expect("run stasis")
}

/// Run stasis, killing it and failing the test if it takes longer than `secs`.
fn run_within(secs: u64, args: &[&str]) -> Output {
    let child = stasis()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stasis");
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out.expect("wait for stasis"),
        Err(_) => {
            // SAFETY: pid is our child, not yet reaped (the waiter still waits).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out = rx.recv().expect("waiter").expect("wait for stasis");
            panic!(
                "stasis {args:?} did not finish within {secs} s; stderr: {}",
                stderr(&out)
            );
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

/// A temp dir holding `sample.img`.
fn sample() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sample.img");
    let bytes = common::sample_image();
    fs::write(&path, &bytes).expect("write image");
    (dir, path, bytes)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn inspect_shows_threads_vmas_fds() {
    let (_d, path, bytes) = sample();
    let o = run(&["inspect", p(&path)]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "process   4242 (sample)  exe /usr/bin/sample",
        "ppid 1  pgid 4242  sid 4242  uid 1000/1000  gid 100/100",
        "stasis-test 0.1.0 with the user engine",
        "kernel 6.1.0-test-amd64",
        "2026-11-18T11:06:40Z",
        "x87 sse avx avx512_opmask avx512_zmm_hi256 avx512_hi16_zmm pkru",
        "page size 4096",
        "threads (3)",
        "4242*",
        "worker-1",
        "yes (futex)",
        "SIGUSR1",
        "2696 B (x87,sse,avx)",
        "memory (6 VMAs",
        "[heap]",
        "[stack] [growsdown]",
        "/usr/bin/sample @0x2000",
        "16.0 KiB",
        "64.0 KiB",
        "file descriptors (7)",
        "/tmp/sample.log",
        "O_WRONLY|O_APPEND",
        "1234",
        "/tmp/scratch (deleted) [contents stored]",
        "pipe:[777]",
        "unix stream listening",
        "signal handlers (2 not default)",
        "SIGPIPE (13)",
        "ignore",
        "0x401234",
        "SA_SIGINFO,SA_RESTART,SA_RESTORER",
        "92.0 KiB of pages stored",
    ] {
        assert!(out.contains(want), "inspect output lacks {want:?}:\n{out}");
    }
    assert!(
        out.contains(&format!("image {}", human(bytes.len() as u64))),
        "{out}"
    );
    // Rows of a table line up: the VMA lines all have the same width up to PATH.
    let is_vma_row = |l: &&str| {
        l.len() > 30 && l.as_bytes()[14] == b'-' && l[2..14].chars().all(|c| c.is_ascii_hexdigit())
    };
    let vma_rows: Vec<&str> = out.lines().filter(is_vma_row).collect();
    assert_eq!(vma_rows.len(), 6, "{out}");
    let col = |l: &str| {
        l.find(" rw")
            .or_else(|| l.find(" r-"))
            .expect("prot column")
    };
    assert!(vma_rows.iter().all(|l| col(l) == col(vma_rows[0])), "{out}");
}

fn human(b: u64) -> String {
    format!("{:.1} KiB", b as f64 / 1024.0)
}

#[test]
fn inspect_json() {
    let (_d, path, bytes) = sample();
    let o = run(&["inspect", "--json", p(&path)]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(v["header"]["engine"], "user");
    assert_eq!(v["header"]["writer"], "stasis-test 0.1.0");
    assert_eq!(v["header"]["kernel_release"], "6.1.0-test-amd64");
    assert_eq!(v["header"]["created_ns"], common::CREATED_NS);
    assert_eq!(v["header"]["page_size"], 4096);
    assert_eq!(v["header"]["xcr0"], "0x2e7");
    assert_eq!(v["header"]["xfeatures"][3], "avx512_opmask");
    assert_eq!(v["header"]["xfeatures"][6], "pkru");
    assert_eq!(v["process"]["pid"], 4242);
    assert_eq!(v["process"]["comm"], "sample");
    assert_eq!(v["process"]["exe"], common::EXE);
    assert_eq!(v["process"]["uid"], 1000);
    assert_eq!(v["process"]["cwd"], "/home/user");

    let threads = v["threads"].as_array().expect("threads");
    assert_eq!(threads.len(), 3);
    for (t, want) in threads.iter().zip(common::threads()) {
        assert_eq!(t["tid"], want.tid);
        assert_eq!(t["name"], want.name);
        assert_eq!(t["rip"], want.rip);
        assert_eq!(t["rsp"], want.rsp);
        assert_eq!(t["xstate_size"], common::XSAVE_SIZE);
    }
    assert_eq!(threads[0]["leader"], true);
    assert_eq!(threads[1]["in_syscall"], true);
    assert_eq!(threads[1]["syscall"], 202);
    assert_eq!(threads[1]["syscall_name"], "futex");
    assert_eq!(threads[0]["in_syscall"], false);
    assert_eq!(threads[0]["syscall"], Value::Null);
    assert_eq!(threads[2]["blocked"][0], "SIGUSR1");
    assert_eq!(threads[2]["sigmask"], "0x200");
    assert_eq!(threads[2]["pending_signals"], 1);

    let vmas = v["vmas"].as_array().expect("vmas");
    assert_eq!(vmas.len(), 6);
    for (j, want) in vmas.iter().zip(common::vmas()) {
        assert_eq!(j["start"], want.start);
        assert_eq!(j["end"], want.end);
        assert_eq!(j["size"], want.end - want.start);
        assert_eq!(j["path"], want.path);
        let stored: u64 = want.runs.iter().map(|r| r.1 * common::PAGE).sum();
        assert_eq!(j["page_bytes"], stored);
    }
    assert_eq!(vmas[0]["prot"], "r-xp");
    assert_eq!(vmas[2]["kind"], "heap");
    assert_eq!(vmas[4]["flags"][0], "growsdown");

    let fds = v["fds"].as_array().expect("fds");
    let nums: Vec<u64> = fds.iter().map(|f| f["fd"].as_u64().expect("fd")).collect();
    assert_eq!(nums, [0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(fds[0]["kind"], "tty");
    assert_eq!(fds[1]["path"], "/tmp/sample.log");
    assert_eq!(fds[1]["pos"], 1234);
    assert_eq!(fds[1]["flags"], "O_WRONLY|O_APPEND");
    assert_eq!(fds[3]["deleted"], true);
    assert_eq!(fds[3]["flags"], "O_RDWR|O_CLOEXEC");
    assert_eq!(fds[4]["kind"], "pipe");
    assert_eq!(fds[5]["flags"], "O_WRONLY|O_NONBLOCK|O_CLOEXEC");
    assert_eq!(fds[6]["kind"], "socket");

    let sh = v["signal_handlers"].as_array().expect("handlers");
    assert_eq!(sh.len(), 2);
    assert_eq!(sh[0]["signal"], 10);
    assert_eq!(sh[0]["handler"], "0x401234");
    assert_eq!(sh[0]["mask"][0], "SIGTERM");
    assert_eq!(sh[1]["name"], "SIGPIPE");
    assert_eq!(sh[1]["handler"], "ignore");

    let t = &v["totals"];
    assert_eq!(t["vmas"], 6);
    assert_eq!(t["threads"], 3);
    assert_eq!(t["fds"], 7);
    assert_eq!(t["page_bytes"], common::PAGE_BYTES);
    let mapped: u64 = common::vmas().iter().map(|v| v.end - v.start).sum();
    assert_eq!(t["mapped_bytes"], mapped);
    assert_eq!(t["image_bytes"], bytes.len() as u64);
    assert_eq!(v["image"]["size"], bytes.len() as u64);
}

#[test]
fn inspect_reads_stdin() {
    let (_d, path, _) = sample();
    let o = stasis()
        .args(["inspect", "--json", "-"])
        .stdin(fs::File::open(&path).expect("open"))
        .output()
        .expect("run");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["image"]["path"], "<stdin>");
    assert_eq!(v["process"]["pid"], 4242);
}

#[test]
fn verify_ok() {
    let (_d, path, bytes) = sample();
    let nr = Image::parse(&bytes).expect("parse").records().len();
    let o = run(&["verify", p(&path)]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("{}: ok ({nr} records, 0.1 MiB of pages)\n", p(&path))
    );
    assert_eq!(stderr(&o), "");
}

/// Run verify on a damaged copy; return its one-line complaint.
fn verify_damaged(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.img");
    fs::write(&path, bytes).expect("write");
    let o = run(&["verify", p(&path)]);
    let err = stderr(&o);
    assert_eq!(code(&o), 3, "stdout: {} stderr: {err}", stdout(&o));
    assert_eq!(stdout(&o), "");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].starts_with(&format!("stasis: error: {}: ", p(&path))),
        "{err}"
    );
    err
}

fn flip(bytes: &[u8], at: u64) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at as usize] ^= 0x40;
    b
}

#[test]
fn verify_truncated() {
    let (_d, _, bytes) = sample();
    let img = Image::parse(&bytes).expect("parse");
    let pages = img
        .records()
        .iter()
        .find(|r| r.kind == kind::PAGES)
        .expect("a PAGES record");
    // Cut inside a PAGES record's data.
    let cut = pages.offset as usize + 5000;
    let err = verify_damaged(&bytes[..cut]);
    assert!(
        err.contains(&format!("record {} (PAGES)", pages.index)),
        "{err}"
    );
    assert!(
        err.contains(&format!("truncated at offset {:#x}", pages.offset)),
        "{err}"
    );
    // Cut at a record boundary: no END.
    let last = img.records().last().expect("END");
    let err = verify_damaged(&bytes[..last.offset as usize]);
    assert!(
        err.contains(&format!(
            "no END record: image ends at offset {:#x}",
            last.offset
        )),
        "{err}"
    );
    // Cut inside the header.
    let err = verify_damaged(&bytes[..100]);
    assert!(err.contains("truncated at offset 0x0"), "{err}");
    // Cut a few bytes from the end.
    let err = verify_damaged(&bytes[..bytes.len() - 3]);
    assert!(
        err.contains(&format!("record {} (END)", last.index)),
        "{err}"
    );
    assert!(err.contains(&format!("offset {:#x}", last.offset)), "{err}");
}

#[test]
fn verify_flipped_header_byte() {
    let (_d, _, bytes) = sample();
    // In kernel_release.
    let err = verify_damaged(&flip(&bytes, 60));
    assert!(
        err.contains("file header at offset 0x0: header checksum mismatch"),
        "{err}"
    );
    // In the magic.
    let err = verify_damaged(&flip(&bytes, 2));
    assert!(
        err.contains("file header at offset 0x0: not a stasis image"),
        "{err}"
    );
}

#[test]
fn verify_flipped_record_header_byte() {
    let (_d, _, bytes) = sample();
    let img = Image::parse(&bytes).expect("parse");
    let r = img.records()[3];
    // The length field of record 3's header.
    let err = verify_damaged(&flip(&bytes, r.offset + 9));
    assert!(
        err.contains(&format!(
            "record 3 at offset {:#x}: record header checksum mismatch",
            r.offset
        )),
        "{err}"
    );
}

#[test]
fn verify_flipped_page_byte() {
    let (_d, _, bytes) = sample();
    let img = Image::parse(&bytes).expect("parse");
    let pages: Vec<_> = img
        .records()
        .iter()
        .filter(|r| r.kind == kind::PAGES)
        .collect();
    let r = pages[2];
    // A byte in the middle of the page data (the payload ends with the data).
    let at = r.offset + 24 + r.payload.len() as u64 - 3000;
    let err = verify_damaged(&flip(&bytes, at));
    assert!(
        err.contains(&format!(
            "record {} (PAGES) at offset {:#x}: payload checksum mismatch",
            r.index, r.offset
        )),
        "{err}"
    );
}

#[test]
fn verify_and_inspect_refuse_non_images() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("empty.img");
    fs::write(&path, b"").expect("write");
    for cmd in ["verify", "inspect"] {
        let o = run(&[cmd, p(&path)]);
        assert_eq!(code(&o), 3, "{}", stderr(&o));
    }
    let o = run(&["inspect", "/nonexistent/x.img"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot open /nonexistent/x.img"),
        "{}",
        stderr(&o)
    );
}

/// A PID that does not exist: one of our children, reaped.
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().expect("spawn true");
    let pid = c.id();
    c.wait().expect("wait");
    pid
}

#[test]
fn checkpoint_nonexistent_pid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("x.img");
    let pid = dead_pid();
    let o = run(&["checkpoint", &pid.to_string(), "-o", p(&img)]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with(&format!("stasis: error: no process with PID {pid}\nhint: ")),
        "{}",
        stderr(&o)
    );
    assert!(!img.exists());
    assert_eq!(fs::read_dir(dir.path()).expect("readdir").count(), 0);
}

#[test]
fn checkpoint_usage_errors() {
    let o = run(&["checkpoint", "1"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = run(&["checkpoint", "1", "-o", "/tmp/x", "--kill", "--stop"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = run(&["checkpoint", "1", "-o", "/tmp/x", "--engine", "magic"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

#[test]
fn kernel_engine_unavailable() {
    if Path::new("/dev/stasis").exists() {
        eprintln!("skipped: /dev/stasis exists here");
        return;
    }
    let mut sleeper = Command::new("sleep").arg("60").spawn().expect("sleep");
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("x.img");
    let o = run(&[
        "checkpoint",
        &sleeper.id().to_string(),
        "-o",
        p(&img),
        "--engine",
        "kernel",
    ]);
    sleeper.kill().ok();
    sleeper.wait().ok();
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with(
            "stasis: error: the kernel engine needs /dev/stasis (module stasis.ko), which is not loaded\nhint: "
        ),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read_dir(dir.path()).expect("readdir").count(), 0);
    // restart: the same error, 4 with --detach, 125 (its own failure) without.
    let (_d, path, _) = sample();
    for detach in [true, false] {
        let mut args = vec!["restart", "--engine", "kernel"];
        if detach {
            args.push("--detach");
        }
        args.push(p(&path));
        let o = run(&args);
        assert_eq!(code(&o), if detach { 4 } else { 125 }, "{}", stderr(&o));
        assert!(
            stderr(&o).starts_with(
                "stasis: error: the kernel engine needs /dev/stasis (module stasis.ko), which is not loaded\nhint: "
            ),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn restart_refuses_non_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("junk.img");
    fs::write(&path, b"#!/bin/sh\necho not an image\n").expect("write");
    let o = run(&["restart", p(&path)]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(stderr(&o).contains("not a stasis image"), "{}", stderr(&o));
    let o = run(&["restart", "--detach", p(&path)]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
}

#[test]
fn restart_from_stdin() {
    let (_d, path, _) = sample();
    // The sample's executable does not exist, so whatever the engine can do,
    // this restart fails before the process runs: 125.
    let o = stasis()
        .args(["restart", "-"])
        .stdin(fs::File::open(&path).expect("open"))
        .output()
        .expect("run");
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("stasis: error: restart from <stdin> failed: "),
        "{}",
        stderr(&o)
    );
    // The header check reads the copy of stdin.
    let o = stasis()
        .args(["restart", "--detach", "-"])
        .stdin(
            fs::File::open("/etc/hostname")
                .or_else(|_| fs::File::open("/etc/passwd"))
                .expect("open"),
        )
        .output()
        .expect("run");
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("<stdin>: file header at offset 0x0: not a stasis image"),
        "{}",
        stderr(&o)
    );
}

fn state_of(pid: u32) -> Option<char> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 1..].trim_start().chars().next()
}

/// A checkpoint that fails after the temporary file exists (here: writes
/// beyond RLIMIT_FSIZE fail with EFBIG, or the engine cannot checkpoint at
/// all) leaves the old IMAGE byte-identical, no temporary file, and the
/// target running although --kill was asked.
#[test]
fn failed_checkpoint_keeps_old_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("x.img");
    let old = common::sample_image();
    fs::write(&img, &old).expect("write old image");
    let mut target = Command::new("sleep").arg("60").spawn().expect("sleep");
    let mut cmd = stasis();
    cmd.args([
        "checkpoint",
        &target.id().to_string(),
        "-o",
        p(&img),
        "--kill",
    ]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 4096,
                rlim_max: 4096,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let o = cmd.output().expect("run");
    let alive = state_of(target.id());
    target.kill().ok();
    target.wait().ok();
    assert_ne!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("stasis: error: checkpoint of PID"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read(&img).expect("old image"), old, "old image changed");
    let names: Vec<_> = fs::read_dir(dir.path())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["x.img"], "leftovers: {names:?}");
    assert!(
        matches!(alive, Some('S') | Some('R')),
        "target state {alive:?}"
    );
}

/// Checkpoint the `counters` workload, kill it, restart it from the image,
/// let it finish: it must report ok and exit 0.
#[test]
fn counters_round_trip() {
    use stasis_workloads::{request_stop, wait_verdict, Workload};

    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("counters.img");
    let mut wl = Workload::spawn("counters", dir.path(), &[]).expect("spawn counters");
    let ready = wl.wait_ready(Duration::from_secs(20)).expect("ready");
    let pid = ready.pid;

    // To a pipe (migration), leaving it running.
    let o = run_within(60, &["checkpoint", &pid.to_string(), "-o", "-", "-q"]);
    assert_eq!(code(&o), 0, "checkpoint to stdout failed: {}", stderr(&o));
    assert_eq!(stderr(&o), "", "-q prints nothing");
    let piped = dir.path().join("piped.img");
    fs::write(&piped, &o.stdout).expect("write piped image");
    let o = run(&["verify", p(&piped)]);
    assert_eq!(code(&o), 0, "verify piped image: {}", stderr(&o));
    assert!(
        stasis_workloads::pid_alive(pid),
        "--leave-running is the default"
    );

    // Into a file, leaving it stopped (--kill has its own test below).
    let o = run_within(
        60,
        &["checkpoint", &pid.to_string(), "-o", p(&img), "--stop"],
    );
    assert_eq!(code(&o), 0, "checkpoint failed: {}", stderr(&o));
    let summary = stderr(&o);
    assert!(
        summary.starts_with(&format!("checkpointed {pid}: 9 threads, ")),
        "{summary}"
    );
    assert!(
        summary.contains(" MiB of pages, image ") && summary.trim_end().ends_with(" ms"),
        "{summary}"
    );
    // SIGSTOP takes effect asynchronously after the engine lets go.
    let t0 = std::time::Instant::now();
    while state_of(pid) != Some('T') && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(state_of(pid), Some('T'), "--stop leaves it stopped");
    wl.kill_and_reap().expect("kill and reap the original");

    let o = run(&["verify", p(&img)]);
    assert_eq!(code(&o), 0, "verify: {}", stderr(&o));
    let o = run(&["inspect", "--json", p(&img)]);
    assert_eq!(code(&o), 0, "inspect: {}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["process"]["pid"], pid);
    assert_eq!(v["process"]["comm"], "counters");
    assert_eq!(v["threads"].as_array().expect("threads").len(), 9);

    // Restart and wait: stasis exits with the restored process's status.
    // `--engine auto` (the default) is the user engine without /dev/stasis,
    // the module's restart with it.
    let mut restart = stasis()
        .args(["restart", "--engine", "auto"])
        .arg(&img)
        .spawn()
        .expect("restart");
    let restart_pid = restart.id() as libc::pid_t;
    std::thread::sleep(Duration::from_millis(300));
    let verdict = match restart.try_wait().expect("try_wait") {
        Some(st) => panic!("stasis restart exited early with {st}"),
        None => {
            assert!(
                stasis_workloads::pid_alive(pid),
                "the restored process runs under its PID"
            );
            request_stop(&wl.paths().stop).expect("stop");
            wait_verdict(&wl.paths().verdict, Duration::from_secs(30))
        }
    };
    let status = match verdict {
        Ok(_) => restart.wait().expect("wait restart"),
        Err(e) => {
            // SAFETY: our child, not yet reaped.
            unsafe { libc::kill(restart_pid, libc::SIGKILL) };
            restart.wait().ok();
            panic!("no verdict from the restored counters: {e}");
        }
    };
    assert_eq!(verdict.expect("verdict"), "ok");
    assert_eq!(status.code(), Some(0), "stasis restart status");

    // Again from the same image, detached, forcing the user engine: stasis
    // prints the PID and exits 0.
    stasis_workloads::wait_pid_gone(pid, Duration::from_secs(10))
        .expect("first restored process gone");
    wl.paths().clean().expect("clean verdict and stop files");
    let o = run_within(60, &["restart", "--engine", "user", "--detach", p(&img)]);
    assert_eq!(code(&o), 0, "restart --detach: {}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        pid.to_string(),
        "prints the restored PID"
    );
    assert!(
        stasis_workloads::pid_alive(pid),
        "the detached process runs"
    );
    request_stop(&wl.paths().stop).expect("stop");
    let verdict = wait_verdict(&wl.paths().verdict, Duration::from_secs(30));
    stasis_workloads::wait_pid_gone(pid, Duration::from_secs(10)).ok();
    assert_eq!(verdict.expect("verdict of the detached restart"), "ok");

    // Once more, waited for, and killed by SIGTERM: stasis exits 128+15.
    // The detached process was reparented to init; its PID is free only
    // once init has reaped it.
    let t0 = std::time::Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if Path::new(&format!("/proc/{pid}")).exists() {
        eprintln!("skipped the SIGTERM restart: init has not reaped PID {pid} within 30 s");
        return;
    }
    wl.paths().clean().expect("clean verdict and stop files");
    let restart = stasis()
        .arg("restart")
        .arg(&img)
        .stderr(Stdio::piped())
        .spawn()
        .expect("restart");
    let t0 = std::time::Instant::now();
    while !stasis_workloads::pid_alive(pid) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: sending a signal to the restored workload.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let o = restart.wait_with_output().expect("wait restart");
    assert_eq!(
        code(&o),
        128 + libc::SIGTERM,
        "stasis restart status; stderr: {}",
        stderr(&o)
    );
}

/// `--kill`: the image is written, then the target is killed.
#[test]
fn checkpoint_kill() {
    use stasis_workloads::Workload;

    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("counters.img");
    let mut wl = Workload::spawn("counters", dir.path(), &[]).expect("spawn counters");
    let pid = wl.wait_ready(Duration::from_secs(20)).expect("ready").pid;
    let o = run_within(
        60,
        &[
            "checkpoint",
            &pid.to_string(),
            "-o",
            p(&img),
            "--kill",
            "-q",
        ],
    );
    assert_eq!(code(&o), 0, "checkpoint --kill failed: {}", stderr(&o));
    let st = wl
        .wait_exit(Duration::from_secs(10))
        .expect("the target exits");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGKILL)
    );
    let o = run(&["verify", p(&img)]);
    assert_eq!(code(&o), 0, "verify: {}", stderr(&o));
}

//! Checkpoint-side tests of the user engine: `cargo test -p stasis-user --test dump`.
//!
//! Each test starts a self-checking workload, checkpoints it with
//! LeaveRunning (or Stop/Kill), checks the image against /proc, and checks
//! the workload still reports "ok" afterwards.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stasis_image::records::{engine, thread_flags, vma_kind};
use stasis_image::{ParseOptions, ProcessImage};
use stasis_user::{checkpoint, After, DumpError};
use stasis_workloads::{Running, Workload};

const READY: Duration = Duration::from_secs(30);
const VERDICT: Duration = Duration::from_secs(30);

fn start(name: &str, dir: &Path, extra: &[&str]) -> Running {
    let mut w = Workload::spawn(name, dir, extra).expect("spawn workload");
    w.wait_ready(READY).expect("workload ready");
    w
}

fn finish_ok(w: &mut Running) {
    let (v, _) = w.finish(VERDICT).expect("workload verdict");
    assert_eq!(v.trim(), "ok", "workload {} verdict", w.name());
}

fn status_field(pid: i32, key: &str) -> String {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

fn assert_running_untraced(pid: i32) {
    let state = status_field(pid, "State");
    assert!(
        !state.starts_with('T') && !state.starts_with('t'),
        "process {pid} is stopped: State {state}"
    );
    assert_eq!(
        status_field(pid, "TracerPid"),
        "0",
        "process {pid} is still traced"
    );
}

fn tids(pid: i32) -> Vec<u32> {
    let mut v: Vec<u32> = fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

fn rss_kb(pid: i32) -> u64 {
    status_field(pid, "VmRSS")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Checkpoint `pid` into `path`, LeaveRunning.
fn dump_to(pid: i32, path: &Path) -> stasis_user::CheckpointStats {
    let f = fs::File::create(path).expect("create image");
    let (frozen, _f, stats) =
        checkpoint(pid, f, None).unwrap_or_else(|e| panic!("checkpoint of {pid}: {e}"));
    frozen.release(After::LeaveRunning).expect("release");
    stats
}

fn parse(bytes: &[u8]) -> ProcessImage<'_> {
    ProcessImage::parse(bytes, &ParseOptions::ALL)
        .unwrap_or_else(|e| panic!("image does not parse: {e}"))
}

/// Checks shared by every image.
fn check_image(img: &ProcessImage<'_>, pid: i32, live_tids: &[u32]) {
    assert_eq!(img.header.engine, engine::USER);
    assert_eq!(img.process.pid, pid as u32);
    let mut t: Vec<u32> = img.threads.iter().map(|t| t.rec.tid).collect();
    t.sort_unstable();
    assert_eq!(t, live_tids, "thread ids in the image vs /proc");
    assert_eq!(img.process.nr_threads as usize, live_tids.len());
    let leader = img
        .threads
        .iter()
        .find(|t| t.rec.flags & thread_flags::LEADER != 0)
        .expect("leader");
    assert_eq!(leader.rec.tid, pid as u32);
    for th in &img.threads {
        let x = th
            .xstate
            .as_ref()
            .expect("every thread has an XSTATE record");
        assert!(
            x.area.len() >= 576,
            "xstate area of {} too small",
            th.rec.tid
        );
        assert_ne!(th.rec.regs.fs_base, 0, "fs_base of {}", th.rec.tid);
        assert_ne!(
            th.rec.clear_child_tid, 0,
            "clear_child_tid of {}",
            th.rec.tid
        );
        assert_eq!(
            th.rec.regs.orig_rax,
            u64::MAX,
            "orig_rax must be -1 in the image"
        );
    }
    assert_ne!(img.mm.rec.start_code, 0);
    assert_ne!(img.mm.rec.brk, 0);
    assert_ne!(img.mm.rec.vdso, 0);
    assert!(!img.mm.exe.is_empty());
    assert!(img
        .vmas
        .iter()
        .any(|v| v.rec.kind == vma_kind::VDSO && v.rec.start == img.mm.rec.vdso));
    assert!(img.vmas.iter().any(|v| v.rec.kind == vma_kind::STACK));
    // Every page belongs to a saved kind.
    for p in &img.pages {
        let v = img
            .vmas
            .iter()
            .find(|v| v.rec.start == p.vma_start)
            .expect("VMA of PAGES");
        assert!(![
            vma_kind::VDSO,
            vma_kind::VVAR,
            vma_kind::VSYSCALL,
            vma_kind::FILE_SHARED
        ]
        .contains(&v.rec.kind));
    }
}

#[test]
fn counters_image_matches_proc_and_workload_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = start("counters", dir.path(), &[]);
    let pid = w.pid() as i32;
    let live = tids(pid);
    let img_path = dir.path().join("img");
    let stats = dump_to(pid, &img_path);
    assert_running_untraced(pid);
    let bytes = fs::read(&img_path).unwrap();
    assert_eq!(stats.image_bytes, bytes.len() as u64);
    let img = parse(&bytes);
    check_image(&img, pid, &live);
    assert_eq!(stats.threads, live.len());
    assert_eq!(stats.vmas, img.vmas.len());
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert_eq!(
        img.vmas.len(),
        maps.lines().count(),
        "one VMA record per /proc maps line"
    );
    assert_eq!(img.rlimits.limits[libc::RLIMIT_NOFILE as usize].cur, {
        let l = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        l.lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .split_whitespace()
            .nth(3)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    });
    finish_ok(&mut w);
}

#[test]
fn blocked_threads_get_the_restart_fixup() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = start("blocked", dir.path(), &[]);
    let pid = w.pid() as i32;
    let live = tids(pid);
    let img_path = dir.path().join("img");
    dump_to(pid, &img_path);
    assert_running_untraced(pid);
    let bytes = fs::read(&img_path).unwrap();
    let img = parse(&bytes);
    check_image(&img, pid, &live);
    let mem = fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut fixed = 0;
    for th in &img.threads {
        let r = &th.rec.regs;
        let rax = r.rax as i64;
        assert!(
            !(-516..=-512).contains(&rax),
            "thread {} saved with rax {rax} (-ERESTART*)",
            th.rec.tid
        );
        if th.rec.flags & thread_flags::SYSCALL_FIXED != 0 {
            fixed += 1;
            if rax != -(libc::EINTR as i64) {
                // Restarted: rip points at the syscall instruction again.
                let mut insn = [0u8; 2];
                std::os::unix::fs::FileExt::read_exact_at(&mem, &mut insn, r.rip).unwrap();
                assert_eq!(
                    insn,
                    [0x0f, 0x05],
                    "thread {}: rip {:#x} is not at a syscall",
                    th.rec.tid,
                    r.rip
                );
                assert!(
                    (0..512).contains(&rax),
                    "thread {}: rax {rax} is not a syscall number",
                    th.rec.tid
                );
            }
        }
    }
    // Main waits in nanosleep (wl_wait_stop) and six threads are blocked.
    assert!(fixed >= 6, "only {fixed} threads carry SYSCALL_FIXED");
    finish_ok(&mut w);
}

#[test]
fn untouched_reserve_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = start("memory", dir.path(), &[]);
    let pid = w.pid() as i32;
    let live = tids(pid);
    let before = rss_kb(pid);
    let img_path = dir.path().join("img");
    let stats = dump_to(pid, &img_path);
    let after = rss_kb(pid);
    assert_running_untraced(pid);
    assert!(
        after <= before + 1024,
        "RSS grew from {before} kB to {after} kB"
    );
    assert!(
        stats.page_bytes < 256 << 20,
        "page bytes {} (reserve read?)",
        stats.page_bytes
    );
    assert!(
        stats.page_bytes >= 32 << 20,
        "page bytes {} (touched memory missing?)",
        stats.page_bytes
    );
    let bytes = fs::read(&img_path).unwrap();
    let img = parse(&bytes);
    check_image(&img, pid, &live);
    assert!(img
        .vmas
        .iter()
        .any(|v| v.rec.kind == vma_kind::ANON_SHARED && v.rec.shm_id != 0));
    // The reservation is MADV_NOHUGEPAGE and MAP_NORESERVE: both recorded.
    let nh = stasis_image::records::vma_flags::NOHUGEPAGE;
    let nr = stasis_image::records::vma_flags::NORESERVE;
    assert!(
        img.vmas
            .iter()
            .any(|v| v.rec.flags & (nh | nr) == nh | nr && v.rec.end - v.rec.start >= 256 << 20),
        "no MADV_NOHUGEPAGE + MAP_NORESERVE reservation in the image"
    );
    finish_ok(&mut w);
}

#[test]
fn three_checkpoints_in_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = start("counters", dir.path(), &[]);
    let pid = w.pid() as i32;
    for i in 0..3 {
        let live = tids(pid);
        let p = dir.path().join(format!("img{i}"));
        dump_to(pid, &p);
        assert_running_untraced(pid);
        let bytes = fs::read(&p).unwrap();
        check_image(&parse(&bytes), pid, &live);
    }
    finish_ok(&mut w);
}

#[test]
fn files_and_pipes_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = start("files", dir.path(), &[]);
    let pid = w.pid() as i32;
    let img_path = dir.path().join("img");
    dump_to(pid, &img_path);
    let bytes = fs::read(&img_path).unwrap();
    let img = parse(&bytes);
    let fds: Vec<u32> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let n = img.files.len() + img.pipes.len();
    assert_eq!(n, fds.len(), "every fd has a record");
    let deleted: Vec<_> = img.files.iter().filter(|f| f.data.is_some()).collect();
    assert!(!deleted.is_empty(), "the deleted file's contents are saved");
    let f77 = img.files.iter().find(|f| f.rec.fd == 77).expect("fd 77");
    assert_eq!(f77.rec.fd_flags, libc::FD_CLOEXEC as u32);
    assert_ne!(f77.rec.open_flags & libc::O_NONBLOCK as u32, 0);
    // A dup()ed pair shares its file_id.
    let mut ids: Vec<u32> = img.files.iter().map(|f| f.rec.file_id).collect();
    ids.sort_unstable();
    assert!(
        ids.windows(2).any(|w| w[0] == w[1]),
        "dup()ed fds share a file_id"
    );
    finish_ok(&mut w);
}

/// A process holding a pipe with buffered data, and a socket (refused).
fn python(code: &str) -> std::process::Child {
    Command::new("python3")
        .arg("-c")
        .arg(code)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3")
}

fn wait_line(c: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let out = c.stdout.as_mut().unwrap();
    let mut r = std::io::BufReader::new(out);
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

#[test]
fn pipe_data_is_saved_without_consuming_it() {
    let mut c = python(
        "import os,sys,time\nr,w=os.pipe()\nos.write(w,b'hello pipe'*100)\nprint('ready',flush=True)\n\
         time.sleep(3)\nd=os.read(r,100000)\nsys.exit(0 if d==b'hello pipe'*100 else 1)\n",
    );
    assert_eq!(wait_line(&mut c).trim(), "ready");
    let pid = c.id() as i32;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img");
    dump_to(pid, &p);
    assert_running_untraced(pid);
    let bytes = fs::read(&p).unwrap();
    let img = parse(&bytes);
    let want = b"hello pipe".repeat(100);
    let (id, _) = img
        .pipe_data
        .iter()
        .find(|(_, d)| *d == want.as_slice())
        .expect("pipe data in the image");
    let ends: Vec<_> = img.pipes.iter().filter(|p| p.rec.pipe_id == *id).collect();
    assert_eq!(ends.len(), 2, "both ends of the pipe share its pipe_id");
    assert!(
        c.wait().unwrap().success(),
        "the pipe data was consumed by the checkpoint"
    );
}

#[test]
fn socket_is_refused_and_target_runs_on() {
    let mut c = python(
        "import socket,time\ns=socket.socket()\nprint('ready',flush=True)\ntime.sleep(60)\n",
    );
    assert_eq!(wait_line(&mut c).trim(), "ready");
    let pid = c.id() as i32;
    let dir = tempfile::tempdir().unwrap();
    let f = fs::File::create(dir.path().join("img")).unwrap();
    let err = match checkpoint(pid, f, None) {
        Ok(_) => panic!("a socket must be refused"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(matches!(err, DumpError::Unsupported { .. }), "{msg}");
    assert!(
        msg.contains("socket:[") && msg.contains("fd "),
        "unclear error: {msg}"
    );
    assert_running_untraced(pid);
    assert!(c.try_wait().unwrap().is_none(), "target died");
    c.kill().unwrap();
    c.wait().unwrap();
}

#[test]
fn release_stop_and_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = start("counters", dir.path(), &[]);
    let pid = w.pid() as i32;
    let (frozen, _, _) = checkpoint(pid, std::io::sink(), None).unwrap();
    frozen.release(After::Stop).unwrap();
    let t0 = Instant::now();
    loop {
        let st = status_field(pid, "State");
        if st.starts_with('T') {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "not stopped: {st}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(status_field(pid, "TracerPid"), "0");
    // SAFETY: plain kill.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    std::thread::sleep(Duration::from_millis(100));
    assert_running_untraced(pid);
    finish_ok(&mut w);

    let mut w = start("counters", dir.path(), &[]);
    let pid = w.pid() as i32;
    let (frozen, _, _) = checkpoint(pid, std::io::sink(), None).unwrap();
    frozen.release(After::Kill).unwrap();
    let st = w.wait_exit(Duration::from_secs(10)).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL));
}

#[test]
fn dropping_frozen_leaves_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = start("blocked", dir.path(), &[]);
    let pid = w.pid() as i32;
    {
        let (_frozen, _, _) = checkpoint(pid, std::io::sink(), None).unwrap();
        assert_eq!(status_field(pid, "State").chars().next(), Some('t'));
    }
    assert_running_untraced(pid);
    finish_ok(&mut w);
}

fn dump_one_exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("dump_one");
    assert!(
        p.exists(),
        "{} missing (cargo test builds examples)",
        p.display()
    );
    p
}

/// Wait until no thread of `pid` is stopped or traced (the kernel detaches
/// the tracees of a dead tracer and wakes them).
fn wait_untraced(pid: i32, what: &str) {
    let t0 = Instant::now();
    loop {
        let tracer = status_field(pid, "TracerPid");
        let states: Vec<String> = tids(pid)
            .into_iter()
            .map(|t| {
                let s =
                    fs::read_to_string(format!("/proc/{pid}/task/{t}/status")).unwrap_or_default();
                s.lines()
                    .find(|l| l.starts_with("State:"))
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        let stopped = states
            .iter()
            .any(|s| s.contains("T (") || s.contains("t ("));
        if !stopped && tracer == "0" {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{what}: TracerPid {tracer}, threads {states:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `After::Kill` when the checkpointer is NOT the target's parent (always
/// the case from the command line): an intermediate shell starts the
/// workload and waits for it; this test checkpoints it and kills it. The
/// kernel reports a traced leader's exit only once the other traced threads
/// are collected, so release must not wait on the leader first. It must
/// return promptly, leave nothing of the target but what its real parent
/// reaps, and the parent must see a SIGKILL.
#[test]
fn kill_when_the_checkpointer_is_not_the_parent() {
    use std::io::BufRead;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    for name in ["counters", "blocked", "signals"] {
        let dir = tempfile::tempdir().unwrap();
        let argv = Workload::argv(name, dir.path(), &[]).unwrap();
        let paths = stasis_workloads::Paths::new(dir.path(), name);
        let mut sh = Command::new("sh")
            .arg("-c")
            .arg(r#""$@" </dev/null >/dev/null 2>&1 & echo $!; wait $!; echo "status $?""#)
            .arg("sh")
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()) // "Killed"
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(sh.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let pid: i32 = line.trim().parse().expect("workload pid from the shell");
        stasis_workloads::wait_ready(&paths.ready, READY).expect("workload ready");
        let live = tids(pid);
        assert!(live.len() > 1, "{name}: expected a multithreaded target");
        let ppid = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let ppid: u32 = ppid
            .rsplit_once(") ")
            .unwrap()
            .1
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(ppid, sh.id(), "{name}: the shell is the workload's parent");

        let img = dir.path().join("img");
        let (frozen, _f, _) = checkpoint(pid, fs::File::create(&img).unwrap(), None)
            .unwrap_or_else(|e| panic!("{name}: checkpoint: {e}"));
        // release() must run on this thread (ptrace); a watchdog turns a
        // hang into a failure of the whole test binary.
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let watchdog = std::thread::spawn(move || {
            let t0 = Instant::now();
            while !d.load(Ordering::SeqCst) {
                if t0.elapsed() > Duration::from_secs(60) {
                    eprintln!("{name}: release(After::Kill) hangs (not the parent)");
                    std::process::exit(101);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let t0 = Instant::now();
        let r = frozen.release(After::Kill);
        let took = t0.elapsed();
        done.store(true, Ordering::SeqCst);
        watchdog.join().unwrap();
        r.unwrap_or_else(|e| panic!("{name}: release(After::Kill): {e}"));
        assert!(
            took < Duration::from_secs(5),
            "{name}: release took {took:?}"
        );
        // No thread of the target is left running or traced: at most the
        // leader's zombie, for the shell to reap.
        for t in live.iter().filter(|&&t| t != pid as u32) {
            assert!(
                !Path::new(&format!("/proc/{pid}/task/{t}")).exists(),
                "{name}: thread {t} still exists"
            );
        }
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        assert_eq!(rest.trim(), "status 137", "{name}: the parent saw {rest:?}");
        assert!(sh.wait().unwrap().success());
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{name}: process {pid} still exists after its parent reaped it"
        );
        check_image(&parse(&fs::read(&img).unwrap()), pid, &live);
    }
}

/// Kill a checkpointer (examples/dump_one) with SIGKILL at many moments —
/// right as it reaches each phase of the dump (from its STASIS_DUMP_TRACE
/// lines) plus small delays, which lands kills inside the freeze, the
/// syscall injections and the page copy — and check that the target is
/// neither stopped nor traced afterwards and still verifies itself.
#[test]
fn killed_checkpointer_leaves_target_running() {
    use std::io::BufRead;
    let exe = dump_one_exe();
    for name in ["blocked", "fpu"] {
        let dir = tempfile::tempdir().unwrap();
        let mut w = start(name, dir.path(), &[]);
        let pid = w.pid() as i32;
        let phases = [
            "",
            "frozen",
            "checked children",
            "threads read",
            "injections done",
            "pagemap scanned",
            "image written",
        ];
        let mut kills = 0;
        for (pi, phase) in phases.iter().enumerate() {
            for extra_us in [0u64, 100, 300, 700, 1500, 3000] {
                let img = dir.path().join("img");
                let mut c = Command::new(&exe)
                    .arg(pid.to_string())
                    .arg(&img)
                    .args(["--hold-ms", "3000"])
                    .env("STASIS_DUMP_TRACE", "1")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut err = std::io::BufReader::new(c.stderr.take().unwrap());
                if !phase.is_empty() {
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if err.read_line(&mut line).unwrap() == 0 || line.contains(phase) {
                            break;
                        }
                    }
                }
                std::thread::sleep(Duration::from_micros(extra_us + 37 * pi as u64));
                c.kill().unwrap(); // SIGKILL
                c.wait().unwrap();
                kills += 1;
                wait_untraced(
                    pid,
                    &format!("{name}: checkpointer killed at {phase:?} + {extra_us} us"),
                );
            }
        }
        assert_running_untraced(pid);
        assert!(kills > 30);
        finish_ok(&mut w);
    }
}

/// Seize and interrupt every thread of `pid` (test helper, no Tracer).
fn seize_all(pid: i32) -> Vec<i32> {
    use stasis_user::ptrace;
    let t = tids(pid);
    for &tid in &t {
        ptrace::seize(tid as i32, ptrace::SEIZE_OPTIONS).unwrap();
        ptrace::interrupt(tid as i32).unwrap();
    }
    for &tid in &t {
        let st = ptrace::wait(tid as i32).unwrap();
        assert!(ptrace::is_event_stop(st), "{st:?}");
    }
    t.into_iter().map(|t| t as i32).collect()
}

fn vdso_range(pid: i32) -> (u64, u64) {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let l = maps.lines().find(|l| l.ends_with("[vdso]")).unwrap();
    let r = l.split_whitespace().next().unwrap();
    let (a, b) = r.split_once('-').unwrap();
    (
        u64::from_str_radix(a, 16).unwrap(),
        u64::from_str_radix(b, 16).unwrap(),
    )
}

/// The tracer "dies" in the middle of an injection session in every thread
/// (parked on the gadget, after a call): each thread must come back to its
/// own context through rt_sigreturn, FPU/AVX state included.
#[test]
fn abandoned_injection_returns_through_sigreturn() {
    use stasis_user::ptrace;
    for name in ["fpu", "blocked", "counters"] {
        let dir = tempfile::tempdir().unwrap();
        let mut w = start(name, dir.path(), &[]);
        let pid = w.pid() as i32;
        for round in 0..3 {
            let t = seize_all(pid);
            let (a, b) = vdso_range(pid);
            let inj = ptrace::Injector::install(pid, t[0], a, b).unwrap();
            assert!(inj.gadget.is_some(), "no room for the gadget in the vDSO");
            for &tid in &t {
                let mut s = inj.session(tid).unwrap();
                assert!(s.is_safe());
                if round > 0 {
                    let r = s.syscall(39, [0; 6]).unwrap();
                    assert_eq!(r, pid as i64);
                }
                s.abandon();
            }
            for &tid in &t {
                ptrace::detach(tid, 0).unwrap();
            }
            std::thread::sleep(Duration::from_millis(300));
            assert_running_untraced(pid);
        }
        finish_ok(&mut w);
    }
}

/// A target stopped by SIGSTOP is checkpointed and stays stopped (the group
/// stop survives our seize/interrupt/inject/detach).
#[test]
fn stopped_target_stays_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = start("counters", dir.path(), &[]);
    let pid = w.pid() as i32;
    // SAFETY: plain kill.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let t0 = Instant::now();
    while !status_field(pid, "State").starts_with('T') {
        assert!(t0.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(5));
    }
    let live = tids(pid);
    let p = dir.path().join("img");
    dump_to(pid, &p);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        status_field(pid, "State").starts_with('T'),
        "no longer stopped: {}",
        status_field(pid, "State")
    );
    assert_eq!(status_field(pid, "TracerPid"), "0");
    let bytes = fs::read(&p).unwrap();
    check_image(&parse(&bytes), pid, &live);
    // SAFETY: plain kill.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    finish_ok(&mut w);
}

/// Process trees are not supported yet: a child is refused by name.
#[test]
fn child_process_is_refused() {
    let mut c = python(
        "import subprocess,time\np=subprocess.Popen(['sleep','30'])\nprint('ready',flush=True)\ntime.sleep(30)\n",
    );
    assert_eq!(wait_line(&mut c).trim(), "ready");
    let pid = c.id() as i32;
    let err = match checkpoint(pid, std::io::sink(), None) {
        Ok(_) => panic!("a process with a child must be refused"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.contains("child process"), "unclear error: {msg}");
    assert_running_untraced(pid);
    // SAFETY: kill the python process group member and its child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    c.wait().unwrap();
}

/// Shared anonymous memory whose pages are not mapped in the page tables
/// (MADV_DONTNEED zaps the PTEs, the data stays in the object) is still saved.
#[test]
fn shared_anon_pages_not_in_page_tables_are_saved() {
    let mut c = python(
        "import mmap,ctypes,time\nn=8*4096\nm=mmap.mmap(-1,n,flags=mmap.MAP_SHARED)\n\
         m[:]=bytes((i//4096)+65 for i in range(n))\nm.madvise(mmap.MADV_DONTNEED,0,4*4096)\n\
         a=ctypes.addressof(ctypes.c_char.from_buffer(m))\nprint(a,flush=True)\ntime.sleep(30)\n",
    );
    let addr: u64 = wait_line(&mut c).trim().parse().unwrap();
    let pid = c.id() as i32;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img");
    dump_to(pid, &p);
    let bytes = fs::read(&p).unwrap();
    let img = parse(&bytes);
    let v = img
        .vmas
        .iter()
        .find(|v| v.rec.start <= addr && addr < v.rec.end)
        .expect("VMA of the mapping");
    assert_eq!(v.rec.kind, vma_kind::ANON_SHARED);
    assert_ne!(v.rec.shm_id, 0);
    // Collect the saved pages of that VMA.
    let mut found = std::collections::BTreeMap::new();
    for pg in img.pages.iter().filter(|pg| pg.vma_start == v.rec.start) {
        let mut off = 0usize;
        for r in &pg.runs {
            for i in 0..r.nr_pages {
                found.insert(r.addr + i * 4096, pg.data[off]);
                off += 4096;
            }
        }
    }
    for i in 0..8u64 {
        assert_eq!(
            found.get(&(addr + i * 4096)),
            Some(&(65 + i as u8)),
            "page {i} of the shared mapping"
        );
    }
    c.kill().unwrap();
    c.wait().unwrap();
}

/// A page of a private file mapping that the process zeroed is saved (a
/// restart would otherwise show the file's bytes there); untouched file
/// pages are not saved.
#[test]
fn zeroed_private_file_page_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data");
    fs::write(&f, vec![0x5au8; 4 * 4096]).unwrap();
    let code = format!(
        "import mmap,ctypes,time\nf=open('{}','r+b')\nm=mmap.mmap(f.fileno(),4*4096,flags=mmap.MAP_PRIVATE)\n\
         m[4096:8192]=bytes(4096)\nm[8192:8193]=b'x'\nx=m[0]\n\
         print(ctypes.addressof(ctypes.c_char.from_buffer(m)),flush=True)\ntime.sleep(30)\n",
        f.display()
    );
    let mut c = python(&code);
    let addr: u64 = wait_line(&mut c).trim().parse().unwrap();
    let pid = c.id() as i32;
    let p = dir.path().join("img");
    dump_to(pid, &p);
    let bytes = fs::read(&p).unwrap();
    let img = parse(&bytes);
    let v = img
        .vmas
        .iter()
        .find(|v| v.rec.start <= addr && addr < v.rec.end)
        .expect("VMA");
    assert_eq!(v.rec.kind, vma_kind::FILE_PRIVATE);
    let mut saved = std::collections::BTreeMap::new();
    for pg in img.pages.iter().filter(|pg| pg.vma_start == v.rec.start) {
        let mut off = 0usize;
        for r in &pg.runs {
            for i in 0..r.nr_pages {
                saved.insert(r.addr + i * 4096, pg.data[off..off + 4096].to_vec());
                off += 4096;
            }
        }
    }
    assert!(
        !saved.contains_key(&addr),
        "an untouched file page was saved"
    );
    assert_eq!(
        saved.get(&(addr + 4096)).map(|p| p.iter().all(|&b| b == 0)),
        Some(true),
        "zeroed page missing"
    );
    assert_eq!(saved.get(&(addr + 8192)).map(|p| p[0]), Some(b'x'));
    assert!(!saved.contains_key(&(addr + 3 * 4096)));
    c.kill().unwrap();
    c.wait().unwrap();
}

/// Compile a small C program into `dir`.
fn cc(dir: &Path, name: &str, src: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    let exe = dir.join(name);
    fs::write(&c, src).unwrap();
    let st = Command::new("cc")
        .arg("-O1")
        .arg("-pthread")
        .arg("-o")
        .arg(&exe)
        .arg(&c)
        .status()
        .expect("cc");
    assert!(st.success(), "cc failed");
    exe
}

const TIMERS_C: &str = r#"
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
static void h(int s) { (void)s; }
int main(void) {
    struct sigaction sa; memset(&sa, 0, sizeof sa);
    sa.sa_handler = h; sa.sa_flags = SA_RESTART | SA_ONSTACK;
    sigemptyset(&sa.sa_mask); sigaddset(&sa.sa_mask, SIGUSR2);
    sigaction(SIGRTMIN, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    static char alt[65536];
    stack_t ss = { .ss_sp = alt, .ss_size = sizeof alt, .ss_flags = 0 };
    sigaltstack(&ss, NULL);
    timer_t t; struct sigevent ev; memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_SIGNAL; ev.sigev_signo = SIGRTMIN; ev.sigev_value.sival_ptr = (void *)0x1234;
    if (timer_create(CLOCK_MONOTONIC, &ev, &t)) { perror("timer_create"); return 1; }
    struct itimerspec its = { .it_interval = { 50, 0 }, .it_value = { 100, 0 } };
    timer_settime(t, 0, &its, NULL);
    struct itimerval iv = { .it_interval = { 0, 0 }, .it_value = { 200, 0 } };
    setitimer(ITIMER_REAL, &iv, NULL);
    printf("%p %zu\n", (void *)alt, sizeof alt); fflush(stdout);
    for (;;) pause();
}
"#;

/// Signal dispositions, sigaltstack, itimers and POSIX timers come back
/// from the injected calls with the values the program set.
#[test]
fn timers_sigactions_and_altstack_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let exe = cc(dir.path(), "timers", TIMERS_C);
    let mut c = Command::new(&exe)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = wait_line(&mut c);
    let mut it = line.split_whitespace();
    let alt = u64::from_str_radix(it.next().unwrap().trim_start_matches("0x"), 16).unwrap();
    let pid = c.id() as i32;
    let p = dir.path().join("img");
    dump_to(pid, &p);
    let bytes = fs::read(&p).unwrap();
    let img = parse(&bytes);
    let rt = (libc::SIGRTMIN() - 1) as usize;
    let a = &img.sigactions.actions[rt];
    assert_ne!(a.handler, 0);
    assert_ne!(a.flags & libc::SA_RESTART as u64, 0);
    assert_ne!(a.flags & libc::SA_ONSTACK as u64, 0);
    assert_ne!(a.restorer, 0, "glibc sets SA_RESTORER");
    assert_eq!(a.mask, 1 << (libc::SIGUSR2 - 1));
    assert_eq!(
        img.sigactions.actions[libc::SIGPIPE as usize - 1].handler,
        1,
        "SIGPIPE ignored"
    );
    let th = &img.threads[0].rec;
    assert_eq!(th.altstack_sp, alt);
    assert_eq!(th.altstack_size, 65536);
    assert_eq!(img.posix_timers.len(), 1);
    let t = &img.posix_timers[0];
    assert_eq!(t.clock_id, libc::CLOCK_MONOTONIC as u32);
    assert_eq!(t.sigev_signo, libc::SIGRTMIN() as u32);
    assert_eq!(t.sigev_value, 0x1234);
    assert_eq!(t.timer.interval_ns, 50_000_000_000);
    assert!(
        t.timer.value_ns > 90_000_000_000 && t.timer.value_ns <= 100_000_000_000,
        "{}",
        t.timer.value_ns
    );
    let r = img.itimers.real;
    assert!(
        r.value_ns > 190_000_000_000 && r.value_ns <= 200_000_000_000,
        "{}",
        r.value_ns
    );
    assert_running_untraced(pid);
    c.kill().unwrap();
    c.wait().unwrap();
}

const DELETED_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fd = open(argv[1], O_RDWR);
    char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (fd < 0 || m == MAP_FAILED) return 1;
    m[0] = 1;
    unlink(argv[1]);
    if (atoi(argv[2]) == 0) close(fd);
    printf("ready\n"); fflush(stdout);
    for (;;) pause();
}
"#;

/// A mapping of a deleted file is accepted when an open fd on that file
/// carries its contents (FILE_DATA), and refused when none does.
#[test]
fn deleted_file_mapping_needs_an_open_fd() {
    let dir = tempfile::tempdir().unwrap();
    let exe = cc(dir.path(), "deleted", DELETED_C);
    for keep_fd in [true, false] {
        let f = dir.path().join(format!("gone{keep_fd}"));
        fs::write(&f, vec![7u8; 8192]).unwrap();
        let mut c = Command::new(&exe)
            .arg(&f)
            .arg(if keep_fd { "1" } else { "0" })
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert_eq!(wait_line(&mut c).trim(), "ready");
        let pid = c.id() as i32;
        let p = dir.path().join("img");
        let r = checkpoint(pid, fs::File::create(&p).unwrap(), None);
        match (keep_fd, r) {
            (true, Ok((frozen, _, _))) => {
                frozen.release(After::LeaveRunning).unwrap();
                let bytes = fs::read(&p).unwrap();
                let img = parse(&bytes);
                let v = img
                    .vmas
                    .iter()
                    .find(|v| v.rec.flags & stasis_image::records::vma_flags::FILE_DELETED != 0)
                    .expect("deleted-file VMA");
                let fdf = img
                    .files
                    .iter()
                    .find(|x| x.rec.ino == v.rec.ino && x.rec.dev == v.rec.dev)
                    .expect("its fd");
                assert_eq!(fdf.data.map(|d| d.len()), Some(8192));
            }
            (false, Err(e)) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("deleted file") && msg.contains("mapping"),
                    "unclear: {msg}"
                );
            }
            (k, Ok(_)) => panic!("keep_fd={k}: checkpoint should have been refused"),
            (k, Err(e)) => panic!("keep_fd={k}: {e}"),
        }
        assert_running_untraced(pid);
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

const MEMFD_C: &str = r#"
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(void) {
    int fd = memfd_create("stasis-test", 0);
    char buf[3 * 4096];
    memset(buf, 'm', sizeof buf);
    if (fd < 0 || write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) return 1;
    char *m = mmap(NULL, sizeof buf, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return 1;
    m[4096] = 'M';
    lseek(fd, 100, SEEK_SET);
    printf("ready\n"); fflush(stdout);
    for (;;) pause();
}
"#;

/// A memfd (and its mapping) is saved like a deleted file: kind MEMFD with
/// its contents in FILE_DATA.
#[test]
fn memfd_is_saved_with_its_contents() {
    let dir = tempfile::tempdir().unwrap();
    let exe = cc(dir.path(), "memfd", MEMFD_C);
    let mut c = Command::new(&exe)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(wait_line(&mut c).trim(), "ready");
    let pid = c.id() as i32;
    let p = dir.path().join("img");
    dump_to(pid, &p);
    let bytes = fs::read(&p).unwrap();
    let img = parse(&bytes);
    let f = img
        .files
        .iter()
        .find(|f| f.rec.kind == stasis_image::records::file_kind::MEMFD)
        .expect("memfd fd");
    assert!(f.path.starts_with(b"/memfd:stasis-test"));
    assert_eq!(f.rec.pos, 100);
    let d = f.data.expect("memfd contents");
    assert_eq!(d.len(), 3 * 4096);
    assert_eq!(d[4096], b'M');
    assert_eq!(d[0], b'm');
    let v = img
        .vmas
        .iter()
        .find(|v| v.path.starts_with(b"/memfd:"))
        .expect("memfd mapping");
    assert_eq!(v.rec.kind, vma_kind::FILE_SHARED);
    assert_eq!((v.rec.dev, v.rec.ino), (f.rec.dev, f.rec.ino));
    assert_running_untraced(pid);
    c.kill().unwrap();
    c.wait().unwrap();
}

/// PAGEMAP_SCAN and plain pagemap reads find the same pages (the memory
/// workload: a sparse 1 GiB reservation, THP-able areas, holes).
#[test]
fn pagemap_scan_matches_pagemap_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = start("memory", dir.path(), &[]);
    let pid = w.pid() as i32;
    let exe = dump_one_exe();
    let mut imgs = Vec::new();
    for (i, no_scan) in [false, true].into_iter().enumerate() {
        let p = dir.path().join(format!("img{i}"));
        let mut cmd = Command::new(&exe);
        cmd.arg(pid.to_string()).arg(&p).stdout(Stdio::null());
        if no_scan {
            cmd.env("STASIS_NO_PAGEMAP_SCAN", "1");
        }
        assert!(cmd.status().unwrap().success());
        imgs.push(fs::read(&p).unwrap());
    }
    let runs = |b: &[u8]| -> Vec<(u64, u64, u64)> {
        let img = parse(b);
        let shared: Vec<u64> = img
            .vmas
            .iter()
            .filter(|v| v.rec.kind == vma_kind::ANON_SHARED)
            .map(|v| v.rec.start)
            .collect();
        let mut v: Vec<(u64, u64, u64)> = img
            .pages
            .iter()
            .filter(|p| !shared.contains(&p.vma_start))
            .flat_map(|p| {
                p.runs
                    .iter()
                    .map(move |r| (p.vma_start, r.addr, r.nr_pages))
            })
            .collect();
        v.sort_unstable();
        v
    };
    // Shared memory (read from its object either way, and being updated by
    // the workers between the two checkpoints) left out.
    assert_eq!(runs(&imgs[0]), runs(&imgs[1]));
    finish_ok(&mut w);
}

const SPAWNER_C: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
static volatile unsigned long work;
static void *t(void *a) { for (int i = 0; i < 1000; i++) work += i; return a; }
int main(void) {
    printf("ready\n"); fflush(stdout);
    for (;;) {
        pthread_t th[4];
        for (int i = 0; i < 4; i++) if (pthread_create(&th[i], NULL, t, NULL)) return 2;
        for (int i = 0; i < 4; i++) if (pthread_join(th[i], NULL)) return 3;
    }
}
"#;

/// Threads are created and exit all the time: every checkpoint either
/// succeeds with a consistent image or fails cleanly, and the target is
/// never left stopped or traced (clone events during the freeze).
#[test]
fn thread_churn_during_freeze() {
    let dir = tempfile::tempdir().unwrap();
    let exe = cc(dir.path(), "spawner", SPAWNER_C);
    let mut c = Command::new(&exe)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(wait_line(&mut c).trim(), "ready");
    let pid = c.id() as i32;
    let mut ok = 0;
    for i in 0..20 {
        let p = dir.path().join(format!("img{i}"));
        match checkpoint(pid, fs::File::create(&p).unwrap(), None) {
            Ok((frozen, _, stats)) => {
                frozen.release(After::LeaveRunning).unwrap();
                let bytes = fs::read(&p).unwrap();
                let img = parse(&bytes);
                assert_eq!(img.threads.len(), stats.threads);
                ok += 1;
            }
            Err(e) => eprintln!("checkpoint {i}: {e}"),
        }
        assert_running_untraced(pid);
        assert!(c.try_wait().unwrap().is_none(), "the spawner died");
    }
    assert!(ok >= 15, "only {ok} of 20 checkpoints succeeded");
    c.kill().unwrap();
    c.wait().unwrap();
}

/// A thread id is not a process: refused before anything is touched;
/// a pid that does not exist gives NoProcess.
#[test]
fn thread_id_and_missing_pid_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = start("counters", dir.path(), &[]);
    let pid = w.pid() as i32;
    let tid = *tids(pid).iter().find(|&&t| t as i32 != pid).unwrap() as i32;
    let e = checkpoint(tid, std::io::sink(), None)
        .err()
        .expect("a thread id must be refused");
    assert!(e.to_string().contains("give the process id"), "{e}");
    assert_running_untraced(pid);
    let e = checkpoint(0x3fff_fff0, std::io::sink(), None)
        .err()
        .expect("no such pid");
    assert!(matches!(e, DumpError::NoProcess { .. }), "{e}");
    finish_ok(&mut w);
}

//! stasisctl: a small test client of /dev/stasis (the kernel engine's ioctls).
//!
//!   stasisctl version [--expect-ext NAME]... [--expect-no-ext NAME]...
//!   stasisctl freeze PID [--hold MS] [--hold-forever] [--expect-threads N]
//!   stasisctl checkpoint PID IMAGE [--kill|--keep-frozen] [--expect-errno N]
//!   stasisctl abuse          (bad sizes, pointers, flags: every call must fail cleanly)
//!   stasisctl restart [--validate-only] [--expect-errno N] [--expect-threads N] IMAGE...
//!                            (each image through STASIS_IOC_RESTART; the caller's memory
//!                            map and data must be unchanged after every call)
//!   stasisctl restart-abuse  (bad RESTART arguments and descriptors)
//!
//! Built on the host (`cargo build -p stasis-abi --example stasisctl`) and run in the
//! guest by tests/kmod/run.sh. Exit status 0 when every check held.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use stasis_abi::zerocopy::FromZeros;
use stasis_abi::*;

extern "C" {
    fn ioctl(fd: i32, req: u64, ...) -> i32;
    fn __errno_location() -> *mut i32;
}

fn errno() -> i32 {
    // SAFETY: glibc's thread-local errno.
    unsafe { *__errno_location() }
}

fn ioc(fd: i32, req: u32, arg: *mut u8) -> Result<i32, i32> {
    // SAFETY: the kernel checks arg against the size encoded in req.
    let r = unsafe { ioctl(fd, req as u64, arg) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

fn ext_list(mask: u64) -> String {
    (0..=EXT_MAX)
        .filter(|i| mask & (1u64 << i) != 0)
        .map(|i| ext_name(i).map(str::to_string).unwrap_or_else(|| format!("ext{i}")))
        .collect::<Vec<_>>()
        .join(",")
}

const MAX_REPORT: usize = 4096;

fn open_dev() -> Result<std::fs::File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(DEVICE_PATH)
        .map_err(|e| format!("open {DEVICE_PATH}: {e}"))
}

fn cmd_version(args: &[String]) -> Result<(), String> {
    let f = open_dev()?;
    let mut v = VersionInfo::new_zeroed();
    ioc(f.as_raw_fd(), IOC_VERSION, &mut v as *mut _ as *mut u8)
        .map_err(|e| format!("STASIS_IOC_VERSION: errno {e}"))?;
    println!(
        "abi {} struct_size {} max_threads {} extensions {}",
        v.abi_version,
        v.struct_size,
        v.max_threads,
        ext_list(v.extensions)
    );
    if v.abi_version != ABI_VERSION || v.struct_size as usize != std::mem::size_of::<VersionInfo>() {
        return Err(format!("module ABI {} / size {} does not match ours ({ABI_VERSION})", v.abi_version, v.struct_size));
    }
    if v.extensions & 1 == 0 {
        return Err("core extension missing".into());
    }
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let want = a.as_str();
        let name = it.next().ok_or(format!("{want} needs a name"))?;
        let id = (0..=EXT_MAX).find(|&i| ext_name(i) == Some(name.as_str())).ok_or(format!("unknown extension {name}"))?;
        let has = v.extensions & (1u64 << id) != 0;
        match want {
            "--expect-ext" if !has => return Err(format!("extension {name} not listed")),
            "--expect-no-ext" if has => return Err(format!("extension {name} listed but should not be")),
            "--expect-ext" | "--expect-no-ext" => {}
            _ => return Err(format!("unknown option {want}")),
        }
    }
    println!("version: ok");
    Ok(())
}

fn num<T: std::str::FromStr>(s: Option<&String>, what: &str) -> Result<T, String> {
    s.and_then(|s| s.parse().ok()).ok_or(format!("{what} needs a number"))
}

fn cmd_freeze(args: &[String]) -> Result<(), String> {
    let pid: i32 = num(args.first(), "freeze PID")?;
    let mut hold_ms = 300u64;
    let mut forever = false;
    let mut quiet = false;
    let mut expect: Option<u32> = None;
    let mut expect_errno: Option<i32> = None;
    let mut timeout_ms = 0u32;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--hold" => hold_ms = num(it.next(), "--hold")?,
            "--hold-forever" => forever = true,
            "--quiet" => quiet = true,
            "--expect-threads" => expect = Some(num(it.next(), "--expect-threads")?),
            "--expect-errno" => expect_errno = Some(num(it.next(), "--expect-errno")?),
            "--timeout" => timeout_ms = num(it.next(), "--timeout")?,
            o => return Err(format!("unknown option {o}")),
        }
    }
    let f = open_dev()?;
    let mut threads = vec![FrozenThread::new_zeroed(); MAX_REPORT];
    let mut a = FreezeArgs {
        pid,
        timeout_ms,
        max_threads: threads.len() as u32,
        threads: threads.as_mut_ptr() as u64,
        ..FreezeArgs::new_zeroed()
    };
    let t0 = Instant::now();
    let r = ioc(f.as_raw_fd(), IOC_FREEZE, &mut a as *mut _ as *mut u8);
    let frozen_in = t0.elapsed();
    if let Some(want) = expect_errno {
        return match r {
            Err(e) if e == want => {
                println!("freeze {pid}: errno {e} as expected after {:.3} ms", frozen_in.as_secs_f64() * 1e3);
                Ok(())
            }
            other => Err(format!("freeze {pid}: {other:?}, expected errno {want}")),
        };
    }
    r.map_err(|e| format!("STASIS_IOC_FREEZE {pid}: errno {e}"))?;
    let n = a.nr_threads.min(a.max_threads) as usize;
    println!("frozen pid {pid}: {} threads in {:.3} ms", a.nr_threads, frozen_in.as_secs_f64() * 1e3);
    let mut tids: Vec<i32> = Vec::new();
    for t in threads.iter().take(n) {
        tids.push(t.tid);
        if quiet {
            continue;
        }
        println!(
            "  tid {:>6} rip {:#014x} rsp {:#014x} rax {:#018x} orig_rax {:>4}{}",
            t.tid,
            t.rip,
            t.rsp,
            t.rax,
            t.orig_rax as i64,
            if t.flags & FROZEN_IN_SYSCALL_RESTART != 0 { " (in syscall, -ERESTART*)" } else { "" }
        );
    }
    let _ = std::io::stdout().flush();
    // Every thread listed in /proc must have been reported: a thread that was already
    // exiting when the freeze began is not parked, and must vanish soon.
    tids.sort();
    let mut waited = 0;
    loop {
        let mut proc_tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map_err(|e| format!("/proc/{pid}/task: {e}"))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        proc_tids.sort();
        let missing: Vec<i32> = proc_tids.iter().filter(|t| tids.binary_search(t).is_err()).copied().collect();
        let extra: Vec<i32> = tids.iter().filter(|t| proc_tids.binary_search(t).is_err()).copied().collect();
        if !extra.is_empty() {
            return Err(format!("reported tids {extra:?} are not in /proc/{pid}/task"));
        }
        if missing.is_empty() {
            break;
        }
        if waited >= 100 {
            return Err(format!("threads {missing:?} of /proc/{pid}/task run on, not reported"));
        }
        waited += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(e) = expect {
        if a.nr_threads != e {
            return Err(format!("expected {e} threads, got {}", a.nr_threads));
        }
    }
    if threads.iter().take(n).any(|t| t.rip == 0 || t.rsp == 0) {
        return Err("a thread reported rip or rsp 0".into());
    }
    // While frozen, no thread may run: their CPU times must not move.
    let cpu = |pid: i32| -> Result<u64, String> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
        let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ut: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0);
        let st: u64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
        Ok(ut + st)
    };
    let c0 = cpu(pid)?;
    std::thread::sleep(Duration::from_millis(hold_ms));
    let c1 = cpu(pid)?;
    println!("cpu ticks while frozen: {}", c1.saturating_sub(c0));
    if c1 > c0 + 1 {
        return Err(format!("target used {} ticks while frozen", c1 - c0));
    }
    if forever {
        println!("holding until killed");
        let _ = std::io::stdout().flush();
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    ioc(f.as_raw_fd(), IOC_THAW, std::ptr::null_mut()).map_err(|e| format!("STASIS_IOC_THAW: errno {e}"))?;
    // A second thaw has nothing to release.
    if ioc(f.as_raw_fd(), IOC_THAW, std::ptr::null_mut()) != Err(22) {
        return Err("second THAW did not fail with EINVAL".into());
    }
    println!("freeze: ok");
    Ok(())
}

fn cmd_checkpoint(args: &[String]) -> Result<(), String> {
    let pid: i32 = num(args.first(), "checkpoint PID")?;
    let path = args.get(1).ok_or("checkpoint PID IMAGE")?;
    let mut flags = 0;
    let mut expect_errno: Option<i32> = None;
    let mut it = args.iter().skip(2);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--kill" => flags |= CHECKPOINT_KILL,
            "--keep-frozen" => flags |= CHECKPOINT_KEEP_FROZEN,
            "--expect-errno" => expect_errno = Some(num(it.next(), "--expect-errno")?),
            o => return Err(format!("unknown option {o}")),
        }
    }
    let dev = open_dev()?;
    // "-": stream to standard output (a pipe, say); the summary goes to stderr then.
    let to_stdout = path == "-";
    let tmp = format!("{path}.tmp");
    let img = if to_stdout {
        None
    } else {
        Some(OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(|e| format!("{tmp}: {e}"))?)
    };
    let fd = img.as_ref().map(|f| f.as_raw_fd()).unwrap_or(1);
    let mut a = CheckpointArgs { pid, fd, flags, ..CheckpointArgs::new_zeroed() };
    let t0 = Instant::now();
    let r = ioc(dev.as_raw_fd(), IOC_CHECKPOINT, &mut a as *mut _ as *mut u8);
    let took = t0.elapsed();
    if let Some(want) = expect_errno {
        let _ = std::fs::remove_file(&tmp);
        return match r {
            Err(e) if e == want => {
                println!("checkpoint {pid}: errno {e} as expected");
                Ok(())
            }
            other => Err(format!("checkpoint {pid}: {other:?}, expected errno {want}")),
        };
    }
    r.map_err(|e| format!("STASIS_IOC_CHECKPOINT {pid}: errno {e}"))?;
    let len = match &img {
        Some(img) => {
            img.sync_all().map_err(|e| format!("fsync {tmp}: {e}"))?;
            std::fs::rename(&tmp, path).map_err(|e| format!("rename {tmp}: {e}"))?;
            std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
        }
        None => a.bytes,
    };
    eprintln!(
        "checkpoint pid {pid}: {} threads, {} vmas, {} pages, {} bytes (file {len}); frozen after {:.3} ms, written in {:.3} ms, ioctl {:.3} ms",
        a.nr_threads,
        a.nr_vmas,
        a.pages,
        a.bytes,
        a.freeze_ns as f64 / 1e6,
        a.write_ns as f64 / 1e6,
        took.as_secs_f64() * 1e3
    );
    if a.bytes != len {
        return Err(format!("module says {} bytes, file has {len}", a.bytes));
    }
    if flags & CHECKPOINT_KEEP_FROZEN != 0 {
        ioc(dev.as_raw_fd(), IOC_THAW, std::ptr::null_mut()).map_err(|e| format!("THAW after --keep-frozen: errno {e}"))?;
    }
    eprintln!("checkpoint: ok");
    Ok(())
}

/// Malformed requests: each must fail with the expected errno, never oops.
fn cmd_abuse() -> Result<(), String> {
    let f = open_dev()?;
    let fd = f.as_raw_fd();
    let mut big = vec![0u8; 1 << 16];
    let me = std::process::id() as i32;
    let mut checks: Vec<(&str, Result<i32, i32>, i32)> = Vec::new();
    // Unknown command, same magic.
    checks.push(("unknown nr", ioc(fd, ioc_raw(2, 0x7f, 8), big.as_mut_ptr()), 25));
    // VERSION's number with another size.
    checks.push(("version size+8", ioc(fd, ioc_raw(2, 0x00, 32), big.as_mut_ptr()), 25));
    // A size over the shim's buffer.
    checks.push(("huge size", ioc(fd, ioc_raw(3, 0x01, 0x3fff), big.as_mut_ptr()), 22));
    // Bad pointers.
    checks.push(("version NULL", ioc(fd, IOC_VERSION, std::ptr::null_mut()), 14));
    checks.push(("version kernel ptr", ioc(fd, IOC_VERSION, 0xffff_ffff_8100_0000u64 as *mut u8), 14));
    checks.push(("freeze NULL", ioc(fd, IOC_FREEZE, std::ptr::null_mut()), 14));
    let mut call = |name: &'static str, mut a: FreezeArgs, want: i32| {
        checks.push((name, ioc(fd, IOC_FREEZE, &mut a as *mut _ as *mut u8), want));
    };
    call("pid 0", FreezeArgs { pid: 0, ..FreezeArgs::new_zeroed() }, 22);
    call("pid -1", FreezeArgs { pid: -1, ..FreezeArgs::new_zeroed() }, 22);
    call("flags", FreezeArgs { pid: 1, flags: 1, ..FreezeArgs::new_zeroed() }, 22);
    call("reserved", FreezeArgs { pid: 1, _reserved: 1, ..FreezeArgs::new_zeroed() }, 22);
    call("too many", FreezeArgs { pid: 1, max_threads: u32::MAX, threads: 8, ..FreezeArgs::new_zeroed() }, 7);
    call("threads NULL", FreezeArgs { pid: 1, max_threads: 4, ..FreezeArgs::new_zeroed() }, 14);
    call("no such pid", FreezeArgs { pid: 0x3fff_fff0, ..FreezeArgs::new_zeroed() }, 3);
    call("self", FreezeArgs { pid: me, ..FreezeArgs::new_zeroed() }, 35);
    call("kthread", FreezeArgs { pid: 2, ..FreezeArgs::new_zeroed() }, 1);
    let mut ck = |name: &'static str, mut a: CheckpointArgs, want: i32| {
        checks.push((name, ioc(fd, IOC_CHECKPOINT, &mut a as *mut _ as *mut u8), want));
    };
    ck("ckpt flags", CheckpointArgs { pid: 1, fd: 1, flags: 4, ..CheckpointArgs::new_zeroed() }, 22);
    ck("ckpt kill+keep", CheckpointArgs { pid: 1, fd: 1, flags: 3, ..CheckpointArgs::new_zeroed() }, 22);
    ck("ckpt out set", CheckpointArgs { pid: 1, fd: 1, bytes: 1, ..CheckpointArgs::new_zeroed() }, 22);
    ck("ckpt fd -1", CheckpointArgs { pid: 1, fd: -1, ..CheckpointArgs::new_zeroed() }, 22);
    // A real target, but a file descriptor that cannot be written: nothing written,
    // the target runs on.
    let mut child = std::process::Command::new("sleep").arg("30").spawn().map_err(|e| format!("sleep: {e}"))?;
    let ro = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
    let cpid = child.id() as i32;
    ck("ckpt read-only fd", CheckpointArgs { pid: cpid, fd: ro.as_raw_fd(), ..CheckpointArgs::new_zeroed() }, 9);
    ck("ckpt closed fd", CheckpointArgs { pid: cpid, fd: 999, ..CheckpointArgs::new_zeroed() }, 9);
    ck("ckpt self", CheckpointArgs { pid: me, fd: 1, ..CheckpointArgs::new_zeroed() }, 35);
    checks.push(("thaw unfrozen", ioc(fd, IOC_THAW, std::ptr::null_mut()), 22));
    let _ = child.kill();
    let _ = child.wait();
    report_errnos("abuse", &checks)
}

/// /proc/self/maps into a buffer allocated once (reading must not change the map).
fn read_maps(buf: &mut [u8]) -> Result<usize, String> {
    use std::io::Read;
    let mut f = std::fs::File::open("/proc/self/maps").map_err(|e| format!("/proc/self/maps: {e}"))?;
    let mut n = 0;
    loop {
        let rest = buf.get_mut(n..).ok_or("maps too large")?;
        if rest.is_empty() {
            return Err("maps too large".into());
        }
        let k = f.read(rest).map_err(|e| format!("/proc/self/maps: {e}"))?;
        if k == 0 {
            return Ok(n);
        }
        n += k;
    }
}

fn cmd_restart(args: &[String]) -> Result<(), String> {
    let mut flags = 0;
    let mut expect_errno: Option<i32> = None;
    let mut expect_threads: Option<u32> = None;
    let mut pid = 0i32;
    let mut timeout_ms = 0u32;
    let mut images = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--validate-only" => flags |= RESTART_VALIDATE_ONLY,
            "--pid" => pid = num(it.next(), "--pid")?,
            "--timeout" => timeout_ms = num(it.next(), "--timeout")?,
            "--expect-errno" => expect_errno = Some(num(it.next(), "--expect-errno")?),
            "--expect-threads" => expect_threads = Some(num(it.next(), "--expect-threads")?),
            o if o.starts_with("--") => return Err(format!("unknown option {o}")),
            p => images.push(p.to_string()),
        }
    }
    if images.is_empty() {
        return Err("restart: no image".into());
    }
    let dev = open_dev()?;
    let canary_heap = Box::new(0x5ca1ab1e_u64);
    let canary_stack = std::hint::black_box(0xdeadbeef_u64);
    let mut before = vec![0u8; 1 << 20];
    let mut after = vec![0u8; 1 << 20];
    let mut bad = 0;
    for path in &images {
        let img = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
        let nb = read_maps(&mut before)?;
        let mut a = RestartArgs { fd: img.as_raw_fd(), flags, pid, timeout_ms, ..RestartArgs::new_zeroed() };
        let t0 = Instant::now();
        let r = ioc(dev.as_raw_fd(), IOC_RESTART, &mut a as *mut _ as *mut u8);
        let took = t0.elapsed();
        let na = read_maps(&mut after)?;
        let intact = before.get(..nb) == after.get(..na)
            && *canary_heap == 0x5ca1ab1e
            && std::hint::black_box(canary_stack) == 0xdeadbeef;
        let ok = match (expect_errno, r) {
            (Some(want), Err(e)) => e == want,
            (Some(_), Ok(_)) => false,
            (None, Ok(_)) => expect_threads.is_none_or(|n| n == a.nr_threads),
            (None, Err(_)) => false,
        };
        let ok = ok && intact;
        println!(
            "{} restart {path}: {:?} ({} threads, {} vmas, {} pages, {} bytes, {:.3} ms){}",
            if ok { "ok " } else { "BAD" },
            r,
            a.nr_threads,
            a.nr_vmas,
            a.pages,
            a.bytes,
            took.as_secs_f64() * 1e3,
            if intact { "" } else { " CALLER CHANGED" }
        );
        if !ok {
            bad += 1;
        }
    }
    if bad > 0 {
        return Err(format!("{bad} of {} restart checks failed", images.len()));
    }
    println!("restart: ok ({} images)", images.len());
    Ok(())
}

fn rt(d: i32, mut a: RestartThreadArgs) -> Result<i32, i32> {
    ioc(d, IOC_RESTART_THREAD, &mut a as *mut _ as *mut u8)
}

/// RESTART with bad arguments and descriptors: each must fail with the expected errno.
fn cmd_restart_abuse() -> Result<(), String> {
    let dev = open_dev()?;
    let d = dev.as_raw_fd();
    let dir = std::fs::File::open("/").map_err(|e| format!("/: {e}"))?;
    let tmp = std::env::temp_dir().join(format!("stasisctl-empty-{}", std::process::id()));
    let empty = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(|e| format!("{tmp:?}: {e}"))?;
    let wronly = OpenOptions::new().write(true).open(&tmp).map_err(|e| format!("{tmp:?}: {e}"))?;
    let empty_r = std::fs::File::open(&tmp).map_err(|e| format!("{tmp:?}: {e}"))?;
    drop(empty);
    let mut pfd = [0i32; 2];
    extern "C" {
        fn pipe(fds: *mut i32) -> i32;
    }
    // SAFETY: pipe writes two fds.
    if unsafe { pipe(pfd.as_mut_ptr()) } != 0 {
        return Err("pipe failed".into());
    }
    let call = |fd: i32, flags: u32, dirty: bool| {
        let mut a = RestartArgs { fd, flags, ..RestartArgs::new_zeroed() };
        if dirty {
            a.pages = 1;
        }
        ioc(d, IOC_RESTART, &mut a as *mut _ as *mut u8)
    };
    let checks: Vec<(&str, Result<i32, i32>, i32)> = vec![
        ("bad flags", call(empty_r.as_raw_fd(), 0x80, false), 22),
        ("out fields set", call(empty_r.as_raw_fd(), RESTART_VALIDATE_ONLY, true), 22),
        ("fd -1", call(-1, RESTART_VALIDATE_ONLY, false), 22),
        ("fd not open", call(100_000, RESTART_VALIDATE_ONLY, false), 9),
        ("write-only fd", call(wronly.as_raw_fd(), RESTART_VALIDATE_ONLY, false), 9),
        ("empty file", call(empty_r.as_raw_fd(), RESTART_VALIDATE_ONLY, false), 22),
        ("directory", call(dir.as_raw_fd(), RESTART_VALIDATE_ONLY, false), 22),
        ("pipe", call(pfd[0], RESTART_VALIDATE_ONLY, false), 22),
        ("/dev/stasis", call(d, RESTART_VALIDATE_ONLY, false), 22),
        ("NULL arg", ioc(d, IOC_RESTART, std::ptr::null_mut()), 14),
        ("pid with VALIDATE_ONLY", {
            let mut a = RestartArgs { fd: empty_r.as_raw_fd(), flags: RESTART_VALIDATE_ONLY, pid: 1, ..RestartArgs::new_zeroed() };
            ioc(d, IOC_RESTART, &mut a as *mut _ as *mut u8)
        }, 22),
        ("no pid without VALIDATE_ONLY", call(empty_r.as_raw_fd(), 0, false), 22),
        ("KEEP without VALIDATE_ONLY", call(empty_r.as_raw_fd(), RESTART_KEEP, false), 22),
        ("KEPT with VALIDATE_ONLY", call(-1, RESTART_KEPT | RESTART_VALIDATE_ONLY, false), 22),
        ("KEPT with an fd", {
            let mut a = RestartArgs { fd: empty_r.as_raw_fd(), flags: RESTART_KEPT, pid: 1, ..RestartArgs::new_zeroed() };
            ioc(d, IOC_RESTART, &mut a as *mut _ as *mut u8)
        }, 22),
        ("KEPT with nothing kept", {
            let mut a = RestartArgs { fd: -1, flags: RESTART_KEPT, pid: 1, ..RestartArgs::new_zeroed() };
            ioc(d, IOC_RESTART, &mut a as *mut _ as *mut u8)
        }, 22),
        ("RESTART_THREAD bad flags", rt(d, RestartThreadArgs { flags: 1, ..RestartThreadArgs::new_zeroed() }), 22),
        ("RESTART_THREAD too many fds", rt(d, RestartThreadArgs { nr_map_fds: RESTART_MAX_FDS + 1, ..RestartThreadArgs::new_zeroed() }), 22),
        ("RESTART_THREAD bad map_fds pointer", rt(d, RestartThreadArgs { nr_map_fds: 4, map_fds: 16, ..RestartThreadArgs::new_zeroed() }), 14),
        ("RESTART_THREAD bad close_fds pointer", rt(d, RestartThreadArgs { nr_close_fds: 4, close_fds: u64::MAX - 8, ..RestartThreadArgs::new_zeroed() }), 14),
        // Nobody claims us: the thread leaves after its timeout, unchanged.
        ("RESTART_THREAD unclaimed: ETIMEDOUT", rt(d, RestartThreadArgs { timeout_ms: 200, ..RestartThreadArgs::new_zeroed() }), 110),
        ("RESTART_THREAD NULL arg", ioc(d, IOC_RESTART_THREAD, std::ptr::null_mut()), 14),
    ];
    let _ = std::fs::remove_file(&tmp);
    report_errnos("restart-abuse", &checks)
}

/// Prints each (what, result, wanted errno) check; fails if any call did not fail
/// with exactly its errno.
fn report_errnos(name: &str, checks: &[(&str, Result<i32, i32>, i32)]) -> Result<(), String> {
    let mut bad = 0;
    for (what, got, want) in checks {
        let ok = *got == Err(*want);
        println!("{} {name} {what}: {got:?} (want errno {want})", if ok { "ok " } else { "BAD" });
        if !ok {
            bad += 1;
        }
    }
    if bad > 0 {
        return Err(format!("{bad} {name} checks failed"));
    }
    println!("{name}: ok");
    Ok(())
}

const fn ioc_raw(dir: u32, nr: u32, size: u32) -> u32 {
    (dir << 30) | (size << 16) | (IOC_MAGIC << 8) | nr
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("version") => cmd_version(&args[1..]),
        Some("freeze") => cmd_freeze(&args[1..]),
        Some("abuse") => cmd_abuse(),
        Some("checkpoint") => cmd_checkpoint(&args[1..]),
        Some("restart") => cmd_restart(&args[1..]),
        Some("restart-abuse") => cmd_restart_abuse(),
        _ => Err("usage: stasisctl version|freeze PID|abuse ...".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stasisctl: {e}");
            ExitCode::FAILURE
        }
    }
}

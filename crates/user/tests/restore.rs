//! Restart-side checks on real images (user engine checkpoint of a workload):
//! layout after a detached restart, and validation failures that must happen
//! before anything is changed.
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use stasis_image::records::{kind, vma_kind, RlimitsRec, ThreadRec, VmaRec, XstateRec};
use stasis_image::{Image, ParseOptions, ProcessImage};
use stasis_user::{checkpoint, restart, After, RestartOpts, RestartOutcome, RestoreError};
use stasis_workloads::{request_stop, wait_verdict, Paths, Workload};
use zerocopy::{FromBytes, IntoBytes};

const T: Duration = Duration::from_secs(60);
static SERIAL: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A restarted (detached) child of ours: killed and reaped if the test fails
/// before it ends by itself, so no restored process outlives a failed test.
struct Reaper(i32);
impl Drop for Reaper {
    fn drop(&mut self) {
        if std::thread::panicking() && self.0 > 0 {
            // SAFETY: kill + waitpid of our own child.
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
                libc::waitpid(self.0, std::ptr::null_mut(), 0);
            }
        }
    }
}

fn dump(name: &str, dir: &Path) -> (PathBuf, Paths, u32) {
    let mut w = Workload::spawn(name, dir, &[]).expect("spawn");
    w.wait_ready(T).expect("ready");
    let img = dir.join("image");
    let f = BufWriter::new(File::create(&img).expect("create image"));
    let (frozen, f, _) = checkpoint(w.pid() as i32, f, None).expect("checkpoint");
    drop(f.into_inner().expect("flush"));
    frozen.release(After::Kill).expect("kill");
    let pid = w.pid();
    w.kill_and_reap().expect("reap");
    (img, w.paths().clone(), pid)
}

/// Rewrite the payload of the first record of `k` in place and fix its checksum.
fn patch(bytes: &mut [u8], k: u32, which: usize, f: impl FnOnce(&mut [u8])) {
    let (off, len) = {
        let img = Image::parse(bytes).expect("parse");
        let r = img.records().iter().filter(|r| r.kind == k).nth(which).expect("record to patch");
        (r.payload_offset() as usize, r.payload.len())
    };
    f(&mut bytes[off..off + len]);
    let sum = stasis_image::checksum(&bytes[off..off + len]);
    let at = off + ((len + 7) & !7);
    bytes[at..at + 8].copy_from_slice(&sum.to_le_bytes());
    Image::parse(bytes).expect("patched image still parses");
}

fn write_patched(dir: &Path, img: &Path, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut b = std::fs::read(img).expect("read image");
    f(&mut b);
    let p = dir.join("patched");
    std::fs::write(&p, &b).expect("write patched");
    p
}

fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv(0) is available wherever the workloads ran with XSAVE.
    unsafe { std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi) };
    (u64::from(hi) << 32) | u64::from(lo)
}

#[test]
fn detached_restart_has_the_image_layout_and_tids() {
    let _g = lock();
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let (img_path, paths, pid) = dump("counters", dir.path());
    let bytes = std::fs::read(&img_path).expect("read");
    let img = ProcessImage::parse(&bytes, &ParseOptions::ALL).expect("parse");
    let mut want_tids: Vec<i32> = img.threads.iter().map(|t| t.rec.tid as i32).collect();
    want_tids.sort();

    let out = restart(&img_path, &RestartOpts { detach: true, ..Default::default() }).expect("restart");
    let _reaper = Reaper(pid as i32);
    assert_eq!(out, RestartOutcome::Detached { pid: pid as i32 });
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    tids.sort();
    assert_eq!(tids, want_tids, "same TIDs");

    // Every mapping is one of the image's, and every image VMA is there.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let vmas: Vec<(u64, u64, u32)> = img.vmas.iter().map(|v| (v.rec.start, v.rec.end, v.rec.kind)).collect();
    for line in maps.lines() {
        let r = line.split_whitespace().next().unwrap();
        let (s, e) = r.split_once('-').unwrap();
        let (s, e) = (u64::from_str_radix(s, 16).unwrap(), u64::from_str_radix(e, 16).unwrap());
        // (Adjacent image VMAs may come back merged into one mapping.)
        let inside: u64 = vmas.iter().map(|&(vs, ve, _)| ve.min(e).saturating_sub(vs.max(s))).sum();
        assert!(
            inside == e - s,
            "mapping not in the image (restorer area left behind?): {line}\nmaps:\n{maps}"
        );
    }
    for &(vs, ve, k) in &vmas {
        if k == vma_kind::VSYSCALL {
            continue;
        }
        let covered: u64 = maps
            .lines()
            .filter_map(|l| {
                let (s, e) = l.split_whitespace().next()?.split_once('-')?;
                let (s, e) = (u64::from_str_radix(s, 16).ok()?, u64::from_str_radix(e, 16).ok()?);
                Some(e.min(ve).saturating_sub(s.max(vs)))
            })
            .sum();
        assert_eq!(covered, ve - vs, "image VMA {vs:#x}-{ve:#x} not fully mapped\nmaps:\n{maps}");
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm");
    assert_eq!(comm.trim_end().as_bytes(), img.process.comm.split(|&c| c == 0).next().unwrap());

    request_stop(&paths.stop).expect("stop");
    let v = wait_verdict(&paths.verdict, T).expect("verdict");
    assert_eq!(v.trim(), "ok");
    let mut st = 0;
    // SAFETY: reaping our own child.
    let r = unsafe { libc::waitpid(pid as i32, &mut st, 0) };
    assert_eq!(r, pid as i32);
    assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "status {st:#x}");
}

#[test]
fn missing_cpu_feature_fails_before_anything() {
    let _g = lock();
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let (img, _, pid) = dump("fpu", dir.path());
    let ours = xcr0();
    let bit = [19u32, 18, 17, 9, 7, 6, 5, 2].into_iter().find(|b| ours & (1 << b) == 0).expect("a feature this CPU lacks");
    let p = write_patched(dir.path(), &img, |b| {
        patch(b, kind::XSTATE, 0, |pl| {
            let (mut x, _) = XstateRec::read_from_prefix(pl).unwrap();
            x.xstate_bv |= 1 << bit;
            x.xcr0 |= 1 << bit;
            pl[..std::mem::size_of::<XstateRec>()].copy_from_slice(x.as_bytes());
        })
    });
    let e = restart(&p, &RestartOpts::default()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RestoreError::MissingCpuFeatures { missing, .. } if missing == 1 << bit), "{msg}");
    assert!(msg.contains(&format!("(bit {bit})")), "{msg}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "a process was created");
    // The unpatched image restarts fine afterwards (nothing was changed).
    let _ = std::fs::remove_file(dir.path().join("fpu.verdict"));
    let img2 = img.clone();
    let h = std::thread::spawn(move || restart(&img2, &RestartOpts::default()));
    std::thread::sleep(Duration::from_millis(200));
    request_stop(&dir.path().join("fpu.stop")).expect("stop");
    let v = wait_verdict(&dir.path().join("fpu.verdict"), T).expect("verdict");
    assert_eq!(v.trim(), "ok");
    assert!(matches!(h.join().unwrap(), Ok(RestartOutcome::Exited { code: Some(0), .. })));
}

/// Restart the (patched) fpu image `p` in a thread and check the workload's verdict.
fn restart_fpu_ok(dir: &Path, p: &Path, opts: RestartOpts<'static>) {
    let _ = std::fs::remove_file(dir.join("fpu.verdict"));
    let p = p.to_path_buf();
    let h = std::thread::spawn(move || restart(&p, &opts));
    std::thread::sleep(Duration::from_millis(300));
    request_stop(&dir.join("fpu.stop")).expect("stop");
    let v = wait_verdict(&dir.join("fpu.verdict"), T).expect("verdict");
    assert_eq!(v.trim(), "ok");
    assert!(matches!(h.join().unwrap(), Ok(RestartOutcome::Exited { code: Some(0), .. })));
}

/// The image's CPU had an instruction set this CPU lacks (its CPU record says
/// so): refused before anything is created, naming it; restarted with
/// `allow_cpu_mismatch`.
#[test]
fn cpu_record_feature_missing_here_is_refused_unless_allowed() {
    use stasis_image::records::CpuRec;
    use stasis_image::x86::cpu::{this_cpu, FeatureList, FEATURES};
    let _g = lock();
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let (img, _, pid) = dump("fpu", dir.path());
    let here = FeatureList::of(&this_cpu());
    let &(name, word, bit) = FEATURES.iter().find(|f| !here.contains(f.0)).expect("a feature this CPU lacks");
    let p = write_patched(dir.path(), &img, |b| {
        patch(b, kind::CPU, 0, |pl| {
            let mut c = CpuRec::read_from_bytes(pl).unwrap();
            c.features[word] |= 1 << bit;
            pl.copy_from_slice(c.as_bytes());
        })
    });
    let e = restart(&p, &RestartOpts::default()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(&e, RestoreError::CpuMismatch { missing, .. } if missing == name), "{msg}");
    assert!(msg.contains(name) && msg.contains("--allow-cpu-mismatch"), "{msg}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "a process was created");
    restart_fpu_ok(dir.path(), &p, RestartOpts { allow_cpu_mismatch: true, ..Default::default() });
}

/// An image from a CPU whose XSAVE layout differs (here: AVX moved to offset
/// 1024 in the CPU record and in every area) is re-laid out at restart: the
/// fpu workload's AVX threads find their ymm registers. Without the re-layout
/// they would read the zeros left at 576 and fail.
#[test]
fn xsave_areas_from_another_layout_are_relaid_out() {
    use stasis_image::records::CpuRec;
    let _g = lock();
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let (img, _, _) = dump("fpu", dir.path());
    let bytes = std::fs::read(&img).expect("read");
    let pi = ProcessImage::parse(&bytes, &ParseOptions::ALL).expect("parse");
    let cpu = pi.cpu.expect("the user engine writes a CPU record");
    let (bv_any, area_len) = pi.threads.iter().filter_map(|t| t.xstate.as_ref()).fold((0, usize::MAX), |(b, l), x| (b | x.rec.xstate_bv, l.min(x.area.len())));
    if cpu.xcr0 & 4 == 0 || bv_any & 4 == 0 || area_len < 1280 || (cpu.xcr0 & !7) == 0 && area_len < 1280 {
        eprintln!("skipped: no AVX state in use or an area too small to move AVX within");
        return;
    }
    // 1024..1280 must be free in this CPU's layout.
    let free = (3..32).all(|b| {
        let (o, s) = (cpu.xsave_offset[b] as usize, cpu.xsave_size[b] as usize);
        s == 0 || o + s <= 1024 || o >= 1280
    });
    if !free {
        eprintln!("skipped: this CPU uses bytes 1024..1280 of the XSAVE area");
        return;
    }
    let nthreads = pi.threads.len();
    drop(pi);
    let p = write_patched(dir.path(), &img, |b| {
        patch(b, kind::CPU, 0, |pl| {
            let mut c = CpuRec::read_from_bytes(pl).unwrap();
            c.xsave_offset[2] = 1024;
            pl.copy_from_slice(c.as_bytes());
        });
        for i in 0..nthreads {
            patch(b, kind::XSTATE, i, |pl| {
                let a = &mut pl[std::mem::size_of::<XstateRec>()..];
                let avx: Vec<u8> = a[576..832].to_vec();
                a[576..832].fill(0);
                a[1024..1280].copy_from_slice(&avx);
            });
        }
    });
    restart_fpu_ok(dir.path(), &p, RestartOpts::default());
}

/// Kernel mode without /dev/stasis: a clear error before anything is forked.
#[test]
fn kernel_mode_without_module_fails_before_anything() {
    if Path::new("/dev/stasis").exists() {
        eprintln!("skipped: /dev/stasis exists here");
        return;
    }
    let _g = lock();
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let (img, _, pid) = dump("fpu", dir.path());
    for pidns in [false, true] {
        let e = restart(&img, &RestartOpts { kernel: true, pidns, ..Default::default() }).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(&e, RestoreError::KernelModule { source } if source.kind() == std::io::ErrorKind::NotFound),
            "{msg}"
        );
        assert_eq!(msg, "kernel mode needs /dev/stasis (module stasis.ko)");
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "a process was created");
    }
}

#[test]
fn vdso_size_mismatch_fails_clearly() {
    let _g = lock();
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let (img, _, pid) = dump("counters", dir.path());
    let bytes = std::fs::read(&img).unwrap();
    let which = {
        let i = Image::parse(&bytes).unwrap();
        i.records()
            .iter()
            .filter(|r| r.kind == kind::VMA)
            .position(|r| r.fixed::<VmaRec>().unwrap().kind == vma_kind::VDSO)
            .expect("a vDSO VMA")
    };
    let p = write_patched(dir.path(), &img, |b| {
        patch(b, kind::VMA, which, |pl| {
            let (mut v, _) = VmaRec::read_from_prefix(pl).unwrap();
            v.end -= 4096;
            pl[..std::mem::size_of::<VmaRec>()].copy_from_slice(v.as_bytes());
        })
    });
    let e = restart(&p, &RestartOpts::default()).unwrap_err();
    assert!(matches!(e, RestoreError::VdsoMismatch { what: "vDSO", .. }), "{e}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

/// A hard limit above ours (an image from a machine with more memory, whose
/// RLIMIT_SIGPENDING/NPROC defaults are higher) is set as the image has it
/// when we hold CAP_SYS_RESOURCE; without it (as for root in some containers,
/// these machines included, and for every unprivileged user:
/// restore_unprivileged.rs) restart refuses before anything is created.
#[test]
fn hard_rlimit_above_ours_is_restored_with_cap_sys_resource() {
    let _g = lock();
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let (img, paths, pid) = dump("counters", dir.path());
    let mut ours = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out pointer.
    unsafe { libc::getrlimit64(libc::RLIMIT_SIGPENDING, &mut ours) };
    assert!(ours.rlim_max < u64::MAX);
    let want = ours.rlim_max + 1;
    let p = write_patched(dir.path(), &img, |b| {
        patch(b, kind::RLIMITS, 0, |pl| {
            let mut r = RlimitsRec::read_from_bytes(pl).unwrap();
            r.limits[libc::RLIMIT_SIGPENDING as usize].max = want;
            pl.copy_from_slice(r.as_bytes());
        })
    });
    if cap_eff(std::process::id()) & (1 << 24) == 0 {
        let e = restart(&p, &RestartOpts { detach: true, ..Default::default() }).unwrap_err();
        assert!(matches!(e, RestoreError::RlimitTooHigh { resource: 11, .. }), "{e}");
        assert!(e.to_string().contains("CAP_SYS_RESOURCE"), "{e}");
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        return;
    }
    let out = restart(&p, &RestartOpts { detach: true, ..Default::default() }).expect("restart");
    let _reaper = Reaper(pid as i32);
    assert_eq!(out, RestartOutcome::Detached { pid: pid as i32 });
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max pending signals")).expect("line");
    let hard: u64 = line.split_whitespace().nth(4).and_then(|x| x.parse().ok()).unwrap_or_else(|| panic!("{line}"));
    assert_eq!(hard, want, "{line}");
    request_stop(&paths.stop).expect("stop");
    assert_eq!(wait_verdict(&paths.verdict, T).expect("verdict").trim(), "ok");
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid as i32, &mut st, 0) };
    assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0);
}

#[test]
fn truncated_image_is_refused() {
    let _g = lock();
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let (img, _, _) = dump("counters", dir.path());
    let p = write_patched(dir.path(), &img, |b| {
        let n = b.len() / 2;
        b.truncate(n)
    });
    let e = restart(&p, &RestartOpts::default()).unwrap_err();
    assert!(matches!(e, RestoreError::Image(_)), "{e}");
    let _ = ThreadRec::default();
}

/// A restarted process can be checkpointed again, and the per-thread kernel
/// state the restorer sets (rseq, robust list, clear_child_tid, TLS bases,
/// masks, altstacks, names) comes back identical in the second image; the
/// second image restarts too.
#[test]
fn restarted_process_checkpoints_again_identically() {
    let _g = lock();
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let name = "tls";
    let (img1, paths, pid) = dump(name, dir.path());
    let out = restart(&img1, &RestartOpts { detach: true, ..Default::default() }).expect("restart");
    let _reaper = Reaper(pid as i32);
    assert_eq!(out, RestartOutcome::Detached { pid: pid as i32 });
    std::thread::sleep(Duration::from_millis(100));
    let img2 = dir.path().join("image2");
    let f = BufWriter::new(File::create(&img2).expect("create"));
    let (frozen, f, _) = checkpoint(pid as i32, f, None).expect("checkpoint of the restarted process");
    drop(f.into_inner().expect("flush"));
    frozen.release(After::Kill).expect("kill");
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid as i32, &mut st, 0) };

    let (b1, b2) = (std::fs::read(&img1).unwrap(), std::fs::read(&img2).unwrap());
    let (i1, i2) = (ProcessImage::parse(&b1, &ParseOptions::ALL).unwrap(), ProcessImage::parse(&b2, &ParseOptions::ALL).unwrap());
    assert_eq!(i1.threads.len(), i2.threads.len());
    for t1 in &i1.threads {
        let t2 = i2.threads.iter().find(|t| t.rec.tid == t1.rec.tid).expect("same tid in the second image");
        let (a, b) = (&t1.rec, &t2.rec);
        assert_eq!((a.rseq_addr, a.rseq_len, a.rseq_sig), (b.rseq_addr, b.rseq_len, b.rseq_sig), "rseq of {}", a.tid);
        assert_eq!((a.robust_list, a.robust_list_len), (b.robust_list, b.robust_list_len), "robust list of {}", a.tid);
        assert_eq!(a.clear_child_tid, b.clear_child_tid, "clear_child_tid of {}", a.tid);
        assert_eq!((a.regs.fs_base, a.regs.gs_base), (b.regs.fs_base, b.regs.gs_base), "TLS of {}", a.tid);
        assert_eq!(a.sigmask, b.sigmask, "mask of {}", a.tid);
        assert_eq!((a.altstack_sp, a.altstack_size), (b.altstack_sp, b.altstack_size), "altstack of {}", a.tid);
        assert_eq!(a.comm, b.comm, "name of {}", a.tid);
    }
    assert_eq!(i1.mm.rec, i2.mm.rec, "mm fields");
    assert_eq!(i1.mm.auxv, i2.mm.auxv, "auxv");
    assert_eq!(i1.mm.exe, i2.mm.exe, "exe");
    assert_eq!(i1.sigactions, i2.sigactions, "signal dispositions");
    assert_eq!(i1.process.comm, i2.process.comm);
    let v1: Vec<(u64, u64, u32, u32)> = i1.vmas.iter().map(|v| (v.rec.start, v.rec.end, v.rec.prot, v.rec.kind)).collect();
    let v2: Vec<(u64, u64, u32, u32)> = i2.vmas.iter().map(|v| (v.rec.start, v.rec.end, v.rec.prot, v.rec.kind)).collect();
    // Adjacent VMAs may merge after the restart: compare covered bytes per prot/kind.
    let total = |v: &[(u64, u64, u32, u32)]| v.iter().map(|x| x.1 - x.0).sum::<u64>();
    assert_eq!(total(&v1), total(&v2), "\n{v1:x?}\n{v2:x?}");

    // And the second image runs to an ok verdict.
    let _ = std::fs::remove_file(&paths.verdict);
    let h = std::thread::spawn(move || restart(&img2, &RestartOpts::default()));
    std::thread::sleep(Duration::from_millis(200));
    request_stop(&paths.stop).expect("stop");
    let v = wait_verdict(&paths.verdict, T).expect("verdict");
    assert_eq!(v.trim(), "ok");
    assert!(matches!(h.join().unwrap(), Ok(RestartOutcome::Exited { code: Some(0), .. })));
}

/// A failure inside the restorer (after the old address space is gone) comes
/// back as a clear error naming the stage, and the half-made process is gone.
#[test]
fn restorer_failure_is_reported() {
    let _g = lock();
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let (img, _, pid) = dump("counters", dir.path());
    let p = write_patched(dir.path(), &img, |b| {
        patch(b, kind::MM, 0, |pl| {
            let (mut m, _) = stasis_image::records::MmRec::read_from_prefix(pl).unwrap();
            m.brk = m.start_brk - 4096; // PR_SET_MM_MAP refuses brk < start_brk
            pl[..std::mem::size_of::<stasis_image::records::MmRec>()].copy_from_slice(m.as_bytes());
        })
    });
    let e = restart(&p, &RestartOpts::default()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RestoreError::Child { errno: libc::EINVAL, .. }), "{msg}");
    assert!(msg.contains("PR_SET_MM_MAP"), "{msg}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the failed process is still there");
}

fn cap_eff(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let l = s.lines().find_map(|l| l.strip_prefix("CapEff:")).expect("CapEff");
    u64::from_str_radix(l.trim(), 16).expect("hex")
}

/// Capabilities are never raised: a workload running without CAP_NET_RAW
/// comes back without it although we (root) have it.
#[test]
fn capabilities_are_not_raised() {
    use std::os::unix::process::CommandExt;
    let _g = lock();
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let (mut cmd, paths) = Workload::command("counters", dir.path(), &[]).expect("command");
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_CAPBSET_DROP, 13 /* CAP_NET_RAW */, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn");
    let pid = child.id();
    stasis_workloads::wait_ready(&paths.ready, T).expect("ready");
    let before = cap_eff(pid);
    assert_eq!(before & (1 << 13), 0);
    let img = dir.path().join("image");
    let f = BufWriter::new(File::create(&img).expect("create image"));
    let (frozen, f, _) = checkpoint(pid as i32, f, None).expect("checkpoint");
    drop(f.into_inner().expect("flush"));
    frozen.release(After::Kill).expect("kill");
    child.wait().expect("reap");
    assert_ne!(cap_eff(std::process::id()) & (1 << 13), 0, "the test must run with CAP_NET_RAW");

    let out = restart(&img, &RestartOpts { detach: true, ..Default::default() }).expect("restart");
    let _reaper = Reaper(pid as i32);
    assert_eq!(out, RestartOutcome::Detached { pid: pid as i32 });
    assert_eq!(cap_eff(pid), before, "capabilities after restart");
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid = e.unwrap().file_name();
        let s = std::fs::read_to_string(format!("/proc/{pid}/task/{}/status", tid.to_str().unwrap())).unwrap();
        let l = s.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap();
        assert_eq!(u64::from_str_radix(l.trim(), 16).unwrap(), before, "thread {tid:?}");
    }
    request_stop(&paths.stop).expect("stop");
    assert_eq!(wait_verdict(&paths.verdict, T).expect("verdict").trim(), "ok");
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid as i32, &mut st, 0) };
    assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0);
}

/// Detached restart inside a new PID namespace while the original PID is
/// taken: the process gets its PID/TIDs in the namespace and runs to `ok`.
#[test]
fn detached_pidns_restart_while_pid_in_use() {
    let _g = lock();
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let mut w = Workload::spawn("counters", dir.path(), &[]).expect("spawn");
    w.wait_ready(T).expect("ready");
    let img = dir.path().join("image");
    let f = BufWriter::new(File::create(&img).expect("create image"));
    let (frozen, f, _) = checkpoint(w.pid() as i32, f, None).expect("checkpoint");
    drop(f.into_inner().expect("flush"));
    frozen.release(After::Stop).expect("leave stopped");
    // The original keeps its PID (stopped); restart in a namespace.
    let out = restart(&img, &RestartOpts { detach: true, pidns: true, ..Default::default() }).expect("restart");
    let RestartOutcome::Detached { pid } = out else { panic!("{out:?}") };
    assert_ne!(pid, w.pid() as i32);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:")).expect("NSpid");
    let ids: Vec<i32> = nspid.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(ids, vec![pid, w.pid() as i32], "PID inside the namespace");
    let init: i32 = status.lines().find_map(|l| l.strip_prefix("PPid:")).unwrap().trim().parse().unwrap();
    let _reaper = Reaper(init); // killing the namespace init ends the namespace
    // Both write the same verdict file: kill the stopped original first.
    w.kill_and_reap().expect("kill original");
    request_stop(&w.paths().stop).expect("stop");
    assert_eq!(wait_verdict(&w.paths().verdict, T).expect("verdict").trim(), "ok");
    let mut st = 0;
    // SAFETY: reaping the namespace init, our child.
    let r = unsafe { libc::waitpid(init, &mut st, 0) };
    assert_eq!(r, init);
}

/// Progress: the total is the image's page bytes and the advances add up to it.
#[test]
fn progress_adds_up() {
    use std::sync::atomic::{AtomicU64, Ordering};
    struct P {
        total: AtomicU64,
        done: AtomicU64,
        calls: AtomicU64,
    }
    impl stasis_user::Progress for P {
        fn set_total(&self, bytes: u64) {
            self.total.store(bytes, Ordering::SeqCst);
        }
        fn advance(&self, bytes: u64) {
            self.done.fetch_add(bytes, Ordering::SeqCst);
            self.calls.fetch_add(1, Ordering::SeqCst);
        }
    }
    let _g = lock();
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let (img, paths, pid) = dump("memory", dir.path());
    let p = P { total: AtomicU64::new(0), done: AtomicU64::new(0), calls: AtomicU64::new(0) };
    let out = restart(&img, &RestartOpts { detach: true, progress: Some(&p), ..Default::default() }).expect("restart");
    let _reaper = Reaper(pid as i32);
    assert_eq!(out, RestartOutcome::Detached { pid: pid as i32 });
    let total = p.total.load(Ordering::SeqCst);
    assert!(total > 32 << 20, "memory workload has tens of MiB of pages: {total}");
    assert_eq!(p.done.load(Ordering::SeqCst), total);
    assert!(p.calls.load(Ordering::SeqCst) >= 2, "progress came in steps");
    request_stop(&paths.stop).expect("stop");
    assert_eq!(wait_verdict(&paths.verdict, T).expect("verdict").trim(), "ok");
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid as i32, &mut st, 0) };
    assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0);
}

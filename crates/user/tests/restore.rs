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
fn patch(bytes: &mut Vec<u8>, k: u32, which: usize, f: impl FnOnce(&mut [u8])) {
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

#[test]
fn hard_rlimit_above_ours_fails_clearly() {
    let _g = lock();
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let (img, _, pid) = dump("counters", dir.path());
    let mut ours = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out pointer.
    unsafe { libc::getrlimit64(libc::RLIMIT_NOFILE, &mut ours) };
    assert!(ours.rlim_max < u64::MAX);
    let p = write_patched(dir.path(), &img, |b| {
        patch(b, kind::RLIMITS, 0, |pl| {
            let mut r = RlimitsRec::read_from_bytes(pl).unwrap();
            r.limits[libc::RLIMIT_NOFILE as usize].max = ours.rlim_max + 1;
            pl.copy_from_slice(r.as_bytes());
        })
    });
    let e = restart(&p, &RestartOpts::default()).unwrap_err();
    assert!(matches!(e, RestoreError::RlimitTooHigh { resource: 7, .. }), "{e}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
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

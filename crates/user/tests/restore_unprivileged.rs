//! Restarting without privileges fails clearly and changes nothing: a
//! non-root user cannot restart another user's image (credentials are never
//! raised), nor its own without CAP_CHECKPOINT_RESTORE (set_tid).
//!
//! The unprivileged side runs in a re-executed copy of this test binary
//! (helper test below) started with setuid(65534).
use std::fs::File;
use std::io::BufWriter;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use stasis_user::{checkpoint, restart, After, RestartOpts, RestoreError};
use stasis_workloads::Workload;

const T: Duration = Duration::from_secs(60);
const NOBODY: u32 = 65534;
const HELPER_ENV: &str = "STASIS_UNPRIV_HELPER_IMAGE";

/// Run the helper as `nobody`; it prints the restart error's Debug form.
fn restart_as_nobody(img: &Path) -> String {
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "helper_restart_as_current_user", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, img)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run helper");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn helper_restart_as_current_user() {
    let Some(img) = std::env::var_os(HELPER_ENV) else { return };
    match restart(Path::new(&img), &RestartOpts::default()) {
        Err(e) => println!("HELPER-ERROR {e:?} :: {e}"),
        Ok(o) => println!("HELPER-OK {o:?}"),
    }
}

fn image_of(dir: &Path) -> (std::path::PathBuf, u32) {
    let (mut cmd, _paths) = Workload::command("counters", dir, &[]).expect("command");
    let mut child = cmd.spawn().expect("spawn");
    let pid = child.id();
    let paths = stasis_workloads::Paths::new(dir, "counters");
    stasis_workloads::wait_ready(&paths.ready, T).expect("ready");
    let img = dir.join("image");
    let f = BufWriter::new(File::create(&img).expect("create"));
    let (frozen, f, _) = checkpoint(pid as i32, f, None).expect("checkpoint");
    drop(f.into_inner().expect("flush"));
    frozen.release(After::Kill).expect("kill");
    child.wait().expect("reap");
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    (img, pid)
}

fn open_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir_in("/tmp").expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    d
}

#[test]
fn unprivileged_restarts_fail_clearly() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("needs root to set up the unprivileged side; skipped");
        return;
    }
    // Another user's (root's) image.
    let d1 = open_dir();
    let (img, pid) = image_of(d1.path());
    let out = restart_as_nobody(&img);
    assert!(out.contains("HELPER-ERROR Credentials"), "{out}");
    assert!(out.contains("credentials are never raised"), "{out}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());

    // Its own image (root's image with the uid patched to nobody: the dump
    // side cannot checkpoint another user's process here, prlimit needs
    // CAP_SYS_RESOURCE), but no CAP_CHECKPOINT_RESTORE for set_tid.
    let mut b = std::fs::read(&img).expect("read image");
    patch_uid(&mut b, NOBODY);
    let out = restart_bytes_as_nobody(d1.path(), "image-nobody", &b);
    assert!(out.contains("HELPER-ERROR NoPermission"), "{out}");
    assert!(out.contains("CAP_CHECKPOINT_RESTORE"), "{out}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());

    // Its own image with a hard limit above ours: raising it needs
    // CAP_SYS_RESOURCE, which nobody lacks (root sets it: restore.rs).
    let mut ours = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out pointer; the helper inherits our limits.
    unsafe { libc::getrlimit64(libc::RLIMIT_SIGPENDING, &mut ours) };
    assert!(ours.rlim_max < u64::MAX);
    patch_record(&mut b, stasis_image::records::kind::RLIMITS, |pl| {
        use zerocopy::{FromBytes, IntoBytes};
        let mut r = stasis_image::records::RlimitsRec::read_from_bytes(pl).expect("RlimitsRec");
        r.limits[libc::RLIMIT_SIGPENDING as usize].max = ours.rlim_max + 1;
        pl.copy_from_slice(r.as_bytes());
    });
    let out = restart_bytes_as_nobody(d1.path(), "image-nobody-rlimit", &b);
    assert!(out.contains("HELPER-ERROR RlimitTooHigh"), "{out}");
    assert!(out.contains("CAP_SYS_RESOURCE"), "{out}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    let _ = RestoreError::NotImplemented;
}

/// Write `bytes` as the world-readable image `dir/name` and restart it as nobody.
fn restart_bytes_as_nobody(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let img = dir.join(name);
    std::fs::write(&img, bytes).expect("write");
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    restart_as_nobody(&img)
}

/// Rewrite the payload of the first record of kind `k` and fix its checksum.
fn patch_record(bytes: &mut [u8], k: u32, f: impl FnOnce(&mut [u8])) {
    let (off, len) = {
        let img = stasis_image::Image::parse(bytes).expect("parse");
        let r = img.records().iter().find(|r| r.kind == k).expect("record to patch");
        (r.payload_offset() as usize, r.payload.len())
    };
    f(&mut bytes[off..off + len]);
    let sum = stasis_image::checksum(&bytes[off..off + len]);
    let at = off + ((len + 7) & !7);
    bytes[at..at + 8].copy_from_slice(&sum.to_le_bytes());
    stasis_image::Image::parse(bytes).expect("patched image parses");
}

/// Set every uid field of the PROCESS record.
fn patch_uid(bytes: &mut [u8], uid: u32) {
    use zerocopy::{FromBytes, IntoBytes};
    patch_record(bytes, stasis_image::records::kind::PROCESS, |pl| {
        let mut p = stasis_image::records::ProcessRec::read_from_bytes(pl).expect("ProcessRec");
        p.uid = uid;
        p.euid = uid;
        p.suid = uid;
        p.fsuid = uid;
        pl.copy_from_slice(p.as_bytes());
    });
}

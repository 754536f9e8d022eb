//! Atomic image output: the engine writes `IMAGE.tmp.<pid>` (created with
//! O_EXCL next to IMAGE); only once it is complete is it fsynced, renamed over
//! IMAGE, and the directory fsynced. Until then any previous IMAGE is
//! untouched, and on failure the temporary file is removed.
//!
//! SIGINT, SIGTERM and SIGHUP while a temporary image exists are deferred:
//! the engine may be in the middle of running a system call inside the
//! frozen target, and dying then could leave the target damaged. The first
//! such signal is recorded (see [`interrupted`]) and the checkpoint is
//! abandoned as soon as the engine returns; a second one removes the
//! temporary file and kills stasis at once.

use std::ffi::{CString, OsString};
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};

use anyhow::{Context, Result};

/// Path of the temporary file, for the signal handler (null when none).
static PENDING: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());
/// The first deferred signal (0 when none).
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(sig: libc::c_int) {
    if SIGNALLED
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        return;
    }
    let p = PENDING.swap(std::ptr::null_mut(), Ordering::SeqCst);
    // SAFETY: unlink, signal and raise are async-signal-safe; p, when not
    // null, is a NUL-terminated string leaked by `arm` and never freed.
    unsafe {
        if !p.is_null() {
            libc::unlink(p);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

fn set_handler(sig: libc::c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    // SAFETY: a zeroed sigaction is valid; we fill handler, flags and mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, &sa, &mut old) != 0 {
            return libc::SIG_DFL;
        }
        old.sa_sigaction
    }
}

fn arm(path: Option<&Path>) {
    if let Some(Ok(c)) = path.map(|p| CString::new(p.as_os_str().as_bytes())) {
        // Leaked on purpose: a handler running on another thread may still
        // hold a previously published pointer, so it is never freed.
        PENDING.store(c.into_raw(), Ordering::SeqCst);
    }
    for sig in SIGNALS {
        let prev = set_handler(
            sig,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        if prev == libc::SIG_IGN {
            // Respect an inherited "ignore" (nohup).
            set_handler(sig, libc::SIG_IGN);
        }
    }
}

fn disarm() {
    PENDING.store(std::ptr::null_mut(), Ordering::SeqCst);
    let ours = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in SIGNALS {
        let prev = set_handler(sig, libc::SIG_DFL);
        if prev != ours {
            set_handler(sig, prev);
        }
    }
}

/// Defers SIGINT/SIGTERM/SIGHUP while it lives (for a checkpoint that has
/// no temporary file: one written to standard output).
pub struct DeferSignals(());

impl DeferSignals {
    pub fn new() -> DeferSignals {
        arm(None);
        DeferSignals(())
    }
}

impl Drop for DeferSignals {
    fn drop(&mut self) {
        disarm();
    }
}

/// The signal that asked us to stop during the checkpoint, if any.
pub fn interrupted() -> Option<i32> {
    match SIGNALLED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Die by `sig` (default disposition), after cleanup has run.
pub fn die_by(sig: i32) {
    // SAFETY: restoring the default action and raising a signal.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// A temporary image next to its destination; removed on drop unless committed.
pub struct TempImage {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl TempImage {
    /// Create `DEST.tmp.<our pid>` exclusively, returning it and its file.
    pub fn create(dest: &Path) -> Result<(TempImage, File)> {
        let mut name = OsString::from(dest.as_os_str());
        name.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        arm(Some(&tmp));
        Ok((
            TempImage {
                tmp,
                dest: dest.to_path_buf(),
                done: false,
            },
            file,
        ))
    }

    /// Make the image durable under its final name: fsync the file, rename
    /// it over the destination, fsync the directory.
    pub fn commit(mut self, file: File) -> Result<()> {
        file.sync_all()
            .with_context(|| format!("cannot fsync {}", self.tmp.display()))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.tmp.display(),
                self.dest.display()
            )
        })?;
        self.done = true;
        disarm();
        let dir = match self.dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot fsync directory {}", dir.display()))?;
        Ok(())
    }
}

/// Make a finished image durable: commit the temporary file, or, when the image
/// went to standard output, fsync that (a regular file; pipes cannot be fsynced).
pub fn finish(temp: Option<TempImage>, file: File) -> Result<()> {
    match temp {
        Some(t) => t.commit(file),
        None => match file.sync_all() {
            Err(e) if e.raw_os_error() != Some(libc::EINVAL) => {
                Err(e).context("cannot fsync standard output")
            }
            _ => Ok(()),
        },
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
            disarm();
        }
    }
}

//! Atomic image output: the engine writes `IMAGE.tmp.<pid>` (created with
//! O_EXCL next to IMAGE); only once it is complete is it fsynced, renamed over
//! IMAGE, and the directory fsynced. Until then any previous IMAGE is
//! untouched, and on failure (error, panic, or SIGINT/SIGTERM/SIGHUP) the
//! temporary file is removed.

use std::ffi::{CString, OsString};
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, Ordering};

use anyhow::{Context, Result};

/// Path of the temporary file, for the signal handler (null when none).
static PENDING: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_fatal_signal(sig: libc::c_int) {
    let p = PENDING.swap(std::ptr::null_mut(), Ordering::SeqCst);
    // SAFETY: unlink, signal and raise are async-signal-safe; p, when not
    // null, is a NUL-terminated string leaked by `arm` and never freed while
    // published.
    unsafe {
        if !p.is_null() {
            libc::unlink(p);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

fn arm(path: &Path) {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else { return };
    // Leaked on purpose: a handler running on another thread may still hold
    // a previously published pointer, so it is never freed.
    PENDING.store(c.into_raw(), Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installing a handler that only calls async-signal-safe functions.
        unsafe {
            let prev = libc::signal(sig, on_fatal_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
            if prev == libc::SIG_IGN {
                // Respect an inherited "ignore" (nohup).
                libc::signal(sig, libc::SIG_IGN);
            }
        }
    }
}

fn disarm() {
    PENDING.store(std::ptr::null_mut(), Ordering::SeqCst);
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
        arm(&tmp);
        Ok((TempImage { tmp, dest: dest.to_path_buf(), done: false }, file))
    }

    /// Make the image durable under its final name: fsync the file, rename
    /// it over the destination, fsync the directory.
    pub fn commit(mut self, file: File) -> Result<()> {
        file.sync_all().with_context(|| format!("cannot fsync {}", self.tmp.display()))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!("cannot rename {} to {}", self.tmp.display(), self.dest.display())
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

impl Drop for TempImage {
    fn drop(&mut self) {
        if !self.done {
            disarm();
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

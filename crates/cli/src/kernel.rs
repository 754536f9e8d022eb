//! The kernel engine's client for checkpoints: `/dev/stasis` (stasis.ko) through
//! the ioctl ABI of `stasis-abi`. (A kernel restart is driven by stasis-user's
//! restart in kernel mode, `RestartOpts::kernel`.)
//!
//! Order of a checkpoint (same atomic output as the user engine):
//! 1. VERSION: ABI version and struct size must match ours (else exit 4); the
//!    files extension is needed when the target has open descriptors (we try
//!    `modprobe stasis_files` once, else exit 4 naming the module).
//! 2. CHECKPOINT with `CHECKPOINT_KEEP_FROZEN` into the temporary image's fd:
//!    the module freezes every thread, writes the image from inside the
//!    target, and leaves every thread parked.
//! 3. fsync, rename over IMAGE, fsync the directory (`TempImage::commit`).
//! 4. Only then the target is released: THAW (`--leave-running`); SIGKILL
//!    while parked, then THAW (`--kill`: a parked thread dies on SIGKILL and
//!    runs no user instruction); SIGSTOP while parked, then THAW (`--stop`:
//!    the stop is taken on the way back to user mode, before any
//!    instruction). The module's own `CHECKPOINT_KILL` is not used: it kills
//!    before the image is durable.
//!
//! On any error before step 4 the device fd is closed, which releases the
//! target running (the module guarantees that, also if stasis dies).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use anyhow::Result;
use stasis_abi::{
    CheckpointArgs, VersionInfo, ABI_VERSION, CHECKPOINT_KEEP_FROZEN, DEVICE_PATH, EXT_FILES,
    IOC_CHECKPOINT, IOC_THAW, IOC_VERSION,
};
use stasis_user::{After, CheckpointStats};

use crate::atomic::{self, TempImage};
use crate::error::CliError;

/// How long `--kill` / `--stop` wait for the target to die or stop.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the kernel engine. Exit codes are chosen from these in `error`.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot open {DEVICE_PATH}")]
    Open(#[source] io::Error),
    #[error("{DEVICE_PATH}: STASIS_IOC_VERSION failed")]
    Version(#[source] io::Error),
    #[error(
        "{DEVICE_PATH} speaks ABI version {module} (struct size {size}), this stasis speaks version {ABI_VERSION} (size {ours})",
        ours = std::mem::size_of::<VersionInfo>()
    )]
    AbiMismatch { module: u32, size: u32 },
    #[error("PID {pid} has open file descriptors: the kernel engine needs extension {name} (module stasis_{name}.ko), which is not loaded")]
    ExtensionMissing { pid: i32, name: &'static str },
    #[error("the kernel engine (STASIS_IOC_CHECKPOINT) failed")]
    Checkpoint {
        #[source]
        source: io::Error,
        /// The files extension was loaded (for the EOPNOTSUPP hint).
        files: bool,
    },
    #[error("STASIS_IOC_THAW failed")]
    Thaw(#[source] io::Error),
    #[error("sending {sig} to PID {pid} failed (it was let go running)")]
    Signal {
        pid: i32,
        sig: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{sig} was sent, but PID {pid} did not {what} within {secs} s", secs = RELEASE_TIMEOUT.as_secs())]
    ReleaseTimeout {
        pid: i32,
        sig: &'static str,
        what: &'static str,
    },
}

fn ioctl(fd: &File, req: u32, arg: *mut u8) -> io::Result<()> {
    // SAFETY: the request encodes the size of the struct `arg` points to (or
    // takes no argument); the module checks it before copying.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::c_ulong, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An open /dev/stasis whose ABI matches ours.
pub struct Device {
    dev: File,
    version: VersionInfo,
}

impl Device {
    pub fn open() -> Result<Device, KernelError> {
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(DEVICE_PATH)
            .map_err(KernelError::Open)?;
        let version = query(&dev)?;
        Ok(Device { dev, version })
    }

    fn has(&self, ext: u32) -> bool {
        self.version.extensions & (1u64 << ext) != 0
    }

    /// Make sure the extensions the target needs are loaded: the files
    /// extension when it has any open descriptor (or when we cannot tell).
    pub fn require_extensions(&mut self, pid: i32) -> Result<(), KernelError> {
        if self.has(EXT_FILES) || !has_open_fds(pid) {
            return Ok(());
        }
        // Loading it needs root and an installed module; failure is reported below.
        let _ = std::process::Command::new("modprobe")
            .args(["-q", "stasis_files"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        self.version = query(&self.dev)?;
        if self.has(EXT_FILES) {
            return Ok(());
        }
        Err(KernelError::ExtensionMissing { pid, name: "files" })
    }

    /// Checkpoint `pid` into `out` (at its position), leaving it frozen.
    pub fn checkpoint(self, pid: i32, out: &File) -> Result<Checkpointed, KernelError> {
        let mut a = CheckpointArgs {
            pid,
            fd: out.as_raw_fd(),
            flags: CHECKPOINT_KEEP_FROZEN,
            ..CheckpointArgs::default()
        };
        let started = Instant::now();
        ioctl(
            &self.dev,
            IOC_CHECKPOINT,
            &mut a as *mut CheckpointArgs as *mut u8,
        )
        .map_err(|source| KernelError::Checkpoint {
            source,
            files: self.has(EXT_FILES),
        })?;
        Ok(Checkpointed {
            dev: self,
            pid,
            args: a,
            frozen_at: started + Duration::from_nanos(a.freeze_ns),
        })
    }
}

/// Steps 1–3 of a checkpoint (see the module comment): the image is durable
/// (under its final name when `temp` is given) and the target still parked
/// when this returns Ok. Any error closes the device (the target runs on)
/// and drops `temp` (the temporary file is removed).
pub fn write_image(
    pid: i32,
    file: File,
    temp: Option<TempImage>,
) -> Result<(Checkpointed, CheckpointStats)> {
    let mut dev = Device::open()?;
    dev.require_extensions(pid)?;
    let r = dev.checkpoint(pid, &file);
    // A deferred SIGINT/SIGTERM/SIGHUP abandons the checkpoint (the freeze
    // phase also returns EINTR for it).
    if let Some(sig) = atomic::interrupted() {
        return Err(CliError::Interrupted(sig).into());
    }
    let held = r?;
    crate::atomic::finish(temp, file)?;
    let a = &held.args;
    let stats = CheckpointStats {
        threads: a.nr_threads as usize,
        vmas: a.nr_vmas as usize,
        page_bytes: a.pages.saturating_mul(page_size()),
        image_bytes: a.bytes,
        frozen: held.frozen_at.elapsed(),
    };
    Ok((held, stats))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

fn query(dev: &File) -> Result<VersionInfo, KernelError> {
    let mut v = VersionInfo::default();
    ioctl(dev, IOC_VERSION, &mut v as *mut VersionInfo as *mut u8).map_err(|e| {
        // A module without this ioctl (another ABI) answers ENOTTY.
        if e.raw_os_error() == Some(libc::ENOTTY) {
            KernelError::AbiMismatch { module: 0, size: 0 }
        } else {
            KernelError::Version(e)
        }
    })?;
    if v.abi_version != ABI_VERSION || v.struct_size as usize != std::mem::size_of::<VersionInfo>()
    {
        return Err(KernelError::AbiMismatch {
            module: v.abi_version,
            size: v.struct_size,
        });
    }
    Ok(v)
}

/// Whether `pid` has an open file descriptor (true when /proc does not say).
fn has_open_fds(pid: i32) -> bool {
    match std::fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(mut d) => d.next().is_some(),
        Err(_) => true,
    }
}

/// A target whose image was written and whose threads are still parked.
/// Dropping it without [`Checkpointed::release`] leaves it parked until the
/// device is closed (which releases it running).
pub struct Checkpointed {
    dev: Device,
    pid: i32,
    pub args: CheckpointArgs,
    /// When the last thread was parked.
    pub frozen_at: Instant,
}

impl Checkpointed {
    /// Release the target as asked; see the module comment for the order.
    pub fn release(self, after: After) -> Result<(), KernelError> {
        // A pidfd, taken while the target cannot exit, so the signal cannot
        // reach a recycled PID. Kernels without pidfd_open fall back to kill().
        // SAFETY: pidfd_open takes a pid and flags; the result is a fresh fd or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, 0) } as i32;
        // SAFETY: raw is a fresh descriptor nothing else owns.
        let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) });
        let (sig, name, what) = match after {
            After::LeaveRunning => return self.thaw(),
            After::Kill => (libc::SIGKILL, "SIGKILL", "die"),
            After::Stop => (libc::SIGSTOP, "SIGSTOP", "stop"),
        };
        let sent = match &pidfd {
            // SAFETY: pidfd_send_signal(pidfd, sig, NULL, 0).
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            },
            // SAFETY: plain kill().
            None => libc::c_long::from(unsafe { libc::kill(self.pid, sig) }),
        };
        if sent != 0 {
            let source = io::Error::last_os_error();
            // Whatever happened, let the target go (running).
            let _ = self.thaw_raw();
            return Err(KernelError::Signal {
                pid: self.pid,
                sig: name,
                source,
            });
        }
        // The signal is queued while every thread is parked; THAW lets them
        // act on it before returning to user mode.
        self.thaw()?;
        let deadline = Instant::now() + RELEASE_TIMEOUT;
        loop {
            let done = match after {
                After::Kill => is_dead(self.pid, pidfd.as_ref()),
                _ => is_stopped(self.pid),
            };
            if done {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(KernelError::ReleaseTimeout {
                    pid: self.pid,
                    sig: name,
                    what,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn thaw_raw(&self) -> io::Result<()> {
        ioctl(&self.dev.dev, IOC_THAW, std::ptr::null_mut())
    }

    fn thaw(&self) -> Result<(), KernelError> {
        self.thaw_raw().map_err(KernelError::Thaw)
    }
}

/// Gone, or a zombie (its parent reaps it).
fn is_dead(pid: i32, pidfd: Option<&OwnedFd>) -> bool {
    if let Some(fd) = pidfd {
        // A pidfd polls readable once the process has exited.
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        return unsafe { libc::poll(&mut p, 1, 0) } > 0;
    }
    proc_state(pid).is_none_or(|s| s == 'Z' || s == 'X')
}

fn is_stopped(pid: i32) -> bool {
    proc_state(pid) == Some('T')
}

fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

//! Kernel mode of the restart: the parent's side of the /dev/stasis restart
//! protocol (stasis-abi's `STASIS_IOC_RESTART`).
//!
//! 1. [`Device::open`]: open /dev/stasis, check its ABI version, and let the
//!    module validate the whole image against this machine
//!    (`RESTART_VALIDATE_ONLY | RESTART_KEEP`) before anything is forked; the
//!    module keeps the validated image in our open file.
//! 2. The child and the restorer run as in user mode, except that the
//!    restorer leaves memory to the module: every thread parks in
//!    `STASIS_IOC_RESTART_THREAD` (the leader last, with the fds to map and
//!    to close) after the leader sent [`super::abi::STATUS_PARKING`].
//! 3. [`Device::restart`]: `STASIS_IOC_RESTART` with `RESTART_KEPT` for the
//!    future process (the image is not read again); on success every thread
//!    runs in its checkpointed context.
//!
//! The restorer cannot depend on stasis-abi: its copies of the ioctl number
//! and the structs it passes are checked against stasis-abi here.

use std::fs::File;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use stasis_abi::{
    RestartArgs, VersionInfo, ABI_VERSION, DEVICE_PATH, IOC_RESTART, IOC_VERSION, RESTART_KEEP, RESTART_KEPT,
    RESTART_VALIDATE_ONLY,
};

use super::abi;
use super::RestoreError;

// The restorer's copies of stasis-abi's restart-thread interface.
const _: () = assert!(abi::IOC_RESTART_THREAD == stasis_abi::IOC_RESTART_THREAD);
const _: () = assert!(abi::RESTART_MAX_FDS == stasis_abi::RESTART_MAX_FDS);
const _: () = assert!(size_of::<abi::RestartThreadArgs>() == size_of::<stasis_abi::RestartThreadArgs>());
const _: () = assert!(offset_of!(abi::RestartThreadArgs, flags) == offset_of!(stasis_abi::RestartThreadArgs, flags));
const _: () =
    assert!(offset_of!(abi::RestartThreadArgs, timeout_ms) == offset_of!(stasis_abi::RestartThreadArgs, timeout_ms));
const _: () = assert!(offset_of!(abi::RestartThreadArgs, map_fds) == offset_of!(stasis_abi::RestartThreadArgs, map_fds));
const _: () =
    assert!(offset_of!(abi::RestartThreadArgs, close_fds) == offset_of!(stasis_abi::RestartThreadArgs, close_fds));
const _: () =
    assert!(offset_of!(abi::RestartThreadArgs, nr_map_fds) == offset_of!(stasis_abi::RestartThreadArgs, nr_map_fds));
const _: () =
    assert!(offset_of!(abi::RestartThreadArgs, nr_close_fds) == offset_of!(stasis_abi::RestartThreadArgs, nr_close_fds));
const _: () = assert!(size_of::<abi::MapFd>() == size_of::<stasis_abi::MapFd>());
const _: () = assert!(offset_of!(abi::MapFd, start) == offset_of!(stasis_abi::MapFd, start));
const _: () = assert!(offset_of!(abi::MapFd, fd) == offset_of!(stasis_abi::MapFd, fd));
// The close list the leader passes is the `i32` array of `Args::close_fds`.
const _: () = assert!(size_of::<RawFd>() == size_of::<i32>());

/// What a failed `STASIS_IOC_RESTART` with `RESTART_VALIDATE_ONLY` means.
fn refused(errno: i32) -> RestoreError {
    let reason = match errno {
        libc::EINVAL => "the kernel module refused the image",
        libc::EOPNOTSUPP => "the image is valid but not restartable on this machine by the kernel module",
        libc::EFBIG => "the image is too large for the kernel module (stasis-abi's RESTART_MAX_IMAGE)",
        libc::ENOTTY => "the kernel module does not know STASIS_IOC_RESTART (a module without restart?)",
        libc::EBADF => "the kernel module cannot read the image file",
        _ => "the kernel module's validation of the image failed",
    };
    RestoreError::KernelRefused { reason, errno }
}

/// An open /dev/stasis that speaks our ABI version.
pub(super) struct Device {
    fd: OwnedFd,
}

/// `ioctl(fd, req, arg)` with a positive errno on failure.
fn ioctl(fd: RawFd, req: u32, arg: *mut u8) -> Result<(), i32> {
    // SAFETY: `req` encodes the size of the struct `arg` points to; the module
    // checks it before copying.
    let r = unsafe { libc::ioctl(fd, req as libc::c_ulong, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    } else {
        Ok(())
    }
}

impl Device {
    /// Open /dev/stasis and check its ABI version.
    pub(super) fn open() -> Result<Device, RestoreError> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(DEVICE_PATH)
            .map_err(|source| RestoreError::KernelModule { source })?;
        let fd = OwnedFd::from(f);
        let mut v = VersionInfo::default();
        match ioctl(fd.as_raw_fd(), IOC_VERSION, &mut v as *mut VersionInfo as *mut u8) {
            Ok(()) => {}
            // A module without this ioctl speaks another ABI.
            Err(libc::ENOTTY) => return Err(RestoreError::KernelAbi { module: 0, ours: ABI_VERSION }),
            Err(e) => {
                return Err(RestoreError::KernelModule { source: std::io::Error::from_raw_os_error(e) });
            }
        }
        if v.abi_version != ABI_VERSION || v.struct_size as usize != size_of::<VersionInfo>() {
            return Err(RestoreError::KernelAbi { module: v.abi_version, ours: ABI_VERSION });
        }
        Ok(Device { fd })
    }

    /// Any fd standing in for /dev/stasis (tests: /dev/null, whose ioctls fail
    /// with ENOTTY).
    #[cfg(test)]
    fn from_fd(fd: OwnedFd) -> Device {
        Device { fd }
    }

    pub(super) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Let the module validate the whole image against this machine, and keep it
    /// (in this open file) for [`Device::restart`]: it is read and checked once.
    pub(super) fn validate(&self, image: &File) -> Result<RestartArgs, RestoreError> {
        let mut a = RestartArgs {
            fd: image.as_raw_fd(),
            flags: RESTART_VALIDATE_ONLY | RESTART_KEEP,
            pid: 0,
            ..RestartArgs::default()
        };
        ioctl(self.raw(), IOC_RESTART, &mut a as *mut RestartArgs as *mut u8).map_err(refused)?;
        Ok(a)
    }

    /// Restart the image [`Device::validate`] kept into the threads of `pid` (our
    /// view of the future process), which are parked in `STASIS_IOC_RESTART_THREAD`.
    pub(super) fn restart(&self, _image: &File, pid: i32) -> Result<RestartArgs, RestoreError> {
        let mut a = RestartArgs { fd: -1, flags: RESTART_KEPT, pid, timeout_ms: 0, ..RestartArgs::default() };
        ioctl(self.raw(), IOC_RESTART, &mut a as *mut RestartArgs as *mut u8).map_err(|errno| {
            let what = match errno {
                libc::EINVAL | libc::EOPNOTSUPP | libc::EFBIG => "the kernel module refused the image",
                libc::ETIMEDOUT => "the kernel module's restart failed (the future process's threads did not all park)",
                libc::EPERM | libc::EACCES => "the kernel module's restart failed (not allowed to ptrace the future process)",
                _ => "the kernel module's restart failed",
            };
            RestoreError::Kernel { what, errno }
        })?;
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_reason() {
        let e = refused(libc::EINVAL).to_string();
        assert!(e.starts_with("the kernel module refused the image: "), "{e}");
        assert!(e.ends_with("(see dmesg)"), "{e}");
        let e = refused(libc::EOPNOTSUPP).to_string();
        assert!(e.contains("not restartable on this machine"), "{e}");
        let e = RestoreError::Kernel { what: "the kernel module's restart failed", errno: libc::ESRCH }.to_string();
        assert_eq!(e, "the kernel module's restart failed: No such process (os error 3) (see dmesg)");
    }

    /// The whole kernel-mode path but the module: /dev/null stands in for
    /// /dev/stasis, so every STASIS_IOC_RESTART_THREAD and the final
    /// STASIS_IOC_RESTART fail with ENOTTY. The restorer must get that far
    /// without mapping any VMA (a crash would be ChildDied), report it, and
    /// leave no process behind.
    #[test]
    fn kernel_mode_up_to_the_module() {
        use std::io::BufWriter;
        use std::time::Duration;
        let t = Duration::from_secs(60);
        for (name, pidns) in [("files", false), ("fpu", false), ("fpu", true)] {
            let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
            let mut w = stasis_workloads::Workload::spawn(name, dir.path(), &[]).expect("spawn");
            w.wait_ready(t).expect("ready");
            let img_path = dir.path().join("image");
            let f = BufWriter::new(File::create(&img_path).expect("create image"));
            let (frozen, f, _) = crate::checkpoint(w.pid() as i32, f, None).expect("checkpoint");
            drop(f.into_inner().expect("flush"));
            frozen.release(crate::After::Kill).expect("kill");
            let pid = w.pid();
            w.kill_and_reap().expect("reap");

            let file = File::open(&img_path).expect("open image");
            let bytes = std::fs::read(&img_path).expect("read image");
            let supported = [stasis_image::Extension::Core, stasis_image::Extension::Files];
            let img = stasis_image::ProcessImage::parse(&bytes, &stasis_image::ParseOptions { supported: &supported })
                .expect("parse");
            let null = OwnedFd::from(File::options().read(true).write(true).open("/dev/null").expect("/dev/null"));
            let opts = super::super::RestartOpts { pidns, kernel: true, ..Default::default() };
            let xareas = super::super::plan::machine_check(&img, false).expect("machine check");
            let e = super::super::run(&img, &file, &bytes, &opts, Some(Device::from_fd(null)), xareas).unwrap_err();
            let msg = e.to_string();
            eprintln!("{name} (pidns {pidns}): {msg}");
            match &e {
                // A thread's RESTART_THREAD failed before the leader parked.
                RestoreError::Child { stage, errno, .. } => {
                    assert_eq!(*stage, abi::stage::name(abi::stage::KERNEL_THREAD), "{name}: {msg}");
                    assert_eq!(*errno, libc::ENOTTY, "{name}: {msg}");
                }
                // The leader sent STATUS_PARKING; our RESTART failed.
                RestoreError::Kernel { errno, .. } => assert_eq!(*errno, libc::ENOTTY, "{name}: {msg}"),
                _ => panic!("{name} (pidns {pidns}): unexpected error: {msg}"),
            }
            if !pidns {
                assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "{name}: PID {pid} still exists");
            }
        }
    }

    #[test]
    fn open_without_module_is_kernel_module_error() {
        if std::path::Path::new(DEVICE_PATH).exists() {
            eprintln!("skipped: {DEVICE_PATH} exists here");
            return;
        }
        match Device::open() {
            Err(RestoreError::KernelModule { source }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a missing {DEVICE_PATH}"),
        }
    }
}

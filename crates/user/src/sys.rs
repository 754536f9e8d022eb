//! Thin wrappers over the raw Linux system calls the user engine needs.
//!
//! Every wrapper returns `io::Result` (errno turned into `io::Error`), retries
//! on `EINTR` where that is harmless, and keeps its `unsafe` to the single
//! libc call, with the reason it is sound next to it. Constants that the
//! `libc` crate lacks (or names differently) are defined here.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// ptrace request numbers (x86_64).
pub mod req {
    pub const PEEKDATA: u32 = 2;
    pub const POKEDATA: u32 = 5;
    pub const CONT: u32 = 7;
    pub const KILL: u32 = 8;
    pub const DETACH: u32 = 17;
    pub const SYSCALL: u32 = 24;
    pub const SETOPTIONS: u32 = 0x4200;
    pub const GETEVENTMSG: u32 = 0x4201;
    pub const GETSIGINFO: u32 = 0x4202;
    pub const GETREGSET: u32 = 0x4204;
    pub const SETREGSET: u32 = 0x4205;
    pub const SEIZE: u32 = 0x4206;
    pub const INTERRUPT: u32 = 0x4207;
    pub const LISTEN: u32 = 0x4208;
    pub const PEEKSIGINFO: u32 = 0x4209;
    pub const GETSIGMASK: u32 = 0x420a;
    pub const SETSIGMASK: u32 = 0x420b;
    pub const GET_RSEQ_CONFIGURATION: u32 = 0x420f;
}

/// ptrace options (PTRACE_O_*).
pub mod opt {
    pub const TRACESYSGOOD: u64 = 0x01;
    pub const TRACEFORK: u64 = 0x02;
    pub const TRACEVFORK: u64 = 0x04;
    pub const TRACECLONE: u64 = 0x08;
    pub const TRACEEXEC: u64 = 0x10;
    pub const TRACEEXIT: u64 = 0x40;
}

/// ptrace events (status >> 16 of a stop).
pub mod event {
    pub const FORK: i32 = 1;
    pub const VFORK: i32 = 2;
    pub const CLONE: i32 = 3;
    pub const EXEC: i32 = 4;
    pub const EXIT: i32 = 6;
    /// Interrupt stop, group stop of a seized tracee, or the first stop of an
    /// auto-attached child.
    pub const STOP: i32 = 128;
}

/// ELF note types of the regsets.
pub const NT_PRSTATUS: u32 = 1;
pub const NT_X86_XSTATE: u32 = 0x202;
/// NT_PRFPREG: the FXSAVE image (512 bytes), the FP regset of CPUs without XSAVE.
pub const NT_PRFPREG: u32 = 2;
/// Flag of `ptrace_peeksiginfo_args`: read the process-wide queue.
pub const PEEKSIGINFO_SHARED: u32 = 1;
/// kcmp(2) type: same open file description.
pub const KCMP_FILE: i32 = 0;

/// System call numbers (x86_64) used directly.
pub mod nr {
    pub const BRK: i64 = 12;
    pub const RT_SIGACTION: i64 = 13;
    pub const GETITIMER: i64 = 36;
    pub const SIGALTSTACK: i64 = 131;
    pub const PRCTL: i64 = 157;
    pub const TIMER_GETTIME: i64 = 224;
    pub const TIMER_GETOVERRUN: i64 = 225;
    pub const RT_SIGSUSPEND: i64 = 130;
    pub const PSELECT6: i64 = 270;
    pub const PPOLL: i64 = 271;
    pub const EPOLL_PWAIT: i64 = 281;
    pub const IO_PGETEVENTS: i64 = 333;
    pub const EPOLL_PWAIT2: i64 = 441;
    pub const MMAP: i64 = 9;
    pub const MUNMAP: i64 = 11;
}

/// Kernel-internal syscall restart codes seen in rax at a ptrace stop.
pub const ERESTARTSYS: i64 = 512;
pub const ERESTARTNOINTR: i64 = 513;
pub const ERESTARTNOHAND: i64 = 514;
pub const ERESTART_RESTARTBLOCK: i64 = 516;

fn cvt(r: libc::c_long) -> io::Result<libc::c_long> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_int(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Raw ptrace(2). Returns the kernel's return value (for PEEK requests this is
/// the data word: callers of those use [`ptrace_peek`]).
///
/// # Safety
/// `addr` and `data` are passed to the kernel as they are: for requests that
/// read or write through them they must point to memory valid for that
/// request (e.g. an `iovec` for PTRACE_GETREGSET).
pub unsafe fn ptrace(request: u32, tid: i32, addr: usize, data: usize) -> io::Result<i64> {
    // SAFETY: forwarded to the caller (see the function's contract).
    let r = unsafe {
        libc::syscall(
            libc::SYS_ptrace,
            request as libc::c_long,
            tid as libc::c_long,
            addr,
            data,
        )
    };
    cvt(r)
}

/// PTRACE_PEEKDATA: one word of the tracee's memory.
pub fn ptrace_peek(tid: i32, addr: u64) -> io::Result<u64> {
    let mut word: u64 = 0;
    // SAFETY: the raw syscall (not glibc's wrapper) stores the word at `data`,
    // which points to our local u64.
    unsafe {
        ptrace(
            req::PEEKDATA,
            tid,
            addr as usize,
            &mut word as *mut u64 as usize,
        )
    }?;
    Ok(word)
}

/// PTRACE_POKEDATA: write one word of the tracee's memory (works on
/// read-only text too, as debuggers do).
pub fn ptrace_poke(tid: i32, addr: u64, word: u64) -> io::Result<()> {
    // SAFETY: POKEDATA reads nothing from our memory; `data` is the value.
    unsafe { ptrace(req::POKEDATA, tid, addr as usize, word as usize) }?;
    Ok(())
}

/// A decoded wait status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStatus {
    /// Exited with a code.
    Exited(i32),
    /// Killed by a signal.
    Signaled(i32),
    /// A ptrace stop: `sig` = WSTOPSIG, `event` = status >> 16.
    Stopped { sig: i32, event: i32 },
    /// Continued (only with WCONTINUED).
    Continued,
}

impl WaitStatus {
    pub fn from_raw(status: i32) -> WaitStatus {
        if libc::WIFEXITED(status) {
            WaitStatus::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            WaitStatus::Signaled(libc::WTERMSIG(status))
        } else if libc::WIFSTOPPED(status) {
            WaitStatus::Stopped {
                sig: libc::WSTOPSIG(status),
                event: (status >> 16) & 0xffff,
            }
        } else {
            WaitStatus::Continued
        }
    }
}

/// waitpid(tid, __WALL | extra). `Ok(None)` when WNOHANG is given and nothing
/// is ready. Retries on EINTR.
pub fn waitpid(tid: i32, extra: i32) -> io::Result<Option<(i32, WaitStatus)>> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: status points to a local int.
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | extra) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        return Ok(Some((r, WaitStatus::from_raw(status))));
    }
}

/// Maximum number of iovecs per process_vm_readv call.
pub const IOV_MAX: usize = 1024;

/// process_vm_readv: fill `local` from the remote ranges `(addr, len)` in order.
/// Returns the number of bytes read (short on a fault in a remote range).
pub fn vm_read(pid: i32, local: &mut [u8], remote: &[(u64, usize)]) -> io::Result<usize> {
    let total: usize = remote.iter().map(|r| r.1).sum();
    if total > local.len() || remote.len() > IOV_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "vm_read: bad iovec sizes",
        ));
    }
    let liov = libc::iovec {
        iov_base: local.as_mut_ptr().cast(),
        iov_len: total,
    };
    let riov: Vec<libc::iovec> = remote
        .iter()
        .map(|&(a, l)| libc::iovec {
            iov_base: a as usize as *mut libc::c_void,
            iov_len: l,
        })
        .collect();
    // SAFETY: the local iovec covers `total` bytes of `local`, which we own
    // mutably; remote iovecs are only interpreted in the target's address space.
    let r = unsafe {
        libc::process_vm_readv(pid, &liov, 1, riov.as_ptr(), riov.len() as libc::c_ulong, 0)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// process_vm_writev of one buffer to one remote address.
pub fn vm_write(pid: i32, addr: u64, data: &[u8]) -> io::Result<usize> {
    let liov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let riov = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: the local iovec covers `data` which the kernel only reads.
    let r = unsafe { libc::process_vm_writev(pid, &liov, 1, &riov, 1, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// pidfd_open(pid, 0).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments.
    let r = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// pidfd_getfd(pidfd, targetfd, 0): a duplicate of the target's fd (same
/// open file description, so flags and offset are shared with the target).
pub fn pidfd_getfd(pidfd: &OwnedFd, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments.
    let r = cvt(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })?;
    // SAFETY: the kernel returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// kcmp(pid, pid, KCMP_FILE, fd1, fd2): 0 when both fds refer to the same
/// open file description, 1 or 2 for an ordering otherwise.
pub fn kcmp_file(pid: i32, fd1: i32, fd2: i32) -> io::Result<i32> {
    // SAFETY: plain integer arguments.
    let r = cvt(unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            KCMP_FILE,
            fd1 as libc::c_ulong,
            fd2 as libc::c_ulong,
        )
    })?;
    Ok(r as i32)
}

/// get_robust_list(tid): (head address, length).
pub fn get_robust_list(tid: i32) -> io::Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: libc::size_t = 0;
    // SAFETY: both out-pointers point to locals of the right size.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid,
            &mut head as *mut u64,
            &mut len as *mut libc::size_t,
        )
    })?;
    Ok((head, len as u64))
}

/// prlimit(pid, resource, NULL, &old): (cur, max).
pub fn prlimit_get(pid: i32, resource: u32) -> io::Result<(u64, u64)> {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: no new limit is passed; `old` is a local rlimit64.
    cvt_int(unsafe {
        libc::prlimit64(
            pid,
            resource as libc::__rlimit_resource_t,
            std::ptr::null(),
            &mut old,
        )
    })?;
    Ok((old.rlim_cur, old.rlim_max))
}

/// kill(pid, sig).
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    cvt_int(unsafe { libc::kill(pid, sig) })?;
    Ok(())
}

/// tgkill(tgid, tid, sig).
pub fn tgkill(tgid: i32, tid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    cvt(unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) })?;
    Ok(())
}

/// The running kernel's release string (uname -r).
pub fn kernel_release() -> io::Result<String> {
    // SAFETY: utsname is plain old data; zeroed is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid utsname to fill.
    cvt_int(unsafe { libc::uname(&mut u) })?;
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// sysconf(_SC_PAGESIZE).
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory arguments.
    let r = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if r <= 0 {
        4096
    } else {
        r as u64
    }
}

/// CLOCK_REALTIME in nanoseconds.
pub fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn cpath(p: &OsStr) -> io::Result<CString> {
    CString::new(p.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// open(path, flags) returning an owned fd (O_CLOEXEC is always added).
pub fn open(path: &OsStr, flags: i32) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let fd = cvt_int(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// stat(path) (follows symlinks, so /proc/PID/fd/N gives the open object).
pub fn stat(path: &OsStr) -> io::Result<libc::stat64> {
    let c = cpath(path)?;
    // SAFETY: stat64 is plain old data.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out struct.
    cvt_int(unsafe { libc::stat64(c.as_ptr(), &mut st) })?;
    Ok(st)
}

/// pipe2(O_CLOEXEC | extra): (read end, write end).
pub fn pipe(extra: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is an array of two ints.
    cvt_int(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | extra) })?;
    // SAFETY: two fresh fds owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// fcntl(fd, cmd, arg) for integer commands (F_GETPIPE_SZ, F_SETPIPE_SZ, F_GETFL...).
pub fn fcntl_int(fd: &impl AsRawFd, cmd: i32, arg: i32) -> io::Result<i32> {
    // SAFETY: integer-argument fcntl commands only.
    cvt_int(unsafe { libc::fcntl(fd.as_raw_fd(), cmd, arg) })
}

/// ioctl(fd, FIONREAD): bytes available to read (pipes).
pub fn fionread(fd: &impl AsRawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD stores an int at the pointer.
    cvt_int(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) })?;
    Ok(n.max(0) as usize)
}

/// tee(2) without consuming the input pipe.
pub fn tee(
    fd_in: &impl AsRawFd,
    fd_out: &impl AsRawFd,
    len: usize,
    flags: u32,
) -> io::Result<usize> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::tee(fd_in.as_raw_fd(), fd_out.as_raw_fd(), len, flags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// read(2) into `buf`; Ok(0) at EOF. Retries on EINTR.
pub fn read(fd: &impl AsRawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for writes of its length.
        let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        return Ok(r as usize);
    }
}

/// pread(2) into `buf` at `off`. Retries on EINTR.
pub fn pread(fd: &impl AsRawFd, buf: &mut [u8], off: u64) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for writes of its length.
        let r = unsafe {
            libc::pread64(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                off as i64,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        return Ok(r as usize);
    }
}

/// lseek(fd, off, whence). SEEK_DATA/SEEK_HOLE past the data give ENXIO.
pub fn lseek(fd: &impl AsRawFd, off: u64, whence: i32) -> io::Result<u64> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::lseek64(fd.as_raw_fd(), off as i64, whence) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as u64)
}

/// PAGEMAP_SCAN page categories (linux/fs.h).
pub mod page_is {
    pub const FILE: u64 = 1 << 2;
    pub const PRESENT: u64 = 1 << 3;
    pub const SWAPPED: u64 = 1 << 4;
    pub const PFNZERO: u64 = 1 << 5;
}

/// Argument of the PAGEMAP_SCAN ioctl on /proc/PID/pagemap (Linux 6.7+).
#[repr(C)]
#[derive(Default)]
pub struct PmScanArg {
    pub size: u64,
    pub flags: u64,
    pub start: u64,
    pub end: u64,
    pub walk_end: u64,
    pub vec: u64,
    pub vec_len: u64,
    pub max_pages: u64,
    pub category_inverted: u64,
    pub category_mask: u64,
    pub category_anyof_mask: u64,
    pub return_mask: u64,
}

/// One region returned by PAGEMAP_SCAN.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// _IOWR('f', 16, struct pm_scan_arg)
const PAGEMAP_SCAN: u64 =
    (3 << 30) | ((std::mem::size_of::<PmScanArg>() as u64) << 16) | ((b'f' as u64) << 8) | 16;

/// PAGEMAP_SCAN over `[start, end)` of the pagemap `fd`, filling `out`.
/// `arg.start/end/vec/vec_len/size` are set here; the category masks come
/// from the caller. Returns (regions filled, address where the walk ended).
pub fn pagemap_scan(
    fd: &impl AsRawFd,
    arg: &mut PmScanArg,
    start: u64,
    end: u64,
    out: &mut [PageRegion],
) -> io::Result<(usize, u64)> {
    arg.size = std::mem::size_of::<PmScanArg>() as u64;
    arg.start = start;
    arg.end = end;
    arg.vec = out.as_mut_ptr() as u64;
    arg.vec_len = out.len() as u64;
    // SAFETY: `arg` is a valid pm_scan_arg whose vec/vec_len describe `out`,
    // which the kernel fills with at most vec_len page_region entries.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), PAGEMAP_SCAN as _, arg as *mut PmScanArg) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(((r as usize).min(out.len()), arg.walk_end))
}

/// Our own thread id.
pub fn gettid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::gettid() }
}

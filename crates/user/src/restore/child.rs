//! Code that runs in the forked future process (and in the PID namespace's
//! init) between clone3 and the jump to the restorer.
//!
//! The caller may be multithreaded, so after clone3 only async-signal-safe
//! work is allowed: no allocation, no locks. Everything here reads the plan the
//! parent prepared (owned data, copied into the child by clone3) and makes raw
//! system calls. Failures are reported on the status pipe as a fixed-size
//! [`StatusMsg`] whose text is formatted into a stack buffer.

use std::ffi::CStr;
use std::fmt::Write as _;

use super::abi::{self, CloneArgs, StatusMsg, CHILD_FAIL_EXIT, STATUS_ERROR};
use super::plan::{ChildPlan, FileSource, PipePlan};

/// Stages of the pre-jump child (StatusMsg::stage < 100).
pub mod cstage {
    pub const RSEQ: u32 = 1;
    pub const SESSION: u32 = 2;
    pub const CLOSE_FDS: u32 = 3;
    pub const FILE: u32 = 4;
    pub const PIPE: u32 = 5;
    pub const MAP_FILE: u32 = 6;
    pub const SHM: u32 = 7;
    pub const FS: u32 = 8;
    pub const SIGACTION: u32 = 9;
    pub const RLIMIT: u32 = 10;
    pub const PERSONALITY: u32 = 11;
    pub const CLONE: u32 = 12;
    pub const NS_INIT: u32 = 13;

    pub fn name(s: u32) -> &'static str {
        match s {
            RSEQ => "unregistering the inherited rseq area",
            SESSION => "restoring the session / process group",
            CLOSE_FDS => "closing inherited fds",
            FILE => "restoring a file descriptor",
            PIPE => "restoring a pipe/FIFO",
            MAP_FILE => "opening a mapped file",
            SHM => "creating shared anonymous memory",
            FS => "restoring cwd/root/umask",
            SIGACTION => "restoring signal dispositions",
            RLIMIT => "restoring resource limits",
            PERSONALITY => "restoring the personality",
            CLONE => "clone3 with the image's PID",
            NS_INIT => "PID namespace init",
            _ => "unknown child stage",
        }
    }
}

/// A fixed buffer implementing fmt::Write (truncates silently).
pub struct Text {
    buf: [u8; 224],
    len: usize,
}

impl Text {
    pub fn new() -> Text {
        Text { buf: [0; 224], len: 0 }
    }
    pub fn bytes(&mut self, b: &[u8]) {
        for &c in b {
            if self.len + 1 >= self.buf.len() {
                return;
            }
            self.buf[self.len] = if c.is_ascii_graphic() || c == b' ' { c } else { b'?' };
            self.len += 1;
        }
    }
}

impl std::fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Report a failure and exit the child.
pub fn die(status_fd: i32, stage: u32, err: i32, arg: u64, text: &Text) -> ! {
    let mut m = StatusMsg::zeroed();
    m.kind = STATUS_ERROR;
    m.stage = stage;
    m.errno = err;
    m.arg = arg;
    m.text = text.buf;
    // SAFETY: m is a plain struct of the given size; _exit is async-signal-safe.
    unsafe {
        libc::write(status_fd, &m as *const StatusMsg as *const libc::c_void, std::mem::size_of::<StatusMsg>());
        libc::_exit(CHILD_FAIL_EXIT)
    }
}

/// Send a message (used by the namespace init).
pub fn send(status_fd: i32, m: &StatusMsg) {
    // SAFETY: as above.
    unsafe {
        libc::write(status_fd, m as *const StatusMsg as *const libc::c_void, std::mem::size_of::<StatusMsg>());
    }
}

macro_rules! bail {
    ($plan:expr, $stage:expr, $err:expr, $arg:expr, $($fmt:tt)*) => {{
        let mut t = Text::new();
        let _ = write!(t, $($fmt)*);
        die($plan.status_fd, $stage, $err, $arg as u64, &t)
    }};
}

/// Path bytes for messages.
struct P<'a>(&'a CStr);
impl std::fmt::Display for P<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for &c in self.0.to_bytes() {
            f.write_char(if c.is_ascii_graphic() || c == b' ' { c as char } else { '?' })?;
        }
        Ok(())
    }
}

/// `/proc/self/fd/N` into a stack buffer.
fn proc_fd_path(fd: i32, buf: &mut [u8; 40]) -> &CStr {
    let mut t = Text::new();
    let _ = write!(t, "/proc/self/fd/{fd}");
    let n = t.len.min(38);
    buf[..n].copy_from_slice(&t.buf[..n]);
    buf[n] = 0;
    CStr::from_bytes_until_nul(&buf[..]).unwrap_or(c"/")
}

/// Move `fd` to a free number >= plan.fd_high (close-on-exec) and close the original.
fn high(plan: &ChildPlan, fd: i32) -> Result<i32, i32> {
    if fd >= plan.fd_high {
        return Ok(fd);
    }
    // SAFETY: fcntl/close on an fd we own.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, plan.fd_high) };
    let e = errno();
    // SAFETY: as above.
    unsafe { libc::close(fd) };
    if n < 0 { Err(e) } else { Ok(n) }
}

/// Place `src` at `fd` with its close-on-exec flag.
fn place(src: i32, fd: i32, cloexec: bool) -> Result<(), i32> {
    if src == fd {
        // SAFETY: fcntl on our own fd.
        let r = unsafe { libc::fcntl(fd, libc::F_SETFD, if cloexec { libc::FD_CLOEXEC } else { 0 }) };
        return if r < 0 { Err(errno()) } else { Ok(()) };
    }
    // SAFETY: dup3 on fds we own; fd is not one of our own (< fd_high).
    let r = unsafe { libc::dup3(src, fd, if cloexec { libc::O_CLOEXEC } else { 0 }) };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

const SETFL_MASK: i32 = libc::O_APPEND | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME | libc::O_NONBLOCK;

fn write_all(fd: i32, data: &[u8]) -> Result<(), i32> {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: data[off..] is a valid buffer.
        let r = unsafe { libc::write(fd, data[off..].as_ptr() as *const libc::c_void, data.len() - off) };
        if r < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(libc::EIO);
        }
        off += r as usize;
    }
    Ok(())
}

/// Unregister the rseq area this thread inherited from the caller's thread
/// (fork keeps it; the area disappears with the old address space, and the
/// kernel would SIGSEGV us on the next preemption).
fn unregister_rseq(plan: &ChildPlan) {
    extern "C" {
        static __rseq_offset: isize;
        static __rseq_size: u32;
    }
    // SAFETY: glibc (>= 2.35) exports these read-only after start-up.
    let (off, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        return;
    }
    let tp: u64;
    // SAFETY: fs:0 holds the thread pointer (TCB self pointer) on x86_64 glibc.
    unsafe { std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags)) };
    let area = (tp as i64 + off as i64) as u64;
    let mut last = 0;
    for len in [32u32, size, 64, 20] {
        // SAFETY: unregistering never touches memory other than reading the registered area.
        let r = unsafe { libc::syscall(libc::SYS_rseq, area, len, 1 /* RSEQ_FLAG_UNREGISTER */, 0x5305_3053u32) };
        if r == 0 {
            return;
        }
        last = errno();
        if last == libc::ENOSYS {
            return;
        }
    }
    bail!(plan, cstage::RSEQ, last, area, "rseq unregister of area {area:#x} failed");
}

fn open_source(plan: &ChildPlan, f: &super::plan::FilePlan) -> i32 {
    let fd0 = f.fds.first().map(|x| x.0).unwrap_or(-1);
    let r = match &f.source {
        FileSource::Path { path, flags } => {
            // SAFETY: path is a NUL terminated string of the plan.
            let fd = unsafe { libc::open(path.as_ptr(), *flags | libc::O_CLOEXEC | libc::O_NOCTTY, 0) };
            if fd < 0 {
                bail!(plan, cstage::FILE, errno(), fd0, "fd {fd0}: open {}", P(path));
            }
            fd
        }
        FileSource::Deleted { dir, name, flags, data, mode } => {
            // SAFETY: as above.
            let mut fd = unsafe { libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC, *mode as libc::c_uint) };
            if fd < 0 {
                // SAFETY: name is NUL terminated.
                fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
            }
            if fd < 0 {
                bail!(plan, cstage::FILE, errno(), fd0, "fd {fd0}: no O_TMPFILE in {} nor memfd for a deleted file", P(dir));
            }
            // SAFETY: data points into the image mapping, inherited by clone3.
            let bytes = unsafe { std::slice::from_raw_parts(data.0, data.1) };
            if let Err(e) = write_all(fd, bytes) {
                bail!(plan, cstage::FILE, e, fd0, "fd {fd0}: writing {} bytes of a deleted file", bytes.len());
            }
            reopen(plan, fd, *flags, fd0)
        }
        FileSource::Memfd { name, flags, data } => {
            // SAFETY: name is NUL terminated.
            let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
            if fd < 0 {
                bail!(plan, cstage::FILE, errno(), fd0, "fd {fd0}: memfd_create {}", P(name));
            }
            if let Some(d) = data {
                // SAFETY: as above.
                let bytes = unsafe { std::slice::from_raw_parts(d.0, d.1) };
                if let Err(e) = write_all(fd, bytes) {
                    bail!(plan, cstage::FILE, e, fd0, "fd {fd0}: filling memfd {}", P(name));
                }
            }
            reopen(plan, fd, *flags, fd0)
        }
        FileSource::Tty { src, flags } => {
            if *src >= 0 {
                // SAFETY: dup of our own fd.
                let fd = unsafe { libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, plan.fd_high) };
                if fd < 0 {
                    bail!(plan, cstage::FILE, errno(), fd0, "fd {fd0}: dup of the terminal");
                }
                fd
            } else {
                // SAFETY: constant path.
                let fd = unsafe { libc::open(c"/dev/null".as_ptr(), (*flags & libc::O_ACCMODE) | libc::O_CLOEXEC) };
                if fd < 0 {
                    bail!(plan, cstage::FILE, errno(), fd0, "fd {fd0}: open /dev/null for a terminal");
                }
                fd
            }
        }
    };
    match high(plan, r) {
        Ok(fd) => fd,
        Err(e) => bail!(plan, cstage::FILE, e, fd0, "fd {fd0}: F_DUPFD"),
    }
}

/// Reopen an O_RDWR tmpfile/memfd with the recorded access mode and flags.
fn reopen(plan: &ChildPlan, fd: i32, flags: i32, fd0: i32) -> i32 {
    if flags & libc::O_ACCMODE == libc::O_RDWR && flags & SETFL_MASK == 0 {
        return fd;
    }
    let mut b = [0u8; 40];
    let p = proc_fd_path(fd, &mut b);
    // SAFETY: p is NUL terminated.
    let n = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOCTTY) };
    if n < 0 {
        bail!(plan, cstage::FILE, errno(), fd0, "fd {fd0}: reopening the recreated file");
    }
    // SAFETY: closing our temporary.
    unsafe { libc::close(fd) };
    n
}

fn restore_files(plan: &ChildPlan) {
    for f in &plan.files {
        let src = open_source(plan, f);
        let fd0 = f.fds.first().map(|x| x.0).unwrap_or(-1);
        if f.seek {
            // SAFETY: lseek on our fd.
            let r = unsafe { libc::lseek(src, f.pos as libc::off_t, libc::SEEK_SET) };
            if r < 0 && !f.seek_optional {
                bail!(plan, cstage::FILE, errno(), fd0, "fd {fd0}: lseek to {}", f.pos);
            }
        }
        for &(fd, cloexec) in &f.fds {
            if let Err(e) = place(src, fd, cloexec) {
                bail!(plan, cstage::FILE, e, fd, "fd {fd}: dup3");
            }
        }
        // SAFETY: closing our temporary.
        unsafe { libc::close(src) };
    }
}

fn restore_pipe(plan: &ChildPlan, p: &PipePlan) {
    let fd0 = p.ends.first().map(|x| x.fd).unwrap_or(-1);
    let (r, w, holder) = if let Some(path) = &p.fifo {
        // SAFETY: path is NUL terminated. O_RDWR on a FIFO never blocks.
        let h = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if h < 0 {
            bail!(plan, cstage::PIPE, errno(), fd0, "fd {fd0}: open FIFO {}", P(path));
        }
        let h = match high(plan, h) {
            Ok(h) => h,
            Err(e) => bail!(plan, cstage::PIPE, e, fd0, "fd {fd0}: F_DUPFD"),
        };
        (-1, h, h)
    } else {
        let mut fds = [0i32; 2];
        // SAFETY: fds is an array of two ints.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            bail!(plan, cstage::PIPE, errno(), fd0, "fd {fd0}: pipe2");
        }
        match (high(plan, fds[0]), high(plan, fds[1])) {
            (Ok(r), Ok(w)) => (r, w, -1),
            (Err(e), _) | (_, Err(e)) => bail!(plan, cstage::PIPE, e, fd0, "fd {fd0}: F_DUPFD"),
        }
    };
    let need = p.data.map(|d| d.1).unwrap_or(0).max(p.capacity as usize);
    if need > 0 {
        // SAFETY: fcntl on our pipe.
        let c = unsafe { libc::fcntl(w, libc::F_GETPIPE_SZ) };
        if c >= 0 && (c as usize) < need {
            // SAFETY: as above.
            if unsafe { libc::fcntl(w, libc::F_SETPIPE_SZ, need as libc::c_int) } < 0 {
                bail!(plan, cstage::PIPE, errno(), fd0, "fd {fd0}: F_SETPIPE_SZ {need}");
            }
        }
    }
    if let Some(d) = p.data {
        // SAFETY: data points into the inherited image mapping.
        let bytes = unsafe { std::slice::from_raw_parts(d.0, d.1) };
        if let Err(e) = write_all(w, bytes) {
            bail!(plan, cstage::PIPE, e, fd0, "fd {fd0}: refilling {} bytes", bytes.len());
        }
    }
    for end in &p.ends {
        let src = if holder >= 0 {
            let mut b = [0u8; 40];
            let path = proc_fd_path(holder, &mut b);
            // SAFETY: path is NUL terminated; a writer (holder) exists so no blocking.
            let n = unsafe { libc::open(path.as_ptr(), end.flags | libc::O_CLOEXEC) };
            if n < 0 {
                bail!(plan, cstage::PIPE, errno(), end.fd, "fd {}: reopening the FIFO", end.fd);
            }
            match high(plan, n) {
                Ok(n) => n,
                Err(e) => bail!(plan, cstage::PIPE, e, end.fd, "fd {}: F_DUPFD", end.fd),
            }
        } else if end.write {
            w
        } else {
            r
        };
        if let Err(e) = place(src, end.fd, end.cloexec) {
            bail!(plan, cstage::PIPE, e, end.fd, "fd {}: dup3", end.fd);
        }
        // SAFETY: F_SETFL on the placed fd.
        unsafe { libc::fcntl(end.fd, libc::F_SETFL, end.flags & SETFL_MASK) };
        if holder >= 0 {
            // SAFETY: closing our temporary.
            unsafe { libc::close(src) };
        }
    }
    for fd in [r, w] {
        if fd >= 0 {
            // SAFETY: closing our temporaries.
            unsafe { libc::close(fd) };
        }
    }
}

/// Everything the future process does before the restorer takes over. Never returns.
pub fn child_main(plan: &ChildPlan) -> ! {
    unregister_rseq(plan);

    // Session and process group.
    if plan.setsid {
        // SAFETY: setsid has no arguments.
        if unsafe { libc::setsid() } < 0 {
            bail!(plan, cstage::SESSION, errno(), plan.pid, "setsid");
        }
    } else if plan.pgid == plan.pid {
        // SAFETY: setpgid on ourselves.
        unsafe { libc::setpgid(0, 0) };
    } else if plan.pgid > 0 {
        // Best effort: the group must exist in our session.
        // SAFETY: as above.
        unsafe { libc::setpgid(0, plan.pgid) };
    }

    // Close everything we inherited except our own fds (all >= fd_high).
    // SAFETY: close_range on our own table.
    if unsafe { libc::syscall(libc::SYS_close_range, 0u32, (plan.fd_high - 1) as u32, 0u32) } < 0 {
        bail!(plan, cstage::CLOSE_FDS, errno(), 0, "close_range");
    }
    let mut lo = plan.fd_high as u32;
    for &k in &plan.keep_fds {
        let k = k as u32;
        if k > lo {
            // SAFETY: as above.
            unsafe { libc::syscall(libc::SYS_close_range, lo, k - 1, 0u32) };
        }
        lo = lo.max(k + 1);
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, lo, u32::MAX, 0u32) };

    restore_files(plan);
    for p in &plan.pipes {
        restore_pipe(plan, p);
    }
    if plan.tty_src >= 0 {
        // SAFETY: our dup of the terminal is no longer needed.
        unsafe { libc::close(plan.tty_src) };
    }

    // Files of mappings, shared memory objects, the exe: fds for the restorer.
    let args = plan.args;
    let mut nclose = 0usize;
    let mut add_close = |fd: i32| {
        if nclose < plan.close_cap {
            // SAFETY: close_fds has close_cap slots in the area (private copy in this child).
            unsafe { *plan.close_fds.add(nclose) = fd };
            nclose += 1;
        }
    };
    add_close(plan.image_fd);
    for m in &plan.map_files {
        // SAFETY: path is NUL terminated.
        let fd = unsafe { libc::open(m.path.as_ptr(), m.flags | libc::O_CLOEXEC) };
        if fd < 0 {
            bail!(plan, cstage::MAP_FILE, errno(), m.vmas.first().copied().unwrap_or(0), "open {} for mapping", P(&m.path));
        }
        let fd = match high(plan, fd) {
            Ok(fd) => fd,
            Err(e) => bail!(plan, cstage::MAP_FILE, e, 0, "F_DUPFD"),
        };
        for &i in &m.vmas {
            // SAFETY: i < nr_vmas (built by the plan); private copy of the area.
            unsafe { (*plan.vmas.add(i)).fd = fd };
        }
        add_close(fd);
    }
    for s in &plan.shms {
        // SAFETY: constant name.
        let fd = unsafe { libc::memfd_create(c"stasis-shm".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            bail!(plan, cstage::SHM, errno(), s.size, "memfd_create");
        }
        // SAFETY: ftruncate of our memfd.
        if unsafe { libc::ftruncate(fd, s.size as libc::off_t) } < 0 {
            bail!(plan, cstage::SHM, errno(), s.size, "ftruncate memfd to {}", s.size);
        }
        let fd = match high(plan, fd) {
            Ok(fd) => fd,
            Err(e) => bail!(plan, cstage::SHM, e, 0, "F_DUPFD"),
        };
        for &i in &s.vmas {
            // SAFETY: as above.
            unsafe { (*plan.vmas.add(i)).fd = fd };
        }
        add_close(fd);
    }
    if let Some(exe) = &plan.exe {
        // SAFETY: path is NUL terminated.
        let fd = unsafe { libc::open(exe.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            if let Ok(fd) = high(plan, fd) {
                // SAFETY: the Args block of our private area copy.
                unsafe { (*args).mm.exe_fd = fd as u32 };
                add_close(fd);
            }
        }
    }
    if plan.kernel_fd >= 0 {
        // Kernel mode: the module closes it too, once the restart succeeded.
        add_close(plan.kernel_fd);
    }
    // SAFETY: as above.
    unsafe { (*args).nr_close_fds = nclose as u64 };

    // Filesystem context.
    if let Some(root) = &plan.root {
        // SAFETY: path is NUL terminated.
        if unsafe { libc::chroot(root.as_ptr()) } < 0 {
            bail!(plan, cstage::FS, errno(), 0, "chroot {}", P(root));
        }
    }
    if let Some(cwd) = &plan.cwd {
        // SAFETY: path is NUL terminated.
        if unsafe { libc::chdir(cwd.as_ptr()) } < 0 {
            bail!(plan, cstage::FS, errno(), 0, "chdir {}", P(cwd));
        }
    }
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(plan.umask as libc::mode_t) };
    if let Some(p) = plan.personality {
        // SAFETY: personality with a value.
        if unsafe { libc::personality(p as libc::c_ulong) } < 0 {
            bail!(plan, cstage::PERSONALITY, errno(), p, "personality({p:#x})");
        }
    }

    if plan.dumpable <= 1 {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, plan.dumpable as libc::c_ulong, 0, 0, 0) };
    }
    // Nice value (inherited by the threads): only ever lowered in priority.
    // SAFETY: get/setpriority on ourselves.
    unsafe {
        *libc::__errno_location() = 0;
        let cur = libc::getpriority(libc::PRIO_PROCESS, 0);
        if (-20..=19).contains(&plan.nice) && plan.nice >= cur {
            libc::setpriority(libc::PRIO_PROCESS, 0, plan.nice);
        }
    }

    // Signal dispositions (all signals are blocked until rt_sigreturn).
    for (sig, act) in &plan.sigactions {
        // SAFETY: act is a kernel struct sigaction (handler, flags, restorer, mask).
        let r = unsafe { libc::syscall(libc::SYS_rt_sigaction, *sig, act as *const [u64; 4], 0usize, 8usize) };
        if r < 0 {
            bail!(plan, cstage::SIGACTION, errno(), *sig, "rt_sigaction({sig})");
        }
    }

    // Limits last: they could restrict what we do above.
    for &(res, cur, max) in &plan.rlimits {
        let l = libc::rlimit64 { rlim_cur: cur, rlim_max: max };
        // SAFETY: l is a valid rlimit64.
        if unsafe { libc::prlimit64(0, res as _, &l, std::ptr::null_mut()) } < 0 {
            bail!(plan, cstage::RLIMIT, errno(), res, "setrlimit({res}, {cur:#x}, {max:#x})");
        }
    }

    // Jump: rsp = the restorer's stack, rdi = its argument block.
    // SAFETY: the area holds the relocation-free blob at `entry`, mapped RX, and
    // its argument block; the blob never returns.
    unsafe {
        std::arch::asm!(
            "mov rsp, {sp}",
            "jmp {entry}",
            sp = in(reg) plan.stack_top,
            entry = in(reg) plan.entry,
            in("rdi") args as u64,
            options(noreturn)
        )
    }
}

/// clone3 with `set_tid = [tid]` (a fork: no CLONE_VM). Returns the child's pid
/// in the parent, 0 in the child.
pub fn clone3_fork(set_tid: Option<i32>, extra_flags: u64) -> Result<i32, i32> {
    let tid: [libc::pid_t; 1] = [set_tid.unwrap_or(0)];
    let ca = CloneArgs {
        flags: extra_flags,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: if set_tid.is_some() { tid.as_ptr() as u64 } else { 0 },
        set_tid_size: u64::from(set_tid.is_some()),
        cgroup: 0,
    };
    // SAFETY: a fork-like clone3 (no CLONE_VM, no stack): the child continues
    // on a copy of our stack, as after fork(2).
    let r = unsafe { libc::syscall(libc::SYS_clone3, &ca as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if r < 0 { Err(errno()) } else { Ok(r as i32) }
}

/// The PID namespace's init: fork the future process with the image's PID,
/// then reap until it exits and report its wait status.
pub fn ns_init_main(plan: &ChildPlan) -> ! {
    match clone3_fork(Some(plan.pid), 0) {
        Ok(0) => child_main(plan),
        Ok(pid) => {
            // SAFETY: prctl with a NUL terminated constant name.
            unsafe { libc::prctl(libc::PR_SET_NAME, c"stasis-init".as_ptr(), 0, 0, 0) };
            // Drop everything but the status pipe.
            let s = plan.status_fd;
            // SAFETY: close_range on our own table.
            unsafe {
                if s > 0 {
                    libc::syscall(libc::SYS_close_range, 0u32, (s - 1) as u32, 0u32);
                }
                libc::syscall(libc::SYS_close_range, (s + 1) as u32, u32::MAX, 0u32);
            }
            loop {
                let mut st = 0;
                // SAFETY: waitpid with a valid status pointer.
                let r = unsafe { libc::waitpid(-1, &mut st, libc::__WALL) };
                if r < 0 {
                    if errno() == libc::EINTR {
                        continue;
                    }
                    // SAFETY: _exit is always safe.
                    unsafe { libc::_exit(0) };
                }
                if r == pid {
                    let mut m = StatusMsg::zeroed();
                    m.kind = abi::STATUS_EXIT;
                    m.errno = st;
                    m.arg = pid as u64;
                    send(s, &m);
                    // SAFETY: as above.
                    unsafe { libc::_exit(0) };
                }
            }
        }
        Err(e) => {
            if e == libc::EEXIST {
                bail!(plan, cstage::CLONE, e, plan.pid, "PID {} is in use (in the new PID namespace)", plan.pid);
            }
            bail!(plan, cstage::CLONE, e, plan.pid, "clone3 set_tid={} in the new PID namespace", plan.pid)
        }
    }
}

//! Restart through a restorer blob.
//!
//! 1. [`plan::prepare`] maps and parses the image (extensions core + files),
//!    validates it against this machine before anything changes (arch, page
//!    size, every thread's XSTATE_BV against this CPU's XCR0, vDSO/vvar sizes
//!    and distance, free PIDs/TIDs, hard rlimits, uid) and prepares
//!    everything: the fd plan (paths as CStrings, data pointers into the image
//!    mapping) and the *restorer area* (blob + argument block + sigframes +
//!    stacks + vDSO parking slots), reserved with MAP_FIXED_NOREPLACE in the
//!    middle of the largest hole free in both our layout and the image's.
//! 2. clone3 with `set_tid = [pid]` forks the future process ([`child`]; with
//!    `pidns`, clone3(CLONE_NEWPID) first makes a small init that forks it and
//!    reports its exit). The child only makes raw system calls (the caller may
//!    be multithreaded): it unregisters the rseq area inherited from the
//!    caller's thread, restores session/process group, closes every inherited
//!    fd, puts files/pipes/FIFOs/terminals at their numbers, opens the files
//!    of file mappings and the exe, restores cwd/root/umask/personality/
//!    dumpable/nice, signal dispositions (with their restorers), rlimits last,
//!    then jumps to the restorer with all signals blocked.
//! 3. The restorer (crates/restorer, no_std, relocation free) parks the
//!    vDSO/vvar in its area, unmaps everything else (one blanket munmap on
//!    each side of the area), moves the vDSO/vvar to the image's addresses,
//!    maps every VMA, fills pages with pread from the image fd, sets final
//!    protections and madvise flags, prctl(PR_SET_MM_MAP) (mm fields, auxv,
//!    exe), closes its fds, creates the threads with clone3 set_tid; every
//!    thread sets fs/gs base, robust list, clear_child_tid, rseq, its name and
//!    lowers its capabilities to the image's; the leader queues pending
//!    signals (per thread and process wide) and starts itimers and POSIX
//!    timers (PR_TIMER_CREATE_RESTORE_IDS keeps their ids). Failures before
//!    this point are reported on the status pipe (child: exit 212, restorer:
//!    exit 211) and become a [`RestoreError`] naming the stage.
//! 4. Park mode ([`park`]): each thread copies its rt_sigframe (registers,
//!    XSAVE area with the FP_XSTATE magic, mask, altstack) to its own stack
//!    below the red zone and parks. We seize the threads, inject
//!    `munmap(area)` through a `syscall` instruction of the restored vDSO,
//!    point every thread at that instruction with rax = rt_sigreturn and
//!    rsp = its frame, and detach: nothing of the restorer stays mapped.
//!    Without a vDSO in the image, when a thread's stack cannot take its frame,
//!    or with STASIS_RESTORE_KEEP_RESTORER=1, the threads call rt_sigreturn
//!    themselves and the area (a few pages) stays mapped.
//! 5. We wait for READY, then (unless `detach`) for the exit of the process.
//!
//! Kernel mode ([`RestartOpts::kernel`], restore/kernel.rs): memory and
//! registers come from the kernel module. We open /dev/stasis and let it
//! validate the image (`RESTART_VALIDATE_ONLY`) before forking; the child
//! gets a dup of the device fd (`Args::kernel_fd`) and runs as above; the
//! restorer parks and moves the vDSO/vvar, skips mapping, filling and
//! protecting memory (and closing its fds), sets the mm fields, creates the
//! threads, which set up everything but rseq and park in
//! `STASIS_IOC_RESTART_THREAD`; the leader queues signals and timers, sends
//! STATUS_PARKING and parks last, handing over the fds to map (`MapFd` by
//! VMA start) and to close. We then call `STASIS_IOC_RESTART` for the future
//! process: the module replaces its address space and returns every thread
//! to its checkpointed context. If that fails, the future process is killed.
//!
//! Known gaps: SysV shm (ipc extension), sockets/eventfd/timerfd/signalfd/
//! epoll (net/events: refused when parsing), process trees; mappings of
//! deleted files or memfds need the file open in an fd with FILE_DATA (same
//! dev/ino); a pipe with only one end in the image gets a fresh pipe whose
//! other end is closed; the restarted process is a child of the restarting
//! one (ppid differs) and inherits its seccomp filters, no_new_privs and
//! cgroup; recreated deleted files show another name in /proc/PID/fd.
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

#[path = "../../../restorer/src/abi.rs"]
pub(crate) mod abi;
mod child;
mod kernel;
mod maps;
mod park;
mod plan;
mod sigframe;

mod blob {
    #![allow(dead_code)]
    include!(concat!(env!("OUT_DIR"), "/restorer.rs"));
    /// The restorer blob (flat, position independent, relocation free).
    pub static BLOB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/restorer.bin"));
}

use abi::{StatusMsg, STATUS_ERROR, STATUS_EXIT, STATUS_PARKING, STATUS_READY};
use stasis_image::{Extension, ParseOptions, ProcessImage};

/// Options of a restart.
#[derive(Default)]
pub struct RestartOpts<'a> {
    /// Do not wait for the restored process: return once it runs.
    pub detach: bool,
    /// Restart inside a new PID namespace (so PIDs in use elsewhere don't clash).
    pub pidns: bool,
    /// Kernel mode: memory and registers are restored by the kernel module
    /// (/dev/stasis, `STASIS_IOC_RESTART`) instead of the restorer's mmap/pread
    /// and rt_sigreturn; see restore/kernel.rs. Fails with
    /// [`RestoreError::KernelModule`] when the module is not loaded.
    pub kernel: bool,
    /// Restart even when this CPU lacks features the image's CPU had (the
    /// state of XSAVE components this CPU lacks is dropped; the program may
    /// then die of SIGILL in code it chose for the other CPU).
    pub allow_cpu_mismatch: bool,
    pub progress: Option<&'a dyn crate::Progress>,
}

/// How a restart ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartOutcome {
    /// The process runs on, detached from us.
    Detached { pid: i32 },
    /// The restored process exited with `code`, or was killed by `signal`.
    Exited { pid: i32, code: Option<i32>, signal: Option<i32> },
}

/// Errors of the restart side.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the user engine's restart is not implemented yet")]
    NotImplemented,
    #[error("opening image {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("bad image: {0}")]
    Image(#[from] stasis_image::ImageError),
    #[error("image is for architecture id {arch}, this machine is x86_64")]
    Arch { arch: u32 },
    #[error("image page size {image} differs from this machine's {ours}")]
    PageSize { image: u32, ours: u64 },
    #[error("this CPU lacks XSAVE features thread {tid} uses: {names} (missing mask {missing:#x}, this CPU's XSAVE features {ours:#x}); --allow-cpu-mismatch drops them")]
    MissingCpuFeatures { tid: u32, missing: u64, names: String, ours: u64 },
    #[error("the image's CPU had features this CPU lacks: {missing}{}{missing_xsave}; the program may have chosen code that uses them (glibc picks AVX2/AVX-512 code at start-up); --allow-cpu-mismatch restarts anyway", if missing_xsave.is_empty() { "" } else { "; XSAVE components: " })]
    CpuMismatch { missing: String, missing_xsave: String },
    /// This CPU enables XSAVE components the image's CPU did not.
    #[error("this CPU enables XSAVE components the image's CPU did not ({extra}): the program sized its XSAVE buffers for the image's CPU at start-up (glibc's lazy-binding trampoline does), and XSAVE here would write past them; --allow-cpu-mismatch restarts anyway")]
    CpuXsaveGrew { extra: String },
    #[error("{what} size differs: image {image:#x} bytes, this kernel {ours:#x} (image from another kernel?)")]
    VdsoMismatch { what: &'static str, image: u64, ours: u64 },
    #[error("PID {pid} is in use (restart with --pidns to use a new PID namespace)")]
    PidInUse { pid: i32 },
    #[error("restarting with a given PID needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN ({what})")]
    NoPermission { what: String },
    #[error("the image's uid {image_uid} differs from ours ({our_uid}) and we are not root: credentials are never raised")]
    Credentials { image_uid: u32, our_uid: u32 },
    #[error("rlimit {resource}: the image's hard limit {image:#x} is above ours {ours:#x} (raising it needs CAP_SYS_RESOURCE)")]
    RlimitTooHigh { resource: u32, image: u64, ours: u64 },
    #[error("{what}: file {path} is missing")]
    MissingFile { what: String, path: String },
    #[error("not supported by the user engine: {0}")]
    Unsupported(String),
    #[error("no free hole of {size:#x} bytes for the restorer in both layouts")]
    NoHole { size: u64 },
    #[error("{what}: {source}")]
    Sys { what: String, source: std::io::Error },
    #[error("restart failed while {stage}: {detail} ({errno_text})")]
    Child { stage: &'static str, detail: String, errno: i32, errno_text: String },
    #[error("the restarting process died before running: {status}")]
    ChildDied { status: String },
    #[error("kernel mode needs {} (module stasis.ko)", stasis_abi::DEVICE_PATH)]
    KernelModule { source: std::io::Error },
    #[error("{} speaks ABI version {module}, this stasis speaks version {ours}", stasis_abi::DEVICE_PATH)]
    KernelAbi { module: u32, ours: u32 },
    /// The module's validation (`RESTART_VALIDATE_ONLY`) refused the image.
    #[error("{reason}: {} (see dmesg)", errno_text(*errno))]
    KernelRefused { reason: &'static str, errno: i32 },
    /// The module's `STASIS_IOC_RESTART` failed (the future process is gone).
    #[error("{what}: {} (see dmesg)", errno_text(*errno))]
    Kernel { what: &'static str, errno: i32 },
}

impl RestoreError {
    pub(crate) fn sys(what: &str, source: std::io::Error) -> RestoreError {
        RestoreError::Sys { what: what.to_string(), source }
    }
}

/// Read-only mapping of the image file.
struct ImageMap {
    ptr: *mut libc::c_void,
    len: usize,
}

impl ImageMap {
    fn new(f: &std::fs::File) -> std::io::Result<ImageMap> {
        let len = f.metadata()?.len() as usize;
        if len == 0 {
            return Ok(ImageMap { ptr: std::ptr::null_mut(), len: 0 });
        }
        // SAFETY: a private read-only mapping of a file we opened.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, f.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(ImageMap { ptr, len })
    }
    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the mapping is len bytes, readable, alive as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for ImageMap {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: our own mapping.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

fn errno_text(e: i32) -> String {
    if e == 0 {
        "no errno".into()
    } else {
        std::io::Error::from_raw_os_error(e).to_string()
    }
}

fn msg_error(m: &StatusMsg) -> RestoreError {
    let text_end = m.text.iter().position(|&c| c == 0).unwrap_or(m.text.len());
    let text = String::from_utf8_lossy(&m.text[..text_end]).into_owned();
    if m.stage == abi::stage::CLONE_THREAD && m.errno == libc::EEXIST {
        return RestoreError::PidInUse { pid: m.arg as i32 };
    }
    if m.stage == child::cstage::CLONE && m.errno == libc::EEXIST {
        return RestoreError::PidInUse { pid: m.arg as i32 };
    }
    let (stage, detail) = if m.stage >= 100 {
        let detail = match m.stage {
            abi::stage::MAP_VMA | abi::stage::PROTECT | abi::stage::MADVISE | abi::stage::MLOCK => {
                format!("VMA {:#x}-{:#x}", m.arg, m.arg2)
            }
            abi::stage::FILL_PAGES => format!("page {:#x} from image offset {:#x}", m.arg, m.arg2),
            abi::stage::MOVE_VDSO => format!("{:#x} -> {:#x}", m.arg, m.arg2),
            abi::stage::UNMAP_OLD => format!("{:#x}-{:#x}", m.arg, m.arg2),
            abi::stage::MM_MAP => format!("start_brk {:#x} brk {:#x}", m.arg, m.arg2),
            abi::stage::SIGQUEUE => format!("signal {} to tid {}", m.arg, m.arg2),
            abi::stage::ITIMER | abi::stage::POSIX_TIMER => format!("timer {}", m.arg),
            _ => format!("tid {}", m.arg),
        };
        (abi::stage::name(m.stage), detail)
    } else {
        (child::cstage::name(m.stage), text)
    };
    RestoreError::Child { stage, detail, errno: m.errno, errno_text: errno_text(m.errno) }
}

fn read_msg(fd: RawFd, timeout_ms: i32) -> std::io::Result<Option<StatusMsg>> {
    let mut m = StatusMsg::zeroed();
    let size = std::mem::size_of::<StatusMsg>();
    let mut got = 0usize;
    while got < size {
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: pfd is valid.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no status from the restarting process"));
        }
        // SAFETY: reading into the remaining bytes of m.
        let n = unsafe { libc::read(fd, (&mut m as *mut StatusMsg as *mut u8).add(got) as *mut libc::c_void, size - got) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(None);
        }
        got += n as usize;
    }
    Ok(Some(m))
}

fn wait_status(pid: i32) -> std::io::Result<i32> {
    loop {
        let mut st = 0;
        // SAFETY: st is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(st);
    }
}

fn describe_status(st: i32) -> String {
    if libc::WIFEXITED(st) {
        format!("exit code {}", libc::WEXITSTATUS(st))
    } else if libc::WIFSIGNALED(st) {
        format!("killed by signal {}", libc::WTERMSIG(st))
    } else {
        format!("wait status {st:#x}")
    }
}

fn outcome(pid: i32, st: i32) -> RestartOutcome {
    if libc::WIFSIGNALED(st) {
        RestartOutcome::Exited { pid, code: None, signal: Some(libc::WTERMSIG(st)) }
    } else {
        RestartOutcome::Exited { pid, code: Some(libc::WEXITSTATUS(st)), signal: None }
    }
}

/// Restart the image at `image`.
pub fn restart(image: &Path, opts: &RestartOpts) -> Result<RestartOutcome, RestoreError> {
    let file = std::fs::File::open(image).map_err(|source| RestoreError::Open { path: image.display().to_string(), source })?;
    let map = ImageMap::new(&file).map_err(|source| RestoreError::Open { path: image.display().to_string(), source })?;
    let supported = [Extension::Core, Extension::Files];
    let img = ProcessImage::parse(map.bytes(), &ParseOptions { supported: &supported }).map_err(|e| match e {
        stasis_image::ImageError::NeedsExtension { kind, ext, offset, .. } => RestoreError::Unsupported(format!(
            "the image holds {} records (extension {}, record at offset {offset:#x}), which the user engine cannot restore",
            stasis_image::kind_name(kind),
            ext.name()
        )),
        e => RestoreError::Image(e),
    })?;
    // The machine first (architecture, page size, CPU), for both engines: the
    // module would refuse some of these images too, but only here can the
    // missing CPU features be named.
    let xareas = plan::machine_check(&img, opts.allow_cpu_mismatch)?;
    // Kernel mode: the module checks the whole image against this machine
    // before anything is forked.
    let dev = if opts.kernel {
        let d = kernel::Device::open()?;
        d.validate(&file)?;
        Some(d)
    } else {
        None
    };
    run(&img, &file, map.bytes(), opts, dev, xareas)
}

/// The restart proper, from a parsed image (`dev`: kernel mode, validated).
fn run(
    img: &ProcessImage<'_>,
    file: &std::fs::File,
    image_bytes: &[u8],
    opts: &RestartOpts,
    dev: Option<kernel::Device>,
    xareas: Vec<Option<plan::ThreadXsave>>,
) -> Result<RestartOutcome, RestoreError> {
    let kernel_mode = dev.is_some();
    let mut prep = plan::prepare(img, file, image_bytes, opts.pidns, kernel_mode, xareas)?;
    if let Some(p) = opts.progress {
        p.set_total(prep.page_bytes);
    }

    // Status pipe: the read end stays here, the write end goes to the child (high fd).
    let mut fds = [0i32; 2];
    // SAFETY: fds is an array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(RestoreError::sys("pipe2 for the status pipe", std::io::Error::last_os_error()));
    }
    let (status_r, status_w0) = (fds[0], fds[1]);
    // SAFETY: fcntl/close on our own fds.
    let status_w = unsafe { libc::fcntl(status_w0, libc::F_DUPFD_CLOEXEC, prep.plan.fd_high) };
    // SAFETY: as above.
    unsafe { libc::close(status_w0) };
    if status_w < 0 {
        // SAFETY: as above.
        unsafe { libc::close(status_r) };
        return Err(RestoreError::sys("F_DUPFD for the status pipe", std::io::Error::last_os_error()));
    }
    prep.parent_close.0.push(status_w);
    prep.plan.status_fd = status_w;
    prep.plan.keep_fds.push(status_w);
    // SAFETY: the Args block lives in our area (RW), no child exists yet.
    unsafe { (*prep.plan.args).status_fd = status_w };
    if let Some(d) = &dev {
        // The child's /dev/stasis fd, also above every restored fd.
        // SAFETY: fcntl on our own fd.
        let kfd = unsafe { libc::fcntl(d.raw(), libc::F_DUPFD_CLOEXEC, prep.plan.fd_high) };
        if kfd < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: our read end (the write end is in parent_close).
            unsafe { libc::close(status_r) };
            return Err(RestoreError::sys("F_DUPFD for /dev/stasis", e));
        }
        prep.parent_close.0.push(kfd);
        prep.plan.kernel_fd = kfd;
        prep.plan.keep_fds.push(kfd);
        // SAFETY: as above.
        unsafe { (*prep.plan.args).kernel_fd = kfd };
    }
    prep.plan.keep_fds.sort_unstable();

    // Block every signal around clone3 so the child starts with all blocked.
    // SAFETY: plain sigset manipulation on locals.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid sigset pointers.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let forked = if opts.pidns {
        child::clone3_fork(None, libc::CLONE_NEWPID as u64)
    } else {
        child::clone3_fork(Some(prep.pid), 0)
    };
    if let Ok(0) = forked {
        if opts.pidns {
            child::ns_init_main(&prep.plan)
        } else {
            child::child_main(&prep.plan)
        }
    }
    // SAFETY: restoring our mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    // Our dups of what the child owns now.
    drop(std::mem::take(&mut prep.parent_close));
    let close_r = || {
        // SAFETY: our read end.
        unsafe { libc::close(status_r) };
    };
    let child_pid = match forked {
        Ok(p) => p,
        Err(e) => {
            close_r();
            return Err(match e {
                libc::EEXIST => RestoreError::PidInUse { pid: prep.pid },
                libc::EPERM => RestoreError::NoPermission { what: format!("clone3 set_tid={}", prep.pid) },
                _ => RestoreError::sys(
                    &format!("clone3 (set_tid={}, pidns={})", prep.pid, opts.pidns),
                    std::io::Error::from_raw_os_error(e),
                ),
            });
        }
    };
    // The child has its own copy of the area.
    drop(std::mem::replace(&mut prep.area, plan::Area { start: 0, len: 0 }));

    let first = loop {
        match read_msg(status_r, 120_000) {
            Ok(Some(m)) if m.kind == abi::STATUS_PROGRESS => {
                if let Some(p) = opts.progress {
                    p.advance(m.arg);
                }
            }
            other => break other,
        }
    };
    let fail_with = |err: RestoreError| {
        close_r();
        let _ = wait_status(child_pid);
        Err(err)
    };
    // Kernel mode: the threads are parking in the module, not running yet.
    let running = if kernel_mode { STATUS_PARKING } else { STATUS_READY };
    match first {
        Ok(Some(m)) if m.kind == running => {}
        Ok(Some(m)) if m.kind == STATUS_ERROR => return fail_with(msg_error(&m)),
        Ok(Some(m)) if m.kind == STATUS_EXIT => {
            return fail_with(RestoreError::ChildDied { status: describe_status(m.errno) });
        }
        Ok(Some(m)) => return fail_with(RestoreError::ChildDied { status: format!("unexpected status message kind {}", m.kind) }),
        Ok(None) => {
            close_r();
            let st = wait_status(child_pid).map_err(|e| RestoreError::sys("waitpid", e))?;
            return Err(RestoreError::ChildDied { status: describe_status(st) });
        }
        Err(e) => {
            // SAFETY: killing the child we created.
            unsafe { libc::kill(child_pid, libc::SIGKILL) };
            return fail_with(RestoreError::sys("waiting for the restarted process", e));
        }
    }

    // Running (kernel mode: parked). The restored process's PID as seen from here.
    let found = if opts.pidns {
        std::fs::read_to_string(format!("/proc/{child_pid}/task/{child_pid}/children"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
    } else {
        Some(child_pid)
    };
    if let Some(d) = &dev {
        // The module needs the future process itself, not the namespace's init.
        let res = match found {
            Some(pid) => d.restart(file, pid).map(|_| ()),
            None => Err(RestoreError::sys(
                "finding the future process in the new PID namespace",
                std::io::Error::from_raw_os_error(libc::ESRCH),
            )),
        };
        if let Err(e) = res {
            // Whatever the module did, the future process must go: it is our
            // child, or (pidns) in the namespace that dies with its init.
            // SAFETY: killing the child we created and have not reaped.
            unsafe { libc::kill(child_pid, libc::SIGKILL) };
            close_r();
            let _ = wait_status(child_pid);
            return Err(e);
        }
        if let Some(p) = opts.progress {
            p.advance(prep.page_bytes);
        }
    }
    // The child's copy of the device fd keeps what the module needs.
    drop(dev);
    let pid = found.unwrap_or(child_pid);
    if let Some(park) = &prep.park {
        if let Err(e) = park::finish(pid, park) {
            close_r();
            let _ = wait_status(child_pid);
            return Err(e);
        }
    }
    if opts.detach {
        close_r();
        return Ok(RestartOutcome::Detached { pid });
    }
    let st = wait_status(child_pid).map_err(|e| RestoreError::sys("waitpid", e));
    let res = if opts.pidns {
        // The init reports the restored process's status.
        match read_msg(status_r, 5_000) {
            Ok(Some(m)) if m.kind == STATUS_EXIT => Ok(outcome(pid, m.errno)),
            _ => st.map(|s| outcome(pid, s)),
        }
    } else {
        st.map(|s| outcome(pid, s))
    };
    close_r();
    res
}

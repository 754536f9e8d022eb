//! Checkpoint through ptrace and /proc.
//!
//! [`checkpoint`] seizes every thread of the target (PTRACE_SEIZE +
//! PTRACE_INTERRUPT, no SIGSTOP), reads registers and signal state with
//! ptrace, runs a few system calls inside the target for what only it can
//! report (sigaltstack, clear_child_tid, sigactions, itimers, POSIX timer
//! values, brk, dumpable), reads memory found through pagemap with
//! process_vm_readv, inspects file descriptors, and streams the image.
//!
//! Whatever fails, the target is detached and runs on untraced: every path
//! out of [`checkpoint`] other than success drops the tracer, which detaches.
//! If the checkpointer is killed, the kernel detaches the tracees itself.
//!
//! # What the image holds (notes for the restart side)
//!
//! Record order: PROCESS, MM, FS, RLIMITS, SIGACTIONS, ITIMERS, POSIX_TIMER*,
//! (THREAD, XSTATE, SIGPENDING if any)* leader first then by TID,
//! SIGPENDING(tid 0, always, maybe empty), VMA* (address order), PAGES*
//! (after all VMAs; a VMA may have several, runs in address order, at most
//! 16 MiB of data each), FD_FILE* in fd order (each followed by its
//! FILE_DATA when it is the first fd of a deleted file or memfd), FD_PIPE*
//! in fd order, PIPE_DATA* (one per pipe with buffered bytes), END.
//!
//! - Registers: `ThreadRec::regs` are those the thread has after the
//!   kernel's syscall-restart fixup: rax = -ERESTARTSYS/-ERESTARTNOINTR/
//!   -ERESTARTNOHAND → rax = orig_rax, rip -= 2 (the call runs again);
//!   -ERESTART_RESTARTBLOCK → rax = -EINTR (the restart block does not
//!   survive). Then `thread_flags::SYSCALL_FIXED` is set. orig_rax is always
//!   -1 in the image. fs_base/gs_base are in `regs`.
//! - XSTATE: the NT_X86_XSTATE area as ptrace gives it (standard format;
//!   bytes 464..472 hold the checkpointing kernel's user XCR0, not signal
//!   frame software bytes). `XstateRec::xcr0` = that XCR0, `xstate_bv` =
//!   header bytes 512..520.
//! - sigmask: blocked mask from PTRACE_GETSIGMASK (for a thread inside
//!   sigsuspend/ppoll/pselect/epoll_pwait that is the temporary mask).
//! - Sigactions: read by injection for caught and ignored signals and
//!   SIGCHLD; other signals are SIG_DFL with flags/mask/restorer 0.
//! - ITIMERS: getitimer values; while a SIGALRM of an interval timer is
//!   pending the kernel reports value 0 (re-armed at dequeue).
//! - MM: /proc stat fields, brk from brk(0), vdso = AT_SYSINFO_EHDR; auxv as
//!   in /proc/PID/auxv (up to AT_NULL); exe = /proc/PID/exe link.
//! - VMAs: every /proc maps line, path kept verbatim (" (deleted)" included);
//!   kinds: VDSO, VVAR (`[vvar]` and, on newer kernels, `[vvar_vclock]`),
//!   VSYSCALL, HEAP, STACK, ANON_PRIVATE (incl. `[anon:name]`), ANON_SHARED
//!   (`/dev/zero (deleted)` or `[anon_shmem:name]`, `shm_id` = inode of the
//!   shmem object, `offset` = offset in it), FILE_PRIVATE, FILE_SHARED (with
//!   FILE_DELETED when the file is deleted or a memfd: then an fd with the
//!   same dev/ino carries its contents). `dev` = makedev(major, minor) from
//!   maps, same encoding as st_dev in FD_FILE.
//! - VMA flags from smaps VmFlags: gd GROWSDOWN, dc DONTFORK, dd DONTDUMP,
//!   lo LOCKED, nr NORESERVE, hg HUGEPAGE, nh NOHUGEPAGE (the restorer
//!   applies the THP advice before filling pages).
//! - Pages: anonymous private memory: present or swapped pages minus zero
//!   pages; private file mappings: only private (COW) pages, zero ones kept;
//!   shared anonymous memory: the object's data pages (SEEK_DATA through
//!   /proc/PID/map_files), zero pages dropped; nothing for shared file
//!   mappings, vDSO, vvar, vsyscall.
//! - Files: `file_id` numbers open file descriptions from 1 in fd order
//!   (kcmp KCMP_FILE: dup'ed fds share it); `pipe_id` numbers pipes/FIFOs
//!   from 1 by inode in fd order; fd_flags = FD_CLOEXEC or 0; open_flags =
//!   fdinfo flags without O_CLOEXEC. Deleted files and memfds carry
//!   file_flags::DELETED, their path without " (deleted)", and FILE_DATA.
//!   TTY: /dev/tty*, /dev/pts/*, /dev/console; /dev/ptmx is refused.
//! - Refused (DumpError::Unsupported, target released): sockets, anon-inode
//!   fds (eventfd, epoll, signalfd, timerfd, io_uring, inotify, pidfd...),
//!   sealed memfds, SysV shm, device (VM_IO/PFNMAP) and userfaultfd memory,
//!   mappings of deleted files with no fd to restore them from, children.

mod files;
mod freeze;
mod memory;
mod state;

use std::io;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use stasis_image::records::{kind, FileDataRec, FsRec, PipeDataRec, SigpendingRec, XstateRec};
use stasis_image::{Header, Sink, WriteError, Writer};

use crate::proc::{self, Stat, Status};
use crate::ptrace::{self, Injector};
use crate::sys;

pub use crate::ptrace::InjectError;

/// What happens to the target once its image is safely written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Let it run on (default).
    LeaveRunning,
    /// SIGKILL it.
    Kill,
    /// Leave it stopped with SIGSTOP (not traced).
    Stop,
}

/// Numbers about one checkpoint.
#[derive(Clone, Debug, Default)]
pub struct CheckpointStats {
    pub threads: usize,
    pub vmas: usize,
    pub page_bytes: u64,
    pub image_bytes: u64,
    /// How long the target was frozen (seize to image written).
    pub frozen: Duration,
}

/// Errors of the checkpoint side. Each names the process and, where it
/// applies, the thread, fd or step that failed.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("the user engine's checkpoint is not implemented yet")]
    NotImplemented,
    #[error("process {pid} does not exist (or exited during the checkpoint)")]
    NoProcess { pid: i32 },
    #[error("cannot checkpoint process {pid}: it is the checkpointer itself")]
    SelfTarget { pid: i32 },
    #[error("process {pid}: cannot seize thread {tid} with ptrace: {source}{note}")]
    Attach {
        pid: i32,
        tid: i32,
        source: io::Error,
        note: String,
    },
    #[error("process {pid}: detaching thread {tid} failed: {source}")]
    Detach {
        pid: i32,
        tid: i32,
        source: io::Error,
    },
    #[error("process {pid}: {step}: {source}")]
    Io {
        pid: i32,
        step: String,
        source: io::Error,
    },
    #[error("process {pid}, thread {tid}: {step}: {source}")]
    Thread {
        pid: i32,
        tid: i32,
        step: &'static str,
        source: io::Error,
    },
    #[error("process {pid}, fd {fd}: {step}: {source}")]
    Fd {
        pid: i32,
        fd: i32,
        step: &'static str,
        source: io::Error,
    },
    #[error("process {pid}: cannot checkpoint {what}: {reason}")]
    Unsupported {
        pid: i32,
        what: String,
        reason: String,
    },
    #[error("process {pid}, thread {tid}: injecting {call}: {source}")]
    Inject {
        pid: i32,
        tid: i32,
        call: String,
        source: InjectError,
    },
    #[error("process {pid}, thread {tid}: {call} failed in the target: {source}")]
    RemoteCall {
        pid: i32,
        tid: i32,
        call: String,
        source: io::Error,
    },
    #[error(
        "process {pid}: killed, but threads {tids:?} did not exit within {after:?} \
         (stuck in the kernel?)"
    )]
    KillTimeout {
        pid: i32,
        /// Traced threads whose exit was not seen.
        tids: Vec<i32>,
        after: Duration,
    },
    #[error("process {pid}: writing the image at offset {offset}: {source}")]
    Write {
        pid: i32,
        offset: u64,
        source: WriteError<io::Error>,
    },
}

impl DumpError {
    pub(crate) fn io(pid: i32, step: impl Into<String>, source: io::Error) -> DumpError {
        DumpError::Io {
            pid,
            step: step.into(),
            source,
        }
    }
}

/// How long [`Frozen::release`] with [`After::Kill`] waits for the killed
/// threads' exits before it gives up with [`DumpError::KillTimeout`].
pub const KILL_TIMEOUT: Duration = Duration::from_secs(30);

/// A frozen target whose image has been written. Dropping it lets the target
/// run on. All ptrace requests must come from the thread that seized the
/// target, so a `Frozen` cannot be sent to another thread.
pub struct Frozen {
    pid: i32,
    tracer: freeze::Tracer,
    _same_thread: PhantomData<*const ()>,
}

impl Frozen {
    /// The target's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Release the target: run on, kill it, or leave it stopped (SIGSTOP,
    /// untraced).
    ///
    /// With [`After::Kill`] it returns once every traced thread's exit has
    /// been collected (no traced zombie is left; the real parent, if it is
    /// not us, reaps the process as usual), or fails with
    /// [`DumpError::KillTimeout`] after [`KILL_TIMEOUT`]. If we are the
    /// target's real parent, the process is left for us to reap.
    pub fn release(mut self, after: After) -> Result<(), DumpError> {
        match after {
            After::LeaveRunning => self.tracer.release(false),
            After::Stop => self.tracer.release(true),
            After::Kill => self.tracer.kill(KILL_TIMEOUT),
        }
    }
}

/// Counts what goes to the output.
struct Out<W: io::Write> {
    w: W,
    n: u64,
}

impl<W: io::Write> Sink for Out<W> {
    type Error = io::Error;
    fn write_all(&mut self, buf: &[u8]) -> Result<(), io::Error> {
        self.w.write_all(buf)?;
        self.n += buf.len() as u64;
        Ok(())
    }
}

/// Freeze `pid`, write its image to `out`, and return the still-frozen target.
pub fn checkpoint<W: std::io::Write>(
    pid: i32,
    out: W,
    progress: Option<&dyn crate::Progress>,
) -> Result<(Frozen, W, CheckpointStats), DumpError> {
    // SAFETY: getpid has no arguments and cannot fail.
    if pid == unsafe { libc::getpid() } {
        return Err(DumpError::SelfTarget { pid });
    }
    if pid <= 0 {
        return Err(DumpError::NoProcess { pid });
    }
    match Status::read(pid).and_then(|s| s.num("Tgid")) {
        Ok(tgid) if tgid != pid as u64 => {
            return Err(DumpError::Unsupported {
                pid,
                what: format!("thread {pid}"),
                reason: format!("it is a thread of process {tgid}: give the process id"),
            })
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(DumpError::NoProcess { pid }),
        Err(e) => return Err(DumpError::io(pid, "reading /proc/PID/status", e)),
    }
    let t0 = Instant::now();
    let tracer = freeze::Tracer::freeze(pid)?;
    let (out, mut stats) = dump_frozen(pid, &tracer, out, progress)?;
    stats.frozen = t0.elapsed();
    Ok((
        Frozen {
            pid,
            tracer,
            _same_thread: PhantomData,
        },
        out,
        stats,
    ))
}

fn dump_frozen<W: io::Write>(
    pid: i32,
    tracer: &freeze::Tracer,
    out: W,
    progress: Option<&dyn crate::Progress>,
) -> Result<(W, CheckpointStats), DumpError> {
    let tids = tracer.tids();
    let trace = std::env::var_os("STASIS_DUMP_TRACE").is_some();
    let t0 = Instant::now();
    let phase = |what: &str| {
        if trace {
            eprintln!("stasis dump: {:>8} us  {what}", t0.elapsed().as_micros());
        }
    };
    phase("frozen");
    // Refuse early what cannot be restored, before touching anything.
    let children = proc::children(pid).map_err(|e| DumpError::io(pid, "listing children", e))?;
    if let Some(c) = children.first() {
        return Err(DumpError::Unsupported {
            pid,
            what: format!("child process {c}"),
            reason: "process trees are not supported by the user engine yet".into(),
        });
    }
    let maps = proc::smaps(pid).map_err(|e| DumpError::io(pid, "reading smaps", e))?;
    let files = files::collect(pid)?;
    let deleted_fds: Vec<memory::DeletedFd> = files
        .files
        .iter()
        .filter(|f| f.rec.file_flags & stasis_image::records::file_flags::DELETED != 0)
        .filter(|f| {
            f.data.is_some()
                || files
                    .files
                    .iter()
                    .any(|g| g.rec.file_id == f.rec.file_id && g.data.is_some())
        })
        .map(|f| (f.rec.dev, f.rec.ino, f.rec.open_flags))
        .collect();
    let mut vmas = memory::vmas(pid, &maps, &deleted_fds)?;

    phase("checked children, maps, files");
    // A checkpointer that died during an injection may have left threads
    // inside the gadget on their way back (rt_sigreturn): finish that first.
    let vdso = maps
        .iter()
        .find(|m| m.path == b"[vdso]")
        .ok_or_else(|| DumpError::Unsupported {
            pid,
            what: "the vDSO".into(),
            reason: "the process has no [vdso] mapping to run system calls through".into(),
        })?;
    if let Some((g, true)) = ptrace::gadget_slot(pid, vdso.start, vdso.end)
        .map_err(|e| DumpError::io(pid, "reading the vDSO", e))?
    {
        for &tid in &tids {
            ptrace::leave_gadget(pid, tid, g).map_err(|source| DumpError::Thread {
                pid,
                tid,
                step: "leaving a previous injection",
                source,
            })?;
        }
    }
    // Threads (no injection needed).
    let mut threads = Vec::with_capacity(tids.len());
    for &tid in &tids {
        threads.push(state::read_thread(pid, tid)?);
    }
    let shared_pending = ptrace::peek_siginfo(pid, true).map_err(|source| DumpError::Thread {
        pid,
        tid: pid,
        step: "reading process-wide pending signals",
        source,
    })?;

    // Injections.
    let status = Status::read(pid).map_err(|e| DumpError::io(pid, "reading status", e))?;
    let sig_set = state::signals_to_read(&status)
        .map_err(|e| DumpError::io(pid, "reading SigCgt/SigIgn", e))?;
    let ptimers =
        proc::timers(pid).map_err(|e| DumpError::io(pid, "reading /proc/PID/timers", e))?;
    phase("threads read");
    let injector = Injector::install(pid, pid, vdso.start, vdso.end)
        .map_err(|e| DumpError::io(pid, "preparing system call injection in the vDSO", e))?;
    let injected = state::inject_all(&injector, pid, &mut threads, sig_set, &ptimers);
    let uninstalled = injector.uninstall(pid);
    let injected = injected?;
    uninstalled.map_err(|e| DumpError::io(pid, "removing the injection gadget", e))?;

    phase("injections done");
    // Process-wide records.
    let stat = Stat::read(pid).map_err(|e| DumpError::io(pid, "reading stat", e))?;
    let process = state::process_rec(pid, &stat, &status, threads.len(), injected.dumpable)?;
    let (mm, auxv, exe) = state::mm_rec(pid, &stat, injected.brk)?;
    let rlimits = state::rlimits(pid)?;
    let cwd = proc::readlink(&proc::pid_path(pid, "cwd"))
        .map_err(|e| DumpError::io(pid, "reading cwd", e))?;
    let root = proc::readlink(&proc::pid_path(pid, "root"))
        .map_err(|e| DumpError::io(pid, "reading root", e))?;
    let umask = status
        .octal("Umask")
        .map_err(|e| DumpError::io(pid, "reading Umask", e))?;

    // Memory scan.
    let page_size = sys::page_size();
    let total = memory::scan(pid, &mut vmas, page_size)?;
    if let Some(p) = progress {
        p.set_total(total);
    }
    phase("pagemap scanned");

    // Header.
    let first_x = threads.first().map(|t| t.xstate.as_slice()).unwrap_or(&[]);
    let xcr0 = ptrace::xstate_xcr0(first_x).unwrap_or(0);
    let release = sys::kernel_release().map_err(|e| DumpError::io(pid, "uname", e))?;
    let header = Header::new(
        stasis_image::records::engine::USER,
        page_size as u32,
        xcr0,
        first_x.len() as u32,
        &release,
        concat!("stasis ", env!("CARGO_PKG_VERSION")),
        sys::realtime_ns(),
    );
    let mut w = Writer::new(Out { w: out, n: 0 }, &header).map_err(|source| DumpError::Write {
        pid,
        offset: 0,
        source,
    })?;
    macro_rules! put {
        ($e:expr) => {{
            let off = w.offset();
            $e.map_err(|source| DumpError::Write {
                pid,
                offset: off,
                source,
            })?
        }};
    }
    put!(w.record(kind::PROCESS, &process, &[]));
    put!(w.record_flags(kind::CPU, stasis_image::RECORD_OPTIONAL, &stasis_image::x86::cpu::this_cpu(), &[]));
    put!(w.record(
        kind::MM,
        &mm,
        &[auxv.as_slice().as_bytes_le().as_slice(), &exe]
    ));
    let fs = FsRec {
        umask,
        cwd_len: cwd.len() as u32,
        root_len: root.len() as u32,
        _pad0: 0,
    };
    put!(w.record(kind::FS, &fs, &[&cwd, &root]));
    put!(w.record(kind::RLIMITS, &rlimits, &[]));
    put!(w.record(kind::SIGACTIONS, &injected.sigactions, &[]));
    put!(w.record(kind::ITIMERS, &injected.itimers, &[]));
    for t in &injected.timers {
        put!(w.record(kind::POSIX_TIMER, t, &[]));
    }
    for t in &threads {
        put!(w.record(kind::THREAD, &t.rec, &[]));
        let xs = XstateRec {
            tid: t.rec.tid,
            size: t.xstate.len() as u32,
            xstate_bv: ptrace::xstate_bv(&t.xstate).unwrap_or(0),
            xcr0: ptrace::xstate_xcr0(&t.xstate).unwrap_or(xcr0),
        };
        put!(w.record(kind::XSTATE, &xs, &[&t.xstate]));
        if !t.pending.is_empty() {
            let sp = SigpendingRec {
                tid: t.rec.tid,
                count: t.pending.len() as u32,
            };
            put!(w.record(kind::SIGPENDING, &sp, &[t.pending.concat().as_slice()]));
        }
    }
    let sp = SigpendingRec {
        tid: 0,
        count: shared_pending.len() as u32,
    };
    put!(w.record(kind::SIGPENDING, &sp, &[shared_pending.concat().as_slice()]));
    for v in &vmas {
        put!(w.record(kind::VMA, &v.rec, &[&v.path]));
    }
    // Pages: a reader thread copies batches out of the target (and drops
    // zero pages) while this thread checksums and writes the previous one.
    let mem_path = proc::pid_path(pid, "mem");
    let mem = sys::open(mem_path.as_os_str(), libc::O_RDONLY).ok();
    std::thread::scope(|sc| -> Result<(), DumpError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(u64, memory::Batch), DumpError>>(1);
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let vmas = &vmas;
        let mem = mem.as_ref();
        sc.spawn(move || {
            let reader = memory::PageReader::new(pid, mem, page_size);
            for v in vmas.iter().filter(|v| !v.runs.is_empty()) {
                for batch in reader.plan(&v.runs) {
                    let src = match &v.object {
                        Some(fd) => memory::Src::Object {
                            fd,
                            start: v.rec.start,
                            offset: v.rec.offset,
                        },
                        None => memory::Src::Memory {
                            readable: v.readable,
                        },
                    };
                    let buf = back_rx.try_recv().unwrap_or_default();
                    let r = reader
                        .read(&batch, src, v.save == memory::Save::AnonOnly, buf)
                        .map(|b| (v.rec.start, b));
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        return;
                    }
                }
            }
        });
        for item in rx {
            let (start, b) = item?;
            if !b.runs.is_empty() {
                put!(w.pages(start, &b.runs, b.chunks()));
            }
            if let Some(p) = progress {
                p.advance(b.read);
            }
            let _ = back_tx.send(b.buf);
        }
        Ok(())
    })?;
    for f in &files.files {
        put!(w.record(kind::FD_FILE, &f.rec, &[&f.path]));
        if let Some(data) = &f.data {
            let rec = FileDataRec {
                file_id: f.rec.file_id,
                _pad0: 0,
                size: data.len() as u64,
                data_off: 0,
            };
            put!(w.data_record(
                kind::FILE_DATA,
                &rec,
                &[],
                data.len() as u64,
                [data.as_slice()]
            ));
        }
    }
    for p in &files.pipes {
        put!(w.record(kind::FD_PIPE, &p.rec, &[&p.path]));
    }
    for (id, data) in &files.pipe_data {
        let rec = PipeDataRec {
            pipe_id: *id,
            _pad0: 0,
            len: data.len() as u64,
        };
        put!(w.record(kind::PIPE_DATA, &rec, &[data]));
    }
    phase("image written");
    let page_bytes = w.page_bytes();
    let off = w.offset();
    let sink = w.finish().map_err(|source| DumpError::Write {
        pid,
        offset: off,
        source,
    })?;
    let stats = CheckpointStats {
        threads: threads.len(),
        vmas: vmas.len(),
        page_bytes,
        image_bytes: sink.n,
        frozen: Duration::ZERO,
    };
    Ok((sink.w, stats))
}

/// Little-endian bytes of a u64 slice (auxv tail).
trait LeBytes {
    fn as_bytes_le(&self) -> Vec<u8>;
}

impl LeBytes for [u64] {
    fn as_bytes_le(&self) -> Vec<u8> {
        self.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

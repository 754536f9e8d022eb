//! What `inspect` reports, as plain serializable data. The JSON output is
//! this structure; the tables are drawn from it. Field names are stable.
//!
//! Conventions: addresses, sizes and ids are JSON numbers; bit masks are
//! hex strings ("0x...") next to an array of decoded names.

use std::collections::HashMap;

use serde::Serialize;
use stasis_image::records::{
    kind, thread_flags, EpollRec, EventfdRec, SignalfdRec, SocketRec, TimerfdRec,
};
use stasis_image::{Image, ProcessImage, RecordRef};

use crate::names;
use crate::util::{cstr, rfc3339};

#[derive(Serialize, Debug)]
pub struct Report {
    pub image: ImageInfo,
    pub header: HeaderInfo,
    pub process: ProcessInfo,
    pub threads: Vec<ThreadInfo>,
    pub vmas: Vec<VmaInfo>,
    pub fds: Vec<FdInfo>,
    pub signal_handlers: Vec<HandlerInfo>,
    pub totals: Totals,
}

#[derive(Serialize, Debug)]
pub struct ImageInfo {
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Records, END included.
    pub records: usize,
}

#[derive(Serialize, Debug)]
pub struct HeaderInfo {
    pub format_version: u32,
    /// "kernel" or "user".
    pub engine: String,
    pub writer: String,
    pub kernel_release: String,
    pub created_ns: u64,
    /// RFC 3339, UTC.
    pub created: String,
    pub arch: String,
    pub page_size: u32,
    pub xcr0: String,
    pub xfeatures: Vec<String>,
    pub xsave_size: u32,
    /// The checkpointing CPU (absent in images written before the CPU record).
    pub cpu: Option<CpuInfo>,
}

/// The CPU record, and how it compares with the CPU running `inspect`.
#[derive(Serialize, Debug)]
pub struct CpuInfo {
    pub vendor: String,
    pub family: u32,
    pub model: u32,
    pub stepping: u32,
    /// Instruction-set features compared at restart (names as in /proc/cpuinfo).
    pub features: Vec<String>,
    /// Of those, the ones this machine's CPU lacks (a restart here is refused
    /// unless `--allow-cpu-mismatch`).
    pub missing_here: Vec<String>,
    /// XSAVE components the image's CPU enabled and this one lacks.
    pub missing_xsave_here: Vec<String>,
    /// XSAVE components this CPU enables and the image's CPU (with XSAVE) did
    /// not: restart refuses those too (buffers sized at start-up would overflow).
    pub extra_xsave_here: Vec<String>,
}

fn cpu_info(c: &stasis_image::records::CpuRec) -> CpuInfo {
    use stasis_image::x86::{cpu, CpuCompat, FeatureList};
    let sig = c.signature;
    let base_family = (sig >> 8) & 0xf;
    let family = if base_family == 0xf { base_family + ((sig >> 20) & 0xff) } else { base_family };
    let mut model = (sig >> 4) & 0xf;
    if base_family == 0x6 || base_family == 0xf {
        model |= ((sig >> 16) & 0xf) << 4;
    }
    let words = |l: FeatureList| l.to_string().split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let compat = CpuCompat::compare(c, &cpu::this_cpu());
    CpuInfo {
        vendor: text(&c.vendor),
        family,
        model,
        stepping: sig & 0xf,
        features: words(FeatureList::of(c)),
        missing_here: words(compat.missing),
        missing_xsave_here: names::xfeatures(compat.missing_xfeatures),
        extra_xsave_here: names::xfeatures(compat.extra_xfeatures),
    }
}

#[derive(Serialize, Debug)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    pub ppid: u32,
    pub pgid: u32,
    pub sid: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    pub nr_threads: u32,
    pub cwd: String,
    pub root: String,
    pub umask: String,
    /// Signals pending for the whole process.
    pub shared_pending: usize,
    pub posix_timers: usize,
}

#[derive(Serialize, Debug)]
pub struct ThreadInfo {
    pub tid: u32,
    pub name: String,
    pub leader: bool,
    pub rip: u64,
    pub rsp: u64,
    pub fs_base: u64,
    /// Caught inside a system call (registers carry the restart fixup).
    pub in_syscall: bool,
    /// The system call it was in, when known: orig_rax, or rax once the
    /// restart fixup moved the number there (rax = orig_rax, rip -= 2).
    pub syscall: Option<u64>,
    /// Its name, when known.
    pub syscall_name: Option<&'static str>,
    pub sigmask: String,
    pub blocked: Vec<String>,
    pub pending_signals: usize,
    /// Bytes of XSAVE area stored (0 if none).
    pub xstate_size: u32,
    /// Components present in the saved area (XSTATE_BV).
    pub xstate_features: Vec<String>,
}

#[derive(Serialize, Debug)]
pub struct VmaInfo {
    pub start: u64,
    pub end: u64,
    pub size: u64,
    /// "rwxp" style, as in /proc/PID/maps.
    pub prot: String,
    pub kind: String,
    pub flags: Vec<&'static str>,
    pub path: String,
    /// Offset into the mapped file.
    pub offset: u64,
    /// Bytes of page data stored in the image for this VMA.
    pub page_bytes: u64,
}

#[derive(Serialize, Debug)]
pub struct FdInfo {
    pub fd: u32,
    /// file, dir, chr, blk, tty, memfd, pipe, fifo, socket, eventfd, timerfd, signalfd, epoll.
    pub kind: String,
    /// Path, or a description for objects without one.
    pub path: String,
    /// File position (path-named files only).
    pub pos: Option<u64>,
    /// Open flags, `O_RDWR|O_APPEND|O_CLOEXEC` style.
    pub flags: String,
    /// The file was deleted and its contents are stored in the image.
    pub deleted: bool,
}

#[derive(Serialize, Debug)]
pub struct HandlerInfo {
    pub signal: u32,
    pub name: String,
    /// "ignore", or the handler's address as hex.
    pub handler: String,
    pub flags: Vec<String>,
    pub mask: Vec<String>,
}

#[derive(Serialize, Debug)]
pub struct Totals {
    pub threads: usize,
    pub vmas: usize,
    pub mapped_bytes: u64,
    pub page_bytes: u64,
    pub fds: usize,
    pub image_bytes: u64,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn pipe_name(fifo: bool, path: &[u8], ino: u64) -> String {
    if fifo {
        text(path)
    } else {
        format!("pipe:[{ino}]")
    }
}

fn family(f: u32) -> String {
    match f as i32 {
        libc::AF_UNIX => "unix".into(),
        libc::AF_INET => "inet".into(),
        libc::AF_INET6 => "inet6".into(),
        libc::AF_NETLINK => "netlink".into(),
        libc::AF_PACKET => "packet".into(),
        n => format!("family {n}"),
    }
}

fn sock_type(t: u32) -> String {
    match t as i32 {
        libc::SOCK_STREAM => "stream".into(),
        libc::SOCK_DGRAM => "dgram".into(),
        libc::SOCK_SEQPACKET => "seqpacket".into(),
        libc::SOCK_RAW => "raw".into(),
        n => format!("type {n}"),
    }
}

/// An fd record of an extension without a typed model (sockets, events).
fn other_fd(r: &RecordRef<'_>) -> Option<FdInfo> {
    let fd = |fd: u32, kind: &str, path: String, open: u32, fdf: u32| FdInfo {
        fd,
        kind: kind.into(),
        path,
        pos: None,
        flags: names::open_flags(open, fdf),
        deleted: false,
    };
    match r.kind {
        kind::FD_SOCKET => {
            let s: SocketRec = r.fixed()?;
            let mut d = format!("{} {}", family(s.family), sock_type(s.sock_type));
            if s.state == 10 {
                d.push_str(" listening");
            }
            Some(fd(s.fd, "socket", d, s.open_flags, s.fd_flags))
        }
        kind::FD_EVENTFD => {
            let e: EventfdRec = r.fixed()?;
            Some(fd(
                e.fd,
                "eventfd",
                format!("count {}", e.count),
                e.open_flags,
                e.fd_flags,
            ))
        }
        kind::FD_TIMERFD => {
            let t: TimerfdRec = r.fixed()?;
            Some(fd(
                t.fd,
                "timerfd",
                format!("clock {}", t.clock_id),
                t.open_flags,
                t.fd_flags,
            ))
        }
        kind::FD_SIGNALFD => {
            let s: SignalfdRec = r.fixed()?;
            let sigs = names::sigset(s.mask).join(",");
            Some(fd(
                s.fd,
                "signalfd",
                format!("mask {sigs}"),
                s.open_flags,
                s.fd_flags,
            ))
        }
        kind::FD_EPOLL => {
            let e: EpollRec = r.fixed()?;
            Some(fd(
                e.fd,
                "epoll",
                format!("{} watched fds", e.count),
                e.open_flags,
                e.fd_flags,
            ))
        }
        _ => None,
    }
}

/// Build the report of a validated image.
pub fn build(path: &str, img: &Image<'_>, p: &ProcessImage<'_>, size: u64) -> Report {
    let h = &p.header;
    let ps = u64::from(h.page_size);

    let threads: Vec<ThreadInfo> = p
        .threads
        .iter()
        .map(|t| {
            let r = &t.rec;
            let in_syscall = r.flags & thread_flags::SYSCALL_FIXED != 0;
            let syscall = in_syscall
                .then(|| {
                    [r.regs.orig_rax, r.regs.rax]
                        .into_iter()
                        .find(|&n| n < names::SYSCALL_NR_LIMIT)
                })
                .flatten();
            ThreadInfo {
                tid: r.tid,
                name: cstr(&r.comm),
                leader: r.flags & thread_flags::LEADER != 0,
                rip: r.regs.rip,
                rsp: r.regs.rsp,
                fs_base: r.regs.fs_base,
                in_syscall,
                syscall,
                syscall_name: syscall.and_then(names::syscall),
                sigmask: format!("{:#x}", r.sigmask),
                blocked: names::sigset(r.sigmask),
                pending_signals: t.pending.len(),
                xstate_size: t.xstate.as_ref().map_or(0, |x| x.rec.size),
                xstate_features: t
                    .xstate
                    .as_ref()
                    .map(|x| names::xfeatures(x.rec.xstate_bv))
                    .unwrap_or_default(),
            }
        })
        .collect();

    let mut stored: HashMap<u64, u64> = HashMap::new();
    for pg in &p.pages {
        let bytes: u64 = pg
            .runs
            .iter()
            .map(|run| run.nr_pages.saturating_mul(ps))
            .sum();
        let e = stored.entry(pg.vma_start).or_default();
        *e = e.saturating_add(bytes);
    }
    let vmas: Vec<VmaInfo> = p
        .vmas
        .iter()
        .map(|v| {
            let r = &v.rec;
            let page_bytes = stored.get(&r.start).copied().unwrap_or(0);
            VmaInfo {
                start: r.start,
                end: r.end,
                size: r.end.saturating_sub(r.start),
                prot: names::prot(r.prot, r.flags),
                kind: names::vma_kind(r.kind),
                flags: names::vma_flags(r.flags),
                path: text(v.path),
                offset: r.offset,
                page_bytes,
            }
        })
        .collect();

    let mut fds: Vec<FdInfo> = p
        .files
        .iter()
        .map(|f| FdInfo {
            fd: f.rec.fd,
            kind: names::file_kind(f.rec.kind),
            path: text(f.path),
            pos: Some(f.rec.pos),
            flags: names::open_flags(f.rec.open_flags, f.rec.fd_flags),
            deleted: f.rec.file_flags & stasis_image::records::file_flags::DELETED != 0,
        })
        .chain(p.pipes.iter().map(|pp| FdInfo {
            fd: pp.rec.fd,
            kind: if pp.rec.fifo != 0 { "fifo" } else { "pipe" }.into(),
            path: pipe_name(pp.rec.fifo != 0, pp.path, pp.rec.ino),
            pos: None,
            flags: names::open_flags(pp.rec.open_flags, pp.rec.fd_flags),
            deleted: false,
        }))
        .chain(p.other.iter().filter_map(other_fd))
        .collect();
    fds.sort_by_key(|f| f.fd);

    let signal_handlers: Vec<HandlerInfo> = p
        .sigactions
        .actions
        .iter()
        .zip(1u32..)
        .filter(|(a, _)| a.handler as usize != libc::SIG_DFL)
        .map(|(a, sig)| HandlerInfo {
            signal: sig,
            name: names::signal(sig),
            handler: if a.handler as usize == libc::SIG_IGN {
                "ignore".into()
            } else {
                format!("{:#x}", a.handler)
            },
            flags: names::sa_flags(a.flags),
            mask: names::sigset(a.mask),
        })
        .collect();

    let totals = Totals {
        threads: threads.len(),
        vmas: vmas.len(),
        mapped_bytes: vmas.iter().map(|v| v.size).sum(),
        page_bytes: img.end().page_bytes,
        fds: fds.len(),
        image_bytes: size,
    };

    let pr = &p.process;
    Report {
        image: ImageInfo {
            path: path.to_string(),
            size,
            records: img.records().len(),
        },
        header: HeaderInfo {
            format_version: h.version,
            engine: names::engine(h.engine),
            writer: text(h.writer_bytes()),
            kernel_release: text(h.kernel_release_bytes()),
            created_ns: h.created_ns,
            created: rfc3339(h.created_ns),
            arch: names::arch(h.arch),
            page_size: h.page_size,
            xcr0: format!("{:#x}", h.xcr0),
            xfeatures: names::xfeatures(h.xcr0),
            xsave_size: h.xsave_size,
            cpu: p.cpu.as_ref().map(cpu_info),
        },
        process: ProcessInfo {
            pid: pr.pid,
            comm: cstr(&pr.comm),
            exe: text(p.mm.exe),
            ppid: pr.ppid,
            pgid: pr.pgid,
            sid: pr.sid,
            uid: pr.uid,
            euid: pr.euid,
            gid: pr.gid,
            egid: pr.egid,
            nr_threads: pr.nr_threads,
            cwd: text(p.fs.cwd),
            root: text(p.fs.root),
            umask: format!("{:04o}", p.fs.umask),
            shared_pending: p.shared_pending.len(),
            posix_timers: p.posix_timers.len(),
        },
        threads,
        vmas,
        fds,
        signal_handlers,
        totals,
    }
}

//! A small but realistic process image, written with the stasis-image Writer:
//! PID 4242 "sample", 3 threads with xstate (one caught in futex(2), one
//! with SIGUSR1 blocked and a pending signal), 6 VMAs of which 4 have pages
//! stored (23 pages), tty/log/deleted-file/pipe/socket descriptors, and two
//! non-default signal dispositions.

#![allow(dead_code)]

use stasis_image::records::{
    engine, file_flags, file_kind, kind, thread_flags, vma_flags, vma_kind, FdFileRec, FdPipeRec,
    FileDataRec, FsRec, ItimersRec, MmRec, PageRun, PipeDataRec, ProcessRec, Rlimit, RlimitsRec,
    Sigaction, SigactionsRec, Siginfo, SigpendingRec, SocketRec, ThreadRec, UserRegs, VmaRec,
    XstateRec,
};
use stasis_image::{Header, Writer};
use zerocopy::IntoBytes;

pub const PID: u32 = 4242;
pub const PAGE: u64 = 4096;
pub const XCR0: u64 = 0x2e7; // x87 sse avx avx512 (3 components) pkru
pub const XSAVE_SIZE: u32 = 2696;
pub const CREATED_NS: u64 = 1_795_000_000_000_000_000;
pub const EXE: &str = "/usr/bin/sample";
pub const PAGE_BYTES: u64 = 23 * PAGE;

fn comm(s: &str) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..s.len()].copy_from_slice(s.as_bytes());
    c
}

/// Deterministic page contents: every page different.
fn page(addr: u64) -> Vec<u8> {
    (0..PAGE)
        .map(|i| ((addr >> 12) as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
    pub kind: u32,
    pub flags: u32,
    pub offset: u64,
    pub path: &'static str,
    /// (addr, nr_pages) runs stored.
    pub runs: Vec<(u64, u64)>,
}

pub fn vmas() -> Vec<Vma> {
    let (r, w, x) = (1, 2, 4);
    vec![
        Vma {
            start: 0x40_0000,
            end: 0x40_2000,
            prot: r | x,
            kind: vma_kind::FILE_PRIVATE,
            flags: 0,
            offset: 0,
            path: EXE,
            runs: vec![],
        },
        Vma {
            start: 0x40_2000,
            end: 0x40_4000,
            prot: r | w,
            kind: vma_kind::FILE_PRIVATE,
            flags: 0,
            offset: 0x2000,
            path: EXE,
            runs: vec![(0x40_3000, 1)],
        },
        Vma {
            start: 0x100_0000,
            end: 0x102_1000,
            prot: r | w,
            kind: vma_kind::HEAP,
            flags: 0,
            offset: 0,
            path: "[heap]",
            runs: vec![(0x100_0000, 2), (0x101_0000, 2)],
        },
        Vma {
            start: 0x7f00_0000_0000,
            end: 0x7f00_0010_0000,
            prot: r | w,
            kind: vma_kind::ANON_PRIVATE,
            flags: 0,
            offset: 0,
            path: "",
            runs: vec![(0x7f00_0000_0000, 16)],
        },
        Vma {
            start: 0x7ffd_0000_0000,
            end: 0x7ffd_0002_1000,
            prot: r | w,
            kind: vma_kind::STACK,
            flags: vma_flags::GROWSDOWN,
            offset: 0,
            path: "[stack]",
            runs: vec![(0x7ffd_0001_f000, 2)],
        },
        Vma {
            start: 0x7ffd_0010_0000,
            end: 0x7ffd_0010_2000,
            prot: r | x,
            kind: vma_kind::VDSO,
            flags: 0,
            offset: 0,
            path: "[vdso]",
            runs: vec![],
        },
    ]
}

pub struct Thread {
    pub tid: u32,
    pub name: &'static str,
    pub flags: u32,
    pub rip: u64,
    pub rsp: u64,
    pub orig_rax: u64,
    pub sigmask: u64,
    pub pending: usize,
}

pub fn threads() -> Vec<Thread> {
    vec![
        Thread {
            tid: PID,
            name: "sample",
            flags: thread_flags::LEADER,
            rip: 0x40_1000,
            rsp: 0x7ffd_0002_0f00,
            orig_rax: u64::MAX,
            sigmask: 0,
            pending: 0,
        },
        Thread {
            tid: PID + 1,
            name: "worker-1",
            flags: thread_flags::SYSCALL_FIXED,
            rip: 0x40_1ffe,
            rsp: 0x7f00_0008_0000,
            orig_rax: 202,
            sigmask: 0,
            pending: 0,
        },
        Thread {
            tid: PID + 2,
            name: "worker-2",
            flags: 0,
            rip: 0x40_1100,
            rsp: 0x7f00_000f_0000,
            orig_rax: u64::MAX,
            sigmask: 1 << (libc::SIGUSR1 - 1),
            pending: 1,
        },
    ]
}

/// The image bytes.
pub fn sample_image() -> Vec<u8> {
    let header = Header::new(
        engine::USER,
        PAGE as u32,
        XCR0,
        XSAVE_SIZE,
        "6.1.0-test-amd64",
        "stasis-test 0.1.0",
        CREATED_NS,
    );
    let mut w = Writer::new(Vec::new(), &header).expect("header");

    let process = ProcessRec {
        pid: PID,
        ppid: 1,
        pgid: PID,
        sid: PID,
        uid: 1000,
        euid: 1000,
        suid: 1000,
        fsuid: 1000,
        gid: 100,
        egid: 100,
        sgid: 100,
        fsgid: 100,
        nr_threads: 3,
        comm: comm("sample"),
        dumpable: 1,
        exit_signal: libc::SIGCHLD as u32,
        nice: 20,
        ..Default::default()
    };
    w.record(kind::PROCESS, &process, &[]).expect("process");

    let auxv: Vec<u8> = [libc::AT_PAGESZ, PAGE, libc::AT_NULL, 0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mm = MmRec {
        start_code: 0x40_0000,
        end_code: 0x40_2000,
        start_data: 0x40_2000,
        end_data: 0x40_4000,
        start_brk: 0x100_0000,
        brk: 0x102_1000,
        start_stack: 0x7ffd_0002_0ff0,
        vdso: 0x7ffd_0010_0000,
        auxv_words: 4,
        exe_len: EXE.len() as u32,
        ..Default::default()
    };
    w.record(kind::MM, &mm, &[&auxv, EXE.as_bytes()])
        .expect("mm");

    let vs = vmas();
    for v in &vs {
        let rec = VmaRec {
            start: v.start,
            end: v.end,
            offset: v.offset,
            prot: v.prot,
            flags: v.flags,
            kind: v.kind,
            path_len: v.path.len() as u32,
            ..Default::default()
        };
        w.record(kind::VMA, &rec, &[v.path.as_bytes()])
            .expect("vma");
    }
    for v in vs.iter().filter(|v| !v.runs.is_empty()) {
        let runs: Vec<PageRun> = v
            .runs
            .iter()
            .map(|&(addr, nr_pages)| PageRun { addr, nr_pages })
            .collect();
        let pages: Vec<Vec<u8>> = v
            .runs
            .iter()
            .flat_map(|&(a, n)| (0..n).map(move |i| page(a + i * PAGE)))
            .collect();
        w.pages(v.start, &runs, pages.iter().map(|p| p.as_slice()))
            .expect("pages");
    }

    for t in threads() {
        let regs = UserRegs {
            rip: t.rip,
            rsp: t.rsp,
            orig_rax: t.orig_rax,
            rax: 0,
            cs: 0x33,
            ss: 0x2b,
            eflags: 0x246,
            fs_base: 0x7f00_0000_1000 + u64::from(t.tid),
            ..Default::default()
        };
        let rec = ThreadRec {
            tid: t.tid,
            flags: t.flags,
            regs,
            sigmask: t.sigmask,
            comm: comm(t.name),
            ..Default::default()
        };
        w.record(kind::THREAD, &rec, &[]).expect("thread");
        let area: Vec<u8> = (0..XSAVE_SIZE).map(|i| (i as u8) ^ (t.tid as u8)).collect();
        let xs = XstateRec {
            tid: t.tid,
            size: XSAVE_SIZE,
            xstate_bv: 0x7,
            xcr0: XCR0,
        };
        w.record(kind::XSTATE, &xs, &[&area]).expect("xstate");
        if t.pending > 0 {
            let mut si = Siginfo { bytes: [0; 128] };
            si.bytes[..4].copy_from_slice(&libc::SIGUSR1.to_le_bytes());
            let sp = SigpendingRec {
                tid: t.tid,
                count: 1,
            };
            w.record(kind::SIGPENDING, &sp, &[si.as_bytes()])
                .expect("sigpending");
        }
    }

    let mut sa = SigactionsRec::default();
    sa.actions[(libc::SIGUSR1 - 1) as usize] = Sigaction {
        handler: 0x40_1234,
        flags: (libc::SA_SIGINFO | libc::SA_RESTART) as u64 | 0x0400_0000,
        restorer: 0x40_1300,
        mask: 1 << (libc::SIGTERM - 1),
    };
    sa.actions[(libc::SIGPIPE - 1) as usize] = Sigaction {
        handler: 1,
        ..Default::default()
    };
    w.record(kind::SIGACTIONS, &sa, &[]).expect("sigactions");

    let mut rl = RlimitsRec::default();
    for l in rl.limits.iter_mut() {
        *l = Rlimit {
            cur: u64::MAX,
            max: u64::MAX,
        };
    }
    w.record(kind::RLIMITS, &rl, &[]).expect("rlimits");
    let (cwd, root) = ("/home/user", "/");
    let fs = FsRec {
        umask: 0o022,
        cwd_len: cwd.len() as u32,
        root_len: root.len() as u32,
        _pad0: 0,
    };
    w.record(kind::FS, &fs, &[cwd.as_bytes(), root.as_bytes()])
        .expect("fs");
    w.record(kind::ITIMERS, &ItimersRec::default(), &[])
        .expect("itimers");

    let file = |fd: u32,
                kind: u32,
                open: i32,
                fd_flags: u32,
                file_id: u32,
                pos: u64,
                path: &str,
                deleted: bool| {
        (
            FdFileRec {
                fd,
                fd_flags,
                open_flags: open as u32,
                kind,
                file_id,
                file_flags: if deleted { file_flags::DELETED } else { 0 },
                pos,
                size: if deleted { 100 } else { pos },
                mode: 0o100644,
                path_len: path.len() as u32,
                ..Default::default()
            },
            path.to_string(),
        )
    };
    let files = [
        file(
            0,
            file_kind::TTY,
            libc::O_RDWR,
            0,
            1,
            0,
            "/dev/pts/3",
            false,
        ),
        file(
            1,
            file_kind::REGULAR,
            libc::O_WRONLY | libc::O_APPEND,
            0,
            2,
            1234,
            "/tmp/sample.log",
            false,
        ),
        file(
            2,
            file_kind::TTY,
            libc::O_RDWR,
            0,
            1,
            0,
            "/dev/pts/3",
            false,
        ),
        file(
            3,
            file_kind::REGULAR,
            libc::O_RDWR,
            1,
            3,
            50,
            "/tmp/scratch (deleted)",
            true,
        ),
    ];
    for (rec, path) in &files {
        w.record(kind::FD_FILE, rec, &[path.as_bytes()])
            .expect("fd_file");
    }
    let contents = vec![b'x'; 100];
    let fdata = FileDataRec {
        file_id: 3,
        _pad0: 0,
        size: 100,
        data_off: 0,
    };
    w.data_record(kind::FILE_DATA, &fdata, &[], 100, [contents.as_slice()])
        .expect("file_data");

    for (fd, open) in [(4, libc::O_RDONLY), (5, libc::O_WRONLY | libc::O_NONBLOCK)] {
        let p = FdPipeRec {
            fd,
            fd_flags: 1,
            open_flags: open as u32,
            pipe_id: 1,
            file_id: 10 + fd,
            fifo: 0,
            capacity: 65536,
            path_len: 0,
            ino: 777,
        };
        w.record(kind::FD_PIPE, &p, &[]).expect("fd_pipe");
    }
    let pd = PipeDataRec {
        pipe_id: 1,
        _pad0: 0,
        len: 5,
    };
    w.record(kind::PIPE_DATA, &pd, &[b"hello"])
        .expect("pipe_data");

    let mut sock = SocketRec {
        fd: 6,
        fd_flags: 1,
        open_flags: libc::O_RDWR as u32,
        file_id: 20,
        family: libc::AF_UNIX as u32,
        sock_type: libc::SOCK_STREAM as u32,
        state: 10,
        backlog: 16,
        ..Default::default()
    };
    let addr = b"\x01\x00/tmp/sample.sock";
    sock.local[..addr.len()].copy_from_slice(addr);
    sock.local_len = addr.len() as u32;
    w.record(kind::FD_SOCKET, &sock, &[]).expect("socket");

    w.finish().expect("finish")
}

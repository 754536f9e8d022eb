//! Writes a few valid images into a directory: the seed corpus of the
//! `parse` fuzz target (crates/image/fuzz/run.sh), and sample input for
//! anyone who wants to look at the format.
//!
//!     cargo run -p stasis-image --features std --example gen_corpus -- DIR

use std::path::PathBuf;

use stasis_image::records::*;
use stasis_image::{Header, IoSink, Writer, RECORD_OPTIONAL};
use zerocopy::IntoBytes;

struct Shape {
    name: &'static str,
    threads: u32,
    vmas: u64,
    pages: bool,
    files: bool,
    extras: bool,
}

fn image(s: &Shape) -> Vec<u8> {
    let ps: u32 = 4096;
    let h = Header::new(engine::USER, ps, 0x7, 832, "6.8.0", "stasis gen_corpus", 1);
    let mut w = Writer::new(IoSink(Vec::new()), &h).expect("header");
    let pid = 1000;
    let p = ProcessRec {
        pid,
        ppid: 1,
        pgid: pid,
        sid: pid,
        nr_threads: s.threads,
        ..Default::default()
    };
    w.record(kind::PROCESS, &p, &[]).expect("write");
    let exe = b"/bin/seed";
    let auxv: [u64; 4] = [6, 4096, 0, 0];
    let mm = MmRec {
        auxv_words: 4,
        exe_len: exe.len() as u32,
        ..Default::default()
    };
    w.record(kind::MM, &mm, &[auxv.as_bytes(), exe])
        .expect("write");
    w.record(kind::SIGACTIONS, &SigactionsRec::default(), &[])
        .expect("write");
    w.record(kind::RLIMITS, &RlimitsRec::default(), &[])
        .expect("write");
    let (cwd, root) = (b"/tmp".as_slice(), b"/".as_slice());
    let fs = FsRec {
        umask: 0o22,
        cwd_len: cwd.len() as u32,
        root_len: root.len() as u32,
        _pad0: 0,
    };
    w.record(kind::FS, &fs, &[cwd, root]).expect("write");
    w.record(kind::ITIMERS, &ItimersRec::default(), &[])
        .expect("write");
    let psz = u64::from(ps);
    for i in 0..s.vmas {
        let start = 0x400000 + i * 4 * psz;
        let path = b"[anon]";
        let v = VmaRec {
            start,
            end: start + 2 * psz,
            prot: 3,
            kind: vma_kind::ANON_PRIVATE,
            path_len: path.len() as u32,
            ..Default::default()
        };
        w.record(kind::VMA, &v, &[path]).expect("write");
        if s.pages {
            let data = vec![i as u8 ^ 0x5a; ps as usize];
            w.pages(
                start,
                &[PageRun {
                    addr: start + psz,
                    nr_pages: 1,
                }],
                [data.as_slice()],
            )
            .expect("write");
        }
    }
    for t in 0..s.threads {
        let tid = pid + t;
        let rec = ThreadRec {
            tid,
            flags: if t == 0 { thread_flags::LEADER } else { 0 },
            ..Default::default()
        };
        w.record(kind::THREAD, &rec, &[]).expect("write");
        let area = [0u8; 64];
        let xs = XstateRec {
            tid,
            size: area.len() as u32,
            xstate_bv: 3,
            xcr0: 7,
        };
        w.record(kind::XSTATE, &xs, &[&area]).expect("write");
        let si = Siginfo::default();
        w.record(
            kind::SIGPENDING,
            &SigpendingRec { tid, count: 1 },
            &[si.as_bytes()],
        )
        .expect("write");
    }
    if s.files {
        let path = b"/tmp/deleted";
        let f = FdFileRec {
            fd: 3,
            kind: file_kind::REGULAR,
            file_id: 1,
            file_flags: file_flags::DELETED,
            size: 5,
            path_len: path.len() as u32,
            ..Default::default()
        };
        w.record(kind::FD_FILE, &f, &[path]).expect("write");
        let fd = FileDataRec {
            file_id: 1,
            size: 5,
            ..Default::default()
        };
        w.data_record(kind::FILE_DATA, &fd, &[], 5, [b"hello".as_slice()])
            .expect("write");
        let p = FdPipeRec {
            fd: 4,
            pipe_id: 1,
            file_id: 2,
            capacity: 65536,
            ..Default::default()
        };
        w.record(kind::FD_PIPE, &p, &[]).expect("write");
        let pd = PipeDataRec {
            pipe_id: 1,
            _pad0: 0,
            len: 3,
        };
        w.record(kind::PIPE_DATA, &pd, &[b"abc"]).expect("write");
    }
    if s.extras {
        w.record(
            kind::POSIX_TIMER,
            &PosixTimerRec {
                id: 1,
                ..Default::default()
            },
            &[],
        )
        .expect("write");
        w.record(
            kind::FD_EVENTFD,
            &EventfdRec {
                fd: 5,
                ..Default::default()
            },
            &[],
        )
        .expect("write");
        let t = EpollTarget {
            tfd: 5,
            events: 1,
            data: 7,
        };
        w.record(
            kind::FD_EPOLL,
            &EpollRec {
                fd: 6,
                count: 1,
                ..Default::default()
            },
            &[t.as_bytes()],
        )
        .expect("write");
        let shm = SysvShmRec {
            key: 1,
            shmid: 2,
            mode: 0o600,
            size: 10,
            ..Default::default()
        };
        w.data_record(kind::SYSV_SHM, &shm, &[], 10, [b"0123456789".as_slice()])
            .expect("write");
        let e = TreeEntry {
            pid,
            ppid: 1,
            pgid: pid,
            sid: pid,
        };
        w.record(
            kind::TASK_TREE,
            &TaskTreeRec { count: 1, _pad0: 0 },
            &[e.as_bytes()],
        )
        .expect("write");
        w.record_flags(0x0000_7777, RECORD_OPTIONAL, &[1u8, 2, 3], &[])
            .expect("write");
    }
    w.finish().expect("finish").0
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let shapes = [
        Shape {
            name: "minimal",
            threads: 1,
            vmas: 0,
            pages: false,
            files: false,
            extras: false,
        },
        Shape {
            name: "vmas",
            threads: 1,
            vmas: 3,
            pages: false,
            files: false,
            extras: false,
        },
        Shape {
            name: "pages",
            threads: 2,
            vmas: 2,
            pages: true,
            files: false,
            extras: false,
        },
        Shape {
            name: "files",
            threads: 1,
            vmas: 1,
            pages: false,
            files: true,
            extras: false,
        },
        Shape {
            name: "everything",
            threads: 3,
            vmas: 2,
            pages: true,
            files: true,
            extras: true,
        },
    ];
    for s in &shapes {
        let b = image(s);
        stasis_image::ProcessImage::parse(&b, &stasis_image::ParseOptions::ALL)
            .expect("seed must be valid");
        std::fs::write(dir.join(format!("seed-{}.img", s.name)), &b).expect("write seed");
    }
    eprintln!("gen_corpus: {} seeds in {}", shapes.len(), dir.display());
}

//! Unit tests: one per error variant, truncation and bit flips, layout checks,
//! proptest round trips and no-panic on arbitrary bytes.

#![allow(clippy::type_complexity)]

use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use core::mem::{offset_of, size_of};

#[allow(unused_imports)]
use proptest::prelude::*;
use zerocopy::IntoBytes;

use crate::records::*;
use crate::*;

pub(crate) const PS: u64 = 4096;
const PID: u32 = 100;

fn header() -> Header {
    Header::new(
        engine::USER,
        4096,
        0x7,
        832,
        "6.8.0-test",
        "stasis-test",
        1_700_000_000,
    )
}

// ---------------------------------------------------------------- specs

/// Everything a process image holds, owned: the input of the writer tests
/// and the expected output of the parser.
#[derive(Clone, Debug)]
#[allow(clippy::type_complexity)]
pub(crate) struct Spec {
    pub process: ProcessRec,
    pub mm: MmRec,
    pub auxv: Vec<u64>,
    pub exe: Vec<u8>,
    pub vmas: Vec<(VmaRec, Vec<u8>)>,
    /// vma_start, runs, data.
    pub pages: Vec<(u64, Vec<PageRun>, Vec<u8>)>,
    pub threads: Vec<(ThreadRec, Option<(XstateRec, Vec<u8>)>, Vec<Siginfo>)>,
    pub sigactions: SigactionsRec,
    pub shared_pending: Vec<Siginfo>,
    pub rlimits: RlimitsRec,
    pub fs: (u32, Vec<u8>, Vec<u8>),
    pub itimers: ItimersRec,
    pub posix_timers: Vec<PosixTimerRec>,
    pub files: Vec<(FdFileRec, Vec<u8>, Option<Vec<u8>>)>,
    pub pipes: Vec<(FdPipeRec, Vec<u8>)>,
    pub pipe_data: Vec<(u32, Vec<u8>)>,
    pub eventfds: Vec<EventfdRec>,
}

fn thread(tid: u32, leader: bool) -> ThreadRec {
    let mut t = ThreadRec {
        tid,
        ..Default::default()
    };
    if leader {
        t.flags = thread_flags::LEADER;
    }
    t.regs.rip = 0x401000 + u64::from(tid);
    t.comm[..4].copy_from_slice(b"work");
    t
}

fn siginfo(signo: u8) -> Siginfo {
    let mut s = Siginfo::default();
    s.bytes[0] = signo;
    s.bytes[127] = 0xee;
    s
}

fn page(fill: u8) -> Vec<u8> {
    vec![fill; PS as usize]
}

/// A small but complete image: every core kind, files, pipes, an eventfd.
pub(crate) fn small_spec() -> Spec {
    let mut process = ProcessRec {
        pid: PID,
        ppid: 1,
        pgid: PID,
        sid: PID,
        nr_threads: 2,
        ..Default::default()
    };
    process.comm[..4].copy_from_slice(b"work");
    let mm = MmRec {
        start_code: 0x400000,
        end_code: 0x401000,
        brk: 0x600000,
        ..Default::default()
    };
    let vma = |start: u64, pages: u64, kind: u32, path: &[u8]| {
        (
            VmaRec {
                start,
                end: start + pages * PS,
                prot: 3,
                kind,
                path_len: path.len() as u32,
                ..Default::default()
            },
            path.to_vec(),
        )
    };
    let mut xs = XstateRec {
        tid: PID,
        size: 0,
        xstate_bv: 3,
        xcr0: 7,
    };
    let area = vec![0x5a; 40];
    xs.size = area.len() as u32;
    let mut sa = SigactionsRec::default();
    sa.actions[1].handler = 0x401234;
    let mut rl = RlimitsRec::default();
    rl.limits[7] = Rlimit {
        cur: 1024,
        max: 4096,
    };
    Spec {
        process,
        mm,
        auxv: vec![6, 4096, 0, 0],
        exe: b"/usr/bin/work".to_vec(),
        vmas: vec![
            vma(0x400000, 1, vma_kind::FILE_PRIVATE, b"/usr/bin/work"),
            vma(0x600000, 4, vma_kind::HEAP, b"[heap]"),
            vma(0x7fff0000, 2, vma_kind::STACK, b"[stack]"),
        ],
        pages: vec![
            (
                0x600000,
                vec![
                    PageRun {
                        addr: 0x600000,
                        nr_pages: 1,
                    },
                    PageRun {
                        addr: 0x602000,
                        nr_pages: 1,
                    },
                ],
                {
                    let mut d = page(1);
                    d.extend(page(2));
                    d
                },
            ),
            (
                0x7fff0000,
                vec![PageRun {
                    addr: 0x7fff1000,
                    nr_pages: 1,
                }],
                page(3),
            ),
        ],
        threads: vec![
            (thread(PID, true), Some((xs, area)), vec![siginfo(10)]),
            (thread(PID + 1, false), None, vec![]),
        ],
        sigactions: sa,
        shared_pending: vec![siginfo(15), siginfo(17)],
        rlimits: rl,
        fs: (0o22, b"/home/user".to_vec(), b"/".to_vec()),
        itimers: ItimersRec {
            real: TimerVal {
                interval_ns: 1,
                value_ns: 2,
            },
            ..Default::default()
        },
        posix_timers: vec![PosixTimerRec {
            id: 1,
            clock_id: 1,
            ..Default::default()
        }],
        files: vec![
            (
                FdFileRec {
                    fd: 0,
                    kind: file_kind::TTY,
                    file_id: 1,
                    path_len: 10,
                    ..Default::default()
                },
                b"/dev/pts/0".to_vec(),
                None,
            ),
            (
                FdFileRec {
                    fd: 3,
                    kind: file_kind::REGULAR,
                    file_id: 2,
                    file_flags: file_flags::DELETED,
                    size: 5,
                    path_len: 8,
                    ..Default::default()
                },
                b"/tmp/del".to_vec(),
                Some(b"hello".to_vec()),
            ),
        ],
        pipes: vec![(
            FdPipeRec {
                fd: 4,
                pipe_id: 9,
                file_id: 3,
                capacity: 65536,
                ..Default::default()
            },
            vec![],
        )],
        pipe_data: vec![(9, b"buffered".to_vec())],
        eventfds: vec![EventfdRec {
            fd: 5,
            file_id: 4,
            count: 3,
            ..Default::default()
        }],
    }
}

/// One record to write (a test-level view of the writer calls).
#[derive(Clone, Debug)]
pub(crate) enum Rec {
    Plain {
        kind: u32,
        flags: u32,
        fixed: Vec<u8>,
        tails: Vec<Vec<u8>>,
    },
    Pages {
        vma_start: u64,
        runs: Vec<PageRun>,
        data: Vec<u8>,
    },
    Data {
        kind: u32,
        fixed: Vec<u8>,
        tail: Vec<u8>,
        data: Vec<u8>,
    },
}

fn plain<T: IntoBytes + zerocopy::Immutable>(kind: u32, fixed: &T, tails: &[&[u8]]) -> Rec {
    Rec::Plain {
        kind,
        flags: 0,
        fixed: fixed.as_bytes().to_vec(),
        tails: tails.iter().map(|t| t.to_vec()).collect(),
    }
}

/// The records of `s`, in the canonical order.
pub(crate) fn spec_recs(s: &Spec) -> Vec<Rec> {
    let mut r = vec![plain(kind::PROCESS, &s.process, &[])];
    let mut mm = s.mm;
    mm.auxv_words = s.auxv.len() as u32;
    mm.exe_len = s.exe.len() as u32;
    r.push(plain(kind::MM, &mm, &[s.auxv.as_bytes(), &s.exe]));
    r.push(plain(kind::SIGACTIONS, &s.sigactions, &[]));
    r.push(plain(kind::RLIMITS, &s.rlimits, &[]));
    let fs = FsRec {
        umask: s.fs.0,
        cwd_len: s.fs.1.len() as u32,
        root_len: s.fs.2.len() as u32,
        _pad0: 0,
    };
    r.push(plain(kind::FS, &fs, &[&s.fs.1, &s.fs.2]));
    r.push(plain(kind::ITIMERS, &s.itimers, &[]));
    for (v, path) in &s.vmas {
        r.push(plain(kind::VMA, v, &[path]));
        for (start, runs, data) in &s.pages {
            if *start == v.start {
                r.push(Rec::Pages {
                    vma_start: *start,
                    runs: runs.clone(),
                    data: data.clone(),
                });
            }
        }
    }
    for (t, xs, pending) in &s.threads {
        r.push(plain(kind::THREAD, t, &[]));
        if let Some((x, area)) = xs {
            r.push(plain(kind::XSTATE, x, &[area]));
        }
        if !pending.is_empty() {
            let sp = SigpendingRec {
                tid: t.tid,
                count: pending.len() as u32,
            };
            r.push(plain(kind::SIGPENDING, &sp, &[pending.as_bytes()]));
        }
    }
    if !s.shared_pending.is_empty() {
        let sp = SigpendingRec {
            tid: 0,
            count: s.shared_pending.len() as u32,
        };
        r.push(plain(kind::SIGPENDING, &sp, &[s.shared_pending.as_bytes()]));
    }
    for t in &s.posix_timers {
        r.push(plain(kind::POSIX_TIMER, t, &[]));
    }
    for (f, path, data) in &s.files {
        r.push(plain(kind::FD_FILE, f, &[path]));
        if let Some(d) = data {
            let fd = FileDataRec {
                file_id: f.file_id,
                _pad0: 0,
                size: d.len() as u64,
                data_off: 0,
            };
            r.push(Rec::Data {
                kind: kind::FILE_DATA,
                fixed: fd.as_bytes().to_vec(),
                tail: vec![],
                data: d.clone(),
            });
        }
    }
    for (p, path) in &s.pipes {
        r.push(plain(kind::FD_PIPE, p, &[path]));
    }
    for (id, d) in &s.pipe_data {
        let pd = PipeDataRec {
            pipe_id: *id,
            _pad0: 0,
            len: d.len() as u64,
        };
        r.push(plain(kind::PIPE_DATA, &pd, &[d]));
    }
    for e in &s.eventfds {
        r.push(plain(kind::FD_EVENTFD, e, &[]));
    }
    r
}

pub(crate) fn write_recs_with(h: &Header, recs: &[Rec]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), h).unwrap();
    for r in recs {
        match r {
            Rec::Plain {
                kind,
                flags,
                fixed,
                tails,
            } => {
                let t: Vec<&[u8]> = tails.iter().map(|t| t.as_slice()).collect();
                w.record_flags(*kind, *flags, fixed.as_slice(), &t).unwrap()
            }
            Rec::Pages {
                vma_start,
                runs,
                data,
            } => {
                // Stream the data in uneven chunks.
                let chunks: Vec<&[u8]> = data.chunks(1000).collect();
                w.pages(*vma_start, runs, chunks).unwrap()
            }
            Rec::Data {
                kind,
                fixed,
                tail,
                data,
            } => w
                .data_record(
                    *kind,
                    fixed.as_slice(),
                    tail,
                    data.len() as u64,
                    data.chunks(7),
                )
                .unwrap(),
        }
    }
    w.finish().unwrap()
}

pub(crate) fn write_recs(recs: &[Rec]) -> Vec<u8> {
    write_recs_with(&header(), recs)
}

pub(crate) fn write_spec(s: &Spec) -> Vec<u8> {
    write_recs(&spec_recs(s))
}

/// Asserts that the parsed image holds exactly `s`.
pub(crate) fn assert_matches(s: &Spec, p: &ProcessImage<'_>) {
    assert_eq!(p.process, s.process);
    assert_eq!(p.mm.auxv, s.auxv);
    assert_eq!(p.mm.exe, s.exe.as_slice());
    assert_eq!(p.mm.rec.start_code, s.mm.start_code);
    assert_eq!(p.vmas.len(), s.vmas.len());
    for (v, (rec, path)) in p.vmas.iter().zip(&s.vmas) {
        assert_eq!(&v.rec, rec);
        assert_eq!(v.path, path.as_slice());
    }
    assert_eq!(p.pages.len(), s.pages.len());
    let mut sp = s.pages.clone();
    sp.sort_by_key(|x| x.0);
    for (pv, (start, runs, data)) in p.pages.iter().zip(&sp) {
        assert_eq!(pv.vma_start, *start);
        assert_eq!(&pv.runs, runs);
        assert_eq!(pv.data, data.as_slice());
        assert_eq!(pv.data_file_offset % u64::from(p.header.page_size), 0);
    }
    assert_eq!(p.threads.len(), s.threads.len());
    for (t, (rec, xs, pending)) in p.threads.iter().zip(&s.threads) {
        assert_eq!(&t.rec, rec);
        assert_eq!(
            t.xstate.as_ref().map(|x| (x.rec, x.area.to_vec())),
            xs.clone()
        );
        assert_eq!(&t.pending, pending);
    }
    assert_eq!(p.sigactions, s.sigactions);
    assert_eq!(p.shared_pending, s.shared_pending);
    assert_eq!(p.rlimits, s.rlimits);
    assert_eq!(
        (p.fs.umask, p.fs.cwd, p.fs.root),
        (s.fs.0, s.fs.1.as_slice(), s.fs.2.as_slice())
    );
    assert_eq!(p.itimers, s.itimers);
    assert_eq!(p.posix_timers, s.posix_timers);
    assert_eq!(p.files.len(), s.files.len());
    for (f, (rec, path, data)) in p.files.iter().zip(&s.files) {
        assert_eq!(&f.rec, rec);
        assert_eq!(f.path, path.as_slice());
        assert_eq!(f.data, data.as_deref());
    }
    assert_eq!(p.pipes.len(), s.pipes.len());
    for (f, (rec, path)) in p.pipes.iter().zip(&s.pipes) {
        assert_eq!(&f.rec, rec);
        assert_eq!(f.path, path.as_slice());
    }
    let pd: Vec<(u32, &[u8])> = s
        .pipe_data
        .iter()
        .map(|(i, d)| (*i, d.as_slice()))
        .collect();
    assert_eq!(p.pipe_data, pd);
    assert_eq!(p.other.len(), s.eventfds.len());
}

// ---------------------------------------------------------------- helpers for damage

fn parse_all(b: &[u8]) -> Result<ProcessImage<'_>, ImageError> {
    ProcessImage::parse(b, &ParseOptions::ALL)
}

fn err(b: &[u8]) -> ImageError {
    parse_all(b).expect_err("image must be refused")
}

/// Offsets of the records of a valid image.
fn offsets(b: &[u8]) -> Vec<(u32, u64, usize)> {
    Image::parse(b)
        .unwrap()
        .records()
        .iter()
        .map(|r| (r.kind, r.offset, r.payload.len()))
        .collect()
}

fn nth_of(b: &[u8], k: u32, n: usize) -> (usize, u64, usize) {
    let img = Image::parse(b).unwrap();
    let r = img.records().iter().filter(|r| r.kind == k).nth(n).unwrap();
    (r.index, r.offset, r.payload.len())
}

fn put_u32(b: &mut [u8], at: u64, v: u32) {
    b[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: u64, v: u64) {
    b[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
}

fn reseal_header(b: &mut [u8]) {
    let s = checksum(&b[..152]);
    put_u64(b, 152, s);
}

fn reseal_head(b: &mut [u8], rec: u64) {
    let s = checksum(&b[rec as usize..rec as usize + 16]);
    put_u64(b, rec + 16, s);
}

/// Recomputes the payload checksum of the record at `rec`.
fn reseal_payload(b: &mut [u8], rec: u64) {
    let len = u64::from_le_bytes(b[rec as usize + 8..rec as usize + 16].try_into().unwrap());
    let p0 = rec + 24;
    let s = checksum(&b[p0 as usize..(p0 + len) as usize]);
    let sum_off = (p0 + len + 7) & !7;
    put_u64(b, sum_off, s);
}

/// Changes a u32/u64 field in the payload of a record and reseals it.
fn patch64(b: &mut [u8], rec: u64, field: usize, v: u64) {
    put_u64(b, rec + 24 + field as u64, v);
    reseal_payload(b, rec);
}

fn small() -> Vec<u8> {
    write_spec(&small_spec())
}

fn tiny_spec() -> Spec {
    let mut s = small_spec();
    s.vmas.truncate(2);
    s.pages.truncate(1);
    s.pages[0].1.truncate(1);
    s.pages[0].2.truncate(PS as usize);
    s.threads.truncate(1);
    s.process.nr_threads = 1;
    s.files.truncate(1);
    s
}

// ---------------------------------------------------------------- round trip

#[test]
fn round_trip_small() {
    let s = small_spec();
    let b = write_spec(&s);
    let p = parse_all(&b).unwrap();
    assert_matches(&s, &p);
    // The header came through sealed.
    assert_eq!(p.header.header_sum, p.header.compute_sum());
    assert_eq!(p.header.kernel_release_bytes(), b"6.8.0-test");
    let img = Image::parse(&b).unwrap();
    assert_eq!(img.end().page_bytes, 3 * PS);
    assert_eq!(img.end().nr_records as usize + 1, img.records().len());
    // Page data really sits page-aligned in the file at data_file_offset.
    for pv in &p.pages {
        let o = pv.data_file_offset as usize;
        assert_eq!(&b[o..o + pv.data.len()], pv.data);
    }
    let del = p.files.iter().find_map(|f| f.data).unwrap();
    assert_eq!(del, b"hello");
}

#[test]
fn records_are_8_aligned_and_offsets_match_writer() {
    let b = small();
    for (_, off, _) in offsets(&b) {
        assert_eq!(off % 8, 0);
    }
}

#[test]
fn writer_offset_and_data_off_for() {
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    assert_eq!(w.offset(), 160);
    // Payload starts at 184; a 32-byte prefix ends at 216: data at 4096 → data_off 3912.
    assert_eq!(w.data_off_for(32), 4096 - 184);
    assert_eq!(w.data_off_for(4096 - 184), 4096 - 184);
    assert_eq!(w.data_off_for(4096 - 183), 2 * 4096 - 184);
    w.record(kind::PROCESS, &ProcessRec::default(), &[])
        .unwrap();
    assert_eq!(w.offset(), 160 + 24 + size_of::<ProcessRec>() as u64 + 8);
}

#[test]
fn optional_unknown_kinds_are_skipped() {
    let mut recs = spec_recs(&small_spec());
    recs.insert(
        3,
        Rec::Plain {
            kind: 0x0000_0777,
            flags: RECORD_OPTIONAL,
            fixed: vec![1, 2, 3],
            tails: vec![],
        },
    );
    recs.insert(
        5,
        Rec::Plain {
            kind: 0x0042_0001,
            flags: RECORD_OPTIONAL,
            fixed: vec![9; 8],
            tails: vec![],
        },
    );
    let b = write_recs(&recs);
    let img = Image::parse(&b).unwrap();
    assert!(img
        .records()
        .iter()
        .any(|r| r.kind == 0x777 && r.is_optional()));
    assert_matches(&small_spec(), &parse_all(&b).unwrap());
}

#[test]
fn optional_record_of_unsupported_extension_is_skipped() {
    let mut recs = spec_recs(&tiny_spec());
    recs.retain(|r| !matches!(r, Rec::Plain { kind, .. } if *kind == kind::FD_EVENTFD));
    for r in &mut recs {
        if let Rec::Plain { kind, flags, .. } = r {
            if *kind >> 16 == 1 {
                *flags = RECORD_OPTIONAL;
            }
        }
    }
    recs.retain(|r| !matches!(r, Rec::Plain { kind, .. } if *kind == kind::PIPE_DATA));
    let b = write_recs(&recs);
    let p = ProcessImage::parse(&b, &ParseOptions::CORE).unwrap();
    assert!(p.files.is_empty() && p.pipes.is_empty());
}

// ---------------------------------------------------------------- writer errors

#[test]
fn writer_rejects_wrong_data_length() {
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    let runs = [PageRun {
        addr: 0x1000,
        nr_pages: 2,
    }];
    let one = page(0);
    let e = w.pages(0x1000, &runs, [one.as_slice()]).unwrap_err();
    assert!(
        matches!(e, WriteError::DataLength { expected, actual, .. } if expected == 2 * PS && actual == PS)
    );
    // Poisoned afterwards.
    assert!(matches!(
        w.record(kind::MM, &MmRec::default(), &[]),
        Err(WriteError::Poisoned)
    ));
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    let e = w.pages(0x1000, &runs[..0], [one.as_slice()]).unwrap_err();
    assert!(matches!(e, WriteError::DataLength { expected: 0, .. }));
}

#[test]
fn writer_rejects_bad_use() {
    let mut h = header();
    h.page_size = 1000;
    assert!(matches!(
        Writer::new(Vec::new(), &h),
        Err(WriteError::Header(ImageError::BadPageSize { .. }))
    ));
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    assert!(matches!(
        w.record(kind::END, &EndRec::default(), &[]),
        Err(WriteError::Invalid { .. })
    ));
    assert!(matches!(
        w.record(kind::PAGES, &PagesRec::default(), &[]),
        Err(WriteError::Invalid { .. })
    ));
    assert!(matches!(
        w.record_flags(kind::MM, 2, &MmRec::default(), &[]),
        Err(WriteError::Invalid { .. })
    ));
    let fd = FileDataRec {
        size: 3,
        ..Default::default()
    };
    assert!(matches!(
        w.data_record(kind::FILE_DATA, &fd, &[], 4, [&b"abcd"[..]]),
        Err(WriteError::Invalid { .. })
    ));
    // Not poisoned by refused calls.
    w.record(kind::PROCESS, &ProcessRec::default(), &[])
        .unwrap();
}

#[cfg(feature = "std")]
#[test]
fn io_sink_writes_same_bytes() {
    let recs = spec_recs(&tiny_spec());
    let a = write_recs(&recs);
    let mut w = Writer::new(IoSink(std::vec::Vec::new()), &header()).unwrap();
    for r in &recs {
        match r {
            Rec::Plain {
                kind,
                flags,
                fixed,
                tails,
            } => {
                let t: Vec<&[u8]> = tails.iter().map(|t| t.as_slice()).collect();
                w.record_flags(*kind, *flags, fixed.as_slice(), &t).unwrap()
            }
            Rec::Pages {
                vma_start,
                runs,
                data,
            } => w.pages(*vma_start, runs, [data.as_slice()]).unwrap(),
            Rec::Data {
                kind,
                fixed,
                tail,
                data,
            } => w
                .data_record(
                    *kind,
                    fixed.as_slice(),
                    tail,
                    data.len() as u64,
                    [data.as_slice()],
                )
                .unwrap(),
        }
    }
    assert_eq!(w.finish().unwrap().0, a);
}

// ---------------------------------------------------------------- header errors

#[test]
fn err_bad_magic() {
    let mut b = small();
    b[1] = b'X';
    assert_eq!(err(&b), ImageError::BadMagic);
    assert_eq!(err(b"hello"), ImageError::BadMagic);
    assert_eq!(
        err(b""),
        ImageError::Truncated {
            offset: 0,
            needed: 160
        }
    );
}

#[test]
fn err_unsupported_version() {
    let mut b = small();
    put_u32(&mut b, 8, 2);
    assert_eq!(
        err(&b),
        ImageError::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    );
    assert_eq!(
        err(&b).to_string(),
        "unsupported image format version 2 (this reader knows version 1)"
    );
}

#[test]
fn err_bad_header_len() {
    let mut b = small();
    put_u32(&mut b, 12, 168);
    assert_eq!(err(&b), ImageError::BadHeaderLen { len: 168 });
}

#[test]
fn err_header_checksum() {
    let mut b = small();
    b[60] ^= 1;
    assert_eq!(err(&b), ImageError::HeaderChecksum);
}

#[test]
fn err_unsupported_arch() {
    let mut b = small();
    put_u32(&mut b, 16, 2);
    reseal_header(&mut b);
    assert_eq!(err(&b), ImageError::UnsupportedArch { arch: 2 });
}

#[test]
fn err_bad_page_size() {
    for ps in [2048u32, 4097, 0] {
        let mut b = small();
        put_u32(&mut b, 20, ps);
        reseal_header(&mut b);
        assert_eq!(err(&b), ImageError::BadPageSize { page_size: ps });
    }
}

#[test]
fn err_bad_header_field() {
    let mut b = small();
    put_u64(&mut b, 48, 1);
    reseal_header(&mut b);
    assert_eq!(
        err(&b),
        ImageError::BadHeaderField {
            field: "flags",
            value: 1
        }
    );
    let mut b = small();
    put_u32(&mut b, 36, 9);
    reseal_header(&mut b);
    assert_eq!(
        err(&b),
        ImageError::BadHeaderField {
            field: "engine",
            value: 9
        }
    );
}

// ---------------------------------------------------------------- framing errors

#[test]
fn err_truncated() {
    let b = small();
    let (_, off, _) = nth_of(&b, kind::PAGES, 0);
    let e = err(&b[..off as usize + 100]);
    assert!(
        matches!(e, ImageError::Truncated { offset, .. } if offset == off),
        "{e:?}"
    );
    assert_eq!(e.offset(), Some(off));
    // Inside a record header.
    assert!(
        matches!(err(&b[..off as usize + 10]), ImageError::Truncated { offset, needed: 24 } if offset == off)
    );
    assert_eq!(
        err(&b[..100]),
        ImageError::Truncated {
            offset: 0,
            needed: 160
        }
    );
}

#[test]
fn err_record_header_checksum() {
    let mut b = small();
    let (index, off, _) = nth_of(&b, kind::VMA, 1);
    b[off as usize + 9] ^= 0x80;
    assert_eq!(
        err(&b),
        ImageError::RecordHeaderChecksum { index, offset: off }
    );
}

#[test]
fn err_bad_record_flags() {
    let mut b = small();
    let (index, off, _) = nth_of(&b, kind::MM, 0);
    put_u32(&mut b, off + 4, 4);
    reseal_head(&mut b, off);
    assert_eq!(
        err(&b),
        ImageError::BadRecordFlags {
            index,
            kind: kind::MM,
            offset: off,
            flags: 4
        }
    );
}

#[test]
fn err_length_overflow() {
    let mut b = small();
    let (index, off, _) = nth_of(&b, kind::MM, 0);
    put_u64(&mut b, off + 8, u64::MAX - 20);
    reseal_head(&mut b, off);
    assert_eq!(
        err(&b),
        ImageError::LengthOverflow {
            index,
            offset: off,
            len: u64::MAX - 20
        }
    );
    // A large length that does not overflow is truncation.
    put_u64(&mut b, off + 8, 1 << 40);
    reseal_head(&mut b, off);
    assert!(matches!(err(&b), ImageError::Truncated { offset, .. } if offset == off));
}

#[test]
fn err_record_checksum() {
    let mut b = small();
    let (index, off, len) = nth_of(&b, kind::PAGES, 0);
    b[off as usize + 24 + len - 1] ^= 1; // last byte of page data
    let e = err(&b);
    assert_eq!(
        e,
        ImageError::RecordChecksum {
            index,
            kind: kind::PAGES,
            offset: off
        }
    );
    assert_eq!(
        e.to_string(),
        alloc::format!("record {index} (PAGES) at offset {off:#x}: payload checksum mismatch")
    );
}

#[test]
fn err_bad_padding_after_payload() {
    let mut b = small();
    let (index, off, len) = nth_of(&b, kind::FS, 0);
    assert_ne!(len % 8, 0, "FS payload must need padding for this test");
    let pad_at = off + 24 + len as u64;
    b[pad_at as usize] = 1;
    assert_eq!(
        err(&b),
        ImageError::BadPadding {
            index,
            kind: kind::FS,
            offset: pad_at
        }
    );
}

#[test]
fn err_bad_padding_before_data() {
    let mut b = small();
    let (index, off, _) = nth_of(&b, kind::PAGES, 0);
    let pad_at = off + 24 + 32 + 2 * 16 + 5;
    b[pad_at as usize] = 7;
    reseal_payload(&mut b, off);
    assert_eq!(
        err(&b),
        ImageError::BadPadding {
            index,
            kind: kind::PAGES,
            offset: pad_at
        }
    );
}

#[test]
fn err_unknown_kind() {
    let mut recs = spec_recs(&small_spec());
    recs.insert(
        2,
        Rec::Plain {
            kind: 0x0000_0777,
            flags: 0,
            fixed: vec![0; 8],
            tails: vec![],
        },
    );
    let b = write_recs(&recs);
    let (_, off, _) = offsets(&small())[2]; // same place in the valid image
    assert_eq!(
        err(&b),
        ImageError::UnknownKind {
            index: 2,
            kind: 0x777,
            offset: off
        }
    );
    // Unknown extension id.
    let mut recs = spec_recs(&small_spec());
    recs.insert(
        1,
        Rec::Plain {
            kind: 0x0009_0001,
            flags: 0,
            fixed: vec![],
            tails: vec![],
        },
    );
    assert!(matches!(
        err(&write_recs(&recs)),
        ImageError::UnknownKind {
            index: 1,
            kind: 0x0009_0001,
            ..
        }
    ));
}

#[test]
fn err_missing_end() {
    let b = small();
    let (_, end_off, _) = nth_of(&b, kind::END, 0);
    assert_eq!(
        err(&b[..end_off as usize]),
        ImageError::MissingEnd { offset: end_off }
    );
    assert_eq!(err(&b[..160]), ImageError::MissingEnd { offset: 160 });
}

#[test]
fn err_trailing_data() {
    let mut b = small();
    let n = b.len() as u64;
    b.extend_from_slice(&[0; 8]);
    assert_eq!(err(&b), ImageError::TrailingData { offset: n });
}

#[test]
fn err_end_mismatch() {
    let mut b = small();
    let (index, off, _) = nth_of(&b, kind::END, 0);
    patch64(&mut b, off, 0, 3);
    assert_eq!(
        err(&b),
        ImageError::EndMismatch {
            index,
            offset: off,
            field: "nr_records",
            expected: index as u64,
            found: 3
        }
    );
    let mut b = small();
    patch64(&mut b, off, 8, 4096);
    assert_eq!(
        err(&b),
        ImageError::EndMismatch {
            index,
            offset: off,
            field: "page_bytes",
            expected: 3 * PS,
            found: 4096
        }
    );
}

// ---------------------------------------------------------------- content errors

#[test]
fn err_needs_extension() {
    let b = small();
    let (index, off, _) = nth_of(&b, kind::FD_FILE, 0);
    let e = ProcessImage::parse(&b, &ParseOptions::CORE).unwrap_err();
    assert_eq!(
        e,
        ImageError::NeedsExtension {
            index,
            kind: kind::FD_FILE,
            ext: Extension::Files,
            module: "stasis_files.ko",
            offset: off
        }
    );
    assert!(
        e.to_string()
            .ends_with("needs extension files (module stasis_files.ko)"),
        "{e}"
    );
    // With files supported, the eventfd needs the events extension.
    let e = ProcessImage::parse(
        &b,
        &ParseOptions {
            supported: &[Extension::Files],
        },
    )
    .unwrap_err();
    assert!(matches!(
        e,
        ImageError::NeedsExtension {
            ext: Extension::Events,
            module: "stasis_events.ko",
            ..
        }
    ));
}

#[test]
fn err_bad_payload() {
    // Tail shorter than path_len says.
    let mut s = small_spec();
    s.vmas[1].0.path_len = 99;
    let b = write_spec(&s);
    let (index, off, _) = nth_of(&b, kind::VMA, 1);
    assert_eq!(
        err(&b),
        ImageError::BadPayload {
            index,
            kind: kind::VMA,
            offset: off,
            why: "tail length differs from the lengths in the fixed part"
        }
    );
    // Fixed struct too short.
    let mut recs = spec_recs(&small_spec());
    recs[3] = Rec::Plain {
        kind: kind::RLIMITS,
        flags: 0,
        fixed: vec![0; 8],
        tails: vec![],
    };
    assert!(matches!(
        err(&write_recs(&recs)),
        ImageError::BadPayload {
            index: 3,
            kind: kind::RLIMITS,
            ..
        }
    ));
    // The runs do not add up to nr_pages.
    let mut b = small();
    let (index, off, _) = nth_of(&b, kind::PAGES, 0);
    patch64(&mut b, off, 32 + 8, 2);
    let e = err(&b);
    assert_eq!(
        e,
        ImageError::BadPayload {
            index,
            kind: kind::PAGES,
            offset: off,
            why: "nr_pages differs from the sum of the runs"
        }
    );
}

#[test]
fn err_reserved_non_zero() {
    let mut s = small_spec();
    s.process._pad0 = 1;
    let b = write_spec(&s);
    assert_eq!(
        err(&b),
        ImageError::ReservedNonZero {
            index: 0,
            kind: kind::PROCESS,
            offset: 160,
            field: "_pad0"
        }
    );
}

#[test]
fn err_misaligned() {
    let mut s = small_spec();
    s.vmas[2].0.start += 8;
    let b = write_spec(&s);
    let (index, off, _) = nth_of(&b, kind::VMA, 2);
    assert_eq!(
        err(&b),
        ImageError::Misaligned {
            index,
            kind: kind::VMA,
            offset: off,
            why: "VMA bounds not page aligned"
        }
    );
    // data_off that is not page aligned in the file.
    let mut b = small();
    let (index, off, _) = nth_of(&b, kind::PAGES, 0);
    let data_off = u64::from_le_bytes(
        b[off as usize + 24 + 24..off as usize + 24 + 32]
            .try_into()
            .unwrap(),
    );
    patch64(&mut b, off, 24, data_off - 8);
    assert!(
        matches!(err(&b), ImageError::Misaligned { index: i, kind: kind::PAGES, .. } if i == index)
    );
    // A page run address that is not page aligned.
    let mut s = small_spec();
    s.pages[0].1[1].addr += 16;
    assert!(matches!(
        err(&write_spec(&s)),
        ImageError::Misaligned {
            kind: kind::PAGES,
            ..
        }
    ));
}

#[test]
fn err_out_of_order() {
    let mut recs = spec_recs(&small_spec());
    recs.swap(0, 1);
    assert_eq!(
        err(&write_recs(&recs)),
        ImageError::OutOfOrder {
            index: 0,
            kind: kind::MM,
            offset: 160,
            why: "PROCESS must be the first record"
        }
    );
    // VMAs not sorted.
    let mut s = small_spec();
    s.vmas.swap(1, 2);
    s.pages.clear();
    let b = write_spec(&s);
    let (index, off, _) = nth_of(&b, kind::VMA, 2);
    assert_eq!(
        err(&b),
        ImageError::OutOfOrder {
            index,
            kind: kind::VMA,
            offset: off,
            why: "VMAs not sorted by address"
        }
    );
    // XSTATE before its THREAD.
    let mut recs = spec_recs(&small_spec());
    let ti = recs
        .iter()
        .position(|r| {
            matches!(
                r,
                Rec::Plain {
                    kind: kind::THREAD,
                    ..
                }
            )
        })
        .unwrap();
    recs.swap(ti, ti + 1);
    assert!(matches!(
        err(&write_recs(&recs)),
        ImageError::OutOfOrder {
            kind: kind::XSTATE,
            ..
        }
    ));
}

#[test]
fn err_bad_range() {
    let mut s = small_spec();
    s.vmas[1].0.end = s.vmas[2].0.start + PS;
    let b = write_spec(&s);
    let (index, off, _) = nth_of(&b, kind::VMA, 2);
    assert_eq!(
        err(&b),
        ImageError::BadRange {
            index,
            kind: kind::VMA,
            offset: off,
            why: "VMA overlaps the previous VMA"
        }
    );
    let mut s = small_spec();
    s.pages[1].1[0].addr = 0x7fff2000; // the stack VMA ends there
    assert!(matches!(
        err(&write_spec(&s)),
        ImageError::BadRange {
            why: "page run outside its VMA",
            ..
        }
    ));
    let mut s = small_spec();
    s.pages[0].1[1].addr = 0x600000;
    assert!(matches!(
        err(&write_spec(&s)),
        ImageError::BadRange {
            why: "page runs not sorted or overlapping",
            ..
        }
    ));
    let mut s = small_spec();
    s.vmas[0].0.end = s.vmas[0].0.start;
    assert!(matches!(
        err(&write_spec(&s)),
        ImageError::BadRange {
            why: "VMA start >= end",
            ..
        }
    ));
}

#[test]
fn err_duplicate() {
    let mut recs = spec_recs(&small_spec());
    recs.insert(2, recs[1].clone());
    let b = write_recs(&recs);
    let (_, off, _) = nth_of(&b, kind::MM, 1);
    assert_eq!(
        err(&b),
        ImageError::Duplicate {
            index: 2,
            kind: kind::MM,
            offset: off,
            what: "record (allowed once)"
        }
    );
    let mut s = small_spec();
    s.threads[1].0.tid = PID;
    s.threads[1].0.flags = 0;
    assert!(matches!(
        err(&write_spec(&s)),
        ImageError::Duplicate {
            kind: kind::THREAD,
            what: "thread id",
            ..
        }
    ));
    let mut s = small_spec();
    s.pipes[0].0.fd = 3;
    assert!(matches!(
        err(&write_spec(&s)),
        ImageError::Duplicate {
            kind: kind::FD_PIPE,
            what: "file descriptor",
            ..
        }
    ));
}

#[test]
fn err_missing_record() {
    let mut recs = spec_recs(&small_spec());
    recs.remove(3); // RLIMITS
    let b = write_recs(&recs);
    let (_, end_off, _) = nth_of(&b, kind::END, 0);
    assert_eq!(
        err(&b),
        ImageError::MissingRecord {
            kind: kind::RLIMITS,
            offset: end_off
        }
    );
}

#[test]
fn err_dangling_ref() {
    // PAGES for a VMA that no earlier VMA record defines.
    let mut recs = spec_recs(&small_spec());
    recs.insert(
        7,
        Rec::Pages {
            vma_start: 0x610000,
            runs: vec![],
            data: vec![],
        },
    );
    let b = write_recs(&recs);
    let e = err(&b);
    assert!(
        matches!(
            e,
            ImageError::DanglingRef {
                kind: kind::PAGES,
                id: 0x610000,
                ..
            }
        ),
        "{e:?}"
    );
    // XSTATE for an unknown thread.
    let mut s = small_spec();
    s.threads[0].1.as_mut().unwrap().0.tid = 999;
    assert!(matches!(
        err(&write_spec(&s)),
        ImageError::DanglingRef {
            kind: kind::XSTATE,
            what: "thread",
            id: 999,
            ..
        }
    ));
    // FILE_DATA for a file that is not deleted.
    let mut s = small_spec();
    s.files[0].2 = Some(b"x".to_vec());
    assert!(matches!(
        err(&write_spec(&s)),
        ImageError::DanglingRef {
            kind: kind::FILE_DATA,
            id: 1,
            ..
        }
    ));
}

#[test]
fn err_bad_threads() {
    let mut s = small_spec();
    s.process.nr_threads = 3;
    assert_eq!(
        err(&write_spec(&s)),
        ImageError::BadThreads {
            index: 0,
            kind: kind::PROCESS,
            offset: 160,
            why: "number of THREAD records differs from nr_threads"
        }
    );
    let mut s = small_spec();
    s.threads[0].0.flags = 0;
    assert!(matches!(
        err(&write_spec(&s)),
        ImageError::BadThreads {
            why: "no LEADER thread",
            ..
        }
    ));
    let mut s = small_spec();
    s.threads[1].0.flags = thread_flags::LEADER;
    assert!(matches!(
        err(&write_spec(&s)),
        ImageError::BadThreads {
            why: "more than one LEADER thread",
            ..
        }
    ));
    let mut s = small_spec();
    s.process.pid = PID + 50;
    assert!(matches!(
        err(&write_spec(&s)),
        ImageError::BadThreads {
            why: "LEADER tid differs from the pid",
            ..
        }
    ));
}

#[test]
fn error_display_is_one_line() {
    let b = small();
    let mut cases = Vec::new();
    for cut in [0usize, 5, 100, 170, 400, b.len() - 1] {
        cases.push(err(&b[..cut]));
    }
    for e in cases {
        let s = e.to_string();
        assert!(!s.contains('\n') && !s.is_empty(), "{s}");
    }
}

// ---------------------------------------------------------------- exhaustive damage

#[test]
fn truncation_at_every_offset_is_an_error() {
    let b = write_spec(&tiny_spec());
    assert!(parse_all(&b).is_ok());
    for cut in 0..b.len() {
        assert!(parse_all(&b[..cut]).is_err(), "cut at {cut} parsed");
        assert!(Image::parse(&b[..cut]).is_err(), "cut at {cut} parsed");
    }
}

#[test]
fn every_single_byte_flip_is_detected() {
    let b = write_spec(&tiny_spec());
    let mut d = b.clone();
    for i in 0..b.len() {
        d[i] ^= 0x41;
        assert!(parse_all(&d).is_err(), "flip at {i} not detected");
        d[i] = b[i];
    }
}

// ---------------------------------------------------------------- layouts (docs/FORMAT.md tables)

#[test]
fn layouts_match_format_md() {
    assert_eq!(size_of::<Header>(), 160);
    assert_eq!(offset_of!(Header, version), 8);
    assert_eq!(offset_of!(Header, header_len), 12);
    assert_eq!(offset_of!(Header, arch), 16);
    assert_eq!(offset_of!(Header, page_size), 20);
    assert_eq!(offset_of!(Header, xcr0), 24);
    assert_eq!(offset_of!(Header, xsave_size), 32);
    assert_eq!(offset_of!(Header, engine), 36);
    assert_eq!(offset_of!(Header, created_ns), 40);
    assert_eq!(offset_of!(Header, flags), 48);
    assert_eq!(offset_of!(Header, kernel_release), 56);
    assert_eq!(offset_of!(Header, writer), 120);
    assert_eq!(offset_of!(Header, header_sum), 152);

    assert_eq!(size_of::<ProcessRec>(), 112);
    assert_eq!(offset_of!(ProcessRec, nr_threads), 52);
    assert_eq!(offset_of!(ProcessRec, comm), 56);
    assert_eq!(offset_of!(ProcessRec, cap_effective), 80);
    assert_eq!(offset_of!(ProcessRec, nice), 104);

    assert_eq!(size_of::<MmRec>(), 104);
    assert_eq!(offset_of!(MmRec, vdso), 88);
    assert_eq!(offset_of!(MmRec, auxv_words), 96);
    assert_eq!(offset_of!(MmRec, exe_len), 100);

    assert_eq!(size_of::<VmaRec>(), 64);
    assert_eq!(offset_of!(VmaRec, prot), 24);
    assert_eq!(offset_of!(VmaRec, path_len), 36);
    assert_eq!(offset_of!(VmaRec, shm_id), 56);

    assert_eq!(size_of::<PagesRec>(), 32);
    assert_eq!(offset_of!(PagesRec, nr_runs), 8);
    assert_eq!(offset_of!(PagesRec, nr_pages), 16);
    assert_eq!(offset_of!(PagesRec, data_off), 24);
    assert_eq!(size_of::<PageRun>(), 16);

    assert_eq!(size_of::<UserRegs>(), 216);
    assert_eq!(offset_of!(UserRegs, orig_rax), 120);
    assert_eq!(offset_of!(UserRegs, rip), 128);
    assert_eq!(offset_of!(UserRegs, fs_base), 168);

    assert_eq!(size_of::<ThreadRec>(), 312);
    assert_eq!(offset_of!(ThreadRec, regs), 8);
    assert_eq!(offset_of!(ThreadRec, sigmask), 224);
    assert_eq!(offset_of!(ThreadRec, altstack_flags), 248);
    assert_eq!(offset_of!(ThreadRec, clear_child_tid), 256);
    assert_eq!(offset_of!(ThreadRec, rseq_len), 288);
    assert_eq!(offset_of!(ThreadRec, comm), 296);

    assert_eq!(size_of::<XstateRec>(), 24);
    assert_eq!(offset_of!(XstateRec, xstate_bv), 8);
    assert_eq!(size_of::<Sigaction>(), 32);
    assert_eq!(size_of::<SigactionsRec>(), 2048);
    assert_eq!(size_of::<SigpendingRec>(), 8);
    assert_eq!(size_of::<Siginfo>(), 128);
    assert_eq!(size_of::<Rlimit>(), 16);
    assert_eq!(size_of::<RlimitsRec>(), 256);
    assert_eq!(size_of::<FsRec>(), 16);
    assert_eq!(size_of::<TimerVal>(), 16);
    assert_eq!(size_of::<ItimersRec>(), 48);
    assert_eq!(size_of::<PosixTimerRec>(), 48);
    assert_eq!(offset_of!(PosixTimerRec, sigev_value), 16);
    assert_eq!(offset_of!(PosixTimerRec, notify_tid), 24);
    assert_eq!(offset_of!(PosixTimerRec, timer), 32);
    assert_eq!(size_of::<EndRec>(), 16);

    assert_eq!(size_of::<FdFileRec>(), 72);
    assert_eq!(offset_of!(FdFileRec, pos), 24);
    assert_eq!(offset_of!(FdFileRec, mode), 40);
    assert_eq!(offset_of!(FdFileRec, path_len), 44);
    assert_eq!(offset_of!(FdFileRec, rdev), 64);
    assert_eq!(size_of::<FileDataRec>(), 24);
    assert_eq!(offset_of!(FileDataRec, size), 8);
    assert_eq!(offset_of!(FileDataRec, data_off), 16);
    assert_eq!(size_of::<FdPipeRec>(), 40);
    assert_eq!(offset_of!(FdPipeRec, path_len), 28);
    assert_eq!(offset_of!(FdPipeRec, ino), 32);
    assert_eq!(size_of::<PipeDataRec>(), 16);

    assert_eq!(size_of::<SocketRec>(), 304);
    assert_eq!(offset_of!(SocketRec, local), 48);
    assert_eq!(offset_of!(SocketRec, peer), 176);
    assert_eq!(size_of::<EventfdRec>(), 32);
    assert_eq!(offset_of!(EventfdRec, count), 16);
    assert_eq!(size_of::<TimerfdRec>(), 48);
    assert_eq!(offset_of!(TimerfdRec, timer), 24);
    assert_eq!(offset_of!(TimerfdRec, ticks), 40);
    assert_eq!(size_of::<SignalfdRec>(), 24);
    assert_eq!(size_of::<EpollRec>(), 24);
    assert_eq!(size_of::<EpollTarget>(), 16);
    assert_eq!(size_of::<SysvShmRec>(), 32);
    assert_eq!(offset_of!(SysvShmRec, size), 16);
    assert_eq!(offset_of!(SysvShmRec, data_off), 24);
    assert_eq!(size_of::<TaskTreeRec>(), 8);
    assert_eq!(size_of::<TreeEntry>(), 16);
}

#[test]
fn kind_names_are_distinct() {
    for (i, a) in ALL_KINDS.iter().enumerate() {
        assert_ne!(kind_name(*a), "UNKNOWN");
        assert!(Extension::of_kind(*a).is_some());
        for b in &ALL_KINDS[i + 1..] {
            assert_ne!(kind_name(*a), kind_name(*b));
        }
    }
    assert_eq!(kind_name(0x1234_5678), "UNKNOWN");
}

// ---------------------------------------------------------------- proptest

/// Deterministic filler for the fixed structs' free fields.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn fill<T: IntoBytes + zerocopy::FromBytes>(&mut self, t: &mut T) {
        for b in t.as_mut_bytes() {
            *b = self.next() as u8;
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[derive(Clone, Debug)]
struct VmaParams {
    gap: u64,
    len: u64,
    kind: u32,
    flags: u32,
    prot: u32,
    path_len: usize,
    dirty: u8,
    split: bool,
}

#[derive(Clone, Debug)]
struct ThreadParams {
    xstate: Option<usize>,
    pending: usize,
    syscall_fixed: bool,
}

#[derive(Clone, Debug)]
struct SpecParams {
    seed: u64,
    ps_shift: u32,
    pid: u32,
    vmas: Vec<VmaParams>,
    threads: Vec<ThreadParams>,
    shared_pending: usize,
    timers: usize,
    files: Vec<(usize, Option<usize>)>,
    pipes: Vec<(bool, Option<usize>)>,
    eventfds: usize,
    cwd_root: (usize, usize),
    auxv_pairs: usize,
}

fn arb_params() -> impl Strategy<Value = SpecParams> {
    let vma = (
        0u64..4,
        1u64..6,
        1u32..=10,
        0u32..128,
        0u32..8,
        0usize..30,
        any::<u8>(),
        any::<bool>(),
    )
        .prop_map(
            |(gap, len, kind, flags, prot, path_len, dirty, split)| VmaParams {
                gap,
                len,
                kind,
                flags,
                prot,
                path_len,
                dirty,
                split,
            },
        );
    let thread = (proptest::option::of(0usize..100), 0usize..3, any::<bool>()).prop_map(
        |(xstate, pending, syscall_fixed)| ThreadParams {
            xstate,
            pending,
            syscall_fixed,
        },
    );
    (
        (any::<u64>(), 0u32..3, 1u32..1_000_000),
        proptest::collection::vec(vma, 0..6),
        proptest::collection::vec(thread, 1..5),
        (0usize..3, 0usize..3, 0usize..3),
        proptest::collection::vec((0usize..40, proptest::option::of(0usize..5000)), 0..4),
        proptest::collection::vec((any::<bool>(), proptest::option::of(0usize..100)), 0..3),
        ((0usize..40, 0usize..40), 0usize..10),
    )
        .prop_map(
            |(
                (seed, ps_shift, pid),
                vmas,
                threads,
                (shared_pending, timers, eventfds),
                files,
                pipes,
                (cwd_root, auxv_pairs),
            )| {
                SpecParams {
                    seed: seed | 1,
                    ps_shift,
                    pid,
                    vmas,
                    threads,
                    shared_pending,
                    timers,
                    files,
                    pipes,
                    eventfds,
                    cwd_root,
                    auxv_pairs,
                }
            },
        )
}

fn build_spec(p: &SpecParams) -> (u32, Spec) {
    let ps = 4096u64 << p.ps_shift;
    let mut rng = Rng(p.seed);
    let mut s = small_spec();
    rng.fill(&mut s.process);
    s.process.pid = p.pid;
    s.process.nr_threads = p.threads.len() as u32;
    s.process._pad0 = 0;
    rng.fill(&mut s.mm);
    s.auxv = (0..p.auxv_pairs * 2).map(|_| rng.next()).collect();
    let n = (rng.next() % 64) as usize;
    s.exe = rng.bytes(n);
    s.vmas.clear();
    s.pages.clear();
    let mut addr = 0x10000 * ps;
    for v in &p.vmas {
        addr += v.gap * ps;
        let mut rec = VmaRec::default();
        rng.fill(&mut rec);
        rec.start = addr;
        rec.end = addr + v.len * ps;
        rec.offset = (rng.next() % 1000) * ps;
        rec.kind = v.kind;
        rec.flags = v.flags;
        rec.prot = v.prot;
        rec.path_len = v.path_len as u32;
        s.vmas.push((rec, rng.bytes(v.path_len)));
        // Dirty pages → runs of consecutive set bits.
        let mut runs: Vec<PageRun> = Vec::new();
        for i in 0..v.len {
            if v.dirty & (1 << i) != 0 {
                let a = addr + i * ps;
                match runs.last_mut() {
                    Some(r) if r.addr + r.nr_pages * ps == a => r.nr_pages += 1,
                    _ => runs.push(PageRun {
                        addr: a,
                        nr_pages: 1,
                    }),
                }
            }
        }
        let mut groups = vec![runs];
        if v.split && groups[0].len() >= 2 {
            let second = groups[0].split_off(1);
            groups.push(second);
        }
        for runs in groups {
            if runs.is_empty() {
                continue;
            }
            let n: u64 = runs.iter().map(|r| r.nr_pages).sum();
            let data = rng.bytes((n * ps) as usize);
            s.pages.push((addr, runs, data));
        }
        addr = rec.end;
    }
    s.threads = p
        .threads
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let tid = if i == 0 { p.pid } else { p.pid + i as u32 * 7 };
            let mut rec = ThreadRec::default();
            rng.fill(&mut rec);
            rec.tid = tid;
            rec._pad0 = 0;
            rec.flags = if i == 0 { thread_flags::LEADER } else { 0 }
                | if t.syscall_fixed {
                    thread_flags::SYSCALL_FIXED
                } else {
                    0
                };
            let xs = t.xstate.map(|n| {
                let xcr0 = rng.next();
                (
                    XstateRec {
                        tid,
                        size: n as u32,
                        xstate_bv: xcr0 & rng.next(),
                        xcr0,
                    },
                    rng.bytes(n),
                )
            });
            let pending = (0..t.pending)
                .map(|_| {
                    let mut si = Siginfo::default();
                    rng.fill(&mut si);
                    si
                })
                .collect();
            (rec, xs, pending)
        })
        .collect();
    rng.fill(&mut s.sigactions);
    s.shared_pending = (0..p.shared_pending)
        .map(|_| {
            let mut si = Siginfo::default();
            rng.fill(&mut si);
            si
        })
        .collect();
    rng.fill(&mut s.rlimits);
    s.fs = (
        rng.next() as u32,
        rng.bytes(p.cwd_root.0),
        rng.bytes(p.cwd_root.1),
    );
    rng.fill(&mut s.itimers);
    s.posix_timers = (0..p.timers)
        .map(|i| {
            let mut t = PosixTimerRec::default();
            rng.fill(&mut t);
            t.id = i as u32;
            t
        })
        .collect();
    let mut fd = 0u32;
    s.files = p
        .files
        .iter()
        .enumerate()
        .map(|(i, (path_len, data))| {
            let mut f = FdFileRec::default();
            rng.fill(&mut f);
            f.fd = fd;
            fd += 1;
            f.file_id = i as u32 + 1;
            f.kind = 1 + (rng.next() % 6) as u32;
            f.file_flags = if data.is_some() {
                file_flags::DELETED
            } else {
                0
            };
            f.path_len = *path_len as u32;
            (f, rng.bytes(*path_len), data.map(|n| rng.bytes(n)))
        })
        .collect();
    s.pipes.clear();
    s.pipe_data.clear();
    for (i, (fifo, data)) in p.pipes.iter().enumerate() {
        let mut r = FdPipeRec::default();
        rng.fill(&mut r);
        r.fd = fd;
        fd += 1;
        r.pipe_id = i as u32 + 100;
        r.fifo = u32::from(*fifo);
        let n = 1 + (rng.next() % 20) as usize;
        let path = if *fifo { rng.bytes(n) } else { vec![] };
        r.path_len = path.len() as u32;
        s.pipes.push((r, path));
        if let Some(n) = data {
            s.pipe_data.push((r.pipe_id, rng.bytes(*n)));
        }
    }
    s.eventfds = (0..p.eventfds)
        .map(|_| {
            let mut e = EventfdRec::default();
            rng.fill(&mut e);
            e.fd = fd;
            fd += 1;
            e._pad0 = 0;
            e
        })
        .collect();
    (ps as u32, s)
}

/// Walks the framing of `b` and recomputes every checksum it can (header,
/// record headers, payloads), so that mutations reach the semantic checks.
pub(crate) fn reseal_all(b: &mut [u8]) {
    if b.len() < 160 {
        return;
    }
    reseal_header(b);
    let mut off = 160usize;
    while off + 24 <= b.len() {
        reseal_head(b, off as u64);
        let len = u64::from_le_bytes(b[off + 8..off + 16].try_into().unwrap());
        let Some(end) = (off as u64 + 24)
            .checked_add(len)
            .filter(|e| *e <= b.len() as u64)
        else {
            return;
        };
        let sum_off = ((end + 7) & !7) as usize;
        if sum_off + 8 > b.len() {
            return;
        }
        reseal_payload(b, off as u64);
        off = sum_off + 8;
    }
}

fn no_panic(b: &[u8]) {
    let _ = Image::parse(b);
    let _ = ProcessImage::parse(b, &ParseOptions::ALL);
    let _ = ProcessImage::parse(b, &ParseOptions::CORE);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn prop_round_trip(p in arb_params()) {
        let (ps, s) = build_spec(&p);
        let mut h = header();
        h.page_size = ps;
        let b = write_recs_with(&h, &spec_recs(&s));
        let img = ProcessImage::parse(&b, &ParseOptions::ALL);
        prop_assert!(img.is_ok(), "{:?}", img.err());
        let img = img.unwrap();
        assert_matches(&s, &img);
        prop_assert_eq!(img.header.page_size, ps);
    }

    #[test]
    fn prop_mutated_images_never_panic(
        p in arb_params(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        reseal in any::<bool>(),
    ) {
        let (ps, s) = build_spec(&p);
        let mut h = header();
        h.page_size = ps;
        let mut b = write_recs_with(&h, &spec_recs(&s));
        for (i, v) in &edits {
            let i = i.index(b.len());
            b[i] = *v;
        }
        if let Some(c) = cut {
            let n = c.index(b.len());
            b.truncate(n);
        }
        if reseal {
            reseal_all(&mut b);
        }
        no_panic(&b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn prop_arbitrary_bytes_never_panic(mut b in proptest::collection::vec(any::<u8>(), 0..600), magic in any::<bool>()) {
        if magic && b.len() >= 16 {
            b[..8].copy_from_slice(&MAGIC);
            b[8..12].copy_from_slice(&1u32.to_le_bytes());
            b[12..16].copy_from_slice(&160u32.to_le_bytes());
            reseal_all(&mut b);
        }
        no_panic(&b);
        prop_assert!(Image::parse(&b).is_err());
    }
}

/// (struct, field, offset, size) of every field of every record struct.
#[allow(clippy::type_complexity)]
fn layout_table() -> Vec<(&'static str, &'static str, usize, usize)> {
    macro_rules! f {
        ($s:ident, $f:ident) => {
            (
                stringify!($s),
                stringify!($f),
                offset_of!($s, $f),
                size_of_val(&<$s as zerocopy::FromZeros>::new_zeroed().$f),
            )
        };
    }
    vec![
        f!(Header, magic),
        f!(Header, version),
        f!(Header, header_len),
        f!(Header, arch),
        f!(Header, page_size),
        f!(Header, xcr0),
        f!(Header, xsave_size),
        f!(Header, engine),
        f!(Header, created_ns),
        f!(Header, flags),
        f!(Header, kernel_release),
        f!(Header, writer),
        f!(Header, header_sum),
        f!(CpuRec, vendor),
        f!(CpuRec, signature),
        f!(CpuRec, xcr0),
        f!(CpuRec, features),
        f!(CpuRec, xsave_offset),
        f!(CpuRec, xsave_size),
        f!(ProcessRec, pid),
        f!(ProcessRec, ppid),
        f!(ProcessRec, pgid),
        f!(ProcessRec, sid),
        f!(ProcessRec, uid),
        f!(ProcessRec, euid),
        f!(ProcessRec, suid),
        f!(ProcessRec, fsuid),
        f!(ProcessRec, gid),
        f!(ProcessRec, egid),
        f!(ProcessRec, sgid),
        f!(ProcessRec, fsgid),
        f!(ProcessRec, personality),
        f!(ProcessRec, nr_threads),
        f!(ProcessRec, comm),
        f!(ProcessRec, dumpable),
        f!(ProcessRec, exit_signal),
        f!(ProcessRec, cap_effective),
        f!(ProcessRec, cap_permitted),
        f!(ProcessRec, cap_inheritable),
        f!(ProcessRec, nice),
        f!(ProcessRec, _pad0),
        f!(MmRec, start_code),
        f!(MmRec, end_code),
        f!(MmRec, start_data),
        f!(MmRec, end_data),
        f!(MmRec, start_brk),
        f!(MmRec, brk),
        f!(MmRec, start_stack),
        f!(MmRec, arg_start),
        f!(MmRec, arg_end),
        f!(MmRec, env_start),
        f!(MmRec, env_end),
        f!(MmRec, vdso),
        f!(MmRec, auxv_words),
        f!(MmRec, exe_len),
        f!(VmaRec, start),
        f!(VmaRec, end),
        f!(VmaRec, offset),
        f!(VmaRec, prot),
        f!(VmaRec, flags),
        f!(VmaRec, kind),
        f!(VmaRec, path_len),
        f!(VmaRec, dev),
        f!(VmaRec, ino),
        f!(VmaRec, shm_id),
        f!(PagesRec, vma_start),
        f!(PagesRec, nr_runs),
        f!(PagesRec, _pad0),
        f!(PagesRec, nr_pages),
        f!(PagesRec, data_off),
        f!(PageRun, addr),
        f!(PageRun, nr_pages),
        f!(UserRegs, r15),
        f!(UserRegs, r14),
        f!(UserRegs, r13),
        f!(UserRegs, r12),
        f!(UserRegs, rbp),
        f!(UserRegs, rbx),
        f!(UserRegs, r11),
        f!(UserRegs, r10),
        f!(UserRegs, r9),
        f!(UserRegs, r8),
        f!(UserRegs, rax),
        f!(UserRegs, rcx),
        f!(UserRegs, rdx),
        f!(UserRegs, rsi),
        f!(UserRegs, rdi),
        f!(UserRegs, orig_rax),
        f!(UserRegs, rip),
        f!(UserRegs, cs),
        f!(UserRegs, eflags),
        f!(UserRegs, rsp),
        f!(UserRegs, ss),
        f!(UserRegs, fs_base),
        f!(UserRegs, gs_base),
        f!(UserRegs, ds),
        f!(UserRegs, es),
        f!(UserRegs, fs),
        f!(UserRegs, gs),
        f!(ThreadRec, tid),
        f!(ThreadRec, flags),
        f!(ThreadRec, regs),
        f!(ThreadRec, sigmask),
        f!(ThreadRec, altstack_sp),
        f!(ThreadRec, altstack_size),
        f!(ThreadRec, altstack_flags),
        f!(ThreadRec, _pad0),
        f!(ThreadRec, clear_child_tid),
        f!(ThreadRec, robust_list),
        f!(ThreadRec, robust_list_len),
        f!(ThreadRec, rseq_addr),
        f!(ThreadRec, rseq_len),
        f!(ThreadRec, rseq_sig),
        f!(ThreadRec, comm),
        f!(XstateRec, tid),
        f!(XstateRec, size),
        f!(XstateRec, xstate_bv),
        f!(XstateRec, xcr0),
        f!(Sigaction, handler),
        f!(Sigaction, flags),
        f!(Sigaction, restorer),
        f!(Sigaction, mask),
        f!(SigactionsRec, actions),
        f!(SigpendingRec, tid),
        f!(SigpendingRec, count),
        f!(Siginfo, bytes),
        f!(Rlimit, cur),
        f!(Rlimit, max),
        f!(RlimitsRec, limits),
        f!(FsRec, umask),
        f!(FsRec, cwd_len),
        f!(FsRec, root_len),
        f!(FsRec, _pad0),
        f!(TimerVal, interval_ns),
        f!(TimerVal, value_ns),
        f!(ItimersRec, real),
        f!(ItimersRec, virt),
        f!(ItimersRec, prof),
        f!(PosixTimerRec, id),
        f!(PosixTimerRec, clock_id),
        f!(PosixTimerRec, sigev_notify),
        f!(PosixTimerRec, sigev_signo),
        f!(PosixTimerRec, sigev_value),
        f!(PosixTimerRec, notify_tid),
        f!(PosixTimerRec, overrun),
        f!(PosixTimerRec, timer),
        f!(EndRec, nr_records),
        f!(EndRec, page_bytes),
        f!(FdFileRec, fd),
        f!(FdFileRec, fd_flags),
        f!(FdFileRec, open_flags),
        f!(FdFileRec, kind),
        f!(FdFileRec, file_id),
        f!(FdFileRec, file_flags),
        f!(FdFileRec, pos),
        f!(FdFileRec, size),
        f!(FdFileRec, mode),
        f!(FdFileRec, path_len),
        f!(FdFileRec, dev),
        f!(FdFileRec, ino),
        f!(FdFileRec, rdev),
        f!(FileDataRec, file_id),
        f!(FileDataRec, _pad0),
        f!(FileDataRec, size),
        f!(FileDataRec, data_off),
        f!(FdPipeRec, fd),
        f!(FdPipeRec, fd_flags),
        f!(FdPipeRec, open_flags),
        f!(FdPipeRec, pipe_id),
        f!(FdPipeRec, file_id),
        f!(FdPipeRec, fifo),
        f!(FdPipeRec, capacity),
        f!(FdPipeRec, path_len),
        f!(FdPipeRec, ino),
        f!(PipeDataRec, pipe_id),
        f!(PipeDataRec, _pad0),
        f!(PipeDataRec, len),
        f!(SocketRec, fd),
        f!(SocketRec, fd_flags),
        f!(SocketRec, open_flags),
        f!(SocketRec, file_id),
        f!(SocketRec, family),
        f!(SocketRec, sock_type),
        f!(SocketRec, protocol),
        f!(SocketRec, state),
        f!(SocketRec, backlog),
        f!(SocketRec, local_len),
        f!(SocketRec, peer_len),
        f!(SocketRec, _pad0),
        f!(SocketRec, local),
        f!(SocketRec, peer),
        f!(EventfdRec, fd),
        f!(EventfdRec, fd_flags),
        f!(EventfdRec, open_flags),
        f!(EventfdRec, file_id),
        f!(EventfdRec, count),
        f!(EventfdRec, efd_flags),
        f!(EventfdRec, _pad0),
        f!(TimerfdRec, fd),
        f!(TimerfdRec, fd_flags),
        f!(TimerfdRec, open_flags),
        f!(TimerfdRec, file_id),
        f!(TimerfdRec, clock_id),
        f!(TimerfdRec, settime_flags),
        f!(TimerfdRec, timer),
        f!(TimerfdRec, ticks),
        f!(SignalfdRec, fd),
        f!(SignalfdRec, fd_flags),
        f!(SignalfdRec, open_flags),
        f!(SignalfdRec, file_id),
        f!(SignalfdRec, mask),
        f!(EpollRec, fd),
        f!(EpollRec, fd_flags),
        f!(EpollRec, open_flags),
        f!(EpollRec, file_id),
        f!(EpollRec, count),
        f!(EpollRec, _pad0),
        f!(EpollTarget, tfd),
        f!(EpollTarget, events),
        f!(EpollTarget, data),
        f!(SysvShmRec, key),
        f!(SysvShmRec, shmid),
        f!(SysvShmRec, mode),
        f!(SysvShmRec, _pad0),
        f!(SysvShmRec, size),
        f!(SysvShmRec, data_off),
        f!(TaskTreeRec, count),
        f!(TaskTreeRec, _pad0),
        f!(TreeEntry, pid),
        f!(TreeEntry, ppid),
        f!(TreeEntry, pgid),
        f!(TreeEntry, sid),
    ]
}

/// (struct, size) of every struct documented in docs/FORMAT.md.
fn struct_sizes() -> Vec<(&'static str, usize)> {
    vec![
        ("Header", size_of::<Header>()),
        ("CpuRec", size_of::<CpuRec>()),
        ("ProcessRec", size_of::<ProcessRec>()),
        ("MmRec", size_of::<MmRec>()),
        ("VmaRec", size_of::<VmaRec>()),
        ("PagesRec", size_of::<PagesRec>()),
        ("PageRun", size_of::<PageRun>()),
        ("UserRegs", size_of::<UserRegs>()),
        ("ThreadRec", size_of::<ThreadRec>()),
        ("XstateRec", size_of::<XstateRec>()),
        ("Sigaction", size_of::<Sigaction>()),
        ("SigactionsRec", size_of::<SigactionsRec>()),
        ("SigpendingRec", size_of::<SigpendingRec>()),
        ("Siginfo", size_of::<Siginfo>()),
        ("Rlimit", size_of::<Rlimit>()),
        ("RlimitsRec", size_of::<RlimitsRec>()),
        ("FsRec", size_of::<FsRec>()),
        ("TimerVal", size_of::<TimerVal>()),
        ("ItimersRec", size_of::<ItimersRec>()),
        ("PosixTimerRec", size_of::<PosixTimerRec>()),
        ("EndRec", size_of::<EndRec>()),
        ("FdFileRec", size_of::<FdFileRec>()),
        ("FileDataRec", size_of::<FileDataRec>()),
        ("FdPipeRec", size_of::<FdPipeRec>()),
        ("PipeDataRec", size_of::<PipeDataRec>()),
        ("SocketRec", size_of::<SocketRec>()),
        ("EventfdRec", size_of::<EventfdRec>()),
        ("TimerfdRec", size_of::<TimerfdRec>()),
        ("SignalfdRec", size_of::<SignalfdRec>()),
        ("EpollRec", size_of::<EpollRec>()),
        ("EpollTarget", size_of::<EpollTarget>()),
        ("SysvShmRec", size_of::<SysvShmRec>()),
        ("TaskTreeRec", size_of::<TaskTreeRec>()),
        ("TreeEntry", size_of::<TreeEntry>()),
    ]
}

/// Every layout table of docs/FORMAT.md matches the Rust structs, row for
/// row, and every field of every struct is documented.
#[test]
fn format_md_tables_match_structs() {
    let doc = include_str!("../../../docs/FORMAT.md");
    let mut cur: Option<&str> = None;
    let mut rows: Vec<(&str, &str, usize, usize)> = Vec::new();
    let mut sizes: Vec<(&str, usize)> = Vec::new();
    for line in doc.lines() {
        if let Some(n) = line.strip_prefix("#### ") {
            cur = Some(n.trim());
            continue;
        }
        let Some(s) = cur else { continue };
        if let Some(rest) = line.strip_prefix("Size: ") {
            let n = rest.trim_end_matches(" bytes.").parse::<usize>().unwrap();
            sizes.push((s, n));
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() >= 5 {
            if let (Ok(off), Ok(size)) = (cells[1].parse::<usize>(), cells[2].parse::<usize>()) {
                rows.push((s, cells[3].trim_matches('`'), off, size));
            }
        }
    }
    let table = layout_table();
    for e in &table {
        assert!(rows.contains(e), "FORMAT.md lacks or misstates {e:?}");
    }
    for r in &rows {
        assert!(
            table.contains(r),
            "FORMAT.md row does not match the code: {r:?}"
        );
    }
    let want = struct_sizes();
    for w in &want {
        assert!(
            sizes.contains(w),
            "FORMAT.md size of {} wrong or missing",
            w.0
        );
    }
    assert_eq!(sizes.len(), want.len());
}

// ---------------------------------------------------------------- CPU record

fn cpu_rec() -> CpuRec {
    let mut c = CpuRec::default();
    c.vendor.copy_from_slice(b"GenuineIntel");
    c.xcr0 = 0x207;
    let l = crate::x86::xsave::Layout::legacy();
    c.xsave_offset = l.offset;
    c.xsave_size = l.size;
    c.xsave_offset[2] = 576;
    c.xsave_size[2] = 256;
    c.xsave_offset[9] = 2688;
    c.xsave_size[9] = 8;
    c.features[crate::x86::cpu::word::L1_ECX] = 1 << 28;
    c
}

fn with_cpu(c: &CpuRec) -> Vec<u8> {
    let mut recs = spec_recs(&small_spec());
    recs.insert(
        1,
        Rec::Plain {
            kind: kind::CPU,
            flags: RECORD_OPTIONAL,
            fixed: c.as_bytes().to_vec(),
            tails: vec![],
        },
    );
    write_recs(&recs)
}

#[test]
fn cpu_record_round_trips_and_is_optional() {
    let c = cpu_rec();
    let b = with_cpu(&c);
    let p = parse_all(&b).unwrap();
    assert_eq!(p.cpu, Some(c));
    assert_matches(&small_spec(), &p);
    assert_eq!(parse_all(&small()).unwrap().cpu, None);
    assert_eq!(size_of::<CpuRec>(), 328);
}

#[test]
fn cpu_record_errors() {
    let bad = |c: CpuRec| match err(&with_cpu(&c)) {
        ImageError::BadPayload { kind: k, why, .. } | ImageError::BadRange { kind: k, why, .. } => {
            assert_eq!(k, kind::CPU);
            why
        }
        e => panic!("unexpected {e:?}"),
    };
    let mut c = cpu_rec();
    c.xsave_offset[1] = 0;
    assert!(bad(c).contains("FXSAVE places"));
    let mut c = cpu_rec();
    c.xsave_size[9] = 0;
    assert!(bad(c).contains("has no place"));
    let mut c = cpu_rec();
    c.xsave_offset[9] = 65530;
    assert!(bad(c).contains("outside the area"));
    let mut c = cpu_rec();
    c.xsave_offset[9] = 100;
    assert!(bad(c).contains("outside the area"));
    let mut c = cpu_rec();
    c.xcr0 = 0x204;
    assert!(bad(c).contains("without x87 and SSE"));
    // Twice.
    let mut recs = spec_recs(&small_spec());
    for _ in 0..2 {
        recs.insert(1, plain(kind::CPU, &cpu_rec(), &[]));
    }
    assert!(matches!(err(&write_recs(&recs)), ImageError::Duplicate { .. }));
    // Wrong length.
    let mut recs = spec_recs(&small_spec());
    recs.insert(
        1,
        Rec::Plain {
            kind: kind::CPU,
            flags: 0,
            fixed: vec![0; 320],
            tails: vec![],
        },
    );
    assert!(matches!(err(&write_recs(&recs)), ImageError::BadPayload { .. }));
}

#[test]
fn cpu_compat_names_what_is_missing() {
    use crate::x86::cpu::{CpuCompat, FeatureList};
    let mut big = cpu_rec();
    big.features[crate::x86::cpu::word::L7_EBX] = (1 << 5) | (1 << 16) | (1 << 30);
    big.xcr0 = 0x2e7;
    for (bit, off, size) in [(5, 1088, 64), (6, 1152, 512), (7, 1664, 1024)] {
        big.xsave_offset[bit] = off;
        big.xsave_size[bit] = size;
    }
    let mut small = cpu_rec();
    // An AMD-like layout: PKRU elsewhere; the hypervisor bit is not compared.
    small.xsave_offset[9] = 2432;
    small.features[crate::x86::cpu::word::L1_ECX] |= 1 << 31;
    let c = CpuCompat::compare(&big, &small);
    assert!(!c.is_ok());
    assert_eq!(c.missing.to_string(), "avx2 avx512f avx512bw");
    assert!(c.missing.contains("avx512f") && !c.missing.contains("avx"));
    assert_eq!(c.missing_xfeatures, 0xe0);
    assert_eq!(c.moved_xfeatures, 1 << 9);
    assert_eq!(
        crate::x86::cpu::XfeatureList(c.missing_xfeatures).to_string(),
        "AVX-512 opmask (bit 5), AVX-512 ZMM_Hi256 (bit 6), AVX-512 Hi16_ZMM (bit 7)"
    );
    // The other way round nothing is missing, but this CPU enables XSAVE
    // components the image's did not: XSAVE buffers sized on the image's CPU
    // would overflow here, so that is refused too.
    let c = CpuCompat::compare(&small, &big);
    assert!(c.missing.is_empty() && c.missing_xfeatures == 0, "{c:?}");
    assert_eq!(c.extra_xfeatures, 0xe0);
    assert!(!c.is_ok());
    assert_eq!(FeatureList::of(&small).to_string(), "avx");
    // Same components, fewer instruction-set features in the image: fine.
    let mut small_isa = small;
    small_isa.features[crate::x86::cpu::word::L1_ECX] &= !(1 << 28);
    let c = CpuCompat::compare(&small_isa, &small);
    assert!(c.is_ok(), "{c:?}");
    // Without XSAVE the state is x87|SSE.
    let mut none = cpu_rec();
    none.xcr0 = 0;
    none.features = [0; 12];
    let c = CpuCompat::compare(&small, &none);
    assert_eq!(c.missing_xfeatures, 0x204);
    assert_eq!(c.missing.to_string(), "avx");
    // An image from a CPU without XSAVE runs anywhere: its programs used FXSAVE.
    let c = CpuCompat::compare(&none, &big);
    assert!(c.is_ok(), "{c:?}");
    assert_eq!(c.extra_xfeatures, 0);
}

#[test]
fn this_cpu_is_a_valid_record() {
    let c = crate::x86::cpu::this_cpu();
    let mut recs = spec_recs(&small_spec());
    recs.insert(1, plain(kind::CPU, &c, &[]));
    let b = write_recs(&recs);
    assert_eq!(parse_all(&b).unwrap().cpu, Some(c));
    // x86_64 always has SSE2 and FXSR.
    let f = crate::x86::cpu::FeatureList::of(&c);
    assert!(f.contains("sse2") && f.contains("fxsr"), "{f}");
    assert_eq!(crate::x86::cpu::CpuCompat::compare(&c, &c), Default::default());
}

//! Typed, semantically checked model of a single-process image.

use alloc::vec::Vec;
use core::mem::size_of;

use zerocopy::FromBytes;

use crate::error::ImageError;
use crate::header::Header;
use crate::names::is_known_kind;
use crate::reader::{Image, ParseOptions, RecordRef};
use crate::records::{
    file_flags, file_kind, kind, thread_flags, vma_flags, vma_kind, EpollRec, EpollTarget,
    EventfdRec, Extension, FdFileRec, FdPipeRec, FileDataRec, FsRec, ItimersRec, MmRec, PageRun,
    PagesRec, PipeDataRec, CpuRec, PosixTimerRec, ProcessRec, RlimitsRec, SigactionsRec, Siginfo,
    SignalfdRec, SigpendingRec, SocketRec, SysvShmRec, TaskTreeRec, ThreadRec, TimerfdRec,
    TreeEntry, VmaRec, XstateRec,
};
use crate::util::{aligned, first_nonzero, push, put, sort_by_key, to_u64, to_usize};

/// MM record: fixed part, auxv words, executable path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmView<'a> {
    /// The fixed part.
    pub rec: MmRec,
    /// `auxv_words` auxv words (key/value pairs).
    pub auxv: Vec<u64>,
    /// Path of the executable.
    pub exe: &'a [u8],
}

/// One VMA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmaView<'a> {
    /// The fixed part.
    pub rec: VmaRec,
    /// Mapped file path or pseudo name.
    pub path: &'a [u8],
    /// Stream offset of the VMA record.
    pub offset: u64,
}

/// One PAGES record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PagesView<'a> {
    /// Start of the VMA the pages belong to.
    pub vma_start: u64,
    /// The runs, in address order.
    pub runs: Vec<PageRun>,
    /// `nr_pages * page_size` bytes of page data, in run order.
    pub data: &'a [u8],
    /// File offset of `data` (page aligned): `pread`/`mmap` it from the image file.
    pub data_file_offset: u64,
}

/// XSAVE area of a thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XstateView<'a> {
    /// The fixed part.
    pub rec: XstateRec,
    /// The `size`-byte XSAVE area.
    pub area: &'a [u8],
}

/// One thread with its XSTATE and pending signals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadView<'a> {
    /// The THREAD record.
    pub rec: ThreadRec,
    /// Its XSTATE record, if any.
    pub xstate: Option<XstateView<'a>>,
    /// Its pending signals (from its SIGPENDING record; empty if none).
    pub pending: Vec<Siginfo>,
}

/// Filesystem context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsView<'a> {
    /// umask.
    pub umask: u32,
    /// Current directory.
    pub cwd: &'a [u8],
    /// Root directory.
    pub root: &'a [u8],
}

/// An open path-named file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdFileView<'a> {
    /// The FD_FILE record.
    pub rec: FdFileRec,
    /// Its path.
    pub path: &'a [u8],
    /// Contents of a deleted file (its FILE_DATA record), if present.
    pub data: Option<&'a [u8]>,
}

/// One end of a pipe or FIFO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdPipeView<'a> {
    /// The FD_PIPE record.
    pub rec: FdPipeRec,
    /// FIFO path (empty for a pipe).
    pub path: &'a [u8],
}

/// Typed, semantically checked model of a single-process image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessImage<'a> {
    /// The file header.
    pub header: Header,
    /// PROCESS.
    pub process: ProcessRec,
    /// MM.
    pub mm: MmView<'a>,
    /// VMAs in address order.
    pub vmas: Vec<VmaView<'a>>,
    /// PAGES records in file order.
    pub pages: Vec<PagesView<'a>>,
    /// Threads in file order.
    pub threads: Vec<ThreadView<'a>>,
    /// SIGACTIONS.
    pub sigactions: SigactionsRec,
    /// Process-wide pending signals (SIGPENDING with tid 0).
    pub shared_pending: Vec<Siginfo>,
    /// RLIMITS.
    pub rlimits: RlimitsRec,
    /// FS.
    pub fs: FsView<'a>,
    /// ITIMERS.
    pub itimers: ItimersRec,
    /// POSIX timers in file order.
    pub posix_timers: Vec<PosixTimerRec>,
    /// The checkpointing CPU (CPU record), absent in images written before it
    /// existed: then only the XSAVE features in use can be checked, and the
    /// areas are taken to be laid out as on the restarting CPU.
    pub cpu: Option<CpuRec>,
    /// FD_FILE records (with FILE_DATA attached).
    pub files: Vec<FdFileView<'a>>,
    /// FD_PIPE records.
    pub pipes: Vec<FdPipeView<'a>>,
    /// PIPE_DATA: (pipe_id, buffered bytes).
    pub pipe_data: Vec<(u32, &'a [u8])>,
    /// Shape-checked records of supported extensions that have no model yet
    /// (net, events, ipc, tree), in file order.
    pub other: Vec<RecordRef<'a>>,
}

#[derive(Clone, Copy)]
struct Ctx {
    index: usize,
    kind: u32,
    offset: u64,
    payload_offset: u64,
}

impl Ctx {
    fn of(r: &RecordRef<'_>) -> Ctx {
        Ctx {
            index: r.index,
            kind: r.kind,
            offset: r.offset,
            payload_offset: r.payload_offset(),
        }
    }
    fn bad(self, why: &'static str) -> ImageError {
        ImageError::BadPayload {
            index: self.index,
            kind: self.kind,
            offset: self.offset,
            why,
        }
    }
    fn reserved(self, field: &'static str) -> ImageError {
        ImageError::ReservedNonZero {
            index: self.index,
            kind: self.kind,
            offset: self.offset,
            field,
        }
    }
    fn misaligned(self, why: &'static str) -> ImageError {
        ImageError::Misaligned {
            index: self.index,
            kind: self.kind,
            offset: self.offset,
            why,
        }
    }
    fn order(self, why: &'static str) -> ImageError {
        ImageError::OutOfOrder {
            index: self.index,
            kind: self.kind,
            offset: self.offset,
            why,
        }
    }
    fn range(self, why: &'static str) -> ImageError {
        ImageError::BadRange {
            index: self.index,
            kind: self.kind,
            offset: self.offset,
            why,
        }
    }
    fn dup(self, what: &'static str) -> ImageError {
        ImageError::Duplicate {
            index: self.index,
            kind: self.kind,
            offset: self.offset,
            what,
        }
    }
    fn dangling(self, what: &'static str, id: u64) -> ImageError {
        ImageError::DanglingRef {
            index: self.index,
            kind: self.kind,
            offset: self.offset,
            what,
            id,
        }
    }
    fn threads(self, why: &'static str) -> ImageError {
        ImageError::BadThreads {
            index: self.index,
            kind: self.kind,
            offset: self.offset,
            why,
        }
    }
    fn oom(self) -> ImageError {
        ImageError::OutOfMemory {
            offset: self.offset,
        }
    }
}

/// Splits a payload into its fixed struct and the rest.
fn split<T: FromBytes>(p: &[u8], c: Ctx) -> Result<(T, &[u8]), ImageError> {
    T::read_from_prefix(p).map_err(|_| c.bad("shorter than its fixed struct"))
}

/// The whole payload is exactly the fixed struct.
fn exact<T: FromBytes>(p: &[u8], c: Ctx) -> Result<T, ImageError> {
    let (t, rest) = split::<T>(p, c)?;
    if !rest.is_empty() {
        return Err(c.bad("payload longer than its fixed struct"));
    }
    Ok(t)
}

/// Checks that the tail is exactly `want` bytes.
fn tail_len(rest: &[u8], want: Option<u64>, c: Ctx) -> Result<(), ImageError> {
    match want {
        Some(w) if w == to_u64(rest.len()) => Ok(()),
        _ => Err(c.bad("tail length differs from the lengths in the fixed part")),
    }
}

/// Splits `b` at `n` or fails.
fn take(b: &[u8], n: u64, c: Ctx) -> Result<(&[u8], &[u8]), ImageError> {
    let n = to_usize(n)
        .filter(|&n| n <= b.len())
        .ok_or(c.bad("tail extends past the payload"))?;
    Ok(b.split_at(n))
}

fn zero32(v: u32, field: &'static str, c: Ctx) -> Result<(), ImageError> {
    if v != 0 {
        return Err(c.reserved(field));
    }
    Ok(())
}

/// Checks the data part of a data record and returns the data.
fn check_data(
    payload: &[u8],
    prefix_len: u64,
    data_off: u64,
    page_size: u64,
    c: Ctx,
) -> Result<&[u8], ImageError> {
    let plen = to_u64(payload.len());
    if data_off < prefix_len {
        return Err(c.bad("data_off points inside the fixed part or tail"));
    }
    if data_off > plen {
        return Err(c.bad("data_off points past the end of the payload"));
    }
    let file_off = c
        .payload_offset
        .checked_add(data_off)
        .ok_or(c.bad("data_off overflows"))?;
    if !aligned(file_off, page_size) {
        return Err(c.misaligned("data does not start at a page-aligned file offset"));
    }
    if data_off.saturating_sub(prefix_len) >= page_size {
        return Err(c.misaligned("data_off is not the smallest page-aligned offset"));
    }
    let (Some(p), Some(d)) = (to_usize(prefix_len), to_usize(data_off)) else {
        return Err(c.bad("data_off overflows"));
    };
    let pad = payload.get(p..d).unwrap_or(&[]);
    if let Some(i) = first_nonzero(pad) {
        return Err(ImageError::BadPadding {
            index: c.index,
            kind: c.kind,
            offset: c
                .payload_offset
                .saturating_add(prefix_len)
                .saturating_add(to_u64(i)),
        });
    }
    Ok(payload.get(d..).unwrap_or(&[]))
}

/// Reads `n` fixed-size items from `b` (whose length the caller checked).
fn items<T: FromBytes + Copy>(b: &[u8], n: usize, c: Ctx) -> Result<Vec<T>, ImageError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| c.oom())?;
    for chunk in b.chunks_exact(size_of::<T>().max(1)).take(n) {
        let item = T::read_from_bytes(chunk).map_err(|_| c.bad("bad array element"))?;
        put(&mut v, item).map_err(|_| c.oom())?;
    }
    if v.len() != n {
        return Err(c.bad("array shorter than its count"));
    }
    Ok(v)
}

fn count_bytes(count: u64, size: usize) -> Option<u64> {
    count.checked_mul(to_u64(size))
}

/// Finds duplicates among `(id, record index, ctx)`: returns the later record.
fn find_dup(ids: &mut [(u64, usize, Ctx)]) -> Option<Ctx> {
    sort_by_key(ids, |&(id, idx, _)| (id, idx));
    ids.windows(2).find_map(|w| match w {
        [a, b] if a.0 == b.0 => Some(b.2),
        _ => None,
    })
}

/// Binary search of `(id, record index, slot)` sorted by id for `id`.
fn lookup(sorted: &[(u64, usize, usize)], id: u64) -> Option<(usize, usize)> {
    let i = sorted.partition_point(|&(k, _, _)| k < id);
    sorted.get(i).filter(|e| e.0 == id).map(|e| (e.1, e.2))
}

const VMA_FLAGS_KNOWN: u32 = vma_flags::SHARED
    | vma_flags::GROWSDOWN
    | vma_flags::FILE_DELETED
    | vma_flags::DONTFORK
    | vma_flags::DONTDUMP
    | vma_flags::LOCKED
    | vma_flags::NORESERVE
    | vma_flags::HUGEPAGE
    | vma_flags::NOHUGEPAGE;
const THREAD_FLAGS_KNOWN: u32 = thread_flags::LEADER | thread_flags::SYSCALL_FIXED;

impl<'a> ProcessImage<'a> {
    /// [`Image::parse`] then [`ProcessImage::from_image`].
    pub fn parse(bytes: &'a [u8], opts: &ParseOptions) -> Result<Self, ImageError> {
        let img = Image::parse(bytes)?;
        ProcessImage::from_image(&img, opts)
    }

    /// Decodes the typed records of `img` and enforces the semantic rules
    /// (docs/FORMAT.md, "Ordering and consistency rules").
    pub fn from_image(img: &Image<'a>, opts: &ParseOptions) -> Result<Self, ImageError> {
        let header = img.header;
        let ps = u64::from(header.page_size);
        if ps == 0 {
            return Err(ImageError::BadPageSize {
                page_size: header.page_size,
            });
        }
        let mut process: Option<ProcessRec> = None;
        let mut mm: Option<MmView<'a>> = None;
        let mut sigactions: Option<SigactionsRec> = None;
        let mut rlimits: Option<RlimitsRec> = None;
        let mut fs: Option<FsView<'a>> = None;
        let mut itimers: Option<ItimersRec> = None;
        let mut shared_pending: Option<Vec<Siginfo>> = None;
        let mut vmas: Vec<VmaView<'a>> = Vec::new();
        // Per VMA: end of the last page run seen (pages must be in address order).
        let mut vma_next: Vec<u64> = Vec::new();
        let mut pages: Vec<PagesView<'a>> = Vec::new();
        let mut threads: Vec<ThreadView<'a>> = Vec::new();
        let mut thread_ids: Vec<(u64, usize, Ctx)> = Vec::new();
        let mut thread_slots: Vec<(u64, usize, usize)> = Vec::new();
        let mut leader: Option<Ctx> = None;
        let mut xstates: Vec<(u32, XstateView<'a>, Ctx)> = Vec::new();
        let mut pendings: Vec<(u32, Vec<Siginfo>, Ctx)> = Vec::new();
        let mut posix_timers: Vec<PosixTimerRec> = Vec::new();
        let mut cpu: Option<CpuRec> = None;
        let mut timer_ids: Vec<(u64, usize, Ctx)> = Vec::new();
        let mut files: Vec<FdFileView<'a>> = Vec::new();
        let mut file_recs: Vec<usize> = Vec::new();
        let mut file_datas: Vec<(u32, &'a [u8], Ctx)> = Vec::new();
        let mut pipes: Vec<FdPipeView<'a>> = Vec::new();
        let mut pipe_recs: Vec<usize> = Vec::new();
        let mut pipe_datas: Vec<(u32, &'a [u8], Ctx)> = Vec::new();
        let mut fds: Vec<(u64, usize, Ctx)> = Vec::new();
        let mut other: Vec<RecordRef<'a>> = Vec::new();
        let mut end_ctx: Option<Ctx> = None;

        for r in img.records() {
            let c = Ctx::of(r);
            let p = r.payload;
            if r.kind == kind::END {
                end_ctx = Some(c);
                break;
            }
            if !is_known_kind(r.kind) {
                // Image::parse let it through: it is OPTIONAL.
                continue;
            }
            let Some(ext) = Extension::of_kind(r.kind) else {
                continue;
            };
            if !opts.supports(ext) {
                if r.is_optional() {
                    continue;
                }
                return Err(ImageError::NeedsExtension {
                    index: c.index,
                    kind: c.kind,
                    ext,
                    module: ext.module(),
                    offset: c.offset,
                });
            }
            if process.is_none() && r.kind != kind::PROCESS {
                return Err(c.order("PROCESS must be the first record"));
            }
            let once = |present: bool| {
                if present {
                    Err(c.dup("record (allowed once)"))
                } else {
                    Ok(())
                }
            };
            match r.kind {
                kind::PROCESS => {
                    once(process.is_some())?;
                    let rec: ProcessRec = exact(p, c)?;
                    zero32(rec._pad0, "_pad0", c)?;
                    if rec.pid == 0 {
                        return Err(c.bad("pid is 0"));
                    }
                    if rec.nr_threads == 0 {
                        return Err(c.threads("nr_threads is 0"));
                    }
                    process = Some(rec);
                }
                kind::MM => {
                    once(mm.is_some())?;
                    let (rec, rest) = split::<MmRec>(p, c)?;
                    let auxv_len = count_bytes(u64::from(rec.auxv_words), 8);
                    tail_len(
                        rest,
                        auxv_len.and_then(|a| a.checked_add(u64::from(rec.exe_len))),
                        c,
                    )?;
                    if rec.auxv_words % 2 != 0 {
                        return Err(c.bad("odd number of auxv words"));
                    }
                    let (auxv_b, exe) = take(rest, auxv_len.unwrap_or(0), c)?;
                    let n = to_usize(u64::from(rec.auxv_words)).ok_or(c.oom())?;
                    let auxv = items::<u64>(auxv_b, n, c)?
                        .into_iter()
                        .map(u64::from_le)
                        .collect::<Vec<u64>>();
                    mm = Some(MmView { rec, auxv, exe });
                }
                kind::VMA => {
                    let (rec, rest) = split::<VmaRec>(p, c)?;
                    tail_len(rest, Some(u64::from(rec.path_len)), c)?;
                    if !aligned(rec.start, ps) || !aligned(rec.end, ps) {
                        return Err(c.misaligned("VMA bounds not page aligned"));
                    }
                    if !aligned(rec.offset, ps) {
                        return Err(c.misaligned("VMA file offset not page aligned"));
                    }
                    if rec.start >= rec.end {
                        return Err(c.range("VMA start >= end"));
                    }
                    if !(vma_kind::ANON_PRIVATE..=vma_kind::SYSV_SHM).contains(&rec.kind) {
                        return Err(c.bad("unknown VMA kind"));
                    }
                    if rec.flags & !VMA_FLAGS_KNOWN != 0 {
                        return Err(c.bad("unknown VMA flags"));
                    }
                    if rec.prot & !7 != 0 {
                        return Err(c.bad("unknown prot bits"));
                    }
                    if let Some(prev) = vmas.last() {
                        if rec.start < prev.rec.start {
                            return Err(c.order("VMAs not sorted by address"));
                        }
                        if rec.start < prev.rec.end {
                            return Err(c.range("VMA overlaps the previous VMA"));
                        }
                    }
                    push(
                        &mut vmas,
                        VmaView {
                            rec,
                            path: rest,
                            offset: c.offset,
                        },
                        c.offset,
                    )?;
                    push(&mut vma_next, rec.start, c.offset)?;
                }
                kind::PAGES => {
                    let (rec, rest) = split::<PagesRec>(p, c)?;
                    zero32(rec._pad0, "_pad0", c)?;
                    let runs_len = count_bytes(u64::from(rec.nr_runs), size_of::<PageRun>())
                        .ok_or(c.bad("tail extends past the payload"))?;
                    let (runs_b, _) = take(rest, runs_len, c)?;
                    let prefix = to_u64(size_of::<PagesRec>()).saturating_add(runs_len);
                    let data = check_data(p, prefix, rec.data_off, ps, c)?;
                    let want = rec
                        .nr_pages
                        .checked_mul(ps)
                        .ok_or(c.bad("nr_pages overflows"))?;
                    if to_u64(data.len()) != want {
                        return Err(c.bad("data length differs from nr_pages * page_size"));
                    }
                    let n = to_usize(u64::from(rec.nr_runs)).ok_or(c.oom())?;
                    let runs = items::<PageRun>(runs_b, n, c)?;
                    let vi = vmas.partition_point(|v| v.rec.start < rec.vma_start);
                    let (Some(vma), Some(next)) = (
                        vmas.get(vi).filter(|v| v.rec.start == rec.vma_start),
                        vma_next.get_mut(vi),
                    ) else {
                        return Err(c.dangling(
                            "VMA (not defined by an earlier VMA record)",
                            rec.vma_start,
                        ));
                    };
                    let mut sum: u64 = 0;
                    for run in &runs {
                        if !aligned(run.addr, ps) {
                            return Err(c.misaligned("page run address not page aligned"));
                        }
                        if run.nr_pages == 0 {
                            return Err(c.bad("empty page run"));
                        }
                        let end = run
                            .nr_pages
                            .checked_mul(ps)
                            .and_then(|b| b.checked_add(run.addr))
                            .ok_or(c.range("page run wraps the address space"))?;
                        if run.addr < vma.rec.start || end > vma.rec.end {
                            return Err(c.range("page run outside its VMA"));
                        }
                        if run.addr < *next {
                            return Err(c.range("page runs not sorted or overlapping"));
                        }
                        *next = end;
                        sum = sum
                            .checked_add(run.nr_pages)
                            .ok_or(c.bad("nr_pages overflows"))?;
                    }
                    if sum != rec.nr_pages {
                        return Err(c.bad("nr_pages differs from the sum of the runs"));
                    }
                    let data_file_offset = c.payload_offset.saturating_add(rec.data_off);
                    push(
                        &mut pages,
                        PagesView {
                            vma_start: rec.vma_start,
                            runs,
                            data,
                            data_file_offset,
                        },
                        c.offset,
                    )?;
                }
                kind::THREAD => {
                    let rec: ThreadRec = exact(p, c)?;
                    zero32(rec._pad0, "_pad0", c)?;
                    if rec.flags & !THREAD_FLAGS_KNOWN != 0 {
                        return Err(c.bad("unknown thread flags"));
                    }
                    if rec.tid == 0 {
                        return Err(c.threads("thread id 0"));
                    }
                    if rec.flags & thread_flags::LEADER != 0 {
                        if leader.is_some() {
                            return Err(c.threads("more than one LEADER thread"));
                        }
                        if process.map(|pr| pr.pid) != Some(rec.tid) {
                            return Err(c.threads("LEADER tid differs from the pid"));
                        }
                        leader = Some(c);
                    }
                    push(&mut thread_ids, (u64::from(rec.tid), c.index, c), c.offset)?;
                    push(
                        &mut thread_slots,
                        (u64::from(rec.tid), c.index, threads.len()),
                        c.offset,
                    )?;
                    push(
                        &mut threads,
                        ThreadView {
                            rec,
                            xstate: None,
                            pending: Vec::new(),
                        },
                        c.offset,
                    )?;
                }
                kind::XSTATE => {
                    let (rec, rest) = split::<XstateRec>(p, c)?;
                    tail_len(rest, Some(u64::from(rec.size)), c)?;
                    if rec.xstate_bv & !rec.xcr0 != 0 {
                        return Err(c.bad("xstate_bv has features outside xcr0"));
                    }
                    push(
                        &mut xstates,
                        (rec.tid, XstateView { rec, area: rest }, c),
                        c.offset,
                    )?;
                }
                kind::SIGPENDING => {
                    let (rec, rest) = split::<SigpendingRec>(p, c)?;
                    tail_len(
                        rest,
                        count_bytes(u64::from(rec.count), size_of::<Siginfo>()),
                        c,
                    )?;
                    let n = to_usize(u64::from(rec.count)).ok_or(c.oom())?;
                    let sigs = items::<Siginfo>(rest, n, c)?;
                    if rec.tid == 0 {
                        if shared_pending.is_some() {
                            return Err(c.dup("SIGPENDING for the process (tid 0)"));
                        }
                        shared_pending = Some(sigs);
                    } else {
                        push(&mut pendings, (rec.tid, sigs, c), c.offset)?;
                    }
                }
                kind::SIGACTIONS => {
                    once(sigactions.is_some())?;
                    sigactions = Some(exact(p, c)?);
                }
                kind::RLIMITS => {
                    once(rlimits.is_some())?;
                    rlimits = Some(exact(p, c)?);
                }
                kind::FS => {
                    once(fs.is_some())?;
                    let (rec, rest) = split::<FsRec>(p, c)?;
                    zero32(rec._pad0, "_pad0", c)?;
                    tail_len(
                        rest,
                        Some(u64::from(rec.cwd_len).saturating_add(u64::from(rec.root_len))),
                        c,
                    )?;
                    let (cwd, root) = take(rest, u64::from(rec.cwd_len), c)?;
                    fs = Some(FsView {
                        umask: rec.umask,
                        cwd,
                        root,
                    });
                }
                kind::ITIMERS => {
                    once(itimers.is_some())?;
                    itimers = Some(exact(p, c)?);
                }
                kind::CPU => {
                    once(cpu.is_some())?;
                    let rec: CpuRec = exact(p, c)?;
                    check_cpu(&rec, c)?;
                    cpu = Some(rec);
                }
                kind::POSIX_TIMER => {
                    let rec: PosixTimerRec = exact(p, c)?;
                    push(&mut timer_ids, (u64::from(rec.id), c.index, c), c.offset)?;
                    push(&mut posix_timers, rec, c.offset)?;
                }
                kind::FD_FILE => {
                    let (rec, rest) = split::<FdFileRec>(p, c)?;
                    tail_len(rest, Some(u64::from(rec.path_len)), c)?;
                    if !(file_kind::REGULAR..=file_kind::MEMFD).contains(&rec.kind) {
                        return Err(c.bad("unknown file kind"));
                    }
                    if rec.file_flags & !file_flags::DELETED != 0 {
                        return Err(c.bad("unknown file flags"));
                    }
                    push(&mut fds, (u64::from(rec.fd), c.index, c), c.offset)?;
                    push(&mut file_recs, c.index, c.offset)?;
                    push(
                        &mut files,
                        FdFileView {
                            rec,
                            path: rest,
                            data: None,
                        },
                        c.offset,
                    )?;
                }
                kind::FILE_DATA => {
                    let (rec, _) = split::<FileDataRec>(p, c)?;
                    zero32(rec._pad0, "_pad0", c)?;
                    let data =
                        check_data(p, to_u64(size_of::<FileDataRec>()), rec.data_off, ps, c)?;
                    if to_u64(data.len()) != rec.size {
                        return Err(c.bad("data length differs from size"));
                    }
                    push(&mut file_datas, (rec.file_id, data, c), c.offset)?;
                }
                kind::FD_PIPE => {
                    let (rec, rest) = split::<FdPipeRec>(p, c)?;
                    tail_len(rest, Some(u64::from(rec.path_len)), c)?;
                    if rec.fifo > 1 {
                        return Err(c.bad("fifo is neither 0 nor 1"));
                    }
                    if rec.fifo == 0 && rec.path_len != 0 {
                        return Err(c.bad("anonymous pipe with a path"));
                    }
                    push(&mut fds, (u64::from(rec.fd), c.index, c), c.offset)?;
                    push(&mut pipe_recs, c.index, c.offset)?;
                    push(&mut pipes, FdPipeView { rec, path: rest }, c.offset)?;
                }
                kind::PIPE_DATA => {
                    let (rec, rest) = split::<PipeDataRec>(p, c)?;
                    zero32(rec._pad0, "_pad0", c)?;
                    tail_len(rest, Some(rec.len), c)?;
                    push(&mut pipe_datas, (rec.pipe_id, rest, c), c.offset)?;
                }
                _ => {
                    let fd = check_other(r, ps, c)?;
                    if let Some(fd) = fd {
                        push(&mut fds, (u64::from(fd), c.index, c), c.offset)?;
                    }
                    push(&mut other, *r, c.offset)?;
                }
            }
        }

        let end_ctx = end_ctx.unwrap_or(Ctx {
            index: 0,
            kind: kind::END,
            offset: 0,
            payload_offset: 0,
        });
        let missing = |k: u32| ImageError::MissingRecord {
            kind: k,
            offset: end_ctx.offset,
        };
        let process = process.ok_or(missing(kind::PROCESS))?;
        let mm = mm.ok_or(missing(kind::MM))?;
        let sigactions = sigactions.ok_or(missing(kind::SIGACTIONS))?;
        let rlimits = rlimits.ok_or(missing(kind::RLIMITS))?;
        let fs = fs.ok_or(missing(kind::FS))?;
        let itimers = itimers.ok_or(missing(kind::ITIMERS))?;
        let proc_ctx = img.records().first().map(Ctx::of).unwrap_or(end_ctx);

        // Threads.
        if to_u64(threads.len()) != u64::from(process.nr_threads) {
            return Err(proc_ctx.threads("number of THREAD records differs from nr_threads"));
        }
        if leader.is_none() {
            return Err(proc_ctx.threads("no LEADER thread"));
        }
        if let Some(c) = find_dup(&mut thread_ids) {
            return Err(c.dup("thread id"));
        }
        // (tid, record index, slot in `threads`), sorted by tid (unique now).
        sort_by_key(&mut thread_slots, |e| e.0);
        let tindex = thread_slots;
        for (tid, xs, c) in xstates {
            let (tidx, slot) =
                lookup(&tindex, u64::from(tid)).ok_or(c.dangling("thread", u64::from(tid)))?;
            if tidx > c.index {
                return Err(c.order("XSTATE before its THREAD"));
            }
            let t = threads
                .get_mut(slot)
                .ok_or(c.dangling("thread", u64::from(tid)))?;
            if t.xstate.is_some() {
                return Err(c.dup("XSTATE for the thread"));
            }
            t.xstate = Some(xs);
        }
        let mut seen_pending: Vec<(u64, usize, Ctx)> = Vec::new();
        for (tid, sigs, c) in pendings {
            let (tidx, slot) =
                lookup(&tindex, u64::from(tid)).ok_or(c.dangling("thread", u64::from(tid)))?;
            if tidx > c.index {
                return Err(c.order("SIGPENDING before its THREAD"));
            }
            let t = threads
                .get_mut(slot)
                .ok_or(c.dangling("thread", u64::from(tid)))?;
            push(&mut seen_pending, (u64::from(tid), c.index, c), c.offset)?;
            t.pending = sigs;
        }
        if let Some(c) = find_dup(&mut seen_pending) {
            return Err(c.dup("SIGPENDING for the thread"));
        }
        if let Some(c) = find_dup(&mut timer_ids) {
            return Err(c.dup("POSIX timer id"));
        }
        if let Some(c) = find_dup(&mut fds) {
            return Err(c.dup("file descriptor"));
        }

        // FILE_DATA → the deleted FD_FILEs with that file_id.
        let mut findex: Vec<(u64, usize, usize)> = Vec::new();
        findex
            .try_reserve_exact(files.len())
            .map_err(|_| proc_ctx.oom())?;
        for (slot, (f, idx)) in files.iter().zip(file_recs.iter()).enumerate() {
            if f.rec.file_flags & file_flags::DELETED != 0 {
                put(&mut findex, (u64::from(f.rec.file_id), *idx, slot))
                    .map_err(|_| proc_ctx.oom())?;
            }
        }
        sort_by_key(&mut findex, |e| (e.0, e.1));
        for (file_id, data, c) in file_datas {
            let id = u64::from(file_id);
            let first = findex.partition_point(|e| e.0 < id);
            let mut found = false;
            for e in findex.iter().skip(first).take_while(|e| e.0 == id) {
                if e.1 > c.index {
                    continue;
                }
                let f = files.get_mut(e.2).ok_or(c.dangling("deleted file", id))?;
                if f.data.is_some() {
                    return Err(c.dup("FILE_DATA for the file"));
                }
                f.data = Some(data);
                found = true;
            }
            if !found {
                return Err(c.dangling("deleted file (no earlier FD_FILE with DELETED)", id));
            }
        }

        // PIPE_DATA → an earlier FD_PIPE.
        let mut pindex: Vec<(u64, usize, usize)> = Vec::new();
        pindex
            .try_reserve_exact(pipes.len())
            .map_err(|_| proc_ctx.oom())?;
        for (slot, (pp, idx)) in pipes.iter().zip(pipe_recs.iter()).enumerate() {
            put(&mut pindex, (u64::from(pp.rec.pipe_id), *idx, slot))
                .map_err(|_| proc_ctx.oom())?;
        }
        sort_by_key(&mut pindex, |e| (e.0, e.1));
        let mut pipe_data: Vec<(u32, &'a [u8])> = Vec::new();
        let mut seen_pipe: Vec<(u64, usize, Ctx)> = Vec::new();
        for (pipe_id, data, c) in pipe_datas {
            let (pidx, _) = lookup(&pindex, u64::from(pipe_id))
                .ok_or(c.dangling("pipe", u64::from(pipe_id)))?;
            if pidx > c.index {
                return Err(c.order("PIPE_DATA before its FD_PIPE"));
            }
            push(&mut seen_pipe, (u64::from(pipe_id), c.index, c), c.offset)?;
            push(&mut pipe_data, (pipe_id, data), c.offset)?;
        }
        if let Some(c) = find_dup(&mut seen_pipe) {
            return Err(c.dup("PIPE_DATA for the pipe"));
        }

        Ok(ProcessImage {
            header,
            process,
            mm,
            vmas,
            pages,
            threads,
            sigactions,
            shared_pending: shared_pending.unwrap_or_default(),
            rlimits,
            fs,
            itimers,
            posix_timers,
            cpu,
            files,
            pipes,
            pipe_data,
            other,
        })
    }
}

/// Shape checks of the kinds without a model; returns the fd of fd records.
fn check_other(r: &RecordRef<'_>, ps: u64, c: Ctx) -> Result<Option<u32>, ImageError> {
    let p = r.payload;
    match r.kind {
        kind::FD_SOCKET => {
            let rec: SocketRec = exact(p, c)?;
            zero32(rec._pad0, "_pad0", c)?;
            if rec.local_len > 128 || rec.peer_len > 128 {
                return Err(c.bad("address length over 128"));
            }
            Ok(Some(rec.fd))
        }
        kind::FD_EVENTFD => {
            let rec: EventfdRec = exact(p, c)?;
            zero32(rec._pad0, "_pad0", c)?;
            Ok(Some(rec.fd))
        }
        kind::FD_TIMERFD => Ok(Some(exact::<TimerfdRec>(p, c)?.fd)),
        kind::FD_SIGNALFD => Ok(Some(exact::<SignalfdRec>(p, c)?.fd)),
        kind::FD_EPOLL => {
            let (rec, rest) = split::<EpollRec>(p, c)?;
            zero32(rec._pad0, "_pad0", c)?;
            tail_len(
                rest,
                count_bytes(u64::from(rec.count), size_of::<EpollTarget>()),
                c,
            )?;
            Ok(Some(rec.fd))
        }
        kind::SYSV_SHM => {
            let (rec, _) = split::<SysvShmRec>(p, c)?;
            zero32(rec._pad0, "_pad0", c)?;
            let data = check_data(p, to_u64(size_of::<SysvShmRec>()), rec.data_off, ps, c)?;
            if to_u64(data.len()) != rec.size {
                return Err(c.bad("data length differs from size"));
            }
            Ok(None)
        }
        kind::TASK_TREE => {
            let (rec, rest) = split::<TaskTreeRec>(p, c)?;
            zero32(rec._pad0, "_pad0", c)?;
            tail_len(
                rest,
                count_bytes(u64::from(rec.count), size_of::<TreeEntry>()),
                c,
            )?;
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// A CPU record's XSAVE layout must be one an area can be laid out by: the
/// legacy components where FXSAVE puts them, every other component present
/// inside the largest area accepted and after the header, and a place for
/// every component XCR0 enables.
fn check_cpu(rec: &CpuRec, c: Ctx) -> Result<(), ImageError> {
    use crate::x86::xsave::{Layout, COMPONENTS, MAX_SIZE, MIN_SIZE};
    let legacy = Layout::legacy();
    if rec.xsave_offset.get(..2) != legacy.offset.get(..2) || rec.xsave_size.get(..2) != legacy.size.get(..2) {
        return Err(c.bad("CPU: x87/SSE are not at their FXSAVE places"));
    }
    for bit in 2..COMPONENTS {
        let off = u64::from(rec.xsave_offset.get(bit).copied().unwrap_or(0));
        let size = u64::from(rec.xsave_size.get(bit).copied().unwrap_or(0));
        let enabled = rec.xcr0 & (1u64 << bit) != 0;
        if size == 0 {
            if enabled {
                return Err(c.bad("CPU: an XSAVE component XCR0 enables has no place"));
            }
            continue;
        }
        if off < to_u64(MIN_SIZE) || off.saturating_add(size) > to_u64(MAX_SIZE) {
            return Err(c.range("CPU: an XSAVE component lies outside the area"));
        }
    }
    if rec.xcr0 != 0 && rec.xcr0 & 3 != 3 {
        return Err(c.bad("CPU: XCR0 without x87 and SSE"));
    }
    Ok(())
}

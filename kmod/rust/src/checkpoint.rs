//! STASIS_IOC_CHECKPOINT: the image writer. Runs in a parked thread of the target
//! (current->mm is the target's), called by the shim's job loop.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ffi::c_void;
use core::mem::size_of;

use stasis_abi::zerocopy::{FromBytes, FromZeros, IntoBytes};
use stasis_image::records::{
    engine, kind, thread_flags, FdFileRec, FdPipeRec, FileDataRec, PipeDataRec, vma_kind, FsRec, ItimersRec, MmRec, PageRun, ProcessRec, Rlimit,
    RlimitsRec, Sigaction, SigactionsRec, SigpendingRec, ThreadRec, TimerVal, UserRegs, VmaRec,
    XstateRec,
};
use stasis_image::x86::xsave;
use stasis_image::{Header, Sink, WriteError, Writer};

use crate::kstate::{KProc, KThread, KVma, UNSUP_COMPAT, UNSUP_ITIMER_CPU, UNSUP_POSIX_TIMERS, UNSUP_SWAP};
use crate::{log, LOG_WARN};

const EINTR: i64 = 4;
const EIO: i64 = 5;
const ENOMEM: i64 = 12;
const EINVAL: i64 = 22;
const EOPNOTSUPP: i64 = 95;

const PAGE: usize = 4096;
/// Pages buffered per PAGES record, largest first: each record pads its page
/// data to a page boundary, so a 16-page record costs 1/16 (6%) of padding and
/// a 256-page one 0.4%. Smaller buffers are the fallback when a 1 MiB
/// allocation cannot be had.
const CHUNK_PAGES: [usize; 3] = [256, 64, 16];
const PATH_MAX: usize = 4096;

extern "C" {
    fn stasis_job_check(job: *mut c_void) -> i64;
    fn stasis_job_write(job: *mut c_void, buf: *const u8, len: usize) -> i64;
    fn stasis_job_threads(
        job: *mut c_void,
        f: unsafe extern "C" fn(ctx: *mut c_void, ks: *const KThread) -> i64,
        ctx: *mut c_void,
    ) -> i64;
    fn stasis_job_proc(job: *mut c_void, kp: *mut KProc, size: usize) -> i64;
    fn stasis_job_path(job: *mut c_void, which: u32, buf: *mut u8, len: usize) -> i64;
    fn stasis_job_vmas(job: *mut c_void) -> i64;
    fn stasis_job_vma(job: *mut c_void, idx: u32, out: *mut KVma, size: usize, buf: *mut u8, len: usize) -> i64;
    fn stasis_job_read_page(job: *mut c_void, addr: u64, buf: *mut u8, mode: u32) -> i64;
    fn stasis_job_siginfo(job: *mut c_void, tid: i32, buf: *mut u8, cap: usize) -> i64;
    fn stasis_ext_checkpoint(
        wctx: *mut c_void,
        record: unsafe extern "C" fn(*mut c_void, u32, *const u8, usize, *const u8, usize) -> i64,
    ) -> i64;
    fn stasis_job_set_stats(job: *mut c_void, bytes: u64, pages: u64, threads: u64, vmas: u64);
}

/// What the checkpoint reports back (handed to the shim at the end).
#[derive(Default)]
struct Stats {
    bytes: u64,
    pages: u64,
    threads: u32,
    vmas: u32,
}

struct JobSink {
    job: *mut c_void,
    n: u64,
}

impl Sink for JobSink {
    type Error = i64;
    fn write_all(&mut self, buf: &[u8]) -> Result<(), i64> {
        // SAFETY: job is the shim's live job; buf is valid for its length.
        let r = unsafe { stasis_job_write(self.job, buf.as_ptr(), buf.len()) };
        if r < 0 {
            Err(r)
        } else {
            self.n = self.n.saturating_add(buf.len() as u64);
            Ok(())
        }
    }
}

fn werr(e: WriteError<i64>) -> i64 {
    match e {
        WriteError::Sink(e) => e,
        _ => -EIO,
    }
}

/// An empty Vec with room for `n`, reserved fallibly.
pub(crate) fn try_vec<T>(n: usize) -> Result<Vec<T>, i64> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| -ENOMEM)?;
    Ok(v)
}

/// `n` zero bytes, allocated fallibly.
pub(crate) fn zeroed(n: usize) -> Result<Vec<u8>, i64> {
    let mut v = try_vec::<u8>(n)?;
    let Some(spare) = v.spare_capacity_mut().get_mut(..n) else { return Err(-ENOMEM) };
    for b in spare.iter_mut() {
        b.write(0);
    }
    // SAFETY: the first n elements were just initialised and n <= capacity.
    unsafe { v.set_len(n) };
    Ok(v)
}

// Vec::push/extend/resize keep a growth path that ends in a panic on allocation
// failure; these never grow implicitly (try_reserve, then fill the spare capacity).

/// Append `x`, growing fallibly.
pub(crate) fn push<T>(v: &mut Vec<T>, x: T) -> Result<(), i64> {
    if v.len() == v.capacity() {
        v.try_reserve(1).map_err(|_| -ENOMEM)?;
    }
    let n = v.len();
    let Some(slot) = v.spare_capacity_mut().first_mut() else { return Err(-ENOMEM) };
    slot.write(x);
    // SAFETY: element n was just initialised and n < capacity.
    unsafe { v.set_len(n + 1) };
    Ok(())
}

/// Append a copy of `xs`, growing fallibly.
fn extend<T: Copy>(v: &mut Vec<T>, xs: &[T]) -> Result<(), i64> {
    v.try_reserve(xs.len()).map_err(|_| -ENOMEM)?;
    let n = v.len();
    let Some(spare) = v.spare_capacity_mut().get_mut(..xs.len()) else { return Err(-ENOMEM) };
    for (d, s) in spare.iter_mut().zip(xs) {
        d.write(*s);
    }
    // SAFETY: xs.len() more elements were initialised.
    unsafe { v.set_len(n + xs.len()) };
    Ok(())
}

fn try_bytes(n: usize) -> Result<Vec<u8>, i64> {
    let mut v = try_vec::<u8>(n)?;
    let Some(spare) = v.spare_capacity_mut().get_mut(..n) else { return Err(-ENOMEM) };
    for d in spare.iter_mut() {
        d.write(0);
    }
    // SAFETY: n bytes initialised.
    unsafe { v.set_len(n) };
    Ok(v)
}

/// The largest page buffer of [`CHUNK_PAGES`] that can be allocated, and its
/// size in pages.
fn page_buffer() -> Result<(usize, Vec<u8>), i64> {
    let mut err = -ENOMEM;
    for pages in CHUNK_PAGES {
        match try_bytes(pages * PAGE) {
            Ok(buf) => return Ok((pages, buf)),
            Err(e) => err = e,
        }
    }
    Err(err)
}

/// A zeroed heap value (kernel stacks are small).
fn try_box_zeroed<T: FromZeros>() -> Result<Box<T>, i64> {
    let layout = core::alloc::Layout::new::<T>();
    if layout.size() == 0 {
        return Err(-EINVAL);
    }
    // SAFETY: non-zero size; all-zero bytes are a valid T (FromZeros); the global
    // allocator's memory is what Box frees.
    unsafe {
        let p = alloc::alloc::alloc_zeroed(layout) as *mut T;
        if p.is_null() {
            return Err(-ENOMEM);
        }
        Ok(Box::from_raw(p))
    }
}

struct Thread {
    ks: KThread,
}

unsafe extern "C" fn collect_thread(ctx: *mut c_void, ks: *const KThread) -> i64 {
    // SAFETY: ctx is the Vec<Thread> of write_image; ks is valid during the call.
    let v = unsafe { &mut *(ctx as *mut Vec<Thread>) };
    match push(v, Thread { ks: unsafe { *ks } }) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

/// The registers a restarted thread must get: those after the kernel's syscall-restart
/// fixup (the callback ran before it). Returns true when a fixup applied.
fn restart_fixup(r: &mut UserRegs) -> bool {
    if (r.orig_rax as i64) < 0 {
        return false;
    }
    match r.rax as i64 {
        -512 | -513 | -514 => {
            // -ERESTARTSYS/-ERESTARTNOINTR/-ERESTARTNOHAND with no handler to run:
            // the kernel restarts the call.
            r.rax = r.orig_rax;
            r.rip = r.rip.wrapping_sub(2);
            true
        }
        -516 => {
            // -ERESTART_RESTARTBLOCK: the restart block does not survive; the
            // thread sees EINTR, as after a signal.
            r.rax = (-EINTR) as u64;
            true
        }
        _ => false,
    }
}

fn user_regs(a: &[u64; 27]) -> UserRegs {
    let mut r = UserRegs::new_zeroed();
    // Same layout (struct user_regs_struct): copy as bytes.
    let dst = r.as_mut_bytes();
    let src = a.as_bytes();
    if dst.len() == src.len() {
        dst.copy_from_slice(src);
    }
    r
}

fn xstate_raw(ks: &KThread) -> &[u8] {
    if ks.xstate.is_null() || ks.xstate_size == 0 {
        return &[];
    }
    // SAFETY: the shim keeps the area (xstate_size bytes) alive while frozen.
    unsafe { core::slice::from_raw_parts(ks.xstate, ks.xstate_size as usize) }
}

/// A thread's FP state as images hold it: the NT_X86_XSTATE area, or on a CPU
/// without XSAVE the shim's FXSAVE image (NT_PRFPREG, 512 bytes) turned into
/// a 576-byte x87|SSE area.
enum Xstate<'a> {
    Area(&'a [u8]),
    Fx([u8; xsave::MIN_SIZE]),
}

impl Xstate<'_> {
    fn of(ks: &KThread) -> Xstate<'_> {
        let raw = xstate_raw(ks);
        if raw.len() == xsave::LEGACY_SIZE {
            if let Some(a) = xsave::from_fxsave(raw) {
                return Xstate::Fx(a);
            }
        }
        Xstate::Area(raw)
    }
    fn bytes(&self) -> &[u8] {
        match self {
            Xstate::Area(a) => a,
            Xstate::Fx(a) => a,
        }
    }
}

fn path(job: *mut c_void, which: u32, buf: &mut [u8]) -> Result<usize, i64> {
    // SAFETY: the shim writes at most buf.len() bytes.
    let r = unsafe { stasis_job_path(job, which, buf.as_mut_ptr(), buf.len()) };
    if r < 0 {
        return Err(r);
    }
    Ok((r as usize).min(buf.len()))
}

fn unsupported(what: &str) -> i64 {
    // One printk: "stasis: checkpoint refused: <what>\n".
    let mut line = [0u8; 160];
    let mut n = 0;
    for part in ["stasis: checkpoint refused: ", what, "\n"] {
        for b in part.bytes() {
            if let Some(d) = line.get_mut(n) {
                *d = b;
                n += 1;
            }
        }
    }
    let s = core::str::from_utf8(line.get(..n).unwrap_or(&[])).unwrap_or("stasis: checkpoint refused\n");
    log(LOG_WARN, s);
    -EOPNOTSUPP
}

fn check(job: *mut c_void) -> Result<(), i64> {
    // SAFETY: job is live.
    let r = unsafe { stasis_job_check(job) };
    if r < 0 {
        Err(r)
    } else {
        Ok(())
    }
}

struct ExtWriter<'a> {
    w: &'a mut Writer<JobSink>,
    err: i64,
}

/// An extension's record: only the files extension's kinds with their exact fixed
/// size, and the tail length the fixed part announces.
unsafe extern "C" fn emit_record(
    wctx: *mut c_void,
    k: u32,
    fixed: *const u8,
    flen: usize,
    tail: *const u8,
    tlen: usize,
) -> i64 {
    // SAFETY: wctx is the ExtWriter of write_image, live during stasis_ext_checkpoint.
    let ew = unsafe { &mut *(wctx as *mut ExtWriter) };
    if fixed.is_null() || (tail.is_null() && tlen != 0) {
        return -EINVAL;
    }
    // SAFETY: the extension passes valid buffers of these lengths.
    let f = unsafe { core::slice::from_raw_parts(fixed, flen) };
    let t: &[u8] = if tlen == 0 { &[] } else { unsafe { core::slice::from_raw_parts(tail, tlen) } };
    let ok = match k {
        kind::FD_FILE => FdFileRec::read_from_bytes(f).map(|r| r.path_len as usize == tlen).unwrap_or(false),
        kind::FD_PIPE => FdPipeRec::read_from_bytes(f).map(|r| r.path_len as usize == tlen).unwrap_or(false),
        kind::PIPE_DATA => PipeDataRec::read_from_bytes(f).map(|r| r.len == tlen as u64).unwrap_or(false),
        kind::FILE_DATA => FileDataRec::read_from_bytes(f)
            .map(|r| r.size == tlen as u64 && r.data_off == 0 && r._pad0 == 0)
            .unwrap_or(false),
        _ => false,
    };
    if !ok {
        log(LOG_WARN, "stasis: an extension emitted a malformed record\n");
        return -EINVAL;
    }
    // FILE_DATA: the tail is the data, page aligned in the image (the writer sets
    // data_off).
    let r = if k == kind::FILE_DATA {
        ew.w.data_record(k, f, &[], tlen as u64, [t])
    } else {
        ew.w.record(k, f, &[t])
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            ew.err = werr(e);
            ew.err
        }
    }
}

const SIGINFO: usize = 128;
const EAGAIN: i64 = 11;

/// The pending signals of thread `tid` (0: the process) as raw 128-byte siginfo_t.
fn pending_infos(job: *mut c_void, tid: i32) -> Result<Vec<u8>, i64> {
    for _ in 0..4 {
        // SAFETY: counting call (NULL buffer).
        let n = unsafe { stasis_job_siginfo(job, tid, core::ptr::null_mut(), 0) };
        if n < 0 {
            return Err(n);
        }
        let cap = (n as usize).saturating_add(4);
        let mut v = try_bytes(cap.checked_mul(SIGINFO).ok_or(-ENOMEM)?)?;
        // SAFETY: v holds cap slots.
        let r = unsafe { stasis_job_siginfo(job, tid, v.as_mut_ptr(), cap) };
        if r == -EAGAIN {
            continue;
        }
        if r < 0 {
            return Err(r);
        }
        v.truncate((r as usize).min(cap).saturating_mul(SIGINFO));
        return Ok(v);
    }
    Err(-EAGAIN)
}

fn all_zero(p: &[u8]) -> bool {
    // SAFETY: any bytes are valid u64s.
    let (a, words, b) = unsafe { p.align_to::<u64>() };
    a.iter().all(|x| *x == 0) && words.iter().all(|x| *x == 0) && b.iter().all(|x| *x == 0)
}

/// The job entry point (see the shim's stasis_run_job).
///
/// # Safety
/// Called by the shim in a parked target thread with a live job.
#[no_mangle]
pub unsafe extern "C" fn stasis_rs_write_image(job: *mut c_void, _unused: *mut c_void) -> i64 {
    let mut stats = Stats::default();
    match write_image(job, &mut stats) {
        Ok(()) => {
            // SAFETY: job is live.
            unsafe {
                stasis_job_set_stats(job, stats.bytes, stats.pages, u64::from(stats.threads), u64::from(stats.vmas))
            };
            0
        }
        Err(e) => e,
    }
}

fn write_image(job: *mut c_void, stats: &mut Stats) -> Result<(), i64> {
    // ---- gather and refuse what cannot be carried, before writing anything ----
    let mut kp: Box<KProc> = try_box_zeroed()?;
    // SAFETY: kp is a KProc of the size the shim checks.
    let r = unsafe { stasis_job_proc(job, &mut *kp, size_of::<KProc>()) };
    if r < 0 {
        return Err(r);
    }
    if kp.unsupported & UNSUP_SWAP != 0 {
        return Err(unsupported("pages of the process are swapped out"));
    }
    if kp.unsupported & UNSUP_COMPAT != 0 {
        return Err(unsupported("32-bit process"));
    }
    if kp.unsupported & UNSUP_POSIX_TIMERS != 0 {
        return Err(unsupported("POSIX timers (timer_create) are not written yet"));
    }
    if kp.unsupported & UNSUP_ITIMER_CPU != 0 {
        return Err(unsupported("ITIMER_VIRTUAL/ITIMER_PROF are not written yet"));
    }
    if kp.page_size as usize != PAGE {
        return Err(-EINVAL);
    }

    let mut threads: Vec<Thread> = Vec::new();
    // SAFETY: collect_thread gets &mut threads as ctx during this call only.
    let r = unsafe { stasis_job_threads(job, collect_thread, &mut threads as *mut Vec<Thread> as *mut c_void) };
    if r < 0 {
        return Err(r);
    }
    if threads.is_empty() {
        return Err(-EINVAL);
    }
    if !threads.iter().any(|t| t.ks.leader != 0) {
        return Err(unsupported("the main thread has exited"));
    }

    let mut pathbuf = try_bytes(PATH_MAX)?;
    let n = path(job, 0, &mut pathbuf)?;
    let mut exe = Vec::new();
    extend(&mut exe, pathbuf.get(..n).unwrap_or(&[]))?;
    let n = path(job, 1, &mut pathbuf)?;
    let mut cwd = Vec::new();
    extend(&mut cwd, pathbuf.get(..n).unwrap_or(&[]))?;
    let n = path(job, 2, &mut pathbuf)?;
    let mut root = Vec::new();
    extend(&mut root, pathbuf.get(..n).unwrap_or(&[]))?;

    // SAFETY: job is live.
    let nv = unsafe { stasis_job_vmas(job) };
    if nv < 0 {
        return Err(nv);
    }
    let nv = nv as u32;
    let mut vmas: Vec<(KVma, Vec<u8>)> = try_vec(nv as usize)?;
    for i in 0..nv {
        let mut k = KVma::default();
        // SAFETY: sizes as declared.
        let r = unsafe { stasis_job_vma(job, i, &mut k, size_of::<KVma>(), pathbuf.as_mut_ptr(), pathbuf.len()) };
        if r < 0 {
            return Err(r);
        }
        if k.unsupported != 0 {
            return Err(unsupported(match k.kind {
                vma_kind::SYSV_SHM => "SysV shared memory",
                _ => "a device, hugetlb or PFN mapping",
            }));
        }
        let pseudo: &[u8] = match k.kind {
            vma_kind::HEAP => b"[heap]",
            vma_kind::STACK => b"[stack]",
            vma_kind::VDSO => b"[vdso]",
            vma_kind::VVAR => b"[vvar]",
            _ => pathbuf.get(..k.path_len as usize).unwrap_or(&[]),
        };
        let mut p = Vec::new();
        extend(&mut p, pseudo)?;
        push(&mut vmas, (k, p))?;
    }

    // ---- write ----
    let first = threads.first().map(|t| Xstate::of(&t.ks));
    let first_x = first.as_ref().map(|x| x.bytes()).unwrap_or(&[]);
    let xcr0 = xsave::ptrace_xcr0(first_x).unwrap_or(kp.xcr0);
    let rel_len = kp.release.iter().position(|b| *b == 0).unwrap_or(kp.release.len());
    let release = core::str::from_utf8(kp.release.get(..rel_len).unwrap_or(&[])).unwrap_or("");
    let header = Header::new(
        engine::KERNEL,
        kp.page_size,
        xcr0,
        first_x.len() as u32,
        release,
        "stasis.ko 0.1.0",
        kp.created_ns,
    );
    let mut w = Writer::new(JobSink { job, n: 0 }, &header).map_err(werr)?;

    let process = ProcessRec {
        pid: kp.pid,
        ppid: kp.ppid,
        pgid: kp.pgid,
        sid: kp.sid,
        uid: kp.uid,
        euid: kp.euid,
        suid: kp.suid,
        fsuid: kp.fsuid,
        gid: kp.gid,
        egid: kp.egid,
        sgid: kp.sgid,
        fsgid: kp.fsgid,
        personality: kp.personality,
        nr_threads: threads.len() as u32,
        comm: kp.comm,
        dumpable: kp.dumpable,
        exit_signal: kp.exit_signal,
        cap_effective: kp.cap_effective,
        cap_permitted: kp.cap_permitted,
        cap_inheritable: kp.cap_inheritable,
        nice: kp.nice,
        _pad0: 0,
    };
    w.record(kind::PROCESS, &process, &[]).map_err(werr)?;
    // The CPU as user code sees it (CPUID and XCR0 are the same from here).
    let cpu = stasis_image::x86::cpu::this_cpu();
    w.record_flags(kind::CPU, stasis_image::RECORD_OPTIONAL, &cpu, &[]).map_err(werr)?;

    let auxv = kp.auxv.get(..kp.auxv_words as usize).unwrap_or(&[]);
    let mm = MmRec {
        start_code: kp.start_code,
        end_code: kp.end_code,
        start_data: kp.start_data,
        end_data: kp.end_data,
        start_brk: kp.start_brk,
        brk: kp.brk,
        start_stack: kp.start_stack,
        arg_start: kp.arg_start,
        arg_end: kp.arg_end,
        env_start: kp.env_start,
        env_end: kp.env_end,
        vdso: kp.vdso,
        auxv_words: auxv.len() as u32,
        exe_len: exe.len() as u32,
    };
    w.record(kind::MM, &mm, &[auxv.as_bytes(), &exe]).map_err(werr)?;
    let fs = FsRec { umask: kp.umask, cwd_len: cwd.len() as u32, root_len: root.len() as u32, _pad0: 0 };
    w.record(kind::FS, &fs, &[&cwd, &root]).map_err(werr)?;

    let mut rl: Box<RlimitsRec> = try_box_zeroed()?;
    for (d, s) in rl.limits.iter_mut().zip(kp.rlim.iter()) {
        *d = Rlimit { cur: s[0], max: s[1] };
    }
    w.record(kind::RLIMITS, &*rl, &[]).map_err(werr)?;
    let mut sa: Box<SigactionsRec> = try_box_zeroed()?;
    for (d, s) in sa.actions.iter_mut().zip(kp.sigactions.iter()) {
        *d = Sigaction { handler: s[0], flags: s[1], restorer: s[2], mask: s[3] };
    }
    w.record(kind::SIGACTIONS, &*sa, &[]).map_err(werr)?;
    let it = ItimersRec {
        real: TimerVal { interval_ns: kp.itimer_real_interval_ns, value_ns: kp.itimer_real_value_ns },
        virt: TimerVal { interval_ns: 0, value_ns: 0 },
        prof: TimerVal { interval_ns: 0, value_ns: 0 },
    };
    w.record(kind::ITIMERS, &it, &[]).map_err(werr)?;

    for t in &threads {
        let ks = &t.ks;
        let mut regs = user_regs(&ks.regs);
        let fixed = restart_fixup(&mut regs);
        let flags = if ks.leader != 0 { thread_flags::LEADER } else { 0 }
            | if fixed { thread_flags::SYSCALL_FIXED } else { 0 };
        let rec = ThreadRec {
            tid: ks.tid as u32,
            flags,
            regs,
            sigmask: ks.sigmask,
            altstack_sp: ks.altstack_sp,
            altstack_size: ks.altstack_size,
            altstack_flags: ks.altstack_flags,
            _pad0: 0,
            clear_child_tid: ks.clear_child_tid,
            robust_list: ks.robust_list,
            robust_list_len: ks.robust_list_len,
            rseq_addr: ks.rseq_addr,
            rseq_len: ks.rseq_len,
            rseq_sig: ks.rseq_sig,
            comm: ks.comm,
        };
        w.record(kind::THREAD, &rec, &[]).map_err(werr)?;
        let pending = pending_infos(job, ks.tid)?;
        let xo = Xstate::of(ks);
        let x = xo.bytes();
        if !x.is_empty() {
            let xs = XstateRec {
                tid: ks.tid as u32,
                size: x.len() as u32,
                xstate_bv: xsave::xstate_bv(x).unwrap_or(0),
                xcr0: xsave::ptrace_xcr0(x).unwrap_or(xcr0),
            };
            w.record(kind::XSTATE, &xs, &[x]).map_err(werr)?;
        }
        if !pending.is_empty() {
            let sp = SigpendingRec { tid: ks.tid as u32, count: (pending.len() / SIGINFO) as u32 };
            w.record(kind::SIGPENDING, &sp, &[&pending]).map_err(werr)?;
        }
    }
    let shared = pending_infos(job, 0)?;
    let sp = SigpendingRec { tid: 0, count: (shared.len() / SIGINFO) as u32 };
    w.record(kind::SIGPENDING, &sp, &[&shared]).map_err(werr)?;

    for (k, p) in &vmas {
        let rec = VmaRec {
            start: k.start,
            end: k.end,
            offset: k.offset,
            prot: k.prot,
            flags: k.flags,
            kind: k.kind,
            path_len: p.len() as u32,
            dev: k.dev,
            ino: k.ino,
            shm_id: k.shm_id,
        };
        w.record(kind::VMA, &rec, &[p]).map_err(werr)?;
    }

    // Pages: present (already touched) and not all-zero, read without faulting.
    let (chunk_pages, mut buf) = page_buffer()?;
    let mut runs: Vec<PageRun> = try_vec(chunk_pages)?;
    for (k, _) in &vmas {
        if k.need_pages == 0 {
            continue;
        }
        let mut addr = k.start;
        let mut used = 0usize;
        runs.clear();
        while addr < k.end {
            check(job)?;
            let Some(slot) = buf.get_mut(used * PAGE..(used + 1) * PAGE) else { return Err(-EINVAL) };
            // SAFETY: slot is one page.
            let r = unsafe { stasis_job_read_page(job, addr, slot.as_mut_ptr(), k.need_pages) };
            if r < 0 {
                return Err(r);
            }
            if r == 1 && !all_zero(slot) {
                match runs.last_mut() {
                    Some(run) if run.addr.wrapping_add(run.nr_pages.wrapping_mul(PAGE as u64)) == addr => {
                        run.nr_pages += 1
                    }
                    _ => push(&mut runs, PageRun { addr, nr_pages: 1 })?,
                }
                used += 1;
            }
            addr = addr.saturating_add(PAGE as u64);
            if used == chunk_pages || (addr >= k.end && used > 0) {
                let data = buf.get(..used * PAGE).unwrap_or(&[]);
                w.pages(k.start, &runs, data.chunks(PAGE)).map_err(werr)?;
                stats.pages += used as u64;
                used = 0;
                runs.clear();
            }
        }
    }

    // Extensions' records (files, ...), written from their own modules.
    let mut ew = ExtWriter { w: &mut w, err: 0 };
    // SAFETY: emit_record gets &mut ew as wctx during this call only.
    let r = unsafe { stasis_ext_checkpoint(&mut ew as *mut ExtWriter as *mut c_void, emit_record) };
    if ew.err < 0 {
        return Err(ew.err);
    }
    if r < 0 {
        return Err(r);
    }

    stats.threads = threads.len() as u32;
    stats.vmas = vmas.len() as u32;
    let sink = w.finish().map_err(werr)?;
    stats.bytes = sink.n;
    Ok(())
}

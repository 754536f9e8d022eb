//! STASIS_IOC_RESTART: validate a whole image in the kernel, then restart it into the
//! threads of the future process parked in STASIS_IOC_RESTART_THREAD.
//!
//! The image is read by the shim into one kvmalloc'd buffer (bounded by
//! [`RESTART_MAX_IMAGE`], fallible, freed on every path), parsed with stasis-image's
//! `ProcessImage::parse` (every checksum, framing and record content check), checked
//! against this machine, and turned into a [`Plan`]: VMAs, page runs (offsets into
//! the buffer) and per-thread state, every value checked. Nothing has changed anywhere
//! until then. With RESTART_VALIDATE_ONLY that is all.
//!
//! Otherwise (kmod/stasis_restart.c has the mechanics): claim the parked threads of
//! `pid`, set each one's XSAVE state from here, hand the [`Job`] to the leader, which
//! runs [`stasis_rs_restart_job`] in its own context: check the vDSO/vvar sit where
//! the image has them, take the files to map from the fds `stasis restart` opened,
//! then (the point of no return) unmap everything else, map every VMA and fill its
//! pages. The threads then set their own registers, mask, altstack and rseq.

use core::ffi::c_void;

use alloc::vec::Vec;
use stasis_abi::zerocopy::{FromBytes, IntoBytes};
use stasis_abi::{
    MapFd, RestartArgs, RESTART_FLAGS, RESTART_KEEP, RESTART_KEPT, RESTART_MAX_IMAGE, RESTART_VALIDATE_ONLY,
};
use stasis_image::records::{vma_flags, vma_kind};
use stasis_image::x86::{self, xsave};
use stasis_image::{Extension, ParseOptions, ProcessImage, XstateView};

use crate::checkpoint::{push, try_vec, zeroed};
use crate::{log, LOG_WARN, MAX_THREADS};

const EBADF: i64 = 9;
const ENOMEM: i64 = 12;
const EINVAL: i64 = 22;
const ENOENT: i64 = 2;
const EOPNOTSUPP: i64 = 95;

// mmap(2) flags and protections (uapi asm-generic/mman-common.h, x86).
const PROT_WRITE: u32 = 2;
const MAP_SHARED: u32 = 0x01;
const MAP_PRIVATE: u32 = 0x02;
const MAP_ANONYMOUS: u32 = 0x20;
const MAP_GROWSDOWN: u32 = 0x100;
const MAP_LOCKED: u32 = 0x2000;
const MAP_NORESERVE: u32 = 0x4000;

// 64-bit user code and stack selectors (__USER_CS, __USER_DS).
const USER_CS: u64 = 0x33;
const USER_DS: u64 = 0x2b;
// sigaltstack flags the kernel stores: SS_DISABLE, SS_AUTODISARM.
const SS_FLAGS: u32 = 2 | (1 << 31);

/// As `struct stasis_rstate` (kmod/include/stasis_kstate.h); size checked at init.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RState {
    pub regs: [u64; 27],
    pub sigmask: u64,
    pub altstack_sp: u64,
    pub altstack_size: u64,
    pub rseq_addr: u64,
    pub altstack_flags: u32,
    pub rseq_len: u32,
    pub rseq_sig: u32,
    pub _pad: u32,
}

extern "C" {
    fn stasis_image_load(fd: i32, max: u64, out: *mut *mut u8, len: *mut u64) -> i64;
    fn stasis_image_free(p: *mut u8);
    fn stasis_page_size() -> u32;
    fn stasis_on_big_stack(f: unsafe extern "C" fn(*mut c_void) -> i64, arg: *mut c_void) -> i64;
    fn stasis_rg_claim(pid: i32, nr: u32, timeout_ms: u32, out: *mut *mut c_void) -> i64;
    fn stasis_rg_set_thread(g: *mut c_void, tid: i32, st: *const RState, xstate: *const u8, xsize: u32) -> i64;
    fn stasis_rg_run(g: *mut c_void, job: *mut c_void) -> i64;
    fn stasis_rg_release(g: *mut c_void);
    fn stasis_mm_specials(out: *mut [u64; 4]) -> i64;
    fn stasis_mm_task_size() -> u64;
    fn stasis_mm_unmap(start: u64, end: u64) -> i64;
    fn stasis_mm_fget(fd: i32) -> *mut c_void;
    fn stasis_mm_fput(f: *mut c_void);
    fn stasis_is_err(p: *const c_void) -> bool;
    fn stasis_mm_map(file: *mut c_void, start: u64, len: u64, prot: u32, flags: u32, off: u64) -> i64;
    fn stasis_mm_vma_flags(start: u64, end: u64, flags: u32) -> i64;
    fn stasis_mm_fill(addr: u64, src: *const u8, len: u64, force: u32) -> i64;
    fn stasis_session_take_kept(sess: *mut c_void) -> *mut c_void;
    fn stasis_session_keep(sess: *mut c_void, k: *mut c_void);
}

/// One VMA to map.
struct PVma {
    start: u64,
    end: u64,
    offset: u64,
    prot: u32,
    flags: u32,
    kind: u32,
}

/// Page data for `[addr, addr + len)`, at `data_off` in the image buffer.
struct PRun {
    addr: u64,
    len: u64,
    data_off: usize,
    /// The VMA is not writable: write through FOLL_FORCE.
    force: u32,
}

struct PThread {
    tid: u32,
    st: RState,
    /// The XSAVE area laid out for this CPU (empty: none in the image).
    xarea: Vec<u8>,
}

/// Everything the restart does, checked, with offsets into the image buffer.
pub(crate) struct Plan {
    vmas: Vec<PVma>,
    runs: Vec<PRun>,
    threads: Vec<PThread>,
    /// The image's [vvar] group and [vdso] ranges (start, end), (0, 0) when absent.
    vvar: (u64, u64),
    vdso: (u64, u64),
}

/// What the leader's job reads: the plan and the image it points into.
struct Job<'a> {
    plan: &'a Plan,
    bytes: &'a [u8],
}

/// What the validation (run on the big stack) reads and reports.
struct Validate<'a> {
    bytes: &'a [u8],
    pages: u64,
    threads: u32,
    vmas: u32,
    /// Build the plan too (not for RESTART_VALIDATE_ONLY).
    want_plan: bool,
    plan: Option<Plan>,
}

/// Parses and checks the image; runs on the shim's big stack (see stasis_on_big_stack).
unsafe extern "C" fn validate_cb(arg: *mut c_void) -> i64 {
    // SAFETY: arg is the &mut Validate restart() passed, alive for the call.
    let v = unsafe { &mut *(arg as *mut Validate<'_>) };
    validate(v)
}

#[inline(never)]
fn validate(v: &mut Validate<'_>) -> i64 {
    let opts = ParseOptions { supported: SUPPORTED };
    let pi = match ProcessImage::parse(v.bytes, &opts) {
        Ok(p) => p,
        Err(_) => {
            log(LOG_WARN, "stasis: restart refused: the image does not validate (stasis-image)\n");
            return -EINVAL;
        }
    };
    let r = check_machine(&pi);
    if r < 0 {
        return r;
    }
    v.pages = pi
        .pages
        .iter()
        .map(|p| p.runs.iter().fold(0u64, |s, r| s.saturating_add(r.nr_pages)))
        .fold(0u64, |s, n| s.saturating_add(n));
    v.threads = u32::try_from(pi.threads.len()).unwrap_or(u32::MAX);
    v.vmas = u32::try_from(pi.vmas.len()).unwrap_or(u32::MAX);
    let plan = match build_plan(&pi, v.bytes) {
        Ok(p) => p,
        Err(e) => return e,
    };
    if v.want_plan {
        v.plan = Some(plan);
    }
    0
}

fn refuse(msg: &str, err: i64) -> i64 {
    log(LOG_WARN, msg);
    err
}


#[inline(never)]
fn build_plan(pi: &ProcessImage<'_>, bytes: &[u8]) -> Result<Plan, i64> {
    // SAFETY: plain queries.
    let (task_size, page) = unsafe { (stasis_mm_task_size(), u64::from(stasis_page_size())) };
    // The page size is a power of two.
    let page_mask = page.wrapping_sub(1);
    let base = bytes.as_ptr() as usize;
    let mut plan = Plan {
        vmas: try_vec(pi.vmas.len())?,
        runs: Vec::new(),
        threads: try_vec(pi.threads.len())?,
        vvar: (0, 0),
        vdso: (0, 0),
    };
    let mut prev_end = 0u64;
    for v in pi.vmas.iter() {
        let r = &v.rec;
        if r.start >= r.end || r.start < prev_end || (r.start | r.end) & page_mask != 0 {
            return Err(refuse("stasis: restart refused: VMAs overlap or are not page aligned\n", -EINVAL));
        }
        prev_end = r.end;
        match r.kind {
            vma_kind::VSYSCALL => continue,
            vma_kind::VDSO => {
                if plan.vdso != (0, 0) {
                    return Err(refuse("stasis: restart refused: more than one [vdso] mapping\n", -EOPNOTSUPP));
                }
                plan.vdso = (r.start, r.end);
                continue;
            }
            vma_kind::VVAR => {
                // [vvar] and, since 6.13, [vvar_vclock]: one adjacent group, kept
                // (and compared with current's) as its span.
                if plan.vvar == (0, 0) {
                    plan.vvar = (r.start, r.end);
                } else if plan.vvar.1 == r.start {
                    plan.vvar.1 = r.end;
                } else {
                    return Err(refuse("stasis: restart refused: [vvar] mappings that are not adjacent\n", -EOPNOTSUPP));
                }
                continue;
            }
            vma_kind::ANON_PRIVATE | vma_kind::HEAP | vma_kind::STACK | vma_kind::ANON_SHARED => {}
            vma_kind::FILE_PRIVATE | vma_kind::FILE_SHARED => {}
            vma_kind::SYSV_SHM => {
                return Err(refuse("stasis: restart refused: SysV shared memory (needs the ipc extension)\n", -EOPNOTSUPP));
            }
            _ => return Err(refuse("stasis: restart refused: unknown VMA kind\n", -EOPNOTSUPP)),
        }
        if r.end > task_size || r.prot & !7 != 0 {
            return Err(refuse("stasis: restart refused: a VMA lies outside the user address space\n", -EOPNOTSUPP));
        }
        push(&mut plan.vmas, PVma { start: r.start, end: r.end, offset: r.offset, prot: r.prot, flags: r.flags, kind: r.kind })?;
    }

    let nruns = pi.pages.iter().fold(0usize, |s, p| s.saturating_add(p.runs.len()));
    plan.runs = try_vec(nruns)?;
    for p in pi.pages.iter() {
        let Ok(i) = plan.vmas.binary_search_by_key(&p.vma_start, |v| v.start) else {
            if p.vma_start == plan.vdso.0 || (plan.vvar.0 <= p.vma_start && p.vma_start < plan.vvar.1) {
                continue; // the kernel provides these
            }
            return Err(refuse("stasis: restart refused: pages for an unknown VMA\n", -EINVAL));
        };
        let Some(v) = plan.vmas.get(i) else { return Err(-EINVAL) };
        if v.kind == vma_kind::FILE_SHARED {
            continue; // the data lives in the file
        }
        let force = u32::from(v.prot & PROT_WRITE == 0);
        if force != 0 && v.kind == vma_kind::ANON_SHARED && !p.runs.is_empty() {
            return Err(refuse("stasis: restart refused: data in read-only shared memory\n", -EOPNOTSUPP));
        }
        let mut off = (p.data.as_ptr() as usize).wrapping_sub(base);
        for run in p.runs.iter() {
            let len = run.nr_pages.checked_mul(page).ok_or(-EINVAL)?;
            let end = run.addr.checked_add(len).ok_or(-EINVAL)?;
            let dend = off.checked_add(usize::try_from(len).map_err(|_| -EINVAL)?).ok_or(-EINVAL)?;
            if run.addr < v.start || end > v.end || dend > bytes.len() {
                return Err(refuse("stasis: restart refused: page run outside its VMA or the image\n", -EINVAL));
            }
            push(&mut plan.runs, PRun { addr: run.addr, len, data_off: off, force })?;
            off = dend;
        }
    }

    // XSAVE areas are laid out as on the image's CPU (its CPU record; images
    // without one are taken to match this CPU) and must be as on this one.
    let cpu = x86::cpu::this_cpu();
    let here = xsave::Layout::of(&cpu);
    let from = pi.cpu.as_ref().map(xsave::Layout::of).unwrap_or(here);
    let ours = x86::cpu::effective_xfeatures(cpu.xcr0);
    for t in pi.threads.iter() {
        let r = &t.rec;
        let g = &r.regs;
        let alt_end = r.altstack_sp.checked_add(r.altstack_size).ok_or(-EINVAL)?;
        if g.cs != USER_CS || g.ss != USER_DS {
            return Err(refuse("stasis: restart refused: a thread is not in 64-bit mode\n", -EOPNOTSUPP));
        }
        if g.rip >= task_size || g.rsp >= task_size || alt_end > task_size || r.altstack_flags & !SS_FLAGS != 0 {
            return Err(refuse("stasis: restart refused: bad thread registers or sigaltstack\n", -EINVAL));
        }
        let rseq_ok = r.rseq_len == 0
            || (r.rseq_len >= 32 && r.rseq_addr & 31 == 0 && r.rseq_addr.checked_add(32).is_some_and(|e| e <= task_size));
        if !rseq_ok {
            return Err(refuse("stasis: restart refused: bad rseq registration\n", -EINVAL));
        }
        let mut st = RState {
            regs: [0; 27],
            sigmask: r.sigmask,
            altstack_sp: r.altstack_sp,
            altstack_size: r.altstack_size,
            rseq_addr: if r.rseq_len == 0 { 0 } else { r.rseq_addr },
            altstack_flags: r.altstack_flags,
            rseq_len: if r.rseq_len == 0 { 0 } else { 32 },
            rseq_sig: r.rseq_sig,
            _pad: 0,
        };
        // Same layout (struct user_regs_struct): copy as bytes.
        let src = g.as_bytes();
        let dst = st.regs.as_mut_bytes();
        if src.len() != dst.len() {
            return Err(-EINVAL);
        }
        dst.copy_from_slice(src);
        let xarea = match t.xstate.as_ref() {
            Some(x) => xarea_here(x, &from, &here, ours)?,
            None => Vec::new(),
        };
        push(&mut plan.threads, PThread { tid: r.tid, st, xarea })?;
    }
    Ok(plan)
}

/// The loaded image; freed when dropped.
struct Loaded {
    ptr: *mut u8,
    len: usize,
}

impl Loaded {
    fn bytes(&self) -> &[u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: the shim filled len bytes at ptr; they live until drop.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        // SAFETY: ptr came from stasis_image_load (or is null).
        unsafe { stasis_image_free(self.ptr) }
    }
}

/// A claimed group of parked threads; released (aborted unless its job ran) on drop.
struct Claim(*mut c_void);

impl Drop for Claim {
    fn drop(&mut self) {
        // SAFETY: the group came from stasis_rg_claim, released once.
        unsafe { stasis_rg_release(self.0) }
    }
}

/// Extensions whose records the restart path accepts (files: reopened by `stasis
/// restart` before the threads park; the kernel checks and skips them).
const SUPPORTED: &[Extension] = &[Extension::Core, Extension::Files];

/// Default wait for the future process's threads to park, ms.
const DEFAULT_CLAIM_MS: u32 = 10_000;
const MAX_CLAIM_MS: u32 = 600_000;

/// A validated image kept in a /dev/stasis session between RESTART_KEEP and
/// RESTART_KEPT: the loaded bytes, the plan built from them, their counts.
pub(crate) struct Kept {
    img: Loaded,
    plan: Plan,
    counts: (u64, u64, u32, u32),
}

/// Moves `k` to the heap (fallibly: no allocation-failure panic path) and returns
/// the raw pointer the session keeps.
fn kept_into_raw(k: Kept) -> Result<*mut c_void, i64> {
    let mut v: Vec<Kept> = try_vec(1)?;
    push(&mut v, k)?;
    let mut v = core::mem::ManuallyDrop::new(v);
    Ok(v.as_mut_ptr() as *mut c_void)
}

/// Takes back what [`kept_into_raw`] returned.
///
/// # Safety
/// `p` came from `kept_into_raw` and is not used again.
unsafe fn kept_from_raw(p: *mut c_void) -> Kept {
    // SAFETY: p is the buffer of a Vec of length and capacity 1 leaked by kept_into_raw.
    let mut v = unsafe { Vec::from_raw_parts(p as *mut Kept, 1, 1) };
    match v.pop() {
        Some(k) => k,
        // SAFETY: the Vec has length 1.
        None => unsafe { core::hint::unreachable_unchecked() },
    }
}

/// Frees a kept image (the session is closed, or replaced it).
///
/// # Safety
/// `p` came from the session (kept_into_raw) and is not used again.
#[no_mangle]
pub unsafe extern "C" fn stasis_rs_kept_free(p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: as the contract says.
        drop(unsafe { kept_from_raw(p) });
    }
}

/// Loads and validates the image behind `fd` (and builds its plan when `want_plan`).
fn load(fd: i32, want_plan: bool) -> Result<Kept, i64> {
    let mut ptr: *mut u8 = core::ptr::null_mut();
    let mut len: u64 = 0;
    // SAFETY: the shim writes the two out-parameters.
    let r = unsafe { stasis_image_load(fd, RESTART_MAX_IMAGE, &mut ptr, &mut len) };
    if r < 0 {
        return Err(r);
    }
    let Ok(len) = usize::try_from(len) else {
        // SAFETY: ptr came from stasis_image_load.
        unsafe { stasis_image_free(ptr) };
        return Err(-EINVAL);
    };
    let img = Loaded { ptr, len };
    let mut v = Validate { bytes: img.bytes(), pages: 0, threads: 0, vmas: 0, want_plan, plan: None };
    // SAFETY: validate_cb gets &mut v, used only during the call.
    let r = unsafe { stasis_on_big_stack(validate_cb, &mut v as *mut Validate<'_> as *mut c_void) };
    if r < 0 {
        return Err(r);
    }
    let counts = (img.len as u64, v.pages, v.threads, v.vmas);
    let plan = match v.plan.take() {
        Some(p) => p,
        None => Plan { vmas: Vec::new(), runs: Vec::new(), threads: Vec::new(), vvar: (0, 0), vdso: (0, 0) },
    };
    Ok(Kept { img, plan, counts })
}

#[inline(never)]
pub(crate) fn restart(sess: *mut c_void, buf: &mut [u8]) -> i64 {
    let Ok(a) = RestartArgs::mut_from_bytes(buf) else { return -EINVAL };
    let validate_only = a.flags & RESTART_VALIDATE_ONLY != 0;
    let keep = a.flags & RESTART_KEEP != 0;
    let kept = a.flags & RESTART_KEPT != 0;
    if a.flags & !RESTART_FLAGS != 0
        || (keep && !validate_only)
        || (kept && validate_only)
        || (kept && a.fd != -1)
        || (!kept && a.fd < 0)
        || (validate_only && a.pid != 0)
        || (!validate_only && a.pid <= 0)
        || a.bytes != 0
        || a.pages != 0
        || a.nr_threads != 0
        || a.nr_vmas != 0
    {
        return -EINVAL;
    }
    let k = if kept {
        // SAFETY: sess is the shim's session.
        let p = unsafe { stasis_session_take_kept(sess) };
        if p.is_null() {
            return -EINVAL;
        }
        // SAFETY: the session held it; it is ours now.
        unsafe { kept_from_raw(p) }
    } else {
        match load(a.fd, !validate_only || keep) {
            Ok(k) => k,
            Err(e) => return e,
        }
    };
    (a.bytes, a.pages, a.nr_threads, a.nr_vmas) = k.counts;
    if validate_only {
        if keep {
            match kept_into_raw(k) {
                // SAFETY: sess is the shim's session; it owns p from now on.
                Ok(p) => unsafe { stasis_session_keep(sess, p) },
                Err(e) => return e,
            }
        }
        return 0;
    }
    let plan = &k.plan;
    let timeout = match a.timeout_ms {
        0 => DEFAULT_CLAIM_MS,
        t => t.min(MAX_CLAIM_MS),
    };
    let nr = u32::try_from(plan.threads.len()).unwrap_or(u32::MAX);
    let mut g: *mut c_void = core::ptr::null_mut();
    // SAFETY: the shim writes g (a referenced group) on success.
    let r = unsafe { stasis_rg_claim(a.pid, nr, timeout, &mut g) };
    if r < 0 {
        return r;
    }
    let claim = Claim(g);
    let bytes = k.img.bytes();
    for t in plan.threads.iter() {
        let xlen = match u32::try_from(t.xarea.len()) {
            Ok(n) => n,
            Err(_) => return -EINVAL,
        };
        let tid = i32::try_from(t.tid).unwrap_or(-1);
        // SAFETY: st and xarea are valid for the call; the shim copies what it keeps.
        let r = unsafe { stasis_rg_set_thread(claim.0, tid, &t.st, t.xarea.as_ptr(), xlen) };
        if r < 0 {
            return refuse("stasis: restart refused: a parked thread is missing or its XSAVE state was rejected\n", r);
        }
    }
    let job = Job { plan, bytes };
    // SAFETY: the shim hands &job to the leader and returns only after the job ended.
    unsafe { stasis_rg_run(claim.0, &job as *const Job<'_> as *mut c_void) }
}

/// Files taken from the leader's fds for the mappings; released on drop.
struct Files(Vec<*mut c_void>);

impl Drop for Files {
    fn drop(&mut self) {
        for f in self.0.iter() {
            // SAFETY: each came from stasis_mm_fget or is null.
            unsafe { stasis_mm_fput(*f) };
        }
    }
}

/// The leader's job, in its own context (kmod/stasis_restart.c).
///
/// # Safety
/// `job` is the [`Job`] restart() handed over (alive until this returns); `fds` holds
/// `nr_fds` entries (or is null with 0); `past` is writable.
#[no_mangle]
pub unsafe extern "C" fn stasis_rs_restart_job(job: *mut c_void, fds: *const MapFd, nr_fds: u32, past: *mut u32) -> i64 {
    // SAFETY: as the contract above says.
    let (job, fds, past) = unsafe {
        let fds: &[MapFd] = if fds.is_null() || nr_fds == 0 {
            &[]
        } else {
            core::slice::from_raw_parts(fds, nr_fds as usize)
        };
        (&*(job as *const Job<'_>), fds, &mut *past)
    };
    run_job(job, fds, past)
}

#[inline(never)]
fn run_job(job: &Job<'_>, fds: &[MapFd], past: &mut u32) -> i64 {
    let plan = job.plan;
    // 1. The vDSO/vvar must already be where the image has them.
    let mut cur = [0u64; 4];
    // SAFETY: the shim writes 4 words.
    let r = unsafe { stasis_mm_specials(&mut cur) };
    if r < 0 {
        return r;
    }
    let [vvs, vve, vds, vde] = cur;
    if (vvs, vve) != plan.vvar || (vds, vde) != plan.vdso {
        return refuse("stasis: restart refused: the vDSO/vvar are not at the image's addresses\n", -EINVAL);
    }

    // 2. The files to map, from the fds `stasis restart` opened (before any change).
    let mut files = Files(match try_vec(plan.vmas.len()) {
        Ok(v) => v,
        Err(e) => return e,
    });
    for v in plan.vmas.iter() {
        let fd = fds.iter().find(|m| m.start == v.start).map(|m| m.fd);
        let needs = matches!(v.kind, vma_kind::FILE_PRIVATE | vma_kind::FILE_SHARED);
        let wants = needs || v.kind == vma_kind::ANON_SHARED;
        let f = match (wants, fd) {
            (true, Some(fd)) => {
                // SAFETY: plain call; the result is an ERR_PTR or a referenced file.
                let f = unsafe { stasis_mm_fget(fd) };
                // SAFETY: as above.
                if unsafe { stasis_is_err(f) } {
                    return refuse("stasis: restart refused: a map fd is not open\n", -EBADF);
                }
                f
            }
            (true, None) if needs => return refuse("stasis: restart refused: no fd for a file mapping\n", -EBADF),
            _ => core::ptr::null_mut(),
        };
        if push(&mut files.0, f).is_err() {
            // SAFETY: not stored: release it here.
            unsafe { stasis_mm_fput(f) };
            return -ENOMEM;
        }
    }

    // 3. The point of no return: everything but the vDSO/vvar goes.
    *past = 1;
    // SAFETY: plain query.
    let task_size = unsafe { stasis_mm_task_size() };
    let mut keep = [plan.vvar, plan.vdso];
    if keep[1].0 < keep[0].0 {
        keep.swap(0, 1);
    }
    let mut from = 0u64;
    for (s, e) in keep {
        if (s, e) == (0, 0) {
            continue;
        }
        // SAFETY: unmaps part of current's own address space.
        let r = unsafe { stasis_mm_unmap(from, s) };
        if r < 0 {
            return r;
        }
        from = e;
    }
    // SAFETY: as above.
    let r = unsafe { stasis_mm_unmap(from, task_size) };
    if r < 0 {
        return r;
    }

    // 4. Every VMA.
    for (v, f) in plan.vmas.iter().zip(files.0.iter()) {
        let (mut flags, off) = match v.kind {
            vma_kind::FILE_PRIVATE => (MAP_PRIVATE, v.offset),
            vma_kind::FILE_SHARED => (MAP_SHARED, v.offset),
            vma_kind::ANON_SHARED if !f.is_null() => (MAP_SHARED, v.offset),
            vma_kind::ANON_SHARED => (MAP_SHARED | MAP_ANONYMOUS, 0),
            _ => (MAP_PRIVATE | MAP_ANONYMOUS, 0),
        };
        if v.flags & vma_flags::GROWSDOWN != 0 {
            flags |= MAP_GROWSDOWN;
        }
        if v.flags & vma_flags::NORESERVE != 0 {
            flags |= MAP_NORESERVE;
        }
        if v.flags & vma_flags::LOCKED != 0 {
            flags |= MAP_LOCKED;
        }
        // SAFETY: maps into current's own address space (the range is free: step 3).
        let r = unsafe { stasis_mm_map(*f, v.start, v.end.wrapping_sub(v.start), v.prot, flags, off) };
        if r < 0 {
            log(LOG_WARN, "stasis: restart: mapping a VMA failed\n");
            return r;
        }
        let adv = v.flags & (vma_flags::DONTFORK | vma_flags::DONTDUMP | vma_flags::HUGEPAGE | vma_flags::NOHUGEPAGE);
        if adv != 0 {
            // SAFETY: as above.
            let r = unsafe { stasis_mm_vma_flags(v.start, v.end, adv) };
            if r == -ENOENT {
                log(LOG_WARN, "stasis: restart: a VMA merged with its neighbour: its madvise flags are not restored\n");
            } else if r < 0 {
                return r;
            }
        }
    }

    // 5. The pages.
    for run in plan.runs.iter() {
        let Some(len) = usize::try_from(run.len).ok() else { return -EINVAL };
        let Some(src) = job.bytes.get(run.data_off..run.data_off.saturating_add(len)) else { return -EINVAL };
        // SAFETY: src is valid for len bytes; the shim writes current's own memory.
        let r = unsafe { stasis_mm_fill(run.addr, src.as_ptr(), run.len, run.force) };
        if r < 0 {
            log(LOG_WARN, "stasis: restart: filling pages failed\n");
            return r;
        }
    }
    0
}

/// A thread's XSAVE area re-laid out for this CPU: the components it holds
/// (and x87/SSE), each moved from the image CPU's offset to ours.
fn xarea_here(x: &XstateView<'_>, from: &xsave::Layout, here: &xsave::Layout, ours: u64) -> Result<Vec<u8>, i64> {
    let features = (x.rec.xstate_bv | xsave::FPSSE) & ours;
    let need = here.size_for(features).map_err(|_| -EOPNOTSUPP)?;
    let mut v = zeroed(need)?;
    match xsave::relayout(x.area, from, here, features, &mut v) {
        Ok(n) if n == need => Ok(v),
        _ => Err(refuse("stasis: restart refused: an XSAVE area cannot be laid out for this CPU\n", -EOPNOTSUPP)),
    }
}

/// Checks the image against this machine: page size, threads, XSAVE features and size.
fn check_machine(pi: &ProcessImage<'_>) -> i64 {
    // SAFETY: plain query.
    let page = unsafe { stasis_page_size() };
    // What a thread's FP state can hold here: XCR0, or x87|SSE without XSAVE.
    let ours = x86::cpu::effective_xfeatures(x86::cpu::xcr0());
    if pi.header.page_size != page {
        log(LOG_WARN, "stasis: restart refused: page size differs from this machine's\n");
        return -EOPNOTSUPP;
    }
    if pi.threads.is_empty() || pi.threads.len() > MAX_THREADS as usize {
        log(LOG_WARN, "stasis: restart refused: no threads or too many threads\n");
        return -EOPNOTSUPP;
    }
    for t in pi.threads.iter() {
        let Some(xs) = t.xstate.as_ref() else { continue };
        if xs.rec.xstate_bv & !ours != 0 {
            log(LOG_WARN, "stasis: restart refused: a thread uses XSAVE features this CPU lacks\n");
            return -EOPNOTSUPP;
        }
        if (xs.area.len() as u64) != u64::from(xs.rec.size) || xs.area.len() > xsave::MAX_SIZE {
            log(LOG_WARN, "stasis: restart refused: an XSAVE area has a bad size\n");
            return -EOPNOTSUPP;
        }
        // The area's own XSAVE header must be a standard-format one of features we have.
        match (xsave::xstate_bv(xs.area), xsave::xcomp_bv(xs.area)) {
            (Some(bv), Some(0)) if bv & !ours == 0 => {}
            _ => {
                log(LOG_WARN, "stasis: restart refused: an XSAVE area is not a standard-format area of this CPU's features\n");
                return -EOPNOTSUPP;
            }
        }
    }
    0
}

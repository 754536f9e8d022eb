//! STASIS_IOC_RESTART, first part: load and validate a whole image in the kernel.
//!
//! The image is read by the shim into one kvmalloc'd buffer (bounded by
//! [`RESTART_MAX_IMAGE`], fallible, freed on every path), parsed with stasis-image's
//! `ProcessImage::parse` (every checksum, framing and record content check), then
//! checked against this machine. Nothing of the caller changes here. The address-space
//! replacement and the register/xstate restore are not implemented yet: a valid image
//! gives EOPNOTSUPP unless the caller only asked for validation.

use core::ffi::c_void;

use stasis_abi::zerocopy::FromBytes;
use stasis_abi::{RestartArgs, RESTART_FLAGS, RESTART_MAX_IMAGE, RESTART_VALIDATE_ONLY};
use stasis_image::{Extension, ParseOptions, ProcessImage};

use crate::{log, LOG_WARN, MAX_THREADS};

const EINVAL: i64 = 22;
const EOPNOTSUPP: i64 = 95;

extern "C" {
    fn stasis_image_load(fd: i32, max: u64, out: *mut *mut u8, len: *mut u64) -> i64;
    fn stasis_image_free(p: *mut u8);
    fn stasis_cpu_xsave(xcr0: *mut u64, size: *mut u32);
    fn stasis_page_size() -> u32;
    fn stasis_on_big_stack(f: unsafe extern "C" fn(*mut c_void) -> i64, arg: *mut c_void) -> i64;
}

/// What the validation (run on the big stack) reads and reports.
struct Validate<'a> {
    bytes: &'a [u8],
    pages: u64,
    threads: u32,
    vmas: u32,
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
    0
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

/// Extensions whose records the restart path accepts (checked, not yet applied).
const SUPPORTED: &[Extension] = &[Extension::Core, Extension::Files];

#[inline(never)]
pub(crate) fn restart(buf: &mut [u8]) -> i64 {
    let Ok(a) = RestartArgs::mut_from_bytes(buf) else { return -EINVAL };
    if a.flags & !RESTART_FLAGS != 0
        || a.fd < 0
        || a.bytes != 0
        || a.pages != 0
        || a.nr_threads != 0
        || a.nr_vmas != 0
    {
        return -EINVAL;
    }
    let mut ptr: *mut u8 = core::ptr::null_mut();
    let mut len: u64 = 0;
    // SAFETY: the shim writes the two out-parameters.
    let r = unsafe { stasis_image_load(a.fd, RESTART_MAX_IMAGE, &mut ptr, &mut len) };
    if r < 0 {
        return r;
    }
    let Ok(len) = usize::try_from(len) else {
        // SAFETY: ptr came from stasis_image_load.
        unsafe { stasis_image_free(ptr) };
        return -EINVAL;
    };
    let img = Loaded { ptr, len };
    let mut v = Validate { bytes: img.bytes(), pages: 0, threads: 0, vmas: 0 };
    // SAFETY: validate_cb gets &mut v, used only during the call.
    let r = unsafe { stasis_on_big_stack(validate_cb, &mut v as *mut Validate<'_> as *mut c_void) };
    if r < 0 {
        return r;
    }
    a.bytes = img.len as u64;
    a.pages = v.pages;
    a.nr_threads = v.threads;
    a.nr_vmas = v.vmas;
    if a.flags & RESTART_VALIDATE_ONLY != 0 {
        return 0;
    }
    log(LOG_WARN, "stasis: restart refused: image valid, but in-kernel restart is not implemented yet\n");
    -EOPNOTSUPP
}

/// Checks the image against this machine: page size, threads, XSAVE features and size.
fn check_machine(pi: &ProcessImage<'_>) -> i64 {
    // SAFETY: plain queries.
    let page = unsafe { stasis_page_size() };
    let (mut xcr0, mut xsize) = (0u64, 0u32);
    // SAFETY: the shim writes both.
    unsafe { stasis_cpu_xsave(&mut xcr0, &mut xsize) };
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
        if xs.rec.xstate_bv & !xcr0 != 0 {
            log(LOG_WARN, "stasis: restart refused: a thread uses XSAVE features this CPU lacks\n");
            return -EOPNOTSUPP;
        }
        if xs.rec.size > xsize.max(576) || (xs.area.len() as u64) != u64::from(xs.rec.size) {
            log(LOG_WARN, "stasis: restart refused: an XSAVE area is larger than this CPU's\n");
            return -EOPNOTSUPP;
        }
        // The area's own XSAVE header (standard format): XSTATE_BV at 512, XCOMP_BV at 520.
        let word = |at: usize| {
            xs.area
                .get(at..at.saturating_add(8))
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes)
        };
        match (word(512), word(520)) {
            (Some(bv), Some(0)) if bv & !xcr0 == 0 => {}
            _ => {
                log(LOG_WARN, "stasis: restart refused: an XSAVE area is not a standard-format area of this CPU's features\n");
                return -EOPNOTSUPP;
            }
        }
    }
    0
}

//! The Rust half of stasis.ko.
//!
//! Built as a `#![no_std]` staticlib for `x86_64-unknown-none` and linked beside the
//! C shim (kmod/stasis_main.c). It never touches a kernel struct: the shim owns every
//! kernel data structure, macro and lock, and Rust sees opaque handles plus the
//! `#[repr(C)]` data of stasis-abi, whose sizes the shim passes to [`stasis_rs_init`].
//!
//! Rules: nothing reachable from userspace may panic (no indexing, no unchecked
//! arithmetic on input, fallible allocation only). `make` checks the prelinked object
//! for surviving `core::panicking` symbols.
#![no_std]

extern crate alloc;

mod checkpoint;
mod kstate;
mod restart;

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use core::mem::size_of;

use stasis_abi::{
    CheckpointArgs, FreezeArgs, FrozenThread, UserRegs, VersionInfo, ABI_VERSION, CHECKPOINT_FLAGS,
    CHECKPOINT_KEEP_FROZEN, CHECKPOINT_KILL, EXT_CORE, FROZEN_IN_SYSCALL_RESTART, IOC_CHECKPOINT,
    IOC_FREEZE, IOC_RESTART, IOC_THAW, IOC_VERSION,
};
use stasis_abi::zerocopy::{FromBytes, IntoBytes};

// errno values (include/uapi/asm-generic/errno-base.h, errno.h)
const EFAULT: i64 = 14;
const EINVAL: i64 = 22;
const ENOMEM: i64 = 12;
const ENOTTY: i64 = 25;
const E2BIG: i64 = 7;

/// Most threads one FREEZE handles (the shim enforces the same limit).
pub const MAX_THREADS: u32 = 4096;
/// Default and maximum FREEZE timeouts, ms.
const DEFAULT_TIMEOUT_MS: u32 = 10_000;
const MAX_TIMEOUT_MS: u32 = 600_000;

// printk levels the shim understands.
const LOG_ERR: u32 = 3;
pub(crate) const LOG_WARN: u32 = 4;
const LOG_INFO: u32 = 6;

extern "C" {
    fn stasis_kmalloc(size: usize) -> *mut u8;
    fn stasis_kfree(p: *mut u8);
    fn stasis_log(level: u32, msg: *const u8, len: usize);
    fn stasis_bug();
    fn stasis_ext_mask() -> u64;
    fn stasis_freeze(sess: *mut c_void, pid: i32, timeout_ms: u32, max_threads: u32) -> i64;
    fn stasis_frozen_each(
        sess: *mut c_void,
        f: unsafe extern "C" fn(ctx: *mut c_void, tid: i32, regs: *const u8, len: usize) -> i64,
        ctx: *mut c_void,
    ) -> i64;
    fn stasis_thaw(sess: *mut c_void) -> i64;
    fn stasis_copy_to_user(uaddr: u64, src: *const u8, len: usize) -> i64;
    fn stasis_run_job(sess: *mut c_void, fd: i32, stats: *mut [u64; 4]) -> i64;
    fn stasis_kill_frozen(sess: *mut c_void) -> i64;
    fn stasis_now_ns() -> u64;
}

pub(crate) fn log(level: u32, msg: &str) {
    // SAFETY: the shim prints exactly len bytes from msg.
    unsafe { stasis_log(level, msg.as_ptr(), msg.len()) }
}

/// kmalloc/kfree through the shim (GFP_KERNEL: may sleep; never call from atomic context).
struct KernelAlloc;

unsafe impl GlobalAlloc for KernelAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // kmalloc aligns to 8 always, and a power-of-two size to itself (up to a page).
        let size = if l.align() <= 8 {
            l.size()
        } else if l.align() <= 4096 {
            match l.size().max(l.align()).checked_next_power_of_two() {
                Some(s) => s,
                None => return core::ptr::null_mut(),
            }
        } else {
            return core::ptr::null_mut();
        };
        stasis_kmalloc(size)
    }
    unsafe fn dealloc(&self, p: *mut u8, _l: Layout) {
        stasis_kfree(p)
    }
}

#[global_allocator]
static ALLOC: KernelAlloc = KernelAlloc;

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    log(LOG_ERR, "stasis: Rust panic\n");
    // SAFETY: stasis_bug() BUG()s and never returns; ud2 in case it ever does (and
    // so objtool sees the dead end).
    unsafe {
        stasis_bug();
        core::arch::asm!("ud2", options(noreturn));
    }
}

/// Called once from module init with the sizes the shim was compiled with.
#[no_mangle]
pub extern "C" fn stasis_rs_init(
    user_regs_size: usize,
    kthread: usize,
    kproc: usize,
    kvma: usize,
    rstate: usize,
    mapfd: usize,
) -> i64 {
    if user_regs_size != size_of::<UserRegs>()
        || kthread != size_of::<kstate::KThread>()
        || kproc != size_of::<kstate::KProc>()
        || kvma != size_of::<kstate::KVma>()
        || rstate != size_of::<restart::RState>()
        || mapfd != size_of::<stasis_abi::MapFd>()
    {
        log(LOG_ERR, "stasis: C/Rust struct size mismatch\n");
        return -EINVAL;
    }
    log(LOG_INFO, "stasis: Rust core ready\n");
    0
}

/// The ioctl dispatcher. `buf` holds `len == _IOC_SIZE(cmd)` bytes copied from user
/// (zeroed when the command does not write); the shim copies it back for commands
/// that read. Returns 0 or a positive value on success, -errno on failure.
///
/// # Safety
/// `buf` must be valid for `len` bytes, 8-aligned; `sess` is the shim's session.
#[no_mangle]
pub unsafe extern "C" fn stasis_rs_ioctl(sess: *mut c_void, cmd: u32, buf: *mut u8, len: usize) -> i64 {
    let buf: &mut [u8] = if len == 0 || buf.is_null() {
        &mut []
    } else {
        // SAFETY: the shim passes a buffer of len bytes.
        unsafe { core::slice::from_raw_parts_mut(buf, len) }
    };
    match cmd {
        IOC_VERSION => version(buf),
        IOC_FREEZE => freeze(sess, buf),
        IOC_CHECKPOINT => checkpoint(sess, buf),
        IOC_RESTART => restart::restart(sess, buf),
        // SAFETY: sess comes from the shim.
        IOC_THAW => unsafe { stasis_thaw(sess) },
        _ => -ENOTTY,
    }
}

fn version(buf: &mut [u8]) -> i64 {
    let Ok(v) = VersionInfo::mut_from_bytes(buf) else { return -EINVAL };
    *v = VersionInfo {
        abi_version: ABI_VERSION,
        struct_size: size_of::<VersionInfo>() as u32,
        // SAFETY: plain query of the shim's extension table.
        extensions: unsafe { stasis_ext_mask() } | (1u64 << EXT_CORE),
        max_threads: MAX_THREADS,
        _reserved: 0,
    };
    0
}

/// Collects the parked threads' reports (bounded by the capacity reserved up front).
struct Report {
    out: Vec<FrozenThread>,
}

unsafe extern "C" fn report_one(ctx: *mut c_void, tid: i32, regs: *const u8, len: usize) -> i64 {
    // SAFETY: ctx is the &mut Report freeze() passed; regs is valid for len bytes.
    let rep = unsafe { &mut *(ctx as *mut Report) };
    let bytes = unsafe { core::slice::from_raw_parts(regs, len) };
    let Ok(r) = UserRegs::read_from_bytes(bytes) else { return -EINVAL };
    let n = rep.out.len();
    let Some(slot) = rep.out.spare_capacity_mut().first_mut() else {
        return 1; // capacity reached: stop, the rest stay parked but unreported
    };
    slot.write(FrozenThread {
        tid,
        flags: if stasis_abi::is_restart_rax(r.rax) { FROZEN_IN_SYSCALL_RESTART } else { 0 },
        rip: r.rip,
        rsp: r.rsp,
        rax: r.rax,
        orig_rax: r.orig_rax,
    });
    // SAFETY: slot n was just initialised and n < capacity.
    unsafe { rep.out.set_len(n + 1) };
    0
}

fn freeze(sess: *mut c_void, buf: &mut [u8]) -> i64 {
    let Ok(args) = FreezeArgs::mut_from_bytes(buf) else { return -EINVAL };
    if args.flags != 0 || args.pid <= 0 || args._reserved != 0 {
        return -EINVAL;
    }
    if args.max_threads > MAX_THREADS {
        return -E2BIG;
    }
    if args.max_threads > 0 && args.threads == 0 {
        return -EFAULT;
    }
    let timeout = match args.timeout_ms {
        0 => DEFAULT_TIMEOUT_MS,
        t => t.min(MAX_TIMEOUT_MS),
    };
    // Reserve the report before freezing: nothing may fail between freeze and reply
    // except the copy to user.
    let mut rep = Report { out: Vec::new() };
    if rep.out.try_reserve_exact(args.max_threads as usize).is_err() {
        return -ENOMEM;
    }
    // SAFETY: sess comes from the shim.
    let n = unsafe { stasis_freeze(sess, args.pid, timeout, MAX_THREADS) };
    if n < 0 {
        return n;
    }
    args.nr_threads = u32::try_from(n).unwrap_or(u32::MAX);
    if args.max_threads == 0 {
        return 0;
    }
    // SAFETY: report_one gets our Report as ctx, used only during this call.
    let r = unsafe { stasis_frozen_each(sess, report_one, &mut rep as *mut Report as *mut c_void) };
    let bytes = rep.out.as_slice().as_bytes();
    let r = if r < 0 {
        r
    } else {
        // SAFETY: the shim copies with copy_to_user, which checks the user range.
        unsafe { stasis_copy_to_user(args.threads, bytes.as_ptr(), bytes.len()) }
    };
    if r < 0 {
        // Could not report: do not leave the target parked behind the caller's back.
        // SAFETY: sess comes from the shim.
        unsafe { stasis_thaw(sess) };
        return r;
    }
    0
}

fn checkpoint(sess: *mut c_void, buf: &mut [u8]) -> i64 {
    let Ok(a) = CheckpointArgs::mut_from_bytes(buf) else { return -EINVAL };
    if a.flags & !CHECKPOINT_FLAGS != 0
        || a.flags == CHECKPOINT_FLAGS
        || a.pid <= 0
        || a.fd < 0
        || a.bytes != 0
        || a.pages != 0
        || a.nr_threads != 0
        || a.nr_vmas != 0
        || a.freeze_ns != 0
        || a.write_ns != 0
    {
        return -EINVAL;
    }
    let timeout = match a.timeout_ms {
        0 => DEFAULT_TIMEOUT_MS,
        t => t.min(MAX_TIMEOUT_MS),
    };
    // SAFETY: plain calls into the shim with its session.
    unsafe {
        let t0 = stasis_now_ns();
        let n = stasis_freeze(sess, a.pid, timeout, MAX_THREADS);
        if n < 0 {
            return n;
        }
        let t1 = stasis_now_ns();
        let mut st = [0u64; 4];
        let r = stasis_run_job(sess, a.fd, &mut st);
        let t2 = stasis_now_ns();
        if r < 0 {
            stasis_thaw(sess);
            return r;
        }
        let [bytes, pages, threads, vmas] = st;
        a.bytes = bytes;
        a.pages = pages;
        a.nr_threads = u32::try_from(threads).unwrap_or(u32::MAX);
        a.nr_vmas = u32::try_from(vmas).unwrap_or(u32::MAX);
        a.freeze_ns = t1.saturating_sub(t0);
        a.write_ns = t2.saturating_sub(t1);
        if a.flags & CHECKPOINT_KILL != 0 {
            stasis_kill_frozen(sess);
            stasis_thaw(sess);
        } else if a.flags & CHECKPOINT_KEEP_FROZEN == 0 {
            stasis_thaw(sess);
        }
    }
    0
}

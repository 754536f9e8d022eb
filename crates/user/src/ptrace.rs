//! ptrace helpers: typed regset access, stops, and system call injection.
//!
//! All requests must come from the thread that seized the tracee (ptrace
//! tracing is per tracer *thread*). The helpers are general: the checkpoint
//! side uses them to read state, the restart side may use [`Injector`] to run
//! system calls in a prepared process.
//!
//! # Stops
//! A seized tracee stopped with PTRACE_INTERRUPT sits in an *interrupt stop*
//! inside the kernel's signal path (`get_signal()`), before the syscall
//! restart fixup: if it was in a system call, `rax` holds -ERESTART* and
//! `orig_rax` the syscall number. Resuming it from there runs the fixup on
//! whatever registers it then has.
//!
//! # Injection
//! [`Injector::session`] starts from such an interrupt stop (or any stop of a
//! seized tracee that goes back through the signal path: group stop, event
//! stop), runs system calls by pointing `rip` at a `syscall` instruction and
//! stepping with PTRACE_SYSCALL to the exit stop, and on
//! [`Session::finish`] puts the original registers back and brings the thread
//! into a fresh interrupt stop, so the kernel's own restart handling applies
//! to the original registers when the thread is finally released.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::io;

use stasis_image::records::UserRegs;
use stasis_image::x86::xsave;
use zerocopy::IntoBytes;

use crate::sys::{self, event, opt, req, WaitStatus};

/// Options used by [`seize`] for checkpointing: report clones (so new
/// threads get traced too), mark syscall stops, refuse on exec.
pub const SEIZE_OPTIONS: u64 = opt::TRACESYSGOOD | opt::TRACECLONE | opt::TRACEEXEC;

fn ctx(op: &str, tid: i32, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{op}({tid}): {e}"))
}

/// PTRACE_SEIZE with `options` (no SIGSTOP is injected).
pub fn seize(tid: i32, options: u64) -> io::Result<()> {
    // SAFETY: SEIZE takes the options as an integer in `data`.
    unsafe { sys::ptrace(req::SEIZE, tid, 0, options as usize) }.map(drop)
}

/// PTRACE_INTERRUPT: bring a seized tracee into an interrupt stop.
pub fn interrupt(tid: i32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    unsafe { sys::ptrace(req::INTERRUPT, tid, 0, 0) }.map(drop)
}

/// PTRACE_DETACH from a stopped tracee, delivering `sig` (0 for none).
pub fn detach(tid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    unsafe { sys::ptrace(req::DETACH, tid, 0, sig as usize) }.map(drop)
}

/// PTRACE_CONT with `sig` (0 for none).
pub fn cont(tid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    unsafe { sys::ptrace(req::CONT, tid, 0, sig as usize) }.map(drop)
}

/// PTRACE_SYSCALL: resume until the next syscall entry or exit stop.
pub fn syscall(tid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    unsafe { sys::ptrace(req::SYSCALL, tid, 0, sig as usize) }.map(drop)
}

/// PTRACE_GETEVENTMSG (e.g. the new TID at a clone event).
pub fn event_msg(tid: i32) -> io::Result<u64> {
    let mut v: libc::c_ulong = 0;
    // SAFETY: the kernel stores an unsigned long at `data`.
    unsafe {
        sys::ptrace(
            req::GETEVENTMSG,
            tid,
            0,
            &mut v as *mut libc::c_ulong as usize,
        )
    }?;
    Ok(v)
}

fn getregset(tid: i32, nt: u32, buf: &mut [u8]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: the iovec describes `buf`, which we own mutably; the kernel
    // writes at most iov_len bytes and stores the real length back in it.
    unsafe {
        sys::ptrace(
            req::GETREGSET,
            tid,
            nt as usize,
            &mut iov as *mut libc::iovec as usize,
        )
    }?;
    Ok(iov.iov_len)
}

fn setregset(tid: i32, nt: u32, buf: &[u8]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the iovec describes `buf`; SETREGSET only reads from it.
    unsafe {
        sys::ptrace(
            req::SETREGSET,
            tid,
            nt as usize,
            &mut iov as *mut libc::iovec as usize,
        )
    }?;
    Ok(())
}

/// General registers (NT_PRSTATUS = `struct user_regs_struct`, fs_base and
/// gs_base included).
pub fn get_regs(tid: i32) -> io::Result<UserRegs> {
    let mut r = UserRegs::default();
    let n = getregset(tid, sys::NT_PRSTATUS, r.as_mut_bytes())
        .map_err(|e| ctx("GETREGSET(PRSTATUS)", tid, e))?;
    if n != std::mem::size_of::<UserRegs>() {
        return Err(io::Error::other(format!(
            "GETREGSET(PRSTATUS) of {tid} returned {n} bytes"
        )));
    }
    Ok(r)
}

/// Set the general registers.
pub fn set_regs(tid: i32, r: &UserRegs) -> io::Result<()> {
    setregset(tid, sys::NT_PRSTATUS, r.as_bytes()).map_err(|e| ctx("SETREGSET(PRSTATUS)", tid, e))
}

/// Largest XSAVE area we accept (AMX tiles make it ~11 KiB today).
pub const XSTATE_MAX: usize = xsave::MAX_SIZE;

/// The thread's XSAVE area in the standard format of this CPU (NT_X86_XSTATE:
/// XCR0 in the first 8 bytes of sw_reserved at offset 464, XSTATE_BV at 512).
/// On a CPU without XSAVE the kernel has no NT_X86_XSTATE regset (ENODEV):
/// the FXSAVE image (NT_PRFPREG) is read instead and returned as a 576-byte
/// area holding x87|SSE, so images and signal frames have one shape.
pub fn get_xstate(tid: i32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; XSTATE_MAX];
    match getregset(tid, sys::NT_X86_XSTATE, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Ok(buf)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
            let mut fx = [0u8; xsave::LEGACY_SIZE];
            let n = getregset(tid, sys::NT_PRFPREG, &mut fx)
                .map_err(|e| ctx("GETREGSET(PRFPREG)", tid, e))?;
            xsave::from_fxsave(&fx[..n.min(fx.len())]).map(|a| a.to_vec()).ok_or_else(|| {
                io::Error::other(format!("GETREGSET(PRFPREG) of {tid} returned {n} bytes"))
            })
        }
        Err(e) => Err(ctx("GETREGSET(X86_XSTATE)", tid, e)),
    }
}

/// XCR0 recorded by the kernel in an NT_X86_XSTATE area (sw_reserved[0..8]).
pub fn xstate_xcr0(area: &[u8]) -> Option<u64> {
    xsave::ptrace_xcr0(area)
}

/// XSTATE_BV of an XSAVE area (first word of the XSAVE header).
pub fn xstate_bv(area: &[u8]) -> Option<u64> {
    xsave::xstate_bv(area)
}

/// Blocked signal mask (bit n-1 = signal n).
pub fn get_sigmask(tid: i32) -> io::Result<u64> {
    let mut m: u64 = 0;
    // SAFETY: addr = sizeof(sigset) = 8, data points to a local u64.
    unsafe { sys::ptrace(req::GETSIGMASK, tid, 8, &mut m as *mut u64 as usize) }
        .map_err(|e| ctx("GETSIGMASK", tid, e))?;
    Ok(m)
}

/// Set the blocked signal mask. Note: the kernel also drops a pending
/// "restore the saved sigmask" (set by sigsuspend/ppoll/pselect/epoll_pwait
/// while they run), so avoid this on threads inside those calls.
pub fn set_sigmask(tid: i32, mask: u64) -> io::Result<()> {
    // SAFETY: addr = 8, data points to a local u64 that is only read.
    unsafe { sys::ptrace(req::SETSIGMASK, tid, 8, &mask as *const u64 as usize) }
        .map_err(|e| ctx("SETSIGMASK", tid, e))?;
    Ok(())
}

/// siginfo of the current signal-delivery stop.
pub fn get_siginfo(tid: i32) -> io::Result<[u8; 128]> {
    let mut si = [0u8; 128];
    // SAFETY: the kernel writes a 128-byte siginfo at `data`.
    unsafe { sys::ptrace(req::GETSIGINFO, tid, 0, si.as_mut_ptr() as usize) }
        .map_err(|e| ctx("GETSIGINFO", tid, e))?;
    Ok(si)
}

#[repr(C)]
struct PeekArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// Queued signals, without dequeuing them: the thread's private queue, or
/// with `shared` the process-wide one. Each entry is a raw 128-byte siginfo.
pub fn peek_siginfo(tid: i32, shared: bool) -> io::Result<Vec<[u8; 128]>> {
    let mut out: Vec<[u8; 128]> = Vec::new();
    let mut buf = vec![[0u8; 128]; 32];
    loop {
        let args = PeekArgs {
            off: out.len() as u64,
            flags: if shared { sys::PEEKSIGINFO_SHARED } else { 0 },
            nr: buf.len() as i32,
        };
        // SAFETY: addr points to the args struct, data to room for `nr`
        // siginfos of 128 bytes each.
        let n = unsafe {
            sys::ptrace(
                req::PEEKSIGINFO,
                tid,
                &args as *const PeekArgs as usize,
                buf.as_mut_ptr() as usize,
            )
        }
        .map_err(|e| ctx("PEEKSIGINFO", tid, e))?;
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..(n as usize).min(buf.len())]);
        if out.len() > 1 << 20 {
            return Err(io::Error::other(format!(
                "PEEKSIGINFO({tid}): queue does not end"
            )));
        }
    }
    Ok(out)
}

/// rseq registration of a thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RseqConfig {
    pub addr: u64,
    pub len: u32,
    pub sig: u32,
    pub flags: u32,
}

/// PTRACE_GET_RSEQ_CONFIGURATION. `Ok(None)` when the kernel lacks it.
pub fn get_rseq(tid: i32) -> io::Result<Option<RseqConfig>> {
    let mut raw = [0u8; 24];
    // SAFETY: addr = size of our buffer, data = the buffer; the kernel copies
    // at most that many bytes.
    let r = unsafe {
        sys::ptrace(
            req::GET_RSEQ_CONFIGURATION,
            tid,
            raw.len(),
            raw.as_mut_ptr() as usize,
        )
    };
    match r {
        Ok(_) => {
            let w = |i: usize| u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
            Ok(Some(RseqConfig {
                addr: u64::from_le_bytes([
                    raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
                ]),
                len: w(8),
                sig: w(12),
                flags: w(16),
            }))
        }
        Err(e) if e.raw_os_error() == Some(libc::EIO) || e.raw_os_error() == Some(libc::EINVAL) => {
            Ok(None)
        }
        Err(e) => Err(ctx("GET_RSEQ_CONFIGURATION", tid, e)),
    }
}

/// Wait for the next state change of `tid` (waitpid __WALL).
pub fn wait(tid: i32) -> io::Result<WaitStatus> {
    match sys::waitpid(tid, 0)? {
        Some((_, st)) => Ok(st),
        None => Err(io::Error::other(format!("waitpid({tid}) returned nothing"))),
    }
}

/// True for a stop that is an interrupt/group stop (PTRACE_EVENT_STOP).
pub fn is_event_stop(st: WaitStatus) -> bool {
    matches!(
        st,
        WaitStatus::Stopped {
            event: event::STOP,
            ..
        }
    )
}

/// If a thread's registers were taken inside a system call, return them as
/// the thread would have them after the kernel's restart fixup, and whether
/// a fixup was applied:
/// - rax = -ERESTARTSYS / -ERESTARTNOINTR / -ERESTARTNOHAND: rax = orig_rax,
///   rip -= 2 (the call runs again; -ERESTARTNOHAND only restarts when no
///   handler runs, which is the case at a plain restart);
/// - rax = -ERESTART_RESTARTBLOCK: the restart block does not survive a
///   restart, so the honest outcome is EINTR: rax = -EINTR;
///
/// In all cases where orig_rax >= 0, orig_rax = -1 so nothing restarts twice.
pub fn syscall_restart_fixup(r: &UserRegs) -> (UserRegs, bool) {
    let mut f = *r;
    let mut fixed = false;
    if (r.orig_rax as i64) >= 0 {
        match -(r.rax as i64) {
            sys::ERESTARTSYS | sys::ERESTARTNOINTR | sys::ERESTARTNOHAND => {
                f.rax = r.orig_rax;
                f.rip = r.rip.wrapping_sub(2);
                fixed = true;
            }
            sys::ERESTART_RESTARTBLOCK => {
                f.rax = (-(libc::EINTR as i64)) as u64;
                fixed = true;
            }
            _ => {}
        }
        f.orig_rax = u64::MAX;
    }
    (f, fixed)
}

/// Syscalls that temporarily replace the signal mask and restore it on
/// return (TIF_RESTORE_SIGMASK): PTRACE_SETSIGMASK would lose the saved mask.
pub fn swaps_sigmask(orig_rax: u64) -> bool {
    matches!(
        orig_rax as i64,
        sys::nr::RT_SIGSUSPEND
            | sys::nr::PSELECT6
            | sys::nr::PPOLL
            | sys::nr::EPOLL_PWAIT
            | sys::nr::EPOLL_PWAIT2
            | sys::nr::IO_PGETEVENTS
    )
}

/// Find the address of a `syscall` instruction (0f 05) in the target's vDSO
/// text, given the vDSO range.
pub fn find_syscall_insn(pid: i32, vdso_start: u64, vdso_end: u64) -> io::Result<u64> {
    let len = (vdso_end.saturating_sub(vdso_start)) as usize;
    if len == 0 || len > 1 << 20 {
        return Err(io::Error::other(format!(
            "vDSO of {pid} has a bad size {len}"
        )));
    }
    let mut buf = vec![0u8; len];
    let n = sys::vm_read(pid, &mut buf, &[(vdso_start, len)])
        .map_err(|e| io::Error::new(e.kind(), format!("reading the vDSO of {pid}: {e}")))?;
    buf.truncate(n);
    buf.windows(2)
        .position(|w| w == [0x0f, 0x05])
        .map(|i| vdso_start + i as u64)
        .ok_or_else(|| io::Error::other(format!("no syscall instruction in the vDSO of {pid}")))
}

/// The injection gadget written into unused vDSO padding:
/// `syscall; mov $15, %rax; syscall` — the injected call, then
/// rt_sigreturn. A thread parked on it with `rsp` just above a prepared
/// signal frame returns to its original context by itself if the tracer
/// dies at any point of an injection (ptrace then detaches it and it runs
/// on through the gadget).
pub const GADGET: [u8; 16] = [
    0x0f, 0x05, // syscall
    0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, // mov $15 (rt_sigreturn), %rax
    0x0f, 0x05, // syscall
    0xcc, 0xcc, 0xcc, 0xcc, 0xcc, // int3 (never reached)
];

/// Bytes of scratch space kept under the signal frame for the results of
/// injected calls (saved once per session).
pub const SCRATCH_SIZE: usize = 512;

/// `__NR_restart_syscall`.
const NR_RESTART_SYSCALL: u64 = 219;
/// `__NR_getpid`: harmless call a parked thread runs if the tracer dies
/// before the first injected call.
const NR_GETPID: i64 = 39;

/// Registers a *live* thread gets when it leaves a stop without handling a
/// signal: the kernel's restart fixup, restart_block included (it survives
/// in a live thread), orig_rax = -1.
pub fn live_restart_regs(r: &UserRegs) -> UserRegs {
    let mut f = *r;
    if (r.orig_rax as i64) >= 0 {
        match -(r.rax as i64) {
            sys::ERESTARTSYS | sys::ERESTARTNOINTR | sys::ERESTARTNOHAND => {
                f.rax = r.orig_rax;
                f.rip = r.rip.wrapping_sub(2);
            }
            sys::ERESTART_RESTARTBLOCK => {
                f.rax = NR_RESTART_SYSCALL;
                f.rip = r.rip.wrapping_sub(2);
            }
            _ => {}
        }
        f.orig_rax = u64::MAX;
    }
    f
}

/// Size of `struct rt_sigframe` on x86_64 (pretcode, ucontext, siginfo).
pub const RT_SIGFRAME_SIZE: usize = 440;

/// Build an x86_64 `struct rt_sigframe` (440 bytes) that rt_sigreturn turns
/// into `regs` (cs/ss from `regs`, fs/gs bases untouched by the kernel),
/// blocked mask `sigmask`, and the XSAVE area at `fpstate_addr` (0: none).
/// The sigaltstack is left alone (uc_stack carries an invalid mode, which
/// rt_sigreturn ignores). rt_sigreturn finds the frame at `rsp - 8`.
pub fn build_sigframe(regs: &UserRegs, sigmask: u64, fpstate_addr: u64) -> Vec<u8> {
    let mut b = vec![0u8; RT_SIGFRAME_SIZE];
    let mut put = |off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    const UC: usize = 8;
    const MC: usize = UC + 40;
    // UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS
    put(UC, if fpstate_addr != 0 { 7 } else { 6 });
    put(UC + 16, 0); // uc_stack.ss_sp
    put(UC + 24, 4); // uc_stack.ss_flags: invalid mode, so restore_altstack changes nothing
    put(UC + 32, 0); // uc_stack.ss_size
    let r = regs;
    for (i, v) in [
        r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi, r.rsi, r.rbp, r.rbx, r.rdx,
        r.rax, r.rcx, r.rsp, r.rip, r.eflags,
    ]
    .into_iter()
    .enumerate()
    {
        put(MC + 8 * i, v);
    }
    // cs, gs, fs, ss (u16 each) at 144.
    let segs = (r.cs & 0xffff) | ((r.ss & 0xffff) << 48);
    put(MC + 144, segs);
    put(MC + 168, sigmask); // oldmask
    put(MC + 184, fpstate_addr);
    put(UC + 296, sigmask); // uc_sigmask
    b
}

/// An NT_X86_XSTATE area of this CPU turned into a signal-frame fpstate
/// (place it 64-byte aligned). It claims only the components in use
/// (XSTATE_BV | x87 | SSE): a frame claiming the CPU's whole area (AMX tiles
/// included, 11008 bytes) is larger than the kernel's user size for a
/// process that never asked for AMX, and the kernel then restores only the
/// FXSAVE part, losing AVX and AVX-512 state.
pub fn xstate_to_fpstate(area: &[u8], layout: &xsave::Layout) -> Result<Vec<u8>, xsave::XsaveError> {
    let xcr0 = xstate_xcr0(area).unwrap_or(xsave::FPSSE);
    let features = (xstate_bv(area).unwrap_or(0) | xsave::FPSSE) & xcr0;
    let size = layout.size_for(features)?;
    let mut b = vec![0u8; size + 4];
    let have = area.len().min(size);
    b[..have].copy_from_slice(&area[..have]);
    xsave::sigframe_fpstate(&mut b, size, features)?;
    Ok(b)
}

/// Errors of an injected system call.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("ptrace on thread {tid} during injection ({step}): {source}")]
    Ptrace {
        tid: i32,
        step: &'static str,
        source: io::Error,
    },
    #[error("thread {tid} exited during an injected system call ({status:?})")]
    Exited { tid: i32, status: WaitStatus },
    #[error("thread {tid}: unexpected stop {status:?} during an injected system call")]
    Unexpected { tid: i32, status: WaitStatus },
    #[error("thread {tid}: stack memory at {addr:#x} not accessible: {source}")]
    Scratch {
        tid: i32,
        addr: u64,
        source: io::Error,
    },
}

fn pt(tid: i32, step: &'static str) -> impl FnOnce(io::Error) -> InjectError {
    move |source| InjectError::Ptrace { tid, step, source }
}

/// Runs system calls inside a stopped tracee.
#[derive(Clone, Copy, Debug)]
pub struct Injector {
    /// Target process (for process_vm_readv/writev).
    pub pid: i32,
    /// Address of a `syscall` instruction in the target (see [`find_syscall_insn`]).
    pub syscall_insn: u64,
    /// Address of [`GADGET`] in the target, when installed: makes every
    /// session safe against the death of the tracer.
    pub gadget: Option<u64>,
    /// This CPU's XSAVE layout, for the signal frames of gadget sessions.
    pub layout: xsave::Layout,
}

/// End of the ELF file image inside a vDSO mapping (`buf` = its bytes):
/// everything after it is padding that is never executed.
fn elf_image_end(buf: &[u8]) -> Option<usize> {
    if buf.get(..4)? != b"\x7fELF" {
        return None;
    }
    let u16at = |o: usize| {
        buf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64at = |o: usize| {
        buf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let phoff = u64at(0x20)? as usize;
    let shoff = u64at(0x28)? as usize;
    let (phentsize, phnum) = (u16at(0x36)?, u16at(0x38)?);
    let (shentsize, shnum) = (u16at(0x3a)?, u16at(0x3c)?);
    let mut end = shoff
        .checked_add(shentsize.checked_mul(shnum)?)?
        .max(phoff + phentsize * phnum);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let off = u64at(ph + 8)? as usize;
        let filesz = u64at(ph + 32)? as usize;
        end = end.max(off.checked_add(filesz)?);
    }
    for i in 0..shnum {
        let sh = shoff + i * shentsize;
        let typ = buf
            .get(sh + 4..sh + 8)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))?;
        if typ == 8 {
            continue; // SHT_NOBITS
        }
        let off = u64at(sh + 24)? as usize;
        let size = u64at(sh + 32)? as usize;
        end = end.max(off.checked_add(size)?);
    }
    Some(end)
}

/// Where [`GADGET`] goes in the vDSO of `pid` (the first 16-aligned spot
/// after the ELF image, if that padding is free), and whether a complete
/// gadget is already there (left by a checkpointer that died).
pub fn gadget_slot(pid: i32, vdso_start: u64, vdso_end: u64) -> io::Result<Option<(u64, bool)>> {
    let len = (vdso_end.saturating_sub(vdso_start)) as usize;
    if len == 0 || len > 1 << 20 {
        return Ok(None);
    }
    let mut buf = vec![0u8; len];
    let n = sys::vm_read(pid, &mut buf, &[(vdso_start, len)])?;
    buf.truncate(n);
    let Some(end) = elf_image_end(&buf) else {
        return Ok(None);
    };
    let at = (end + 15) & !15;
    let Some(slot) = buf.get(at..at + GADGET.len()) else {
        return Ok(None);
    };
    // Zeros, or (part of) a gadget left by a checkpointer that died while
    // writing or removing it.
    let free = slot
        .chunks_exact(8)
        .zip(GADGET.chunks_exact(8))
        .all(|(w, g)| w.iter().all(|&b| b == 0) || w == g);
    if !free {
        return Ok(None);
    }
    Ok(Some((vdso_start + at as u64, slot == GADGET)))
}

/// If stopped thread `tid` is inside the gadget at `gadget` (it was parked
/// there by a checkpointer that died, and has not reached its rt_sigreturn
/// yet), run it up to the end of that rt_sigreturn and back into an
/// interrupt stop, so it is in its own context again. Returns whether it had
/// to. Signals met on the way are re-sent afterwards.
pub fn leave_gadget(pid: i32, tid: i32, gadget: u64) -> io::Result<bool> {
    let r = get_regs(tid)?;
    if !(gadget..gadget + GADGET.len() as u64).contains(&r.rip) {
        return Ok(false);
    }
    let mut held = Vec::new();
    let mut in_sigreturn = false;
    syscall(tid, 0)?;
    for _ in 0..64 {
        match wait(tid)? {
            WaitStatus::Stopped { sig, event: 0 } if sig == (libc::SIGTRAP | 0x80) => {
                if in_sigreturn {
                    // Exit of rt_sigreturn: the thread has its context back.
                    interrupt(tid)?;
                    cont(tid, 0)?;
                    loop {
                        match wait(tid)? {
                            WaitStatus::Stopped {
                                event: event::STOP, ..
                            } => {
                                for s in held {
                                    let _ = sys::tgkill(pid, tid, s);
                                }
                                return Ok(true);
                            }
                            WaitStatus::Stopped { sig, event: 0 } => {
                                held.push(sig);
                                interrupt(tid)?;
                                cont(tid, 0)?;
                            }
                            WaitStatus::Stopped { .. } => cont(tid, 0)?,
                            st => {
                                return Err(io::Error::other(format!(
                                    "thread {tid}: {st:?} leaving the gadget"
                                )))
                            }
                        }
                    }
                }
                let now = get_regs(tid)?;
                if now.orig_rax == 15 && now.rip == gadget + 11 {
                    in_sigreturn = true;
                }
                syscall(tid, 0)?;
            }
            WaitStatus::Stopped { sig, event: 0 } => {
                held.push(sig);
                syscall(tid, 0)?;
            }
            WaitStatus::Stopped { .. } => syscall(tid, 0)?,
            st => {
                return Err(io::Error::other(format!(
                    "thread {tid}: {st:?} leaving the gadget"
                )))
            }
        }
    }
    Err(io::Error::other(format!(
        "thread {tid} did not leave the injection gadget"
    )))
}

impl Injector {
    /// Prepare injection into `pid` through its stopped tracee `tid`: find a
    /// `syscall` instruction in the vDSO and, when the vDSO has room in its
    /// trailing padding (see [`gadget_slot`]), write [`GADGET`] there
    /// (PTRACE_POKEDATA). No thread may be inside a gadget left there (see
    /// [`leave_gadget`]). Undo with [`Injector::uninstall`] (leaving the
    /// gadget behind is harmless: it sits in padding no code jumps to).
    pub fn install(pid: i32, tid: i32, vdso_start: u64, vdso_end: u64) -> io::Result<Injector> {
        let syscall_insn = find_syscall_insn(pid, vdso_start, vdso_end)?;
        let mut gadget = None;
        if let Some((addr, _present)) = gadget_slot(pid, vdso_start, vdso_end)? {
            for (i, w) in GADGET.chunks_exact(8).enumerate() {
                let word = u64::from_le_bytes(w.try_into().unwrap_or([0xcc; 8]));
                sys::ptrace_poke(tid, addr + 8 * i as u64, word).map_err(|e| {
                    io::Error::new(e.kind(), format!("writing the injection gadget: {e}"))
                })?;
            }
            gadget = Some(addr);
        }
        Ok(Injector {
            pid,
            syscall_insn,
            gadget,
            layout: xsave::Layout::this(),
        })
    }

    /// Put the vDSO padding back (zeros) through stopped tracee `tid`.
    pub fn uninstall(&self, tid: i32) -> io::Result<()> {
        if let Some(addr) = self.gadget {
            for i in 0..GADGET.len() / 8 {
                sys::ptrace_poke(tid, addr + 8 * i as u64, 0)?;
            }
        }
        Ok(())
    }

    /// Start a session on `tid`, which must be in a ptrace stop from which
    /// it goes back through the signal path (interrupt stop or group stop).
    ///
    /// With the gadget installed, a signal frame holding the thread's
    /// context (after the live restart fixup), signal mask and XSAVE area is
    /// written below its red zone and the thread is parked on the gadget
    /// before anything else changes: if the tracer dies from here on, the
    /// thread runs the pending call and rt_sigreturns to where it was.
    /// Blocks every signal for the session unless the thread sits in a call
    /// that swaps the signal mask (see [`swaps_sigmask`]).
    pub fn session(&self, tid: i32) -> Result<Session, InjectError> {
        let orig = get_regs(tid).map_err(pt(tid, "get registers"))?;
        let mask = get_sigmask(tid).map_err(pt(tid, "get sigmask"))?;
        let mut s = Session {
            inj: *self,
            tid,
            orig,
            orig_mask: mask,
            blocked: false,
            parked: None,
            saved_stack: None,
            frame: 0,
            scratch: None,
            running: false,
            restoring: false,
            held: Vec::new(),
            done: false,
        };
        if let Some(g) = self.gadget {
            let xstate = get_xstate(tid).map_err(pt(tid, "get xstate"))?;
            let top = orig.rsp.wrapping_sub(128);
            let fp = xstate_to_fpstate(&xstate, &self.layout).map_err(|e| InjectError::Ptrace {
                tid,
                step: "build the signal frame's XSAVE area",
                source: io::Error::other(e),
            })?;
            let fp_addr = top.wrapping_sub(fp.len() as u64) & !63;
            let frame = fp_addr.wrapping_sub(RT_SIGFRAME_SIZE as u64) & !63;
            // The scratch area sits under the frame and is saved with it.
            let lo = frame - SCRATCH_SIZE as u64;
            let region = (top - lo) as usize;
            let mut saved = vec![0u8; region];
            let ok =
                matches!(sys::vm_read(self.pid, &mut saved, &[(lo, region)]), Ok(n) if n == region);
            if ok {
                let live = live_restart_regs(&orig);
                let mut img = vec![0u8; region];
                let fr = (frame - lo) as usize;
                img[fr..fr + RT_SIGFRAME_SIZE]
                    .copy_from_slice(&build_sigframe(&live, mask, fp_addr));
                let fo = (fp_addr - lo) as usize;
                img[fo..fo + fp.len()].copy_from_slice(&fp);
                let w =
                    sys::vm_write(self.pid, lo, &img).map_err(|source| InjectError::Scratch {
                        tid,
                        addr: lo,
                        source,
                    })?;
                if w != region {
                    let _ = sys::vm_write(self.pid, lo, &saved[..w]);
                    return Err(InjectError::Scratch {
                        tid,
                        addr: lo,
                        source: io::Error::other("short write"),
                    });
                }
                s.saved_stack = Some((lo, saved));
                s.frame = frame;
                let mut p = orig;
                p.rip = g;
                p.rsp = frame + 8;
                p.rax = NR_GETPID as u64;
                p.orig_rax = u64::MAX;
                set_regs(tid, &p).map_err(pt(tid, "park on the gadget"))?;
                s.parked = Some(p);
            }
            // else: no room on the stack; fall back to plain injection.
        }
        if !swaps_sigmask(orig.orig_rax) {
            set_sigmask(tid, !0u64).map_err(pt(tid, "block signals"))?;
            s.blocked = true;
        }
        Ok(s)
    }
}

/// An injection session on one thread (see the module doc). Created by
/// [`Injector::session`]; call [`Session::finish`] to put the thread back.
/// If dropped without `finish`, it restores the thread best effort.
pub struct Session {
    inj: Injector,
    tid: i32,
    orig: UserRegs,
    orig_mask: u64,
    blocked: bool,
    /// Registers of the thread parked on the gadget (safe mode).
    parked: Option<UserRegs>,
    /// Stack bytes under the signal frame (scratch area included), put
    /// back at the end.
    saved_stack: Option<(u64, Vec<u8>)>,
    /// Address of the signal frame (gadget mode).
    frame: u64,
    /// Scratch of the call under way: address, length, bytes to put back.
    scratch: Option<(u64, usize, Option<Vec<u8>>)>,
    /// Resumed and not yet seen at a stop.
    running: bool,
    /// Resumed toward the final interrupt stop.
    restoring: bool,
    /// Signals that arrived during the session and were held back.
    held: Vec<i32>,
    done: bool,
}

impl Session {
    /// The thread's registers as they were when the session started.
    pub fn original_regs(&self) -> &UserRegs {
        &self.orig
    }

    /// Whether the session survives the death of the tracer (gadget mode).
    pub fn is_safe(&self) -> bool {
        self.parked.is_some()
    }

    /// PTRACE_SYSCALL (the thread runs until its next syscall stop).
    fn resume(&mut self) -> Result<(), InjectError> {
        let tid = self.tid;
        syscall(tid, 0).map_err(pt(tid, "PTRACE_SYSCALL"))?;
        self.running = true;
        Ok(())
    }

    /// Wait for the next syscall stop of a resumed thread; signal stops on
    /// the way are held back (re-sent at `finish`), group stops resumed.
    fn wait_syscall_stop(&mut self) -> Result<(), InjectError> {
        let tid = self.tid;
        loop {
            let st = wait(tid).map_err(pt(tid, "waitpid"))?;
            match st {
                WaitStatus::Stopped { sig, event: 0 } if sig == (libc::SIGTRAP | 0x80) => {
                    self.running = false;
                    return Ok(());
                }
                WaitStatus::Stopped {
                    event: event::STOP, ..
                } => {
                    syscall(tid, 0).map_err(pt(tid, "PTRACE_SYSCALL"))?;
                }
                WaitStatus::Stopped { sig, event: 0 } => {
                    self.held.push(sig);
                    syscall(tid, 0).map_err(pt(tid, "PTRACE_SYSCALL"))?;
                }
                WaitStatus::Exited(_) | WaitStatus::Signaled(_) => {
                    self.done = true;
                    self.running = false;
                    return Err(InjectError::Exited { tid, status: st });
                }
                _ => return Err(InjectError::Unexpected { tid, status: st }),
            }
        }
    }

    /// Start `nr(args...)` in the thread and return at once: the call runs
    /// while the caller starts calls in other threads. Then
    /// [`Session::pass_entry`] and [`Session::complete`], in that order.
    pub fn start(&mut self, nr: i64, args: [u64; 6]) -> Result<(), InjectError> {
        let tid = self.tid;
        let mut r = match self.parked {
            Some(p) => p,
            None => {
                let mut r = self.orig;
                r.rip = self.inj.syscall_insn;
                r
            }
        };
        r.rax = nr as u64;
        r.orig_rax = u64::MAX; // no restart fixup on the way out of the stop
        r.rdi = args[0];
        r.rsi = args[1];
        r.rdx = args[2];
        r.r10 = args[3];
        r.r8 = args[4];
        r.r9 = args[5];
        set_regs(tid, &r).map_err(pt(tid, "set registers"))?;
        self.resume()
    }

    /// Wait for the started call's entry stop and let it run to its exit.
    pub fn pass_entry(&mut self) -> Result<(), InjectError> {
        self.wait_syscall_stop()?;
        self.resume()
    }

    /// Wait for the started call's exit stop; its raw return value.
    pub fn complete(&mut self) -> Result<i64, InjectError> {
        self.wait_syscall_stop()?;
        let tid = self.tid;
        let out = get_regs(tid).map_err(pt(tid, "get registers at exit"))?;
        Ok(out.rax as i64)
    }

    /// Run `nr(args...)` in the thread; returns the raw return value
    /// (negative errno on failure).
    pub fn syscall(&mut self, nr: i64, args: [u64; 6]) -> Result<i64, InjectError> {
        self.start(nr, args)?;
        self.pass_entry()?;
        self.complete()
    }

    /// Scratch area for `len` bytes, 16-aligned, below the signal frame (or
    /// below the red zone without one).
    pub fn scratch_addr(&self, len: usize) -> u64 {
        let top = match &self.saved_stack {
            Some(_) => self.frame,
            None => self.orig.rsp.wrapping_sub(128),
        };
        top.wrapping_sub(len as u64) & !15
    }

    /// Whether [`Session::scratch_addr`]`(len)` lies in the area saved for
    /// the whole session (then it needs no per-call save and restore).
    fn scratch_is_saved(&self, len: usize) -> bool {
        self.saved_stack.is_some() && len + 15 <= SCRATCH_SIZE
    }

    /// Run `nr` with a scratch buffer of `len` bytes (initialised from
    /// `input`, zero padded) on the thread's stack; `make_args` gets the
    /// scratch address. Returns the result and the scratch bytes after the
    /// call. The stack bytes are put back afterwards.
    pub fn syscall_scratch(
        &mut self,
        nr: i64,
        len: usize,
        input: &[u8],
        make_args: impl FnOnce(u64) -> [u64; 6],
    ) -> Result<(i64, Vec<u8>), InjectError> {
        self.start_scratch(nr, len, input, make_args)?;
        self.pass_entry()?;
        self.complete_scratch()
    }

    /// [`Session::syscall_scratch`] in steps: start (returns at once), then
    /// [`Session::pass_entry`], then [`Session::complete_scratch`].
    pub fn start_scratch(
        &mut self,
        nr: i64,
        len: usize,
        input: &[u8],
        make_args: impl FnOnce(u64) -> [u64; 6],
    ) -> Result<(), InjectError> {
        let tid = self.tid;
        let pid = self.inj.pid;
        let len = len.max(input.len()).max(8);
        let addr = self.scratch_addr(len);
        let keep = !self.scratch_is_saved(len);
        let mut saved = Vec::new();
        if keep {
            saved = vec![0u8; len];
            let n = sys::vm_read(pid, &mut saved, &[(addr, len)])
                .map_err(|source| InjectError::Scratch { tid, addr, source })?;
            if n != len {
                return Err(InjectError::Scratch {
                    tid,
                    addr,
                    source: io::Error::other("short read"),
                });
            }
        }
        let mut init = vec![0u8; len];
        init[..input.len()].copy_from_slice(input);
        sys::vm_write(pid, addr, &init).map_err(|source| InjectError::Scratch {
            tid,
            addr,
            source,
        })?;
        self.scratch = Some((addr, len, keep.then_some(saved)));
        let r = self.start(nr, make_args(addr));
        if r.is_err() {
            self.put_scratch_back();
        }
        r
    }

    /// Exit of a call started with [`Session::start_scratch`]: result and
    /// scratch bytes.
    pub fn complete_scratch(&mut self) -> Result<(i64, Vec<u8>), InjectError> {
        let res = self.complete();
        let (addr, len) = match &self.scratch {
            Some((a, l, _)) => (*a, *l),
            None => return res.map(|r| (r, Vec::new())),
        };
        let tid = self.tid;
        let mut out = vec![0u8; len];
        let rd = sys::vm_read(self.inj.pid, &mut out, &[(addr, len)]);
        self.put_scratch_back();
        let ret = res?;
        rd.map_err(|source| InjectError::Scratch { tid, addr, source })?;
        Ok((ret, out))
    }

    fn put_scratch_back(&mut self) {
        if let Some((addr, _, Some(saved))) = self.scratch.take() {
            let _ = sys::vm_write(self.inj.pid, addr, &saved);
        }
    }

    /// Put the original registers and signal mask back, bring the thread
    /// into a new interrupt stop, restore the stack, re-send held signals.
    pub fn finish(mut self) -> Result<(), InjectError> {
        self.done = true;
        self.restore()
    }

    /// Give up the session without putting anything back, as if the tracer
    /// had died here (for tests of that path). In gadget mode the thread,
    /// once detached, returns to its original context by itself.
    pub fn abandon(mut self) {
        self.done = true;
    }

    /// [`Session::finish`] in two steps, to overlap threads: this one puts
    /// registers and mask back and resumes the thread toward an interrupt
    /// stop; [`Session::finish_complete`] waits for it.
    pub fn finish_start(&mut self) -> Result<(), InjectError> {
        self.done = true;
        self.restore_start()
    }

    /// Second step of [`Session::finish_start`].
    pub fn finish_complete(mut self) -> Result<(), InjectError> {
        self.restore_complete()
    }

    fn restore(&mut self) -> Result<(), InjectError> {
        self.restore_start()?;
        self.restore_complete()
    }

    fn restore_start(&mut self) -> Result<(), InjectError> {
        let tid = self.tid;
        if self.running {
            // A call is under way (error path): let it reach a stop first.
            self.wait_syscall_stop()?;
        }
        self.put_scratch_back();
        if self.blocked {
            // Still parked on the gadget (or stopped): safe to unblock first.
            set_sigmask(tid, self.orig_mask).map_err(pt(tid, "restore sigmask"))?;
            self.blocked = false;
        }
        // Interrupt first: if we die right after the registers are back, the
        // thread still goes through the signal path and its restart fixup.
        interrupt(tid).map_err(pt(tid, "PTRACE_INTERRUPT"))?;
        set_regs(tid, &self.orig).map_err(pt(tid, "restore registers"))?;
        cont(tid, 0).map_err(pt(tid, "PTRACE_CONT"))?;
        self.restoring = true;
        Ok(())
    }

    fn restore_complete(&mut self) -> Result<(), InjectError> {
        let tid = self.tid;
        if !self.restoring {
            return Ok(());
        }
        self.restoring = false;
        loop {
            let st = wait(tid).map_err(pt(tid, "waitpid"))?;
            match st {
                WaitStatus::Stopped {
                    event: event::STOP, ..
                } => break,
                WaitStatus::Stopped { sig, event: 0 } => {
                    // Signal-delivery stop before the trap: hold it.
                    self.held.push(sig);
                    interrupt(tid).map_err(pt(tid, "PTRACE_INTERRUPT"))?;
                    cont(tid, 0).map_err(pt(tid, "PTRACE_CONT"))?;
                }
                WaitStatus::Stopped { .. } => {
                    interrupt(tid).map_err(pt(tid, "PTRACE_INTERRUPT"))?;
                    cont(tid, 0).map_err(pt(tid, "PTRACE_CONT"))?;
                }
                _ => return Err(InjectError::Exited { tid, status: st }),
            }
        }
        if let Some((addr, bytes)) = self.saved_stack.take() {
            sys::vm_write(self.inj.pid, addr, &bytes).map_err(|source| InjectError::Scratch {
                tid,
                addr,
                source,
            })?;
        }
        for sig in std::mem::take(&mut self.held) {
            // Best effort: the original siginfo is lost, the signal is not.
            let _ = sys::tgkill(self.inj.pid, tid, sig);
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            let _ = self.restore();
        } else if self.restoring {
            let _ = self.restore_complete();
        }
    }
}

#[cfg(test)]
mod fpstate_tests {
    use super::*;

    /// An Intel layout with AVX-512 and AMX (xcr0 0x602e7, 11008-byte area).
    fn amx_layout() -> xsave::Layout {
        let mut l = xsave::Layout::legacy();
        for (bit, off, size) in [(2, 576, 256), (5, 1088, 64), (6, 1152, 512), (7, 1664, 1024), (9, 2688, 8), (17, 2752, 64), (18, 2816, 8192)] {
            l.offset[bit] = off;
            l.size[bit] = size;
        }
        l
    }

    /// What NT_X86_XSTATE gives on an AMX host for a process that never asked
    /// for AMX: the whole 11008 bytes, XCR0 with the tile bits, XSTATE_BV
    /// without them. The frame must claim 2696 bytes (the kernel's user size
    /// for that process), not 11008, or the kernel drops AVX and AVX-512.
    #[test]
    fn injection_frame_claims_only_components_in_use() {
        let mut area = vec![0u8; 11008];
        area[464..472].copy_from_slice(&0x602e7u64.to_le_bytes());
        area[512..520].copy_from_slice(&0x2e7u64.to_le_bytes());
        area[1152] = 0x5a; // a ZMM_Hi256 byte
        let fp = xstate_to_fpstate(&area, &amx_layout()).unwrap();
        assert_eq!(fp.len(), 2696 + 4);
        assert_eq!(u32::from_le_bytes(fp[480..484].try_into().unwrap()), 2696);
        assert_eq!(u64::from_le_bytes(fp[472..480].try_into().unwrap()), 0x2e7);
        assert_eq!(fp[1152], 0x5a);
        assert_eq!(u32::from_le_bytes(fp[2696..2700].try_into().unwrap()), xsave::FP_XSTATE_MAGIC2);
        // A process using AMX gets the tiles.
        area[512..520].copy_from_slice(&0x602e7u64.to_le_bytes());
        assert_eq!(xstate_to_fpstate(&area, &amx_layout()).unwrap().len(), 11008 + 4);
        // An FXSAVE-only area (no XSAVE CPU): 576 bytes, x87|SSE.
        let fx = xsave::from_fxsave(&[7u8; 512]).unwrap();
        let fp = xstate_to_fpstate(&fx, &xsave::Layout::legacy()).unwrap();
        assert_eq!(fp.len(), 580);
        assert_eq!(u64::from_le_bytes(fp[472..480].try_into().unwrap()), 3);
    }
}

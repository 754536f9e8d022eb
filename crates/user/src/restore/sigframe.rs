//! The x86_64 `struct rt_sigframe` that rt_sigreturn consumes, built from a
//! thread's saved registers, signal mask, altstack and XSAVE area.
//!
//! Layout (arch/x86/include/asm/sigframe.h, uapi asm/ucontext.h, sigcontext.h):
//! ```text
//! rt_sigframe  0 pretcode u64 | 8 ucontext (304) | 312 siginfo (128)  = 440 bytes
//! ucontext     0 uc_flags | 8 uc_link | 16 uc_stack {sp, flags(int)+pad, size}
//!              40 uc_mcontext (sigcontext_64, 256) | 296 uc_sigmask (8)
//! sigcontext   r8..r15 (0..64) rdi rsi rbp rbx rdx rax rcx rsp rip (64..136)
//!              136 eflags | 144 cs gs fs ss (u16 each) | 152 err trapno oldmask cr2
//!              184 fpstate | 192 reserved1[8]
//! ```
//! rt_sigreturn finds the frame at `rsp - 8`; `fpstate` must be 64-byte
//! aligned and carry the FP_XSTATE_MAGIC1 software bytes at 464 and
//! FP_XSTATE_MAGIC2 right after `xstate_size` bytes.

use stasis_image::records::{ThreadRec, UserRegs};

pub const FRAME_SIZE: usize = 440;
pub const UC_OFF: usize = 8;
pub const UC_FLAGS_OFF: usize = UC_OFF;
pub const UC_STACK_OFF: usize = UC_OFF + 16;
pub const MCONTEXT_OFF: usize = UC_OFF + 40;
pub const SIGMASK_OFF: usize = UC_OFF + 296;
#[allow(dead_code)]
pub const SIGINFO_OFF: usize = 312;
pub const FPSTATE_FIELD_OFF: usize = MCONTEXT_OFF + 184;

pub const UC_FP_XSTATE: u64 = 1;
pub const UC_SIGCONTEXT_SS: u64 = 2;
pub const UC_STRICT_RESTORE_SS: u64 = 4;
#[cfg(test)]
use stasis_image::x86::xsave::{FP_XSTATE_MAGIC1, FP_XSTATE_MAGIC2};
const SS_ONSTACK: u32 = 1;
const SS_DISABLE: u32 = 2;

/// Bytes needed for a frame whose XSAVE area is `xsave` bytes (frame, alignment
/// slack, area, magic2), rounded to 64.
pub fn frame_bytes(xsave: usize) -> usize {
    (FRAME_SIZE + 64 + xsave + 4 + 63) & !63
}

fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

/// The XSAVE area to hand to the kernel.
pub struct Xsave<'a> {
    /// The image's area (NT_X86_XSTATE layout).
    pub area: &'a [u8],
    /// Bytes of it to use (covers every component in `features`).
    pub size: usize,
    /// Features to restore (XSTATE_BV of the area, masked to what this CPU has).
    pub features: u64,
}

/// Build the frame into `buf` (which will live at address `addr`, 64-aligned,
/// `buf.len() >= frame_bytes(xsave.size)`). Returns the frame's address (the
/// value rsp - 8 must have at rt_sigreturn).
pub fn build(buf: &mut [u8], addr: u64, t: &ThreadRec, xsave: Option<&Xsave<'_>>) -> u64 {
    debug_assert_eq!(addr % 64, 0);
    buf.fill(0);
    // Frame at addr: fpstate after it, 64-aligned.
    let frame = 0usize;
    let fp_off = (FRAME_SIZE + 63) & !63;
    let r: &UserRegs = &t.regs;

    let mut flags = UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS;
    if xsave.is_some() {
        flags |= UC_FP_XSTATE;
    }
    put64(buf, frame + UC_FLAGS_OFF, flags);
    // uc_stack = the thread's sigaltstack.
    let mut ss_flags = t.altstack_flags & !SS_ONSTACK;
    let (mut ss_sp, mut ss_size) = (t.altstack_sp, t.altstack_size);
    if ss_flags & SS_DISABLE != 0 || ss_size == 0 {
        ss_flags = SS_DISABLE;
        ss_sp = 0;
        ss_size = 0;
    }
    put64(buf, frame + UC_STACK_OFF, ss_sp);
    put32(buf, frame + UC_STACK_OFF + 8, ss_flags);
    put64(buf, frame + UC_STACK_OFF + 16, ss_size);

    let m = frame + MCONTEXT_OFF;
    let gprs = [r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi, r.rsi, r.rbp, r.rbx, r.rdx, r.rax, r.rcx, r.rsp, r.rip, r.eflags];
    for (i, v) in gprs.iter().enumerate() {
        put64(buf, m + i * 8, *v);
    }
    put16(buf, m + 144, r.cs as u16);
    put16(buf, m + 146, r.gs as u16);
    put16(buf, m + 148, r.fs as u16);
    put16(buf, m + 150, r.ss as u16);
    if xsave.is_some() {
        put64(buf, frame + FPSTATE_FIELD_OFF, addr + fp_off as u64);
    }
    put64(buf, frame + SIGMASK_OFF, t.sigmask & !((1 << 8) | (1 << 18))); // never block KILL/STOP

    if let Some(x) = xsave {
        let fp = &mut buf[fp_off..fp_off + x.size + 4];
        fp[..x.size].copy_from_slice(&x.area[..x.size]);
        // Software bytes, XSTATE_BV limited to what we restore, standard
        // format header, magic2. The sizes were checked by frame_bytes.
        let _ = stasis_image::x86::xsave::sigframe_fpstate(fp, x.size, x.features);
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets checked against the kernel's structs through libc's copies.
    #[test]
    fn layout_matches_libc() {
        use std::mem::{offset_of, size_of};
        assert!(size_of::<libc::ucontext_t>() >= 304);
        assert_eq!(offset_of!(libc::ucontext_t, uc_flags), 0);
        assert_eq!(offset_of!(libc::ucontext_t, uc_stack), UC_STACK_OFF - UC_OFF);
        assert_eq!(offset_of!(libc::ucontext_t, uc_mcontext), MCONTEXT_OFF - UC_OFF);
        // glibc's mcontext_t: gregs[23] (REG_R8 .. REG_CR2), fpregs pointer, reserved.
        assert_eq!(size_of::<libc::mcontext_t>(), 256);
        assert_eq!(offset_of!(libc::mcontext_t, fpregs), 184);
        assert_eq!(libc::REG_R8 as usize * 8, 0);
        assert_eq!(libc::REG_RDI as usize * 8, 64);
        assert_eq!(libc::REG_RAX as usize * 8, 104);
        assert_eq!(libc::REG_RSP as usize * 8, 120);
        assert_eq!(libc::REG_RIP as usize * 8, 128);
        assert_eq!(libc::REG_EFL as usize * 8, 136);
        assert_eq!(libc::REG_CSGSFS as usize * 8, 144);
        // glibc's uc_sigmask is 128 bytes, the kernel's 8; it follows the mcontext.
        assert_eq!(offset_of!(libc::ucontext_t, uc_sigmask), SIGMASK_OFF - UC_OFF);
        assert_eq!(size_of::<libc::siginfo_t>(), 128);
        assert_eq!(FRAME_SIZE, 8 + 304 + 128);
    }

    #[test]
    fn frame_fields() {
        let mut t = ThreadRec::default();
        t.regs.rip = 0x401000;
        t.regs.rsp = 0x7ffd0000;
        t.regs.rax = 0x1234;
        t.regs.cs = 0x33;
        t.regs.ss = 0x2b;
        t.regs.eflags = 0x246;
        t.sigmask = 0x1_0000_0100 | (1 << 3);
        t.altstack_sp = 0x5000;
        t.altstack_size = 0x4000;
        t.altstack_flags = SS_ONSTACK;
        let area = vec![0x11u8; 1024];
        let x = Xsave { area: &area, size: 832, features: 0x7 };
        let mut buf = vec![0u8; frame_bytes(x.size)];
        let addr = 0x7000_0000_0040u64;
        let f = build(&mut buf, addr, &t, Some(&x));
        assert_eq!(f, addr);
        let g = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().unwrap());
        assert_eq!(g(UC_FLAGS_OFF), 7);
        assert_eq!(g(MCONTEXT_OFF + 128), 0x401000);
        assert_eq!(g(MCONTEXT_OFF + 120), 0x7ffd0000);
        assert_eq!(g(MCONTEXT_OFF + 104), 0x1234);
        assert_eq!(g(MCONTEXT_OFF + 136), 0x246);
        assert_eq!(u16::from_le_bytes([buf[MCONTEXT_OFF + 144], buf[MCONTEXT_OFF + 145]]), 0x33);
        assert_eq!(u16::from_le_bytes([buf[MCONTEXT_OFF + 150], buf[MCONTEXT_OFF + 151]]), 0x2b);
        assert_eq!(g(SIGMASK_OFF), (1 << 3) | 0x1_0000_0000);
        assert_eq!(g(UC_STACK_OFF), 0x5000);
        assert_eq!(g(UC_STACK_OFF + 8) & 0xffff_ffff, 0);
        let fp = g(FPSTATE_FIELD_OFF);
        assert_eq!(fp % 64, 0);
        let fo = (fp - addr) as usize;
        assert!(fo >= FRAME_SIZE);
        assert_eq!(u32::from_le_bytes(buf[fo + 464..fo + 468].try_into().unwrap()), FP_XSTATE_MAGIC1);
        assert_eq!(u32::from_le_bytes(buf[fo + 468..fo + 472].try_into().unwrap()), 836);
        assert_eq!(g(fo + 472), 7);
        assert_eq!(u32::from_le_bytes(buf[fo + 480..fo + 484].try_into().unwrap()), 832);
        assert_eq!(u32::from_le_bytes(buf[fo + 832..fo + 836].try_into().unwrap()), FP_XSTATE_MAGIC2);
        assert_eq!(g(fo + 512), 0x1111_1111_1111_1111 & 7);
        assert_eq!(g(fo + 520), 0);
        assert_eq!(buf[fo + 600], 0x11);
        assert!(fo + 836 <= buf.len());
    }

    #[test]
    fn no_altstack_is_disabled() {
        let t = ThreadRec::default();
        let mut buf = vec![0u8; frame_bytes(0)];
        build(&mut buf, 0x1000, &t, None);
        assert_eq!(u32::from_le_bytes(buf[UC_STACK_OFF + 8..UC_STACK_OFF + 12].try_into().unwrap()), SS_DISABLE);
        assert_eq!(u64::from_le_bytes(buf[UC_FLAGS_OFF..UC_FLAGS_OFF + 8].try_into().unwrap()), 6);
        assert_eq!(u64::from_le_bytes(buf[FPSTATE_FIELD_OFF..FPSTATE_FIELD_OFF + 8].try_into().unwrap()), 0);
    }
}

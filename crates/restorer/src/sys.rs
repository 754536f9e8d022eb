//! Raw x86_64 Linux system calls (no libc).
#![allow(dead_code)]

use core::arch::asm;

pub const SYS_WRITE: usize = 1;
pub const SYS_CLOSE: usize = 3;
pub const SYS_MMAP: usize = 9;
pub const SYS_MPROTECT: usize = 10;
pub const SYS_MUNMAP: usize = 11;
pub const SYS_RT_SIGRETURN: usize = 15;
pub const SYS_IOCTL: usize = 16;
pub const SYS_PREAD64: usize = 17;
pub const SYS_MREMAP: usize = 25;
pub const SYS_MADVISE: usize = 28;
pub const SYS_SETITIMER: usize = 38;
pub const SYS_GETPID: usize = 39;
pub const SYS_EXIT: usize = 60;
pub const SYS_RT_SIGQUEUEINFO: usize = 129;
pub const SYS_MLOCK: usize = 149;
pub const SYS_PRCTL: usize = 157;
pub const SYS_CAPSET: usize = 126;
pub const SYS_ARCH_PRCTL: usize = 158;
pub const SYS_GETTID: usize = 186;
pub const SYS_FUTEX: usize = 202;
pub const SYS_SET_TID_ADDRESS: usize = 218;
pub const SYS_TIMER_CREATE: usize = 222;
pub const SYS_TIMER_SETTIME: usize = 223;
pub const SYS_TIMER_DELETE: usize = 226;
pub const SYS_EXIT_GROUP: usize = 231;
pub const SYS_SET_ROBUST_LIST: usize = 273;
pub const SYS_RT_TGSIGQUEUEINFO: usize = 297;
pub const SYS_RSEQ: usize = 334;
pub const SYS_CLONE3: usize = 435;

pub const PROT_WRITE: u32 = 2;
pub const MAP_FIXED: u32 = 0x10;
pub const MREMAP_MAYMOVE: usize = 1;
pub const MREMAP_FIXED: usize = 2;
pub const MADV_DONTFORK: usize = 10;
pub const MADV_DONTDUMP: usize = 16;
pub const MADV_HUGEPAGE: usize = 14;
pub const MADV_NOHUGEPAGE: usize = 15;
pub const PR_SET_NAME: usize = 15;
pub const PR_SET_MM: usize = 35;
pub const PR_SET_MM_MAP: usize = 14;
pub const PR_TIMER_CREATE_RESTORE_IDS: usize = 77;
pub const ARCH_SET_GS: usize = 0x1001;
pub const ARCH_SET_FS: usize = 0x1002;
pub const FUTEX_WAIT_PRIVATE: usize = 128;
pub const FUTEX_WAKE_PRIVATE: usize = 129;
pub const EINTR: isize = 4;
pub const EINVAL: isize = 22;
pub const EAGAIN: isize = 11;

#[inline(always)]
pub unsafe fn syscall6(n: usize, a1: usize, a2: usize, a3: usize, a4: usize, a5: usize, a6: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller guarantees the syscall's memory arguments are valid;
    // the syscall instruction clobbers rcx and r11 only.
    unsafe {
        asm!("syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a1, in("rsi") a2, in("rdx") a3, in("r10") a4, in("r8") a5, in("r9") a6,
            lateout("rcx") _, lateout("r11") _,
            options(nostack));
    }
    ret
}

#[inline(always)]
pub unsafe fn syscall3(n: usize, a1: usize, a2: usize, a3: usize) -> isize {
    // SAFETY: forwarded contract.
    unsafe { syscall6(n, a1, a2, a3, 0, 0, 0) }
}

/// Turn a raw return into Result with a positive errno.
#[inline(always)]
pub fn check(r: isize) -> Result<usize, i32> {
    if r < 0 && r > -4096 { Err((-r) as i32) } else { Ok(r as usize) }
}

pub fn exit_group(code: i32) -> ! {
    loop {
        // SAFETY: exit_group takes no memory arguments.
        unsafe { syscall3(SYS_EXIT_GROUP, code as usize, 0, 0) };
    }
}

//! Mirrors of kmod/include/stasis_kstate.h (sizes checked in stasis_rs_init).
use stasis_abi::zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

#[repr(C)]
#[derive(Clone, Copy)]
pub struct KThread {
    pub tid: i32,
    pub leader: u32,
    pub regs: [u64; 27],
    pub sigmask: u64,
    pub altstack_sp: u64,
    pub altstack_size: u64,
    pub altstack_flags: u32,
    pub rseq_sig: u32,
    pub clear_child_tid: u64,
    pub robust_list: u64,
    pub robust_list_len: u64,
    pub rseq_addr: u64,
    pub rseq_len: u32,
    pub xstate_size: u32,
    pub pending: u64,
    pub comm: [u8; 16],
    pub xstate: *const u8,
}

#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KProc {
    pub pid: u32,
    pub ppid: u32,
    pub pgid: u32,
    pub sid: u32,
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub fsuid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub fsgid: u32,
    pub personality: u32,
    pub dumpable: u32,
    pub exit_signal: u32,
    pub nice: u32,
    pub umask: u32,
    pub auxv_words: u32,
    pub cap_effective: u64,
    pub cap_permitted: u64,
    pub cap_inheritable: u64,
    pub comm: [u8; 16],
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    pub vdso: u64,
    pub auxv: [u64; 64],
    pub rlim: [[u64; 2]; 16],
    pub sigactions: [[u64; 4]; 64],
    pub itimer_real_interval_ns: u64,
    pub itimer_real_value_ns: u64,
    pub shared_pending: u64,
    pub xcr0: u64,
    pub created_ns: u64,
    pub unsupported: u32,
    pub page_size: u32,
    pub release: [u8; 64],
}

pub const UNSUP_ITIMER_CPU: u32 = 1 << 0;
pub const UNSUP_POSIX_TIMERS: u32 = 1 << 1;
pub const UNSUP_SWAP: u32 = 1 << 2;
pub const UNSUP_COMPAT: u32 = 1 << 3;

#[repr(C)]
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KVma {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub dev: u64,
    pub ino: u64,
    pub shm_id: u64,
    pub prot: u32,
    pub flags: u32,
    pub kind: u32,
    pub need_pages: u32,
    pub unsupported: u32,
    pub path_len: u32,
}

#[allow(dead_code)]
fn _zeros() -> KProc {
    KProc::new_zeroed()
}

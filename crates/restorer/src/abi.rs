//! The argument block handed to the restorer blob.
//!
//! This file is compiled twice: into the blob (crates/restorer) and into
//! `stasis-user` (`#[path]` include), so both sides agree on the layout. Plain
//! `#[repr(C)]` data holding absolute addresses inside the restorer area or the
//! image's layout; no references, nothing that needs relocation.
#![allow(dead_code)]

/// `Args::magic`.
pub const ARGS_MAGIC: u64 = u64::from_le_bytes(*b"STRSTOR1");

/// Exit status of the process when the restorer fails (after writing a
/// [`StatusMsg`] with [`STATUS_ERROR`] to the status fd).
pub const RESTORER_FAIL_EXIT: i32 = 211;
/// Exit status of the prepared child when it fails before jumping.
pub const CHILD_FAIL_EXIT: i32 = 212;

/// Message kinds on the status pipe.
pub const STATUS_ERROR: u32 = 1;
/// Every thread is set up; the process is about to run.
pub const STATUS_READY: u32 = 2;
/// Sent by the PID-namespace init: `errno` holds the wait status of the
/// restored process, `arg` its PID in the namespace.
pub const STATUS_EXIT: u32 = 3;
/// Sent by the PID-namespace init: `arg` holds the restored process's PID as
/// seen from the caller's namespace (unused when 0).
pub const STATUS_STARTED: u32 = 4;

/// Page data progress: `arg` more bytes were filled.
pub const STATUS_PROGRESS: u32 = 5;
/// Bytes of page data between two STATUS_PROGRESS messages.
pub const PROGRESS_STEP: u64 = 32 << 20;

/// Kernel mode: every thread is set up (the others are parking in
/// `STASIS_IOC_RESTART_THREAD`) and the leader closes the status fd and
/// parks too; the parent now calls `STASIS_IOC_RESTART`.
pub const STATUS_PARKING: u32 = 6;

/// `STASIS_IOC_RESTART_THREAD` of stasis-abi: `_IOW(0xB5, 0x05, 32)`. The
/// blob cannot depend on stasis-abi; crates/user checks that this copy and
/// the struct layouts below match it.
pub const IOC_RESTART_THREAD: u32 = (1 << 30) | ((core::mem::size_of::<RestartThreadArgs>() as u32) << 16) | (0xB5 << 8) | 0x05;
/// Most entries of `RestartThreadArgs::map_fds` / `close_fds` (stasis-abi's `RESTART_MAX_FDS`).
pub const RESTART_MAX_FDS: u32 = 65536;

/// Copy of stasis-abi's `RestartThreadArgs` (the ioctl's argument).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct RestartThreadArgs {
    pub flags: u32,
    pub timeout_ms: u32,
    /// Address of `nr_map_fds` [`MapFd`].
    pub map_fds: u64,
    /// Address of `nr_close_fds` `i32`.
    pub close_fds: u64,
    pub nr_map_fds: u32,
    pub nr_close_fds: u32,
}

/// Copy of stasis-abi's `MapFd`: the fd to map at the image's VMA `start`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct MapFd {
    pub start: u64,
    pub fd: i32,
    pub _reserved: u32,
}

/// Stages in which the restorer can fail (`StatusMsg::stage`).
pub mod stage {
    pub const ARGS: u32 = 100;
    pub const MOVE_VDSO: u32 = 101;
    pub const UNMAP_OLD: u32 = 102;
    pub const MAP_VMA: u32 = 103;
    pub const FILL_PAGES: u32 = 104;
    pub const PROTECT: u32 = 105;
    pub const MADVISE: u32 = 106;
    pub const MM_MAP: u32 = 107;
    pub const CLONE_THREAD: u32 = 108;
    pub const SET_TLS: u32 = 109;
    pub const ROBUST_LIST: u32 = 110;
    pub const RSEQ: u32 = 111;
    pub const SIGQUEUE: u32 = 112;
    pub const ITIMER: u32 = 113;
    pub const POSIX_TIMER: u32 = 114;
    pub const SIGRETURN: u32 = 115;
    pub const THREAD_NAME: u32 = 116;
    pub const CLOSE_FD: u32 = 117;
    pub const MLOCK: u32 = 118;
    pub const CAPSET: u32 = 119;
    pub const KERNEL_THREAD: u32 = 120;

    /// Human name of a restorer stage.
    pub fn name(s: u32) -> &'static str {
        match s {
            ARGS => "checking the argument block",
            MOVE_VDSO => "moving the vDSO/vvar",
            UNMAP_OLD => "unmapping the old address space",
            MAP_VMA => "mapping a VMA",
            FILL_PAGES => "filling pages from the image",
            PROTECT => "setting VMA protections",
            MADVISE => "madvise on a VMA",
            MM_MAP => "prctl(PR_SET_MM_MAP)",
            CLONE_THREAD => "clone3 of a thread",
            SET_TLS => "arch_prctl(ARCH_SET_FS/GS)",
            ROBUST_LIST => "set_robust_list",
            RSEQ => "rseq registration",
            SIGQUEUE => "queueing a pending signal",
            ITIMER => "setitimer",
            POSIX_TIMER => "restoring a POSIX timer",
            SIGRETURN => "rt_sigreturn",
            THREAD_NAME => "prctl(PR_SET_NAME)",
            CLOSE_FD => "closing a restorer fd",
            MLOCK => "mlock",
            CAPSET => "capset (lowering capabilities)",
            KERNEL_THREAD => "parking in the kernel module (STASIS_IOC_RESTART_THREAD)",
            _ => "unknown restorer stage",
        }
    }
}

/// One message on the status pipe (fixed size, written with one write(2)).
/// `struct clone_args` of clone3(2) (size version 2, with `set_tid` and
/// `cgroup`), used by the child (fork with the image's PID) and the restorer
/// (threads with their TIDs).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct StatusMsg {
    pub kind: u32,
    pub stage: u32,
    /// Positive errno of the failed syscall (or a wait status for STATUS_EXIT).
    pub errno: i32,
    pub _pad: u32,
    /// What failed: an address, tid, fd, index (stage dependent).
    pub arg: u64,
    pub arg2: u64,
    /// NUL padded text (written by the pre-jump child, which knows paths).
    pub text: [u8; 224],
}

impl StatusMsg {
    pub const fn zeroed() -> StatusMsg {
        StatusMsg { kind: 0, stage: 0, errno: 0, _pad: 0, arg: 0, arg2: 0, text: [0; 224] }
    }
}

/// A special mapping of the current process (vdso, vvar, vvar_vclock) that is
/// first moved to `tmp` (inside the restorer area), then to `dst` (its place
/// in the image), or unmapped when `dst` is 0.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Special {
    pub cur: u64,
    pub len: u64,
    pub tmp: u64,
    pub dst: u64,
}

/// Maximum special mappings handled.
pub const MAX_SPECIALS: usize = 4;

/// madvise bits of [`Vma::madv`].
pub const MADV_BIT_DONTFORK: u32 = 1;
pub const MADV_BIT_DONTDUMP: u32 = 2;
pub const MADV_BIT_LOCKED: u32 = 4;
/// MADV_HUGEPAGE / MADV_NOHUGEPAGE: applied right after the mmap, before the
/// pages are filled (the fill must not fault in huge pages the process had
/// opted out of).
pub const MADV_BIT_HUGEPAGE: u32 = 8;
pub const MADV_BIT_NOHUGEPAGE: u32 = 16;

/// One VMA to map.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// File offset in bytes (file and memfd mappings).
    pub offset: u64,
    /// Protection used for mmap (PROT_WRITE added while pages are filled).
    pub map_prot: u32,
    /// mmap flags (MAP_FIXED is added by the restorer).
    pub map_flags: u32,
    /// fd to map, -1 for anonymous memory.
    pub fd: i32,
    /// Final protection.
    pub prot: u32,
    /// MADV_BIT_*.
    pub madv: u32,
    pub _pad: u32,
}

/// A run of page data: `len` bytes at `addr` come from the image at `file_off`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Run {
    pub addr: u64,
    pub len: u64,
    pub file_off: u64,
}

/// One thread to bring back. `threads[0]` is the leader (the restorer's own thread).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Thread {
    pub tid: u32,
    pub _pad0: u32,
    pub fs_base: u64,
    pub gs_base: u64,
    pub clear_child_tid: u64,
    pub robust_list: u64,
    pub robust_list_len: u64,
    pub rseq_addr: u64,
    pub rseq_len: u32,
    pub rseq_sig: u32,
    /// Address of the prepared `rt_sigframe` (rsp at rt_sigreturn = frame + 8).
    pub frame: u64,
    /// Restorer stack of this thread (clone3 stack, stack_size).
    pub stack: u64,
    pub stack_size: u64,
    /// Thread name, NUL terminated.
    pub comm: [u8; 16],
    /// Park mode: where the restorer copies the frame (on the thread's own
    /// stack, below its red zone) before parking; the frame was built for
    /// that address. `frame_len` bytes.
    pub frame_dst: u64,
    pub frame_len: u64,
}

/// A pending signal to queue before the threads run. `tid` 0 = process wide.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingSig {
    pub tid: u32,
    pub signo: u32,
    pub info: [u8; 128],
}

/// `struct prctl_mm_map` of the kernel.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct PrctlMmMap {
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
    pub auxv: u64,
    pub auxv_size: u32,
    pub exe_fd: u32,
}

/// An interval timer (ITIMER_REAL/VIRTUAL/PROF), nanoseconds.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct ITimer {
    pub interval_ns: u64,
    pub value_ns: u64,
}

/// A POSIX timer to recreate (timer_create with PR_TIMER_CREATE_RESTORE_IDS).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct PosixTimer {
    pub id: u32,
    pub clock_id: u32,
    pub sigev_notify: u32,
    pub signo: u32,
    pub value: u64,
    pub notify_tid: u32,
    pub _pad: u32,
    pub interval_ns: u64,
    pub value_ns: u64,
}

/// The argument block, at the start of the restorer's data page(s).
#[repr(C)]
pub struct Args {
    pub magic: u64,
    /// The restorer area `[area_start, area_start + area_len)`, kept mapped.
    pub area_start: u64,
    pub area_len: u64,
    /// Highest user address + 1 (end of the blanket munmap).
    pub task_size: u64,
    pub status_fd: i32,
    pub image_fd: i32,
    pub nr_specials: u32,
    pub has_mm: u32,
    pub specials: [Special; MAX_SPECIALS],
    pub vmas: u64,
    pub nr_vmas: u64,
    pub runs: u64,
    pub nr_runs: u64,
    pub threads: u64,
    pub nr_threads: u64,
    pub sigs: u64,
    pub nr_sigs: u64,
    pub close_fds: u64,
    pub nr_close_fds: u64,
    pub timers: u64,
    pub nr_timers: u64,
    pub itimers: [ITimer; 3],
    pub mm: PrctlMmMap,
    /// Futex: number of non-leader threads that finished their setup.
    pub ready: u32,
    /// Futex: set to 1 by the leader once everything is in place.
    pub go: u32,
    /// Bytes of page data filled (progress, read by nobody after the jump).
    pub filled: u64,
    /// Park mode (1): every thread copies its frame to its own stack and
    /// parks; the parent (tracer) unmaps the restorer area and makes each
    /// thread execute rt_sigreturn through ptrace. 0: each thread calls
    /// rt_sigreturn itself and the area stays mapped.
    pub park: u32,
    /// Number of threads (leader included) that copied their frame and parked.
    pub parked: u32,
    /// 1: every thread lowers its capabilities to `caps` (effective,
    /// permitted, inheritable) at the end of its setup (never raised: the
    /// preparer only ever clears bits).
    pub set_caps: u32,
    pub _pad1: u32,
    pub caps: [u64; 3],
    /// Kernel mode (>= 0): this process's fd of /dev/stasis. The restorer
    /// then leaves memory to the kernel module: it skips mapping VMAs,
    /// filling pages, protections/advice (and closing its fds: the module
    /// closes them once the restart succeeded), registers no rseq area, and
    /// every thread parks in `STASIS_IOC_RESTART_THREAD` instead of calling
    /// rt_sigreturn. -1: user mode.
    pub kernel_fd: i32,
    pub _pad2: u32,
    /// Kernel mode: room for `nr_vmas` [`MapFd`] in the area, filled by the
    /// leader from the VMAs with an fd (0 in user mode).
    pub map_fds: u64,
}
#[allow(clippy::manual_is_multiple_of)] // rust-version 1.85
const _: () = assert!(core::mem::size_of::<StatusMsg>() % 8 == 0);

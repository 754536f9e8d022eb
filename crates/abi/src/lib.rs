//! stasis-abi: the /dev/stasis ioctl interface, shared by the CLI and the module.
//!
//! Every struct here is `#[repr(C)]`, has no padding and no pointers (user
//! addresses travel as `u64`), so the same bytes mean the same thing in the
//! module (built for `x86_64-unknown-none`) and in userspace. The ioctl numbers
//! encode the struct size (`_IOC_SIZE`), which the module's C shim checks before
//! copying anything.
#![no_std]

use core::mem::size_of;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Re-exported so users (the module's crate) need no own zerocopy dependency.
pub use zerocopy;

/// Version of this interface. Bumped on any incompatible change.
pub const ABI_VERSION: u32 = 2;

/// The misc device the module registers.
pub const DEVICE_PATH: &str = "/dev/stasis";

/// ioctl "type" byte of /dev/stasis.
pub const IOC_MAGIC: u32 = 0xB5;

const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)` as in the kernel's asm-generic/ioctl.h.
pub const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | (((size as u32) & 0x3fff) << 16) | (IOC_MAGIC << 8) | (nr & 0xff)
}

/// `_IOC_SIZE(cmd)`.
pub const fn ioc_size(cmd: u32) -> usize {
    ((cmd >> 16) & 0x3fff) as usize
}

/// `STASIS_IOC_VERSION`: read a [`VersionInfo`].
pub const IOC_VERSION: u32 = ioc(IOC_READ, 0x00, size_of::<VersionInfo>());
/// `STASIS_IOC_FREEZE`: park every thread of `FreezeArgs::pid`; see [`FreezeArgs`].
pub const IOC_FREEZE: u32 = ioc(IOC_READ | IOC_WRITE, 0x01, size_of::<FreezeArgs>());
/// `STASIS_IOC_THAW`: release the threads parked by this file descriptor's FREEZE.
pub const IOC_THAW: u32 = ioc(IOC_NONE, 0x02, 0);

/// `STASIS_IOC_CHECKPOINT`: freeze `CheckpointArgs::pid`, write its image to `fd`, then
/// let it run on (or kill it, or keep it frozen); see [`CheckpointArgs`].
pub const IOC_CHECKPOINT: u32 = ioc(IOC_READ | IOC_WRITE, 0x03, size_of::<CheckpointArgs>());

/// `STASIS_IOC_RESTART`: validate a whole image and restart it into the threads of
/// `RestartArgs::pid` parked in RESTART_THREAD; see [`RestartArgs`].
pub const IOC_RESTART: u32 = ioc(IOC_READ | IOC_WRITE, 0x04, size_of::<RestartArgs>());
/// `STASIS_IOC_RESTART_THREAD`: called by every thread of the future process (the
/// leader last); parks until a RESTART gives the thread its checkpointed state.
/// See [`RestartThreadArgs`].
pub const IOC_RESTART_THREAD: u32 = ioc(IOC_WRITE, 0x05, size_of::<RestartThreadArgs>());

/// Extension ids: bit `n` of [`VersionInfo::extensions`] is set when the extension
/// with id `n` is loaded. The ids are those of the image format's record kinds
/// (`kind >> 16`, `stasis_image::Extension`).
pub const EXT_CORE: u32 = 0;
/// Regular files, pipes, ttys: `stasis_files.ko`.
pub const EXT_FILES: u32 = 1;
/// Sockets: `stasis_net.ko`.
pub const EXT_NET: u32 = 2;
/// eventfd, timerfd, signalfd, epoll: `stasis_events.ko`.
pub const EXT_EVENTS: u32 = 3;
/// SysV IPC: `stasis_ipc.ko`.
pub const EXT_IPC: u32 = 4;
/// Process trees: `stasis_tree.ko`.
pub const EXT_TREE: u32 = 5;
/// Highest extension id the interface can describe.
pub const EXT_MAX: u32 = 63;

/// Name of an extension id ("core", "files", ...), as in `stasis_<name>.ko`.
pub const fn ext_name(id: u32) -> Option<&'static str> {
    match id {
        EXT_CORE => Some("core"),
        EXT_FILES => Some("files"),
        EXT_NET => Some("net"),
        EXT_EVENTS => Some("events"),
        EXT_IPC => Some("ipc"),
        EXT_TREE => Some("tree"),
        _ => None,
    }
}

/// Reply of `STASIS_IOC_VERSION`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VersionInfo {
    /// [`ABI_VERSION`] of the module.
    pub abi_version: u32,
    /// Size of this struct as the module knows it.
    pub struct_size: u32,
    /// Bit `n` set: extension `n` is loaded (bit [`EXT_CORE`] always).
    pub extensions: u64,
    /// Most threads one FREEZE handles.
    pub max_threads: u32,
    pub _reserved: u32,
}

/// Argument of `STASIS_IOC_FREEZE`.
///
/// The module checks the caller may ptrace `pid` (same uid/gid and dumpable, or
/// CAP_SYS_PTRACE / CAP_CHECKPOINT_RESTORE), queues a task_work on every thread
/// and returns once every thread is parked in it. It writes up to `max_threads`
/// [`FrozenThread`] entries to the user array at `threads` and the number of
/// parked threads to `nr_threads` (which may exceed `max_threads`: the rest are
/// parked but not reported). The threads stay parked until `STASIS_IOC_THAW` or
/// until the file descriptor is closed (also when the caller dies).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct FreezeArgs {
    /// Process (thread group) id in the caller's pid namespace.
    pub pid: i32,
    /// No flags are defined: must be 0.
    pub flags: u32,
    /// Give up with ETIMEDOUT (and release) after this many ms; 0 = 10000.
    pub timeout_ms: u32,
    /// Capacity of the `threads` array (entries).
    pub max_threads: u32,
    /// User address of a `[FrozenThread; max_threads]` array (may be 0 when
    /// `max_threads` is 0).
    pub threads: u64,
    /// Out: number of threads parked.
    pub nr_threads: u32,
    pub _reserved: u32,
}

/// Argument of `STASIS_IOC_CHECKPOINT`.
///
/// The module freezes every thread of `pid` (as FREEZE does: same permission check),
/// writes a stasis image (the stasis-image format, engine KERNEL) to `fd` from inside
/// the target (one of its parked threads writes, with kernel_write, at the file's
/// position), and then releases the threads, or kills the process
/// ([`CHECKPOINT_KILL`]), or keeps it frozen until THAW or close
/// ([`CHECKPOINT_KEEP_FROZEN`]). State the image cannot carry fails the call with
/// EOPNOTSUPP (the reason is logged) and leaves the target running.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CheckpointArgs {
    pub pid: i32,
    /// Open for writing: a regular file, a pipe or a socket.
    pub fd: i32,
    /// `CHECKPOINT_*`.
    pub flags: u32,
    /// Freeze timeout as in [`FreezeArgs::timeout_ms`].
    pub timeout_ms: u32,
    /// Out: bytes written.
    pub bytes: u64,
    /// Out: pages of memory written.
    pub pages: u64,
    /// Out: threads and VMAs written.
    pub nr_threads: u32,
    pub nr_vmas: u32,
    /// Out: ns from the start of the call until all threads were parked, and until
    /// the image was written.
    pub freeze_ns: u64,
    pub write_ns: u64,
}

/// Kill the target (SIGKILL) after a successful checkpoint, instead of releasing it.
pub const CHECKPOINT_KILL: u32 = 1;
/// Keep the target frozen after a successful checkpoint (until THAW or close).
pub const CHECKPOINT_KEEP_FROZEN: u32 = 2;
/// All defined checkpoint flags.
pub const CHECKPOINT_FLAGS: u32 = CHECKPOINT_KILL | CHECKPOINT_KEEP_FROZEN;

/// Argument of `STASIS_IOC_RESTART`, called by the restarting helper (another
/// process, e.g. `stasis restart`).
///
/// The module reads the whole image from `fd` (a regular file open for reading, read
/// from offset 0 with pread semantics: the file position is not used; at most
/// [`RESTART_MAX_IMAGE`] bytes) into kernel memory and validates all of it with
/// stasis-image's `ProcessImage::parse` (every checksum, framing, record contents),
/// then checks it against this machine: page size, every thread's XSAVE features
/// (`xstate_bv`) enabled in this CPU's XCR0, XSAVE areas no larger than this CPU's,
/// at most [`VersionInfo::max_threads`] threads, every VMA inside the user address
/// space. A refused image gives EINVAL (malformed), EOPNOTSUPP (valid but not
/// restartable here: reason logged), EFBIG (too large), EBADF.
///
/// With [`RESTART_VALIDATE_ONLY`] that is all (`pid` must be 0). Otherwise `pid` names
/// the future process (in the caller's pid namespace): every one of its threads must
/// be parked in `RESTART_THREAD` (waited for up to `timeout_ms`, 0 = 10 s), with
/// exactly the image's TIDs (as seen in the process's own pid namespace), and the
/// caller must be allowed to ptrace it. Then, in order: each thread's XSAVE state is
/// set (by the caller, as ptrace does); the leader, in its own context, replaces its
/// address space (everything but the vDSO/vvar, which must already sit at the
/// image's addresses) with the image's VMAs and pages; then every thread sets its
/// registers, signal mask, sigaltstack and rseq registration and returns to user
/// mode in its checkpointed context. Before the address space is touched any
/// failure leaves the future process intact (its RESTART_THREAD calls fail with
/// ECANCELED); after that, a failure kills it (SIGKILL) and is returned here.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RestartArgs {
    /// The image, open for reading.
    pub fd: i32,
    /// `RESTART_*`.
    pub flags: u32,
    /// The future process (0 with [`RESTART_VALIDATE_ONLY`]).
    pub pid: i32,
    /// How long to wait for its threads to park, ms (0: 10 s).
    pub timeout_ms: u32,
    /// Out: image size in bytes.
    pub bytes: u64,
    /// Out: pages of memory in the image.
    pub pages: u64,
    /// Out: threads and VMAs in the image.
    pub nr_threads: u32,
    pub nr_vmas: u32,
}

/// Only validate the image (against this machine) and report its counts.
pub const RESTART_VALIDATE_ONLY: u32 = 1;
/// With [`RESTART_VALIDATE_ONLY`]: keep the loaded, validated image in this open file
/// of /dev/stasis (replacing one kept before), for a later [`RESTART_KEPT`]. Freed
/// when the file is closed.
pub const RESTART_KEEP: u32 = 2;
/// Restart from the image a [`RESTART_KEEP`] validation left in this open file
/// (`fd` must be -1; EINVAL when none is kept). The image is read and validated once.
pub const RESTART_KEPT: u32 = 4;
/// All defined restart flags.
pub const RESTART_FLAGS: u32 = RESTART_VALIDATE_ONLY | RESTART_KEEP | RESTART_KEPT;
/// Largest image RESTART reads: it is held in kernel memory (one kvmalloc, which
/// refuses more than INT_MAX bytes) while validated and restored.
pub const RESTART_MAX_IMAGE: u64 = (1 << 31) - 1;

/// Argument of `STASIS_IOC_RESTART_THREAD`, called by each thread of the future
/// process with all signals blocked, after it has set what ordinary system calls
/// can set (fs/gs base, robust list, clear_child_tid, name; process wide: files,
/// cwd, rlimits, signal handlers, mm fields and auxv with PR_SET_MM_MAP, the vDSO
/// moved to the image's address). The call parks the thread (killable) until a
/// RESTART for its process, then returns to user mode in the checkpointed context
/// (every register, rax included, is the image's); it returns -1 only on failure:
/// ECANCELED (the RESTART refused the image or failed before touching the address
/// space), ETIMEDOUT (no RESTART within `timeout_ms`, 0 = 30 s), EBUSY (a RESTART for
/// this process is already running), EINVAL, EFAULT, ENOMEM.
///
/// Only the leader passes `map_fds`/`close_fds` (others: 0): the file (or memfd /
/// shared memory object) to map at each file-backed or shared VMA, by VMA start
/// (fds of the process itself), and the fds the kernel closes once the restart
/// succeeded (the map files, the image, this /dev/stasis fd).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RestartThreadArgs {
    /// Must be 0.
    pub flags: u32,
    /// ms to wait for a RESTART while none has claimed the process (0: 30 s).
    pub timeout_ms: u32,
    /// User address of `nr_map_fds` [`MapFd`].
    pub map_fds: u64,
    /// User address of `nr_close_fds` `i32`.
    pub close_fds: u64,
    pub nr_map_fds: u32,
    pub nr_close_fds: u32,
}

/// One entry of [`RestartThreadArgs::map_fds`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct MapFd {
    /// Start of the image's VMA.
    pub start: u64,
    /// An fd of the calling process: the file to map there.
    pub fd: i32,
    pub _reserved: u32,
}

/// Most entries in [`RestartThreadArgs::map_fds`] / `close_fds`.
pub const RESTART_MAX_FDS: u32 = 65536;

/// One parked thread, as its task_work callback saw it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct FrozenThread {
    /// Thread id in the caller's pid namespace.
    pub tid: i32,
    /// `FROZEN_*` flags.
    pub flags: u32,
    pub rip: u64,
    pub rsp: u64,
    /// Still holds -ERESTART* when the thread was in a system call: the callback
    /// runs before the kernel's syscall-restart fixup.
    pub rax: u64,
    pub orig_rax: u64,
}

/// [`FrozenThread::flags`]: rax holds -ERESTARTSYS/-ERESTARTNOINTR/
/// -ERESTARTNOHAND/-ERESTART_RESTARTBLOCK (the thread was in a system call).
pub const FROZEN_IN_SYSCALL_RESTART: u32 = 1;

/// The kernel's syscall-restart error codes (include/linux/errno.h).
pub const ERESTARTSYS: i64 = 512;
pub const ERESTARTNOINTR: i64 = 513;
pub const ERESTARTNOHAND: i64 = 514;
pub const ERESTART_RESTARTBLOCK: i64 = 516;

/// True when `rax` is one of -ERESTART*.
pub const fn is_restart_rax(rax: u64) -> bool {
    let v = rax as i64;
    v == -ERESTARTSYS || v == -ERESTARTNOINTR || v == -ERESTARTNOHAND || v == -ERESTART_RESTARTBLOCK
}

/// x86_64 `struct user_regs_struct` (the NT_PRSTATUS regset), as regset_get fills it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct UserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

const _: () = assert!(size_of::<VersionInfo>() == 24);
const _: () = assert!(size_of::<FreezeArgs>() == 32);
const _: () = assert!(size_of::<FrozenThread>() == 40);
const _: () = assert!(size_of::<UserRegs>() == 27 * 8);
const _: () = assert!(size_of::<CheckpointArgs>() == 56);
const _: () = assert!(size_of::<RestartArgs>() == 40);
const _: () = assert!(size_of::<RestartThreadArgs>() == 32);
const _: () = assert!(size_of::<MapFd>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        // _IOR(0xB5, 0, 24)
        assert_eq!(IOC_VERSION, 0x8018_b500);
        assert_eq!(ioc_size(IOC_FREEZE), 32);
        assert_eq!(IOC_THAW, 0x0000_b502);
        assert!(is_restart_rax((-512i64) as u64));
        assert!(!is_restart_rax(0));
        assert_eq!(ext_name(EXT_FILES), Some("files"));
    }
}

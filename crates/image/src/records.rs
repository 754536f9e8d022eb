//! Record kinds and their fixed-layout payloads.
//!
//! Every payload starts with one of the `#[repr(C)]` structs below, read and
//! written zero-copy. Some are followed by a variable *tail* whose length is
//! given by fields of the fixed part (paths, arrays, siginfo blobs), and page
//! carrying records are followed by padding and page-aligned data located by
//! their `data_off` field. All integers are little-endian (the only supported
//! architecture is x86_64). Every struct is a multiple of 8 bytes with explicit
//! padding fields, which must be zero.
//!
//! A record kind is a `u32`: the high 16 bits name the extension that owns it
//! (0 is the core, `stasis.ko`), the low 16 bits the kind within it.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Extension that owns a record kind (high 16 bits of the kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Extension {
    /// Memory, threads, signals, limits: `stasis.ko`.
    Core = 0,
    /// Regular files, directories, devices, terminals, pipes, FIFOs: `stasis_files.ko`.
    Files = 1,
    /// Sockets: `stasis_net.ko`.
    Net = 2,
    /// eventfd, timerfd, signalfd, epoll: `stasis_events.ko`.
    Events = 3,
    /// SysV IPC: `stasis_ipc.ko`.
    Ipc = 4,
    /// Process trees: `stasis_tree.ko`.
    Tree = 5,
}

impl Extension {
    /// The extension owning `kind`, if the id is one this crate knows.
    pub fn of_kind(kind: u32) -> Option<Extension> {
        match kind >> 16 {
            0 => Some(Extension::Core),
            1 => Some(Extension::Files),
            2 => Some(Extension::Net),
            3 => Some(Extension::Events),
            4 => Some(Extension::Ipc),
            5 => Some(Extension::Tree),
            _ => None,
        }
    }

    /// Short name, as in `stasis_<name>.ko`.
    pub fn name(self) -> &'static str {
        match self {
            Extension::Core => "core",
            Extension::Files => "files",
            Extension::Net => "net",
            Extension::Events => "events",
            Extension::Ipc => "ipc",
            Extension::Tree => "tree",
        }
    }

    /// Kernel module implementing this extension for the kernel engine.
    pub fn module(self) -> &'static str {
        match self {
            Extension::Core => "stasis.ko",
            Extension::Files => "stasis_files.ko",
            Extension::Net => "stasis_net.ko",
            Extension::Events => "stasis_events.ko",
            Extension::Ipc => "stasis_ipc.ko",
            Extension::Tree => "stasis_tree.ko",
        }
    }
}

/// Record kind numbers.
pub mod kind {
    // ---- core (extension 0) ----
    /// [`super::ProcessRec`]. Always the first record.
    pub const PROCESS: u32 = 0x0000_0001;
    /// [`super::MmRec`] + tail: auxv words, then the exe path.
    pub const MM: u32 = 0x0000_0002;
    /// [`super::VmaRec`] + tail: path.
    pub const VMA: u32 = 0x0000_0003;
    /// [`super::PagesRec`] + [`super::PageRun`] array + padding + page data.
    pub const PAGES: u32 = 0x0000_0004;
    /// [`super::ThreadRec`].
    pub const THREAD: u32 = 0x0000_0005;
    /// [`super::XstateRec`] + tail: the XSAVE area.
    pub const XSTATE: u32 = 0x0000_0006;
    /// [`super::SigactionsRec`].
    pub const SIGACTIONS: u32 = 0x0000_0007;
    /// [`super::SigpendingRec`] + tail: `count` [`super::Siginfo`].
    pub const SIGPENDING: u32 = 0x0000_0008;
    /// [`super::RlimitsRec`].
    pub const RLIMITS: u32 = 0x0000_0009;
    /// [`super::FsRec`] + tail: cwd, then root.
    pub const FS: u32 = 0x0000_000a;
    /// [`super::ItimersRec`].
    pub const ITIMERS: u32 = 0x0000_000b;
    /// [`super::PosixTimerRec`].
    pub const POSIX_TIMER: u32 = 0x0000_000c;
    /// [`super::CpuRec`]: the checkpointing CPU. Written OPTIONAL (added in
    /// version 1 after the first images).
    pub const CPU: u32 = 0x0000_000d;
    /// [`super::EndRec`]. Always the last record.
    pub const END: u32 = 0x0000_ffff;

    // ---- files (extension 1) ----
    /// [`super::FdFileRec`] + tail: path.
    pub const FD_FILE: u32 = 0x0001_0001;
    /// [`super::FileDataRec`] + padding + data (contents of a deleted file).
    pub const FILE_DATA: u32 = 0x0001_0002;
    /// [`super::FdPipeRec`] + tail: FIFO path (empty for a pipe).
    pub const FD_PIPE: u32 = 0x0001_0003;
    /// [`super::PipeDataRec`] + tail: the bytes buffered in the pipe.
    pub const PIPE_DATA: u32 = 0x0001_0004;

    // ---- net (extension 2) ----
    /// [`super::SocketRec`].
    pub const FD_SOCKET: u32 = 0x0002_0001;

    // ---- events (extension 3) ----
    /// [`super::EventfdRec`].
    pub const FD_EVENTFD: u32 = 0x0003_0001;
    /// [`super::TimerfdRec`].
    pub const FD_TIMERFD: u32 = 0x0003_0002;
    /// [`super::SignalfdRec`].
    pub const FD_SIGNALFD: u32 = 0x0003_0003;
    /// [`super::EpollRec`] + tail: `count` [`super::EpollTarget`].
    pub const FD_EPOLL: u32 = 0x0003_0004;

    // ---- ipc (extension 4) ----
    /// [`super::SysvShmRec`] + padding + data.
    pub const SYSV_SHM: u32 = 0x0004_0001;

    // ---- tree (extension 5) ----
    /// [`super::TaskTreeRec`] + tail: `count` [`super::TreeEntry`].
    pub const TASK_TREE: u32 = 0x0005_0001;
}

/// Which engine wrote an image (header field `engine`).
pub mod engine {
    /// The kernel module engine.
    pub const KERNEL: u32 = 1;
    /// The ptrace based user engine.
    pub const USER: u32 = 2;
}

/// Architecture ids (header field `arch`).
pub mod arch {
    /// x86_64.
    pub const X86_64: u32 = 1;
}

macro_rules! record_struct {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }
        impl Default for $name {
            fn default() -> Self { <Self as zerocopy::FromZeros>::new_zeroed() }
        }
    };
}

record_struct! {
    /// Per process identity and credentials. First record of an image.
    pub struct ProcessRec {
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
        /// personality(2) value.
        pub personality: u32,
        /// Number of THREAD records that follow.
        pub nr_threads: u32,
        /// Process command name (NUL padded).
        pub comm: [u8; 16],
        /// prctl(PR_GET_DUMPABLE).
        pub dumpable: u32,
        /// Signal sent to the parent on exit.
        pub exit_signal: u32,
        /// Capabilities held (effective); never raised at restart.
        pub cap_effective: u64,
        pub cap_permitted: u64,
        pub cap_inheritable: u64,
        /// nice value + 20 (so it fits unsigned).
        pub nice: u32,
        pub _pad0: u32,
    }
}

record_struct! {
    /// mm_struct fields (prctl PR_SET_MM_MAP) + tail: `auxv_words` u64 auxv
    /// words (key/value pairs, AT_NULL terminated), then `exe_len` bytes of
    /// the executable's path.
    pub struct MmRec {
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
        /// Address of the vDSO text as the process knows it (AT_SYSINFO_EHDR).
        pub vdso: u64,
        /// Number of u64 auxv words in the tail.
        pub auxv_words: u32,
        /// Length of the exe path in the tail.
        pub exe_len: u32,
    }
}

/// VMA kinds ([`VmaRec::kind`]).
pub mod vma_kind {
    /// Private anonymous memory.
    pub const ANON_PRIVATE: u32 = 1;
    /// Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS); same `shm_id` = same object.
    pub const ANON_SHARED: u32 = 2;
    /// Private file mapping (contents of dirty pages are in PAGES records).
    pub const FILE_PRIVATE: u32 = 3;
    /// Shared file mapping (data lives in the file).
    pub const FILE_SHARED: u32 = 4;
    /// The vDSO text.
    pub const VDSO: u32 = 5;
    /// The vvar data page(s) next to the vDSO.
    pub const VVAR: u32 = 6;
    /// The legacy vsyscall page (never remapped).
    pub const VSYSCALL: u32 = 7;
    /// The brk heap.
    pub const HEAP: u32 = 8;
    /// The main thread stack (grows down).
    pub const STACK: u32 = 9;
    /// SysV shared memory attachment; `shm_id` names the SYSV_SHM record.
    pub const SYSV_SHM: u32 = 10;
}

/// VMA flags ([`VmaRec::flags`]).
pub mod vma_flags {
    /// MAP_SHARED semantics.
    pub const SHARED: u32 = 1 << 0;
    /// Grows down (stack).
    pub const GROWSDOWN: u32 = 1 << 1;
    /// The mapped file was deleted.
    pub const FILE_DELETED: u32 = 1 << 2;
    /// madvise(MADV_DONTFORK).
    pub const DONTFORK: u32 = 1 << 3;
    /// madvise(MADV_DONTDUMP).
    pub const DONTDUMP: u32 = 1 << 4;
    /// VM_LOCKED.
    pub const LOCKED: u32 = 1 << 5;
    /// Was set up MAP_NORESERVE.
    pub const NORESERVE: u32 = 1 << 6;
    /// madvise(MADV_HUGEPAGE) (VM_HUGEPAGE, VmFlags `hg`).
    pub const HUGEPAGE: u32 = 1 << 7;
    /// madvise(MADV_NOHUGEPAGE) (VM_NOHUGEPAGE, VmFlags `nh`). A restart
    /// applies it before filling the pages, so that with THP `always` the
    /// fill does not fault in huge pages.
    pub const NOHUGEPAGE: u32 = 1 << 8;
}

record_struct! {
    /// One mapping. Tail: `path_len` bytes of the mapped file's path (or a
    /// pseudo name like `[heap]`).
    pub struct VmaRec {
        pub start: u64,
        pub end: u64,
        /// File offset in bytes.
        pub offset: u64,
        /// PROT_READ | PROT_WRITE | PROT_EXEC.
        pub prot: u32,
        /// [`vma_flags`].
        pub flags: u32,
        /// [`vma_kind`].
        pub kind: u32,
        pub path_len: u32,
        pub dev: u64,
        pub ino: u64,
        /// Identity of a shared object (ANON_SHARED / SYSV_SHM), 0 otherwise.
        pub shm_id: u64,
    }
}

record_struct! {
    /// Page contents for one VMA. Followed by `nr_runs` [`PageRun`], then
    /// zero padding up to `data_off` (a page-aligned stream offset), then
    /// `nr_pages * page_size` bytes of page data in run order.
    pub struct PagesRec {
        /// Start of the VMA these pages belong to (a VMA record before this one).
        pub vma_start: u64,
        pub nr_runs: u32,
        pub _pad0: u32,
        /// Total pages over all runs.
        pub nr_pages: u64,
        /// Offset of the page data from the start of the payload.
        pub data_off: u64,
    }
}

record_struct! {
    /// A run of consecutive pages starting at `addr`.
    pub struct PageRun {
        pub addr: u64,
        pub nr_pages: u64,
    }
}

record_struct! {
    /// `struct user_regs_struct` of x86_64, field for field.
    pub struct UserRegs {
        pub r15: u64, pub r14: u64, pub r13: u64, pub r12: u64,
        pub rbp: u64, pub rbx: u64, pub r11: u64, pub r10: u64,
        pub r9: u64, pub r8: u64, pub rax: u64, pub rcx: u64,
        pub rdx: u64, pub rsi: u64, pub rdi: u64, pub orig_rax: u64,
        pub rip: u64, pub cs: u64, pub eflags: u64, pub rsp: u64,
        pub ss: u64, pub fs_base: u64, pub gs_base: u64, pub ds: u64,
        pub es: u64, pub fs: u64, pub gs: u64,
    }
}

/// Thread flags ([`ThreadRec::flags`]).
pub mod thread_flags {
    /// The thread group leader.
    pub const LEADER: u32 = 1 << 0;
    /// Registers were taken inside a system call and already carry the
    /// restart fixup (rax = orig_rax, rip -= 2) or the EINTR outcome.
    pub const SYSCALL_FIXED: u32 = 1 << 1;
}

record_struct! {
    /// One thread. Its XSTATE and SIGPENDING records follow it.
    pub struct ThreadRec {
        pub tid: u32,
        /// [`thread_flags`].
        pub flags: u32,
        /// General registers, after the syscall-restart fixup.
        pub regs: UserRegs,
        /// Blocked signal mask (bit n-1 = signal n).
        pub sigmask: u64,
        pub altstack_sp: u64,
        pub altstack_size: u64,
        pub altstack_flags: u32,
        pub _pad0: u32,
        pub clear_child_tid: u64,
        pub robust_list: u64,
        pub robust_list_len: u64,
        pub rseq_addr: u64,
        pub rseq_len: u32,
        pub rseq_sig: u32,
        /// Thread name (NUL padded).
        pub comm: [u8; 16],
    }
}

record_struct! {
    /// XSAVE area of one thread (tail, `size` bytes, the NT_X86_XSTATE layout:
    /// 512 bytes legacy FXSAVE, 64 bytes header, extended components in the
    /// standard non-compacted format).
    pub struct XstateRec {
        pub tid: u32,
        pub size: u32,
        /// XSTATE_BV of the saved area.
        pub xstate_bv: u64,
        /// XCR0 of the checkpointing CPU: the features the area may hold.
        pub xcr0: u64,
    }
}

record_struct! {
    /// CPU: the checkpointing CPU, as user code saw it. `features` holds
    /// CPUID output words (see [`crate::x86::cpu::word`]); `xsave_offset` and
    /// `xsave_size` give, for each XSAVE component bit, where it sits in
    /// that CPU's standard-format area (0/0 for a component it lacks). The
    /// XSTATE areas of the image are laid out that way.
    pub struct CpuRec {
        /// CPUID.0 vendor string (EBX, EDX, ECX).
        pub vendor: [u8; 12],
        /// CPUID.1:EAX (family, model, stepping).
        pub signature: u32,
        /// XCR0 (0: no XSAVE; the XSTATE areas then hold FXSAVE state).
        pub xcr0: u64,
        /// CPUID feature words.
        pub features: [u32; 12],
        /// Standard-format offset of XSAVE component i.
        pub xsave_offset: [u32; 32],
        /// Size of XSAVE component i.
        pub xsave_size: [u32; 32],
    }
}

record_struct! {
    /// One signal disposition.
    pub struct Sigaction {
        pub handler: u64,
        pub flags: u64,
        pub restorer: u64,
        pub mask: u64,
    }
}

record_struct! {
    /// Dispositions of signals 1..=64 (index = signal - 1).
    pub struct SigactionsRec {
        pub actions: [Sigaction; 64],
    }
}

record_struct! {
    /// Pending signals of one thread (`tid`) or, with `tid == 0`, of the
    /// whole process. Tail: `count` [`Siginfo`].
    pub struct SigpendingRec {
        pub tid: u32,
        pub count: u32,
    }
}

record_struct! {
    /// A raw `siginfo_t` (128 bytes).
    pub struct Siginfo {
        pub bytes: [u8; 128],
    }
}

record_struct! {
    /// One resource limit.
    pub struct Rlimit {
        pub cur: u64,
        pub max: u64,
    }
}

record_struct! {
    /// All 16 resource limits (index = RLIMIT_* number).
    pub struct RlimitsRec {
        pub limits: [Rlimit; 16],
    }
}

record_struct! {
    /// Filesystem context. Tail: `cwd_len` bytes of cwd, `root_len` bytes of root.
    pub struct FsRec {
        pub umask: u32,
        pub cwd_len: u32,
        pub root_len: u32,
        pub _pad0: u32,
    }
}

record_struct! {
    /// An interval timer value in nanoseconds.
    pub struct TimerVal {
        pub interval_ns: u64,
        pub value_ns: u64,
    }
}

record_struct! {
    /// ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF.
    pub struct ItimersRec {
        pub real: TimerVal,
        pub virt: TimerVal,
        pub prof: TimerVal,
    }
}

record_struct! {
    /// One POSIX timer (timer_create).
    pub struct PosixTimerRec {
        pub id: u32,
        pub clock_id: u32,
        pub sigev_notify: u32,
        pub sigev_signo: u32,
        pub sigev_value: u64,
        pub notify_tid: u32,
        pub overrun: u32,
        pub timer: TimerVal,
    }
}

record_struct! {
    /// Last record of every image.
    pub struct EndRec {
        /// Number of records before this one.
        pub nr_records: u64,
        /// Total bytes of page data in the image.
        pub page_bytes: u64,
    }
}

// ---- files extension ----

/// File kinds ([`FdFileRec::kind`]).
pub mod file_kind {
    pub const REGULAR: u32 = 1;
    pub const DIRECTORY: u32 = 2;
    pub const CHAR_DEVICE: u32 = 3;
    pub const BLOCK_DEVICE: u32 = 4;
    /// A terminal (tty/pty): reattached to the restarting terminal.
    pub const TTY: u32 = 5;
    pub const MEMFD: u32 = 6;
}

/// Flags of [`FdFileRec::file_flags`].
pub mod file_flags {
    /// The file was unlinked; its contents are in a FILE_DATA record.
    pub const DELETED: u32 = 1 << 0;
}

record_struct! {
    /// An open file descriptor on a path-named object. Tail: path.
    pub struct FdFileRec {
        pub fd: u32,
        /// FD_CLOEXEC.
        pub fd_flags: u32,
        /// O_* status and access flags.
        pub open_flags: u32,
        /// [`file_kind`].
        pub kind: u32,
        /// Identity of the open file description within this image: fds with
        /// the same id share offset and flags (dup).
        pub file_id: u32,
        /// [`file_flags`].
        pub file_flags: u32,
        pub pos: u64,
        pub size: u64,
        pub mode: u32,
        pub path_len: u32,
        pub dev: u64,
        pub ino: u64,
        pub rdev: u64,
    }
}

record_struct! {
    /// Contents of a deleted file (`file_id` of its FD_FILE). Followed by
    /// padding up to `data_off` (page aligned in the stream), then `size` bytes.
    pub struct FileDataRec {
        pub file_id: u32,
        pub _pad0: u32,
        pub size: u64,
        pub data_off: u64,
    }
}

record_struct! {
    /// One end of a pipe or FIFO. Tail: FIFO path (empty for pipes).
    pub struct FdPipeRec {
        pub fd: u32,
        pub fd_flags: u32,
        pub open_flags: u32,
        /// Same id = same pipe.
        pub pipe_id: u32,
        pub file_id: u32,
        /// 1 for a named FIFO.
        pub fifo: u32,
        /// Pipe capacity (F_GETPIPE_SZ).
        pub capacity: u32,
        pub path_len: u32,
        pub ino: u64,
    }
}

record_struct! {
    /// Bytes buffered in pipe `pipe_id` (tail: `len` bytes).
    pub struct PipeDataRec {
        pub pipe_id: u32,
        pub _pad0: u32,
        pub len: u64,
    }
}

// ---- net extension ----

record_struct! {
    /// A socket.
    pub struct SocketRec {
        pub fd: u32,
        pub fd_flags: u32,
        pub open_flags: u32,
        pub file_id: u32,
        pub family: u32,
        pub sock_type: u32,
        pub protocol: u32,
        /// TCP state or 0; 10 = listening.
        pub state: u32,
        pub backlog: u32,
        pub local_len: u32,
        pub peer_len: u32,
        pub _pad0: u32,
        pub local: [u8; 128],
        pub peer: [u8; 128],
    }
}

// ---- events extension ----

record_struct! {
    /// An eventfd.
    pub struct EventfdRec {
        pub fd: u32,
        pub fd_flags: u32,
        pub open_flags: u32,
        pub file_id: u32,
        pub count: u64,
        /// EFD_SEMAPHORE etc.
        pub efd_flags: u32,
        pub _pad0: u32,
    }
}

record_struct! {
    /// A timerfd.
    pub struct TimerfdRec {
        pub fd: u32,
        pub fd_flags: u32,
        pub open_flags: u32,
        pub file_id: u32,
        pub clock_id: u32,
        pub settime_flags: u32,
        pub timer: TimerVal,
        pub ticks: u64,
    }
}

record_struct! {
    /// A signalfd.
    pub struct SignalfdRec {
        pub fd: u32,
        pub fd_flags: u32,
        pub open_flags: u32,
        pub file_id: u32,
        pub mask: u64,
    }
}

record_struct! {
    /// An epoll instance. Tail: `count` [`EpollTarget`].
    pub struct EpollRec {
        pub fd: u32,
        pub fd_flags: u32,
        pub open_flags: u32,
        pub file_id: u32,
        pub count: u32,
        pub _pad0: u32,
    }
}

record_struct! {
    /// One watched fd of an epoll instance.
    pub struct EpollTarget {
        pub tfd: u32,
        pub events: u32,
        pub data: u64,
    }
}

// ---- ipc extension ----

record_struct! {
    /// A SysV shared memory segment. Followed by padding up to `data_off`,
    /// then `size` bytes.
    pub struct SysvShmRec {
        pub key: i32,
        pub shmid: i32,
        pub mode: u32,
        pub _pad0: u32,
        pub size: u64,
        pub data_off: u64,
    }
}

// ---- tree extension ----

record_struct! {
    /// The process tree. Tail: `count` [`TreeEntry`].
    pub struct TaskTreeRec {
        pub count: u32,
        pub _pad0: u32,
    }
}

record_struct! {
    /// One process of a tree.
    pub struct TreeEntry {
        pub pid: u32,
        pub ppid: u32,
        pub pgid: u32,
        pub sid: u32,
    }
}

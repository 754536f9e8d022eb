//! Names of record kinds.

use crate::records::kind;

/// Name of a record kind, for messages and `inspect` output
/// (`"PAGES"`, `"FD_FILE"`, ...; `"UNKNOWN"` for kinds this crate does not know).
pub fn kind_name(k: u32) -> &'static str {
    match k {
        kind::PROCESS => "PROCESS",
        kind::MM => "MM",
        kind::VMA => "VMA",
        kind::PAGES => "PAGES",
        kind::THREAD => "THREAD",
        kind::XSTATE => "XSTATE",
        kind::SIGACTIONS => "SIGACTIONS",
        kind::SIGPENDING => "SIGPENDING",
        kind::RLIMITS => "RLIMITS",
        kind::FS => "FS",
        kind::ITIMERS => "ITIMERS",
        kind::POSIX_TIMER => "POSIX_TIMER",
        kind::CPU => "CPU",
        kind::END => "END",
        kind::FD_FILE => "FD_FILE",
        kind::FILE_DATA => "FILE_DATA",
        kind::FD_PIPE => "FD_PIPE",
        kind::PIPE_DATA => "PIPE_DATA",
        kind::FD_SOCKET => "FD_SOCKET",
        kind::FD_EVENTFD => "FD_EVENTFD",
        kind::FD_TIMERFD => "FD_TIMERFD",
        kind::FD_SIGNALFD => "FD_SIGNALFD",
        kind::FD_EPOLL => "FD_EPOLL",
        kind::SYSV_SHM => "SYSV_SHM",
        kind::TASK_TREE => "TASK_TREE",
        _ => "UNKNOWN",
    }
}

/// Whether this crate knows the kind.
pub fn is_known_kind(k: u32) -> bool {
    kind_name(k) != "UNKNOWN"
}

/// Every kind this crate knows, in numeric order.
pub const ALL_KINDS: [u32; 25] = [
    kind::PROCESS,
    kind::MM,
    kind::VMA,
    kind::PAGES,
    kind::THREAD,
    kind::XSTATE,
    kind::SIGACTIONS,
    kind::SIGPENDING,
    kind::RLIMITS,
    kind::FS,
    kind::ITIMERS,
    kind::POSIX_TIMER,
    kind::CPU,
    kind::END,
    kind::FD_FILE,
    kind::FILE_DATA,
    kind::FD_PIPE,
    kind::PIPE_DATA,
    kind::FD_SOCKET,
    kind::FD_EVENTFD,
    kind::FD_TIMERFD,
    kind::FD_SIGNALFD,
    kind::FD_EPOLL,
    kind::SYSV_SHM,
    kind::TASK_TREE,
];

/// Payload offset of the `data_off` field of data-carrying kinds.
pub fn data_off_field(k: u32) -> Option<usize> {
    match k {
        kind::PAGES => Some(core::mem::offset_of!(crate::records::PagesRec, data_off)),
        kind::FILE_DATA => Some(core::mem::offset_of!(crate::records::FileDataRec, data_off)),
        kind::SYSV_SHM => Some(core::mem::offset_of!(crate::records::SysvShmRec, data_off)),
        _ => None,
    }
}

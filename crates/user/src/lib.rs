//! The stasis user engine: checkpoint and restart without a kernel module.
//!
//! Checkpoint ([`dump`]) seizes and interrupts every thread with ptrace, reads
//! memory through /proc and process_vm_readv and writes a `stasis-image`.
//! Restart ([`restore`]) prepares a child with the image's PID, maps a small
//! position independent restorer blob in a hole of the image's layout and
//! jumps to it; the restorer replaces the address space and brings every
//! thread back through rt_sigreturn.

pub mod dump;
pub mod proc;
pub mod ptrace;
pub mod restore;
pub mod sys;

pub use dump::{checkpoint, After, CheckpointStats, DumpError, Frozen, KILL_TIMEOUT};
pub use restore::{restart, RestartOpts, RestartOutcome, RestoreError};

/// Progress reporting for long checkpoints and restarts (the CLI draws a bar).
pub trait Progress: Sync {
    /// Total bytes of page data expected.
    fn set_total(&self, bytes: u64);
    /// `bytes` more were written or restored.
    fn advance(&self, bytes: u64);
}

//! Checkpoint through ptrace and /proc. (Being written.)
use std::time::Duration;

/// What happens to the target once its image is safely written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Let it run on (default).
    LeaveRunning,
    /// SIGKILL it.
    Kill,
    /// Leave it stopped with SIGSTOP (not traced).
    Stop,
}

/// Numbers about one checkpoint.
#[derive(Clone, Debug, Default)]
pub struct CheckpointStats {
    pub threads: usize,
    pub vmas: usize,
    pub page_bytes: u64,
    pub image_bytes: u64,
    /// How long the target was frozen (seize to image written).
    pub frozen: Duration,
}

/// Errors of the checkpoint side.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("the user engine's checkpoint is not implemented yet")]
    NotImplemented,
}

/// A frozen target whose image has been written. Dropping it lets the target run on.
pub struct Frozen {
    _private: (),
}

impl Frozen {
    /// Release the target: run on, kill it, or leave it stopped.
    pub fn release(self, _after: After) -> Result<(), DumpError> {
        Err(DumpError::NotImplemented)
    }
}

/// Freeze `pid`, write its image to `out`, and return the still-frozen target.
pub fn checkpoint<W: std::io::Write>(
    _pid: i32,
    _out: W,
    _progress: Option<&dyn crate::Progress>,
) -> Result<(Frozen, W, CheckpointStats), DumpError> {
    Err(DumpError::NotImplemented)
}

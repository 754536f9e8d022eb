//! Restart through a restorer blob. (Being written.)
use std::path::Path;

/// Options of a restart.
#[derive(Default)]
pub struct RestartOpts<'a> {
    /// Do not wait for the restored process: return once it runs.
    pub detach: bool,
    /// Restart inside a new PID namespace (so PIDs in use elsewhere don't clash).
    pub pidns: bool,
    pub progress: Option<&'a dyn crate::Progress>,
}

/// How a restart ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartOutcome {
    /// The process runs on, detached from us.
    Detached { pid: i32 },
    /// The restored process exited with `code`, or was killed by `signal`.
    Exited { pid: i32, code: Option<i32>, signal: Option<i32> },
}

/// Errors of the restart side.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the user engine's restart is not implemented yet")]
    NotImplemented,
}

/// Restart the image at `image`.
pub fn restart(_image: &Path, _opts: &RestartOpts) -> Result<RestartOutcome, RestoreError> {
    Err(RestoreError::NotImplemented)
}

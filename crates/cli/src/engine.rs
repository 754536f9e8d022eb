//! Engine selection: `auto` takes the kernel engine when /dev/stasis exists,
//! else the user engine.
//!
//! The kernel engine (`kernel.rs`, /dev/stasis from stasis.ko) only
//! checkpoints: the module has no restart yet. Images are interchangeable, so
//! `restart --engine auto` always takes the user engine, and
//! `restart --engine kernel` fails with exit 4.

use std::path::Path;

use crate::cli::EngineChoice;
use crate::error::CliError;

/// Character device of the kernel engine (created by stasis.ko).
pub const DEVICE: &str = stasis_abi::DEVICE_PATH;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    User,
    Kernel,
}

/// Resolve the user's choice for a checkpoint. The device is only looked
/// for here; opening it and checking its ABI version is `kernel.rs`'s job.
pub fn select(choice: EngineChoice, _quiet: bool) -> Result<Engine, CliError> {
    let device = Path::new(DEVICE).exists();
    match choice {
        EngineChoice::User => Ok(Engine::User),
        EngineChoice::Kernel if !device => Err(CliError::KernelModuleMissing),
        EngineChoice::Kernel => Ok(Engine::Kernel),
        EngineChoice::Auto if device => Ok(Engine::Kernel),
        EngineChoice::Auto => Ok(Engine::User),
    }
}

/// Resolve the user's choice for a restart: the kernel engine cannot restart
/// (yet), and `auto` takes the user engine even when /dev/stasis exists.
pub fn select_restart(choice: EngineChoice) -> Result<Engine, CliError> {
    match choice {
        EngineChoice::Kernel => Err(CliError::KernelCannotRestart),
        EngineChoice::User | EngineChoice::Auto => Ok(Engine::User),
    }
}

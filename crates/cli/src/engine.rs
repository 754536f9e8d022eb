//! Engine selection: `auto` takes the kernel engine when /dev/stasis exists,
//! else the user engine.
//!
//! This build has no kernel engine client (there is no stasis-abi crate and no
//! module yet), so the kernel engine is never pretended: `--engine kernel`
//! fails with exit 4, and `auto` falls back to the user engine, saying so when
//! /dev/stasis is present.

use std::path::Path;

use crate::cli::EngineChoice;
use crate::error::CliError;

/// Character device of the kernel engine (created by stasis.ko).
pub const DEVICE: &str = "/dev/stasis";

/// Whether this binary contains a client for the kernel engine's ioctl ABI.
const KERNEL_CLIENT_BUILT: bool = false;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    User,
}

/// Resolve the user's choice to an engine that can actually run here.
pub fn select(choice: EngineChoice, quiet: bool) -> Result<Engine, CliError> {
    let device = Path::new(DEVICE).exists();
    match choice {
        EngineChoice::User => Ok(Engine::User),
        EngineChoice::Kernel if !device => Err(CliError::KernelModuleMissing),
        EngineChoice::Kernel => {
            // KERNEL_CLIENT_BUILT is false: the module is loaded but we cannot drive it.
            Err(CliError::KernelClientMissing)
        }
        EngineChoice::Auto => {
            if device && !KERNEL_CLIENT_BUILT && !quiet {
                eprintln!(
                    "stasis: note: {DEVICE} exists but this build has no kernel engine client; using the user engine"
                );
            }
            Ok(Engine::User)
        }
    }
}

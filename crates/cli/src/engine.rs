//! Engine selection: `auto` takes the kernel engine when /dev/stasis exists,
//! else the user engine — for checkpoints and restarts alike.
//!
//! The kernel engine checkpoints through `kernel.rs` (/dev/stasis from
//! stasis.ko) and restarts through the user engine's kernel mode
//! (`RestartOpts::kernel`: the user engine prepares the process, the module
//! restores its memory and registers). Images are interchangeable.

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

/// Resolve the user's choice for a checkpoint or a restart. The device is
/// only looked for here; opening it and checking its ABI version is the
/// engine's job (`kernel.rs`, or the user engine's kernel mode).
pub fn select(choice: EngineChoice, _quiet: bool) -> Result<Engine, CliError> {
    resolve(choice, Path::new(DEVICE).exists())
}

fn resolve(choice: EngineChoice, device: bool) -> Result<Engine, CliError> {
    match choice {
        EngineChoice::User => Ok(Engine::User),
        EngineChoice::Kernel if !device => Err(CliError::KernelModuleMissing),
        EngineChoice::Kernel => Ok(Engine::Kernel),
        EngineChoice::Auto if device => Ok(Engine::Kernel),
        EngineChoice::Auto => Ok(Engine::User),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices() {
        for device in [false, true] {
            assert_eq!(resolve(EngineChoice::User, device).ok(), Some(Engine::User));
        }
        assert!(matches!(
            resolve(EngineChoice::Kernel, false),
            Err(CliError::KernelModuleMissing)
        ));
        assert_eq!(resolve(EngineChoice::Kernel, true).ok(), Some(Engine::Kernel));
        assert_eq!(resolve(EngineChoice::Auto, true).ok(), Some(Engine::Kernel));
        assert_eq!(resolve(EngineChoice::Auto, false).ok(), Some(Engine::User));
    }
}

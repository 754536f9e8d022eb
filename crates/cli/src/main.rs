//! `stasis`: the command line of the stasis checkpoint/restart system.
//!
//! One module per subcommand; errors become one `stasis: error: ...` line
//! (plus an optional `hint: ...`) and a documented exit status in `error`.

mod atomic;
mod checkpoint;
mod cli;
mod engine;
mod error;
mod imagefile;
mod inspect;
mod kernel;
mod names;
mod progress;
mod restart;
mod util;
mod verify;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::Code;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with status 2.
    let cli = Cli::parse();
    let quiet = cli.quiet;
    let result = match &cli.command {
        Command::Checkpoint(a) => checkpoint::run(a, quiet).map(|()| Code::Ok as u8),
        Command::Restart(a) => restart::run(a, quiet),
        Command::Inspect(a) => inspect::run(a).map(|()| Code::Ok as u8),
        Command::Verify(a) => verify::run(a, quiet).map(|()| Code::Ok as u8),
    };
    match result {
        Ok(status) => ExitCode::from(status),
        Err(err) => {
            error::report(&err);
            if let Some(sig) = error::interrupted_by(&err) {
                // Cleanup has run; die by the signal, as the caller expects.
                atomic::die_by(sig);
            }
            let code = match &cli.command {
                // The status of a waited-for restart belongs to the restored
                // process; our own failures get 125 so they cannot be confused.
                Command::Restart(a) if !a.detach => Code::RestartFailed,
                _ => error::classify(&err),
            };
            code.into()
        }
    }
}

//! `stasis restart IMAGE`.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{Context, Result};
use stasis_user::{RestartOpts, RestartOutcome};

use crate::cli::RestartArgs;
use crate::engine::{self, Engine};
use crate::error::CliError;
use crate::imagefile::is_stdio;
use crate::progress::Bar;

/// Copy standard input into a memfd, so the engine can read (and map) the
/// image from a path. Returns the memfd (kept open by us) and its path.
fn stdin_to_memfd() -> Result<(File, PathBuf)> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(CliError::StdinIsTerminal.into());
    }
    // SAFETY: memfd_create with a static NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"stasis-image".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot create a memfd for the image");
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::io::copy(&mut stdin.lock(), &mut file)
        .context("cannot read the image from standard input")?;
    file.flush().context("cannot buffer the image")?;
    // Our PID rather than "self", so the path also works from a child.
    let path = PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        file.as_raw_fd()
    ));
    Ok((file, path))
}

/// The exit status `stasis restart` should return (the restored process's).
pub fn run(args: &RestartArgs, quiet: bool) -> Result<u8> {
    // auto: the kernel engine when /dev/stasis exists, as for checkpoints.
    let engine = engine::select(args.engine, quiet)?;
    let (_keep, path) = if is_stdio(&args.image) {
        let (f, p) = stdin_to_memfd()?;
        (Some(f), p)
    } else {
        (None, args.image.clone())
    };
    let name = crate::imagefile::display_name(&args.image);
    crate::imagefile::check_header(&name, &path)?;
    let bar = Bar::new("restart", quiet);
    let opts = RestartOpts {
        detach: args.detach,
        pidns: args.pidns,
        // The kernel engine is the user engine's kernel mode: it prepares
        // the process, the module restores memory and registers.
        kernel: engine == Engine::Kernel,
        allow_cpu_mismatch: args.allow_cpu_mismatch,
        progress: Some(&bar),
    };
    let outcome =
        stasis_user::restart(&path, &opts).with_context(|| format!("restart from {name} failed"))?;
    bar.finish();
    Ok(match outcome {
        RestartOutcome::Detached { pid } => {
            // The process runs on either way; a caller that reads the PID must
            // learn that it did not get it.
            writeln!(std::io::stdout(), "{pid}").with_context(|| {
                format!("restored PID {pid} (it runs), but could not print its PID")
            })?;
            0
        }
        RestartOutcome::Exited {
            code: Some(code), ..
        } => (code & 0xff) as u8,
        RestartOutcome::Exited {
            signal: Some(sig), ..
        } => (128 + (sig & 0x7f)) as u8,
        // Neither an exit code nor a signal: the process ran, but the
        // engine could not tell how it ended.
        RestartOutcome::Exited {
            pid,
            code: None,
            signal: None,
        } => {
            crate::error::report(&anyhow::anyhow!(
                "restored process {pid} ended, but the engine did not report its exit status"
            ));
            crate::error::Code::Failed as u8
        }
    })
}

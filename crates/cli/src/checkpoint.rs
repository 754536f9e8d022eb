//! `stasis checkpoint PID -o IMAGE`.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use stasis_user::{After, CheckpointStats, Frozen};

use crate::atomic::{self, TempImage};
use crate::cli::CheckpointArgs;
use crate::engine::{self, Engine};
use crate::error::CliError;
use crate::imagefile::is_stdio;
use crate::progress::Bar;
use crate::util::mib;

/// Write buffer between the engine and the image file.
const BUF_SIZE: usize = 8 << 20;

/// PF_KTHREAD in /proc/PID/stat's flags field.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Counts the bytes that reach the file (the image size, also for pipes).
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Check that `pid` names a live user process we may signal, before any
/// file is created.
fn check_target(pid: i32) -> Result<(), CliError> {
    if pid <= 0 {
        return Err(CliError::BadTarget(pid));
    }
    if u32::try_from(pid).ok() == Some(std::process::id()) {
        return Err(CliError::SelfTarget(pid));
    }
    // SAFETY: signal 0 only checks existence and permission.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return Err(match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EPERM) => CliError::NotPermitted(pid),
            _ => CliError::NoSuchProcess(pid),
        });
    }
    // kill() also accepts thread IDs; /proc/PID/status says which process it belongs to.
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        let tgid = status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse::<i32>().ok());
        if let Some(tgid) = tgid {
            if tgid != pid {
                return Err(CliError::ThreadNotProcess { tid: pid, tgid });
            }
        }
    }
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Fields after "(comm) ": state ppid pgrp session tty_nr tpgid flags ...
        if let Some((_, rest)) = stat.rsplit_once(") ") {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.first() == Some(&"Z") {
                return Err(CliError::Zombie(pid));
            }
            let flags = fields
                .get(6)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
            if flags & PF_KTHREAD != 0 {
                return Err(CliError::BadTarget(pid));
            }
        }
    }
    Ok(())
}

pub fn run(args: &CheckpointArgs, quiet: bool) -> Result<()> {
    let pid = args.pid;
    let after = if args.kill {
        After::Kill
    } else if args.stop {
        After::Stop
    } else {
        After::LeaveRunning
    };
    let to_stdout = is_stdio(&args.output);
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(CliError::StdoutIsTerminal.into());
    }
    if !to_stdout && args.output.is_dir() {
        return Err(CliError::OutputIsDirectory(args.output.display().to_string()).into());
    }
    check_target(pid)?;
    let engine = engine::select(args.engine, quiet)?;

    // Where the engine writes: a temporary file next to IMAGE, or our stdout.
    let (temp, file) = if to_stdout {
        let fd = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("cannot duplicate standard output")?;
        (None, File::from(fd))
    } else {
        let (t, f) = TempImage::create(&args.output)?;
        (Some(t), f)
    };
    let _defer = to_stdout.then(atomic::DeferSignals::new);
    if engine == Engine::Kernel {
        // The module keeps the target frozen until the image is durable; the
        // release order is in kernel.rs.
        let (held, stats) = crate::kernel::write_image(pid, file, temp)
            .with_context(|| format!("checkpoint of PID {pid} failed"))?;
        held.release(after).with_context(|| {
            format!("the image is safely written, but releasing PID {pid} failed")
        })?;
        if !quiet {
            crate::util::say(format_args!(
                "checkpointed {pid} (kernel engine): {} thread{}, {} MiB of pages, image {} MiB, frozen {} ms",
                stats.threads,
                if stats.threads == 1 { "" } else { "s" },
                mib(stats.page_bytes),
                mib(stats.image_bytes),
                stats.frozen.as_millis()
            ));
        }
        return Ok(());
    }
    let bar = Bar::new("checkpoint", quiet);
    let (frozen, stats, image_bytes, frozen_for) = write_image(engine, pid, file, temp, &bar)
        .with_context(|| format!("checkpoint of PID {pid} failed"))?;
    // The image is durable: now, and only now, the target may be killed or stopped.
    release(frozen, after)
        .with_context(|| format!("the image is safely written, but releasing PID {pid} failed"))?;
    bar.finish();

    if !quiet {
        crate::util::say(format_args!(
            "checkpointed {pid}: {} thread{}, {} MiB of pages, image {} MiB, frozen {} ms",
            stats.threads,
            if stats.threads == 1 { "" } else { "s" },
            mib(stats.page_bytes),
            mib(image_bytes),
            frozen_for.as_millis()
        ));
    }
    Ok(())
}

/// Release the target as asked. `--kill` is the engine's `After::Kill`:
/// SIGKILL is sent while every thread is still in a ptrace stop, so the
/// target runs no instruction after its image was taken, and the engine
/// collects each traced thread's exit (bounded: `DumpError::KillTimeout`) so
/// no traced zombie is left; the real parent reaps the process as usual.
/// (An earlier workaround, "release stopped, then SIGKILL", made the real
/// parent see a job-control stop first, and left the target stopped for good
/// if stasis died between the two steps.)
fn release(frozen: Frozen, after: After) -> Result<()> {
    Ok(frozen.release(after)?)
}

/// Run the engine into `file` and make the result durable (under its final
/// name when `temp` is given). Any error drops the engine's `Frozen` guard,
/// so the target runs on, and `temp`, which removes the temporary file.
fn write_image(
    engine: Engine,
    pid: i32,
    file: File,
    temp: Option<TempImage>,
    bar: &Bar,
) -> Result<(Frozen, CheckpointStats, u64, Duration)> {
    let out = BufWriter::with_capacity(
        BUF_SIZE,
        Counting {
            inner: file,
            bytes: 0,
        },
    );
    let (frozen, out, stats) = match engine {
        Engine::User => stasis_user::checkpoint(pid, out, Some(bar)),
        Engine::Kernel => unreachable!("the kernel engine is run by kernel::write_image"),
    }?;
    let written = Instant::now();
    let counting = out
        .into_inner()
        .map_err(|e| e.into_error())
        .context("cannot write the image")?;
    if let Some(sig) = atomic::interrupted() {
        return Err(CliError::Interrupted(sig).into());
    }
    let image_bytes = counting.bytes;
    let file = counting.inner;
    crate::atomic::finish(temp, file)?;
    let frozen_for = stats.frozen + written.elapsed();
    Ok((frozen, stats, image_bytes, frozen_for))
}

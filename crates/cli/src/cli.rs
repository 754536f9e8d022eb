//! Command line definitions (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "\
Exit status:
  0    success
  1    the operation failed
  2    usage error
  3    the image is invalid, corrupt or unsupported
  4    the engine is unavailable (kernel module not loaded, engine not implemented)
  5    the target process does not exist or may not be checkpointed by you
  restart (without --detach) exits with the restored process's status
  (128+N if it was killed by signal N), or 125 when the restart itself failed
  before the process ran.";

/// Transparent checkpoint/restart of multithreaded Linux processes.
#[derive(Parser, Debug)]
#[command(name = "stasis", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Checkpoint a running process to an image.
    #[command(after_help = EXIT_CODES)]
    Checkpoint(CheckpointArgs),
    /// Restart a process from an image.
    #[command(after_help = EXIT_CODES)]
    Restart(RestartArgs),
    /// Describe an image: writer, CPU features, process, threads, memory, files.
    #[command(after_help = EXIT_CODES)]
    Inspect(InspectArgs),
    /// Check every checksum and the structure of an image.
    #[command(after_help = EXIT_CODES)]
    Verify(VerifyArgs),
}

/// Which engine does the work.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// The kernel engine when /dev/stasis exists, else the user engine
    /// (images are interchangeable).
    #[default]
    Auto,
    /// The kernel module engine (needs /dev/stasis). Restart: the user engine
    /// prepares the process, the module restores its memory and registers.
    Kernel,
    /// The ptrace based user engine.
    User,
}

#[derive(Args, Debug)]
pub struct CheckpointArgs {
    /// Process to checkpoint (all of its threads).
    #[arg(value_name = "PID")]
    pub pid: i32,

    /// Image to write; `-` writes to standard output (which must not be a terminal).
    #[arg(short, long, value_name = "IMAGE")]
    pub output: PathBuf,

    /// Let the process run on once the image is written (default).
    #[arg(long, group = "after")]
    pub leave_running: bool,

    /// Kill the process (SIGKILL) once the image is safely written.
    #[arg(long, group = "after")]
    pub kill: bool,

    /// Leave the process stopped (SIGSTOP) once the image is safely written.
    #[arg(long, group = "after")]
    pub stop: bool,

    #[arg(long, value_enum, default_value_t, value_name = "ENGINE")]
    pub engine: EngineChoice,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    /// Image to restart from; `-` reads it from standard input.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    #[arg(long, value_enum, default_value_t, value_name = "ENGINE")]
    pub engine: EngineChoice,

    /// Do not wait: print the restored process's PID and exit 0 once it runs.
    #[arg(long)]
    pub detach: bool,

    /// Restart inside a new PID namespace (when the image's PIDs are taken here).
    #[arg(long)]
    pub pidns: bool,

    /// Restart even when this CPU lacks instruction-set features or XSAVE
    /// components the image's CPU had, or enables XSAVE components it did not.
    /// Risky: the program may have picked code for the other CPU at start-up
    /// (glibc chooses AVX2/AVX-512 string functions once) and die of SIGILL; the
    /// state of XSAVE components this CPU lacks is dropped; and XSAVE buffers
    /// the program sized for the other CPU (glibc's lazy-binding trampoline)
    /// overflow when this CPU enables more components.
    #[arg(long)]
    pub allow_cpu_mismatch: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Image to describe; `-` reads standard input.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Image to check; `-` reads standard input.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
}

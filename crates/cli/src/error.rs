//! Typed errors of the CLI itself, exit codes, and the one place where an
//! error becomes `stasis: error: ...` plus an optional `hint: ...`.
//!
//! Exit codes are chosen by walking the error chain and matching typed
//! errors (`CliError`, `ImageError`, the engines' error enums), never by
//! looking at message text.

use std::process::ExitCode;

use stasis_image::ImageError;
use stasis_user::{DumpError, RestoreError};

use crate::kernel::KernelError;

/// The documented exit statuses (see `stasis --help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    BadImage = 3,
    EngineUnavailable = 4,
    Target = 5,
    /// `restart` without `--detach` failed before the restored process ran.
    RestartFailed = 125,
}

impl From<Code> for ExitCode {
    fn from(c: Code) -> ExitCode {
        ExitCode::from(c as u8)
    }
}

/// Failures detected by the CLI itself.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("no process with PID {0}")]
    NoSuchProcess(i32),
    #[error("not permitted to checkpoint PID {0}")]
    NotPermitted(i32),
    #[error("PID {0} is not a process that can be checkpointed")]
    BadTarget(i32),
    #[error("PID {tid} is a thread of process {tgid}, not a process")]
    ThreadNotProcess { tid: i32, tgid: i32 },
    #[error("PID {0} is a zombie (it has exited)")]
    Zombie(i32),
    #[error("stasis cannot checkpoint itself (PID {0})")]
    SelfTarget(i32),
    #[error("the kernel engine needs /dev/stasis (module stasis.ko), which is not loaded")]
    KernelModuleMissing,
    #[error("interrupted by signal {0}: no image written, the process runs on")]
    Interrupted(i32),
    #[error("{0} is a directory")]
    OutputIsDirectory(String),
    #[error("refusing to write an image to a terminal")]
    StdoutIsTerminal,
    #[error("refusing to read an image from a terminal")]
    StdinIsTerminal,
}

impl CliError {
    fn code(&self) -> Code {
        match self {
            CliError::NoSuchProcess(_)
            | CliError::NotPermitted(_)
            | CliError::BadTarget(_)
            | CliError::ThreadNotProcess { .. }
            | CliError::Zombie(_)
            | CliError::SelfTarget(_) => Code::Target,
            CliError::KernelModuleMissing => Code::EngineUnavailable,
            CliError::StdoutIsTerminal | CliError::StdinIsTerminal => Code::Usage,
            CliError::Interrupted(_) | CliError::OutputIsDirectory(_) => Code::Failed,
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            CliError::NoSuchProcess(_) => {
                Some("check the PID with `ps -p PID`; the process may have exited")
            }
            CliError::NotPermitted(_) => Some(
                "run stasis as the process's user or as root \
                 (ptrace may also be restricted by /proc/sys/kernel/yama/ptrace_scope)",
            ),
            CliError::BadTarget(_) => Some(
                "give the PID of a user process (kernel threads and PID 0 cannot be checkpointed)",
            ),
            CliError::ThreadNotProcess { .. } => Some(
                "give the process ID (the thread group leader); all its threads are checkpointed",
            ),
            CliError::Zombie(_) | CliError::SelfTarget(_) => None,
            CliError::KernelModuleMissing => {
                Some("load it with `modprobe stasis` (or `insmod stasis.ko`), or use --engine user")
            }
            CliError::Interrupted(_) => None,
            CliError::OutputIsDirectory(_) => {
                Some("give the path of the image file to write, e.g. -o DIR/NAME.img")
            }
            CliError::StdoutIsTerminal => {
                Some("redirect standard output to a file or a pipe, or give -o IMAGE")
            }
            CliError::StdinIsTerminal => {
                Some("pipe the image into standard input, or give its path")
            }
        }
    }
}

fn dump_code(e: &DumpError) -> Code {
    #[allow(unreachable_patterns)]
    match e {
        DumpError::NotImplemented => Code::EngineUnavailable,
        DumpError::NoProcess { .. } | DumpError::SelfTarget { .. } => Code::Target,
        // Seizing failed: not permitted (credentials, Yama, another tracer)
        // or the thread is gone.
        DumpError::Attach { source, .. }
            if matches!(
                source.raw_os_error(),
                Some(libc::EPERM | libc::EACCES | libc::ESRCH)
            ) =>
        {
            Code::Target
        }
        _ => Code::Failed,
    }
}

fn restore_code(e: &RestoreError) -> Code {
    #[allow(unreachable_patterns)]
    match e {
        RestoreError::NotImplemented => Code::EngineUnavailable,
        // The image cannot be restarted here: wrong machine, CPU, kernel, or
        // something the engine does not handle.
        RestoreError::Image(_)
        | RestoreError::Arch { .. }
        | RestoreError::PageSize { .. }
        | RestoreError::MissingCpuFeatures { .. }
        | RestoreError::CpuMismatch { .. }
        | RestoreError::CpuXsaveGrew { .. }
        | RestoreError::VdsoMismatch { .. }
        | RestoreError::Unsupported(_) => Code::BadImage,
        // We may not recreate that process.
        RestoreError::NoPermission { .. }
        | RestoreError::Credentials { .. }
        | RestoreError::RlimitTooHigh { .. } => Code::Target,
        // Kernel mode: no usable module (not loaded, another ABI, no restart).
        RestoreError::KernelModule { .. } | RestoreError::KernelAbi { .. } => {
            Code::EngineUnavailable
        }
        RestoreError::KernelRefused { errno, .. } => match *errno {
            libc::ENOTTY => Code::EngineUnavailable,
            // EINVAL (malformed), EOPNOTSUPP (not restartable here), EFBIG.
            libc::EINVAL | libc::EOPNOTSUPP | libc::EFBIG => Code::BadImage,
            _ => Code::Failed,
        },
        RestoreError::Kernel { errno, .. } => match *errno {
            libc::EPERM | libc::EACCES => Code::Target,
            libc::EINVAL | libc::EOPNOTSUPP | libc::EFBIG => Code::BadImage,
            _ => Code::Failed,
        },
        _ => Code::Failed,
    }
}

fn engine_hint_dump(e: &DumpError) -> Option<&'static str> {
    #[allow(unreachable_patterns)]
    match e {
        DumpError::NotImplemented => Some(
            "this build's user engine cannot checkpoint yet; no image was written and the process runs on",
        ),
        DumpError::Attach { source, .. }
            if matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES)) =>
        {
            Some(
                "another tracer (gdb, strace) may be attached, or ptrace is restricted \
                 (/proc/sys/kernel/yama/ptrace_scope); run as root or as the process's user",
            )
        }
        _ => None,
    }
}

fn kernel_code(e: &KernelError) -> Code {
    match e {
        KernelError::Open(_)
        | KernelError::Version(_)
        | KernelError::AbiMismatch { .. }
        | KernelError::ExtensionMissing { .. } => Code::EngineUnavailable,
        KernelError::Checkpoint { source, .. } => match source.raw_os_error() {
            // Credentials, no such process, the checkpointer itself, a kernel thread.
            Some(libc::EPERM | libc::EACCES | libc::ESRCH | libc::EDEADLK) => Code::Target,
            // A module that does not know the request.
            Some(libc::ENOTTY) => Code::EngineUnavailable,
            // EOPNOTSUPP (state the image cannot carry), ETIMEDOUT, EINTR, EBADF, I/O.
            _ => Code::Failed,
        },
        KernelError::Thaw(_) | KernelError::Signal { .. } | KernelError::ReleaseTimeout { .. } => {
            Code::Failed
        }
    }
}

fn kernel_hint(e: &KernelError) -> Option<&'static str> {
    match e {
        KernelError::Open(_) | KernelError::Version(_) | KernelError::AbiMismatch { .. } => Some(
            "load the stasis.ko that matches this stasis binary, or use --engine user",
        ),
        KernelError::ExtensionMissing { .. } => Some(
            "load it with `modprobe stasis_files` (or `insmod stasis_files.ko`), or use --engine user",
        ),
        KernelError::Checkpoint { source, files } => match source.raw_os_error() {
            Some(libc::EOPNOTSUPP) if !*files => Some(
                "needs extension files (module stasis_files.ko); the module logs the reason in dmesg",
            ),
            Some(libc::EOPNOTSUPP) => Some(
                "the process holds state the kernel engine cannot write yet; \
                 the module logs the reason in dmesg (`dmesg | grep 'checkpoint refused'`)",
            ),
            Some(libc::EPERM | libc::EACCES) => {
                Some("run stasis as the process's user or as root")
            }
            Some(libc::ESRCH) => {
                Some("check the PID with `ps -p PID`; the process may have exited")
            }
            Some(libc::ETIMEDOUT) => Some(
                "a thread could not be frozen: it may be stopped (SIGSTOP), in uninterruptible \
                 sleep, or held by another checkpointer; the process runs on",
            ),
            _ => None,
        },
        _ => None,
    }
}

fn engine_hint_restore(e: &RestoreError) -> Option<&'static str> {
    #[allow(unreachable_patterns)]
    match e {
        RestoreError::NotImplemented => Some("this build's user engine cannot restart yet"),
        RestoreError::KernelModule { .. } | RestoreError::KernelAbi { .. } => Some(
            "load the stasis.ko that matches this stasis binary, or use --engine user",
        ),
        RestoreError::KernelRefused { errno, .. } if *errno == libc::ENOTTY => Some(
            "load the stasis.ko that matches this stasis binary, or use --engine user",
        ),
        RestoreError::KernelRefused { .. } => Some(
            "the module logs the reason in dmesg; --engine user may still restart this image",
        ),
        RestoreError::Kernel { .. } => Some(
            "the module logs the reason in dmesg; the future process was killed, nothing runs",
        ),
        _ => None,
    }
}

/// Exit code for an error: the CLI's own typed error first, then an image
/// error anywhere in the chain, then the engines' errors.
pub fn classify(err: &anyhow::Error) -> Code {
    if let Some(e) = err.chain().find_map(|c| c.downcast_ref::<CliError>()) {
        return e.code();
    }
    if err
        .chain()
        .any(|c| c.downcast_ref::<ImageError>().is_some())
    {
        return Code::BadImage;
    }
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<KernelError>() {
            return kernel_code(e);
        }
        if let Some(e) = cause.downcast_ref::<DumpError>() {
            return dump_code(e);
        }
        if let Some(e) = cause.downcast_ref::<RestoreError>() {
            return restore_code(e);
        }
    }
    Code::Failed
}

/// The signal that interrupted the operation, if that is why it failed.
pub fn interrupted_by(err: &anyhow::Error) -> Option<i32> {
    err.chain()
        .find_map(|c| match c.downcast_ref::<CliError>() {
            Some(CliError::Interrupted(sig)) => Some(*sig),
            _ => None,
        })
}

/// One hint line, when one is useful.
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<CliError>() {
            return e.hint();
        }
        if let Some(e) = cause.downcast_ref::<KernelError>() {
            return kernel_hint(e);
        }
        if let Some(e) = cause.downcast_ref::<DumpError>() {
            return engine_hint_dump(e);
        }
        if let Some(e) = cause.downcast_ref::<RestoreError>() {
            return engine_hint_restore(e);
        }
    }
    None
}

/// The error chain as one line, joined by ": ". A cause whose text the
/// previous message already ends with (errors that print their source in
/// their own message and also return it from `source()`) is not repeated.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let msg = cause.to_string().replace('\n', " ");
        if parts.last().is_some_and(|prev| prev.ends_with(&msg)) {
            continue;
        }
        parts.push(msg);
    }
    parts.join(": ")
}

/// Print the error (one line) and its hint.
pub fn report(err: &anyhow::Error) {
    let msg = one_line(err);
    crate::util::say(format_args!("stasis: error: {msg}"));
    if let Some(h) = hint(err) {
        crate::util::say(format_args!("hint: {h}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_without_repeats() {
        let e = anyhow::Error::new(Outer(std::io::Error::from_raw_os_error(libc::EPERM)))
            .context("checkpoint of PID 7 failed");
        assert_eq!(
            one_line(&e),
            "checkpoint of PID 7 failed: outer: Operation not permitted (os error 1)"
        );
    }

    #[test]
    fn codes() {
        let e = anyhow::Error::new(CliError::NoSuchProcess(3));
        assert_eq!(classify(&e), Code::Target);
        let e = anyhow::Error::new(RestoreError::PidInUse { pid: 3 }).context("x");
        assert_eq!(classify(&e), Code::Failed);
        let e = anyhow::Error::new(RestoreError::Image(ImageError::HeaderChecksum)).context("x");
        assert_eq!(classify(&e), Code::BadImage);
        let e = anyhow::Error::new(DumpError::NotImplemented).context("x");
        assert_eq!(classify(&e), Code::EngineUnavailable);
        let e = anyhow::Error::new(DumpError::NoProcess { pid: 3 });
        assert_eq!(classify(&e), Code::Target);
        let ck = |errno: i32| {
            anyhow::Error::new(KernelError::Checkpoint {
                source: std::io::Error::from_raw_os_error(errno),
                files: true,
            })
            .context("checkpoint of PID 3 failed")
        };
        assert_eq!(classify(&ck(libc::EPERM)), Code::Target);
        assert_eq!(classify(&ck(libc::ESRCH)), Code::Target);
        assert_eq!(classify(&ck(libc::EOPNOTSUPP)), Code::Failed);
        assert!(hint(&ck(libc::EOPNOTSUPP)).is_some_and(|h| h.contains("dmesg")));
        assert_eq!(classify(&ck(libc::ETIMEDOUT)), Code::Failed);
        let e = anyhow::Error::new(KernelError::AbiMismatch {
            module: 2,
            size: 24,
        });
        assert_eq!(classify(&e), Code::EngineUnavailable);
        let e = anyhow::Error::new(KernelError::ExtensionMissing {
            pid: 3,
            name: "files",
        });
        assert_eq!(classify(&e), Code::EngineUnavailable);
        assert!(e
            .to_string()
            .contains("needs extension files (module stasis_files.ko)"));
        let e = anyhow::Error::new(CliError::KernelModuleMissing);
        assert_eq!(classify(&e), Code::EngineUnavailable);
        let e = anyhow::Error::new(RestoreError::KernelModule {
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        })
        .context("restart from x failed");
        assert_eq!(classify(&e), Code::EngineUnavailable);
        assert!(hint(&e).is_some_and(|h| h.contains("--engine user")));
        let refused = |errno: i32| {
            anyhow::Error::new(RestoreError::KernelRefused {
                reason: "the kernel module refused the image",
                errno,
            })
            .context("restart from x failed")
        };
        assert_eq!(classify(&refused(libc::EINVAL)), Code::BadImage);
        assert_eq!(classify(&refused(libc::EOPNOTSUPP)), Code::BadImage);
        assert_eq!(classify(&refused(libc::ENOTTY)), Code::EngineUnavailable);
        assert!(one_line(&refused(libc::EINVAL))
            .ends_with("the kernel module refused the image: Invalid argument (os error 22) (see dmesg)"));
        let e = anyhow::Error::new(RestoreError::Kernel {
            what: "the kernel module's restart failed",
            errno: libc::ETIMEDOUT,
        });
        assert_eq!(classify(&e), Code::Failed);
        assert!(hint(&e).is_some_and(|h| h.contains("dmesg")));
    }
}

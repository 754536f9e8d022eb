//! stasis-workloads: drive the self-checking workload programs of
//! `tests/workloads` (see README.md there for the protocol).
//!
//! A workload is started with [`Workload::spawn`], which writes its log,
//! ready, stop and verdict files into a work directory. [`Running`] waits for
//! the ready line, requests a stop and collects the verdict. A restarted
//! workload is not our child: use the free functions [`wait_ready`],
//! [`request_stop`], [`wait_verdict`] and [`wait_pid_gone`] with its
//! [`Paths`] instead.

use std::ffi::OsString;
use std::fs;
use std::io::{self, ErrorKind};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// Every workload, by the name [`Workload::spawn`] takes.
pub const WORKLOADS: &[&str] = &[
    "counters",
    "fpu",
    "tls",
    "blocked",
    "signals",
    "files",
    "memory",
    "python_threads.py",
    "bash_loop.sh",
];

/// Environment variable naming a directory of prebuilt workloads (the output
/// of `make -C tests/workloads O=DIR`); when set, nothing is built.
pub const DIR_ENV: &str = "STASIS_WORKLOADS_DIR";

const POLL: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the workloads failed: {0}")]
    Build(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("unknown workload {0:?}")]
    UnknownWorkload(String),
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout { what: String, timeout: Duration },
    #[error("malformed ready line in {path}: {line:?}")]
    BadReady { path: PathBuf, line: String },
    #[error("workload {name} exited with {status} before {what}; log tail:\n{log}")]
    Exited {
        name: String,
        status: ExitStatus,
        what: String,
        log: String,
    },
    #[error("poke {pid} {addr:#x} {len} failed: {msg}")]
    Poke {
        pid: u32,
        addr: u64,
        len: u64,
        msg: String,
    },
    #[error("workload was not spawned by us (no child handle)")]
    NotAChild,
}

pub type Result<T> = std::result::Result<T, Error>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Source directory of the workloads (this crate's manifest directory).
pub fn source_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();

/// Directory holding the workload binaries and scripts. Uses
/// `$STASIS_WORKLOADS_DIR` when set; otherwise runs
/// `make -C <crate dir> O=<crate dir>/build` once per process (under a file
/// lock, so concurrent test binaries do not race) and returns that directory.
pub fn build_dir() -> Result<PathBuf> {
    BUILT
        .get_or_init(|| build().map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Build)
}

fn build() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(DIR_ENV) {
        let dir = PathBuf::from(dir);
        if !dir.join("poke").exists() {
            return Err(Error::Build(format!(
                "{DIR_ENV}={} does not hold the built workloads",
                dir.display()
            )));
        }
        return Ok(dir);
    }
    let src = source_dir();
    let out = src.join("build");
    fs::create_dir_all(&out).map_err(io_err(format!("creating {}", out.display())))?;
    let lock_path = out.join(".lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(format!("opening {}", lock_path.display())))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&lock);
    // SAFETY: flock on a valid open descriptor; released when `lock` drops.
    if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
        return Err(io_err("flock on the build lock")(io::Error::last_os_error()));
    }
    let res = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(&src)
        .arg(format!("O={}", out.display()))
        .stdin(Stdio::null())
        .output()
        .map_err(io_err("running make"))?;
    drop(lock);
    if !res.status.success() {
        return Err(Error::Build(format!(
            "make -C {} O={} failed with {}:\n{}{}",
            src.display(),
            out.display(),
            res.status,
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        )));
    }
    Ok(out)
}

/// Where a workload's files live: `<workdir>/<stem>.{verdict,ready,stop,log}`
/// where `stem` is the workload name without `.py` / `.sh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub verdict: PathBuf,
    pub ready: PathBuf,
    pub stop: PathBuf,
    pub log: PathBuf,
}

impl Paths {
    pub fn new(workdir: &Path, name: &str) -> Paths {
        let stem = name
            .strip_suffix(".py")
            .or_else(|| name.strip_suffix(".sh"))
            .unwrap_or(name);
        Paths {
            verdict: workdir.join(format!("{stem}.verdict")),
            ready: workdir.join(format!("{stem}.ready")),
            stop: workdir.join(format!("{stem}.stop")),
            log: workdir.join(format!("{stem}.log")),
        }
    }

    /// Remove leftovers of an earlier run (verdict, ready, stop and temporaries).
    pub fn clean(&self) -> Result<()> {
        for p in [&self.verdict, &self.ready, &self.stop] {
            for q in [p.clone(), with_suffix(p, ".tmp")] {
                match fs::remove_file(&q) {
                    Err(e) if e.kind() != ErrorKind::NotFound => {
                        return Err(io_err(format!("removing {}", q.display()))(e))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// What a workload reports when it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub pid: u32,
    /// Start of the range whose corruption the workload must detect
    /// (0 for the script workloads, which use `--damage-self` instead).
    pub damage_addr: u64,
    pub len: u64,
}

/// Parse `ready pid=<pid> damage=<hex> len=<n>`.
pub fn parse_ready(line: &str) -> Option<Ready> {
    let mut it = line.split_whitespace();
    if it.next()? != "ready" {
        return None;
    }
    let pid = it.next()?.strip_prefix("pid=")?.parse().ok()?;
    let d = it.next()?.strip_prefix("damage=")?;
    let d = d
        .strip_prefix("0x")
        .or_else(|| d.strip_prefix("0X"))
        .unwrap_or(d);
    let damage_addr = u64::from_str_radix(d, 16).ok()?;
    let len = it.next()?.strip_prefix("len=")?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some(Ready {
        pid,
        damage_addr,
        len,
    })
}

/// Read a file once it exists and holds a complete (newline-terminated) line.
fn read_line_when_complete(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) if s.ends_with('\n') => Ok(Some(s.trim_end_matches('\n').to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(format!("reading {}", path.display()))(e)),
    }
}

fn poll_until<T>(
    timeout: Duration,
    what: impl Fn() -> String,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: what(),
                timeout,
            });
        }
        thread::sleep(POLL);
    }
}

/// Wait for a ready file (by path) and parse it.
pub fn wait_ready(path: &Path, timeout: Duration) -> Result<Ready> {
    poll_until(
        timeout,
        || format!("ready file {}", path.display()),
        || match read_line_when_complete(path)? {
            Some(line) => parse_ready(&line).map(Some).ok_or_else(|| Error::BadReady {
                path: path.to_path_buf(),
                line,
            }),
            None => Ok(None),
        },
    )
}

/// Wait for a verdict file (by path) and return its line without the newline:
/// `ok` or `FAIL: ...`.
pub fn wait_verdict(path: &Path, timeout: Duration) -> Result<String> {
    poll_until(
        timeout,
        || format!("verdict file {}", path.display()),
        || read_line_when_complete(path),
    )
}

/// Ask a workload to stop by creating its stop file.
pub fn request_stop(path: &Path) -> Result<()> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map(|_| ())
        .map_err(io_err(format!("creating stop file {}", path.display())))
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => match s.rfind(')') {
            Some(i) => !matches!(
                s[i + 1..].trim_start().chars().next(),
                Some('Z') | Some('X')
            ),
            None => true,
        },
        Err(_) => false,
    }
}

/// Wait until a process that is not our child has exited (or is a zombie).
pub fn wait_pid_gone(pid: u32, timeout: Duration) -> Result<()> {
    poll_until(
        timeout,
        || format!("process {pid} to exit"),
        || Ok((!pid_alive(pid)).then_some(())),
    )
}

/// Flip every byte of `[addr, addr+len)` in process `pid` (the `poke` binary).
pub fn poke(pid: u32, addr: u64, len: u64) -> Result<()> {
    let bin = build_dir()?.join("poke");
    let out = Command::new(&bin)
        .arg(pid.to_string())
        .arg(format!("{addr:#x}"))
        .arg(len.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running {}", bin.display())))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Poke {
            pid,
            addr,
            len,
            msg: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Path of a workload's binary or script in [`build_dir`].
pub fn workload_path(name: &str) -> Result<PathBuf> {
    if !WORKLOADS.contains(&name) {
        return Err(Error::UnknownWorkload(name.to_string()));
    }
    Ok(build_dir()?.join(name))
}

/// Starting workloads.
pub struct Workload;

impl Workload {
    /// Full command line (program first) that runs workload `name` with its
    /// files in `workdir`: scripts go through `python3` / `bash`.
    pub fn argv(name: &str, workdir: &Path, extra_args: &[&str]) -> Result<Vec<OsString>> {
        let path = workload_path(name)?;
        let paths = Paths::new(workdir, name);
        let mut v: Vec<OsString> = Vec::new();
        if name.ends_with(".py") {
            v.push("python3".into());
        } else if name.ends_with(".sh") {
            v.push("bash".into());
        }
        v.push(path.into());
        for (opt, p) in [
            ("--verdict", &paths.verdict),
            ("--ready", &paths.ready),
            ("--stop", &paths.stop),
        ] {
            v.push(opt.into());
            v.push(p.into());
        }
        v.extend(extra_args.iter().map(OsString::from));
        Ok(v)
    }

    /// A `Command` for the workload: stdin from /dev/null, stdout and stderr
    /// appended to `<workdir>/<stem>.log`, and `setsid()` in the child so it
    /// is a session leader without a controlling terminal. Stale verdict,
    /// ready and stop files are removed.
    pub fn command(name: &str, workdir: &Path, extra_args: &[&str]) -> Result<(Command, Paths)> {
        let argv = Self::argv(name, workdir, extra_args)?;
        let paths = Paths::new(workdir, name);
        paths.clean()?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&paths.log)
            .map_err(io_err(format!("opening log {}", paths.log.display())))?;
        let log2 = log
            .try_clone()
            .map_err(io_err(format!("duplicating log {}", paths.log.display())))?;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok((cmd, paths))
    }

    /// Spawn workload `name` (one of [`WORKLOADS`]) with its files in `workdir`.
    pub fn spawn(name: &str, workdir: &Path, extra_args: &[&str]) -> Result<Running> {
        let (mut cmd, paths) = Self::command(name, workdir, extra_args)?;
        let child = cmd
            .spawn()
            .map_err(io_err(format!("spawning workload {name}")))?;
        Ok(Running {
            name: name.to_string(),
            pid: child.id(),
            child: Some(child),
            paths,
        })
    }
}

/// A workload process. Dropping it kills and reaps the child, if it still is
/// one of ours and has not exited.
pub struct Running {
    name: String,
    pid: u32,
    child: Option<Child>,
    paths: Paths,
}

impl Running {
    /// Attach to a workload we did not spawn (e.g. a restarted one).
    pub fn attach(name: &str, pid: u32, paths: Paths) -> Running {
        Running {
            name: name.to_string(),
            pid,
            child: None,
            paths,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The child handle, when we spawned it.
    pub fn child(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Take the child handle (Drop will then no longer kill it).
    pub fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }

    fn log_tail(&self) -> String {
        let s = fs::read_to_string(&self.paths.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn check_exited(&mut self, what: &str) -> Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait().map_err(io_err("waiting for workload"))? {
                return Err(Error::Exited {
                    name: self.name.clone(),
                    status,
                    what: what.to_string(),
                    log: self.log_tail(),
                });
            }
        }
        Ok(())
    }

    /// Wait for the ready line. Fails early if our child exits first.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Ready> {
        let path = self.paths.ready.clone();
        let ready = poll_until(
            timeout,
            || format!("ready file {}", path.display()),
            || {
                if let Some(line) = read_line_when_complete(&path)? {
                    return parse_ready(&line).map(Some).ok_or_else(|| Error::BadReady {
                        path: path.clone(),
                        line,
                    });
                }
                self.check_exited("writing its ready file")?;
                Ok(None)
            },
        )?;
        Ok(ready)
    }

    /// Create the stop file.
    pub fn stop(&self) -> Result<()> {
        request_stop(&self.paths.stop)
    }

    /// Wait for the verdict line (`ok` or `FAIL: ...`). Fails early if our
    /// child exits without writing one.
    pub fn verdict(&mut self, timeout: Duration) -> Result<String> {
        let path = self.paths.verdict.clone();
        poll_until(
            timeout,
            || format!("verdict file {}", path.display()),
            || {
                if let Some(v) = read_line_when_complete(&path)? {
                    return Ok(Some(v));
                }
                if self.check_exited("writing its verdict").is_err() {
                    // It may have written the verdict just before exiting.
                    if let Some(v) = read_line_when_complete(&path)? {
                        return Ok(Some(v));
                    }
                    self.check_exited("writing its verdict")?;
                }
                Ok(None)
            },
        )
    }

    /// Wait for our child to exit and return its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let name = self.name.clone();
        let child = self.child.as_mut().ok_or(Error::NotAChild)?;
        poll_until(
            timeout,
            || format!("workload {name} to exit"),
            || child.try_wait().map_err(io_err("waiting for workload")),
        )
    }

    /// Stop, then collect the verdict and (for our child) the exit status.
    pub fn finish(&mut self, timeout: Duration) -> Result<(String, Option<ExitStatus>)> {
        self.stop()?;
        let v = self.verdict(timeout)?;
        let st = match self.child {
            Some(_) => Some(self.wait_exit(timeout)?),
            None => {
                wait_pid_gone(self.pid, timeout)?;
                None
            }
        };
        Ok((v, st))
    }

    /// SIGKILL our child and reap it (so its PID is free for a restart).
    pub fn kill_and_reap(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => {
                if c.try_wait()
                    .map_err(io_err("waiting for workload"))?
                    .is_none()
                {
                    c.kill().map_err(io_err("killing workload"))?;
                }
                c.wait().map(Some).map_err(io_err("reaping workload"))
            }
            None => Ok(None),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line() {
        assert_eq!(
            parse_ready("ready pid=12 damage=0x7f00 len=4096"),
            Some(Ready {
                pid: 12,
                damage_addr: 0x7f00,
                len: 4096
            })
        );
        assert_eq!(
            parse_ready("ready pid=1 damage=0x0 len=0").map(|r| r.len),
            Some(0)
        );
        assert_eq!(parse_ready("ready pid=x damage=0x0 len=0"), None);
        assert_eq!(parse_ready("ok"), None);
    }

    #[test]
    fn paths() {
        let p = Paths::new(Path::new("/w"), "python_threads.py");
        assert_eq!(p.verdict, PathBuf::from("/w/python_threads.verdict"));
        assert_eq!(p.stop, PathBuf::from("/w/python_threads.stop"));
    }
}

//! Quiescing a process with PTRACE_SEIZE + PTRACE_INTERRUPT, and letting it go.
//!
//! [`Tracer`] owns the set of seized threads. Whatever happens (error, panic),
//! dropping it detaches every thread so the target runs on untraced. If the
//! checkpointer itself dies, the kernel detaches the tracees the same way
//! (seized tracees get no SIGSTOP, so no group stop is left behind).

use std::io;

use super::DumpError;
use crate::ptrace;
use crate::sys::{self, event, WaitStatus};

#[derive(Clone, Copy, Debug)]
struct Tracee {
    tid: i32,
    /// In a ptrace stop that we consumed with waitpid.
    stopped: bool,
}

/// The seized threads of one process.
pub(crate) struct Tracer {
    pub pid: i32,
    threads: Vec<Tracee>,
    released: bool,
}

fn attach_err(pid: i32, tid: i32, source: io::Error) -> DumpError {
    DumpError::Attach {
        pid,
        tid,
        source,
        note: String::new(),
    }
}

impl Tracer {
    /// Seize and interrupt every thread of `pid` until all are stopped and
    /// /proc/PID/task shows no other thread.
    pub fn freeze(pid: i32) -> Result<Tracer, DumpError> {
        let mut t = Tracer {
            pid,
            threads: Vec::new(),
            released: false,
        };
        let me = sys::gettid();
        for _round in 0..1000 {
            let tids = crate::proc::tasks(pid).map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    DumpError::NoProcess { pid }
                } else {
                    DumpError::io(pid, "listing /proc/PID/task", e)
                }
            })?;
            let mut new = false;
            let mut gone: Vec<i32> = Vec::new();
            for &tid in &tids {
                if t.has(tid) {
                    continue;
                }
                match ptrace::seize(tid, ptrace::SEIZE_OPTIONS) {
                    Ok(()) => {
                        t.threads.push(Tracee {
                            tid,
                            stopped: false,
                        });
                        new = true;
                        if let Err(e) = ptrace::interrupt(tid) {
                            if e.raw_os_error() != Some(libc::ESRCH) {
                                return Err(attach_err(pid, tid, e));
                            }
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => gone.push(tid), // exiting
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) && traced_by(pid, tid, me) => {
                        // Auto-attached through PTRACE_O_TRACECLONE: its first
                        // stop (PTRACE_EVENT_STOP) is on its way.
                        t.threads.push(Tracee {
                            tid,
                            stopped: false,
                        });
                        new = true;
                    }
                    Err(e) => {
                        let note =
                            match crate::proc::Status::read(pid).and_then(|s| s.num("TracerPid")) {
                                Ok(tp) if tp != 0 => format!(" (already traced by {tp})"),
                                _ => String::new(),
                            };
                        return Err(DumpError::Attach {
                            pid,
                            tid,
                            source: e,
                            note,
                        });
                    }
                }
            }
            // Wait until every thread reports its stop.
            let mut i = 0;
            while i < t.threads.len() {
                if !t.threads[i].stopped {
                    t.wait_stop(i)?;
                }
                i += 1;
            }
            t.threads.retain(|x| x.stopped);
            if !t.has(pid) {
                return Err(DumpError::NoProcess { pid });
            }
            if !new {
                let mut now: Vec<i32> = t.threads.iter().map(|x| x.tid).collect();
                now.sort_unstable();
                let listed: Vec<i32> = tids.iter().copied().filter(|t| !gone.contains(t)).collect();
                if now == listed {
                    return Ok(t);
                }
            }
        }
        Err(DumpError::io(
            pid,
            "freezing",
            io::Error::other("the set of threads never became stable"),
        ))
    }

    fn has(&self, tid: i32) -> bool {
        self.threads.iter().any(|x| x.tid == tid)
    }

    /// Thread ids, leader first, then in ascending order.
    pub fn tids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.threads.iter().map(|x| x.tid).collect();
        v.sort_unstable_by_key(|&t| (t != self.pid, t));
        v
    }

    /// Wait for thread `i` to reach a PTRACE_EVENT_STOP. Marks it stopped,
    /// or removes it (stopped=false, tid kept) if it exited.
    fn wait_stop(&mut self, i: usize) -> Result<(), DumpError> {
        let pid = self.pid;
        let tid = self.threads[i].tid;
        loop {
            let st = match ptrace::wait(tid) {
                Ok(st) => st,
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                    // Gone (reaped elsewhere): forget it.
                    return Ok(());
                }
                Err(e) => return Err(attach_err(pid, tid, e)),
            };
            match st {
                WaitStatus::Stopped {
                    event: event::STOP, ..
                } => {
                    self.threads[i].stopped = true;
                    return Ok(());
                }
                WaitStatus::Stopped {
                    event: event::CLONE,
                    ..
                } => {
                    let new = ptrace::event_msg(tid).map_err(|e| attach_err(pid, tid, e))? as i32;
                    if new > 0 && !self.has(new) {
                        self.threads.push(Tracee {
                            tid: new,
                            stopped: false,
                        });
                    }
                    self.resume_toward_stop(tid, 0)?;
                }
                WaitStatus::Stopped {
                    event: event::EXEC, ..
                } => {
                    // Mark it stopped so the drop detaches it.
                    self.threads[i].stopped = true;
                    return Err(DumpError::Unsupported {
                        pid,
                        what: format!("thread {tid}"),
                        reason: "the process called execve during the checkpoint".into(),
                    });
                }
                WaitStatus::Stopped { sig, event: 0 } => {
                    // Signal-delivery stop: deliver it, then stop.
                    self.resume_toward_stop(tid, sig)?;
                }
                WaitStatus::Stopped { .. } => self.resume_toward_stop(tid, 0)?,
                WaitStatus::Exited(_) | WaitStatus::Signaled(_) => return Ok(()),
                WaitStatus::Continued => {}
            }
        }
    }

    fn resume_toward_stop(&self, tid: i32, sig: i32) -> Result<(), DumpError> {
        let r = ptrace::interrupt(tid).and_then(|()| ptrace::cont(tid, sig));
        match r {
            Err(e) if e.raw_os_error() != Some(libc::ESRCH) => Err(attach_err(self.pid, tid, e)),
            _ => Ok(()),
        }
    }

    /// Detach every thread. With `stop`, a SIGSTOP is queued first so the
    /// process enters a group stop as soon as it is released (untraced).
    pub fn release(&mut self, stop: bool) -> Result<(), DumpError> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        if stop {
            sys::kill(self.pid, libc::SIGSTOP)
                .map_err(|e| DumpError::io(self.pid, "sending SIGSTOP", e))?;
        }
        let mut first_err = None;
        for x in std::mem::take(&mut self.threads) {
            if let Err(e) = detach_one(x) {
                if first_err.is_none() {
                    first_err = Some(DumpError::Detach {
                        pid: self.pid,
                        tid: x.tid,
                        source: e,
                    });
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// SIGKILL the process and collect the traced threads' exits, within
    /// `timeout`.
    ///
    /// Each traced thread reports its death to us (its tracer) and stays a
    /// traced zombie until we wait for it. The kernel does not report the
    /// thread-group leader's exit while other threads of the group are not
    /// yet reaped (delay_group_leader), so waiting on the leader first would
    /// block forever when we are not its real parent. Instead every traced
    /// thread is polled (WNOHANG) until all are gone; the leader shows up
    /// once the others are collected. Collecting the leader as its tracer
    /// hands its exit on to the real parent, which reaps the process as
    /// usual. If we are also the real parent, the leader's exit status is
    /// left to the code that reaps our children.
    pub fn kill(&mut self, timeout: std::time::Duration) -> Result<(), DumpError> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        // SAFETY: getpid has no arguments.
        let me = unsafe { libc::getpid() };
        let parent_is_us = crate::proc::Stat::read(self.pid)
            .and_then(|s| s.i64(4))
            .ok()
            == Some(i64::from(me));
        if let Err(e) = sys::kill(self.pid, libc::SIGKILL) {
            // Cannot happen for a process we trace (ESRCH would mean it is
            // already gone). Detach so nothing stays traced.
            let threads = std::mem::take(&mut self.threads);
            for x in threads {
                let _ = detach_one(x);
            }
            return Err(DumpError::io(self.pid, "sending SIGKILL", e));
        }
        let mut left: Vec<i32> = std::mem::take(&mut self.threads)
            .into_iter()
            .map(|x| x.tid)
            .filter(|&tid| !(parent_is_us && tid == self.pid))
            .collect();
        // Non-leaders first (the leader cannot be collected before them).
        left.sort_unstable_by_key(|&t| (t == self.pid, t));
        let t0 = std::time::Instant::now();
        let mut nap = std::time::Duration::from_micros(100);
        loop {
            left.retain(|&tid| match sys::waitpid(tid, libc::WNOHANG) {
                Ok(None) => true,
                Ok(Some((_, WaitStatus::Exited(_) | WaitStatus::Signaled(_)))) => false,
                Ok(Some((_, WaitStatus::Stopped { .. }))) => {
                    // A stop that raced with the SIGKILL (e.g. an event
                    // stop): let it go on to its death.
                    let _ = ptrace::cont(tid, 0);
                    true
                }
                Ok(Some((_, WaitStatus::Continued))) => true,
                // ECHILD: not ours to wait for any more (reaped, or the
                // thread is gone and was auto-reaped).
                Err(_) => false,
            });
            if left.is_empty() {
                return Ok(());
            }
            if t0.elapsed() >= timeout {
                return Err(DumpError::KillTimeout {
                    pid: self.pid,
                    tids: left,
                    after: timeout,
                });
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(std::time::Duration::from_millis(10));
        }
    }
}

/// Bring one tracee into a ptrace stop (if it is not in one) and detach it.
fn detach_one(x: Tracee) -> io::Result<()> {
    let tid = x.tid;
    if x.stopped {
        match ptrace::detach(tid, 0) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {} // not stopped after all?
            Err(e) => return Err(e),
        }
    }
    // Running (or state unknown): interrupt, wait for a stop, detach.
    match ptrace::interrupt(tid) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
            // Not traced by us any more, or gone.
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    for _ in 0..1000 {
        match ptrace::wait(tid) {
            Ok(WaitStatus::Stopped { sig, event: 0 }) => {
                // Signal-delivery stop: detach delivering the signal.
                return ptrace::detach(tid, sig);
            }
            Ok(WaitStatus::Stopped { .. }) => return ptrace::detach(tid, 0),
            Ok(WaitStatus::Exited(_) | WaitStatus::Signaled(_)) => return Ok(()),
            Ok(WaitStatus::Continued) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("thread never stopped"))
}

/// Whether `tid` of `pid` is traced by our thread `me` (TracerPid).
fn traced_by(pid: i32, tid: i32, me: i32) -> bool {
    crate::proc::Status::read_path(crate::proc::pid_path(pid, &format!("task/{tid}/status")))
        .and_then(|s| s.num("TracerPid"))
        .map(|tp| tp == me as u64)
        .unwrap_or(false)
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.release(false);
    }
}

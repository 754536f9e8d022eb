//! Park mode: remove the restorer area from the restored process.
//!
//! Code cannot unmap the page it runs from and keep running, so the restorer
//! threads copy their sigframes onto their own stacks and park. We (the
//! parent) then seize every thread, inject `munmap(area)` in one of them (a
//! `syscall` instruction of the vDSO, all signals still blocked), point each
//! thread at that `syscall` instruction with rax = rt_sigreturn and
//! rsp = its frame + 8, and detach: each thread returns into its checkpointed
//! context and no trace of the restorer is left in its address space.

use std::io;

use super::plan::Park;
use crate::ptrace;
use crate::sys::{self, opt, WaitStatus};

const SYS_MUNMAP: u64 = 11;
const SYS_RT_SIGRETURN: u64 = 15;

fn err(what: String, e: io::Error) -> super::RestoreError {
    super::RestoreError::Sys { what, source: e }
}

/// Map inner TIDs (as in the image) to TIDs in our namespace, from the
/// NSpid lines of /proc/<pid>/task/*/status.
fn task_ids(pid: i32) -> io::Result<Vec<(i32, i32)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let e = e?;
        let Some(outer) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let st = std::fs::read_to_string(e.path().join("status"))?;
        let inner = st
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|s| s.parse::<i32>().ok())
            .unwrap_or(outer);
        v.push((inner, outer));
    }
    Ok(v)
}

fn wait_stop(tid: i32) -> io::Result<WaitStatus> {
    loop {
        let st = ptrace::wait(tid)?;
        match st {
            WaitStatus::Stopped { .. } => return Ok(st),
            WaitStatus::Exited(_) | WaitStatus::Signaled(_) => {
                return Err(io::Error::other(format!("thread {tid} ended while being finished: {st:?}")))
            }
            WaitStatus::Continued => continue,
        }
    }
}

/// Finish a parked restart of `pid` (PID in our namespace).
pub fn finish(pid: i32, park: &Park) -> Result<(), super::RestoreError> {
    let ids = task_ids(pid).map_err(|e| err(format!("listing the threads of {pid}"), e))?;
    let mut threads: Vec<(i32, u64)> = Vec::new(); // (tid here, frame)
    for &(inner, frame) in &park.frames {
        let Some(&(_, outer)) = ids.iter().find(|x| x.0 == inner) else {
            return Err(super::RestoreError::Unsupported(format!("restored thread {inner} not found in /proc/{pid}/task")));
        };
        threads.push((outer, frame));
    }
    let mut seized = Vec::new();
    let res = (|| {
        for &(tid, _) in &threads {
            ptrace::seize(tid, opt::TRACESYSGOOD).map_err(|e| err(format!("PTRACE_SEIZE of restored thread {tid}"), e))?;
            seized.push(tid);
            ptrace::interrupt(tid).map_err(|e| err(format!("PTRACE_INTERRUPT of restored thread {tid}"), e))?;
        }
        for &(tid, _) in &threads {
            wait_stop(tid).map_err(|e| err(format!("waiting for restored thread {tid} to stop"), e))?;
        }
        // munmap(area) from the leader (first in the list), through the vDSO's syscall.
        let (lt, _) = threads[0];
        let saved = ptrace::get_regs(lt).map_err(|e| err(format!("registers of {lt}"), e))?;
        let mut r = saved;
        r.rip = park.syscall_insn;
        r.rax = SYS_MUNMAP;
        r.orig_rax = u64::MAX;
        r.rdi = park.area_start;
        r.rsi = park.area_len;
        ptrace::set_regs(lt, &r).map_err(|e| err(format!("setting registers of {lt}"), e))?;
        let mut exits = 0;
        for _ in 0..8 {
            ptrace::syscall(lt, 0).map_err(|e| err(format!("PTRACE_SYSCALL of {lt}"), e))?;
            let st = wait_stop(lt).map_err(|e| err(format!("injected munmap in {lt}"), e))?;
            if let WaitStatus::Stopped { sig, .. } = st {
                if sig == libc::SIGTRAP | 0x80 {
                    exits += 1;
                    if exits == 2 {
                        break;
                    }
                }
            }
        }
        let after = ptrace::get_regs(lt).map_err(|e| err(format!("registers of {lt}"), e))?;
        if exits != 2 || after.rax != 0 {
            return Err(super::RestoreError::Child {
                stage: "unmapping the restorer area",
                detail: format!("munmap({:#x}, {:#x}) in thread {lt} returned {:#x}", park.area_start, park.area_len, after.rax),
                errno: -(after.rax as i64) as i32,
                errno_text: String::new(),
            });
        }
        // Every thread: rt_sigreturn on its own frame.
        for &(tid, frame) in &threads {
            let mut r = if tid == lt { saved } else { ptrace::get_regs(tid).map_err(|e| err(format!("registers of {tid}"), e))? };
            r.rip = park.syscall_insn;
            r.rax = SYS_RT_SIGRETURN;
            r.orig_rax = u64::MAX;
            r.rsp = frame + 8;
            ptrace::set_regs(tid, &r).map_err(|e| err(format!("setting registers of {tid}"), e))?;
        }
        for &(tid, _) in &threads {
            ptrace::detach(tid, 0).map_err(|e| err(format!("PTRACE_DETACH of {tid}"), e))?;
        }
        seized.clear();
        Ok(())
    })();
    if res.is_err() {
        // Past the point of no return: do not leave a half-made process behind.
        let _ = sys::kill(pid, libc::SIGKILL);
        for tid in seized {
            let _ = ptrace::detach(tid, 0);
        }
    }
    res
}

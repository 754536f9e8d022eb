//! Per-thread and process-wide state: registers, signals, limits, timers, mm.

use stasis_image::records::{
    ItimersRec, MmRec, PosixTimerRec, ProcessRec, Rlimit, RlimitsRec, Sigaction, SigactionsRec,
    ThreadRec, TimerVal,
};

use super::DumpError;
use crate::proc::{self, Stat, Status};
use crate::ptrace::{self, Injector, Session};
use crate::sys::{self, nr};

/// Everything read from one stopped thread.
pub(crate) struct ThreadState {
    pub rec: ThreadRec,
    pub xstate: Vec<u8>,
    pub pending: Vec<[u8; 128]>,
}

fn terr(pid: i32, tid: i32, step: &'static str) -> impl FnOnce(std::io::Error) -> DumpError {
    move |source| DumpError::Thread {
        pid,
        tid,
        step,
        source,
    }
}

fn comm16(b: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (d, s) in out.iter_mut().take(15).zip(b) {
        *d = *s;
    }
    out
}

/// Read the state of a stopped thread that needs no injection.
pub(crate) fn read_thread(pid: i32, tid: i32) -> Result<ThreadState, DumpError> {
    let regs = ptrace::get_regs(tid).map_err(terr(pid, tid, "reading registers"))?;
    let xstate = ptrace::get_xstate(tid).map_err(terr(pid, tid, "reading the XSAVE area"))?;
    let sigmask = ptrace::get_sigmask(tid).map_err(terr(pid, tid, "reading the signal mask"))?;
    let pending =
        ptrace::peek_siginfo(tid, false).map_err(terr(pid, tid, "reading pending signals"))?;
    let rseq = ptrace::get_rseq(tid)
        .map_err(terr(pid, tid, "reading the rseq registration"))?
        .unwrap_or_default();
    let (robust, robust_len) =
        sys::get_robust_list(tid).map_err(terr(pid, tid, "get_robust_list"))?;
    let comm = proc::thread_comm(pid, tid).map_err(terr(pid, tid, "reading comm"))?;
    let (fixed_regs, fixed) = ptrace::syscall_restart_fixup(&regs);
    let mut flags = 0;
    if tid == pid {
        flags |= stasis_image::records::thread_flags::LEADER;
    }
    if fixed {
        flags |= stasis_image::records::thread_flags::SYSCALL_FIXED;
    }
    let rec = ThreadRec {
        tid: tid as u32,
        flags,
        regs: fixed_regs,
        sigmask,
        robust_list: robust,
        robust_list_len: robust_len,
        rseq_addr: rseq.addr,
        rseq_len: rseq.len,
        rseq_sig: rseq.sig,
        comm: comm16(&comm),
        ..ThreadRec::default()
    };
    Ok(ThreadState {
        rec,
        xstate,
        pending,
    })
}

fn inj(pid: i32, tid: i32, call: &str) -> impl FnOnce(ptrace::InjectError) -> DumpError + '_ {
    move |source| DumpError::Inject {
        pid,
        tid,
        call: call.to_owned(),
        source,
    }
}

fn remote(pid: i32, tid: i32, call: String, ret: i64) -> Result<i64, DumpError> {
    if (-4095..0).contains(&ret) {
        Err(DumpError::RemoteCall {
            pid,
            tid,
            call,
            source: std::io::Error::from_raw_os_error((-ret) as i32),
        })
    } else {
        Ok(ret)
    }
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// Process-wide state only the process can report, run in one thread.
pub(crate) struct Injected {
    pub sigactions: SigactionsRec,
    pub itimers: ItimersRec,
    pub timers: Vec<PosixTimerRec>,
    pub brk: u64,
    pub dumpable: u32,
}

fn timeval_ns(b: &[u8], off: usize) -> u64 {
    let sec = u64_at(b, off);
    let usec = u64_at(b, off + 8);
    sec.saturating_mul(1_000_000_000)
        .saturating_add(usec.saturating_mul(1000))
}

fn timespec_ns(b: &[u8], off: usize) -> u64 {
    let sec = u64_at(b, off);
    let nsec = u64_at(b, off + 8);
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// Which signals need their disposition read by injection: caught or
/// ignored ones (SigCgt | SigIgn in /proc status), and SIGCHLD (whose
/// SA_NOCLDWAIT/SA_NOCLDSTOP flags act even with SIG_DFL). The others are
/// SIG_DFL, recorded with flags, mask and restorer 0: those have no effect on
/// a default disposition (only a later sigaction() query could see them).
/// Each injected call costs two round trips to the frozen thread, so this
/// keeps the freeze short (62 calls → typically under 10).
pub(crate) fn signals_to_read(status: &Status) -> Result<u64, std::io::Error> {
    let cgt = status.hex("SigCgt")?;
    let ign = status.hex("SigIgn")?;
    Ok(cgt | ign | (1u64 << (libc::SIGCHLD - 1)))
}

pub(crate) fn inject_process(
    s: &mut Session,
    pid: i32,
    tid: i32,
    sig_set: u64,
    timers: &[proc::ProcTimer],
) -> Result<Injected, DumpError> {
    let mut sigactions = SigactionsRec::default();
    for sig in 1..=64u64 {
        if sig == libc::SIGKILL as u64
            || sig == libc::SIGSTOP as u64
            || sig_set & (1 << (sig - 1)) == 0
        {
            continue;
        }
        let call = format!("rt_sigaction({sig}, NULL, &old, 8)");
        let (ret, out) = s
            .syscall_scratch(nr::RT_SIGACTION, 32, &[], |a| [sig, 0, a, 8, 0, 0])
            .map_err(inj(pid, tid, &call))?;
        remote(pid, tid, call.clone(), ret)?;
        sigactions.actions[(sig - 1) as usize] = Sigaction {
            handler: u64_at(&out, 0),
            flags: u64_at(&out, 8),
            restorer: u64_at(&out, 16),
            mask: u64_at(&out, 24),
        };
    }
    let mut it = [TimerVal::default(); 3];
    for (which, slot) in it.iter_mut().enumerate() {
        let call = format!("getitimer({which})");
        let (ret, out) = s
            .syscall_scratch(nr::GETITIMER, 32, &[], |a| [which as u64, a, 0, 0, 0, 0])
            .map_err(inj(pid, tid, &call))?;
        remote(pid, tid, call, ret)?;
        *slot = TimerVal {
            interval_ns: timeval_ns(&out, 0),
            value_ns: timeval_ns(&out, 16),
        };
    }
    let itimers = ItimersRec {
        real: it[0],
        virt: it[1],
        prof: it[2],
    };
    let mut out_timers = Vec::new();
    for t in timers {
        let call = format!("timer_gettime({})", t.id);
        let (ret, out) = s
            .syscall_scratch(nr::TIMER_GETTIME, 32, &[], |a| {
                [u64::from(t.id), a, 0, 0, 0, 0]
            })
            .map_err(inj(pid, tid, &call))?;
        remote(pid, tid, call, ret)?;
        let call = format!("timer_getoverrun({})", t.id);
        let ov = s
            .syscall(nr::TIMER_GETOVERRUN, [u64::from(t.id), 0, 0, 0, 0, 0])
            .map_err(inj(pid, tid, &call))?;
        let ov = remote(pid, tid, call, ov)?;
        out_timers.push(PosixTimerRec {
            id: t.id,
            clock_id: t.clock_id,
            sigev_notify: t.notify,
            sigev_signo: t.signo,
            sigev_value: t.sigev_value,
            notify_tid: t.notify_pid,
            overrun: ov as u32,
            timer: TimerVal {
                interval_ns: timespec_ns(&out, 0),
                value_ns: timespec_ns(&out, 16),
            },
        });
    }
    let brk = s
        .syscall(nr::BRK, [0; 6])
        .map_err(inj(pid, tid, "brk(0)"))?;
    let brk = remote(pid, tid, "brk(0)".into(), brk)? as u64;
    let d = s
        .syscall(nr::PRCTL, [libc::PR_GET_DUMPABLE as u64, 0, 0, 0, 0, 0])
        .map_err(inj(pid, tid, "prctl(PR_GET_DUMPABLE)"))?;
    let dumpable = remote(pid, tid, "prctl(PR_GET_DUMPABLE)".into(), d)? as u32;
    Ok(Injected {
        sigactions,
        itimers,
        timers: out_timers,
        brk,
        dumpable,
    })
}

/// Run the per-thread injections in every thread and the process-wide ones
/// in the leader. The per-thread calls run in all threads at once (each
/// call costs two round trips to a frozen thread; overlapping them keeps the
/// freeze short), sessions end together too.
pub(crate) fn inject_all(
    injector: &Injector,
    pid: i32,
    threads: &mut [ThreadState],
    sig_set: u64,
    timers: &[proc::ProcTimer],
) -> Result<Injected, DumpError> {
    let trace = std::env::var_os("STASIS_DUMP_TRACE").is_some();
    let mut sessions: Vec<(i32, Session)> = Vec::with_capacity(threads.len());
    for t in threads.iter() {
        let tid = t.rec.tid as i32;
        let s = injector
            .session(tid)
            .map_err(inj(pid, tid, "starting the injection"))?;
        if !s.is_safe() && trace {
            eprintln!("stasis dump: thread {tid}: injecting without a sigreturn frame (not safe if we die)");
        }
        sessions.push((tid, s));
    }
    // sigaltstack(NULL, &old): stack_t { ss_sp, ss_flags (int + pad), ss_size }.
    let outs = lockstep(
        pid,
        &mut sessions,
        "sigaltstack(NULL, &old)",
        nr::SIGALTSTACK,
        24,
        |a| [0, a, 0, 0, 0, 0],
    )?;
    for (t, out) in threads.iter_mut().zip(&outs) {
        t.rec.altstack_sp = u64_at(out, 0);
        t.rec.altstack_flags = u64_at(out, 8) as u32;
        t.rec.altstack_size = u64_at(out, 16);
    }
    // prctl(PR_GET_TID_ADDRESS, &addr).
    let outs = lockstep(
        pid,
        &mut sessions,
        "prctl(PR_GET_TID_ADDRESS)",
        nr::PRCTL,
        8,
        |a| [libc::PR_GET_TID_ADDRESS as u64, a, 0, 0, 0, 0],
    )?;
    for (t, out) in threads.iter_mut().zip(&outs) {
        t.rec.clear_child_tid = u64_at(out, 0);
    }
    let mut injected = None;
    for (tid, s) in sessions.iter_mut() {
        if *tid == pid {
            injected = Some(inject_process(s, pid, *tid, sig_set, timers)?);
        }
    }
    for (tid, s) in sessions.iter_mut() {
        s.finish_start()
            .map_err(inj(pid, *tid, "ending the injection"))?;
    }
    for (tid, s) in sessions {
        s.finish_complete()
            .map_err(inj(pid, tid, "ending the injection"))?;
    }
    injected.ok_or(DumpError::NoProcess { pid })
}

/// The same call with a scratch buffer in every session at once; the
/// scratch bytes of each, in session order.
fn lockstep(
    pid: i32,
    sessions: &mut [(i32, Session)],
    call: &str,
    nr: i64,
    len: usize,
    make_args: impl Fn(u64) -> [u64; 6],
) -> Result<Vec<Vec<u8>>, DumpError> {
    for (tid, s) in sessions.iter_mut() {
        s.start_scratch(nr, len, &[], &make_args)
            .map_err(inj(pid, *tid, call))?;
    }
    for (tid, s) in sessions.iter_mut() {
        s.pass_entry().map_err(inj(pid, *tid, call))?;
    }
    let mut outs = Vec::with_capacity(sessions.len());
    for (tid, s) in sessions.iter_mut() {
        let (ret, out) = s.complete_scratch().map_err(inj(pid, *tid, call))?;
        remote(pid, *tid, call.to_owned(), ret)?;
        outs.push(out);
    }
    Ok(outs)
}

fn perr(pid: i32, step: &'static str) -> impl FnOnce(std::io::Error) -> DumpError {
    move |e| DumpError::io(pid, step, e)
}

/// PROCESS from /proc stat, status and personality.
pub(crate) fn process_rec(
    pid: i32,
    stat: &Stat,
    status: &Status,
    nr_threads: usize,
    dumpable: u32,
) -> Result<ProcessRec, DumpError> {
    let e = perr(pid, "reading /proc/PID/stat and status");
    let uids = status.nums("Uid").map_err(perr(pid, "reading Uid"))?;
    let gids = status.nums("Gid").map_err(perr(pid, "reading Gid"))?;
    let id = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0) as u32;
    let personality = proc::personality(pid).map_err(perr(pid, "reading personality"))?;
    let res = (|| -> std::io::Result<ProcessRec> {
        Ok(ProcessRec {
            pid: pid as u32,
            ppid: stat.i64(4)? as u32,
            pgid: stat.i64(5)? as u32,
            sid: stat.i64(6)? as u32,
            uid: id(&uids, 0),
            euid: id(&uids, 1),
            suid: id(&uids, 2),
            fsuid: id(&uids, 3),
            gid: id(&gids, 0),
            egid: id(&gids, 1),
            sgid: id(&gids, 2),
            fsgid: id(&gids, 3),
            personality,
            nr_threads: nr_threads as u32,
            comm: comm16(&stat.comm),
            dumpable,
            exit_signal: stat.i64(38)? as u32,
            cap_effective: status.hex("CapEff")?,
            cap_permitted: status.hex("CapPrm")?,
            cap_inheritable: status.hex("CapInh")?,
            nice: (stat.i64(19)? + 20) as u32,
            _pad0: 0,
        })
    })();
    res.map_err(e)
}

/// MM fields (stat fields 26-28, 45-51), brk, vDSO address; returns the record
/// and the auxv words and exe path for its tail.
pub(crate) fn mm_rec(
    pid: i32,
    stat: &Stat,
    brk: u64,
) -> Result<(MmRec, Vec<u64>, Vec<u8>), DumpError> {
    let auxv = proc::auxv(pid).map_err(perr(pid, "reading auxv"))?;
    let exe =
        proc::readlink(&proc::pid_path(pid, "exe")).map_err(perr(pid, "reading the exe link"))?;
    let vdso = proc::auxv_get(&auxv, libc::AT_SYSINFO_EHDR).unwrap_or(0);
    let f = |n| stat.u64(n);
    let rec = (|| -> std::io::Result<MmRec> {
        Ok(MmRec {
            start_code: f(26)?,
            end_code: f(27)?,
            start_stack: f(28)?,
            start_data: f(45)?,
            end_data: f(46)?,
            start_brk: f(47)?,
            brk,
            arg_start: f(48)?,
            arg_end: f(49)?,
            env_start: f(50)?,
            env_end: f(51)?,
            vdso,
            auxv_words: auxv.len() as u32,
            exe_len: exe.len() as u32,
        })
    })()
    .map_err(perr(pid, "reading mm fields from /proc/PID/stat"))?;
    Ok((rec, auxv, exe))
}

/// All 16 rlimits through prlimit(pid).
pub(crate) fn rlimits(pid: i32) -> Result<RlimitsRec, DumpError> {
    let mut r = RlimitsRec::default();
    for (i, slot) in r.limits.iter_mut().enumerate() {
        let (cur, max) = sys::prlimit_get(pid, i as u32).map_err(perr(pid, "prlimit"))?;
        *slot = Rlimit { cur, max };
    }
    Ok(r)
}

//! The stasis restorer: a position independent, no_std blob that replaces the
//! address space of the prepared child with the image's and brings every
//! thread back through rt_sigreturn. See crates/user/src/restore/mod.rs for the
//! side that prepares its argument block ([`abi::Args`]).
//!
//! Kernel mode (`Args::kernel_fd` >= 0): memory and registers are the kernel
//! module's job. The restorer still moves the vDSO/vvar and sets what system
//! calls can set, but maps no VMA, fills no page, closes none of its fds and
//! registers no rseq area; every thread parks in `STASIS_IOC_RESTART_THREAD`
//! (the leader last, after STATUS_PARKING) and is switched by the module to
//! its checkpointed context.
//!
//! Rules: no panicking paths (no indexing, no unchecked arithmetic on input:
//! all loops use raw pointers bounded by counts checked by the preparer), no
//! statics with addresses (the blob has no relocations), no TLS.
#![no_std]
#![no_main]

mod abi;
mod sys;

use abi::*;
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU32, Ordering};
use sys::*;

// Entry: rdi = &Args, rsp = top of the leader's restorer stack (set by the jumper).
global_asm!(
    ".section .text.entry,\"ax\",@progbits",
    ".globl _start",
    "_start:",
    "and rsp, -16",
    "call {main}",
    "ud2",
    main = sym restorer_main,
);

// clone3 for a thread: rdi = &clone_args, rsi = size, rdx = Args*, rcx = Thread*.
// The child starts on its own stack and calls thread_main(args, thread).
global_asm!(
    ".section .text.clone,\"ax\",@progbits",
    ".globl stasis_clone3_thread",
    "stasis_clone3_thread:",
    "mov r8, rdx",
    "mov r9, rcx",
    "mov eax, 435",
    "syscall",
    "test rax, rax",
    "jnz 2f",
    "mov rdi, r8",
    "mov rsi, r9",
    "and rsp, -16",
    "call {thread}",
    "ud2",
    "2:",
    "ret",
    thread = sym thread_main,
);

extern "C" {
    fn stasis_clone3_thread(cl_args: *const CloneArgs, size: usize, args: *mut Args, t: *const Thread) -> isize;
}


const CLONE_VM: u64 = 0x100;
const CLONE_FS: u64 = 0x200;
const CLONE_FILES: u64 = 0x400;
const CLONE_SIGHAND: u64 = 0x800;
const CLONE_THREAD: u64 = 0x10000;
const CLONE_SYSVSEM: u64 = 0x40000;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit_group(RESTORER_FAIL_EXIT)
}

/// Report a failure on the status pipe and end the whole process.
fn fail(a: &Args, stage: u32, errno: i32, arg: u64, arg2: u64) -> ! {
    send(a.status_fd, STATUS_ERROR, stage, errno, arg, arg2);
    exit_group(RESTORER_FAIL_EXIT)
}

/// Write one status message, built in place without memset/memcpy calls (the
/// blob must not reference compiler_builtins through the GOT).
#[inline(never)]
fn send(fd: i32, kind: u32, stage: u32, errno: i32, arg: u64, arg2: u64) {
    let mut m = core::mem::MaybeUninit::<StatusMsg>::uninit();
    let p = m.as_mut_ptr();
    let w = p as *mut u64;
    let n = core::mem::size_of::<StatusMsg>() / 8;
    let mut i = 0;
    while i < n {
        // SAFETY: i < n words inside m.
        unsafe { core::ptr::write_volatile(w.add(i), 0) };
        i += 1;
    }
    // SAFETY: p points to m, fully initialised above.
    unsafe {
        (*p).kind = kind;
        (*p).stage = stage;
        (*p).errno = errno;
        (*p).arg = arg;
        (*p).arg2 = arg2;
        syscall3(SYS_WRITE, fd as usize, p as usize, core::mem::size_of::<StatusMsg>());
    }
}

/// `p[i]` for an array the preparer laid out with `n` entries.
#[inline(always)]
unsafe fn at<T>(p: u64, i: u64) -> *const T {
    (p as *const T).wrapping_add(i as usize)
}

#[inline(never)]
extern "C" fn restorer_main(a: *mut Args) -> ! {
    // SAFETY: the jumper passes the argument block it prepared in the
    // restorer area, which stays mapped for the restorer's whole life.
    let a: &mut Args = unsafe { &mut *a };
    // Kernel mode: the module maps the VMAs, fills the pages and sets their
    // protections; it also needs the map files' fds and closes them itself.
    let kernel = a.kernel_fd >= 0;
    if a.magic != ARGS_MAGIC || a.nr_specials as usize > MAX_SPECIALS || a.nr_threads == 0
        || (kernel && (a.park != 0 || (a.map_fds == 0 && a.nr_vmas != 0)))
    {
        fail(a, stage::ARGS, 0, a.magic, 0);
    }
    let area_end = a.area_start.wrapping_add(a.area_len);

    // 1. Park the vDSO/vvar inside our area.
    let mut i = 0;
    while i < a.nr_specials as usize {
        let s = match a.specials.get(i) { Some(s) => *s, None => break };
        if s.cur != 0 && s.len != 0 {
            // SAFETY: moves a special mapping onto a placeholder inside our area.
            let r = unsafe {
                syscall6(SYS_MREMAP, s.cur as usize, s.len as usize, s.len as usize,
                    MREMAP_MAYMOVE | MREMAP_FIXED, s.tmp as usize, 0)
            };
            if let Err(e) = check(r) { fail(a, stage::MOVE_VDSO, e, s.cur, s.tmp) }
        }
        i += 1;
    }

    // 2. Drop every mapping outside the restorer area.
    // SAFETY: nothing outside our area is used from here on.
    let r = unsafe { syscall3(SYS_MUNMAP, 0, a.area_start as usize, 0) };
    if let Err(e) = check(r) { fail(a, stage::UNMAP_OLD, e, 0, a.area_start) }
    if a.task_size > area_end {
        // SAFETY: as above.
        let r = unsafe { syscall3(SYS_MUNMAP, area_end as usize, (a.task_size - area_end) as usize, 0) };
        if let Err(e) = check(r) { fail(a, stage::UNMAP_OLD, e, area_end, a.task_size) }
    }

    // 3. vDSO/vvar to the image's addresses (or away).
    let mut i = 0;
    while i < a.nr_specials as usize {
        let s = match a.specials.get(i) { Some(s) => *s, None => break };
        if s.cur != 0 && s.len != 0 {
            let r = if s.dst != 0 {
                // SAFETY: the destination is free in the new layout.
                unsafe {
                    syscall6(SYS_MREMAP, s.tmp as usize, s.len as usize, s.len as usize,
                        MREMAP_MAYMOVE | MREMAP_FIXED, s.dst as usize, 0)
                }
            } else {
                // SAFETY: unmapping our own placeholder.
                unsafe { syscall3(SYS_MUNMAP, s.tmp as usize, s.len as usize, 0) }
            };
            if let Err(e) = check(r) { fail(a, stage::MOVE_VDSO, e, s.tmp, s.dst) }
        }
        i += 1;
    }

    // 4. Map every VMA of the image.
    let mut i = 0;
    while !kernel && i < a.nr_vmas {
        // SAFETY: vmas has nr_vmas entries inside the area.
        let v = unsafe { *at::<Vma>(a.vmas, i) };
        let len = v.end.wrapping_sub(v.start);
        // SAFETY: maps into the image's layout, outside our area (checked by the preparer).
        let r = unsafe {
            syscall6(SYS_MMAP, v.start as usize, len as usize, v.map_prot as usize,
                (v.map_flags | MAP_FIXED) as usize, v.fd as isize as usize, v.offset as usize)
        };
        match check(r) {
            Ok(p) if p as u64 == v.start => {}
            Ok(_) => fail(a, stage::MAP_VMA, 0, v.start, v.end),
            Err(e) => fail(a, stage::MAP_VMA, e, v.start, v.end),
        }
        // THP advice before the fill: with THP "always", writing the pages
        // of a MADV_NOHUGEPAGE range would otherwise fault in huge pages.
        // EINVAL (a kernel without THP) is no reason to fail the restart.
        let thp = if v.madv & MADV_BIT_NOHUGEPAGE != 0 {
            MADV_NOHUGEPAGE
        } else if v.madv & MADV_BIT_HUGEPAGE != 0 {
            MADV_HUGEPAGE
        } else {
            0
        };
        if thp != 0 {
            // SAFETY: advice on the mapping just made.
            let r = unsafe { syscall3(SYS_MADVISE, v.start as usize, len as usize, thp) };
            match check(r) {
                Ok(_) => {}
                Err(e) if e as isize == EINVAL => {}
                Err(e) => fail(a, stage::MADVISE, e, v.start, v.end),
            }
        }
        i += 1;
    }

    // 5. Fill the pages.
    let mut unreported: u64 = 0;
    let mut i = 0;
    while !kernel && i < a.nr_runs {
        // SAFETY: runs has nr_runs entries.
        let run = unsafe { *at::<Run>(a.runs, i) };
        let mut done: u64 = 0;
        while done < run.len {
            // SAFETY: the run lies inside a VMA mapped writable above.
            let r = unsafe {
                syscall6(SYS_PREAD64, a.image_fd as usize, (run.addr + done) as usize,
                    (run.len - done) as usize, (run.file_off + done) as usize, 0, 0)
            };
            match check(r) {
                Ok(0) => fail(a, stage::FILL_PAGES, 0, run.addr + done, run.file_off + done),
                Ok(n) => done += n as u64,
                Err(e) if e as isize == EINTR => {}
                Err(e) => fail(a, stage::FILL_PAGES, e, run.addr + done, run.file_off + done),
            }
        }
        a.filled = a.filled.wrapping_add(run.len);
        unreported = unreported.wrapping_add(run.len);
        if unreported >= PROGRESS_STEP {
            send(a.status_fd, STATUS_PROGRESS, 0, 0, unreported, 0);
            unreported = 0;
        }
        i += 1;
    }
    if unreported != 0 {
        send(a.status_fd, STATUS_PROGRESS, 0, 0, unreported, 0);
    }

    // 6. Final protections and advice.
    let mut i = 0;
    while !kernel && i < a.nr_vmas {
        // SAFETY: as above.
        let v = unsafe { *at::<Vma>(a.vmas, i) };
        let len = (v.end - v.start) as usize;
        if v.prot != v.map_prot {
            // SAFETY: our own fresh mapping.
            let r = unsafe { syscall3(SYS_MPROTECT, v.start as usize, len, v.prot as usize) };
            if let Err(e) = check(r) { fail(a, stage::PROTECT, e, v.start, v.end) }
        }
        if v.madv & MADV_BIT_DONTFORK != 0 {
            // SAFETY: advice on our own mapping.
            let r = unsafe { syscall3(SYS_MADVISE, v.start as usize, len, MADV_DONTFORK) };
            if let Err(e) = check(r) { fail(a, stage::MADVISE, e, v.start, v.end) }
        }
        if v.madv & MADV_BIT_DONTDUMP != 0 {
            // SAFETY: advice on our own mapping.
            let r = unsafe { syscall3(SYS_MADVISE, v.start as usize, len, MADV_DONTDUMP) };
            if let Err(e) = check(r) { fail(a, stage::MADVISE, e, v.start, v.end) }
        }
        if v.madv & MADV_BIT_LOCKED != 0 {
            // SAFETY: locking our own mapping.
            let r = unsafe { syscall3(SYS_MLOCK, v.start as usize, len, 0) };
            if let Err(e) = check(r) { fail(a, stage::MLOCK, e, v.start, v.end) }
        }
        i += 1;
    }

    // 7. mm fields, auxv, exe.
    if a.has_mm != 0 {
        // SAFETY: mm is a valid prctl_mm_map inside the area.
        let r = unsafe {
            syscall6(SYS_PRCTL, PR_SET_MM, PR_SET_MM_MAP, &a.mm as *const PrctlMmMap as usize,
                core::mem::size_of::<PrctlMmMap>(), 0, 0)
        };
        if let Err(e) = check(r) { fail(a, stage::MM_MAP, e, a.mm.start_brk, a.mm.brk) }
    }

    // 8. Our temporary fds (image, mapped files, exe).
    let mut i = 0;
    while !kernel && i < a.nr_close_fds {
        // SAFETY: close_fds has nr_close_fds entries.
        let fd = unsafe { *at::<i32>(a.close_fds, i) };
        // SAFETY: closing an fd we own.
        unsafe { syscall3(SYS_CLOSE, fd as usize, 0, 0) };
        i += 1;
    }

    // 9. The other threads.
    let mut i = 1;
    while i < a.nr_threads {
        // SAFETY: threads has nr_threads entries.
        let t = unsafe { at::<Thread>(a.threads, i) };
        // SAFETY: t is valid.
        let tr = unsafe { &*t };
        let set_tid: u64 = tr.tid as u64;
        let cl = CloneArgs {
            flags: CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM,
            pidfd: 0,
            child_tid: 0,
            parent_tid: 0,
            exit_signal: 0,
            stack: tr.stack,
            stack_size: tr.stack_size,
            tls: 0,
            set_tid: &set_tid as *const u64 as u64,
            set_tid_size: 1,
            cgroup: 0,
        };
        // SAFETY: the child runs thread_main on its own stack in our area.
        let r = unsafe { stasis_clone3_thread(&cl, core::mem::size_of::<CloneArgs>(), a, t) };
        if let Err(e) = check(r) { fail(a, stage::CLONE_THREAD, e, tr.tid as u64, 0) }
        i += 1;
    }
    // Wait until every thread is set up.
    let want = (a.nr_threads - 1) as u32;
    loop {
        let cur = futex_word(&a.ready).load(Ordering::Acquire);
        if cur >= want { break; }
        // SAFETY: futex wait on a word of our area.
        unsafe { syscall6(SYS_FUTEX, &a.ready as *const u32 as usize, FUTEX_WAIT_PRIVATE, cur as usize, 0, 0, 0) };
    }

    // 10. The leader's own thread state.
    // SAFETY: threads[0] exists (nr_threads > 0 checked).
    let leader = unsafe { *at::<Thread>(a.threads, 0) };
    if let Err((st, e)) = thread_setup(&leader, !kernel) { fail(a, st, e, leader.tid as u64, 0) }

    // 11. Pending signals: the process-wide ones and the leader's own (each other
    // thread queued its own in thread_main).
    if let Err((signo, e)) = queue_sigs(a, leader.tid) { fail(a, stage::SIGQUEUE, e, signo as u64, leader.tid as u64) }

    // 12. Timers, at the very end.
    let mut w = 0;
    while w < 3 {
        if let Some(t) = a.itimers.get(w) {
            if t.value_ns != 0 {
                let v: [u64; 4] = [t.interval_ns / 1_000_000_000, (t.interval_ns % 1_000_000_000) / 1000,
                    t.value_ns / 1_000_000_000, ((t.value_ns % 1_000_000_000) / 1000).max(if t.value_ns < 1000 { 1 } else { 0 })];
                // SAFETY: v is a struct itimerval.
                let r = unsafe { syscall3(SYS_SETITIMER, w, v.as_ptr() as usize, 0) };
                if let Err(e) = check(r) { fail(a, stage::ITIMER, e, w as u64, 0) }
            }
        }
        w += 1;
    }
    if a.nr_timers > 0 {
        // SAFETY: prctl with integer arguments.
        let r = unsafe { syscall6(SYS_PRCTL, PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0, 0) };
        // EINVAL: a kernel before 6.13. Its timer ids are handed out in
        // sequence from 0 in a fresh process; posix_timer reaches each id
        // by creating and deleting timers (the timers come in id order).
        let by_prctl = match check(r) {
            Ok(_) => true,
            Err(e) if e as isize == EINVAL => false,
            Err(e) => fail(a, stage::POSIX_TIMER, e, 0, 0),
        };
        let mut i = 0;
        while i < a.nr_timers {
            // SAFETY: timers has nr_timers entries.
            let t = unsafe { *at::<PosixTimer>(a.timers, i) };
            if let Err(e) = posix_timer(&t, by_prctl) { fail(a, stage::POSIX_TIMER, e, t.id as u64, 0) }
            i += 1;
        }
        if by_prctl {
            // SAFETY: as above.
            unsafe { syscall6(SYS_PRCTL, PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0, 0) };
        }
    }

    // 13. Tell the parent we made it, release the threads, go.
    if let Err((st, e)) = lower_caps(a) { fail(a, st, e, leader.tid as u64, 0) }
    if kernel {
        kernel_leader(a)
    }
    if a.park != 0 {
        copy_frame(&leader);
        send(a.status_fd, STATUS_READY, 0, 0, a.filled, 0);
        // SAFETY: closing our status fd.
        unsafe { syscall3(SYS_CLOSE, a.status_fd as usize, 0, 0) };
        park(a)
    }
    send(a.status_fd, STATUS_READY, 0, 0, a.filled, 0);
    // SAFETY: closing our status fd.
    unsafe { syscall3(SYS_CLOSE, a.status_fd as usize, 0, 0) };
    futex_word(&a.go).store(1, Ordering::Release);
    // SAFETY: futex wake on our own word.
    unsafe { syscall6(SYS_FUTEX, &a.go as *const u32 as usize, FUTEX_WAKE_PRIVATE, i32::MAX as usize, 0, 0, 0) };
    sigreturn(leader.frame)
}

/// Kernel mode, the leader's end: hand the fds to map (by VMA start) and the
/// fds to close to the module, tell the parent, and park. On success the
/// module switches this thread to its checkpointed context (never returns).
fn kernel_leader(a: &Args) -> ! {
    let mut n: u64 = 0;
    let mut i = 0;
    while i < a.nr_vmas {
        // SAFETY: vmas has nr_vmas entries.
        let v = unsafe { *at::<Vma>(a.vmas, i) };
        if v.fd >= 0 {
            let m = MapFd { start: v.start, fd: v.fd, _reserved: 0 };
            // SAFETY: map_fds has room for nr_vmas entries and n <= i < nr_vmas.
            unsafe { core::ptr::write_volatile((a.map_fds as *mut MapFd).wrapping_add(n as usize), m) };
            n += 1;
        }
        i += 1;
    }
    let ra = RestartThreadArgs {
        flags: 0,
        timeout_ms: 0,
        map_fds: if n == 0 { 0 } else { a.map_fds },
        close_fds: if a.nr_close_fds == 0 { 0 } else { a.close_fds },
        nr_map_fds: n as u32,
        nr_close_fds: a.nr_close_fds as u32,
    };
    send(a.status_fd, STATUS_PARKING, 0, 0, a.filled, 0);
    // SAFETY: closing our status fd (the parent learns the rest from its
    // own STASIS_IOC_RESTART).
    unsafe { syscall3(SYS_CLOSE, a.status_fd as usize, 0, 0) };
    // SAFETY: ra is a valid RestartThreadArgs whose arrays lie in our area.
    unsafe { syscall3(SYS_IOCTL, a.kernel_fd as usize, IOC_RESTART_THREAD as usize, &ra as *const RestartThreadArgs as usize) };
    exit_group(RESTORER_FAIL_EXIT)
}

/// Create timer `t` under its id: directly (`by_prctl`, the kernel takes the
/// id from timer_create's argument) or by creating it again and again, each
/// time deleting one that got a lower id, until the sequential id matches.
fn posix_timer(t: &PosixTimer, by_prctl: bool) -> Result<(), i32> {
    // struct sigevent: value (8), signo (4), notify (4), tid (4), pad.
    let mut sev = [0u8; 64];
    sev[0..8].copy_from_slice(&t.value.to_le_bytes());
    sev[8..12].copy_from_slice(&t.signo.to_le_bytes());
    sev[12..16].copy_from_slice(&t.sigev_notify.to_le_bytes());
    sev[16..20].copy_from_slice(&t.notify_tid.to_le_bytes());
    let mut id: i32;
    let mut tries: u32 = 0;
    loop {
        id = t.id as i32;
        // SAFETY: sev and id are valid buffers.
        let r = unsafe { syscall3(SYS_TIMER_CREATE, t.clock_id as usize, sev.as_ptr() as usize, &mut id as *mut i32 as usize) };
        check(r)?;
        if id as u32 == t.id {
            break;
        }
        if by_prctl || id < 0 || id as u32 > t.id || tries >= 1 << 20 {
            return Err(0);
        }
        // SAFETY: deleting the timer just created.
        unsafe { syscall3(SYS_TIMER_DELETE, id as usize, 0, 0) };
        tries += 1;
    }
    if t.value_ns != 0 {
        let v: [u64; 4] = [t.interval_ns / 1_000_000_000, t.interval_ns % 1_000_000_000,
            t.value_ns / 1_000_000_000, t.value_ns % 1_000_000_000];
        // SAFETY: v is a struct itimerspec.
        let r = unsafe { syscall6(SYS_TIMER_SETTIME, id as usize, 0, v.as_ptr() as usize, 0, 0, 0) };
        check(r)?;
    }
    Ok(())
}

fn futex_word(w: &u32) -> &AtomicU32 {
    // SAFETY: AtomicU32 has the layout of u32; the word is only accessed atomically
    // while threads run.
    unsafe { &*(w as *const u32 as *const AtomicU32) }
}

/// Lower this thread's capabilities (capset acts on the calling thread only).
fn lower_caps(a: &Args) -> Result<(), (u32, i32)> {
    if a.set_caps == 0 {
        return Ok(());
    }
    // _LINUX_CAPABILITY_VERSION_3, pid 0 = self.
    let hdr: [u32; 2] = [0x2008_0522, 0];
    let [e, p, i] = a.caps;
    let data: [u32; 6] = [e as u32, p as u32, i as u32, (e >> 32) as u32, (p >> 32) as u32, (i >> 32) as u32];
    // SAFETY: hdr and data are the v3 capset structures.
    let r = unsafe { syscall3(SYS_CAPSET, hdr.as_ptr() as usize, data.as_ptr() as usize, 0) };
    check(r).map(|_| ()).map_err(|e| (stage::CAPSET, e))
}

/// Per thread kernel state that only the thread itself can set. `rseq`:
/// register the rseq area (not in kernel mode: the area does not exist yet
/// and the module registers it).
fn thread_setup(t: &Thread, rseq: bool) -> Result<(), (u32, i32)> {
    // SAFETY: arch_prctl with integer arguments; we never use fs/gs ourselves.
    unsafe {
        check(syscall3(SYS_ARCH_PRCTL, ARCH_SET_FS, t.fs_base as usize, 0)).map_err(|e| (stage::SET_TLS, e))?;
        check(syscall3(SYS_ARCH_PRCTL, ARCH_SET_GS, t.gs_base as usize, 0)).map_err(|e| (stage::SET_TLS, e))?;
    }
    if t.robust_list != 0 {
        // SAFETY: registers an address of the restored memory; the kernel only stores it.
        let r = unsafe { syscall3(SYS_SET_ROBUST_LIST, t.robust_list as usize, t.robust_list_len as usize, 0) };
        check(r).map_err(|e| (stage::ROBUST_LIST, e))?;
    }
    // SAFETY: the kernel only stores the address.
    unsafe { syscall3(SYS_SET_TID_ADDRESS, t.clear_child_tid as usize, 0, 0) };
    if rseq && t.rseq_addr != 0 {
        // SAFETY: the rseq area is in restored memory.
        let r = unsafe { syscall6(SYS_RSEQ, t.rseq_addr as usize, t.rseq_len as usize, 0, t.rseq_sig as usize, 0, 0) };
        check(r).map_err(|e| (stage::RSEQ, e))?;
    }
    // SAFETY: comm is NUL terminated (16 bytes, last forced to 0 by the preparer).
    let r = unsafe { syscall3(SYS_PRCTL, PR_SET_NAME, t.comm.as_ptr() as usize, 0) };
    check(r).map_err(|e| (stage::THREAD_NAME, e))?;
    Ok(())
}

/// Queues the pending signals of thread `tid` (the leader also queues the
/// process-wide ones, `tid == 0` in the list). A thread queues its own: the
/// kernel refuses a siginfo with `si_code >= 0` or SI_TKILL (kill, tgkill,
/// kernel-sent) unless the caller is the target thread
/// (do_rt_tgsigqueueinfo), and the leader's own tid is also the pid that
/// rt_sigqueueinfo checks. Signals are blocked in the restorer, so they stay
/// pending until the thread's own mask comes back. Err: (signo, errno).
fn queue_sigs(a: &Args, tid: u32) -> Result<(), (u32, i32)> {
    // SAFETY: getpid has no arguments.
    let pid = unsafe { syscall3(SYS_GETPID, 0, 0, 0) } as usize;
    let leader = pid == tid as usize;
    let mut i = 0;
    while i < a.nr_sigs {
        // SAFETY: sigs has nr_sigs entries.
        let s = unsafe { &*at::<PendingSig>(a.sigs, i) };
        i += 1;
        let r = if s.tid == 0 && leader {
            // SAFETY: info is a 128 byte siginfo.
            unsafe { syscall6(SYS_RT_SIGQUEUEINFO, pid, s.signo as usize, s.info.as_ptr() as usize, 0, 0, 0) }
        } else if s.tid == tid {
            // SAFETY: as above.
            unsafe {
                syscall6(SYS_RT_TGSIGQUEUEINFO, pid, s.tid as usize, s.signo as usize, s.info.as_ptr() as usize, 0, 0)
            }
        } else {
            continue;
        };
        check(r).map_err(|e| (s.signo, e))?;
    }
    Ok(())
}

extern "C" fn thread_main(a: *mut Args, t: *const Thread) -> ! {
    // SAFETY: both point into the restorer area, valid for the thread's life.
    let (a, t) = unsafe { (&*a, *t) };
    let kernel = a.kernel_fd >= 0;
    if let Err((st, e)) = thread_setup(&t, !kernel) { fail(a, st, e, t.tid as u64, 0) }
    if let Err((st, e)) = lower_caps(a) { fail(a, st, e, t.tid as u64, 0) }
    if let Err((signo, e)) = queue_sigs(a, t.tid) { fail(a, stage::SIGQUEUE, e, signo as u64, t.tid as u64) }
    if a.park != 0 {
        copy_frame(&t);
    }
    futex_word(&a.ready).fetch_add(1, Ordering::AcqRel);
    // SAFETY: futex wake on a word of our area.
    unsafe { syscall6(SYS_FUTEX, &a.ready as *const u32 as usize, FUTEX_WAKE_PRIVATE, 1, 0, 0, 0) };
    if kernel {
        let ra = RestartThreadArgs::default();
        // SAFETY: ra is a valid RestartThreadArgs (no arrays); on success the
        // module switches this thread to its checkpointed context.
        let r = unsafe { syscall3(SYS_IOCTL, a.kernel_fd as usize, IOC_RESTART_THREAD as usize, &ra as *const RestartThreadArgs as usize) };
        let e = match check(r) { Err(e) => e, Ok(_) => 0 };
        fail(a, stage::KERNEL_THREAD, e, t.tid as u64, 0)
    }
    if a.park != 0 {
        park(a)
    }
    while futex_word(&a.go).load(Ordering::Acquire) == 0 {
        // SAFETY: futex wait on a word of our area.
        unsafe { syscall6(SYS_FUTEX, &a.go as *const u32 as usize, FUTEX_WAIT_PRIVATE, 0, 0, 0, 0) };
    }
    sigreturn(t.frame)
}

/// Copy the thread's frame to its own stack (word by word: no memcpy call).
fn copy_frame(t: &Thread) {
    if t.frame_dst == 0 {
        return;
    }
    let src = t.frame as *const u64;
    let dst = t.frame_dst as *mut u64;
    let n = (t.frame_len / 8) as usize;
    let mut i = 0;
    while i < n {
        // SAFETY: the preparer checked both ranges: the frame in our area and
        // its destination below the thread's stack pointer in restored memory.
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
        i += 1;
    }
}

/// Wait forever: the parent takes over through ptrace, unmaps our area and
/// points this thread at rt_sigreturn with its frame on its own stack.
fn park(a: &Args) -> ! {
    futex_word(&a.parked).fetch_add(1, Ordering::AcqRel);
    loop {
        // SAFETY: futex wait on a word of our area that nobody changes.
        unsafe { syscall6(SYS_FUTEX, &a.go as *const u32 as usize, FUTEX_WAIT_PRIVATE, 0, 0, 0, 0) };
    }
}

/// Switch to the prepared frame and let the kernel restore everything from it.
fn sigreturn(frame: u64) -> ! {
    // SAFETY: frame points to a complete rt_sigframe (ucontext + fpstate) built by
    // the preparer; rt_sigreturn reads it at rsp - 8 and never returns on success.
    unsafe {
        asm!(
            "mov rsp, {sp}",
            "mov eax, 15",
            "syscall",
            "mov edi, {code}",
            "mov eax, 231",
            "syscall",
            "ud2",
            sp = in(reg) frame + 8,
            code = const RESTORER_FAIL_EXIT,
            options(noreturn)
        )
    }
}

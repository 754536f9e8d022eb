//! Names for the numbers stored in an image.

use stasis_image::records::{engine, file_kind, vma_flags, vma_kind};

/// XSAVE state components by XCR0 bit.
const XFEATURES: [&str; 20] = [
    "x87",
    "sse",
    "avx",
    "mpx_bndregs",
    "mpx_bndcsr",
    "avx512_opmask",
    "avx512_zmm_hi256",
    "avx512_hi16_zmm",
    "pt",
    "pkru",
    "pasid",
    "cet_u",
    "cet_s",
    "hdc",
    "uintr",
    "lbr",
    "hwp",
    "amx_tilecfg",
    "amx_tiledata",
    "apx",
];

/// The features set in an XCR0 / XSTATE_BV value.
pub fn xfeatures(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|b| mask & (1u64 << b) != 0)
        .map(|b| match XFEATURES.get(b) {
            Some(n) => (*n).to_string(),
            None => format!("bit{b}"),
        })
        .collect()
}

pub fn engine(e: u32) -> String {
    match e {
        engine::KERNEL => "kernel".into(),
        engine::USER => "user".into(),
        n => format!("unknown({n})"),
    }
}

pub fn arch(a: u32) -> String {
    match a {
        stasis_image::records::arch::X86_64 => "x86_64".into(),
        n => format!("unknown({n})"),
    }
}

pub fn vma_kind(k: u32) -> String {
    match k {
        vma_kind::ANON_PRIVATE => "anon".into(),
        vma_kind::ANON_SHARED => "anon-shared".into(),
        vma_kind::FILE_PRIVATE => "file".into(),
        vma_kind::FILE_SHARED => "file-shared".into(),
        vma_kind::VDSO => "vdso".into(),
        vma_kind::VVAR => "vvar".into(),
        vma_kind::VSYSCALL => "vsyscall".into(),
        vma_kind::HEAP => "heap".into(),
        vma_kind::STACK => "stack".into(),
        vma_kind::SYSV_SHM => "sysv-shm".into(),
        n => format!("unknown({n})"),
    }
}

/// `rwxp` / `rw-s` as in /proc/PID/maps.
pub fn prot(prot: u32, flags: u32) -> String {
    let r = if prot & libc::PROT_READ as u32 != 0 {
        'r'
    } else {
        '-'
    };
    let w = if prot & libc::PROT_WRITE as u32 != 0 {
        'w'
    } else {
        '-'
    };
    let x = if prot & libc::PROT_EXEC as u32 != 0 {
        'x'
    } else {
        '-'
    };
    let s = if flags & vma_flags::SHARED != 0 {
        's'
    } else {
        'p'
    };
    [r, w, x, s].iter().collect()
}

pub fn vma_flags(flags: u32) -> Vec<&'static str> {
    [
        (vma_flags::SHARED, "shared"),
        (vma_flags::GROWSDOWN, "growsdown"),
        (vma_flags::FILE_DELETED, "deleted"),
        (vma_flags::DONTFORK, "dontfork"),
        (vma_flags::DONTDUMP, "dontdump"),
        (vma_flags::LOCKED, "locked"),
        (vma_flags::NORESERVE, "noreserve"),
        (vma_flags::HUGEPAGE, "hugepage"),
        (vma_flags::NOHUGEPAGE, "nohugepage"),
    ]
    .into_iter()
    .filter(|(b, _)| flags & b != 0)
    .map(|(_, n)| n)
    .collect()
}

pub fn file_kind(k: u32) -> String {
    match k {
        file_kind::REGULAR => "file".into(),
        file_kind::DIRECTORY => "dir".into(),
        file_kind::CHAR_DEVICE => "chr".into(),
        file_kind::BLOCK_DEVICE => "blk".into(),
        file_kind::TTY => "tty".into(),
        file_kind::MEMFD => "memfd".into(),
        n => format!("unknown({n})"),
    }
}

/// Open flags as `O_RDWR|O_APPEND|...`, plus `O_CLOEXEC` from the fd flags.
pub fn open_flags(open: u32, fd_flags: u32) -> String {
    let open = open as i32;
    let mut v: Vec<String> = vec![match open & libc::O_ACCMODE {
        libc::O_RDONLY => "O_RDONLY".into(),
        libc::O_WRONLY => "O_WRONLY".into(),
        libc::O_RDWR => "O_RDWR".into(),
        _ => "O_ACCMODE".into(),
    }];
    // The kernel sets O_LARGEFILE (0o100000 on x86_64; libc's constant is 0
    // there) on every file of a 64-bit process: not worth showing.
    const O_LARGEFILE: i32 = 0o100000;
    let mut rest = open & !libc::O_ACCMODE & !O_LARGEFILE;
    for (bit, name) in [
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        (libc::O_SYNC, "O_SYNC"),
        (libc::O_DSYNC, "O_DSYNC"),
        (libc::O_DIRECT, "O_DIRECT"),
        (libc::O_NOATIME, "O_NOATIME"),
        (libc::O_PATH, "O_PATH"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
        (libc::O_ASYNC, "O_ASYNC"),
        (libc::O_TMPFILE & !libc::O_DIRECTORY, "O_TMPFILE"),
    ] {
        if rest & bit == bit && bit != 0 {
            v.push(name.into());
            rest &= !bit;
        }
    }
    // O_CLOEXEC is an fd flag; the kernel does not report it in f_flags.
    rest &= !libc::O_CLOEXEC;
    if fd_flags & libc::FD_CLOEXEC as u32 != 0 {
        v.push("O_CLOEXEC".into());
    }
    if rest != 0 {
        v.push(format!("{rest:#o}"));
    }
    v.join("|")
}

/// System call numbers at or above this are not taken as system calls.
pub const SYSCALL_NR_LIMIT: u64 = 1024;

/// Names of the x86_64 system calls a checkpointed thread is usually in.
pub fn syscall(nr: u64) -> Option<&'static str> {
    Some(match nr {
        0 => "read",
        1 => "write",
        7 => "poll",
        17 => "pread64",
        18 => "pwrite64",
        19 => "readv",
        20 => "writev",
        23 => "select",
        24 => "sched_yield",
        34 => "pause",
        35 => "nanosleep",
        43 => "accept",
        45 => "recvfrom",
        44 => "sendto",
        46 => "sendmsg",
        47 => "recvmsg",
        61 => "wait4",
        72 => "fcntl",
        202 => "futex",
        230 => "clock_nanosleep",
        232 => "epoll_wait",
        247 => "waitid",
        270 => "pselect6",
        271 => "ppoll",
        281 => "epoll_pwait",
        288 => "accept4",
        130 => "rt_sigsuspend",
        128 => "rt_sigtimedwait",
        _ => return None,
    })
}

const SIGNALS: [&str; 31] = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// Signal name for 1..=64 (`SIGRTMIN+n` for real-time signals).
pub fn signal(sig: u32) -> String {
    match sig {
        1..=31 => SIGNALS[sig as usize - 1].to_string(),
        32 => "SIGRTMIN-2".into(),
        33 => "SIGRTMIN-1".into(),
        34 => "SIGRTMIN".into(),
        35..=64 => format!("SIGRTMIN+{}", sig - 34),
        n => format!("signal {n}"),
    }
}

/// Signals in a mask (bit n-1 = signal n).
pub fn sigset(mask: u64) -> Vec<String> {
    (1..=64u32)
        .filter(|s| mask & (1u64 << (s - 1)) != 0)
        .map(signal)
        .collect()
}

/// SA_* flags of a sigaction.
pub fn sa_flags(flags: u64) -> Vec<String> {
    const SA_RESTORER: u64 = 0x0400_0000;
    let mut rest = flags;
    let mut v = Vec::new();
    for (bit, name) in [
        (libc::SA_NOCLDSTOP as u64, "SA_NOCLDSTOP"),
        (libc::SA_NOCLDWAIT as u64, "SA_NOCLDWAIT"),
        (libc::SA_SIGINFO as u64, "SA_SIGINFO"),
        (libc::SA_ONSTACK as u64, "SA_ONSTACK"),
        (libc::SA_RESTART as u64, "SA_RESTART"),
        (libc::SA_NODEFER as u64, "SA_NODEFER"),
        (libc::SA_RESETHAND as u64, "SA_RESETHAND"),
        (SA_RESTORER, "SA_RESTORER"),
    ] {
        if rest & bit != 0 {
            v.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        v.push(format!("{rest:#x}"));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            xfeatures(0x2e7),
            [
                "x87",
                "sse",
                "avx",
                "avx512_opmask",
                "avx512_zmm_hi256",
                "avx512_hi16_zmm",
                "pkru"
            ]
        );
        assert_eq!(xfeatures(1 << 40), ["bit40"]);
        assert_eq!(prot(3, vma_flags::SHARED), "rw-s");
        assert_eq!(prot(5, 0), "r-xp");
        assert_eq!(signal(10), "SIGUSR1");
        assert_eq!(syscall(202), Some("futex"));
        assert_eq!(syscall(999), None);
        assert_eq!(signal(34), "SIGRTMIN");
        assert_eq!(signal(64), "SIGRTMIN+30");
        assert_eq!(sigset(1 << 9 | 1 << 14), ["SIGUSR1", "SIGTERM"]);
        assert_eq!(
            open_flags((libc::O_WRONLY | libc::O_APPEND) as u32, 1),
            "O_WRONLY|O_APPEND|O_CLOEXEC"
        );
        assert_eq!(open_flags(libc::O_RDONLY as u32 | 0o100000, 0), "O_RDONLY");
    }
}

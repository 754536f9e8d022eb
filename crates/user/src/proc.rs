//! Parsers for the /proc files the user engine reads.
//!
//! Each function reads one file of /proc/PID and returns typed data; paths
//! are kept as bytes (`Vec<u8>`) since file names need not be UTF-8. Errors
//! are `io::Error`s whose message names the file and what was wrong.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn bad(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {}", path.display(), why),
    )
}

fn ctx(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {}", path.display(), e))
}

/// Read a whole /proc file (they report size 0, so read to the end).
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    fs::read(path).map_err(|e| ctx(path, e))
}

/// readlink as bytes.
pub fn readlink(path: &Path) -> io::Result<Vec<u8>> {
    fs::read_link(path)
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .map_err(|e| ctx(path, e))
}

pub fn pid_path(pid: i32, rest: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{rest}"))
}

/// Thread ids of `pid` (/proc/PID/task), sorted.
pub fn tasks(pid: i32) -> io::Result<Vec<i32>> {
    numbered_entries(pid, "task")
}

/// The entries of /proc/PID/`dir` whose names are numbers, sorted.
fn numbered_entries(pid: i32, dir: &str) -> io::Result<Vec<i32>> {
    let p = pid_path(pid, dir);
    let mut v = Vec::new();
    for e in fs::read_dir(&p).map_err(|e| ctx(&p, e))? {
        let e = e.map_err(|e| ctx(&p, e))?;
        if let Some(t) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
            v.push(t);
        }
    }
    v.sort_unstable();
    Ok(v)
}

/// Fields of /proc/PID/stat after the command name. `field(n)` takes the
/// 1-based field number of proc(5).
pub struct Stat {
    pub comm: Vec<u8>,
    rest: Vec<String>,
    path: PathBuf,
}

impl Stat {
    pub fn read(pid: i32) -> io::Result<Stat> {
        Self::read_path(pid_path(pid, "stat"))
    }
    pub fn read_path(path: PathBuf) -> io::Result<Stat> {
        let raw = read(&path)?;
        let open = raw
            .iter()
            .position(|&c| c == b'(')
            .ok_or_else(|| bad(&path, "no '('"))?;
        let close = raw
            .iter()
            .rposition(|&c| c == b')')
            .ok_or_else(|| bad(&path, "no ')'"))?;
        if close < open {
            return Err(bad(&path, "malformed comm"));
        }
        let comm = raw[open + 1..close].to_vec();
        let rest = String::from_utf8_lossy(&raw[close + 1..])
            .split_ascii_whitespace()
            .map(str::to_owned)
            .collect();
        Ok(Stat { comm, rest, path })
    }
    /// Field `n` (1-based, as numbered in proc(5)); n >= 3.
    pub fn str(&self, n: usize) -> io::Result<&str> {
        n.checked_sub(3)
            .and_then(|i| self.rest.get(i))
            .map(String::as_str)
            .ok_or_else(|| bad(&self.path, format!("missing field {n}")))
    }
    pub fn i64(&self, n: usize) -> io::Result<i64> {
        let s = self.str(n)?;
        s.parse()
            .map_err(|_| bad(&self.path, format!("field {n} = {s:?} is not a number")))
    }
    pub fn u64(&self, n: usize) -> io::Result<u64> {
        let s = self.str(n)?;
        s.parse()
            .map_err(|_| bad(&self.path, format!("field {n} = {s:?} is not a number")))
    }
    /// Process state letter (field 3).
    pub fn state(&self) -> char {
        self.rest
            .first()
            .and_then(|s| s.chars().next())
            .unwrap_or('?')
    }
}

/// /proc/PID/status as a key → value map.
pub struct Status {
    map: HashMap<String, String>,
    path: PathBuf,
}

impl Status {
    pub fn read(pid: i32) -> io::Result<Status> {
        Self::read_path(pid_path(pid, "status"))
    }
    pub fn read_path(path: PathBuf) -> io::Result<Status> {
        let raw = read(&path)?;
        let text = String::from_utf8_lossy(&raw);
        let map = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Ok(Status { map, path })
    }
    pub fn get(&self, key: &str) -> io::Result<&str> {
        self.map
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| bad(&self.path, format!("no {key}:")))
    }
    /// Whitespace separated decimal numbers (Uid:, Gid:).
    pub fn nums(&self, key: &str) -> io::Result<Vec<u64>> {
        self.get(key)?
            .split_ascii_whitespace()
            .map(|s| {
                s.parse()
                    .map_err(|_| bad(&self.path, format!("{key}: bad number {s:?}")))
            })
            .collect()
    }
    pub fn num(&self, key: &str) -> io::Result<u64> {
        let s = self.get(key)?;
        let s = s.split_ascii_whitespace().next().unwrap_or("");
        s.parse()
            .map_err(|_| bad(&self.path, format!("{key}: bad number {s:?}")))
    }
    /// A hex field (SigBlk:, CapEff:...).
    pub fn hex(&self, key: &str) -> io::Result<u64> {
        let s = self.get(key)?;
        u64::from_str_radix(s, 16).map_err(|_| bad(&self.path, format!("{key}: bad hex {s:?}")))
    }
    /// An octal field (Umask:).
    pub fn octal(&self, key: &str) -> io::Result<u32> {
        let s = self.get(key)?;
        u32::from_str_radix(s, 8).map_err(|_| bad(&self.path, format!("{key}: bad octal {s:?}")))
    }
}

/// One line of /proc/PID/smaps with the fields we use.
#[derive(Clone, Debug, Default)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    /// Path or pseudo name (`[heap]`, `[stack]`, `[vdso]`...), with any
    /// " (deleted)" suffix kept.
    pub path: Vec<u8>,
    /// Rss: and Swap: in KiB (0 when absent).
    pub rss_kb: u64,
    pub swap_kb: u64,
    /// Two-letter VmFlags (e.g. "gd", "dc", "lo").
    pub vmflags: Vec<String>,
}

impl MapEntry {
    pub fn has_flag(&self, f: &str) -> bool {
        self.vmflags.iter().any(|v| v == f)
    }
    pub fn deleted(&self) -> bool {
        self.path.ends_with(b" (deleted)")
    }
    /// dev_t as the kernel's new encoding (makedev).
    pub fn dev(&self) -> u64 {
        libc::makedev(self.dev_major, self.dev_minor)
    }
}

fn parse_map_line(line: &[u8], path: &Path) -> io::Result<MapEntry> {
    // start-end perms offset dev inode [spaces path]
    let mut fields = Vec::with_capacity(6);
    let mut i = 0;
    for _ in 0..5 {
        while i < line.len() && line[i] == b' ' {
            i += 1;
        }
        let s = i;
        while i < line.len() && line[i] != b' ' {
            i += 1;
        }
        fields.push(&line[s..i]);
    }
    while i < line.len() && line[i] == b' ' {
        i += 1;
    }
    let name = line[i..].to_vec();
    let txt = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let hex = |b: &[u8]| {
        u64::from_str_radix(&txt(b), 16)
            .map_err(|_| bad(path, format!("bad hex {:?} in {:?}", txt(b), txt(line))))
    };
    let range = txt(fields[0]);
    let (s, e) = range
        .split_once('-')
        .ok_or_else(|| bad(path, format!("bad range {range:?}")))?;
    let start =
        u64::from_str_radix(s, 16).map_err(|_| bad(path, format!("bad range {range:?}")))?;
    let end = u64::from_str_radix(e, 16).map_err(|_| bad(path, format!("bad range {range:?}")))?;
    let perms = fields[1];
    if perms.len() < 4 {
        return Err(bad(path, format!("bad perms in {:?}", txt(line))));
    }
    let dev = txt(fields[3]);
    let (ma, mi) = dev
        .split_once(':')
        .ok_or_else(|| bad(path, format!("bad dev {dev:?}")))?;
    Ok(MapEntry {
        start,
        end,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        exec: perms[2] == b'x',
        shared: perms[3] == b's',
        offset: hex(fields[2])?,
        dev_major: u32::from_str_radix(ma, 16)
            .map_err(|_| bad(path, format!("bad dev {dev:?}")))?,
        dev_minor: u32::from_str_radix(mi, 16)
            .map_err(|_| bad(path, format!("bad dev {dev:?}")))?,
        inode: txt(fields[4])
            .parse()
            .map_err(|_| bad(path, format!("bad inode in {:?}", txt(line))))?,
        path: name,
        ..MapEntry::default()
    })
}

/// All VMAs of `pid` from /proc/PID/smaps, in address order.
pub fn smaps(pid: i32) -> io::Result<Vec<MapEntry>> {
    let path = pid_path(pid, "smaps");
    let raw = read(&path)?;
    let mut out: Vec<MapEntry> = Vec::new();
    for line in raw.split(|&c| c == b'\n') {
        if line.is_empty() {
            continue;
        }
        // Header lines start with a hex range "a-b"; attribute lines with "Name:".
        let first = line.split(|&c| c == b' ').next().unwrap_or(b"");
        if first.contains(&b'-') && !first.ends_with(b":") {
            out.push(parse_map_line(line, &path)?);
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        let text = String::from_utf8_lossy(line);
        if let Some(v) = text.strip_prefix("VmFlags:") {
            cur.vmflags = v.split_ascii_whitespace().map(str::to_owned).collect();
        } else if let Some(v) = text.strip_prefix("Rss:") {
            cur.rss_kb = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
        } else if let Some(v) = text.strip_prefix("Swap:") {
            cur.swap_kb = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
        }
    }
    Ok(out)
}

/// /proc/PID/auxv as u64 words (pairs, up to and including AT_NULL).
pub fn auxv(pid: i32) -> io::Result<Vec<u64>> {
    let path = pid_path(pid, "auxv");
    let raw = read(&path)?;
    let mut words: Vec<u64> = raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    // Cut after the first AT_NULL pair.
    if let Some(i) = words.chunks_exact(2).position(|p| p[0] == 0) {
        words.truncate(2 * i + 2);
    }
    Ok(words)
}

/// The value of auxv entry `key`.
pub fn auxv_get(words: &[u64], key: u64) -> Option<u64> {
    words.chunks_exact(2).find(|p| p[0] == key).map(|p| p[1])
}

/// /proc/PID/fdinfo/FD fields.
#[derive(Clone, Debug, Default)]
pub struct FdInfo {
    pub pos: u64,
    /// Open flags including O_CLOEXEC (as the kernel prints them, octal).
    pub flags: u32,
    pub mnt_id: u64,
    /// Every line, for kind-specific fields (eventfd-count, tfd...).
    pub lines: Vec<String>,
}

pub fn fdinfo(pid: i32, fd: i32) -> io::Result<FdInfo> {
    let path = pid_path(pid, &format!("fdinfo/{fd}"));
    let raw = read(&path)?;
    let text = String::from_utf8_lossy(&raw);
    let mut fi = FdInfo::default();
    for l in text.lines() {
        if let Some((k, v)) = l.split_once(':') {
            let v = v.trim();
            match k {
                "pos" => fi.pos = v.parse().map_err(|_| bad(&path, "bad pos"))?,
                "flags" => {
                    fi.flags = u32::from_str_radix(v, 8).map_err(|_| bad(&path, "bad flags"))?
                }
                "mnt_id" => fi.mnt_id = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        fi.lines.push(l.to_owned());
    }
    Ok(fi)
}

/// Open fd numbers of `pid`, sorted.
pub fn fds(pid: i32) -> io::Result<Vec<i32>> {
    numbered_entries(pid, "fd")
}

/// One entry of /proc/PID/timers.
#[derive(Clone, Debug, Default)]
pub struct ProcTimer {
    pub id: u32,
    pub signo: u32,
    pub sigev_value: u64,
    /// SIGEV_* value (with SIGEV_THREAD_ID = 4 when "tid").
    pub notify: u32,
    pub notify_pid: u32,
    pub clock_id: u32,
}

/// /proc/PID/timers (POSIX timers). Ok(empty) when there are none.
pub fn timers(pid: i32) -> io::Result<Vec<ProcTimer>> {
    let path = pid_path(pid, "timers");
    let raw = read(&path)?;
    let text = String::from_utf8_lossy(&raw);
    let mut out: Vec<ProcTimer> = Vec::new();
    for l in text.lines() {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "ID" => out.push(ProcTimer {
                id: v.parse().map_err(|_| bad(&path, "bad ID"))?,
                ..Default::default()
            }),
            "signal" => {
                let t = out
                    .last_mut()
                    .ok_or_else(|| bad(&path, "signal before ID"))?;
                let (s, val) = v
                    .split_once('/')
                    .ok_or_else(|| bad(&path, "bad signal line"))?;
                t.signo = s.parse().map_err(|_| bad(&path, "bad signo"))?;
                t.sigev_value =
                    u64::from_str_radix(val, 16).map_err(|_| bad(&path, "bad sigev value"))?;
            }
            "notify" => {
                let t = out
                    .last_mut()
                    .ok_or_else(|| bad(&path, "notify before ID"))?;
                // "signal/pid.123", "thread/tid.123", "none/pid.0"
                let (kind, who) = v
                    .split_once('/')
                    .ok_or_else(|| bad(&path, "bad notify line"))?;
                let base = match kind {
                    "signal" => libc::SIGEV_SIGNAL as u32,
                    "none" => libc::SIGEV_NONE as u32,
                    "thread" => libc::SIGEV_THREAD as u32,
                    _ => return Err(bad(&path, format!("unknown notify kind {kind:?}"))),
                };
                let (pt, n) = who
                    .split_once('.')
                    .ok_or_else(|| bad(&path, "bad notify target"))?;
                t.notify = if pt == "tid" {
                    base | libc::SIGEV_THREAD_ID as u32
                } else {
                    base
                };
                t.notify_pid = n.parse().unwrap_or(0);
            }
            "ClockID" => {
                let t = out
                    .last_mut()
                    .ok_or_else(|| bad(&path, "ClockID before ID"))?;
                t.clock_id = v.parse().map_err(|_| bad(&path, "bad ClockID"))?;
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Children of every thread of `pid` (/proc/PID/task/*/children).
pub fn children(pid: i32) -> io::Result<Vec<i32>> {
    let mut out = Vec::new();
    for t in tasks(pid)? {
        let p = pid_path(pid, &format!("task/{t}/children"));
        match fs::read(&p) {
            Ok(raw) => {
                for w in String::from_utf8_lossy(&raw).split_ascii_whitespace() {
                    if let Ok(c) = w.parse() {
                        out.push(c);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // CONFIG_PROC_CHILDREN off, or the thread is gone: scan /proc.
                if !Path::new(&format!("/proc/{pid}/task")).exists() {
                    continue;
                }
                return children_by_scan(pid);
            }
            Err(e) => return Err(ctx(&p, e)),
        }
    }
    Ok(out)
}

fn children_by_scan(pid: i32) -> io::Result<Vec<i32>> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc")? {
        let Ok(e) = e else { continue };
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(st) = Stat::read(p) {
            if st.i64(4).ok() == Some(i64::from(pid)) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Thread name (/proc/PID/task/TID/comm), without the newline.
pub fn thread_comm(pid: i32, tid: i32) -> io::Result<Vec<u8>> {
    let mut v = read(&pid_path(pid, &format!("task/{tid}/comm")))?;
    while v.last() == Some(&b'\n') {
        v.pop();
    }
    Ok(v)
}

/// personality(2) value (/proc/PID/personality, hex).
pub fn personality(pid: i32) -> io::Result<u32> {
    let path = pid_path(pid, "personality");
    let raw = read(&path)?;
    let s = String::from_utf8_lossy(&raw);
    u32::from_str_radix(s.trim(), 16).map_err(|_| bad(&path, format!("bad value {:?}", s.trim())))
}

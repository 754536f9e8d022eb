//! VMAs and page contents.
//!
//! Pages are found from /proc/PID/pagemap (present: bit 63, swapped: bit 62,
//! file-page-or-shared-anon: bit 61) so untouched memory is never faulted in;
//! they are read with process_vm_readv in large batches (/proc/PID/mem for
//! VMAs without read permission), zero pages are dropped (except in private
//! file mappings, where the file would show through), and each batch
//! becomes one PAGES record (a VMA may have several, in address order).

use std::io;
use std::os::fd::OwnedFd;

use stasis_image::records::{vma_flags, vma_kind, PageRun, VmaRec};

use super::DumpError;
use crate::proc::{self, MapEntry};
use crate::sys;

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAP: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;

/// Largest batch of page data read at once.
pub(crate) const BATCH_BYTES: usize = 16 << 20;

/// Which pages of a VMA hold state that must be saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Save {
    /// Nothing: data comes from the file or the kernel.
    Nothing,
    /// Present or swapped pages.
    All,
    /// Only private anonymous copies (pagemap bit 61 clear).
    AnonOnly,
}

/// One VMA as it goes into the image.
pub(crate) struct Vma {
    pub rec: VmaRec,
    pub path: Vec<u8>,
    pub save: Save,
    pub readable: bool,
    /// Runs of candidate pages (addr, nr_pages) found in pagemap (or in the
    /// shared memory object).
    pub runs: Vec<(u64, u64)>,
    /// Shared anonymous memory: the shmem object, opened through
    /// /proc/PID/map_files, to read its pages (all of them, also those not
    /// mapped in the page tables: zapped or swapped out).
    pub object: Option<OwnedFd>,
}

fn unsupported(pid: i32, m: &MapEntry, reason: &str) -> DumpError {
    DumpError::Unsupported {
        pid,
        what: format!(
            "mapping {:#x}-{:#x} {}",
            m.start,
            m.end,
            String::from_utf8_lossy(&m.path)
        ),
        reason: reason.to_owned(),
    }
}

/// An open fd on a deleted file whose contents the image carries: (dev,
/// ino, open flags). A mapping of that file can be restored from it.
pub(crate) type DeletedFd = (u64, u64, u32);

/// Classify the VMAs of `pid`; refuses mappings that cannot be restored.
pub(crate) fn vmas(
    pid: i32,
    maps: &[MapEntry],
    deleted_fds: &[DeletedFd],
) -> Result<Vec<Vma>, DumpError> {
    let mut out = Vec::with_capacity(maps.len());
    for m in maps {
        let p = m.path.as_slice();
        let mut flags = 0u32;
        if m.shared {
            flags |= vma_flags::SHARED;
        }
        for (f, bit) in [
            ("gd", vma_flags::GROWSDOWN),
            ("dc", vma_flags::DONTFORK),
            ("dd", vma_flags::DONTDUMP),
            ("lo", vma_flags::LOCKED),
            ("nr", vma_flags::NORESERVE),
            ("hg", vma_flags::HUGEPAGE),
            ("nh", vma_flags::NOHUGEPAGE),
        ] {
            if m.has_flag(f) {
                flags |= bit;
            }
        }
        let special = matches!(p, b"[vdso]" | b"[vvar]" | b"[vvar_vclock]" | b"[vsyscall]");
        if !special && (m.has_flag("io") || m.has_flag("pf")) {
            return Err(unsupported(
                pid,
                m,
                "device (VM_IO/VM_PFNMAP) mappings cannot be checkpointed",
            ));
        }
        if m.has_flag("um") || m.has_flag("uw") {
            return Err(unsupported(
                pid,
                m,
                "userfaultfd-registered memory is not supported",
            ));
        }
        let mut shm_id = 0u64;
        let (kind, save) = match p {
            b"[vdso]" => (vma_kind::VDSO, Save::Nothing),
            b"[vvar]" | b"[vvar_vclock]" => (vma_kind::VVAR, Save::Nothing),
            b"[vsyscall]" => (vma_kind::VSYSCALL, Save::Nothing),
            b"[heap]" => (vma_kind::HEAP, Save::All),
            b"[stack]" => (vma_kind::STACK, Save::All),
            _ if p.is_empty() || p.starts_with(b"[anon:") => {
                if m.shared {
                    return Err(unsupported(
                        pid,
                        m,
                        "unnamed shared mapping of unknown kind",
                    ));
                }
                (vma_kind::ANON_PRIVATE, Save::All)
            }
            _ if p.starts_with(b"[anon_shmem:") || (p == b"/dev/zero (deleted)" && m.shared) => {
                shm_id = m.inode;
                (vma_kind::ANON_SHARED, Save::All)
            }
            _ if p.starts_with(b"/SYSV") => {
                return Err(unsupported(
                    pid,
                    m,
                    "SysV shared memory is not supported by the user engine yet",
                ));
            }
            _ if p.starts_with(b"[") => {
                return Err(unsupported(
                    pid,
                    m,
                    "special kernel mapping of unknown kind",
                ));
            }
            _ => {
                if m.deleted() {
                    // Restorable when an fd of the process on the same file
                    // carries its contents (FILE_DATA), with a mode that
                    // allows this mapping.
                    let writes = m.shared && m.write;
                    let ok = deleted_fds.iter().any(|&(dev, ino, fl)| {
                        dev == m.dev()
                            && ino == m.inode
                            && match fl as i32 & libc::O_ACCMODE {
                                libc::O_RDWR => true,
                                libc::O_RDONLY => !writes,
                                _ => false,
                            }
                    });
                    if !ok {
                        return Err(unsupported(
                            pid,
                            m,
                            "mapping of a deleted file that no open fd (readable, writable for a shared writable \
                             mapping) refers to: its contents could not be mapped back at restart",
                        ));
                    }
                }
                if m.shared {
                    (vma_kind::FILE_SHARED, Save::Nothing)
                } else {
                    (vma_kind::FILE_PRIVATE, Save::AnonOnly)
                }
            }
        };
        if m.deleted() {
            flags |= vma_flags::FILE_DELETED;
        }
        let prot = (if m.read { libc::PROT_READ } else { 0 }
            | if m.write { libc::PROT_WRITE } else { 0 }
            | if m.exec { libc::PROT_EXEC } else { 0 }) as u32;
        let rec = VmaRec {
            start: m.start,
            end: m.end,
            offset: m.offset,
            prot,
            flags,
            kind,
            path_len: p.len() as u32,
            dev: m.dev(),
            ino: m.inode,
            shm_id,
        };
        let mut object = None;
        if kind == vma_kind::ANON_SHARED {
            let mf = proc::pid_path(pid, &format!("map_files/{:x}-{:x}", m.start, m.end));
            object = sys::open(mf.as_os_str(), libc::O_RDONLY).ok();
        }
        // Nothing mapped and nothing swapped: no page to look for (except in
        // a shared object, whose pages need not be mapped here).
        let save = if m.rss_kb == 0 && m.swap_kb == 0 && object.is_none() {
            Save::Nothing
        } else {
            save
        };
        out.push(Vma {
            rec,
            path: p.to_vec(),
            save,
            readable: m.read,
            runs: Vec::new(),
            object,
        });
    }
    Ok(out)
}

/// Fill `runs` of every VMA from pagemap. Returns the total candidate bytes.
pub(crate) fn scan(pid: i32, vmas: &mut [Vma], page_size: u64) -> Result<u64, DumpError> {
    let path = proc::pid_path(pid, "pagemap");
    let pm = sys::open(path.as_os_str(), libc::O_RDONLY)
        .map_err(|e| DumpError::io(pid, "opening pagemap", e))?;
    let mut total = 0u64;
    const CHUNK: usize = 64 * 1024; // entries per read
    let mut buf = vec![0u8; CHUNK * 8];
    let mut use_scan = std::env::var_os("STASIS_NO_PAGEMAP_SCAN").is_none();
    for v in vmas.iter_mut() {
        if v.save == Save::Nothing {
            continue;
        }
        if let Some(obj) = &v.object {
            let (runs, bytes) = object_runs(pid, obj, &v.rec, page_size)?;
            v.runs = runs;
            total += bytes;
            continue;
        }
        if use_scan {
            match scan_ioctl(&pm, v, page_size) {
                Ok(bytes) => {
                    total += bytes;
                    continue;
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOTTY | libc::EINVAL | libc::EOPNOTSUPP)
                    ) =>
                {
                    // Kernel without PAGEMAP_SCAN: read pagemap entries.
                    use_scan = false;
                    v.runs.clear();
                }
                Err(e) => return Err(DumpError::io(pid, "PAGEMAP_SCAN", e)),
            }
        }
        let first = v.rec.start / page_size;
        let last = v.rec.end / page_size;
        let mut idx = first;
        while idx < last {
            let n = ((last - idx) as usize).min(CHUNK);
            let want = n * 8;
            let mut got = 0;
            while got < want {
                let r = sys::pread(&pm, &mut buf[got..want], (idx * 8) + got as u64)
                    .map_err(|e| DumpError::io(pid, "reading pagemap", e))?;
                if r == 0 {
                    return Err(DumpError::io(
                        pid,
                        "reading pagemap",
                        io::Error::other("short read"),
                    ));
                }
                got += r;
            }
            for (i, e) in buf[..want].chunks_exact(8).enumerate() {
                let e = u64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
                let has = e & (PM_PRESENT | PM_SWAP) != 0;
                let keep = match v.save {
                    Save::Nothing => false,
                    Save::All => has,
                    Save::AnonOnly => has && e & PM_FILE == 0,
                };
                if keep {
                    let addr = (idx + i as u64) * page_size;
                    match v.runs.last_mut() {
                        Some((a, np)) if *a + *np * page_size == addr => *np += 1,
                        _ => v.runs.push((addr, 1)),
                    }
                    total += page_size;
                }
            }
            idx += n as u64;
        }
    }
    Ok(total)
}

/// Runs of `v` through the PAGEMAP_SCAN ioctl (walks only populated page
/// tables: cheap for huge sparse reservations). Zero-PFN pages (read but
/// never written anonymous memory) are left out.
fn scan_ioctl(pm: &OwnedFd, v: &mut Vma, page_size: u64) -> io::Result<u64> {
    use sys::page_is;
    let mut arg = sys::PmScanArg {
        return_mask: page_is::PRESENT | page_is::SWAPPED | page_is::FILE | page_is::PFNZERO,
        category_anyof_mask: page_is::PRESENT | page_is::SWAPPED,
        category_inverted: page_is::PFNZERO,
        category_mask: page_is::PFNZERO,
        ..Default::default()
    };
    if v.save == Save::AnonOnly {
        arg.category_inverted |= page_is::FILE;
        arg.category_mask |= page_is::FILE;
    }
    let mut out = vec![sys::PageRegion::default(); 4096];
    let mut at = v.rec.start;
    let mut total = 0;
    while at < v.rec.end {
        let (n, walk_end) = sys::pagemap_scan(pm, &mut arg, at, v.rec.end, &mut out)?;
        // The kernel may return regions past `walk_end` (seen on 6.18 when
        // it stops early); the next call returns them again, so clip here.
        let stop = walk_end.clamp(at, v.rec.end);
        for r in &out[..n] {
            let s = (r.start / page_size * page_size).max(at);
            let e = (r.end.div_ceil(page_size) * page_size).min(stop);
            if e <= s {
                continue;
            }
            match v.runs.last_mut() {
                Some((a, np)) if *a + *np * page_size == s => *np += (e - s) / page_size,
                _ => v.runs.push((s, (e - s) / page_size)),
            }
            total += e - s;
        }
        if walk_end <= at {
            break;
        }
        at = walk_end;
    }
    // Safety net: runs strictly increasing and disjoint.
    if v.runs
        .windows(2)
        .any(|w| w[1].0 < w[0].0 + w[0].1 * page_size)
    {
        v.runs.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(v.runs.len());
        for &(a, n) in &v.runs {
            match merged.last_mut() {
                Some((ma, mn)) if a <= *ma + *mn * page_size => {
                    let end = (*ma + *mn * page_size).max(a + n * page_size);
                    *mn = (end - *ma) / page_size;
                }
                _ => merged.push((a, n)),
            }
        }
        v.runs = merged;
        total = v.runs.iter().map(|r| r.1 * page_size).sum();
    }
    Ok(total)
}

/// Data ranges of the shared object behind `v` (SEEK_DATA / SEEK_HOLE over
/// the part the VMA maps), as page runs in the VMA's address space.
fn object_runs(
    pid: i32,
    obj: &OwnedFd,
    rec: &VmaRec,
    page_size: u64,
) -> Result<(Vec<(u64, u64)>, u64), DumpError> {
    let off0 = rec.offset;
    let off_end = off0 + (rec.end - rec.start);
    let mut runs = Vec::new();
    let mut pos = off0;
    let mut total = 0;
    while pos < off_end {
        let data = match sys::lseek(obj, pos, libc::SEEK_DATA) {
            Ok(d) => d / page_size * page_size,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) => return Err(DumpError::io(pid, "SEEK_DATA in shared memory", e)),
        };
        if data >= off_end {
            break;
        }
        let hole = sys::lseek(obj, data, libc::SEEK_HOLE)
            .map_err(|e| DumpError::io(pid, "SEEK_HOLE in shared memory", e))?;
        let hole = hole.div_ceil(page_size) * page_size;
        let (a, b) = (data.max(off0), hole.min(off_end));
        if b > a {
            runs.push((rec.start + (a - off0), (b - a) / page_size));
            total += b - a;
        }
        if hole <= pos {
            break;
        }
        pos = hole;
    }
    Ok((runs, total))
}

/// Where a VMA's pages are read from.
#[derive(Clone, Copy)]
pub(crate) enum Src<'f> {
    /// The process's memory (process_vm_readv when `readable`, else /proc/PID/mem).
    Memory { readable: bool },
    /// A file mapped by the VMA: page at `addr` is at offset `addr - start + offset`.
    Object {
        fd: &'f OwnedFd,
        start: u64,
        offset: u64,
    },
}

/// Reads the pages of a VMA in batches of at most [`BATCH_BYTES`].
pub(crate) struct PageReader<'a> {
    pid: i32,
    mem: Option<&'a OwnedFd>,
    page_size: u64,
}

/// One batch: the non-zero pages as runs, and where their data sits in
/// `buf` (spans in run order).
pub(crate) struct Batch {
    pub runs: Vec<PageRun>,
    pub spans: Vec<(usize, usize)>,
    pub buf: Vec<u8>,
    /// Bytes read (including dropped zero pages), for progress.
    pub read: u64,
}

impl Batch {
    /// The page data, in run order.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        self.spans.iter().map(|&(s, e)| &self.buf[s..e])
    }
}

impl<'a> PageReader<'a> {
    pub fn new(pid: i32, mem: Option<&'a OwnedFd>, page_size: u64) -> PageReader<'a> {
        PageReader {
            pid,
            mem,
            page_size,
        }
    }

    /// Split `runs` into batches that fit the buffer (a run may be split).
    pub fn plan(&self, runs: &[(u64, u64)]) -> Vec<Vec<(u64, u64)>> {
        let max_pages = (BATCH_BYTES as u64 / self.page_size).max(1);
        let mut out: Vec<Vec<(u64, u64)>> = Vec::new();
        let mut cur: Vec<(u64, u64)> = Vec::new();
        let mut cur_pages = 0u64;
        for &(mut addr, mut n) in runs {
            while n > 0 {
                if cur_pages == max_pages || cur.len() == sys::IOV_MAX {
                    out.push(std::mem::take(&mut cur));
                    cur_pages = 0;
                }
                let take = n.min(max_pages - cur_pages);
                cur.push((addr, take));
                cur_pages += take;
                addr += take * self.page_size;
                n -= take;
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    /// Read one planned batch and drop zero pages.
    /// Zero pages are dropped unless `keep_zero` (private file mappings:
    /// a zero page there differs from the file page restart would map).
    /// `buf` is reused for the data (a buffer of an earlier batch).
    pub fn read(
        &self,
        batch: &[(u64, u64)],
        src: Src<'_>,
        keep_zero: bool,
        mut buf: Vec<u8>,
    ) -> Result<Batch, DumpError> {
        let (readable, file, delta) = match src {
            Src::Memory { readable } => (readable, self.mem, 0i64),
            Src::Object { fd, start, offset } => (false, Some(fd), offset as i64 - start as i64),
        };
        let ps = self.page_size as usize;
        let total: usize = batch.iter().map(|r| r.1 as usize * ps).sum();
        if buf.len() < total {
            buf.resize(total, 0);
        }
        let mut whole = buf;
        let buf = &mut whole[..total];
        let pid = self.pid;
        let remote: Vec<(u64, usize)> = batch.iter().map(|&(a, n)| (a, n as usize * ps)).collect();
        let mut done = false;
        if readable {
            match sys::vm_read(pid, buf, &remote) {
                Ok(n) if n == total => done = true,
                Ok(_) | Err(_) => {} // fall back to /proc/PID/mem below
            }
        }
        if !done {
            let mem = file.ok_or_else(|| {
                DumpError::io(pid, "reading memory", io::Error::other("no /proc/PID/mem"))
            })?;
            let mut off = 0usize;
            for &(a, len) in &remote {
                let mut got = 0;
                while got < len {
                    let at = (a as i64 + delta) as u64 + got as u64;
                    let r = sys::pread(mem, &mut buf[off + got..off + len], at).map_err(|e| {
                        DumpError::io(
                            pid,
                            "reading memory",
                            io::Error::new(e.kind(), format!("at {:#x}: {e}", a + got as u64)),
                        )
                    })?;
                    if r == 0 {
                        return Err(DumpError::io(
                            pid,
                            "reading memory",
                            io::Error::other(format!("end of data at {:#x}", a + got as u64)),
                        ));
                    }
                    got += r;
                }
                off += len;
            }
        }
        // Drop zero pages, merging the rest into runs and contiguous chunks.
        let buf = &whole[..total];
        let mut runs: Vec<PageRun> = Vec::new();
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let mut off = 0usize;
        for &(a, n) in batch {
            for i in 0..n {
                let page = &buf[off..off + ps];
                let addr = a + i * self.page_size;
                if keep_zero || !is_zero(page) {
                    match (runs.last_mut(), spans.last_mut()) {
                        (Some(r), Some(s))
                            if r.addr + r.nr_pages * self.page_size == addr && s.1 == off =>
                        {
                            r.nr_pages += 1;
                            s.1 += ps;
                        }
                        _ => {
                            runs.push(PageRun { addr, nr_pages: 1 });
                            spans.push((off, off + ps));
                        }
                    }
                }
                off += ps;
            }
        }
        Ok(Batch {
            runs,
            spans,
            buf: whole,
            read: total as u64,
        })
    }
}

fn is_zero(page: &[u8]) -> bool {
    let (pre, mid, post) = {
        // SAFETY: u64 has no invalid bit patterns; align_to only reinterprets
        // the aligned middle of the byte slice.
        unsafe { page.align_to::<u64>() }
    };
    pre.iter().all(|&b| b == 0)
        && post.iter().all(|&b| b == 0)
        && mid.iter().fold(0u64, |acc, &w| acc | w) == 0
}

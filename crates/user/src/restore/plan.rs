//! Parent side: validate the image against this machine and prepare everything
//! the child and the restorer need (the fd plan, the restorer area with its
//! argument block, frames and stacks).

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use stasis_image::records::{file_flags, file_kind, thread_flags, vma_flags, vma_kind, VmaRec};
use stasis_image::ProcessImage;

use super::abi::{self, Args, MapFd, PendingSig, PosixTimer, Run, Special, Thread, Vma};
use super::blob::{BLOB, RESTORER_ENTRY};
use stasis_image::x86::{self, xsave};
use super::maps::{self, Mapping};
use super::sigframe;
use super::RestoreError;

/// Where a restored fd's open file description comes from.
pub enum FileSource {
    Path { path: CString, flags: i32 },
    /// Unlinked file: recreated from FILE_DATA in `dir` (O_TMPFILE) or a memfd.
    Deleted { dir: CString, name: CString, flags: i32, data: (*const u8, usize), mode: u32 },
    Memfd { name: CString, flags: i32, data: Option<(*const u8, usize)> },
    /// Our terminal (`src` >= 0, an fd of ours >= fd_high) or /dev/null (-1).
    Tty { src: RawFd, flags: i32 },
}

/// One open file description and the fds that share it.
pub struct FilePlan {
    pub fds: Vec<(RawFd, bool)>,
    pub source: FileSource,
    pub pos: u64,
    pub seek: bool,
    pub seek_optional: bool,
}

pub struct PipeEnd {
    pub fd: RawFd,
    pub cloexec: bool,
    pub write: bool,
    pub flags: i32,
}

pub struct PipePlan {
    pub fifo: Option<CString>,
    pub ends: Vec<PipeEnd>,
    pub capacity: u32,
    pub data: Option<(*const u8, usize)>,
}

pub struct MapFile {
    pub path: CString,
    pub flags: i32,
    pub vmas: Vec<usize>,
}

pub struct ShmPlan {
    pub size: u64,
    pub vmas: Vec<usize>,
}

/// Everything the child needs (read-only after clone3, except the area copy).
pub struct ChildPlan {
    pub pid: i32,
    pub setsid: bool,
    pub pgid: i32,
    pub status_fd: RawFd,
    pub image_fd: RawFd,
    pub tty_src: RawFd,
    /// Kernel mode: the child's /dev/stasis fd (>= fd_high, in `keep_fds`),
    /// added to the close list the module closes; -1 in user mode.
    pub kernel_fd: RawFd,
    /// Every restored fd is below this; our own fds are at or above it.
    pub fd_high: RawFd,
    /// Our own fds (sorted) kept across the close-everything step.
    pub keep_fds: Vec<RawFd>,
    pub files: Vec<FilePlan>,
    pub pipes: Vec<PipePlan>,
    pub map_files: Vec<MapFile>,
    pub shms: Vec<ShmPlan>,
    pub exe: Option<CString>,
    pub cwd: Option<CString>,
    pub root: Option<CString>,
    pub umask: u32,
    pub personality: Option<u32>,
    pub dumpable: u32,
    pub nice: i32,
    pub sigactions: Vec<(i32, [u64; 4])>,
    pub rlimits: Vec<(u32, u64, u64)>,
    pub args: *mut Args,
    pub vmas: *mut Vma,
    pub close_fds: *mut i32,
    pub close_cap: usize,
    pub stack_top: u64,
    pub entry: u64,
}

/// The restorer area, reserved and filled in the parent (the child inherits it).
pub struct Area {
    pub start: u64,
    pub len: u64,
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: the area is our own mapping, not referenced once the child runs.
        unsafe { libc::munmap(self.start as *mut libc::c_void, self.len as usize) };
    }
}

/// Park mode: what the parent needs to finish the restart through ptrace.
pub struct Park {
    /// Address of a `syscall` instruction in the restored vDSO.
    pub syscall_insn: u64,
    /// (tid in the image, frame address on its own stack).
    pub frames: Vec<(i32, u64)>,
    pub area_start: u64,
    pub area_len: u64,
}

/// fds of ours that the child inherits: closed on drop (after clone3, or when
/// preparing fails).
#[derive(Default)]
pub struct FdGuard(pub Vec<RawFd>);

impl Drop for FdGuard {
    fn drop(&mut self) {
        for &fd in &self.0 {
            // SAFETY: fds we created and nobody else closes.
            unsafe { libc::close(fd) };
        }
    }
}

/// The result of preparing a restart.
pub struct Prepared {
    pub park: Option<Park>,
    pub plan: ChildPlan,
    pub area: Area,
    pub pid: i32,
    #[allow(dead_code)]
    pub tids: Vec<i32>,
    pub page_bytes: u64,
    /// fds of ours the child inherits and the parent closes after clone3.
    pub parent_close: FdGuard,
}

fn cstr(b: &[u8], what: &str) -> Result<CString, RestoreError> {
    CString::new(b.to_vec()).map_err(|_| RestoreError::Unsupported(format!("{what}: path contains a NUL byte")))
}

fn strip_deleted(p: &[u8]) -> &[u8] {
    p.strip_suffix(b" (deleted)").unwrap_or(p)
}

fn page_up(v: u64, page: u64) -> u64 {
    (v + page - 1) & !(page - 1)
}

const O_STATUS_KEEP: i32 = libc::O_ACCMODE
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_DIRECT
    | libc::O_NOATIME
    | libc::O_LARGEFILE
    | libc::O_DSYNC
    | libc::O_SYNC
    | libc::O_DIRECTORY
    | libc::O_PATH;

fn dup_high(fd: RawFd, min: RawFd) -> Result<RawFd, RestoreError> {
    // SAFETY: fcntl on an fd we own.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if r < 0 {
        return Err(RestoreError::sys("fcntl(F_DUPFD_CLOEXEC)", std::io::Error::last_os_error()));
    }
    Ok(r)
}

fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only queries the fd.
    unsafe { libc::isatty(fd) == 1 }
}

/// The special mappings (vdso, vvar, vvar_vclock) of a layout: (group start, group end, pieces).
type Ranges = Vec<(u64, u64)>;

fn specials_of(maps: &[Mapping]) -> (Ranges, Ranges) {
    let vdso = maps.iter().filter(|m| m.name == "[vdso]").map(|m| (m.start, m.end)).collect();
    let vvar = maps.iter().filter(|m| m.name.starts_with("[vvar")).map(|m| (m.start, m.end)).collect();
    (vdso, vvar)
}

fn span(v: &[(u64, u64)]) -> Option<(u64, u64)> {
    Some((v.iter().map(|x| x.0).min()?, v.iter().map(|x| x.1).max()?))
}

/// Validate `img` for this machine and prepare the restart. Changes nothing
/// outside our own process (it reserves the restorer area and dups a few fds).
/// `kernel`: kernel mode (the module maps memory and switches the threads:
/// no park mode, room for the leader's [`MapFd`] array, one more close slot
/// for the /dev/stasis fd; `Args::kernel_fd` and `ChildPlan::kernel_fd` stay
/// -1 until the caller sets them).
pub fn prepare(
    img: &ProcessImage<'_>,
    image_file: &std::fs::File,
    image_bytes: &[u8],
    pidns: bool,
    kernel: bool,
    xareas: Vec<Option<ThreadXsave>>,
) -> Result<Prepared, RestoreError> {
    // The image's page size, which machine_check found equal to ours.
    let page = u64::from(img.header.page_size);
    let xsave_max = xareas.iter().flatten().map(|x| x.size).max().unwrap_or(0);

    // ---- credentials ----
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    if uid != 0 && img.process.uid != uid {
        return Err(RestoreError::Credentials { image_uid: img.process.uid, our_uid: uid });
    }

    // ---- threads, PIDs ----
    let pid = img.process.pid as i32;
    let leader = img
        .threads
        .iter()
        .position(|t| t.rec.flags & thread_flags::LEADER != 0)
        .or_else(|| img.threads.iter().position(|t| t.rec.tid == img.process.pid))
        .ok_or_else(|| RestoreError::Unsupported("no leader thread in the image".into()))?;
    let mut order: Vec<usize> = vec![leader];
    order.extend((0..img.threads.len()).filter(|&i| i != leader));
    let tids: Vec<i32> = order.iter().map(|&i| img.threads[i].rec.tid as i32).collect();
    if pidns {
        if tids.contains(&1) {
            return Err(RestoreError::Unsupported("the image uses PID/TID 1, which a new PID namespace gives its init".into()));
        }
    } else {
        for &t in &tids {
            if Path::new(&format!("/proc/{t}")).exists() {
                return Err(RestoreError::PidInUse { pid: t });
            }
        }
    }

    // ---- rlimits ----
    // A hard limit above ours is set as the image has it when we may raise hard
    // limits (CAP_SYS_RESOURCE: root restarting an image from a machine with
    // more memory, whose RLIMIT_NPROC default is higher), else refused.
    let may_raise = our_caps()?[0] & (1 << CAP_SYS_RESOURCE) != 0;
    let mut rlimits = Vec::new();
    if img.rlimits.limits.iter().any(|l| l.cur != 0 || l.max != 0) {
        for (res, l) in img.rlimits.limits.iter().enumerate() {
            let mut ours = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: ours is a valid out buffer.
            if unsafe { libc::prlimit64(0, res as _, std::ptr::null(), &mut ours) } < 0 {
                continue; // unknown resource on this kernel
            }
            if l.max > ours.rlim_max && !may_raise {
                return Err(RestoreError::RlimitTooHigh { resource: res as u32, image: l.max, ours: ours.rlim_max });
            }
            if l.cur > l.max {
                return Err(RestoreError::Unsupported(format!("rlimit {res}: soft {:#x} above hard {:#x}", l.cur, l.max)));
            }
            rlimits.push((res as u32, l.cur, l.max));
        }
    }

    // ---- our layout: vDSO/vvar ----
    let ours = maps::self_maps().map_err(|e| RestoreError::sys("reading /proc/self/maps", e))?;
    let (our_vdso, our_vvar) = specials_of(&ours);
    let img_vdso: Vec<(u64, u64)> = img.vmas.iter().filter(|v| v.rec.kind == vma_kind::VDSO).map(|v| (v.rec.start, v.rec.end)).collect();
    let img_vvar: Vec<(u64, u64)> = img.vmas.iter().filter(|v| v.rec.kind == vma_kind::VVAR).map(|v| (v.rec.start, v.rec.end)).collect();
    let (ovd, ovv, ivd, ivv) = (span(&our_vdso), span(&our_vvar), span(&img_vdso), span(&img_vvar));
    if let (Some(o), Some(i)) = (ovd, ivd) {
        if o.1 - o.0 != i.1 - i.0 {
            return Err(RestoreError::VdsoMismatch {
                what: "vDSO",
                image: i.1 - i.0,
                ours: o.1 - o.0,
            });
        }
    }
    if let (Some(o), Some(i)) = (ovv, ivv) {
        if o.1 - o.0 != i.1 - i.0 {
            return Err(RestoreError::VdsoMismatch { what: "vvar", image: i.1 - i.0, ours: o.1 - o.0 });
        }
        if let (Some(od), Some(id)) = (ovd, ivd) {
            if od.0 as i64 - o.0 as i64 != id.0 as i64 - i.0 as i64 {
                return Err(RestoreError::VdsoMismatch {
                    what: "vvar-to-vDSO distance",
                    image: id.0.wrapping_sub(i.0),
                    ours: od.0.wrapping_sub(o.0),
                });
            }
        }
    }
    if ivd.is_some() && ovd.is_none() {
        return Err(RestoreError::Unsupported("the image has a vDSO but this process has none".into()));
    }
    // An image with a vDSO but no vvar record: the vDSO code finds its data at a
    // fixed distance, so put our vvar where it belongs relative to the vDSO.
    let ivv = match (ivv, ivd, ovv, ovd) {
        (None, Some(id), Some(ov), Some(od)) => {
            let start = id.0.wrapping_sub(od.0 - ov.0);
            let end = start + (ov.1 - ov.0);
            if let Some(v) = img.vmas.iter().find(|v| v.rec.start < end && start < v.rec.end) {
                return Err(RestoreError::Unsupported(format!(
                    "the image has no vvar record and the place the vDSO needs it ({start:#x}-{end:#x}) holds VMA {:#x}-{:#x}",
                    v.rec.start, v.rec.end
                )));
            }
            Some((start, end))
        }
        (v, ..) => v,
    };
    // Specials: each of our pieces moves to the same offset in the image's group.
    let mut specials: Vec<Special> = Vec::new();
    for (pieces, our_span, img_span) in [(&our_vvar, ovv, ivv), (&our_vdso, ovd, ivd)] {
        for &(s, e) in pieces.iter() {
            let dst = match (our_span, img_span) {
                (Some(o), Some(i)) => i.0 + (s - o.0),
                _ => 0,
            };
            specials.push(Special { cur: s, len: e - s, tmp: 0, dst });
        }
    }
    // A `syscall` instruction in the vDSO, at its address in the restored layout
    // (the parent makes each thread run rt_sigreturn there: park mode).
    // STASIS_RESTORE_KEEP_RESTORER=1: no ptrace at the end; the threads return
    // by themselves and the restorer area stays mapped (escape hatch, tests).
    // Yama may forbid ptrace altogether (3) or without CAP_SYS_PTRACE (2).
    let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    // Kernel mode: the module switches the threads itself, no park mode.
    let keep = kernel
        || std::env::var_os("STASIS_RESTORE_KEEP_RESTORER").is_some_and(|v| v != "0")
        || yama >= 3
        || (yama == 2 && uid != 0);
    let syscall_insn = match (our_vdso.first(), ovd, ivd) {
        _ if keep => None,
        (Some(&(s, e)), Some(o), Some(i)) => {
            // SAFETY: our own vDSO text is mapped readable for its whole range.
            let text = unsafe { std::slice::from_raw_parts(s as *const u8, (e - s) as usize) };
            text.windows(2).position(|w| w == [0x0f, 0x05]).map(|off| i.0 + (s - o.0) + off as u64)
        }
        _ => None,
    };
    if specials.len() > abi::MAX_SPECIALS {
        return Err(RestoreError::Unsupported(format!("{} vDSO/vvar mappings (at most {})", specials.len(), abi::MAX_SPECIALS)));
    }

    // ---- VMAs ----
    let mut vmas: Vec<Vma> = Vec::new();
    let mut vma_src: Vec<&VmaRec> = Vec::new();
    let mut map_files: Vec<MapFile> = Vec::new();
    let mut shms: Vec<ShmPlan> = Vec::new();
    let mut shm_ids: Vec<(u64, usize)> = Vec::new(); // shm_id -> index in shms
    // Shared anon groups: VMA count per shm_id.
    let mut group_count: std::collections::HashMap<u64, (usize, u64)> = Default::default();
    for v in &img.vmas {
        if v.rec.kind == vma_kind::ANON_SHARED {
            let e = group_count.entry(v.rec.shm_id).or_insert((0, 0));
            e.0 += 1;
            e.1 = e.1.max(v.rec.offset + (v.rec.end - v.rec.start));
        }
    }
    let has_pages = |start: u64| img.pages.iter().any(|p| p.vma_start == start && !p.runs.is_empty());
    for v in &img.vmas {
        let r = &v.rec;
        let what = || format!("VMA {:#x}-{:#x} ({})", r.start, r.end, String::from_utf8_lossy(v.path));
        if r.end > maps::TASK_SIZE_47 {
            if r.kind == vma_kind::VSYSCALL {
                continue;
            }
            return Err(RestoreError::Unsupported(format!("{}: above the 47-bit user address limit", what())));
        }
        let mut flags: i32;
        let mut fd_needed: Option<(CString, i32)> = None;
        let mut shm_group: Option<u64> = None;
        let mut fixed_fd: Option<i32> = None;
        match r.kind {
            vma_kind::VDSO | vma_kind::VVAR | vma_kind::VSYSCALL => continue,
            vma_kind::ANON_PRIVATE | vma_kind::HEAP | vma_kind::STACK => {
                flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
            }
            vma_kind::ANON_SHARED => {
                let (n, _) = group_count.get(&r.shm_id).copied().unwrap_or((1, 0));
                if n == 1 && r.offset == 0 {
                    flags = libc::MAP_SHARED | libc::MAP_ANONYMOUS;
                } else {
                    flags = libc::MAP_SHARED;
                    shm_group = Some(r.shm_id);
                }
            }
            vma_kind::FILE_PRIVATE | vma_kind::FILE_SHARED => {
                let shared = r.kind == vma_kind::FILE_SHARED;
                let writes = shared && r.prot & libc::PROT_WRITE as u32 != 0;
                if r.flags & vma_flags::FILE_DELETED != 0 || v.path.starts_with(b"/memfd:") {
                    // A deleted file (or memfd) that is also open: map the fd the
                    // child recreates from its FILE_DATA, at its restored number.
                    let f = img.files.iter().find(|f| {
                        f.rec.dev == r.dev
                            && f.rec.ino == r.ino
                            && (f.data.is_some() || f.rec.kind == file_kind::MEMFD)
                            && match f.rec.open_flags as i32 & libc::O_ACCMODE {
                                libc::O_RDWR => true,
                                libc::O_RDONLY => !writes,
                                _ => false,
                            }
                    });
                    let Some(f) = f else {
                        return Err(RestoreError::Unsupported(format!(
                            "{}: maps a deleted file (or memfd) that no open fd with a readable{} mode and saved contents refers to",
                            what(),
                            if writes { "+writable" } else { "" }
                        )));
                    };
                    flags = if shared { libc::MAP_SHARED } else { libc::MAP_PRIVATE };
                    fixed_fd = Some(f.rec.fd as i32);
                } else {
                let path = cstr(strip_deleted(v.path), &what())?;
                if !Path::new(std::ffi::OsStr::from_bytes_compat(strip_deleted(v.path))).exists() {
                    return Err(RestoreError::MissingFile { what: what(), path: String::from_utf8_lossy(v.path).into_owned() });
                }
                flags = if shared { libc::MAP_SHARED } else { libc::MAP_PRIVATE };
                let oflags = if writes { libc::O_RDWR } else { libc::O_RDONLY };
                fd_needed = Some((path, oflags));
                }
            }
            vma_kind::SYSV_SHM => {
                return Err(RestoreError::Unsupported(format!("{}: SysV shared memory needs the ipc extension", what())));
            }
            _ => return Err(RestoreError::Unsupported(format!("{}: unknown kind {}", what(), r.kind))),
        }
        if r.flags & vma_flags::GROWSDOWN != 0 {
            flags |= libc::MAP_GROWSDOWN;
        }
        if r.flags & vma_flags::NORESERVE != 0 {
            flags |= libc::MAP_NORESERVE;
        }
        let fill = r.kind != vma_kind::FILE_SHARED && has_pages(r.start);
        let map_prot = if fill { r.prot | libc::PROT_WRITE as u32 } else { r.prot };
        let mut madv = 0;
        if r.flags & vma_flags::DONTFORK != 0 {
            madv |= abi::MADV_BIT_DONTFORK;
        }
        if r.flags & vma_flags::DONTDUMP != 0 {
            madv |= abi::MADV_BIT_DONTDUMP;
        }
        if r.flags & vma_flags::LOCKED != 0 {
            madv |= abi::MADV_BIT_LOCKED;
        }
        if r.flags & vma_flags::HUGEPAGE != 0 {
            madv |= abi::MADV_BIT_HUGEPAGE;
        }
        if r.flags & vma_flags::NOHUGEPAGE != 0 {
            madv |= abi::MADV_BIT_NOHUGEPAGE;
        }
        let idx = vmas.len();
        vmas.push(Vma {
            start: r.start,
            end: r.end,
            // File and memfd mappings keep their offset; anonymous ones have none.
            offset: if fd_needed.is_some() || shm_group.is_some() || fixed_fd.is_some() { r.offset } else { 0 },
            map_prot,
            map_flags: flags as u32,
            fd: fixed_fd.unwrap_or(-1),
            prot: r.prot,
            madv,
            _pad: 0,
        });
        vma_src.push(r);
        if let Some((path, oflags)) = fd_needed {
            match map_files.iter_mut().find(|m| m.path == path && m.flags == oflags) {
                Some(m) => m.vmas.push(idx),
                None => map_files.push(MapFile { path, flags: oflags, vmas: vec![idx] }),
            }
        }
        if let Some(id) = shm_group {
            match shm_ids.iter().find(|x| x.0 == id) {
                Some(&(_, si)) => shms[si].vmas.push(idx),
                None => {
                    let size = group_count.get(&id).map(|x| x.1).unwrap_or(r.end - r.start);
                    shm_ids.push((id, shms.len()));
                    shms.push(ShmPlan { size, vmas: vec![idx] });
                }
            }
        }
    }

    // ---- page runs ----
    let mut runs: Vec<Run> = Vec::new();
    let mut page_bytes = 0u64;
    for p in &img.pages {
        let Some(vi) = vmas.iter().position(|v| v.start == p.vma_start) else {
            continue; // vdso/vvar pages: the kernel provides them
        };
        if vma_src[vi].kind == vma_kind::FILE_SHARED {
            continue;
        }
        let mut off = p.data_file_offset;
        for r in &p.runs {
            let len = r.nr_pages * page;
            if off % page != 0 || off + len > image_bytes.len() as u64 {
                return Err(RestoreError::Unsupported(format!("page data of {:#x} outside the image file", r.addr)));
            }
            match runs.last_mut() {
                Some(last) if last.addr + last.len == r.addr && last.file_off + last.len == off => last.len += len,
                _ => runs.push(Run { addr: r.addr, len, file_off: off }),
            }
            off += len;
            page_bytes += len;
        }
    }

    // ---- files ----
    let fd_max = img.files.iter().map(|f| f.rec.fd).chain(img.pipes.iter().map(|p| p.rec.fd)).max();
    let fd_high = fd_max.map(|m| m as i32 + 1).unwrap_or(0).max(3);
    // Our own fds go above every restored one: make sure the fd limit allows it
    // (raising our soft limit up to our hard limit only).
    let mut nofile = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out pointer.
    unsafe { libc::getrlimit64(libc::RLIMIT_NOFILE, &mut nofile) };
    let need = fd_high as u64 + 16;
    if nofile.rlim_cur < need {
        if nofile.rlim_max < need {
            return Err(RestoreError::Unsupported(format!(
                "the image uses fd {} but our RLIMIT_NOFILE hard limit is {}",
                fd_high - 1,
                nofile.rlim_max
            )));
        }
        let l = libc::rlimit64 { rlim_cur: need.max(nofile.rlim_cur), rlim_max: nofile.rlim_max };
        // SAFETY: valid rlimit.
        if unsafe { libc::setrlimit64(libc::RLIMIT_NOFILE, &l) } < 0 {
            return Err(RestoreError::sys("raising our soft RLIMIT_NOFILE", std::io::Error::last_os_error()));
        }
    }
    let mut parent_close = FdGuard::default();
    let image_fd = dup_high(image_file.as_raw_fd(), fd_high)?;
    parent_close.0.push(image_fd);
    let needs_tty = img.files.iter().any(|f| f.rec.kind == file_kind::TTY);
    let mut tty_src = -1;
    if needs_tty {
        if let Some(t) = [0, 1, 2].into_iter().find(|&fd| is_tty(fd)) {
            tty_src = dup_high(t, fd_high)?;
            parent_close.0.push(tty_src);
        }
    }
    let mut files: Vec<FilePlan> = Vec::new();
    let mut by_id: Vec<(u32, usize)> = Vec::new();
    let mut sorted: Vec<&stasis_image::FdFileView<'_>> = img.files.iter().collect();
    sorted.sort_by_key(|f| f.rec.fd);
    for f in sorted {
        let r = &f.rec;
        let cloexec = r.fd_flags & libc::FD_CLOEXEC as u32 != 0;
        if let Some(&(_, i)) = by_id.iter().find(|x| x.0 == r.file_id) {
            files[i].fds.push((r.fd as i32, cloexec));
            continue;
        }
        let flags = (r.open_flags as i32) & O_STATUS_KEEP;
        let what = format!("fd {} ({})", r.fd, String::from_utf8_lossy(f.path));
        let deleted = r.file_flags & file_flags::DELETED != 0;
        let (source, seek, seek_optional) = match r.kind {
            file_kind::TTY => (FileSource::Tty { src: tty_src, flags }, false, true),
            file_kind::MEMFD => {
                let name = f.path.strip_prefix(b"/memfd:").unwrap_or(f.path);
                let name = strip_deleted(name);
                (FileSource::Memfd { name: cstr(name, &what)?, flags, data: f.data.map(|d| (d.as_ptr(), d.len())) }, true, false)
            }
            _ if deleted => {
                let Some(d) = f.data else {
                    return Err(RestoreError::Unsupported(format!("{what}: deleted file without its contents")));
                };
                let p = strip_deleted(f.path);
                let (dir, name) = match p.iter().rposition(|&c| c == b'/') {
                    Some(0) => (&b"/"[..], &p[1..]),
                    Some(i) => (&p[..i], &p[i + 1..]),
                    None => (&b"."[..], p),
                };
                (
                    FileSource::Deleted { dir: cstr(dir, &what)?, name: cstr(name, &what)?, flags, data: (d.as_ptr(), d.len()), mode: r.mode & 0o7777 },
                    true,
                    false,
                )
            }
            _ => {
                let path = cstr(f.path, &what)?;
                if std::fs::symlink_metadata(std::ffi::OsStr::from_bytes_compat(f.path)).is_err() {
                    return Err(RestoreError::MissingFile { what, path: String::from_utf8_lossy(f.path).into_owned() });
                }
                let seekable = r.kind == file_kind::REGULAR || r.kind == file_kind::BLOCK_DEVICE;
                (FileSource::Path { path, flags }, seekable || r.kind == file_kind::DIRECTORY, !seekable)
            }
        };
        by_id.push((r.file_id, files.len()));
        files.push(FilePlan { fds: vec![(r.fd as i32, cloexec)], source, pos: r.pos, seek, seek_optional });
    }
    let mut pipes: Vec<PipePlan> = Vec::new();
    let mut pipe_ids: Vec<(u32, usize)> = Vec::new();
    for p in &img.pipes {
        let r = &p.rec;
        let i = match pipe_ids.iter().find(|x| x.0 == r.pipe_id) {
            Some(&(_, i)) => i,
            None => {
                let fifo = if r.fifo != 0 { Some(cstr(p.path, &format!("fd {}", r.fd))?) } else { None };
                let data = img.pipe_data.iter().find(|d| d.0 == r.pipe_id).map(|d| (d.1.as_ptr(), d.1.len()));
                pipe_ids.push((r.pipe_id, pipes.len()));
                pipes.push(PipePlan { fifo, ends: Vec::new(), capacity: r.capacity, data });
                pipes.len() - 1
            }
        };
        let flags = r.open_flags as i32 & O_STATUS_KEEP;
        pipes[i].ends.push(PipeEnd {
            fd: r.fd as i32,
            cloexec: r.fd_flags & libc::FD_CLOEXEC as u32 != 0,
            write: flags & libc::O_ACCMODE == libc::O_WRONLY,
            flags,
        });
    }

    // ---- fs, personality, signals ----
    let cwd = if img.fs.cwd.is_empty() { None } else { Some(cstr(img.fs.cwd, "cwd")?) };
    let root = if img.fs.root.is_empty() || img.fs.root == b"/" { None } else { Some(cstr(img.fs.root, "root")?) };
    if root.is_some() && uid != 0 {
        return Err(RestoreError::Unsupported("the image runs chrooted and we are not root".into()));
    }
    let exe = if img.mm.exe.is_empty() { None } else { cstr(strip_deleted(img.mm.exe), "exe").ok() };
    let mut sigactions = Vec::new();
    for (i, a) in img.sigactions.actions.iter().enumerate() {
        let sig = i as i32 + 1;
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        sigactions.push((sig, [a.handler, a.flags, a.restorer, a.mask]));
    }

    // ---- the restorer area: layout ----
    let nthreads = order.len();
    let mut sigs: Vec<PendingSig> = Vec::new();
    let mut add_sig = |tid: u32, si: &stasis_image::records::Siginfo| {
        let signo = u32::from_le_bytes([si.bytes[0], si.bytes[1], si.bytes[2], si.bytes[3]]);
        if signo == 0 || signo > 64 || signo == libc::SIGKILL as u32 || signo == libc::SIGSTOP as u32 {
            return;
        }
        sigs.push(PendingSig { tid, signo, info: si.bytes });
    };
    for &i in &order {
        for si in &img.threads[i].pending {
            add_sig(img.threads[i].rec.tid, si);
        }
    }
    for si in &img.shared_pending {
        add_sig(0, si);
    }
    // In id order: without PR_TIMER_CREATE_RESTORE_IDS (kernels before
    // 6.13) the restorer reaches each id through the kernel's sequential ids.
    let mut timers: Vec<PosixTimer> = img
        .posix_timers
        .iter()
        .map(|t| PosixTimer {
            id: t.id,
            clock_id: t.clock_id,
            sigev_notify: t.sigev_notify,
            signo: t.sigev_signo,
            value: t.sigev_value,
            notify_tid: t.notify_tid,
            _pad: 0,
            interval_ns: t.timer.interval_ns,
            value_ns: rearm_value(&t.timer),
        })
        .collect();
    timers.sort_unstable_by_key(|t| t.id);
    let auxv = &img.mm.auxv;
    // The image and the exe, map files and shm memfds, /dev/stasis (kernel mode).
    let close_cap = 2 + map_files.len() + shms.len() + usize::from(kernel);
    if kernel && (vmas.len() > abi::RESTART_MAX_FDS as usize || close_cap > abi::RESTART_MAX_FDS as usize) {
        return Err(RestoreError::Unsupported(format!(
            "{} VMAs and {close_cap} fds to close: the kernel module takes at most {} of each",
            vmas.len(),
            abi::RESTART_MAX_FDS
        )));
    }

    let code_len = page_up(BLOB.len() as u64, page);
    let mut off = code_len;
    let mut take = |n: usize, align: u64| {
        off = (off + align - 1) & !(align - 1);
        let o = off;
        off += n as u64;
        o
    };
    use std::mem::size_of;
    let o_args = take(size_of::<Args>(), 64);
    let o_vmas = take(size_of::<Vma>() * vmas.len(), 64);
    let o_runs = take(size_of::<Run>() * runs.len(), 64);
    let o_threads = take(size_of::<Thread>() * nthreads, 64);
    let o_sigs = take(size_of::<PendingSig>() * sigs.len(), 64);
    let o_close = take(4 * close_cap, 64);
    let o_map_fds = take(if kernel { size_of::<MapFd>() * vmas.len() } else { 0 }, 64);
    let o_timers = take(size_of::<PosixTimer>() * timers.len(), 64);
    let o_auxv = take(8 * auxv.len(), 64);
    let fbytes = sigframe::frame_bytes(xsave_max);
    let o_frames = take(fbytes * nthreads, 64);
    const LEADER_STACK: u64 = 64 * 1024;
    const THREAD_STACK: u64 = 32 * 1024;
    let o_stacks = take(0, page);
    let stacks_len = LEADER_STACK + THREAD_STACK * (nthreads as u64 - 1);
    let _ = take(stacks_len as usize, page);
    let mut o_tmp = Vec::new();
    for s in &specials {
        o_tmp.push(take(s.len as usize, page));
    }
    let total = page_up(off, page);

    // ---- find and reserve the hole ----
    let mut busy: Vec<(u64, u64)> = ours.iter().map(|m| (m.start, m.end)).collect();
    busy.extend(img.vmas.iter().map(|v| (v.rec.start, v.rec.end)));
    busy.extend(ivv);
    let low = 1u64 << 32; // stay clear of low, MAP_32BIT and brk-ish regions
    let mut start = None;
    for _ in 0..4 {
        let Some(cand) = maps::find_hole(&busy, total, 1 << 30, low, maps::TASK_SIZE_47, page)
            .or_else(|| maps::find_hole(&busy, total, 16 * page, page * 16, maps::TASK_SIZE_47, page))
        else {
            return Err(RestoreError::NoHole { size: total });
        };
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
        let p = unsafe {
            libc::mmap(cand as *mut libc::c_void, total as usize, libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE, -1, 0)
        };
        if p != libc::MAP_FAILED && p as u64 == cand {
            start = Some(cand);
            break;
        }
        if p != libc::MAP_FAILED {
            // SAFETY: unmapping what we just got at the wrong place.
            unsafe { libc::munmap(p, total as usize) };
        }
        // Somebody took it: another thread of ours mapped there meanwhile. Retry.
        busy.push((cand, cand + total));
    }
    let start = start.ok_or(RestoreError::NoHole { size: total })?;
    let area = Area { start, len: total };
    let base = start as *mut u8;

    // Capabilities: never more than ours, never more than the image had.
    let caps = {
        let ours = our_caps()?;
        let p = &img.process;
        let want = [p.cap_effective & ours[0], p.cap_permitted & ours[1], p.cap_inheritable & ours[2]];
        if want == ours { None } else { Some(want) }
    };
    let park: Option<Park>;
    // ---- fill the area ----
    // SAFETY: the area is ours, RW, `total` bytes; all offsets below are inside it
    // by construction of the layout.
    unsafe {
        std::ptr::copy_nonoverlapping(BLOB.as_ptr(), base, BLOB.len());
        let wr = |o: u64| base.add(o as usize);
        std::ptr::copy_nonoverlapping(vmas.as_ptr(), wr(o_vmas) as *mut Vma, vmas.len());
        std::ptr::copy_nonoverlapping(runs.as_ptr(), wr(o_runs) as *mut Run, runs.len());
        std::ptr::copy_nonoverlapping(sigs.as_ptr(), wr(o_sigs) as *mut PendingSig, sigs.len());
        std::ptr::copy_nonoverlapping(timers.as_ptr(), wr(o_timers) as *mut PosixTimer, timers.len());
        std::ptr::copy_nonoverlapping(auxv.as_ptr(), wr(o_auxv) as *mut u64, auxv.len());
        let mut ts: Vec<Thread> = Vec::with_capacity(nthreads);
        let mut park_frames: Vec<(i32, u64)> = Vec::new();
        let mut park_ok = true;
        for (k, &i) in order.iter().enumerate() {
            let t = &img.threads[i];
            let faddr = start + o_frames + (k * fbytes) as u64;
            // Park mode: the frame will live on the thread's own stack, below
            // the red zone, as the kernel itself places signal frames.
            let dst = if syscall_insn.is_some() {
                let d = t.rec.regs.rsp.wrapping_sub(128 + fbytes as u64) & !63;
                let in_vma = img.vmas.iter().any(|v| {
                    v.rec.prot & 3 == 3 && v.rec.start <= d && d + fbytes as u64 <= v.rec.end
                        || v.rec.flags & vma_flags::GROWSDOWN != 0 && d < v.rec.end && t.rec.regs.rsp > v.rec.start && t.rec.regs.rsp <= v.rec.end
                });
                if in_vma { d } else { 0 }
            } else {
                0
            };
            if dst != 0 {
                park_frames.push((t.rec.tid as i32, dst));
            } else {
                park_ok = false;
            }
            let fbuf = std::slice::from_raw_parts_mut(wr(o_frames + (k * fbytes) as u64), fbytes);
            let xs = xareas[i].as_ref().map(|x| sigframe::Xsave {
                area: &x.area,
                size: x.size,
                features: x.features,
            });
            let frame = sigframe::build(fbuf, if dst != 0 { dst } else { faddr }, &t.rec, xs.as_ref());
            let frame = if dst != 0 { faddr } else { frame };
            let (stack, stack_size) = if k == 0 {
                (start + o_stacks, LEADER_STACK)
            } else {
                (start + o_stacks + LEADER_STACK + THREAD_STACK * (k as u64 - 1), THREAD_STACK)
            };
            let mut comm = t.rec.comm;
            if comm[0] == 0 && k == 0 {
                comm = img.process.comm;
            }
            comm[15] = 0;
            ts.push(Thread {
                tid: t.rec.tid,
                _pad0: 0,
                fs_base: t.rec.regs.fs_base,
                gs_base: t.rec.regs.gs_base,
                clear_child_tid: t.rec.clear_child_tid,
                robust_list: t.rec.robust_list,
                robust_list_len: t.rec.robust_list_len,
                rseq_addr: t.rec.rseq_addr,
                rseq_len: t.rec.rseq_len,
                rseq_sig: t.rec.rseq_sig,
                frame,
                stack,
                stack_size,
                comm,
                frame_dst: dst,
                frame_len: fbytes as u64,
            });
        }
        if !park_ok {
            // Some thread's stack cannot take its frame: every thread returns by
            // itself from the area (which then stays mapped).
            for (k, t) in ts.iter_mut().enumerate() {
                let faddr = start + o_frames + (k * fbytes) as u64;
                let i = order[k];
                let th = &img.threads[i];
                let fbuf = std::slice::from_raw_parts_mut(wr(o_frames + (k * fbytes) as u64), fbytes);
                let xs = xareas[i].as_ref().map(|x| sigframe::Xsave {
                    area: &x.area,
                    size: x.size,
                    features: x.features,
                });
                t.frame = sigframe::build(fbuf, faddr, &th.rec, xs.as_ref());
                t.frame_dst = 0;
            }
        }
        std::ptr::copy_nonoverlapping(ts.as_ptr(), wr(o_threads) as *mut Thread, nthreads);
        let mut sp = [Special::default(); abi::MAX_SPECIALS];
        for (i, s) in specials.iter().enumerate() {
            sp[i] = Special { tmp: start + o_tmp[i], ..*s };
        }
        let mm = &img.mm.rec;
        let has_mm = mm.start_code != 0 && mm.end_code > mm.start_code && mm.start_stack != 0;
        let args = Args {
            magic: abi::ARGS_MAGIC,
            area_start: start,
            area_len: total,
            task_size: maps::TASK_SIZE_47,
            status_fd: -1,
            image_fd,
            nr_specials: specials.len() as u32,
            has_mm: u32::from(has_mm),
            specials: sp,
            vmas: start + o_vmas,
            nr_vmas: vmas.len() as u64,
            runs: start + o_runs,
            nr_runs: runs.len() as u64,
            threads: start + o_threads,
            nr_threads: nthreads as u64,
            sigs: start + o_sigs,
            nr_sigs: sigs.len() as u64,
            close_fds: start + o_close,
            nr_close_fds: 0,
            timers: start + o_timers,
            nr_timers: timers.len() as u64,
            itimers: [
                abi::ITimer { interval_ns: img.itimers.real.interval_ns, value_ns: rearm_value(&img.itimers.real) },
                abi::ITimer { interval_ns: img.itimers.virt.interval_ns, value_ns: rearm_value(&img.itimers.virt) },
                abi::ITimer { interval_ns: img.itimers.prof.interval_ns, value_ns: rearm_value(&img.itimers.prof) },
            ],
            mm: abi::PrctlMmMap {
                start_code: mm.start_code,
                end_code: mm.end_code,
                start_data: mm.start_data,
                end_data: mm.end_data,
                start_brk: mm.start_brk,
                brk: mm.brk,
                start_stack: mm.start_stack,
                arg_start: mm.arg_start,
                arg_end: mm.arg_end,
                env_start: mm.env_start,
                env_end: mm.env_end,
                auxv: if auxv.is_empty() { 0 } else { start + o_auxv },
                auxv_size: (auxv.len() * 8) as u32,
                exe_fd: u32::MAX,
            },
            ready: 0,
            go: 0,
            filled: 0,
            park: u32::from(park_ok && syscall_insn.is_some()),
            parked: 0,
            set_caps: u32::from(caps.is_some()),
            _pad1: 0,
            caps: caps.unwrap_or([0; 3]),
            kernel_fd: -1,
            _pad2: 0,
            map_fds: if kernel { start + o_map_fds } else { 0 },
        };
        park = match syscall_insn {
            Some(insn) if park_ok => Some(Park { syscall_insn: insn, frames: park_frames, area_start: start, area_len: total }),
            _ => None,
        };
        std::ptr::write(wr(o_args) as *mut Args, args);
        // Code pages: read + exec.
        if libc::mprotect(base as *mut libc::c_void, code_len as usize, libc::PROT_READ | libc::PROT_EXEC) != 0 {
            return Err(RestoreError::sys("mprotect of the restorer code", std::io::Error::last_os_error()));
        }
    }

    let mut keep = vec![image_fd];
    if tty_src >= 0 {
        keep.push(tty_src);
    }
    let plan = ChildPlan {
        pid,
        setsid: img.process.sid == img.process.pid,
        pgid: img.process.pgid as i32,
        status_fd: -1,
        image_fd,
        tty_src,
        kernel_fd: -1,
        fd_high,
        keep_fds: keep,
        files,
        pipes,
        map_files,
        shms,
        exe,
        cwd,
        root,
        umask: img.fs.umask,
        personality: Some(img.process.personality),
        dumpable: img.process.dumpable,
        nice: img.process.nice as i32 - 20,
        sigactions,
        rlimits,
        args: (start + o_args) as *mut Args,
        vmas: (start + o_vmas) as *mut Vma,
        close_fds: (start + o_close) as *mut i32,
        close_cap,
        stack_top: start + o_stacks + LEADER_STACK,
        entry: start + RESTORER_ENTRY as u64,
    };
    Ok(Prepared { park, plan, area, pid, tids, page_bytes, parent_close })
}

/// The value to arm a timer with. A periodic timer whose signal was pending
/// at checkpoint time reads as value 0 (the kernel rearms it only when that
/// signal is dequeued, and the re-queued copy of the signal is not tied to
/// the timer any more): arm it for one interval so it keeps ticking.
/// A thread's XSAVE area laid out for this CPU, and what to restore of it.
pub struct ThreadXsave {
    /// Standard-format area of this CPU (`size` bytes).
    pub area: Vec<u8>,
    /// Bytes of `area` the components in `features` need.
    pub size: usize,
    /// Components to restore (XSTATE_BV | x87 | SSE, within this CPU's).
    pub features: u64,
}

/// CAP_SYS_RESOURCE (linux/capability.h).
const CAP_SYS_RESOURCE: u32 = 24;

/// Our capability sets: effective, permitted, inheritable.
fn our_caps() -> Result<[u64; 3], RestoreError> {
    let hdr: [u32; 2] = [0x2008_0522, 0];
    let mut d = [0u32; 6];
    // SAFETY: v3 capget structures: a 2-word header and 2 x 3 data words.
    let r = unsafe { libc::syscall(libc::SYS_capget, hdr.as_ptr(), d.as_mut_ptr()) };
    if r < 0 {
        return Err(RestoreError::sys("capget", std::io::Error::last_os_error()));
    }
    Ok([
        u64::from(d[0]) | u64::from(d[3]) << 32,
        u64::from(d[1]) | u64::from(d[4]) << 32,
        u64::from(d[2]) | u64::from(d[5]) << 32,
    ])
}

/// Checks that the image can run on this machine at all (architecture, page
/// size, CPU: [`cpu_check`]) before anything is prepared, for both engines;
/// returns the threads' XSAVE areas laid out for this CPU, for [`prepare`].
pub fn machine_check(img: &ProcessImage<'_>, cpu_override: bool) -> Result<Vec<Option<ThreadXsave>>, RestoreError> {
    let h = &img.header;
    if h.arch != stasis_image::records::arch::X86_64 {
        return Err(RestoreError::Arch { arch: h.arch });
    }
    // SAFETY: sysconf has no memory arguments.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    if u64::from(h.page_size) != page {
        return Err(RestoreError::PageSize { image: h.page_size, ours: page });
    }
    cpu_check(img, cpu_override)
}

/// Checks the image's CPU against this one and lays every thread's XSAVE area
/// out for this CPU (indexed like `img.threads`). An image whose CPU had
/// instruction-set features or XSAVE components this one lacks is refused
/// unless `cpu_override`; a thread using components this CPU lacks is refused
/// unless `cpu_override`, which then drops those components.
pub fn cpu_check(img: &ProcessImage<'_>, cpu_override: bool) -> Result<Vec<Option<ThreadXsave>>, RestoreError> {
    let here = x86::cpu::this_cpu();
    let here_layout = xsave::Layout::of(&here);
    let ours = x86::cpu::effective_xfeatures(here.xcr0);
    if let Some(ic) = &img.cpu {
        let c = x86::CpuCompat::compare(ic, &here);
        if !c.is_ok() && !cpu_override {
            if c.missing.is_empty() && c.missing_xfeatures == 0 {
                return Err(RestoreError::CpuXsaveGrew { extra: x86::cpu::XfeatureList(c.extra_xfeatures).to_string() });
            }
            return Err(RestoreError::CpuMismatch {
                missing: c.missing.to_string(),
                missing_xsave: x86::cpu::XfeatureList(c.missing_xfeatures).to_string(),
            });
        }
    }
    let from = img.cpu.as_ref().map(xsave::Layout::of).unwrap_or(here_layout);
    let mut out = Vec::with_capacity(img.threads.len());
    for t in &img.threads {
        let Some(x) = &t.xstate else {
            out.push(None);
            continue;
        };
        let bv = x.rec.xstate_bv;
        let missing = bv & !ours;
        if missing != 0 && !cpu_override {
            return Err(RestoreError::MissingCpuFeatures {
                tid: t.rec.tid,
                missing,
                names: x86::cpu::XfeatureList(missing).to_string(),
                ours,
            });
        }
        let features = (bv | xsave::FPSSE) & ours;
        let mut area = vec![0u8; xsave::MAX_SIZE];
        let size = xsave::relayout(x.area, &from, &here_layout, features, &mut area)
            .map_err(|e| RestoreError::Unsupported(format!("thread {}: its XSAVE area cannot be used on this CPU: {e}", t.rec.tid)))?;
        area.truncate(size);
        out.push(Some(ThreadXsave { area, size, features }));
    }
    Ok(out)
}

fn rearm_value(t: &stasis_image::records::TimerVal) -> u64 {
    if t.value_ns == 0 && t.interval_ns != 0 {
        t.interval_ns
    } else {
        t.value_ns
    }
}

/// Helper: OsStr from raw bytes.
trait OsStrCompat {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
}
impl OsStrCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b)
    }
}

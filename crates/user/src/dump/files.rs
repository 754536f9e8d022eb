//! File descriptors: regular files (deleted ones with their contents),
//! directories, devices, terminals, pipes and FIFOs with their buffered data.
//! Anything else is refused with the fd and the reason.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;

use stasis_image::records::{file_flags, file_kind, FdFileRec, FdPipeRec};

use super::DumpError;
use crate::proc;
use crate::sys;

/// Largest deleted file whose contents we copy into the image.
const MAX_DELETED_FILE: u64 = 1 << 30;

pub(crate) struct FileOut {
    pub rec: FdFileRec,
    pub path: Vec<u8>,
    /// Contents of a deleted file (first fd of its file_id only).
    pub data: Option<Vec<u8>>,
}

pub(crate) struct PipeOut {
    pub rec: FdPipeRec,
    pub path: Vec<u8>,
}

#[derive(Default)]
pub(crate) struct Files {
    pub files: Vec<FileOut>,
    pub pipes: Vec<PipeOut>,
    /// (pipe_id, buffered bytes), one per pipe with data.
    pub pipe_data: Vec<(u32, Vec<u8>)>,
}

fn refuse(pid: i32, fd: i32, link: &[u8], reason: &str) -> DumpError {
    DumpError::Unsupported {
        pid,
        what: format!("fd {fd} ({})", String::from_utf8_lossy(link)),
        reason: reason.to_owned(),
    }
}

fn ferr(pid: i32, fd: i32, step: &'static str) -> impl FnOnce(io::Error) -> DumpError {
    move |source| DumpError::Fd {
        pid,
        fd,
        step,
        source,
    }
}

/// Terminal devices: /dev/tty* (major 4), /dev/tty and /dev/console (5,0 / 5,1),
/// pty slaves (136..=143).
fn is_tty(rdev: u64) -> bool {
    let (ma, mi) = (libc::major(rdev), libc::minor(rdev));
    ma == 4 || (136..=143).contains(&ma) || (ma == 5 && (mi == 0 || mi == 1))
}

struct Seen {
    fd: i32,
    dev: u64,
    ino: u64,
    file_id: u32,
}

/// Inspect every fd of `pid` (which must be frozen).
pub(crate) fn collect(pid: i32) -> Result<Files, DumpError> {
    let mut out = Files::default();
    let fds = proc::fds(pid).map_err(|e| DumpError::io(pid, "listing /proc/PID/fd", e))?;
    let mut seen: Vec<Seen> = Vec::new();
    let mut next_file_id = 1u32;
    let mut pipe_ids: Vec<(u64, u32, u32)> = Vec::new(); // (ino, pipe_id, capacity)
    for fd in fds {
        let lp = proc::pid_path(pid, &format!("fd/{fd}"));
        let link = proc::readlink(&lp).map_err(ferr(pid, fd, "readlink"))?;
        if link.starts_with(b"socket:") {
            return Err(refuse(
                pid,
                fd,
                &link,
                "sockets are not supported by the user engine yet",
            ));
        }
        if let Some(rest) = link.strip_prefix(b"anon_inode:") {
            let what = String::from_utf8_lossy(rest)
                .trim_matches(|c| c == '[' || c == ']')
                .to_owned();
            return Err(refuse(
                pid,
                fd,
                &link,
                &format!("{what} file descriptors are not supported by the user engine yet"),
            ));
        }
        let info = proc::fdinfo(pid, fd).map_err(ferr(pid, fd, "reading fdinfo"))?;
        let st = sys::stat(lp.as_os_str()).map_err(ferr(pid, fd, "stat"))?;
        let fd_flags = if info.flags & libc::O_CLOEXEC as u32 != 0 {
            libc::FD_CLOEXEC as u32
        } else {
            0
        };
        let open_flags = info.flags & !(libc::O_CLOEXEC as u32);
        let (dev, ino) = (st.st_dev, st.st_ino);
        // Same open file description as an earlier fd?
        let mut file_id = 0;
        for s in seen.iter().filter(|s| s.dev == dev && s.ino == ino) {
            match sys::kcmp_file(pid, s.fd, fd) {
                Ok(0) => {
                    file_id = s.file_id;
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(DumpError::Fd {
                        pid,
                        fd,
                        step: "kcmp(KCMP_FILE)",
                        source: e,
                    })
                }
            }
        }
        let first_of_file = file_id == 0;
        if first_of_file {
            file_id = next_file_id;
            next_file_id += 1;
        }
        seen.push(Seen {
            fd,
            dev,
            ino,
            file_id,
        });

        let fmt = st.st_mode & libc::S_IFMT;
        if fmt == libc::S_IFIFO {
            let fifo = !link.starts_with(b"pipe:");
            let (pipe_id, capacity) = match pipe_ids.iter().find(|p| p.0 == ino) {
                Some(p) => (p.1, p.2),
                None => {
                    let id = pipe_ids.len() as u32 + 1;
                    // First fd of this pipe: capacity and buffered data.
                    let (cap, data) = pipe_contents(pid, fd, &lp)?;
                    pipe_ids.push((ino, id, cap));
                    if !data.is_empty() {
                        out.pipe_data.push((id, data));
                    }
                    (id, cap)
                }
            };
            let path = if fifo { link.clone() } else { Vec::new() };
            out.pipes.push(PipeOut {
                rec: FdPipeRec {
                    fd: fd as u32,
                    fd_flags,
                    open_flags,
                    pipe_id,
                    file_id,
                    fifo: u32::from(fifo),
                    capacity,
                    path_len: path.len() as u32,
                    ino,
                },
                path,
            });
            continue;
        }
        let memfd = link.starts_with(b"/memfd:");
        let (kind, mut path) = match fmt {
            libc::S_IFREG if memfd => {
                if st.st_size as u64 > MAX_DELETED_FILE {
                    return Err(refuse(
                        pid,
                        fd,
                        &link,
                        "memfd too large to copy into the image",
                    ));
                }
                let f = sys::open(lp.as_os_str(), libc::O_RDONLY).map_err(ferr(
                    pid,
                    fd,
                    "opening the memfd",
                ))?;
                let seals = sys::fcntl_int(&f, libc::F_GET_SEALS, 0).unwrap_or(0);
                if seals & !libc::F_SEAL_SEAL != 0 {
                    return Err(refuse(
                        pid,
                        fd,
                        &link,
                        "sealed memfds are not supported (the seals could not be restored)",
                    ));
                }
                (file_kind::MEMFD, link.clone())
            }
            libc::S_IFREG => (file_kind::REGULAR, link.clone()),
            libc::S_IFDIR => (file_kind::DIRECTORY, link.clone()),
            libc::S_IFCHR => {
                let (ma, mi) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
                if ma == 5 && mi == 2 {
                    return Err(refuse(
                        pid,
                        fd,
                        &link,
                        "pty masters (/dev/ptmx) are not supported",
                    ));
                }
                if is_tty(st.st_rdev) {
                    (file_kind::TTY, link.clone())
                } else {
                    (file_kind::CHAR_DEVICE, link.clone())
                }
            }
            libc::S_IFBLK => (file_kind::BLOCK_DEVICE, link.clone()),
            libc::S_IFSOCK => {
                return Err(refuse(
                    pid,
                    fd,
                    &link,
                    "sockets are not supported by the user engine yet",
                ))
            }
            _ => return Err(refuse(pid, fd, &link, "unknown kind of file")),
        };
        let mut fflags = 0;
        let mut data = None;
        if (kind == file_kind::REGULAR && st.st_nlink == 0) || kind == file_kind::MEMFD {
            fflags |= file_flags::DELETED;
            if let Some(p) = path.strip_suffix(b" (deleted)") {
                path = p.to_vec();
            }
            if first_of_file {
                data = Some(read_deleted(pid, fd, &lp, st.st_size as u64)?);
            }
        } else if kind != file_kind::TTY && !path.starts_with(b"/") {
            return Err(refuse(
                pid,
                fd,
                &link,
                "the file has no path that could be reopened",
            ));
        } else if path.ends_with(b" (deleted)") {
            return Err(refuse(
                pid,
                fd,
                &link,
                "the file was deleted and is not a regular file",
            ));
        }
        out.files.push(FileOut {
            rec: FdFileRec {
                fd: fd as u32,
                fd_flags,
                open_flags,
                kind,
                file_id,
                file_flags: fflags,
                pos: info.pos,
                size: st.st_size as u64,
                mode: st.st_mode,
                path_len: path.len() as u32,
                dev,
                ino,
                rdev: st.st_rdev,
            },
            path,
            data,
        });
    }
    Ok(out)
}

/// Capacity and buffered bytes of a pipe, read without consuming them:
/// open our own read end through /proc/PID/fd/N (non-blocking, so the
/// target's file description is untouched), then tee(2) into a pipe of ours.
fn pipe_contents(pid: i32, fd: i32, lp: &std::path::Path) -> Result<(u32, Vec<u8>), DumpError> {
    let rd = sys::open(lp.as_os_str(), libc::O_RDONLY | libc::O_NONBLOCK).map_err(ferr(
        pid,
        fd,
        "opening the pipe",
    ))?;
    let cap = sys::fcntl_int(&rd, libc::F_GETPIPE_SZ, 0).map_err(ferr(pid, fd, "F_GETPIPE_SZ"))?;
    let avail = sys::fionread(&rd).map_err(ferr(pid, fd, "FIONREAD"))?;
    if avail == 0 {
        return Ok((cap as u32, Vec::new()));
    }
    let (our_r, our_w) = sys::pipe(libc::O_NONBLOCK).map_err(ferr(pid, fd, "pipe"))?;
    let want = (avail.max(cap as usize)) as i32;
    let got_sz =
        sys::fcntl_int(&our_w, libc::F_SETPIPE_SZ, want).map_err(ferr(pid, fd, "F_SETPIPE_SZ"))?;
    if (got_sz as usize) < avail {
        return Err(DumpError::Fd {
            pid,
            fd,
            step: "copying pipe data",
            source: io::Error::other(format!(
                "{avail} bytes buffered but only a {got_sz}-byte pipe available"
            )),
        });
    }
    let n = sys::tee(&rd, &our_w, avail, libc::SPLICE_F_NONBLOCK).map_err(ferr(pid, fd, "tee"))?;
    if n != avail {
        return Err(DumpError::Fd {
            pid,
            fd,
            step: "copying pipe data",
            source: io::Error::other(format!("tee copied {n} of {avail} buffered bytes")),
        });
    }
    let mut data = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let r = sys::read(&our_r, &mut data[got..]).map_err(ferr(pid, fd, "reading the copy"))?;
        if r == 0 {
            break;
        }
        got += r;
    }
    data.truncate(got);
    Ok((cap as u32, data))
}

fn read_deleted(pid: i32, fd: i32, lp: &std::path::Path, size: u64) -> Result<Vec<u8>, DumpError> {
    if size > MAX_DELETED_FILE {
        return Err(DumpError::Unsupported {
            pid,
            what: format!("fd {fd}"),
            reason: format!("deleted file of {size} bytes is too large to copy into the image"),
        });
    }
    let f = sys::open(OsStr::from_bytes(lp.as_os_str().as_bytes()), libc::O_RDONLY)
        .map_err(ferr(pid, fd, "opening the deleted file"))?;
    let mut data = vec![0u8; size as usize];
    let mut got = 0usize;
    while got < data.len() {
        let r = sys::pread(&f, &mut data[got..], got as u64).map_err(ferr(
            pid,
            fd,
            "reading the deleted file",
        ))?;
        if r == 0 {
            break;
        }
        got += r;
    }
    data.truncate(got);
    Ok(data)
}

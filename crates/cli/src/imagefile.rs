//! Getting an image's bytes into memory: a read-only private mapping for
//! regular files (images can be many GiB), or a buffer for standard input.

use std::fs::File;
use std::io::{IsTerminal, Read};
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;

use anyhow::{Context, Result};

use crate::error::CliError;

/// A read-only view of a whole image.
pub enum ImageBytes {
    Mapped { ptr: NonNull<u8>, len: usize },
    Owned(Vec<u8>),
}

impl Deref for ImageBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            // SAFETY: ptr/len describe a live PROT_READ mapping owned by self,
            // unmapped only in Drop.
            ImageBytes::Mapped { ptr, len } => unsafe { std::slice::from_raw_parts(ptr.as_ptr(), *len) },
            ImageBytes::Owned(v) => v,
        }
    }
}

impl Drop for ImageBytes {
    fn drop(&mut self) {
        if let ImageBytes::Mapped { ptr, len } = self {
            // SAFETY: the mapping was created by mmap with this address and length.
            unsafe { libc::munmap(ptr.as_ptr().cast(), *len) };
        }
    }
}

/// Whether `path` means standard input/output.
pub fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Display name of an image path (`-` shows as `<stdin>`).
pub fn display_name(path: &Path) -> String {
    if is_stdio(path) {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    }
}

/// Load the image at `path` (`-` = standard input).
pub fn load(path: &Path) -> Result<ImageBytes> {
    if is_stdio(path) {
        let mut stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Err(CliError::StdinIsTerminal.into());
        }
        let mut buf = Vec::new();
        stdin.read_to_end(&mut buf).context("cannot read the image from standard input")?;
        return Ok(ImageBytes::Owned(buf));
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file.metadata().with_context(|| format!("cannot stat {}", path.display()))?;
    if meta.is_dir() {
        anyhow::bail!("{} is a directory, not an image", path.display());
    }
    let len = usize::try_from(meta.len()).context("image too large for this address space")?;
    if !meta.is_file() || len == 0 {
        let mut buf = Vec::new();
        (&file).read_to_end(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        return Ok(ImageBytes::Owned(buf));
    }
    // SAFETY: a fresh private read-only mapping of a file we hold open; the
    // kernel picks the address. (A file truncated under us would raise
    // SIGBUS, as with any mapped reader.)
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0)
    };
    if p == libc::MAP_FAILED {
        let e = std::io::Error::last_os_error();
        return Err(e).with_context(|| format!("cannot map {}", path.display()));
    }
    // SAFETY: p is a valid mapping of len bytes; the advice is only a hint.
    unsafe { libc::madvise(p, len, libc::MADV_SEQUENTIAL) };
    let ptr = NonNull::new(p.cast::<u8>()).context("mmap returned NULL")?;
    Ok(ImageBytes::Mapped { ptr, len })
}

//! Getting an image's bytes into memory: a read-only private mapping for
//! regular files (images can be many GiB), or a buffer for standard input.

use std::fs::File;
use std::io::{IsTerminal, Read};
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;

use anyhow::{Context, Result};
use stasis_image::{
    kind_name, Header, Image, ImageError, ParseOptions, ProcessImage, HEADER_LEN, RECORD_HEADER_LEN,
};

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
            ImageBytes::Mapped { ptr, len } => unsafe {
                std::slice::from_raw_parts(ptr.as_ptr(), *len)
            },
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
        stdin
            .read_to_end(&mut buf)
            .context("cannot read the image from standard input")?;
        return Ok(ImageBytes::Owned(buf));
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?;
    if meta.is_dir() {
        anyhow::bail!("{} is a directory, not an image", path.display());
    }
    let len = usize::try_from(meta.len()).context("image too large for this address space")?;
    if !meta.is_file() || len == 0 {
        let mut buf = Vec::new();
        (&file)
            .read_to_end(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return Ok(ImageBytes::Owned(buf));
    }
    // SAFETY: a fresh private read-only mapping of a file we hold open; the
    // kernel picks the address. (A file truncated under us would raise
    // SIGBUS, as with any mapped reader.)
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
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

/// Where in the file an image error is, for the errors whose message does
/// not already say it: the header errors (all at offset 0), and truncation
/// inside a record (named by walking the record framing up to the offset).
fn location(bytes: &[u8], err: &ImageError) -> Option<String> {
    match err {
        ImageError::BadMagic
        | ImageError::UnsupportedVersion { .. }
        | ImageError::BadHeaderLen { .. }
        | ImageError::HeaderChecksum
        | ImageError::UnsupportedArch { .. }
        | ImageError::BadPageSize { .. }
        | ImageError::BadHeaderField { .. } => Some("file header at offset 0x0".to_string()),
        ImageError::Truncated { offset, .. } if *offset >= u64::from(HEADER_LEN) => {
            record_at(bytes, *offset)
                .map(|(index, kind)| format!("record {index} ({})", kind_name(kind)))
        }
        _ => None,
    }
}

/// Index and kind of the record starting at `target`, following the v1
/// framing (24-byte record header with the payload length at +8, payload
/// padded to 8, 8-byte payload checksum).
fn record_at(bytes: &[u8], target: u64) -> Option<(usize, u32)> {
    let mut off = u64::from(HEADER_LEN);
    let mut index = 0usize;
    while off < target {
        let o = usize::try_from(off).ok()?;
        let len = u64::from_le_bytes(bytes.get(o + 8..o + 16)?.try_into().ok()?);
        let payload_end = off.checked_add(RECORD_HEADER_LEN)?.checked_add(len)?;
        off = payload_end.checked_add(7)? / 8 * 8 + 8;
        index += 1;
    }
    if off != target {
        return None;
    }
    let o = usize::try_from(off).ok()?;
    let kind = bytes
        .get(o..o + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0);
    Some((index, kind))
}

/// Context line for an image error: the image's name, plus the location
/// when the error's own message lacks it.
pub fn error_context(name: &str, bytes: &[u8], err: &ImageError) -> String {
    match location(bytes, err) {
        Some(loc) => format!("{name}: {loc}"),
        None => name.to_string(),
    }
}

/// Parse and fully check a process image (all extensions supported),
/// attaching the image name and location to any error.
pub fn parse<'a>(name: &str, bytes: &'a [u8]) -> Result<(Image<'a>, ProcessImage<'a>)> {
    let img = Image::parse(bytes).map_err(|e| {
        let ctx = error_context(name, bytes, &e);
        anyhow::Error::new(e).context(ctx)
    })?;
    let pimg = ProcessImage::from_image(&img, &ParseOptions::ALL).map_err(|e| {
        let ctx = error_context(name, bytes, &e);
        anyhow::Error::new(e).context(ctx)
    })?;
    Ok((img, pimg))
}

/// Check just the header of the image file at `path` (cheap: 160 bytes), so
/// that a file that is not an image is refused before an engine starts.
pub fn check_header(name: &str, path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
    let mut head = Vec::with_capacity(HEADER_LEN as usize);
    file.take(u64::from(HEADER_LEN))
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read {name}"))?;
    Header::parse(&head).map_err(|e| {
        let ctx = error_context(name, &head, &e);
        anyhow::Error::new(e).context(ctx)
    })?;
    Ok(())
}

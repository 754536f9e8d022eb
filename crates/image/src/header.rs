//! The file header.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::error::ImageError;
use crate::records::{arch, engine};

/// First 8 bytes of every image.
pub const MAGIC: [u8; 8] = *b"\x7fSTASIS\n";
/// The format version this crate writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of [`Header`] in version 1.
pub const HEADER_LEN: u32 = 160;
/// Offset of `header_sum`; the checksum covers bytes `0..HEADER_SUM_OFFSET`.
pub const HEADER_SUM_OFFSET: usize = 152;

/// The 160-byte file header (version 1).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// [`HEADER_LEN`].
    pub header_len: u32,
    /// [`crate::records::arch`].
    pub arch: u32,
    /// Page size of the checkpointed system: a power of two >= 4096.
    pub page_size: u32,
    /// XSAVE features the image's XSTATE areas may use.
    pub xcr0: u64,
    /// Size of the XSAVE area of the checkpointing CPU.
    pub xsave_size: u32,
    /// [`crate::records::engine`].
    pub engine: u32,
    /// CLOCK_REALTIME at checkpoint, nanoseconds.
    pub created_ns: u64,
    /// Reserved, 0 in version 1.
    pub flags: u64,
    /// `uname -r` of the checkpointing kernel (NUL padded).
    pub kernel_release: [u8; 64],
    /// Writing program, e.g. `stasis 0.1.0` (NUL padded).
    pub writer: [u8; 32],
    /// xxh3-64 of bytes 0..152. Computed by [`crate::Writer::new`].
    pub header_sum: u64,
}

fn copy_str<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    // Keep at least one NUL at the end.
    for (d, b) in out.iter_mut().take(N.saturating_sub(1)).zip(s.bytes()) {
        *d = b;
    }
    out
}

fn until_nul(b: &[u8]) -> &[u8] {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b.get(..n).unwrap_or(b)
}

impl Header {
    /// A version 1 x86_64 header. Strings are truncated to 63 / 31 bytes.
    /// `header_sum` is left 0: the writer seals the header.
    pub fn new(
        engine: u32,
        page_size: u32,
        xcr0: u64,
        xsave_size: u32,
        kernel_release: &str,
        writer: &str,
        created_ns: u64,
    ) -> Header {
        Header {
            magic: MAGIC,
            version: FORMAT_VERSION,
            header_len: HEADER_LEN,
            arch: arch::X86_64,
            page_size,
            xcr0,
            xsave_size,
            engine,
            created_ns,
            flags: 0,
            kernel_release: copy_str(kernel_release),
            writer: copy_str(writer),
            header_sum: 0,
        }
    }

    /// xxh3-64 of the first 152 bytes (what `header_sum` must hold).
    pub fn compute_sum(&self) -> u64 {
        let b = self.as_bytes();
        crate::checksum(b.get(..HEADER_SUM_OFFSET).unwrap_or(b))
    }

    /// A copy with `header_sum` set.
    pub fn sealed(&self) -> Header {
        let mut h = *self;
        h.header_sum = h.compute_sum();
        h
    }

    /// `kernel_release` up to the first NUL.
    pub fn kernel_release_bytes(&self) -> &[u8] {
        until_nul(&self.kernel_release)
    }

    /// `writer` up to the first NUL.
    pub fn writer_bytes(&self) -> &[u8] {
        until_nul(&self.writer)
    }

    /// `page_size` as u64.
    pub fn page_size_u64(&self) -> u64 {
        u64::from(self.page_size)
    }

    /// Checks every header field except the checksum.
    pub(crate) fn check_fields(&self) -> Result<(), ImageError> {
        if self.magic != MAGIC {
            return Err(ImageError::BadMagic);
        }
        if self.version != FORMAT_VERSION {
            return Err(ImageError::UnsupportedVersion {
                found: self.version,
                supported: FORMAT_VERSION,
            });
        }
        if self.header_len != HEADER_LEN {
            return Err(ImageError::BadHeaderLen {
                len: self.header_len,
            });
        }
        if self.arch != arch::X86_64 {
            return Err(ImageError::UnsupportedArch { arch: self.arch });
        }
        if !self.page_size.is_power_of_two() || self.page_size < 4096 {
            return Err(ImageError::BadPageSize {
                page_size: self.page_size,
            });
        }
        if self.engine != engine::KERNEL && self.engine != engine::USER {
            return Err(ImageError::BadHeaderField {
                field: "engine",
                value: u64::from(self.engine),
            });
        }
        if self.flags != 0 {
            return Err(ImageError::BadHeaderField {
                field: "flags",
                value: self.flags,
            });
        }
        Ok(())
    }

    /// Reads and validates the header at the start of `bytes`. Checks, in
    /// order: magic, version, header_len, truncation, checksum, the other fields.
    pub fn parse(bytes: &[u8]) -> Result<Header, ImageError> {
        // Magic first, on whatever prefix exists, so that a short non-image
        // file is "bad magic" rather than "truncated".
        let n = bytes.len().min(MAGIC.len());
        if bytes.get(..n) != MAGIC.get(..n) {
            return Err(ImageError::BadMagic);
        }
        let word = |at: usize| -> Option<u32> {
            let s = bytes.get(at..at.checked_add(4)?)?;
            Some(u32::from_le_bytes(s.try_into().ok()?))
        };
        if let Some(v) = word(8) {
            if v != FORMAT_VERSION {
                return Err(ImageError::UnsupportedVersion {
                    found: v,
                    supported: FORMAT_VERSION,
                });
            }
        }
        if let Some(l) = word(12) {
            if l != HEADER_LEN {
                return Err(ImageError::BadHeaderLen { len: l });
            }
        }
        let Ok((h, _)) = Header::read_from_prefix(bytes) else {
            return Err(ImageError::Truncated {
                offset: 0,
                needed: u64::from(HEADER_LEN),
            });
        };
        if h.compute_sum() != h.header_sum {
            return Err(ImageError::HeaderChecksum);
        }
        h.check_fields()?;
        Ok(h)
    }
}

//! Structural parsing: header, framing, checksums, END.

use alloc::vec::Vec;

use zerocopy::FromBytes;

use crate::error::ImageError;
use crate::header::{Header, HEADER_LEN};
use crate::names::{is_known_kind, kind_name};
use crate::records::{kind, EndRec, Extension, PagesRec};
use crate::util::{align8, first_nonzero, push, to_u64, to_usize};
use crate::{checksum, RECORD_FLAGS_KNOWN, RECORD_OPTIONAL};

/// Size of a record header (kind, flags, len, head_sum).
pub const RECORD_HEADER_LEN: u64 = 24;

/// What the restarting engine can handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseOptions<'a> {
    /// Extensions the restarting engine handles. [`Extension::Core`] is
    /// always supported, listed or not.
    pub supported: &'a [Extension],
}

impl ParseOptions<'static> {
    /// Only the core extension.
    pub const CORE: ParseOptions<'static> = ParseOptions {
        supported: &[Extension::Core],
    };
    /// Every extension this crate knows.
    pub const ALL: ParseOptions<'static> = ParseOptions {
        supported: &[
            Extension::Core,
            Extension::Files,
            Extension::Net,
            Extension::Events,
            Extension::Ipc,
            Extension::Tree,
        ],
    };
}

impl Default for ParseOptions<'static> {
    fn default() -> Self {
        ParseOptions::CORE
    }
}

impl ParseOptions<'_> {
    /// Whether `ext` is supported.
    pub fn supports(&self, ext: Extension) -> bool {
        ext == Extension::Core || self.supported.contains(&ext)
    }
}

/// One record of a parsed image, borrowing its payload from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Position in the file, from 0.
    pub index: usize,
    /// Stream offset of the record header.
    pub offset: u64,
    /// Record kind.
    pub kind: u32,
    /// Record flags.
    pub flags: u32,
    /// The payload (`len` bytes).
    pub payload: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// Stream offset of the first payload byte.
    pub fn payload_offset(&self) -> u64 {
        self.offset.saturating_add(RECORD_HEADER_LEN)
    }
    /// Whether the OPTIONAL flag is set.
    pub fn is_optional(&self) -> bool {
        self.flags & RECORD_OPTIONAL != 0
    }
    /// [`kind_name`] of the kind.
    pub fn name(&self) -> &'static str {
        kind_name(self.kind)
    }
    /// The fixed struct at the start of the payload, if the payload is long enough.
    pub fn fixed<T: FromBytes>(&self) -> Option<T> {
        T::read_from_prefix(self.payload).ok().map(|(t, _)| t)
    }
}

/// A structurally valid image: header and records, every checksum verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image<'a> {
    /// The file header.
    pub header: Header,
    records: Vec<RecordRef<'a>>,
    end: EndRec,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at.saturating_add(4))
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at.saturating_add(8))
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

impl<'a> Image<'a> {
    /// Full structural validation: header, every checksum, framing, padding,
    /// unknown mandatory kinds, END (present, last, counts right), no trailing
    /// data. Record contents are checked by [`crate::ProcessImage::from_image`].
    pub fn parse(bytes: &'a [u8]) -> Result<Image<'a>, ImageError> {
        let header = Header::parse(bytes)?;
        let page_size = u64::from(header.page_size);
        let total = to_u64(bytes.len());
        let mut off = u64::from(HEADER_LEN);
        let mut page_bytes: u64 = 0;
        let mut records: Vec<RecordRef<'a>> = Vec::new();
        loop {
            let index = records.len();
            if off >= total {
                return Err(ImageError::MissingEnd { offset: off });
            }
            let trunc = |needed: u64| ImageError::Truncated {
                offset: off,
                needed,
            };
            let o = to_usize(off).ok_or(trunc(RECORD_HEADER_LEN))?;
            let head = o
                .checked_add(24)
                .and_then(|e| bytes.get(o..e))
                .ok_or(trunc(RECORD_HEADER_LEN))?;
            let k = u32_at(head, 0);
            let flags = u32_at(head, 4);
            let len = u64_at(head, 8);
            let head_sum = u64_at(head, 16);
            if checksum(head.get(..16).unwrap_or(&[])) != head_sum {
                return Err(ImageError::RecordHeaderChecksum { index, offset: off });
            }
            if flags & !RECORD_FLAGS_KNOWN != 0 {
                return Err(ImageError::BadRecordFlags {
                    index,
                    kind: k,
                    offset: off,
                    flags,
                });
            }
            let overflow = ImageError::LengthOverflow {
                index,
                offset: off,
                len,
            };
            let payload_off = off.checked_add(RECORD_HEADER_LEN).ok_or(overflow.clone())?;
            let payload_end = payload_off.checked_add(len).ok_or(overflow.clone())?;
            let sum_off = align8(payload_end).ok_or(overflow.clone())?;
            let next = sum_off.checked_add(8).ok_or(overflow)?;
            if next > total {
                return Err(trunc(next.saturating_sub(off)));
            }
            // All of off..next is inside `bytes` now, so these conversions fit.
            let (Some(p0), Some(p1), Some(s0), Some(n1)) = (
                to_usize(payload_off),
                to_usize(payload_end),
                to_usize(sum_off),
                to_usize(next),
            ) else {
                return Err(trunc(next.saturating_sub(off)));
            };
            let payload = bytes.get(p0..p1).ok_or(trunc(next.saturating_sub(off)))?;
            let pad = bytes.get(p1..s0).unwrap_or(&[]);
            let stored = bytes
                .get(s0..n1)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or(trunc(next.saturating_sub(off)))?;
            if checksum(payload) != stored {
                return Err(ImageError::RecordChecksum {
                    index,
                    kind: k,
                    offset: off,
                });
            }
            if let Some(i) = first_nonzero(pad) {
                return Err(ImageError::BadPadding {
                    index,
                    kind: k,
                    offset: payload_end.saturating_add(to_u64(i)),
                });
            }
            if !is_known_kind(k) && flags & RECORD_OPTIONAL == 0 {
                return Err(ImageError::UnknownKind {
                    index,
                    kind: k,
                    offset: off,
                });
            }
            let bad = |why| ImageError::BadPayload {
                index,
                kind: k,
                offset: off,
                why,
            };
            if k == kind::PAGES {
                let (rec, _) = PagesRec::read_from_prefix(payload)
                    .map_err(|_| bad("shorter than its fixed struct"))?;
                let bytes_here = rec
                    .nr_pages
                    .checked_mul(page_size)
                    .ok_or(bad("page count overflows"))?;
                page_bytes = page_bytes
                    .checked_add(bytes_here)
                    .ok_or(bad("page count overflows"))?;
            }
            push(
                &mut records,
                RecordRef {
                    index,
                    offset: off,
                    kind: k,
                    flags,
                    payload,
                },
                off,
            )?;
            if k == kind::END {
                let end = EndRec::read_from_bytes(payload)
                    .map_err(|_| bad("END payload is not 16 bytes"))?;
                let mismatch = |field, expected, found| ImageError::EndMismatch {
                    index,
                    offset: off,
                    field,
                    expected,
                    found,
                };
                if end.nr_records != to_u64(index) {
                    return Err(mismatch("nr_records", to_u64(index), end.nr_records));
                }
                if end.page_bytes != page_bytes {
                    return Err(mismatch("page_bytes", page_bytes, end.page_bytes));
                }
                if next != total {
                    return Err(ImageError::TrailingData { offset: next });
                }
                return Ok(Image {
                    header,
                    records,
                    end,
                });
            }
            off = next;
        }
    }

    /// All records in file order, END included (last).
    pub fn records(&self) -> &[RecordRef<'a>] {
        &self.records
    }

    /// The END record.
    pub fn end(&self) -> &EndRec {
        &self.end
    }
}

//! The ways an image can be wrong.

use crate::names::kind_name;
use crate::records::Extension;

fn kn(kind: &u32) -> &'static str {
    kind_name(*kind)
}

/// One variant per way an image file can be wrong. Record indexes count from
/// 0 in file order; offsets are byte offsets from the start of the file (of
/// the record header for record errors, unless stated otherwise).
///
/// `Display` is one line, e.g.
/// `record 7 (PAGES) at offset 0x3000: payload checksum mismatch`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    // ---- header ----
    /// The file does not start with [`crate::MAGIC`].
    #[error("not a stasis image (bad magic)")]
    BadMagic,
    /// A format version this reader does not know.
    #[error("unsupported image format version {found} (this reader knows version {supported})")]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
        /// The only version this reader accepts.
        supported: u32,
    },
    /// `header_len` is not 160 (for version 1).
    #[error("bad header length {len} (expected 160)")]
    BadHeaderLen {
        /// Value found.
        len: u32,
    },
    /// `header_sum` does not match the header bytes.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// An architecture id this reader does not support.
    #[error("unsupported architecture id {arch}")]
    UnsupportedArch {
        /// Value found.
        arch: u32,
    },
    /// `page_size` is not a power of two >= 4096.
    #[error("bad page size {page_size} (must be a power of two >= 4096)")]
    BadPageSize {
        /// Value found.
        page_size: u32,
    },
    /// Another header field has a value a v1 reader refuses (`flags` not 0,
    /// unknown `engine`).
    #[error("bad header field {field} = {value:#x}")]
    BadHeaderField {
        /// Field name.
        field: &'static str,
        /// Value found.
        value: u64,
    },

    // ---- framing ----
    /// The file ends inside the header or a record.
    #[error("truncated at offset {offset:#x}: {needed} more bytes needed")]
    Truncated {
        /// Offset of the item that does not fit.
        offset: u64,
        /// Its size in bytes.
        needed: u64,
    },
    /// A record header's `head_sum` does not match.
    #[error("record {index} at offset {offset:#x}: record header checksum mismatch")]
    RecordHeaderChecksum {
        /// Record index.
        index: usize,
        /// Offset of the record.
        offset: u64,
    },
    /// A record header sets flag bits that version 1 does not define.
    #[error("record {index} ({}) at offset {offset:#x}: unknown record flags {flags:#x}", kn(.kind))]
    BadRecordFlags {
        /// Record index.
        index: usize,
        /// Record kind.
        kind: u32,
        /// Offset of the record.
        offset: u64,
        /// Flags found.
        flags: u32,
    },
    /// A record length whose end does not fit in 64-bit offsets.
    #[error("record {index} at offset {offset:#x}: length {len:#x} overflows")]
    LengthOverflow {
        /// Record index.
        index: usize,
        /// Offset of the record.
        offset: u64,
        /// Length found.
        len: u64,
    },
    /// The payload checksum does not match the payload.
    #[error("record {index} ({}) at offset {offset:#x}: payload checksum mismatch", kn(.kind))]
    RecordChecksum {
        /// Record index.
        index: usize,
        /// Record kind.
        kind: u32,
        /// Offset of the record.
        offset: u64,
    },
    /// A padding byte (after a payload, or between a prefix and its data) is not zero.
    #[error("record {index} ({}): nonzero padding byte at offset {offset:#x}", kn(.kind))]
    BadPadding {
        /// Record index.
        index: usize,
        /// Record kind.
        kind: u32,
        /// Offset of the first nonzero padding byte.
        offset: u64,
    },
    /// A mandatory record of a kind this reader does not know.
    #[error("record {index} at offset {offset:#x}: unknown mandatory record kind {kind:#010x}")]
    UnknownKind {
        /// Record index.
        index: usize,
        /// Record kind.
        kind: u32,
        /// Offset of the record.
        offset: u64,
    },
    /// The file ends, at a record boundary, without an END record.
    #[error("no END record: image ends at offset {offset:#x} (truncated image)")]
    MissingEnd {
        /// Offset where the next record should start.
        offset: u64,
    },
    /// Bytes follow the END record.
    #[error("trailing data after the END record at offset {offset:#x}")]
    TrailingData {
        /// Offset of the first byte after END.
        offset: u64,
    },
    /// END's `nr_records` or `page_bytes` does not match the image.
    #[error(
        "record {index} (END) at offset {offset:#x}: {field} is {found}, image has {expected}"
    )]
    EndMismatch {
        /// Record index of END.
        index: usize,
        /// Offset of END.
        offset: u64,
        /// `nr_records` or `page_bytes`.
        field: &'static str,
        /// Value computed from the image.
        expected: u64,
        /// Value in the END record.
        found: u64,
    },

    // ---- record contents ----
    /// The record belongs to an extension the restarting engine does not support.
    #[error("record {index} ({}) at offset {offset:#x}: needs extension {} (module {module})", kn(.kind), .ext.name())]
    NeedsExtension {
        /// Record index.
        index: usize,
        /// Record kind.
        kind: u32,
        /// Extension owning the kind.
        ext: Extension,
        /// Kernel module implementing it.
        module: &'static str,
        /// Offset of the record.
        offset: u64,
    },
    /// The payload size does not match the fixed struct and tail lengths, or a
    /// field holds a value out of its domain.
    #[error("record {index} ({}) at offset {offset:#x}: bad payload: {why}", kn(.kind))]
    BadPayload {
        /// Record index.
        index: usize,
        /// Record kind.
        kind: u32,
        /// Offset of the record.
        offset: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// A reserved or padding field of a fixed struct is not zero.
    #[error("record {index} ({}) at offset {offset:#x}: reserved field {field} is not zero", kn(.kind))]
    ReservedNonZero {
        /// Record index.
        index: usize,
        /// Record kind.
        kind: u32,
        /// Offset of the record.
        offset: u64,
        /// Field name.
        field: &'static str,
    },
    /// An address, length or `data_off` is not aligned as required.
    #[error("record {index} ({}) at offset {offset:#x}: misaligned: {why}", kn(.kind))]
    Misaligned {
        /// Record index.
        index: usize,
        /// Record kind.
        kind: u32,
        /// Offset of the record.
        offset: u64,
        /// What is misaligned.
        why: &'static str,
    },
    /// A record appears where the ordering rules do not allow it.
    #[error("record {index} ({}) at offset {offset:#x}: out of order: {why}", kn(.kind))]
    OutOfOrder {
        /// Record index.
        index: usize,
        /// Record kind.
        kind: u32,
        /// Offset of the record.
        offset: u64,
        /// Which rule.
        why: &'static str,
    },
    /// Address ranges (VMAs, page runs) overlap, or a run lies outside its VMA.
    #[error("record {index} ({}) at offset {offset:#x}: bad range: {why}", kn(.kind))]
    BadRange {
        /// Record index.
        index: usize,
        /// Record kind.
        kind: u32,
        /// Offset of the record.
        offset: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// A record that may appear once appears again, or an id is repeated
    /// (thread id, fd, timer id).
    #[error("record {index} ({}) at offset {offset:#x}: duplicate {what}", kn(.kind))]
    Duplicate {
        /// Record index.
        index: usize,
        /// Record kind.
        kind: u32,
        /// Offset of the record.
        offset: u64,
        /// What is duplicated.
        what: &'static str,
    },
    /// A required record kind is absent.
    #[error("missing {} record (expected before offset {offset:#x})", kn(.kind))]
    MissingRecord {
        /// The kind that is missing.
        kind: u32,
        /// Offset of the END record.
        offset: u64,
    },
    /// A record refers to something (VMA, thread, file, pipe) that no
    /// earlier record defines.
    #[error("record {index} ({}) at offset {offset:#x}: refers to unknown {what} {id:#x}", kn(.kind))]
    DanglingRef {
        /// Record index.
        index: usize,
        /// Record kind.
        kind: u32,
        /// Offset of the record.
        offset: u64,
        /// What kind of object.
        what: &'static str,
        /// The id referred to.
        id: u64,
    },
    /// The threads do not match the PROCESS record (count, leader).
    #[error("record {index} ({}) at offset {offset:#x}: bad thread set: {why}", kn(.kind))]
    BadThreads {
        /// Record index.
        index: usize,
        /// Record kind.
        kind: u32,
        /// Offset of the record.
        offset: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// An allocation sized from input failed.
    #[error("out of memory while parsing the image at offset {offset:#x}")]
    OutOfMemory {
        /// Offset of the record being parsed.
        offset: u64,
    },
}

impl ImageError {
    /// Byte offset the error applies to, if any.
    pub fn offset(&self) -> Option<u64> {
        use ImageError::*;
        match *self {
            BadMagic
            | UnsupportedVersion { .. }
            | BadHeaderLen { .. }
            | HeaderChecksum
            | UnsupportedArch { .. }
            | BadPageSize { .. }
            | BadHeaderField { .. } => Some(0),
            Truncated { offset, .. }
            | RecordHeaderChecksum { offset, .. }
            | BadRecordFlags { offset, .. }
            | LengthOverflow { offset, .. }
            | RecordChecksum { offset, .. }
            | BadPadding { offset, .. }
            | UnknownKind { offset, .. }
            | MissingEnd { offset }
            | TrailingData { offset }
            | EndMismatch { offset, .. }
            | NeedsExtension { offset, .. }
            | BadPayload { offset, .. }
            | ReservedNonZero { offset, .. }
            | Misaligned { offset, .. }
            | OutOfOrder { offset, .. }
            | BadRange { offset, .. }
            | Duplicate { offset, .. }
            | MissingRecord { offset, .. }
            | DanglingRef { offset, .. }
            | BadThreads { offset, .. }
            | OutOfMemory { offset } => Some(offset),
        }
    }

    /// Index of the record the error applies to, if any.
    pub fn record_index(&self) -> Option<usize> {
        use ImageError::*;
        match *self {
            RecordHeaderChecksum { index, .. }
            | BadRecordFlags { index, .. }
            | LengthOverflow { index, .. }
            | RecordChecksum { index, .. }
            | BadPadding { index, .. }
            | UnknownKind { index, .. }
            | EndMismatch { index, .. }
            | NeedsExtension { index, .. }
            | BadPayload { index, .. }
            | ReservedNonZero { index, .. }
            | Misaligned { index, .. }
            | OutOfOrder { index, .. }
            | BadRange { index, .. }
            | Duplicate { index, .. }
            | DanglingRef { index, .. }
            | BadThreads { index, .. } => Some(index),
            _ => None,
        }
    }
}

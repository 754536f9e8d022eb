//! stasis-image: the checkpoint image format, version 1.
//!
//! A streaming [`Writer`] (front to back, no seeks: works into a pipe) and a
//! validating, zero-copy, panic-free reader ([`Image::parse`] for framing,
//! [`ProcessImage::from_image`] for the typed, semantically checked model).
//! `#![no_std]` + `alloc`: the kernel module links the same code. The `std`
//! feature adds [`IoSink`].
//!
//! docs/FORMAT.md is the normative byte-level specification; this is a summary.
//!
//! # Layout
//!
//! All integers little-endian. Offsets are *stream* offsets: from the first
//! byte of the header, which is the first byte of the file.
//!
//! ```text
//!  +-------------------------------------------------------------------+  0
//!  | Header (160 bytes)                                                |
//!  |   0 magic "\x7fSTASIS\n"  8 version u32 = 1  12 header_len = 160 |
//!  |  16 arch u32   20 page_size u32   24 xcr0 u64   32 xsave_size u32 |
//!  |  36 engine u32 40 created_ns u64  48 flags u64 (0)                |
//!  |  56 kernel_release [u8;64]  120 writer [u8;32]                    |
//!  | 152 header_sum u64 = xxh3-64(bytes 0..152)                        |
//!  +-------------------------------------------------------------------+ 160
//!  | Record 0 (always PROCESS for a process image)                     |
//!  +-------------------------------------------------------------------+
//!  | Record 1 ...                                                      |
//!  +-------------------------------------------------------------------+
//!  | Record n: END { nr_records = n, page_bytes }                      |
//!  +-------------------------------------------------------------------+ EOF
//!
//!  Record at stream offset R (R % 8 == 0):
//!  +--------+---------+---------+------------------------------------+
//!  | R+0    | kind    | u32     | record kind (records::kind)        |
//!  | R+4    | flags   | u32     | bit 0 OPTIONAL, others must be 0   |
//!  | R+8    | len     | u64     | payload length in bytes            |
//!  | R+16   | head_sum| u64     | xxh3-64 of bytes R..R+16           |
//!  | R+24   | payload | len     | fixed struct, tails, [pad, data]   |
//!  |        | padding | 0..7    | zero bytes up to 8 alignment       |
//!  | P      | pay_sum | u64     | xxh3-64 of the payload             |
//!  +--------+---------+---------+------------------------------------+
//!  next record at P + 8.
//!
//!  Data-carrying payload (PAGES, FILE_DATA, SYSV_SHM):
//!  | fixed struct | tail (e.g. PageRun array) | zero pad | data ...   |
//!  0              prefix_len                  data_off
//!  data_off = smallest offset >= prefix_len with (R + 24 + data_off)
//!  a multiple of page_size, so data sits page-aligned in the file.
//! ```
//!
//! # Versioning
//!
//! A reader accepts exactly the format versions it knows: this crate reads
//! version 1 only and refuses version 2 ([`ImageError::UnsupportedVersion`]).
//! New record kinds may be added to version 1 without a bump only if written
//! with the OPTIONAL record flag (readers that do not know them skip them).
//! Any change to the header, the framing, or the layout of an existing record
//! kind, and any new mandatory record kind, needs a new version.
//!
//! # Panics
//!
//! None on any input. The library denies indexing, slicing, unchecked
//! arithmetic, unwrap and panics; sizes taken from input are allocated with
//! `try_reserve`.

#![no_std]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::arithmetic_side_effects,
        clippy::unreachable,
        clippy::todo,
        clippy::cast_possible_truncation
    )
)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod error;
mod header;
mod names;
mod process;
mod reader;
#[allow(missing_docs)]
pub mod records;
mod util;
mod writer;
pub mod x86;

#[cfg(test)]
mod tests;

pub use error::ImageError;
pub use header::{Header, FORMAT_VERSION, HEADER_LEN, HEADER_SUM_OFFSET, MAGIC};
pub use names::{kind_name, ALL_KINDS};
pub use process::{
    FdFileView, FdPipeView, FsView, MmView, PagesView, ProcessImage, ThreadView, VmaView,
    XstateView,
};
pub use reader::{Image, ParseOptions, RecordRef, RECORD_HEADER_LEN};
pub use records::Extension;
#[cfg(feature = "std")]
pub use writer::IoSink;
pub use writer::{Sink, WriteError, Writer};

/// Record flag bit 0: a reader that does not know the kind (or does not
/// support its extension) skips the record instead of refusing the image.
pub const RECORD_OPTIONAL: u32 = 1;
/// All record flag bits defined in version 1.
pub const RECORD_FLAGS_KNOWN: u32 = RECORD_OPTIONAL;

/// xxh3-64 of `bytes`: the checksum used everywhere in the format.
pub fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

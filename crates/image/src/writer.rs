//! The streaming writer.

use alloc::vec::Vec;

use xxhash_rust::xxh3::Xxh3;
use zerocopy::{Immutable, IntoBytes};

use crate::error::ImageError;
use crate::header::Header;
use crate::names::{data_off_field, kind_name};
use crate::reader::RECORD_HEADER_LEN;
use crate::records::{kind, EndRec, PageRun, PagesRec};
use crate::util::{aligned, pad_to, to_u64};
use crate::RECORD_FLAGS_KNOWN;

/// Where the writer puts bytes: a file, a pipe, a socket, a buffer.
pub trait Sink {
    /// The sink's error.
    type Error;
    /// Writes all of `buf` or fails.
    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error>;
}

/// Appends to the vector (fallible allocation).
impl Sink for Vec<u8> {
    type Error = alloc::collections::TryReserveError;
    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.try_reserve(buf.len())?;
        self.extend_from_slice(buf);
        Ok(())
    }
}

impl<S: Sink + ?Sized> Sink for &mut S {
    type Error = S::Error;
    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        (**self).write_all(buf)
    }
}

/// A [`Sink`] over any `std::io::Write`.
#[cfg(feature = "std")]
#[derive(Debug)]
pub struct IoSink<W: std::io::Write>(pub W);

#[cfg(feature = "std")]
impl<W: std::io::Write> Sink for IoSink<W> {
    type Error = std::io::Error;
    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        std::io::Write::write_all(&mut self.0, buf)
    }
}

/// Why writing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError<E> {
    /// The sink failed.
    #[error("write failed: {0}")]
    Sink(E),
    /// The header given to [`Writer::new`] is not a valid version 1 header.
    #[error("invalid header: {0}")]
    Header(ImageError),
    /// A data record's chunks did not add up to the promised length.
    #[error("{}: data length {actual} does not match the promised {expected}", kind_name(*.kind))]
    DataLength {
        /// Record kind.
        kind: u32,
        /// Bytes promised.
        expected: u64,
        /// Bytes given (when too many: at least this many).
        actual: u64,
    },
    /// The record cannot be written as asked.
    #[error("{}: {why}", kind_name(*.kind))]
    Invalid {
        /// Record kind.
        kind: u32,
        /// What is wrong.
        why: &'static str,
    },
    /// A length or offset overflowed.
    #[error("{}: length overflow", kind_name(*.kind))]
    Overflow {
        /// Record kind.
        kind: u32,
    },
    /// An earlier error left a record half written; the stream is unusable.
    #[error("writer unusable after an earlier error")]
    Poisoned,
}

const ZEROS: [u8; 512] = [0; 512];

/// Streaming image writer: front to back, no seeks.
///
/// Every method either writes a complete record or fails; after a failure in
/// the middle of a record the writer is poisoned and every later call returns
/// [`WriteError::Poisoned`].
pub struct Writer<S: Sink> {
    sink: S,
    offset: u64,
    page_size: u64,
    nr_records: u64,
    page_bytes: u64,
    poisoned: bool,
}

impl<S: Sink> Writer<S> {
    /// Validates `header`, sets its `header_sum` and writes it.
    pub fn new(sink: S, header: &Header) -> Result<Self, WriteError<S::Error>> {
        header.check_fields().map_err(WriteError::Header)?;
        let h = header.sealed();
        let mut w = Writer {
            sink,
            offset: 0,
            page_size: u64::from(h.page_size),
            nr_records: 0,
            page_bytes: 0,
            poisoned: false,
        };
        w.put(kind::END, h.as_bytes())?;
        Ok(w)
    }

    /// Stream bytes written so far (the offset of the next record).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Records written so far (not counting END).
    pub fn nr_records(&self) -> u64 {
        self.nr_records
    }

    /// Page data bytes written so far (PAGES data).
    pub fn page_bytes(&self) -> u64 {
        self.page_bytes
    }

    fn put(&mut self, k: u32, buf: &[u8]) -> Result<(), WriteError<S::Error>> {
        self.offset = self
            .offset
            .checked_add(to_u64(buf.len()))
            .ok_or(WriteError::Overflow { kind: k })?;
        self.sink.write_all(buf).map_err(WriteError::Sink)
    }

    fn put_hashed(&mut self, k: u32, h: &mut Xxh3, buf: &[u8]) -> Result<(), WriteError<S::Error>> {
        h.update(buf);
        self.put(k, buf)
    }

    fn put_zeros(&mut self, k: u32, h: &mut Xxh3, mut n: u64) -> Result<(), WriteError<S::Error>> {
        while n > 0 {
            let c = n.min(to_u64(ZEROS.len()));
            let chunk = ZEROS.get(..usize::try_from(c).unwrap_or(0)).unwrap_or(&[]);
            self.put_hashed(k, h, chunk)?;
            n = n.saturating_sub(c);
        }
        Ok(())
    }

    fn check_usable(&self) -> Result<(), WriteError<S::Error>> {
        if self.poisoned {
            Err(WriteError::Poisoned)
        } else {
            Ok(())
        }
    }

    fn begin(&mut self, k: u32, flags: u32, len: u64) -> Result<Xxh3, WriteError<S::Error>> {
        // The whole record must fit in u64 offsets.
        let _end = self
            .offset
            .checked_add(RECORD_HEADER_LEN)
            .and_then(|x| x.checked_add(len))
            .and_then(|x| x.checked_add(16))
            .ok_or(WriteError::Overflow { kind: k })?;
        let mut head = [0u8; 24];
        for (d, b) in head.iter_mut().zip(
            k.to_le_bytes()
                .into_iter()
                .chain(flags.to_le_bytes())
                .chain(len.to_le_bytes()),
        ) {
            *d = b;
        }
        let sum = crate::checksum(head.get(..16).unwrap_or(&[]));
        for (d, b) in head.iter_mut().skip(16).zip(sum.to_le_bytes()) {
            *d = b;
        }
        self.poisoned = true;
        self.put(k, &head)?;
        Ok(Xxh3::new())
    }

    fn end(&mut self, k: u32, h: Xxh3) -> Result<(), WriteError<S::Error>> {
        let pad = pad_to(self.offset, 8);
        let zeros = ZEROS
            .get(..usize::try_from(pad).unwrap_or(0))
            .unwrap_or(&[]);
        self.put(k, zeros)?;
        self.put(k, &h.digest().to_le_bytes())?;
        self.nr_records = self.nr_records.saturating_add(1);
        self.poisoned = false;
        Ok(())
    }

    fn raw(&mut self, k: u32, flags: u32, parts: &[&[u8]]) -> Result<(), WriteError<S::Error>> {
        let mut len: u64 = 0;
        for p in parts {
            len = len
                .checked_add(to_u64(p.len()))
                .ok_or(WriteError::Overflow { kind: k })?;
        }
        let mut h = self.begin(k, flags, len)?;
        for p in parts {
            self.put_hashed(k, &mut h, p)?;
        }
        self.end(k, h)
    }

    /// A record = fixed struct followed by byte tails (paths, arrays as bytes).
    /// Record flags 0. Not for END (see [`Writer::finish`]) nor for the data
    /// kinds PAGES, FILE_DATA, SYSV_SHM (see [`Writer::pages`], [`Writer::data_record`]).
    pub fn record<T: IntoBytes + Immutable + ?Sized>(
        &mut self,
        kind: u32,
        fixed: &T,
        tails: &[&[u8]],
    ) -> Result<(), WriteError<S::Error>> {
        self.record_flags(kind, 0, fixed, tails)
    }

    /// [`Writer::record`] with record flags (e.g. [`crate::RECORD_OPTIONAL`]).
    pub fn record_flags<T: IntoBytes + Immutable + ?Sized>(
        &mut self,
        k: u32,
        flags: u32,
        fixed: &T,
        tails: &[&[u8]],
    ) -> Result<(), WriteError<S::Error>> {
        self.check_usable()?;
        if k == kind::END {
            return Err(WriteError::Invalid {
                kind: k,
                why: "END is written by finish()",
            });
        }
        if data_off_field(k).is_some() {
            return Err(WriteError::Invalid {
                kind: k,
                why: "data records are written by pages() or data_record()",
            });
        }
        if flags & !RECORD_FLAGS_KNOWN != 0 {
            return Err(WriteError::Invalid {
                kind: k,
                why: "unknown record flags",
            });
        }
        let mut h = self.begin(k, flags, {
            let mut len = to_u64(fixed.as_bytes().len());
            for t in tails {
                len = len
                    .checked_add(to_u64(t.len()))
                    .ok_or(WriteError::Overflow { kind: k })?;
            }
            len
        })?;
        self.put_hashed(k, &mut h, fixed.as_bytes())?;
        for t in tails {
            self.put_hashed(k, &mut h, t)?;
        }
        self.end(k, h)
    }

    /// The `data_off` a data record started now (at [`Writer::offset`]) gets
    /// when its fixed struct and tail take `prefix_len` bytes: the smallest
    /// payload offset >= `prefix_len` whose stream offset is page aligned.
    pub fn data_off_for(&self, prefix_len: u64) -> u64 {
        let payload = self.offset.saturating_add(RECORD_HEADER_LEN);
        let at = payload.saturating_add(prefix_len);
        prefix_len.saturating_add(pad_to(at, self.page_size))
    }

    /// PAGES: writes [`PagesRec`] (`data_off`, `nr_runs`, `nr_pages` filled
    /// in by the writer), the runs, padding, then streams exactly
    /// `nr_pages * page_size` bytes given as chunks of any size.
    pub fn pages<'d>(
        &mut self,
        vma_start: u64,
        runs: &[PageRun],
        data: impl IntoIterator<Item = &'d [u8]>,
    ) -> Result<(), WriteError<S::Error>> {
        let k = kind::PAGES;
        let mut nr_pages: u64 = 0;
        for r in runs {
            nr_pages = nr_pages
                .checked_add(r.nr_pages)
                .ok_or(WriteError::Overflow { kind: k })?;
        }
        let data_len = nr_pages
            .checked_mul(self.page_size)
            .ok_or(WriteError::Overflow { kind: k })?;
        let nr_runs = u32::try_from(runs.len()).map_err(|_| WriteError::Overflow { kind: k })?;
        let rec = PagesRec {
            vma_start,
            nr_runs,
            _pad0: 0,
            nr_pages,
            data_off: 0,
        };
        self.data_record(k, &rec, runs.as_bytes(), data_len, data)
    }

    /// A data record (FILE_DATA, SYSV_SHM, PAGES, or a future kind): `fixed`,
    /// `tail`, zero padding to the page-aligned `data_off`, then exactly
    /// `data_len` bytes streamed from `data`. For the kinds this crate knows,
    /// the writer sets `fixed`'s `data_off` itself (and checks its `size`
    /// against `data_len`); for other kinds the caller sets it from
    /// [`Writer::data_off_for`].
    pub fn data_record<'d, T: IntoBytes + Immutable + ?Sized>(
        &mut self,
        k: u32,
        fixed: &T,
        tail: &[u8],
        data_len: u64,
        data: impl IntoIterator<Item = &'d [u8]>,
    ) -> Result<(), WriteError<S::Error>> {
        self.check_usable()?;
        if k == kind::END {
            return Err(WriteError::Invalid {
                kind: k,
                why: "END is written by finish()",
            });
        }
        let fb = fixed.as_bytes();
        let mut fixed_buf: [u8; 64] = [0; 64];
        let fixed_bytes: &[u8] = if let Some(at) = data_off_field(k) {
            let dst = fixed_buf.get_mut(..fb.len()).ok_or(WriteError::Invalid {
                kind: k,
                why: "fixed struct too large",
            })?;
            dst.copy_from_slice(fb);
            let prefix = to_u64(fb.len())
                .checked_add(to_u64(tail.len()))
                .ok_or(WriteError::Overflow { kind: k })?;
            let d = self.data_off_for(prefix);
            let end = at.checked_add(8).ok_or(WriteError::Overflow { kind: k })?;
            dst.get_mut(at..end)
                .ok_or(WriteError::Invalid {
                    kind: k,
                    why: "fixed struct too small",
                })?
                .copy_from_slice(&d.to_le_bytes());
            let size_at = match k {
                kind::FILE_DATA => Some(core::mem::offset_of!(crate::records::FileDataRec, size)),
                kind::SYSV_SHM => Some(core::mem::offset_of!(crate::records::SysvShmRec, size)),
                _ => None,
            };
            if let Some(s) = size_at {
                let field = dst
                    .get(s..s.saturating_add(8))
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes);
                if field != Some(data_len) {
                    return Err(WriteError::Invalid {
                        kind: k,
                        why: "size field differs from data_len",
                    });
                }
            }
            if k == kind::PAGES && !aligned(data_len, self.page_size) {
                return Err(WriteError::Invalid {
                    kind: k,
                    why: "page data not whole pages",
                });
            }
            dst
        } else {
            fb
        };
        let prefix = to_u64(fixed_bytes.len())
            .checked_add(to_u64(tail.len()))
            .ok_or(WriteError::Overflow { kind: k })?;
        let data_off = self.data_off_for(prefix);
        let len = data_off
            .checked_add(data_len)
            .ok_or(WriteError::Overflow { kind: k })?;
        let mut h = self.begin(k, 0, len)?;
        self.put_hashed(k, &mut h, fixed_bytes)?;
        self.put_hashed(k, &mut h, tail)?;
        self.put_zeros(k, &mut h, data_off.saturating_sub(prefix))?;
        let mut got: u64 = 0;
        for chunk in data {
            let n = to_u64(chunk.len());
            let total = got.checked_add(n).ok_or(WriteError::Overflow { kind: k })?;
            if total > data_len {
                return Err(WriteError::DataLength {
                    kind: k,
                    expected: data_len,
                    actual: total,
                });
            }
            self.put_hashed(k, &mut h, chunk)?;
            got = total;
        }
        if got != data_len {
            return Err(WriteError::DataLength {
                kind: k,
                expected: data_len,
                actual: got,
            });
        }
        self.end(k, h)?;
        if k == kind::PAGES {
            // Cannot overflow: every byte counted here was written at a u64 offset.
            self.page_bytes = self.page_bytes.saturating_add(data_len);
        }
        Ok(())
    }

    /// Writes END and returns the sink.
    pub fn finish(mut self) -> Result<S, WriteError<S::Error>> {
        self.check_usable()?;
        let end = EndRec {
            nr_records: self.nr_records,
            page_bytes: self.page_bytes,
        };
        self.raw(kind::END, 0, &[end.as_bytes()])?;
        Ok(self.sink)
    }
}

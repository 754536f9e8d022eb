//! Checked helpers.

use alloc::vec::Vec;

use crate::error::ImageError;

/// Rounds `x` up to a multiple of 8, None on overflow.
pub fn align8(x: u64) -> Option<u64> {
    Some(x.checked_add(7)? & !7)
}

/// Bytes of padding after `x` up to the next multiple of `align` (a power of two).
pub fn pad_to(x: u64, align: u64) -> u64 {
    let mask = align.wrapping_sub(1);
    (align.wrapping_sub(x & mask)) & mask
}

/// Pushes with fallible allocation.
pub fn push<T>(v: &mut Vec<T>, x: T, offset: u64) -> Result<(), ImageError> {
    v.try_reserve(1)
        .map_err(|_| ImageError::OutOfMemory { offset })?;
    v.push(x);
    Ok(())
}

/// Index of the first nonzero byte.
pub fn first_nonzero(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c != 0)
}

/// u64 → usize, None if it does not fit.
pub fn to_usize(x: u64) -> Option<usize> {
    usize::try_from(x).ok()
}

/// usize → u64 (lossless on all supported targets; saturates otherwise).
pub fn to_u64(x: usize) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

/// Whether `x` is a multiple of `align` (false for align 0).
pub fn aligned(x: u64, align: u64) -> bool {
    x.checked_rem(align) == Some(0)
}

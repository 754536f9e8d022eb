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
    put(v, x).map_err(|_| ImageError::OutOfMemory { offset })
}

/// Appends `x` to `v` if `v` has spare capacity, else gives `x` back.
///
/// Used instead of `Vec::push` after a fallible reservation: `push`'s growth
/// path ends in a capacity-overflow panic, and linking it into the kernel
/// module would break the build's proof that no panic path is reachable.
pub fn put<T>(v: &mut Vec<T>, x: T) -> Result<(), T> {
    let len = v.len();
    let Some(new_len) = len.checked_add(1) else {
        return Err(x);
    };
    match v.spare_capacity_mut().first_mut() {
        Some(slot) => {
            slot.write(x);
            // SAFETY: the element at index `len` was initialised just above, and
            // it lies within the capacity (it was a spare slot), so the first
            // `new_len` elements are initialised and `new_len <= capacity`.
            unsafe { v.set_len(new_len) };
            Ok(())
        }
        None => Err(x),
    }
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

/// Sorts `v` by `key` in place: a heapsort, O(n log n), with no recursion and
/// no allocation. Used instead of `sort_unstable_by_key`, which links a panic
/// for an inconsistent `Ord` (unreachable with integer keys, but the kernel
/// module's build proves that no panic path is linked at all) and recurses,
/// which costs kernel stack.
pub fn sort_by_key<T, K: Ord>(v: &mut [T], key: impl Fn(&T) -> K) {
    let n = v.len();
    let mut i = n / 2;
    while let Some(j) = i.checked_sub(1) {
        i = j;
        sift_down(v, i, n, &key);
    }
    let mut end = n;
    while let Some(last) = end.checked_sub(1) {
        if last == 0 {
            break;
        }
        end = last;
        swap(v, 0, end);
        sift_down(v, 0, end, &key);
    }
}

/// Moves `v[root]` down the max-heap `v[..end]` to its place.
fn sift_down<T, K: Ord>(v: &mut [T], mut root: usize, end: usize, key: &impl Fn(&T) -> K) {
    loop {
        let Some(mut child) = root.checked_mul(2).and_then(|c| c.checked_add(1)) else {
            return;
        };
        if child >= end {
            return;
        }
        if let Some(right) = child.checked_add(1) {
            if right < end && less(v, child, right, key) {
                child = right;
            }
        }
        if !less(v, root, child, key) {
            return;
        }
        swap(v, root, child);
        root = child;
    }
}

/// `key(v[a]) < key(v[b])`; false when either index is out of range.
fn less<T, K: Ord>(v: &[T], a: usize, b: usize, key: &impl Fn(&T) -> K) -> bool {
    match (v.get(a), v.get(b)) {
        (Some(x), Some(y)) => key(x) < key(y),
        _ => false,
    }
}

/// Swaps `v[a]` and `v[b]` when both are in range (the guard lets the
/// compiler drop `slice::swap`'s bounds-check panics).
fn swap<T>(v: &mut [T], a: usize, b: usize) {
    if a < v.len() && b < v.len() {
        v.swap(a, b);
    }
}

#[cfg(test)]
mod sort_tests {
    use super::sort_by_key;
    use alloc::vec::Vec;

    #[test]
    fn heapsort_matches_the_standard_sort() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for n in 0..200usize {
            let mut v: Vec<(u64, usize)> = (0..n)
                .map(|i| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % 17, i)
                })
                .collect();
            let mut want = v.clone();
            want.sort_by_key(|e| (e.0, e.1));
            sort_by_key(&mut v, |e| (e.0, e.1));
            assert_eq!(v, want, "n = {n}");
        }
    }
}

//! The XSAVE area as images, ptrace and signal frames hold it.
//!
//! ```text
//! offset 0    FXSAVE legacy region (512): x87 0..160, SSE (MXCSR at 24, XMM at 160..416)
//!        464    software bytes (48): ptrace puts the kernel's user XCR0 in the first 8;
//!               a signal frame puts struct _fpx_sw_bytes there: magic1 u32,
//!               extended_size u32, xfeatures u64, xstate_size u32, padding
//! offset 512  XSAVE header (64): XSTATE_BV u64, XCOMP_BV u64 (0: standard format), 0...
//! offset 576  extended components at CPU-specific offsets (CPUID.(0xD,i):EBX),
//!             e.g. AVX at 576 on every CPU, PKRU at 2688 on Intel and 2432 on AMD
//! ```
//! Images keep every area in the standard (non-compacted) format of the CPU
//! they were taken on, whose offsets the CPU record carries; [`relayout`]
//! moves an area to another CPU's offsets. A CPU without XSAVE gives an
//! FXSAVE image (NT_PRFPREG); [`from_fxsave`] turns it into a 576-byte area
//! with XSTATE_BV = x87|SSE, so one record kind serves every CPU.
//!
//! A signal frame's area must claim only what the kernel lets this process
//! restore: `xstate_size` at most the process's user size (which excludes AMX
//! tiles unless it asked for them with ARCH_REQ_XCOMP_PERM), or the kernel
//! falls back to FXRSTOR and silently drops AVX and above. So frames cover the
//! components in use ([`Layout::size_for`] of XSTATE_BV | x87 | SSE), never the
//! CPU's maximum.

use crate::records::CpuRec;

/// The FXSAVE region.
pub const LEGACY_SIZE: usize = 512;
/// Legacy region + XSAVE header: the smallest XSAVE area.
pub const MIN_SIZE: usize = 576;
/// Offset of the software-reserved bytes.
pub const SW_BYTES_OFF: usize = 464;
/// Offset of XSTATE_BV.
pub const XSTATE_BV_OFF: usize = 512;
/// Offset of XCOMP_BV.
pub const XCOMP_BV_OFF: usize = 520;
/// `_fpx_sw_bytes.magic1`.
pub const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
/// The word after `xstate_size` bytes of a signal frame's area.
pub const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
/// x87 | SSE: what FXSAVE holds.
pub const FPSSE: u64 = 3;
/// Components described by a [`Layout`] (bits 0..32 of XCR0).
pub const COMPONENTS: usize = 32;
/// [`COMPONENTS`] as a bit number bound.
pub const COMPONENT_BITS: u32 = 32;
/// Largest area accepted anywhere (AMX makes it 11008 bytes today).
pub const MAX_SIZE: usize = 64 * 1024;

/// Why an XSAVE area could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XsaveError {
    /// The area or the buffer is shorter than its components need.
    #[error("XSAVE area of {have} bytes, {need} needed")]
    TooShort {
        /// Bytes needed.
        need: usize,
        /// Bytes there.
        have: usize,
    },
    /// A component the area holds has no place in the layout.
    #[error("XSAVE component {bit} is unknown to the CPU layout")]
    UnknownComponent {
        /// The component.
        bit: u32,
    },
    /// A component has different sizes on the two CPUs.
    #[error("XSAVE component {bit} is {from} bytes on the image's CPU and {to} here")]
    SizeMismatch {
        /// The component.
        bit: u32,
        /// Size on the image's CPU.
        from: u32,
        /// Size here.
        to: u32,
    },
    /// The area is in the compacted format (XCOMP_BV bit 63).
    #[error("XSAVE area is in the compacted format")]
    Compacted,
}

/// Where each XSAVE component sits in a CPU's standard format (offset and
/// size by component bit; 0/0 for a component the CPU lacks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Offset of component i.
    pub offset: [u32; COMPONENTS],
    /// Size of component i.
    pub size: [u32; COMPONENTS],
}

impl Layout {
    /// Only the legacy components (x87 at 0, SSE at 160).
    pub fn legacy() -> Layout {
        let mut l = Layout {
            offset: [0; COMPONENTS],
            size: [0; COMPONENTS],
        };
        l.size[0] = 160;
        l.offset[1] = 160;
        l.size[1] = 256;
        l
    }

    /// The layout a CPU record describes.
    pub fn of(c: &CpuRec) -> Layout {
        Layout {
            offset: c.xsave_offset,
            size: c.xsave_size,
        }
    }

    /// This CPU's layout.
    pub fn this() -> Layout {
        Layout::of(&super::cpu::this_cpu())
    }

    /// (offset, size) of component `bit`, None if unknown.
    pub fn component(&self, bit: u32) -> Option<(usize, usize)> {
        let i = usize::try_from(bit).ok()?;
        let off = usize::try_from(*self.offset.get(i)?).ok()?;
        let size = usize::try_from(*self.size.get(i)?).ok()?;
        if size == 0 {
            return None;
        }
        Some((off, size))
    }

    /// Bytes of a standard-format area holding every component of `mask`
    /// (at least [`MIN_SIZE`]).
    pub fn size_for(&self, mask: u64) -> Result<usize, XsaveError> {
        let mut end = MIN_SIZE;
        for bit in 2..COMPONENT_BITS {
            if mask & (1u64 << bit) == 0 {
                continue;
            }
            let (off, size) = self.component(bit).ok_or(XsaveError::UnknownComponent { bit })?;
            let e = off.checked_add(size).ok_or(XsaveError::UnknownComponent { bit })?;
            end = end.max(e);
        }
        Ok(end)
    }
}

fn word64(area: &[u8], at: usize) -> Option<u64> {
    let b = area.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(<[u8; 8]>::try_from(b).ok()?))
}

fn put64(b: &mut [u8], at: usize, v: u64) -> Option<()> {
    b.get_mut(at..at.checked_add(8)?)?.copy_from_slice(&v.to_le_bytes());
    Some(())
}

fn put32(b: &mut [u8], at: usize, v: u32) -> Option<()> {
    b.get_mut(at..at.checked_add(4)?)?.copy_from_slice(&v.to_le_bytes());
    Some(())
}

/// XSTATE_BV: the components whose state is not the initial one.
pub fn xstate_bv(area: &[u8]) -> Option<u64> {
    word64(area, XSTATE_BV_OFF)
}

/// XCOMP_BV (0 in the standard format).
pub fn xcomp_bv(area: &[u8]) -> Option<u64> {
    word64(area, XCOMP_BV_OFF)
}

/// The XCR0 the kernel writes into an NT_X86_XSTATE area's software bytes
/// (or, should an area carry signal-frame software bytes instead, their
/// `xfeatures`).
pub fn ptrace_xcr0(area: &[u8]) -> Option<u64> {
    let w = word64(area, SW_BYTES_OFF)?;
    if w & 0xffff_ffff == u64::from(FP_XSTATE_MAGIC1) {
        return word64(area, SW_BYTES_OFF.checked_add(8)?).filter(|&x| x != 0);
    }
    Some(w).filter(|&x| x != 0)
}

/// An FXSAVE image (NT_PRFPREG, 512 bytes) as a standard XSAVE area holding
/// x87 and SSE (and [`ptrace_xcr0`] = x87|SSE), None if `fx` is short.
pub fn from_fxsave(fx: &[u8]) -> Option<[u8; MIN_SIZE]> {
    let mut a = [0u8; MIN_SIZE];
    a.get_mut(..LEGACY_SIZE)?.copy_from_slice(fx.get(..LEGACY_SIZE)?);
    a.get_mut(SW_BYTES_OFF..LEGACY_SIZE)?.fill(0);
    put64(&mut a, SW_BYTES_OFF, FPSSE)?;
    put64(&mut a, XSTATE_BV_OFF, FPSSE)?;
    Some(a)
}

/// Copies the components `features` of `src` (laid out as `from`) into `dst`
/// laid out as `to`: the legacy region, a fresh header (XSTATE_BV = the
/// area's masked to `features`, XCOMP_BV 0) and each extended component
/// present. Returns the bytes of `dst` used (`to.size_for(features)`); the
/// rest of those bytes is zero. The software bytes are cleared.
pub fn relayout(
    src: &[u8],
    from: &Layout,
    to: &Layout,
    features: u64,
    dst: &mut [u8],
) -> Result<usize, XsaveError> {
    let short = |need: usize, have: usize| XsaveError::TooShort { need, have };
    let bv = xstate_bv(src).ok_or(short(MIN_SIZE, src.len()))?;
    if xcomp_bv(src).is_some_and(|x| x & (1 << 63) != 0) {
        return Err(XsaveError::Compacted);
    }
    let bv = bv & features;
    let need = to.size_for(bv)?;
    let have = dst.len();
    let out = dst.get_mut(..need).ok_or(short(need, have))?;
    out.fill(0);
    let legacy = src.get(..LEGACY_SIZE).ok_or(short(LEGACY_SIZE, src.len()))?;
    out.get_mut(..LEGACY_SIZE).ok_or(short(LEGACY_SIZE, need))?.copy_from_slice(legacy);
    out.get_mut(SW_BYTES_OFF..LEGACY_SIZE).ok_or(short(LEGACY_SIZE, need))?.fill(0);
    put64(out, XSTATE_BV_OFF, bv).ok_or(short(MIN_SIZE, need))?;
    for bit in 2..COMPONENT_BITS {
        if bv & (1u64 << bit) == 0 {
            continue;
        }
        let unknown = XsaveError::UnknownComponent { bit };
        let (so, ss) = from.component(bit).ok_or(unknown)?;
        let (d_off, ds) = to.component(bit).ok_or(unknown)?;
        if ss != ds {
            return Err(XsaveError::SizeMismatch {
                bit,
                from: u32::try_from(ss).unwrap_or(u32::MAX),
                to: u32::try_from(ds).unwrap_or(u32::MAX),
            });
        }
        let s_end = so.checked_add(ss).ok_or(unknown)?;
        let d_end = d_off.checked_add(ds).ok_or(unknown)?;
        let s = src.get(so..s_end).ok_or(short(s_end, src.len()))?;
        out.get_mut(d_off..d_end).ok_or(short(d_end, need))?.copy_from_slice(s);
    }
    Ok(need)
}

/// Turns the first `size` bytes of `fp` (a standard-format area of this CPU)
/// into a signal frame's fpstate: the `_fpx_sw_bytes` (magic1, extended
/// size, `features`, `size`), XSTATE_BV masked to `features`, XCOMP_BV and
/// the reserved header bytes cleared, and FP_XSTATE_MAGIC2 at `size`.
/// `fp` must hold `size + 4` bytes. Without XSAVE the kernel reads only the
/// first 512 bytes (FXRSTOR); the rest is then ignored.
pub fn sigframe_fpstate(fp: &mut [u8], size: usize, features: u64) -> Result<(), XsaveError> {
    let need = size.checked_add(4).ok_or(XsaveError::TooShort { need: usize::MAX, have: fp.len() })?;
    let short = XsaveError::TooShort { need, have: fp.len() };
    if size < MIN_SIZE || fp.len() < need {
        return Err(short);
    }
    let ext = u32::try_from(need).map_err(|_| short)?;
    let sz = u32::try_from(size).map_err(|_| short)?;
    fp.get_mut(SW_BYTES_OFF..LEGACY_SIZE).ok_or(short)?.fill(0);
    put32(fp, SW_BYTES_OFF, FP_XSTATE_MAGIC1).ok_or(short)?;
    put32(fp, SW_BYTES_OFF + 4, ext).ok_or(short)?;
    put64(fp, SW_BYTES_OFF + 8, features).ok_or(short)?;
    put32(fp, SW_BYTES_OFF + 16, sz).ok_or(short)?;
    let bv = xstate_bv(fp).ok_or(short)? & features;
    put64(fp, XSTATE_BV_OFF, bv).ok_or(short)?;
    fp.get_mut(XCOMP_BV_OFF..MIN_SIZE).ok_or(short)?.fill(0);
    put32(fp, size, FP_XSTATE_MAGIC2).ok_or(short)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intel() -> Layout {
        let mut l = Layout::legacy();
        for (bit, off, size) in [(2, 576, 256), (3, 960, 64), (4, 1024, 64), (5, 1088, 64), (6, 1152, 512), (7, 1664, 1024), (9, 2688, 8), (17, 2752, 64), (18, 2816, 8192)] {
            l.offset[bit] = off;
            l.size[bit] = size;
        }
        l
    }
    fn amd() -> Layout {
        let mut l = Layout::legacy();
        for (bit, off, size) in [(2, 576, 256), (9, 2432, 8)] {
            l.offset[bit] = off;
            l.size[bit] = size;
        }
        l
    }

    fn area(l: &Layout, bv: u64) -> alloc::vec::Vec<u8> {
        let n = l.size_for(bv).unwrap();
        let mut a = alloc::vec![0u8; n];
        for (i, b) in a.iter_mut().enumerate().take(LEGACY_SIZE) {
            *b = i as u8;
        }
        put64(&mut a, XSTATE_BV_OFF, bv).unwrap();
        for bit in 2..COMPONENT_BITS {
            if let Some((o, s)) = l.component(bit) {
                if bv & (1 << bit) != 0 {
                    a[o..o + s].fill(bit as u8 + 0x40);
                }
            }
        }
        a
    }

    #[test]
    fn sizes_cover_only_the_components_asked() {
        let l = intel();
        assert_eq!(l.size_for(FPSSE).unwrap(), 576);
        assert_eq!(l.size_for(0x7).unwrap(), 832);
        assert_eq!(l.size_for(0x2e7).unwrap(), 2696);
        // AMX in XCR0 but not in use: a frame must not claim 11008 bytes.
        assert_eq!(l.size_for(0x602e7).unwrap(), 11008);
        assert_eq!(l.size_for(0x207).unwrap(), 2696);
        assert_eq!(amd().size_for(0x207).unwrap(), 2440);
        assert_eq!(amd().size_for(1 << 5), Err(XsaveError::UnknownComponent { bit: 5 }));
    }

    #[test]
    fn relayout_moves_pkru_between_vendors() {
        let src = area(&intel(), 0x207);
        let mut dst = alloc::vec![0xffu8; 4096];
        let n = relayout(&src, &intel(), &amd(), 0x207, &mut dst).unwrap();
        assert_eq!(n, 2440);
        assert_eq!(&dst[..SW_BYTES_OFF], &src[..SW_BYTES_OFF]);
        assert_eq!(xstate_bv(&dst), Some(0x207));
        assert_eq!(xcomp_bv(&dst), Some(0));
        assert!(dst[576..832].iter().all(|&b| b == 0x42));
        assert!(dst[2432..2440].iter().all(|&b| b == 0x49));
        // And back.
        let mut back = alloc::vec![0u8; 4096];
        let n = relayout(&dst[..2440], &amd(), &intel(), 0x207, &mut back).unwrap();
        assert_eq!(n, 2696);
        assert_eq!(&back[..SW_BYTES_OFF], &src[..SW_BYTES_OFF]);
        assert_eq!(&back[576..n], &src[576..n]);
    }

    #[test]
    fn relayout_drops_components_not_asked_and_refuses_unknown_ones() {
        let src = area(&intel(), 0xe7);
        let mut dst = alloc::vec![0u8; 4096];
        // Masked to what AMD has: AVX-512 dropped.
        let n = relayout(&src, &intel(), &amd(), 0x207, &mut dst).unwrap();
        assert_eq!(n, 832);
        assert_eq!(xstate_bv(&dst), Some(0x7));
        assert_eq!(relayout(&src, &intel(), &amd(), !0, &mut dst), Err(XsaveError::UnknownComponent { bit: 5 }));
        let mut small = [0u8; 600];
        assert_eq!(relayout(&src, &intel(), &intel(), 0x7, &mut small), Err(XsaveError::TooShort { need: 832, have: 600 }));
        assert!(matches!(relayout(&src[..700], &intel(), &intel(), 0x7, &mut dst), Err(XsaveError::TooShort { .. })));
        let mut c = src.clone();
        put64(&mut c, XCOMP_BV_OFF, 1 << 63).unwrap();
        assert_eq!(relayout(&c, &intel(), &intel(), 0x7, &mut dst), Err(XsaveError::Compacted));
        let mut odd = intel();
        odd.size[2] = 128;
        assert_eq!(relayout(&src, &intel(), &odd, 0x7, &mut dst), Err(XsaveError::SizeMismatch { bit: 2, from: 256, to: 128 }));
    }

    #[test]
    fn fxsave_becomes_an_x87_sse_area() {
        let fx: alloc::vec::Vec<u8> = (0..512).map(|i| i as u8).collect();
        let a = from_fxsave(&fx).unwrap();
        assert_eq!(&a[..SW_BYTES_OFF], &fx[..SW_BYTES_OFF]);
        assert_eq!(xstate_bv(&a), Some(FPSSE));
        assert_eq!(ptrace_xcr0(&a), Some(FPSSE));
        assert_eq!(xcomp_bv(&a), Some(0));
        assert!(from_fxsave(&fx[..511]).is_none());
    }

    #[test]
    fn sigframe_bytes() {
        let mut fp = area(&intel(), 0x602e7);
        fp.resize(11008 + 4, 0);
        put64(&mut fp, SW_BYTES_OFF, 0x602e7).unwrap();
        sigframe_fpstate(&mut fp, 2696, 0x2e7).unwrap();
        assert_eq!(u32::from_le_bytes(fp[464..468].try_into().unwrap()), FP_XSTATE_MAGIC1);
        assert_eq!(u32::from_le_bytes(fp[468..472].try_into().unwrap()), 2700);
        assert_eq!(word64(&fp, 472), Some(0x2e7));
        assert_eq!(u32::from_le_bytes(fp[480..484].try_into().unwrap()), 2696);
        assert_eq!(xstate_bv(&fp), Some(0x2e7));
        assert_eq!(u32::from_le_bytes(fp[2696..2700].try_into().unwrap()), FP_XSTATE_MAGIC2);
        assert_eq!(sigframe_fpstate(&mut fp[..2699], 2696, 0x2e7), Err(XsaveError::TooShort { need: 2700, have: 2699 }));
        assert!(sigframe_fpstate(&mut fp, 512, 3).is_err());
    }
}

//! What this CPU's XSAVE supports: XCR0 (xgetbv) and component offsets (cpuid 0xD).

/// Names of XSAVE feature bits.
pub fn feature_name(bit: u32) -> &'static str {
    match bit {
        0 => "x87",
        1 => "SSE",
        2 => "AVX",
        3 => "MPX BNDREGS",
        4 => "MPX BNDCSR",
        5 => "AVX-512 opmask",
        6 => "AVX-512 ZMM_Hi256",
        7 => "AVX-512 Hi16_ZMM",
        8 => "PT",
        9 => "PKRU",
        10 => "PASID",
        11 => "CET_U",
        12 => "CET_S",
        13 => "HDC",
        14 => "UINTR",
        15 => "LBR",
        16 => "HWP",
        17 => "AMX TILECFG",
        18 => "AMX TILEDATA",
        19 => "APX",
        _ => "unknown",
    }
}

/// Human list of the features in `mask`, e.g. "AVX-512 opmask (bit 5), PKRU (bit 9)".
pub fn feature_list(mask: u64) -> String {
    let mut v = Vec::new();
    for b in 0..64u32 {
        if mask & (1u64 << b) != 0 {
            v.push(format!("{} (bit {b})", feature_name(b)));
        }
    }
    v.join(", ")
}

fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    // SAFETY: cpuid is available on every x86_64 CPU and has no side effects.
    let r = std::arch::x86_64::__cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// XCR0 of this CPU (0 when the OS has not enabled XSAVE).
pub fn xcr0() -> u64 {
    let (_, _, ecx, _) = cpuid(1, 0);
    // OSXSAVE (CPUID.1:ECX bit 27): xgetbv is usable.
    if ecx & (1 << 27) == 0 {
        return 0;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv with ecx = 0 reads XCR0; OSXSAVE was checked above.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// (offset, size) of XSAVE component `bit` in the standard (non-compacted)
/// format of this CPU. Legacy components 0 and 1 live in the first 512 bytes.
pub fn component(bit: u32) -> (u32, u32) {
    match bit {
        0 => (0, 160),
        1 => (160, 256),
        _ => {
            let (eax, ebx, _, _) = cpuid(0xd, bit);
            (ebx, eax)
        }
    }
}

/// Bytes of the XSAVE area (standard format) needed to hold every component in `mask`.
pub fn area_size_for(mask: u64) -> u32 {
    let mut end = 512 + 64;
    for b in 2..64u32 {
        if mask & (1u64 << b) != 0 {
            let (off, size) = component(b);
            end = end.max(off + size);
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xcr0_has_x87_and_sse() {
        let x = xcr0();
        assert_eq!(x & 3, 3, "xcr0 = {x:#x}");
        assert!(area_size_for(x) >= 576);
        // AVX, when present, sits right after the header.
        if x & 4 != 0 {
            assert_eq!(component(2), (576, 256));
        }
    }

    #[test]
    fn names() {
        assert_eq!(feature_list(0x220), "AVX-512 opmask (bit 5), PKRU (bit 9)");
    }
}

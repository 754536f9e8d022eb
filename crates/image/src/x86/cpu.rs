//! What a CPU offers user code, read with CPUID, and whether an image taken on
//! one CPU can run on another.
//!
//! A restarted program keeps the choices it made at start-up: glibc and most
//! JITs pick code paths (AVX2, AVX-512, RTM, ERMS...) once, from CPUID. So an
//! image may only restart on a CPU that has every instruction-set feature the
//! image's CPU had ([`CpuCompat`]); an image from a CPU with fewer features
//! restarts anywhere with more. The words compared are the CPUID leaves that
//! name user-visible instructions ([`word`]); bits the OS or the hypervisor
//! controls (OSXSAVE, hypervisor, x2APIC, ...) are not in [`FEATURES`] and do
//! not count.

use core::fmt;

use crate::records::CpuRec;

/// Indexes of [`CpuRec::features`]: which CPUID output each word holds.
pub mod word {
    /// CPUID.1:ECX.
    pub const L1_ECX: usize = 0;
    /// CPUID.1:EDX.
    pub const L1_EDX: usize = 1;
    /// CPUID.(7,0):EBX.
    pub const L7_EBX: usize = 2;
    /// CPUID.(7,0):ECX.
    pub const L7_ECX: usize = 3;
    /// CPUID.(7,0):EDX.
    pub const L7_EDX: usize = 4;
    /// CPUID.(7,1):EAX.
    pub const L7_1_EAX: usize = 5;
    /// CPUID.(0xD,1):EAX.
    pub const LD_1_EAX: usize = 6;
    /// CPUID.0x80000001:ECX.
    pub const E1_ECX: usize = 7;
    /// CPUID.0x80000001:EDX.
    pub const E1_EDX: usize = 8;
    /// CPUID.(7,1):EDX.
    pub const L7_1_EDX: usize = 9;
    /// Number of words in a [`crate::records::CpuRec`] (10 and 11 are reserved, 0).
    pub const COUNT: usize = 12;
}

/// The instruction-set features compared between an image's CPU and this one:
/// (name as in /proc/cpuinfo, [`word`] index, bit).
pub const FEATURES: &[(&str, usize, u32)] = &[
    ("sse3", word::L1_ECX, 0),
    ("pclmulqdq", word::L1_ECX, 1),
    ("ssse3", word::L1_ECX, 9),
    ("fma", word::L1_ECX, 12),
    ("cx16", word::L1_ECX, 13),
    ("sse4_1", word::L1_ECX, 19),
    ("sse4_2", word::L1_ECX, 20),
    ("movbe", word::L1_ECX, 22),
    ("popcnt", word::L1_ECX, 23),
    ("aes", word::L1_ECX, 25),
    ("xsave", word::L1_ECX, 26),
    ("avx", word::L1_ECX, 28),
    ("f16c", word::L1_ECX, 29),
    ("rdrand", word::L1_ECX, 30),
    ("fpu", word::L1_EDX, 0),
    ("tsc", word::L1_EDX, 4),
    ("cx8", word::L1_EDX, 8),
    ("cmov", word::L1_EDX, 15),
    ("clflush", word::L1_EDX, 19),
    ("mmx", word::L1_EDX, 23),
    ("fxsr", word::L1_EDX, 24),
    ("sse", word::L1_EDX, 25),
    ("sse2", word::L1_EDX, 26),
    ("fsgsbase", word::L7_EBX, 0),
    ("bmi1", word::L7_EBX, 3),
    ("hle", word::L7_EBX, 4),
    ("avx2", word::L7_EBX, 5),
    ("bmi2", word::L7_EBX, 8),
    ("erms", word::L7_EBX, 9),
    ("rtm", word::L7_EBX, 11),
    ("mpx", word::L7_EBX, 14),
    ("avx512f", word::L7_EBX, 16),
    ("avx512dq", word::L7_EBX, 17),
    ("rdseed", word::L7_EBX, 18),
    ("adx", word::L7_EBX, 19),
    ("avx512ifma", word::L7_EBX, 21),
    ("clflushopt", word::L7_EBX, 23),
    ("clwb", word::L7_EBX, 24),
    ("avx512pf", word::L7_EBX, 26),
    ("avx512er", word::L7_EBX, 27),
    ("avx512cd", word::L7_EBX, 28),
    ("sha_ni", word::L7_EBX, 29),
    ("avx512bw", word::L7_EBX, 30),
    ("avx512vl", word::L7_EBX, 31),
    ("avx512vbmi", word::L7_ECX, 1),
    ("pku", word::L7_ECX, 3),
    ("waitpkg", word::L7_ECX, 5),
    ("avx512_vbmi2", word::L7_ECX, 6),
    ("gfni", word::L7_ECX, 8),
    ("vaes", word::L7_ECX, 9),
    ("vpclmulqdq", word::L7_ECX, 10),
    ("avx512_vnni", word::L7_ECX, 11),
    ("avx512_bitalg", word::L7_ECX, 12),
    ("avx512_vpopcntdq", word::L7_ECX, 14),
    ("rdpid", word::L7_ECX, 22),
    ("cldemote", word::L7_ECX, 25),
    ("movdiri", word::L7_ECX, 27),
    ("movdir64b", word::L7_ECX, 28),
    ("avx512_4vnniw", word::L7_EDX, 2),
    ("avx512_4fmaps", word::L7_EDX, 3),
    ("fsrm", word::L7_EDX, 4),
    ("avx512_vp2intersect", word::L7_EDX, 8),
    ("serialize", word::L7_EDX, 14),
    ("tsxldtrk", word::L7_EDX, 16),
    ("amx_bf16", word::L7_EDX, 22),
    ("avx512_fp16", word::L7_EDX, 23),
    ("amx_tile", word::L7_EDX, 24),
    ("amx_int8", word::L7_EDX, 25),
    ("avx_vnni", word::L7_1_EAX, 4),
    ("avx512_bf16", word::L7_1_EAX, 5),
    ("fzrm", word::L7_1_EAX, 10),
    ("fsrs", word::L7_1_EAX, 11),
    ("fsrc", word::L7_1_EAX, 12),
    ("amx_fp16", word::L7_1_EAX, 21),
    ("avx_ifma", word::L7_1_EAX, 23),
    ("avx_vnni_int8", word::L7_1_EDX, 4),
    ("avx_ne_convert", word::L7_1_EDX, 5),
    ("amx_complex", word::L7_1_EDX, 8),
    ("avx_vnni_int16", word::L7_1_EDX, 10),
    ("prefetchi", word::L7_1_EDX, 14),
    ("apx_f", word::L7_1_EDX, 21),
    ("xsaveopt", word::LD_1_EAX, 0),
    ("xsavec", word::LD_1_EAX, 1),
    ("xgetbv1", word::LD_1_EAX, 2),
    ("lahf_lm", word::E1_ECX, 0),
    ("abm", word::E1_ECX, 5),
    ("sse4a", word::E1_ECX, 6),
    ("misalignsse", word::E1_ECX, 7),
    ("3dnowprefetch", word::E1_ECX, 8),
    ("xop", word::E1_ECX, 11),
    ("fma4", word::E1_ECX, 16),
    ("tbm", word::E1_ECX, 21),
    ("syscall", word::E1_EDX, 11),
    ("mmxext", word::E1_EDX, 22),
    ("rdtscp", word::E1_EDX, 27),
    ("lm", word::E1_EDX, 29),
    ("3dnowext", word::E1_EDX, 30),
    ("3dnow", word::E1_EDX, 31),
];

/// The mask of [`FEATURES`] bits in word `w`.
fn compared_mask(w: usize) -> u32 {
    FEATURES
        .iter()
        .filter(|f| f.1 == w)
        .fold(0u32, |m, f| m | 1u32.checked_shl(f.2).unwrap_or(0))
}

fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    // cpuid is an unprivileged, side-effect-free instruction on every x86_64 CPU.
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// XCR0 of this CPU: the XSAVE features the OS enabled (0 without OSXSAVE).
pub fn xcr0() -> u64 {
    let [_, _, ecx, _] = cpuid(1, 0);
    // OSXSAVE (CPUID.1:ECX bit 27): the OS set CR4.OSXSAVE, xgetbv is usable.
    if ecx & (1 << 27) == 0 {
        return 0;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv with ecx = 0 only reads XCR0 into eax:edx; it faults only
    // when CR4.OSXSAVE is clear, which the check above excludes.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The XSAVE features a thread's state can hold on a CPU with this XCR0:
/// XCR0 itself, or x87|SSE (FXSAVE, present on every x86_64 CPU) without XSAVE.
pub fn effective_xfeatures(xcr0: u64) -> u64 {
    if xcr0 == 0 {
        super::xsave::FPSSE
    } else {
        xcr0
    }
}

/// This CPU, as a CPU record: vendor, signature, feature words, XCR0 and the
/// standard-format place of every enabled XSAVE component.
pub fn this_cpu() -> CpuRec {
    let mut c = CpuRec::default();
    let [max, b, cc, d] = cpuid(0, 0);
    for (dst, src) in c.vendor.chunks_mut(4).zip([b, d, cc]) {
        dst.copy_from_slice(&src.to_le_bytes());
    }
    let [sig, _, ecx1, edx1] = cpuid(1, 0);
    c.signature = sig;
    let mut put = |w: usize, v: u32| {
        if let Some(x) = c.features.get_mut(w) {
            *x = v;
        }
    };
    put(word::L1_ECX, ecx1);
    put(word::L1_EDX, edx1);
    if max >= 7 {
        let [sub_max, ebx, ecx, edx] = cpuid(7, 0);
        put(word::L7_EBX, ebx);
        put(word::L7_ECX, ecx);
        put(word::L7_EDX, edx);
        if sub_max >= 1 {
            let [eax, _, _, edx] = cpuid(7, 1);
            put(word::L7_1_EAX, eax);
            put(word::L7_1_EDX, edx);
        }
    }
    if max >= 0xd {
        put(word::LD_1_EAX, cpuid(0xd, 1)[0]);
    }
    let [emax, _, _, _] = cpuid(0x8000_0000, 0);
    if emax >= 0x8000_0001 {
        let [_, _, ecx, edx] = cpuid(0x8000_0001, 0);
        put(word::E1_ECX, ecx);
        put(word::E1_EDX, edx);
    }
    c.xcr0 = xcr0();
    let layout = super::xsave::Layout::legacy();
    c.xsave_offset = layout.offset;
    c.xsave_size = layout.size;
    if c.xcr0 != 0 && max >= 0xd {
        for (bit, (o, s)) in (0u32..).zip(c.xsave_offset.iter_mut().zip(c.xsave_size.iter_mut())).skip(2) {
            if c.xcr0 & 1u64.checked_shl(bit).unwrap_or(0) == 0 {
                continue;
            }
            let [size, off, _, _] = cpuid(0xd, bit);
            {
                *o = off;
                *s = size;
            }
        }
    }
    c
}

/// A set of [`FEATURES`] bits (one mask per [`word`]), shown as their names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeatureList(pub [u32; word::COUNT]);

impl FeatureList {
    /// True when no feature is in the set.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }
    /// True when feature `name` is in the set.
    pub fn contains(&self, name: &str) -> bool {
        FEATURES.iter().any(|&(n, w, b)| {
            n == name && self.0.get(w).is_some_and(|x| x & 1u32.checked_shl(b).unwrap_or(0) != 0)
        })
    }
    /// The features of `c` (only the compared bits).
    pub fn of(c: &CpuRec) -> FeatureList {
        let mut l = FeatureList::default();
        for (w, (d, s)) in l.0.iter_mut().zip(c.features.iter()).enumerate() {
            *d = s & compared_mask(w);
        }
        l
    }
}

impl fmt::Display for FeatureList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for &(name, w, b) in FEATURES {
            if self.0.get(w).is_some_and(|x| x & 1u32.checked_shl(b).unwrap_or(0) != 0) {
                if !first {
                    f.write_str(" ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// How an image's CPU compares with this one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuCompat {
    /// Instruction-set features the image's CPU had and this one lacks.
    pub missing: FeatureList,
    /// XSAVE components the image's CPU had enabled and this one has not.
    pub missing_xfeatures: u64,
    /// XSAVE components both have but at different offsets or sizes (the areas
    /// are re-laid out at restart; a size difference makes that impossible).
    pub moved_xfeatures: u64,
    /// XSAVE components this CPU enables and the image's CPU (which had XSAVE)
    /// did not. Programs size XSAVE buffers from CPUID at start-up (glibc's
    /// lazy-binding trampoline saves the vector state with XSAVE into a stack
    /// buffer of the size the image's CPU gave): here XSAVE writes these
    /// components too, past the end of such a buffer. Seen: an image from a
    /// CPU with XCR0 0x7 crashed at its first lazy binding on a CPU with MPX.
    /// An image from a CPU without XSAVE is not affected (its programs use
    /// FXSAVE, whose size is fixed).
    pub extra_xfeatures: u64,
}

impl CpuCompat {
    /// Compares the CPU an image was taken on with `here`.
    pub fn compare(image: &CpuRec, here: &CpuRec) -> CpuCompat {
        let mut out = CpuCompat::default();
        let (a, b) = (FeatureList::of(image), FeatureList::of(here));
        for (m, (x, y)) in out.missing.0.iter_mut().zip(a.0.iter().zip(b.0.iter())) {
            *m = x & !y;
        }
        let (xa, xb) = (effective_xfeatures(image.xcr0), effective_xfeatures(here.xcr0));
        out.missing_xfeatures = xa & !xb;
        if image.xcr0 != 0 {
            out.extra_xfeatures = xb & !xa;
        }
        for bit in 2..super::xsave::COMPONENTS {
            let m = 1u64 << bit;
            if xa & xb & m == 0 {
                continue;
            }
            let same = image.xsave_offset.get(bit) == here.xsave_offset.get(bit)
                && image.xsave_size.get(bit) == here.xsave_size.get(bit);
            if !same {
                out.moved_xfeatures |= m;
            }
        }
        out
    }

    /// True when the image can run here without an override.
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty() && self.missing_xfeatures == 0 && self.extra_xfeatures == 0
    }
}

/// Name of XSAVE component `bit`.
pub fn xfeature_name(bit: u32) -> &'static str {
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

/// The XSAVE components of a mask, shown as "AVX (bit 2), PKRU (bit 9)".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XfeatureList(pub u64);

impl fmt::Display for XfeatureList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for b in 0..64u32 {
            if self.0 & (1u64 << b) != 0 {
                if !first {
                    f.write_str(", ")?;
                }
                write!(f, "{} (bit {b})", xfeature_name(b))?;
                first = false;
            }
        }
        Ok(())
    }
}

//! Builds the restorer blob (crates/restorer) for x86_64-unknown-none as a
//! position independent, relocation free flat binary and exposes it to the
//! crate as `$OUT_DIR/restorer.bin` (+ `restorer.rs` with its entry offset and size).
use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let rdir = manifest.join("../restorer").canonicalize().expect("crates/restorer exists");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    for f in ["Cargo.toml", "restorer.ld", "src/main.rs", "src/abi.rs", "src/sys.rs"] {
        println!("cargo:rerun-if-changed={}", rdir.join(f).display());
    }
    println!("cargo:rerun-if-changed=build.rs");

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = out.join("restorer-target");
    let ld = rdir.join("restorer.ld");
    let flags = [
        "-C".to_string(), "relocation-model=pie".into(),
        "-Zplt=yes".into(),
        "-C".into(), format!("link-arg=-T{}", ld.display()),
        "-C".into(), "link-arg=--no-dynamic-linker".into(),
        "-C".into(), "link-arg=-pie".into(),
        "-C".into(), "link-arg=-znorelro".into(),
        "-C".into(), "link-arg=--build-id=none".into(),
    ];
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&rdir)
        .args(["build", "--release", "--target", "x86_64-unknown-none", "--manifest-path"])
        .arg(rdir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // -Zplt=yes: direct calls instead of GOT loads (stable rustc, as the kernel does).
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
    for v in ["RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER", "CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS", "CARGO_PRIMARY_PACKAGE",
        "CARGO_MANIFEST_DIR", "CARGO_PKG_NAME", "TARGET", "HOST", "OUT_DIR", "PROFILE", "OPT_LEVEL", "DEBUG",
        "CARGO_CFG_TARGET_FEATURE", "CARGO_ENCODED_RUSTDOCFLAGS"] {
        cmd.env_remove(v);
    }
    let st = cmd.status().expect("running cargo for the restorer blob");
    if !st.success() {
        panic!("building the restorer blob failed (needs `rustup target add x86_64-unknown-none`)");
    }
    let elf_path = target_dir.join("x86_64-unknown-none/release/stasis-restorer");
    let elf = fs::read(&elf_path).expect("reading the restorer ELF");
    let (bin, entry) = flatten(&elf).unwrap_or_else(|e| panic!("restorer blob {}: {e}", elf_path.display()));
    fs::write(out.join("restorer.bin"), &bin).expect("writing restorer.bin");
    fs::write(
        out.join("restorer.rs"),
        format!(
            "/// Offset of the restorer's entry point in the blob.\npub const RESTORER_ENTRY: usize = {entry};\n\
             /// Bytes of the blob (code + read-only data).\npub const RESTORER_SIZE: usize = {};\n",
            bin.len()
        ),
    )
    .expect("writing restorer.rs");
}

fn u16_at(b: &[u8], o: usize) -> Result<u16, String> {
    b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]])).ok_or_else(|| format!("truncated at {o}"))
}
fn u32_at(b: &[u8], o: usize) -> Result<u32, String> {
    b.get(o..o + 4).map(|s| u32::from_le_bytes(s.try_into().unwrap())).ok_or_else(|| format!("truncated at {o}"))
}
fn u64_at(b: &[u8], o: usize) -> Result<u64, String> {
    b.get(o..o + 8).map(|s| u64::from_le_bytes(s.try_into().unwrap())).ok_or_else(|| format!("truncated at {o}"))
}

/// Lay the allocated sections out at their addresses (base 0) and check that
/// nothing needs relocating or writable data.
fn flatten(elf: &[u8]) -> Result<(Vec<u8>, u64), String> {
    if elf.get(0..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) {
        return Err("not an ELF64 file".into());
    }
    let entry = u64_at(elf, 24)?;
    let shoff = u64_at(elf, 40)? as usize;
    let shentsize = u16_at(elf, 58)? as usize;
    let shnum = u16_at(elf, 60)? as usize;
    let shstrndx = u16_at(elf, 62)? as usize;
    let sh = |i: usize| shoff + i * shentsize;
    let strtab_off = u64_at(elf, sh(shstrndx) + 24)? as usize;
    let name = |i: usize| -> Result<String, String> {
        let n = u32_at(elf, sh(i))? as usize;
        let s = elf.get(strtab_off + n..).ok_or("bad name")?;
        let end = s.iter().position(|&c| c == 0).ok_or("bad name")?;
        Ok(String::from_utf8_lossy(&s[..end]).into_owned())
    };
    const SHT_PROGBITS: u32 = 1;
    const SHT_RELA: u32 = 4;
    const SHT_NOBITS: u32 = 8;
    const SHT_REL: u32 = 9;
    const SHF_WRITE: u64 = 1;
    const SHF_ALLOC: u64 = 2;
    let mut image = Vec::new();
    for i in 1..shnum {
        let ty = u32_at(elf, sh(i) + 4)?;
        let flags = u64_at(elf, sh(i) + 8)?;
        let addr = u64_at(elf, sh(i) + 16)? as usize;
        let off = u64_at(elf, sh(i) + 24)? as usize;
        let size = u64_at(elf, sh(i) + 32)? as usize;
        let nm = name(i)?;
        if (ty == SHT_RELA || ty == SHT_REL) && size > 0 {
            return Err(format!("has relocations in {nm} ({size} bytes): the blob must be relocation free"));
        }
        if flags & SHF_ALLOC == 0 {
            continue;
        }
        if ty == SHT_NOBITS && size > 0 {
            return Err(format!("has zero-initialised data ({nm}, {size} bytes): the blob must have no statics"));
        }
        if flags & SHF_WRITE != 0 && ty == SHT_PROGBITS && size > 0 && nm != ".got" {
            return Err(format!("has writable data ({nm}, {size} bytes): the blob must have no statics"));
        }
        if nm == ".got" && size > 0 {
            return Err(format!("has a GOT ({size} bytes): some call or address goes through it"));
        }
        if ty != SHT_PROGBITS || flags & SHF_WRITE != 0 {
            continue; // .dynamic, .dynsym, hash tables: not needed by the blob
        }
        let data = elf.get(off..off + size).ok_or_else(|| format!("section {nm} out of file"))?;
        if image.len() < addr + size {
            image.resize(addr + size, 0);
        }
        image[addr..addr + size].copy_from_slice(data);
    }
    // No panicking path may survive: with LTO the panic handler
    // (rust_begin_unwind) is only kept when something can reach it.
    for needle in [&b"rust_begin_unwind"[..], b"panic_bounds_check", b"panic_fmt", b"unwrap_failed"] {
        if elf.windows(needle.len()).any(|w| w == needle) {
            return Err(format!("contains a panicking path ({}): the restorer must never panic", String::from_utf8_lossy(needle)));
        }
    }
    if image.is_empty() || entry as usize >= image.len() {
        return Err("no code or entry outside the blob".into());
    }
    Ok((image, entry))
}

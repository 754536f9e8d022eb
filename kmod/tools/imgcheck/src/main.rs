//! stasis-kimgcheck IMAGE [--expect-threads N] [--min-pages N]
//! Parses IMAGE with stasis_image::ProcessImage (every checksum, framing and semantic
//! check) and prints a summary. Exit 0 when it parses and the expectations hold.
//!
//! stasis-kimgcheck --mutate IMAGE OUTDIR
//! Writes hostile variants of a valid IMAGE into OUTDIR for the RESTART tests, named
//! `einval-*` (malformed: stasis-image must refuse them) and `eopnotsupp-*` (valid but
//! not restartable on this machine: XSAVE features the guest's CPU lacks, too many
//! threads) and `valid-many-threads` (4000 extra THREAD records: valid).
use stasis_image::records::{engine, thread_flags};
use stasis_image::{ParseOptions, ProcessImage};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: stasis-kimgcheck IMAGE [--expect-threads N] [--min-pages N]");
        std::process::exit(2);
    };
    if path == "--mutate" {
        let (Some(img), Some(out)) = (args.get(1), args.get(2)) else {
            eprintln!("usage: stasis-kimgcheck --mutate IMAGE OUTDIR");
            std::process::exit(2);
        };
        if let Err(e) = mutate(img, out) {
            eprintln!("mutate: {e}");
            std::process::exit(1);
        }
        return;
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let img = match ProcessImage::parse(&bytes, &ParseOptions::ALL) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let pages: u64 = img.pages.iter().map(|p| p.runs.iter().map(|r| r.nr_pages).sum::<u64>()).sum();
    let comm = String::from_utf8_lossy(&img.process.comm);
    println!(
        "{path}: {} bytes, engine {}, kernel {}, pid {} ({}), {} threads, {} vmas, {} pages, exe {}",
        bytes.len(),
        if img.header.engine == engine::KERNEL { "kernel" } else { "user" },
        String::from_utf8_lossy(&img.header.kernel_release).trim_end_matches('\0'),
        img.process.pid,
        comm.trim_end_matches('\0'),
        img.threads.len(),
        img.vmas.len(),
        pages,
        String::from_utf8_lossy(img.mm.exe),
    );
    println!(
        "  itimer real interval {} ns value {} ns; {} process-wide pending",
        img.itimers.real.interval_ns,
        img.itimers.real.value_ns,
        img.shared_pending.len()
    );
    for f in &img.files {
        println!("  fd {:>3} file {} pos {} flags {:#o}", f.rec.fd, String::from_utf8_lossy(f.path), f.rec.pos, f.rec.open_flags);
    }
    for p in &img.pipes {
        println!("  fd {:>3} pipe {} fifo {}", p.rec.fd, p.rec.pipe_id, p.rec.fifo);
    }
    for (id, d) in &img.pipe_data {
        println!("  pipe {id}: {} bytes buffered", d.len());
    }
    for t in &img.threads {
        println!(
            "  tid {:>6} flags {}{} rip {:#x} rax {:#x} xstate {} bytes",
            t.rec.tid,
            if t.rec.flags & thread_flags::LEADER != 0 { "L" } else { "-" },
            if t.rec.flags & thread_flags::SYSCALL_FIXED != 0 { "F" } else { "-" },
            t.rec.regs.rip,
            t.rec.regs.rax,
            t.xstate.as_ref().map(|x| x.area.len()).unwrap_or(0)
        );
    }
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let n: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match a.as_str() {
            "--expect-threads" if img.threads.len() as u64 != n => {
                eprintln!("expected {n} threads, image has {}", img.threads.len());
                std::process::exit(1);
            }
            "--min-pages" if pages < n => {
                eprintln!("expected at least {n} pages, image has {pages}");
                std::process::exit(1);
            }
            _ => {}
        }
    }
    println!("image: ok");
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Offsets of every record header (framing as in stasis_image::Image::parse).
fn record_offsets(b: &[u8]) -> Vec<(usize, u32, u64)> {
    let mut v = Vec::new();
    let mut off = stasis_image::HEADER_LEN as usize;
    while off + 24 <= b.len() {
        let kind = u32::from_le_bytes(b[off..off + 4].try_into().unwrap());
        let len = u64_at(b, off + 8);
        v.push((off, kind, len));
        let end = off + 24 + len as usize;
        off = ((end + 7) & !7) + 8;
    }
    v
}

/// Rewrites the head_sum of the record at `off` (after changing its kind/flags/len).
fn reseal_head(b: &mut [u8], off: usize) {
    let s = stasis_image::checksum(&b[off..off + 16]);
    put64(b, off + 16, s);
}

/// Rewrites the payload checksum of the record at `off`.
fn reseal_payload(b: &mut [u8], off: usize) {
    let len = u64_at(b, off + 8) as usize;
    let p0 = off + 24;
    let s = stasis_image::checksum(&b[p0..p0 + len]);
    put64(b, (p0 + len + 7) & !7, s);
}

fn reseal_header(b: &mut [u8]) {
    let at = stasis_image::HEADER_SUM_OFFSET;
    let s = stasis_image::checksum(&b[..at]);
    put64(b, at, s);
}

fn mutate(img: &str, out: &str) -> Result<(), String> {
    let good = std::fs::read(img).map_err(|e| format!("{img}: {e}"))?;
    ProcessImage::parse(&good, &ParseOptions::ALL).map_err(|e| format!("{img} is not valid: {e}"))?;
    std::fs::create_dir_all(out).map_err(|e| format!("{out}: {e}"))?;
    let recs = record_offsets(&good);
    let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
    let n = good.len();
    for cut in [1usize, 100, 159, 160, 200, n / 2, n - 4096.min(n / 2), n - 9, n - 1] {
        variants.push((format!("einval-truncated-{cut}"), good[..cut].to_vec()));
    }
    let mut longer = good.clone();
    longer.extend_from_slice(&[0u8; 8]);
    variants.push(("einval-trailing-zeros".into(), longer));
    for at in [0usize, 9, 16, 24, 100, 151, 170, n / 3, n / 2, n - 20, n - 1] {
        let mut b = good.clone();
        b[at] ^= 0x10;
        variants.push((format!("einval-bitflip-{at}"), b));
    }
    // Absurd lengths with a correct record-header checksum, in the first, a middle and
    // the last (END) record.
    let picks = [recs.first(), recs.get(recs.len() / 2), recs.last()];
    for (i, r) in picks.iter().enumerate() {
        let Some(&(off, _, _)) = r else { continue };
        for (name, len) in [
            ("max", u64::MAX),
            ("max-24", u64::MAX - 24),
            ("2p40", 1u64 << 40),
            ("2p31", 1u64 << 31),
            ("filelen", n as u64),
            ("0", 0),
        ] {
            let mut b = good.clone();
            put64(&mut b, off + 8, len);
            reseal_head(&mut b, off);
            variants.push((format!("einval-len-{name}-rec{i}"), b));
        }
    }
    // A checksummed record of an unknown mandatory kind instead of the first record.
    if let Some(&(off, _, _)) = recs.first() {
        let mut b = good.clone();
        b[off..off + 4].copy_from_slice(&0x0000_7777u32.to_le_bytes());
        reseal_head(&mut b, off);
        variants.push(("einval-unknown-kind".into(), b));
    }
    // Wrong architecture, wrong version, with a correct header checksum.
    for (name, at, v) in [("arch", 16usize, 2u32), ("version", 8, 2), ("page-size", 20, 8192)] {
        let mut b = good.clone();
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        reseal_header(&mut b);
        variants.push((format!("einval-header-{name}"), b));
    }
    // XSAVE features the CPU lacks (AMX tile config/data, bits 17/18): both in the XSTATE
    // record's xstate_bv/xcr0 and in the area's own header; checksums redone: the
    // parser accepts it, the machine check must refuse it.
    let xs: Vec<_> = recs.iter().filter(|r| r.1 == stasis_image::records::kind::XSTATE).collect();
    if let Some(&&(off, _, _)) = xs.first() {
        let amx = (1u64 << 17) | (1u64 << 18);
        let p0 = off + 24;
        let mut b = good.clone();
        put64(&mut b, p0 + 8, u64_at(&good, p0 + 8) | amx);
        put64(&mut b, p0 + 16, u64_at(&good, p0 + 16) | amx);
        reseal_payload(&mut b, off);
        ProcessImage::parse(&b, &ParseOptions::ALL).map_err(|e| format!("xstate variant does not parse: {e}"))?;
        variants.push(("eopnotsupp-xstate-record-amx".into(), b));
        let mut b = good.clone();
        let area = p0 + 24; // XstateRec is 24 bytes
        put64(&mut b, area + 512, u64_at(&good, area + 512) | amx);
        reseal_payload(&mut b, off);
        ProcessImage::parse(&b, &ParseOptions::ALL).map_err(|e| format!("xsave-header variant does not parse: {e}"))?;
        variants.push(("eopnotsupp-xsave-header-amx".into(), b));
        let mut b = good.clone();
        put64(&mut b, area + 520, 1u64 << 63);
        reseal_payload(&mut b, off);
        ProcessImage::parse(&b, &ParseOptions::ALL).map_err(|e| format!("xcomp variant does not parse: {e}"))?;
        variants.push(("eopnotsupp-xsave-compacted".into(), b));
    } else {
        return Err("image has no XSTATE record".into());
    }
    // Many threads (extra THREAD records copied from a non-leader one, tids in a
    // scrambled order so the parser's sort recurses): 4000 extra → valid, must validate
    // (the parser's deep sort runs on the module's big stack); 5000 extra → more than
    // the module's 4096-thread limit → EOPNOTSUPP.
    let many = many_threads(&good, 4000)?;
    ProcessImage::parse(&many, &ParseOptions::ALL).map_err(|e| format!("many-threads variant does not parse: {e}"))?;
    std::fs::write(format!("{out}/valid-many-threads"), &many).map_err(|e| format!("many-threads: {e}"))?;
    let too_many = many_threads(&good, 5000)?;
    ProcessImage::parse(&too_many, &ParseOptions::ALL).map_err(|e| format!("too-many variant does not parse: {e}"))?;
    variants.push(("eopnotsupp-5000-threads".into(), too_many));
    for (name, b) in &variants {
        if !name.starts_with("eopnotsupp") && ProcessImage::parse(b, &ParseOptions::ALL).is_ok() {
            return Err(format!("variant {name} still parses"));
        }
        let p = format!("{out}/{name}");
        std::fs::write(&p, b).map_err(|e| format!("{p}: {e}"))?;
    }
    println!("mutate: {} variants in {out}", variants.len());
    Ok(())
}

/// `good` re-written with `extra` more THREAD records (and PROCESS.nr_threads to match).
fn many_threads(good: &[u8], extra: u32) -> Result<Vec<u8>, String> {
    use stasis_image::records::{kind, thread_flags, ProcessRec, ThreadRec};
    use stasis_image::{Image, Writer};
    let img = Image::parse(good).map_err(|e| e.to_string())?;
    let pi = ProcessImage::parse(good, &ParseOptions::ALL).map_err(|e| e.to_string())?;
    let mut w = Writer::new(Vec::new(), &img.header).map_err(|e| format!("{e:?}"))?;
    let mut pages = pi.pages.iter();
    let mut done = false;
    let max_tid = pi.threads.iter().map(|t| t.rec.tid).max().unwrap_or(1);
    for r in img.records() {
        match r.kind {
            kind::END => break,
            kind::PAGES => {
                let p = pages.next().ok_or("PAGES count")?;
                w.pages(p.vma_start, &p.runs, [p.data]).map_err(|e| format!("{e:?}"))?;
            }
            kind::PROCESS => {
                let mut pr: ProcessRec = r.fixed().ok_or("PROCESS")?;
                pr.nr_threads += extra;
                let tail = &r.payload[std::mem::size_of::<ProcessRec>()..];
                w.record_flags(r.kind, r.flags, &pr, &[tail]).map_err(|e| format!("{e:?}"))?;
            }
            kind::THREAD => {
                w.record_flags(r.kind, r.flags, r.payload, &[]).map_err(|e| format!("{e:?}"))?;
                let t: ThreadRec = r.fixed().ok_or("THREAD")?;
                if !done && t.flags & thread_flags::LEADER == 0 {
                    done = true;
                    for i in 0..extra {
                        let mut nt = t;
                        // A scrambled permutation of 0..extra (7919 is prime), above the real tids.
                        let k = (u64::from(i) * 7919 % u64::from(extra)) as u32;
                        nt.tid = max_tid + 1 + k;
                        w.record(kind::THREAD, &nt, &[]).map_err(|e| format!("{e:?}"))?;
                    }
                }
            }
            k @ (kind::FILE_DATA | kind::SYSV_SHM) => {
                return Err(format!("data record kind {k:#x} not handled"));
            }
            _ => w.record_flags(r.kind, r.flags, r.payload, &[]).map_err(|e| format!("{e:?}"))?,
        }
    }
    if !done {
        return Err("no non-leader thread to copy".into());
    }
    w.finish().map_err(|e| format!("{e:?}"))
}

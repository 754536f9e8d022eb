//! stasis-kimgcheck IMAGE [--expect-threads N] [--min-pages N]
//! Parses IMAGE with stasis_image::ProcessImage (every checksum, framing and semantic
//! check) and prints a summary. Exit 0 when it parses and the expectations hold.
use stasis_image::records::{engine, thread_flags};
use stasis_image::{ParseOptions, ProcessImage};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: stasis-kimgcheck IMAGE [--expect-threads N] [--min-pages N]");
        std::process::exit(2);
    };
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

//! The human-readable rendering of an inspect [`Report`]: aligned tables.

use std::fmt::Write;

use super::model::Report;

/// Column alignment.
#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// A table with a header row; the last column is never padded.
struct Table {
    cols: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(cols: &[(&'static str, Align)]) -> Table {
        Table {
            cols: cols.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, out: &mut String) {
        let mut widths: Vec<usize> = self.cols.iter().map(|(h, _)| h.len()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let header: Vec<String> = self.cols.iter().map(|(h, _)| (*h).to_string()).collect();
        for r in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::from("  ");
            let n = r.len().min(self.cols.len());
            for (i, ((c, (_, align)), w)) in r.iter().zip(&self.cols).zip(&widths).enumerate() {
                let last = i + 1 == n;
                let pad = w.saturating_sub(c.chars().count());
                match align {
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(c);
                    }
                    Align::Left => {
                        line.push_str(c);
                        if !last {
                            line.extend(std::iter::repeat_n(' ', pad));
                        }
                    }
                }
                if !last {
                    line.push_str("  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

/// Bytes with a binary unit ("4.0 KiB", "12 B").
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

fn dash_if_empty(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

pub fn render(r: &Report) -> String {
    use Align::{Left, Right};
    let mut o = String::new();
    let h = &r.header;
    let p = &r.process;
    // Writing to a String cannot fail.
    let _ = writeln!(
        o,
        "image     {} ({}, {} records)",
        r.image.path,
        human(r.image.size),
        r.image.records
    );
    let _ = writeln!(
        o,
        "written   by {} with the {} engine, format v{}, on kernel {}, at {}",
        if h.writer.is_empty() { "?" } else { &h.writer },
        h.engine,
        h.format_version,
        if h.kernel_release.is_empty() {
            "?"
        } else {
            &h.kernel_release
        },
        h.created
    );
    let _ = writeln!(
        o,
        "cpu       {}, page size {}, xcr0 {} ({}), xsave area {} bytes",
        h.arch,
        h.page_size,
        h.xcr0,
        h.xfeatures.join(" "),
        h.xsave_size
    );
    if let Some(c) = &h.cpu {
        let mut here = if c.missing_here.is_empty() && c.missing_xsave_here.is_empty() {
            "this CPU has them all".to_string()
        } else {
            let mut v = c.missing_here.clone();
            v.extend(c.missing_xsave_here.iter().map(|x| format!("xsave:{x}")));
            format!("this CPU lacks {}", v.join(" "))
        };
        if !c.extra_xsave_here.is_empty() {
            let v: Vec<String> = c.extra_xsave_here.iter().map(|x| format!("xsave:{x}")).collect();
            here.push_str(&format!(" and also enables {}", v.join(" ")));
        }
        let _ = writeln!(
            o,
            "          {} family {} model {} stepping {}, {} features; {}",
            c.vendor,
            c.family,
            c.model,
            c.stepping,
            c.features.len(),
            here
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "process   {} ({})  exe {}", p.pid, p.comm, p.exe);
    let _ = writeln!(
        o,
        "          ppid {}  pgid {}  sid {}  uid {}/{}  gid {}/{}  umask {}",
        p.ppid, p.pgid, p.sid, p.uid, p.euid, p.gid, p.egid, p.umask
    );
    let _ = writeln!(o, "          cwd {}  root {}", p.cwd, p.root);
    if p.shared_pending > 0 || p.posix_timers > 0 {
        let _ = writeln!(
            o,
            "          {} process-wide pending signals, {} POSIX timers",
            p.shared_pending, p.posix_timers
        );
    }

    let _ = writeln!(o, "\nthreads ({})", r.threads.len());
    let mut t = Table::new(&[
        ("TID", Right),
        ("NAME", Left),
        ("RIP", Left),
        ("RSP", Left),
        ("SYSCALL", Left),
        ("BLOCKED", Left),
        ("PENDING", Right),
        ("XSTATE", Left),
    ]);
    for th in &r.threads {
        t.row(vec![
            format!("{}{}", th.tid, if th.leader { "*" } else { "" }),
            th.name.clone(),
            format!("{:#014x}", th.rip),
            format!("{:#014x}", th.rsp),
            match (th.in_syscall, th.syscall, th.syscall_name) {
                (false, _, _) => "no".into(),
                (true, _, Some(name)) => format!("yes ({name})"),
                (true, Some(nr), None) => format!("yes ({nr})"),
                (true, None, None) => "yes".into(),
            },
            dash_if_empty(&th.blocked),
            th.pending_signals.to_string(),
            if th.xstate_size == 0 {
                "-".into()
            } else {
                format!("{} B ({})", th.xstate_size, th.xstate_features.join(","))
            },
        ]);
    }
    t.render(&mut o);

    let _ = writeln!(
        o,
        "\nmemory ({} VMAs, {} mapped, {} of pages stored)",
        r.totals.vmas,
        human(r.totals.mapped_bytes),
        human(r.totals.page_bytes)
    );
    let mut t = Table::new(&[
        ("START-END", Left),
        ("SIZE", Right),
        ("PROT", Left),
        ("KIND", Left),
        ("STORED", Right),
        ("PATH", Left),
    ]);
    for v in &r.vmas {
        let mut path = v.path.clone();
        if v.offset != 0 {
            let _ = write!(path, " @{:#x}", v.offset);
        }
        for f in v.flags.iter().filter(|f| **f != "shared") {
            let _ = write!(path, " [{f}]");
        }
        t.row(vec![
            format!("{:012x}-{:012x}", v.start, v.end),
            human(v.size),
            v.prot.clone(),
            v.kind.clone(),
            if v.page_bytes == 0 {
                "-".into()
            } else {
                human(v.page_bytes)
            },
            path,
        ]);
    }
    t.render(&mut o);

    let _ = writeln!(o, "\nfile descriptors ({})", r.fds.len());
    let mut t = Table::new(&[
        ("FD", Right),
        ("KIND", Left),
        ("POS", Right),
        ("FLAGS", Left),
        ("PATH", Left),
    ]);
    for f in &r.fds {
        t.row(vec![
            f.fd.to_string(),
            f.kind.clone(),
            f.pos.map_or_else(|| "-".into(), |p| p.to_string()),
            f.flags.clone(),
            if !f.deleted {
                f.path.clone()
            } else if f.path.ends_with(" (deleted)") {
                format!("{} [contents stored]", f.path)
            } else {
                format!("{} (deleted) [contents stored]", f.path)
            },
        ]);
    }
    t.render(&mut o);

    let _ = writeln!(
        o,
        "\nsignal handlers ({} not default)",
        r.signal_handlers.len()
    );
    if !r.signal_handlers.is_empty() {
        let mut t = Table::new(&[
            ("SIGNAL", Left),
            ("HANDLER", Left),
            ("FLAGS", Left),
            ("MASK", Left),
        ]);
        for s in &r.signal_handlers {
            t.row(vec![
                format!("{} ({})", s.name, s.signal),
                s.handler.clone(),
                dash_if_empty(&s.flags),
                dash_if_empty(&s.mask),
            ]);
        }
        t.render(&mut o);
    }

    let tt = &r.totals;
    let _ = writeln!(
        o,
        "\ntotal     {} threads, {} VMAs, {} mapped, {} of pages stored, {} fds, image {}",
        tt.threads,
        tt.vmas,
        human(tt.mapped_bytes),
        human(tt.page_bytes),
        tt.fds,
        human(tt.image_bytes)
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(4096), "4.0 KiB");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }

    #[test]
    fn table_alignment() {
        let mut t = Table::new(&[("A", Align::Right), ("B", Align::Left), ("C", Align::Left)]);
        t.row(vec!["1".into(), "xyz".into(), "end".into()]);
        t.row(vec!["100".into(), "x".into(), "e".into()]);
        let mut s = String::new();
        t.render(&mut s);
        assert_eq!(s, "    A  B    C\n    1  xyz  end\n  100  x    e\n");
    }
}

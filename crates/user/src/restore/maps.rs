//! The current process's mappings and the search for a hole free in both it
//! and the image's layout.

use std::io;

/// One line of /proc/self/maps (what we need of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub name: String,
}

/// Parse /proc/<pid>/maps text.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    let mut v = Vec::new();
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let Some(range) = it.next() else { continue };
        let Some((s, e)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) else { continue };
        // perms offset dev inode
        let rest: Vec<&str> = it.collect();
        let name = if rest.len() > 4 { rest[4..].join(" ") } else { String::new() };
        v.push(Mapping { start, end, name });
    }
    v
}

/// Mappings of the calling process.
pub fn self_maps() -> io::Result<Vec<Mapping>> {
    Ok(parse_maps(&std::fs::read_to_string("/proc/self/maps")?))
}

/// Highest address user mappings may use (x86_64, 4-level paging).
pub const TASK_SIZE_47: u64 = (1u64 << 47) - 4096;

/// Find `size` bytes (page multiple) free in every range set of `busy`
/// (`[start, end)` pairs, any order), at least `margin` bytes away from any busy
/// range, between `low` and `high`. Picks the middle of the largest gap, so that
/// growing stacks and later mmaps stay far away.
pub fn find_hole(busy: &[(u64, u64)], size: u64, margin: u64, low: u64, high: u64, page: u64) -> Option<u64> {
    let mut b: Vec<(u64, u64)> = busy.iter().copied().filter(|(s, e)| e > s).collect();
    b.sort_unstable();
    let mut best: Option<(u64, u64)> = None; // (gap start, gap end) usable
    let mut cursor = low;
    let consider = |gs: u64, ge: u64, best: &mut Option<(u64, u64)>| {
        let gs = gs.max(low);
        let ge = ge.min(high);
        if ge <= gs {
            return;
        }
        let need = size.saturating_add(margin.saturating_mul(2));
        if ge - gs >= need {
            match best {
                Some((bs, be)) if *be - *bs >= ge - gs => {}
                _ => *best = Some((gs, ge)),
            }
        }
    };
    for &(s, e) in &b {
        if s > cursor {
            consider(cursor, s, &mut best);
        }
        cursor = cursor.max(e);
    }
    if high > cursor {
        consider(cursor, high, &mut best);
    }
    let (gs, ge) = best?;
    let mid = gs + (ge - gs) / 2;
    let start = mid.saturating_sub(size / 2) & !(page - 1);
    // Stay inside the gap with the margins after alignment.
    if start < gs + margin || start + size + margin > ge {
        let start = (gs + margin + page - 1) & !(page - 1);
        if start + size + margin <= ge {
            return Some(start);
        }
        return None;
    }
    Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let t = "7f816757b000-7f816757f000 r--p 00000000 00:00 0                          [vvar]\n\
                 55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0 \n\
                 7fa0-7fb0 r-xp 00001000 fe:00 325843  /usr/lib/a b.so (deleted)\n";
        let m = parse_maps(t);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0], Mapping { start: 0x7f816757b000, end: 0x7f816757f000, name: "[vvar]".into() });
        assert_eq!(m[1].name, "");
        assert_eq!(m[2].name, "/usr/lib/a b.so (deleted)");
    }

    #[test]
    fn hole_avoids_everything() {
        let page = 4096;
        let busy = [(0x1000, 0x10000), (0x100000, 0x200000), (0x7fff0000, 0x80000000)];
        let h = find_hole(&busy, 0x10000, 0x1000, 0x10000, 0x80000000, page).unwrap();
        assert_eq!(h % page, 0);
        for (s, e) in busy {
            assert!(h + 0x10000 + 0x1000 <= s || h >= e + 0x1000, "{h:#x} hits {s:#x}-{e:#x}");
        }
        // The largest gap is 0x200000..0x7fff0000.
        assert!(h > 0x200000 && h < 0x7fff0000);
        // Nothing fits.
        assert_eq!(find_hole(&[(0, 0x100000)], 0x10000, 0, 0, 0x100000, page), None);
        // Tight fit with margin.
        let h = find_hole(&[(0, 0x10000), (0x13000, 0x20000)], 0x1000, 0x1000, 0, 0x20000, page).unwrap();
        assert_eq!(h, 0x11000);
    }
}

//! Feeds arbitrary bytes to the image parser. Findings: any panic, abort,
//! sanitizer report, or a broken invariant of an accepted image.
//!
//! Every input is parsed twice: as is, and with its checksums recomputed
//! (header, record headers, payloads), so that mutations get past the
//! checksums and reach the framing and semantic checks.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stasis_image::{checksum, Image, ParseOptions, ProcessImage};

fn parse_all(data: &[u8]) {
    let _ = Image::parse(data);
    let _ = ProcessImage::parse(data, &ParseOptions::CORE);
    match ProcessImage::parse(data, &ParseOptions::ALL) {
        Ok(p) => {
            let ps = u64::from(p.header.page_size);
            for pv in &p.pages {
                // Accepted page data is page aligned and really at data_file_offset.
                assert_eq!(pv.data_file_offset % ps, 0);
                let o = usize::try_from(pv.data_file_offset).unwrap();
                assert_eq!(&data[o..o + pv.data.len()], pv.data);
                assert_eq!(pv.data.len() as u64 % ps, 0);
            }
            assert_eq!(p.threads.len(), p.process.nr_threads as usize);
        }
        Err(e) => {
            // Every error renders as one line.
            let s = e.to_string();
            assert!(!s.is_empty() && !s.contains('\n'));
        }
    }
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes every checksum the framing lets us find.
fn reseal(b: &mut [u8]) {
    if b.len() < 160 {
        return;
    }
    let s = checksum(&b[..152]);
    put_u64(b, 152, s);
    let mut off = 160usize;
    while off + 24 <= b.len() {
        let s = checksum(&b[off..off + 16]);
        put_u64(b, off + 16, s);
        let len = u64::from_le_bytes(b[off + 8..off + 16].try_into().unwrap());
        let Some(end) = (off as u64 + 24).checked_add(len).filter(|e| *e <= b.len() as u64) else {
            return;
        };
        let sum_off = ((end + 7) & !7) as usize;
        if sum_off + 8 > b.len() {
            return;
        }
        let s = checksum(&b[off + 24..end as usize]);
        put_u64(b, sum_off, s);
        off = sum_off + 8;
    }
}

fuzz_target!(|data: &[u8]| {
    parse_all(data);
    let mut v = data.to_vec();
    reseal(&mut v);
    parse_all(&v);
});

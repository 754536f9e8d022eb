//! `stasis verify IMAGE`: every checksum, the framing, and the semantic
//! rules of a process image, with every extension supported.

use anyhow::{Context, Result};

use crate::cli::VerifyArgs;
use crate::imagefile::{self, display_name};
use crate::util::mib;

pub fn run(args: &VerifyArgs, quiet: bool) -> Result<()> {
    let name = display_name(&args.image);
    let bytes = imagefile::load(&args.image)?;
    let (img, _) = imagefile::parse(&name, &bytes)?;
    if !quiet {
        use std::io::Write as _;
        writeln!(
            std::io::stdout(),
            "{name}: ok ({} records, {} MiB of pages)",
            img.records().len(),
            mib(img.end().page_bytes)
        )
        .context("cannot write to standard output")?;
    }
    Ok(())
}

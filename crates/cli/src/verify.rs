//! `stasis verify IMAGE`: every checksum, the framing, and the semantic
//! rules of a process image, with every extension supported.

use anyhow::{Context, Result};
use stasis_image::{Image, ParseOptions, ProcessImage};

use crate::cli::VerifyArgs;
use crate::imagefile::{self, display_name};
use crate::util::mib;

pub fn run(args: &VerifyArgs, quiet: bool) -> Result<()> {
    let name = display_name(&args.image);
    let bytes = imagefile::load(&args.image)?;
    let img = Image::parse(&bytes).with_context(|| name.clone())?;
    ProcessImage::from_image(&img, &ParseOptions::ALL).with_context(|| name.clone())?;
    if !quiet {
        println!(
            "{name}: ok ({} records, {} MiB of pages)",
            img.records().len(),
            mib(img.end().page_bytes)
        );
    }
    Ok(())
}

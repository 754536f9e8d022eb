//! `stasis inspect IMAGE [--json]`.

mod model;
mod text;

use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::InspectArgs;
use crate::imagefile::{self, display_name};

pub fn run(args: &InspectArgs) -> Result<()> {
    let name = display_name(&args.image);
    let bytes = imagefile::load(&args.image)?;
    let (img, pimg) = imagefile::parse(&name, &bytes)?;
    let report = model::build(&name, &img, &pimg, bytes.len() as u64);
    let out = if args.json {
        let mut s = serde_json::to_string_pretty(&report).context("cannot encode JSON")?;
        s.push('\n');
        s
    } else {
        text::render(&report)
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A closed pipe (`stasis inspect IMG | head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to standard output"),
    }
}

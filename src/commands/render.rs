//! `orch render [--out DIR]`.

use std::path::PathBuf;

use serde::Serialize;

use super::common::{json, print};
use super::Ctx;
use crate::error::Error;
use crate::exit;
use crate::ops::InstalledFrom;
use crate::render::RenderedUnit;
use crate::ui::output::Format;

/// Render the units and print them, or write them to a folder. Needs no systemd.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write one file per unit into DIR instead of printing
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Serialize)]
struct RenderJson<'a> {
    deployment: &'a str,
    units: &'a [RenderedUnit],
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32, Error> {
    // Rendering needs no host: only this machine's installed workers are kept.
    let d = &ctx.deployment(InstalledFrom::ThisMachine)?;
    let out = args.out.as_deref();
    let units = crate::ops::render(d, out)?;
    if let (Some(dir), Format::Human, false) = (out, ctx.output, ctx.quiet) {
        eprintln!("wrote {} unit files to {}", units.len(), dir.display());
    }
    match (ctx.output, out) {
        (Format::Json, _) => json(&RenderJson {
            deployment: &d.name,
            units: &units,
        })?,
        (Format::Human, None) => {
            let text: Vec<String> = units
                .iter()
                .map(|u| format!("### {}\n{}", u.unit, u.content))
                .collect();
            print(&text.join("\n"))?;
        }
        (Format::Human, Some(_)) => {}
    }
    Ok(exit::OK)
}

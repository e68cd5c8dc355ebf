//! `orch render [--out DIR]`.

use std::path::Path;

use serde::Serialize;

use super::common::{json, print};
use crate::args::Global;
use crate::error::Error;
use crate::exit;
use crate::model::Deployment;
use crate::render::RenderedUnit;
use crate::ui::output::Format;

#[derive(Serialize)]
struct RenderJson<'a> {
    deployment: &'a str,
    units: &'a [RenderedUnit],
}

pub fn run(g: &Global, d: &Deployment, out: Option<&Path>) -> Result<i32, Error> {
    let units = crate::ops::render(d, out)?;
    if let (Some(dir), Format::Human, false) = (out, g.output, g.quiet) {
        eprintln!("wrote {} unit files to {}", units.len(), dir.display());
    }
    match (g.output, out) {
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

//! `orch logs`: each line prefixed with its unit (and host, when the
//! deployment spans several), or one JSON object per line.

use super::common::{json, print};
use crate::args::Global;
use crate::error::Error;
use crate::exit;
use crate::logs::{escape_controls, Entry, Lines, Options};
use crate::members::Selection;
use crate::model::Deployment;
use crate::ops::logs::Outcome;
use crate::ui::output::Format;

pub struct Request {
    pub targets: Vec<String>,
    pub follow: bool,
    pub lines: Option<Lines>,
    pub since: Option<jiff::Timestamp>,
    pub journal_root: Option<std::path::PathBuf>,
    pub timeout: std::time::Duration,
}

pub fn run(g: &Global, d: &Deployment, req: Request) -> Result<i32, Error> {
    let selection = match req.targets.is_empty() {
        true => Selection::All,
        false => Selection::Named(req.targets),
    };
    // As journalctl: the last 10 lines, unless --since asks for a span.
    let lines = req.lines.unwrap_or(match req.since {
        Some(_) => Lines::All,
        None => Lines::Last(10),
    });
    let opts = Options {
        lines,
        since: req.since,
        follow: req.follow,
        journal_root: req.journal_root,
        timeout: req.timeout,
    };
    let units = crate::ops::logs::sources(d, &g.access(), &selection)?;
    let multi = units.len() > 1;
    let width = units
        .iter()
        .flat_map(|s| s.units.iter().map(move |u| prefix(multi, &s.host, u).len()))
        .max()
        .unwrap_or(0);
    let mut printed = 0usize;
    let mut sink = |e: &Entry| -> Result<(), Error> {
        printed += 1;
        match g.output {
            Format::Json => json(e),
            Format::Human => print(&format!(
                "{:<width$} | {}\n",
                escape_controls(&prefix(multi, &e.host, &e.unit)),
                escape_controls(&e.message)
            )),
        }
    };
    let since = opts.since;
    let outcome = crate::ops::logs::logs(d, &g.access(), &selection, opts, &mut sink)?;
    // Silence would read as "orch is broken": say that the journal had nothing.
    if printed == 0 && !req.follow && g.output == Format::Human && !g.quiet {
        let count: usize = units.iter().map(|s| s.units.len()).sum();
        let since = since.map(|t| format!(" since {t}")).unwrap_or_default();
        eprintln!("no journal entries for the {count} selected units{since}");
    }
    Ok(match (outcome, req.follow) {
        (Outcome::Done, _) | (Outcome::Interrupted, true) => exit::OK,
        (Outcome::Interrupted, false) => exit::INTERRUPTED,
    })
}

fn prefix(multi_host: bool, host: &str, unit: &str) -> String {
    let unit = unit.strip_suffix(".service").unwrap_or(unit);
    match multi_host {
        true => format!("{host}/{unit}"),
        false => unit.to_string(),
    }
}

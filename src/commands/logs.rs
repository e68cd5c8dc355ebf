//! `orch logs`: each line prefixed with its unit (and host, when the
//! deployment spans several), or one JSON object per line.

use std::path::PathBuf;
use std::time::Duration;

use super::common::{json, print};
use super::ctx::parse_duration;
use super::Ctx;
use crate::error::Error;
use crate::exit;
use crate::logs::{escape_controls, Entry, Lines, Options};
use crate::members::Selection;
use crate::ops::logs::Outcome;
use crate::ui::output::Format;

/// The journal of the deployment's units (or the targets), merged in time order, each line prefixed with its unit.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Unit names, worker kinds, or master / workers / dependents / database / prerequisites [default: every unit but the database and the prerequisites]
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
    /// Keep showing new lines until Ctrl+C
    #[arg(short, long)]
    follow: bool,
    /// Lines of history per unit, or `all` [default: 10; all with --since]
    #[arg(short = 'n', long, value_name = "N", value_parser = parse_lines)]
    lines: Option<Lines>,
    /// Only lines since WHEN, as journalctl takes it: `2024-05-01 10:00`, `-1h`, `1h ago`, `yesterday`, `@EPOCH`
    #[arg(long, value_name = "WHEN", value_parser = parse_since, allow_hyphen_values = true)]
    since: Option<jiff::Timestamp>,
    /// Read the journal with `journalctl --root DIR` (e.g. a container's root)
    #[arg(long, env = "ORCH_JOURNAL_ROOT", value_name = "DIR")]
    journal_root: Option<PathBuf>,
    /// Bound on reading the history of every host
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32, Error> {
    let d = &ctx.installed_deployment()?;
    let selection = match args.targets.is_empty() {
        true => Selection::All,
        false => Selection::Named(args.targets),
    };
    // As journalctl: the last 10 lines, unless --since asks for a span.
    let lines = args.lines.unwrap_or(match args.since {
        Some(_) => Lines::All,
        None => Lines::Last(10),
    });
    let opts = Options {
        lines,
        since: args.since,
        follow: args.follow,
        journal_root: args.journal_root,
        timeout: args.timeout,
    };
    let units = crate::ops::logs::sources(d, &ctx.access, &selection)?;
    let multi = units.len() > 1;
    let width = units
        .iter()
        .flat_map(|s| s.units.iter().map(move |u| prefix(multi, &s.host, u).len()))
        .max()
        .unwrap_or(0);
    let mut printed = 0usize;
    let mut sink = |e: &Entry| -> Result<(), Error> {
        printed += 1;
        match ctx.output {
            Format::Json => json(e),
            Format::Human => print(&format!(
                "{:<width$} | {}\n",
                escape_controls(&prefix(multi, &e.host, &e.unit)),
                escape_controls(&e.message)
            )),
        }
    };
    let since = opts.since;
    let outcome = crate::ops::logs::logs(d, &ctx.access, &selection, opts, &mut sink)?;
    // Silence would read as "orch is broken": say that the journal had nothing.
    if printed == 0 && !args.follow && ctx.output == Format::Human && !ctx.quiet {
        let count: usize = units.iter().map(|s| s.units.len()).sum();
        let since = since.map(|t| format!(" since {t}")).unwrap_or_default();
        eprintln!("no journal entries for the {count} selected units{since}");
    }
    Ok(match (outcome, args.follow) {
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

/// A `-n` value clap refused.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is neither a number of lines nor `all`")]
struct LinesError(String);

fn parse_lines(s: &str) -> Result<Lines, LinesError> {
    match s {
        "all" => Ok(Lines::All),
        n => n
            .parse()
            .map(Lines::Last)
            .map_err(|_| LinesError(s.to_string())),
    }
}

/// A `--since` value: parsed here, before anything runs, so that a typo
/// is a usage error (exit 2); relative times count from now.
fn parse_since(s: &str) -> Result<jiff::Timestamp, crate::since::SinceError> {
    crate::since::parse(s, &jiff::Zoned::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_short_phrase_and_never_an_option() {
        assert!(parse_since("1h ago").is_ok() && parse_since("-1h").is_ok());
        assert!(parse_since("yesterday-ish").is_err());
        assert_eq!(parse_lines("all").unwrap(), crate::logs::Lines::All);
        assert_eq!(parse_lines("5").unwrap(), crate::logs::Lines::Last(5));
        assert!(parse_lines("-5").is_err());
    }
}

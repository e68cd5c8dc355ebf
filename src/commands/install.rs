//! `orch install [--dry-run] [--force]`.

use super::common::{json, print};
use crate::args::Global;
use crate::error::Error;
use crate::exit;
use crate::install::Report;
use crate::model::Deployment;
use crate::plan::Action;
use crate::ui::output::Format;

pub fn run(g: &Global, d: &Deployment, dry_run: bool, force: bool) -> Result<i32, Error> {
    let report = crate::ops::install(d, &g.access(), dry_run, force)?;
    show(g, d, &report, dry_run)
}

/// `orch rollback [--to N] [--dry-run] [--force]`: the install report, with
/// the generation put back.
pub fn rollback(
    g: &Global,
    d: &Deployment,
    to: Option<u64>,
    dry_run: bool,
    force: bool,
) -> Result<i32, Error> {
    let report = crate::ops::rollback(d, &g.access(), to, dry_run, force)?;
    show(g, d, &report, dry_run)
}

fn show(g: &Global, d: &Deployment, report: &Report, dry_run: bool) -> Result<i32, Error> {
    match g.output {
        Format::Json => json(&report)?,
        Format::Human if g.quiet => {}
        Format::Human => {
            let mut text = units(d, report, dry_run);
            if let Some(why) = &report.enable_skipped {
                text.push_str(&format!("  note: {why}\n"));
            }
            text.push_str(&summary(d, report, dry_run));
            text.push('\n');
            print(&text)?;
        }
    }
    // As `plan`: a dry run with changes pending says so in its exit code.
    Ok(match dry_run && report.changed {
        true => exit::CHANGES_PENDING,
        false => exit::OK,
    })
}

/// A row per unit: what was (or, dry, would be) done to it.
fn units(d: &Deployment, report: &Report, dry_run: bool) -> String {
    let mut text = String::new();
    for u in &report.units {
        let verb = match (u.action, dry_run) {
            (Action::Unchanged, _) => "unchanged",
            (Action::Create, false) => "created",
            (Action::Rename, false) => "renamed",
            (Action::Update, false) => "updated",
            (Action::Remove, false) => "removed",
            (Action::Drift, false) => "overwritten",
            (a, true) => a.as_str(),
        };
        let verb = match u.restart_needed {
            Some(true) => format!("{verb} (restart needed)"),
            Some(false) => format!("{verb} (no restart)"),
            None => verb.to_string(),
        };
        let mask = match (u.runtime_mask, u.sigkilled_by_systemd) {
            (true, _) => "  (masked at runtime: it will not start until the mask goes)",
            // The words every verb's report uses.
            (_, true) => "  [SIGKILLED by systemd: its stop outlived TimeoutStopSec]",
            _ => "",
        };
        let unit = match &u.renamed_from {
            Some(old) => format!("{old} -> {}", u.unit),
            None => u.unit.clone(),
        };
        if d.is_multi_host() {
            text.push_str(&format!("  {verb:<11} {:<12} {unit}{mask}\n", u.host));
        } else {
            text.push_str(&format!("  {verb:<11} {unit}{mask}\n"));
        }
    }
    text
}

fn summary(d: &Deployment, report: &Report, dry_run: bool) -> String {
    let text = match (dry_run, report.changed) {
        (true, true) => "dry run: changes pending, nothing written".to_string(),
        (true, false) => "dry run: nothing to do".to_string(),
        (false, true) => format!(
            "installed {}: changed{}{}",
            d.name,
            reloaded(d, report),
            if report.enabled {
                ", master enabled"
            } else {
                ""
            },
        ),
        (false, false) => format!(
            "installed {}: nothing changed, systemd not reloaded",
            d.name
        ),
    };
    let generation = match (report.rolled_back_to, report.generation) {
        (Some(n), _) if dry_run => format!(" (rollback to generation {n})"),
        (Some(n), _) => format!("; rolled back to generation {n}"),
        (None, Some(n)) => format!("; generation {n}"),
        (None, None) => String::new(),
    };
    text + &generation
}

/// `, systemd reloaded`, naming the hosts when there are several.
fn reloaded(d: &Deployment, report: &Report) -> String {
    if !report.reloaded {
        return String::new();
    }
    if !d.is_multi_host() {
        return ", systemd reloaded".to_string();
    }
    let hosts: Vec<&str> = report
        .hosts
        .iter()
        .filter(|h| h.reloaded)
        .map(|h| h.host.as_str())
        .collect();
    format!(", systemd reloaded on {}", hosts.join(", "))
}

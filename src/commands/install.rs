//! `orch install [--dry-run] [--force] [--restart-changed]`.

use std::sync::Arc;

use super::common::{json, print};
use super::Ctx;
use crate::error::Error;
use crate::exit;
use crate::install::Report;
use crate::lifecycle::Observer;
use crate::members::Member;
use crate::model::Deployment;
use crate::op::Op;
use crate::ops::{InstallRequest, Installed, InstalledFrom};
use crate::plan::Action;
use crate::ui::output::Format;

/// Write changed unit files atomically, remove stale ones, reload systemd only if something changed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show what would change, change nothing
    #[arg(long)]
    dry_run: bool,
    /// Overwrite unit files that were edited by hand or not written by orch
    #[arg(long)]
    force: bool,
    /// Then restart the units whose restart-worthy change is newer than their process (`restart --changed`)
    #[arg(long, conflicts_with = "dry_run")]
    restart_changed: bool,
    /// Bound on the stop of each stale unit (one orch wrote that the configuration now drops) before its file is removed; on expiry exit 3, its file kept and systemd not reloaded (run again) [default: the unit's own TimeoutStopSec + 10s]
    #[arg(long, value_name = "DURATION", value_parser = super::ctx::parse_duration)]
    timeout: Option<std::time::Duration>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32, Error> {
    let d = ctx.deployment(InstalledFrom::Hosts)?;
    let req = InstallRequest {
        dry_run: args.dry_run,
        force: args.force,
        restart_changed: args.restart_changed,
        timeout: args.timeout,
    };
    let shown = Shown { ctx, d: &d, req };
    shown.exit(crate::ops::install(&d, &ctx.access, req, &shown)?)
}

/// How `install` and `rollback` show what they did.
pub struct Shown<'a> {
    pub ctx: &'a Ctx,
    pub d: &'a Deployment,
    pub req: InstallRequest,
}

impl crate::ops::ShowInstall for Shown<'_> {
    fn installed(&self, report: &Report) -> Result<(), Error> {
        show(self.ctx, self.d, report, self.req.dry_run)
    }
}

impl crate::ops::lifecycle::Show for Shown<'_> {
    fn observer(&self, op: Op, rolling: Option<usize>, members: &[Member]) -> Arc<dyn Observer> {
        crate::ops::lifecycle::Show::observer(self.ctx, op, rolling, members)
    }
}

impl Shown<'_> {
    /// The restart's summary and exit code, or the install's: a dry run
    /// with changes pending says so in its exit code, as `plan` does.
    pub fn exit(&self, done: Installed) -> Result<i32, Error> {
        if let Some(outcome) = done.restart {
            return super::lifecycle::show(self.ctx, outcome, true);
        }
        Ok(match self.req.dry_run && done.report.changed {
            true => exit::CHANGES_PENDING,
            false => exit::OK,
        })
    }
}

fn show(ctx: &Ctx, d: &Deployment, report: &Report, dry_run: bool) -> Result<(), Error> {
    match ctx.output {
        Format::Json => json(&report)?,
        Format::Human if ctx.quiet => {}
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
    Ok(())
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

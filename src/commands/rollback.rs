//! `orch rollback [--to N] [--dry-run] [--force] [--restart-changed]`: the
//! install report, with the generation put back.

use super::install::Shown;
use super::Ctx;
use crate::error::Error;
use crate::ops::{InstallRequest, InstalledFrom};

/// Put back the unit files of a kept generation (install keeps the last three before the installed one), the way install writes them: same plan, lock, drift refusal, all-or-nothing, one reload.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Generation N (see `orch status` or `orch plan --rollback`) [default: the one before the installed one]
    #[arg(long, value_name = "N")]
    to: Option<u64>,
    /// Show what would change, change nothing
    #[arg(long)]
    dry_run: bool,
    /// Overwrite unit files that were edited by hand or not written by orch
    #[arg(long)]
    force: bool,
    /// Then restart the running units whose file changed in a way that needs a restart
    #[arg(long, conflicts_with = "dry_run")]
    restart_changed: bool,
    /// Bound on the stop of each stale unit (one orch wrote that the put-back generation drops) before its file is removed; on expiry exit 3, its file kept and systemd not reloaded (run again) [default: the unit's own TimeoutStopSec + 10s]
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
    let read_again = || ctx.deployment(InstalledFrom::Hosts);
    let done = crate::ops::rollback(&d, &ctx.access, args.to, req, &shown, &read_again)?;
    shown.exit(done)
}

//! `orch reload [--or-restart]`.

use super::lifecycle::Lifecycle;
use super::Ctx;
use crate::error::Error;
use crate::op::Op;

/// Reload units in parallel (systemd's reload job: ExecReload=, e.g. SIGHUP), then check each is ready again. The database is never reloaded; units without ExecReload= are refused before anything is sent (exit 2), unless --or-restart.
#[derive(Debug, clap::Args)]
#[command(
    mut_arg("all", |a| a.help("Every unit: master, workers and dependents (the database and the prerequisites are never reloaded)")),
    group(clap::ArgGroup::new("what").args(["all", "targets"]).required(true))
)]
pub struct Args {
    #[command(flatten)]
    common: Lifecycle,
    /// Restart the units that cannot be reloaded (systemd's reload-or-restart job), the master first
    #[arg(long)]
    or_restart: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32, Error> {
    let mut req = args.common.request(Op::Reload);
    req.opts.or_restart = args.or_restart;
    super::lifecycle::run(ctx, req)
}

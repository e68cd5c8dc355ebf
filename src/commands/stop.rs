//! `orch stop`.

use super::lifecycle::Lifecycle;
use super::Ctx;
use crate::error::Error;
use crate::op::Op;

/// Stop units in parallel and wait for each: dependents, then workers, then master. The database is never stopped by --all.
#[derive(Debug, clap::Args)]
#[command(
    mut_arg("all", |a| a.help("Every unit: dependents, workers and master; the database and the prerequisites are left running (name them to stop them)")),
    group(clap::ArgGroup::new("what").args(["all", "targets"]).required(true))
)]
pub struct Args {
    #[command(flatten)]
    common: Lifecycle,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32, Error> {
    super::lifecycle::run(ctx, args.common.request(Op::Stop))
}

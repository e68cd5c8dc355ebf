//! `orch start`.

use super::lifecycle::Lifecycle;
use super::Ctx;
use crate::error::Error;
use crate::op::Op;

/// Start units in parallel and wait until each is ready: database, then master, then workers and dependents.
#[derive(Debug, clap::Args)]
#[command(
    mut_arg("all", |a| a.help("Every unit: master, workers and dependents; the database and the prerequisites are started first if they are not running")),
    group(clap::ArgGroup::new("what").args(["all", "targets"]).required(true))
)]
pub struct Args {
    #[command(flatten)]
    common: Lifecycle,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32, Error> {
    super::lifecycle::run(ctx, args.common.request(Op::Start))
}

//! `orch restart [--rolling [--canary [N]] [--settle D]] [--changed]`.

use std::time::Duration;

use super::ctx::parse_duration;
use super::lifecycle::Lifecycle;
use super::Ctx;
use crate::error::Error;
use crate::op::Op;
use crate::phases::Canary;

/// Restart units: stop in reverse order, start in order, each gated on readiness; or --rolling; or only the --changed ones.
#[derive(Debug, clap::Args)]
#[command(
    mut_arg("all", |a| a.help("Every unit: master, workers and dependents; the database and the prerequisites are not restarted, only started if they are not running")),
    group(clap::ArgGroup::new("what").args(["all", "targets", "changed"]).multiple(true).required(true)),
    group(clap::ArgGroup::new("whole").args(["all", "changed"]).multiple(true))
)]
pub struct Args {
    #[command(flatten)]
    common: Lifecycle,
    /// Restart the master, then workers a batch at a time, each batch gated on readiness
    #[arg(long, requires = "whole")]
    rolling: bool,
    /// Only the running master and workers whose process started before their last restart-worthy change installed (status says restart needed), and new workers that never ran; "nothing changed" and exit 0 when none
    #[arg(long, conflicts_with = "targets")]
    changed: bool,
    /// With --rolling: restart N workers first (one of each kind that has twins when N is omitted), watch them for --hold (ready, still active, not restarted by Restart=), and stop the whole operation, the rest untouched, if one fails
    #[arg(long, value_name = "N", num_args = 0..=1, requires = "rolling", value_parser = clap::value_parser!(u32).range(1..))]
    canary: Option<Option<u32>>,
    /// How long canaries are watched before the rest
    #[arg(long, value_name = "DURATION", default_value = "30s", requires = "canary", value_parser = parse_duration)]
    hold: Duration,
    /// With --rolling: keep each batch of workers that have twins ready and watched for DURATION (still active, not restarted by Restart=, probe passing at the end) before the next batch is stopped, so that requests a proxy moved to the next batch while this one was down can finish; set it above your longest request. Default: none
    #[arg(long, value_name = "DURATION", requires = "rolling", value_parser = parse_duration)]
    settle: Option<Duration>,
    /// Workers per batch with --rolling
    #[arg(long, default_value_t = 1, value_name = "N", requires = "rolling", value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32, Error> {
    let mut req = args.common.request(Op::Restart);
    req.opts.rolling = args.rolling.then_some(args.batch as usize);
    req.opts.canary = args.canary.map(|n| Canary {
        count: n.map(|n| n as usize),
        hold: args.hold,
    });
    req.opts.settle = args.settle;
    req.changed = args.changed;
    super::lifecycle::run(ctx, req)
}

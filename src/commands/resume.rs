//! `orch resume [--all]`.

use std::path::PathBuf;
use std::time::Duration;

use super::common::{json, print, print_summary};
use super::ctx::parse_duration;
use super::Ctx;
use crate::error::Error;
use crate::exit;
use crate::lifecycle;
use crate::maintenance::{ResumeReport, ResumeScope};
use crate::model::Deployment;
use crate::ops::maintenance::ResumeRequest;
use crate::ui::output::Format;

/// End maintenance: unmask, start exactly the units that ran before (readiness-gated), remove the state file.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bound on the whole start
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Cap on jobs in flight [default: unlimited]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_parallel: Option<u32>,
    /// Read failure logs with `journalctl --root DIR`
    #[arg(long, env = "ORCH_JOURNAL_ROOT", value_name = "DIR")]
    journal_root: Option<PathBuf>,
    /// Start the whole deployment instead of the recorded set: the way
    /// out when the maintenance journal is damaged
    #[arg(long)]
    all: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32, Error> {
    let d = ctx.installed_deployment()?;
    let req = ResumeRequest {
        opts: lifecycle::Options {
            max_parallel: args.max_parallel.map(|n| n as usize),
            timeout: args.timeout,
            journal_root: args.journal_root,
            ..lifecycle::Options::default()
        },
        scope: match args.all {
            true => ResumeScope::Whole,
            false => ResumeScope::Recorded,
        },
    };
    let report = crate::ops::maintenance::resume(&d, &ctx.access, req, ctx)?;
    show(ctx, &d, &report)
}

/// The summary of the start, or that there was nothing to resume; the
/// exit code.
pub fn show(ctx: &Ctx, d: &Deployment, report: &ResumeReport) -> Result<i32, Error> {
    if let Some(s) = &report.summary {
        print_summary(ctx, s)?;
        return Ok(s.exit_code());
    }
    if ctx.output == Format::Json {
        json(&serde_json::json!({ "event": "summary", "report": report }))?;
    } else {
        print(&format!(
            "{} was not in maintenance; nothing to resume\n",
            d.name
        ))?;
    }
    Ok(exit::OK)
}

//! What the lifecycle verbs (`start`, `stop`, `restart`, `reload`) share:
//! their common flags, the typed request made from them, and the display
//! of the run and of how it ended.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::common::{print, print_summary, title};
use super::ctx::parse_duration;
use super::Ctx;
use crate::error::Error;
use crate::exit;
use crate::lifecycle::{self, Observer};
use crate::members::{Member, Selection};
use crate::op::Op;
use crate::ops::lifecycle::{Outcome, Request};
use crate::ui::output::Format;

// No doc comment on this struct: clap would take it as the about text of
// the verb it is flattened into.
#[derive(Debug, clap::Args)]
pub struct Lifecycle {
    /// Every unit of the deployment (what that means for each verb: its --help)
    #[arg(long, conflicts_with = "targets")]
    pub all: bool,
    /// Unit names, worker kinds, or master / workers / dependents / database / prerequisites; or --all
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Cap on jobs in flight [default: unlimited]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_parallel: Option<u32>,
    /// Bound on the whole operation (each unit is also bounded by its own timeouts); a failed unit's state and journal are read within what is left, or 0.5 s past it
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// On Ctrl+C or SIGTERM, cancel the jobs orch enqueued that systemd has not finished
    #[arg(long)]
    pub cancel_on_interrupt: bool,
    /// Read failure logs with `journalctl --root DIR` (e.g. a container's root)
    #[arg(long, env = "ORCH_JOURNAL_ROOT", value_name = "DIR")]
    pub journal_root: Option<PathBuf>,
    /// Act even though the deployment is in maintenance
    #[arg(long)]
    pub force: bool,
}

impl Lifecycle {
    /// The request of `op` with these flags; a verb adds its own.
    pub fn request(self, op: Op) -> Request {
        let selection = match self.all {
            true => Selection::All,
            false => Selection::Named(self.targets),
        };
        let mut req = Request::new(op, selection);
        req.opts = lifecycle::Options {
            max_parallel: self.max_parallel.map(|n| n as usize),
            timeout: self.timeout,
            journal_root: self.journal_root,
            ..lifecycle::Options::default()
        };
        req.cancel_on_interrupt = self.cancel_on_interrupt;
        req.force = self.force;
        req
    }
}

/// Runs the request on the deployment and prints how it ended.
pub fn run(ctx: &Ctx, req: Request) -> Result<i32, Error> {
    let d = ctx.installed_deployment()?;
    let changed = req.changed;
    let outcome = crate::ops::lifecycle::run(&d, &ctx.access, req, ctx)?;
    show(ctx, outcome, changed)
}

/// The live display, plain lines or JSON events of a lifecycle run.
impl crate::ops::lifecycle::Show for Ctx {
    fn observer(&self, op: Op, rolling: Option<usize>, members: &[Member]) -> Arc<dyn Observer> {
        let title = title(op.name(), op.leaves_stopped(), rolling, members);
        crate::ui::progress::observer(self.output, self.quiet, title)
    }
}

/// The summary of a run (`restart --changed` that found nothing says so),
/// and its exit code.
pub fn show(ctx: &Ctx, outcome: Outcome, changed: bool) -> Result<i32, Error> {
    match outcome {
        Outcome::Done(summary) if changed && summary.units.is_empty() && summary.ok => {
            match ctx.output {
                Format::Json => print_summary(ctx, &summary)?,
                Format::Human if ctx.quiet => {}
                Format::Human => print("restart --changed: nothing changed\n")?,
            }
            Ok(exit::OK)
        }
        Outcome::Done(summary) => {
            print_summary(ctx, &summary)?;
            Ok(summary.exit_code())
        }
        Outcome::NotStarted => {
            eprintln!("orch: interrupted before any job was enqueued");
            Ok(exit::INTERRUPTED)
        }
    }
}

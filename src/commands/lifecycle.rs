//! `orch start`, `stop`, `restart [--rolling]`, `reload [--or-restart]`.

use super::common::{print, print_summary, title};
use crate::args::{Global, Lifecycle};
use crate::error::Error;
use crate::exit;
use crate::lifecycle;
use crate::members::Selection;
use crate::model::Deployment;
use crate::op::Op;
use crate::ops::lifecycle::{Operation, Outcome, Request};
use crate::ui::output::Format;

/// What some verbs add to the common lifecycle flags.
#[derive(Debug, Clone, Default)]
pub struct VerbFlags {
    /// `restart --rolling --batch N`.
    pub rolling: Option<usize>,
    /// `reload --or-restart`.
    pub or_restart: bool,
    /// `restart --changed`: the whole deployment, filtered.
    pub changed: bool,
    /// `restart --rolling --canary [N] --hold D`.
    pub canary: Option<crate::phases::Canary>,
}

pub fn run(
    g: &Global,
    d: &Deployment,
    op: Op,
    a: &Lifecycle,
    extra: VerbFlags,
) -> Result<i32, Error> {
    let rolling = extra.rolling;
    let selection = if a.all || extra.changed {
        Selection::All
    } else {
        Selection::Named(a.targets.clone())
    };
    let access = g.access();
    let operation = Operation::new(d, &access, op, &selection)?;
    let req = Request {
        opts: lifecycle::Options {
            max_parallel: a.max_parallel.map(|n| n as usize),
            timeout: a.timeout,
            rolling,
            or_restart: extra.or_restart,
            canary: extra.canary,
            journal_root: a.journal_root.clone(),
            probe: Default::default(),
        },
        cancel_on_interrupt: a.cancel_on_interrupt,
        force: a.force,
        changed: extra.changed,
    };
    let title = title(op.name(), op.leaves_stopped(), rolling, operation.members());
    let observer = crate::ui::progress::observer(g.output, g.quiet, title);
    let outcome = operation.run(req, observer.clone());
    observer.finish();
    match outcome? {
        Outcome::Done(summary) if extra.changed && summary.units.is_empty() && summary.ok => {
            match g.output {
                Format::Json => print_summary(g, &summary)?,
                Format::Human if g.quiet => {}
                Format::Human => print("restart --changed: nothing changed\n")?,
            }
            Ok(exit::OK)
        }
        Outcome::Done(summary) => {
            print_summary(g, &summary)?;
            Ok(summary.exit_code())
        }
        Outcome::NotStarted => {
            eprintln!("orch: interrupted before any job was enqueued");
            Ok(exit::INTERRUPTED)
        }
    }
}

//! Printing shared by the commands: stdout, JSON lines, the lifecycle
//! summary (start, stop, restart, resume) and maintenance steps.

use std::sync::Arc;

use serde::Serialize;

use super::Ctx;
use crate::error::Error;
use crate::lifecycle::{Observer, Phase, Summary, UnitReport};
use crate::members::Member;
use crate::ops::{self, maintenance::Stage};
use crate::ui::output::{self, Format};

/// Writes to stdout; a closed pipe ends quietly.
pub fn print(text: &str) -> Result<(), Error> {
    output::text(text).map_err(Error::Output)
}

/// Prints one JSON document on a line.
pub fn json<T: Serialize>(value: &T) -> Result<(), Error> {
    output::json(value).map_err(Error::Output)
}

/// What the live display needs to know up front.
pub fn title(
    op: &str,
    leaves_stopped: bool,
    rolling: Option<usize>,
    members: &[Member],
) -> crate::ui::progress::Title {
    crate::ui::progress::Title {
        op: op.to_string(),
        leaves_stopped,
        rolling,
        kinds: members
            .iter()
            .filter_map(|m| Some((m.unit.clone(), m.kind.clone()?)))
            .collect(),
    }
}

/// Maintenance shows its steps as JSON lines, or lines on stderr; the stop
/// live on a terminal only (its plain and JSON output are its steps and
/// report), the resume as a lifecycle run is.
impl ops::maintenance::Show for Ctx {
    fn step(&self, step: &str, detail: &str) {
        match self.output {
            Format::Json => {
                let _ = output::json(
                    &serde_json::json!({ "event": "step", "step": step, "detail": detail }),
                );
            }
            Format::Human if !self.quiet => {
                crate::ui::live::eprintln_above(&format!("{step}: {detail}"))
            }
            Format::Human => {}
        }
    }

    fn observer(&self, stage: Stage, members: &[Member]) -> Arc<dyn Observer> {
        match stage {
            Stage::Stop => {
                let title = title("stop-for-maintenance", true, None, members);
                crate::ui::progress::live_only(self.output, self.quiet, title)
            }
            Stage::Resume => {
                let title = title("resume", false, None, members);
                crate::ui::progress::observer(self.output, self.quiet, title)
            }
        }
    }
}

/// The end of a lifecycle operation: the `summary` JSON event, or the
/// table of units and the headline.
pub fn print_summary(ctx: &Ctx, s: &Summary) -> Result<(), Error> {
    if ctx.output == Format::Json {
        #[derive(Serialize)]
        struct Final<'a> {
            event: &'static str,
            #[serde(flatten)]
            summary: &'a Summary,
        }
        return json(&Final {
            event: "summary",
            summary: s,
        });
    }
    // -q: nothing on success; on failure only what went wrong.
    if ctx.quiet && s.ok {
        return Ok(());
    }
    // After a live display (which showed every unit), the result once: the
    // headline and only what went wrong; -v for every unit, as in a log.
    let only_problems = ctx.quiet || (crate::ui::progress::is_live() && ctx.verbose == 0);
    let mut text = String::new();
    // A unit systemd had to SIGKILL is shown even when it is ready again.
    let shown = |u: &&UnitReport| !only_problems || !is_ok(u) || u.sigkilled_by_systemd;
    for u in s.units.iter().filter(shown) {
        text.push_str(&unit_line(u));
    }
    text.push_str(&headline(s));
    text.push('\n');
    if !s.lowest_ready.is_empty() {
        let kinds: Vec<String> = s
            .lowest_ready
            .iter()
            .map(|(kind, a)| format!("{kind} {}/{}", a.ready, a.of))
            .collect();
        text.push_str(&format!("lowest ready per kind: {}\n", kinds.join(", ")));
    }
    if !s.untouched.is_empty() {
        text.push_str(&format!(
            "not reached (left as they were): {}\n",
            s.untouched.join(", ")
        ));
    }
    if !s.running_jobs.is_empty() {
        text.push_str(&format!(
            "still running inside systemd: {}\n",
            s.running_jobs.join("; ")
        ));
    } else if s.interrupted {
        text.push_str("no job of orch's is still running inside systemd\n");
    }
    print(&text)
}

fn is_ok(u: &UnitReport) -> bool {
    matches!(u.phase, Phase::Ready | Phase::Stopped)
}

/// A unit's row, with what systemd said and its journal on failure.
fn unit_line(u: &UnitReport) -> String {
    let mut text = format!(
        "  {:<50} {:<8} {:>7.2}s",
        u.unit,
        u.phase.as_str(),
        u.elapsed_ms as f64 / 1000.0
    );
    if u.canary {
        text.push_str("  (canary)");
    }
    if let Some(e) = &u.error {
        text.push_str(&format!("  {e}"));
    }
    let mut facts = Vec::new();
    if let Some(r) = &u.result {
        facts.push(format!("result {r}"));
    }
    if let Some(x) = u.exit_status {
        facts.push(format!("exit status {x}"));
    }
    if u.sigkilled_by_systemd {
        facts.push("SIGKILLED by systemd: its stop outlived TimeoutStopSec".to_string());
    }
    if let (Some(a), Phase::Failed) = (&u.active_state, u.phase) {
        facts.push(format!("now {a}"));
    }
    if !facts.is_empty() {
        text.push_str(&format!(" [{}]", facts.join(", ")));
    }
    text.push('\n');
    for line in &u.journal {
        // The unit's own words: no control character reaches the terminal.
        let line = crate::logs::escape_controls(line);
        text.push_str(&format!("      | {line}\n"));
    }
    text
}

fn headline(s: &Summary) -> String {
    let verb = s.op.name();
    let secs = s.elapsed_ms as f64 / 1000.0;
    let ok = s.units.iter().filter(|u| is_ok(u)).count();
    if s.interrupted {
        format!("{verb} interrupted after {secs:.2}s")
    } else if s.ok {
        let done = if s.op.leaves_stopped() {
            "stopped"
        } else {
            "ready"
        };
        format!(
            "{verb}: {ok} of {} units {done} in {secs:.2}s",
            s.units.len()
        )
    } else {
        format!(
            "{verb} FAILED: {} failed, {} timed out, {ok} ok, in {secs:.2}s",
            s.failed, s.timed_out
        )
    }
}

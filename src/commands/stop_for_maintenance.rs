//! `orch stop-for-maintenance [-- CMD]`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::common::{json, print};
use super::ctx::parse_duration;
use super::Ctx;
use crate::error::{Error, UsageError};
use crate::exit;
use crate::lifecycle::Observer;
use crate::maintenance::StopReport;
use crate::members::Member;
use crate::model::Deployment;
use crate::ops::maintenance::{CommandReport, Journal, Ran, Stage, StopRequest, Stopped, Then};
use crate::ui::output::Format;

/// Record what runs, mask every unit at runtime, stop dependents, workers and master, and prove no process is left.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bound on the whole stop; units still running at its end are killed with SIGKILL [default: longest stop_timeout + 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Why, recorded in the state file and shown by status
    #[arg(long, value_name = "TEXT", default_value = "maintenance")]
    reason: String,
    /// Stop (and mask) the database unit too
    #[arg(long)]
    include_database: bool,
    /// With [database] roles: end the sessions of those roles still open once the stop bound ran out (pg_terminate_backend), and report them. Without it, such sessions fail the proof (exit 1) and the deployment stays in maintenance; rerun with this flag to complete it
    #[arg(long)]
    terminate_sessions: bool,
    /// With `-- CMD`: read failure logs of the resume with `journalctl --root DIR`
    #[arg(long, env = "ORCH_JOURNAL_ROOT", value_name = "DIR")]
    journal_root: Option<PathBuf>,
    /// After `--`: a command to run while the deployment is stopped, with
    /// ORCH_DEPLOYMENT and ORCH_MAINTENANCE_REASON set and its output shown.
    /// Exit 0: orch resumes. Otherwise (or interrupted) the deployment stays
    /// in maintenance and orch exits with the command's status
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32, Error> {
    let d = ctx.installed_deployment()?;
    // The reason goes into the journal and onto the terminal of whoever runs `status`.
    if args.reason.chars().any(char::is_control) {
        return Err(UsageError::ControlCharacters { flag: "--reason" }.into());
    }
    let then = (!args.command.is_empty()).then(|| Then {
        command: &args.command,
        stdout_to_stderr: ctx.output == Format::Json,
        journal_root: args.journal_root.clone(),
    });
    let req = StopRequest {
        reason: &args.reason,
        timeout: args.timeout,
        include_database: args.include_database,
        terminate_sessions: args.terminate_sessions,
        then,
    };
    let shown = Shown {
        ctx,
        d: &d,
        args: &args,
    };
    let done = match crate::ops::maintenance::stop(&d, &ctx.access, req, &shown)? {
        Stopped::Done(done) => *done,
        Stopped::Interrupted(journal) => return interrupted(ctx, &d, &journal, &args),
    };
    if !done.stop.ok {
        if !args.command.is_empty() {
            eprintln!("orch: {} is not proven stopped: the command was not run; it stays in maintenance (`orch resume` ends it)", d.name);
        }
        return Ok(exit::FAILURE);
    }
    match (done.command, done.resume) {
        (Some(_), Some(resumed)) => super::resume::show(ctx, &d, &resumed),
        (Some(ran), None) => Ok(ran.exit_code()),
        (None, _) => Ok(exit::OK),
    }
}

/// Ctrl+C (or SIGTERM) during the stop: where the deployment is, and the
/// exact command that finishes or undoes it; 130.
fn interrupted(ctx: &Ctx, d: &Deployment, journal: &Journal, args: &Args) -> Result<i32, Error> {
    let finish = "orch stop-for-maintenance";
    let (state, text) = match journal {
        Journal::NotRecorded => ("running", format!(
            "orch: interrupted before maintenance was recorded: nothing was masked or stopped; {} runs as before",
            d.name
        )),
        Journal::Recorded(s) => ("in-maintenance", format!(
            "orch: interrupted: {} is in maintenance since {} ({} units recorded), some units may still run and not all masks be loaded; \
             to finish: `{finish}` (it completes from the journal {}); to end it: `orch resume`",
            d.name, s.since_text, s.active.len(), crate::state::state_path(d).display()
        )),
        Journal::Unread(why) => ("unknown", format!(
            "orch: interrupted; the maintenance journal {} was not read ({why}): `orch status` says whether {} is in maintenance; \
             to finish: `{finish}`; to end it: `orch resume`",
            crate::state::state_path(d).display(), d.name
        )),
    };
    if ctx.output == Format::Json {
        json(
            &serde_json::json!({ "event": "interrupted", "state": state, "finish": finish, "undo": "orch resume" }),
        )?;
    }
    eprintln!("{text}");
    if !args.command.is_empty() {
        eprintln!("orch: the command after `--` was not run");
    }
    Ok(exit::INTERRUPTED)
}

/// How `stop-for-maintenance` shows the stop, CMD and the resume.
struct Shown<'a> {
    ctx: &'a Ctx,
    d: &'a Deployment,
    args: &'a Args,
}

impl crate::ops::maintenance::Show for Shown<'_> {
    fn step(&self, step: &str, detail: &str) {
        self.ctx.step(step, detail)
    }

    fn observer(&self, stage: Stage, members: &[Member]) -> Arc<dyn Observer> {
        self.ctx.observer(stage, members)
    }
}

impl crate::ops::maintenance::ShowStop for Shown<'_> {
    fn stopped(&self, report: &StopReport) -> Result<(), Error> {
        let ctx = self.ctx;
        if ctx.output == Format::Json {
            json(&serde_json::json!({ "event": "summary", "report": report }))?;
        } else if !(ctx.quiet && report.ok) {
            print(&human(self.d, report, ctx.verbose > 0))?;
        }
        Ok(())
    }

    /// CMD's end: a JSON event, and on stderr why orch resumes or not.
    fn ran(&self, r: &CommandReport, stop: &StopReport) -> Result<(), Error> {
        let (ctx, d, command) = (self.ctx, self.d, &self.args.command);
        let how = match &r.ran {
            Ran::Exited(c) => format!("exited with status {c}"),
            Ran::Signaled(s) => format!("was ended by signal {s}"),
            Ran::NotStarted(e) => format!("could not be started: {e}"),
        };
        let killed = match (r.leftovers, r.killed) {
            (true, true) => " and left processes in its group (killed with SIGKILL)",
            (true, false) => " and left processes in its group (they ended later)",
            (false, true) => " (killed with SIGKILL)",
            (false, false) => "",
        };
        if ctx.output == Format::Json {
            json(&serde_json::json!({
                "event": "command",
                "command": command,
                "exit_code": r.exit_code(),
                "interrupted": r.interrupted,
                "killed": r.killed,
                "leftovers": r.leftovers,
                "resuming": r.succeeded(),
            }))?;
        }
        if !r.succeeded() {
            let interrupted = if r.interrupted {
                "interrupted; it "
            } else {
                ""
            };
            eprintln!(
                "orch: `{}` {interrupted}{how}{killed}: {} stays in maintenance (state file {}); when it is fixed, run `orch resume`",
                command.join(" "),
                d.name,
                stop.state_file.display()
            );
        } else if !ctx.quiet && ctx.output == Format::Human {
            eprintln!("`{}` {how}: resuming {}", command.join(" "), d.name);
        }
        Ok(())
    }
}

/// The totals with the proof, and what is left; a row per unit only for
/// the units that needed a kill or are not proven stopped (every unit
/// with -v): one screen with 60 workers.
fn human(d: &Deployment, report: &StopReport, every_unit: bool) -> String {
    let mut text = String::new();
    let worth = |u: &&crate::maintenance::UnitProof| {
        every_unit || u.killed || u.sigkilled_by_systemd || report.left.contains(&u.unit)
    };
    for u in report.units.iter().filter(worth) {
        let killed = match (u.killed, u.sigkilled_by_systemd) {
            (true, _) => "  KILLED with SIGKILL",
            (false, true) => "  SIGKILLED by systemd: its stop outlived TimeoutStopSec",
            (false, false) => "",
        };
        let host = if d.is_multi_host() {
            format!("{:<12} ", u.host)
        } else {
            String::new()
        };
        text.push_str(&format!(
            "  {host}{:<50} {:<9} {} processes{killed}\n",
            u.unit,
            u.active_state,
            u.processes.map_or("unknown".to_string(), |n| n.to_string())
        ));
    }
    text.push_str(&totals(report));
    text.push('\n');
    if report.resumed_operation {
        text.push_str(&format!(
            "in maintenance since {} (reason: {}); state file {}\n",
            report.since,
            report.reason,
            report.state_file.display()
        ));
    }
    if !report.left.is_empty() {
        text.push_str(&format!("NOT PROVEN STOPPED: {}\n", report.left.join(", ")));
    }
    if let Some(p) = &report.sessions {
        text.push_str(&sessions(p));
    }
    for s in &report.stray_containers {
        let what = if s.stopped {
            "stopped"
        } else {
            "STILL RUNNING"
        };
        text.push_str(&format!(
            "stray container {} on host {} (outside every unit): {what}\n",
            s.name, s.host
        ));
    }
    text
}

/// The sessions orch ended, and those left (with what to do about them).
fn sessions(p: &crate::dbsessions::SessionsProof) -> String {
    let row = |s: &crate::dbsessions::Session| {
        format!(
            "pid {} of {} (application {:?}, from {}, {}, since {})",
            s.pid,
            s.role,
            s.application_name,
            s.client_addr.as_deref().unwrap_or("the local socket"),
            s.state.as_deref().unwrap_or("state unknown"),
            s.since.as_deref().unwrap_or("?")
        )
    };
    let mut text = String::new();
    for s in &p.terminated {
        text.push_str(&format!("terminated database session {}\n", row(s)));
    }
    for s in &p.left {
        text.push_str(&format!("DATABASE SESSION LEFT: {}\n", row(s)));
    }
    if !p.left.is_empty() {
        text.push_str(&format!(
            "NOT PROVEN STOPPED: PostgreSQL at {} still has sessions of {}: something outside the units still connects; stop it, or end them with `orch stop-for-maintenance --terminate-sessions`\n",
            p.database,
            p.roles.join(", ")
        ));
    }
    text
}

fn totals(report: &StopReport) -> String {
    let processes = report.processes_left();
    // "0 processes left" only when the container engine agrees with the cgroups.
    let running = report
        .stray_containers
        .iter()
        .filter(|s| !s.stopped)
        .count();
    let mut line = format!(
        "{} units stopped, {processes} processes left",
        report.units.len() - report.left.len(),
    );
    if running > 0 {
        line.push_str(&format!(", {running} stray containers still running"));
    }
    if let Some(p) = &report.sessions {
        line.push_str(&format!(
            ", {} database sessions of {}",
            p.left.len(),
            p.roles.join(", ")
        ));
    }
    if !report.killed.is_empty() {
        line.push_str(&format!("; killed {}", report.killed.join(", ")));
    }
    if !report.sigkilled_by_systemd.is_empty() {
        line.push_str(&format!(
            "; SIGKILLED by systemd (stop outlived TimeoutStopSec): {}",
            report.sigkilled_by_systemd.join(", ")
        ));
    }
    if let Some(db) = &report.database {
        let state = match db.active_state {
            crate::systemd::ActiveState::Active => "still running",
            ref other => other.as_str(),
        };
        line.push_str(&format!("; {} {state}", db.unit));
    }
    line
}

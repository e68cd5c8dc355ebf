//! `orch stop-for-maintenance` and `orch resume`.

use std::path::PathBuf;
use std::time::Duration;

use super::common::{json, print, print_summary, step_printer, title};
use crate::args::Global;
use crate::error::{Error, UsageError};
use crate::exit;
use crate::lifecycle;
use crate::maintenance::{ResumeScope, StopReport};
use crate::model::Deployment;
use crate::ops::maintenance::{CommandEnv, Journal, Ran, StopRequest, Stopped};
use crate::ui::output::Format;

/// The options of `stop-for-maintenance`.
pub struct StopArgs<'a> {
    pub timeout: Option<Duration>,
    pub reason: &'a str,
    pub include_database: bool,
    pub terminate_sessions: bool,
    /// For the resume after `-- CMD`.
    pub journal_root: &'a Option<PathBuf>,
    /// `-- CMD [ARGS…]`, or empty.
    pub command: &'a [String],
}

pub fn stop(g: &Global, d: &Deployment, args: StopArgs<'_>) -> Result<i32, Error> {
    // The reason goes into the journal and onto the terminal of whoever runs `status`.
    if args.reason.chars().any(char::is_control) {
        return Err(UsageError::ControlCharacters { flag: "--reason" }.into());
    }
    let req = StopRequest {
        reason: args.reason,
        timeout: args.timeout,
        include_database: args.include_database,
        terminate_sessions: args.terminate_sessions,
    };
    // With `-- CMD`, the lock is held from the first stop through CMD to the
    // end of the resume: no second operator's resume may start units while
    // CMD (the database upgrade) runs.
    let _held = match args.command.is_empty() {
        true => None,
        false => Some(crate::ops::maintenance::hold(d, &g.access())?),
    };
    let title = title(
        "stop-for-maintenance",
        true,
        None,
        &crate::members::members(d),
    );
    let observer = crate::ui::progress::live_only(g.output, g.quiet, title);
    let report =
        crate::ops::maintenance::stop(d, &g.access(), req, observer.as_ref(), &step_printer(g));
    observer.finish();
    let report = match report? {
        Stopped::Done(report) => *report,
        Stopped::Interrupted(journal) => return interrupted(g, d, &journal, &args),
    };
    if g.output == Format::Json {
        json(&serde_json::json!({ "event": "summary", "report": report }))?;
    } else if !(g.quiet && report.ok) {
        print(&human(d, &report, g.verbose > 0))?;
    }
    if !report.ok {
        if !args.command.is_empty() {
            eprintln!("orch: {} is not proven stopped: the command was not run; it stays in maintenance (`orch resume` ends it)", d.name);
        }
        return Ok(exit::FAILURE);
    }
    if args.command.is_empty() {
        return Ok(exit::OK);
    }
    around(g, d, &report, &args)
}

/// Ctrl+C (or SIGTERM) during the stop: where the deployment is, and the
/// exact command that finishes or undoes it; 130.
fn interrupted(
    g: &Global,
    d: &Deployment,
    journal: &Journal,
    args: &StopArgs<'_>,
) -> Result<i32, Error> {
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
    if g.output == Format::Json {
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

/// `-- CMD`: runs it in maintenance, then resumes only if it succeeded.
fn around(
    g: &Global,
    d: &Deployment,
    stop: &StopReport,
    args: &StopArgs<'_>,
) -> Result<i32, Error> {
    let env = CommandEnv {
        deployment: &d.name,
        reason: &stop.reason,
        stdout_to_stderr: g.output == Format::Json,
    };
    let r = crate::ops::maintenance::run_command(args.command, env)?;
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
    if g.output == Format::Json {
        json(&serde_json::json!({
            "event": "command",
            "command": args.command,
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
            args.command.join(" "),
            d.name,
            stop.state_file.display()
        );
        return Ok(r.exit_code());
    }
    if !g.quiet && g.output == Format::Human {
        eprintln!("`{}` {how}: resuming {}", args.command.join(" "), d.name);
    }
    resume(g, d, None, None, args.journal_root, ResumeScope::Recorded)
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

pub fn resume(
    g: &Global,
    d: &Deployment,
    timeout: Option<Duration>,
    max_parallel: Option<u32>,
    journal_root: &Option<PathBuf>,
    scope: crate::maintenance::ResumeScope,
) -> Result<i32, Error> {
    let opts = lifecycle::Options {
        canary: None,
        max_parallel: max_parallel.map(|n| n as usize),
        timeout,
        rolling: None,
        or_restart: false,
        journal_root: journal_root.clone(),
        probe: Default::default(),
    };
    let notify = step_printer(g);
    let title = title("resume", false, None, &crate::members::members(d));
    let observer = crate::ui::progress::observer(g.output, g.quiet, title);
    let report =
        crate::ops::maintenance::resume(d, &g.access(), opts, observer.clone(), &notify, scope);
    observer.finish();
    let report = report?;
    if let Some(s) = &report.summary {
        print_summary(g, s)?;
        return Ok(s.exit_code());
    }
    if g.output == Format::Json {
        json(&serde_json::json!({ "event": "summary", "report": report }))?;
    } else {
        print(&format!(
            "{} was not in maintenance; nothing to resume\n",
            d.name
        ))?;
    }
    Ok(exit::OK)
}

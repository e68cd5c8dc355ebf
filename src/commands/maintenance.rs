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
use crate::ops::maintenance::{CommandEnv, Ran, StopRequest};
use crate::output::{self, Format};

/// The options of `stop-for-maintenance`.
pub struct StopArgs<'a> {
    pub timeout: Option<Duration>,
    pub reason: &'a str,
    pub include_database: bool,
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
    };
    // With `-- CMD`, the lock is held from the first stop through CMD to the
    // end of the resume: no second operator's resume may start units while
    // CMD (the database upgrade) runs.
    let _held = match args.command.is_empty() {
        true => None,
        false => Some(crate::ops::maintenance::hold(d, &g.access())?),
    };
    let report = crate::ops::maintenance::stop(d, &g.access(), req, &step_printer(g))?;
    if g.output == Format::Json {
        json(&serde_json::json!({ "event": "summary", "report": report }))?;
    } else if !(g.quiet && report.ok) {
        print(&human(d, &report))?;
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

/// A row per unit with its processes, then the totals and what is left.
fn human(d: &Deployment, report: &StopReport) -> String {
    let mut text = String::new();
    for u in &report.units {
        let killed = if u.killed {
            "  KILLED with SIGKILL"
        } else {
            ""
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
    if !report.killed.is_empty() {
        line.push_str(&format!("; killed {}", report.killed.join(", ")));
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
    let title = title("resume", None, &crate::members::members(d));
    let observer = output::progress::observer(g.output, g.quiet, title);
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

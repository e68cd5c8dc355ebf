//! `orch stop-for-maintenance` and `orch resume`.

use std::path::PathBuf;
use std::time::Duration;

use super::common::{json, print, print_summary, step_printer, title};
use crate::cli::Global;
use crate::error::{Error, UsageError};
use crate::exit;
use crate::lifecycle;
use crate::maintenance::StopReport;
use crate::model::Deployment;
use crate::ops::maintenance::StopRequest;
use crate::output::{self, Format};

pub fn stop(
    g: &Global,
    d: &Deployment,
    timeout: Option<Duration>,
    reason: &str,
    include_database: bool,
) -> Result<i32, Error> {
    // The reason goes into the journal and onto the terminal of whoever runs `status`.
    if reason.chars().any(char::is_control) {
        return Err(UsageError::ControlCharacters { flag: "--reason" }.into());
    }
    let req = StopRequest {
        reason,
        timeout,
        include_database,
    };
    let report = crate::ops::maintenance::stop(d, &g.access(), req, &step_printer(g))?;
    if g.output == Format::Json {
        json(&serde_json::json!({ "event": "summary", "report": report }))?;
    } else if !(g.quiet && report.ok) {
        print(&human(d, &report))?;
    }
    Ok(if report.ok { exit::OK } else { exit::FAILURE })
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
    text
}

fn totals(report: &StopReport) -> String {
    let processes = report.processes_left();
    let mut line = format!(
        "{} units stopped, {processes} processes left",
        report.units.len() - report.left.len(),
    );
    if !report.killed.is_empty() {
        line.push_str(&format!("; killed {}", report.killed.join(", ")));
    }
    if let Some(db) = &report.database {
        let state = match db.active_state {
            crate::jobs::ActiveState::Active => "still running",
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
        max_parallel: max_parallel.map(|n| n as usize),
        timeout,
        rolling: None,
        or_restart: false,
        journal_root: journal_root.clone(),
        probe: Default::default(),
    };
    let notify = step_printer(g);
    let title = title("resume", None, &lifecycle::members(d));
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

//! The core promises operators buy orch for, each guarded by a test that fails
//! when the promise breaks (each was checked against a deliberate breakage of
//! orch's code: see docs/reliability.md, "Promises and the tests that guard
//! them"):
//! - stop order: every worker and dependent stopped before the master's stop
//!   begins, read from systemd's own job messages in the container's journal;
//! - "stopped" for maintenance means an empty control group: a process left
//!   behind in a stopped unit's cgroup is found, reported and killed;
//! - a failed resume keeps the maintenance journal, names the unit, and a
//!   second resume completes;
//! - a crash loop while probing is reported as such, long before the probe's
//!   bound.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::{Container, OutputBounded};

const FIXTURE: &str = "/usr/bin/python3 /opt/fixtures/worker.py --name {{ name }}";

/// systemd's catalog IDs for a unit's "Stopping …" and "Stopped …" messages.
const UNIT_STOPPING: &str = "de5b426a63be47a7b6ac3eaac82e2f6f";
const UNIT_STOPPED: &str = "9d1aaa27d60140bd96365438aad20286";

struct Setup {
    c: Container,
    cfg: PathBuf,
    /// Bound as /opt/mark in the container: files tests create to break units.
    marks: PathBuf,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

/// A deployment `fx`: a fake database, a master, `workers` (TOML with
/// `{FIXTURE}`), and a dependent `bridge.service` that orch does not render
/// (no `PartOf=`/`After=`: only orch orders it). `dropins` are written as
/// `UNIT.d/orch-test.conf` beside the rendered units before `install`.
fn setup(port: u16, workers: &str, dropins: &[(&str, &str)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let masks = dir.path().join("masks");
    let marks = dir.path().join("marks");
    std::fs::create_dir(&masks).unwrap();
    std::fs::create_dir(&marks).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let c = Container::builder()
        .bind_ro(&fixtures, "/opt/fixtures")
        .bind(&masks, "/run/systemd/system.control")
        .bind(&marks, "/opt/mark")
        .boot();
    for (name, args) in [
        ("fakedb.service", format!("--port {port}")),
        ("bridge.service", String::new()),
    ] {
        std::fs::write(
            c.unit_dir().join(name),
            format!("[Unit]\nDescription={name}\n[Service]\nExecStart=/usr/bin/python3 /opt/fixtures/worker.py --name {name} {args}\n"),
        )
        .unwrap();
    }
    for (unit, text) in dropins {
        let d = c.unit_dir().join(format!("{unit}.d"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("orch-test.conf"), text).unwrap();
    }
    let state = dir.path().join("state");
    let cfg = dir.path().join("orch.toml");
    let text = format!(
        r#"[deployment]
name = "fx"
state_dir = "{state}"
runtime_dir = "{masks}"

[database]
unit = "fakedb.service"
health = "tcp://127.0.0.1:{port}"

[master]
exec_start = "{FIXTURE} --port {mport}"
health = "http://127.0.0.1:{mport}/health"
stop_timeout = "5s"
{workers}

[[dependents]]
unit = "bridge.service"
"#,
        state = state.display(),
        masks = masks.display(),
        mport = port + 1,
        workers = workers.replace("{FIXTURE}", FIXTURE),
    );
    std::fs::write(&cfg, text).unwrap();
    orch_ok(&c, &cfg, &["install"]);
    Setup {
        c,
        cfg,
        marks,
        state,
        _dir: dir,
    }
}

fn generic(count: usize, port_base: u16, extra: &str) -> String {
    format!(
        r#"[[workers]]
kind = "generic"
count = {count}
port_base = {port_base}
exec_start = "{{FIXTURE}} --port {{{{ port }}}} {extra}"
health = "http://127.0.0.1:{{{{ port }}}}/health"
stop_timeout = "5s"
"#
    )
}

/// One job message of PID 1: which unit, Stopping or Stopped, when.
#[derive(Debug)]
struct JobMessage {
    unit: String,
    stopped: bool,
    at_us: u64,
}

/// systemd's own Stopping/Stopped messages since the container booted, from
/// its journal (`_PID=1`), in journal order.
fn stop_messages(c: &Container) -> Vec<JobMessage> {
    // journald may still hold what PID 1 just sent: have it written first.
    c.exec(&["journalctl", "--sync"]);
    let o = c.exec(&["journalctl", "--no-pager", "-o", "json", "_PID=1"]);
    assert!(
        o.status.success(),
        "journalctl in the container: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let id = v["MESSAGE_ID"].as_str()?;
            let stopped = match id {
                UNIT_STOPPING => false,
                UNIT_STOPPED => true,
                _ => return None,
            };
            Some(JobMessage {
                unit: v["UNIT"].as_str()?.to_string(),
                stopped,
                at_us: v["__MONOTONIC_TIMESTAMP"].as_str()?.parse().ok()?,
            })
        })
        .collect()
}

/// Asserts that, among the messages after `since_us`, every one of `before`
/// was Stopped before `master`'s Stopping began.
fn assert_stopped_before_master(msgs: &[JobMessage], since_us: u64, master: &str, before: &[&str]) {
    let recent: Vec<&JobMessage> = msgs.iter().filter(|m| m.at_us > since_us).collect();
    let shown = || {
        recent
            .iter()
            .map(|m| {
                format!(
                    "{:>12} {} {}",
                    m.at_us,
                    if m.stopped { "Stopped " } else { "Stopping" },
                    m.unit
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let master_stopping = recent
        .iter()
        .position(|m| m.unit == master && !m.stopped)
        .unwrap_or_else(|| panic!("no Stopping message for {master}:\n{}", shown()));
    for unit in before {
        let stopped = recent
            .iter()
            .position(|m| m.unit == *unit && m.stopped)
            .unwrap_or_else(|| panic!("no Stopped message for {unit}:\n{}", shown()));
        assert!(
            stopped < master_stopping,
            "{unit} stopped after {master} began to stop:\n{}",
            shown()
        );
    }
}

/// The container's monotonic clock in µs, as journald stamps it.
fn monotonic_us(c: &Container) -> u64 {
    let o = c.exec(&["cat", "/proc/uptime"]);
    let secs: f64 = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("uptime");
    (secs * 1e6) as u64
}

/// A dependent whose stop takes 2 s (its own `ExecStop=`), so the order of
/// the stop phases shows in systemd's journal.
const SLOW_BRIDGE_STOP: (&str, &str) = ("bridge.service", "[Service]\nExecStop=/bin/sleep 2\n");

const WORKERS: [&str; 2] = ["fx-worker-0-generic.service", "fx-worker-1-generic.service"];

#[test]
fn stop_all_and_restart_all_stop_workers_and_dependents_before_the_master() {
    let _ports = crate::ports::lease_groups(1);
    // The bridge's stop is slow and it has no After=: a merged phase would
    // show the master's stop beginning while the bridge still stops.
    let s = setup(
        crate::ports::at(0, 0),
        &generic(2, crate::ports::at(0, 10), ""),
        &[SLOW_BRIDGE_STOP],
    );
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    let mut before = WORKERS.to_vec();
    before.push("bridge.service");
    for op in ["restart", "stop"] {
        let since = monotonic_us(&s.c);
        orch_ok(&s.c, &s.cfg, &[op, "--all"]);
        assert_stopped_before_master(&stop_messages(&s.c), since, "fx.service", &before);
    }
}

#[test]
fn stop_for_maintenance_stops_workers_and_dependents_before_the_master() {
    let _ports = crate::ports::lease_groups(1);
    // The bridge's stop is slow and it has no After=: a merged phase would
    // show the master's stop beginning while the bridge still stops.
    let s = setup(
        crate::ports::at(0, 0),
        &generic(2, crate::ports::at(0, 10), ""),
        &[SLOW_BRIDGE_STOP],
    );
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    let since = monotonic_us(&s.c);
    orch_ok(&s.c, &s.cfg, &["stop-for-maintenance"]);
    let mut before = WORKERS.to_vec();
    before.push("bridge.service");
    assert_stopped_before_master(&stop_messages(&s.c), since, "fx.service", &before);
    orch_ok(&s.c, &s.cfg, &["resume"]);
}

/// PIDs of processes in the container whose command line contains `needle`.
fn processes_matching(c: &Container, needle: &str) -> Vec<String> {
    let o = c.exec(&["ps", "-eo", "pid=,args="]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains(needle) && !l.contains("ps -eo"))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn a_process_left_in_a_stopped_units_control_group_is_found_and_killed() {
    let _ports = crate::ports::lease_groups(1);
    // KillMode=process: stopping the unit ends only its main process; the
    // sleep started by ExecStartPost= stays in the unit's control group.
    let leaky = "fx-worker-0-generic.service";
    let s = setup(
        crate::ports::at(0, 0),
        &generic(2, crate::ports::at(0, 10), ""),
        &[(
            leaky,
            "[Service]\nKillMode=process\nExecStartPost=/bin/sh -c '/bin/sleep 100017 &'\n",
        )],
    );
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    orch_ok(&s.c, &s.cfg, &["stop", leaky]);
    assert_eq!(
        processes_matching(&s.c, "sleep 100017").len(),
        1,
        "the fixture must leave its sleep behind"
    );
    let o = orch_ok(&s.c, &s.cfg, &["stop-for-maintenance", "--output", "json"]);
    let report = maintenance_report(&o);
    assert_eq!(report["ok"], true, "{report}");
    let unit = report["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == leaky)
        .unwrap_or_else(|| panic!("{leaky} not in the report: {report}"));
    assert_eq!(unit["processes"], 0, "{unit}");
    assert_eq!(unit["killed"], true, "the kill must be reported: {unit}");
    assert!(
        report["killed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == leaky),
        "{report}"
    );
    // Independently of orch: no process of it is left in the container.
    let left = processes_matching(&s.c, "sleep 100017");
    assert!(left.is_empty(), "left behind: {left:?}");
    orch_ok(&s.c, &s.cfg, &["resume"]);
}

#[test]
fn a_failed_resume_keeps_the_journal_names_the_unit_and_can_be_retried() {
    let _ports = crate::ports::lease_groups(1);
    let s = setup(
        crate::ports::at(0, 0),
        &generic(
            2,
            crate::ports::at(0, 10),
            "--fail-if-exists /opt/mark/broken",
        ),
        &[],
    );
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    orch_ok(&s.c, &s.cfg, &["stop-for-maintenance"]);
    let journal = s.state.join("fx/maintenance.json");
    assert!(journal.is_file(), "no journal at {}", journal.display());
    let recorded = std::fs::read(&journal).unwrap();

    // The cause: every generic worker refuses to start.
    std::fs::write(s.marks.join("broken"), "").unwrap();
    let o = orch(&s.c, &s.cfg, &["resume"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "resume must fail: {text}");
    assert!(
        text.contains(WORKERS[0]),
        "the failing unit must be named: {text}"
    );
    assert_eq!(
        std::fs::read(&journal).ok(),
        Some(recorded),
        "the journal must be kept as it was after a failed resume: {text}"
    );

    // The cause is gone: a second resume brings back what was recorded.
    std::fs::remove_file(s.marks.join("broken")).unwrap();
    let o = orch_ok(&s.c, &s.cfg, &["resume", "--output", "json"]);
    assert!(!journal.exists(), "{}", String::from_utf8_lossy(&o.stdout));
    let status = json(&orch_ok(&s.c, &s.cfg, &["status", "--output", "json"]));
    let active: HashMap<&str, &str> = status["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["unit"].as_str().unwrap(),
                u["active_state"].as_str().unwrap(),
            )
        })
        .collect();
    for unit in WORKERS.iter().chain(&["fx.service", "bridge.service"]) {
        assert_eq!(active.get(unit), Some(&"active"), "{unit}: {status}");
    }
}

#[test]
fn a_crash_loop_while_probing_is_named_long_before_the_health_timeout() {
    let _ports = crate::ports::lease_groups(1);
    // Crashes 0.5 s after each start, restarted every 100 ms, start limit
    // lifted (so systemd's own start-limit-hit cannot be what ends it), and
    // its probe never passes: only the crash-loop check can end the wait
    // before health_timeout.
    let crashy = "fx-worker-2-crashy.service";
    let workers = format!(
        "{}[[workers]]\nkind = \"crashy\"\ncount = 1\nexec_start = \"{{FIXTURE}} --exit-after 0.5\"\n\
         restart = \"always\"\nrestart_sec = \"100ms\"\nhealth = \"tcp://127.0.0.1:1\"\nhealth_timeout = \"60s\"\n",
        generic(2, crate::ports::at(0, 10), "")
    );
    let s = setup(
        crate::ports::at(0, 0),
        &workers,
        &[(crashy, "[Unit]\nStartLimitIntervalSec=0\n")],
    );
    let t = Instant::now();
    let o = orch_cmd(&s.c, &s.cfg, &["start", "--all"])
        .output_within(Duration::from_secs(90))
        .unwrap();
    let took = t.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains(crashy) && l.contains("crash loop"))
        .unwrap_or_else(|| panic!("no line names {crashy} as a crash loop:\n{text}"));
    assert!(
        took < Duration::from_secs(20),
        "took {took:?} for a 60 s health_timeout: {line}"
    );
    let sum = summary(
        &orch_cmd(&s.c, &s.cfg, &["start", crashy, "--output", "json"])
            .output_within(Duration::from_secs(90))
            .unwrap(),
    );
    let unit = &sum["units"][0];
    assert_eq!(unit["phase"], "failed", "{unit}");
    assert!(
        unit["error"].as_str().unwrap_or("").contains("crash loop"),
        "{unit}"
    );
}

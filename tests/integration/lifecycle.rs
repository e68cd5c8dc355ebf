//! start / stop / restart / status against a real systemd, with fixture
//! processes (tests/fixtures/worker.py) that turn healthy after a delay.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::bus::{bus, Bus};
use crate::common::*;
use crate::support::{Container, OutputBounded};

const FIXTURE: &str =
    "/usr/bin/python3 /opt/fixtures/worker.py --name {{ name }} --log /opt/log/events.log";

type Setup = Fixtures;

/// Boots a container with the fixtures and a shared log folder, writes the
/// configuration (`{FIXTURE}` is replaced) and installs it.
fn setup(config: &str) -> Setup {
    let s = fixtures_container();
    std::fs::write(
        &s.cfg,
        crate::ports::fill(&config.replace("{FIXTURE}", FIXTURE)),
    )
    .unwrap();
    orch_ok(&s.c, &s.cfg, &["install"]);
    s
}

fn units_by_phase(s: &serde_json::Value) -> HashMap<String, String> {
    s["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["unit"].as_str().unwrap().to_string(),
                u["phase"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `(event, name) -> wall-clock time` from the fixtures' log; the last of each.
fn events(log: &Path) -> HashMap<(String, String), f64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            Some((
                (p.next()?.to_string(), p.next()?.to_string()),
                p.next()?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn restart_all_brings_every_unit_up_master_first() {
    let _ports = crate::ports::lease_groups(3);
    let s = setup(
        r#"
[deployment]
name = "fx"
[master]
exec_start = "{FIXTURE} --port {{ port }} --ready-after 1"
port = @P0@
health = "http://127.0.0.1:{{ port }}/health"
stop_timeout = "5s"
[[workers]]
kind = "generic"
count = 12
port_base = @P1@
exec_start = "{FIXTURE} --port {{ port }} --ready-after 1"
health = "http://localhost:{{ port }}/health"
stop_timeout = "5s"
[[workers]]
kind = "pusher"
count = 4
port_base = @P2@
exec_start = "{FIXTURE} --port {{ port }} --ready-after 0.5"
health = "tcp://127.0.0.1:{{ port }}"
stop_timeout = "5s"
"#,
    );
    // Twice: from stopped, then from running (the stop phase then really stops).
    for round in 0..2 {
        std::fs::remove_file(&s.log).ok();
        let o = orch_ok(&s.c, &s.cfg, &["restart", "--all", "--output", "json"]);
        let sum = summary(&o);
        assert_eq!(sum["ok"], true, "{sum}");
        let phases = units_by_phase(&sum);
        assert_eq!(phases.len(), 17, "{sum}");
        assert!(
            phases.values().all(|p| p == "ready"),
            "round {round}: {phases:?}"
        );

        // No worker started before the master was ready.
        assert_workers_started_after_the_master_was_ready(&s.log, 16, &format!("round {round}"));

        // NDJSON events come before the summary, one per line.
        let text = String::from_utf8_lossy(&o.stdout);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["event"], "unit");
        assert!(text.lines().any(|l| l.contains("\"phase\":\"probing\"")));
    }

    let o = orch_ok(&s.c, &s.cfg, &["status", "--output", "json"]);
    let v = json(&o);
    let rows = v["units"].as_array().unwrap();
    assert_eq!(rows.len(), 17);
    for r in rows {
        assert_eq!(r["active_state"], "active", "{r}");
        assert_eq!(r["health"], "ok", "{r}");
        assert!(r["main_pid"].as_u64().unwrap() > 1, "{r}");
        assert_eq!(r["restarts"], 0, "{r}");
    }

    // -q: nothing on success.
    let o = orch_ok(&s.c, &s.cfg, &["-q", "start", "--all"]);
    assert!(
        o.stdout.is_empty() && o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // stop --all: everything inactive, reverse order.
    let o = orch_ok(&s.c, &s.cfg, &["stop", "--all", "--output", "json"]);
    let sum = summary(&o);
    assert!(
        units_by_phase(&sum).values().all(|p| p == "stopped"),
        "{sum}"
    );
    let v = json(&orch_ok(&s.c, &s.cfg, &["status", "--output", "json"]));
    assert!(
        v["units"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["active_state"] == "inactive"),
        "{v}"
    );

    // A plain start --all from stopped: the master alone first, then the
    // workers (not in the master's phase, where its Wants= would start them
    // before it is ready).
    std::fs::remove_file(&s.log).ok();
    let o = orch_ok(&s.c, &s.cfg, &["start", "--all", "--output", "json"]);
    let sum = summary(&o);
    assert!(units_by_phase(&sum).values().all(|p| p == "ready"), "{sum}");
    assert_workers_started_after_the_master_was_ready(&s.log, 16, "start --all");
}

/// From the fixtures' log: `workers` workers started, none before the
/// master (`fx`) was ready.
fn assert_workers_started_after_the_master_was_ready(log: &Path, workers: usize, what: &str) {
    let ev = events(log);
    let master_ready = ev[&("ready".to_string(), "fx".to_string())];
    let starts: Vec<(&str, f64)> = ev
        .iter()
        .filter(|((e, n), _)| e == "start" && n.starts_with("fx-worker-"))
        .map(|((_, n), t)| (n.as_str(), *t))
        .collect();
    assert_eq!(starts.len(), workers, "{what}: {ev:?}");
    let (first, at) = starts
        .iter()
        .copied()
        .fold(("", f64::MAX), |a, b| if b.1 < a.1 { b } else { a });
    assert!(
        at >= master_ready,
        "{what}: {first} started {:.3}s before the master was ready",
        master_ready - at
    );
}

#[test]
fn failing_worker_is_reported_and_others_come_up() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(
        r#"
[deployment]
name = "fx"
[master]
exec_start = "{FIXTURE} --port @P0@"
health = "http://127.0.0.1:@P0@/health"
[[workers]]
kind = "generic"
count = 3
port_base = @P1@
exec_start = "{FIXTURE} --port {{ port }} --ready-after 0.3"
health = "http://127.0.0.1:{{ port }}/health"
[[workers]]
kind = "broken"
count = 1
exec_start = "/nonexistent/worker --serve"
restart = "no"
"#,
    );
    let o = orch(&s.c, &s.cfg, &["start", "--all", "--output", "json"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let sum = summary(&o);
    let phases = units_by_phase(&sum);
    assert_eq!(phases["fx-worker-3-broken.service"], "failed", "{sum}");
    for i in 0..3 {
        assert_eq!(
            phases[&format!("fx-worker-{i}-generic.service")],
            "ready",
            "{sum}"
        );
    }
    let broken = sum["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == "fx-worker-3-broken.service")
        .unwrap();
    assert_eq!(broken["job"], "failed", "{broken}");
    assert_eq!(broken["result"], "exit-code", "{broken}");
    assert_eq!(broken["exit_status"], 203, "EXIT_EXEC: {broken}");
    let journal = broken["journal"].as_array().unwrap();
    assert!(!journal.is_empty(), "journal lines expected: {broken}");
    assert!(
        journal
            .iter()
            .any(|l| l.as_str().unwrap().contains("fx-worker-3-broken")),
        "{broken}"
    );

    // The human report says the same.
    let o = orch(&s.c, &s.cfg, &["start", "broken"]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("fx-worker-3-broken.service")
            && text.contains("failed")
            && text.contains("exit status 203"),
        "{text}"
    );
}

#[test]
fn unhealthy_worker_times_out_with_exit_3() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(
        r#"
[deployment]
name = "fx"
[master]
exec_start = "{FIXTURE}"
[[workers]]
kind = "generic"
count = 2
port_base = @P0@
exec_start = "{FIXTURE} --port {{ port }}"
health = "http://127.0.0.1:{{ port }}/health"
[[workers]]
kind = "stuck"
count = 1
port_base = @P1@
exec_start = "{FIXTURE} --port {{ port }} --never-ready"
health = "http://127.0.0.1:{{ port }}/health"
health_timeout = "3s"
"#,
    );
    let t = Instant::now();
    // Its own bound: an unbounded probe wait fails here within 30 s, with
    // orch's output, instead of hanging the suite.
    let o = orch_cmd(&s.c, &s.cfg, &["start", "--all", "--output", "json"])
        .output_within(Duration::from_secs(30))
        .unwrap();
    let took = t.elapsed();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let sum = summary(&o);
    let phases = units_by_phase(&sum);
    assert_eq!(phases["fx-worker-2-stuck.service"], "timeout", "{sum}");
    assert_eq!(phases["fx-worker-0-generic.service"], "ready");
    assert!(
        took < Duration::from_secs(3 + 4),
        "took {took:?} for a 3 s health_timeout"
    );
    let stuck = sum["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == "fx-worker-2-stuck.service")
        .unwrap();
    assert!(
        stuck["error"].as_str().unwrap().contains("HTTP 503"),
        "{stuck}"
    );
}

#[test]
fn stop_of_a_unit_ignoring_sigterm_is_bounded_and_reports_the_kill() {
    let _ports = crate::ports::lease_groups(1);
    let s = setup(
        r#"
[deployment]
name = "fx"
[master]
exec_start = "{FIXTURE}"
[[workers]]
kind = "stubborn"
count = 1
port_base = @P0@
# Healthy only once the fixture runs (and so ignores SIGTERM).
exec_start = "{FIXTURE} --ignore-sigterm --port {{ port }}"
health = "http://127.0.0.1:{{ port }}/health"
stop_timeout = "2s"
"#,
    );
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    let t = Instant::now();
    let o = orch(&s.c, &s.cfg, &["stop", "stubborn", "--output", "json"]);
    let took = t.elapsed();
    let sum = summary(&o);
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(2 + 3),
        "took {took:?} for a 2 s stop_timeout: {sum}\n{}",
        s.c.journal("fx-worker-0-stubborn.service")
    );
    let u = &sum["units"][0];
    assert_eq!(u["unit"], "fx-worker-0-stubborn.service");
    assert_eq!(u["phase"], "stopped", "{u}");
    assert_eq!(u["result"], "timeout", "{u}");
    assert!(u["error"].as_str().unwrap().contains("SIGKILL"), "{u}");
    let rt = rt();
    rt.block_on(async {
        let sd = bus(&s.c).await;
        let procs = sd
            .manager
            .get_unit_processes("fx-worker-0-stubborn.service")
            .await
            .unwrap_or_default();
        assert!(procs.is_empty(), "{procs:?}");
    });
}

fn list_jobs(c: &Container) -> Vec<String> {
    rt().block_on(async {
        let sd = bus(c).await;
        sd.manager
            .list_jobs()
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.1)
            .filter(|u| u.starts_with("fx"))
            .collect()
    })
}

#[test]
fn sigint_exits_130_within_a_second_and_can_cancel_jobs() {
    let s = setup(
        r#"
[deployment]
name = "fx"
[master]
exec_start = "{FIXTURE}"
[[workers]]
kind = "slow"
count = 2
type = "notify"
exec_start = "{FIXTURE} --no-notify"
start_timeout = "60s"
"#,
    );
    for cancel in [false, true] {
        let mut args = vec!["restart", "--all", "--output", "json"];
        if cancel {
            args.push("--cancel-on-interrupt");
        }
        let mut child = orch_cmd(&s.c, &s.cfg, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read events until orch reports both slow units starting: their
        // start jobs are then queued in systemd (Type=notify, never ready).
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut seen = Vec::new();
        let mut line = String::new();
        while seen.len() < 2 {
            line.clear();
            assert!(
                std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
                "orch ended early: {line}"
            );
            let e: serde_json::Value = serde_json::from_str(&line).unwrap();
            if e["phase"] == "starting" && e["unit"].as_str().unwrap().contains("slow") {
                seen.push(e["unit"].as_str().unwrap().to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            list_jobs(&s.c)
                .iter()
                .filter(|u| u.contains("slow"))
                .count(),
            2,
            "slow start jobs queued"
        );
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let status = child.wait().unwrap();
        let took = t.elapsed();
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut rest).unwrap();
        let o = std::process::Output {
            status,
            stdout: rest,
            stderr: Vec::new(),
        };
        assert_eq!(o.status.code(), Some(130));
        assert!(
            took < Duration::from_secs(1),
            "exited {took:?} after SIGINT"
        );
        let sum = summary(&o);
        assert_eq!(sum["interrupted"], true);
        // Units cut short are in the summary, with where they were.
        let slow: Vec<&serde_json::Value> = sum["units"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["unit"].as_str().unwrap().contains("slow"))
            .collect();
        assert_eq!(slow.len(), 2, "{sum}");
        assert!(
            slow.iter().all(|u| u["phase"] == "starting"
                && u["error"]
                    .as_str()
                    .unwrap()
                    .contains("interrupted while starting")),
            "{sum}"
        );
        let running = sum["running_jobs"].as_array().unwrap();
        assert!(
            running
                .iter()
                .filter(|j| j.as_str().unwrap().contains("slow"))
                .count()
                == 2,
            "{sum}"
        );
        let left: Vec<String> = list_jobs(&s.c)
            .into_iter()
            .filter(|u| u.contains("slow"))
            .collect();
        if cancel {
            assert!(
                left.is_empty(),
                "jobs left after --cancel-on-interrupt: {left:?}"
            );
        } else {
            assert_eq!(
                left.len(),
                2,
                "without --cancel-on-interrupt the jobs keep running: {left:?}"
            );
        }
    }
}

#[test]
fn rolling_restart_never_has_more_than_batch_workers_down() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(
        r#"
[deployment]
name = "fx"
[master]
exec_start = "{FIXTURE} --port @P0@ --ready-after 0.3"
health = "http://127.0.0.1:@P0@/health"
[[workers]]
kind = "generic"
count = 8
port_base = @P1@
exec_start = "{FIXTURE} --port {{ port }} --ready-after 0.5"
health = "http://127.0.0.1:{{ port }}/health"
"#,
    );
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    let workers: Vec<String> = (0..8)
        .map(|i| format!("fx-worker-{i}-generic.service"))
        .collect();
    let rt = rt();
    // Connected, and every PID read, before orch starts: nothing can be missed.
    let (max_down, samples, pids_changed, child) = rt.block_on(async {
        let sd = connect(&s.c).await;
        let raw = bus(&s.c).await;
        let pats: Vec<&str> = workers.iter().map(String::as_str).collect();
        let before: Vec<u32> = orch::status::status(
            &sd,
            &orch::members::members(&orch::model::Deployment::load(&s.cfg, None).unwrap()),
            Default::default(),
        )
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.main_pid)
        .collect();
        let mut child = rolling_by_two(&s);
        let counts = running_while(&raw, &pats, &mut child).await;
        let (max_down, samples) = (8 - counts.iter().min().unwrap(), counts.len());
        let after: Vec<u32> = orch::status::status(
            &sd,
            &orch::members::members(&orch::model::Deployment::load(&s.cfg, None).unwrap()),
            Default::default(),
        )
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.main_pid)
        .collect();
        let changed = before.iter().all(|p| !after.contains(p));
        (max_down, samples, changed, child)
    });
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(pids_changed, "every unit was restarted");
    assert!(samples > 20, "too few samples ({samples}) to judge");
    // What a client sees: a worker serves nothing from its SIGTERM until
    // its successor logs `ready` (its /health is 503 until then), a span
    // of ~0.5 s that systemd's `active` (set at once for Type=exec) hides.
    let (max_unserved, restarts) = most_unserved(&s.log, "fx-worker-");
    assert_eq!(restarts, 8, "every worker's stop and ready logged once");
    assert!(
        (1..=2).contains(&max_unserved),
        "{max_unserved} workers were not serving at once with --batch 2"
    );
    assert!(
        max_down <= 2,
        "{max_down} workers were down at once with --batch 2 (systemd's view)"
    );
}

/// The most fixtures named `prefix*` not serving at once, from their own
/// log (`sigterm NAME T` then `ready NAME T` of the next process), and how
/// many such spans there were.
fn most_unserved(log: &std::path::Path, prefix: &str) -> (usize, usize) {
    let text = std::fs::read_to_string(log).unwrap();
    let mut edges: Vec<(f64, i32)> = Vec::new();
    let mut down: HashMap<String, f64> = HashMap::new();
    let mut spans = 0;
    for l in text.lines() {
        let p: Vec<&str> = l.split_whitespace().collect();
        let [event, name, t] = p[..] else { continue };
        if !name.starts_with(prefix) {
            continue;
        }
        let t: f64 = t.parse().unwrap();
        match event {
            "sigterm" | "sigint" => {
                down.insert(name.to_string(), t);
            }
            "ready" => {
                if let Some(from) = down.remove(name) {
                    edges.extend([(from, 1), (t, -1)]);
                    spans += 1;
                }
            }
            _ => {}
        }
    }
    assert!(down.is_empty(), "never ready again: {down:?}\n{text}");
    // Ends before starts at the same instant: touching spans do not overlap.
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0, 0);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    (most as usize, spans)
}

/// `restart --all --rolling --batch 2 --output json`, running.
// The caller waits for it (after sampling systemd while it runs).
#[allow(clippy::zombie_processes)]
fn rolling_by_two(s: &Setup) -> std::process::Child {
    let args = [
        "restart",
        "--all",
        "--rolling",
        "--batch",
        "2",
        "--output",
        "json",
    ];
    orch_cmd(&s.c, &s.cfg, &args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// At least this many samples from [`running_while`], whatever the host's
/// speed (the callers refuse to judge from fewer).
const MIN_SAMPLES: usize = 40;

/// How many of `units` are active and running, sampled from systemd every
/// 10 ms until `child` (an orch run) ends, and on until [`MIN_SAMPLES`]:
/// on a busy host one D-Bus round trip can take 150 ms, so a 2 s run gave
/// only a dozen samples. Samples after the run see its final state, which
/// must satisfy the same bound (nothing down beyond the batch).
async fn running_while(sd: &Bus, units: &[&str], child: &mut std::process::Child) -> Vec<usize> {
    let mut counts = Vec::new();
    let mut ended = false;
    loop {
        let listed = sd.manager.list_units_by_patterns(&[], units).await.unwrap();
        let running = listed
            .iter()
            .filter(|u| u.3 == "active" && u.4 == "running");
        counts.push(running.count());
        ended = ended || child.try_wait().unwrap().is_some();
        if ended && counts.len() >= MIN_SAMPLES {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The most units in flight at once, from a lifecycle command's NDJSON events.
fn max_in_flight(stdout: &[u8], prefix: &str) -> usize {
    let mut in_flight = std::collections::HashSet::new();
    let mut max = 0;
    for line in String::from_utf8_lossy(stdout).lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        let (Some(unit), Some(phase)) = (e["unit"].as_str(), e["phase"].as_str()) else {
            continue;
        };
        if !unit.starts_with(prefix) {
            continue;
        }
        match phase {
            "starting" | "stopping" => {
                in_flight.insert(unit.to_string());
            }
            "ready" | "stopped" | "failed" | "timeout" | "skipped" => {
                in_flight.remove(unit);
            }
            _ => {}
        }
        max = max.max(in_flight.len());
    }
    max
}

#[test]
fn max_parallel_caps_jobs_in_flight_and_timeout_bounds_everything() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(
        r#"
[deployment]
name = "fx"
[master]
exec_start = "{FIXTURE}"
[[workers]]
kind = "generic"
count = 6
port_base = @P0@
exec_start = "{FIXTURE} --port {{ port }} --ready-after 0.4"
health = "http://127.0.0.1:{{ port }}/health"
[[workers]]
kind = "stuck"
count = 1
port_base = @P1@
exec_start = "{FIXTURE} --port {{ port }} --never-ready"
health = "http://127.0.0.1:{{ port }}/health"
health_timeout = "60s"
"#,
    );
    let o = orch(
        &s.c,
        &s.cfg,
        &[
            "start",
            "generic",
            "--max-parallel",
            "2",
            "--output",
            "json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(
        max_in_flight(&o.stdout, "fx-worker-"),
        2,
        "--max-parallel 2"
    );
    let o = orch(&s.c, &s.cfg, &["restart", "generic", "--output", "json"]);
    assert!(o.status.success());
    assert_eq!(
        max_in_flight(&o.stdout, "fx-worker-"),
        6,
        "unlimited by default"
    );

    // The global --timeout cuts the 60 s health_timeout short: exit 3.
    // Timed from orch's first event, when the bound starts (see
    // timed_from_first_event): from the process's start, orch's startup and
    // D-Bus connect on a loaded host once took it past 5 s.
    let cmd = orch_cmd(
        &s.c,
        &s.cfg,
        &["start", "stuck", "--timeout", "2s", "--output", "json"],
    );
    let (status, text, took) = timed_from_first_event(cmd);
    assert_eq!(status.code(), Some(3), "{text}");
    // 2 s, the 0.5 s slice a report may take past it, and a margin.
    assert!(
        took < Duration::from_millis(3200),
        "took {took:?} with --timeout 2s:\n{text}"
    );
    let last = text.lines().last().unwrap_or_default();
    let sum: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(units_by_phase(&sum)["fx-worker-6-stuck.service"], "timeout");
}

#[test]
fn rolling_restart_stops_at_the_first_failure_and_names_what_is_left() {
    let _ports = crate::ports::lease_groups(1);
    let s = setup(
        r#"
[deployment]
name = "fx"
[master]
exec_start = "{FIXTURE}"
[[workers]]
kind = "generic"
count = 2
exec_start = "{FIXTURE}"
[[workers]]
kind = "flaky"
count = 2
restart = "no"
exec_start = "{FIXTURE} --port {{ port }} --fail-on-restart /opt/log/{{ name }}.started"
port_base = @P0@
health = "http://127.0.0.1:{{ port }}/health"
health_timeout = "10s"
"#,
    );
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    let pid_of = |unit: &str| -> u64 {
        let v = json(&orch_ok(&s.c, &s.cfg, &["status", "--output", "json"]));
        v["units"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["unit"] == unit)
            .unwrap()["main_pid"]
            .as_u64()
            .unwrap()
    };
    // Batches interleave kinds (generic 0, flaky 2, generic 1, flaky 3), so
    // the second batch fails and the last two are left as they were.
    let left = ["fx-worker-1-generic.service", "fx-worker-3-flaky.service"];
    let pids_before: Vec<u64> = left.iter().map(|u| pid_of(u)).collect();
    let o = orch(
        &s.c,
        &s.cfg,
        &["restart", "--all", "--rolling", "--output", "json"],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let sum = summary(&o);
    let phases = units_by_phase(&sum);
    assert_eq!(phases["fx-worker-0-generic.service"], "ready");
    assert_eq!(phases["fx-worker-2-flaky.service"], "failed", "{sum}");
    assert_eq!(sum["untouched"], serde_json::json!(left), "{sum}");
    for (unit, before) in left.iter().zip(&pids_before) {
        assert_eq!(
            pid_of(unit),
            *before,
            "{unit} must be left running as it was"
        );
        let line = sum["units"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["unit"] == *unit)
            .unwrap();
        assert_eq!(line["active_state"], "active", "what systemd says: {line}");
    }
    let text =
        String::from_utf8_lossy(&orch(&s.c, &s.cfg, &["restart", "--all", "--rolling"]).stdout)
            .to_string();
    assert!(
        text.contains(
            "not reached (left as they were): fx-worker-1-generic.service, fx-worker-3-flaky.service"
        ),
        "{text}"
    );
}

/// `restart --all` makes sure of the database before it stops anything: with
/// the database dead and unable to start, nothing of the deployment is
/// stopped, the exit is 1, and the database is named with its journal.
#[test]
fn restart_with_a_dead_database_stops_nothing_and_names_it() {
    let _ports = crate::ports::lease_groups(1);
    let s = setup(
        r#"
[deployment]
name = "fx"
[database]
unit = "fakedb.service"
health = "tcp://127.0.0.1:@P0@"
health_timeout = "10s"
[master]
exec_start = "{FIXTURE} --port @P0+1@"
health = "http://127.0.0.1:@P0+1@/health"
[[workers]]
kind = "generic"
count = 2
exec_start = "{FIXTURE}"
"#,
    );
    std::fs::write(
        s.c.unit_dir().join("fakedb.service"),
        crate::ports::fill("[Service]\nExecStart=/usr/bin/python3 /opt/fixtures/worker.py --name fakedb --port @P0@ --fail-if-exists /opt/log/db-broken\n"),
    )
    .unwrap();
    s.c.systemctl(&["daemon-reload"]);
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    let deployment = [
        "fx.service",
        "fx-worker-0-generic.service",
        "fx-worker-1-generic.service",
    ];
    let pids = |c: &Container| -> Vec<String> {
        deployment
            .iter()
            .map(|u| {
                let o = c.systemctl(&["show", "-P", "MainPID", u]);
                String::from_utf8_lossy(&o.stdout).trim().to_string()
            })
            .collect()
    };
    let before = pids(&s.c);
    assert!(before.iter().all(|p| p != "0"), "all running: {before:?}");
    // The database dies (killed: a stop job would take its Requires= dependents
    // down with it) and cannot come back.
    std::fs::write(s.log.parent().unwrap().join("db-broken"), "").unwrap();
    s.c.systemctl(&["kill", "-s", "KILL", "fakedb.service"]);

    let o = orch(&s.c, &s.cfg, &["restart", "--all", "--output", "json"]);
    let sum = summary(&o);
    assert_eq!(o.status.code(), Some(1), "{sum}");
    let phases = units_by_phase(&sum);
    assert_eq!(phases["fakedb.service"], "failed", "{sum}");
    let db = sum["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == "fakedb.service")
        .unwrap();
    assert!(
        db["journal"].as_array().is_some_and(|j| !j.is_empty()),
        "the database's journal lines: {db}"
    );
    assert_eq!(pids(&s.c), before, "nothing of the deployment was stopped");
    for u in deployment {
        assert_eq!(phases[u], "skipped", "{sum}");
    }
    let mut untouched: Vec<&str> = sum["untouched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    untouched.sort();
    let mut expected = deployment.to_vec();
    expected.sort();
    assert_eq!(untouched, expected, "left as they were, and said so: {sum}");
}

/// The master is started alone (`ignore-requirements`), which skips its own
/// `Requires=`: orch reads them from systemd and starts and awaits them
/// first (here a drop-in of the operator's, as for Redis).
#[test]
fn start_all_starts_what_the_master_requires() {
    let _ports = crate::ports::lease_groups(1);
    let s = setup(
        r#"
[deployment]
name = "fx"
[master]
exec_start = "{FIXTURE} --port @P0+11@"
health = "http://127.0.0.1:@P0+11@/health"
[[workers]]
kind = "generic"
count = 1
exec_start = "{FIXTURE}"
"#,
    );
    std::fs::write(
        s.c.unit_dir().join("fakeredis.service"),
        crate::ports::fill("[Service]\nExecStart=/usr/bin/python3 /opt/fixtures/worker.py --name fakeredis --port @P0+10@\n"),
    )
    .unwrap();
    let dropin = s.c.unit_dir().join("fx.service.d");
    std::fs::create_dir(&dropin).unwrap();
    std::fs::write(
        dropin.join("redis.conf"),
        "[Unit]\nRequires=fakeredis.service\nAfter=fakeredis.service\n",
    )
    .unwrap();
    s.c.systemctl(&["daemon-reload"]);

    let o = orch_ok(&s.c, &s.cfg, &["start", "--all", "--output", "json"]);
    let sum = summary(&o);
    let state = s.c.systemctl(&["is-active", "fakeredis.service"]);
    assert_eq!(
        String::from_utf8_lossy(&state.stdout).trim(),
        "active",
        "the master's Requires= must be started: {sum}"
    );
    let redis = sum["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == "fakeredis.service")
        .unwrap_or_else(|| panic!("the prerequisite is in the summary: {sum}"));
    assert_eq!(redis["role"], "prerequisite", "{redis}");
    assert_eq!(redis["phase"], "ready", "{redis}");
    // And status shows it, with the deployment's own units.
    let st = json(&orch_ok(&s.c, &s.cfg, &["status", "--output", "json"]));
    let row = st["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == "fakeredis.service")
        .unwrap_or_else(|| panic!("status shows the prerequisite: {st}"));
    assert_eq!(row["role"], "prerequisite", "{row}");
    assert_eq!(row["active_state"], "active", "{row}");
    // Never stopped by orch: stop --all leaves it running.
    orch_ok(&s.c, &s.cfg, &["stop", "--all"]);
    let state = s.c.systemctl(&["is-active", "fakeredis.service"]);
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "active");
}

/// Rolling batches interleave kinds: with two generic workers side by side
/// (as the docs advise) and `--batch 2`, never both down at once, sampled
/// from systemd while it runs; the summary states the lowest ready count.
#[test]
fn rolling_restart_never_takes_a_whole_kind_down() {
    let _ports = crate::ports::lease_groups(1);
    let s = setup(
        r#"
[deployment]
name = "fx"
[master]
exec_start = "{FIXTURE}"
[[workers]]
kind = "generic"
count = 2
port_base = @P0+20@
exec_start = "{FIXTURE} --port {{ port }} --ready-after 0.5"
health = "http://127.0.0.1:{{ port }}/health"
[[workers]]
kind = "media"
count = 1
exec_start = "{FIXTURE}"
[[workers]]
kind = "pusher"
count = 1
exec_start = "{FIXTURE}"
"#,
    );
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    let generic = ["fx-worker-0-generic.service", "fx-worker-1-generic.service"];
    let rt = rt();
    let (min_active, samples, child) = rt.block_on(async {
        let sd = bus(&s.c).await;
        let mut child = rolling_by_two(&s);
        let counts = running_while(&sd, &generic, &mut child).await;
        (*counts.iter().min().unwrap(), counts.len(), child)
    });
    let o = child.wait_with_output().unwrap();
    let sum = summary(&o);
    assert!(o.status.success(), "{sum}");
    assert!(samples > 10, "too few samples ({samples}) to judge");
    assert!(min_active >= 1, "both generic workers were down at once");
    assert_eq!(
        sum["lowest_ready"]["generic"],
        serde_json::json!({"ready": 1, "of": 2}),
        "{sum}"
    );
    assert_eq!(sum["lowest_ready"]["media"]["ready"], 0, "{sum}");
}

/// An umbrella database unit (as Debian's `postgresql.service`: a oneshot
/// that stays active while its cluster `postgresql@15-main` has died) is
/// judged with its members: `restart --all` brings a dead member back before
/// it stops anything; a member that cannot start fails the restart at once,
/// named with its journal, and nothing of the deployment is stopped.
#[test]
fn an_umbrella_database_is_judged_by_its_members() {
    let _ports = crate::ports::lease_groups(1);
    let s = setup(
        r#"
[deployment]
name = "fx"
[database]
unit = "umbrella.service"
health = "tcp://127.0.0.1:@P0+30@"
health_timeout = "20s"
[master]
exec_start = "{FIXTURE}"
[[workers]]
kind = "generic"
count = 1
exec_start = "{FIXTURE}"
"#,
    );
    let dir = s.c.unit_dir();
    std::fs::write(
        dir.join("umbrella.service"),
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("cluster@.service"),
        crate::ports::fill("[Unit]\nPartOf=umbrella.service\n[Service]\nExecStart=/usr/bin/python3 /opt/fixtures/worker.py --name %i --port @P0+30@ --fail-if-exists /opt/log/cluster-broken\n"),
    )
    .unwrap();
    s.c.systemctl(&["daemon-reload"]);
    // As at boot: the cluster is up (enabled on its own), then the umbrella.
    s.c.systemctl(&["start", "cluster@main.service", "umbrella.service"]);
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    let active = |u: &str| {
        String::from_utf8_lossy(&s.c.systemctl(&["is-active", u]).stdout)
            .trim()
            .to_string()
    };

    // The cluster dies; the umbrella stays active.
    s.c.systemctl(&["kill", "-s", "KILL", "cluster@main.service"]);
    assert_eq!(active("umbrella.service"), "active");
    let t = Instant::now();
    let o = orch(&s.c, &s.cfg, &["restart", "--all", "--output", "json"]);
    let sum = summary(&o);
    assert!(o.status.success(), "{sum}");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(active("cluster@main.service"), "active", "{sum}");
    assert_eq!(
        units_by_phase(&sum)["cluster@main.service"],
        "ready",
        "{sum}"
    );
    let st = json(&orch_ok(&s.c, &s.cfg, &["status", "--output", "json"]));
    let shown: Vec<&str> = st["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["unit"].as_str().unwrap())
        .collect();
    assert_eq!(
        shown[..2],
        ["cluster@main.service", "umbrella.service"],
        "{st}"
    );

    // A member that cannot come back: named, with its journal; nothing stopped.
    std::fs::write(s.log.parent().unwrap().join("cluster-broken"), "").unwrap();
    s.c.systemctl(&["kill", "-s", "KILL", "cluster@main.service"]);
    let o = orch(&s.c, &s.cfg, &["restart", "--all", "--output", "json"]);
    let sum = summary(&o);
    assert_eq!(o.status.code(), Some(1), "{sum}");
    let phases = units_by_phase(&sum);
    assert_eq!(phases["cluster@main.service"], "failed", "{sum}");
    assert_eq!(phases["umbrella.service"], "failed", "{sum}");
    let cluster = sum["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == "cluster@main.service")
        .unwrap();
    assert!(
        cluster["journal"].as_array().is_some_and(|j| j
            .iter()
            .any(|l| l.as_str().unwrap().contains("refusing to start"))),
        "the member's journal says why: {cluster}"
    );
    assert_eq!(active("fx.service"), "active", "nothing was stopped");
    assert_eq!(active("fx-worker-0-generic.service"), "active");
}

/// [`setup`], with maintenance's folders: `{STATE}` and `{MASKS}` in the
/// configuration are folders of the test's (the masks bound where the
/// container's systemd reads runtime masks), never the host's own.
fn setup_with_masks(config: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (logdir, masks, state) = (
        dir.path().join("log"),
        dir.path().join("masks"),
        dir.path().join("state"),
    );
    for d in [&logdir, &masks, &state] {
        std::fs::create_dir(d).unwrap();
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let c = Container::builder()
        .bind_ro(&fixtures, "/opt/fixtures")
        .bind(&logdir, "/opt/log")
        .bind(&masks, "/run/systemd/system.control")
        .boot();
    let cfg = dir.path().join("orch.toml");
    let text = config
        .replace("{FIXTURE}", FIXTURE)
        .replace("{STATE}", state.to_str().unwrap())
        .replace("{MASKS}", masks.to_str().unwrap());
    std::fs::write(&cfg, crate::ports::fill(&text)).unwrap();
    Setup {
        c,
        cfg,
        log: logdir.join("events.log"),
        _dir: dir,
    }
}

/// The fixture as a unit the deployment needs but does not own.
fn write_prerequisite(s: &Setup, unit: &str, args: &str) {
    let name = unit.trim_end_matches(".service");
    std::fs::write(
        s.c.unit_dir().join(unit),
        format!("[Service]\nExecStart=/usr/bin/python3 /opt/fixtures/worker.py --name {name} --log /opt/log/events.log {}\n", crate::ports::fill(args)),
    )
    .unwrap();
    s.c.systemctl(&["daemon-reload"]);
}

fn is_active(s: &Setup, unit: &str) -> String {
    let o = s.c.systemctl(&["is-active", unit]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `[[prerequisites]]`: rendered into the master (`Requires=`, or `Wants=`
/// with `requires = false`), started and awaited before the master by
/// `start --all` (once, though systemd also lists it in the master's
/// `Requires=`), shown by `status` with its probe, left running by `stop
/// --all` and by maintenance, stopped when named.
#[test]
fn declared_prerequisites_start_first_once_and_are_never_stopped_with_the_deployment() {
    let _ports = crate::ports::lease_groups(1);
    let s = setup_with_masks(
        r#"
[deployment]
name = "fx"
state_dir = "{STATE}"
runtime_dir = "{MASKS}"
[[prerequisites]]
unit = "fakeredis.service"
health = "http://127.0.0.1:@P0+10@/health"
[[prerequisites]]
unit = "fakeproxy"
requires = false
[master]
exec_start = "{FIXTURE} --port @P0+11@"
health = "http://127.0.0.1:@P0+11@/health"
[[workers]]
kind = "generic"
count = 1
exec_start = "{FIXTURE}"
"#,
    );
    write_prerequisite(&s, "fakeredis.service", "--port @P0+10@ --ready-after 1");
    write_prerequisite(&s, "fakeproxy.service", "");
    orch_ok(&s.c, &s.cfg, &["install"]);
    let master = std::fs::read_to_string(s.c.unit_dir().join("fx.service")).unwrap();
    assert!(
        master.contains("\nRequires=fakeredis.service\nAfter=fakeredis.service\n")
            && master.contains("\nWants=fakeproxy.service\nAfter=fakeproxy.service\n"),
        "{master}"
    );
    assert_eq!(is_active(&s, "fakeredis.service"), "inactive");

    let sum = summary(&orch_ok(
        &s.c,
        &s.cfg,
        &["start", "--all", "--output", "json"],
    ));
    let units = sum["units"].as_array().unwrap();
    for unit in ["fakeredis.service", "fakeproxy.service"] {
        let rows: Vec<_> = units.iter().filter(|u| u["unit"] == unit).collect();
        assert_eq!(rows.len(), 1, "{unit} once in the summary: {sum}");
        assert_eq!(
            (&rows[0]["role"], &rows[0]["phase"]),
            (&"prerequisite".into(), &"ready".into()),
            "{sum}"
        );
        assert_eq!(is_active(&s, unit), "active");
    }
    // Awaited (its probe passing, after --ready-after) before the master started.
    let ev = events(&s.log);
    let at = |event: &str, name: &str| {
        *ev.get(&(event.to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("no {event} of {name}: {ev:?}"))
    };
    let (redis_ready, master_start) = (at("ready", "fakeredis"), at("start", "fx"));
    assert!(redis_ready <= master_start, "{ev:?}");

    let st = json(&orch_ok(&s.c, &s.cfg, &["status", "--output", "json"]));
    let rows: Vec<_> = st["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["unit"] == "fakeredis.service")
        .collect();
    assert_eq!(rows.len(), 1, "once in status: {st}");
    assert_eq!(
        (&rows[0]["role"], &rows[0]["health"]),
        (&"prerequisite".into(), &"ok".into()),
        "status probes it: {st}"
    );

    // Awaited by a restart, never restarted by it.
    let pid = || {
        s.c.systemctl(&["show", "-P", "MainPID", "fakeredis.service"])
            .stdout
    };
    let before = pid();
    orch_ok(&s.c, &s.cfg, &["restart", "--all"]);
    assert_eq!(pid(), before, "restart --all left the prerequisite running");
    orch_ok(&s.c, &s.cfg, &["stop", "--all"]);
    assert_eq!(is_active(&s, "fx.service"), "inactive");
    assert_eq!(
        is_active(&s, "fakeredis.service"),
        "active",
        "stop --all leaves it"
    );
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    orch_ok(&s.c, &s.cfg, &["stop-for-maintenance", "--reason", "test"]);
    assert_eq!(is_active(&s, "fx.service"), "inactive");
    assert_eq!(
        is_active(&s, "fakeredis.service"),
        "active",
        "maintenance leaves it"
    );
    let load =
        s.c.systemctl(&["show", "-P", "LoadState", "fakeredis.service"]);
    assert_eq!(
        String::from_utf8_lossy(&load.stdout).trim(),
        "loaded",
        "never masked"
    );
    orch_ok(&s.c, &s.cfg, &["resume"]);
    assert_eq!(is_active(&s, "fx.service"), "active");
    // Named, it is stopped like the database.
    orch_ok(&s.c, &s.cfg, &["stop", "prerequisites"]);
    assert_eq!(is_active(&s, "fakeproxy.service"), "inactive");
}

/// A prerequisite whose probe fails: `restart --all` stops nothing of the
/// deployment and names it (exit 3: its probe never passed in its bound).
#[test]
fn restart_with_a_failing_prerequisite_stops_nothing_and_names_it() {
    let _ports = crate::ports::lease_groups(1);
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("redis-broken");
    let s = setup(&format!(
        r#"
[deployment]
name = "fx"
[[prerequisites]]
unit = "fakeredis"
health = "exec:test ! -e {}"
health_timeout = "3s"
[master]
exec_start = "{{FIXTURE}} --port @P0+21@"
health = "http://127.0.0.1:@P0+21@/health"
[[workers]]
kind = "generic"
count = 1
exec_start = "{{FIXTURE}}"
"#,
        broken.display()
    ));
    write_prerequisite(&s, "fakeredis.service", "");
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    let deployment = ["fx.service", "fx-worker-0-generic.service"];
    let pids = || -> Vec<String> {
        deployment
            .iter()
            .map(|u| {
                let o = s.c.systemctl(&["show", "-P", "MainPID", u]);
                String::from_utf8_lossy(&o.stdout).trim().to_string()
            })
            .collect()
    };
    let before = pids();
    assert!(before.iter().all(|p| p != "0"), "all running: {before:?}");
    std::fs::write(&broken, "").unwrap();

    let o = orch(&s.c, &s.cfg, &["restart", "--all", "--output", "json"]);
    let sum = summary(&o);
    assert!(matches!(o.status.code(), Some(1 | 3)), "{sum}");
    let phases = units_by_phase(&sum);
    assert!(
        matches!(phases["fakeredis.service"].as_str(), "failed" | "timeout"),
        "{sum}"
    );
    let redis = sum["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == "fakeredis.service")
        .unwrap();
    assert!(
        redis["error"].as_str().is_some_and(|e| !e.is_empty()),
        "says why: {redis}"
    );
    assert_eq!(pids(), before, "nothing of the deployment was stopped");
    for u in deployment {
        assert_eq!(phases[u], "skipped", "{sum}");
    }
}

/// Issue 21: `--timeout` bounds the whole operation, the failure report
/// included. The unit dies while being probed, 1.2 s into a `--timeout 2s`
/// start, and `journalctl` (a stand-in first on PATH) never answers: the
/// journal read gets what is left of the 2 s, not its own 3 s.
/// Runs `cmd` (stdout: orch's JSON events) and times it from its first
/// event, when the engine starts and with it `--timeout`: what comes before
/// (process start, config, lock, D-Bus connect, bounded by --call-timeout)
/// measures the host, not the bound. Killed after 30 s: a hang is a
/// failure, not a stuck suite.
fn timed_from_first_event(
    mut cmd: std::process::Command,
) -> (std::process::ExitStatus, String, Duration) {
    use std::io::BufRead;
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // The child is reaped only after `done` is set, so its PID cannot be
    // reused before.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    std::thread::spawn({
        let done = done.clone();
        move || {
            std::thread::sleep(Duration::from_secs(30));
            if !done.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    });
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("an event").unwrap();
    let t = Instant::now();
    let mut text = first;
    for l in lines {
        text.push('\n');
        text.push_str(&l.unwrap());
    }
    let took = t.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    (child.wait().unwrap(), text, took)
}

#[test]
fn a_failing_start_ends_within_its_timeout_even_when_the_journal_hangs() {
    let _ports = crate::ports::lease_groups(1);
    let s = setup(
        r#"
[deployment]
name = "fx"
[master]
exec_start = "/bin/sh -c 'sleep 1.2; exit 1'"
restart = "no"
health = "tcp://127.0.0.1:@P0@"
"#,
    );
    let bin = s._dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("journalctl");
    std::fs::write(&fake, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut cmd = orch_cmd(
        &s.c,
        &s.cfg,
        &["start", "--all", "--timeout", "2s", "--output", "json"],
    );
    cmd.env("PATH", path);
    // Timed from orch's first event (the engine starts, and with it the
    // 2 s): connecting before it is bounded by --call-timeout, not by
    // --timeout, and takes seconds on a loaded host.
    let (status, text, took) = timed_from_first_event(cmd);
    eprintln!("a failing start --timeout 2s with a hanging journalctl took {took:?}");
    assert_eq!(status.code(), Some(1), "{text}");
    let last = text.lines().last().unwrap_or_default();
    let sum: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(units_by_phase(&sum)["fx.service"], "failed", "{text}");
    // 2 s, the 0.5 s slice a report may take past it, and a margin.
    assert!(
        took < Duration::from_millis(3200),
        "took {took:?} with --timeout 2s:\n{text}"
    );
}

/// As root, `status` reads systemd's state over its private socket, peer to
/// peer: it answers with the bus out of reach, and falls back to the bus
/// when the socket does not answer.
#[test]
fn status_reads_over_systemds_private_socket_and_falls_back_to_the_bus() {
    let s = setup(
        r#"
[deployment]
name = "private"
[master]
exec_start = "/bin/sleep infinity"
[[workers]]
kind = "generic"
count = 3
exec_start = "/bin/sleep infinity"
"#,
    );
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    let status = |bus: &str, socket: &str| {
        let mut cmd = orch_cmd_on(&s.c, &s.cfg, bus, &["--systemd-socket", socket]);
        in_pid_namespace(&s.c, cmd.args(["status", "--output", "json"]))
            .output_bounded()
            .expect("run orch")
    };
    let (no_bus, private) = ("unix:path=/nonexistent/bus", private_socket(&s.c));

    // The bus is out of reach: only the private socket can answer.
    let v = json(&assert_orch_ok(status(no_bus, &private), &["status"]));
    let rows = v["units"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{v}");
    for r in rows {
        assert_eq!(r["active_state"], "active", "{r}");
        assert!(r["main_pid"].as_u64().unwrap() > 1, "{r}");
    }

    // A socket that does not answer: the bus does, with the same rows.
    let v2 = json(&assert_orch_ok(
        status(&s.c.bus_address(), "/nonexistent/private"),
        &["status"],
    ));
    let pids = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["main_pid"].clone())
            .collect()
    };
    assert_eq!(pids(&v), pids(&v2));

    // Neither answers: the bus's error, not the socket's.
    let o = status(no_bus, "/nonexistent/private");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/bus"), "{err}");
}

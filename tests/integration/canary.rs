//! `restart --rolling --canary` (issue 26 part 2) against a real systemd:
//! canaries restarted and watched before the rest; a failing one stops the
//! operation with the rest untouched. And `--settle`: each batch watched
//! before the next is stopped, with the same verdicts.

use std::collections::HashMap;

use crate::common::{fixtures_container, json, orch, orch_ok, summary, Fixtures};

const FIXTURE: &str = "/usr/bin/python3 /opt/fixtures/worker.py --name {{ name }}";

/// A master, three generic workers with a health probe (whose command ends
/// with `extra`) and one persister: the state folder is the test's own.
fn write_config(s: &Fixtures, extra: &str) {
    let state = s.cfg.parent().unwrap().join("state");
    let text = format!(
        r#"[deployment]
name = "cy"
state_dir = "{state}"
[master]
exec_start = "{FIXTURE}"
stop_timeout = "5s"
[[workers]]
kind = "persister"
count = 1
exec_start = "{FIXTURE}"
stop_timeout = "5s"
[[workers]]
kind = "generic"
count = 3
exec_start = "{FIXTURE} --port {{{{ port }}}} {extra}"
port_base = @P0@
health = "http://127.0.0.1:{{{{ port }}}}/health"
health_timeout = "10s"
restart = "on-failure"
restart_sec = "500ms"
stop_timeout = "5s"
"#,
        state = state.display(),
    );
    std::fs::write(&s.cfg, crate::ports::fill(&text)).unwrap();
}

const GENERIC: [&str; 3] = [
    "cy-worker-1-generic.service",
    "cy-worker-2-generic.service",
    "cy-worker-3-generic.service",
];

fn pids(s: &Fixtures) -> HashMap<String, u64> {
    let v = json(&orch_ok(&s.c, &s.cfg, &["status", "--output", "json"]));
    v["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["unit"].as_str().unwrap().to_string(),
                r["main_pid"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The deployment installed and started, then a new release of the
/// generic workers (their command ending with `release`) installed, not
/// restarted: the PIDs before the rollout.
fn running_then_released(s: &Fixtures, release: &str) -> HashMap<String, u64> {
    write_config(s, "");
    orch_ok(&s.c, &s.cfg, &["install"]);
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    write_config(s, release);
    orch_ok(&s.c, &s.cfg, &["install"]);
    pids(s)
}

/// The unit events of an NDJSON run: (unit, phase, stage, elapsed_ms).
fn events(o: &std::process::Output) -> Vec<(String, String, String, u64)> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "unit")
        .map(|v| {
            (
                v["unit"].as_str().unwrap().to_string(),
                v["phase"].as_str().unwrap().to_string(),
                v["stage"].as_str().unwrap_or("").to_string(),
                v["elapsed_ms"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn line<'a>(sum: &'a serde_json::Value, unit: &str) -> &'a serde_json::Value {
    sum["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == unit)
        .unwrap_or_else(|| panic!("no {unit} in {sum}"))
}

#[test]
fn a_good_canary_is_watched_for_the_hold_then_the_rest_rolls() {
    let _ports = crate::ports::lease_groups(1);
    let s = fixtures_container();
    // A new release of the generic workers only.
    let before = running_then_released(&s, "--ready-after 0.2");

    let o = orch_ok(
        &s.c,
        &s.cfg,
        &[
            "restart",
            "--rolling",
            "--changed",
            "--canary",
            "--hold",
            "3s",
            "--output",
            "json",
        ],
    );
    let sum = summary(&o);
    assert_eq!(sum["ok"], true, "{sum}");
    let after = pids(&s);
    for u in GENERIC {
        assert!(
            after[u] > 0 && after[u] != before[u],
            "{u} restarted: {sum}"
        );
    }
    for u in ["cy.service", "cy-worker-0-persister.service"] {
        assert_eq!(after[u], before[u], "{u} unchanged, not restarted");
    }
    assert_eq!(line(&sum, GENERIC[0])["canary"], true, "{sum}");
    assert!(line(&sum, GENERIC[1]).get("canary").is_none(), "{sum}");

    // The canary's events say so; the rest starts after its hold.
    let ev = events(&o);
    let at = |unit: &str, phase: &str| {
        ev.iter()
            .find(|e| e.0 == unit && e.1 == phase)
            .unwrap_or_else(|| panic!("no {phase} event of {unit}: {ev:?}"))
            .clone()
    };
    let watching = at(GENERIC[0], "watching");
    assert_eq!(watching.2, "canary", "{ev:?}");
    let rest_from = at(GENERIC[1], "starting")
        .3
        .min(at(GENERIC[2], "starting").3);
    assert!(
        rest_from >= watching.3 + 3000,
        "the rest began {rest_from} ms in, the hold at {} ms: {ev:?}",
        watching.3
    );
    assert!(ev
        .iter()
        .filter(|e| e.0 != GENERIC[0])
        .all(|e| e.2.is_empty()));
}

#[test]
fn a_canary_that_crash_loops_after_readiness_stops_the_rollout() {
    let _ports = crate::ports::lease_groups(1);
    let s = fixtures_container();
    // A bad release: ready, then a crash 1.5 s later, restarted by Restart=.
    let before = running_then_released(&s, "--exit-after 1.5");

    let o = orch(
        &s.c,
        &s.cfg,
        &[
            "restart",
            "--rolling",
            "--changed",
            "--canary",
            "1",
            "--hold",
            "5s",
            "--output",
            "json",
        ],
    );
    let canary = stopped_at_the_first(&s, &o, &before);
    assert_eq!(canary["canary"], true, "{canary}");
    let why = canary["error"].as_str().unwrap();
    assert!(
        why.contains("crash loop") || why.contains("the unit is"),
        "{why}"
    );
    let text = String::from_utf8_lossy(
        &orch(
            &s.c,
            &s.cfg,
            &[
                "restart",
                "--rolling",
                "--changed",
                "--canary",
                "--hold",
                "5s",
            ],
        )
        .stdout,
    )
    .to_string();
    assert!(
        text.contains("canary"),
        "human summary names the canary: {text}"
    );
}

/// Every event of `unit` in `phase`: (detail, elapsed_ms).
fn each(o: &std::process::Output, unit: &str, phase: &str) -> Vec<(String, u64)> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "unit" && v["unit"] == unit && v["phase"] == phase)
        .map(|v| {
            let detail = v["detail"].as_str().unwrap_or("").to_string();
            (detail, v["elapsed_ms"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn each_batch_settles_before_the_next_is_stopped() {
    let _ports = crate::ports::lease_groups(1);
    let s = fixtures_container();
    let before = running_then_released(&s, "--ready-after 0.2");

    let args = ["restart", "--rolling", "--changed", "--settle", "2s"];
    let o = orch_ok(&s.c, &s.cfg, &[&args[..], &["--output", "json"]].concat());
    let sum = summary(&o);
    assert_eq!(sum["ok"], true, "{sum}");
    let after = pids(&s);
    assert!(GENERIC.iter().all(|u| after[*u] != before[*u]), "{sum}");
    // Batches of one (at most two of three generic workers down): the
    // next batch's restart begins 2 s or more after this one was ready,
    // once the watch that began at its readiness has ended.
    for pair in GENERIC.windows(2) {
        let ready = each(&o, pair[0], "ready")[0].1;
        let watching = each(&o, pair[0], "watching");
        assert_eq!(watching.len(), 1, "{pair:?}: {watching:?}");
        assert_eq!(watching[0].0, "settle 2s", "{watching:?}");
        let next = each(&o, pair[1], "starting")[0].1;
        assert!(
            next >= ready + 2000,
            "{} restarted {next} ms in, {} was ready at {ready} ms",
            pair[1],
            pair[0]
        );
    }
    // After the last batch nothing is stopped: nothing to settle.
    assert!(each(&o, GENERIC[2], "watching").is_empty(), "{sum}");
}

#[test]
fn a_batch_that_crashes_while_it_settles_stops_the_rollout() {
    let _ports = crate::ports::lease_groups(1);
    let s = fixtures_container();
    // Ready, then a crash 1.5 s later, restarted by Restart=.
    let before = running_then_released(&s, "--exit-after 1.5");

    let o = orch(
        &s.c,
        &s.cfg,
        &[
            "restart",
            "--rolling",
            "--changed",
            "--settle",
            "5s",
            "--output",
            "json",
        ],
    );
    let first = stopped_at_the_first(&s, &o, &before);
    let why = first["error"].as_str().unwrap();
    assert!(why.contains("into its settle time"), "{why}");
    assert!(why.contains("the next batches were not started"), "{why}");
}

/// A rollout `o` that stopped at the first generic worker, the crashing
/// release's (exit 1, its own journal in the report), the other generic
/// workers untouched and still running their old process: its summary line.
fn stopped_at_the_first(
    s: &Fixtures,
    o: &std::process::Output,
    before: &HashMap<String, u64>,
) -> serde_json::Value {
    let sum = summary(o);
    assert_eq!(o.status.code(), Some(1), "{sum}");
    let first = line(&sum, GENERIC[0]).clone();
    assert_eq!(first["phase"], "failed", "{sum}");
    let journal = first["journal"].as_array().expect("its journal");
    assert!(
        journal
            .iter()
            .any(|l| l.as_str().unwrap().contains("crashing")),
        "its own journal lines: {first}"
    );
    rest_untouched(s, &sum, before);
    first
}

/// The generic workers after the first are `untouched` in summary `sum`,
/// and still run the process they ran `before`.
fn rest_untouched(s: &Fixtures, sum: &serde_json::Value, before: &HashMap<String, u64>) {
    assert_eq!(sum["untouched"], serde_json::json!(&GENERIC[1..]), "{sum}");
    let after = pids(s);
    for u in &GENERIC[1..] {
        assert_eq!(after[*u], before[*u], "{u} untouched: {sum}");
    }
}

/// One GET of `/work?ms=MS` on 127.0.0.1:`port`: `Ok` on a 200, `Err` with
/// what happened otherwise (refused, or cut before any byte of a response).
fn work(port: u16, ms: u64) -> Result<(), String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let bound = std::time::Duration::from_secs(5);
    let mut s = std::net::TcpStream::connect_timeout(&addr, bound)
        .map_err(|e| format!("{port}: connect: {e}"))?;
    s.set_read_timeout(Some(bound + std::time::Duration::from_millis(ms)))
        .unwrap();
    let req = format!("GET /work?ms={ms} HTTP/1.0\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("{port}: write: {e}"))?;
    let mut answer = String::new();
    match s.read_to_string(&mut answer) {
        Ok(_) if answer.starts_with("HTTP/1.0 200") => Ok(()),
        Ok(_) => Err(format!("{port}: answered {answer:?}")),
        Err(e) => Err(format!("{port}: read: {e}")),
    }
}

/// The test's reverse proxy: the first generic worker with the second as
/// its backup (nginx's `backup`): a request the first refuses or cuts is
/// sent once to the second. Each outcome: Ok(retried) or Err(why).
fn proxy(
    (first, backup): (u16, u16),
    delay: std::time::Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<Result<bool, String>> {
    std::thread::sleep(delay);
    let mut out = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        out.push(match work(first, 1000) {
            Ok(()) => Ok(false),
            Err(a) => work(backup, 1000)
                .map(|()| true)
                .map_err(|b| format!("{a}; retried: {b}")),
        });
    }
    out
}

/// Why `--settle` exists: while the first batch restarted, the proxy sent
/// its requests to the second generic worker; without a settle time orch
/// stops that worker the moment the first is ready, cutting what it still
/// serves (both tries of a request fail). With `--settle 3s` (requests take
/// 1 s) none fails. The workers listen only once ready, as Synapse's do.
#[test]
fn requests_moved_to_the_next_batch_finish_within_the_settle_time() {
    let _ports = crate::ports::lease_groups(1);
    let s = fixtures_container();
    write_config(&s, "--ready-after 0.5 --listen-when-ready");
    orch_ok(&s.c, &s.cfg, &["install"]);
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let upstreams = (crate::ports::at(0, 0), crate::ports::at(0, 1));
    let (o, seen) = std::thread::scope(|scope| {
        // Staggered by a quarter of a request: some client connects every
        // 250 ms, so the first worker's time down (over 0.5 s: it listens
        // once ready) always meets one, and its retry is on the backup when
        // the first is ready again.
        let clients: Vec<_> = (0..4u64)
            .map(|i| {
                let delay = std::time::Duration::from_millis(250 * i);
                let stop = &stop;
                scope.spawn(move || proxy(upstreams, delay, stop))
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_secs(1));
        let args = ["restart", "--all", "--rolling", "--settle", "3s"];
        let o = orch(&s.c, &s.cfg, &[&args[..], &["--output", "json"]].concat());
        std::thread::sleep(std::time::Duration::from_secs(1));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen: Vec<_> = clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        (o, seen)
    });
    let sum = summary(&o);
    assert_eq!(o.status.code(), Some(0), "{sum}");
    let failed: Vec<&String> = seen.iter().filter_map(|r| r.as_ref().err()).collect();
    let retried = seen.iter().filter(|r| matches!(r, Ok(true))).count();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:#?}",
        failed.len(),
        seen.len()
    );
    // Not vacuous: the backup served while the first worker restarted.
    assert!(retried >= 1, "{retried} of {} retried: {sum}", seen.len());
}

/// The operation's `--timeout` bounds the settle time too: cut short, the
/// rollout ends with exit 3 naming the settle time, the rest untouched.
#[test]
fn a_settle_time_cut_by_the_timeout_ends_the_rollout_with_exit_3() {
    let _ports = crate::ports::lease_groups(1);
    let s = fixtures_container();
    let before = running_then_released(&s, "--ready-after 0.2");
    let args = ["restart", "--rolling", "--changed", "--settle", "1h"];
    let o = orch(
        &s.c,
        &s.cfg,
        &[&args[..], &["--timeout", "8s", "--output", "json"]].concat(),
    );
    let sum = summary(&o);
    assert_eq!(o.status.code(), Some(3), "{sum}");
    let first = line(&sum, GENERIC[0]);
    assert_eq!(first["phase"], "timeout", "{sum}");
    let why = first["error"].as_str().unwrap();
    assert!(
        why.contains("--timeout ended during the settle time"),
        "{why}"
    );
    assert_ne!(pids(&s)[GENERIC[0]], before[GENERIC[0]], "{sum}");
    rest_untouched(&s, &sum, &before);
}

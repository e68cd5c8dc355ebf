//! `restart --rolling --canary` (issue 26 part 2) against a real systemd:
//! canaries restarted and watched before the rest; a failing one stops the
//! operation with the rest untouched.

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
    write_config(&s, "");
    orch_ok(&s.c, &s.cfg, &["install"]);
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    // A new release of the generic workers only.
    write_config(&s, "--ready-after 0.2");
    orch_ok(&s.c, &s.cfg, &["install"]);
    let before = pids(&s);

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
    write_config(&s, "");
    orch_ok(&s.c, &s.cfg, &["install"]);
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    // A bad release: ready, then a crash 1.5 s later, restarted by Restart=.
    write_config(&s, "--exit-after 1.5");
    orch_ok(&s.c, &s.cfg, &["install"]);
    let before = pids(&s);

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
    let sum = summary(&o);
    assert_eq!(o.status.code(), Some(1), "{sum}");
    let canary = line(&sum, GENERIC[0]);
    assert_eq!(canary["phase"], "failed", "{sum}");
    assert_eq!(canary["canary"], true, "{sum}");
    let why = canary["error"].as_str().unwrap();
    assert!(
        why.contains("crash loop") || why.contains("the unit is"),
        "{why}"
    );
    let journal = canary["journal"].as_array().expect("the canary's journal");
    assert!(
        journal
            .iter()
            .any(|l| l.as_str().unwrap().contains("crashing")),
        "the canary's own journal lines: {canary}"
    );
    assert_eq!(sum["untouched"], serde_json::json!(&GENERIC[1..]), "{sum}");
    let after = pids(&s);
    for u in &GENERIC[1..] {
        assert_eq!(after[*u], before[*u], "{u} untouched: {sum}");
    }
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

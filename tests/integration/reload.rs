//! `orch reload` and `orch restart --changed` against a real systemd, with
//! fixture processes (tests/fixtures/worker.py) that log each SIGHUP.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

const FIXTURE: &str =
    "/usr/bin/python3 /opt/fixtures/worker.py --name {{ name }} --log /opt/log/events.log";
const HUP: &str = r#"exec_reload = "/bin/kill -HUP $MAINPID""#;

type Setup = Fixtures;

/// Boots a container with the fixtures and a log folder, writes the
/// configuration (`{FIXTURE}` and `{HUP}` replaced), installs and starts it.
fn setup(config: &str) -> Setup {
    let s = fixtures_container();
    write_config(&s, config);
    orch_ok(&s.c, &s.cfg, &["install"]);
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    s
}

fn write_config(s: &Setup, config: &str) {
    // Ports: `@P0@` tokens, filled from the test's lease (crate::ports).
    let text = crate::ports::fill(&config.replace("{FIXTURE}", FIXTURE).replace("{HUP}", HUP));
    std::fs::write(&s.cfg, text).unwrap();
}

/// How many times each fixture logged `event`.
fn count(log: &Path, event: &str) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for l in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let mut p = l.split_whitespace();
        if p.next() == Some(event) {
            *n.entry(p.next().unwrap_or("").to_string()).or_default() += 1;
        }
    }
    n
}

/// Waits (bounded) until the fixtures logged `want` SIGHUPs in all: the
/// signal handler may run just after the reload job ended.
fn hups(log: &Path, want: usize) -> HashMap<String, usize> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let n = count(log, "hup");
        if n.values().sum::<usize>() >= want || Instant::now() > end {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `unit -> MainPID` from `orch status`.
fn pids(s: &Setup) -> HashMap<String, u64> {
    let v = json(&orch_ok(&s.c, &s.cfg, &["status", "--output", "json"]));
    v["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let unit = r["unit"].as_str().unwrap().to_string();
            (unit, r["main_pid"].as_u64().unwrap_or(0))
        })
        .collect()
}

const RELOADABLE: &str = r#"
[deployment]
name = "rl"
[master]
exec_start = "{FIXTURE} --port {{ port }}"
{HUP}
port = @P0@
health = "http://127.0.0.1:{{ port }}/health"
[[workers]]
kind = "generic"
count = 2
port_base = @P0+10@
exec_start = "{FIXTURE} --port {{ port }}"
{HUP}
health = "http://127.0.0.1:{{ port }}/health"
[[workers]]
kind = "pusher"
count = 1
port_base = @P0+20@
exec_start = "{FIXTURE} --port {{ port }}"
health = "tcp://127.0.0.1:{{ port }}"
"#;

#[test]
fn reload_reaches_every_process_once_and_refuses_units_without_exec_reload() {
    let _ports = crate::ports::lease_groups(1);
    let s = setup(RELOADABLE);
    let before = pids(&s);

    // The pusher has no ExecReload=: refused, by name, before anything is sent.
    let o = orch(&s.c, &s.cfg, &["reload", "--all"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("rl-worker-2-pusher.service"), "{err}");
    assert!(err.contains("--or-restart"), "{err}");
    assert!(!err.contains("rl-worker-0-generic"), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        count(&s.log, "hup").is_empty(),
        "a refused reload sent something"
    );

    let o = orch_ok(
        &s.c,
        &s.cfg,
        &["reload", "master", "generic", "--output", "json"],
    );
    let sum = summary(&o);
    assert_eq!(sum["op"], "reload", "{sum}");
    assert_eq!(sum["units"].as_array().unwrap().len(), 3, "{sum}");
    assert!(all_in_phase(&sum, "ready"), "{sum}");
    let n = hups(&s.log, 3);
    let want: HashMap<String, usize> = ["rl", "rl-worker-0-generic", "rl-worker-1-generic"]
        .into_iter()
        .map(|u| (u.to_string(), 1))
        .collect();
    assert_eq!(n, want, "each process exactly one SIGHUP, the pusher none");
    assert_eq!(pids(&s), before, "a reload restarts nothing");

    // ReloadPropagatedFrom=: systemd's own reload of the master reaches the workers.
    let o = s.c.systemctl(&["reload", "rl.service"]);
    assert!(o.status.success(), "{o:?}");
    let n = hups(&s.log, 6);
    assert_eq!(n, want.iter().map(|(k, v)| (k.clone(), v * 2)).collect());
}

#[test]
fn reload_or_restart_restarts_what_cannot_reload() {
    let _ports = crate::ports::lease_groups(1);
    let s = setup(RELOADABLE);
    let before = pids(&s);
    let o = orch_ok(
        &s.c,
        &s.cfg,
        &["reload", "--all", "--or-restart", "--output", "json"],
    );
    let sum = summary(&o);
    assert!(all_in_phase(&sum, "ready"), "{sum}");
    assert_eq!(sum["units"].as_array().unwrap().len(), 4, "{sum}");
    let n = hups(&s.log, 3);
    assert_eq!(n.len(), 3, "{n:?}");
    assert!(!n.contains_key("rl-worker-2-pusher"), "{n:?}");
    let after = pids(&s);
    let pusher = "rl-worker-2-pusher.service";
    assert_ne!(after[pusher], before[pusher], "the pusher was restarted");
    for u in [
        "rl.service",
        "rl-worker-0-generic.service",
        "rl-worker-1-generic.service",
    ] {
        assert_eq!(after[u], before[u], "{u} was reloaded, not restarted");
    }
}

const CHANGING: &str = r#"
[deployment]
name = "ch"
[master]
exec_start = "{FIXTURE} --port {{ port }}"
port = @P0@
health = "http://127.0.0.1:{{ port }}/health"
[[workers]]
kind = "generic"
count = 2
port_base = @P0+10@
exec_start = "{FIXTURE} --port {{ port }}GENERIC"
health = "http://127.0.0.1:{{ port }}/health"
[[workers]]
kind = "pusher"
count = 1
port_base = @P0+20@
exec_start = "{FIXTURE} --port {{ port }}PUSHER"
health = "tcp://127.0.0.1:{{ port }}"
"#;

fn changing(generic: &str, pusher: &str) -> String {
    CHANGING
        .replace("GENERIC", generic)
        .replace("PUSHER", pusher)
}

/// The units whose PID differs between `a` and `b`, sorted.
fn moved(a: &HashMap<String, u64>, b: &HashMap<String, u64>) -> Vec<String> {
    let mut v: Vec<String> = a
        .iter()
        .filter(|(u, p)| b.get(*u) != Some(p))
        .map(|(u, _)| u.clone())
        .collect();
    v.sort();
    v
}

#[test]
fn restart_changed_restarts_exactly_the_changed_kind_then_nothing() {
    let _ports = crate::ports::lease_groups(1);
    let s = setup(&changing("", ""));
    let before = pids(&s);
    let o = orch_ok(&s.c, &s.cfg, &["restart", "--changed"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nothing changed"),
        "{o:?}"
    );
    assert_eq!(pids(&s), before, "nothing changed: nothing restarted");

    write_config(&s, &changing(" --ready-after 0.2", ""));
    orch_ok(&s.c, &s.cfg, &["install"]);
    let o = orch_ok(&s.c, &s.cfg, &["restart", "--changed", "--output", "json"]);
    let sum = summary(&o);
    assert!(all_in_phase(&sum, "ready"), "{sum}");
    let mut units: Vec<&str> = sum["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["unit"].as_str().unwrap())
        .collect();
    units.sort();
    let generic = ["ch-worker-0-generic.service", "ch-worker-1-generic.service"];
    assert_eq!(units, generic, "{sum}");
    let after = pids(&s);
    assert_eq!(
        moved(&before, &after),
        generic,
        "only the generic workers restarted"
    );

    // A second run: nothing changed since they started.
    let o = orch_ok(&s.c, &s.cfg, &["restart", "--changed", "--output", "json"]);
    let sum = summary(&o);
    assert_eq!(sum["units"].as_array().unwrap().len(), 0, "{sum}");
    let o = orch_ok(&s.c, &s.cfg, &["restart", "--changed"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing changed"));
    assert_eq!(pids(&s), after);

    // install --restart-changed: one command for both.
    write_config(&s, &changing(" --ready-after 0.2", " --ready-after 0.1"));
    orch_ok(&s.c, &s.cfg, &["install", "--restart-changed"]);
    let last = pids(&s);
    assert_eq!(moved(&after, &last), ["ch-worker-2-pusher.service"]);
}

#[test]
fn reload_of_a_dead_worker_says_it_is_not_running_without_a_stale_result() {
    let s = setup(
        r#"
[deployment]
name = "rd"
[master]
exec_start = "{FIXTURE}"
{HUP}
[[workers]]
kind = "generic"
count = 1
exec_start = "{FIXTURE}"
{HUP}
"#,
    );
    // The worker dies as an operator's stop would leave it: cleanly, with
    // a `success` result and exit status 15 from its last run.
    let o = s.c.systemctl(&["stop", "rd-worker-0-generic.service"]);
    assert!(o.status.success(), "{o:?}");
    let o = orch(&s.c, &s.cfg, &["reload", "--all"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("rd-worker-0-generic.service"))
        .unwrap_or_else(|| panic!("no row for the worker: {out}"));
    assert!(line.contains("a reload does not start it"), "{line}");
    assert!(!line.contains("start job"), "{line}");
    assert!(!line.contains("result success"), "{line}");
    assert!(!line.contains("exit status"), "{line}");
}

const ADDING: &str = r#"
[deployment]
name = "ad"
[master]
exec_start = "{FIXTURE}"
environment = { MODE = "MODEVAL" }
[[workers]]
kind = "generic"
count = 1
exec_start = "{FIXTURE}"
KIND
"#;

const PUSHER: &str = "[[workers]]\nkind = \"pusher\"\ncount = 1\nexec_start = \"{FIXTURE}\"\n";

fn adding(mode: &str, kind: &str) -> String {
    ADDING.replace("MODEVAL", mode).replace("KIND", kind)
}

/// `unit -> restart_needed` from `orch status --output json`, and the
/// human table's lines that say `restart needed`.
fn restart_needed(s: &Setup) -> (HashMap<String, bool>, Vec<String>) {
    let v = json(&orch_ok(&s.c, &s.cfg, &["status", "--output", "json"]));
    let flags = v["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let flag = r["restart_needed"]
                .as_bool()
                .unwrap_or_else(|| panic!("no restart_needed in {r}"));
            (r["unit"].as_str().unwrap().to_string(), flag)
        })
        .collect();
    let o = orch_ok(&s.c, &s.cfg, &["status"]);
    let lines = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("restart needed"))
        .map(str::to_string)
        .collect();
    (flags, lines)
}

fn needing(flags: &HashMap<String, bool>) -> Vec<String> {
    let mut v: Vec<String> = flags
        .iter()
        .filter(|(_, f)| **f)
        .map(|(u, _)| u.clone())
        .collect();
    v.sort();
    v
}

/// The units a `restart --changed --output json` acted on, sorted.
fn acted_on(s: &Setup) -> Vec<String> {
    let o = orch_ok(&s.c, &s.cfg, &["restart", "--changed", "--output", "json"]);
    let sum = summary(&o);
    assert!(all_in_phase(&sum, "ready"), "{sum}");
    let mut v: Vec<String> = sum["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["unit"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// A new kind rewrites the master's unit with a `Wants=` only: `restart
/// --changed` starts the new worker and leaves the master's process alone.
/// A new environment for the master is restart-worthy: status says so,
/// `restart --changed` restarts the master, and then status no longer says so.
#[test]
fn restart_changed_follows_the_restart_record_not_the_file_time() {
    let s = setup(&adding("a", ""));
    let (flags, lines) = restart_needed(&s);
    assert!(needing(&flags).is_empty() && lines.is_empty(), "{lines:?}");
    let before = pids(&s);

    write_config(&s, &adding("a", PUSHER));
    let o = orch_ok(&s.c, &s.cfg, &["install"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("updated (no restart) ad.service"), "{text}");
    let (flags, _) = restart_needed(&s);
    assert!(needing(&flags).is_empty(), "{flags:?}");
    assert_eq!(acted_on(&s), ["ad-worker-1-pusher.service"]);
    let after = pids(&s);
    assert_eq!(
        after["ad.service"], before["ad.service"],
        "the master restarted"
    );
    assert_eq!(
        after["ad-worker-0-generic.service"],
        before["ad-worker-0-generic.service"]
    );
    assert_ne!(
        after["ad-worker-1-pusher.service"], 0,
        "the new worker runs"
    );

    write_config(&s, &adding("b", PUSHER));
    let o = orch_ok(&s.c, &s.cfg, &["install"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("updated (restart needed) ad.service"),
        "{text}"
    );
    let (flags, lines) = restart_needed(&s);
    assert_eq!(needing(&flags), ["ad.service"]);
    assert!(
        lines.len() == 1 && lines[0].starts_with("ad.service "),
        "{lines:?}"
    );
    assert!(acted_on(&s).contains(&"ad.service".to_string()));
    assert_ne!(pids(&s)["ad.service"], after["ad.service"]);
    let (flags, lines) = restart_needed(&s);
    assert!(needing(&flags).is_empty() && lines.is_empty(), "{lines:?}");
    assert!(acted_on(&s).is_empty(), "a second run restarted something");
}

//! A rolling restart with one outage window (issue 26 part 5) against a
//! real systemd: the units with no twin restart together, the master first
//! only where a lone worker requires it.

use std::collections::HashMap;
use std::path::Path;

use crate::common::{fixtures_container, orch_ok, summary, Fixtures};

const FIXTURE: &str =
    "/usr/bin/python3 /opt/fixtures/worker.py --name {{ name }} --log /opt/log/events.log";

/// A master and two lone workers, each ready 1.5 s after it starts, and
/// two generic workers.
fn setup() -> Fixtures {
    let s = fixtures_container();
    let state = s.cfg.parent().unwrap().join("state");
    let slow = "--ready-after 1.5";
    let text = format!(
        r#"[deployment]
name = "cw"
state_dir = "{state}"
[master]
type = "notify"
exec_start = "{FIXTURE} {slow}"
stop_timeout = "5s"
[[workers]]
kind = "persister"
count = 1
type = "notify"
exec_start = "{FIXTURE} {slow}"
stop_timeout = "5s"
[[workers]]
kind = "fed"
count = 1
type = "notify"
exec_start = "{FIXTURE} {slow}"
stop_timeout = "5s"
[[workers]]
kind = "generic"
count = 2
exec_start = "{FIXTURE}"
stop_timeout = "5s"
"#,
        state = state.display(),
    );
    std::fs::write(&s.cfg, text).unwrap();
    orch_ok(&s.c, &s.cfg, &["install"]);
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    s
}

/// `(event, name) -> time` from the fixtures' log, the last of each.
fn log(path: &Path) -> HashMap<(String, String), f64> {
    std::fs::read_to_string(path)
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

/// Restarts rolling, then returns when the master became ready and when
/// each lone worker's new process started (fixtures' clock).
fn rolling(s: &Fixtures) -> (f64, f64, f64) {
    std::fs::write(&s.log, "").unwrap();
    let o = orch_ok(
        &s.c,
        &s.cfg,
        &["restart", "--all", "--rolling", "--output", "json"],
    );
    assert_eq!(summary(&o)["ok"], true, "{}", summary(&o));
    let ev = log(&s.log);
    let at = |event: &str, name: &str| {
        *ev.get(&(event.to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("no {event} of {name} in {ev:?}"))
    };
    (
        at("ready", "cw"),
        at("start", "cw-worker-0-persister"),
        at("start", "cw-worker-1-fed"),
    )
}

#[test]
fn units_without_a_twin_restart_in_one_window_unless_one_requires_the_master() {
    let s = setup();
    // Workers order themselves After= the master, which only orders boot:
    // the lone workers restart with the master, not after it is ready.
    let (master_ready, persister, fed) = rolling(&s);
    for (name, start) in [("persister", persister), ("fed", fed)] {
        assert!(
            start < master_ready,
            "{name} started {:.2}s after the master was ready: two outage windows",
            start - master_ready
        );
    }
    println!(
        "one window: lone workers started {:.2}s and {:.2}s before the master was ready",
        master_ready - persister,
        master_ready - fed
    );

    // A lone worker that requires the master: the master first, then the
    // lone workers once it is ready.
    let dropin = s.c.unit_dir().join("cw-worker-1-fed.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(
        dropin.join("requires.conf"),
        "[Unit]\nRequires=cw.service\n",
    )
    .unwrap();
    let o = s.c.systemctl(&["daemon-reload"]);
    assert!(o.status.success(), "{o:?}");
    let (master_ready, persister, fed) = rolling(&s);
    for (name, start) in [("persister", persister), ("fed", fed)] {
        assert!(
            start >= master_ready,
            "{name} started {:.2}s before the master was ready, though fed requires it",
            master_ready - start
        );
    }
}

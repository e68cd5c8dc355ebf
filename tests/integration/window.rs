//! A rolling restart with one outage window (issue 26 part 5) against a
//! real systemd: the units with no twin restart together, the master first
//! only where a lone worker requires it, a `background = true` lone worker
//! once the others of the window are ready.

use std::collections::HashMap;
use std::path::Path;

use crate::common::{fixtures_container, orch_ok, summary, Fixtures};

const FIXTURE: &str =
    "/usr/bin/python3 /opt/fixtures/worker.py --name {{ name }} --log /opt/log/events.log";

/// A master and two lone workers (the federation sender a background
/// kind), each ready 1.5 s after it starts, and two generic workers.
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
background = true
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

/// When, on the fixtures' clock, the units of the window started and
/// became ready in a rolling restart.
struct Times {
    master_ready: f64,
    persister: f64,
    persister_ready: f64,
    fed: f64,
}

/// Restarts rolling, then returns when the master and the persister became
/// ready and when each lone worker's new process started.
fn rolling(s: &Fixtures) -> Times {
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
    Times {
        master_ready: at("ready", "cw"),
        persister: at("start", "cw-worker-0-persister"),
        persister_ready: at("ready", "cw-worker-0-persister"),
        fed: at("start", "cw-worker-1-fed"),
    }
}

/// The background worker started once the master and the persister were
/// ready, not alongside them.
fn background_last(t: &Times) {
    for (name, ready) in [("master", t.master_ready), ("persister", t.persister_ready)] {
        assert!(
            t.fed >= ready,
            "the background worker fed started {:.2}s before the {name} was ready: it competed with the window's other units",
            ready - t.fed
        );
    }
}

#[test]
fn units_without_a_twin_restart_in_one_window_unless_one_requires_the_master() {
    let s = setup();
    // Workers order themselves After= the master, which only orders boot:
    // the lone worker restarts with the master, not after it is ready.
    let t = rolling(&s);
    assert!(
        t.persister < t.master_ready,
        "persister started {:.2}s after the master was ready: two outage windows",
        t.persister - t.master_ready
    );
    background_last(&t);
    println!(
        "one window: persister started {:.2}s before the master was ready; the background fed {:.2}s after the last of them",
        t.master_ready - t.persister,
        t.fed - t.master_ready.max(t.persister_ready)
    );

    // A lone worker that requires the master: the master first, then the
    // lone workers once it is ready, the background one last.
    let dropin = s.c.unit_dir().join("cw-worker-0-persister.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(
        dropin.join("requires.conf"),
        "[Unit]\nRequires=cw.service\n",
    )
    .unwrap();
    let o = s.c.systemctl(&["daemon-reload"]);
    assert!(o.status.success(), "{o:?}");
    let t = rolling(&s);
    assert!(
        t.persister >= t.master_ready,
        "persister started {:.2}s before the master was ready, though it requires it",
        t.master_ready - t.persister
    );
    background_last(&t);
}

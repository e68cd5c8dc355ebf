//! Issue 26 part 5, measured: the outage window of a rolling restart (the
//! master and the four workers alone of their kind) against each of its
//! units restarted alone, in the same run, under the same load, with the
//! writer's view of it. Printed, not asserted: timing goals are the
//! benchmark's (the guide), and this host's load moves them by seconds.
//!
//! The clients' units are the master and the event persister (a send goes
//! through a generic worker to the persister); the federation sender, the
//! pusher and the media worker are `background = true` in the example.

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{
    event_times, http, secs, timed_orch, window, Send, FEDERATION, GENERIC_NAMES, MASTER_PORT,
    MEDIA, MEDIA_PORT, NAME, PERSISTER, PERSISTER_PORT, PUSHER,
};
use crate::common::summary;
use crate::support::Container;

/// The units clients wait on, then the background ones.
const CLIENTS: [&str; 2] = [NAME, PERSISTER];
const BACKGROUND: [&str; 3] = [FEDERATION, PUSHER, MEDIA];

fn short(name: &str) -> &str {
    name.trim_start_matches("matrix-synapse-")
        .trim_start_matches("worker-")
}

/// What one run did to the window's units: each one's `starting` and
/// `ready` (since the run began).
struct Run {
    at: HashMap<&'static str, (Duration, Duration)>,
}

impl Run {
    fn of(o: &Output) -> Run {
        let ev = event_times(o);
        let mut at = HashMap::new();
        for name in CLIENTS.iter().chain(&BACKGROUND) {
            let unit = format!("{name}.service");
            let get = |phase: &str| ev.get(&(unit.clone(), phase.to_string())).copied();
            if let (Some(s), Some(r)) = (get("starting"), get("ready")) {
                at.insert(*name, (s, r));
            }
        }
        Run { at }
    }

    /// From the first unit's start to the last one's readiness, among `names`.
    fn span(&self, names: &[&str]) -> Option<(Duration, Duration)> {
        let times: Vec<&(Duration, Duration)> =
            names.iter().filter_map(|n| self.at.get(n)).collect();
        let open = times.iter().map(|t| t.0).min()?;
        Some((open, times.iter().map(|t| t.1).max()?))
    }

    /// Each unit's own restart in this run (`starting` to `ready`).
    fn own(&self) -> String {
        let v: Vec<String> = CLIENTS
            .iter()
            .chain(&BACKGROUND)
            .filter_map(|n| {
                let (s, r) = self.at.get(n)?;
                Some(format!("{} {}", short(n), secs(r.saturating_sub(*s))))
            })
            .collect();
        v.join(", ")
    }
}

/// Waits (at most a minute) for the writer's first acknowledged send after
/// `after`: the end of the clients' gap, whenever it comes.
fn settle(log: &Mutex<Vec<Send>>, after: Instant) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log.lock().unwrap().iter().any(|s| s.ok && s.done > after) {
        assert!(
            Instant::now() < deadline,
            "no send acknowledged within a minute"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the client workers' journal says since `from` of their replication
/// requests to a unit that was down: Synapse retries a refused connection
/// after 1, 2, 4, 8, … s (`RETRY_ON_CONNECT_ERROR`), so a send waits until
/// the first retry after the unit is back, not until it is back.
fn retries(c: &Container, from: Instant) -> String {
    let since = SystemTime::now() - from.elapsed();
    let since = format!("@{}", since.duration_since(UNIX_EPOCH).unwrap().as_secs());
    let mut args = vec!["journalctl", "--no-pager", "-o", "cat", "--since", &since];
    for g in GENERIC_NAMES {
        args.extend_from_slice(&["-u", g]);
    }
    let o = c.exec(&args);
    let journal = String::from_utf8_lossy(&o.stdout);
    let v: Vec<String> = journal
        .lines()
        .filter_map(|l| {
            let (head, rest) = l.split_once(" request connection failed; retrying in ")?;
            let servlet = head.rsplit(' ').next()?.trim_end_matches("RestServlet");
            Some(format!("{servlet} {}", rest.split(':').next()?))
        })
        .collect();
    match v.is_empty() {
        true => "none".into(),
        false => v.join(", "),
    }
}

/// The window of a rolling restart run `o` (begun at `from`): when the
/// clients' units were back, each unit's restart, the clients' longest gap
/// and the client workers' replication retries.
pub(super) fn report(
    label: &str,
    c: &Container,
    o: &Output,
    log: &Mutex<Vec<Send>>,
    from: Instant,
) -> Vec<(String, String)> {
    let run = Run::of(o);
    let all = run.span(&[&CLIENTS[..], &BACKGROUND[..]].concat());
    let clients = run.span(&CLIENTS);
    let (Some(all), Some(clients)) = (all, clients) else {
        panic!(
            "the window's units have no starting/ready events: {}",
            summary(o)
        );
    };
    settle(log, from + all.1);
    let w = window(&log.lock().unwrap(), from + all.0, from + all.1);
    vec![
        (
            format!("{label}: master + event persister back after"),
            secs(clients.1 - all.0),
        ),
        (
            format!("{label}: whole window (background included)"),
            secs(all.1 - all.0),
        ),
        (format!("{label}: each unit, starting → ready"), run.own()),
        (format!("{label}: clients' longest gap"), w.describe()),
        (format!("{label}: replication retries"), retries(c, from)),
    ]
}

/// One `restart --all --rolling` with `cfg`: its output and when it began.
fn rolling(c: &Container, cfg: &Path, extra: &[&str]) -> (Output, Instant) {
    let mut args = vec!["restart", "--all", "--rolling"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--output", "json"]);
    let (o, from, _) = timed_orch(c, cfg, &args, Duration::from_secs(300));
    let sum = summary(&o);
    let ours = sum["units"].as_array().unwrap().iter();
    let mut ours = ours.filter(|u| u["role"] != "prerequisite" && u["role"] != "database");
    assert!(ours.all(|u| u["phase"] == "ready"), "{sum}");
    (o, from)
}

/// The port of `name`'s `/health`, for the units that have one.
fn health_port(name: &str) -> Option<u16> {
    match name {
        NAME => Some(MASTER_PORT.get()),
        PERSISTER => Some(PERSISTER_PORT.get()),
        MEDIA => Some(MEDIA_PORT.get()),
        _ => None,
    }
}

/// `name` restarted alone, as orch's window restarts it (one restart job,
/// `ignore-dependencies`: nothing else is touched) but through `systemctl`,
/// since orch restarts the master alone only within a whole rollout: the
/// time until its job is done (`READY=1`) and its `/health` answers 200.
fn restart_alone(c: &Container, name: &str) -> (Instant, Duration) {
    let t = Instant::now();
    let unit = format!("{name}.service");
    let o = c.systemctl(&["restart", "--job-mode=ignore-dependencies", &unit]);
    assert!(o.status.success(), "restart {unit}: {o:?}");
    if let Some(port) = health_port(name) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(http(port, "GET", "/health", None, None), Ok((200, _))) {
            assert!(
                Instant::now() < deadline,
                "{unit}: /health not 200 within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    (t, t.elapsed())
}

/// Each unit clients wait on restarted alone: its restart and the clients'
/// longest gap then. (The background workers alone, and a window capped
/// with `--max-parallel`, were measured once for docs/upgrades.md; they
/// are left out here to keep the suite's time.)
fn alone(c: &Container, log: &Mutex<Vec<Send>>) -> Vec<(String, String)> {
    let mut own = Vec::new();
    for name in CLIENTS {
        let (from, took) = restart_alone(c, name);
        settle(log, from + took);
        let w = window(&log.lock().unwrap(), from, from + took);
        own.push(format!(
            "{} {} (clients' gap {}; retries: {})",
            short(name),
            secs(took),
            secs(w.gap),
            retries(c, from)
        ));
    }
    vec![(
        "each client-path unit restarted alone".into(),
        own.join(", "),
    )]
}

/// The units clients wait on alone, then the window two ways:
/// - `background`: the example (master + persister, then the background
///   workers once they are ready);
/// - `at once`: the landed design, every unit of the window together
///   (the example without its `background = true` lines).
pub(super) fn compare(
    c: &Container,
    cfg: &Path,
    dir: &Path,
    log: &Mutex<Vec<Send>>,
) -> Vec<(String, String)> {
    let flat = dir.join("orch-no-background.toml");
    let text = std::fs::read_to_string(cfg).unwrap();
    assert!(text.contains("background = true\n"), "{text}");
    std::fs::write(&flat, text.replace("background = true\n", "")).unwrap();
    let mut lines = alone(c, log);
    for (label, file) in [("window with background", cfg), ("window at once", &*flat)] {
        let (o, from) = rolling(c, file, &[]);
        lines.extend(report(label, c, &o, log, from));
    }
    lines
}

//! `orch status`: one row per unit of the deployment, read in one
//! `ListUnitsByPatterns` call plus concurrent property reads.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use serde::Serialize;

use crate::fleet::{Fleet, HostAccess};
use crate::health::{self, Limits};
use crate::members::Member;
use crate::model::{Deployment, Role};
use crate::store::Store;
use crate::systemd::{ActiveState, LoadState};
use crate::systemd::{Systemd, SystemdError};

#[derive(Debug, Clone, Serialize)]
pub struct UnitStatus {
    pub unit: String,
    pub host: String,
    pub role: Role,
    pub load_state: LoadState,
    pub active_state: ActiveState,
    pub sub_state: String,
    pub main_pid: Option<u32>,
    /// Milliseconds since the last change of ActiveState.
    pub since_ms: Option<u64>,
    pub restarts: Option<u32>,
    /// Bytes of memory the unit's control group uses now (`MemoryCurrent`);
    /// absent when systemd does not account it or the unit is not running.
    pub memory_current: Option<u64>,
    /// CPU time the unit used since it started, in nanoseconds (`CPUUsageNSec`).
    pub cpu_usage_nsec: Option<u64>,
    /// `ok`, the probe's failure, or absent when there is no probe or the unit is not active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// A container unit's image (from the configuration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A container unit's container as the engine reports it (`running`,
    /// `exited`, `absent`, or why it could not be asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_state: Option<String>,
    /// It runs a process started before the unit's last restart-worthy
    /// change (the restart record, [`crate::changes`]): `orch restart
    /// --changed` restarts it.
    pub restart_needed: bool,
    /// When its main process last started, in microseconds since the epoch
    /// on its host (`ExecMainStartTimestamp`; 0: never).
    #[serde(skip)]
    pub main_started_us: u64,
}

impl UnitStatus {
    /// Whether systemd says the unit is active (an unreachable unit is not).
    pub fn is_active(&self) -> bool {
        self.active_state == ActiveState::Active
    }
}

/// Reads the state of every member.
pub async fn status(
    sd: &Systemd,
    members: &[Member],
    limits: Limits,
) -> Result<Vec<UnitStatus>, SystemdError> {
    // What the deployment needs but does not declare is shown too: the
    // master's own Requires= (Redis) and an umbrella's members (a cluster).
    let members = &crate::lifecycle::with_prerequisites(sd, members).await;
    let members = &crate::lifecycle::with_constituents(sd, members).await;
    let patterns: Vec<&str> = members.iter().map(|m| m.unit.as_str()).collect();
    let listed = sd.list(&patterns).await?;
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64;
    // By name, once: a search of the listing per member was quadratic.
    let by_unit: std::collections::HashMap<&str, _> =
        listed.iter().map(|e| (e.name.as_str(), e)).collect();
    let rows = members.iter().map(|m| {
        let entry = by_unit.get(m.unit.as_str()).copied();
        async move {
            let mut row = UnitStatus {
                unit: m.unit.clone(),
                host: m.host.clone(),
                role: m.role,
                load_state: LoadState::NotFound,
                active_state: ActiveState::Inactive,
                sub_state: "dead".into(),
                main_pid: None,
                since_ms: None,
                restarts: None,
                memory_current: None,
                cpu_usage_nsec: None,
                health: None,
                image: None,
                container_state: None,
                restart_needed: false,
                main_started_us: 0,
            };
            let Some(e) = entry else {
                // Not loaded (e.g. masked and stopped, so systemd let it go):
                // ask for it, so a mask shows as "masked", not "not-found".
                if let Ok(load) = sd.load_state(&m.unit).await {
                    row.load_state = load;
                }
                return row;
            };
            row.load_state = e.load.clone();
            row.active_state = e.active.clone();
            row.sub_state = e.sub.clone();
            let p = sd.numbers(e).await;
            row.main_pid = p.main_pid.filter(|p| *p != 0);
            row.restarts = p.restarts;
            row.since_ms = p
                .changed_us
                .filter(|t| *t > 0 && *t <= now_us)
                .map(|t| (now_us - t) / 1000);
            row.memory_current = p.memory;
            row.cpu_usage_nsec = p.cpu_nsec;
            row.main_started_us = p.started_us.unwrap_or(0);
            if let (Some(probe), true) = (&m.health, row.is_active()) {
                row.health = Some(match health::check(probe, limits, sd.remote()).await {
                    Ok(()) => "ok".into(),
                    Err(e) => e.to_string(),
                });
            }
            row
        }
    });
    Ok(join_all(rows).await)
}

/// The rows of units on a host orch could not reach: what is known is
/// that nothing is known.
pub fn unreachable(members: &[Member]) -> Vec<UnitStatus> {
    members
        .iter()
        .map(|m| UnitStatus {
            unit: m.unit.clone(),
            host: m.host.clone(),
            role: m.role,
            load_state: LoadState::Other("unknown".into()),
            active_state: ActiveState::Other("unreachable".into()),
            sub_state: "unknown".into(),
            main_pid: None,
            since_ms: None,
            restarts: None,
            memory_current: None,
            cpu_usage_nsec: None,
            health: None,
            image: None,
            container_state: None,
            restart_needed: false,
            main_started_us: 0,
        })
        .collect()
}

/// The status of a whole deployment, read from every host at once.
#[derive(Debug)]
pub struct DeploymentStatus {
    /// One row per unit, in the deployment's start order.
    pub rows: Vec<UnitStatus>,
    /// The hosts orch could not read, with why; their units show as unreachable.
    pub unreachable: Vec<(String, SystemdError)>,
    pub maintenance: Option<crate::state::State>,
    /// False when the master's host (which holds the journal) is
    /// unreachable: `maintenance: None` then means "unknown".
    pub maintenance_known: bool,
    /// The journal exists but cannot be read: why, and the way out.
    pub maintenance_unreadable: Option<String>,
    /// The installed generation of unit files (`orch rollback`), when known.
    pub generation: Option<crate::generations::Summary>,
    /// The kept generations' numbers, oldest first.
    pub generations_kept: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Every host is out of reach: there is nothing to show.
    #[error("cannot read the status of {deployment}: {cause}")]
    Unreachable {
        deployment: String,
        cause: SystemdError,
    },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

impl StatusError {
    pub fn exit_code(&self) -> i32 {
        match self {
            StatusError::Unreachable { cause, .. } => cause.exit_code(),
            StatusError::State(e) => e.exit_code(),
        }
    }
}

/// Reads every host at once; one out of reach does not hide the others.
pub async fn deployment(
    d: &Deployment,
    targets: &[HostAccess],
    state_store: &Store,
    call_timeout: Duration,
) -> Result<DeploymentStatus, StatusError> {
    let members = crate::members::members(d);
    let conns = Fleet::connect_each(targets, call_timeout).await;
    let limits = Limits {
        connect: Duration::from_millis(500),
        attempt: Duration::from_secs(1),
    };
    let reads = targets.iter().zip(conns).map(|(t, conn)| {
        let mine = on_host(&members, &t.name);
        async move {
            let rows = match conn {
                Ok(sd) => status(&sd, &mine, limits).await,
                Err(e) => Err(e),
            };
            (t.name.clone(), rows)
        }
    });
    let (mut rows, unreachable) = merge(&members, join_all(reads).await);
    container_states(d, targets, &mut rows).await;
    if !unreachable.is_empty() && unreachable.len() == targets.len() {
        let (_, cause) = unreachable.into_iter().next().expect("not empty");
        return Err(StatusError::Unreachable {
            deployment: d.name.clone(),
            cause,
        });
    }
    let maintenance_known = !unreachable.iter().any(|(h, _)| *h == d.master.host);
    let (mut maintenance, mut maintenance_unreadable) = (None, None);
    if maintenance_known {
        // A damaged journal must not hide the units: it is shown, with the
        // way out, next to them.
        match crate::state::read_state(d, state_store).await {
            Ok(m) => maintenance = m,
            Err(e) if e.is_unreadable_journal() => maintenance_unreadable = Some(e.to_string()),
            Err(e) => return Err(e.into()),
        }
        mark_restart_needed(d, state_store, &mut rows).await;
    }
    // Only a hint beside the units: a record that cannot be read is logged.
    let kept = match maintenance_known {
        true => crate::generations::Generations::read(d, state_store)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!("{e}");
                Default::default()
            }),
        false => Default::default(),
    };
    Ok(DeploymentStatus {
        rows,
        unreachable,
        maintenance,
        maintenance_known,
        maintenance_unreadable,
        generation: kept.installed().map(|g| g.summary()),
        generations_kept: kept.kept.iter().map(|g| g.number).collect(),
    })
}

/// Marks the running units older than their last restart-worthy change.
/// A record orch cannot read hides nothing else: it is logged.
async fn mark_restart_needed(d: &Deployment, state_store: &Store, rows: &mut [UnitStatus]) {
    let record = match crate::changes::read(d, state_store).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("{e}");
            return;
        }
    };
    for r in rows {
        let now = crate::changes::Running {
            up: r.is_active(),
            started_us: r.main_started_us,
        };
        r.restart_needed = record.need(&r.unit, now) == crate::changes::Need::Restart;
    }
}

/// The image and the engine's view of each container unit, per host
/// (bounded; a host whose engine cannot be asked says why in each row).
async fn container_states(d: &Deployment, targets: &[HostAccess], rows: &mut [UnitStatus]) {
    for host in crate::containers::container_hosts(d) {
        let Some(t) = targets.iter().find(|t| t.name == host) else {
            continue;
        };
        let remote = match &t.bus {
            crate::systemd::Bus::Remote(r) => Some(r),
            _ => None,
        };
        let states = crate::containers::states(d, &host, remote).await;
        for s in d.services().filter(|s| s.host == host) {
            let Some(c) = &s.container else { continue };
            let Some(row) = rows.iter_mut().find(|r| r.unit == s.unit) else {
                continue;
            };
            row.image = Some(c.image.clone());
            row.container_state = Some(match &states {
                Ok(m) => m.get(&c.name).cloned().unwrap_or_else(|| "absent".into()),
                Err(e) => format!("unknown: {e}"),
            });
        }
    }
}

fn on_host(members: &[Member], host: &str) -> Vec<Member> {
    members.iter().filter(|m| m.host == host).cloned().collect()
}

/// Joins the rows read on each host into one table in `members`' order; a
/// host that could not be read contributes [`unreachable`] rows for its units.
pub fn merge(
    members: &[Member],
    per_host: Vec<(String, Result<Vec<UnitStatus>, SystemdError>)>,
) -> (Vec<UnitStatus>, Vec<(String, SystemdError)>) {
    let mut rows = Vec::new();
    let mut lost = Vec::new();
    for (host, read) in per_host {
        match read {
            Ok(v) => rows.extend(v),
            Err(e) => {
                rows.extend(unreachable(&on_host(members, &host)));
                lost.push((host, e));
            }
        }
    }
    rows.sort_by_key(|r| members.iter().position(|m| m.unit == r.unit));
    (rows, lost)
}

/// `512.0M`, `1.5G`, `300K`: bytes in base 1024, short, for a table.
pub fn short_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1}{}", UNITS[i])
}

/// `1h2m`, `3m4s`, `5.2s`: short, for a table.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86400 {
        format!("{}d{}h", s / 86400, s % 86400 / 3600)
    } else if s >= 3600 {
        format!("{}h{}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// One row of the human table: a unit, or every worker of one kind.
struct Row {
    host: String,
    unit: String,
    role: String,
    active: String,
    sub: String,
    pid: String,
    since: String,
    restarts: String,
    memory: String,
    cpu: String,
    health: String,
    /// `restart needed` (per unit) or how many need one (per kind).
    note: String,
    /// The engine's state and the image, for a container unit; empty for a
    /// bare one (a table without container units has no such column).
    container: String,
}

impl Row {
    fn of(r: &UnitStatus) -> Row {
        let dash = || "-".to_string();
        Row {
            host: r.host.clone(),
            unit: r.unit.clone(),
            role: role_name(r.role),
            active: r.active_state.to_string(),
            sub: r.sub_state.clone(),
            pid: r.main_pid.map_or_else(dash, |p| p.to_string()),
            since: r
                .since_ms
                .map_or_else(dash, |ms| short_duration(Duration::from_millis(ms))),
            restarts: r.restarts.map_or_else(dash, |n| n.to_string()),
            memory: r.memory_current.map_or_else(dash, short_bytes),
            cpu: r
                .cpu_usage_nsec
                .map_or_else(dash, |ns| short_duration(Duration::from_nanos(ns))),
            health: r.health.clone().unwrap_or_else(dash),
            note: match r.restart_needed {
                true => "restart needed".into(),
                false => String::new(),
            },
            container: container_cell(r),
        }
    }

    /// Every worker of one kind on one host: counts instead of states.
    fn group(kind: &str, members: &[&UnitStatus]) -> Row {
        let n = members.len();
        let active = members.iter().filter(|r| r.is_active()).count();
        let probed = members.iter().filter(|r| r.health.is_some()).count();
        let ok = members
            .iter()
            .filter(|r| r.health.as_deref() == Some("ok"))
            .count();
        let restarts: u32 = members.iter().filter_map(|r| r.restarts).sum();
        let stale = members.iter().filter(|r| r.restart_needed).count();
        // Totals of the kind: what its units use together right now.
        let total = |v: Vec<u64>| (!v.is_empty()).then(|| v.iter().sum::<u64>());
        let memory = total(members.iter().filter_map(|r| r.memory_current).collect());
        let cpu = total(members.iter().filter_map(|r| r.cpu_usage_nsec).collect());
        Row {
            host: members[0].host.clone(),
            unit: format!("{kind} ×{n}"),
            role: "workers".into(),
            active: format!("{active}/{n}"),
            sub: "-".into(),
            pid: "-".into(),
            since: "-".into(),
            restarts: restarts.to_string(),
            memory: memory.map_or_else(|| "-".into(), short_bytes),
            cpu: cpu.map_or_else(|| "-".into(), |ns| short_duration(Duration::from_nanos(ns))),
            health: if probed == 0 {
                "-".into()
            } else {
                format!("{ok}/{probed} ok")
            },
            note: match stale {
                0 => String::new(),
                k => format!("{k}/{n} restart needed"),
            },
            container: group_container_cell(members),
        }
    }

    fn line(&self, hosts: bool, containers: bool) -> String {
        let host = if hosts {
            format!("{:<12} ", self.host)
        } else {
            String::new()
        };
        let row = format!(
            "{host}{:<50} {:<10} {:<11} {:<12} {:>8} {:>8} {:>8} {:>8} {:>8}  {}\n",
            self.unit,
            self.role,
            self.active,
            self.sub,
            self.pid,
            self.since,
            self.restarts,
            self.memory,
            self.cpu,
            self.health
        );
        let row = match containers {
            // HEALTH stops being the last column: pad it, then the engine's view.
            true => {
                let row = row.trim_end_matches('\n');
                let health_at = row.len() - self.health.len();
                format!(
                    "{}{:<10}  {}\n",
                    &row[..health_at],
                    self.health,
                    self.container
                )
            }
            false => row,
        };
        // `restart needed` last: it is there only for some rows.
        match self.note.is_empty() {
            true => row,
            false => format!("{}  {}\n", row.trim_end_matches('\n'), self.note),
        }
    }
}

/// `running localhost/app:1`: the engine's state (the reason why it could not
/// be asked is in the JSON output) and the image.
fn container_cell(r: &UnitStatus) -> String {
    let Some(image) = &r.image else {
        return String::new();
    };
    let state = r.container_state.as_deref().unwrap_or("-");
    let state = state.split(':').next().unwrap_or(state);
    format!("{state} {image}")
}

/// `2/3 running localhost/app:1` for a kind's containers.
fn group_container_cell(members: &[&UnitStatus]) -> String {
    let with: Vec<&&UnitStatus> = members.iter().filter(|r| r.image.is_some()).collect();
    let Some(first) = with.first() else {
        return String::new();
    };
    let running = with
        .iter()
        .filter(|r| r.container_state.as_deref() == Some("running"))
        .count();
    let same = with.iter().all(|r| r.image == first.image);
    let image = match same {
        true => first.image.clone().unwrap_or_default(),
        false => "(several images)".into(),
    };
    format!("{running}/{} running {image}", with.len())
}

fn role_name(role: Role) -> String {
    serde_json::to_value(role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The human table. With `kinds` (unit → worker kind), workers are shown one
/// row per kind and host (count, active, healthy, restarts), for a terminal
/// too short for a row per unit; without, one row per unit.
pub fn table(
    rows: &[UnitStatus],
    hosts: bool,
    kinds: Option<&std::collections::HashMap<String, String>>,
) -> String {
    let header = Row {
        host: "HOST".into(),
        unit: if kinds.is_some() {
            "UNIT / KIND"
        } else {
            "UNIT"
        }
        .into(),
        role: "ROLE".into(),
        active: "ACTIVE".into(),
        sub: "SUB".into(),
        pid: "PID".into(),
        since: "SINCE".into(),
        restarts: "RESTARTS".into(),
        memory: "MEMORY".into(),
        cpu: "CPU".into(),
        health: "HEALTH".into(),
        note: String::new(),
        container: "CONTAINER".into(),
    };
    let containers = rows.iter().any(|r| r.image.is_some());
    let mut text = header.line(hosts, containers);
    let mut grouped: Vec<((String, String), Vec<&UnitStatus>)> = Vec::new();
    for r in rows {
        match kinds.and_then(|k| k.get(&r.unit)) {
            Some(kind) => {
                let key = (r.host.clone(), kind.clone());
                match grouped.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.push(r),
                    None => grouped.push((key, vec![r])),
                }
            }
            None => text.push_str(&Row::of(r).line(hosts, containers)),
        }
    }
    for ((_, kind), members) in &grouped {
        text.push_str(&Row::group(kind, members).line(hosts, containers));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(unit: &str, role: Role, active: &str, health: Option<&str>) -> UnitStatus {
        UnitStatus {
            unit: unit.into(),
            host: "local".into(),
            role,
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: "running".into(),
            main_pid: Some(7),
            since_ms: Some(1500),
            restarts: Some(1),
            memory_current: Some(300 << 20),
            cpu_usage_nsec: Some(1_500_000_000),
            image: None,
            container_state: None,
            health: health.map(str::to_string),
            restart_needed: false,
            main_started_us: 0,
        }
    }

    fn member(unit: &str, host: &str, role: Role) -> Member {
        Member {
            unit: unit.into(),
            host: host.into(),
            role,
            kind: None,
            health: None,
            bounds: crate::model::Bounds::all(Duration::from_secs(1)),
        }
    }

    #[test]
    fn merge_keeps_start_order_and_marks_an_unreachable_host() {
        let members = [
            member("db.service", "b", Role::Database),
            member("m.service", "a", Role::Master),
            member("w0.service", "b", Role::Worker),
            member("w1.service", "a", Role::Worker),
        ];
        let read_a = vec![
            row("w1.service", Role::Worker, "active", None),
            row("m.service", Role::Master, "active", None),
        ];
        let (rows, unreachable) = merge(
            &members,
            vec![
                ("a".into(), Ok(read_a)),
                ("b".into(), Err(SystemdError::Closed("x".into()))),
            ],
        );
        let units: Vec<&str> = rows.iter().map(|r| r.unit.as_str()).collect();
        assert_eq!(
            units,
            ["db.service", "m.service", "w0.service", "w1.service"]
        );
        let states: Vec<&str> = rows.iter().map(|r| r.active_state.as_str()).collect();
        assert_eq!(states, ["unreachable", "active", "unreachable", "active"]);
        assert_eq!(rows[0].host, "b");
        assert_eq!(unreachable.len(), 1);
        assert_eq!(unreachable[0].0, "b");
    }

    #[test]
    fn workers_group_by_kind_with_counts() {
        let rows = vec![
            row("fx.service", Role::Master, "active", Some("ok")),
            row(
                "fx-worker-0-generic.service",
                Role::Worker,
                "active",
                Some("ok"),
            ),
            row("fx-worker-1-generic.service", Role::Worker, "failed", None),
            row("fx-worker-2-pusher.service", Role::Worker, "active", None),
        ];
        let kinds = [("generic", 0), ("generic", 1), ("pusher", 2)]
            .iter()
            .map(|(k, i)| (rows[i + 1].unit.clone(), k.to_string()))
            .collect();
        let text = table(&rows, false, Some(&kinds));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].starts_with("fx.service "), "{text}");
        assert!(lines[2].starts_with("generic ×2 "), "{text}");
        assert!(
            lines[2].contains(" 1/2 ") && lines[2].ends_with("1/1 ok"),
            "{text}"
        );
        assert!(
            lines[2].contains("       2  "),
            "restarts are summed: {text}"
        );
        assert!(
            lines[3].starts_with("pusher ×1 ") && lines[3].ends_with("  -"),
            "{text}"
        );
        let flat = table(&rows, false, None);
        assert_eq!(flat.lines().count(), 5, "{flat}");
    }

    #[test]
    fn restart_needed_ends_the_row_of_a_unit_and_is_counted_per_kind() {
        let mut rows = vec![
            row("fx.service", Role::Master, "active", Some("ok")),
            row("fx-worker-0-a.service", Role::Worker, "active", None),
            row("fx-worker-1-a.service", Role::Worker, "active", None),
        ];
        rows[0].restart_needed = true;
        rows[2].restart_needed = true;
        let flat = table(&rows, false, None);
        let lines: Vec<&str> = flat.lines().collect();
        assert!(lines[1].ends_with("ok  restart needed"), "{flat}");
        assert!(!lines[2].contains("restart needed"), "{flat}");
        assert!(lines[3].ends_with("  restart needed"), "{flat}");
        let kinds = (1..3)
            .map(|i| (rows[i].unit.clone(), "a".to_string()))
            .collect();
        let grouped = table(&rows, false, Some(&kinds));
        let kind = grouped.lines().find(|l| l.starts_with("a ×2")).unwrap();
        assert!(kind.ends_with("  1/2 restart needed"), "{grouped}");
    }

    #[test]
    fn memory_and_cpu_per_unit_and_totals_per_kind() {
        let mut rows = vec![
            row("fx.service", Role::Master, "active", None),
            row("fx-worker-0-generic.service", Role::Worker, "active", None),
            row("fx-worker-1-generic.service", Role::Worker, "active", None),
            row("fx-worker-2-pusher.service", Role::Worker, "failed", None),
        ];
        rows[2].memory_current = Some(724 << 20);
        rows[3].memory_current = None;
        rows[3].cpu_usage_nsec = None;
        let kinds = [(1, "generic"), (2, "generic"), (3, "pusher")]
            .iter()
            .map(|(i, k)| (rows[*i].unit.clone(), k.to_string()))
            .collect();
        let text = table(&rows, false, Some(&kinds));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("  MEMORY      CPU  HEALTH"), "{text}");
        assert!(lines[1].contains("  300.0M     1.5s  "), "{text}");
        // 300M + 724M, 1.5s + 1.5s.
        assert!(lines[2].starts_with("generic ×2 "), "{text}");
        assert!(lines[2].contains("    1.0G     3.0s  "), "{text}");
        assert!(lines[3].contains("       -        -  "), "{text}");
        let flat = table(&rows, false, None);
        assert!(flat.lines().nth(3).unwrap().contains("  724.0M "), "{flat}");
        let json = serde_json::to_value(&rows[1]).unwrap();
        assert_eq!(json["memory_current"], 300 << 20);
        assert_eq!(json["cpu_usage_nsec"], 1_500_000_000u64);
    }

    #[test]
    fn sizes_are_short_and_unaccounted_is_none() {
        assert_eq!(short_bytes(512), "512B");
        assert_eq!(short_bytes(1536), "1.5K");
        assert_eq!(short_bytes(2 << 30), "2.0G");
    }

    #[test]
    fn container_units_show_state_and_image_and_bare_tables_stay_as_they_were() {
        let mut rows = vec![
            row("fx.service", Role::Master, "active", Some("ok")),
            row("fx-worker-0-generic.service", Role::Worker, "active", None),
            row("fx-worker-1-generic.service", Role::Worker, "failed", None),
        ];
        let bare = table(&rows, false, None);
        assert!(!bare.contains("CONTAINER"), "{bare}");
        assert!(bare.lines().nth(1).unwrap().ends_with("  ok"), "{bare}");
        for (r, state) in rows
            .iter_mut()
            .zip(["running", "running", "unknown: timeout"])
        {
            r.image = Some("localhost/app:1".into());
            r.container_state = Some(state.into());
        }
        let text = table(&rows, false, None);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("HEALTH      CONTAINER"), "{text}");
        assert!(
            lines[1].ends_with("ok          running localhost/app:1"),
            "{text}"
        );
        assert!(lines[3].ends_with("  unknown localhost/app:1"), "{text}");
        // Columns before HEALTH are where they were.
        assert_eq!(
            lines[1].find("  ok"),
            bare.lines().nth(1).unwrap().find("  ok"),
            "{text}"
        );
        let kinds = [1, 2]
            .iter()
            .map(|&i| (rows[i].unit.clone(), "generic".to_string()))
            .collect();
        let grouped = table(&rows, false, Some(&kinds));
        assert!(
            grouped
                .lines()
                .nth(2)
                .unwrap()
                .ends_with("  1/2 running localhost/app:1"),
            "{grouped}"
        );
    }
}

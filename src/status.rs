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
                row.health = Some(probed(sd, probe, limits).await);
            }
            row
        }
    });
    Ok(join_all(rows).await)
}

/// A status row's probe: `ok`, or why it failed.
async fn probed(sd: &Systemd, probe: &crate::model::Probe, limits: Limits) -> String {
    // Through SSH, the attempt leaves room for sshd's reason when it
    // refuses the channel, rather than cutting it off.
    let limits = match health::tunnelled(probe, sd.remote()) {
        true => Limits {
            attempt: limits
                .attempt
                .max(limits.connect + crate::tunnel::ASK_EXTRA),
            ..limits
        },
        false => limits,
    };
    match health::check(probe, limits, sd.remote()).await {
        Ok(()) => "ok".into(),
        Err(e) => e.to_string(),
    }
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

/// One attempt per probed unit, short: status is a snapshot.
const STATUS_LIMITS: Limits = Limits {
    connect: Duration::from_millis(500),
    attempt: Duration::from_secs(1),
};

/// Makes the SSH master of a host whose probes go through it, bounded
/// like the bus connection (`--call-timeout`): status probes each unit
/// once, so the handshake must not eat that one attempt's bound (on a
/// loaded or distant host it takes longer than the whole attempt).
async fn prepare_tunnel(sd: &Systemd, members: &[Member], bound: Duration) {
    let Some(remote) = sd.remote() else { return };
    let probed = members
        .iter()
        .filter_map(|m| m.health.as_ref())
        .any(|p| health::tunnelled(p, Some(remote)));
    if probed {
        if let Err(e) = crate::tunnel::prepare(remote, bound).await {
            // Each probe then reports it (or its own cause) in its row.
            tracing::debug!("{e}");
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
    let conns = Fleet::connect_each_for_reads(targets, call_timeout).await;
    let reads = targets.iter().zip(conns).map(|(t, conn)| {
        let mine = on_host(&members, &t.name);
        async move {
            let rows = match conn {
                Ok(sd) => {
                    prepare_tunnel(&sd, &mine, call_timeout).await;
                    status(&sd, &mine, STATUS_LIMITS).await
                }
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
        true => crate::generations::Index::read(d, state_store)
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
        generation: kept.installed().cloned(),
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
    // Positions by name, once: a search of the members per comparison was
    // quadratic (1,000 units, ~10,000 comparisons).
    let mut order = std::collections::HashMap::new();
    for (i, m) in members.iter().enumerate() {
        order.entry(m.unit.as_str()).or_insert(i);
    }
    rows.sort_by_key(|r| order.get(r.unit.as_str()).copied());
    (rows, lost)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A running unit's row; shared with the table's tests in `ui::status`.
    pub(crate) fn row(unit: &str, role: Role, active: &str, health: Option<&str>) -> UnitStatus {
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
            background: false,
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
}

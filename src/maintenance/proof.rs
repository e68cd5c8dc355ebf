//! The proof that nothing is left: every unit inactive or failed with an
//! empty control group, stray containers stopped, the database's state.

use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;

use super::{each_host, Budget, MaintenanceError, Notify};
use crate::fleet::Fleet;
use crate::members::Member;
use crate::model::{Deployment, Role};
use crate::state::State;
use crate::systemd::{ActiveState, SystemdError};

/// The proof for one unit.
#[derive(Debug, Clone, Serialize)]
pub struct UnitProof {
    pub unit: String,
    pub host: String,
    pub role: Role,
    pub was_active: bool,
    pub active_state: ActiveState,
    /// Processes in its control group; `None` when they could not be counted.
    pub processes: Option<usize>,
    /// SIGKILLed by orch because it outlived its stop.
    pub killed: bool,
    /// SIGKILLed by systemd: its stop outlived its `TimeoutStopSec=`
    /// (the service's Result is `timeout`).
    pub sigkilled_by_systemd: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseState {
    pub unit: String,
    pub active_state: ActiveState,
}

/// A superuser's connection to the database, when `[database] roles` asks
/// for the proof and the database stays up (with `--include-database` it
/// is stopped, and its stop proves every session gone).
pub(super) async fn connect_db(
    d: &Deployment,
    fleet: &Fleet,
    include_database: bool,
) -> Result<Option<crate::dbsessions::Db>, MaintenanceError> {
    let Some(s) = d.db_sessions.as_ref().filter(|_| !include_database) else {
        return Ok(None);
    };
    let on = fleet.get(&s.host).remote();
    Ok(Some(crate::dbsessions::connect(s, on).await?))
}

/// Waits (within the stop bound) until the database has no session of the
/// deployment's roles; ends what is left with `terminate`.
pub(super) async fn db_sessions(
    db: &crate::dbsessions::Db,
    s: &crate::model::DbSessions,
    until: Option<tokio::time::Instant>,
    terminate: bool,
    notify: Notify<'_>,
) -> Result<crate::dbsessions::SessionsProof, MaintenanceError> {
    notify(
        "database",
        &format!("waiting for the sessions of {} to end", s.roles.join(", ")),
    );
    let until = until.unwrap_or_else(tokio::time::Instant::now);
    let proof = db.prove(&s.roles, until, terminate).await?;
    for t in &proof.terminated {
        notify(
            "terminated",
            &format!("database session {} of {}", t.pid, t.role),
        );
    }
    Ok(proof)
}

/// Marks the units systemd had to SIGKILL. Only units that ran when this
/// maintenance began count: their Result was reset when they started, so
/// `timeout` now is from their stop.
pub(super) async fn sigkilled_by_systemd(
    fleet: &Fleet,
    proofs: &mut [UnitProof],
    state: &State,
    notify: Notify<'_>,
) {
    for p in proofs.iter_mut().filter(|p| state.active.contains(&p.unit)) {
        let r = fleet.get(&p.host).service_result(&p.unit).await;
        p.sigkilled_by_systemd = r == Some(crate::systemd::ServiceResult::Timeout);
        if p.sigkilled_by_systemd {
            notify("sigkilled by systemd", &p.unit);
        }
    }
}

/// The proof: every unit inactive or failed with an empty control group,
/// on every host. What is left is SIGKILLed and proved again until the
/// deadline; `killed` gains what orch killed here.
pub(super) async fn prove_or_kill(
    fleet: &Fleet,
    members: &[Member],
    state: &State,
    killed: &mut Vec<String>,
    budget: &Budget,
    notify: Notify<'_>,
) -> Result<Vec<UnitProof>, MaintenanceError> {
    let mut proofs = prove(fleet, members, state).await?;
    let stragglers: Vec<&UnitProof> = proofs.iter().filter(|p| !p.is_proven()).collect();
    for p in &stragglers {
        notify("killing", &p.unit);
        match fleet.get(&p.host).kill(&p.unit).await {
            Ok(()) if !killed.contains(&p.unit) => killed.push(p.unit.clone()),
            Ok(()) => {}
            Err(e) => tracing::warn!(unit = %p.unit, error = %e, "SIGKILL failed"),
        }
    }
    if !stragglers.is_empty() {
        // Processes die at once from SIGKILL; the unit settles right after.
        loop {
            proofs = prove(fleet, members, state).await?;
            if proofs.iter().all(UnitProof::is_proven)
                || tokio::time::Instant::now() >= budget.deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for p in &mut proofs {
        p.killed = killed.contains(&p.unit);
    }
    let left = proofs.iter().filter(|p| !p.is_proven()).count();
    notify(
        "proved",
        &format!("{} units stopped, {left} left", proofs.len() - left),
    );
    Ok(proofs)
}

/// The engine's view on each host with container units: containers of the
/// deployment still running once every unit is stopped are strays, stopped
/// within the stop bound (killed after it).
pub(super) async fn stray_containers(
    d: &Deployment,
    fleet: &Fleet,
    budget: &Budget,
    notify: Notify<'_>,
) -> Result<Vec<crate::containers::Stray>, MaintenanceError> {
    let grace = d
        .services()
        .filter(|s| s.container.is_some())
        .map(|s| s.bounds.stop)
        .max()
        .unwrap_or_default()
        .min(
            budget
                .deadline
                .saturating_duration_since(tokio::time::Instant::now()),
        );
    let mut all = Vec::new();
    for host in crate::containers::container_hosts(d) {
        let on = fleet.get(&host).remote();
        let strays = crate::containers::stop_strays(d, &host, on, grace).await?;
        for s in &strays {
            notify("stray container", &format!("{} on host {}", s.name, s.host));
        }
        all.extend(strays);
    }
    Ok(all)
}

/// The database's state, when maintenance left it running.
pub(super) async fn database_state(
    d: &Deployment,
    fleet: &Fleet,
    state: &State,
) -> Result<Option<DatabaseState>, SystemdError> {
    let Some(db) = d.database.as_ref().filter(|_| !state.include_database) else {
        return Ok(None);
    };
    let states = fleet
        .get(&db.host)
        .active_states(std::slice::from_ref(&db.unit))
        .await?;
    Ok(Some(DatabaseState {
        unit: db.unit.clone(),
        active_state: states.into_iter().next().unwrap_or(ActiveState::Inactive),
    }))
}

impl UnitProof {
    /// Stopped, and its control group counted and empty.
    pub(super) fn is_proven(&self) -> bool {
        self.active_state.is_down() && self.processes == Some(0)
    }
}

pub(super) async fn prove(
    fleet: &Fleet,
    members: &[Member],
    state: &State,
) -> Result<Vec<UnitProof>, SystemdError> {
    let mut proofs = each_host(fleet, members, |sd, mine| async move {
        let units: Vec<String> = mine.iter().map(|m| m.unit.clone()).collect();
        let states = sd.active_states(&units).await?;
        let procs = join_all(units.iter().map(|u| sd.processes(u))).await;
        let proofs = mine
            .iter()
            .zip(states)
            .zip(procs)
            .map(|((m, active_state), processes)| UnitProof {
                unit: m.unit.clone(),
                host: m.host.clone(),
                role: m.role,
                was_active: state.active.contains(&m.unit),
                active_state,
                processes,
                killed: false,
                sigkilled_by_systemd: false,
            });
        Ok::<_, SystemdError>(proofs.collect())
    })
    .await?;
    // In deployment order, whatever the hosts.
    proofs.sort_by_key(|p| members.iter().position(|m| m.unit == p.unit));
    Ok(proofs)
}

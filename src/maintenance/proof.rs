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
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseState {
    pub unit: String,
    pub active_state: ActiveState,
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
            });
        Ok::<_, SystemdError>(proofs.collect())
    })
    .await?;
    // In deployment order, whatever the hosts.
    proofs.sort_by_key(|p| members.iter().position(|m| m.unit == p.unit));
    Ok(proofs)
}

//! Stop for maintenance, and resume.
//!
//! Before a database upgrade every process that writes to the database must
//! be gone, provably. `stop-for-maintenance` records what runs, masks the
//! deployment's units at runtime so nothing can bring them back, stops
//! dependents, workers and master in that order, and proves every control
//! group empty (killing what is left). `resume` unmasks and starts exactly the
//! recorded set. The state file is the journal of the operation: a rerun of
//! either command after a crash completes it.

mod masks;
mod proof;
mod resume;
mod stages;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use serde::Serialize;

use crate::fleet::{Fleet, HostAccess};
use crate::jobs::Jobs;
use crate::lifecycle;
use crate::members::{self, Member};
use crate::model::{Deployment, Role};
use crate::state::{dir, lock, read_state, state_path, MaskRecord, State, StateError};
use crate::store::{Store, StoreError};
use crate::systemd::{actions, Systemd, SystemdError};

use masks::*;
use proof::*;
use stages::*;

pub use proof::{DatabaseState, UnitProof};
pub use resume::{resume, ResumeReport, ResumeScope};

#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// The lock or the journal (see [`crate::state`]).
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{unit} is still not masked after Reload (LoadState={state}); is {} one of systemd's unit folders?", dir.display())]
    MaskIneffective {
        unit: String,
        state: String,
        dir: PathBuf,
    },
    #[error(transparent)]
    Systemd(#[from] SystemdError),
    #[error(transparent)]
    Containers(#[from] crate::containers::ContainersError),
    #[error(transparent)]
    Sessions(#[from] crate::dbsessions::SessionsError),
}

impl MaintenanceError {
    /// A systemd call that timed out is 3, like any bounded wait; the rest 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            MaintenanceError::Systemd(e) => e.exit_code(),
            MaintenanceError::Sessions(e) => e.exit_code(),
            _ => crate::exit::FAILURE,
        }
    }
}

/// Every unit maintenance covers: the deployment's, and the database's with
/// `include_database`. Never a prerequisite: other services may need it
/// (Redis, a proxy), and maintenance is about the deployment's data.
fn covered(d: &Deployment, include_database: bool) -> Vec<Member> {
    members::members(d)
        .into_iter()
        .filter(|m| m.role != Role::Prerequisite)
        .filter(|m| m.role != Role::Database || include_database)
        .collect()
}

/// `members` grouped by host, in the order of `fleet`'s hosts.
fn by_host<'a, M: std::borrow::Borrow<Member>>(
    fleet: &'a Fleet,
    members: &'a [M],
) -> Vec<(&'a Systemd, Vec<&'a Member>)> {
    fleet
        .all()
        .iter()
        .map(|sd| {
            let mine: Vec<&Member> = members
                .iter()
                .map(|m| m.borrow())
                .filter(|m| m.host == sd.host)
                .collect();
            (sd, mine)
        })
        .filter(|(_, m)| !m.is_empty())
        .collect()
}

/// Runs `f` on every host's share of `members`, all hosts at once, and
/// gathers what each returns (in the order of `fleet`'s hosts).
async fn each_host<'a, T, E, F, Fut>(
    fleet: &'a Fleet,
    members: &'a [Member],
    f: F,
) -> Result<Vec<T>, E>
where
    F: Fn(&'a Systemd, Vec<&'a Member>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, E>>,
{
    let results = join_all(
        by_host(fleet, members)
            .into_iter()
            .map(|(sd, mine)| f(sd, mine)),
    )
    .await;
    let mut out = Vec::new();
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

fn store_of<'a>(targets: &'a [HostAccess], host: &str) -> &'a Store {
    &targets
        .iter()
        .find(|t| t.name == host)
        .expect("a target for every host")
        .store
}

#[derive(Clone, Copy)]
pub struct StopOptions<'a> {
    pub reason: &'a str,
    pub timeout: Duration,
    pub include_database: bool,
    /// Each unit's stop as it happens (the live display on a terminal).
    pub observer: &'a dyn lifecycle::Observer,
    /// Ends the sessions of `[database] roles` left once the stop bound ran
    /// out (`pg_terminate_backend`).
    pub terminate_sessions: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StopReport {
    pub deployment: String,
    pub reason: String,
    pub since: String,
    /// The deployment was already in maintenance: this run completed or confirmed it.
    pub resumed_operation: bool,
    pub ok: bool,
    pub units: Vec<UnitProof>,
    pub killed: Vec<String>,
    /// Units systemd had to SIGKILL: their stop outlived `TimeoutStopSec=`.
    pub sigkilled_by_systemd: Vec<String>,
    /// Units started again between their stop and the masks taking effect
    /// (a timer, a socket, Restart=), stopped a second time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stopped_again: Vec<String>,
    /// Units that still hold processes (never expected; `ok` is false then).
    pub left: Vec<String>,
    /// Running containers of the deployment found outside every unit once
    /// the units were stopped: named, stopped, and reported (`ok` is false
    /// if one is still running).
    pub stray_containers: Vec<crate::containers::Stray>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseState>,
    /// The sessions of `[database] roles` (`ok` is false while one is left).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<crate::dbsessions::SessionsProof>,
    pub state_file: PathBuf,
}

/// A step of the operation, for progress output.
pub type Notify<'a> = &'a (dyn Fn(&str, &str) + Sync);

pub async fn stop_for_maintenance(
    d: &Deployment,
    fleet: &Fleet,
    targets: &[HostAccess],
    opts: StopOptions<'_>,
    notify: Notify<'_>,
) -> Result<StopReport, MaintenanceError> {
    fleet
        .preflight(
            "stop for maintenance",
            &[actions::MANAGE_UNITS, actions::RELOAD_DAEMON],
        )
        .await?;
    let state_store = store_of(targets, &d.master.host);
    let _lock = lock(d, state_store).await?;
    // Before anything is recorded or stopped: the proof asks the engine.
    crate::containers::check_runtime(d, |h| fleet.get(h).remote().cloned()).await?;
    // And the database: one orch cannot ask is an error that leaves the
    // deployment as it was.
    let db = connect_db(d, fleet, opts.include_database).await?;
    let budget = Budget::new(opts.timeout);
    let members = covered(d, opts.include_database);
    let (state, resumed) = record(d, fleet, state_store, &members, &opts).await?;
    notify(
        "recorded",
        &format!(
            "{} active units recorded in {}{}",
            state.active.len(),
            state_path(d).display(),
            on_host(d, &d.master.host)
        ),
    );
    // The masks are written first but loaded only after the stop: a masked
    // unit has lost its own ExecStop=, KillSignal=, KillMode= and
    // TimeoutStopSec= (its unit file is /dev/null), so the units stop with
    // their own settings, then systemd loads the masks, and anything that
    // got started in between (Restart=, a timer, a socket) is stopped again.
    // The database is never masked, even with --include-database: the
    // operator starts and stops it through orch (or systemctl) during the
    // upgrade, a restore into a fresh cluster among others.
    let masked = covered(d, false);
    let changed = write_masks(d, fleet, targets, &masked, true).await?;
    let jobs = Jobs::new(fleet, None).await?;
    let stopper = Stopper {
        fleet,
        jobs: &jobs,
        budget: &budget,
        observer: opts.observer,
    };
    let (mut killed, again) =
        stop_and_mask(d, &stopper, &members, &masked, &changed, notify).await?;
    for unit in &killed {
        notify("killed", unit);
    }
    let mut proofs = prove_or_kill(fleet, &members, &state, &mut killed, &budget, notify).await?;
    sigkilled_by_systemd(fleet, &mut proofs, &state, notify).await;
    let strays = stray_containers(d, fleet, &budget, notify).await?;
    let database = database_state(d, fleet, &state).await?;
    let mut report = StopReport::new(d, &state, resumed, proofs, killed, database);
    report.stopped_again = again;
    report.ok &= strays.iter().all(|s| s.stopped);
    report.stray_containers = strays;
    if let (Some(db), Some(s)) = (&db, &d.db_sessions) {
        // A rerun finds the units stopped long ago: what still connects is
        // not going away by itself, so it waits only the minimum.
        let until = if resumed { None } else { Some(budget.deadline) };
        let proof = db_sessions(db, s, until, opts.terminate_sessions, notify).await?;
        report.ok &= proof.is_proven();
        report.sessions = Some(proof);
    }
    Ok(report)
}

/// Stops `members` with their own settings, then has systemd load the
/// masks written before (`masked`; `changed`: the hosts where a mask file
/// changed), then stops again what got started in between. Returns the
/// units orch SIGKILLed and those it stopped again.
async fn stop_and_mask(
    d: &Deployment,
    stopper: &Stopper<'_>,
    members: &[Member],
    masked: &[Member],
    changed: &[String],
    notify: Notify<'_>,
) -> Result<(Vec<String>, Vec<String>), MaintenanceError> {
    let mut killed = stopper.phases(members, notify).await?;
    load_masks(d, stopper.fleet, masked, true, changed).await?;
    notify(
        "masked",
        &format!(
            "{} units masked in {}",
            masked.len(),
            d.runtime_dir.display()
        ),
    );
    let again = restarted(stopper.fleet, members).await?;
    if !again.is_empty() {
        notify("stopping again", &again.join(" "));
        killed.extend(stopper.phases(members, notify).await?);
    }
    Ok((killed, again))
}

/// The journal: what runs now, written before anything changes. A rerun
/// after a crash finds it and completes the operation it records.
async fn record(
    d: &Deployment,
    fleet: &Fleet,
    state_store: &Store,
    members: &[Member],
    opts: &StopOptions<'_>,
) -> Result<(State, bool), MaintenanceError> {
    if let Some(s) = read_state(d, state_store).await? {
        return Ok((s, true));
    }
    let mut active: Vec<String> = running(fleet, members)
        .await?
        .into_iter()
        .map(|m| m.unit.clone())
        .collect();
    // In deployment order, whatever the hosts.
    active.sort_by_key(|u| members.iter().position(|m| &m.unit == u));
    let now = SystemTime::now();
    let s = State {
        version: 1,
        deployment: d.name.clone(),
        reason: opts.reason.to_string(),
        since: now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
        since_text: humantime::format_rfc3339_seconds(now).to_string(),
        active,
        include_database: opts.include_database,
        // Written before the masks are: the journal never misses one.
        masked: covered(d, false)
            .into_iter()
            .map(|m| MaskRecord {
                host: m.host,
                unit: m.unit,
            })
            .collect(),
    };
    let bytes = serde_json::to_vec_pretty(&s).expect("state serializes");
    state_store
        .write_files(&dir(d), &[(state_path(d), bytes)])
        .await?;
    Ok((s, false))
}

impl StopReport {
    fn new(
        d: &Deployment,
        state: &State,
        resumed: bool,
        units: Vec<UnitProof>,
        killed: Vec<String>,
        database: Option<DatabaseState>,
    ) -> StopReport {
        let left: Vec<String> = units
            .iter()
            .filter(|p| !p.is_proven())
            .map(|p| p.unit.clone())
            .collect();
        let sigkilled_by_systemd = units
            .iter()
            .filter(|p| p.sigkilled_by_systemd)
            .map(|p| p.unit.clone())
            .collect();
        StopReport {
            deployment: d.name.clone(),
            reason: state.reason.clone(),
            since: state.since_text.clone(),
            resumed_operation: resumed,
            ok: left.is_empty(),
            units,
            killed,
            sigkilled_by_systemd,
            stopped_again: Vec::new(),
            left,
            stray_containers: Vec::new(),
            database,
            sessions: None,
            state_file: state_path(d),
        }
    }

    /// Processes still counted in the deployment's control groups (those
    /// that could be counted).
    pub fn processes_left(&self) -> usize {
        self.units.iter().filter_map(|u| u.processes).sum()
    }
}

/// ` on host NAME`, when the deployment spans hosts or the host is remote.
fn on_host(d: &Deployment, host: &str) -> String {
    if d.is_multi_host() || d.host(host).address.is_some() {
        format!(" on host {host}")
    } else {
        String::new()
    }
}

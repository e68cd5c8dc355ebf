//! Stop for maintenance, and resume.
//!
//! Before a database upgrade every process that writes to the database must
//! be gone, provably. `stop-for-maintenance` records what runs, masks the
//! deployment's units at runtime so nothing can bring them back, stops
//! dependents, workers and master in that order, and proves every control
//! group empty (killing what is left). `resume` unmasks and starts exactly the
//! recorded set. The state file is the journal of the operation: a rerun of
//! either command after a crash completes it.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use serde::Serialize;

use crate::fleet::{Fleet, Target};
use crate::jobs::{JobEnd, Jobs};
use crate::lifecycle;
use crate::members::{self, Member};
use crate::model::{Deployment, Role};
use crate::phases;
use crate::state::{dir, lock, read_state, state_path, MaskRecord, State, StateError};
use crate::store::{Store, StoreError};
use crate::systemd::{actions, Systemd, SystemdError};
use crate::systemd::{ActiveState, JobKind, JobMode, LoadState};

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
}

impl MaintenanceError {
    /// A systemd call that timed out is 3, like any bounded wait; the rest 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            MaintenanceError::Systemd(e) => e.exit_code(),
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

fn store_of<'a>(targets: &'a [Target], host: &str) -> &'a Store {
    &targets
        .iter()
        .find(|t| t.name == host)
        .expect("a target for every host")
        .store
}

/// Masks (or unmasks) every unit on its host, then makes systemd see it
/// ([`load_masks`]).
async fn set_masks(
    d: &Deployment,
    fleet: &Fleet,
    targets: &[Target],
    members: &[Member],
    mask: bool,
) -> Result<bool, MaintenanceError> {
    let changed = write_masks(d, fleet, targets, members, mask).await?;
    load_masks(d, fleet, members, mask, &changed).await
}

/// Writes (or removes) the mask files of `members`, host by host, without
/// telling systemd: the hosts where a file changed.
async fn write_masks(
    d: &Deployment,
    fleet: &Fleet,
    targets: &[Target],
    members: &[Member],
    mask: bool,
) -> Result<Vec<String>, MaintenanceError> {
    each_host(fleet, members, |sd, mine| async move {
        let units: Vec<String> = mine.iter().map(|m| m.unit.clone()).collect();
        let store = store_of(targets, &sd.host);
        // A run killed between a mask's temporary link and its rename left
        // that link behind; under the lock, nothing else of this deployment
        // is writing there.
        store.remove_leftovers(&d.runtime_dir).await;
        let changed = match mask {
            true => store.mask(&d.runtime_dir, &units).await?,
            false => store.unmask(&d.runtime_dir, &units).await?,
        };
        Ok::<_, MaintenanceError>(changed.then(|| sd.host.clone()).into_iter().collect())
    })
    .await
}

/// Reloads each host where a mask file changed or systemd's LoadState does
/// not yet agree with the files, and checks it. Reloading on disagreement,
/// not only on a change, finishes the job of a run killed between writing
/// the files and Reload. True when any host was reloaded.
async fn load_masks(
    d: &Deployment,
    fleet: &Fleet,
    members: &[Member],
    mask: bool,
    changed: &[String],
) -> Result<bool, MaintenanceError> {
    let reloaded = each_host(fleet, members, |sd, mine| async move {
        let units: Vec<String> = mine.iter().map(|m| m.unit.clone()).collect();
        let wrong = |s: &LoadState| (*s == LoadState::Masked) != mask;
        let mut pending = load_states(sd, &units, wrong).await?;
        let reload = changed.contains(&sd.host) || !pending.is_empty();
        if reload {
            sd.reload().await?;
            pending = load_states(sd, &units, wrong).await?;
        }
        match pending.into_iter().next() {
            Some((unit, state)) if mask => Err(MaintenanceError::MaskIneffective {
                unit,
                state: state.to_string(),
                dir: d.runtime_dir.clone(),
            }),
            _ => Ok(vec![reload]),
        }
    })
    .await?;
    Ok(reloaded.into_iter().any(|r| r))
}

#[derive(Debug, Clone, Copy)]
pub struct StopOptions<'a> {
    pub reason: &'a str,
    pub timeout: Duration,
    pub include_database: bool,
}

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
pub struct StopReport {
    pub deployment: String,
    pub reason: String,
    pub since: String,
    /// The deployment was already in maintenance: this run completed or confirmed it.
    pub resumed_operation: bool,
    pub ok: bool,
    pub units: Vec<UnitProof>,
    pub killed: Vec<String>,
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
    pub state_file: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseState {
    pub unit: String,
    pub active_state: ActiveState,
}

/// A step of the operation, for progress output.
pub type Notify<'a> = &'a (dyn Fn(&str, &str) + Sync);

pub async fn stop_for_maintenance(
    d: &Deployment,
    fleet: &Fleet,
    targets: &[Target],
    opts: StopOptions<'_>,
    notify: Notify<'_>,
) -> Result<StopReport, MaintenanceError> {
    fleet
        .preflight(
            "stop for maintenance",
            &[actions::MANAGE_UNITS, actions::RELOAD_DAEMON],
        )
        .await?;
    let home = store_of(targets, &d.master.host);
    let _lock = lock(d, home).await?;
    let budget = Budget::new(opts.timeout);
    let members = covered(d, opts.include_database);
    let (state, resumed) = record(d, fleet, home, &members, &opts).await?;
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
    let mut killed = stop_phases(fleet, &jobs, &members, &budget, notify).await?;
    load_masks(d, fleet, &masked, true, &changed).await?;
    notify(
        "masked",
        &format!(
            "{} units masked in {}",
            masked.len(),
            d.runtime_dir.display()
        ),
    );
    let again = restarted(fleet, &members).await?;
    if !again.is_empty() {
        notify("stopping again", &again.join(" "));
        killed.extend(stop_phases(fleet, &jobs, &members, &budget, notify).await?);
    }
    for unit in &killed {
        notify("killed", unit);
    }
    let proofs = prove_or_kill(fleet, &members, &state, &mut killed, &budget, notify).await?;
    let strays = stray_containers(d, fleet, &budget, notify).await?;
    let database = database_state(d, fleet, &state).await?;
    let mut report = StopReport::new(d, &state, resumed, proofs, killed, database);
    report.stopped_again = again;
    report.ok &= strays.iter().all(|s| s.stopped);
    report.stray_containers = strays;
    Ok(report)
}

/// The members running again after their stop: started between the stop
/// and the masks taking effect.
async fn restarted(fleet: &Fleet, members: &[Member]) -> Result<Vec<String>, SystemdError> {
    let up = running(fleet, members).await?;
    Ok(up.into_iter().map(|m| m.unit.clone()).collect())
}

/// The time `--timeout` gives the stop: each phase drains within its units'
/// `stop_timeout`, but must leave every later phase a share, so that a stuck
/// worker is killed in time for the master still to stop gracefully.
struct Budget {
    started: tokio::time::Instant,
    deadline: tokio::time::Instant,
    timeout: Duration,
}

impl Budget {
    fn new(timeout: Duration) -> Budget {
        let started = tokio::time::Instant::now();
        Budget {
            started,
            deadline: started + timeout,
            timeout,
        }
    }

    /// What each phase keeps for itself out of `--timeout`.
    fn share(&self, phases: usize) -> Duration {
        (self.timeout / (2 * phases.max(1) as u32)).min(Duration::from_secs(2))
    }

    /// When the grace period of a phase with `later` phases after it ends.
    fn drain_until(&self, group: &[Member], phases: usize, later: usize) -> tokio::time::Instant {
        let longest = group
            .iter()
            .map(|m| m.stop_timeout)
            .max()
            .unwrap_or_default();
        let share = self.share(phases);
        let reserved = share * later as u32 + share / 2;
        let own = tokio::time::Instant::now() + longest + Duration::from_secs(1);
        own.min(self.deadline.checked_sub(reserved).unwrap_or(self.started))
    }
}

/// The journal: what runs now, written before anything changes. A rerun
/// after a crash finds it and completes the operation it records.
async fn record(
    d: &Deployment,
    fleet: &Fleet,
    home: &Store,
    members: &[Member],
    opts: &StopOptions<'_>,
) -> Result<(State, bool), MaintenanceError> {
    if let Some(s) = read_state(d, home).await? {
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
    home.write_files(&dir(d), &[(state_path(d), bytes)]).await?;
    Ok((s, false))
}

/// The members that have (or may soon have) processes, read per host.
async fn running<'a>(
    fleet: &'a Fleet,
    members: &'a [Member],
) -> Result<Vec<&'a Member>, SystemdError> {
    each_host(fleet, members, |sd, mine| async move {
        let units: Vec<String> = mine.iter().map(|m| m.unit.clone()).collect();
        let states = sd.active_states(&units).await?;
        let up = mine.into_iter().zip(states).filter(|(_, s)| s.is_running());
        Ok::<_, SystemdError>(up.map(|(m, _)| m).collect())
    })
    .await
}

/// Stops dependents, then workers, then the master (then the database),
/// each phase on every host at once before the next begins. A masked unit
/// has no dependencies left in systemd (its unit file is /dev/null), so
/// `PartOf=` cannot carry the cascade: orch stops every unit itself.
/// Returns the units it had to SIGKILL.
async fn stop_phases(
    fleet: &Fleet,
    jobs: &Jobs,
    members: &[Member],
    budget: &Budget,
    notify: Notify<'_>,
) -> Result<Vec<String>, MaintenanceError> {
    let phases = phases::stop_order(members);
    let mut killed = Vec::new();
    for (i, group) in phases.iter().enumerate() {
        let names: Vec<&str> = group.iter().map(|m| m.unit.as_str()).collect();
        notify("stopping", &names.join(" "));
        let drain_until = budget.drain_until(group, phases.len(), phases.len() - i - 1);
        let settle = budget.share(phases.len()) / 2;
        killed.extend(stop_group(fleet, jobs, group, drain_until, settle).await?);
    }
    Ok(killed)
}

/// Stops every unit of `group` that is still running, all at once, and
/// awaits every job (and any systemd adds) until `drain_until`; then the
/// hard stop: SIGKILL for what still runs, and `settle` for it to go.
async fn stop_group(
    fleet: &Fleet,
    jobs: &Jobs,
    group: &[Member],
    drain_until: tokio::time::Instant,
    settle: Duration,
) -> Result<Vec<String>, SystemdError> {
    let up = running(fleet, group).await?;
    let bound = drain_until.saturating_duration_since(tokio::time::Instant::now());
    let ends = join_all(
        up.iter()
            .map(|m| jobs.run(&m.unit, &m.host, JobKind::Stop, JobMode::Replace, bound)),
    )
    .await;
    for (m, end) in up.iter().zip(&ends) {
        if let JobEnd::NotEnqueued(e) | JobEnd::Lost(e) = end {
            tracing::warn!(unit = %m.unit, error = %e, "stop failed; the proof will catch it");
        }
    }
    if ends
        .iter()
        .all(|e| matches!(e, JobEnd::Done(_) | JobEnd::Failed(_)))
    {
        return Ok(Vec::new());
    }
    let mut killed = Vec::new();
    for m in running(fleet, group).await? {
        match jobs.kill(&m.unit, &m.host).await {
            Ok(()) => killed.push(m.unit.clone()),
            Err(e) => {
                tracing::warn!(unit = %m.unit, error = %e, "SIGKILL failed; the proof will catch it")
            }
        }
    }
    let until = tokio::time::Instant::now() + settle;
    join_all(up.iter().map(|m| jobs.settle(&m.unit, &m.host, until))).await;
    Ok(killed)
}

/// The proof: every unit inactive or failed with an empty control group,
/// on every host. What is left is SIGKILLed and proved again until the
/// deadline; `killed` gains what orch killed here.
async fn prove_or_kill(
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
async fn stray_containers(
    d: &Deployment,
    fleet: &Fleet,
    budget: &Budget,
    notify: Notify<'_>,
) -> Result<Vec<crate::containers::Stray>, MaintenanceError> {
    let grace = d
        .services()
        .filter(|s| s.container.is_some())
        .map(|s| s.stop_timeout)
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
async fn database_state(
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
        StopReport {
            deployment: d.name.clone(),
            reason: state.reason.clone(),
            since: state.since_text.clone(),
            resumed_operation: resumed,
            ok: left.is_empty(),
            units,
            killed,
            stopped_again: Vec::new(),
            left,
            stray_containers: Vec::new(),
            database,
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

impl UnitProof {
    /// Stopped, and its control group counted and empty.
    fn is_proven(&self) -> bool {
        self.active_state.is_down() && self.processes == Some(0)
    }
}

/// `(unit, LoadState)` of the `units` whose LoadState matches `pick`.
async fn load_states(
    sd: &Systemd,
    units: &[String],
    pick: impl Fn(&LoadState) -> bool,
) -> Result<Vec<(String, LoadState)>, SystemdError> {
    let mut out = Vec::new();
    for unit in units {
        let load = sd.load_state(unit).await?;
        if pick(&load) {
            out.push((unit.clone(), load));
        }
    }
    Ok(out)
}

async fn prove(
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

/// What `resume` did.
#[derive(Debug, Clone, Serialize)]
pub struct ResumeReport {
    pub deployment: String,
    /// False when the deployment was not in maintenance.
    pub was_in_maintenance: bool,
    pub unmasked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<lifecycle::Summary>,
}

/// What `resume` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResumeScope {
    /// Exactly what ran when maintenance began, as the journal records it.
    #[default]
    Recorded,
    /// The whole deployment, whether the journal can be read or not: the
    /// way out when it is damaged (`orch resume --all`).
    Whole,
}

/// The journal as `resume` finds it.
enum Journal {
    Absent,
    Recorded(State),
    /// Present but unreadable; only [`ResumeScope::Whole`] goes on.
    Unreadable,
}

/// Unmasks, starts exactly the recorded set (or the whole deployment) —
/// database → master → workers → dependents, readiness-gated — then
/// removes the state file. A failed start keeps it, for a second try.
pub async fn resume(
    d: &Deployment,
    fleet: &Fleet,
    targets: &[Target],
    opts: lifecycle::Options,
    observer: std::sync::Arc<dyn lifecycle::Observer>,
    notify: Notify<'_>,
    scope: ResumeScope,
) -> Result<ResumeReport, MaintenanceError> {
    fleet
        .preflight("resume", &[actions::MANAGE_UNITS, actions::RELOAD_DAEMON])
        .await?;
    let home = store_of(targets, &d.master.host);
    let _lock = lock(d, home).await?;
    let journal = match (read_state(d, home).await, scope) {
        (Ok(None), _) => Journal::Absent,
        (Ok(Some(s)), _) => Journal::Recorded(s),
        (Err(e), ResumeScope::Whole) if e.is_unreadable_journal() => Journal::Unreadable,
        (Err(e), _) => return Err(e.into()),
    };
    // Every mask orch may have made goes: the deployment's units as
    // configured now, and every mask the journal recorded (a unit removed by
    // an install during maintenance is no longer configured): none may
    // outlive a successful resume.
    let mut all = covered(d, true);
    if let Journal::Recorded(state) = &journal {
        all.extend(recorded_masks(d, &all, state));
    }
    let unmasked = set_masks(d, fleet, targets, &all, false).await?;
    if unmasked {
        notify("unmasked", &format!("{} units unmasked", all.len()));
    }
    let mut report = ResumeReport {
        deployment: d.name.clone(),
        was_in_maintenance: !matches!(journal, Journal::Absent),
        unmasked,
        summary: None,
    };
    let members = match (journal, scope) {
        (Journal::Absent, _) => return Ok(report),
        (_, ResumeScope::Whole) => members::members(d),
        (Journal::Recorded(state), ResumeScope::Recorded) => recorded(d, &state),
        (Journal::Unreadable, ResumeScope::Recorded) => unreachable!("refused above"),
    };
    let summary = start_recorded(d, fleet, home, &members, opts, observer, notify).await?;
    report.summary = Some(summary);
    Ok(report)
}

/// The masks the journal recorded for units no longer in `current` (removed
/// from the configuration during maintenance), as members to unmask.
fn recorded_masks(d: &Deployment, current: &[Member], state: &State) -> Vec<Member> {
    let template = members::members(d)
        .into_iter()
        .find(|m| m.role == Role::Master)
        .expect("a deployment has a master");
    state
        .masked
        .iter()
        .filter(|r| !current.iter().any(|m| m.unit == r.unit && m.host == r.host))
        .map(|r| Member {
            unit: r.unit.clone(),
            host: r.host.clone(),
            role: Role::Worker,
            kind: None,
            health: None,
            ..template.clone()
        })
        .collect()
}

/// The recorded set, plus the database and the prerequisites: awaited
/// (started if needed) even when they were not stopped.
fn recorded(d: &Deployment, state: &State) -> Vec<Member> {
    members::members(d)
        .into_iter()
        .filter(|m| needed_first(m) || state.active.contains(&m.unit))
        .collect()
}

fn needed_first(m: &Member) -> bool {
    matches!(m.role, Role::Database | Role::Prerequisite)
}

/// Starts `members`, and removes the journal when every one is ready.
async fn start_recorded(
    d: &Deployment,
    fleet: &Fleet,
    home: &Store,
    members: &[Member],
    opts: lifecycle::Options,
    observer: std::sync::Arc<dyn lifecycle::Observer>,
    notify: Notify<'_>,
) -> Result<lifecycle::Summary, MaintenanceError> {
    let units = members.iter().filter(|m| !needed_first(m)).count();
    notify("starting", &format!("{units} recorded units"));
    let engine = lifecycle::Engine::new(fleet, opts, observer).await?;
    // `all`: the master starts alone, so its Wants= does not pull in workers
    // that were stopped before maintenance.
    let summary = engine.run(crate::op::Op::Start, members, true).await;
    if summary.ok {
        let path = state_path(d);
        home.remove_files(&dir(d), std::slice::from_ref(&path))
            .await?;
        notify(
            "resumed",
            &format!("removed {}{}", path.display(), on_host(d, &d.master.host)),
        );
    }
    Ok(summary)
}

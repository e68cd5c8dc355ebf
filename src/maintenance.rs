//! Stop for maintenance, and resume.
//!
//! Before a database upgrade every process that writes to the database must
//! be gone, provably. `stop-for-maintenance` records what runs, masks the
//! deployment's units at runtime so nothing can bring them back, stops
//! dependents, workers and master in that order, and proves every control
//! group empty (killing what is left). `resume` unmasks and starts exactly the
//! recorded set. The state file is the journal of the operation: a rerun of
//! either command after a crash completes it.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::install::write_atomic;
use crate::lifecycle::{self, Member};
use crate::model::{Deployment, Role};
use crate::systemd::{actions, JobWatcher, Systemd, SystemdError};

pub const STATE_FILE: &str = "maintenance.json";
const LOCK_FILE: &str = "lock";

/// The journal of a maintenance operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub deployment: String,
    pub reason: String,
    /// Seconds since the epoch.
    pub since: u64,
    /// `since` as RFC 3339, for people.
    pub since_text: String,
    /// Units that were active when maintenance began: what `resume` starts.
    pub active: Vec<String>,
    pub include_database: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("another orch (PID {pid}) is working on deployment {deployment}; it holds {}", path.display())]
    Locked {
        deployment: String,
        pid: String,
        path: PathBuf,
    },
    #[error("deployment {deployment} is in maintenance since {since} (reason: {reason}); state file {}.\n  run `orch resume` to end it, or pass --force to act anyway", path.display())]
    InMaintenance {
        deployment: String,
        since: String,
        reason: String,
        path: PathBuf,
    },
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("state file {} is damaged: {cause}", path.display())]
    State {
        path: PathBuf,
        cause: serde_json::Error,
    },
    #[error("{} exists and is not orch's runtime mask; refusing to replace it", .0.display())]
    MaskConflict(PathBuf),
    #[error("{unit} is still not masked after Reload (LoadState={state}); is {} one of systemd's unit folders?", dir.display())]
    MaskIneffective {
        unit: String,
        state: String,
        dir: PathBuf,
    },
    #[error(transparent)]
    Systemd(#[from] SystemdError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MaintenanceError + '_ {
    move |cause| MaintenanceError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

pub fn dir(d: &Deployment) -> PathBuf {
    d.state_dir.join(&d.name)
}

pub fn state_path(d: &Deployment) -> PathBuf {
    dir(d).join(STATE_FILE)
}

/// The maintenance state, if the deployment is in maintenance.
pub fn read_state(d: &Deployment) -> Result<Option<State>, MaintenanceError> {
    let path = state_path(d);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|cause| MaintenanceError::State { path, cause }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Refuses when the deployment is in maintenance (for `start`, `restart`).
pub fn refuse_if_in_maintenance(d: &Deployment) -> Result<(), MaintenanceError> {
    match read_state(d)? {
        Some(s) => Err(MaintenanceError::InMaintenance {
            deployment: d.name.clone(),
            since: s.since_text,
            reason: s.reason,
            path: state_path(d),
        }),
        None => Ok(()),
    }
}

/// An exclusive lock on the deployment, held until dropped.
pub struct Lock {
    _file: Flock<File>,
}

/// Takes the deployment's lock at once or fails naming the holder's PID.
pub fn lock(d: &Deployment) -> Result<Lock, MaintenanceError> {
    let dir = dir(d);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(&path))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut f) => {
            // The holder's PID, for the message a second orch prints.
            f.set_len(0).map_err(io(&path))?;
            f.rewind().map_err(io(&path))?;
            write!(f, "{}", std::process::id()).map_err(io(&path))?;
            f.flush().map_err(io(&path))?;
            Ok(Lock { _file: f })
        }
        Err((mut f, _)) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            Err(MaintenanceError::Locked {
                deployment: d.name.clone(),
                pid: if pid.trim().is_empty() {
                    "unknown".into()
                } else {
                    pid.trim().to_string()
                },
                path,
            })
        }
    }
}

/// Every unit maintenance covers: the deployment's, and the database's with `include_database`.
fn covered(d: &Deployment, include_database: bool) -> Vec<Member> {
    lifecycle::members(d)
        .into_iter()
        .filter(|m| m.role != Role::Database || include_database)
        .collect()
}

/// Writes `/dev/null` symlinks for `units` into the runtime folder. True when any was added.
pub fn write_masks(dir: &Path, units: &[String]) -> Result<bool, MaintenanceError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut changed = false;
    for unit in units {
        let path = crate::render::unit_path(dir, unit).map_err(|m| MaintenanceError::Io {
            path: dir.join(unit),
            cause: std::io::Error::other(m),
        })?;
        match std::fs::read_link(&path) {
            Ok(target) if target == Path::new("/dev/null") => continue,
            Ok(_) => return Err(MaintenanceError::MaskConflict(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return Err(MaintenanceError::MaskConflict(path)),
        }
        // Created under a temporary name and renamed: never a half-made mask.
        let tmp = dir.join(format!(".orch-mask-{}-{unit}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        symlink("/dev/null", &tmp).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        changed = true;
    }
    if changed {
        File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(io(dir))?;
    }
    Ok(changed)
}

/// Removes orch's `/dev/null` symlinks for `units`. True when any was removed.
pub fn remove_masks(dir: &Path, units: &[String]) -> Result<bool, MaintenanceError> {
    let mut changed = false;
    for unit in units {
        let Ok(path) = crate::render::unit_path(dir, unit) else {
            continue;
        };
        if let Ok(target) = std::fs::read_link(&path) {
            if target == Path::new("/dev/null") {
                std::fs::remove_file(&path).map_err(io(&path))?;
                changed = true;
            }
        }
    }
    Ok(changed)
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
    pub role: Role,
    pub was_active: bool,
    pub active_state: String,
    pub processes: usize,
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
    /// Units that still hold processes (never expected; `ok` is false then).
    pub left: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseState>,
    pub state_file: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseState {
    pub unit: String,
    pub active_state: String,
}

/// A step of the operation, for progress output.
pub type Notify<'a> = &'a (dyn Fn(&str, &str) + Sync);

pub async fn stop_for_maintenance(
    d: &Deployment,
    sd: &Systemd,
    opts: StopOptions<'_>,
    notify: Notify<'_>,
) -> Result<StopReport, MaintenanceError> {
    sd.preflight(
        "stop for maintenance",
        &[actions::MANAGE_UNITS, actions::RELOAD_DAEMON],
    )
    .await?;
    let _lock = lock(d)?;
    let started = tokio::time::Instant::now();
    let deadline = started + opts.timeout;
    let members = covered(d, opts.include_database);
    let names: Vec<String> = members.iter().map(|m| m.unit.clone()).collect();

    // 1. The journal: what runs now, written before anything changes.
    let (state, resumed) = match read_state(d)? {
        Some(s) => (s, true),
        None => {
            let states = active_states(sd, &names).await?;
            let active = names
                .iter()
                .zip(&states)
                .filter(|(_, s)| is_running(s))
                .map(|(u, _)| u.clone())
                .collect();
            let now = SystemTime::now();
            let s = State {
                version: 1,
                deployment: d.name.clone(),
                reason: opts.reason.to_string(),
                since: now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
                since_text: humantime::format_rfc3339_seconds(now).to_string(),
                active,
                include_database: opts.include_database,
            };
            let path = state_path(d);
            write_atomic(
                &path,
                &serde_json::to_vec_pretty(&s).expect("state serializes"),
            )
            .map_err(io(&path))?;
            (s, false)
        }
    };
    notify(
        "recorded",
        &format!(
            "{} active units recorded in {}",
            state.active.len(),
            state_path(d).display()
        ),
    );

    // 2. Runtime masks, effective after Reload: from here nothing (Restart=,
    //    a timer, a socket, a stray start) can bring a unit back.
    let mask_units: Vec<String> = covered(d, state.include_database)
        .iter()
        .map(|m| m.unit.clone())
        .collect();
    // Reload when a mask was written, and also when systemd does not yet
    // report one that is on disk: a run killed between writing and Reload
    // leaves exactly that, and the rerun must finish the job.
    let wrote = write_masks(&d.runtime_dir, &mask_units)?;
    let mut pending = load_states(sd, &mask_units, |s| s != "masked").await?;
    if wrote || !pending.is_empty() {
        sd.reload().await?;
        pending = load_states(sd, &mask_units, |s| s != "masked").await?;
    }
    if let Some((unit, state)) = pending.into_iter().next() {
        return Err(MaintenanceError::MaskIneffective {
            unit,
            state,
            dir: d.runtime_dir.clone(),
        });
    }
    notify(
        "masked",
        &format!(
            "{} units masked in {}",
            mask_units.len(),
            d.runtime_dir.display()
        ),
    );

    // 3. Stop: dependents, then workers, then the master (then the database).
    //    A masked unit has no dependencies left in systemd (its unit file is
    //    /dev/null), so PartOf= cannot carry the cascade: orch stops every
    //    worker itself, all in one phase, and awaits any job systemd adds.
    let jobs = JobWatcher::start(sd).await?;
    let phases: Vec<Vec<&Member>> = [Role::Dependent, Role::Worker, Role::Master, Role::Database]
        .iter()
        .map(|role| {
            members
                .iter()
                .filter(|m| m.role == *role)
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect();
    // Each phase drains within its units' stop_timeout, but must leave every
    // later phase a share of --timeout: a stuck worker is killed in time for
    // the master still to stop gracefully.
    let share = (opts.timeout / (2 * phases.len().max(1) as u32)).min(Duration::from_secs(2));
    let mut killed = Vec::new();
    for (i, group) in phases.iter().enumerate() {
        let later = (phases.len() - i - 1) as u32;
        let longest = group
            .iter()
            .map(|m| m.stop_timeout)
            .max()
            .unwrap_or_default();
        let drain_until = (tokio::time::Instant::now() + longest + Duration::from_secs(1)).min(
            deadline
                .checked_sub(share * later + share / 2)
                .unwrap_or(started),
        );
        notify(
            "stopping",
            &group
                .iter()
                .map(|m| m.unit.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        );
        killed.extend(stop_all(sd, &jobs, group, drain_until, share / 2).await?);
    }
    for unit in &killed {
        notify("killed", unit);
    }

    // 4. Proof: inactive or failed, and no process in the control group.
    let mut proofs = prove(sd, &members, &state).await?;
    let stragglers: Vec<String> = proofs
        .iter()
        .filter(|p| !p.is_proven())
        .map(|p| p.unit.clone())
        .collect();
    for unit in &stragglers {
        notify("killing", unit);
        match sd
            .manager
            .kill_unit(unit, "all", nix::sys::signal::Signal::SIGKILL as i32)
            .await
        {
            Ok(()) if !killed.contains(unit) => killed.push(unit.clone()),
            Ok(()) => {}
            Err(e) => tracing::warn!(%unit, error = %e, "SIGKILL failed"),
        }
    }
    if !stragglers.is_empty() {
        // Processes die at once from SIGKILL; the unit settles right after.
        loop {
            proofs = prove(sd, &members, &state).await?;
            if proofs.iter().all(UnitProof::is_proven) || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for p in &mut proofs {
        p.killed = killed.contains(&p.unit);
    }
    let left: Vec<String> = proofs
        .iter()
        .filter(|p| !p.is_proven())
        .map(|p| p.unit.clone())
        .collect();
    let database = match (&d.database, state.include_database) {
        (Some(db), false) => Some(DatabaseState {
            unit: db.unit.clone(),
            active_state: active_states(sd, std::slice::from_ref(&db.unit))
                .await?
                .remove(0),
        }),
        _ => None,
    };
    notify(
        "proved",
        &format!(
            "{} units stopped, {} left",
            proofs.len() - left.len(),
            left.len()
        ),
    );
    Ok(StopReport {
        deployment: d.name.clone(),
        reason: state.reason.clone(),
        since: state.since_text.clone(),
        resumed_operation: resumed,
        ok: left.is_empty(),
        units: proofs,
        killed,
        left,
        database,
        state_file: state_path(d),
    })
}

impl UnitProof {
    fn is_proven(&self) -> bool {
        matches!(self.active_state.as_str(), "inactive" | "failed") && self.processes == 0
    }
}

/// `(unit, LoadState)` of the `units` whose LoadState matches `pick`.
async fn load_states(
    sd: &Systemd,
    units: &[String],
    pick: impl Fn(&str) -> bool,
) -> Result<Vec<(String, String)>, SystemdError> {
    let mut out = Vec::new();
    for unit in units {
        let load = sd
            .unit(unit)
            .await?
            .load_state()
            .await
            .map_err(|e| sd.err(format!("read {unit}"), e))?;
        if pick(&load) {
            out.push((unit.clone(), load));
        }
    }
    Ok(out)
}

fn is_running(state: &str) -> bool {
    matches!(
        state,
        "active" | "activating" | "reloading" | "deactivating" | "refreshing"
    )
}

async fn active_states(sd: &Systemd, units: &[String]) -> Result<Vec<String>, SystemdError> {
    let patterns: Vec<&str> = units.iter().map(String::as_str).collect();
    let listed = sd
        .manager
        .list_units_by_patterns(&[], &patterns)
        .await
        .map_err(|e| sd.err("list units", e))?;
    Ok(units
        .iter()
        .map(|u| {
            listed
                .iter()
                .find(|e| &e.0 == u)
                .map_or_else(|| "inactive".to_string(), |e| e.3.clone())
        })
        .collect())
}

/// Stops every unit of `group` that is not already stopped, all at once, and
/// awaits every job (and any systemd adds) until `drain_until`; then
/// SIGKILLs the units still not stopped and gives them `settle` to go.
/// Returns the units it killed.
async fn stop_all(
    sd: &Systemd,
    jobs: &JobWatcher,
    group: &[&Member],
    drain_until: tokio::time::Instant,
    settle: Duration,
) -> Result<Vec<String>, SystemdError> {
    let units: Vec<String> = group.iter().map(|m| m.unit.clone()).collect();
    let states = active_states(sd, &units).await?;
    let running: Vec<&String> = units
        .iter()
        .zip(&states)
        .filter(|(_, s)| is_running(s))
        .map(|(u, _)| u)
        .collect();
    let enqueued = join_all(running.iter().map(|u| async move {
        let _call = sd.permit().await;
        (*u, sd.manager.enqueue_unit_job(u, "stop", "replace").await)
    }))
    .await;
    let mut waits = Vec::new();
    for (unit, r) in enqueued {
        match r {
            Ok((_, job, _, _, _, affected)) => {
                waits.push(job);
                waits.extend(affected.into_iter().map(|a| a.1));
            }
            Err(e) => {
                tracing::warn!(%unit, error = %e, "stop could not be enqueued; the proof will catch it")
            }
        }
    }
    let left = drain_until.saturating_duration_since(tokio::time::Instant::now());
    let done = join_all(waits.iter().map(|j| jobs.wait(j, left))).await;
    if done.iter().all(|r| matches!(r, Ok(Some(_)))) {
        return Ok(Vec::new());
    }
    // The grace period is over: a hard stop for what is still running.
    let states = active_states(sd, &units).await?;
    let mut killed = Vec::new();
    for (unit, state) in units.iter().zip(&states) {
        if is_running(state) {
            match sd
                .manager
                .kill_unit(unit, "all", nix::sys::signal::Signal::SIGKILL as i32)
                .await
            {
                Ok(()) => killed.push(unit.clone()),
                Err(e) => {
                    tracing::warn!(%unit, error = %e, "SIGKILL failed; the proof will catch it")
                }
            }
        }
    }
    let _ = join_all(waits.iter().map(|j| jobs.wait(j, settle))).await;
    Ok(killed)
}

async fn prove(
    sd: &Systemd,
    members: &[Member],
    state: &State,
) -> Result<Vec<UnitProof>, SystemdError> {
    let units: Vec<String> = members.iter().map(|m| m.unit.clone()).collect();
    let states = active_states(sd, &units).await?;
    let procs = join_all(units.iter().map(|u| async move {
        let _call = sd.permit().await;
        match sd.manager.get_unit_processes(u).await {
            Ok(p) => p.len(),
            // A unit systemd has unloaded has no control group.
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
            {
                0
            }
            Err(e) => {
                tracing::warn!(unit = %u, error = %e, "cannot list processes");
                usize::MAX
            }
        }
    }))
    .await;
    Ok(members
        .iter()
        .zip(states)
        .zip(procs)
        .map(|((m, active_state), processes)| UnitProof {
            unit: m.unit.clone(),
            role: m.role,
            was_active: state.active.contains(&m.unit),
            active_state,
            processes,
            killed: false,
        })
        .collect())
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

/// Unmasks, starts exactly the recorded set (database → master → workers →
/// dependents, readiness-gated), then removes the state file.
pub async fn resume(
    d: &Deployment,
    sd: &Systemd,
    opts: lifecycle::Options,
    observer: std::sync::Arc<dyn lifecycle::Observer>,
    notify: Notify<'_>,
) -> Result<ResumeReport, MaintenanceError> {
    sd.preflight("resume", &[actions::MANAGE_UNITS, actions::RELOAD_DAEMON])
        .await?;
    let _lock = lock(d)?;
    let state = read_state(d)?;
    let all_units: Vec<String> = covered(d, true).iter().map(|m| m.unit.clone()).collect();
    // Every mask orch may have made goes, whatever the state file says: none
    // may outlive a successful resume.
    // As above: a run killed between removing the masks and Reload leaves
    // systemd still seeing them; reload whenever it does.
    let removed = remove_masks(&d.runtime_dir, &all_units)?;
    let still = load_states(sd, &all_units, |s| s == "masked").await?;
    let unmasked = removed || !still.is_empty();
    if unmasked {
        sd.reload().await?;
        notify("unmasked", &format!("{} units unmasked", all_units.len()));
    }
    let Some(state) = state else {
        return Ok(ResumeReport {
            deployment: d.name.clone(),
            was_in_maintenance: false,
            unmasked,
            summary: None,
        });
    };
    // The database is awaited (started if needed) even when it was not stopped.
    let members: Vec<Member> = lifecycle::members(d)
        .into_iter()
        .filter(|m| m.role == Role::Database || state.active.contains(&m.unit))
        .collect();
    notify(
        "starting",
        &format!("{} recorded units", state.active.len()),
    );
    let engine = lifecycle::Engine::new(sd.clone(), opts, observer).await?;
    // `all`: the master starts alone, so its Wants= does not pull in workers
    // that were stopped before maintenance.
    let summary = engine.run(lifecycle::Op::Start, &members, true).await;
    if summary.ok {
        let path = state_path(d);
        std::fs::remove_file(&path).map_err(io(&path))?;
        notify("resumed", &format!("removed {}", path.display()));
    }
    Ok(ResumeReport {
        deployment: d.name.clone(),
        was_in_maintenance: true,
        unmasked,
        summary: Some(summary),
    })
}

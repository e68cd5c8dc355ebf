//! Install: carry out a [`Plan`]. The only stage of `orch install` with side
//! effects.
//!
//! Files are written all or none (every one to a temporary file in the same
//! folder, fsynced and checked, before any is renamed; then the folder
//! fsynced); unchanged files are never touched; systemd is reloaded only
//! when something changed.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;

use crate::fleet::{Fleet, HostAccess};
use crate::jobs::{JobEnd, Jobs};
use crate::model::Deployment;
use crate::plan::{Action, Plan, PlannedUnit};
use crate::store::StoreError;
use crate::systemd::{actions, JobKind, JobMode, Systemd, SystemdError};

pub use crate::store::write_atomic;

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub dry_run: bool,
    pub force: bool,
    /// The deployment is stopped for maintenance: its units are masked, so
    /// systemd refuses to enable the master; enabling waits for a later install.
    pub in_maintenance: bool,
    /// The operator's hard bound on each stale unit's stop; `None`: the
    /// unit's own `TimeoutStopSec=` plus slack ([`crate::jobs::stop_bound`]).
    pub stop_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstalledUnit {
    pub unit: String,
    pub host: String,
    pub action: Action,
    pub changed: bool,
    /// With a rename, the unit it replaces (see `plan`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With an update: whether it needs the unit restarted (see `plan`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_needed: Option<bool>,
    /// A created unit masked at runtime (see `plan`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub runtime_mask: bool,
    /// A removed unit that ran, and whose stop before removal outlived its
    /// `TimeoutStopSec=`: systemd SIGKILLed it (as every verb reports).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sigkilled_by_systemd: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub deployment: String,
    pub dry_run: bool,
    pub changed: bool,
    pub reloaded: bool,
    /// Whether enabling the master changed anything.
    pub enabled: bool,
    /// Why the master was not enabled (in maintenance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_skipped: Option<String>,
    pub units: Vec<InstalledUnit>,
    /// What happened on each host.
    pub hosts: Vec<HostReport>,
    /// The generation installed now (see `generations`); none with `--dry-run`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// With `rollback`: the kept generation whose files were put back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back_to: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub host: String,
    pub changed: bool,
    pub reloaded: bool,
    pub enabled: bool,
    /// The stale units systemd SIGKILLed on their stop (marked on `units`).
    #[serde(skip)]
    pub sigkilled: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{} edited by hand or not written by orch; nothing was changed. Review with `orch plan`, then rerun with --force to overwrite:\n{}",
        if .0.len() == 1 { "1 unit file was" } else { "unit files were" },
        .0.iter().map(|(u, r)| format!("  {u}: {r}")).collect::<Vec<_>>().join("\n"))]
    Drift(Vec<(String, String)>),
    #[error("host {host}: {cause}")]
    Store { host: String, cause: StoreError },
    #[error(transparent)]
    Systemd(#[from] SystemdError),
}

impl InstallError {
    /// Drift and file errors are 1; systemd's own code otherwise (a timeout is 3).
    pub fn exit_code(&self) -> i32 {
        match self {
            InstallError::Systemd(e) => e.exit_code(),
            InstallError::Drift(_) | InstallError::Store { .. } => crate::exit::FAILURE,
        }
    }
}

/// Carries out the plans of every host. With `dry_run`, reports what would
/// change and touches nothing. Drift anywhere refuses the whole install
/// before any host is touched.
pub async fn install(
    d: &Deployment,
    plans: &[Plan],
    targets: &[HostAccess],
    fleet: Option<&Fleet>,
    opts: Options,
) -> Result<Report, InstallError> {
    let drift = drifted(plans);
    if !drift.is_empty() && !opts.force {
        return Err(InstallError::Drift(drift));
    }
    let mut report = Report {
        deployment: d.name.clone(),
        dry_run: opts.dry_run,
        changed: false,
        reloaded: false,
        enabled: false,
        enable_skipped: None,
        units: rows(plans, opts.force),
        hosts: Vec::new(),
        generation: None,
        rolled_back_to: None,
    };
    if opts.dry_run {
        report.changed = plans.iter().any(Plan::has_changes);
        return Ok(report);
    }
    let fleet = fleet.expect("install without --dry-run needs systemd connections");
    let mut needed = vec![actions::MANAGE_UNIT_FILES, actions::RELOAD_DAEMON];
    if plans
        .iter()
        .flat_map(|p| &p.units)
        .any(|u| is_stale(u, opts.force))
    {
        needed.push(actions::MANAGE_UNITS);
    }
    fleet
        .preflight(&format!("install {}", d.name), &needed)
        .await?;
    let results = join_all(plans.iter().map(|p| {
        let target = targets
            .iter()
            .find(|t| t.name == p.host)
            .expect("a target for every planned host");
        install_host(d, p, target, fleet.get(&p.host), opts)
    }))
    .await;
    for r in results {
        let h = r?;
        for u in report.units.iter_mut().filter(|u| u.host == h.host) {
            u.sigkilled_by_systemd = h.sigkilled.contains(&u.unit);
        }
        report.changed |= h.changed;
        report.reloaded |= h.reloaded;
        report.enabled |= h.enabled;
        report.hosts.push(h);
    }
    if opts.in_maintenance {
        report.enable_skipped = Some(format!(
            "{} is masked for maintenance; it is enabled by the first install after `orch resume`",
            d.master.unit
        ));
    }
    Ok(report)
}

/// The report's row of every planned unit (before anything is done).
fn rows(plans: &[Plan], force: bool) -> Vec<InstalledUnit> {
    plans
        .iter()
        .flat_map(|p| &p.units)
        .map(|u| InstalledUnit {
            unit: u.unit.clone(),
            host: u.host.clone(),
            // A forced stale drift is removed, and reported so.
            action: if is_stale(u, force) {
                Action::Remove
            } else {
                u.action
            },
            changed: u.action.is_change(),
            renamed_from: u.renamed_from.clone(),
            reason: u.reason.clone(),
            restart_needed: u.restart_needed,
            runtime_mask: u.runtime_mask,
            sigkilled_by_systemd: false,
        })
        .collect()
}

/// Every drifted unit, named with its host when there are several.
fn drifted(plans: &[Plan]) -> Vec<(String, String)> {
    let multi = plans.len() > 1;
    plans
        .iter()
        .flat_map(|p| &p.units)
        .filter(|u| u.action == Action::Drift)
        .map(|u| {
            let name = if multi {
                format!("{} on host {}", u.unit, u.host)
            } else {
                u.unit.clone()
            };
            (name, u.reason.clone().unwrap_or_default())
        })
        .collect()
}

/// Whether `u` is a file to write: rendered and new, changed, or (with
/// `--force`, checked before) drifted.
fn is_write(u: &PlannedUnit) -> bool {
    matches!(
        u.action,
        Action::Create | Action::Rename | Action::Update | Action::Drift
    ) && u.content.is_some()
}

/// Whether `u` is a stale unit to stop, disable and remove: orch's own, or
/// (with `--force`) one carrying the deployment's marker whose hash does not match.
fn is_stale(u: &PlannedUnit, force: bool) -> bool {
    u.action == Action::Remove || (force && u.action == Action::Drift && u.content.is_none())
}

/// One host's part: changed files written (all or none); stale units
/// stopped, disabled and removed; one Reload if anything changed; the
/// master enabled on its host. Writing comes first so that a failed write
/// leaves both the folder and the running units as they were.
async fn install_host(
    d: &Deployment,
    plan: &Plan,
    target: &HostAccess,
    sd: &Systemd,
    opts: Options,
) -> Result<HostReport, InstallError> {
    let store = &target.store;
    let store_err = |cause| InstallError::Store {
        host: plan.host.clone(),
        cause,
    };
    let mut report = HostReport {
        host: plan.host.clone(),
        changed: false,
        reloaded: false,
        enabled: false,
        sigkilled: Vec::new(),
    };
    store.remove_leftovers(&plan.unit_dir).await;

    let writes: Vec<(PathBuf, Vec<u8>)> = plan
        .units
        .iter()
        .filter(|u| is_write(u))
        .map(|u| {
            let content = u.content.as_deref().expect("rendered units have content");
            (u.path.clone(), content.as_bytes().to_vec())
        })
        .collect();
    if !writes.is_empty() {
        store
            .write_files(&plan.unit_dir, &writes)
            .await
            .map_err(store_err)?;
        for u in plan.units.iter().filter(|u| is_write(u)) {
            tracing::info!(unit = %u.unit, host = %plan.host, action = u.action.as_str(), "wrote unit file");
        }
        report.changed = true;
    }

    let stale: Vec<_> = plan
        .units
        .iter()
        .filter(|u| is_stale(u, opts.force))
        .collect();
    if !stale.is_empty() {
        report.sigkilled = remove_stale(sd, plan, store, &stale, opts.stop_timeout).await?;
        unmask_removed(&d.runtime_dir, &plan.host, store, &stale).await?;
        report.changed = true;
    }

    // Reload before enabling so systemd knows the new [Install] sections.
    if report.changed {
        sd.reload().await?;
        report.reloaded = true;
    }
    if opts.in_maintenance || plan.host != d.master.host {
        return Ok(report);
    }
    let changes = sd.enable(&[d.master.unit.as_str()]).await?;
    if !changes.is_empty() {
        report.enabled = true;
        report.changed = true;
        for c in &changes {
            tracing::info!(kind = %c.kind, from = %c.from, to = %c.to, "unit file change");
        }
        // An enablement symlink is a change systemd must also see.
        sd.reload().await?;
        report.reloaded = true;
    }
    Ok(report)
}

/// A removed unit keeps no runtime mask (made by a maintenance that is
/// still on): it would outlive the unit and mask it when it comes back.
/// Only `/dev/null` links are removed: orch's masks.
async fn unmask_removed(
    runtime_dir: &std::path::Path,
    host: &str,
    store: &crate::store::Store,
    stale: &[&PlannedUnit],
) -> Result<(), InstallError> {
    let names: Vec<String> = stale.iter().map(|u| u.unit.clone()).collect();
    store
        .unmask(runtime_dir, &names)
        .await
        .map_err(|cause| InstallError::Store {
            host: host.to_string(),
            cause,
        })?;
    Ok(())
}

/// Stops and disables `stale` units while systemd still knows their files,
/// then removes the files. Each stop is bounded by the unit's own
/// `TimeoutStopSec=` plus slack, or the operator's `hard` bound. Returns the units systemd had to SIGKILL: they
/// ran, and their stop outlived `TimeoutStopSec=` (their service's Result
/// is then `timeout`; it was reset when they last started).
async fn remove_stale(
    sd: &Systemd,
    plan: &Plan,
    store: &crate::store::Store,
    stale: &[&PlannedUnit],
    hard: Option<Duration>,
) -> Result<Vec<String>, InstallError> {
    let (host, unit_dir) = (plan.host.as_str(), plan.unit_dir.as_path());
    let jobs = Jobs::on(sd).await?;
    let ran = join_all(stale.iter().map(|u| sd.facts(&u.unit))).await;
    let bounds = join_all(stale.iter().map(|u| async {
        let bound = crate::jobs::stop_bound(sd.stop_timeout(&u.unit).await, hard);
        tracing::info!(unit = %u.unit, %host, bound = %humantime::format_duration(bound), "stopping stale unit");
        bound
    }))
    .await;
    let ends = join_all(
        stale
            .iter()
            .zip(&bounds)
            .map(|(u, b)| jobs.run(&u.unit, &sd.host, JobKind::Stop, JobMode::Replace, *b)),
    )
    .await;
    for ((u, end), bound) in stale.iter().zip(ends).zip(bounds) {
        match end {
            JobEnd::Done(_) | JobEnd::Failed(_) => {}
            JobEnd::Running(_) => {
                return Err(SystemdError::Timeout {
                    action: format!("stop stale unit {}", u.unit),
                    timeout: bound,
                }
                .into())
            }
            // A unit systemd does not know has nothing to stop.
            JobEnd::NotEnqueued(e) if e.is_no_such_unit() => {}
            JobEnd::NotEnqueued(e) | JobEnd::Lost(e) => return Err(e.into()),
        }
    }
    let sigkilled = sigkilled(sd, host, stale, &ran).await;
    let names: Vec<&str> = stale.iter().map(|u| u.unit.as_str()).collect();
    sd.disable(&names).await?;
    let paths: Vec<PathBuf> = stale.iter().map(|u| u.path.clone()).collect();
    store
        .remove_files(unit_dir, &paths)
        .await
        .map_err(|cause| InstallError::Store {
            host: host.to_string(),
            cause,
        })?;
    for u in stale {
        tracing::info!(unit = %u.unit, %host, "removed stale unit");
    }
    Ok(sigkilled)
}

/// The `stale` units that ran before their stop (`ran`: their facts then)
/// and whose service's Result is now `timeout`: SIGKILLed by systemd.
async fn sigkilled(
    sd: &Systemd,
    host: &str,
    stale: &[&PlannedUnit],
    ran: &[Option<crate::systemd::UnitFacts>],
) -> Vec<String> {
    let running = |f: &Option<crate::systemd::UnitFacts>| {
        f.as_ref()
            .and_then(|f| f.active.as_ref())
            .is_some_and(|a| a.is_running())
    };
    let mut out = Vec::new();
    for (u, before) in stale.iter().zip(ran) {
        if !running(before) {
            continue;
        }
        if sd.service_result(&u.unit).await == Some(crate::systemd::ServiceResult::Timeout) {
            tracing::warn!(unit = %u.unit, %host, "systemd SIGKILLed the stale unit: its stop outlived TimeoutStopSec");
            out.push(u.unit.clone());
        }
    }
    out
}

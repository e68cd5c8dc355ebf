//! The one job layer shared by lifecycle and maintenance.
//!
//! systemd's words (job types, job modes, ActiveState, job results) are
//! strings on the bus; here they are enums, converted once at the D-Bus
//! boundary, so a new verb cannot compile while doing the wrong thing.
//! [`Jobs`] is the only place that enqueues a job and awaits it: it holds
//! the `JobRemoved` watcher of every host, the D-Bus call permits, the
//! `--max-parallel` slots, the in-flight table (including the jobs systemd
//! adds to a transaction) and the fallback for a lost signal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use serde::{Serialize, Serializer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zbus::OwnedObjectPath;

use crate::fleet::Fleet;
use crate::systemd::{JobWatcher, Systemd, SystemdError};

/// The job types orch enqueues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Start,
    Stop,
    Restart,
    Reload,
    /// Reload when the unit can, restart otherwise; start it when inactive.
    #[serde(rename = "reload-or-restart")]
    ReloadOrRestart,
}

impl JobKind {
    /// The job type's name on the bus (`EnqueueUnitJob`).
    pub fn dbus_name(self) -> &'static str {
        match self {
            JobKind::Start => "start",
            JobKind::Stop => "stop",
            JobKind::Restart => "restart",
            JobKind::Reload => "reload",
            JobKind::ReloadOrRestart => "reload-or-restart",
        }
    }

    /// How long systemd itself may take for this job, from the unit's own
    /// timeouts (a restart is a stop then a start; a reload-or-restart may
    /// be a restart).
    pub fn bound(self, start: Duration, stop: Duration) -> Duration {
        match self {
            JobKind::Start | JobKind::Reload => start,
            JobKind::Stop => stop,
            JobKind::Restart | JobKind::ReloadOrRestart => stop.saturating_add(start),
        }
    }

    /// An operator's explicit start is not a crash loop: clear the failed
    /// state and the start-rate counter first (`systemctl reset-failed`), so
    /// back-to-back restarts are not refused with start-limit-hit.
    /// A reload-or-restart may start the unit, so it counts as a start.
    pub fn resets_failed(self) -> bool {
        matches!(
            self,
            JobKind::Start | JobKind::Restart | JobKind::ReloadOrRestart
        )
    }

    /// The job leaves the unit stopped (checked as such), rather than
    /// running (checked for readiness).
    pub fn ends_stopped(self) -> bool {
        self == JobKind::Stop
    }
}

/// Job modes (`EnqueueUnitJob`'s mode argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobMode {
    /// Replace conflicting queued jobs: the ordinary mode.
    Replace,
    /// Fail if a conflicting job is queued.
    Fail,
    /// Pull in no `Wants=`/`Requires=`: the unit alone, ordering kept.
    IgnoreRequirements,
    /// Ignore requirements and ordering.
    IgnoreDependencies,
}

impl JobMode {
    pub fn dbus_name(self) -> &'static str {
        match self {
            JobMode::Replace => "replace",
            JobMode::Fail => "fail",
            JobMode::IgnoreRequirements => "ignore-requirements",
            JobMode::IgnoreDependencies => "ignore-dependencies",
        }
    }
}

/// A unit's `ActiveState`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActiveState {
    Active,
    Reloading,
    Inactive,
    Failed,
    Activating,
    Deactivating,
    Refreshing,
    Maintenance,
    /// A state this version of orch does not know.
    Other(String),
}

impl ActiveState {
    pub fn from_dbus(s: &str) -> ActiveState {
        match s {
            "active" => ActiveState::Active,
            "reloading" => ActiveState::Reloading,
            "inactive" => ActiveState::Inactive,
            "failed" => ActiveState::Failed,
            "activating" => ActiveState::Activating,
            "deactivating" => ActiveState::Deactivating,
            "refreshing" => ActiveState::Refreshing,
            "maintenance" => ActiveState::Maintenance,
            other => ActiveState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ActiveState::Active => "active",
            ActiveState::Reloading => "reloading",
            ActiveState::Inactive => "inactive",
            ActiveState::Failed => "failed",
            ActiveState::Activating => "activating",
            ActiveState::Deactivating => "deactivating",
            ActiveState::Refreshing => "refreshing",
            ActiveState::Maintenance => "maintenance",
            ActiveState::Other(s) => s,
        }
    }

    /// Up and serving (what readiness starts from).
    pub fn is_up(&self) -> bool {
        matches!(self, ActiveState::Active | ActiveState::Reloading)
    }

    /// Stopped: nothing of the unit should run.
    pub fn is_down(&self) -> bool {
        matches!(self, ActiveState::Inactive | ActiveState::Failed)
    }

    /// Between two states: a job or a restart is under way.
    pub fn is_transitional(&self) -> bool {
        matches!(
            self,
            ActiveState::Activating
                | ActiveState::Deactivating
                | ActiveState::Reloading
                | ActiveState::Refreshing
        )
    }

    /// Has, or may soon have, processes (what maintenance records and stops).
    pub fn is_running(&self) -> bool {
        self.is_up() || self.is_transitional()
    }
}

impl std::fmt::Display for ActiveState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for ActiveState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A unit's `LoadState`, as far as orch tells them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadState {
    Loaded,
    NotFound,
    Masked,
    /// bad-setting, error, merged, stub, or a state orch does not know.
    Other(String),
}

impl LoadState {
    pub fn from_dbus(s: &str) -> LoadState {
        match s {
            "loaded" => LoadState::Loaded,
            "not-found" => LoadState::NotFound,
            "masked" => LoadState::Masked,
            other => LoadState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            LoadState::Loaded => "loaded",
            LoadState::NotFound => "not-found",
            LoadState::Masked => "masked",
            LoadState::Other(s) => s,
        }
    }
}

impl std::fmt::Display for LoadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A job's result, as `JobRemoved` names it, plus `Vanished`: the job
/// object went without a signal (merged into another job, or systemd
/// re-executed), so the unit's state is the judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    Done,
    Canceled,
    Timeout,
    Failed,
    Dependency,
    Skipped,
    Invalid,
    Assert,
    Unsupported,
    Collected,
    Once,
    Vanished,
    Other(String),
}

impl JobResult {
    pub fn from_dbus(s: &str) -> JobResult {
        match s {
            "done" => JobResult::Done,
            "canceled" => JobResult::Canceled,
            "timeout" => JobResult::Timeout,
            "failed" => JobResult::Failed,
            "dependency" => JobResult::Dependency,
            "skipped" => JobResult::Skipped,
            "invalid" => JobResult::Invalid,
            "assert" => JobResult::Assert,
            "unsupported" => JobResult::Unsupported,
            "collected" => JobResult::Collected,
            "once" => JobResult::Once,
            other => JobResult::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            JobResult::Done => "done",
            JobResult::Canceled => "canceled",
            JobResult::Timeout => "timeout",
            JobResult::Failed => "failed",
            JobResult::Dependency => "dependency",
            JobResult::Skipped => "skipped",
            JobResult::Invalid => "invalid",
            JobResult::Assert => "assert",
            JobResult::Unsupported => "unsupported",
            JobResult::Collected => "collected",
            JobResult::Once => "once",
            JobResult::Vanished => "vanished",
            JobResult::Other(s) => s,
        }
    }
}

impl std::fmt::Display for JobResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for JobResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// How a job ended, as far as orch could see within its bound.
#[derive(Debug)]
pub enum JobEnd {
    /// `done`, or vanished and the unit has settled since.
    Done(JobResult),
    /// Removed with another result (failed, dependency, timeout, …).
    Failed(JobResult),
    /// Still queued or running in systemd when the bound ran out.
    Running(Duration),
    /// systemd refused the job, or the call failed.
    NotEnqueued(SystemdError),
    /// Enqueued, then the wait failed (the connection closed).
    Lost(SystemdError),
}

/// A job orch waits for: the host's name and the job's object path (paths
/// repeat across hosts).
type JobKey = (String, OwnedObjectPath);
type Table = Arc<Mutex<HashMap<JobKey, (u32, String)>>>;

/// A handle to the jobs in flight, kept by the caller to report or cancel
/// them when the operation is interrupted.
#[derive(Clone)]
pub struct Inflight(Table);

impl Inflight {
    /// `(host, job id, unit)` of every job orch is still waiting for.
    pub fn jobs(&self) -> Vec<(String, u32, String)> {
        let mut v: Vec<_> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|((host, _), (id, unit))| (host.clone(), *id, unit.clone()))
            .collect();
        v.sort();
        v
    }
}

/// Enqueues and awaits jobs on every host of a fleet.
pub struct Jobs {
    hosts: Vec<(Systemd, JobWatcher)>,
    slots: Option<Arc<Semaphore>>,
    inflight: Table,
}

impl Jobs {
    /// Subscribes to job signals on every host, before anything is enqueued.
    /// `max_parallel` caps the units being worked on at once ([`Jobs::slot`]).
    pub async fn new(fleet: &Fleet, max_parallel: Option<usize>) -> Result<Jobs, SystemdError> {
        let watchers = join_all(fleet.all().iter().map(JobWatcher::start)).await;
        let mut hosts = Vec::new();
        for (sd, w) in fleet.all().iter().zip(watchers) {
            hosts.push((sd.clone(), w?));
        }
        Ok(Jobs {
            hosts,
            slots: max_parallel.map(|n| Arc::new(Semaphore::new(n.max(1)))),
            inflight: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The job layer of one connection (install's stale units).
    pub async fn on(sd: &Systemd) -> Result<Jobs, SystemdError> {
        Ok(Jobs {
            hosts: vec![(sd.clone(), JobWatcher::start(sd).await?)],
            slots: None,
            inflight: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    pub fn inflight(&self) -> Inflight {
        Inflight(self.inflight.clone())
    }

    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// The connection to `host`.
    pub fn sd(&self, host: &str) -> &Systemd {
        &self.host(host).0
    }

    /// Whether the connection to `host` has closed (no job signal can come).
    pub fn is_closed(&self, host: &str) -> bool {
        self.host(host).1.is_closed()
    }

    fn host(&self, host: &str) -> &(Systemd, JobWatcher) {
        self.hosts
            .iter()
            .find(|(sd, _)| sd.host == host)
            .unwrap_or_else(|| panic!("no connection to host {host}"))
    }

    /// A `--max-parallel` slot, held for a unit's whole job and readiness.
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        match &self.slots {
            Some(s) => Some(s.clone().acquire_owned().await.expect("never closed")),
            None => None,
        }
    }

    /// Enqueues `kind` for `unit` and awaits it, and every job systemd adds
    /// to the transaction (a `PartOf=` cascade, `Wants=`), within `bound`.
    pub async fn run(
        &self,
        unit: &str,
        host: &str,
        kind: JobKind,
        mode: JobMode,
        bound: Duration,
    ) -> JobEnd {
        let sd = self.sd(host);
        let deadline = tokio::time::Instant::now() + bound;
        let call = sd.permit().await;
        if kind.resets_failed() {
            if let Err(e) = sd.manager.reset_failed_unit(unit).await {
                tracing::debug!(%unit, error = %e, "reset-failed");
            }
        }
        let enqueued = sd
            .manager
            .enqueue_unit_job(unit, kind.dbus_name(), mode.dbus_name())
            .await;
        drop(call);
        let (id, job, _, _, _, affected) = match enqueued {
            Ok(v) => v,
            Err(e) => {
                return JobEnd::NotEnqueued(sd.err(format!("{} {unit}", kind.dbus_name()), e))
            }
        };
        let mut waits = vec![(id, job.clone(), unit.to_string())];
        waits.extend(affected.into_iter().map(|(aid, p, u, _, _)| (aid, p, u)));
        let outcomes = self.await_all(host, &waits, deadline).await;
        let own = outcomes
            .into_iter()
            .find(|(p, _)| *p == job)
            .map(|(_, o)| o)
            .expect("the unit's own job is awaited");
        match own {
            Ok(Some(JobResult::Vanished)) => {
                self.settle(unit, host, deadline).await;
                JobEnd::Done(JobResult::Vanished)
            }
            Ok(Some(JobResult::Done)) => JobEnd::Done(JobResult::Done),
            Ok(Some(other)) => JobEnd::Failed(other),
            Ok(None) => JobEnd::Running(bound.max(Duration::from_millis(1))),
            Err(e) => JobEnd::Lost(e),
        }
    }

    /// Awaits every job of `waits` on `host` until `deadline`, keeping the
    /// in-flight table: a job that outlives the deadline stays in it.
    async fn await_all(
        &self,
        host: &str,
        waits: &[(u32, OwnedObjectPath, String)],
        deadline: tokio::time::Instant,
    ) -> Vec<(OwnedObjectPath, Result<Option<JobResult>, SystemdError>)> {
        {
            let mut table = self.inflight.lock().unwrap();
            for (id, path, unit) in waits {
                table.insert((host.to_string(), path.clone()), (*id, unit.clone()));
            }
        }
        let watcher = &self.host(host).1;
        join_all(waits.iter().map(|(_, path, unit)| async move {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let r = watcher.wait(path, left).await;
            if !matches!(r, Ok(None)) {
                let key = (host.to_string(), path.clone());
                self.inflight.lock().unwrap().remove(&key);
            }
            tracing::debug!(%unit, outcome = ?r, "job removed");
            (path.clone(), r.map(|o| o.map(|o| o.result)))
        }))
        .await
    }

    /// Waits (bounded) until `unit` has no pending job and is not between states.
    pub async fn settle(&self, unit: &str, host: &str, deadline: tokio::time::Instant) {
        let sd = self.sd(host);
        while tokio::time::Instant::now() < deadline {
            let settled = {
                let _call = sd.permit().await;
                match sd.unit(unit).await {
                    Ok(u) => {
                        let job = u.job().await.map(|j| j.0).unwrap_or(0);
                        let state = u.active_state().await.unwrap_or_default();
                        job == 0 && !ActiveState::from_dbus(&state).is_transitional()
                    }
                    Err(_) => true,
                }
            };
            if settled {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The unit's ActiveState (None when it cannot be read).
    pub async fn active_state(&self, unit: &str, host: &str) -> Option<ActiveState> {
        let sd = self.sd(host);
        let _call = sd.permit().await;
        let s = sd.unit(unit).await.ok()?.active_state().await.ok()?;
        Some(ActiveState::from_dbus(&s))
    }

    /// `NRestarts` of a service (None for other unit types or on error).
    pub async fn restarts(&self, unit: &str, host: &str) -> Option<u32> {
        let sd = self.sd(host);
        let _call = sd.permit().await;
        let path = sd.manager.load_unit(unit).await.ok()?;
        sd.service_at(path).await.ok()?.n_restarts().await.ok()
    }

    /// SIGKILLs every process of `unit`: the hard stop after a grace period.
    pub async fn kill(&self, unit: &str, host: &str) -> Result<(), SystemdError> {
        kill(self.sd(host), unit).await
    }
}

/// How a service's last run ended, from its `Result` property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceResult {
    Success,
    /// A start, stop or watchdog bound ran out. After a stop of a running
    /// unit: its stop outlived `TimeoutStopSec=` and systemd sent SIGKILL
    /// (`FinalKillSignal=`) to what was left.
    Timeout,
    /// exit-code, signal, core-dump, oom-kill, …
    Other(String),
}

impl ServiceResult {
    pub fn from_dbus(s: &str) -> ServiceResult {
        match s {
            "success" => ServiceResult::Success,
            "timeout" => ServiceResult::Timeout,
            other => ServiceResult::Other(other.to_string()),
        }
    }
}

/// The `Result` of service `unit` (`None` for another unit type or when
/// it cannot be read).
pub async fn service_result(sd: &Systemd, unit: &str) -> Option<ServiceResult> {
    let _call = sd.permit().await;
    let path = sd.manager.load_unit(unit).await.ok()?;
    let r = sd.service_at(path).await.ok()?.result().await.ok()?;
    Some(ServiceResult::from_dbus(&r))
}

/// SIGKILLs every process of `unit` on `sd`'s host.
pub async fn kill(sd: &Systemd, unit: &str) -> Result<(), SystemdError> {
    let _call = sd.permit().await;
    sd.manager
        .kill_unit(unit, "all", nix::sys::signal::Signal::SIGKILL as i32)
        .await
        .map_err(|e| sd.err(format!("kill {unit}"), e))
}

/// The ActiveState of each of `units` in one call (`ListUnitsByPatterns`);
/// a unit systemd does not list is inactive.
pub async fn active_states(
    sd: &Systemd,
    units: &[String],
) -> Result<Vec<ActiveState>, SystemdError> {
    let patterns: Vec<&str> = units.iter().map(String::as_str).collect();
    let listed = {
        let _call = sd.permit().await;
        sd.manager
            .list_units_by_patterns(&[], &patterns)
            .await
            .map_err(|e| sd.err("list units", e))?
    };
    Ok(units
        .iter()
        .map(|u| {
            listed
                .iter()
                .find(|e| &e.0 == u)
                .map_or(ActiveState::Inactive, |e| ActiveState::from_dbus(&e.3))
        })
        .collect())
}

/// The number of processes in `unit`'s control group. A unit systemd has
/// unloaded has no control group: zero. `None` when it cannot be read.
pub async fn processes(sd: &Systemd, unit: &str) -> Option<usize> {
    let _call = sd.permit().await;
    match sd.manager.get_unit_processes(unit).await {
        Ok(p) => Some(p.len()),
        Err(zbus::Error::MethodError(name, _, _))
            if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
        {
            Some(0)
        }
        Err(e) => {
            tracing::warn!(%unit, host = %sd.host, error = %e, "cannot list processes");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_bound_and_reset_rule() {
        let (start, stop) = (Duration::from_secs(3), Duration::from_secs(5));
        assert_eq!(JobKind::Start.bound(start, stop), start);
        assert_eq!(JobKind::Stop.bound(start, stop), stop);
        assert_eq!(JobKind::Restart.bound(start, stop), start + stop);
        assert_eq!(JobKind::Reload.bound(start, stop), start);
        assert_eq!(JobKind::Restart.bound(Duration::MAX, stop), Duration::MAX);
        assert!(JobKind::Start.resets_failed() && JobKind::Restart.resets_failed());
        assert!(!JobKind::Stop.resets_failed() && !JobKind::Reload.resets_failed());
        assert!(JobKind::Stop.ends_stopped());
        assert!(!JobKind::Reload.ends_stopped() && !JobKind::Restart.ends_stopped());
        assert_eq!(JobKind::ReloadOrRestart.bound(start, stop), start + stop);
        assert!(JobKind::ReloadOrRestart.resets_failed());
        assert!(!JobKind::ReloadOrRestart.ends_stopped());
        assert_eq!(JobKind::ReloadOrRestart.dbus_name(), "reload-or-restart");
    }

    #[test]
    fn names_round_trip_through_the_bus_words() {
        for s in [
            "active",
            "reloading",
            "inactive",
            "failed",
            "activating",
            "deactivating",
            "refreshing",
            "maintenance",
            "weird",
        ] {
            assert_eq!(ActiveState::from_dbus(s).as_str(), s);
        }
        for s in [
            "done",
            "canceled",
            "timeout",
            "failed",
            "dependency",
            "skipped",
        ] {
            assert_eq!(JobResult::from_dbus(s).as_str(), s);
        }
        assert_eq!(
            JobResult::from_dbus("new-one"),
            JobResult::Other("new-one".into())
        );
        assert_eq!(
            JobMode::IgnoreRequirements.dbus_name(),
            "ignore-requirements"
        );
        assert_eq!(JobKind::Reload.dbus_name(), "reload");
    }

    #[test]
    fn state_classes() {
        use ActiveState::*;
        assert!(Active.is_up() && Reloading.is_up() && !Activating.is_up());
        assert!(Inactive.is_down() && Failed.is_down() && !Deactivating.is_down());
        for s in [Active, Reloading, Activating, Deactivating, Refreshing] {
            assert!(s.is_running(), "{s}");
        }
        for s in [Inactive, Failed, Maintenance] {
            assert!(!s.is_running(), "{s}");
        }
        assert_eq!(
            serde_json::to_string(&ActiveState::Failed).unwrap(),
            "\"failed\""
        );
    }

    #[test]
    fn every_kind_and_mode_has_its_bus_word() {
        let kinds = [
            (JobKind::Start, "start"),
            (JobKind::Stop, "stop"),
            (JobKind::Restart, "restart"),
            (JobKind::Reload, "reload"),
        ];
        for (k, w) in kinds {
            assert_eq!(k.dbus_name(), w);
        }
        let modes = [
            (JobMode::Replace, "replace"),
            (JobMode::Fail, "fail"),
            (JobMode::IgnoreRequirements, "ignore-requirements"),
            (JobMode::IgnoreDependencies, "ignore-dependencies"),
        ];
        for (m, w) in modes {
            assert_eq!(m.dbus_name(), w);
        }
        assert!(!JobKind::Start.ends_stopped());
    }

    #[test]
    fn transitional_states_are_the_ones_between_two_states() {
        use ActiveState::*;
        for s in [Activating, Deactivating, Reloading, Refreshing] {
            assert!(s.is_transitional(), "{s}");
        }
        for s in [Active, Inactive, Failed, Maintenance, Other("x".into())] {
            assert!(!s.is_transitional(), "{s}");
        }
        assert!(!Other("x".into()).is_up() && !Other("x".into()).is_down());
    }

    #[test]
    fn states_and_results_display_and_serialize_as_their_bus_words() {
        assert_eq!(format!("[{:<8}]", ActiveState::Failed), "[failed  ]");
        assert_eq!(format!("{}", ActiveState::Other("new".into())), "new");
        assert_eq!(format!("[{:>7}]", JobResult::Timeout), "[timeout]");
        assert_eq!(JobResult::Vanished.to_string(), "vanished");
        assert_eq!(
            serde_json::to_string(&JobResult::Dependency).unwrap(),
            "\"dependency\""
        );
        assert_eq!(
            serde_json::to_string(&ActiveState::Activating).unwrap(),
            "\"activating\""
        );
    }

    #[test]
    fn inflight_lists_host_id_and_unit_sorted() {
        let table: Table = Arc::default();
        let path = |p: &str| OwnedObjectPath::try_from(p).unwrap();
        {
            let mut t = table.lock().unwrap();
            t.insert(
                ("b".into(), path("/org/freedesktop/systemd1/job/7")),
                (7, "w1.service".into()),
            );
            t.insert(
                ("a".into(), path("/org/freedesktop/systemd1/job/9")),
                (9, "m.service".into()),
            );
            t.insert(
                ("a".into(), path("/org/freedesktop/systemd1/job/3")),
                (3, "w0.service".into()),
            );
        }
        assert_eq!(
            Inflight(table).jobs(),
            [
                ("a".to_string(), 3, "w0.service".to_string()),
                ("a".to_string(), 9, "m.service".to_string()),
                ("b".to_string(), 7, "w1.service".to_string()),
            ]
        );
    }
}

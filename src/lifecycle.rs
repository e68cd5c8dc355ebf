//! Start, stop and restart over D-Bus, in parallel, with every job awaited
//! and every unit checked for readiness.
//!
//! An operation is a list of phases; a phase is a set of units that get the
//! same job at once. `--all` orders them the way the deployment needs:
//! database ready → master ready → workers and dependents; stop in reverse.
//! Every wait is bounded by the unit's own timeout and by the global deadline.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde::Serialize;
use tokio::sync::Semaphore;
use zbus::OwnedObjectPath;

use crate::fleet::Fleet;
use crate::health::{self, Limits};
use crate::model::{Deployment, Probe, Role};
use crate::systemd::{JobWatcher, Systemd, SystemdError};

/// Slack added to systemd's own timeouts: systemd enforces them, orch only
/// needs to outlast them to hear the result.
const JOB_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Start,
    Stop,
    Restart,
}

/// One unit orch acts on, with its bounds.
#[derive(Debug, Clone)]
pub struct Member {
    pub unit: String,
    /// The host it lives on.
    pub host: String,
    pub role: Role,
    pub kind: Option<String>,
    pub health: Option<Probe>,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
    pub health_timeout: Duration,
}

/// Every unit of the deployment, in start order.
pub fn members(d: &Deployment) -> Vec<Member> {
    let mut v = Vec::new();
    let ext = |x: &crate::model::External, role| Member {
        unit: x.unit.clone(),
        host: x.host.clone(),
        role,
        kind: None,
        health: x.health.clone(),
        start_timeout: x.start_timeout,
        stop_timeout: x.stop_timeout,
        health_timeout: x.health_timeout,
    };
    let svc = |s: &crate::model::Service, role, kind: Option<&str>| Member {
        unit: s.unit.clone(),
        host: s.host.clone(),
        role,
        kind: kind.map(str::to_string),
        health: s.health.clone(),
        start_timeout: s.start_timeout,
        stop_timeout: s.stop_timeout,
        health_timeout: s.health_timeout,
    };
    if let Some(db) = &d.database {
        v.push(ext(db, Role::Database));
    }
    v.push(svc(&d.master, Role::Master, None));
    v.extend(
        d.workers
            .iter()
            .map(|w| svc(&w.service, Role::Worker, Some(&w.kind))),
    );
    v.extend(d.dependents.iter().map(|x| ext(x, Role::Dependent)));
    v
}

/// Resolves command-line targets: a unit name, a worker kind, `master`,
/// `workers` or `dependents`. The database is only acted on when named.
pub fn select(d: &Deployment, targets: &[String]) -> Result<Vec<Member>, String> {
    let all = members(d);
    let mut chosen: Vec<Member> = Vec::new();
    for t in targets {
        let unit = if t.contains('.') {
            t.clone()
        } else {
            format!("{t}.service")
        };
        let matched: Vec<&Member> = match t.as_str() {
            "master" => all.iter().filter(|m| m.role == Role::Master).collect(),
            "workers" => all.iter().filter(|m| m.role == Role::Worker).collect(),
            "dependents" => all.iter().filter(|m| m.role == Role::Dependent).collect(),
            "database" => all.iter().filter(|m| m.role == Role::Database).collect(),
            _ => {
                let by_kind: Vec<&Member> = all
                    .iter()
                    .filter(|m| m.kind.as_deref() == Some(t.as_str()))
                    .collect();
                if by_kind.is_empty() {
                    all.iter().filter(|m| m.unit == unit).collect()
                } else {
                    by_kind
                }
            }
        };
        if matched.is_empty() {
            let kinds: Vec<&str> = d
                .workers
                .iter()
                .map(|w| w.kind.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            return Err(format!(
                "`{t}` is not a unit of deployment {} nor a target (master, workers, dependents, database, or a worker kind: {})",
                d.name,
                kinds.join(", ")
            ));
        }
        for m in matched {
            if !chosen.iter().any(|c| c.unit == m.unit) {
                chosen.push(m.clone());
            }
        }
    }
    Ok(chosen)
}

/// Where a unit is in the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Queued,
    Stopping,
    Starting,
    Probing,
    Ready,
    Stopped,
    Failed,
    Timeout,
    Skipped,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Stopping => "stopping",
            Phase::Starting => "starting",
            Phase::Probing => "probing",
            Phase::Ready => "ready",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
            Phase::Timeout => "timeout",
            Phase::Skipped => "skipped",
        }
    }
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Phase::Ready | Phase::Stopped | Phase::Failed | Phase::Timeout | Phase::Skipped
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub unit: String,
    pub host: String,
    pub phase: Phase,
    pub elapsed_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Receives progress; implemented by the human, plain and JSON reporters.
pub trait Observer: Send + Sync {
    fn event(&self, e: &Event);
    /// The operation is over: a live display clears itself here, before the
    /// summary is printed.
    fn finish(&self) {}
}

/// What happened to one unit.
#[derive(Debug, Clone, Serialize)]
pub struct UnitReport {
    pub unit: String,
    pub host: String,
    pub role: Role,
    pub phase: Phase,
    /// systemd's job result: done, failed, timeout, dependency, canceled, …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_state: Option<String>,
    /// The service's `Result` (exit-code, signal, timeout, …) on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub journal: Vec<String>,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub op: Op,
    pub ok: bool,
    pub failed: usize,
    pub timed_out: usize,
    pub interrupted: bool,
    pub elapsed_ms: u64,
    pub units: Vec<UnitReport>,
    /// Jobs still queued or running inside systemd when orch stopped waiting.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub running_jobs: Vec<String>,
    /// Units a failed rollout or phase did not reach.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub untouched: Vec<String>,
}

impl Summary {
    pub fn exit_code(&self) -> i32 {
        if self.interrupted {
            crate::exit::INTERRUPTED
        } else if self.failed > 0 {
            crate::exit::FAILURE
        } else if self.timed_out > 0 {
            crate::exit::TIMEOUT
        } else {
            crate::exit::OK
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Caps jobs in flight.
    pub max_parallel: Option<usize>,
    /// Bound on the whole operation.
    pub timeout: Option<Duration>,
    /// `--rolling --batch N`.
    pub rolling: Option<usize>,
    /// Passed to `journalctl --root` to read a container's journal.
    pub journal_root: Option<PathBuf>,
    pub probe: Limits,
}

/// One step of an operation.
#[derive(Debug, Clone)]
pub enum Step {
    /// Start what is not active, then await readiness (the database).
    EnsureRunning(Vec<Member>),
    /// The same job for every member, enqueued at once.
    Phase {
        members: Vec<Member>,
        job: &'static str,
        mode: &'static str,
    },
}

impl Step {
    pub fn members(&self) -> &[Member] {
        match self {
            Step::EnsureRunning(m) | Step::Phase { members: m, .. } => m,
        }
    }
}

/// A job orch waits for: the host's name and the job's object path (paths
/// repeat across hosts).
type JobKey = (String, OwnedObjectPath);

/// Runs operations against the systemd of every host of the deployment.
/// Steps run one after another across all hosts, which is the ordering
/// systemd cannot give between machines.
pub struct Engine {
    hosts: Vec<(Systemd, JobWatcher)>,
    opts: Options,
    observer: Arc<dyn Observer>,
    started: Instant,
    deadline: Option<tokio::time::Instant>,
    permits: Option<Arc<Semaphore>>,
    reports: Mutex<BTreeMap<String, UnitReport>>,
    /// The latest phase of every unit, for a summary cut short by a signal.
    phases: Mutex<HashMap<String, Phase>>,
    /// Jobs orch enqueued (and those systemd added) that have not finished.
    inflight: Arc<Mutex<HashMap<JobKey, (u32, String)>>>,
}

/// A handle to the jobs in flight, kept by the caller to report or cancel
/// them when the operation is interrupted.
#[derive(Clone)]
pub struct Inflight(Arc<Mutex<HashMap<JobKey, (u32, String)>>>);

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

impl Engine {
    /// Subscribes to job signals before anything is enqueued.
    pub async fn new(
        fleet: &Fleet,
        opts: Options,
        observer: Arc<dyn Observer>,
    ) -> Result<Engine, SystemdError> {
        let watchers = join_all(fleet.all().iter().map(JobWatcher::start)).await;
        let mut hosts = Vec::new();
        for (sd, w) in fleet.all().iter().zip(watchers) {
            hosts.push((sd.clone(), w?));
        }
        let started = Instant::now();
        Ok(Engine {
            hosts,
            deadline: opts.timeout.map(|t| tokio::time::Instant::now() + t),
            permits: opts
                .max_parallel
                .map(|n| Arc::new(Semaphore::new(n.max(1)))),
            opts,
            observer,
            started,
            reports: Mutex::new(BTreeMap::new()),
            phases: Mutex::new(HashMap::new()),
            inflight: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    pub fn inflight(&self) -> Inflight {
        Inflight(self.inflight.clone())
    }

    /// The connection to a unit's host.
    fn sd(&self, host: &str) -> &Systemd {
        &self.host(host).0
    }

    fn host(&self, host: &str) -> &(Systemd, JobWatcher) {
        self.hosts
            .iter()
            .find(|(sd, _)| sd.host == host)
            .unwrap_or_else(|| panic!("no connection to host {host}"))
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn emit(&self, unit: &str, host: &str, phase: Phase, detail: Option<String>) {
        self.phases.lock().unwrap().insert(unit.to_string(), phase);
        self.observer.event(&Event {
            unit: unit.to_string(),
            host: host.to_string(),
            phase,
            elapsed_ms: self.elapsed_ms(),
            detail,
        });
    }

    /// `bound`, shortened to what is left of the global deadline.
    fn bounded(&self, bound: Duration) -> Duration {
        match self.deadline {
            Some(d) => bound.min(d.saturating_duration_since(tokio::time::Instant::now())),
            None => bound,
        }
    }

    fn record(&self, r: UnitReport) {
        self.emit(&r.unit, &r.host, r.phase, r.error.clone());
        self.reports.lock().unwrap().insert(r.unit.clone(), r);
    }

    /// The phases of `op` on `members`, in order.
    pub fn steps(&self, op: Op, members: &[Member], all: bool) -> Vec<Step> {
        let by_role = |roles: &[Role]| -> Vec<Member> {
            members
                .iter()
                .filter(|m| roles.contains(&m.role))
                .cloned()
                .collect()
        };
        let db = by_role(&[Role::Database]);
        let master = by_role(&[Role::Master]);
        let workers = by_role(&[Role::Worker]);
        let dependents = by_role(&[Role::Dependent]);
        // With --all the master is started alone ("ignore-requirements": its
        // Wants= would pull the workers in at once, and PartOf= would restart
        // them with it); orch starts the workers itself once it is ready.
        let master_mode = if all {
            "ignore-requirements"
        } else {
            "replace"
        };
        let phase = |members: Vec<Member>, job: &'static str, mode: &'static str| Step::Phase {
            members,
            job,
            mode,
        };
        let mut steps = Vec::new();
        match (op, self.opts.rolling) {
            (Op::Restart, Some(batch)) => {
                steps.push(Step::EnsureRunning(db));
                steps.push(phase(master, "restart", "ignore-requirements"));
                for group in workers.chunks(batch.max(1)) {
                    steps.push(phase(group.to_vec(), "restart", "replace"));
                }
                steps.push(phase(dependents, "restart", "replace"));
            }
            _ => {
                if matches!(op, Op::Stop | Op::Restart) {
                    // Dependents, then workers, then the master: nothing loses
                    // what it depends on while it still runs.
                    steps.push(phase(dependents.clone(), "stop", "replace"));
                    steps.push(phase(workers.clone(), "stop", "replace"));
                    steps.push(phase(master.clone(), "stop", master_mode));
                }
                if matches!(op, Op::Start | Op::Restart) {
                    // The database is started if needed and awaited, never restarted.
                    steps.push(Step::EnsureRunning(db));
                    steps.push(phase(master, "start", master_mode));
                    steps.push(phase([workers, dependents].concat(), "start", "replace"));
                }
            }
        }
        steps.retain(|s| !s.members().is_empty());
        steps
    }

    /// Runs `op` on `members` (in the deployment's phase order) and returns the summary.
    pub async fn run(&self, op: Op, members: &[Member], all: bool) -> Summary {
        for m in members {
            self.emit(&m.unit, &m.host, Phase::Queued, None);
        }
        let steps = self.steps(op, members, all);
        let mut untouched: Vec<String> = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let ok = match step {
                Step::EnsureRunning(db) => self.ensure_running(db).await,
                Step::Phase { members, job, mode } => self.phase(members, job, mode).await,
            };
            if !ok {
                // Stop at the first failure; say what is left as it was.
                for later in &steps[i + 1..] {
                    for m in later.members() {
                        if !untouched.contains(&m.unit) {
                            untouched.push(m.unit.clone());
                        }
                        if !self.reports.lock().unwrap().contains_key(&m.unit) {
                            self.record(self.report(
                                m,
                                Phase::Skipped,
                                None,
                                Some("not reached: an earlier phase failed".into()),
                            ));
                        }
                    }
                }
                break;
            }
        }
        self.summary(op, members, untouched, false)
    }

    /// Builds the summary from what was recorded so far.
    pub fn summary(
        &self,
        op: Op,
        members: &[Member],
        untouched: Vec<String>,
        interrupted: bool,
    ) -> Summary {
        let reports = self.reports.lock().unwrap();
        let phases = self.phases.lock().unwrap();
        let units: Vec<UnitReport> = members
            .iter()
            .filter_map(|m| match (reports.get(&m.unit), phases.get(&m.unit)) {
                // Cut short: say where the unit was (a restart's stop report is stale then).
                (_, Some(p)) if interrupted && !p.is_final() && *p != Phase::Queued => {
                    Some(self.report(
                        m,
                        *p,
                        None,
                        Some(format!("interrupted while {}", p.as_str())),
                    ))
                }
                (Some(r), _) => Some(r.clone()),
                (None, _) => None,
            })
            .collect();
        let failed = units.iter().filter(|u| u.phase == Phase::Failed).count();
        let timed_out = units.iter().filter(|u| u.phase == Phase::Timeout).count();
        let running_jobs = self
            .inflight()
            .jobs()
            .into_iter()
            .map(|(host, id, unit)| {
                if self.hosts.len() > 1 {
                    format!("{unit} (job {id} on host {host})")
                } else {
                    format!("{unit} (job {id})")
                }
            })
            .collect();
        Summary {
            op,
            ok: failed == 0 && timed_out == 0 && !interrupted,
            failed,
            timed_out,
            interrupted,
            elapsed_ms: self.elapsed_ms(),
            units,
            running_jobs,
            untouched,
        }
    }

    fn report(
        &self,
        m: &Member,
        phase: Phase,
        job: Option<String>,
        error: Option<String>,
    ) -> UnitReport {
        UnitReport {
            unit: m.unit.clone(),
            host: m.host.clone(),
            role: m.role,
            phase,
            job,
            error,
            active_state: None,
            result: None,
            exit_status: None,
            journal: Vec::new(),
            elapsed_ms: self.elapsed_ms(),
        }
    }

    /// Starts the database only if it is not active, then awaits readiness.
    async fn ensure_running(&self, db: &[Member]) -> bool {
        let mut to_start = Vec::new();
        for m in db {
            let active = match self.sd(&m.host).unit(&m.unit).await {
                Ok(u) => u.active_state().await.ok(),
                Err(_) => None,
            };
            if active.as_deref() == Some("active") {
                let r = self.readiness(m, None).await;
                let ok = r.phase == Phase::Ready;
                self.record(r);
                if !ok {
                    return false;
                }
            } else {
                to_start.push(m.clone());
            }
        }
        self.phase(&to_start, "start", "replace").await
    }

    /// Enqueues `job_type` for every member at once and waits for all of them.
    /// True when every unit ended ready (start/restart) or stopped (stop).
    async fn phase(&self, group: &[Member], job_type: &'static str, mode: &'static str) -> bool {
        if group.is_empty() {
            return true;
        }
        let results = join_all(group.iter().map(|m| self.one(m, job_type, mode))).await;
        results.into_iter().all(|ok| ok)
    }

    async fn one(&self, m: &Member, job_type: &'static str, mode: &'static str) -> bool {
        let _permit = match &self.permits {
            Some(s) => Some(
                s.clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore is never closed"),
            ),
            None => None,
        };
        let stopping = job_type == "stop";
        self.emit(
            &m.unit,
            &m.host,
            if stopping {
                Phase::Stopping
            } else {
                Phase::Starting
            },
            None,
        );
        let bound = match job_type {
            "stop" => m.stop_timeout,
            "start" => m.start_timeout,
            _ => m.stop_timeout + m.start_timeout,
        } + JOB_MARGIN;

        let sd = self.sd(&m.host);
        let call = sd.permit().await;
        if !stopping {
            // An operator's explicit start is not a crash loop: clear the
            // failed state and systemd's start-rate counter (StartLimitBurst=),
            // as `systemctl reset-failed` would, so back-to-back restarts of a
            // healthy deployment are not refused with start-limit-hit.
            if let Err(e) = sd.manager.reset_failed_unit(&m.unit).await {
                tracing::debug!(unit = %m.unit, error = %e, "reset-failed");
            }
        }
        let enqueued = sd.manager.enqueue_unit_job(&m.unit, job_type, mode).await;
        drop(call);
        let (id, job, _, _, _, affected) = match enqueued {
            Ok(v) => v,
            Err(e) => {
                let e = sd.err(format!("{job_type} {}", m.unit), e);
                let timeout = matches!(e, SystemdError::Timeout { .. });
                let mut r = self.report(
                    m,
                    if timeout {
                        Phase::Timeout
                    } else {
                        Phase::Failed
                    },
                    None,
                    Some(e.to_string()),
                );
                self.diagnose(&mut r).await;
                self.record(r);
                return false;
            }
        };
        {
            let mut inflight = self.inflight.lock().unwrap();
            inflight.insert((m.host.clone(), job.clone()), (id, m.unit.clone()));
            for (aid, apath, aunit, _, _) in &affected {
                inflight.insert((m.host.clone(), apath.clone()), (*aid, aunit.clone()));
            }
        }
        // Jobs systemd added to the transaction (the PartOf cascade, Wants=) are awaited too.
        let waits = std::iter::once((job.clone(), m.unit.clone())).chain(
            affected
                .iter()
                .map(|(_, p, u, _, _)| (p.clone(), u.clone())),
        );
        let outcomes = join_all(waits.map(|(path, unit)| async move {
            let r = self.host(&m.host).1.wait(&path, self.bounded(bound)).await;
            if !matches!(r, Ok(None)) {
                self.inflight
                    .lock()
                    .unwrap()
                    .remove(&(m.host.clone(), path));
            }
            (unit, r)
        }))
        .await;

        let mut main = None;
        for (unit, outcome) in outcomes {
            if unit != m.unit {
                tracing::debug!(%unit, ?outcome, "job added by systemd to the transaction");
                continue;
            }
            main = Some(outcome);
        }
        let result = match main.expect("the unit's own job is awaited") {
            Ok(Some(o)) => o.result,
            Ok(None) => {
                let r = self.report(
                    m,
                    Phase::Timeout,
                    None,
                    Some(format!(
                        "{job_type} job still running in systemd after {:?}",
                        self.bounded(bound).max(Duration::from_millis(1))
                    )),
                );
                self.record(r);
                return false;
            }
            Err(e) => {
                self.record(self.report(m, Phase::Failed, None, Some(e.to_string())));
                return false;
            }
        };
        if result == "vanished" {
            // The job object went without a JobRemoved (merged into another
            // job, or systemd re-executed): judge by the unit once it settles.
            self.settle(m, self.bounded(bound)).await;
        }
        if result != "done" && result != "vanished" {
            let mut r = self.report(
                m,
                Phase::Failed,
                Some(result.clone()),
                Some(format!("{job_type} job {result}")),
            );
            self.diagnose(&mut r).await;
            self.record(r);
            return false;
        }
        if stopping {
            let mut r = self.report(m, Phase::Stopped, Some(result), None);
            self.stop_result(m, &mut r).await;
            if matches!(
                r.active_state.as_deref(),
                Some("active" | "reloading" | "activating" | "deactivating")
            ) {
                r.phase = Phase::Failed;
                r.error = Some(format!(
                    "still {} after its stop job",
                    r.active_state.as_deref().unwrap_or("")
                ));
                self.record(r);
                return false;
            }
            self.record(r);
            return true;
        }
        let r = self.readiness(m, Some(result)).await;
        let ok = r.phase == Phase::Ready;
        self.record(r);
        ok
    }

    /// Waits (bounded) until `unit` has no pending job and is not between states.
    async fn settle(&self, m: &Member, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        let sd = self.sd(&m.host);
        while tokio::time::Instant::now() < deadline {
            let settled = {
                let _call = sd.permit().await;
                match sd.unit(&m.unit).await {
                    Ok(u) => {
                        let job = u.job().await.map(|j| j.0).unwrap_or(0);
                        let state = u.active_state().await.unwrap_or_default();
                        job == 0
                            && !matches!(
                                state.as_str(),
                                "activating" | "deactivating" | "reloading"
                            )
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

    /// `NRestarts` of a service (None for other unit types or on error).
    async fn restarts(&self, m: &Member) -> Option<u32> {
        let sd = self.sd(&m.host);
        let _call = sd.permit().await;
        let path = sd.manager.load_unit(&m.unit).await.ok()?;
        sd.service_at(path).await.ok()?.n_restarts().await.ok()
    }

    /// A stop that needed SIGKILL is reported as such: the process ignored
    /// SIGTERM for the whole `TimeoutStopSec=`.
    async fn stop_result(&self, m: &Member, r: &mut UnitReport) {
        let sd = self.sd(&m.host);
        let _call = sd.permit().await;
        let Ok(path) = sd.manager.load_unit(&m.unit).await else {
            return;
        };
        if let Ok(u) = sd.unit_at(path.clone()).await {
            r.active_state = u.active_state().await.ok();
        }
        let Ok(svc) = sd.service_at(path).await else {
            return;
        };
        match svc.result().await.ok().as_deref() {
            Some("success") | None => {}
            Some("timeout") => {
                r.result = Some("timeout".into());
                r.error = Some(format!(
                    "did not stop within its stop_timeout ({:?}); systemd killed it with SIGKILL",
                    m.stop_timeout
                ));
            }
            Some(other) => r.result = Some(other.to_string()),
        }
    }

    async fn active_state(&self, m: &Member) -> Option<String> {
        let sd = self.sd(&m.host);
        let _call = sd.permit().await;
        sd.unit(&m.unit).await.ok()?.active_state().await.ok()
    }

    /// After a successful start job: the unit must be active and its probe pass.
    async fn readiness(&self, m: &Member, job: Option<String>) -> UnitReport {
        let state = self.active_state(m).await;
        if !matches!(state.as_deref(), Some("active") | Some("reloading")) {
            let mut r = self.report(
                m,
                Phase::Failed,
                job,
                Some(format!(
                    "unit is {} after its start job",
                    state.as_deref().unwrap_or("unknown")
                )),
            );
            self.diagnose(&mut r).await;
            return r;
        }
        let Some(probe) = &m.health else {
            let mut r = self.report(m, Phase::Ready, job, None);
            r.active_state = state;
            return r;
        };
        self.emit(&m.unit, &m.host, Phase::Probing, Some(probe.to_string()));
        let timeout = self.bounded(m.health_timeout);
        // A unit that crashes and is restarted by Restart= while being probed
        // is flapping, not starting: its restart count must not move.
        let restarts = self.restarts(m).await;
        let alive = || async {
            // Without its connection orch cannot see the unit crash: the probe
            // passing alone would not prove it ready.
            if self.host(&m.host).1.is_closed() {
                return Err(format!(
                    "the connection to host {} closed while the unit was being probed",
                    m.host
                ));
            }
            match self.active_state(m).await.as_deref() {
                Some("failed") | Some("inactive") => {
                    return Err("the unit stopped while being probed".to_string())
                }
                _ => {}
            }
            match (restarts, self.restarts(m).await) {
                (Some(a), Some(b)) if b > a => Err(format!(
                    "the unit was restarted {} time(s) while being probed (crash loop)",
                    b - a
                )),
                _ => Ok(()),
            }
        };
        let outcome = match health::wait_ready(
            probe,
            timeout,
            self.opts.probe,
            self.sd(&m.host).remote(),
            &alive,
        )
        .await
        {
            // Healthy, and still the same process that passed the probe.
            Ok(()) => alive().await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                let mut r = self.report(m, Phase::Ready, job, None);
                r.active_state = Some("active".into());
                r
            }
            Err(e) if e.starts_with("not healthy within") => {
                self.report(m, Phase::Timeout, job, Some(e))
            }
            Err(e) => {
                let mut r = self.report(m, Phase::Failed, job, Some(e));
                self.diagnose(&mut r).await;
                r
            }
        }
    }

    /// Adds the service's result, exit status and last journal lines.
    async fn diagnose(&self, r: &mut UnitReport) {
        let sd = self.sd(&r.host);
        let call = sd.permit().await;
        if let Ok(path) = sd.manager.load_unit(&r.unit).await {
            if let Ok(u) = sd.unit_at(path.clone()).await {
                r.active_state = u.active_state().await.ok();
            }
            if let Ok(s) = sd.service_at(path).await {
                r.result = s.result().await.ok();
                r.exit_status = s.exec_main_status().await.ok();
            }
        }
        drop(call);
        r.journal = journal(&r.unit, self.opts.journal_root.as_deref(), sd.remote(), 10).await;
    }
}

/// The last `lines` journal lines of a unit (empty when journalctl is
/// unavailable); bounded to a few seconds.
pub async fn journal(
    unit: &str,
    root: Option<&std::path::Path>,
    remote: Option<&crate::systemd::Remote>,
    lines: usize,
) -> Vec<String> {
    let mut cmd = match remote {
        // `ssh … DEST journalctl …`: the remote shell joins the words, and
        // every word here is a fixed option or a validated unit name.
        Some(r) => {
            let (program, args) = r.run("journalctl");
            let mut c = tokio::process::Command::new(program);
            c.args(args);
            c
        }
        None => tokio::process::Command::new("journalctl"),
    };
    if let Some(root) = root.filter(|_| remote.is_none()) {
        cmd.arg("--root").arg(root);
    }
    // Over SSH the remote shell parses the words: quote the unit name (unit
    // names never contain a single quote) so a `\` escape in it survives.
    let unit = if remote.is_some() {
        format!("'{unit}'")
    } else {
        unit.to_string()
    };
    cmd.args([
        "--no-pager",
        "-q",
        "-o",
        "short-precise",
        "-n",
        &lines.to_string(),
        "-u",
        &unit,
    ])
    .stdin(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(3), cmd.output()).await {
        Ok(Ok(out)) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

//! Start, stop and restart over D-Bus, in parallel, with every job awaited
//! and every unit checked for readiness.
//!
//! An operation is the plan of [`crate::phases`] (which units get which job,
//! in which order), run step by step by [`Engine`]: each step's jobs go
//! through the one job layer, [`crate::jobs`], then each unit is judged
//! (readiness, or stopped) in [`readiness`]. Every wait is bounded by the
//! unit's own timeout and by the global deadline.

mod canary;
mod readiness;

pub use readiness::{journal, JOURNAL_BOUND};

/// What explaining a failure (its unit's state and journal lines) may take
/// beyond `--timeout` once the deadline has passed; documented in `--help`.
pub const REPORT_SLICE: Duration = Duration::from_millis(500);

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde::Serialize;

use crate::fleet::Fleet;
use crate::health::Limits;
use crate::jobs::{JobEnd, Jobs};
use crate::members::Member;
use crate::model::Role;
use crate::op::Op;
use crate::phases::{self, Shape, Step};
use crate::systemd::{ActiveState, JobKind, JobMode, JobResult, ServiceResult};
use crate::systemd::{Systemd, SystemdError};

pub use crate::jobs::Inflight;

/// Slack added to systemd's own timeouts: systemd enforces them, orch only
/// needs to outlast them to hear the result.
const JOB_MARGIN: Duration = Duration::from_secs(5);

/// Where a unit is in the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Queued,
    Stopping,
    Starting,
    Reloading,
    Probing,
    /// Ready, and watched: a canary for its hold before the rest of the
    /// rollout, a batch for its settle time before the next batch.
    Watching,
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
            Phase::Reloading => "reloading",
            Phase::Probing => "probing",
            Phase::Watching => "watching",
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

/// The part of a rollout a unit's event belongs to (JSON `stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// `restart --rolling --canary`: restarted and watched before the rest.
    Canary,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub unit: String,
    pub host: String,
    pub phase: Phase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
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
    pub job: Option<JobResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_state: Option<ActiveState>,
    /// The service's `Result` (exit-code, signal, timeout, …) on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ServiceResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub journal: Vec<String>,
    /// systemd had to SIGKILL it: its stop (alone, or in a restart)
    /// outlived `TimeoutStopSec=`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sigkilled_by_systemd: bool,
    pub elapsed_ms: u64,
    /// Restarted and watched as a canary (`restart --rolling --canary`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub canary: bool,
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
    /// In a rolling restart: the lowest number of ready workers seen per
    /// kind, and how many the kind has.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lowest_ready: BTreeMap<String, KindAvailability>,
}

/// `ready` of `of` workers of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KindAvailability {
    pub ready: usize,
    pub of: usize,
}

/// Workers down per kind during a rolling restart, and the lowest number
/// ready seen: what the rollout promised to keep.
#[derive(Debug, Default)]
struct Availability {
    down: HashMap<String, std::collections::BTreeSet<String>>,
    lowest: BTreeMap<String, KindAvailability>,
}

impl Availability {
    /// Every worker of `members` counted ready, as before a restart.
    fn new(members: &[Member]) -> Availability {
        let mut a = Availability::default();
        for kind in members.iter().filter_map(|m| m.kind.as_ref()) {
            let e = a
                .lowest
                .entry(kind.clone())
                .or_insert(KindAvailability { ready: 0, of: 0 });
            e.of += 1;
            e.ready += 1;
        }
        a
    }

    fn set(&mut self, m: &Member, down: bool) {
        let Some(kind) = &m.kind else { return };
        let set = self.down.entry(kind.clone()).or_default();
        if down {
            set.insert(m.unit.clone());
        } else {
            set.remove(&m.unit);
        }
        let now = set.len();
        if let Some(e) = self.lowest.get_mut(kind) {
            e.ready = e.ready.min(e.of.saturating_sub(now));
        }
    }
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
    /// `reload --or-restart`.
    pub or_restart: bool,
    /// `restart --rolling --canary [N] --hold D`.
    pub canary: Option<phases::Canary>,
    /// `restart --rolling --settle D` (see [`phases::Shape::settle`]).
    pub settle: Option<Duration>,
    /// Passed to `journalctl --root` to read a container's journal.
    pub journal_root: Option<PathBuf>,
    pub probe: Limits,
}

/// What the engine knows of every unit: its report once judged, and its
/// latest phase (for a summary cut short by a signal). One lock for both,
/// so the two never disagree.
#[derive(Default)]
struct Ledger {
    reports: BTreeMap<String, UnitReport>,
    phases: HashMap<String, Phase>,
    /// Kept in a rolling restart only.
    availability: Option<Availability>,
    /// The members of each umbrella unit, which must stay up while it is probed.
    parts: HashMap<String, Vec<String>>,
    /// The canaries of a rolling restart: their events say so.
    canaries: std::collections::HashSet<String>,
}

/// Runs operations against the systemd of every host of the deployment.
/// Steps run one after another across all hosts, which is the ordering
/// systemd cannot give between machines.
pub struct Engine {
    jobs: Jobs,
    opts: Options,
    observer: Arc<dyn Observer>,
    started: Instant,
    deadline: Option<tokio::time::Instant>,
    ledger: Mutex<Ledger>,
}

impl Engine {
    /// Subscribes to job signals before anything is enqueued.
    pub async fn new(
        fleet: &Fleet,
        opts: Options,
        observer: Arc<dyn Observer>,
    ) -> Result<Engine, SystemdError> {
        let deadline = opts.timeout.map(|t| tokio::time::Instant::now() + t);
        let jobs = Jobs::new(fleet, opts.max_parallel).await?.until(deadline);
        Ok(Engine {
            jobs,
            deadline,
            opts,
            observer,
            started: Instant::now(),
            ledger: Mutex::new(Ledger::default()),
        })
    }

    pub fn inflight(&self) -> Inflight {
        self.jobs.inflight()
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn emit(&self, m: &Member, phase: Phase, detail: Option<String>) {
        let stage = {
            let mut ledger = self.ledger.lock().unwrap();
            ledger.phases.insert(m.unit.clone(), phase);
            ledger.canaries.contains(&m.unit).then_some(Stage::Canary)
        };
        self.observer.event(&Event {
            unit: m.unit.clone(),
            host: m.host.clone(),
            phase,
            stage,
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

    /// `bound` for a read that explains a failure (state, journal): what is
    /// left of the deadline, and at least [`REPORT_SLICE`] once it passed.
    fn report_bound(&self, bound: Duration) -> Duration {
        self.bounded(bound).max(REPORT_SLICE.min(bound))
    }

    fn record(&self, mut r: UnitReport) {
        r.canary = self.ledger.lock().unwrap().canaries.contains(&r.unit);
        self.observer.event(&Event {
            unit: r.unit.clone(),
            host: r.host.clone(),
            phase: r.phase,
            stage: r.canary.then_some(Stage::Canary),
            elapsed_ms: self.elapsed_ms(),
            detail: r.error.clone(),
        });
        let mut ledger = self.ledger.lock().unwrap();
        // A restart is a stop phase then a start phase: the start's report
        // keeps what the stop found.
        let earlier = ledger.reports.get(&r.unit);
        r.sigkilled_by_systemd |= earlier.is_some_and(|e| e.sigkilled_by_systemd);
        ledger.phases.insert(r.unit.clone(), r.phase);
        ledger.reports.insert(r.unit.clone(), r);
    }

    /// The members of `unit` when it is an umbrella (empty otherwise).
    fn parts_of(&self, unit: &str) -> Vec<String> {
        let ledger = self.ledger.lock().unwrap();
        ledger.parts.get(unit).cloned().unwrap_or_default()
    }

    fn is_recorded(&self, unit: &str) -> bool {
        self.ledger.lock().unwrap().reports.contains_key(unit)
    }

    /// The phases of `op` on `members`, in order (see [`phases::plan`]).
    pub fn steps(&self, op: Op, members: &[Member], all: bool, master_first: bool) -> Vec<Step> {
        let shape = Shape {
            all,
            rolling: self.opts.rolling,
            or_restart: self.opts.or_restart,
            canary: self.opts.canary,
            settle: self.opts.settle,
            master_first,
        };
        phases::plan(op, members, shape)
    }

    /// Whether a worker alone of its kind requires the master (see
    /// [`phases::Shape::master_first`]): only asked in a rolling restart.
    async fn master_first(&self, op: Op, members: &[Member]) -> bool {
        if op != Op::Restart || self.opts.rolling.is_none() {
            return false;
        }
        let Some(master) = members.iter().find(|m| m.role == Role::Master) else {
            return false;
        };
        let workers: Vec<Member> = members
            .iter()
            .filter(|m| m.role == Role::Worker)
            .cloned()
            .collect();
        let (lone, _) = phases::lone_and_twins(&workers);
        for w in lone.iter().filter(|w| w.host == master.host) {
            if required_by(self.jobs.sd(&w.host), &w.unit)
                .await
                .contains(&master.unit)
            {
                tracing::info!(unit = %w.unit, master = %master.unit, "requires the master: the master restarts first in the outage window");
                return true;
            }
        }
        false
    }

    /// Runs `op` on `members` (in the deployment's phase order) and returns the summary.
    pub async fn run(&self, op: Op, members: &[Member], all: bool) -> Summary {
        let members = &self.with_prerequisites(op, members).await;
        if op == Op::Restart && self.opts.rolling.is_some() {
            self.ledger.lock().unwrap().availability = Some(Availability::new(members));
        }
        let master_first = self.master_first(op, members).await;
        let steps = self.steps(op, members, all, master_first);
        for step in &steps {
            if let Step::Canary { members, .. } = step {
                let names = members.iter().map(|m| m.unit.clone());
                self.ledger.lock().unwrap().canaries.extend(names);
            }
        }
        for m in members {
            self.emit(m, Phase::Queued, None);
        }
        let mut untouched: Vec<String> = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let ok = match step {
                Step::EnsureRunning(db) => self.ensure_running(db).await,
                Step::Jobs {
                    members,
                    kind,
                    mode,
                } => self.step(members, *kind, *mode).await,
                Step::Canary { members, hold } => self.canary(members, *hold).await,
                Step::Settle { members, hold } => self.settle(members, *hold).await,
            };
            if !ok {
                untouched = self.skip(&steps[i + 1..]);
                self.read_back(members).await;
                break;
            }
        }
        self.summary(op, members, untouched, false)
    }

    /// `members` and, before them, the services the master's own unit
    /// `Requires=`/`BindsTo=` that are not part of them: started alone
    /// (`ignore-requirements`), the master would never pull them in, so orch
    /// starts and awaits them itself, never silently skips them.
    async fn with_prerequisites(&self, op: Op, members: &[Member]) -> Vec<Member> {
        let master = members.iter().find(|m| m.role == Role::Master);
        // Stop and reload never start anything the master needs.
        match master.filter(|_| op.starts_units()) {
            Some(m) => with_prerequisites(self.jobs.sd(&m.host), members).await,
            None => members.to_vec(),
        }
    }

    /// Stops at the first failure. A later step's unit that no step touched
    /// is left as it was, and said to be; one an earlier step stopped (a
    /// restart's stop) is said to be left stopped.
    fn skip(&self, later: &[Step]) -> Vec<String> {
        let mut untouched: Vec<String> = Vec::new();
        for m in later.iter().flat_map(Step::members) {
            let stopped = self
                .ledger
                .lock()
                .unwrap()
                .reports
                .get(&m.unit)
                .map(|r| r.phase)
                == Some(Phase::Stopped);
            if stopped {
                let why = "stopped, and not started again: an earlier phase failed";
                self.record(self.report(m, Phase::Skipped, None, Some(why.into())));
            } else if !self.is_recorded(&m.unit) {
                let why = "not reached: an earlier phase failed";
                self.record(self.report(m, Phase::Skipped, None, Some(why.into())));
                if !untouched.contains(&m.unit) {
                    untouched.push(m.unit.clone());
                }
            }
        }
        untouched
    }

    /// After a failed operation every unit's line says what systemd says
    /// now, not what orch last saw.
    async fn read_back(&self, members: &[Member]) {
        let states = join_all(
            members
                .iter()
                .map(|m| self.jobs.active_state(&m.unit, &m.host)),
        )
        .await;
        let mut ledger = self.ledger.lock().unwrap();
        for (m, state) in members.iter().zip(states) {
            if let (Some(r), Some(s)) = (ledger.reports.get_mut(&m.unit), state) {
                r.active_state = Some(s);
            }
        }
    }

    /// Builds the summary from what was recorded so far.
    pub fn summary(
        &self,
        op: Op,
        members: &[Member],
        untouched: Vec<String>,
        interrupted: bool,
    ) -> Summary {
        let units: Vec<UnitReport> = {
            let ledger = self.ledger.lock().unwrap();
            // Units orch judged that were not asked for (an umbrella's members) come first.
            let extra = ledger
                .reports
                .values()
                .filter(|r| !members.iter().any(|m| m.unit == r.unit && m.host == r.host))
                .cloned();
            let asked = members
                .iter()
                .filter_map(|m| self.final_report(&ledger, m, interrupted));
            extra.chain(asked).collect()
        };
        let failed = units.iter().filter(|u| u.phase == Phase::Failed).count();
        let timed_out = units.iter().filter(|u| u.phase == Phase::Timeout).count();
        Summary {
            op,
            ok: failed == 0 && timed_out == 0 && !interrupted,
            failed,
            timed_out,
            interrupted,
            elapsed_ms: self.elapsed_ms(),
            units,
            running_jobs: self.running_jobs(),
            untouched,
            lowest_ready: self.lowest_ready(),
        }
    }

    /// A unit's line in the summary. Cut short, it says where the unit was
    /// (a restart's stop report is stale then).
    fn final_report(&self, ledger: &Ledger, m: &Member, interrupted: bool) -> Option<UnitReport> {
        match (ledger.reports.get(&m.unit), ledger.phases.get(&m.unit)) {
            (_, Some(p)) if interrupted && !p.is_final() && *p != Phase::Queued => {
                let why = format!("interrupted while {}", p.as_str());
                Some(self.report(m, *p, None, Some(why)))
            }
            (Some(r), _) => Some(r.clone()),
            (None, _) => None,
        }
    }

    fn lowest_ready(&self) -> BTreeMap<String, KindAvailability> {
        let ledger = self.ledger.lock().unwrap();
        ledger
            .availability
            .as_ref()
            .map(|a| a.lowest.clone())
            .unwrap_or_default()
    }

    /// A worker went down (its job began) or came back ready.
    fn availability(&self, m: &Member, down: bool) {
        if let Some(a) = self.ledger.lock().unwrap().availability.as_mut() {
            a.set(m, down);
        }
    }

    fn running_jobs(&self) -> Vec<String> {
        let many_hosts = self.jobs.host_count() > 1;
        self.inflight()
            .jobs()
            .into_iter()
            .map(|(host, id, unit)| match many_hosts {
                true => format!("{unit} (job {id} on host {host})"),
                false => format!("{unit} (job {id})"),
            })
            .collect()
    }

    fn report(
        &self,
        m: &Member,
        phase: Phase,
        job: Option<JobResult>,
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
            sigkilled_by_systemd: false,
            elapsed_ms: self.elapsed_ms(),
            canary: false,
        }
    }

    /// Makes sure every prerequisite runs and is ready, never restarting one.
    /// An umbrella unit (Debian's `postgresql.service`, a oneshot that stays
    /// active while its cluster `postgresql@15-main` is dead) is judged with
    /// its members (`ConsistsOf=`): they are brought up first.
    async fn ensure_running(&self, db: &[Member]) -> bool {
        let mut all_parts = Vec::new();
        for m in db {
            let parts = constituents(self.jobs.sd(&m.host), m).await;
            all_parts.extend(parts.iter().cloned());
            let names = parts.iter().map(|p| p.unit.clone()).collect();
            self.ledger
                .lock()
                .unwrap()
                .parts
                .insert(m.unit.clone(), names);
            if !parts.is_empty() && !self.ensure_each(&parts).await {
                let names: Vec<&str> = parts.iter().map(|p| p.unit.as_str()).collect();
                let why = format!("a unit it consists of is not ready: {}", names.join(", "));
                self.record(self.report(m, Phase::Failed, None, Some(why)));
                return false;
            }
        }
        let ok = self.ensure_each(db).await;
        if !ok {
            self.rejudge_dead(&all_parts).await;
        }
        ok
    }

    /// A member that was ready and died while its umbrella was probed is
    /// failed, with its own journal (the cause is there, not in the umbrella's).
    async fn rejudge_dead(&self, parts: &[Member]) {
        for p in parts {
            let state = self.jobs.active_state(&p.unit, &p.host).await;
            if state.is_some_and(|s| s.is_down()) {
                let why = "stopped after its start job".to_string();
                let r = self
                    .diagnosed(self.report(p, Phase::Failed, None, Some(why)))
                    .await;
                self.record(r);
            }
        }
    }

    /// Starts each of `db` that is not active, then awaits readiness.
    async fn ensure_each(&self, db: &[Member]) -> bool {
        let mut to_start = Vec::new();
        for m in db {
            let up = self.jobs.active_state(&m.unit, &m.host).await;
            if !up.is_some_and(|s| s == ActiveState::Active) {
                to_start.push(m.clone());
                continue;
            }
            let r = self.readiness(m, None, JobKind::Start).await;
            let ok = r.phase == Phase::Ready;
            self.record(r);
            if !ok {
                return false;
            }
        }
        self.step(&to_start, JobKind::Start, JobMode::Replace).await
    }

    /// Gives every member the same job at once and judges each.
    /// True when every unit ended ready (start/restart) or stopped (stop).
    async fn step(&self, group: &[Member], kind: JobKind, mode: JobMode) -> bool {
        let results = join_all(group.iter().map(|m| self.one(m, kind, mode))).await;
        results.into_iter().all(|ok| ok)
    }

    /// One unit: its job, then its judgement, recorded.
    async fn one(&self, m: &Member, kind: JobKind, mode: JobMode) -> bool {
        let _slot = self.jobs.slot().await;
        self.availability(m, true);
        self.emit(m, progress_phase(kind), None);
        if kind == JobKind::Reload {
            if let Some(r) = self.not_running_for_reload(m).await {
                self.record(r);
                return false;
            }
        }
        let bound = self.bounded(kind.bound(m.bounds.start, m.bounds.stop) + JOB_MARGIN);
        let began = std::time::SystemTime::now();
        let end = self.jobs.run(&m.unit, &m.host, kind, mode, bound).await;
        let mut r = match end {
            JobEnd::Done(result) if kind.ends_stopped() => self.stopped(m, result).await,
            JobEnd::Done(result) => self.readiness(m, Some(result), kind).await,
            JobEnd::Failed(result) => {
                let why = format!("{} job {result}", kind.dbus_name());
                self.diagnosed(self.report(m, Phase::Failed, Some(result), Some(why)))
                    .await
            }
            JobEnd::Running(after) => {
                let why = format!(
                    "{} job still running in systemd after {after:?}",
                    kind.dbus_name()
                );
                self.report(m, Phase::Timeout, None, Some(why))
            }
            JobEnd::NotEnqueued(e) => {
                let phase = match e {
                    SystemdError::Timeout { .. } => Phase::Timeout,
                    _ => Phase::Failed,
                };
                self.diagnosed(self.report(m, phase, None, Some(e.to_string())))
                    .await
            }
            JobEnd::Lost(e) => self.report(m, Phase::Failed, None, Some(e.to_string())),
        };
        self.restart_sigkill(m, kind, began, &mut r).await;
        let ok = matches!(r.phase, Phase::Ready | Phase::Stopped);
        if r.phase == Phase::Ready {
            self.availability(m, false);
        }
        self.record(r);
        ok
    }
}

impl Engine {
    /// A restart whose stop outlived `TimeoutStopSec=` was SIGKILLed by
    /// systemd; the start that followed reset the service's Result, so the
    /// journal is asked, and only when the job took that long.
    async fn restart_sigkill(
        &self,
        m: &Member,
        kind: JobKind,
        began: std::time::SystemTime,
        r: &mut UnitReport,
    ) {
        let restarted = matches!(kind, JobKind::Restart | JobKind::ReloadOrRestart);
        if !restarted || began.elapsed().unwrap_or_default() < m.bounds.stop {
            return;
        }
        let root = self.opts.journal_root.as_deref();
        let remote = self.jobs.sd(&m.host).remote();
        // journald stores systemd's record a moment after it was sent.
        for wait in [0, 200, 400, 800] {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            if readiness::stop_timed_out_since(&m.unit, root, remote, began).await {
                r.sigkilled_by_systemd = true;
                return;
            }
        }
    }
}

/// `members` and, first, the services the master (when it is among them and
/// on `sd`'s host) requires or is bound to, as systemd has them.
pub async fn with_prerequisites(sd: &Systemd, members: &[Member]) -> Vec<Member> {
    let mut all = members.to_vec();
    let master = members
        .iter()
        .find(|m| m.role == Role::Master && m.host == sd.host);
    let Some(master) = master else {
        return all;
    };
    for unit in required_by(sd, &master.unit).await {
        if !all.iter().any(|m| m.unit == unit && m.host == master.host) {
            all.insert(0, prerequisite(unit, &master.host));
        }
    }
    all
}

/// `members` with, before each umbrella prerequisite (the database, or one
/// found by [`with_prerequisites`]), the services it consists of.
pub async fn with_constituents(sd: &Systemd, members: &[Member]) -> Vec<Member> {
    let mut all = Vec::new();
    for m in members {
        let umbrella = matches!(m.role, Role::Database | Role::Prerequisite) && m.host == sd.host;
        if umbrella {
            all.extend(constituents(sd, m).await);
        }
        all.push(m.clone());
    }
    all
}

/// The services `unit` requires or is bound to.
async fn required_by(sd: &Systemd, unit: &str) -> Vec<String> {
    let mut v = sd.requirements(unit).await;
    // Slices, sysinit.target, mounts: systemd's own, always there.
    v.retain(|u| u.ends_with(".service"));
    v.dedup();
    v
}

/// The services `m` consists of (`ConsistsOf=`), with its role and bounds.
async fn constituents(sd: &Systemd, m: &Member) -> Vec<Member> {
    sd.consists_of(&m.unit)
        .await
        .into_iter()
        .filter(|n| n.ends_with(".service"))
        .map(|unit| Member {
            unit,
            health: None,
            kind: None,
            background: false,
            ..m.clone()
        })
        .collect()
}

/// systemd's default `TimeoutStartSec=`: the bound for a prerequisite orch
/// knows nothing else of (systemd enforces the unit's own).
const PREREQUISITE_BOUND: Duration = Duration::from_secs(90);

fn prerequisite(unit: String, host: &str) -> Member {
    Member {
        unit,
        host: host.to_string(),
        role: Role::Prerequisite,
        kind: None,
        background: false,
        health: None,
        bounds: crate::model::Bounds::all(PREREQUISITE_BOUND),
    }
}

/// The progress phase a unit is in while its job runs.
fn progress_phase(kind: JobKind) -> Phase {
    match kind {
        JobKind::Stop => Phase::Stopping,
        JobKind::Reload | JobKind::ReloadOrRestart => Phase::Reloading,
        JobKind::Start | JobKind::Restart => Phase::Starting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(unit: &str, kind: &str) -> Member {
        Member {
            unit: unit.into(),
            host: "local".into(),
            role: Role::Worker,
            kind: Some(kind.into()),
            background: false,
            health: None,
            bounds: crate::model::Bounds::all(Duration::from_secs(1)),
        }
    }

    #[test]
    fn availability_keeps_the_lowest_ready_count_per_kind() {
        let (g0, g1, p0) = (
            worker("g0", "generic"),
            worker("g1", "generic"),
            worker("p0", "pusher"),
        );
        let mut a = Availability::new(&[g0.clone(), g1.clone(), p0.clone()]);
        let ready = |a: &Availability, k: &str| (a.lowest[k].ready, a.lowest[k].of);
        assert_eq!(ready(&a, "generic"), (2, 2));
        a.set(&g0, true);
        a.set(&p0, true);
        assert_eq!(ready(&a, "generic"), (1, 2));
        assert_eq!(ready(&a, "pusher"), (0, 1));
        a.set(&g0, false);
        a.set(&g1, true);
        a.set(&g1, false);
        assert_eq!(ready(&a, "generic"), (1, 2), "never both down");
        a.set(&g0, true);
        a.set(&g1, true);
        assert_eq!(ready(&a, "generic"), (0, 2));
    }
}

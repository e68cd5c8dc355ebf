//! The one job layer shared by lifecycle and maintenance.
//!
//! systemd's words (job types, job modes, ActiveState, job results) are
//! enums of [`crate::systemd::states`], so a new verb cannot compile while
//! doing the wrong thing. [`Jobs`] is the only place that enqueues a job and awaits it: it holds
//! the `JobRemoved` watcher of every host, the D-Bus call permits, the
//! `--max-parallel` slots, the in-flight table (including the jobs systemd
//! adds to a transaction) and the fallback for a lost signal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::fleet::Fleet;
use crate::systemd::{ActiveState, JobKind, JobMode, JobPath, JobResult};
use crate::systemd::{JobWatcher, Systemd, SystemdError};

/// Slack over a unit's own `TimeoutStopSec=`: systemd itself kills a unit
/// that outlives its bound, and orch waits to see that before it gives up.
pub const STOP_SLACK: Duration = Duration::from_secs(10);

/// The bound on one unit's stop: the operator's `hard` bound when given;
/// else the unit's `own` stop timeout as systemd loaded it (`None`: it has
/// none, or it was not read: the default's) plus [`STOP_SLACK`], so that
/// orch never gives up while systemd still does what the unit says.
pub fn stop_bound(own: Option<Duration>, hard: Option<Duration>) -> Duration {
    hard.unwrap_or_else(|| own.unwrap_or(crate::model::DEFAULT_STOP_TIMEOUT) + STOP_SLACK)
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
type JobKey = (String, JobPath);
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
    /// The operation's own deadline (`--timeout`), if any: see [`Jobs::run`].
    deadline: Option<tokio::time::Instant>,
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
            deadline: None,
        })
    }

    /// The job layer of one connection (install's stale units).
    pub async fn on(sd: &Systemd) -> Result<Jobs, SystemdError> {
        Ok(Jobs {
            hosts: vec![(sd.clone(), JobWatcher::start(sd).await?)],
            slots: None,
            inflight: Arc::new(Mutex::new(HashMap::new())),
            deadline: None,
        })
    }

    /// Bounds the wait for a queue slot ([`Jobs::run`]) by the operation's deadline.
    pub fn until(mut self, deadline: Option<tokio::time::Instant>) -> Jobs {
        self.deadline = deadline;
        self
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

    /// Whether the connection to `host` is found closed within `bound`.
    pub async fn closed_within(&self, host: &str, bound: Duration) -> bool {
        self.host(host).1.closed_within(bound).await
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
        // Held until the job (and its transaction) has ended: systemd's
        // per-job tracking of orch is bounded (MAX_TRACKED_JOBS). The unit's
        // `bound` starts once the job is in systemd's queue (the 5,000th stop
        // must not spend its 10 s waiting for the 4,744 before it); the wait
        // for a slot is bounded by the operation's deadline, or else by the
        // bounds of the jobs holding the slots.
        let tracked = match self.deadline {
            Some(d) => tokio::time::timeout_at(d, sd.job_permit()).await.ok(),
            None => Some(sd.job_permit().await),
        };
        let now = tokio::time::Instant::now();
        let deadline = self.deadline.map_or(now + bound, |d| d.min(now + bound));
        let Some(_tracked) = tracked else {
            return JobEnd::NotEnqueued(SystemdError::Timeout {
                action: format!(
                    "{} {unit} (waiting for one of the {} jobs orch keeps queued at once)",
                    kind.dbus_name(),
                    crate::systemd::MAX_TRACKED_JOBS
                ),
                timeout: bound,
            });
        };
        let (id, job, affected) = match sd.enqueue(unit, kind, mode).await {
            Ok(e) => (e.id, e.job, e.affected),
            Err(e) => return JobEnd::NotEnqueued(e),
        };
        let mut waits = vec![(id, job.clone(), unit.to_string())];
        waits.extend(affected);
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
        waits: &[(u32, JobPath, String)],
        deadline: tokio::time::Instant,
    ) -> Vec<(JobPath, Result<Option<JobResult>, SystemdError>)> {
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
            let settled = sd.settled(unit).await;
            if settled {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The unit's ActiveState (None when it cannot be read).
    pub async fn active_state(&self, unit: &str, host: &str) -> Option<ActiveState> {
        self.sd(host).active_state(unit).await
    }

    /// `NRestarts` of a service (None for other unit types or on error).
    pub async fn restarts(&self, unit: &str, host: &str) -> Option<u32> {
        self.sd(host).restarts(unit).await
    }

    /// SIGKILLs every process of `unit`: the hard stop after a grace period.
    pub async fn kill(&self, unit: &str, host: &str) -> Result<(), SystemdError> {
        self.sd(host).kill(unit).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stop_is_bounded_by_the_units_own_timeout_plus_slack_or_the_operators() {
        use super::{stop_bound, STOP_SLACK};
        let s = Duration::from_secs;
        assert_eq!(stop_bound(Some(s(2)), None), s(2) + STOP_SLACK);
        assert_eq!(stop_bound(Some(s(90)), None), s(90) + STOP_SLACK);
        // No timeout of its own (infinity) or not read: the default's.
        assert_eq!(
            stop_bound(None, None),
            crate::model::DEFAULT_STOP_TIMEOUT + STOP_SLACK
        );
        // The operator's bound wins, shorter or longer.
        assert_eq!(stop_bound(Some(s(90)), Some(s(5))), s(5));
        assert_eq!(stop_bound(Some(s(2)), Some(s(60))), s(60));
    }

    use super::*;

    #[test]
    fn inflight_lists_host_id_and_unit_sorted() {
        let table: Table = Arc::default();
        let path = JobPath::parse;
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

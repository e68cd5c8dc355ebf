//! The stop in stages: dependents, workers, master (then the database),
//! each phase on every host at once, drained within its share of the
//! `--timeout` budget, then SIGKILLed.

use std::time::Duration;

use futures_util::future::join_all;

use super::{each_host, MaintenanceError, Notify};
use crate::fleet::Fleet;
use crate::jobs::{JobEnd, Jobs};
use crate::lifecycle;
use crate::members::Member;
use crate::phases;
use crate::systemd::{JobKind, JobMode, SystemdError};

/// The members running again after their stop: started between the stop
/// and the masks taking effect.
pub(super) async fn restarted(
    fleet: &Fleet,
    members: &[Member],
) -> Result<Vec<String>, SystemdError> {
    let up = running(fleet, members).await?;
    Ok(up.into_iter().map(|m| m.unit.clone()).collect())
}

/// The time `--timeout` gives the stop: each phase drains within its units'
/// `stop_timeout`, but must leave every later phase a share, so that a stuck
/// worker is killed in time for the master still to stop gracefully.
pub(super) struct Budget {
    pub(super) started: tokio::time::Instant,
    pub(super) deadline: tokio::time::Instant,
    pub(super) timeout: Duration,
}

impl Budget {
    pub(super) fn new(timeout: Duration) -> Budget {
        let started = tokio::time::Instant::now();
        Budget {
            started,
            deadline: started + timeout,
            timeout,
        }
    }

    /// What each phase keeps for itself out of `--timeout`.
    pub(super) fn share(&self, phases: usize) -> Duration {
        (self.timeout / (2 * phases.max(1) as u32)).min(Duration::from_secs(2))
    }

    /// When the grace period of a phase with `later` phases after it ends.
    pub(super) fn drain_until(
        &self,
        group: &[Member],
        phases: usize,
        later: usize,
    ) -> tokio::time::Instant {
        let longest = group
            .iter()
            .map(|m| m.bounds.stop)
            .max()
            .unwrap_or_default();
        let share = self.share(phases);
        let reserved = share * later as u32 + share / 2;
        let own = tokio::time::Instant::now() + longest + Duration::from_secs(1);
        own.min(self.deadline.checked_sub(reserved).unwrap_or(self.started))
    }
}

/// The members that have (or may soon have) processes, read per host.
pub(super) async fn running<'a>(
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

/// What the stop phases share: the bus, the job layer, the time budget and
/// who watches.
pub(super) struct Stopper<'a> {
    pub(super) fleet: &'a Fleet,
    pub(super) jobs: &'a Jobs,
    pub(super) budget: &'a Budget,
    pub(super) observer: &'a dyn lifecycle::Observer,
}

impl Stopper<'_> {
    pub(super) fn tell(&self, m: &Member, phase: lifecycle::Phase, detail: Option<String>) {
        self.observer.event(&lifecycle::Event {
            unit: m.unit.clone(),
            host: m.host.clone(),
            phase,
            elapsed_ms: self.budget.started.elapsed().as_millis() as u64,
            detail,
            stage: None,
        });
    }

    /// Stops dependents, then workers, then the master (then the database),
    /// each phase on every host at once before the next begins. A masked unit
    /// has no dependencies left in systemd (its unit file is /dev/null), so
    /// `PartOf=` cannot carry the cascade: orch stops every unit itself.
    /// Returns the units it had to SIGKILL.
    pub(super) async fn phases(
        &self,
        members: &[Member],
        notify: Notify<'_>,
    ) -> Result<Vec<String>, MaintenanceError> {
        let phases = phases::stop_order(members);
        for m in members {
            self.tell(m, lifecycle::Phase::Queued, None);
        }
        let mut killed = Vec::new();
        for (i, group) in phases.iter().enumerate() {
            notify("stopping", &few(group));
            let drain_until = self
                .budget
                .drain_until(group, phases.len(), phases.len() - i - 1);
            let settle = self.budget.share(phases.len()) / 2;
            killed.extend(self.group(group, drain_until, settle).await?);
        }
        Ok(killed)
    }

    /// Stops every unit of `group` that is still running, all at once, and
    /// awaits every job (and any systemd adds) until `drain_until`; then the
    /// hard stop: SIGKILL for what still runs, and `settle` for it to go.
    pub(super) async fn group(
        &self,
        group: &[Member],
        drain_until: tokio::time::Instant,
        settle: Duration,
    ) -> Result<Vec<String>, SystemdError> {
        let (fleet, jobs) = (self.fleet, self.jobs);
        let up = running(fleet, group).await?;
        for m in group
            .iter()
            .filter(|m| !up.iter().any(|u| u.unit == m.unit))
        {
            self.tell(m, lifecycle::Phase::Stopped, Some("was not running".into()));
        }
        for m in &up {
            self.tell(m, lifecycle::Phase::Stopping, None);
        }
        let bound = drain_until.saturating_duration_since(tokio::time::Instant::now());
        let ends = join_all(up.iter().map(|m| async {
            let end = jobs
                .run(&m.unit, &m.host, JobKind::Stop, JobMode::Replace, bound)
                .await;
            if matches!(end, JobEnd::Done(_) | JobEnd::Failed(_)) {
                self.tell(m, lifecycle::Phase::Stopped, None);
            }
            end
        }))
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
                Ok(()) => {
                    self.tell(
                        m,
                        lifecycle::Phase::Stopping,
                        Some("killed with SIGKILL".into()),
                    );
                    killed.push(m.unit.clone())
                }
                Err(e) => {
                    tracing::warn!(unit = %m.unit, error = %e, "SIGKILL failed; the proof will catch it")
                }
            }
        }
        let until = tokio::time::Instant::now() + settle;
        join_all(up.iter().map(|m| jobs.settle(&m.unit, &m.host, until))).await;
        for m in up.iter().filter(|m| killed.contains(&m.unit)) {
            self.tell(
                m,
                lifecycle::Phase::Stopped,
                Some("killed with SIGKILL".into()),
            );
        }
        Ok(killed)
    }
}

/// The units of a step: named when few, else counted per kind (`48 units:
/// generic 40, pusher 8`), so that the line stays one line with 60 workers.
pub(super) fn few(group: &[Member]) -> String {
    if group.len() <= 3 {
        let names: Vec<&str> = group.iter().map(|m| m.unit.as_str()).collect();
        return names.join(" ");
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for m in group {
        let kind = m
            .kind
            .clone()
            .unwrap_or_else(|| format!("{:?}", m.role).to_lowercase());
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((kind, 1)),
        }
    }
    let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!("{} units: {}", group.len(), counts.join(", "))
}

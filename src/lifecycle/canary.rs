//! The watches of a rolling restart: the canaries (`--canary`), restarted
//! first and watched for the hold before the rest, and each batch watched
//! for the settle time (`--settle`) before the next is stopped.

use std::time::Duration;

use futures_util::future::join_all;

use super::{Engine, Member, Phase};
use crate::systemd::{ActiveState, JobKind, JobMode};

/// Between two looks at a unit during its watch.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Why a unit is watched: the words of its events and failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// `--canary --hold D`.
    Canary,
    /// `--settle D`.
    Settle,
}

impl Watch {
    fn label(self) -> &'static str {
        match self {
            Watch::Canary => "hold",
            Watch::Settle => "settle",
        }
    }

    /// Who failed, and what it leaves undone.
    fn failed(self, when: f64, why: &str) -> String {
        match self {
            Watch::Canary => format!(
                "canary failed {when:.1}s into its hold: {why}; the rest of the rollout was not started"
            ),
            Watch::Settle => format!(
                "failed {when:.1}s into its settle time after its restart: {why}; the next batches were not started"
            ),
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Watch::Canary => "canary's hold",
            Watch::Settle => "settle time",
        }
    }
}

impl Engine {
    /// Restarts the canaries, awaits their readiness, then watches them
    /// for `hold`. True when every one stayed well.
    pub(super) async fn canary(&self, members: &[Member], hold: Duration) -> bool {
        if !self.step(members, JobKind::Restart, JobMode::Replace).await {
            return false;
        }
        self.watch_all(members, hold, Watch::Canary).await
    }

    /// Watches a batch that is ready for the settle time. True when every
    /// one stayed well.
    pub(super) async fn settle(&self, members: &[Member], hold: Duration) -> bool {
        self.watch_all(members, hold, Watch::Settle).await
    }

    async fn watch_all(&self, members: &[Member], hold: Duration, why: Watch) -> bool {
        let watched = join_all(members.iter().map(|m| self.watch(m, hold, why))).await;
        watched.into_iter().all(|ok| ok)
    }

    /// One unit through its hold: it must stay active (a crash without
    /// `Restart=` leaves it failed), never be restarted by `Restart=` (a
    /// crash loop moves `NRestarts`, even when each run passes its probe
    /// for a while), and pass its probe again at the end.
    async fn watch(&self, m: &Member, hold: Duration, watch: Watch) -> bool {
        let hold_s = humantime::format_duration(hold);
        let detail = format!("{} {hold_s}", watch.label());
        self.emit(m, Phase::Watching, Some(detail));
        let restarts = self.jobs.restarts(&m.unit, &m.host).await;
        let began = tokio::time::Instant::now();
        let bound = self.bounded(hold);
        loop {
            if let Some(why) = self.unwell(m, restarts).await {
                let why = watch.failed(began.elapsed().as_secs_f64(), &why);
                let r = self.report(m, Phase::Failed, None, Some(why));
                self.record(self.diagnosed(r).await);
                return false;
            }
            let left = bound.saturating_sub(began.elapsed());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(LOOK_EVERY)).await;
        }
        if bound < hold {
            let why = format!(
                "the operation's --timeout ended during the {}",
                watch.noun()
            );
            self.record(self.report(m, Phase::Timeout, None, Some(why)));
            return false;
        }
        let r = match &m.health {
            Some(probe) => match self.probe(m, probe).await {
                Ok(()) => self.report(m, Phase::Ready, None, None),
                Err(e) => {
                    let why = format!("not ready at the end of the {}: {e}", watch.noun());
                    self.diagnosed(self.report(m, Phase::Failed, None, Some(why)))
                        .await
                }
            },
            None => self.report(m, Phase::Ready, None, None),
        };
        let ok = r.phase == Phase::Ready;
        self.record(r);
        ok
    }

    /// Why `m` is not well now, if it is not.
    async fn unwell(&self, m: &Member, restarts: Option<u32>) -> Option<String> {
        let state = self.jobs.active_state(&m.unit, &m.host).await;
        if state != Some(ActiveState::Active) {
            let state = state.as_ref().map_or("unknown", ActiveState::as_str);
            return Some(format!("the unit is {state}"));
        }
        match (restarts, self.jobs.restarts(&m.unit, &m.host).await) {
            (Some(a), Some(b)) if b > a => Some(format!(
                "systemd restarted it {} time(s) (crash loop, NRestarts {a} -> {b})",
                b - a
            )),
            _ => None,
        }
    }
}

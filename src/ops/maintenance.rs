//! `stop-for-maintenance` and `resume` over every host of the deployment.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::fleet::Access;
use crate::lifecycle::{self, Member, Observer};
use crate::maintenance::{self, Notify, ResumeReport, StopOptions, StopReport};
use crate::model::Deployment;

/// Slack over the longest `stop_timeout`: systemd itself kills a unit that
/// outlives its bound, and orch waits to see that before it kills what is left.
const STOP_SLACK: Duration = Duration::from_secs(10);

/// The bound on a whole stop when none is given: the longest stop_timeout
/// of a unit plus [`STOP_SLACK`], so that no unit is SIGKILLed by orch
/// before systemd's own bound for it ran out.
pub fn default_stop_timeout(members: &[Member]) -> Duration {
    members
        .iter()
        .map(|m| m.stop_timeout)
        .max()
        .unwrap_or_default()
        + STOP_SLACK
}

/// What `stop-for-maintenance` was asked.
#[derive(Debug, Clone, Copy)]
pub struct StopRequest<'a> {
    pub reason: &'a str,
    /// `None`: [`default_stop_timeout`].
    pub timeout: Option<Duration>,
    pub include_database: bool,
}

/// Records, masks, stops and proves stopped (see [`maintenance::stop_for_maintenance`]).
pub fn stop(
    d: &Deployment,
    access: &Access,
    req: StopRequest<'_>,
    notify: Notify<'_>,
) -> Result<StopReport, Error> {
    let timeout = req
        .timeout
        .unwrap_or_else(|| default_stop_timeout(&lifecycle::members(d)));
    let targets = access.used(d)?;
    super::runtime()?.block_on(async {
        let fleet = access.connect(&targets).await?;
        let opts = StopOptions {
            reason: req.reason,
            timeout,
            include_database: req.include_database,
        };
        Ok(maintenance::stop_for_maintenance(d, &fleet, &targets, opts, notify).await?)
    })
}

/// Unmasks and starts what ran before (see [`maintenance::resume`]).
pub fn resume(
    d: &Deployment,
    access: &Access,
    opts: lifecycle::Options,
    observer: Arc<dyn Observer>,
    notify: Notify<'_>,
    scope: maintenance::ResumeScope,
) -> Result<ResumeReport, Error> {
    let targets = access.used(d)?;
    super::runtime()?.block_on(async {
        let fleet = access.connect(&targets).await?;
        Ok(maintenance::resume(d, &fleet, &targets, opts, observer, notify, scope).await?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    fn member(stop_timeout: u64) -> Member {
        Member {
            unit: "u.service".into(),
            host: "local".into(),
            role: Role::Worker,
            kind: None,
            health: None,
            start_timeout: Duration::from_secs(1),
            stop_timeout: Duration::from_secs(stop_timeout),
            health_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn default_timeout_is_the_longest_stop_plus_ten_seconds() {
        let members = [member(30), member(90), member(5)];
        assert_eq!(default_stop_timeout(&members), Duration::from_secs(100));
    }

    #[test]
    fn default_timeout_of_nothing_is_the_slack() {
        assert_eq!(default_stop_timeout(&[]), Duration::from_secs(10));
    }
}

//! `resume`: unmask, start exactly the recorded set (or the whole
//! deployment), remove the journal.

use serde::Serialize;

use super::{covered, on_host, set_masks, store_of, MaintenanceError, Notify};
use crate::fleet::{Fleet, HostAccess};
use crate::lifecycle;
use crate::members::{self, Member};
use crate::model::{Deployment, Role};
use crate::state::{dir, lock, read_state, state_path, State};
use crate::store::Store;
use crate::systemd::actions;

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
pub(super) enum Journal {
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
    targets: &[HostAccess],
    opts: lifecycle::Options,
    observer: std::sync::Arc<dyn lifecycle::Observer>,
    notify: Notify<'_>,
    scope: ResumeScope,
) -> Result<ResumeReport, MaintenanceError> {
    fleet
        .preflight("resume", &[actions::MANAGE_UNITS, actions::RELOAD_DAEMON])
        .await?;
    let state_store = store_of(targets, &d.master.host);
    let _lock = lock(d, state_store).await?;
    let journal = match (read_state(d, state_store).await, scope) {
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
    let members = match (&journal, scope) {
        (Journal::Absent, _) => Vec::new(),
        (_, ResumeScope::Whole) => members::members(d),
        (Journal::Recorded(state), ResumeScope::Recorded) => recorded(d, state),
        (Journal::Unreadable, ResumeScope::Recorded) => unreachable!("refused above"),
    };
    // Before the masks go: a missing image is named while the deployment
    // is still safely stopped, not by a crash loop after the unmask.
    let units: Vec<&str> = members.iter().map(|m| m.unit.as_str()).collect();
    crate::containers::check_images(d, &units, |h| fleet.get(h).remote().cloned()).await?;
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
    if matches!(journal, Journal::Absent) {
        return Ok(report);
    }
    let summary = start_recorded(d, fleet, state_store, &members, opts, observer, notify).await?;
    report.summary = Some(summary);
    Ok(report)
}

/// The masks the journal recorded for units no longer in `current` (removed
/// from the configuration during maintenance), as members to unmask.
pub(super) fn recorded_masks(d: &Deployment, current: &[Member], state: &State) -> Vec<Member> {
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
            background: false,
            health: None,
            ..template.clone()
        })
        .collect()
}

/// The recorded set, plus the database and the prerequisites: awaited
/// (started if needed) even when they were not stopped.
pub(super) fn recorded(d: &Deployment, state: &State) -> Vec<Member> {
    members::members(d)
        .into_iter()
        .filter(|m| needed_first(m) || state.active.contains(&m.unit))
        .collect()
}

pub(super) fn needed_first(m: &Member) -> bool {
    matches!(m.role, Role::Database | Role::Prerequisite)
}

/// Starts `members`, and removes the journal when every one is ready.
pub(super) async fn start_recorded(
    d: &Deployment,
    fleet: &Fleet,
    state_store: &Store,
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
        state_store
            .remove_files(&dir(d), std::slice::from_ref(&path))
            .await?;
        notify(
            "resumed",
            &format!("removed {}{}", path.display(), on_host(d, &d.master.host)),
        );
    }
    Ok(summary)
}

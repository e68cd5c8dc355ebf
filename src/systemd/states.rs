//! systemd's words, typed: job types and modes, a unit's `ActiveState` and
//! `LoadState`, a job's result and a service's `Result`. They are strings on
//! the bus; here they are enums, converted once at the boundary, so nothing
//! above [`crate::systemd`] matches on a state's spelling.

use std::time::Duration;

use serde::{Serialize, Serializer};

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

impl Serialize for LoadState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A state as systemd spells it (what tests and fixtures write).
impl From<&str> for LoadState {
    fn from(s: &str) -> LoadState {
        LoadState::from_dbus(s)
    }
}

impl From<&str> for ActiveState {
    fn from(s: &str) -> ActiveState {
        ActiveState::from_dbus(s)
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

/// A service's `Result` property: how its last run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceResult {
    Success,
    Protocol,
    /// A start, stop or watchdog timeout: a stop that timed out was SIGKILLed.
    Timeout,
    ExitCode,
    Signal,
    CoreDump,
    Watchdog,
    StartLimitHit,
    Resources,
    OomKill,
    /// A result this version of orch does not know.
    Other(String),
}

impl ServiceResult {
    pub fn from_dbus(s: &str) -> ServiceResult {
        match s {
            "success" => ServiceResult::Success,
            "protocol" => ServiceResult::Protocol,
            "timeout" => ServiceResult::Timeout,
            "exit-code" => ServiceResult::ExitCode,
            "signal" => ServiceResult::Signal,
            "core-dump" => ServiceResult::CoreDump,
            "watchdog" => ServiceResult::Watchdog,
            "start-limit-hit" => ServiceResult::StartLimitHit,
            "resources" => ServiceResult::Resources,
            "oom-kill" => ServiceResult::OomKill,
            other => ServiceResult::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ServiceResult::Success => "success",
            ServiceResult::Protocol => "protocol",
            ServiceResult::Timeout => "timeout",
            ServiceResult::ExitCode => "exit-code",
            ServiceResult::Signal => "signal",
            ServiceResult::CoreDump => "core-dump",
            ServiceResult::Watchdog => "watchdog",
            ServiceResult::StartLimitHit => "start-limit-hit",
            ServiceResult::Resources => "resources",
            ServiceResult::OomKill => "oom-kill",
            ServiceResult::Other(s) => s,
        }
    }
}

impl std::fmt::Display for ServiceResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for ServiceResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
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
    fn service_results_round_trip_through_the_bus_words() {
        for s in [
            "success",
            "protocol",
            "timeout",
            "exit-code",
            "signal",
            "core-dump",
            "watchdog",
            "start-limit-hit",
            "resources",
            "oom-kill",
            "new-one",
        ] {
            assert_eq!(ServiceResult::from_dbus(s).as_str(), s);
        }
        assert_eq!(ServiceResult::from_dbus("timeout"), ServiceResult::Timeout);
        assert_eq!(
            serde_json::to_string(&ServiceResult::ExitCode).unwrap(),
            "\"exit-code\""
        );
    }
}

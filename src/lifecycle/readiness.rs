//! Judging a unit after its job: stopped, or ready (active, its probe
//! passing, and not crash-looping), with systemd's own account of a
//! failure (Result, exit status, journal lines).

use std::time::Duration;

use super::{Engine, Member, Phase, UnitReport};
use crate::health::{self, ReadyError};
use crate::systemd::{ActiveState, JobKind, JobResult, ServiceResult};

/// How long a failed state read waits for the connection's end to be seen
/// before the unit is called unknown.
const CLOSE_SEEN: Duration = Duration::from_millis(500);

impl Engine {
    /// After a stop job: the unit must not be running. A stop that needed
    /// SIGKILL is reported as such: the process ignored SIGTERM for its
    /// whole `TimeoutStopSec=`.
    pub(super) async fn stopped(&self, m: &Member, job: JobResult) -> UnitReport {
        let mut r = self.report(m, Phase::Stopped, Some(job), None);
        let facts = self
            .jobs
            .sd(&m.host)
            .facts(&m.unit)
            .await
            .unwrap_or_default();
        r.active_state = facts.active;
        match facts.result {
            Some(ServiceResult::Success) | None => {}
            Some(ServiceResult::Timeout) => {
                r.sigkilled_by_systemd = true;
                r.result = Some(ServiceResult::Timeout);
                r.error = Some(format!(
                    "did not stop within its stop_timeout ({:?}); systemd killed it with SIGKILL",
                    m.bounds.stop
                ));
            }
            Some(other) => r.result = Some(other),
        }
        if let Some(s) = r.active_state.as_ref().filter(|s| s.is_running()) {
            r.phase = Phase::Failed;
            r.error = Some(format!("still {s} after its stop job"));
        }
        r
    }

    /// After a successful start, restart or reload job (`kind`): the unit
    /// must be active and its probe pass.
    pub(super) async fn readiness(
        &self,
        m: &Member,
        job: Option<JobResult>,
        kind: JobKind,
    ) -> UnitReport {
        let state = self.jobs.active_state(&m.unit, &m.host).await;
        // A state that cannot be read because the connection dropped is not
        // a fact about the unit: say what happened (seen on a busy host: the
        // read failed before the watcher saw the end of the stream).
        if state.is_none() && self.jobs.closed_within(&m.host, CLOSE_SEEN).await {
            let why = format!(
                "the connection to host {} closed after its {} job: orch cannot tell whether the unit is up",
                m.host,
                kind.dbus_name()
            );
            return self
                .diagnosed(self.report(m, Phase::Failed, job, Some(why)))
                .await;
        }
        if !state.as_ref().is_some_and(ActiveState::is_up) {
            let why = format!(
                "unit is {} after its {} job",
                state.as_ref().map_or("unknown", ActiveState::as_str),
                kind.dbus_name()
            );
            return self
                .diagnosed(self.report(m, Phase::Failed, job, Some(why)))
                .await;
        }
        let Some(probe) = &m.health else {
            let mut r = self.report(m, Phase::Ready, job, None);
            r.active_state = state;
            return r;
        };
        self.emit(m, Phase::Probing, Some(probe.to_string()));
        match self.probe(m, probe).await {
            Ok(()) => {
                let mut r = self.report(m, Phase::Ready, job, None);
                r.active_state = Some(ActiveState::Active);
                r
            }
            Err(e @ ReadyError::NotHealthy { .. }) => {
                self.report(m, Phase::Timeout, job, Some(e.to_string()))
            }
            Err(e @ (ReadyError::Died(_) | ReadyError::Impossible(_))) => {
                self.diagnosed(self.report(m, Phase::Failed, job, Some(e.to_string())))
                    .await
            }
        }
    }

    /// A reload of a unit that is not running: systemd has nothing to
    /// reload and its `Result`/exit status describe the run that ended
    /// before, so the report says so and shows only the state and journal.
    pub(super) async fn not_running_for_reload(&self, m: &Member) -> Option<UnitReport> {
        let state = self.jobs.active_state(&m.unit, &m.host).await?;
        if !state.is_down() {
            return None;
        }
        let why = format!("not running ({state}): a reload does not start it; use `orch start`");
        let mut r = self.report(m, Phase::Failed, None, Some(why));
        r.active_state = Some(state);
        let sd = self.jobs.sd(&m.host);
        let within = self.report_bound(JOURNAL_BOUND);
        r.journal = journal(
            &m.unit,
            self.opts.journal_root.as_deref(),
            sd.remote(),
            10,
            within,
        )
        .await;
        Some(r)
    }

    /// Probes until healthy within the unit's `health_timeout`, checking
    /// between attempts that the unit is still the one that started.
    pub(super) async fn probe(
        &self,
        m: &Member,
        probe: &crate::model::Probe,
    ) -> Result<(), ReadyError> {
        let timeout = self.bounded(m.bounds.health);
        // A unit that crashes and is restarted by Restart= while being probed
        // is flapping, not starting: its restart count must not move.
        let restarts = self.jobs.restarts(&m.unit, &m.host).await;
        let alive = || self.alive(m, restarts);
        let on = self.jobs.sd(&m.host).remote();
        health::wait_ready(probe, timeout, self.opts.probe, on, alive).await?;
        // Healthy, and still the same process that passed the probe.
        self.alive(m, restarts).await
    }

    async fn alive(&self, m: &Member, restarts: Option<u32>) -> Result<(), ReadyError> {
        let died = |why: String| Err(ReadyError::Died(why));
        // Without its connection orch cannot see the unit crash: the probe
        // passing alone would not prove it ready.
        if self.jobs.is_closed(&m.host) {
            return died(format!(
                "the connection to host {} closed while the unit was being probed",
                m.host
            ));
        }
        let state = self.jobs.active_state(&m.unit, &m.host).await;
        if state.is_some_and(|s| s.is_down()) {
            return died("the unit stopped while being probed".into());
        }
        // An umbrella is only as alive as its members.
        for part in self.parts_of(&m.unit) {
            if let Some(s) = self
                .jobs
                .active_state(&part, &m.host)
                .await
                .filter(|s| s.is_down())
            {
                return died(format!("{part}, a unit it consists of, is {s}"));
            }
        }
        match (restarts, self.jobs.restarts(&m.unit, &m.host).await) {
            (Some(a), Some(b)) if b > a => died(format!(
                "the unit was restarted {} time(s) while being probed (crash loop)",
                b - a
            )),
            _ => Ok(()),
        }
    }

    /// Adds the service's result, exit status and last journal lines.
    /// Both reads end by the operation's deadline (`--timeout`), or
    /// [`REPORT_SLICE`] after it when it has passed: a failure report never
    /// holds orch seconds beyond its bound.
    pub(super) async fn diagnosed(&self, mut r: UnitReport) -> UnitReport {
        let sd = self.jobs.sd(&r.host);
        let within = self.report_bound(sd.call_timeout());
        if let Ok(Some(f)) = tokio::time::timeout(within, sd.facts(&r.unit)).await {
            (r.active_state, r.result, r.exit_status) = (f.active, f.result, f.exit_status);
        }
        let within = self.report_bound(JOURNAL_BOUND);
        r.journal = journal(
            &r.unit,
            self.opts.journal_root.as_deref(),
            sd.remote(),
            10,
            within,
        )
        .await;
        r
    }
}

/// The most a failing unit's journal read may take.
pub const JOURNAL_BOUND: Duration = Duration::from_secs(3);

/// The last `lines` journal lines of a unit (empty when journalctl is
/// unavailable or does not answer `within`).
pub async fn journal(
    unit: &str,
    root: Option<&std::path::Path>,
    remote: Option<&crate::remote::Remote>,
    lines: usize,
    within: Duration,
) -> Vec<String> {
    let mut cmd = journalctl(root, remote);
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
    ]);
    match run_bounded(cmd, within).await {
        Some(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    }
}

/// systemd's structured record of a unit's failure ("Failed with result
/// '…'"), with the result in its `UNIT_RESULT` field.
const UNIT_FAILURE_RESULT: &str = "d9b373ed55a64feb8242e02dbe79a49c";

/// True when the journal has systemd's record of `unit` failing with
/// result `timeout` since `since`: during a restart, its stop outlived
/// `TimeoutStopSec=` and systemd SIGKILLed it (the start that follows
/// resets the service's Result, so only the journal keeps it).
pub async fn stop_timed_out_since(
    unit: &str,
    root: Option<&std::path::Path>,
    remote: Option<&crate::remote::Remote>,
    since: std::time::SystemTime,
) -> bool {
    let secs = since
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut cmd = journalctl(root, remote);
    let unit = if remote.is_some() {
        format!("'{unit}'")
    } else {
        unit.to_string()
    };
    let since = format!("@{secs}");
    cmd.args([
        "--no-pager",
        "-q",
        "-o",
        "json",
        "--since",
        &since,
        "-u",
        &unit,
    ]);
    // Filtered here: a match next to `-u` would bind to one of the terms
    // `-u` ORs together, not to all of them.
    let Some(out) = run_bounded(cmd, Duration::from_secs(3)).await else {
        return false;
    };
    String::from_utf8_lossy(&out.stdout).lines().any(|l| {
        serde_json::from_str::<serde_json::Value>(l)
            .is_ok_and(|v| v["MESSAGE_ID"] == UNIT_FAILURE_RESULT && v["UNIT_RESULT"] == "timeout")
    })
}

/// journalctl here, or on `remote` through ssh.
fn journalctl(
    root: Option<&std::path::Path>,
    remote: Option<&crate::remote::Remote>,
) -> tokio::process::Command {
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
    cmd.stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs `cmd`, bounded to `within`.
async fn run_bounded(
    mut cmd: tokio::process::Command,
    within: Duration,
) -> Option<std::process::Output> {
    match tokio::time::timeout(within, cmd.output()).await {
        Ok(Ok(out)) => Some(out),
        _ => None,
    }
}

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

/// The deployment's lock, held by this process from the first stop of
/// `stop-for-maintenance -- CMD` to the end of its resume (or to the exit
/// that leaves the deployment in maintenance). CMD gets the token.
pub struct Held {
    _lock: crate::store::Lock,
    path: std::path::PathBuf,
}

impl Drop for Held {
    fn drop(&mut self) {
        crate::lock::release(&self.path);
    }
}

/// Takes the deployment's lock at once, or fails naming the holder.
pub fn hold(d: &Deployment, access: &Access) -> Result<Held, Error> {
    // Made first: the lock file carries its hash.
    let _ = crate::lock::token();
    let home = access.home(d)?;
    let lock = super::runtime()?.block_on(maintenance::lock(d, &home))?;
    let path = maintenance::lock_path(d);
    crate::lock::hold(&path);
    Ok(Held { _lock: lock, path })
}

/// How long CMD has to end after orch passed it a signal, before orch
/// kills it with SIGKILL (a second Ctrl+C kills it at once).
pub const COMMAND_GRACE: Duration = Duration::from_secs(10);

/// How the maintenance command ended.
#[derive(Debug)]
pub enum Ran {
    /// Exited with this status (0: success).
    Exited(i32),
    /// Ended by this signal.
    Signaled(i32),
    /// Could not be started (not found, not executable).
    NotStarted(std::io::Error),
}

#[derive(Debug)]
pub struct CommandReport {
    pub ran: Ran,
    /// SIGINT or SIGTERM came while it ran.
    pub interrupted: bool,
    /// It outlived [`COMMAND_GRACE`] or a second signal, and orch killed it.
    pub killed: bool,
}

impl CommandReport {
    pub fn succeeded(&self) -> bool {
        matches!(self.ran, Ran::Exited(0)) && !self.interrupted
    }

    /// The status orch exits with, as a shell reports it.
    pub fn exit_code(&self) -> i32 {
        match &self.ran {
            Ran::Exited(0) if self.interrupted => crate::exit::INTERRUPTED,
            Ran::Exited(c) => *c,
            Ran::Signaled(s) => 128 + s,
            Ran::NotStarted(e) if e.kind() == std::io::ErrorKind::NotFound => 127,
            Ran::NotStarted(_) => 126,
        }
    }
}

/// What the maintenance command is told.
pub struct CommandEnv<'a> {
    pub deployment: &'a str,
    pub reason: &'a str,
    /// Its standard output goes to orch's standard error (`--output json`
    /// keeps stdout for orch's own lines).
    pub stdout_to_stderr: bool,
}

/// Runs `argv` with orch's terminal, waits for it, and passes it SIGTERM
/// (and SIGINT when orch is not on a terminal: there, the terminal sent
/// Ctrl+C to CMD's process group already).
pub fn run_command(argv: &[String], env: CommandEnv<'_>) -> Result<CommandReport, Error> {
    use std::io::IsTerminal;
    use tokio::signal::unix::SignalKind;

    let on_terminal = std::io::stdin().is_terminal();
    super::runtime()?.block_on(async {
        let mut sigint = super::lifecycle::handler(SignalKind::interrupt(), "SIGINT")?;
        let mut sigterm = super::lifecycle::handler(SignalKind::terminate(), "SIGTERM")?;
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env("ORCH_DEPLOYMENT", env.deployment)
            .env("ORCH_MAINTENANCE_REASON", env.reason)
            .env(crate::lock::TOKEN_ENV, crate::lock::token());
        if env.stdout_to_stderr {
            if let Ok(fd) = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned() {
                cmd.stdout(std::process::Stdio::from(fd));
            }
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Ok(report(Ran::NotStarted(e), false, false)),
        };
        let pid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
        let pass = |sig| {
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(pid, sig);
            }
        };
        use nix::sys::signal::Signal;
        let signal = tokio::select! {
            s = child.wait() => return Ok(report(ran(s), false, false)),
            _ = sigint.recv() => Signal::SIGINT,
            _ = sigterm.recv() => Signal::SIGTERM,
        };
        if signal == Signal::SIGTERM || !on_terminal {
            pass(signal);
        }
        // Bounded: the grace, or a second signal, then SIGKILL.
        let waited = tokio::select! {
            s = child.wait() => Some(s),
            _ = tokio::time::sleep(COMMAND_GRACE) => None,
            _ = sigint.recv() => None,
            _ = sigterm.recv() => None,
        };
        Ok(match waited {
            Some(s) => report(ran(s), true, false),
            None => {
                let _ = child.start_kill();
                report(ran(child.wait().await), true, true)
            }
        })
    })
}

fn ran(status: std::io::Result<std::process::ExitStatus>) -> Ran {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => Ran::Exited(c),
            (None, Some(sig)) => Ran::Signaled(sig),
            (None, None) => Ran::Exited(crate::exit::FAILURE),
        },
        Err(e) => Ran::NotStarted(e),
    }
}

fn report(ran: Ran, interrupted: bool, killed: bool) -> CommandReport {
    CommandReport {
        ran,
        interrupted,
        killed,
    }
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
    fn the_exit_code_is_the_command_s_as_a_shell_says_it() {
        let r = |ran, interrupted| report(ran, interrupted, false).exit_code();
        assert_eq!(r(Ran::Exited(3), false), 3);
        assert_eq!(r(Ran::Signaled(15), true), 143);
        assert_eq!(r(Ran::Exited(0), true), crate::exit::INTERRUPTED);
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(r(Ran::NotStarted(missing), false), 127);
        assert!(report(Ran::Exited(0), false, false).succeeded());
        assert!(!report(Ran::Exited(0), true, false).succeeded());
    }

    #[test]
    fn default_timeout_of_nothing_is_the_slack() {
        assert_eq!(default_stop_timeout(&[]), Duration::from_secs(10));
    }
}

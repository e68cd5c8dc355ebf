//! `stop-for-maintenance` and `resume` over every host of the deployment.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::fleet::Access;
use crate::lifecycle::{self, Observer};
use crate::maintenance::{self, Notify, ResumeReport, ResumeScope, StopOptions, StopReport};
use crate::members::{self, Member};
use crate::model::Deployment;

/// The bound on a whole stop when none is given: the longest stop_timeout
/// of a unit plus [`crate::jobs::STOP_SLACK`] (the rule of
/// [`crate::jobs::stop_bound`] over the whole stop), so that no unit is
/// SIGKILLed by orch before systemd's own bound for it ran out.
pub fn default_stop_timeout(members: &[Member]) -> Duration {
    members
        .iter()
        .map(|m| m.bounds.stop)
        .max()
        .unwrap_or_default()
        + crate::jobs::STOP_SLACK
}

/// What `stop-for-maintenance` was asked.
#[derive(Debug, Clone)]
pub struct StopRequest<'a> {
    pub reason: &'a str,
    /// `None`: [`default_stop_timeout`].
    pub timeout: Option<Duration>,
    pub include_database: bool,
    /// `--terminate-sessions`.
    pub terminate_sessions: bool,
    /// `-- CMD`, run once the stop is proven, then the resume.
    pub then: Option<Then<'a>>,
}

/// How a `stop-for-maintenance` (or its stop alone) ended.
#[derive(Debug)]
pub enum Stopped<T> {
    Done(Box<T>),
    /// SIGINT or SIGTERM came first. The run was dropped, as a kill would
    /// drop it (every wait ends at once; jobs systemd already has go on):
    /// the journal, written before anything is masked or stopped, makes
    /// that safe. Holds the journal as it is then.
    Interrupted(Journal),
}

/// The maintenance journal as an interrupted stop left it.
#[derive(Debug)]
pub enum Journal {
    /// Nothing was recorded, so nothing was masked or stopped either.
    NotRecorded,
    /// In maintenance: units may be partly stopped, masks partly loaded.
    Recorded(crate::state::State),
    /// It could not be read (why).
    Unread(String),
}

/// How long reading the journal after an interrupt may take.
const JOURNAL_READ_BOUND: Duration = Duration::from_secs(5);

/// `stop-for-maintenance -- CMD`: the command, and how the resume after it reads logs.
#[derive(Debug, Clone)]
pub struct Then<'a> {
    /// `CMD [ARGS…]`, not empty.
    pub command: &'a [String],
    /// CMD's standard output goes to orch's standard error (`--output json`
    /// keeps stdout for orch's own lines).
    pub stdout_to_stderr: bool,
    /// For the resume: `journalctl --root DIR`.
    pub journal_root: Option<PathBuf>,
}

/// What `resume` was asked.
#[derive(Debug, Clone, Default)]
pub struct ResumeRequest {
    pub opts: lifecycle::Options,
    pub scope: ResumeScope,
}

/// Which operation of maintenance a display is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Stop,
    Resume,
}

/// How a command shows `stop-for-maintenance` and `resume` while they run.
pub trait Show: Sync {
    /// A step (masks written, units stopped, …), as it happens.
    fn step(&self, step: &str, detail: &str);
    /// The display of the stop or the resume of `members`.
    fn observer(&self, stage: Stage, members: &[Member]) -> Arc<dyn Observer>;
}

/// What `stop-for-maintenance [-- CMD]` shows besides its steps.
pub trait ShowStop: Show {
    /// The stop's report, before CMD runs (or instead of it: not proven stopped).
    fn stopped(&self, report: &StopReport) -> Result<(), Error>;
    /// How CMD ended, before the resume (which follows only if it succeeded).
    fn ran(&self, report: &CommandReport, stop: &StopReport) -> Result<(), Error>;
}

/// How `stop-for-maintenance [-- CMD]` ended.
#[derive(Debug)]
pub struct Maintenance {
    pub stop: StopReport,
    /// CMD, when it ran (only after a proven stop).
    pub command: Option<CommandReport>,
    /// The resume, when CMD succeeded.
    pub resume: Option<ResumeReport>,
}

/// Records, masks, stops and proves stopped (see
/// [`maintenance::stop_for_maintenance`]); with `-- CMD`, then runs CMD and,
/// if it succeeded, resumes. The lock is then held from the first stop
/// through CMD to the end of the resume: no second operator's resume may
/// start units while CMD (the database upgrade) runs. SIGINT or SIGTERM
/// during the stop ends it (see [`Stopped::Interrupted`]).
pub fn stop(
    d: &Deployment,
    access: &Access,
    req: StopRequest<'_>,
    show: &dyn ShowStop,
) -> Result<Stopped<Maintenance>, Error> {
    let _held = match req.then {
        None => None,
        Some(_) => Some(hold(d, access)?),
    };
    let observer = show.observer(Stage::Stop, &members::members(d));
    let stop = stop_only(d, access, &req, observer.as_ref(), &|s, t| show.step(s, t));
    observer.finish();
    let stop = match stop? {
        Stopped::Done(stop) => *stop,
        Stopped::Interrupted(journal) => return Ok(Stopped::Interrupted(journal)),
    };
    show.stopped(&stop)?;
    let Some(then) = req.then.filter(|_| stop.ok) else {
        return Ok(Stopped::Done(Box::new(Maintenance {
            stop,
            command: None,
            resume: None,
        })));
    };
    let env = CommandEnv {
        deployment: &d.name,
        reason: &stop.reason,
        stdout_to_stderr: then.stdout_to_stderr,
    };
    let ran = run_command(then.command, env)?;
    show.ran(&ran, &stop)?;
    let resumed = match ran.succeeded() {
        true => {
            let opts = lifecycle::Options {
                journal_root: then.journal_root,
                ..Default::default()
            };
            let scope = ResumeScope::Recorded;
            Some(resume(d, access, ResumeRequest { opts, scope }, show)?)
        }
        false => None,
    };
    Ok(Stopped::Done(Box::new(Maintenance {
        stop,
        command: Some(ran),
        resume: resumed,
    })))
}

/// The stop itself.
fn stop_only(
    d: &Deployment,
    access: &Access,
    req: &StopRequest<'_>,
    observer: &dyn lifecycle::Observer,
    notify: Notify<'_>,
) -> Result<Stopped<StopReport>, Error> {
    use tokio::signal::unix::SignalKind;
    let timeout = req
        .timeout
        .unwrap_or_else(|| default_stop_timeout(&members::members(d)));
    let targets = access.used(d)?;
    super::runtime()?.block_on(async {
        // Before anything else, so an early Ctrl+C is ours, not the default kill.
        let mut sigint = super::lifecycle::handler(SignalKind::interrupt(), "SIGINT")?;
        let mut sigterm = super::lifecycle::handler(SignalKind::terminate(), "SIGTERM")?;
        let run = async {
            let fleet = access.connect(&targets).await?;
            let opts = StopOptions {
                reason: req.reason,
                timeout,
                include_database: req.include_database,
                observer,
                terminate_sessions: req.terminate_sessions,
            };
            Ok::<_, Error>(
                maintenance::stop_for_maintenance(d, &fleet, &targets, opts, notify).await?,
            )
        };
        tokio::select! {
            r = run => return Ok(Stopped::Done(Box::new(r?))),
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
        let store = access.state_store(d)?;
        let read = tokio::time::timeout(JOURNAL_READ_BOUND, crate::state::read_state(d, &store));
        Ok(Stopped::Interrupted(match read.await {
            Ok(Ok(Some(state))) => Journal::Recorded(state),
            Ok(Ok(None)) => Journal::NotRecorded,
            Ok(Err(e)) => Journal::Unread(e.to_string()),
            Err(_) => Journal::Unread(format!(
                "not read within {}",
                humantime::format_duration(JOURNAL_READ_BOUND)
            )),
        }))
    })
}

/// Unmasks and starts what ran before (see [`maintenance::resume`]).
pub fn resume(
    d: &Deployment,
    access: &Access,
    req: ResumeRequest,
    show: &dyn Show,
) -> Result<ResumeReport, Error> {
    let observer = show.observer(Stage::Resume, &members::members(d));
    let notify = |s: &str, t: &str| show.step(s, t);
    let report = resume_only(d, access, req, observer.clone(), &notify);
    observer.finish();
    report
}

fn resume_only(
    d: &Deployment,
    access: &Access,
    req: ResumeRequest,
    observer: Arc<dyn Observer>,
    notify: Notify<'_>,
) -> Result<ResumeReport, Error> {
    use tokio::signal::unix::SignalKind;
    let targets = access.used(d)?;
    super::runtime()?.block_on(async {
        // Ours, not the default kill: after `-- CMD` the stop's handlers
        // are still installed (a signal handler stays for the process's
        // life), and a Ctrl+C that did nothing would wait out every bound.
        let mut sigint = super::lifecycle::handler(SignalKind::interrupt(), "SIGINT")?;
        let mut sigterm = super::lifecycle::handler(SignalKind::terminate(), "SIGTERM")?;
        let run = async {
            let fleet = access.connect(&targets).await?;
            let resume =
                maintenance::resume(d, &fleet, &targets, req.opts, observer, notify, req.scope);
            Ok(resume.await?)
        };
        tokio::select! {
            r = run => r,
            _ = sigint.recv() => Err(Error::ResumeInterrupted { deployment: d.name.clone() }),
            _ = sigterm.recv() => Err(Error::ResumeInterrupted { deployment: d.name.clone() }),
        }
    })
}

/// The deployment's lock, held by this process from the first stop of
/// `stop-for-maintenance -- CMD` to the end of its resume (or to the exit
/// that leaves the deployment in maintenance). CMD gets the token.
struct Held {
    _lock: crate::store::Lock,
    path: std::path::PathBuf,
}

impl Drop for Held {
    fn drop(&mut self) {
        crate::state::holder::release(&self.path);
    }
}

/// Takes the deployment's lock at once, or fails naming the holder.
fn hold(d: &Deployment, access: &Access) -> Result<Held, Error> {
    // Made first: the lock file carries its hash.
    let _ = crate::state::holder::token();
    let state_store = access.state_store(d)?;
    let lock = super::runtime()?.block_on(crate::state::lock(d, &state_store))?;
    let path = crate::state::lock_path(d);
    crate::state::holder::hold(&path);
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
    /// It outlived [`COMMAND_GRACE`] or a second signal, or what it left
    /// in its group outlived [`GROUP_GRACE`], and orch killed it.
    pub killed: bool,
    /// Processes of its group outlived CMD itself.
    pub leftovers: bool,
}

impl CommandReport {
    pub fn succeeded(&self) -> bool {
        matches!(self.ran, Ran::Exited(0)) && !self.interrupted && !self.leftovers
    }

    /// The status orch exits with, as a shell reports it.
    pub fn exit_code(&self) -> i32 {
        match &self.ran {
            Ran::Exited(0) if self.interrupted => crate::exit::INTERRUPTED,
            Ran::Exited(0) if self.leftovers => crate::exit::FAILURE,
            Ran::Exited(c) => *c,
            Ran::Signaled(s) => 128 + s,
            Ran::NotStarted(e) if e.kind() == std::io::ErrorKind::NotFound => 127,
            Ran::NotStarted(_) => 126,
        }
    }
}

/// What the maintenance command is told.
struct CommandEnv<'a> {
    pub deployment: &'a str,
    pub reason: &'a str,
    /// Its standard output goes to orch's standard error (`--output json`
    /// keeps stdout for orch's own lines).
    pub stdout_to_stderr: bool,
}

/// How long what CMD left in its process group has to end after CMD
/// itself exited, before orch kills the group with SIGKILL.
pub const GROUP_GRACE: Duration = Duration::from_secs(10);

/// Runs `argv` in its own process group (the terminal's foreground group
/// while it runs, when orch has a terminal), waits for it and for
/// everything of its group, and passes SIGTERM (and SIGINT when orch is not
/// on a terminal: there, the terminal sent Ctrl+C to CMD's group already)
/// to the whole group.
fn run_command(argv: &[String], env: CommandEnv<'_>) -> Result<CommandReport, Error> {
    use std::io::IsTerminal;
    use tokio::signal::unix::SignalKind;

    let on_terminal = std::io::stdin().is_terminal();
    super::runtime()?.block_on(async {
        let mut sigint = super::lifecycle::handler(SignalKind::interrupt(), "SIGINT")?;
        let mut sigterm = super::lifecycle::handler(SignalKind::terminate(), "SIGTERM")?;
        let mut child = match command(argv, &env, on_terminal).spawn() {
            Ok(c) => c,
            Err(e) => return Ok(report(Ran::NotStarted(e), false, false)),
        };
        let Some(pgid) = child.id().map(|p| Pid::from_raw(p as i32)) else {
            return Ok(report(ran(child.wait().await), false, false));
        };
        let _terminal = on_terminal.then_some(TakeBack);
        let signal = tokio::select! {
            s = child.wait() => {
                let (leftovers, killed) = drain(pgid).await;
                let mut r = report(ran(s), false, killed);
                r.leftovers = leftovers;
                return Ok(r);
            }
            _ = sigint.recv() => Signal::SIGINT,
            _ = sigterm.recv() => Signal::SIGTERM,
        };
        if signal == Signal::SIGTERM || !on_terminal {
            let _ = killpg(pgid, signal);
        }
        // Bounded: the grace, or a second signal, then SIGKILL for the group.
        let waited = tokio::select! {
            s = child.wait() => Some(s),
            _ = tokio::time::sleep(COMMAND_GRACE) => None,
            _ = sigint.recv() => None,
            _ = sigterm.recv() => None,
        };
        let (s, killed) = match waited {
            Some(s) => (s, false),
            None => {
                let _ = killpg(pgid, Signal::SIGKILL);
                (child.wait().await, true)
            }
        };
        let (leftovers, drained_by_kill) = drain(pgid).await;
        let mut r = report(ran(s), true, killed || drained_by_kill);
        r.leftovers = leftovers;
        Ok(r)
    })
}

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// CMD with its environment, in a process group of its own.
fn command(argv: &[String], env: &CommandEnv<'_>, on_terminal: bool) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env("ORCH_DEPLOYMENT", env.deployment)
        .env("ORCH_MAINTENANCE_REASON", env.reason)
        .env(
            crate::state::holder::TOKEN_ENV,
            crate::state::holder::token(),
        )
        .process_group(0);
    if on_terminal {
        // SAFETY: only async-signal-safe calls (sigprocmask, tcsetpgrp,
        // getpgrp) between fork and exec. The child makes its group the
        // terminal's foreground itself, before exec, so it never reads the
        // terminal from the background (SIGTTIN); SIGTTOU is blocked for the
        // call and unblocked before exec.
        unsafe {
            cmd.pre_exec(|| {
                take_terminal(nix::unistd::getpgrp());
                Ok(())
            });
        }
    }
    if env.stdout_to_stderr {
        if let Ok(fd) = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned() {
            cmd.stdout(std::process::Stdio::from(fd));
        }
    }
    cmd
}

/// Makes `pgid` the foreground group of the terminal on stdin, with
/// SIGTTOU blocked (a background group may not otherwise).
fn take_terminal(pgid: Pid) {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), None);
    let _ = nix::unistd::tcsetpgrp(std::io::stdin(), pgid);
    let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&ttou), None);
}

/// Gives the terminal back to orch's own group when CMD is done.
struct TakeBack;

impl Drop for TakeBack {
    fn drop(&mut self) {
        take_terminal(nix::unistd::getpgrp());
    }
}

/// After CMD's leader exited: waits up to [`GROUP_GRACE`] until no
/// process of its group is left, then kills the group with SIGKILL and
/// waits (bounded) for that. Returns (something was left, orch killed it).
async fn drain(pgid: Pid) -> (bool, bool) {
    if !group_alive(pgid) {
        return (false, false);
    }
    tracing::warn!("processes of the command's group {pgid} outlived it; waiting up to {GROUP_GRACE:?} for them");
    let deadline = tokio::time::Instant::now() + GROUP_GRACE;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !group_alive(pgid) {
            return (true, false);
        }
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while group_alive(pgid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (true, true)
}

/// True while a live (not zombie) process of group `pgid` exists, as
/// `/proc/PID/stat` says: `PID (COMM) STATE PPID PGRP …`.
fn group_alive(pgid: Pid) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let numeric = name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        numeric
            && std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .is_some_and(|stat| in_group(&stat, pgid.as_raw()))
    })
}

fn in_group(stat: &str, pgid: i32) -> bool {
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next();
    let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
    state != Some("Z") && pgrp == Some(pgid)
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
        leftovers: false,
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
            background: false,
            health: None,
            bounds: crate::model::Bounds {
                stop: Duration::from_secs(stop_timeout),
                ..crate::model::Bounds::all(Duration::from_secs(1))
            },
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
    fn a_process_of_the_group_is_told_from_a_zombie_and_another_group() {
        let stat = "4242 (sh) x) S 1 777 777 0 -1";
        assert!(in_group(stat, 777));
        assert!(!in_group(stat, 778));
        assert!(!in_group("4242 (sleep) Z 1 777 777", 777));
        let mut r = report(Ran::Exited(0), false, false);
        r.leftovers = true;
        assert!(!r.succeeded());
        assert_eq!(r.exit_code(), crate::exit::FAILURE);
    }

    #[test]
    fn default_timeout_of_nothing_is_the_slack() {
        assert_eq!(default_stop_timeout(&[]), Duration::from_secs(10));
    }
}

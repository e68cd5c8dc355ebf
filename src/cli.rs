//! Command line: parse ([`crate::args`]), resolve the configuration, hand
//! the verb to its file in `commands`, and turn an error into its exit code.

use std::path::PathBuf;

use clap::Parser;

use crate::args::{Cli, Command, Global, Lifecycle};

use crate::commands;
use crate::commands::lifecycle::VerbFlags;
use crate::error::{Error, UsageError};
use crate::exit;
use crate::model::Deployment;
use crate::op::Op;

const DEFAULT_CONFIGS: &[&str] = &["orch.toml", "/etc/orch/orch.toml"];

/// Parses arguments, runs the command and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    init_logging(&cli.global);
    let code = run(cli).unwrap_or_else(|e| {
        crate::ui::output::error(&e);
        e.exit_code()
    });
    crate::tunnel::end();
    crate::fleet::end_children();
    code
}

fn init_logging(g: &Global) {
    let level = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ORCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("orch={level},warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour())
        .with_writer(|| crate::ui::live::StderrAbove)
        .with_target(false)
        .try_init();
}

/// Colour only on a terminal, never with `NO_COLOR` set (no-color.org: set
/// and not empty), so a pipe or a CI log gets plain text.
fn colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

fn run(cli: Cli) -> Result<i32, Error> {
    let g = &cli.global;
    if let Some(host) = &g.host {
        crate::remote::Remote::parse(host, &g.ssh_command).map_err(UsageError::Host)?;
    }
    // These need no configuration.
    match &cli.command {
        Command::Completions { shell } => return commands::docs::completions(*shell),
        Command::Man => return commands::docs::man(),
        _ => {}
    }
    let reach = match &cli.command {
        Command::Render { .. } => crate::ops::InstalledFrom::ThisMachine,
        _ => crate::ops::InstalledFrom::Hosts,
    };
    if let Some(wait) = g.lock_wait {
        crate::state::holder::set_wait(wait);
    }
    crate::state::holder::set_command(&command_name(&cli.command));
    let d = load(g, reach)?;
    // What writes files acts on the names the configuration gives; the
    // rest acts on the units installed (a `naming` change not installed
    // yet, or rolled back, keeps the old names until the next install).
    let d = match &cli.command {
        Command::Render { .. }
        | Command::Plan { .. }
        | Command::Install { .. }
        | Command::Rollback { .. } => d,
        _ => d.as_installed(),
    };
    dispatch(g, &d, &cli.command)
}

/// `stop-for-maintenance` for `Command::StopForMaintenance { … }`: the
/// name a lock file shows its holder by.
fn command_name(command: &Command) -> String {
    let debug = format!("{command:?}");
    let mut name = String::new();
    for c in debug.chars().take_while(char::is_ascii_alphanumeric) {
        if c.is_ascii_uppercase() && !name.is_empty() {
            name.push('-');
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

/// The commands that act on a deployment, each handed to its file.
fn dispatch(g: &Global, d: &Deployment, command: &Command) -> Result<i32, Error> {
    let none = VerbFlags::default;
    match command {
        Command::Render { out } => commands::render::run(g, d, out.as_deref()),
        Command::Plan { rollback, to, diff } => match rollback {
            true => commands::plan::rollback(g, d, *to, *diff),
            false => commands::plan::run(g, d, *diff),
        },
        Command::Rollback {
            to,
            dry_run,
            force,
            restart_changed,
        } => rollback(g, d, *to, *dry_run, *force, *restart_changed),
        Command::Install {
            dry_run,
            force,
            restart_changed,
        } => install(g, d, *dry_run, *force, *restart_changed),
        Command::Start(a) => commands::lifecycle::run(g, d, Op::Start, a, none()),
        Command::Stop(a) => commands::lifecycle::run(g, d, Op::Stop, a, none()),
        Command::Reload { args, or_restart } => {
            let extra = VerbFlags {
                or_restart: *or_restart,
                ..none()
            };
            commands::lifecycle::run(g, d, Op::Reload, args, extra)
        }
        Command::Restart {
            args,
            rolling,
            batch,
            changed,
            canary,
            hold,
        } => {
            let extra = VerbFlags {
                rolling: rolling.then_some(*batch as usize),
                changed: *changed,
                canary: canary.map(|n| crate::phases::Canary {
                    count: n.map(|n| n as usize),
                    hold: *hold,
                }),
                ..none()
            };
            commands::lifecycle::run(g, d, Op::Restart, args, extra)
        }
        Command::StopForMaintenance { .. } | Command::Resume { .. } => maintenance(g, d, command),
        Command::Logs { .. } => logs(g, d, command),
        Command::Status { all_units } => commands::status::run(g, d, *all_units),
        Command::Completions { .. } | Command::Man => unreachable!("handled in run"),
    }
}

/// `install`, then with `--restart-changed` a `restart --changed` of the
/// whole deployment: one command for one Ansible task.
fn install(
    g: &Global,
    d: &Deployment,
    dry_run: bool,
    force: bool,
    restart: bool,
) -> Result<i32, Error> {
    let code = commands::install::run(g, d, dry_run, force)?;
    if code != exit::OK || !restart {
        return Ok(code);
    }
    let extra = VerbFlags {
        changed: true,
        ..VerbFlags::default()
    };
    commands::lifecycle::run(g, d, Op::Restart, &Lifecycle::whole(), extra)
}

/// `rollback`, then with `--restart-changed` a `restart --changed`, as
/// `install --restart-changed` does: a rollback is noted as an install is
/// (`changes`), so only the units whose put-back file needs a restart are.
fn rollback(
    g: &Global,
    d: &Deployment,
    to: Option<u64>,
    dry_run: bool,
    force: bool,
    restart: bool,
) -> Result<i32, Error> {
    let code = commands::install::rollback(g, d, to, dry_run, force)?;
    if code != exit::OK || !restart {
        return Ok(code);
    }
    let extra = VerbFlags {
        changed: true,
        ..VerbFlags::default()
    };
    // Read again: across a `naming` change the put-back files carry the
    // names the configuration would rename, and those are what to start.
    let d = load(g, crate::ops::InstalledFrom::Hosts)?.as_installed();
    commands::lifecycle::run(g, &d, Op::Restart, &Lifecycle::whole(), extra)
}

fn maintenance(g: &Global, d: &Deployment, command: &Command) -> Result<i32, Error> {
    match command {
        Command::StopForMaintenance {
            timeout,
            reason,
            include_database,
            terminate_sessions,
            journal_root,
            command,
        } => {
            let req = commands::maintenance::StopArgs {
                timeout: *timeout,
                reason,
                include_database: *include_database,
                terminate_sessions: *terminate_sessions,
                journal_root,
                command,
            };
            commands::maintenance::stop(g, d, req)
        }
        Command::Resume {
            timeout,
            max_parallel,
            journal_root,
            all,
        } => {
            let scope = match all {
                true => crate::maintenance::ResumeScope::Whole,
                false => crate::maintenance::ResumeScope::Recorded,
            };
            commands::maintenance::resume(g, d, *timeout, *max_parallel, journal_root, scope)
        }
        _ => unreachable!("only maintenance commands come here"),
    }
}

fn logs(g: &Global, d: &Deployment, command: &Command) -> Result<i32, Error> {
    let Command::Logs {
        targets,
        follow,
        lines,
        since,
        journal_root,
        timeout,
    } = command
    else {
        unreachable!("only logs comes here")
    };
    let req = commands::logs::Request {
        targets: targets.clone(),
        follow: *follow,
        lines: *lines,
        since: *since,
        journal_root: journal_root.clone(),
        timeout: *timeout,
    };
    commands::logs::run(g, d, req)
}

/// `--config`, or the first default that exists.
fn config_path(g: &Global) -> Result<PathBuf, UsageError> {
    if let Some(p) = &g.config {
        return Ok(p.clone());
    }
    DEFAULT_CONFIGS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or(UsageError::NoConfig)
}

/// The deployment, with the global overrides applied. Resolved twice when
/// worker units are installed: the first pass finds the unit folders, the
/// second keeps the installed workers' names (see `model::names`).
fn load(g: &Global, reach: crate::ops::InstalledFrom) -> Result<Deployment, Error> {
    let path = config_path(g)?;
    let source = crate::config::Source::read(&path)?;
    let mut overrides = crate::model::Overrides {
        unit_dir: g.unit_dir.clone(),
        local_address: g.host.clone(),
        installed: Default::default(),
    };
    let mut d = Deployment::resolve(&source, &overrides)?;
    overrides.installed = crate::ops::installed(&d, &g.access(), reach);
    if !overrides.installed.is_empty() {
        d = Deployment::resolve(&source, &overrides)?;
    }
    if let Some(dir) = &g.runtime_dir {
        d.runtime_dir = dir.clone();
    }
    Ok(d)
}

//! The global flags, and the context every verb gets: built once from
//! them, it says how to print (format, verbosity, colour), how to reach the
//! hosts, and how to load the deployment.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, UsageError};
use crate::fleet::Access;
use crate::model::Deployment;
use crate::ops::InstalledFrom;
use crate::systemd::Bus;
use crate::ui::output::Format;

const DEFAULT_CONFIGS: &[&str] = &["orch.toml", "/etc/orch/orch.toml"];

// No doc comment on this struct: clap would take it as the about text of
// the command it is flattened into.
#[derive(Debug, clap::Args)]
pub struct Global {
    /// Configuration file [default: ./orch.toml, then /etc/orch/orch.toml]
    #[arg(long, global = true, env = "ORCH_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// D-Bus to reach systemd on: system, user, or an address such as unix:path=/run/dbus/system_bus_socket
    #[arg(
        long,
        global = true,
        env = "ORCH_BUS",
        default_value = "system",
        value_name = "ADDRESS"
    )]
    pub bus: Bus,
    /// Run against a remote host (the deployment's `local` host) through SSH and systemd-stdio-bridge, as `systemctl -H` does: [USER@]HOST[:PORT]
    #[arg(long, global = true, env = "ORCH_HOST", value_name = "HOST")]
    pub host: Option<String>,
    /// The SSH program and its options (words separated by spaces), for --host and [[hosts]]
    #[arg(
        long,
        global = true,
        env = "ORCH_SSH",
        default_value = "ssh",
        value_name = "COMMAND"
    )]
    pub ssh_command: String,
    /// Unit directory (absolute), overriding deployment.unit_dir
    #[arg(long, global = true, value_name = "DIR", value_parser = absolute_dir)]
    pub unit_dir: Option<PathBuf>,
    /// Runtime mask directory, overriding deployment.runtime_dir
    #[arg(long, global = true, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
    /// Output format
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub output: Format,
    /// Bound on each D-Bus call and on connecting
    #[arg(long, global = true, value_name = "DURATION", default_value = "25s", value_parser = parse_duration)]
    pub call_timeout: Duration,
    /// More log output (-v info, -vv debug, -vvv trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// How long install, start, stop, restart and reload wait for another orch holding the deployment's lock, in seconds or as 1m30s (0: fail at once)
    #[arg(long, global = true, env = "ORCH_LOCK_WAIT", value_name = "SECS", value_parser = parse_lock_wait)]
    pub lock_wait: Option<Duration>,
}

/// What every verb's `run` gets.
pub struct Ctx {
    pub output: Format,
    /// `-q`: only errors.
    pub quiet: bool,
    /// `-v` counted.
    pub verbose: u8,
    /// Colour on stderr: a terminal, and no `NO_COLOR`.
    pub colour: bool,
    /// How to reach the hosts.
    pub access: Access,
    /// `--lock-wait`.
    pub lock_wait: Option<Duration>,
    /// The whole command line's definition, for `man` and `completions`.
    pub definition: fn() -> clap::Command,
    load: Load,
}

/// How to load the deployment: the flags that find or override it.
struct Load {
    config: Option<PathBuf>,
    unit_dir: Option<PathBuf>,
    host: Option<String>,
    runtime_dir: Option<PathBuf>,
}

impl Ctx {
    /// Checks `--host` (before anything, even `man`), and keeps the rest.
    pub fn new(g: Global, definition: fn() -> clap::Command) -> Result<Ctx, UsageError> {
        if let Some(host) = &g.host {
            crate::remote::Remote::parse(host, &g.ssh_command).map_err(UsageError::Host)?;
        }
        Ok(Ctx {
            output: g.output,
            quiet: g.quiet,
            verbose: g.verbose,
            colour: colour(),
            access: Access {
                local_bus: g.bus,
                ssh_command: g.ssh_command,
                call_timeout: g.call_timeout,
            },
            lock_wait: g.lock_wait,
            definition,
            load: Load {
                config: g.config,
                unit_dir: g.unit_dir,
                host: g.host,
                runtime_dir: g.runtime_dir,
            },
        })
    }

    /// The deployment, with the global overrides applied. Resolved twice
    /// when worker units are installed: the first pass finds the unit
    /// folders, the second keeps the installed workers' names (see
    /// `model::names`), read from the hosts `reach` covers.
    pub fn deployment(&self, reach: InstalledFrom) -> Result<Deployment, Error> {
        let path = self.config_path()?;
        let source = crate::config::Source::read(&path)?;
        let mut overrides = crate::model::Overrides {
            unit_dir: self.load.unit_dir.clone(),
            local_address: self.load.host.clone(),
            installed: Default::default(),
        };
        let mut d = Deployment::resolve(&source, &overrides)?;
        overrides.installed = crate::ops::installed(&d, &self.access, reach);
        if !overrides.installed.is_empty() {
            d = Deployment::resolve(&source, &overrides)?;
        }
        if let Some(dir) = &self.load.runtime_dir {
            d.runtime_dir = dir.clone();
        }
        Ok(d)
    }

    /// The deployment as its installed files name it (see
    /// [`Deployment::as_installed`]): what writes files (render, plan,
    /// install, rollback) acts on the names the configuration gives; the
    /// rest acts on the units installed (a `naming` change not installed
    /// yet, or rolled back, keeps the old names until the next install).
    pub fn installed_deployment(&self) -> Result<Deployment, Error> {
        Ok(self.deployment(InstalledFrom::Hosts)?.as_installed())
    }

    /// `--config`, or the first default that exists.
    fn config_path(&self) -> Result<PathBuf, UsageError> {
        if let Some(p) = &self.load.config {
            return Ok(p.clone());
        }
        DEFAULT_CONFIGS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or(UsageError::NoConfig)
    }
}

/// Colour only on a terminal, never with `NO_COLOR` set (no-color.org: set
/// and not empty), so a pipe or a CI log gets plain text.
fn colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// A `--timeout`-like value: the same rules as the configuration's
/// durations (1 ms to 24 h, fractions of a millisecond rounded up).
/// Whole seconds or a duration such as `1m30s`, 0 included, at most a day.
fn parse_lock_wait(s: &str) -> Result<Duration, crate::model::DurationError> {
    match s.trim().parse::<u64>() {
        Ok(0) => Ok(Duration::ZERO),
        Ok(n) => parse_duration(&format!("{n}s")),
        Err(_) => parse_duration(s),
    }
}

/// A relative folder would depend on where orch runs: refused as the
/// flag's error, not the configuration's.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is relative: give an absolute path (such as /etc/systemd/system)")]
pub struct RelativeDir(String);

fn absolute_dir(s: &str) -> Result<PathBuf, RelativeDir> {
    let p = PathBuf::from(s);
    match p.is_absolute() {
        true => Ok(p),
        false => Err(RelativeDir(s.to_string())),
    }
}

/// A duration flag: the configuration's rules (see [`crate::model::parse_duration`]).
pub fn parse_duration(s: &str) -> Result<Duration, crate::model::DurationError> {
    crate::model::parse_duration(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_humane_and_never_zero() {
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(
            parse_duration("0s").unwrap_err().to_string(),
            "must be longer than zero"
        );
        let e = parse_duration("soon").unwrap_err().to_string();
        assert!(e.starts_with("`soon` is not a duration ("), "{e}");
        assert!(e.ends_with("); write e.g. \"90s\" or \"2m\""), "{e}");
        let e = parse_duration("292277024626y").unwrap_err().to_string();
        assert!(e.contains("too long"), "{e}");
    }
}

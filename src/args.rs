//! The command line's definition (clap derive): one place for every flag,
//! from which `--help`, the man page and the completions are made.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::exit;
use crate::fleet::Access;
use crate::systemd::Bus;
use crate::ui::output::Format;

#[derive(Debug, Parser)]
#[command(
    name = "orch",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("ORCH_GIT_COMMIT"), ")"),
    about = "Run a master + workers service on systemd",
    long_about = "Run a master + workers service on systemd: render one unit per worker from a TOML file, \
install them atomically, and drive systemd over D-Bus.",
    after_help = exit::HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render the units and print them, or write them to a folder. Needs no systemd.
    Render {
        /// Write one file per unit into DIR instead of printing
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Compare the rendered units with the unit directory. Exit 0: nothing to do; 4: changes pending.
    Plan {
        /// Plan `orch rollback` instead: a kept generation against the unit directory
        #[arg(long)]
        rollback: bool,
        /// With --rollback: generation N (see `orch status`) instead of the one before the installed one
        #[arg(long, value_name = "N", requires = "rollback")]
        to: Option<u64>,
        /// Also print a unified diff of each unit that would change (installed → rendered)
        #[arg(long)]
        diff: bool,
    },
    /// Write changed unit files atomically, remove stale ones, reload systemd only if something changed.
    Install {
        /// Show what would change, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Overwrite unit files that were edited by hand or not written by orch
        #[arg(long)]
        force: bool,
        /// Then restart the units whose restart-worthy change is newer than their process (`restart --changed`)
        #[arg(long, conflicts_with = "dry_run")]
        restart_changed: bool,
    },
    /// Put back the unit files of a kept generation (install keeps the last three before the installed one), the way install writes them: same plan, lock, drift refusal, all-or-nothing, one reload.
    Rollback {
        /// Generation N (see `orch status` or `orch plan --rollback`) [default: the one before the installed one]
        #[arg(long, value_name = "N")]
        to: Option<u64>,
        /// Show what would change, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Overwrite unit files that were edited by hand or not written by orch
        #[arg(long)]
        force: bool,
        /// Then restart the running units whose file changed in a way that needs a restart
        #[arg(long, conflicts_with = "dry_run")]
        restart_changed: bool,
    },
    /// Start units in parallel and wait until each is ready: database, then master, then workers and dependents.
    #[command(
        mut_arg("all", |a| a.help("Every unit: master, workers and dependents; the database and the prerequisites are started first if they are not running")),
        group(clap::ArgGroup::new("what").args(["all", "targets"]).required(true))
    )]
    Start(Lifecycle),
    /// Stop units in parallel and wait for each: dependents, then workers, then master. The database is never stopped by --all.
    #[command(
        mut_arg("all", |a| a.help("Every unit: dependents, workers and master; the database and the prerequisites are left running (name them to stop them)")),
        group(clap::ArgGroup::new("what").args(["all", "targets"]).required(true))
    )]
    Stop(Lifecycle),
    /// Restart units: stop in reverse order, start in order, each gated on readiness; or --rolling; or only the --changed ones.
    #[command(
        mut_arg("all", |a| a.help("Every unit: master, workers and dependents; the database and the prerequisites are not restarted, only started if they are not running")),
        group(clap::ArgGroup::new("what").args(["all", "targets", "changed"]).multiple(true).required(true)),
        group(clap::ArgGroup::new("whole").args(["all", "changed"]).multiple(true))
    )]
    Restart {
        #[command(flatten)]
        args: Lifecycle,
        /// Restart the master, then workers a batch at a time, each batch gated on readiness
        #[arg(long, requires = "whole")]
        rolling: bool,
        /// Only the running master and workers whose process started before their last restart-worthy change installed (status says restart needed), and new workers that never ran; "nothing changed" and exit 0 when none
        #[arg(long, conflicts_with = "targets")]
        changed: bool,
        /// With --rolling: restart N workers first (one of each kind that has twins when N is omitted), watch them for --hold (ready, still active, not restarted by Restart=), and stop the whole operation, the rest untouched, if one fails
        #[arg(long, value_name = "N", num_args = 0..=1, requires = "rolling", value_parser = clap::value_parser!(u32).range(1..))]
        canary: Option<Option<u32>>,
        /// How long canaries are watched before the rest
        #[arg(long, value_name = "DURATION", default_value = "30s", requires = "canary", value_parser = parse_duration)]
        hold: Duration,
        /// Workers per batch with --rolling
        #[arg(long, default_value_t = 1, value_name = "N", requires = "rolling", value_parser = clap::value_parser!(u32).range(1..))]
        batch: u32,
    },
    /// Reload units in parallel (systemd's reload job: ExecReload=, e.g. SIGHUP), then check each is ready again. The database is never reloaded; units without ExecReload= are refused before anything is sent (exit 2), unless --or-restart.
    #[command(
        mut_arg("all", |a| a.help("Every unit: master, workers and dependents (the database and the prerequisites are never reloaded)")),
        group(clap::ArgGroup::new("what").args(["all", "targets"]).required(true))
    )]
    Reload {
        #[command(flatten)]
        args: Lifecycle,
        /// Restart the units that cannot be reloaded (systemd's reload-or-restart job), the master first
        #[arg(long)]
        or_restart: bool,
    },
    /// Record what runs, mask every unit at runtime, stop dependents, workers and master, and prove no process is left.
    StopForMaintenance {
        /// Bound on the whole stop; units still running at its end are killed with SIGKILL [default: longest stop_timeout + 10s]
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<Duration>,
        /// Why, recorded in the state file and shown by status
        #[arg(long, value_name = "TEXT", default_value = "maintenance")]
        reason: String,
        /// Stop (and mask) the database unit too
        #[arg(long)]
        include_database: bool,
        /// With [database] roles: end the sessions of those roles still open once the stop bound ran out (pg_terminate_backend), and report them. Without it, such sessions fail the proof (exit 1) and the deployment stays in maintenance; rerun with this flag to complete it
        #[arg(long)]
        terminate_sessions: bool,
        /// With `-- CMD`: read failure logs of the resume with `journalctl --root DIR`
        #[arg(long, env = "ORCH_JOURNAL_ROOT", value_name = "DIR")]
        journal_root: Option<PathBuf>,
        /// After `--`: a command to run while the deployment is stopped, with
        /// ORCH_DEPLOYMENT and ORCH_MAINTENANCE_REASON set and its output shown.
        /// Exit 0: orch resumes. Otherwise (or interrupted) the deployment stays
        /// in maintenance and orch exits with the command's status
        #[arg(last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// End maintenance: unmask, start exactly the units that ran before (readiness-gated), remove the state file.
    Resume {
        /// Bound on the whole start
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<Duration>,
        /// Cap on jobs in flight [default: unlimited]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_parallel: Option<u32>,
        /// Read failure logs with `journalctl --root DIR`
        #[arg(long, env = "ORCH_JOURNAL_ROOT", value_name = "DIR")]
        journal_root: Option<PathBuf>,
        /// Start the whole deployment instead of the recorded set: the way
        /// out when the maintenance journal is damaged
        #[arg(long)]
        all: bool,
    },
    /// The journal of the deployment's units (or the targets), merged in time order, each line prefixed with its unit.
    Logs {
        /// Unit names, worker kinds, or master / workers / dependents / database / prerequisites [default: every unit but the database and the prerequisites]
        #[arg(value_name = "TARGET")]
        targets: Vec<String>,
        /// Keep showing new lines until Ctrl+C
        #[arg(short, long)]
        follow: bool,
        /// Lines of history per unit, or `all` [default: 10; all with --since]
        #[arg(short = 'n', long, value_name = "N", value_parser = parse_lines)]
        lines: Option<crate::logs::Lines>,
        /// Only lines since WHEN, as journalctl takes it: `2024-05-01 10:00`, `-1h`, `1h ago`, `yesterday`, `@EPOCH`
        #[arg(long, value_name = "WHEN", value_parser = parse_since, allow_hyphen_values = true)]
        since: Option<jiff::Timestamp>,
        /// Read the journal with `journalctl --root DIR` (e.g. a container's root)
        #[arg(long, env = "ORCH_JOURNAL_ROOT", value_name = "DIR")]
        journal_root: Option<PathBuf>,
        /// Bound on reading the history of every host
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to standard output.
    Man,
    /// One row per unit: state, main PID, time since the last change, restarts, health. On a terminal too short for every row, workers are grouped by kind.
    Status {
        /// Every unit on its own row, even when the table does not fit the terminal
        #[arg(short = 'a', long)]
        all_units: bool,
    },
}

#[derive(Debug, Args)]
pub struct Lifecycle {
    /// Every unit of the deployment (what that means for each verb: its --help)
    #[arg(long, conflicts_with = "targets")]
    pub all: bool,
    /// Unit names, worker kinds, or master / workers / dependents / database / prerequisites; or --all
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Cap on jobs in flight [default: unlimited]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_parallel: Option<u32>,
    /// Bound on the whole operation (each unit is also bounded by its own timeouts); a failed unit's state and journal are read within what is left, or 0.5 s past it
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// On Ctrl+C or SIGTERM, cancel the jobs orch enqueued that systemd has not finished
    #[arg(long)]
    pub cancel_on_interrupt: bool,
    /// Read failure logs with `journalctl --root DIR` (e.g. a container's root)
    #[arg(long, env = "ORCH_JOURNAL_ROOT", value_name = "DIR")]
    pub journal_root: Option<PathBuf>,
    /// Act even though the deployment is in maintenance
    #[arg(long)]
    pub force: bool,
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

fn parse_duration(s: &str) -> Result<Duration, crate::model::DurationError> {
    crate::model::parse_duration(s)
}

/// A `-n` value clap refused.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is neither a number of lines nor `all`")]
struct LinesError(String);

fn parse_lines(s: &str) -> Result<crate::logs::Lines, LinesError> {
    match s {
        "all" => Ok(crate::logs::Lines::All),
        n => n
            .parse()
            .map(crate::logs::Lines::Last)
            .map_err(|_| LinesError(s.to_string())),
    }
}

/// A `--since` value: parsed here, before anything runs, so that a typo
/// is a usage error (exit 2); relative times count from now.
fn parse_since(s: &str) -> Result<jiff::Timestamp, crate::since::SinceError> {
    crate::since::parse(s, &jiff::Zoned::now())
}

impl Lifecycle {
    /// `--all` with every other flag at its default (`install --restart-changed`).
    pub fn whole() -> Lifecycle {
        Lifecycle {
            all: true,
            targets: Vec::new(),
            max_parallel: None,
            timeout: None,
            cancel_on_interrupt: false,
            journal_root: None,
            force: false,
        }
    }
}

impl Global {
    /// How to reach the hosts.
    pub fn access(&self) -> Access {
        Access {
            local_bus: self.bus.clone(),
            ssh_command: self.ssh_command.clone(),
            call_timeout: self.call_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_short_phrase_and_never_an_option() {
        assert!(parse_since("1h ago").is_ok() && parse_since("-1h").is_ok());
        assert!(parse_since("yesterday-ish").is_err());
        assert_eq!(parse_lines("all").unwrap(), crate::logs::Lines::All);
        assert_eq!(parse_lines("5").unwrap(), crate::logs::Lines::Last(5));
        assert!(parse_lines("-5").is_err());
    }

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

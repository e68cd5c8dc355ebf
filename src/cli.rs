//! Command line: one definition of each flag (clap derive), dispatch to the
//! library stages, and the mapping of errors to exit codes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::config::ConfigError;
use crate::exit;
use crate::fleet::{Fleet, Target};
use crate::install::{self, InstallError};
use crate::lifecycle::{self, Engine, Op, Summary};
use crate::model::Deployment;
use crate::output::{self, Format};
use crate::plan::{self, Action};
use crate::render;
use crate::store::Store;
use crate::systemd::{Bus, SystemdError};

const DEFAULT_CONFIGS: &[&str] = &["orch.toml", "/etc/orch/orch.toml"];

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
    /// Unit directory, overriding deployment.unit_dir
    #[arg(long, global = true, value_name = "DIR")]
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
    Plan,
    /// Write changed unit files atomically, remove stale ones, reload systemd only if something changed.
    Install {
        /// Show what would change, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Overwrite unit files that were edited by hand or not written by orch
        #[arg(long)]
        force: bool,
    },
    /// Start units in parallel and wait until each is ready: database, then master, then workers and dependents.
    Start(Lifecycle),
    /// Stop units in parallel and wait for each: dependents, then workers, then master. The database is never stopped by --all.
    Stop(Lifecycle),
    /// Restart units: stop in reverse order, start in order, each gated on readiness; or --rolling.
    Restart {
        #[command(flatten)]
        args: Lifecycle,
        /// Restart the master, then workers a batch at a time, each batch gated on readiness
        #[arg(long, requires = "all")]
        rolling: bool,
        /// Workers per batch with --rolling
        #[arg(long, default_value_t = 1, value_name = "N", requires = "rolling", value_parser = clap::value_parser!(u32).range(1..))]
        batch: u32,
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
    /// Every unit of the deployment: master, workers and dependents (the database is started if needed, never stopped)
    #[arg(long, conflicts_with = "targets")]
    pub all: bool,
    /// Unit names, worker kinds, or master / workers / dependents / database
    #[arg(value_name = "TARGET", required_unless_present = "all")]
    pub targets: Vec<String>,
    /// Cap on jobs in flight [default: unlimited]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_parallel: Option<u32>,
    /// Bound on the whole operation (each unit is also bounded by its own timeouts)
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

/// A duration flag: bounded like the configuration's durations (1ms to
/// 24h), so no deadline computed from it can overflow.
fn parse_duration(s: &str) -> Result<Duration, crate::model::DurationError> {
    crate::model::parse_duration(s)
}

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
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("orch: {e:#}");
            exit_code(&e)
        }
    };
    end_children();
    code
}

/// Ends orch's own child processes still running: the SSH commands zbus
/// started for `unixexec` (it neither kills nor waits for them). An ssh
/// still connecting to a host that does not answer would otherwise outlive
/// orch and hold its stderr open, so whoever reads orch's output (Ansible,
/// CI) would wait for ssh's own TCP timeout instead of orch's bound.
fn end_children() {
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let name = p.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may contain spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid == Some(me.as_str()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
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
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Maps an error to its documented exit code.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if cause.is::<ConfigError>()
            || cause.is::<render::RenderError>()
            || cause.is::<UsageError>()
        {
            return exit::USAGE;
        }
        if let Some(SystemdError::Timeout { .. }) = cause.downcast_ref::<SystemdError>() {
            return exit::TIMEOUT;
        }
    }
    exit::FAILURE
}

/// A usage error found after argument parsing (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn run(cli: Cli) -> Result<i32> {
    if let Some(host) = &cli.global.host {
        crate::systemd::Remote::parse(host, &cli.global.ssh_command)
            .map_err(|m| UsageError(format!("--host {m}")))?;
    }
    let g = &cli.global;
    // These need no configuration.
    match &cli.command {
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(
                *shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "orch",
                &mut buf,
            );
            print_stdout(&String::from_utf8_lossy(&buf))?;
            return Ok(exit::OK);
        }
        Command::Man => {
            let mut buf = Vec::new();
            man_page(&mut buf)?;
            print_stdout(&String::from_utf8_lossy(&buf))?;
            return Ok(exit::OK);
        }
        _ => {}
    }
    let deployment = load(g)?;
    match &cli.command {
        Command::Render { out } => cmd_render(g, &deployment, out.as_deref()),
        Command::Plan => cmd_plan(g, &deployment),
        Command::Install { dry_run, force } => cmd_install(g, &deployment, *dry_run, *force),
        Command::Start(a) => cmd_lifecycle(g, &deployment, Op::Start, a, None),
        Command::Stop(a) => cmd_lifecycle(g, &deployment, Op::Stop, a, None),
        Command::Restart {
            args,
            rolling,
            batch,
        } => cmd_lifecycle(
            g,
            &deployment,
            Op::Restart,
            args,
            rolling.then_some(*batch as usize),
        ),
        Command::StopForMaintenance {
            timeout,
            reason,
            include_database,
        } => cmd_stop_for_maintenance(g, &deployment, *timeout, reason, *include_database),
        Command::Resume {
            timeout,
            max_parallel,
            journal_root,
        } => {
            let opts = lifecycle::Options {
                max_parallel: max_parallel.map(|n| n as usize),
                timeout: *timeout,
                rolling: None,
                journal_root: journal_root.clone(),
                probe: Default::default(),
            };
            cmd_resume(g, &deployment, opts)
        }
        Command::Status { all_units } => cmd_status(g, &deployment, *all_units),
        Command::Completions { .. } | Command::Man => unreachable!("handled above"),
    }
}

fn config_path(g: &Global) -> Result<PathBuf> {
    if let Some(p) = &g.config {
        return Ok(p.clone());
    }
    DEFAULT_CONFIGS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| UsageError("no configuration: pass --config PATH (or ORCH_CONFIG), or create ./orch.toml or /etc/orch/orch.toml".into()).into())
}

fn load(g: &Global) -> Result<Deployment> {
    let path = config_path(g)?;
    let overrides = crate::model::Overrides {
        unit_dir: g.unit_dir.clone(),
        local_address: g.host.clone(),
    };
    let mut d = Deployment::load_with(&path, &overrides)?;
    if let Some(dir) = &g.runtime_dir {
        d.runtime_dir = dir.clone();
    }
    Ok(d)
}

/// How to reach every host a unit of the deployment lives on.
fn targets(g: &Global, d: &Deployment) -> Result<Vec<Target>> {
    Ok(
        crate::fleet::targets(&d.used_hosts(), &g.bus, &g.ssh_command, g.call_timeout)
            .map_err(UsageError)?,
    )
}

/// The hosts `plan` and `install` visit (see [`Deployment::install_hosts`]).
fn install_targets(g: &Global, d: &Deployment) -> Result<Vec<Target>> {
    Ok(
        crate::fleet::targets(&d.install_hosts(), &g.bus, &g.ssh_command, g.call_timeout)
            .map_err(UsageError)?,
    )
}

/// The targets of the hosts `members` live on.
fn targets_of(g: &Global, d: &Deployment, members: &[lifecycle::Member]) -> Result<Vec<Target>> {
    Ok(targets(g, d)?
        .into_iter()
        .filter(|t| members.iter().any(|m| m.host == t.name))
        .collect())
}

/// Where the master lives: its file system holds the maintenance journal.
fn home_store(g: &Global, d: &Deployment) -> Result<Store> {
    let host = d.host(&d.master.host);
    Ok(Target::new(host, &g.bus, &g.ssh_command, g.call_timeout)
        .map_err(UsageError)?
        .store)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

#[derive(Serialize)]
struct RenderJson<'a> {
    deployment: &'a str,
    units: &'a [render::RenderedUnit],
}

fn cmd_render(g: &Global, d: &Deployment, out: Option<&Path>) -> Result<i32> {
    let units = render::render(d)?;
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for u in &units {
            let path = render::unit_path(dir, &u.unit).map_err(anyhow::Error::msg)?;
            install::write_atomic(&path, u.content.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if g.output == Format::Human && !g.quiet {
            eprintln!("wrote {} unit files to {}", units.len(), dir.display());
        }
    }
    match (g.output, out) {
        (Format::Json, _) => output::json(&RenderJson {
            deployment: &d.name,
            units: &units,
        })?,
        (Format::Human, None) => {
            let mut text = String::new();
            for (i, u) in units.iter().enumerate() {
                if i > 0 {
                    text.push('\n');
                }
                text.push_str(&format!("### {}\n{}", u.unit, u.content));
            }
            print_stdout(&text)?;
        }
        (Format::Human, Some(_)) => {}
    }
    Ok(exit::OK)
}

fn cmd_plan(g: &Global, d: &Deployment) -> Result<i32> {
    let units = render::render(d)?;
    let targets = install_targets(g, d)?;
    let plans = runtime()?.block_on(plan::plan_all(d, &units, &targets))?;
    let changes = plans.iter().any(plan::Plan::has_changes);
    match g.output {
        Format::Json => output::json(&serde_json::json!({
            "deployment": d.name,
            "unit_dir": d.unit_dir,
            "changes": changes,
            "units": plans.iter().flat_map(|p| &p.units).collect::<Vec<_>>(),
        }))?,
        Format::Human => {
            let mut text = String::new();
            for plan in &plans {
                text.push_str(&format!(
                    "plan for {} in {}{}: {} to create, {} to update, {} to remove, {} drifted, {} unchanged\n",
                    plan.deployment,
                    plan.unit_dir.display(),
                    host_suffix(d, &plan.host),
                    plan.count(Action::Create),
                    plan.count(Action::Update),
                    plan.count(Action::Remove),
                    plan.count(Action::Drift),
                    plan.count(Action::Unchanged),
                ));
                for u in &plan.units {
                    text.push_str(&format!("  {:<10} {}", u.action.as_str(), u.unit));
                    if let Some(r) = &u.reason {
                        text.push_str(&format!("  ({r})"));
                    }
                    text.push('\n');
                }
            }
            print_stdout(&text)?;
        }
    }
    Ok(if changes {
        exit::CHANGES_PENDING
    } else {
        exit::OK
    })
}

/// ` on host NAME (ADDRESS)` when the deployment is not only this machine.
fn host_suffix(d: &Deployment, host: &str) -> String {
    let h = d.host(host);
    match &h.address {
        Some(a) if d.is_multi_host() => format!(" on host {host} ({a})"),
        Some(a) => format!(" on {a}"),
        None if d.is_multi_host() => format!(" on host {host} (this machine)"),
        None => String::new(),
    }
}

fn cmd_install(g: &Global, d: &Deployment, dry_run: bool, force: bool) -> Result<i32> {
    let units = render::render(d)?;
    let targets = install_targets(g, d)?;
    let home = home_store(g, d)?;
    let report = runtime()?.block_on(async {
        let plans = plan::plan_all(d, &units, &targets).await?;
        let in_maintenance = crate::maintenance::read_state(d, &home).await?.is_some();
        let opts = install::Options {
            dry_run,
            force,
            in_maintenance,
        };
        let fleet = if dry_run {
            None
        } else {
            Some(Fleet::connect(&targets, g.call_timeout).await?)
        };
        match install::install(d, &plans, &targets, fleet.as_ref(), opts).await {
            Ok(r) => Ok(r),
            Err(InstallError::Systemd(e)) => {
                Err(anyhow::Error::new(e).context(format!("install of {} failed", d.name)))
            }
            Err(e) => Err(e.into()),
        }
    })?;
    let multi = d.is_multi_host();
    match g.output {
        Format::Json => output::json(&report)?,
        Format::Human => {
            let mut text = String::new();
            for u in &report.units {
                let verb = match (u.action, dry_run) {
                    (Action::Unchanged, _) => "unchanged",
                    (Action::Create, false) => "created",
                    (Action::Update, false) => "updated",
                    (Action::Remove, false) => "removed",
                    (Action::Drift, false) => "overwritten",
                    (a, true) => a.as_str(),
                };
                if multi {
                    text.push_str(&format!("  {verb:<11} {:<12} {}\n", u.host, u.unit));
                } else {
                    text.push_str(&format!("  {verb:<11} {}\n", u.unit));
                }
            }
            let reloaded: Vec<&str> = report
                .hosts
                .iter()
                .filter(|h| h.reloaded)
                .map(|h| h.host.as_str())
                .collect();
            let summary = match (dry_run, report.changed) {
                (true, true) => "dry run: changes pending, nothing written".to_string(),
                (true, false) => "dry run: nothing to do".to_string(),
                (false, true) => format!(
                    "installed {}: changed{}{}",
                    d.name,
                    match (report.reloaded, multi) {
                        (false, _) => String::new(),
                        (true, false) => ", systemd reloaded".to_string(),
                        (true, true) => format!(", systemd reloaded on {}", reloaded.join(", ")),
                    },
                    if report.enabled {
                        ", master enabled"
                    } else {
                        ""
                    },
                ),
                (false, false) => format!(
                    "installed {}: nothing changed, systemd not reloaded",
                    d.name
                ),
            };
            if let Some(why) = &report.enable_skipped {
                text.push_str(&format!("  note: {why}\n"));
            }
            text.push_str(&summary);
            text.push('\n');
            if !g.quiet {
                print_stdout(&text)?;
            }
        }
    }
    Ok(exit::OK)
}

/// Writes to stdout; a closed pipe (`orch … | head`) ends quietly.
fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn cmd_lifecycle(
    g: &Global,
    d: &Deployment,
    op: Op,
    a: &Lifecycle,
    rolling: Option<usize>,
) -> Result<i32> {
    let members = if a.all {
        lifecycle::members(d)
            .into_iter()
            .filter(|m| {
                m.role != crate::model::Role::Database || op == Op::Start || op == Op::Restart
            })
            .collect()
    } else {
        lifecycle::select(d, &a.targets).map_err(UsageError)?
    };
    let opts = lifecycle::Options {
        max_parallel: a.max_parallel.map(|n| n as usize),
        timeout: a.timeout,
        rolling,
        journal_root: a.journal_root.clone(),
        probe: Default::default(),
    };
    let targets = targets_of(g, d, &members)?;
    let home = home_store(g, d)?;
    let observer = output::progress::observer(g.output, g.quiet, title(op, rolling, &members));
    let rt = runtime()?;
    let summary = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        // Installed before anything else so an early Ctrl+C is ours, not the default kill.
        let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let connect = async {
            // Connected first: an unreachable host is named as such, not as
            // a failure to read the maintenance journal on it.
            let fleet = Fleet::connect(&targets, g.call_timeout).await?;
            if matches!(op, Op::Start | Op::Restart) && !a.force {
                crate::maintenance::refuse_if_in_maintenance(d, &home).await?;
            }
            fleet
                .preflight(
                    &format!("{op:?} units of {}", d.name).to_lowercase(),
                    &[crate::systemd::actions::MANAGE_UNITS],
                )
                .await?;
            let engine = Engine::new(&fleet, opts, observer.clone()).await?;
            Ok::<_, anyhow::Error>((fleet, engine))
        };
        let (fleet, engine) = tokio::select! {
            r = connect => r?,
            _ = sigint.recv() => return Ok::<_, anyhow::Error>(None),
            _ = sigterm.recv() => return Ok(None),
        };
        // The run future is dropped on a signal: every wait in it ends at once.
        {
            let run = engine.run(op, &members, a.all);
            tokio::pin!(run);
            tokio::select! {
                s = &mut run => return Ok(Some(s)),
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
        }
        let mut s = engine.summary(op, &members, Vec::new(), true);
        if a.cancel_on_interrupt {
            let jobs = engine.inflight().jobs();
            // Bounded so that orch still exits within a second of the signal.
            let cancels = futures_util::future::join_all(jobs.iter().map(|(host, id, _)| {
                let sd = fleet.get(host);
                async move {
                    let _call = sd.permit().await;
                    sd.manager.cancel_job(*id).await
                }
            }));
            let _ = tokio::time::timeout(Duration::from_millis(500), cancels).await;
            s.running_jobs = s
                .running_jobs
                .into_iter()
                .map(|j| format!("{j}, canceled"))
                .collect();
        }
        Ok(Some(s))
    });
    observer.finish();
    let summary = summary?;
    let Some(summary) = summary else {
        eprintln!("orch: interrupted before any job was enqueued");
        return Ok(exit::INTERRUPTED);
    };
    print_summary(g, &summary)?;
    Ok(summary.exit_code())
}

/// What the live display needs to know up front.
fn title(op: Op, rolling: Option<usize>, members: &[lifecycle::Member]) -> output::progress::Title {
    output::progress::Title {
        op: format!("{op:?}").to_lowercase(),
        rolling,
        kinds: members
            .iter()
            .filter_map(|m| Some((m.unit.clone(), m.kind.clone()?)))
            .collect(),
    }
}

fn print_summary(g: &Global, s: &Summary) -> Result<()> {
    if g.output == Format::Json {
        #[derive(Serialize)]
        struct Final<'a> {
            event: &'static str,
            #[serde(flatten)]
            summary: &'a Summary,
        }
        output::json(&Final {
            event: "summary",
            summary: s,
        })?;
        return Ok(());
    }
    let verb = match s.op {
        Op::Start => "start",
        Op::Stop => "stop",
        Op::Restart => "restart",
    };
    // -q: nothing on success; on failure only what went wrong.
    if g.quiet && s.ok {
        return Ok(());
    }
    // After a live display (which showed every unit), the result once: the
    // headline and only what went wrong; -v for every unit, as in a log.
    let only_problems = g.quiet || (output::progress::is_live() && g.verbose == 0);
    let mut text = String::new();
    let shown = s.units.iter().filter(|u| {
        !only_problems || !matches!(u.phase, lifecycle::Phase::Ready | lifecycle::Phase::Stopped)
    });
    for u in shown {
        text.push_str(&format!(
            "  {:<50} {:<8} {:>7.2}s",
            u.unit,
            u.phase.as_str(),
            u.elapsed_ms as f64 / 1000.0
        ));
        if let Some(e) = &u.error {
            text.push_str(&format!("  {e}"));
        }
        let mut facts = Vec::new();
        if let Some(r) = &u.result {
            facts.push(format!("result {r}"));
        }
        if let Some(x) = u.exit_status {
            facts.push(format!("exit status {x}"));
        }
        if let Some(a) = &u.active_state {
            if u.phase == lifecycle::Phase::Failed {
                facts.push(format!("now {a}"));
            }
        }
        if !facts.is_empty() {
            text.push_str(&format!(" [{}]", facts.join(", ")));
        }
        text.push('\n');
        for line in &u.journal {
            text.push_str(&format!("      | {line}\n"));
        }
    }
    let ok = s
        .units
        .iter()
        .filter(|u| matches!(u.phase, lifecycle::Phase::Ready | lifecycle::Phase::Stopped))
        .count();
    let headline = if s.interrupted {
        format!(
            "{verb} interrupted after {:.2}s",
            s.elapsed_ms as f64 / 1000.0
        )
    } else if s.ok {
        format!(
            "{verb}: {ok} of {} units {} in {:.2}s",
            s.units.len(),
            if s.op == Op::Stop { "stopped" } else { "ready" },
            s.elapsed_ms as f64 / 1000.0
        )
    } else {
        format!(
            "{verb} FAILED: {} failed, {} timed out, {ok} ok, in {:.2}s",
            s.failed,
            s.timed_out,
            s.elapsed_ms as f64 / 1000.0
        )
    };
    text.push_str(&headline);
    text.push('\n');
    if !s.untouched.is_empty() {
        text.push_str(&format!(
            "not reached (left as they were): {}\n",
            s.untouched.join(", ")
        ));
    }
    if !s.running_jobs.is_empty() {
        text.push_str(&format!(
            "still running inside systemd: {}\n",
            s.running_jobs.join("; ")
        ));
    } else if s.interrupted {
        text.push_str("no job of orch's is still running inside systemd\n");
    }
    print_stdout(&text)
}

fn cmd_status(g: &Global, d: &Deployment, all_units: bool) -> Result<i32> {
    let members = lifecycle::members(d);
    let targets = targets(g, d)?;
    let home = home_store(g, d)?;
    let limits = crate::health::Limits {
        connect: Duration::from_millis(500),
        attempt: Duration::from_secs(1),
    };
    // Every host is asked at once; one out of reach does not hide the others.
    let (rows, unreachable, maintenance) = runtime()?.block_on(async {
        let conns = Fleet::connect_each(&targets, g.call_timeout).await;
        let mut unreachable = Vec::new();
        let reads = targets.iter().zip(conns).map(|(t, conn)| {
            let mine: Vec<lifecycle::Member> = members
                .iter()
                .filter(|m| m.host == t.name)
                .cloned()
                .collect();
            async move {
                match conn {
                    Ok(sd) => crate::status::status(&sd, &mine, limits)
                        .await
                        .map_err(|e| (t.name.clone(), anyhow::Error::new(e), mine.clone())),
                    Err(e) => Err((t.name.clone(), anyhow::Error::new(e), mine)),
                }
            }
        });
        let mut rows = Vec::new();
        for r in futures_util::future::join_all(reads).await {
            match r {
                Ok(v) => rows.extend(v),
                Err((host, e, mine)) => {
                    rows.extend(crate::status::unreachable(&mine));
                    unreachable.push((host, e));
                }
            }
        }
        rows.sort_by_key(|r| members.iter().position(|m| m.unit == r.unit));
        let maintenance = if unreachable.iter().any(|(h, _)| *h == d.master.host) {
            None
        } else {
            crate::maintenance::read_state(d, &home).await?
        };
        Ok::<_, anyhow::Error>((rows, unreachable, maintenance))
    })?;
    // With every host out of reach there is nothing to show: a plain error.
    if !unreachable.is_empty() && unreachable.len() == targets.len() {
        let (_, e) = unreachable.into_iter().next().expect("not empty");
        return Err(e.context(format!("cannot read the status of {}", d.name)));
    }
    let code = if unreachable.is_empty() {
        exit::OK
    } else {
        exit::FAILURE
    };
    for (host, e) in &unreachable {
        eprintln!("orch: host {host} is unreachable; its units show as unreachable: {e:#}");
    }
    let master_unreachable = unreachable.iter().any(|(h, _)| *h == d.master.host);
    if g.output == Format::Json {
        let unreachable: Vec<serde_json::Value> = unreachable
            .iter()
            .map(|(h, e)| serde_json::json!({ "host": h, "error": format!("{e:#}") }))
            .collect();
        output::json(&serde_json::json!({
            "deployment": d.name,
            "maintenance": maintenance,
            // null above means "not in maintenance" only when this is true.
            "maintenance_known": !master_unreachable,
            "unreachable": unreachable,
            "units": rows,
        }))?;
        return Ok(code);
    }
    let mut text = String::new();
    if let Some(m) = &maintenance {
        text.push_str(&format!(
            "{} is IN MAINTENANCE since {} (reason: {}); {} units to bring back with `orch resume`\n\n",
            d.name,
            m.since_text,
            m.reason,
            m.active.len()
        ));
    } else if master_unreachable {
        // The journal lives on the master's host: without it, say so rather
        // than let "no maintenance line" read as "not in maintenance".
        text.push_str(&format!(
            "maintenance state UNKNOWN: the master's host {} is unreachable\n\n",
            d.master.host
        ));
    }
    // The host column appears when there is more than one host to tell apart.
    let hosts = d.is_multi_host();
    // A terminal too short for a row per unit gets a row per worker kind.
    let kinds: std::collections::HashMap<String, String> = members
        .iter()
        .filter_map(|m| Some((m.unit.clone(), m.kind.clone()?)))
        .collect();
    let lines = text.lines().count() + rows.len() + 2;
    let group = !all_units && std::io::IsTerminal::is_terminal(&std::io::stdout()) && {
        let (height, _) = console::Term::stdout().size();
        lines > height as usize
    };
    text.push_str(&crate::status::table(&rows, hosts, group.then_some(&kinds)));
    if group {
        text.push_str("(workers grouped by kind to fit the terminal; --all-units for every row)\n");
    }
    print_stdout(&text)?;
    Ok(code)
}

/// Prints a maintenance step: a JSON line, or a line on stderr.
fn step_printer(g: &Global) -> impl Fn(&str, &str) + Sync + '_ {
    move |step: &str, detail: &str| match g.output {
        Format::Json => {
            let _ = output::json(
                &serde_json::json!({ "event": "step", "step": step, "detail": detail }),
            );
        }
        Format::Human if !g.quiet => eprintln!("{step}: {detail}"),
        Format::Human => {}
    }
}

fn cmd_stop_for_maintenance(
    g: &Global,
    d: &Deployment,
    timeout: Option<Duration>,
    reason: &str,
    include_database: bool,
) -> Result<i32> {
    check_value_arg("--reason", reason)?;
    let members = lifecycle::members(d);
    let timeout = timeout.unwrap_or_else(|| {
        members
            .iter()
            .map(|m| m.stop_timeout)
            .max()
            .unwrap_or_default()
            + Duration::from_secs(10)
    });
    let notify = step_printer(g);
    let targets = targets(g, d)?;
    let report = runtime()?.block_on(async {
        let fleet = Fleet::connect(&targets, g.call_timeout).await?;
        let opts = crate::maintenance::StopOptions {
            reason,
            timeout,
            include_database,
        };
        Ok::<_, anyhow::Error>(
            crate::maintenance::stop_for_maintenance(d, &fleet, &targets, opts, &notify).await?,
        )
    })?;
    if g.output == Format::Json {
        output::json(&serde_json::json!({ "event": "summary", "report": report }))?;
    } else {
        let mut text = String::new();
        for u in &report.units {
            let killed = if u.killed {
                "  KILLED with SIGKILL"
            } else {
                ""
            };
            let host = if d.is_multi_host() {
                format!("{:<12} ", u.host)
            } else {
                String::new()
            };
            text.push_str(&format!(
                "  {host}{:<50} {:<9} {} processes{killed}\n",
                u.unit, u.active_state, u.processes
            ));
        }
        let mut line = format!(
            "{} units stopped, {} processes left",
            report.units.len() - report.left.len(),
            report
                .units
                .iter()
                .filter(|u| u.processes != usize::MAX)
                .map(|u| u.processes)
                .sum::<usize>()
        );
        if !report.killed.is_empty() {
            line.push_str(&format!("; killed {}", report.killed.join(", ")));
        }
        if let Some(db) = &report.database {
            line.push_str(&format!(
                "; {} {}",
                db.unit,
                if db.active_state == "active" {
                    "still running".to_string()
                } else {
                    db.active_state.clone()
                }
            ));
        }
        text.push_str(&line);
        text.push('\n');
        if report.resumed_operation {
            text.push_str(&format!(
                "in maintenance since {} (reason: {}); state file {}\n",
                report.since,
                report.reason,
                report.state_file.display()
            ));
        }
        if !report.left.is_empty() {
            text.push_str(&format!("NOT PROVEN STOPPED: {}\n", report.left.join(", ")));
        }
        if !(g.quiet && report.ok) {
            print_stdout(&text)?;
        }
    }
    Ok(if report.ok { exit::OK } else { exit::FAILURE })
}

fn cmd_resume(g: &Global, d: &Deployment, opts: lifecycle::Options) -> Result<i32> {
    let notify = step_printer(g);
    let title = output::progress::Title {
        op: "resume".into(),
        ..title(Op::Start, None, &lifecycle::members(d))
    };
    let observer = output::progress::observer(g.output, g.quiet, title);
    let targets = targets(g, d)?;
    let report = runtime()?.block_on(async {
        let fleet = Fleet::connect(&targets, g.call_timeout).await?;
        Ok::<_, anyhow::Error>(
            crate::maintenance::resume(d, &fleet, &targets, opts, observer.clone(), &notify)
                .await?,
        )
    });
    observer.finish();
    let report = report?;
    match &report.summary {
        Some(s) => {
            print_summary(g, s)?;
            Ok(s.exit_code())
        }
        None => {
            if g.output == Format::Json {
                output::json(&serde_json::json!({ "event": "summary", "report": report }))?;
            } else {
                print_stdout(&format!(
                    "{} was not in maintenance; nothing to resume\n",
                    d.name
                ))?;
            }
            Ok(exit::OK)
        }
    }
}

fn check_value_arg(flag: &str, value: &str) -> Result<()> {
    if value.chars().any(char::is_control) {
        return Err(UsageError(format!("{flag} must not contain control characters")).into());
    }
    Ok(())
}

/// The man page, from the same definition as `--help`, with the exit codes.
pub fn man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    writeln!(out, ".SH \"EXIT STATUS\"")?;
    for line in exit::HELP.lines().skip(1) {
        let line = line.trim();
        if let Some((code, text)) = line.split_once(char::is_whitespace) {
            writeln!(out, ".TP\n\\fB{code}\\fR\n{}", text.trim())?;
        }
    }
    man.render_version_section(out)?;
    Ok(())
}

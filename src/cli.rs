//! Command line: the definition (the global flags, then one subcommand per
//! verb, whose flags and code are in `commands/VERB.rs`), the context built
//! once, one dispatch line per verb, and the exit code of an error.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::commands::{self, Ctx, Global};
use crate::error::Error;
use crate::exit;

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

/// The verbs, in `--help` order; each one's text and flags are its `Args`.
#[derive(Debug, Subcommand)]
pub enum Command {
    Render(commands::render::Args),
    Plan(commands::plan::Args),
    Install(commands::install::Args),
    Rollback(commands::rollback::Args),
    Start(commands::start::Args),
    Stop(commands::stop::Args),
    Restart(commands::restart::Args),
    Reload(commands::reload::Args),
    StopForMaintenance(commands::stop_for_maintenance::Args),
    Resume(commands::resume::Args),
    Logs(commands::logs::Args),
    Completions(commands::completions::Args),
    Man(commands::man::Args),
    Status(commands::status::Args),
}

/// Each verb to its file.
fn dispatch(ctx: &Ctx, command: Command) -> Result<i32, Error> {
    use commands::*;
    match command {
        Command::Render(a) => render::run(ctx, a),
        Command::Plan(a) => plan::run(ctx, a),
        Command::Install(a) => install::run(ctx, a),
        Command::Rollback(a) => rollback::run(ctx, a),
        Command::Start(a) => start::run(ctx, a),
        Command::Stop(a) => stop::run(ctx, a),
        Command::Restart(a) => restart::run(ctx, a),
        Command::Reload(a) => reload::run(ctx, a),
        Command::StopForMaintenance(a) => stop_for_maintenance::run(ctx, a),
        Command::Resume(a) => resume::run(ctx, a),
        Command::Logs(a) => logs::run(ctx, a),
        Command::Completions(a) => completions::run(ctx, a),
        Command::Man(a) => man::run(ctx, a),
        Command::Status(a) => status::run(ctx, a),
    }
}

/// Parses arguments, runs the command and returns the process exit code.
pub fn main() -> i32 {
    let (cli, verb) = match parse() {
        Ok(parsed) => parsed,
        Err(e) => return crate::ui::output::command_line(&e),
    };
    let code = run(cli, &verb).unwrap_or_else(|e| {
        crate::ui::output::error(&e);
        e.exit_code()
    });
    crate::tunnel::end();
    crate::fleet::end_children();
    code
}

/// The command line, and the verb's name as typed (`stop-for-maintenance`),
/// which a lock file shows its holder by.
fn parse() -> Result<(Cli, String), clap::Error> {
    let mut definition = Cli::command();
    let mut matches = definition.try_get_matches_from_mut(std::env::args_os())?;
    let verb = matches.subcommand_name().unwrap_or_default().to_string();
    let cli = Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut definition))?;
    Ok((cli, verb))
}

fn run(cli: Cli, verb: &str) -> Result<i32, Error> {
    let ctx = Ctx::new(cli.global, Cli::command)?;
    init_logging(&ctx);
    if let Some(wait) = ctx.lock_wait {
        crate::state::holder::set_wait(wait);
    }
    crate::state::holder::set_command(verb);
    dispatch(&ctx, cli.command)
}

fn init_logging(ctx: &Ctx) {
    let level = match (ctx.quiet, ctx.verbose) {
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
        .with_ansi(ctx.colour)
        .with_writer(|| crate::ui::live::StderrAbove)
        .with_target(false)
        .try_init();
}

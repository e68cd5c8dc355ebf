//! `orch completions SHELL`: made from the same definition as `--help`.

use super::common::print;
use super::Ctx;
use crate::error::Error;
use crate::exit;

/// Print a shell completion script (bash, zsh, fish, elvish, powershell).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32, Error> {
    let mut buf = Vec::new();
    let mut cmd = (ctx.definition)();
    clap_complete::generate(args.shell, &mut cmd, "orch", &mut buf);
    print(&String::from_utf8_lossy(&buf))?;
    Ok(exit::OK)
}

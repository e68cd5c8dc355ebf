//! `completions` and `man`: made from the same definition as `--help`.

use crate::args::Cli;
use crate::error::Error;
use crate::exit;

pub fn completions(shell: clap_complete::Shell) -> Result<i32, Error> {
    let mut buf = Vec::new();
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "orch", &mut buf);
    super::common::print(&String::from_utf8_lossy(&buf))?;
    Ok(exit::OK)
}

pub fn man() -> Result<i32, Error> {
    let mut buf = Vec::new();
    man_page(&mut buf).map_err(Error::Output)?;
    super::common::print(&String::from_utf8_lossy(&buf))?;
    Ok(exit::OK)
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

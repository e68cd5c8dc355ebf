//! `orch man`: the man page, made from the same definition as `--help`,
//! with every command's options and the exit codes.

use super::common::print;
use super::Ctx;
use crate::error::Error;
use crate::exit;

/// Print the man page (roff) to standard output.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(ctx: &Ctx, _: Args) -> Result<i32, Error> {
    let mut buf = Vec::new();
    man_page(&(ctx.definition)(), &mut buf).map_err(Error::Output)?;
    print(&String::from_utf8_lossy(&buf))?;
    Ok(exit::OK)
}

/// Every command in this one page, with its synopsis and options (there
/// is no page per command to point to).
fn commands_section(cmd: &clap::Command, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(out, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("orch {}", sub.get_name());
        writeln!(out, ".SS \"{name}\"")?;
        let sub = sub.clone().display_name(&name).bin_name(&name);
        let man = clap_mangen::Man::new(sub.clone());
        let mut text = Vec::new();
        man.render_synopsis_section(&mut text)?;
        man.render_description_section(&mut text)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut text)?;
        }
        // Sections of their own page become paragraphs of this one.
        let text = String::from_utf8_lossy(&text)
            .replace(".SH SYNOPSIS\n", ".PP\n")
            .replace(".SH DESCRIPTION\n", ".PP\n")
            .replace(".SH OPTIONS\n", ".PP\nOptions:\n");
        write!(out, "{text}")?;
    }
    Ok(())
}

/// The man page, from the same definition as `--help`, with the exit codes.
pub fn man_page(cmd: &clap::Command, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    commands_section(cmd, out)?;
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

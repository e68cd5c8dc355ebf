//! `orch status [--all-units]`: exit 1 when a host is unreachable or the
//! maintenance journal cannot be read.

use std::collections::HashMap;

use super::common::{json, print};
use super::Ctx;
use crate::error::Error;
use crate::exit;
use crate::model::Deployment;
use crate::status::DeploymentStatus;
use crate::ui::output::Format;

/// One row per unit: state, main PID, time since the last change, restarts, health. On a terminal too short for every row, workers are grouped by kind.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Every unit on its own row, even when the table does not fit the terminal
    #[arg(short = 'a', long)]
    all_units: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32, Error> {
    let d = &ctx.installed_deployment()?;
    let Some(s) = crate::ops::status(d, &ctx.access)? else {
        eprintln!("orch: status interrupted; nothing was changed");
        return Ok(exit::INTERRUPTED);
    };
    for (host, e) in &s.unreachable {
        eprintln!("orch: host {host} is unreachable; its units show as unreachable: {e}");
    }
    if ctx.output == Format::Json {
        let unreachable: Vec<serde_json::Value> = s
            .unreachable
            .iter()
            .map(|(h, e)| serde_json::json!({ "host": h, "error": e.to_string() }))
            .collect();
        json(&serde_json::json!({
            "deployment": d.name,
            "maintenance": s.maintenance,
            // null above means "not in maintenance" only when this is true.
            "maintenance_known": s.maintenance_known,
            "maintenance_unreadable": s.maintenance_unreadable,
            "unreachable": unreachable,
            "generation": s.generation,
            "generations_kept": s.generations_kept,
            "units": s.rows,
        }))?;
    } else {
        print(&human(d, &s, args.all_units))?;
    }
    Ok(
        if s.unreachable.is_empty() && s.maintenance_unreadable.is_none() {
            exit::OK
        } else {
            exit::FAILURE
        },
    )
}

fn human(d: &Deployment, s: &DeploymentStatus, all_units: bool) -> String {
    let mut text = String::new();
    if let Some(m) = &s.maintenance {
        text.push_str(&format!(
            "{} is IN MAINTENANCE since {} (reason: {}); {} units to bring back with `orch resume`\n\n",
            d.name,
            m.since_text,
            m.reason,
            m.active.len()
        ));
    } else if let Some(why) = &s.maintenance_unreadable {
        text.push_str(&format!(
            "{} is IN MAINTENANCE, but its journal is UNREADABLE: {why}\n\n",
            d.name
        ));
    } else if !s.maintenance_known {
        // The journal lives on the master's host: without it, say so rather
        // than let "no maintenance line" read as "not in maintenance".
        text.push_str(&format!(
            "maintenance state UNKNOWN: the master's host {} is unreachable\n\n",
            d.master.host
        ));
    }
    // A terminal too short for a row per unit gets a row per worker kind.
    let kinds: HashMap<String, String> = crate::members::members(d)
        .into_iter()
        .filter_map(|m| Some((m.unit, m.kind?)))
        .collect();
    let lines = text.lines().count() + s.rows.len() + 2;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (height, width) = console::Term::stdout().size();
    let group = !all_units && terminal && lines > height as usize;
    // The host column appears when there is more than one host to tell apart.
    let table = crate::ui::status::table(
        &s.rows,
        d.is_multi_host(),
        group.then_some(&kinds),
        terminal.then_some(width as usize),
    );
    text.push_str(&table);
    if group {
        text.push_str("(workers grouped by kind to fit the terminal; --all-units for every row)\n");
    }
    text.push_str(&generation(s));
    text
}

/// Three short lines rather than one (which wraps at 80 columns):
/// `unit files: generation 3 (install), installed T`, `  from PATH
/// (sha256 …)`, `  kept for rollback: 1, 2`.
fn generation(s: &DeploymentStatus) -> String {
    let Some(g) = &s.generation else {
        return String::new();
    };
    let older: Vec<String> = s
        .generations_kept
        .iter()
        .filter(|&&n| n != g.number)
        .map(u64::to_string)
        .collect();
    format!(
        "\nunit files: generation {} ({}), installed {}\n  from {} (sha256 {})\n  kept for rollback: {}\n",
        g.number,
        g.by,
        g.installed_at,
        g.config_path.display(),
        &g.config_sha256[..g.config_sha256.len().min(12)],
        if older.is_empty() { "none".to_string() } else { older.join(", ") },
    )
}

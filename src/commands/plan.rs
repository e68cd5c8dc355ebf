//! `orch plan`: exit 4 when changes are pending.

use super::common::{json, print};
use super::Ctx;
use crate::error::Error;
use crate::exit;
use crate::model::Deployment;
use crate::ops::InstalledFrom;
use crate::plan::{Action, Plan, PlannedUnit};
use crate::ui::output::Format;

/// Compare the rendered units with the unit directory. Exit 0: nothing to do; 4: changes pending.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Plan `orch rollback` instead: a kept generation against the unit directory
    #[arg(long)]
    rollback: bool,
    /// With --rollback: generation N (see `orch status`) instead of the one before the installed one
    #[arg(long, value_name = "N", requires = "rollback")]
    to: Option<u64>,
    /// Also print a unified diff of each unit that would change (installed → rendered)
    #[arg(long)]
    diff: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32, Error> {
    let d = &ctx.deployment(InstalledFrom::Hosts)?;
    match args.rollback {
        true => rollback(ctx, d, args.to, args.diff),
        false => install(ctx, d, args.diff),
    }
}

/// `orch plan`: what `orch install` would change.
fn install(ctx: &Ctx, d: &Deployment, diff: bool) -> Result<i32, Error> {
    let plans = crate::ops::plan(d, &ctx.access)?;
    let changes = plans.iter().any(Plan::has_changes);
    match ctx.output {
        Format::Json => json(&serde_json::json!({
            "deployment": d.name,
            "unit_dir": d.unit_dir,
            "changes": changes,
            "units": plans.iter().flat_map(|p| &p.units).map(unit_json).collect::<Vec<_>>(),
        }))?,
        Format::Human => {
            let mut text: String = plans.iter().map(|p| human(d, p)).collect();
            if diff {
                text.push_str(&plans.iter().map(crate::ui::diff::plan).collect::<String>());
            }
            print(&text)?
        }
    }
    Ok(if changes {
        exit::CHANGES_PENDING
    } else {
        exit::OK
    })
}

/// `orch plan --rollback [--to N]`: what `orch rollback` would change,
/// under a line naming the generation; exit 4 when changes are pending.
fn rollback(ctx: &Ctx, d: &Deployment, to: Option<u64>, diff: bool) -> Result<i32, Error> {
    let (plans, gen) = crate::ops::plan_rollback(d, &ctx.access, to)?;
    let changes = plans.iter().any(Plan::has_changes);
    match ctx.output {
        Format::Json => json(&serde_json::json!({
            "deployment": d.name,
            "unit_dir": d.unit_dir,
            "changes": changes,
            "rollback_to": gen.summary(),
            "units": plans.iter().flat_map(|p| &p.units).map(unit_json).collect::<Vec<_>>(),
        }))?,
        Format::Human => {
            let head = format!(
                "rollback to generation {} (installed {} by {} from {}, sha256 {})\n",
                gen.number,
                gen.installed_at,
                gen.by,
                gen.config_path.display(),
                gen.config_sha256,
            );
            let mut text = head + &plans.iter().map(|p| human(d, p)).collect::<String>();
            if diff {
                text.push_str(&plans.iter().map(crate::ui::diff::plan).collect::<String>());
            }
            print(&text)?
        }
    }
    Ok(if changes {
        exit::CHANGES_PENDING
    } else {
        exit::OK
    })
}

/// A unit of the JSON plan; a change also carries the file's text before
/// (`installed`, absent for a new file) and after (`content`, absent for a
/// removal), so that a caller (the Ansible module's diff mode) can show it.
fn unit_json(u: &PlannedUnit) -> serde_json::Value {
    let mut v = serde_json::to_value(u).unwrap_or_default();
    if u.action.is_change() {
        if let Some(obj) = v.as_object_mut() {
            if let Some(c) = &u.content {
                obj.insert("content".into(), c.clone().into());
            }
            if let Some(i) = &u.installed {
                obj.insert("installed".into(), i.clone().into());
            }
        }
    }
    v
}

fn human(d: &Deployment, plan: &Plan) -> String {
    let mut text = format!(
        "plan for {} in {}{}: {} to create,{} {} to update, {} to remove, {} drifted, {} unchanged\n",
        plan.deployment,
        plan.unit_dir.display(),
        host_suffix(d, &plan.host),
        plan.count(Action::Create),
        // Named only when there are some: renames are rare.
        match plan.count(Action::Rename) {
            0 => String::new(),
            n => format!(" {n} to rename,"),
        },
        plan.count(Action::Update),
        plan.count(Action::Remove),
        plan.count(Action::Drift),
        plan.count(Action::Unchanged),
    );
    for u in &plan.units {
        match &u.renamed_from {
            Some(old) => text.push_str(&format!("  {:<10} {old} -> {}", u.action.as_str(), u.unit)),
            None => text.push_str(&format!("  {:<10} {}", u.label(u.action.as_str()), u.unit)),
        }
        if let Some(r) = &u.reason {
            text.push_str(&format!("  ({r})"));
        }
        if u.runtime_mask {
            text.push_str("  (masked at runtime: it will not start until the mask goes)");
        }
        text.push('\n');
    }
    text
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

//! `plan --diff`: a unified diff per unit that would change, from the file
//! as installed to the file as rendered (what `install` would write).

use crate::plan::{Plan, PlannedUnit};

/// The diffs of every change in `plan`, one after another.
pub fn plan(plan: &Plan) -> String {
    plan.units
        .iter()
        .filter(|u| u.action.is_change())
        .map(|u| unit(plan, u))
        .collect()
}

/// One unit's diff; a new file is diffed against nothing (`/dev/null`), a
/// removed one against nothing after.
fn unit(plan: &Plan, u: &PlannedUnit) -> String {
    let path = &u.path;
    let old_name = match &u.renamed_from {
        Some(old) => plan.unit_dir.join(old).display().to_string(),
        None => path.display().to_string(),
    };
    let before = u.installed.as_deref().unwrap_or("");
    let after = u.content.as_deref().unwrap_or("");
    let (from, to) = match (u.installed.is_some(), u.content.is_some()) {
        (false, _) => ("/dev/null".to_string(), path.display().to_string()),
        (true, false) => (old_name, "/dev/null".to_string()),
        (true, true) => (old_name, path.display().to_string()),
    };
    let diff = similar::TextDiff::from_lines(before, after);
    let mut text = diff
        .unified_diff()
        .context_radius(3)
        .header(&from, &to)
        .to_string();
    if text.is_empty() {
        // Same bytes (a rename of identical content, or only the mode).
        text = format!("--- {from}\n+++ {to}\n (content unchanged)\n");
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

//! Plan: what installing the rendered units would change in the unit directory.
//!
//! Reads only; [`crate::install`] carries a plan out.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::render::{read_marker, unit_path, RenderedUnit};
use crate::store::{Entry, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// No file yet.
    Create,
    /// No file yet, and it replaces an installed worker unit of the same
    /// kind and rank whose name changed (`naming` changed): that one is
    /// removed in the same install (`renamed_from`).
    Rename,
    /// orch's own file, with other content.
    Update,
    /// Same bytes on disk.
    Unchanged,
    /// A file carrying this deployment's marker that is no longer rendered.
    Remove,
    /// A file orch would write that was edited by hand, is not orch's or
    /// is not a regular file; or a no-longer-rendered file carrying this
    /// deployment's marker whose hash does not match (`content` is `None`):
    /// kept unless `--force`, which overwrites the first and removes the second.
    Drift,
}

impl PlannedUnit {
    /// `update (restart needed)` / `update (no restart)`, else the action.
    pub fn label(&self, verb: &str) -> String {
        match self.restart_needed {
            Some(true) => format!("{verb} (restart needed)"),
            Some(false) => format!("{verb} (no restart)"),
            None => verb.to_string(),
        }
    }
}

impl Action {
    pub fn is_change(self) -> bool {
        !matches!(self, Action::Unchanged)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Rename => "rename",
            Action::Update => "update",
            Action::Unchanged => "unchanged",
            Action::Remove => "remove",
            Action::Drift => "drift",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedUnit {
    pub unit: String,
    pub host: String,
    pub path: PathBuf,
    pub action: Action,
    /// With [`Action::Rename`], the installed unit it replaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With [`Action::Update`]: whether the change needs the unit restarted
    /// (see [`crate::restart`]), or only systemd's reload of its files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_needed: Option<bool>,
    /// A unit to create that a runtime mask (a `/dev/null` link in the
    /// deployment's runtime folder, left by a maintenance still on or by
    /// hand) would keep from starting.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub runtime_mask: bool,
    /// What would be written (absent for removals).
    #[serde(skip)]
    pub content: Option<String>,
    /// What the file holds now (lossy UTF-8), when it exists and was read.
    #[serde(skip)]
    pub installed: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub deployment: String,
    pub host: String,
    pub unit_dir: PathBuf,
    pub units: Vec<PlannedUnit>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.units.iter().any(|u| u.action.is_change())
    }
    pub fn count(&self, a: Action) -> usize {
        self.units.iter().filter(|u| u.action == a).count()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    // The local host's name is not worth a word; a remote store's error
    // names its host already ("on box: …"), so "local" would only confuse.
    #[error("cannot read unit directory {}{}: {cause}", path.display(), on_host(host))]
    Read {
        host: String,
        path: PathBuf,
        cause: StoreError,
    },
    #[error(transparent)]
    Path(#[from] crate::render::UnitPathError),
}

fn on_host(host: &str) -> String {
    match host {
        crate::model::LOCAL_HOST => String::new(),
        h => format!(" on host {h}"),
    }
}

/// Compares the units rendered for `host` with what is in `unit_dir` there.
pub async fn plan(
    deployment: &str,
    host: &str,
    store: &Store,
    unit_dir: &Path,
    rendered: &[&RenderedUnit],
) -> Result<Plan, PlanError> {
    let entries = store
        .list_services(unit_dir)
        .await
        .map_err(|cause| PlanError::Read {
            host: host.to_string(),
            path: unit_dir.to_path_buf(),
            cause,
        })?;
    // Looked up by name once per unit: a linear search was quadratic in the
    // unit count (thousands of workers).
    let by_name: HashMap<&str, &Entry> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let rendered_names: HashSet<&str> = rendered.iter().map(|r| r.unit.as_str()).collect();
    let mut units = Vec::with_capacity(rendered.len());
    for r in rendered {
        let path = unit_path(unit_dir, &r.unit).map_err(PlanError::Path)?;
        let existing = by_name.get(r.unit.as_str()).copied();
        let (action, reason) = compare(deployment, &path, r, existing);
        let installed = existing
            .and_then(|e| e.content.as_ref().ok())
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let restart_needed = match (action, &installed) {
            (Action::Update, Some(old)) => Some(crate::restart::needs_restart(old, &r.content)),
            _ => None,
        };
        units.push(PlannedUnit {
            unit: r.unit.clone(),
            host: host.to_string(),
            path,
            action,
            renamed_from: None,
            reason,
            restart_needed,
            runtime_mask: false,
            content: Some(r.content.clone()),
            installed,
        });
    }
    let mut stale = Vec::new();
    for e in &entries {
        if rendered_names.contains(e.name.as_str()) {
            continue;
        }
        let path = unit_path(unit_dir, &e.name).map_err(PlanError::Path)?;
        if let Some(u) = stale_unit(deployment, host, path, e) {
            stale.push(u);
        }
    }
    stale.sort_by(|a, b| a.unit.cmp(&b.unit));
    units.extend(stale);
    Ok(Plan {
        deployment: deployment.to_string(),
        host: host.to_string(),
        unit_dir: unit_dir.to_path_buf(),
        units,
    })
}

/// What installing `r` over the `existing` entry of its name would do.
fn compare(
    deployment: &str,
    path: &Path,
    r: &RenderedUnit,
    existing: Option<&Entry>,
) -> (Action, Option<String>) {
    let bytes = match existing.map(|e| &e.content) {
        None => return (Action::Create, None),
        Some(Err(why)) => {
            return (
                Action::Drift,
                Some(format!("{}: {why}; orch did not read it", path.display())),
            )
        }
        Some(Ok(bytes)) => bytes,
    };
    let existing = String::from_utf8_lossy(bytes);
    if existing == r.content {
        return (Action::Unchanged, None);
    }
    let m = read_marker(&existing);
    match (m.deployment.as_deref(), m.intact) {
        (Some(d), Some(true)) if d == deployment => (Action::Update, None),
        (Some(d), _) if d != deployment => (
            Action::Drift,
            Some(format!("belongs to orch deployment `{d}`")),
        ),
        (Some(_), _) => (
            Action::Drift,
            Some("edited by hand since orch wrote it".to_string()),
        ),
        (None, _) => (Action::Drift, Some("not written by orch".to_string())),
    }
}

/// A file no longer rendered for this host (removed from the configuration,
/// or moved to another host) that carries this deployment's marker: removed
/// when orch's hash header proves orch wrote it as it is, drift otherwise
/// (a hand-made copy of an orch unit is not orch's to stop or delete).
/// Symlinks (`*.wants/` links, aliases, masks) are systemd's; a foreign
/// irregular file is left alone, with a warning.
fn stale_unit(deployment: &str, host: &str, path: PathBuf, e: &Entry) -> Option<PlannedUnit> {
    if e.symlink {
        return None;
    }
    let bytes = match &e.content {
        Ok(b) => b,
        Err(why) => {
            tracing::warn!(file = %path.display(), %host, "skipped: {why}");
            return None;
        }
    };
    let text = String::from_utf8_lossy(bytes);
    let m = read_marker(&text);
    if m.deployment.as_deref() != Some(deployment) {
        return None;
    }
    let (action, reason) = if m.intact == Some(true) {
        (
            Action::Remove,
            "no longer in the configuration for this host".to_string(),
        )
    } else {
        (
            Action::Drift,
            format!(
                "carries X-Orch-Deployment={deployment} but {}; \
                 kept (not stopped, disabled or removed) unless --force",
                if m.intact.is_none() {
                    "has no orch hash header"
                } else {
                    "was edited by hand since orch wrote it"
                }
            ),
        )
    };
    Some(PlannedUnit {
        unit: e.name.clone(),
        host: host.to_string(),
        path,
        action,
        renamed_from: None,
        reason: Some(reason),
        restart_needed: None,
        runtime_mask: false,
        content: None,
        installed: Some(text.into_owned()),
    })
}

/// Which units to create a plan shows as renames of installed ones.
#[derive(Debug, Clone, Copy)]
pub enum Renames<'a> {
    /// The configuration's: each worker's `previous` (install).
    Configured,
    /// Whole unit files put back (rollback): a worker unit to create renames
    /// the one to remove of the same kind and rank under the other naming,
    /// as an install of their configuration would (see
    /// [`crate::model::renames_by_name`]); `kinds` are the worker kinds to
    /// look for.
    ByName { kinds: &'a [String] },
}

/// The plan of every target host, read at once.
pub async fn plan_all(
    d: &crate::model::Deployment,
    rendered: &[RenderedUnit],
    targets: &[crate::fleet::HostAccess],
    renames: Renames<'_>,
) -> Result<Vec<Plan>, PlanError> {
    let plans = futures_util::future::join_all(targets.iter().map(|t| {
        let mine: Vec<&RenderedUnit> = rendered.iter().filter(|r| r.host == t.name).collect();
        async move { plan(&d.name, &t.name, &t.store, &d.unit_dir, &mine).await }
    }))
    .await;
    let mut plans = plans.into_iter().collect::<Result<Vec<_>, _>>()?;
    let pairs = match renames {
        Renames::Configured => d
            .workers
            .iter()
            .filter_map(|w| Some((w.previous.clone()?, w.service.unit.clone())))
            .collect(),
        Renames::ByName { kinds } => renamed_files(&d.name, kinds, &plans),
    };
    mark_renames(&mut plans, &pairs);
    for (plan, t) in plans.iter_mut().zip(targets) {
        mark_runtime_masks(plan, &t.store, &d.runtime_dir).await;
    }
    Ok(plans)
}

/// The renames among the plans' creations and removals (any host).
fn renamed_files(deployment: &str, kinds: &[String], plans: &[Plan]) -> Vec<(String, String)> {
    let of = |a: Action| -> Vec<&str> {
        plans
            .iter()
            .flat_map(|p| &p.units)
            .filter(|u| u.action == a)
            .map(|u| u.unit.as_str())
            .collect()
    };
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    crate::model::renames_by_name(deployment, &kinds, &of(Action::Create), &of(Action::Remove))
}

/// Marks (and warns about) each unit to create that is masked in the
/// runtime folder: it would be written, then refuse to start until the mask
/// goes. A folder that cannot be read is only logged: the mask is a hint.
async fn mark_runtime_masks(plan: &mut Plan, store: &crate::store::Store, runtime: &Path) {
    let entries = match store.list_services(runtime).await {
        Ok(e) => e,
        Err(e) => {
            tracing::debug!(dir = %runtime.display(), "runtime folder not read: {e}");
            return;
        }
    };
    // A mask is a link whose target is not a regular file (`/dev/null`).
    let masked: HashSet<&str> = entries
        .iter()
        .filter(|e| e.symlink && e.content.is_err())
        .map(|e| e.name.as_str())
        .collect();
    for u in &mut plan.units {
        if matches!(u.action, Action::Create | Action::Rename) && masked.contains(u.unit.as_str()) {
            u.runtime_mask = true;
            tracing::warn!(
                unit = %u.unit,
                host = %plan.host,
                "{} is masked in {}: it will not start until the mask goes (`orch resume` if a maintenance is on, or remove the link)",
                u.unit,
                runtime.display()
            );
        }
    }
}

/// Shows a worker whose name changed as what it is: its new unit is a
/// rename of the old one (which is still removed, saying why), not a
/// create beside an unrelated removal. Only when the old unit is orch's to
/// remove (a hand-edited one stays drift, and the new one a create).
/// `pairs` are `(old, new)` unit names.
fn mark_renames(plans: &mut [Plan], pairs: &[(String, String)]) {
    // (plan, unit) positions by (name, action), built once: a search of
    // every plan per worker was quadratic in the unit count.
    let mut at: HashMap<(&str, Action), (usize, usize)> = HashMap::new();
    for (pi, p) in plans.iter().enumerate() {
        for (ui, u) in p.units.iter().enumerate() {
            if matches!(u.action, Action::Remove | Action::Create) {
                at.entry((u.unit.as_str(), u.action)).or_insert((pi, ui));
            }
        }
    }
    let mut changes = Vec::new();
    for (old, new) in pairs {
        let Some(&removed) = at.get(&(old.as_str(), Action::Remove)) else {
            continue;
        };
        let created = at.get(&(new.as_str(), Action::Create)).copied();
        changes.push((removed, created, old, new));
    }
    for ((rp, ru), created, old, new) in changes {
        plans[rp].units[ru].reason = Some(format!("renamed to {new}"));
        if let Some((cp, cu)) = created {
            let created = &mut plans[cp].units[cu];
            created.action = Action::Rename;
            created.renamed_from = Some(old.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;
    use crate::render::hash;

    /// A unit file as orch writes it: marker, then the hash of the body.
    fn orch_file(deployment: &str, body: &str) -> String {
        let body = format!("[Unit]\nX-Orch-Deployment={deployment}\n{body}");
        format!("# orch-hash: sha256:{}\n{body}", hash(&body))
    }

    fn rendered(unit: &str, content: &str) -> RenderedUnit {
        RenderedUnit {
            unit: unit.into(),
            host: "local".into(),
            role: Role::Worker,
            template: "t".into(),
            content: content.into(),
        }
    }

    #[tokio::test]
    async fn each_file_gets_its_action_and_stale_ones_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let new = orch_file("fx", "[Service]\nExecStart=/new\n");
        let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();
        write("same.service", &new);
        write(
            "mine.service",
            &orch_file("fx", "[Service]\nExecStart=/old\n"),
        );
        write(
            "edited.service",
            &orch_file("fx", "").replace("[Unit]", "[Unit]\nA=b"),
        );
        write("theirs.service", &orch_file("other", ""));
        write("hand.service", "[Unit]\n");
        write("z-stale.service", &orch_file("fx", ""));
        write("a-stale.service", &orch_file("fx", ""));
        write("foreign.service", &orch_file("other", ""));
        let units: Vec<RenderedUnit> = ["create", "same", "mine", "edited", "theirs", "hand"]
            .iter()
            .map(|u| rendered(&format!("{u}.service"), &new))
            .collect();
        let refs: Vec<&RenderedUnit> = units.iter().collect();
        let p = plan("fx", "local", &Store::local(), d, &refs)
            .await
            .unwrap();
        let got: Vec<(&str, Action, Option<&str>)> = p
            .units
            .iter()
            .map(|u| (u.unit.as_str(), u.action, u.reason.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("create.service", Action::Create, None),
                ("same.service", Action::Unchanged, None),
                ("mine.service", Action::Update, None),
                (
                    "edited.service",
                    Action::Drift,
                    Some("edited by hand since orch wrote it")
                ),
                (
                    "theirs.service",
                    Action::Drift,
                    Some("belongs to orch deployment `other`")
                ),
                ("hand.service", Action::Drift, Some("not written by orch")),
                (
                    "a-stale.service",
                    Action::Remove,
                    Some("no longer in the configuration for this host")
                ),
                (
                    "z-stale.service",
                    Action::Remove,
                    Some("no longer in the configuration for this host")
                ),
            ]
        );
        assert_eq!(p.units[0].path, d.join("create.service"));
        assert_eq!(p.units[6].path, d.join("a-stale.service"));
        assert!(p.units[6].content.is_none() && p.units[0].content.is_some());
        assert!(p.has_changes());
        assert_eq!(p.count(Action::Drift), 3);
        assert_eq!(p.count(Action::Remove), 2);
        assert_eq!(p.count(Action::Unchanged), 1);

        // Only what is the same on disk: no change.
        let only = tempfile::tempdir().unwrap();
        std::fs::write(only.path().join("same.service"), &new).unwrap();
        let same = [&units[1]];
        let p = plan("fx", "local", &Store::local(), only.path(), &same)
            .await
            .unwrap();
        assert!(!p.has_changes(), "{:?}", p.units);
        assert_eq!(p.count(Action::Unchanged), 1);
    }

    #[tokio::test]
    async fn every_target_is_planned_with_its_own_units() {
        let dir = tempfile::tempdir().unwrap();
        let source = crate::config::Source {
            path: "/etc/orch/orch.toml".into(),
            text: "[deployment]\nname = \"fx\"\n[master]\nexec_start = \"/bin/m\"\n".into(),
        };
        let d = crate::model::Deployment::from_source(&source, Some(dir.path())).unwrap();
        let mut on_b = rendered("w.service", "x");
        on_b.host = "b".into();
        let units = [rendered("m.service", "x"), on_b];
        let target = |name: &str| crate::fleet::HostAccess {
            name: name.into(),
            bus: crate::systemd::Bus::System,
            store: Store::local(),
            private: None,
        };
        let plans = plan_all(
            &d,
            &units,
            &[target("local"), target("b")],
            Renames::Configured,
        )
        .await
        .unwrap();
        let got: Vec<(&str, Vec<&str>)> = plans
            .iter()
            .map(|p| {
                (
                    p.host.as_str(),
                    p.units.iter().map(|u| u.unit.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [("local", vec!["m.service"]), ("b", vec!["w.service"])]
        );
        assert!(plans
            .iter()
            .all(|p| p.deployment == "fx" && p.unit_dir == dir.path()));
    }

    #[test]
    fn actions_name_themselves_and_only_unchanged_is_no_change() {
        let all = [
            (Action::Create, "create"),
            (Action::Update, "update"),
            (Action::Unchanged, "unchanged"),
            (Action::Remove, "remove"),
            (Action::Drift, "drift"),
        ];
        for (a, name) in all {
            assert_eq!(a.as_str(), name);
            assert_eq!(a.is_change(), a != Action::Unchanged, "{name}");
        }
    }

    #[tokio::test]
    async fn the_slice_is_planned_and_removed_like_a_service() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let slice = orch_file("fx", "[Slice]\n");
        std::fs::write(d.join("fx.slice"), &slice).unwrap();
        std::fs::write(d.join("other.slice"), orch_file("other", "[Slice]\n")).unwrap();
        std::fs::write(d.join("fx.socket"), orch_file("fx", "[Socket]\n")).unwrap();
        // Still rendered: unchanged.
        let mut r = rendered("fx.slice", &slice);
        r.role = Role::Slice;
        let p = plan("fx", "local", &Store::local(), d, &[&r])
            .await
            .unwrap();
        let got: Vec<(&str, Action)> = p
            .units
            .iter()
            .map(|u| (u.unit.as_str(), u.action))
            .collect();
        assert_eq!(got, [("fx.slice", Action::Unchanged)]);
        // No unit left on the host: the slice is stale, and only this deployment's.
        let p = plan("fx", "local", &Store::local(), d, &[]).await.unwrap();
        let got: Vec<(&str, Action)> = p
            .units
            .iter()
            .map(|u| (u.unit.as_str(), u.action))
            .collect();
        assert_eq!(got, [("fx.slice", Action::Remove)]);
    }
}

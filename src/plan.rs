//! Plan: what installing the rendered units would change in the unit directory.
//!
//! Reads only; [`crate::install`] carries a plan out.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::render::{read_marker, unit_path, RenderedUnit};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// No file yet.
    Create,
    /// orch's own file, with other content.
    Update,
    /// Same bytes on disk.
    Unchanged,
    /// A file carrying this deployment's marker that is no longer rendered.
    Remove,
    /// A file orch would write that was edited by hand or is not orch's:
    /// kept unless `--force`.
    Drift,
}

impl Action {
    pub fn is_change(self) -> bool {
        !matches!(self, Action::Unchanged)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What would be written (absent for removals).
    #[serde(skip)]
    pub content: Option<String>,
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
    #[error("cannot read unit directory {} on host {host}: {cause}", path.display())]
    Read {
        host: String,
        path: PathBuf,
        cause: StoreError,
    },
    #[error(transparent)]
    Path(#[from] crate::render::UnitPathError),
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
    let text = |b: &Vec<u8>| String::from_utf8_lossy(b).into_owned();
    let mut units = Vec::with_capacity(rendered.len());
    for r in rendered {
        let path = unit_path(unit_dir, &r.unit).map_err(PlanError::Path)?;
        let existing = entries
            .iter()
            .find(|e| e.name == r.unit)
            .and_then(|e| e.content.as_ref())
            .map(text);
        let (action, reason) = match existing {
            None => (Action::Create, None),
            Some(existing) if existing == r.content => (Action::Unchanged, None),
            Some(existing) => {
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
        };
        units.push(PlannedUnit {
            unit: r.unit.clone(),
            host: host.to_string(),
            path,
            action,
            reason,
            content: Some(r.content.clone()),
        });
    }

    // Stale units: files that carry this deployment's marker but are no
    // longer rendered for this host (removed, or moved to another host).
    // Only regular files: `*.wants/` folders and enablement symlinks are systemd's.
    let mut stale = Vec::new();
    for e in &entries {
        if !e.regular || rendered.iter().any(|r| r.unit == e.name) {
            continue;
        }
        let Some(content) = e.content.as_ref().map(text) else {
            continue;
        };
        if read_marker(&content).deployment.as_deref() == Some(deployment) {
            stale.push(PlannedUnit {
                unit: e.name.clone(),
                host: host.to_string(),
                path: unit_path(unit_dir, &e.name).map_err(PlanError::Path)?,
                action: Action::Remove,
                reason: Some("no longer in the configuration for this host".into()),
                content: None,
            });
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

/// The plan of every target host, read at once.
pub async fn plan_all(
    d: &crate::model::Deployment,
    rendered: &[RenderedUnit],
    targets: &[crate::fleet::Target],
) -> Result<Vec<Plan>, PlanError> {
    let plans = futures_util::future::join_all(targets.iter().map(|t| {
        let mine: Vec<&RenderedUnit> = rendered.iter().filter(|r| r.host == t.name).collect();
        async move { plan(&d.name, &t.name, &t.store, &d.unit_dir, &mine).await }
    }))
    .await;
    plans.into_iter().collect()
}

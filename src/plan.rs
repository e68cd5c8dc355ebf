//! Plan: what installing the rendered units would change in the unit directory.
//!
//! Reads only; [`crate::install`] carries a plan out.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::render::{read_marker, unit_path, RenderedUnit};

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
    #[error("cannot read unit directory {}: {cause}", path.display())]
    ReadDir {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot read {}: {cause}", path.display())]
    ReadFile {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{0}")]
    Path(String),
}

/// Compares `rendered` with what is in `unit_dir`.
pub fn plan(
    deployment: &str,
    unit_dir: &Path,
    rendered: &[RenderedUnit],
) -> Result<Plan, PlanError> {
    let mut units = Vec::with_capacity(rendered.len());
    for r in rendered {
        let path = unit_path(unit_dir, &r.unit).map_err(PlanError::Path)?;
        let (action, reason) = match read_optional(&path)? {
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
            path,
            action,
            reason,
            content: Some(r.content.clone()),
        });
    }

    // Stale units: files that carry this deployment's marker but are no longer rendered.
    let entries = match std::fs::read_dir(unit_dir) {
        Ok(e) => Some(e),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(cause) => {
            return Err(PlanError::ReadDir {
                path: unit_dir.to_path_buf(),
                cause,
            })
        }
    };
    let mut stale = Vec::new();
    for entry in entries.into_iter().flatten() {
        let entry = entry.map_err(|cause| PlanError::ReadDir {
            path: unit_dir.to_path_buf(),
            cause,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Only regular files: `*.wants/` folders and enablement symlinks are systemd's.
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if !is_file || !name.ends_with(".service") || rendered.iter().any(|r| r.unit == name) {
            continue;
        }
        let path = entry.path();
        let Some(text) = read_optional(&path)? else {
            continue;
        };
        if read_marker(&text).deployment.as_deref() == Some(deployment) {
            stale.push(PlannedUnit {
                unit: name,
                path,
                action: Action::Remove,
                reason: Some("no longer in the configuration".into()),
                content: None,
            });
        }
    }
    stale.sort_by(|a, b| a.unit.cmp(&b.unit));
    units.extend(stale);
    Ok(Plan {
        deployment: deployment.to_string(),
        unit_dir: unit_dir.to_path_buf(),
        units,
    })
}

fn read_optional(path: &Path) -> Result<Option<String>, PlanError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(cause) => Err(PlanError::ReadFile {
            path: path.to_path_buf(),
            cause,
        }),
    }
}

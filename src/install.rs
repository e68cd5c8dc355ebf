//! Install: carry out a [`Plan`]. The only stage of `orch install` with side
//! effects.
//!
//! Files are written atomically (temporary file in the same folder, fsync,
//! rename, fsync of the folder); unchanged files are never touched; systemd is
//! reloaded only when something changed.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::model::Deployment;
use crate::plan::{Action, Plan};
use crate::systemd::{actions, JobWatcher, Systemd, SystemdError};

const TMP_PREFIX: &str = ".orch-";
const TMP_SUFFIX: &str = ".tmp";

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub dry_run: bool,
    pub force: bool,
    /// The deployment is stopped for maintenance: its units are masked, so
    /// systemd refuses to enable the master; enabling waits for a later install.
    pub in_maintenance: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstalledUnit {
    pub unit: String,
    pub action: Action,
    pub changed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub deployment: String,
    pub dry_run: bool,
    pub changed: bool,
    pub reloaded: bool,
    /// Whether enabling the master changed anything.
    pub enabled: bool,
    /// Why the master was not enabled (in maintenance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_skipped: Option<String>,
    pub units: Vec<InstalledUnit>,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{} edited by hand or not written by orch; nothing was changed. Review with `orch plan`, then rerun with --force to overwrite:\n{}",
        if .0.len() == 1 { "1 unit file was" } else { "unit files were" },
        .0.iter().map(|(u, r)| format!("  {u}: {r}")).collect::<Vec<_>>().join("\n"))]
    Drift(Vec<(String, String)>),
    #[error("cannot write {}: {cause}", path.display())]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot remove {}: {cause}", path.display())]
    Remove {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Systemd(#[from] SystemdError),
}

/// Carries out `plan`. With `dry_run`, reports what would change and touches nothing.
pub async fn install(
    d: &Deployment,
    plan: &Plan,
    sd: Option<&Systemd>,
    opts: Options,
) -> Result<Report, InstallError> {
    let drift: Vec<_> = plan
        .units
        .iter()
        .filter(|u| u.action == Action::Drift)
        .map(|u| (u.unit.clone(), u.reason.clone().unwrap_or_default()))
        .collect();
    if !drift.is_empty() && !opts.force {
        return Err(InstallError::Drift(drift));
    }
    let mut report = Report {
        deployment: d.name.clone(),
        dry_run: opts.dry_run,
        changed: false,
        reloaded: false,
        enabled: false,
        enable_skipped: None,
        units: plan
            .units
            .iter()
            .map(|u| InstalledUnit {
                unit: u.unit.clone(),
                action: u.action,
                changed: u.action.is_change(),
                reason: u.reason.clone(),
            })
            .collect(),
    };
    if opts.dry_run {
        report.changed = plan.has_changes();
        return Ok(report);
    }
    let sd = sd.expect("install without --dry-run needs a systemd connection");
    let mut needed = vec![actions::MANAGE_UNIT_FILES, actions::RELOAD_DAEMON];
    if plan.count(Action::Remove) > 0 {
        needed.push(actions::MANAGE_UNITS);
    }
    sd.preflight(&format!("install {}", d.name), &needed)
        .await?;

    std::fs::create_dir_all(&plan.unit_dir).map_err(|cause| InstallError::Write {
        path: plan.unit_dir.clone(),
        cause,
    })?;
    remove_leftover_temporaries(&plan.unit_dir);

    // Stale units first: stopped and disabled while systemd still knows their file.
    let stale: Vec<_> = plan
        .units
        .iter()
        .filter(|u| u.action == Action::Remove)
        .collect();
    if !stale.is_empty() {
        let jobs = JobWatcher::start(sd).await?;
        let mut pending = Vec::new();
        for u in &stale {
            match sd.manager.stop_unit(&u.unit, "replace").await {
                Ok(job) => pending.push((u.unit.as_str(), job)),
                Err(e) => {
                    let e = sd.err(format!("stop stale unit {}", u.unit), e);
                    if e.dbus_name() != Some("org.freedesktop.systemd1.NoSuchUnit") {
                        return Err(e.into());
                    }
                }
            }
        }
        let bound = crate::model::DEFAULT_STOP_TIMEOUT + Duration::from_secs(5);
        for (unit, job) in pending {
            if jobs.wait(&job, bound).await?.is_none() {
                return Err(SystemdError::Timeout {
                    action: format!("stop stale unit {unit}"),
                    timeout: bound,
                }
                .into());
            }
        }
        let names: Vec<&str> = stale.iter().map(|u| u.unit.as_str()).collect();
        sd.manager
            .disable_unit_files(&names, false)
            .await
            .map_err(|e| sd.err(format!("disable {}", names.join(", ")), e))?;
        for u in &stale {
            std::fs::remove_file(&u.path).map_err(|cause| InstallError::Remove {
                path: u.path.clone(),
                cause,
            })?;
            tracing::info!(unit = %u.unit, "removed stale unit");
        }
        sync_dir(&plan.unit_dir).map_err(|cause| InstallError::Write {
            path: plan.unit_dir.clone(),
            cause,
        })?;
        report.changed = true;
    }

    for u in plan
        .units
        .iter()
        .filter(|u| matches!(u.action, Action::Create | Action::Update | Action::Drift))
    {
        let content = u.content.as_deref().expect("rendered units have content");
        write_atomic(&u.path, content.as_bytes()).map_err(|cause| InstallError::Write {
            path: u.path.clone(),
            cause,
        })?;
        tracing::info!(unit = %u.unit, action = u.action.as_str(), "wrote unit file");
        report.changed = true;
    }

    // Reload before enabling so systemd knows the new [Install] sections.
    if report.changed {
        sd.reload().await?;
        report.reloaded = true;
    }
    if opts.in_maintenance {
        report.enable_skipped = Some(format!(
            "{} is masked for maintenance; it is enabled by the first install after `orch resume`",
            d.master.unit
        ));
        return Ok(report);
    }
    let (_, changes) = sd
        .manager
        .enable_unit_files(&[d.master.unit.as_str()], false, false)
        .await
        .map_err(|e| sd.err(format!("enable {}", d.master.unit), e))?;
    if !changes.is_empty() {
        report.enabled = true;
        report.changed = true;
        for (kind, from, to) in &changes {
            tracing::info!(%kind, %from, %to, "unit file change");
        }
        // An enablement symlink is a change systemd must also see.
        sd.reload().await?;
        report.reloaded = true;
    }
    Ok(report)
}

/// Writes `bytes` to `path` so that a reader (or a crash) sees either the old
/// file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent folder"))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .suffix(TMP_SUFFIX)
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Temporary files left by an orch killed mid-write; systemd ignores them
/// (no unit suffix) but they should not pile up.
fn remove_leftover_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(TMP_PREFIX) && name.ends_with(TMP_SUFFIX) {
            if let Err(err) = std::fs::remove_file(e.path()) {
                tracing::warn!(file = %name, %err, "cannot remove leftover temporary file");
            }
        }
    }
}

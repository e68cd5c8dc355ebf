//! The operations behind the commands (cargo's `ops`): each takes a
//! deployment and options, reaches the hosts, runs the library stages and
//! returns a typed report for `commands` to print. The rules of what a
//! command covers live here, not in argument parsing.

pub mod lifecycle;
pub mod logs;
pub mod maintenance;

use std::path::Path;

use crate::error::Error;
use crate::fleet::Access;
use crate::install::{self, InstallError};
use crate::model::Deployment;
use crate::plan::{self, Plan};
use crate::render::{self, RenderedUnit};
use crate::status::{self, DeploymentStatus};
use crate::systemd::actions;

/// One thread is enough: every wait is on the network or on systemd.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

/// Renders the units; with `out`, also writes one file per unit there.
pub fn render(d: &Deployment, out: Option<&Path>) -> Result<Vec<RenderedUnit>, Error> {
    let units = render::render(d)?;
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).map_err(|cause| Error::Write {
            action: "create",
            path: dir.to_path_buf(),
            cause,
        })?;
        for u in &units {
            let path = render::unit_path(dir, &u.unit)?;
            install::write_atomic(&path, u.content.as_bytes()).map_err(|cause| Error::Write {
                action: "write",
                path: path.clone(),
                cause,
            })?;
        }
    }
    Ok(units)
}

/// The plan of every host `install` would visit.
pub fn plan(d: &Deployment, access: &Access) -> Result<Vec<Plan>, Error> {
    let units = render::render(d)?;
    let targets = access.install(d)?;
    Ok(runtime()?.block_on(plan::plan_all(d, &units, &targets))?)
}

/// How long an install waits for another orch working on the deployment
/// (two CI jobs at once): installs are short, so the second one usually
/// gets its turn; past this it fails naming the holder.
pub const INSTALL_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Renders, plans and installs on every host, under the deployment's lock.
/// A deployment in maintenance is installed without enabling the master
/// (its units are masked).
pub fn install(
    d: &Deployment,
    access: &Access,
    dry_run: bool,
    force: bool,
) -> Result<install::Report, Error> {
    let units = render::render(d)?;
    let targets = access.install(d)?;
    let home = access.home(d)?;
    runtime()?.block_on(async {
        // Taken before the plan: two installs at once would both plan against
        // the same folder and leave a mix of their units.
        // Connected and permitted first: a caller systemd would refuse hears
        // so before anything, even before the lock's folder is touched.
        let fleet = match dry_run {
            true => None,
            false => {
                let fleet = access.connect(&targets).await?;
                let needed = [actions::MANAGE_UNIT_FILES, actions::RELOAD_DAEMON];
                fleet
                    .preflight(&format!("install {}", d.name), &needed)
                    .await?;
                Some(fleet)
            }
        };
        let _lock = match dry_run {
            true => None,
            false => Some(crate::maintenance::lock_within(d, &home, INSTALL_LOCK_WAIT).await?),
        };
        let plans = plan::plan_all(d, &units, &targets).await?;
        let in_maintenance = crate::maintenance::read_state(d, &home).await?.is_some();
        let opts = install::Options {
            dry_run,
            force,
            in_maintenance,
        };
        install::install(d, &plans, &targets, fleet.as_ref(), opts)
            .await
            .map_err(|e| match e {
                InstallError::Systemd(cause) => Error::InstallSystemd {
                    deployment: d.name.clone(),
                    cause,
                },
                e => e.into(),
            })
    })
}

/// The status of every unit on every host, and the maintenance state.
pub fn status(d: &Deployment, access: &Access) -> Result<DeploymentStatus, Error> {
    let targets = access.used(d)?;
    let home = access.home(d)?;
    let read = status::deployment(d, &targets, &home, access.call_timeout);
    Ok(runtime()?.block_on(read)?)
}

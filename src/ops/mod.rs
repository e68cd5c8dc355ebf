//! The operations behind the commands (cargo's `ops`): each takes a
//! deployment and a typed request, reaches the hosts, runs the library
//! stages and returns a typed report for `commands` to print. The rules of
//! what a command covers live here, not in argument parsing; so does one
//! verb run after another (`install --restart-changed`,
//! `stop-for-maintenance -- CMD`), each step shown as it ends through a
//! `Show` trait the command implements (ops print nothing).

pub mod lifecycle;
pub mod logs;
pub mod maintenance;

use std::path::Path;
use std::time::Duration;

use crate::error::Error;
use crate::fleet::Access;
use crate::generations::{self, Generation, Generations};
use crate::install::{self, InstallError};
use crate::model::{self, Deployment};
use crate::plan::{self, Plan};
use crate::render::{self, RenderedUnit};
use crate::status::{self, DeploymentStatus};
use crate::systemd::actions;
use futures_util::future::join_all;

/// One thread is enough: every wait is on the network or on systemd.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

/// Where [`installed`] looks for the worker names to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstalledFrom {
    /// Every host `install` visits (over SSH for remote ones).
    Hosts,
    /// Only this machine's unit folder (`orch render` needs no host).
    ThisMachine,
}

/// The deployment's worker units installed on the hosts `reach` covers:
/// the files carrying its `X-Orch-Deployment=` marker (symlinks are
/// systemd's). A folder that cannot be read counts as empty, with a
/// warning: `plan` and `install` then fail on it with their own error.
pub fn installed(d: &Deployment, access: &Access, reach: InstalledFrom) -> model::Installed {
    let targets = match access.install(d) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("worker names not read from the unit folders: {e}");
            return model::Installed::default();
        }
    };
    let targets: Vec<_> = targets
        .into_iter()
        .filter(|t| reach == InstalledFrom::Hosts || d.host(&t.name).address.is_none())
        .collect();
    let read = async {
        let lists = join_all(targets.iter().map(|t| t.store.list_services(&d.unit_dir))).await;
        let mut units = Vec::new();
        for (t, list) in targets.iter().zip(lists) {
            match list {
                Ok(entries) => units.extend(entries.into_iter().filter(|e| ours(d, e))),
                Err(e) => tracing::warn!(host = %t.name, "worker names not read: {e}"),
            }
        }
        units
    };
    let units = match runtime() {
        Ok(rt) => rt.block_on(read),
        Err(_) => Vec::new(),
    };
    model::Installed::new(&d.name, units.iter().map(|e| e.name.as_str()))
}

fn ours(d: &Deployment, e: &crate::store::Entry) -> bool {
    let Ok(bytes) = &e.content else { return false };
    !e.symlink
        && render::read_marker(&String::from_utf8_lossy(bytes))
            .deployment
            .as_deref()
            == Some(&d.name)
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
        // One batch: one sync for all the files, not one per file (4,096
        // units took 17 s one by one), and none renamed in unless all are
        // written.
        let mut files = Vec::with_capacity(units.len());
        for u in &units {
            let path = render::unit_path(dir, &u.unit)?;
            files.push((path, u.content.as_bytes().to_vec()));
        }
        crate::store::write_batch(dir, &files).map_err(|cause| Error::WriteUnits {
            dir: dir.to_path_buf(),
            cause,
        })?;
    }
    Ok(units)
}

/// The plan of every host `install` would visit.
pub fn plan(d: &Deployment, access: &Access) -> Result<Vec<Plan>, Error> {
    let units = render::render(d)?;
    let targets = access.install(d)?;
    let plans = plan::plan_all(d, &units, &targets, plan::Renames::Configured);
    Ok(runtime()?.block_on(plans)?)
}

/// What `install` and `rollback` were asked.
#[derive(Debug, Clone, Copy)]
pub struct InstallRequest {
    /// Show what would change, change nothing.
    pub dry_run: bool,
    /// Overwrite unit files edited by hand or not written by orch.
    pub force: bool,
    /// Then `restart --changed` of the whole deployment.
    pub restart_changed: bool,
    /// `--timeout`: the bound on each stale unit's stop before its file
    /// goes; `None`: the unit's own `TimeoutStopSec=` plus slack.
    pub timeout: Option<Duration>,
}

/// How a command shows `install` or `rollback` while it runs: the report
/// of the files, then (`--restart-changed`) the restart's display.
pub trait ShowInstall: lifecycle::Show {
    /// The files were written (or, dry, would be): shown before a restart begins.
    fn installed(&self, report: &install::Report) -> Result<(), Error>;
}

/// How `install` or `rollback` ended.
#[derive(Debug)]
pub struct Installed {
    pub report: install::Report,
    /// The restart of `--restart-changed`, when it ran.
    pub restart: Option<lifecycle::Outcome>,
}

/// Renders, plans and installs on every host, under the deployment's lock,
/// and records the files as the installed generation; then, with
/// `--restart-changed`, restarts the units whose change needs it.
pub fn install(
    d: &Deployment,
    access: &Access,
    req: InstallRequest,
    show: &dyn ShowInstall,
) -> Result<Installed, Error> {
    let units = render::render(d)?;
    let report = put(d, access, Put::Config(units), req)?;
    show.installed(&report)?;
    let restart = match restarts(req) {
        true => Some(restart_changed(d, access, show)?),
        false => None,
    };
    Ok(Installed { report, restart })
}

/// What an install puts in place.
enum Put {
    /// The units rendered from the configuration.
    Config(Vec<RenderedUnit>),
    /// A kept generation: the one before the installed one, or `--to N`.
    Generation(Option<u64>),
}

/// `rollback [--to N]`: a kept generation's files, installed the way
/// `install` installs (same plan, lock, drift refusal, all-or-nothing
/// writes, one reload per host); the report names the generation. A
/// rollback is noted as an install is (`changes`), so `--restart-changed`
/// restarts only the units whose put-back file needs it, on the deployment
/// `read_again` gives (from its file and the hosts, as the command loaded it).
pub fn rollback(
    d: &Deployment,
    access: &Access,
    to: Option<u64>,
    req: InstallRequest,
    show: &dyn ShowInstall,
    read_again: &dyn Fn() -> Result<Deployment, Error>,
) -> Result<Installed, Error> {
    let report = put(d, access, Put::Generation(to), req)?;
    show.installed(&report)?;
    let restart = match restarts(req) {
        // Read again: across a `naming` change the put-back files carry the
        // names the configuration would rename, and those are what to start.
        true => Some(restart_changed(
            &read_again()?.as_installed(),
            access,
            show,
        )?),
        false => None,
    };
    Ok(Installed { report, restart })
}

/// Whether the files are followed by a restart: a dry run changed nothing,
/// so it restarts nothing (clap refuses the two flags together anyway).
fn restarts(req: InstallRequest) -> bool {
    req.restart_changed && !req.dry_run
}

/// `restart --changed` of the whole deployment after the files: one
/// command for one Ansible task.
fn restart_changed(
    d: &Deployment,
    access: &Access,
    show: &dyn lifecycle::Show,
) -> Result<lifecycle::Outcome, Error> {
    lifecycle::run(d, access, lifecycle::Request::restart_changed(), show)
}

/// The plan of `rollback [--to N]` on every host, and the generation.
pub fn plan_rollback(
    d: &Deployment,
    access: &Access,
    to: Option<u64>,
) -> Result<(Vec<Plan>, Generation), Error> {
    let targets = access.install(d)?;
    let state_store = access.state_store(d)?;
    runtime()?.block_on(async {
        let kept = Generations::read_for_rollback(d, &state_store, to).await?;
        let g = kept.pick(d, to)?.clone();
        let kinds = g.kinds(d);
        let renames = plan::Renames::ByName { kinds: &kinds };
        let plans = plan::plan_all(d, &g.rendered(), &targets, renames).await?;
        Ok((plans, g))
    })
}

fn put(
    d: &Deployment,
    access: &Access,
    what: Put,
    req: InstallRequest,
) -> Result<install::Report, Error> {
    let InstallRequest {
        dry_run,
        force,
        timeout,
        ..
    } = req;
    let targets = access.install(d)?;
    let state_store = access.state_store(d)?;
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
            false => Some(
                crate::state::lock_within(d, &state_store, crate::state::holder::wait()).await?,
            ),
        };
        // Read under the lock: another install may have just added one.
        // Only the generation used is read in full (~8 MB at 5,000 workers).
        let read = match &what {
            Put::Config(_) => Generations::read_for_install(d, &state_store).await,
            Put::Generation(to) => Generations::read_for_rollback(d, &state_store, *to).await,
        };
        let ToPut {
            mut kept,
            units,
            rolled_back,
            kinds,
        } = what_to_put(d, read, what)?;
        // A rollback's names are its files': renames are found by name, as
        // `plan --rollback` finds them.
        let renames = match &kinds {
            None => plan::Renames::Configured,
            Some(kinds) => plan::Renames::ByName { kinds },
        };
        let plans = plan::plan_all(d, &units, &targets, renames).await?;
        let in_maintenance = crate::state::read_state(d, &state_store).await?.is_some();
        let opts = install::Options {
            dry_run,
            force,
            in_maintenance,
            stop_timeout: timeout,
        };
        let mut report = install::install(d, &plans, &targets, fleet.as_ref(), opts)
            .await
            .map_err(|e| match e {
                InstallError::Systemd(cause) => Error::InstallSystemd {
                    deployment: d.name.clone(),
                    cause,
                },
                e => Error::from(e),
            })?;
        report.rolled_back_to = rolled_back;
        if !dry_run {
            // Under the lock still: what `status` and `restart --changed` read.
            crate::changes::note(d, &state_store, &targets, &report).await?;
            report.generation = record(d, &state_store, &mut kept, &units, rolled_back).await;
        }
        Ok(report)
    })
}

/// What an install or a rollback puts in place.
struct ToPut {
    /// The kept generations, as read under the lock.
    kept: Generations,
    units: Vec<RenderedUnit>,
    /// With a rollback: the generation put back, and the worker kinds to
    /// find renames by.
    rolled_back: Option<u64>,
    kinds: Option<Vec<String>>,
}

fn what_to_put(
    d: &Deployment,
    read: Result<Generations, generations::GenerationError>,
    what: Put,
) -> Result<ToPut, Error> {
    Ok(match what {
        // A damaged record must not block an install: it starts anew.
        Put::Config(units) => ToPut {
            kept: read.unwrap_or_else(|e| {
                tracing::warn!("{e}; the kept generations start anew");
                Generations::default()
            }),
            units,
            rolled_back: None,
            kinds: None,
        },
        Put::Generation(to) => {
            let kept = read?;
            let g = kept.pick(d, to)?;
            let (units, number, kinds) = (g.rendered(), g.number, g.kinds(d));
            ToPut {
                kept,
                units,
                rolled_back: Some(number),
                kinds: Some(kinds),
            }
        }
    })
}

/// Records what was installed: after a rollback the generation it put
/// back, else the new files (a new generation when they differ from the
/// installed one's). The files are in place already: a failure to record
/// is a warning, not an error that would hide a good install.
async fn record(
    d: &Deployment,
    state_store: &crate::store::Store,
    kept: &mut Generations,
    units: &[RenderedUnit],
    rolled_back: Option<u64>,
) -> Option<u64> {
    let changed = match rolled_back {
        Some(n) => {
            let changed = kept.installed != Some(n);
            kept.installed = Some(n);
            changed
        }
        None => match generations::config_sha256(&d.config_path) {
            Ok(sha) => kept.record(d, units, (&d.config_path, &sha), "install"),
            Err(e) => {
                tracing::warn!("{e}; this install is not kept for rollback");
                return kept.installed;
            }
        },
    };
    if changed {
        if let Err(e) = kept.write(d, state_store).await {
            tracing::warn!("{e}; this install is not kept for rollback");
        }
    }
    kept.installed
}

/// The status of every unit on every host, and the maintenance state;
/// `None` when SIGINT or SIGTERM came first. Status changes nothing, but it
/// may have made SSH master connections and their control folder: a signal
/// drops the read and returns, so that orch's exit path ends them
/// (`tunnel::end`) instead of the default kill leaving them behind.
pub fn status(d: &Deployment, access: &Access) -> Result<Option<DeploymentStatus>, Error> {
    use tokio::signal::unix::SignalKind;
    let targets = access.used(d)?;
    let state_store = access.state_store(d)?;
    runtime()?.block_on(async {
        let mut sigint = lifecycle::handler(SignalKind::interrupt(), "SIGINT")?;
        let mut sigterm = lifecycle::handler(SignalKind::terminate(), "SIGTERM")?;
        let read = status::deployment(d, &targets, &state_store, access.call_timeout);
        tokio::select! {
            s = read => Ok(Some(s?)),
            _ = sigint.recv() => Ok(None),
            _ = sigterm.recv() => Ok(None),
        }
    })
}

//! Runtime masks: written (or removed) host by host, then loaded by a
//! Reload, and checked: a unit whose LoadState disagrees with its file is
//! reloaded again, or named.

use super::{each_host, store_of, MaintenanceError};
use crate::fleet::{Fleet, HostAccess};
use crate::members::Member;
use crate::model::Deployment;
use crate::systemd::{LoadState, Systemd, SystemdError};

/// Masks (or unmasks) every unit on its host, then makes systemd see it
/// ([`load_masks`]).
pub(super) async fn set_masks(
    d: &Deployment,
    fleet: &Fleet,
    targets: &[HostAccess],
    members: &[Member],
    mask: bool,
) -> Result<bool, MaintenanceError> {
    let changed = write_masks(d, fleet, targets, members, mask).await?;
    load_masks(d, fleet, members, mask, &changed).await
}

/// Writes (or removes) the mask files of `members`, host by host, without
/// telling systemd: the hosts where a file changed.
pub(super) async fn write_masks(
    d: &Deployment,
    fleet: &Fleet,
    targets: &[HostAccess],
    members: &[Member],
    mask: bool,
) -> Result<Vec<String>, MaintenanceError> {
    each_host(fleet, members, |sd, mine| async move {
        let units: Vec<String> = mine.iter().map(|m| m.unit.clone()).collect();
        let store = store_of(targets, &sd.host);
        // A run killed between a mask's temporary link and its rename left
        // that link behind; under the lock, nothing else of this deployment
        // is writing there.
        store.remove_leftovers(&d.runtime_dir).await;
        let changed = match mask {
            true => store.mask(&d.runtime_dir, &units).await?,
            false => store.unmask(&d.runtime_dir, &units).await?,
        };
        Ok::<_, MaintenanceError>(changed.then(|| sd.host.clone()).into_iter().collect())
    })
    .await
}

/// Reloads each host where a mask file changed or systemd's LoadState does
/// not yet agree with the files, and checks it. Reloading on disagreement,
/// not only on a change, finishes the job of a run killed between writing
/// the files and Reload. True when any host was reloaded.
pub(super) async fn load_masks(
    d: &Deployment,
    fleet: &Fleet,
    members: &[Member],
    mask: bool,
    changed: &[String],
) -> Result<bool, MaintenanceError> {
    let reloaded = each_host(fleet, members, |sd, mine| async move {
        let units: Vec<String> = mine.iter().map(|m| m.unit.clone()).collect();
        let wrong = |s: &LoadState| (*s == LoadState::Masked) != mask;
        let mut pending = load_states(sd, &units, wrong).await?;
        let reload = changed.contains(&sd.host) || !pending.is_empty();
        if reload {
            sd.reload().await?;
            pending = load_states(sd, &units, wrong).await?;
        }
        match pending.into_iter().next() {
            Some((unit, state)) if mask => Err(MaintenanceError::MaskIneffective {
                unit,
                state: state.to_string(),
                dir: d.runtime_dir.clone(),
            }),
            _ => Ok(vec![reload]),
        }
    })
    .await?;
    Ok(reloaded.into_iter().any(|r| r))
}

/// `(unit, LoadState)` of the `units` whose LoadState matches `pick`.
pub(super) async fn load_states(
    sd: &Systemd,
    units: &[String],
    pick: impl Fn(&LoadState) -> bool,
) -> Result<Vec<(String, LoadState)>, SystemdError> {
    let mut out = Vec::new();
    for unit in units {
        let load = sd.load_state(unit).await?;
        if pick(&load) {
            out.push((unit.clone(), load));
        }
    }
    Ok(out)
}

//! The record of restart-worthy changes: when install last wrote a unit
//! file in a way its running process does not pick up (see
//! [`crate::restart`]), per unit. `status` and `restart --changed` compare
//! it with when the unit's main process started: a process older than the
//! change runs the old settings.
//!
//! The file modification time alone cannot tell: adding a worker kind
//! rewrites the master's unit (new `Wants=`), which needs no restart. The
//! record keeps the time of the last *restart-worthy* write only.
//!
//! It lives in the state folder next to the maintenance journal (on the
//! master's host), written atomically like it. Times are the unit file's
//! modification time read back on the unit's own host, so they compare
//! with that host's systemd timestamps whatever the clock of orch's machine.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fleet::HostAccess;
use crate::install::Report;
use crate::model::values::MAX_UNIT_NAME;
use crate::model::Deployment;
use crate::plan::Action;
use crate::store::{Store, StoreError};

const FILE: &str = "restart-record.json";

#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    #[error("cannot read the restart record {}: {cause}; remove it, then `orch restart --all` restarts everything once", path.display())]
    Parse {
        path: PathBuf,
        cause: serde_json::Error,
    },
    #[error("the restart record: {0}")]
    Store(#[from] StoreError),
    #[error("cannot tell when install changed units on host {host}: {cause}")]
    Modified { host: String, cause: StoreError },
}

/// One unit's last restart-worthy change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Microseconds since the epoch, on the unit's host clock.
    pub at_us: u64,
    /// The change was the unit's creation: if it never ran since, a
    /// running deployment still lacks it.
    pub created: bool,
}

/// Every recorded unit, by unit name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub units: BTreeMap<String, Change>,
}

/// What a unit needs for its process to run what is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Nothing,
    /// It runs, started before its last restart-worthy change.
    Restart,
    /// Created by install and never started since.
    Start,
}

/// A unit's state as systemd reports it: whether it runs, and when its
/// main process last started (0: never).
#[derive(Debug, Clone, Copy)]
pub struct Running {
    pub up: bool,
    pub started_us: u64,
}

impl Record {
    pub fn need(&self, unit: &str, now: Running) -> Need {
        let Some(c) = self.units.get(unit) else {
            return Need::Nothing;
        };
        let older = now.started_us < c.at_us;
        match (now.up, older, c.created) {
            (true, true, _) => Need::Restart,
            (false, true, true) => Need::Start,
            _ => Need::Nothing,
        }
    }
}

pub fn path(d: &Deployment) -> PathBuf {
    crate::state::dir(d).join(FILE)
}

/// The largest record read: an entry per unit (every worker, plus a
/// margin for the master, dependents and prerequisites), each a quoted
/// unit name of at most [`MAX_UNIT_NAME`] bytes and its change. The unit
/// files' 1 MiB bound was too small past a few thousand workers.
pub const MAX_RECORD_BYTES: u64 =
    (crate::model::MAX_WORKERS as u64 + 1024) * (MAX_UNIT_NAME as u64 + 64);

/// The record, empty when there is none.
pub async fn read(d: &Deployment, state_store: &Store) -> Result<Record, ChangesError> {
    let path = path(d);
    match state_store.read(&path, MAX_RECORD_BYTES).await? {
        None => Ok(Record::default()),
        Some(bytes) => {
            serde_json::from_slice(&bytes).map_err(|cause| ChangesError::Parse { path, cause })
        }
    }
}

/// Notes the restart-worthy writes of `report` (creations, restart-needed
/// updates, forced overwrites) and forgets removed units. Called after the
/// files are in place, under the deployment lock.
pub async fn note(
    d: &Deployment,
    state_store: &Store,
    targets: &[HostAccess],
    report: &Report,
) -> Result<(), ChangesError> {
    let worthy = |a: Action, restart: Option<bool>| match a {
        Action::Create | Action::Rename | Action::Drift => true,
        Action::Update => restart != Some(false),
        Action::Unchanged | Action::Remove => false,
    };
    let removed: Vec<&str> = report
        .units
        .iter()
        .filter(|u| u.action == Action::Remove)
        .map(|u| u.unit.as_str())
        .collect();
    let mut record = match read(d, state_store).await {
        Ok(r) => r,
        Err(e @ ChangesError::Parse { .. }) => {
            tracing::warn!("{e}; starting a new record");
            Record::default()
        }
        Err(e) => return Err(e),
    };
    let before = record.units.clone();
    record.version = 1;
    record.units.retain(|u, _| !removed.contains(&u.as_str()));
    for t in targets {
        let here: Vec<_> = report
            .units
            .iter()
            .filter(|u| u.host == t.name && worthy(u.action, u.restart_needed))
            .collect();
        let paths: Vec<PathBuf> = here.iter().map(|u| d.unit_dir.join(&u.unit)).collect();
        let times = t
            .store
            .modified(&paths)
            .await
            .map_err(|cause| ChangesError::Modified {
                host: t.name.clone(),
                cause,
            })?;
        for (u, at) in here.iter().zip(times) {
            let Some(at) = at else { continue };
            let change = Change {
                at_us: micros(at),
                created: matches!(u.action, Action::Create | Action::Rename),
            };
            record.units.insert(u.unit.clone(), change);
        }
    }
    // Nothing new to keep: no write (and none on a state folder that is full).
    if record.units == before {
        return Ok(());
    }
    let bytes = serde_json::to_vec_pretty(&record).expect("record serializes");
    let dir = crate::state::dir(d);
    state_store.write_files(&dir, &[(path(d), bytes)]).await?;
    Ok(())
}

pub fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_the_most_units_with_the_longest_names_is_within_the_read_bound() {
        let mut r = Record::default();
        for i in 0..crate::model::MAX_WORKERS + 1024 {
            let name = format!("{i:0>width$}.service", width = MAX_UNIT_NAME - 8);
            let change = Change {
                at_us: u64::MAX,
                created: false,
            };
            r.units.insert(name, change);
        }
        let bytes = serde_json::to_vec(&r).unwrap().len() as u64;
        assert!(
            bytes <= MAX_RECORD_BYTES,
            "{bytes} bytes over the bound {MAX_RECORD_BYTES}"
        );
    }

    fn record(at_us: u64, created: bool) -> Record {
        let mut r = Record::default();
        r.units
            .insert("u.service".into(), Change { at_us, created });
        r
    }

    #[test]
    fn a_process_older_than_the_change_needs_a_restart_a_newer_one_not() {
        let r = record(100, false);
        let run = |started_us| Running {
            up: true,
            started_us,
        };
        assert_eq!(r.need("u.service", run(50)), Need::Restart);
        assert_eq!(r.need("u.service", run(150)), Need::Nothing);
        assert_eq!(r.need("other.service", run(50)), Need::Nothing);
    }

    #[test]
    fn a_stopped_unit_needs_a_start_only_when_created_and_never_run_since() {
        let down = |started_us| Running {
            up: false,
            started_us,
        };
        assert_eq!(record(100, true).need("u.service", down(0)), Need::Start);
        assert_eq!(
            record(100, true).need("u.service", down(150)),
            Need::Nothing
        );
        assert_eq!(record(100, false).need("u.service", down(0)), Need::Nothing);
    }
}

//! The maintenance journal: what ran when maintenance began and what it
//! masked, written before anything changes, so that a rerun after a crash
//! completes the operation it records.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{dir, StateError};
use crate::model::Deployment;
use crate::store::{Store, StoreError, MAX_FILE_BYTES};

pub const STATE_FILE: &str = "maintenance.json";

/// The journal of a maintenance operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub deployment: String,
    pub reason: String,
    /// Seconds since the epoch.
    pub since: u64,
    /// `since` as RFC 3339, for people.
    pub since_text: String,
    /// Units that were active when maintenance began: what `resume` starts.
    pub active: Vec<String>,
    pub include_database: bool,
    /// Every runtime mask this maintenance makes, with its host: `resume`
    /// removes these whatever the configuration says by then (an install
    /// during maintenance may have removed a unit, and its mask must not
    /// outlive it). Absent in journals of older versions.
    #[serde(default)]
    pub masked: Vec<MaskRecord>,
}

/// One runtime mask orch made: a unit on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskRecord {
    pub host: String,
    pub unit: String,
}

/// The journal lives on the master's host, so that any operator (or a later
/// CI job on another runner) sees the maintenance and can resume it.
pub fn state_path(d: &Deployment) -> PathBuf {
    dir(d).join(STATE_FILE)
}

/// The maintenance state, if the deployment is in maintenance.
pub async fn read_state(d: &Deployment, store: &Store) -> Result<Option<State>, StateError> {
    let path = state_path(d);
    let read = match store.read(&path, MAX_FILE_BYTES).await {
        Err(cause) if matches!(&cause, StoreError::Unsafe { path: p, .. } if *p == path) => {
            return Err(StateError::JournalUnsafe { cause })
        }
        r => r?,
    };
    match read {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|cause| StateError::Damaged { path, cause }),
        None => Ok(None),
    }
}

/// Refuses when the deployment is in maintenance (for `start`, `restart`).
pub async fn refuse_if_in_maintenance(d: &Deployment, store: &Store) -> Result<(), StateError> {
    match read_state(d, store).await? {
        Some(s) => Err(StateError::InMaintenance {
            deployment: d.name.clone(),
            since: s.since_text,
            reason: s.reason,
            path: state_path(d),
        }),
        None => Ok(()),
    }
}

//! The deployment's lock: an `flock` on the state folder's `lock` file, on
//! the master's host, taken at once or within a bounded wait.

use std::path::PathBuf;
use std::time::Duration;

use super::{dir, holder, StateError};
use crate::model::Deployment;
use crate::store::{Held, Lock, Store};

const LOCK_FILE: &str = "lock";

pub fn lock_path(d: &Deployment) -> PathBuf {
    dir(d).join(LOCK_FILE)
}

/// Takes the deployment's lock (next to the journal, on the master's host)
/// at once, or fails naming the holder.
pub async fn lock(d: &Deployment, store: &Store) -> Result<Lock, StateError> {
    let path = lock_path(d);
    if holder::held_here(&path) {
        return Ok(Lock::borrowed());
    }
    match store.lock(&path).await? {
        Ok(l) => Ok(l),
        // Run by the holder's `-- CMD` with its token: under its lock.
        Err(Held(h)) if holder::inherited(&h) => Ok(Lock::borrowed()),
        Err(Held(h)) => Err(StateError::Locked {
            deployment: d.name.clone(),
            holder: holder::show(&h),
            path,
        }),
    }
}

/// Takes the deployment's lock, waiting up to `wait` for its holder to
/// finish; then fails naming the holder.
pub async fn lock_within(
    d: &Deployment,
    store: &Store,
    wait: Duration,
) -> Result<Lock, StateError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut said = false;
    loop {
        match lock(d, store).await {
            Err(StateError::Locked { holder, .. }) if tokio::time::Instant::now() < deadline => {
                // A wait says what it waits for, once.
                if !std::mem::replace(&mut said, true) {
                    tracing::warn!(
                        "{holder} is working on deployment {}; waiting up to {wait:?} for it",
                        d.name
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            r => return r,
        }
    }
}

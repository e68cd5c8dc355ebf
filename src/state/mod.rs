//! A deployment's state on its master's host: the lock ([`lock`], with the
//! holder's text and token in [`holder`]) and the maintenance journal
//! ([`journal`]). Install, lifecycle, status and maintenance read them; only
//! maintenance writes the journal.

pub mod holder;
pub mod journal;
mod lock;

use std::path::PathBuf;

use crate::model::Deployment;
use crate::store::StoreError;

pub use journal::{read_state, refuse_if_in_maintenance, state_path, MaskRecord, State};
pub use lock::{lock, lock_path, lock_within};

/// The lock or the journal could not be had.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("another orch ({holder}) is working on deployment {deployment}; it holds {}", path.display())]
    Locked {
        deployment: String,
        holder: String,
        path: PathBuf,
    },
    #[error("deployment {deployment} is in maintenance since {since} (reason: {reason}); state file {}.\n  run `orch resume` to end it, or pass --force to act anyway", path.display())]
    InMaintenance {
        deployment: String,
        since: String,
        reason: String,
        path: PathBuf,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("state file {} is damaged: {cause}\n  `orch resume --all` unmasks and starts the whole deployment and removes it (what ran before maintenance cannot be read back from it)", path.display())]
    Damaged {
        path: PathBuf,
        cause: serde_json::Error,
    },
    /// The journal is a symbolic link, a FIFO or another non-file: never
    /// followed or read, but removable by `resume --all`.
    #[error("{cause}\n  `orch resume --all` removes it (without following it), unmasks and starts the whole deployment; or remove it yourself after a look")]
    JournalUnsafe { cause: StoreError },
}

impl StateError {
    /// The journal is there but cannot be read: `resume --all` is the way out.
    pub fn is_unreadable_journal(&self) -> bool {
        matches!(
            self,
            StateError::Damaged { .. } | StateError::JournalUnsafe { .. }
        )
    }

    /// Every failure here is 1.
    pub fn exit_code(&self) -> i32 {
        crate::exit::FAILURE
    }
}

/// The deployment's state folder (on the master's host).
pub fn dir(d: &Deployment) -> PathBuf {
    d.state_dir.join(&d.name)
}

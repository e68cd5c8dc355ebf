//! Where unit files, runtime masks and the maintenance journal are kept: this
//! machine's file system ([`LocalStore`]) or a remote host's, reached through
//! the same SSH command as its D-Bus ([`SshStore`]).
//!
//! [`FileStore`] is the contract both keep. Callers hold a [`Store`], a
//! two-variant enum that forwards to one of them: an enum rather than
//! `dyn FileStore` because async trait methods are not object-safe, and an
//! enum keeps `Store` `Clone`, `Debug` and its futures `Send` without boxing.
//!
//! Guarantees on both sides: files are written to temporary files
//! ([`tmp`]), checked, and only then renamed into place; state files (the
//! lock, the journal) live in a folder owned by orch's user that nobody else
//! can write to, and are never read or written through a symlink; unit
//! folders are read only through regular files of at most
//! [`MAX_FILE_BYTES`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

mod guard;
mod local;
mod ssh;

pub use guard::FileKind;
pub use local::{sync_dir, write_atomic, write_batch, LocalStore};
pub use ssh::{sq, SshStore};

use crate::remote::Remote;

/// The most orch reads of one unit file or state file: far above any unit
/// it renders, far below what would exhaust memory (`/dev/zero`).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The names of orch's temporary files, in one place: `.orch-PID-….tmp`,
/// short whatever the unit's name, so a unit name that fits systemd's limit
/// never makes a temporary name that does not.
pub mod tmp {
    pub const PREFIX: &str = ".orch-";
    pub const SUFFIX: &str = ".tmp";
    /// Every temporary file of any orch, for the shell.
    pub const GLOB: &str = ".orch-*.tmp";

    /// This process's prefix, for `tempfile` (which adds a random part).
    pub fn mine() -> String {
        format!("{PREFIX}{}-", std::process::id())
    }
    /// This process's `i`-th temporary file.
    pub fn numbered(i: usize) -> String {
        format!("{}{i}{SUFFIX}", mine())
    }
    /// The temporary symlink of this process's `i`-th mask.
    pub fn mask(i: usize) -> String {
        format!("{}mask-{i}{SUFFIX}", mine())
    }
    /// Every temporary file of this process, for the shell.
    pub fn my_glob() -> String {
        format!("{}*{SUFFIX}", mine())
    }
    pub fn is_temp(name: &str) -> bool {
        name.starts_with(PREFIX) && name.ends_with(SUFFIX)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("on {host}: cannot {action}: {detail}")]
    Remote {
        host: String,
        action: String,
        detail: String,
    },
    #[error("{} exists and is not orch's runtime mask; refusing to replace it", .0.display())]
    MaskConflict(PathBuf),
    /// A state folder or file someone else could have planted or could swap.
    #[error("refusing {}{}: {reason}", path.display(), on(host))]
    Unsafe {
        path: PathBuf,
        host: Option<String>,
        reason: String,
    },
    #[error("{}{} is larger than {max} bytes; orch does not read it", path.display(), on(host))]
    TooLarge {
        path: PathBuf,
        host: Option<String>,
        /// The bound the caller read it with (see [`FileStore::read`]).
        max: u64,
    },
    /// Writing would replace something that is not a file (e.g. a folder
    /// named like a unit); found before anything was renamed into place.
    #[error("{}{} is {kind}; nothing was written", path.display(), on(host))]
    NotAFile {
        path: PathBuf,
        host: Option<String>,
        kind: FileKind,
    },
}

fn on(host: &Option<String>) -> String {
    host.as_ref()
        .map(|h| format!(" on {h}"))
        .unwrap_or_default()
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |cause| StoreError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// The unit types orch writes: services, and the deployment's slice. The
/// SSH store's listing script globs the same suffixes.
pub const UNIT_SUFFIXES: [&str; 2] = [".service", ".slice"];

/// Whether a file name in a unit folder is of a type orch writes.
pub fn is_orch_unit_file(name: &str) -> bool {
    UNIT_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Why orch did not read a `*.service` or `*.slice` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unread {
    #[error("{0}, not a regular file")]
    Irregular(String),
    #[error("larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    #[error("cannot be read: {0}")]
    Unreadable(String),
}

/// A `*.service` or `*.slice` entry of a unit folder.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    /// The entry is a symlink (enablement links, aliases and masks are systemd's).
    pub symlink: bool,
    /// Its bytes (through a symlink to a regular file), or why they were not read.
    pub content: Result<Vec<u8>, Unread>,
}

/// An exclusive lock, released when dropped.
pub struct Lock {
    _held: LockInner,
}

enum LockInner {
    Local(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>),
    /// The SSH session holding `flock`; killing it releases the lock.
    Remote {
        _session: tokio::process::Child,
        _stdin: tokio::process::ChildStdin,
    },
    /// Held by this process across operations, or by the orch whose
    /// `-- CMD` runs this one: nothing to release here.
    Borrowed,
}

impl Lock {
    /// A lock held by someone responsible for it (see [`LockInner::Borrowed`]).
    pub fn borrowed() -> Lock {
        Lock {
            _held: LockInner::Borrowed,
        }
    }
}

/// What a file store does, on this machine or over SSH.
pub trait FileStore {
    /// Every `*.service` and `*.slice` entry of `dir` (none when `dir` does not exist).
    /// Only regular files are read, at most [`MAX_FILE_BYTES`] each.
    fn list_services(
        &self,
        dir: &Path,
    ) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send;

    /// A state file's bytes, or `None` when it does not exist. Its folder
    /// must be safe (see [`FileStore::lock`]); a symlink, a FIFO or a file
    /// over `max` bytes is refused ([`MAX_FILE_BYTES`] for the journal and
    /// the like; a generation's unit files have their own bound, see
    /// [`crate::generations::MAX_GENERATION_BYTES`]).
    fn read(
        &self,
        path: &Path,
        max: u64,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Writes each `(path, bytes)` (all under `dir`, created if needed):
    /// every file is written and checked under a temporary name before any
    /// is renamed into place.
    fn write_files(
        &self,
        dir: &Path,
        files: &[(PathBuf, Vec<u8>)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes files (absent ones are fine), then syncs `dir`.
    fn remove_files(
        &self,
        dir: &Path,
        paths: &[PathBuf],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The modification time of each of `paths` (through a symlink), `None`
    /// for one that does not exist: what `restart --changed` compares with
    /// a process's start, both read from the same host's clock.
    fn modified(
        &self,
        paths: &[PathBuf],
    ) -> impl Future<Output = Result<Vec<Option<SystemTime>>, StoreError>> + Send;

    /// Removes temporary files an orch killed mid-write left in `dir`.
    fn remove_leftovers(&self, dir: &Path) -> impl Future<Output = ()> + Send;

    /// Writes `/dev/null` symlinks for `units` into `dir`. True when any was added.
    fn mask(
        &self,
        dir: &Path,
        units: &[String],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Removes orch's `/dev/null` symlinks for `units`. True when any was removed.
    fn unmask(
        &self,
        dir: &Path,
        units: &[String],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Takes an exclusive lock on `path` at once: `Ok(Err(holder))` when
    /// someone else holds it. The folder is created if needed and must be a
    /// folder (not a link) owned by orch's user and writable by nobody else;
    /// the lock file is never followed through a symlink.
    fn lock(
        &self,
        path: &Path,
    ) -> impl Future<Output = Result<Result<Lock, Held>, StoreError>> + Send;

    /// Where this store is, for messages.
    fn describe(&self) -> String;
}

/// The file system of one host.
#[derive(Debug, Clone)]
pub enum Store {
    Local(LocalStore),
    Ssh(SshStore),
}

impl Store {
    pub fn local() -> Store {
        Store::Local(LocalStore)
    }

    /// A remote host's, each SSH session bounded by `timeout`.
    pub fn ssh(remote: Remote, timeout: std::time::Duration) -> Store {
        Store::Ssh(SshStore::new(remote, timeout))
    }
}

/// Forwards a call to the variant's [`FileStore`].
macro_rules! forward {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Local($s) => $call,
            Store::Ssh($s) => $call,
        }
    };
}

impl Store {
    pub async fn list_services(&self, dir: &Path) -> Result<Vec<Entry>, StoreError> {
        forward!(self, s => s.list_services(dir).await)
    }
    pub async fn read(&self, path: &Path, max: u64) -> Result<Option<Vec<u8>>, StoreError> {
        forward!(self, s => s.read(path, max).await)
    }
    pub async fn write_files(
        &self,
        dir: &Path,
        files: &[(PathBuf, Vec<u8>)],
    ) -> Result<(), StoreError> {
        if files.is_empty() {
            return Ok(());
        }
        forward!(self, s => s.write_files(dir, files).await)
    }
    pub async fn remove_files(&self, dir: &Path, paths: &[PathBuf]) -> Result<(), StoreError> {
        if paths.is_empty() {
            return Ok(());
        }
        forward!(self, s => s.remove_files(dir, paths).await)
    }
    pub async fn modified(&self, paths: &[PathBuf]) -> Result<Vec<Option<SystemTime>>, StoreError> {
        forward!(self, s => s.modified(paths).await)
    }
    pub async fn remove_leftovers(&self, dir: &Path) {
        forward!(self, s => s.remove_leftovers(dir).await)
    }
    pub async fn mask(&self, dir: &Path, units: &[String]) -> Result<bool, StoreError> {
        forward!(self, s => s.mask(dir, units).await)
    }
    pub async fn unmask(&self, dir: &Path, units: &[String]) -> Result<bool, StoreError> {
        forward!(self, s => s.unmask(dir, units).await)
    }
    pub async fn lock(&self, path: &Path) -> Result<Result<Lock, Held>, StoreError> {
        forward!(self, s => s.lock(path).await)
    }
    pub fn describe(&self) -> String {
        forward!(self, s => s.describe())
    }
}

/// Who holds a lock, as its file says.
/// The lock is held by another process: who, as it wrote itself
/// (`PID … on HOST`), or "holder unknown".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held(pub String);

fn holder_or_unknown(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() {
        "holder unknown".into()
    } else {
        s.to_string()
    }
}

/// Written into a lock file for the message a second orch prints (see [`crate::state::holder::holder_text`]).
fn lock_holder_text() -> String {
    crate::state::holder::holder_text()
}

fn unit_paths(dir: &Path, units: &[String]) -> Result<Vec<PathBuf>, StoreError> {
    units
        .iter()
        .map(|u| {
            crate::render::unit_path(dir, u).map_err(|m| StoreError::Io {
                path: dir.join(u),
                cause: std::io::Error::other(m),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;

//! The store on this machine's file system.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::guard::{judge_dir, judge_file, DirFacts, FileKind};
use super::{
    holder_or_unknown, io, is_orch_unit_file, lock_holder_text, tmp, unit_paths, Entry, FileStore,
    Held, Lock, LockInner, StoreError, Unread, MAX_FILE_BYTES,
};

#[derive(Debug, Clone, Copy, Default)]
pub struct LocalStore;

impl FileStore for LocalStore {
    async fn modified(
        &self,
        paths: &[PathBuf],
    ) -> Result<Vec<Option<std::time::SystemTime>>, StoreError> {
        paths
            .iter()
            .map(|p| match std::fs::metadata(p) {
                Ok(m) => m.modified().map(Some).map_err(io(p)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io(p)(e)),
            })
            .collect()
    }

    async fn list_services(&self, dir: &Path) -> Result<Vec<Entry>, StoreError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(dir)(e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(io(dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_orch_unit_file(&name) {
                continue;
            }
            let symlink = e.file_type().map(|t| t.is_symlink()).unwrap_or(false);
            // Gone since the listing, or a dangling link: as if absent.
            if let Some(content) = read_unit_file(&e.path(), symlink) {
                out.push(Entry {
                    name,
                    symlink,
                    content,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn read(&self, path: &Path, max: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let dir = parent(path);
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(dir)(e)),
            Ok(_) => check_state_dir(dir, true)?,
        }
        let mut file = match open_state(path, false) {
            Err(StoreError::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None)
            }
            r => r?,
        };
        let mut bytes = Vec::new();
        (&mut file)
            .take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(io(path))?;
        if bytes.len() as u64 > max {
            return Err(StoreError::TooLarge {
                path: path.to_path_buf(),
                host: None,
                max,
            });
        }
        Ok(Some(bytes))
    }

    async fn write_files(
        &self,
        dir: &Path,
        files: &[(PathBuf, Vec<u8>)],
    ) -> Result<(), StoreError> {
        write_batch(dir, files)
    }

    async fn remove_files(&self, dir: &Path, paths: &[PathBuf]) -> Result<(), StoreError> {
        for p in paths {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(p)(e)),
            }
        }
        sync_dir(dir).map_err(io(dir))
    }

    async fn remove_leftovers(&self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if tmp::is_temp(&name) {
                if let Err(err) = std::fs::remove_file(e.path()) {
                    tracing::warn!(file = %name, %err, "cannot remove leftover temporary file");
                }
            }
        }
    }

    async fn mask(&self, dir: &Path, units: &[String]) -> Result<bool, StoreError> {
        let paths = unit_paths(dir, units)?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut changed = false;
        for (i, path) in paths.iter().enumerate() {
            match std::fs::read_link(path) {
                Ok(target) if target == Path::new("/dev/null") => continue,
                Ok(_) => return Err(StoreError::MaskConflict(path.clone())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => return Err(StoreError::MaskConflict(path.clone())),
            }
            // Created under a temporary name and renamed: never a half-made mask.
            let tmp = dir.join(tmp::mask(i));
            let _ = std::fs::remove_file(&tmp);
            symlink("/dev/null", &tmp).map_err(io(&tmp))?;
            std::fs::rename(&tmp, path).map_err(io(path))?;
            changed = true;
        }
        if changed {
            sync_dir(dir).map_err(io(dir))?;
        }
        Ok(changed)
    }

    async fn unmask(&self, dir: &Path, units: &[String]) -> Result<bool, StoreError> {
        let mut changed = false;
        for path in &unit_paths(dir, units)? {
            if let Ok(target) = std::fs::read_link(path) {
                if target == Path::new("/dev/null") {
                    std::fs::remove_file(path).map_err(io(path))?;
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    async fn lock(&self, path: &Path) -> Result<Result<Lock, Held>, StoreError> {
        use nix::fcntl::{Flock, FlockArg};
        let dir = parent(path);
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        check_state_dir(dir, false)?;
        let file = open_state(path, true)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut f) => {
                f.set_len(0).map_err(io(path))?;
                f.rewind().map_err(io(path))?;
                write!(f, "{}", lock_holder_text()).map_err(io(path))?;
                f.flush().map_err(io(path))?;
                Ok(Ok(Lock {
                    _held: LockInner::Local(f),
                }))
            }
            Err((mut f, _)) => {
                let mut holder = String::new();
                let _ = (&mut f).take(4096).read_to_string(&mut holder);
                Ok(Err(Held(holder_or_unknown(&holder))))
            }
        }
    }

    fn describe(&self) -> String {
        "this machine".into()
    }
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

/// Refuses `dir` unless it is a safe state folder (see [`judge_dir`]);
/// `read_only`: to read from it only, root's folder is safe too.
fn check_state_dir(dir: &Path, read_only: bool) -> Result<(), StoreError> {
    let m = std::fs::symlink_metadata(dir).map_err(io(dir))?;
    let up = parent(dir);
    let p = std::fs::metadata(up).map_err(io(up))?;
    let facts = DirFacts {
        kind: FileKind::of(m.file_type()),
        uid: m.uid(),
        mode: m.mode(),
        parent_mode: p.mode(),
        euid: nix::unistd::geteuid().as_raw(),
        read_only,
    };
    judge_dir(dir, facts, None)
}

/// Opens a state file without following a symlink (`O_NOFOLLOW`) or
/// blocking on a FIFO, and refuses anything but a regular file.
fn open_state(path: &Path, create: bool) -> Result<std::fs::File, StoreError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .truncate(false)
        .mode(0o644)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(judge_file(path, FileKind::Symlink, None).unwrap_err())
        }
        Err(e) => return Err(io(path)(e)),
    };
    let kind = FileKind::of(file.metadata().map_err(io(path))?.file_type());
    judge_file(path, kind, None)?;
    Ok(file)
}

/// A unit folder entry's bytes: only a regular file (through a symlink),
/// at most [`MAX_FILE_BYTES`]; `None` when it is gone or a dangling link.
fn read_unit_file(path: &Path, symlink: bool) -> Option<Result<Vec<u8>, Unread>> {
    let irregular = |kind: FileKind| {
        let what = if symlink {
            format!("a symbolic link to {kind}")
        } else {
            kind.to_string()
        };
        Some(Err(Unread::Irregular(what)))
    };
    let unreadable = |e: std::io::Error| Some(Err(Unread::Unreadable(e.to_string())));
    let m = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return unreadable(e),
    };
    if !m.is_file() {
        return irregular(FileKind::of(m.file_type()));
    }
    // O_NONBLOCK: if it became a FIFO since the stat, the open does not wait.
    let flags = (nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits();
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return unreadable(e),
    };
    let len = match file.metadata() {
        Ok(m) if !m.is_file() => return irregular(FileKind::of(m.file_type())),
        Ok(m) => m.len(),
        Err(e) => return unreadable(e),
    };
    // Sized from the stat (bounded): one read for the file and one for the
    // end, not a read per doubling of the buffer (`take` hides the size
    // hint), which added up to 7 reads per unit at 5,000 units.
    let mut bytes = Vec::with_capacity(len.min(MAX_FILE_BYTES) as usize + 1);
    if let Err(e) = file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes) {
        return unreadable(e);
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Some(Err(Unread::TooLarge));
    }
    Some(Ok(bytes))
}

/// Writes every file of `files` (all in `dir`) all or none: each to a
/// temporary file, all of them synced and read back before the first is
/// renamed into place, then `dir` synced. A failure before the renames
/// deletes the temporary files and changes nothing.
pub fn write_batch(dir: &Path, files: &[(PathBuf, Vec<u8>)]) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // Nothing may be renamed over a folder (rename fails half-way).
    for (path, _) in files {
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if m.is_dir() {
                return Err(StoreError::NotAFile {
                    path: path.clone(),
                    host: None,
                    kind: FileKind::Folder,
                });
            }
        }
    }
    // Every file complete, synced and read back before any name moves;
    // a failure drops the temporary files, which deletes them.
    let mut staged = Vec::with_capacity(files.len());
    for (path, bytes) in files {
        staged.push((write_temp(dir, bytes).map_err(io(path))?, path, bytes));
    }
    sync_staged(dir, staged.iter().map(|(t, _, _)| t)).map_err(io(dir))?;
    for (tmp, path, bytes) in &mut staged {
        check_back(tmp, bytes).map_err(io(path))?;
    }
    fail_point(staged.len())?;
    for (tmp, path, _) in staged {
        tmp.persist(path).map_err(|e| io(path)(e.error))?;
    }
    sync_dir(dir).map_err(io(dir))
}

/// `bytes` in a new temporary file of `dir` (`O_EXCL`), mode 0644, synced
/// and read back.
fn stage(dir: &Path, bytes: &[u8]) -> std::io::Result<tempfile::NamedTempFile> {
    let mut tmp = write_temp(dir, bytes)?;
    tmp.as_file().sync_all()?;
    check_back(&mut tmp, bytes)?;
    Ok(tmp)
}

/// `bytes` in a new temporary file of `dir` (`O_EXCL`), mode 0644, not yet
/// synced.
fn write_temp(dir: &Path, bytes: &[u8]) -> std::io::Result<tempfile::NamedTempFile> {
    let mut tmp = tempfile::Builder::new()
        .prefix(&tmp::mine())
        .suffix(tmp::SUFFIX)
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    Ok(tmp)
}

/// Above this many files, one `syncfs(2)` of the folder's file system
/// replaces an `fsync(2)` per file. On ext4 or XFS each fsync of a new file
/// commits the journal: 5,000 unit files took about 17 s one by one, and a
/// few hundred milliseconds with one syncfs. syncfs also flushes other dirty
/// data of that file system, which a few files are not worth; and it reports
/// writeback errors only since Linux 5.8 (older kernels: the read-back check
/// still catches a short or garbled write, not a failed flush).
const SYNCFS_ABOVE: usize = 16;

/// Puts the data of every staged file on disk before any name moves: the
/// all-or-nothing promise needs every file durable before the first rename,
/// not each file synced on its own.
fn sync_staged<'a>(
    dir: &Path,
    staged: impl ExactSizeIterator<Item = &'a tempfile::NamedTempFile>,
) -> std::io::Result<()> {
    if staged.len() > SYNCFS_ABOVE {
        let folder = std::fs::File::open(dir)?;
        return nix::unistd::syncfs(&folder).map_err(std::io::Error::from);
    }
    for tmp in staged {
        tmp.as_file().sync_all()?;
    }
    Ok(())
}

/// Reads a staged file back: what is renamed into place is what was rendered.
fn check_back(tmp: &mut tempfile::NamedTempFile, bytes: &[u8]) -> std::io::Result<()> {
    let mut back = Vec::with_capacity(bytes.len());
    tmp.rewind()?;
    tmp.read_to_end(&mut back)?;
    if back != bytes {
        return Err(std::io::Error::other(
            "the written copy differs from what orch rendered",
        ));
    }
    Ok(())
}

/// Tests only: fails a write of `files` files after staging and syncing,
/// before any rename, when [`FAIL_WRITE_OF`] is that count, so a test can
/// prove that a failure midway leaves the installed set as it was.
#[cfg(test)]
fn fail_point(files: usize) -> Result<(), StoreError> {
    match FAIL_WRITE_OF.with(|f| f.get()) {
        Some(n) if n == files => Err(StoreError::Io {
            path: PathBuf::from("(injected failure)"),
            cause: std::io::Error::other("injected failure before the renames"),
        }),
        _ => Ok(()),
    }
}

#[cfg(not(test))]
fn fail_point(_files: usize) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// A write of this many files fails after staging (tests only).
    pub(crate) static FAIL_WRITE_OF: std::cell::Cell<Option<usize>> =
        const { std::cell::Cell::new(None) };
}

/// Writes `bytes` to `path` so that a reader (or a crash) sees either the old
/// file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent folder"))?;
    stage(dir, bytes)?.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

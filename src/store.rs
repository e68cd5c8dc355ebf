//! Where unit files, runtime masks and the maintenance journal are kept: this
//! machine's file system, or a remote host's reached through the same SSH
//! command as its D-Bus.
//!
//! Remotely, each operation is one `sh -s` session whose script arrives on
//! standard input (file contents as base64 in a here-document, every other
//! word single-quoted), so nothing the remote shell parses comes from
//! outside orch unquoted and no file size meets an argument-length limit.
//! Writes keep the local guarantees: a temporary file in the same folder,
//! its sha256 checked against what orch rendered before it is renamed into
//! place, then the folder synced.

use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::systemd::Remote;

pub const TMP_PREFIX: &str = ".orch-";
pub const TMP_SUFFIX: &str = ".tmp";

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
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |cause| StoreError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// A `*.service` entry of a unit folder.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    /// A regular file, not a symlink (enablement links and masks are systemd's).
    pub regular: bool,
    /// The content, following a symlink; `None` when it cannot be read.
    pub content: Option<Vec<u8>>,
}

/// The file system of one host.
#[derive(Debug, Clone)]
pub enum Store {
    Local,
    Remote {
        remote: Remote,
        /// Bound on one SSH session.
        timeout: Duration,
    },
}

impl Store {
    /// Every `*.service` entry of `dir` (none when `dir` does not exist).
    pub async fn list_services(&self, dir: &Path) -> Result<Vec<Entry>, StoreError> {
        match self {
            Store::Local => {
                let entries = match std::fs::read_dir(dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(io(dir)(e)),
                };
                let mut out = Vec::new();
                for e in entries {
                    let e = e.map_err(io(dir))?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !name.ends_with(".service") {
                        continue;
                    }
                    let regular = e.file_type().map(|t| t.is_file()).unwrap_or(false);
                    let content = match std::fs::read(e.path()) {
                        Ok(b) => Some(b),
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
                        Err(err) if regular => return Err(io(&e.path())(err)),
                        Err(_) => None,
                    };
                    out.push(Entry {
                        name,
                        regular,
                        content,
                    });
                }
                out.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(out)
            }
            Store::Remote { .. } => {
                // One line per entry: type, name, base64 of the content.
                let script = format!(
                    "cd -- {dir} 2>/dev/null || {{ echo ORCH-END; exit 0; }}\n\
                     for f in *.service; do\n\
                     \x20 case $f in *[!A-Za-z0-9:_.@\\\\-]*) continue ;; esac\n\
                     \x20 if [ -L \"$f\" ]; then t=l; elif [ -f \"$f\" ]; then t=f; else continue; fi\n\
                     \x20 printf '%s %s ' \"$t\" \"$f\"\n\
                     \x20 if [ -f \"$f\" ] && [ -r \"$f\" ]; then base64 -w0 < \"$f\" || exit 1; printf ' 1'; fi\n\
                     \x20 printf '\\n'\n\
                     done\n\
                     echo ORCH-END\n",
                    dir = sq_path(dir)
                );
                let out = self.run("read the unit folder", &script).await?;
                let mut entries = Vec::new();
                for line in out.lines().take_while(|l| *l != "ORCH-END") {
                    let mut words = line.split(' ');
                    let (Some(t), Some(name)) = (words.next(), words.next()) else {
                        continue;
                    };
                    let content = match (words.next(), words.next()) {
                        (Some(b64), Some("1")) => Some(
                            base64_decode(b64)
                                .ok_or_else(|| self.fail("read the unit folder", "bad base64"))?,
                        ),
                        _ => None,
                    };
                    entries.push(Entry {
                        name: name.to_string(),
                        regular: t == "f",
                        content,
                    });
                }
                Ok(entries)
            }
        }
    }

    /// A file's bytes, or `None` when it does not exist.
    pub async fn read(&self, path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Local => match std::fs::read(path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io(path)(e)),
            },
            Store::Remote { .. } => {
                let script = format!(
                    "if [ -e {p} ]; then base64 -w0 < {p} || exit 1; echo; echo ORCH-FOUND; else echo ORCH-NONE; fi\n",
                    p = sq_path(path)
                );
                let what = format!("read {}", path.display());
                let out = self.run(&what, &script).await?;
                let mut lines = out.lines();
                match (lines.next(), lines.next()) {
                    (Some("ORCH-NONE"), _) => Ok(None),
                    (Some(b64), Some("ORCH-FOUND")) => base64_decode(b64)
                        .map(Some)
                        .ok_or_else(|| self.fail(&what, "bad base64")),
                    _ => Err(self.fail(&what, "unexpected answer")),
                }
            }
        }
    }

    /// Writes each `(path, bytes)` atomically (all under `dir`, created if
    /// needed): every file is complete and checked before any is renamed.
    pub async fn write_files(
        &self,
        dir: &Path,
        files: &[(PathBuf, Vec<u8>)],
    ) -> Result<(), StoreError> {
        if files.is_empty() {
            return Ok(());
        }
        match self {
            Store::Local => {
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                for (path, bytes) in files {
                    write_atomic(path, bytes).map_err(io(path))?;
                }
                Ok(())
            }
            Store::Remote { .. } => {
                let mut script = format!(
                    "set -e\numask 022\nmkdir -p -- {d}\ncd -- {d}\n",
                    d = sq_path(dir)
                );
                let mut renames = String::new();
                let mine = format!("{TMP_PREFIX}{}-*{TMP_SUFFIX}", std::process::id());
                for (i, (path, bytes)) in files.iter().enumerate() {
                    let tmp = format!("{TMP_PREFIX}{}-{i}{TMP_SUFFIX}", std::process::id());
                    let expected = crate::render::hash_bytes(bytes);
                    script.push_str(&format!(
                        "base64 -d > {t} <<'ORCH_EOF'\n{data}\nORCH_EOF\n\
                         chmod 644 {t}\n\
                         h=$(sha256sum < {t}); h=${{h%% *}}\n\
                         if [ \"$h\" != {expected} ]; then rm -f -- {mine}; echo \"orch: {name}: the written copy has sha256 $h, expected {expected}\" >&2; exit 3; fi\n",
                        t = sq(&tmp),
                        data = base64_encode(bytes),
                        name = path.display(),
                    ));
                    renames.push_str(&format!("mv -f -- {} {}\n", sq(&tmp), sq_path(path)));
                }
                // Data on disk before the names point at it; then the names.
                script.push_str("sync -- .orch-*.tmp 2>/dev/null || sync\n");
                script.push_str(&renames);
                script.push_str("sync -- . 2>/dev/null || sync\necho ORCH-OK\n");
                let what = format!("write unit files into {}", dir.display());
                let out = self.run(&what, &script).await?;
                if out.lines().last() != Some("ORCH-OK") {
                    return Err(self.fail(&what, "the remote shell did not finish"));
                }
                Ok(())
            }
        }
    }

    /// Removes files (absent ones are fine), then syncs `dir`.
    pub async fn remove_files(&self, dir: &Path, paths: &[PathBuf]) -> Result<(), StoreError> {
        if paths.is_empty() {
            return Ok(());
        }
        match self {
            Store::Local => {
                for p in paths {
                    match std::fs::remove_file(p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io(p)(e)),
                    }
                }
                sync_dir(dir).map_err(io(dir))
            }
            Store::Remote { .. } => {
                let mut script = String::from("set -e\n");
                for p in paths {
                    script.push_str(&format!("rm -f -- {}\n", sq_path(p)));
                }
                script.push_str(&format!(
                    "sync -- {} 2>/dev/null || sync\necho ORCH-OK\n",
                    sq_path(dir)
                ));
                self.run(&format!("remove files from {}", dir.display()), &script)
                    .await
                    .map(drop)
            }
        }
    }

    /// Removes temporary files an orch killed mid-write left in `dir`.
    pub async fn remove_leftovers(&self, dir: &Path) {
        match self {
            Store::Local => {
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
            Store::Remote { .. } => {
                let script = format!(
                    "cd -- {} 2>/dev/null || exit 0\nrm -f -- .orch-*.tmp\n",
                    sq_path(dir)
                );
                if let Err(e) = self.run("remove leftover temporary files", &script).await {
                    tracing::warn!(error = %e, "cannot remove leftover temporary files");
                }
            }
        }
    }

    /// Writes `/dev/null` symlinks for `units` into `dir`. True when any was added.
    pub async fn mask(&self, dir: &Path, units: &[String]) -> Result<bool, StoreError> {
        let paths = unit_paths(dir, units)?;
        match self {
            Store::Local => {
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                let mut changed = false;
                for (unit, path) in units.iter().zip(&paths) {
                    match std::fs::read_link(path) {
                        Ok(target) if target == Path::new("/dev/null") => continue,
                        Ok(_) => return Err(StoreError::MaskConflict(path.clone())),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(_) => return Err(StoreError::MaskConflict(path.clone())),
                    }
                    // Created under a temporary name and renamed: never a half-made mask.
                    let tmp = dir.join(format!(".orch-mask-{}-{unit}", std::process::id()));
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
            Store::Remote { .. } => {
                let mut script = format!(
                    "set -e\nmkdir -p -- {d}\ncd -- {d}\nchanged=no\n",
                    d = sq_path(dir)
                );
                for (unit, path) in units.iter().zip(&paths) {
                    let tmp = sq(&format!(".orch-mask-{}-{unit}", std::process::id()));
                    script.push_str(&format!(
                        "if [ -L {p} ] && [ \"$(readlink {p})\" = /dev/null ]; then :\n\
                         elif [ -e {p} ] || [ -L {p} ]; then echo ORCH-CONFLICT {p}; exit 4\n\
                         else rm -f -- {tmp}; ln -s /dev/null {tmp}; mv -f -- {tmp} {p}; changed=yes; fi\n",
                        p = sq_path(path),
                    ));
                }
                script.push_str("sync -- . 2>/dev/null || sync\necho ORCH-CHANGED $changed\n");
                let out = self
                    .run_allowing(&format!("mask units in {}", dir.display()), &script, 4)
                    .await?;
                if let Some(p) = out.lines().find_map(|l| l.strip_prefix("ORCH-CONFLICT ")) {
                    return Err(StoreError::MaskConflict(PathBuf::from(
                        p.trim_matches('\''),
                    )));
                }
                Ok(out.lines().any(|l| l == "ORCH-CHANGED yes"))
            }
        }
    }

    /// Removes orch's `/dev/null` symlinks for `units`. True when any was removed.
    pub async fn unmask(&self, dir: &Path, units: &[String]) -> Result<bool, StoreError> {
        let paths = unit_paths(dir, units)?;
        match self {
            Store::Local => {
                let mut changed = false;
                for path in &paths {
                    if let Ok(target) = std::fs::read_link(path) {
                        if target == Path::new("/dev/null") {
                            std::fs::remove_file(path).map_err(io(path))?;
                            changed = true;
                        }
                    }
                }
                Ok(changed)
            }
            Store::Remote { .. } => {
                let mut script = String::from("set -e\nchanged=no\n");
                for path in &paths {
                    script.push_str(&format!(
                        "if [ -L {p} ] && [ \"$(readlink {p})\" = /dev/null ]; then rm -f -- {p}; changed=yes; fi\n",
                        p = sq_path(path),
                    ));
                }
                script.push_str("echo ORCH-CHANGED $changed\n");
                let out = self
                    .run(&format!("unmask units in {}", dir.display()), &script)
                    .await?;
                Ok(out.lines().any(|l| l == "ORCH-CHANGED yes"))
            }
        }
    }

    /// Takes an exclusive lock on `path` at once: `Ok(Err(holder))` when
    /// someone else holds it. Remotely the lock is held by an SSH session
    /// running `flock` until the returned [`Lock`] is dropped (or orch dies,
    /// which closes the session).
    pub async fn lock(&self, path: &Path) -> Result<Result<Lock, String>, StoreError> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        let me = format!(
            "PID {} on {}",
            std::process::id(),
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "?".into())
        );
        match self {
            Store::Local => {
                use nix::fcntl::{Flock, FlockArg};
                use std::io::{Read, Seek};
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .map_err(io(path))?;
                match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                    Ok(mut f) => {
                        // The holder, for the message a second orch prints.
                        f.set_len(0).map_err(io(path))?;
                        f.rewind().map_err(io(path))?;
                        write!(f, "{me}").map_err(io(path))?;
                        f.flush().map_err(io(path))?;
                        Ok(Ok(Lock::Local(f)))
                    }
                    Err((mut f, _)) => {
                        let mut holder = String::new();
                        let _ = f.read_to_string(&mut holder);
                        Ok(Err(holder_or_unknown(&holder)))
                    }
                }
            }
            Store::Remote { remote, timeout } => {
                use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
                let script = format!(
                    "mkdir -p -- {d} || exit 1
                     exec 9>>{p} || exit 1
                     if flock -n 9; then printf '%s\n' {me} > {p}; echo ORCH-LOCKED; cat >/dev/null
                     else echo ORCH-HELD; cat {p}; echo; echo ORCH-END; fi
",
                    d = sq_path(dir),
                    p = sq_path(path),
                    me = sq(&me),
                );
                let what = format!("lock {}", path.display());
                let mut child = self.session(remote, &what)?;
                let mut stdin = child.stdin.take().expect("piped");
                let mut lines =
                    tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
                let answer = async {
                    stdin.write_all(script.as_bytes()).await?;
                    stdin.flush().await?;
                    let first = lines.next_line().await?;
                    let mut rest = Vec::new();
                    if first.as_deref() == Some("ORCH-HELD") {
                        while let Some(l) = lines.next_line().await? {
                            if l == "ORCH-END" {
                                break;
                            }
                            rest.push(l);
                        }
                    }
                    Ok::<_, std::io::Error>((first, rest.join(" ")))
                };
                let (first, holder) = tokio::time::timeout(*timeout, answer)
                    .await
                    .map_err(|_| self.fail(&what, format!("no answer within {timeout:?}")))?
                    .map_err(|e| self.fail(&what, e.to_string()))?;
                match first.as_deref() {
                    Some("ORCH-LOCKED") => Ok(Ok(Lock::Remote {
                        _session: child,
                        _stdin: stdin,
                    })),
                    Some("ORCH-HELD") => Ok(Err(holder_or_unknown(&holder))),
                    _ => {
                        let mut err = String::new();
                        if let Some(mut e) = child.stderr.take() {
                            use tokio::io::AsyncReadExt;
                            let _ = tokio::time::timeout(
                                Duration::from_millis(500),
                                e.read_to_string(&mut err),
                            )
                            .await;
                        }
                        Err(self.fail(&what, format!("the session ended: {}", err.trim())))
                    }
                }
            }
        }
    }

    /// Where this store is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Store::Local => "this machine".into(),
            Store::Remote { remote, .. } => remote.destination.clone(),
        }
    }

    fn fail(&self, action: &str, detail: impl Into<String>) -> StoreError {
        StoreError::Remote {
            host: self.describe(),
            action: action.to_string(),
            detail: detail.into(),
        }
    }

    /// `ssh … DEST sh -s` with every standard stream piped; killed when dropped.
    fn session(&self, remote: &Remote, action: &str) -> Result<tokio::process::Child, StoreError> {
        let (program, args) = remote.run("sh -s");
        tokio::process::Command::new(&program)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.fail(action, format!("cannot run {program}: {e}")))
    }

    async fn run(&self, action: &str, script: &str) -> Result<String, StoreError> {
        self.run_allowing(action, script, 0).await
    }

    /// Runs `script` with `sh -s` on the remote host, bounded; its standard
    /// output on exit 0 (or `ok_code`), an error naming the host otherwise.
    async fn run_allowing(
        &self,
        action: &str,
        script: &str,
        ok_code: i32,
    ) -> Result<String, StoreError> {
        let Store::Remote { remote, timeout } = self else {
            unreachable!("only remote stores run scripts");
        };
        use tokio::io::AsyncWriteExt;
        let program = &remote.ssh[0];
        let mut child = self.session(remote, action)?;
        let mut stdin = child.stdin.take().expect("piped");
        let script = script.as_bytes().to_vec();
        let session = async move {
            // Written while the output is read, so a large script cannot
            // deadlock against a full pipe.
            let feed = async move {
                let r = stdin.write_all(&script).await;
                drop(stdin);
                r
            };
            let (fed, out) = tokio::join!(feed, child.wait_with_output());
            (fed, out)
        };
        let (fed, out) = tokio::time::timeout(*timeout, session)
            .await
            .map_err(|_| self.fail(action, format!("no answer within {timeout:?}")))?;
        let out = out.map_err(|e| self.fail(action, e.to_string()))?;
        let code = out.status.code();
        if code != Some(0) && code != Some(ok_code) {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let detail = stderr.trim();
            return Err(self.fail(
                action,
                format!(
                    "{program} exited with {}{}",
                    code.map_or("a signal".to_string(), |c| format!("status {c}")),
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {detail}")
                    }
                ),
            ));
        }
        if let Err(e) = fed {
            return Err(self.fail(action, format!("cannot send the script: {e}")));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// An exclusive lock, released when dropped.
pub enum Lock {
    Local(nix::fcntl::Flock<std::fs::File>),
    /// The SSH session holding `flock`; killing it releases the lock.
    Remote {
        _session: tokio::process::Child,
        _stdin: tokio::process::ChildStdin,
    },
}

fn holder_or_unknown(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() {
        "holder unknown".into()
    } else {
        s.to_string()
    }
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

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A word the remote shell reads literally.
pub fn sq(s: &str) -> String {
    // Every value reaching here was checked for control characters (and
    // NUL) by the model, so quoting cannot fail.
    shlex::try_quote(s)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| format!("'{}'", s.replace('\'', r"'\''")))
}

fn sq_path(p: &Path) -> String {
    sq(&p.to_string_lossy())
}

/// Base64 in lines of 76, as `base64 -d` reads it from a here-document.
fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    let flat = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(flat.len() + flat.len() / 76 + 1);
    for (i, c) in flat.chars().enumerate() {
        if i > 0 && i % 76 == 0 {
            out.push('\n');
        }
        out.push(c);
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let flat: String = text.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(flat).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "50% \"quoted\" 'single'\n\u{e9}",
        ] {
            let e = base64_encode(s.as_bytes());
            assert_eq!(base64_decode(&e).unwrap(), s.as_bytes(), "{s:?} -> {e}");
        }
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
        let long = vec![7u8; 1000];
        assert_eq!(base64_decode(&base64_encode(&long)).unwrap(), long);
    }

    #[test]
    fn quoted_words_survive_sh() {
        for w in ["a'b", "$(rm -rf /)", "x y", "*", "a\\b"] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", sq(w)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), w);
        }
    }
}

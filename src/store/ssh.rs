//! The store of a remote host, over the SSH command of its D-Bus.
//!
//! Each operation is one `sh -s` session whose script arrives on standard
//! input (file contents as base64 in a here-document, every other word
//! single-quoted), so nothing the remote shell parses comes from outside
//! orch unquoted and no file size meets an argument-length limit. Writes
//! keep the local guarantees: temporary files created with `set -C`
//! (`O_EXCL`), each sha256 checked against what orch rendered, before any
//! is renamed into place; then the folder synced.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::guard::{parse_unsafe, FileKind, SHELL};
use super::{
    holder_or_unknown, lock_holder_text, tmp, unit_paths, Entry, FileStore, Held, Lock, LockInner,
    StoreError, Unread, MAX_FILE_BYTES,
};
use crate::remote::Remote;

/// Exit status of a script that found an unsafe state folder or file.
const UNSAFE: i32 = 5;

#[derive(Debug, Clone)]
pub struct SshStore {
    remote: Remote,
    /// Bound on one SSH session.
    timeout: Duration,
}

impl SshStore {
    pub fn new(remote: Remote, timeout: Duration) -> SshStore {
        SshStore { remote, timeout }
    }
}

impl FileStore for SshStore {
    async fn list_services(&self, dir: &Path) -> Result<Vec<Entry>, StoreError> {
        // One line per entry: l (symlink), f (regular) or o (other), the
        // name, then `ok BASE64`, `irregular KIND…` or `unreadable`.
        let script = format!(
            "cd -- {dir} 2>/dev/null || {{ echo ORCH-END; exit 0; }}\n\
             for f in *.service *.slice; do\n\
             \x20 case $f in *[!A-Za-z0-9:_.@\\\\-]*) continue ;; esac\n\
             \x20 if [ -L \"$f\" ]; then t=l; elif [ -f \"$f\" ]; then t=f; elif [ -e \"$f\" ]; then t=o; else continue; fi\n\
             \x20 if [ -f \"$f\" ] && [ -r \"$f\" ]; then printf '%s %s ok ' \"$t\" \"$f\"; head -c {max} < \"$f\" | base64 -w0 || exit 1; printf '\\n'\n\
             \x20 elif [ -f \"$f\" ]; then printf '%s %s unreadable\\n' \"$t\" \"$f\"\n\
             \x20 elif [ -e \"$f\" ]; then printf '%s %s irregular %s\\n' \"$t\" \"$f\" \"$(stat -L -c %F -- \"$f\")\"\n\
             \x20 fi\n\
             done\n\
             echo ORCH-END\n",
            dir = sq_path(dir),
            max = MAX_FILE_BYTES + 1,
        );
        let what = "read the unit folder";
        let out = self.run(what, &script).await?;
        let mut entries = Vec::new();
        for line in out.lines().take_while(|l| *l != "ORCH-END") {
            let mut words = line.splitn(4, ' ');
            let (Some(t), Some(name), Some(status)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            let symlink = t == "l";
            let content = match status {
                "ok" => {
                    let bytes = base64_decode(words.next().unwrap_or(""))
                        .ok_or_else(|| self.fail(what, "bad base64"))?;
                    if bytes.len() as u64 > MAX_FILE_BYTES {
                        Err(Unread::TooLarge)
                    } else {
                        Ok(bytes)
                    }
                }
                "irregular" => {
                    let kind = FileKind::from_stat(words.next().unwrap_or(""));
                    Err(Unread::Irregular(if symlink {
                        format!("a symbolic link to {kind}")
                    } else {
                        kind.to_string()
                    }))
                }
                _ => Err(Unread::Unreadable("permission denied".into())),
            };
            entries.push(Entry {
                name: name.to_string(),
                symlink,
                content,
            });
        }
        // One glob per suffix: sorted as the local store's listing is.
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    async fn read(&self, path: &Path, max: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        let script = format!(
            "{SHELL}[ -e {d} ] || [ -L {d} ] || {{ echo ORCH-NONE; exit 0; }}\n\
             orch_dir {d} read\n\
             [ -e {p} ] || [ -L {p} ] || {{ echo ORCH-NONE; exit 0; }}\n\
             orch_file {p}\n\
             head -c {over} < {p} | base64 -w0 || exit 1; echo; echo ORCH-FOUND\n",
            d = sq_path(dir),
            p = sq_path(path),
            over = max + 1,
        );
        let what = format!("read {}", path.display());
        let out = self.run_allowing(&what, &script, UNSAFE).await?;
        self.refusal(&out, dir, path)?;
        let mut lines = out.lines();
        match (lines.next(), lines.next()) {
            (Some("ORCH-NONE"), _) => Ok(None),
            (Some(b64), Some("ORCH-FOUND")) => {
                let bytes = base64_decode(b64).ok_or_else(|| self.fail(&what, "bad base64"))?;
                if bytes.len() as u64 > max {
                    return Err(StoreError::TooLarge {
                        path: path.to_path_buf(),
                        host: Some(self.describe()),
                        max,
                    });
                }
                Ok(Some(bytes))
            }
            _ => Err(self.fail(&what, "unexpected answer")),
        }
    }

    async fn write_files(
        &self,
        dir: &Path,
        files: &[(PathBuf, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let mine = tmp::my_glob();
        let mut script = format!(
            "set -e\numask 022\nmkdir -p -- {d}\ncd -- {d}\n\
             # Every `>` creates a new file (O_EXCL), never writes through a planted link.\n\
             set -C\n",
            d = sq_path(dir)
        );
        // Nothing may be renamed over a folder: checked before anything is written.
        for (i, (path, _)) in files.iter().enumerate() {
            script.push_str(&format!(
                "if [ -d {p} ] && [ ! -L {p} ]; then echo 'ORCH-FOLDER {i}'; exit 6; fi\n",
                p = sq_path(path),
            ));
        }
        let mut renames = String::new();
        for (i, (path, bytes)) in files.iter().enumerate() {
            let t = sq(&tmp::numbered(i));
            let expected = crate::render::hash_bytes(bytes);
            script.push_str(&format!(
                "rm -f -- {t}\nbase64 -d > {t} <<'ORCH_EOF'\n{data}\nORCH_EOF\n\
                 chmod 644 {t}\n\
                 h=$(sha256sum < {t}); h=${{h%% *}}\n\
                 if [ \"$h\" != {expected} ]; then rm -f -- {mine}; echo \"orch: {name}: the written copy has sha256 $h, expected {expected}\" >&2; exit 3; fi\n",
                data = base64_encode(bytes),
                name = path.display(),
            ));
            // -T: a link to a folder is replaced, never moved into.
            renames.push_str(&format!("mv -fT -- {t} {}\n", sq_path(path)));
        }
        // Data on disk before the names point at it; then the names.
        script.push_str(&format!("sync -- {mine} 2>/dev/null || sync\n"));
        script.push_str(&renames);
        script.push_str("sync -- . 2>/dev/null || sync\necho ORCH-OK\n");
        let what = format!("write unit files into {}", dir.display());
        let out = self.run_allowing(&what, &script, 6).await?;
        if let Some(i) = out.lines().find_map(|l| l.strip_prefix("ORCH-FOLDER ")) {
            let i: usize = i.trim().parse().unwrap_or(0);
            return Err(StoreError::NotAFile {
                path: files[i.min(files.len() - 1)].0.clone(),
                host: Some(self.describe()),
                kind: FileKind::Folder,
            });
        }
        if out.lines().last() != Some("ORCH-OK") {
            return Err(self.fail(&what, "the remote shell did not finish"));
        }
        Ok(())
    }

    async fn modified(
        &self,
        paths: &[PathBuf],
    ) -> Result<Vec<Option<std::time::SystemTime>>, StoreError> {
        // One line per path: seconds.nanoseconds since the epoch, or `-`.
        let mut script = String::new();
        for p in paths {
            script.push_str(&format!(
                "stat -L -c %.9Y -- {} 2>/dev/null || echo -\n",
                sq_path(p)
            ));
        }
        script.push_str("echo ORCH-END\n");
        let what = "read the unit files' times";
        let out = self.run(what, &script).await?;
        let lines: Vec<&str> = out.lines().take_while(|l| *l != "ORCH-END").collect();
        if lines.len() != paths.len() {
            return Err(self.fail(
                what,
                format!("{} lines for {} files", lines.len(), paths.len()),
            ));
        }
        lines
            .into_iter()
            .map(|l| match l.trim() {
                "-" => Ok(None),
                t => parse_epoch(t)
                    .map(Some)
                    .ok_or_else(|| self.fail(what, format!("not a time: {t}"))),
            })
            .collect()
    }

    async fn remove_files(&self, dir: &Path, paths: &[PathBuf]) -> Result<(), StoreError> {
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

    async fn remove_leftovers(&self, dir: &Path) {
        let script = format!(
            "cd -- {} 2>/dev/null || exit 0\nrm -f -- {}\n",
            sq_path(dir),
            tmp::GLOB
        );
        if let Err(e) = self.run("remove leftover temporary files", &script).await {
            tracing::warn!(error = %e, "cannot remove leftover temporary files");
        }
    }

    async fn mask(&self, dir: &Path, units: &[String]) -> Result<bool, StoreError> {
        let paths = unit_paths(dir, units)?;
        let mut script = format!(
            "set -e\nmkdir -p -- {d}\ncd -- {d}\nchanged=no\n",
            d = sq_path(dir)
        );
        for (i, path) in paths.iter().enumerate() {
            script.push_str(&format!(
                "if [ -L {p} ] && [ \"$(readlink {p})\" = /dev/null ]; then :\n\
                 elif [ -e {p} ] || [ -L {p} ]; then echo ORCH-CONFLICT {p}; exit 4\n\
                 else rm -f -- {tmp}; ln -s /dev/null {tmp}; mv -fT -- {tmp} {p}; changed=yes; fi\n",
                p = sq_path(path),
                tmp = sq(&tmp::mask(i)),
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

    async fn unmask(&self, dir: &Path, units: &[String]) -> Result<bool, StoreError> {
        let mut script = String::from("set -e\nchanged=no\n");
        for path in &unit_paths(dir, units)? {
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

    /// The lock is held by an SSH session running `flock` until the
    /// returned [`Lock`] is dropped (or orch dies, which closes the session).
    async fn lock(&self, path: &Path) -> Result<Result<Lock, Held>, StoreError> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        // The checks make the folder orch's alone, so the path cannot be
        // swapped for a link between them and the redirections.
        let script = format!(
            "{SHELL}umask 022\nmkdir -p -- {d} || exit 1\norch_dir {d}\norch_file {p}\n\
             exec 9>>{p} || exit 1\n\
             if flock -n 9; then printf '%s\\n' {me} > {p}; echo ORCH-LOCKED; cat >/dev/null\n\
             else echo ORCH-HELD; head -c 4096 {p}; echo; echo ORCH-END; fi\n",
            d = sq_path(dir),
            p = sq_path(path),
            me = sq(&lock_holder_text()),
        );
        let what = format!("lock {}", path.display());
        let mut child = self.session(&what)?;
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (first, rest) =
            tokio::time::timeout(self.timeout, first_answer(&mut stdin, stdout, &script))
                .await
                .map_err(|_| self.fail(&what, format!("no answer within {:?}", self.timeout)))?
                .map_err(|e| self.fail(&what, e.to_string()))?;
        match first.as_deref() {
            Some("ORCH-LOCKED") => Ok(Ok(Lock {
                _held: LockInner::Remote {
                    _session: child,
                    _stdin: stdin,
                },
            })),
            Some("ORCH-HELD") => Ok(Err(Held(holder_or_unknown(&rest)))),
            Some(l) if l.starts_with("ORCH-UNSAFE ") => {
                Err(self.refusal(l, dir, path).unwrap_err())
            }
            _ => {
                let err = stderr_of(&mut child).await;
                Err(self.fail(&what, format!("the session ended: {}", err.trim())))
            }
        }
    }

    fn describe(&self) -> String {
        self.remote.destination.clone()
    }
}

/// Sends the lock script; its first line, and with `ORCH-HELD` the holder.
async fn first_answer(
    stdin: &mut tokio::process::ChildStdin,
    stdout: tokio::process::ChildStdout,
    script: &str,
) -> std::io::Result<(Option<String>, String)> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut lines = tokio::io::BufReader::new(stdout).lines();
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
    Ok((first, rest.join(" ")))
}

async fn stderr_of(child: &mut tokio::process::Child) -> String {
    use tokio::io::AsyncReadExt;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = tokio::time::timeout(Duration::from_millis(500), e.read_to_string(&mut err)).await;
    }
    err
}

impl SshStore {
    fn fail(&self, action: &str, detail: impl Into<String>) -> StoreError {
        StoreError::Remote {
            host: self.describe(),
            action: action.to_string(),
            detail: detail.into(),
        }
    }

    /// The refusal an `ORCH-UNSAFE` line of `out` reports, if any.
    fn refusal(&self, out: &str, dir: &Path, file: &Path) -> Result<(), StoreError> {
        match out.lines().find(|l| l.starts_with("ORCH-UNSAFE ")) {
            None => Ok(()),
            Some(l) => Err(parse_unsafe(l, dir, file, &self.describe())
                .unwrap_or_else(|| self.fail("check the state folder", l.to_string()))),
        }
    }

    /// `ssh … DEST sh -s` with every standard stream piped; killed when dropped.
    fn session(&self, action: &str) -> Result<tokio::process::Child, StoreError> {
        let (program, args) = self.remote.run("sh -s");
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
        use tokio::io::AsyncWriteExt;
        let mut child = self.session(action)?;
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
            tokio::join!(feed, child.wait_with_output())
        };
        let (fed, out) = tokio::time::timeout(self.timeout, session)
            .await
            .map_err(|_| self.fail(action, format!("no answer within {:?}", self.timeout)))?;
        let out = out.map_err(|e| self.fail(action, e.to_string()))?;
        let code = out.status.code();
        if code != Some(0) && code != Some(ok_code) {
            return Err(self.fail(action, exit_detail(&self.remote.ssh[0], code, &out.stderr)));
        }
        if let Err(e) = fed {
            return Err(self.fail(action, format!("cannot send the script: {e}")));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn exit_detail(program: &str, code: Option<i32>, stderr: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(stderr);
    let detail = stderr.trim();
    format!(
        "{program} exited with {}{}",
        code.map_or("a signal".to_string(), |c| format!("status {c}")),
        if detail.is_empty() {
            String::new()
        } else {
            format!(": {detail}")
        }
    )
}

/// A word the remote shell reads literally.
pub fn sq(s: &str) -> String {
    // Every value reaching here was checked for control characters (and
    // NUL) by the model, so quoting cannot fail.
    shlex::try_quote(s)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| format!("'{}'", s.replace('\'', r"'\''")))
}

/// `SECONDS[.FRACTION]` since the epoch, as `stat -c %.9Y` prints it.
fn parse_epoch(t: &str) -> Option<std::time::SystemTime> {
    let (secs, frac) = t.split_once('.').unwrap_or((t, "0"));
    let secs: u64 = secs.parse().ok()?;
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: u32 = digits.parse().ok()?;
    Some(std::time::UNIX_EPOCH + Duration::new(secs, nanos))
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
    fn stat_times_parse_to_the_nanosecond() {
        let t = parse_epoch("1796281246.021044116").unwrap();
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap(),
            Duration::new(1796281246, 21044116)
        );
        assert_eq!(
            parse_epoch("12.5").unwrap(),
            std::time::UNIX_EPOCH + Duration::from_millis(12500)
        );
        assert_eq!(
            parse_epoch("12").unwrap(),
            std::time::UNIX_EPOCH + Duration::from_secs(12)
        );
        assert!(parse_epoch("soon").is_none());
    }

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

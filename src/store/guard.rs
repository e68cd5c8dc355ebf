//! The checks that keep state files safe, decided once: the local store
//! applies them to `lstat`, the SSH store's shell prints the same facts
//! (`stat -c`) and [`judge_dir`] words the refusal, so both say the same.

use std::fmt;
use std::path::Path;

use super::StoreError;

/// The type of a file system entry, for decisions and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Folder,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Other,
}

impl FileKind {
    pub fn of(t: std::fs::FileType) -> FileKind {
        use std::os::unix::fs::FileTypeExt;
        if t.is_symlink() {
            FileKind::Symlink
        } else if t.is_file() {
            FileKind::Regular
        } else if t.is_dir() {
            FileKind::Folder
        } else if t.is_fifo() {
            FileKind::Fifo
        } else if t.is_socket() {
            FileKind::Socket
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else {
            FileKind::Other
        }
    }

    /// From GNU `stat -c %F`.
    pub fn from_stat(words: &str) -> FileKind {
        match words.trim() {
            "regular file" | "regular empty file" => FileKind::Regular,
            "directory" => FileKind::Folder,
            "symbolic link" => FileKind::Symlink,
            "fifo" => FileKind::Fifo,
            "socket" => FileKind::Socket,
            "character special file" => FileKind::CharDevice,
            "block special file" => FileKind::BlockDevice,
            _ => FileKind::Other,
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Regular => "a regular file",
            FileKind::Folder => "a folder",
            FileKind::Symlink => "a symbolic link",
            FileKind::Fifo => "a FIFO",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Other => "a special file",
        })
    }
}

/// What is known of a state folder, by `lstat` or `stat -c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirFacts {
    pub kind: FileKind,
    pub uid: u32,
    pub mode: u32,
    /// The mode of the folder holding it.
    pub parent_mode: u32,
    /// orch's effective user.
    pub euid: u32,
    /// Only to read from (status): root's folder is safe to read too.
    pub read_only: bool,
}

/// A state folder must be a real folder, orch's user's, writable by no one
/// else, in a folder where no one else can rename it (not writable by
/// others, or sticky like /tmp): otherwise another user could plant a
/// symlink as the lock or the journal, or swap the folder between orch's
/// check and its open.
pub fn judge_dir(path: &Path, f: DirFacts, host: Option<&str>) -> Result<(), StoreError> {
    let writable = |mode: u32| mode & 0o022 != 0;
    let reason = if f.kind != FileKind::Folder {
        format!("it is {}, not a folder", f.kind)
    } else if f.uid != f.euid && !(f.read_only && f.uid == 0) {
        format!(
            "the state folder is owned by uid {}, not by orch's user (uid {})",
            f.uid, f.euid
        )
    } else if writable(f.mode) {
        format!(
            "the state folder is writable by group or others (mode {:04o}); run `chmod go-w` on it",
            f.mode & 0o7777
        )
    } else if writable(f.parent_mode) && f.parent_mode & 0o1000 == 0 {
        format!(
            "the folder holding it is writable by group or others without the sticky bit (mode {:04o})",
            f.parent_mode & 0o7777
        )
    } else {
        return Ok(());
    };
    Err(StoreError::Unsafe {
        path: path.to_path_buf(),
        host: host.map(str::to_string),
        reason,
    })
}

/// A state file must be a regular file, never followed through a link.
pub fn judge_file(path: &Path, kind: FileKind, host: Option<&str>) -> Result<(), StoreError> {
    if kind == FileKind::Regular {
        return Ok(());
    }
    Err(StoreError::Unsafe {
        path: path.to_path_buf(),
        host: host.map(str::to_string),
        reason: format!(
            "it is {}, not a regular file; orch does not follow it",
            kind
        ),
    })
}

/// Shell functions for the SSH store. `orch_dir D [read]` and `orch_file F` print
/// `ORCH-UNSAFE dir EUID UID MODE PARENT-MODE KIND…` or `ORCH-UNSAFE file KIND…` and
/// exit 5 when the check fails, for [`parse_unsafe`]; `stat` without `-L`
/// never follows a link.
pub const SHELL: &str = r#"orch_dir() {
  ro=${2:-}
  set -- $(id -u) $(stat -c '%u %a' -- "$1") $(stat -c %a -- "$(dirname -- "$1")") $(stat -c %F -- "$1")
  bad=no
  [ "$1" = "$2" ] || { [ "$ro" = read ] && [ "$2" = 0 ]; } || bad=yes
  case $3 in *[2367]? | *[2367]) bad=yes ;; esac
  case $4 in [1357]???) ;; *[2367]? | *[2367]) bad=yes ;; esac
  [ "$5" = directory ] && [ $# -eq 5 ] || bad=yes
  if [ $bad = yes ]; then echo "ORCH-UNSAFE dir${ro:+-$ro} $*"; exit 5; fi
}
orch_file() {
  [ -e "$1" ] || [ -L "$1" ] || return 0
  set -- $(stat -c '%F' -- "$1") || exit 1
  case "$*" in "regular file" | "regular empty file") return 0 ;; esac
  echo "ORCH-UNSAFE file $*"; exit 5
}
"#;

/// The refusal a line of [`SHELL`] reports, worded by [`judge_dir`] or
/// [`judge_file`].
pub fn parse_unsafe(line: &str, dir: &Path, file: &Path, host: &str) -> Option<StoreError> {
    let rest = line.strip_prefix("ORCH-UNSAFE ")?;
    if let Some(kind) = rest.strip_prefix("file ") {
        return judge_file(file, FileKind::from_stat(kind), Some(host)).err();
    }
    // `dir-read`: checked only to be read from (root's folder is safe).
    let (read_only, rest) = match rest.strip_prefix("dir-read ") {
        Some(r) => (true, r),
        None => (false, rest.strip_prefix("dir ")?),
    };
    let mut w = rest.splitn(5, ' ');
    let euid = w.next()?.parse().ok()?;
    let uid = w.next()?.parse().ok()?;
    let mode = u32::from_str_radix(w.next()?, 8).ok()?;
    let parent_mode = u32::from_str_radix(w.next()?, 8).ok()?;
    let kind = FileKind::from_stat(w.next().unwrap_or(""));
    let facts = DirFacts {
        kind,
        uid,
        mode,
        parent_mode,
        euid,
        read_only,
    };
    judge_dir(dir, facts, Some(host)).err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    fn shell(script: &str) -> (Option<i32>, String) {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{SHELL}{script}"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    #[test]
    fn shell_and_rust_refuse_the_same_folders() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("state");
        std::fs::create_dir(&d).unwrap();
        let q = super::super::sq(&d.to_string_lossy());
        for (mode, ok) in [
            (0o755, true),
            (0o700, true),
            (0o775, false),
            (0o757, false),
            (0o1777, false),
        ] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
            let (code, out) = shell(&format!("orch_dir {q} && echo OK"));
            if ok {
                assert_eq!((code, out.trim()), (Some(0), "OK"), "mode {mode:o}");
            } else {
                assert_eq!(code, Some(5), "mode {mode:o}: {out}");
                let e = parse_unsafe(out.trim(), &d, &d, "h").expect("a refusal");
                assert!(e.to_string().contains("writable by group or others"), "{e}");
            }
        }
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        let (code, out) = shell(&format!(
            "orch_dir {}",
            super::super::sq(&link.to_string_lossy())
        ));
        assert_eq!(code, Some(5));
        let e = parse_unsafe(out.trim(), &link, &link, "h").unwrap();
        assert!(
            e.to_string().contains("a symbolic link, not a folder"),
            "{e}"
        );
    }

    #[test]
    fn shell_refuses_a_linked_or_special_file() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("lock");
        let q = super::super::sq(&f.to_string_lossy());
        assert_eq!(
            shell(&format!("orch_file {q} && echo OK")).1.trim(),
            "OK",
            "absent is fine"
        );
        std::fs::write(&f, "").unwrap();
        assert_eq!(shell(&format!("orch_file {q} && echo OK")).1.trim(), "OK");
        std::fs::remove_file(&f).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &f).unwrap();
        let (code, out) = shell(&format!("orch_file {q}"));
        assert_eq!(code, Some(5));
        let e = parse_unsafe(out.trim(), t.path(), &f, "h").unwrap();
        assert!(
            e.to_string().contains("symbolic link, not a regular file"),
            "{e}"
        );
    }

    #[test]
    fn a_read_check_of_root_s_folder_is_worded_as_the_local_one() {
        let d = Path::new("/s");
        // Root's folder, read by uid 65534: the shell reports it only when
        // it is unsafe for reading too (here: writable by others).
        let e = parse_unsafe("ORCH-UNSAFE dir-read 65534 0 777 755 directory", d, d, "h").unwrap();
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        assert!(
            parse_unsafe("ORCH-UNSAFE dir-read 65534 0 755 755 directory", d, d, "h").is_none()
        );
        let e = parse_unsafe("ORCH-UNSAFE dir 65534 0 755 755 directory", d, d, "h").unwrap();
        assert!(e.to_string().contains("owned by uid 0"), "{e}");
    }

    #[test]
    fn a_foreign_owner_is_refused() {
        let facts = DirFacts {
            kind: FileKind::Folder,
            uid: 1000,
            mode: 0o755,
            parent_mode: 0o755,
            euid: 0,
            read_only: false,
        };
        let e = judge_dir(Path::new("/s"), facts, None).unwrap_err();
        assert!(e.to_string().contains("owned by uid 1000"), "{e}");
        // Root's folder, read by another user (a read-only status): safe.
        let roots = DirFacts {
            uid: 0,
            euid: 65534,
            ..facts
        };
        assert!(judge_dir(Path::new("/s"), roots, None).is_err());
        let reading = DirFacts {
            read_only: true,
            ..roots
        };
        assert!(judge_dir(Path::new("/s"), reading, None).is_ok());
        let others = DirFacts {
            uid: 1000,
            ..reading
        };
        assert!(judge_dir(Path::new("/s"), others, None).is_err());
        let writable = DirFacts {
            mode: 0o777,
            ..reading
        };
        assert!(judge_dir(Path::new("/s"), writable, None).is_err());
        let mine = DirFacts { uid: 0, ..facts };
        assert!(judge_dir(Path::new("/s"), mine, None).is_ok());
        let sticky = DirFacts {
            parent_mode: 0o1777,
            ..mine
        };
        assert!(
            judge_dir(Path::new("/s"), sticky, None).is_ok(),
            "like /tmp"
        );
        let open = DirFacts {
            parent_mode: 0o777,
            ..mine
        };
        let e = judge_dir(Path::new("/s"), open, None).unwrap_err();
        assert!(e.to_string().contains("holding it is writable"), "{e}");
    }
}

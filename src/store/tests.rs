//! The same cases against both stores: [`SshStore`] through a fake `ssh`
//! that runs the script with `sh` on this machine.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

struct Both {
    dir: tempfile::TempDir,
    stores: Vec<Store>,
}

fn both() -> Both {
    let dir = tempfile::tempdir().unwrap();
    let ssh = dir.path().join("fake-ssh");
    std::fs::write(
        &ssh,
        "#!/bin/sh\nwhile [ \"$1\" != -- ]; do shift; done; shift 2\nexec sh -c \"$*\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let remote = Remote::parse("box", &ssh.to_string_lossy()).unwrap();
    Both {
        dir,
        stores: vec![Store::local(), Store::ssh(remote, Duration::from_secs(10))],
    }
}

impl Both {
    /// A fresh folder for store `i`.
    fn folder(&self, i: usize, name: &str) -> PathBuf {
        let d = self.dir.path().join(format!("{i}-{name}"));
        std::fs::create_dir(&d).unwrap();
        d
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_symlinked_lock_is_refused_and_its_target_untouched() {
    let b = both();
    for (i, s) in b.stores.iter().enumerate() {
        let state = b.folder(i, "state");
        let victim = b.dir.path().join(format!("{i}-victim"));
        std::fs::write(&victim, "precious").unwrap();
        symlink(&victim, state.join("lock")).unwrap();
        let e = s.lock(&state.join("lock")).await.err().expect("refused");
        assert!(
            matches!(e, StoreError::Unsafe { .. }),
            "{}: {e}",
            s.describe()
        );
        assert!(
            e.to_string().contains("lock") && e.to_string().contains("symbolic link"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        // A regular lock works, and a second taker learns the holder.
        std::fs::remove_file(state.join("lock")).unwrap();
        let held = s.lock(&state.join("lock")).await.unwrap().unwrap();
        let Held(holder) = s.lock(&state.join("lock")).await.unwrap().err().unwrap();
        assert!(
            holder.contains(&format!("PID {}", std::process::id())),
            "{holder}"
        );
        drop(held);
    }
}

#[tokio::test]
async fn a_state_folder_others_can_write_is_refused() {
    let b = both();
    for (i, s) in b.stores.iter().enumerate() {
        let state = b.folder(i, "state");
        std::fs::write(state.join("maintenance.json"), "{}").unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        for e in [
            s.lock(&state.join("lock")).await.err().unwrap(),
            s.read(&state.join("maintenance.json"), MAX_FILE_BYTES)
                .await
                .unwrap_err(),
        ] {
            let text = e.to_string();
            assert!(matches!(e, StoreError::Unsafe { .. }), "{text}");
            assert!(
                text.contains(&state.display().to_string())
                    && text.contains("writable by group or others"),
                "{text}"
            );
        }
        assert!(!state.join("lock").exists(), "nothing may be created");
        // A linked state folder is refused too.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = b.dir.path().join(format!("{i}-linked"));
        symlink(&state, &link).unwrap();
        let e = s
            .read(&link.join("maintenance.json"), MAX_FILE_BYTES)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not a folder"), "{e}");
        assert_eq!(
            s.read(&state.join("maintenance.json"), MAX_FILE_BYTES)
                .await
                .unwrap()
                .unwrap(),
            b"{}"
        );
        assert_eq!(
            s.read(&state.join("absent.json"), MAX_FILE_BYTES)
                .await
                .unwrap(),
            None
        );
    }
}

#[tokio::test]
async fn a_state_file_that_is_a_link_or_too_large_is_refused() {
    let b = both();
    for (i, s) in b.stores.iter().enumerate() {
        let state = b.folder(i, "state");
        symlink("/etc/hostname", state.join("maintenance.json")).unwrap();
        let e = s
            .read(&state.join("maintenance.json"), MAX_FILE_BYTES)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        std::fs::write(
            state.join("big.json"),
            vec![b' '; MAX_FILE_BYTES as usize + 1],
        )
        .unwrap();
        let e = s
            .read(&state.join("big.json"), MAX_FILE_BYTES)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::TooLarge { .. }), "{e}");
    }
}

/// Name, symlink, content.
type Seen<'a> = (&'a str, bool, Result<&'a [u8], &'a Unread>);

#[tokio::test]
async fn unit_folder_reads_only_regular_files_and_never_hang() {
    let b = both();
    for (i, s) in b.stores.iter().enumerate() {
        let units = b.folder(i, "units");
        nix::unistd::mkfifo(&units.join("other.service"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        symlink("/dev/zero", units.join("zero.service")).unwrap();
        std::fs::write(
            units.join("big.service"),
            vec![b'#'; MAX_FILE_BYTES as usize + 1],
        )
        .unwrap();
        std::fs::write(units.join("plain.service"), "[Unit]\n").unwrap();
        std::fs::write(units.join("real.txt"), "x").unwrap();
        // The deployment's slice is orch's too; other unit types are not.
        std::fs::write(units.join("app.slice"), "[Slice]\n").unwrap();
        std::fs::write(units.join("app.socket"), "[Socket]\n").unwrap();
        symlink(units.join("plain.service"), units.join("alias.service")).unwrap();
        let started = Instant::now();
        let entries = s.list_services(&units).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        let got: Vec<Seen> = entries
            .iter()
            .map(|e| {
                (
                    e.name.as_str(),
                    e.symlink,
                    e.content.as_ref().map(|v| v.as_slice()),
                )
            })
            .collect();
        let fifo = Unread::Irregular("a FIFO".into());
        let zero = Unread::Irregular("a symbolic link to a character device".into());
        assert_eq!(
            got,
            vec![
                ("alias.service", true, Ok(&b"[Unit]\n"[..])),
                ("app.slice", false, Ok(&b"[Slice]\n"[..])),
                ("big.service", false, Err(&Unread::TooLarge)),
                ("other.service", false, Err(&fifo)),
                ("plain.service", false, Ok(&b"[Unit]\n"[..])),
                ("zero.service", true, Err(&zero)),
            ],
            "{}",
            s.describe()
        );
    }
}

#[tokio::test]
async fn a_write_that_cannot_finish_changes_nothing() {
    let b = both();
    for (i, s) in b.stores.iter().enumerate() {
        let units = b.folder(i, "units");
        std::fs::write(units.join("a.service"), "old a").unwrap();
        std::fs::create_dir(units.join("c.service")).unwrap();
        let files: Vec<(PathBuf, Vec<u8>)> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| {
                (
                    units.join(format!("{n}.service")),
                    format!("new {n}").into_bytes(),
                )
            })
            .collect();
        let before = listing(&units);
        let e = s.write_files(&units, &files).await.unwrap_err();
        assert!(
            matches!(&e, StoreError::NotAFile { path, .. } if path.ends_with("c.service")),
            "{}: {e}",
            s.describe()
        );
        assert_eq!(
            listing(&units),
            before,
            "{}: the folder changed",
            s.describe()
        );
        assert_eq!(
            std::fs::read_to_string(units.join("a.service")).unwrap(),
            "old a"
        );

        std::fs::remove_dir(units.join("c.service")).unwrap();
        s.write_files(&units, &files).await.unwrap();
        assert_eq!(
            listing(&units),
            ["a.service", "b.service", "c.service", "d.service"]
        );
        assert_eq!(
            std::fs::read_to_string(units.join("c.service")).unwrap(),
            "new c"
        );
    }
}

#[tokio::test]
async fn a_state_folder_others_could_rename_is_refused_unless_sticky() {
    let b = both();
    for (i, s) in b.stores.iter().enumerate() {
        let up = b.folder(i, "var");
        let lock = up.join("fx").join("lock");
        std::fs::set_permissions(&up, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = s.lock(&lock).await.err().expect("refused");
        assert!(
            e.to_string().contains("holding it is writable"),
            "{}: {e}",
            s.describe()
        );
        std::fs::set_permissions(&up, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(s.lock(&lock).await.unwrap().is_ok(), "sticky, like /tmp");
    }
}

#[tokio::test]
async fn modification_times_are_exact_and_absent_files_none() {
    let b = both();
    for (i, s) in b.stores.iter().enumerate() {
        let units = b.folder(i, "times");
        let (a, gone) = (units.join("a.service"), units.join("gone.service"));
        std::fs::write(&a, "[Unit]\n").unwrap();
        // A time with nanoseconds, as a write on a modern file system has.
        let t = std::time::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        std::fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(t)
            .unwrap();
        let got = s.modified(&[a.clone(), gone, a.clone()]).await.unwrap();
        assert_eq!(got, [Some(t), None, Some(t)], "{}", s.describe());
        assert_eq!(s.modified(&[]).await.unwrap(), []);
    }
}

/// Many files (the one-syncfs path): a failure after every file is staged
/// and synced, before the first rename, leaves the old set exactly as it was
/// and no temporary file behind; the same write then lands whole.
#[tokio::test]
async fn a_batched_write_failing_midway_keeps_the_old_set() {
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    std::fs::create_dir(&units).unwrap();
    for i in 0..50 {
        std::fs::write(units.join(format!("w{i}.service")), format!("old {i}")).unwrap();
    }
    let files: Vec<(PathBuf, Vec<u8>)> = (0..200)
        .map(|i| {
            (
                units.join(format!("w{i}.service")),
                format!("new {i}").into_bytes(),
            )
        })
        .collect();
    let before = listing(&units);
    let s = Store::local();
    super::local::FAIL_WRITE_OF.with(|f| f.set(Some(files.len())));
    let e = s.write_files(&units, &files).await.unwrap_err();
    super::local::FAIL_WRITE_OF.with(|f| f.set(None));
    assert!(e.to_string().contains("injected failure"), "{e}");
    assert_eq!(listing(&units), before, "the folder changed");
    for i in 0..50 {
        assert_eq!(
            std::fs::read_to_string(units.join(format!("w{i}.service"))).unwrap(),
            format!("old {i}")
        );
    }
    s.write_files(&units, &files).await.unwrap();
    assert_eq!(listing(&units).len(), 200);
    for i in [0, 49, 50, 199] {
        assert_eq!(
            std::fs::read_to_string(units.join(format!("w{i}.service"))).unwrap(),
            format!("new {i}")
        );
    }
}

#[tokio::test]
async fn a_state_file_is_read_up_to_the_bound_the_caller_gives() {
    let b = both();
    for (i, s) in b.stores.iter().enumerate() {
        let state = b.folder(i, "state");
        let two_mib = vec![b'x'; 2 * MAX_FILE_BYTES as usize];
        let file = state.join("generation-1.json");
        std::fs::write(&file, &two_mib).unwrap();
        let read = s.read(&file, 4 * MAX_FILE_BYTES).await.unwrap();
        assert_eq!(read.unwrap(), two_mib, "{}", s.describe());
        let e = s.read(&file, MAX_FILE_BYTES).await.unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::TooLarge {
                    max: MAX_FILE_BYTES,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("generation-1.json"), "{e}");
    }
}

//! `orch install` against a real systemd (PID 1 in a throwaway container).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::bus::{bus, Bus};
use crate::common::{json, orch, rt};
use crate::support::Container;
use futures_util::StreamExt;

const WORKERS: usize = 6;

fn config(dir: &Path, count: usize) -> PathBuf {
    let path = dir.join("orch.toml");
    std::fs::write(
        &path,
        format!(
            r#"[deployment]
name = "demo"

[master]
description = "demo master"
exec_start = "/bin/sleep infinity"
stop_timeout = "5s"

[[workers]]
kind = "generic"
count = {}
exec_start = "/bin/sleep infinity"
stop_timeout = "5s"

[[workers]]
kind = "pusher"
count = 2
exec_start = "/bin/sleep infinity"
stop_timeout = "5s"
"#,
            count - 2
        ),
    )
    .unwrap();
    path
}

fn worker_units(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let kind = if i < count - 2 { "generic" } else { "pusher" };
            format!("demo-worker-{i}-{kind}.service")
        })
        .collect()
}

/// Runs `f` while counting systemd's `Reloading(true)` signals.
fn count_reloads(c: &Container, f: impl FnOnce() -> Output) -> (Output, usize) {
    let rt = rt();
    let sd = rt.block_on(bus(c));
    let mut stream = rt.block_on(async {
        let s = sd.manager.receive_reloading().await.unwrap();
        sd.manager.subscribe().await.unwrap();
        s
    });
    let out = f();
    let n = rt.block_on(async {
        let mut n = 0;
        // A reload signal is sent before Reload returns; a short grace period catches stragglers.
        while let Ok(Some(sig)) =
            tokio::time::timeout(Duration::from_millis(500), stream.next()).await
        {
            if sig.args().unwrap().active {
                n += 1;
            }
        }
        n
    });
    (out, n)
}

/// Every regular file in `dir`: name, bytes and modification time.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (
                name,
                std::fs::read(e.path()).unwrap(),
                e.metadata().unwrap().modified().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn install_is_loaded_wired_idempotent_and_prunes() {
    let c = Container::boot();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), WORKERS);
    let workers = worker_units(WORKERS);

    // A dry run first: changes pending, exit 4 as `plan`, nothing written.
    let o = orch(&c, &cfg, &["install", "--dry-run"]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "install --dry-run with changes pending: {o:?}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("changes pending"));

    // First install: everything created, systemd reloaded.
    let (o, reloads) = count_reloads(&c, || orch(&c, &cfg, &["install", "--output", "json"]));
    assert!(
        o.status.success(),
        "install failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = json(&o);
    assert_eq!(v["changed"], true);
    assert_eq!(v["reloaded"], true);
    assert!(
        reloads >= 1,
        "the first install must reload systemd (and the detector must see it)"
    );
    // The master, the workers and the deployment's slice.
    assert_eq!(v["units"].as_array().unwrap().len(), 2 + WORKERS);

    let rt = rt();
    let sd = rt.block_on(bus(&c));
    rt.block_on(async {
        let master = sd.unit("demo.service").await.unwrap();
        assert_eq!(master.load_state().await.unwrap(), "loaded");
        let wants = master.wants().await.unwrap();
        for w in &workers {
            assert!(wants.contains(w), "master Wants= lacks {w}: {wants:?}");
            let u = sd.unit(w).await.unwrap();
            assert_eq!(u.load_state().await.unwrap(), "loaded", "{w}");
            assert_eq!(
                u.part_of().await.unwrap(),
                vec!["demo.service".to_string()],
                "{w} PartOf"
            );
            assert!(
                u.after()
                    .await
                    .unwrap()
                    .contains(&"demo.service".to_string()),
                "{w} After"
            );
        }
        assert_eq!(
            sd.manager
                .get_unit_file_state("demo.service")
                .await
                .unwrap(),
            "enabled"
        );
    });

    // Second install: nothing changes, no file is rewritten, no Reload is sent.
    let before = snapshot(c.unit_dir());
    let (o, reloads) = count_reloads(&c, || orch(&c, &cfg, &["install", "--output", "json"]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    assert_eq!(v["changed"], false, "{v}");
    assert_eq!(v["reloaded"], false, "{v}");
    assert_eq!(reloads, 0, "a no-op install must not reload systemd");
    assert_eq!(
        before,
        snapshot(c.unit_dir()),
        "unchanged files were rewritten"
    );
    let o = orch(&c, &cfg, &["install", "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "nothing to do: {o:?}");

    // Lowering the generic count removes its two highest workers and
    // renames nobody (names never shift: the pushers keep 4 and 5). A
    // running stale unit is stopped before its file goes.
    let stale: Vec<&str> = workers[2..4].iter().map(String::as_str).collect();
    rt.block_on(async {
        sd.manager.start_unit(stale[0], "replace").await.unwrap();
        wait_state(&sd, stale[0], "active").await;
    });
    let cfg = config(dir.path(), WORKERS - 2);
    let o = orch(&c, &cfg, &["plan", "--output", "json"]);
    assert_eq!(o.status.code(), Some(4));
    let v = json(&o);
    let with = |action: &str| -> Vec<String> {
        v["units"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["action"] == action)
            .map(|u| u["unit"].as_str().unwrap().to_string())
            .collect()
    };
    let mut removed = with("remove");
    removed.sort();
    assert_eq!(removed, stale, "{v}");
    assert!(with("create").is_empty(), "{v}");
    assert_eq!(
        with("update"),
        ["demo.service"],
        "master loses two Wants=: {v}"
    );
    assert_eq!(
        with("unchanged").len(),
        5,
        "four workers and the slice: {v}"
    );

    let o = orch(&c, &cfg, &["install", "--output", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for gone in &stale {
        assert!(!c.unit_dir().join(gone).exists(), "{gone} still on disk");
    }
    for w in workers.iter().filter(|w| !stale.contains(&w.as_str())) {
        assert!(c.unit_dir().join(w).exists(), "{w} missing");
    }
    rt.block_on(async {
        for gone in &stale {
            let u = sd.unit(gone).await.unwrap();
            assert_eq!(
                u.active_state().await.unwrap(),
                "inactive",
                "{gone} left running"
            );
            assert_eq!(
                u.load_state().await.unwrap(),
                "not-found",
                "{gone} still known to systemd"
            );
        }
        let wants = sd
            .unit("demo.service")
            .await
            .unwrap()
            .wants()
            .await
            .unwrap();
        assert!(
            !wants.iter().any(|w| stale.contains(&w.as_str())),
            "{wants:?}"
        );
    });
}

async fn wait_state(sd: &Bus, unit: &str, state: &str) {
    for _ in 0..100 {
        if sd.unit(unit).await.unwrap().active_state().await.unwrap() == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{unit} never became {state}");
}

#[test]
fn hand_edit_is_drift_and_kept_unless_forced() {
    let c = Container::boot();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 3);
    let o = orch(&c, &cfg, &["install"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let path = c.unit_dir().join("demo-worker-0-generic.service");
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replace("RestartSec=1s", "RestartSec=7s");
    std::fs::write(&path, &edited).unwrap();

    let o = orch(&c, &cfg, &["plan", "--output", "json"]);
    assert_eq!(o.status.code(), Some(4));
    let v = json(&o);
    let u = v["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == "demo-worker-0-generic.service")
        .unwrap();
    assert_eq!(u["action"], "drift", "{v}");
    assert!(u["reason"].as_str().unwrap().contains("by hand"));

    let before = snapshot(c.unit_dir());
    let o = orch(&c, &cfg, &["install"]);
    assert_eq!(o.status.code(), Some(1), "drift without --force must fail");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("demo-worker-0-generic.service") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        edited,
        "the hand edit was overwritten"
    );
    assert_eq!(
        before,
        snapshot(c.unit_dir()),
        "nothing may change when install refuses"
    );

    let o = orch(&c, &cfg, &["install", "--force", "--output", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("RestartSec=1s"));
    let o = orch(&c, &cfg, &["plan"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn refused_config_changes_nothing_in_systemd_or_on_disk() {
    let c = Container::boot();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 3);
    assert!(orch(&c, &cfg, &["install"]).status.success());
    let before = snapshot(c.unit_dir());
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("count = 1", "count = 0");
    std::fs::write(&cfg, text).unwrap();
    let (o, reloads) = count_reloads(&c, || orch(&c, &cfg, &["install"]));
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(reloads, 0);
    let after = snapshot(c.unit_dir());
    assert_eq!(before, after);
}

/// Every regular file and folder name in `dir`, with its bytes (empty for folders).
fn names_and_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    v.sort();
    v
}

/// Issue 13 item 7: a folder named like a unit used to let `install` update
/// the files before it, fail on it and skip the Reload. Now nothing is
/// renamed unless every file can be, and no temporary file is left.
#[test]
fn a_failed_local_install_leaves_the_folder_as_it_was() {
    let c = Container::boot();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 4);
    orch_ok_install(&c, &cfg);
    // Two more generic workers take new indexes 4 and 5 (the pushers keep 2 and 3).
    let cfg = config(dir.path(), 6);
    let blocker = c.unit_dir().join("demo-worker-4-generic.service");
    std::fs::create_dir(&blocker).unwrap();
    let before = names_and_bytes(c.unit_dir());

    let o = orch(&c, &cfg, &["install"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("demo-worker-4-generic.service") && err.contains("a folder"),
        "{err}"
    );
    let o = orch(&c, &cfg, &["install", "--force"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&blocker.display().to_string()) && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(
        names_and_bytes(c.unit_dir()),
        before,
        "a failed install changed the folder (or left a temporary file)"
    );
    let rt = rt();
    let sd = rt.block_on(bus(&c));
    rt.block_on(async {
        let master = sd.unit("demo.service").await.unwrap();
        assert!(!master.need_daemon_reload().await.unwrap());
    });
}

fn orch_ok_install(c: &Container, cfg: &Path) {
    let o = orch(c, cfg, &["install"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Issue 13 item 8: a FIFO in the unit folder made `plan` hang, and a link
/// to /dev/zero was read until memory ran out. Only regular files are read,
/// at most 1 MiB; one named like a unit is drift, naming its path.
#[test]
fn plan_reads_only_regular_files_and_ends_promptly() {
    let c = Container::boot();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 3);
    let units = c.unit_dir();
    let fifo = nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR;
    nix::unistd::mkfifo(&units.join("other.service"), fifo).unwrap();
    std::os::unix::fs::symlink("/dev/zero", units.join("zero.service")).unwrap();
    nix::unistd::mkfifo(&units.join("demo-worker-0-generic.service"), fifo).unwrap();
    std::os::unix::fs::symlink("/dev/zero", units.join("demo-worker-1-pusher.service")).unwrap();

    let t = std::time::Instant::now();
    let o = orch(&c, &cfg, &["plan", "--output", "json"]);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = json(&o);
    let unit = |name: &str| {
        v["units"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["unit"] == name)
            .unwrap_or_else(|| panic!("{name} not planned: {v}"))
            .clone()
    };
    let w0 = unit("demo-worker-0-generic.service");
    assert_eq!(w0["action"], "drift", "{v}");
    let reason = w0["reason"].as_str().unwrap();
    assert!(
        reason.contains(
            &units
                .join("demo-worker-0-generic.service")
                .display()
                .to_string()
        ) && reason.contains("a FIFO, not a regular file"),
        "{reason}"
    );
    let w1 = unit("demo-worker-1-pusher.service");
    assert_eq!(w1["action"], "drift", "{v}");
    assert!(
        w1["reason"]
            .as_str()
            .unwrap()
            .contains("symbolic link to a character device"),
        "{v}"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("other.service") && err.contains("a FIFO"),
        "{err}"
    );
    assert!(
        !v["units"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["unit"] == "other.service" || u["unit"] == "zero.service"),
        "foreign files are not orch's to plan: {v}"
    );
}

/// Issue 13 item 1: a hand-made copy of an orch unit still carrying
/// `X-Orch-Deployment=demo` was stopped, disabled and deleted as stale by
/// `install`. Its hash does not match, so it is drift: kept unless --force.
#[test]
fn a_copied_orch_unit_is_drift_not_stale() {
    let c = Container::boot();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 3);
    orch_ok_install(&c, &cfg);
    let canary = c.unit_dir().join("canary.service");
    let copy = std::fs::read_to_string(c.unit_dir().join("demo-worker-0-generic.service"))
        .unwrap()
        .replace("PartOf=demo.service\n", "")
        + "\n[Install]\nWantedBy=multi-user.target\n";
    std::fs::write(&canary, &copy).unwrap();
    assert!(c.systemctl(&["daemon-reload"]).status.success());
    let o = c.systemctl(&["enable", "--now", "canary.service"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let o = orch(&c, &cfg, &["plan", "--output", "json"]);
    let v = json(&o);
    let u = v["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == "canary.service")
        .unwrap_or_else(|| panic!("canary not reported: {v}"))
        .clone();
    assert_eq!(u["action"], "drift", "{v}");
    assert!(
        u["reason"]
            .as_str()
            .unwrap()
            .contains("X-Orch-Deployment=demo"),
        "{v}"
    );

    let o = orch(&c, &cfg, &["install"]);
    assert_eq!(o.status.code(), Some(1), "drift without --force must fail");
    assert!(String::from_utf8_lossy(&o.stderr).contains("canary.service"));
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), copy);
    let rt = rt();
    let sd = rt.block_on(bus(&c));
    rt.block_on(async {
        let u = sd.unit("canary.service").await.unwrap();
        assert_eq!(u.active_state().await.unwrap(), "active");
        assert_eq!(
            sd.manager
                .get_unit_file_state("canary.service")
                .await
                .unwrap(),
            "enabled"
        );
    });

    let o = orch(&c, &cfg, &["install", "--force", "--output", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    let u = v["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == "canary.service")
        .unwrap()
        .clone();
    assert_eq!(u["action"], "remove", "{v}");
    assert!(!canary.exists(), "--force removes it");
    rt.block_on(async {
        let u = sd.unit("canary.service").await.unwrap();
        assert_eq!(u.active_state().await.unwrap(), "inactive");
    });
}

/// Issue 13 item 2: two installs of one deployment with different worker
/// sets, started together, are serialized by the deployment's lock (the
/// second waits its turn), and the result is exactly one configuration: the
/// last one's, with none of the other's workers left.
#[test]
fn concurrent_installs_leave_exactly_one_configuration() {
    let c = Container::boot();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let write = |name: &str, kind: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[deployment]\nname = \"race\"\nstate_dir = \"{}\"\n[master]\nexec_start = \"/bin/sleep infinity\"\n[[workers]]\nkind = \"{kind}\"\ncount = 300\nexec_start = \"/bin/sleep infinity\"\n",
                state.display()
            ),
        )
        .unwrap();
        path
    };
    let (a, b) = (write("a.toml", "alpha"), write("b.toml", "beta"));
    let spawn = |cfg: &Path| {
        crate::common::orch_cmd(&c, cfg, &["install"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(&a), spawn(&b));
    let (oa, ob) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    assert!(
        oa.status.success(),
        "{}",
        String::from_utf8_lossy(&oa.stderr)
    );
    assert!(
        ob.status.success(),
        "{}",
        String::from_utf8_lossy(&ob.stderr)
    );
    let clean = |cfg: &Path| orch(&c, cfg, &["plan"]).status.code() == Some(0);
    let (ca, cb) = (clean(&a), clean(&b));
    assert!(
        ca != cb,
        "exactly one configuration must be installed (plan clean for a: {ca}, for b: {cb})"
    );
    let services = std::fs::read_dir(c.unit_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".service"))
        .count();
    assert_eq!(services, 301, "the master and one set of 300 workers");
}

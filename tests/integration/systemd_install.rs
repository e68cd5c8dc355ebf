//! `orch install` against a real systemd (PID 1 in a throwaway container).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::common::{connect, json, orch, rt};
use crate::support::Container;
use futures_util::StreamExt;
use orch::systemd::Systemd;

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
    let sd = rt.block_on(connect(c));
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
    assert_eq!(v["units"].as_array().unwrap().len(), 1 + WORKERS);

    let rt = rt();
    let sd = rt.block_on(connect(&c));
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

    // Lowering the generic count renumbers the workers after it (numbering runs
    // across blocks in file order): old generic 2 and 3 and old pushers 4 and 5
    // are stale; new pushers 2 and 3 are created. A running stale unit is stopped
    // before its file goes.
    let stale: Vec<&str> = workers[2..].iter().map(String::as_str).collect();
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
    let mut expected = stale.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    expected.sort();
    assert_eq!(removed, expected, "{v}");
    assert_eq!(
        with("create"),
        [
            "demo-worker-2-pusher.service",
            "demo-worker-3-pusher.service"
        ],
        "{v}"
    );
    assert_eq!(
        with("update"),
        ["demo.service"],
        "master loses two Wants=: {v}"
    );

    let o = orch(&c, &cfg, &["install", "--output", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for gone in &stale {
        assert!(!c.unit_dir().join(gone).exists(), "{gone} still on disk");
    }
    for w in worker_units(WORKERS - 2) {
        assert!(c.unit_dir().join(&w).exists(), "{w} missing");
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

async fn wait_state(sd: &Systemd, unit: &str, state: &str) {
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

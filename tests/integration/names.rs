//! Worker names that never shift (`[deployment] naming`): adding a kind in
//! front of others, or changing the naming, renames no installed worker
//! behind the operator's back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{json, orch, orch_ok};
use crate::support::{Container, OutputBounded};

/// `kinds`: (kind, count, port_base), in file order.
fn config(dir: &Path, naming: Option<&str>, kinds: &[(&str, usize, u16)]) -> PathBuf {
    let mut text = String::from("[deployment]\nname = \"nm\"\n");
    if let Some(n) = naming {
        text.push_str(&format!("naming = \"{n}\"\n"));
    }
    text.push_str("[master]\nexec_start = \"/bin/sleep infinity\"\n");
    for (kind, count, port) in kinds {
        text.push_str(&format!(
            "[[workers]]\nkind = \"{kind}\"\ncount = {count}\nport_base = {port}\n\
             exec_start = \"/bin/sleep infinity {{{{ port }}}}\"\n"
        ));
    }
    let path = dir.join("orch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The units of a JSON plan with `action`.
fn with(plan: &serde_json::Value, action: &str) -> Vec<String> {
    let mut v: Vec<String> = plan["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["action"] == action)
        .map(|u| u["unit"].as_str().unwrap().to_string())
        // The deployment's slice is a unit too, never a worker.
        .filter(|u| u.ends_with(".service"))
        .collect();
    v.sort();
    v
}

const BC: &[(&str, usize, u16)] = &[("b", 2, 35100), ("c", 1, 35200)];
const ABC: &[(&str, usize, u16)] = &[("a", 1, 35300), ("b", 2, 35100), ("c", 1, 35200)];

#[test]
fn a_kind_added_in_front_renames_nobody_and_plan_shows_only_creates() {
    let c = Container::boot();
    let dir = tempfile::tempdir().unwrap();
    orch_ok(&c, &config(dir.path(), None, BC), &["install"]);
    let before = ["nm-worker-0-b", "nm-worker-1-b", "nm-worker-2-c"];
    for w in before {
        assert!(c.unit_dir().join(format!("{w}.service")).exists(), "{w}");
    }

    let cfg = config(dir.path(), None, ABC);
    let o = orch(&c, &cfg, &["plan", "--output", "json"]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let plan = json(&o);
    // The new kind takes a new index; every existing worker is unchanged
    // (same name, same port, same bytes); the master only gains a Wants=.
    assert_eq!(with(&plan, "create"), ["nm-worker-3-a.service"], "{plan}");
    let unchanged: Vec<String> = before.iter().map(|w| format!("{w}.service")).collect();
    assert_eq!(with(&plan, "unchanged"), unchanged, "{plan}");
    assert_eq!(with(&plan, "update"), ["nm.service"], "{plan}");
    assert!(
        with(&plan, "remove").is_empty() && with(&plan, "rename").is_empty(),
        "{plan}"
    );

    orch_ok(&c, &cfg, &["install"]);
    let unit = std::fs::read_to_string(c.unit_dir().join("nm-worker-3-a.service")).unwrap();
    assert!(unit.contains("sleep infinity 35300"), "{unit}");
    let o = orch(&c, &cfg, &["plan", "--output", "json"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "a second plan is clean: {}",
        json(&o)
    );
}

#[test]
fn changing_the_naming_is_planned_and_installed_as_renames() {
    let c = Container::boot();
    let dir = tempfile::tempdir().unwrap();
    orch_ok(&c, &config(dir.path(), None, BC), &["install"]);

    let cfg = config(dir.path(), Some("per-kind"), BC);
    let o = orch(&c, &cfg, &["plan", "--output", "json"]);
    assert_eq!(o.status.code(), Some(4));
    let plan = json(&o);
    assert!(with(&plan, "create").is_empty(), "{plan}");
    let renames: Vec<(String, String)> = plan["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["action"] == "rename")
        .map(|u| {
            (
                u["renamed_from"].as_str().unwrap().into(),
                u["unit"].as_str().unwrap().into(),
            )
        })
        .collect();
    let pair = |a: &str, b: &str| {
        (
            format!("nm-worker-{a}.service"),
            format!("nm-worker-{b}.service"),
        )
    };
    assert_eq!(
        renames,
        [pair("0-b", "b-0"), pair("1-b", "b-1"), pair("2-c", "c-0")],
        "{plan}"
    );
    for u in plan["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["action"] == "remove")
    {
        assert!(
            u["reason"].as_str().unwrap().starts_with("renamed to "),
            "{u}"
        );
    }
    let o = orch(&c, &cfg, &["plan"]);
    let human = String::from_utf8_lossy(&o.stdout);
    assert!(
        human.contains("rename     nm-worker-0-b.service -> nm-worker-b-0.service"),
        "{human}"
    );

    orch_ok(&c, &cfg, &["install"]);
    for (old, new) in &renames {
        assert!(!c.unit_dir().join(old).exists(), "{old} still installed");
        assert!(c.unit_dir().join(new).exists(), "{new} missing");
    }
    // A renamed worker keeps its port.
    let unit = std::fs::read_to_string(c.unit_dir().join("nm-worker-b-1.service")).unwrap();
    assert!(unit.contains("sleep infinity 35101"), "{unit}");
    // Per-kind names are stable too: a kind in front changes none of them.
    let cfg = config(dir.path(), Some("per-kind"), ABC);
    let o = orch(&c, &cfg, &["plan", "--output", "json"]);
    let plan = json(&o);
    assert_eq!(with(&plan, "create"), ["nm-worker-a-0.service"], "{plan}");
    assert_eq!(with(&plan, "unchanged").len(), 3, "{plan}");
}

/// `orch render` needs no systemd: it keeps the names found in a readable
/// unit folder.
#[test]
fn render_keeps_the_names_in_a_readable_unit_folder() {
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    let render = |cfg: &Path, extra: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_orch"))
            .arg("--config")
            .arg(cfg)
            .arg("--unit-dir")
            .arg(&units)
            .args(["render", "--output", "json"])
            .args(extra)
            .env_remove("ORCH_CONFIG")
            .env_remove("ORCH_BUS")
            .output_bounded()
            .expect("run orch")
    };
    let names = |o: &Output| -> Vec<String> {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        json(o)["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["unit"].as_str().unwrap().to_string())
            .filter(|u| u.ends_with(".service"))
            .collect()
    };
    let cfg = config(dir.path(), None, ABC);
    // No folder yet: fresh indexes, in file order.
    let fresh = names(&render(&cfg, &[]));
    assert_eq!(
        fresh[1..],
        [
            "nm-worker-0-a.service",
            "nm-worker-1-b.service",
            "nm-worker-2-b.service",
            "nm-worker-3-c.service"
        ]
    );
    let out = units.to_str().unwrap();
    names(&render(&config(dir.path(), None, BC), &["--out", out]));
    let kept = names(&render(&config(dir.path(), None, ABC), &[]));
    assert_eq!(
        kept[1..],
        [
            "nm-worker-3-a.service",
            "nm-worker-0-b.service",
            "nm-worker-1-b.service",
            "nm-worker-2-c.service"
        ]
    );
}

/// A deployment `name` whose kinds (kind, count) run `sleep infinity`.
fn plain(dir: &Path, name: &str, kinds: &[(&str, usize)]) -> PathBuf {
    let mut text = format!(
        "[deployment]\nname = \"{name}\"\n[master]\nexec_start = \"/bin/sleep infinity\"\n"
    );
    for (kind, count) in kinds {
        text.push_str(&format!(
            "[[workers]]\nkind = \"{kind}\"\ncount = {count}\nexec_start = \"/bin/sleep infinity\"\n"
        ));
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn is_active(c: &Container, unit: &str) -> bool {
    c.systemctl(&["is-active", "--quiet", unit])
        .status
        .success()
}

#[test]
fn a_new_kind_fills_the_gap_a_shrink_left() {
    let c = Container::boot();
    let dir = tempfile::tempdir().unwrap();
    // a takes 0, 1, 2 and b 3; a shrinks to 0: 1 and 2 are free below b.
    orch_ok(
        &c,
        &plain(dir.path(), "gp", &[("a", 3), ("b", 1)]),
        &["install"],
    );
    orch_ok(
        &c,
        &plain(dir.path(), "gp", &[("a", 1), ("b", 1)]),
        &["install"],
    );
    assert!(!c.unit_dir().join("gp-worker-1-a.service").exists());
    let cfg = plain(dir.path(), "gp", &[("a", 1), ("b", 1), ("c", 1)]);
    orch_ok(&c, &cfg, &["install"]);
    let mut workers: Vec<String> = std::fs::read_dir(c.unit_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("gp-worker-"))
        .collect();
    workers.sort();
    assert_eq!(
        workers,
        [
            "gp-worker-0-a.service",
            "gp-worker-1-c.service",
            "gp-worker-3-b.service"
        ],
        "the new kind takes the lowest free number; b keeps its own"
    );
    orch_ok(&c, &cfg, &["start", "--all"]);
    assert!(is_active(&c, "gp-worker-1-c.service"));
}

#[test]
fn two_deployments_share_a_unit_folder_without_touching_each_other() {
    let c = Container::boot();
    let dir = tempfile::tempdir().unwrap();
    let a = plain(dir.path(), "da", &[("w", 2)]);
    let b = plain(dir.path(), "db", &[("w", 2)]);
    orch_ok(&c, &a, &["install"]);
    orch_ok(&c, &b, &["install"]);
    orch_ok(&c, &a, &["start", "--all"]);
    orch_ok(&c, &b, &["start", "--all"]);
    let b_units = [
        "db.service",
        "db-worker-0-w.service",
        "db-worker-1-w.service",
        "db.slice",
    ];
    // A shrinks and installs again, with a restart of what changed.
    let a = plain(dir.path(), "da", &[("w", 1)]);
    orch_ok(&c, &a, &["install", "--restart-changed"]);
    assert!(!c.unit_dir().join("da-worker-1-w.service").exists());
    for u in b_units {
        assert!(c.unit_dir().join(u).exists(), "A's install removed {u}");
    }
    for u in &b_units[..3] {
        assert!(is_active(&c, u), "A's install stopped {u}");
    }
    let o = orch(&c, &b, &["plan", "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "B's plan is clean: {}", json(&o));
}

#[test]
fn plan_and_install_say_which_update_needs_a_restart() {
    let c = Container::boot();
    let dir = tempfile::tempdir().unwrap();
    orch_ok(&c, &plain(dir.path(), "rn", &[("a", 1)]), &["install"]);
    // A new kind only adds Wants= to the master: no restart.
    let cfg = plain(dir.path(), "rn", &[("a", 1), ("b", 1)]);
    let o = orch(&c, &cfg, &["plan", "--output", "json"]);
    let plan = json(&o);
    let master = plan["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == "rn.service")
        .unwrap();
    assert_eq!(master["action"], "update", "{plan}");
    assert_eq!(master["restart_needed"], false, "{plan}");
    let o = orch(&c, &cfg, &["plan"]);
    assert_eq!(o.status.code(), Some(4));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("update (no restart) rn.service"), "{text}");
    let o = orch_ok(&c, &cfg, &["install"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("updated (no restart) rn.service"), "{text}");
    // A new command for a kind: its worker needs a restart.
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "/bin/sleep infinity\"\n[[workers]]",
        "/bin/sleep 100000\"\n[[workers]]",
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let o = orch(&c, &cfg, &["plan", "--output", "json"]);
    let plan = json(&o);
    let changed: Vec<(String, bool)> = plan["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["action"] == "update")
        .map(|u| {
            (
                u["unit"].as_str().unwrap().into(),
                u["restart_needed"] == true,
            )
        })
        .collect();
    assert_eq!(changed, [("rn.service".to_string(), true)], "{plan}");
}

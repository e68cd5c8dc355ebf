//! `orch rollback` (issue 26 part 3) against a real systemd: install keeps
//! the last generations of unit files; rollback puts one back through
//! install's path.

use std::path::{Path, PathBuf};

use crate::common::{json, orch, orch_ok};
use crate::support::Container;

/// A deployment `rb` whose state folder is the test's own. `generic` sets
/// the generic workers' command (a change that needs a restart),
/// `description` the master's (one that does not), `count` the pushers'.
fn config(dir: &Path, description: &str, generic: &str, count: usize) -> PathBuf {
    let path = dir.join("orch.toml");
    std::fs::write(
        &path,
        format!(
            r#"[deployment]
name = "rb"
state_dir = "{state}"

[master]
description = "{description}"
exec_start = "/bin/sleep infinity"
stop_timeout = "5s"

[[workers]]
kind = "generic"
count = 2
exec_start = "{generic}"
stop_timeout = "5s"

[[workers]]
kind = "pusher"
count = {count}
exec_start = "/bin/sleep infinity"
stop_timeout = "5s"
"#,
            state = dir.join("state").display(),
        ),
    )
    .unwrap();
    path
}

/// Every regular file of the unit folder, name and bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

/// MainPID of each unit (0 when it does not run).
fn pids(c: &Container, units: &[&str]) -> Vec<u32> {
    units
        .iter()
        .map(|u| {
            let o = c.systemctl(&["show", "-P", "MainPID", u]);
            String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
        })
        .collect()
}

/// What systemd has loaded for `unit`: its Description= and whether its
/// file changed since (NeedDaemonReload).
fn loaded(c: &Container, unit: &str) -> (String, bool) {
    let show = |p: &str| {
        let o = c.systemctl(&["show", "-P", p, unit]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    (show("Description"), show("NeedDaemonReload") == "yes")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const MASTER: &str = "rb.service";
const G0: &str = "rb-worker-0-generic.service";
const G1: &str = "rb-worker-1-generic.service";
const P3: &str = "rb-worker-3-pusher.service";
const PUSHER: &str = "rb-worker-2-pusher.service";

#[test]
fn rollback_puts_back_the_previous_units_byte_identical_and_restarts_only_what_needs_it() {
    let c = Container::boot();
    let dir = tempfile::tempdir().unwrap();

    // Nothing installed yet: nothing to roll back to, and nothing touched.
    let cfg = config(dir.path(), "A", "/bin/sleep infinity", 1);
    let o = orch(&c, &cfg, &["rollback"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("none is recorded yet"),
        "{}",
        stderr(&o)
    );
    assert!(files(c.unit_dir())
        .iter()
        .all(|(n, _)| !n.starts_with("rb")));

    // A, running.
    orch_ok(&c, &cfg, &["install"]);
    orch_ok(&c, &cfg, &["start", "--all"]);
    let a = files(c.unit_dir());

    // B: the generic workers' command changes (restart needed), the
    // master's description too (no restart), and a second pusher.
    let cfg = config(dir.path(), "B", "/bin/sleep 86400", 2);
    orch_ok(&c, &cfg, &["install"]);
    let v = json(&orch_ok(&c, &cfg, &["status", "--output", "json"]));
    assert_eq!(v["generation"]["number"], 2, "{v}");
    assert_eq!(v["generations_kept"], serde_json::json!([1, 2]), "{v}");
    assert_eq!(loaded(&c, MASTER).0, "B");
    let before = pids(&c, &[MASTER, G0, G1, PUSHER]);
    assert!(before.iter().all(|&p| p > 0), "{before:?}");

    // The plan first: generation 1, the second pusher to remove.
    let o = orch(&c, &cfg, &["plan", "--rollback", "--output", "json"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["rollback_to"]["number"], 1, "{v}");
    let action = |unit: &str| {
        v["units"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["unit"] == unit)
            .map(|u| u["action"].clone())
    };
    assert_eq!(action(P3), Some("remove".into()), "{v}");
    assert_eq!(action(G0), Some("update".into()), "{v}");
    assert_eq!(files(c.unit_dir()).len(), a.len() + 1, "plan wrote nothing");

    let o = orch_ok(&c, &cfg, &["rollback", "--restart-changed"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("rolled back to generation 1"), "{out}");

    // A's files, byte for byte, loaded by systemd.
    assert_eq!(files(c.unit_dir()), a, "A's unit files, byte-identical");
    assert_eq!(loaded(&c, MASTER), ("A".to_string(), false));
    assert!(!loaded(&c, G0).1, "systemd reloaded after the rollback");
    // Only the units whose change needs a restart were restarted.
    let after = pids(&c, &[MASTER, G0, G1, PUSHER]);
    assert_eq!(after[0], before[0], "master: description only, no restart");
    assert_eq!(after[3], before[3], "pusher: unchanged, no restart");
    for i in [1, 2] {
        assert!(
            after[i] > 0 && after[i] != before[i],
            "generic worker {i} restarted: {before:?} -> {after:?}"
        );
    }
    let v = json(&orch_ok(&c, &cfg, &["status", "--output", "json"]));
    assert_eq!(v["generation"]["number"], 1, "{v}");
    let o = orch_ok(&c, &cfg, &["status"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("unit files: generation 1 (install)") && out.contains("kept for rollback: 2"),
        "{out}"
    );

    // Nothing before generation 1: a clear error, nothing changed.
    let o = orch(&c, &cfg, &["rollback"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("generation 1 is the oldest kept"),
        "{}",
        stderr(&o)
    );
    assert_eq!(files(c.unit_dir()), a);

    // Forward again to 2 by number, then bounded: the installed one and three before it.
    orch_ok(&c, &cfg, &["rollback", "--to", "2"]);
    assert_eq!(loaded(&c, MASTER).0, "B");
    for d in ["C", "D", "E"] {
        let cfg = config(dir.path(), d, "/bin/sleep infinity", 1);
        orch_ok(&c, &cfg, &["install"]);
    }
    let v = json(&orch_ok(&c, &cfg, &["status", "--output", "json"]));
    assert_eq!(
        v["generations_kept"],
        serde_json::json!([2, 3, 4, 5]),
        "{v}"
    );
    let o = orch(&c, &cfg, &["rollback", "--to", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no generation 1; kept: 2, 3, 4, 5"),
        "{}",
        stderr(&o)
    );
}

/// `(action, unit, renamed_from or reason)` of each worker unit that is
/// renamed or removed, in a plan's or an install's JSON.
fn renames(v: &serde_json::Value) -> Vec<(String, String, String)> {
    let s = |x: &serde_json::Value| x.as_str().unwrap_or_default().to_string();
    let mut got: Vec<_> = v["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["action"] == "rename" || u["action"] == "remove")
        .map(|u| {
            let from = match u["action"] == "rename" {
                true => s(&u["renamed_from"]),
                false => s(&u["reason"]),
            };
            (s(&u["action"]), s(&u["unit"]), from)
        })
        .collect();
    got.sort();
    got
}

type Renamed = [(&'static str, &'static str, &'static str); 4];

fn owned(r: &Renamed) -> Vec<(String, String, String)> {
    r.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

const RENAMED_FORWARD: Renamed = [
    (
        "remove",
        "rn-worker-0-generic.service",
        "renamed to rn-worker-generic-0.service",
    ),
    (
        "remove",
        "rn-worker-1-generic.service",
        "renamed to rn-worker-generic-1.service",
    ),
    (
        "rename",
        "rn-worker-generic-0.service",
        "rn-worker-0-generic.service",
    ),
    (
        "rename",
        "rn-worker-generic-1.service",
        "rn-worker-1-generic.service",
    ),
];

const RENAMED_BACK: Renamed = [
    (
        "remove",
        "rn-worker-generic-0.service",
        "renamed to rn-worker-0-generic.service",
    ),
    (
        "remove",
        "rn-worker-generic-1.service",
        "renamed to rn-worker-1-generic.service",
    ),
    (
        "rename",
        "rn-worker-0-generic.service",
        "rn-worker-generic-0.service",
    ),
    (
        "rename",
        "rn-worker-1-generic.service",
        "rn-worker-generic-1.service",
    ),
];

/// A rollback across a `naming` change puts the old names back, the way
/// an install of the old configuration renames them, and its plan and
/// report say so as install's do (each worker renamed, keeping its rank;
/// not a create beside an unrelated removal): the renamed units' files go
/// (stopped, disabled, removed), the old ones come back byte for byte.
#[test]
fn rollback_across_a_naming_change_puts_the_old_names_back() {
    let c = Container::boot();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("orch.toml");
    let write = |naming: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[deployment]\nname = \"rn\"\nstate_dir = \"{}\"\nnaming = \"{naming}\"\n\
                 [master]\nexec_start = \"/bin/sleep infinity\"\nstop_timeout = \"5s\"\n\
                 [[workers]]\nkind = \"generic\"\ncount = 2\nexec_start = \"/bin/sleep infinity\"\n\
                 stop_timeout = \"5s\"\n",
                dir.path().join("state").display()
            ),
        )
        .unwrap();
    };
    write("sequential");
    orch_ok(&c, &cfg, &["install"]);
    let a = files(c.unit_dir());
    assert!(
        a.iter().any(|(n, _)| n == "rn-worker-0-generic.service"),
        "{a:?}"
    );
    write("per-kind");
    // install shows each worker renamed, keeping its rank.
    let o = orch(&c, &cfg, &["plan", "--output", "json"]);
    assert_eq!(renames(&json(&o)), owned(&RENAMED_FORWARD), "{}", json(&o));
    orch_ok(&c, &cfg, &["install"]);
    orch_ok(&c, &cfg, &["start", "--all"]);
    let b = files(c.unit_dir());
    assert!(
        b.iter().any(|(n, _)| n == "rn-worker-generic-0.service"),
        "{b:?}"
    );

    // The rollback's plan says the same of the way back: renames, each
    // removal saying what it is renamed to; not a create and a removal.
    let o = orch(&c, &cfg, &["plan", "--rollback", "--output", "json"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(renames(&v), owned(&RENAMED_BACK), "{v}");
    let o = orch(&c, &cfg, &["plan", "--rollback"]);
    let human = String::from_utf8_lossy(&o.stdout);
    assert!(
        human.contains("2 to rename,")
            && human
                .contains("rename     rn-worker-generic-1.service -> rn-worker-1-generic.service")
            && human
                .contains("rn-worker-generic-1.service  (renamed to rn-worker-1-generic.service)"),
        "{human}"
    );

    // With --restart-changed, as install --restart-changed after a rename:
    // the workers run again, under the names put back, though the
    // configuration still says per-kind.
    let o = orch_ok(
        &c,
        &cfg,
        &["rollback", "--restart-changed", "--output", "json"],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(v["rolled_back_to"], 1, "{v}");
    assert_eq!(
        renames(&v),
        owned(&RENAMED_BACK),
        "the rollback did what its plan said: {v}"
    );
    assert_eq!(
        files(c.unit_dir()),
        a,
        "the sequential names, byte for byte"
    );
    let state = |u: &str| {
        let o = c.systemctl(&["show", "-P", "ActiveState", u]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(
        state("rn-worker-generic-0.service"),
        "inactive",
        "renamed unit stopped"
    );
    assert_eq!(state("rn-worker-0-generic.service"), "active", "{text}");
    assert_eq!(state("rn-worker-1-generic.service"), "active", "{text}");
    // start, stop and status act on the installed names too (the
    // configuration still says per-kind), until an install renames them.
    orch_ok(&c, &cfg, &["stop", "--all"]);
    assert_eq!(state("rn-worker-0-generic.service"), "inactive");
    let v = json(&orch_ok(&c, &cfg, &["status", "--output", "json"]));
    assert!(
        v.to_string().contains("rn-worker-1-generic.service")
            && !v.to_string().contains("rn-worker-generic-1.service"),
        "{v}"
    );
    write("sequential");
    orch_ok(&c, &cfg, &["start", "--all"]);
    assert_eq!(state("rn-worker-0-generic.service"), "active");
    assert_eq!(state("rn-worker-1-generic.service"), "active");
}

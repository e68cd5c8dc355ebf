//! Rendering and planning through the `orch` binary; no systemd needed.

use crate::support::OutputBounded;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn orch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(args)
        .env_remove("ORCH_CONFIG")
        .env_remove("ORCH_BUS")
        .output_bounded()
        .expect("run orch")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn units_folder_matches_rendered_example() {
    let out = tempfile::tempdir().unwrap();
    let cfg = root().join("examples/synapse.toml");
    let o = orch(&[
        "render",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rendered = files(out.path());
    let committed = files(&root().join("units"));
    assert_eq!(rendered.len(), 8, "master + 6 workers + the slice");
    assert!(
        rendered == committed,
        "units/ is out of date: run `cargo run -- render --config examples/synapse.toml --out units` and commit"
    );
}

/// The interpreter of examples/synapse.toml: Synapse's venv.
const VENV_PYTHON: &str = "/opt/venvs/matrix-synapse/bin/python";

#[test]
fn systemd_analyze_verify_accepts_example_units() {
    let out = tempfile::tempdir().unwrap();
    let cfg = root().join("examples/synapse.toml");
    let o = orch(&[
        "render",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let units: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // verify also wants every ExecStart= to exist: the example's venv is not
    // on this machine, the system's python3 stands in for it.
    for u in units
        .iter()
        .filter(|u| u.extension().is_some_and(|e| e == "service"))
    {
        let text = std::fs::read_to_string(u).unwrap();
        assert!(text.contains(VENV_PYTHON), "{}", u.display());
        std::fs::write(u, text.replace(VENV_PYTHON, "/usr/bin/python3")).unwrap();
    }
    let v = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(&units)
        .output_bounded()
        .expect("systemd-analyze is part of systemd: apt-get install -y systemd");
    let stderr = String::from_utf8_lossy(&v.stderr);
    assert!(
        v.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // Warnings about our own files count as failures too; other units are not ours to fix.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("matrix-synapse"))
        .collect();
    assert!(
        ours.is_empty(),
        "systemd-analyze warned:\n{}",
        ours.join("\n")
    );
}

#[test]
fn issue_example_renders_master_and_numbered_workers() {
    let cfg = root().join("tests/fixtures/issue-example.toml");
    let o = orch(&[
        "render",
        "--config",
        cfg.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], 1);
    let units: Vec<&str> = v["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["unit"].as_str().unwrap())
        .collect();
    assert_eq!(
        units,
        [
            "matrix-synapse.service",
            "matrix-synapse-worker-0-generic.service",
            "matrix-synapse-worker-1-generic.service",
            "matrix-synapse-worker-2-generic.service",
            "matrix-synapse-worker-3-generic.service",
            "matrix-synapse-worker-4-stream-writer-typing.service",
            "matrix-synapse.slice",
        ]
    );
    let master = v["units"][0]["content"].as_str().unwrap();
    for w in &units[1..6] {
        assert!(
            master.contains(&format!("\nWants={w}\n")),
            "master lacks Wants={w}"
        );
    }
    assert!(
        master.contains("\nRequires=postgresql.service\n")
            && master.contains("\nAfter=postgresql.service\n")
    );
    assert!(master.contains("\nWantedBy=multi-user.target\n"));
    assert!(
        master.contains("\nTimeoutStopSec=30s\n") && master.contains("\nTimeoutStartSec=90s\n")
    );
    assert!(master.contains("\nEnvironment=\"SYNAPSE_CACHE_FACTOR=2\"\n"));
    assert!(master.contains("\nX-Orch-Deployment=matrix-synapse\n"));
    let w3 = v["units"][4]["content"].as_str().unwrap();
    assert!(
        w3.contains("\nPartOf=matrix-synapse.service\n")
            && w3.contains("\nAfter=matrix-synapse.service\n")
    );
    assert!(
        w3.contains("-c /etc/synapse/workers/matrix-synapse-worker-3-generic.yaml\n"),
        "{w3}"
    );
}

#[test]
fn percent_is_escaped_and_template_override_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("templates/worker-special.service.j2"),
        "[Unit]\nDescription=custom {{ kind }} #{{ index }} on {{ port }}\n\n[Service]\nExecStart={{ service.exec_start }}\n",
    )
    .unwrap();
    let cfg = dir.path().join("orch.toml");
    std::fs::write(
        &cfg,
        "[deployment]\nname = \"app\"\ntemplates = \"templates\"\n[master]\nexec_start = \"/bin/echo 100%\"\n\
         [[workers]]\nkind = \"plain\"\ncount = 1\nexec_start = \"/bin/sleep 1\"\n\
         [[workers]]\nkind = \"special\"\ncount = 1\nport_base = 9000\nexec_start = \"/bin/sleep {{ port }}\"\n",
    )
    .unwrap();
    let o = orch(&[
        "render",
        "--config",
        cfg.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let content = |i: usize| v["units"][i]["content"].as_str().unwrap().to_string();
    assert!(
        content(0).contains("\nExecStart=/bin/echo 100%%\n"),
        "{}",
        content(0)
    );
    assert!(
        content(1).contains("\nPartOf=app.service\n"),
        "built-in template for kind plain"
    );
    let special = content(2);
    assert!(
        special.contains("\nDescription=custom special #1 on 9000\n"),
        "{special}"
    );
    assert!(
        special.contains("\nExecStart=/bin/sleep 9000\n"),
        "{special}"
    );
    assert!(
        special.contains("\nX-Orch-Deployment=app\n"),
        "marker added to overrides: {special}"
    );
}

#[test]
fn plan_reports_create_then_nothing_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    let cfg = root().join("examples/synapse.toml");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "--config".to_string(),
            cfg.to_str().unwrap().to_string(),
            "--unit-dir".into(),
            units.to_str().unwrap().into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>| orch(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let o = run(args(&["plan", "--output", "json"]));
    assert_eq!(
        o.status.code(),
        Some(4),
        "changes pending: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["changes"], true);
    assert!(v["units"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["action"] == "create"));
    // A change carries the file's text after (and before, when it exists):
    // what the Ansible module's diff mode shows.
    assert!(v["units"].as_array().unwrap().iter().all(|u| u["content"]
        .as_str()
        .is_some_and(|c| c.contains("[Service]") || c.contains("[Slice]"))
        && u.get("installed").is_none()));
    assert!(!units.exists(), "plan must not create the unit folder");

    let o = run(args(&["render", "--out", units.to_str().unwrap()]));
    assert!(o.status.success());
    let o = run(args(&["plan"]));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains("0 to create, 0 to update, 0 to remove, 0 drifted, 8 unchanged"));
}

#[test]
fn help_lists_commands_and_exit_codes() {
    let o = orch(&["--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "render",
        "plan",
        "install",
        "Exit codes:",
        "4    plan, install --dry-run: changes are pending",
        "130",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    let o = orch(&["--version"]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("orch "));
}

#[test]
fn multihost_example_renders_relations_only_within_a_host() {
    let cfg = root().join("examples/multihost.toml");
    let o = orch(&[
        "--config",
        cfg.to_str().unwrap(),
        "render",
        "--output",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let units = v["units"].as_array().unwrap();
    assert_eq!(units.len(), 11);
    // The slice on each host a generated unit lives on, after the services.
    let slices: Vec<(&str, &str)> = units[9..]
        .iter()
        .map(|u| (u["unit"].as_str().unwrap(), u["host"].as_str().unwrap()))
        .collect();
    assert_eq!(
        slices,
        [
            ("matrix-synapse.slice", "local"),
            ("matrix-synapse.slice", "w1")
        ]
    );
    let master = &units[0];
    assert_eq!(
        (master["unit"].as_str(), master["host"].as_str()),
        (Some("matrix-synapse.service"), Some("local"))
    );
    let text = master["content"].as_str().unwrap();
    // The database (db1) and the workers (w1) live elsewhere: systemd on
    // this machine could not honour Requires=/Wants= on them.
    assert!(
        !text.contains("Requires=") && !text.contains("Wants="),
        "{text}"
    );
    for w in &units[1..9] {
        assert_eq!(w["host"], "w1");
        let text = w["content"].as_str().unwrap();
        assert!(
            !text.contains("PartOf=") && !text.contains("After="),
            "{text}"
        );
    }
    // The example is the one docs/hosts.md shows.
    let example = std::fs::read_to_string(&cfg).unwrap();
    let body: String = example
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let docs = std::fs::read_to_string(root().join("docs/hosts.md")).unwrap();
    assert!(
        docs.contains(&body),
        "docs/hosts.md and examples/multihost.toml differ"
    );
}

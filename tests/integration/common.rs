//! Helpers shared by the integration tests that drive orch against the
//! harness's systemd.
#![allow(dead_code)]

use crate::support::OutputBounded;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use orch::systemd::{Bus, Systemd};

use crate::support::Container;

/// `orch --config CFG --bus <container> --unit-dir <container> ARGS…`,
/// with the container's systemd private socket for status reads (as root
/// on the system bus), unless `ORCH_TEST_STATUS_OVER_BUS` is set: then
/// status reads go over the bus, the other path.
pub fn orch_cmd(c: &Container, cfg: &Path, args: &[&str]) -> Command {
    let mut cmd = orch_cmd_on(c, cfg, &c.bus_address(), args);
    if args.contains(&"status") && std::env::var_os("ORCH_TEST_STATUS_OVER_BUS").is_none() {
        cmd.env("ORCH_SYSTEMD_SOCKET", private_socket(c));
        cmd = in_pid_namespace(c, &cmd);
    }
    cmd
}

/// systemd's private socket in the container, as the host sees it.
pub fn private_socket(c: &Container) -> String {
    format!("/proc/{}/root/run/systemd/private", c.leader())
}

/// `cmd` run in the container's PID namespace (and nothing else of it):
/// systemd refuses a private connection whose peer PID it cannot see
/// ("Incoming private connection from unprivileged client"), as it would
/// be from the host's namespace.
pub fn in_pid_namespace(c: &Container, cmd: &Command) -> Command {
    let mut wrapped = Command::new("nsenter");
    wrapped
        .arg("-t")
        .arg(c.leader().to_string())
        .args(["-p", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    wrapped
}

/// `orch --config CFG --bus BUS --unit-dir <container> ARGS…`, and no
/// private socket unless ARGS give one.
pub fn orch_cmd_on(c: &Container, cfg: &Path, bus: &str, args: &[&str]) -> Command {
    own_state_dir(cfg);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orch"));
    cmd.arg("--config")
        .arg(cfg)
        .arg("--bus")
        .arg(bus)
        .arg("--unit-dir")
        .arg(c.unit_dir())
        .args(args)
        .env("ORCH_JOURNAL_ROOT", format!("/proc/{}/root", c.leader()))
        .env_remove("ORCH_CONFIG")
        .env_remove("ORCH_BUS")
        .env_remove("ORCH_SYSTEMD_SOCKET");
    cmd
}

/// Gives a configuration that names no `state_dir` one next to it. The
/// master's host of these runs is this host, so the default would be the
/// host's own /var/lib/orch, shared by every test (and every run of the
/// suite) with the same deployment name: one test's lock, restart record or
/// rollback generations would leak into another's. Only a missing key is
/// added (after the `[deployment]` header; no test here reads line numbers),
/// so a test that sets its own state folder keeps it.
pub fn own_state_dir(cfg: &Path) {
    let Ok(text) = std::fs::read_to_string(cfg) else {
        return;
    };
    if text.contains("state_dir") || !text.lines().any(|l| l.trim() == "[deployment]") {
        return;
    }
    let state = cfg.parent().unwrap_or(Path::new("/")).join("state");
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim() == "[deployment]" {
            out.push_str(&format!("state_dir = {:?}\n", state.display().to_string()));
        }
    }
    std::fs::write(cfg, out).expect("write the test's state_dir into its configuration");
}

pub fn orch(c: &Container, cfg: &Path, args: &[&str]) -> Output {
    orch_cmd(c, cfg, args).output_bounded().expect("run orch")
}

/// Runs orch and fails the test with its output unless it exits `code`.
pub fn orch_ok(c: &Container, cfg: &Path, args: &[&str]) -> Output {
    assert_orch_ok(orch(c, cfg, args), args)
}

/// Fails the test with orch's output unless it succeeded.
pub fn assert_orch_ok(o: Output, args: &[&str]) -> Output {
    assert!(
        o.status.success(),
        "orch {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// The last line of NDJSON output: the summary of a lifecycle command.
pub fn summary(o: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    let last = text
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output; stderr: {}", String::from_utf8_lossy(&o.stderr)));
    let v: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {last}"));
    assert_eq!(v["event"], "summary", "{last}");
    v
}

/// Whether every unit of a lifecycle summary ended in `phase`.
pub fn all_in_phase(summary: &serde_json::Value, phase: &str) -> bool {
    summary["units"]
        .as_array()
        .expect("units")
        .iter()
        .all(|u| u["phase"] == phase)
}

/// The `report` of `stop-for-maintenance --output json` (its last line).
pub fn maintenance_report(o: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    let last = text.lines().last().expect("output");
    serde_json::from_str::<serde_json::Value>(last)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {last}"))["report"]
        .clone()
}

/// A `stop-for-maintenance --output json` that found one database session
/// left: exit 1, and that session named by pid, role, application, client
/// address and since when. Returns the report.
pub fn one_session_left(o: &Output, pid: i64, role: &str, client: &str) -> serde_json::Value {
    let report = maintenance_report(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a session left is not clean: {report}"
    );
    let left = &report["sessions"]["left"];
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{report}");
    let s = &left[0];
    assert_eq!(
        (
            &s["pid"],
            &s["role"],
            &s["application_name"],
            &s["client_addr"]
        ),
        (&pid.into(), &role.into(), &"psql".into(), &client.into()),
        "{report}"
    );
    assert!(s["since"].is_string(), "{report}");
    report
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub async fn connect(c: &Container) -> Systemd {
    Systemd::connect(&Bus::Address(c.bus_address()), Duration::from_secs(10))
        .await
        .expect("connect to the container's systemd")
}

/// A container with the fixtures at `/opt/fixtures` and a log folder at
/// `/opt/log` (the fixtures' `--log /opt/log/events.log` is `log` here),
/// and where the test's configuration goes.
pub struct Fixtures {
    pub c: Container,
    pub cfg: std::path::PathBuf,
    pub log: std::path::PathBuf,
    pub _dir: tempfile::TempDir,
}

/// Boots a [`Fixtures`] container; the configuration is not written yet.
pub fn fixtures_container() -> Fixtures {
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("log");
    std::fs::create_dir(&logdir).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let c = Container::builder()
        .bind_ro(&fixtures, "/opt/fixtures")
        .bind(&logdir, "/opt/log")
        .boot();
    Fixtures {
        c,
        cfg: dir.path().join("orch.toml"),
        log: logdir.join("events.log"),
        _dir: dir,
    }
}

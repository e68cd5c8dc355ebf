//! stop-for-maintenance and resume against a real systemd.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::bus::bus;
use crate::common::*;
use crate::support::Container;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const FIXTURE: &str = "/usr/bin/python3 /opt/fixtures/worker.py --name {{ name }}";

struct Setup {
    c: Container,
    cfg: PathBuf,
    masks: PathBuf,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

/// A container with a fake database and a bridge (units orch does not
/// generate), the deployment installed and started.
fn setup(port: u16, workers: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let masks = dir.path().join("masks");
    std::fs::create_dir(&masks).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let c = Container::builder()
        .bind_ro(&fixtures, "/opt/fixtures")
        .bind(&masks, "/run/systemd/system.control")
        .boot();
    let plain = |name: &str, args: &str| {
        std::fs::write(
            c.unit_dir().join(name),
            format!("[Unit]\nDescription={name}\n[Service]\nExecStart=/usr/bin/python3 /opt/fixtures/worker.py --name {name} {args}\n"),
        )
        .unwrap();
    };
    plain("fakedb.service", &format!("--port {port}"));
    plain("bridge.service", "");
    let state = dir.path().join("state");
    let cfg = dir.path().join("orch.toml");
    let text = format!(
        r#"[deployment]
name = "fx"
state_dir = "{state}"
runtime_dir = "{masks}"

[database]
unit = "fakedb.service"
health = "tcp://127.0.0.1:{port}"

[master]
exec_start = "{FIXTURE} --port {mport}"
health = "http://127.0.0.1:{mport}/health"
stop_timeout = "5s"
{workers}

[[dependents]]
unit = "bridge.service"
"#,
        state = state.display(),
        masks = masks.display(),
        mport = port + 1,
        workers = crate::ports::fill(&workers.replace("{FIXTURE}", FIXTURE)),
    );
    std::fs::write(&cfg, text).unwrap();
    orch_ok(&c, &cfg, &["install"]);
    orch_ok(&c, &cfg, &["start", "--all"]);
    Setup {
        c,
        cfg,
        masks,
        state,
        _dir: dir,
    }
}

fn generic(count: usize, port_base: u16) -> String {
    format!(
        r#"[[workers]]
kind = "generic"
count = {count}
port_base = {port_base}
exec_start = "{{FIXTURE}} --port {{{{ port }}}}"
health = "http://127.0.0.1:{{{{ port }}}}/health"
stop_timeout = "5s"
"#
    )
}

fn states(c: &Container, units: &[&str]) -> Vec<(String, String)> {
    rt().block_on(async {
        let sd = bus(c).await;
        let listed = sd.manager.list_units_by_patterns(&[], units).await.unwrap();
        units
            .iter()
            .map(|u| {
                (
                    u.to_string(),
                    listed
                        .iter()
                        .find(|e| e.0 == *u)
                        .map_or("inactive".into(), |e| e.3.clone()),
                )
            })
            .collect()
    })
}

fn state_of(c: &Container, unit: &str) -> String {
    states(c, &[unit]).remove(0).1
}

fn processes(c: &Container, unit: &str) -> usize {
    rt().block_on(async {
        bus(c)
            .await
            .manager
            .get_unit_processes(unit)
            .await
            .map(|p| p.len())
            .unwrap_or(0)
    })
}

fn all_units(workers: usize) -> Vec<String> {
    let mut v = vec!["fx.service".to_string(), "bridge.service".to_string()];
    v.extend((0..workers).map(|i| format!("fx-worker-{i}-generic.service")));
    v
}

/// Spawns orch with JSON output and reads its step events until `step`.
// The child is returned to the caller, which waits for it.
#[allow(clippy::zombie_processes)]
fn spawn_until_step(
    s: &Setup,
    args: &[&str],
    step: &str,
) -> (Child, std::io::BufReader<std::process::ChildStdout>) {
    spawn_until(s, args, step, "")
}

/// Like [`spawn_until_step`], for the first `step` whose detail contains `detail`.
#[allow(clippy::zombie_processes)]
fn spawn_until(
    s: &Setup,
    args: &[&str],
    step: &str,
    detail: &str,
) -> (Child, std::io::BufReader<std::process::ChildStdout>) {
    let mut child = orch_cmd(&s.c, &s.cfg, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            let status = child.wait().unwrap();
            panic!("orch ended ({status}) before step {step}");
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let detail_matches = v["detail"].as_str().is_some_and(|d| d.contains(detail));
        if v["event"] == "step" && v["step"] == step && detail_matches {
            return (child, out);
        }
    }
}

#[test]
fn maintenance_cycle_restores_exactly_what_ran() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(crate::ports::at(0, 0), &generic(4, crate::ports::at(1, 0)));
    let units = all_units(4);
    // Stopped before maintenance: must stay stopped after resume.
    orch_ok(&s.c, &s.cfg, &["stop", "fx-worker-1-generic"]);

    let o = orch_ok(
        &s.c,
        &s.cfg,
        &[
            "stop-for-maintenance",
            "--reason",
            "pg upgrade",
            "--output",
            "json",
        ],
    );
    let report = &maintenance_report(&o);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["database"]["active_state"], "active", "{report}");
    for u in &units {
        assert!(
            matches!(state_of(&s.c, u).as_str(), "inactive" | "failed"),
            "{u} still {}",
            state_of(&s.c, u)
        );
        assert_eq!(processes(&s.c, u), 0, "{u} has processes");
    }
    assert_eq!(
        state_of(&s.c, "fakedb.service"),
        "active",
        "the database must keep running"
    );
    let recorded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.state.join("fx/maintenance.json")).unwrap())
            .unwrap();
    let active: Vec<&str> = recorded["active"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        !active.contains(&"fx-worker-1-generic.service")
            && active.contains(&"fx-worker-0-generic.service"),
        "{recorded}"
    );
    assert_eq!(recorded["reason"], "pg upgrade");

    // While in maintenance: masked over D-Bus, start and restart refuse, status says so.
    rt().block_on(async {
        let sd = bus(&s.c).await;
        let err = sd
            .manager
            .start_unit("fx-worker-0-generic.service", "replace")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("masked"), "{err}");
    });
    let o = orch(&s.c, &s.cfg, &["start", "--all"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("maintenance.json")
            && err.contains("pg upgrade")
            && err.contains("orch resume"),
        "{err}"
    );
    assert_eq!(
        orch(&s.c, &s.cfg, &["restart", "workers"]).status.code(),
        Some(1)
    );
    let st = json(&orch_ok(&s.c, &s.cfg, &["status", "--output", "json"]));
    assert_eq!(st["maintenance"]["reason"], "pg upgrade", "{st}");
    for r in st["units"].as_array().unwrap() {
        if r["unit"] != "fakedb.service" {
            assert_eq!(r["load_state"], "masked", "{r}");
        }
    }
    let human = String::from_utf8_lossy(&orch_ok(&s.c, &s.cfg, &["status"]).stdout).to_string();
    assert!(
        human.contains("IN MAINTENANCE") && human.contains("pg upgrade"),
        "{human}"
    );

    // A config change installed during maintenance (an upgrade often brings
    // one) is written, and takes effect when resume starts the units.
    let text = std::fs::read_to_string(&s.cfg).unwrap().replace(
        "stop_timeout = \"5s\"\n[[workers]]",
        "stop_timeout = \"6s\"\n[[workers]]",
    );
    std::fs::write(&s.cfg, &text).unwrap();
    let o = orch(&s.c, &s.cfg, &["install", "--output", "json"]);
    assert!(
        o.status.success(),
        "install during maintenance: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = json(&o);
    assert_eq!(v["changed"], true);
    assert!(
        v["enable_skipped"]
            .as_str()
            .unwrap()
            .contains("maintenance"),
        "{v}"
    );
    assert!(std::fs::read_to_string(s.c.unit_dir().join("fx.service"))
        .unwrap()
        .contains("TimeoutStopSec=6s"));

    // Again: succeeds and changes nothing.
    let masks_before: Vec<_> = std::fs::read_dir(&s.masks)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let o = orch_ok(&s.c, &s.cfg, &["stop-for-maintenance", "--reason", "other"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("0 processes left") && text.contains("pg upgrade"),
        "{text}"
    );
    assert_eq!(
        masks_before.len(),
        std::fs::read_dir(&s.masks).unwrap().count()
    );

    let o = orch_ok(&s.c, &s.cfg, &["resume", "--output", "json"]);
    assert_eq!(summary(&o)["ok"], true);
    for u in &units {
        let want = if u == "fx-worker-1-generic.service" {
            "inactive"
        } else {
            "active"
        };
        assert_eq!(state_of(&s.c, u), want, "{u}");
    }
    assert_eq!(
        std::fs::read_dir(&s.masks).unwrap().count(),
        0,
        "masks left after resume"
    );
    assert!(!s.state.join("fx/maintenance.json").exists());
    let st = json(&orch_ok(&s.c, &s.cfg, &["status", "--output", "json"]));
    assert!(st["maintenance"].is_null());
    for r in st["units"].as_array().unwrap() {
        if r["active_state"] == "active" && r.get("health").is_some() {
            assert_eq!(r["health"], "ok", "{r}");
        }
    }
    assert_eq!(state_of(&s.c, "fakedb.service"), "active");
}

#[test]
fn worker_ignoring_sigterm_is_killed_within_timeout() {
    let _ports = crate::ports::lease_groups(3);
    let workers = format!(
        "{}[[workers]]\nkind = \"stubborn\"\ncount = 1\nport_base = @P0@\nexec_start = \"{{FIXTURE}} --ignore-sigterm --port {{{{ port }}}}\"\nhealth = \"http://127.0.0.1:{{{{ port }}}}/health\"\nstop_timeout = \"60s\"\n",
        generic(2, crate::ports::at(1, 0))
    );
    let s = setup(crate::ports::at(2, 0), &workers);
    let t = Instant::now();
    let o = orch(
        &s.c,
        &s.cfg,
        &[
            "stop-for-maintenance",
            "--timeout",
            "6s",
            "--output",
            "json",
        ],
    );
    let took = t.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(
        took < Duration::from_secs(6 + 2),
        "took {took:?} with --timeout 6s"
    );
    let report = &maintenance_report(&o);
    assert_eq!(
        report["killed"],
        serde_json::json!(["fx-worker-2-stubborn.service"]),
        "{report}"
    );
    assert_eq!(processes(&s.c, "fx-worker-2-stubborn.service"), 0);
    let human = orch_ok(&s.c, &s.cfg, &["stop-for-maintenance"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("0 processes left"));
}

#[test]
fn restart_always_worker_killed_while_masked_does_not_come_back() {
    let _ports = crate::ports::lease_groups(2);
    let workers = format!(
        "{}[[workers]]\nkind = \"phoenix\"\ncount = 1\nexec_start = \"{{FIXTURE}}\"\nrestart = \"always\"\nrestart_sec = \"200ms\"\n",
        generic(1, crate::ports::at(0, 0))
    );
    let s = setup(crate::ports::at(1, 0), &workers);
    let phoenix = "fx-worker-1-phoenix.service";
    assert_eq!(state_of(&s.c, phoenix), "active");
    // Freeze orch right after the masks took effect (after the stop).
    let (child, mut out) =
        spawn_until_step(&s, &["stop-for-maintenance", "--output", "json"], "masked");
    let pid = Pid::from_raw(child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let o = s.c.systemctl(&["start", phoenix]);
    assert!(!o.status.success(), "a masked unit must not start: {o:?}");
    std::thread::sleep(Duration::from_secs(1)); // five times RestartSec
    let st = state_of(&s.c, phoenix);
    assert!(
        matches!(st.as_str(), "inactive" | "failed"),
        "Restart=always brought {phoenix} back: {st}"
    );
    assert_eq!(processes(&s.c, phoenix), 0);
    kill(pid, Signal::SIGCONT).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let mut child = child;
    assert!(child.wait().unwrap().success(), "{rest}");
    orch_ok(&s.c, &s.cfg, &["resume"]);
    assert_eq!(
        state_of(&s.c, phoenix),
        "active",
        "resume brings back what ran before maintenance"
    );
}

#[test]
fn sigkill_mid_operation_then_rerun_completes_and_resume_unmasks() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(crate::ports::at(0, 0), &generic(3, crate::ports::at(1, 0)));
    let units = all_units(3);
    // Killed with the journal written and the masks on disk, before the stop.
    let (mut child, _out) = spawn_until_step(
        &s,
        &["stop-for-maintenance", "--output", "json"],
        "stopping",
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    assert!(
        units.iter().any(|u| state_of(&s.c, u) == "active"),
        "the kill should land before the stop"
    );

    let o = orch_ok(&s.c, &s.cfg, &["stop-for-maintenance"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("0 processes left"));
    for u in &units {
        assert!(
            matches!(state_of(&s.c, u).as_str(), "inactive" | "failed"),
            "{u}"
        );
        assert_eq!(processes(&s.c, u), 0);
    }
    // Killed in the middle of resume too: a rerun completes.
    let (mut child, _out) = spawn_until_step(&s, &["resume", "--output", "json"], "starting");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    orch_ok(&s.c, &s.cfg, &["resume"]);
    for u in &units {
        assert_eq!(state_of(&s.c, u), "active", "{u}");
    }
    assert_eq!(
        std::fs::read_dir(&s.masks).unwrap().count(),
        0,
        "no unit may stay masked"
    );
    rt().block_on(async {
        let sd = bus(&s.c).await;
        for u in &units {
            assert_eq!(
                sd.unit(u).await.unwrap().load_state().await.unwrap(),
                "loaded",
                "{u}"
            );
        }
    });
}

/// Ctrl+C while `stop-for-maintenance` waits for a unit's stop (one that
/// ignores SIGTERM, with a 60 s stop timeout): orch stops waiting at once,
/// exits 130, says the deployment is in maintenance and the exact commands
/// that finish or end it; the journal is there and the masks on disk are
/// the ones it records; the rerun it names completes and `resume` ends it.
/// Half a second into the step it was spawned up to, Ctrl+C must end orch
/// with exit 130 within 5 s; returns its stderr.
fn ctrl_c_answers_with_130(child: Child) -> String {
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let o = child.wait_with_output().unwrap();
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?} after SIGINT");
    err
}

#[test]
fn ctrl_c_mid_stop_exits_130_naming_the_state_and_the_command_to_finish() {
    let _ports = crate::ports::lease_groups(3);
    let workers = format!(
        "{}[[workers]]\nkind = \"stubborn\"\ncount = 1\nport_base = @P0@\nexec_start = \"{{FIXTURE}} --ignore-sigterm --port {{{{ port }}}}\"\nhealth = \"http://127.0.0.1:{{{{ port }}}}/health\"\nstop_timeout = \"60s\"\n",
        generic(1, crate::ports::at(1, 0))
    );
    let s = setup(crate::ports::at(2, 0), &workers);
    let (child, _out) = spawn_until_step(
        &s,
        &["stop-for-maintenance", "--output", "json"],
        "stopping",
    );
    let err = ctrl_c_answers_with_130(child);
    assert!(err.contains("fx is in maintenance since"), "{err}");
    assert!(
        err.contains("to finish: `orch stop-for-maintenance`"),
        "{err}"
    );
    assert!(err.contains("to end it: `orch resume`"), "{err}");

    // The journal and the masks agree.
    let journal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.state.join("fx/maintenance.json")).unwrap())
            .unwrap();
    let mut recorded: Vec<String> = journal["masked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["unit"].as_str().unwrap().to_string())
        .collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(&s.masks)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    recorded.sort();
    on_disk.sort();
    assert!(!recorded.is_empty());
    assert_eq!(recorded, on_disk, "{journal}");

    // The command it named finishes the stop; resume ends it.
    let o = orch_ok(&s.c, &s.cfg, &["stop-for-maintenance", "--timeout", "3s"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("0 processes left"));
    orch_ok(&s.c, &s.cfg, &["resume"]);
    assert_eq!(std::fs::read_dir(&s.masks).unwrap().count(), 0);
    assert!(!s.state.join("fx/maintenance.json").exists());
}

/// After `-- CMD`, the stop's signal handlers stay installed for the
/// process's life: without its own, a Ctrl+C during the resume did nothing
/// and orch waited out the start bound.
#[test]
fn ctrl_c_during_the_resume_after_cmd_exits_130_and_a_rerun_finishes() {
    let _ports = crate::ports::lease_groups(3);
    // Starts at once now; after the flag file exists, its next start
    // takes a minute before it listens.
    let workers = format!(
        "{}[[workers]]\nkind = \"slow\"\ncount = 1\nport_base = @P0@\nexec_start = \"/bin/sh -c 'if [ -e /tmp/slow ]; then sleep 60; fi; exec {{FIXTURE}} --port {{{{ port }}}}'\"\nhealth = \"http://127.0.0.1:{{{{ port }}}}/health\"\nstop_timeout = \"5s\"\n",
        generic(1, crate::ports::at(1, 0))
    );
    let s = setup(crate::ports::at(2, 0), &workers);
    std::fs::write(format!("/proc/{}/root/tmp/slow", s.c.leader()), "").unwrap();
    let (child, _out) = spawn_until(
        &s,
        &["stop-for-maintenance", "--output", "json", "--", "true"],
        "starting",
        "recorded units",
    );
    let err = ctrl_c_answers_with_130(child);
    assert!(
        err.contains("interrupted during the resume: fx is still in maintenance"),
        "{err}"
    );
    assert!(err.contains("run `orch resume` to finish"), "{err}");
    assert!(
        s.state.join("fx/maintenance.json").exists(),
        "the journal went"
    );

    // The command it named finishes the resume.
    std::fs::remove_file(format!("/proc/{}/root/tmp/slow", s.c.leader())).unwrap();
    s.c.systemctl(&["stop", "fx-worker-1-slow.service"]);
    orch_ok(&s.c, &s.cfg, &["resume"]);
    assert_eq!(std::fs::read_dir(&s.masks).unwrap().count(), 0);
    assert!(!s.state.join("fx/maintenance.json").exists());
    let o = s.c.systemctl(&["is-active", "fx-worker-1-slow.service"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "active");
}

#[test]
fn second_invocation_fails_at_once_with_the_lock_holder() {
    let _ports = crate::ports::lease_groups(3);
    let workers = format!(
        "{}[[workers]]\nkind = \"stubborn\"\ncount = 1\nport_base = @P0@\nexec_start = \"{{FIXTURE}} --ignore-sigterm --port {{{{ port }}}}\"\nhealth = \"http://127.0.0.1:{{{{ port }}}}/health\"\nstop_timeout = \"60s\"\n",
        generic(1, crate::ports::at(1, 0))
    );
    let s = setup(crate::ports::at(2, 0), &workers);
    let (mut first, _out) = spawn_until_step(
        &s,
        &[
            "stop-for-maintenance",
            "--timeout",
            "6s",
            "--output",
            "json",
        ],
        "stopping",
    );
    let t = Instant::now();
    let o = orch(&s.c, &s.cfg, &["stop-for-maintenance"]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "another orch (PID {} (orch stop-for-maintenance) on ",
            first.id()
        )),
        "{err}"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(first.wait().unwrap().success());
}

#[test]
fn killed_between_mask_files_and_reload_is_completed_by_a_rerun() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(crate::ports::at(0, 0), &generic(2, crate::ports::at(1, 0)));
    let units = all_units(2);
    // What a run killed right after writing its masks leaves: files, no Reload.
    for u in &units {
        std::os::unix::fs::symlink("/dev/null", s.masks.join(u)).unwrap();
    }
    let o = orch_ok(&s.c, &s.cfg, &["stop-for-maintenance"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("0 processes left"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // And a resume killed right after removing them: files gone, no Reload.
    for u in &units {
        std::fs::remove_file(s.masks.join(u)).unwrap();
    }
    orch_ok(&s.c, &s.cfg, &["resume"]);
    for u in &units {
        assert_eq!(state_of(&s.c, u), "active", "{u}");
    }
}

/// Units are stopped before their masks take effect, so each stops with its
/// own ExecStop= and KillSignal= (a masked unit's file is /dev/null: it
/// would get systemd's defaults, SIGTERM and no ExecStop=). A unit started
/// between its stop and the masks taking effect is stopped again, and said
/// to be.
#[test]
fn units_stop_with_their_own_settings_and_a_late_start_is_stopped_again() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(crate::ports::at(0, 0), &generic(1, crate::ports::at(1, 0)));
    std::fs::write(
        s.c.unit_dir().join("bridge.service"),
        "[Unit]\nDescription=bridge\n[Service]\n\
         ExecStart=/usr/bin/python3 /opt/fixtures/worker.py --name bridge --log /run/bridge.log\n\
         ExecStop=/bin/sh -c 'echo $MAINPID > /run/bridge.execstop; kill -INT $MAINPID'\n\
         KillSignal=SIGINT\n",
    )
    .unwrap();
    s.c.systemctl(&["daemon-reload"]);
    s.c.systemctl(&["restart", "bridge.service"]);
    let root = format!("/proc/{}/root/run", s.c.leader());
    // Its signal handlers are in place once it says it is ready.
    let t = Instant::now();
    while !std::fs::read_to_string(format!("{root}/bridge.log"))
        .is_ok_and(|l| l.contains("ready bridge"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the bridge never became ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Frozen as the master's phase begins: the bridge is stopped, its mask
    // written but not yet loaded; it is started again behind orch's back
    // (nothing of the master's stop reaches it: it is not PartOf= the master).
    let (child, mut out) = spawn_until(
        &s,
        &["stop-for-maintenance", "--output", "json"],
        "stopping",
        "fx.service",
    );
    let pid = Pid::from_raw(child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let late = "bridge.service";
    let was = state_of(&s.c, late);
    let started = s.c.systemctl(&["start", late]);
    kill(pid, Signal::SIGCONT).unwrap();
    assert!(matches!(was.as_str(), "inactive" | "failed"), "{was}");
    assert!(started.status.success(), "{started:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let mut child = child;
    assert!(child.wait().unwrap().success(), "{rest}");
    let report: serde_json::Value = rest
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .map(|v| v["report"].clone())
        .unwrap_or_else(|| panic!("no summary: {rest}"));
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report["stopped_again"],
        serde_json::json!([late]),
        "{report}"
    );
    assert_eq!(processes(&s.c, late), 0);

    let execstop = std::fs::read_to_string(format!("{root}/bridge.execstop"));
    assert!(execstop.is_ok(), "the bridge's own ExecStop= must have run");
    let log = std::fs::read_to_string(format!("{root}/bridge.log")).unwrap_or_default();
    assert!(
        log.lines().any(|l| l.starts_with("sigint bridge")),
        "the bridge must get its own KillSignal=SIGINT, not SIGTERM: {log:?}\n{}",
        s.c.journal("bridge.service")
    );
    orch_ok(&s.c, &s.cfg, &["resume"]);
}

/// Issue 13 item 3: a lock file planted as a symlink is never followed (it
/// used to be truncated and overwritten with `PID … on …`), and a state
/// folder others can write is refused; nothing is masked or stopped.
#[test]
fn a_symlinked_lock_or_a_writable_state_folder_is_refused() {
    let _ports = crate::ports::lease_groups(2);
    use std::os::unix::fs::PermissionsExt;
    let s = setup(crate::ports::at(0, 0), &generic(1, crate::ports::at(1, 0)));
    let folder = s.state.join("fx");
    std::fs::create_dir_all(&folder).unwrap();
    let victim = s._dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    // The install of the setup left a real lock file: replaced by the link.
    let _ = std::fs::remove_file(folder.join("lock"));
    std::os::unix::fs::symlink(&victim, folder.join("lock")).unwrap();
    for args in [&["resume"][..], &["stop-for-maintenance"]] {
        let o = orch(&s.c, &s.cfg, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&folder.join("lock").display().to_string())
                && err.contains("symbolic link"),
            "{args:?}: {err}"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
    assert_eq!(
        std::fs::read_dir(&s.masks).unwrap().count(),
        0,
        "nothing masked"
    );
    assert_eq!(state_of(&s.c, "fx.service"), "active");

    std::fs::remove_file(folder.join("lock")).unwrap();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = orch(&s.c, &s.cfg, &["stop-for-maintenance"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("writable by group or others"), "{err}");
    assert!(!folder.join("maintenance.json").exists());
    assert_eq!(state_of(&s.c, "fx.service"), "active");
}

/// Issue 13 item 9: a damaged journal blocks nothing it should not: status
/// still shows every unit and says the journal is unreadable, `resume` names
/// the way out, and `resume --all` unmasks and starts the whole deployment.
#[test]
fn a_damaged_journal_is_shown_and_resume_all_is_the_way_out() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(crate::ports::at(0, 0), &generic(2, crate::ports::at(1, 0)));
    let units = all_units(2);
    orch_ok(&s.c, &s.cfg, &["stop-for-maintenance"]);
    let journal = s.state.join("fx/maintenance.json");
    let text = std::fs::read(&journal).unwrap();
    std::fs::write(&journal, &text[..text.len() / 2]).unwrap();

    let o = orch(&s.c, &s.cfg, &["status", "--output", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v["units"].as_array().unwrap().len(), units.len() + 1, "{v}");
    let why = v["maintenance_unreadable"].as_str().unwrap_or_default();
    assert!(
        why.contains("damaged") && why.contains("orch resume --all"),
        "{v}"
    );

    let o = orch(&s.c, &s.cfg, &["resume"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("orch resume --all"), "{err}");
    assert!(matches!(
        state_of(&s.c, "fx.service").as_str(),
        "inactive" | "failed"
    ));

    orch_ok(&s.c, &s.cfg, &["resume", "--all"]);
    for u in &units {
        assert_eq!(state_of(&s.c, u), "active", "{u}");
    }
    assert!(!journal.exists(), "the damaged journal is removed");
    assert_eq!(
        std::fs::read_dir(&s.masks).unwrap().count(),
        0,
        "no mask left"
    );
}

/// Issue 12: with `--include-database` the database is stopped but never
/// masked, and the operator starts and stops it through orch during the
/// upgrade while everything else stays masked.
#[test]
fn the_database_can_be_driven_during_maintenance() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(crate::ports::at(0, 0), &generic(1, crate::ports::at(1, 18)));
    orch_ok(
        &s.c,
        &s.cfg,
        &["stop-for-maintenance", "--include-database"],
    );
    assert!(matches!(
        state_of(&s.c, "fakedb.service").as_str(),
        "inactive" | "failed"
    ));
    let load = |u: &str| {
        String::from_utf8_lossy(&s.c.systemctl(&["show", "-P", "LoadState", u]).stdout)
            .trim()
            .to_string()
    };
    assert_eq!(
        load("fakedb.service"),
        "loaded",
        "the database is not masked"
    );
    assert_eq!(load("fx.service"), "masked");

    orch_ok(&s.c, &s.cfg, &["start", "database"]);
    assert_eq!(state_of(&s.c, "fakedb.service"), "active");
    let o = orch(&s.c, &s.cfg, &["start", "--all"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the rest stays refused during maintenance"
    );
    assert!(matches!(
        state_of(&s.c, "fx.service").as_str(),
        "inactive" | "failed"
    ));
    orch_ok(&s.c, &s.cfg, &["stop", "database"]);
    assert!(matches!(
        state_of(&s.c, "fakedb.service").as_str(),
        "inactive" | "failed"
    ));

    orch_ok(&s.c, &s.cfg, &["resume"]);
    for u in [
        "fakedb.service",
        "fx.service",
        "fx-worker-0-generic.service",
        "bridge.service",
    ] {
        assert_eq!(state_of(&s.c, u), "active", "{u}");
    }
}

/// `stop-for-maintenance [EXTRA…] … -- sh -c SCRIPT`, bounded like every orch run.
fn around(s: &Setup, extra: &[&str], script: &str) -> std::process::Output {
    let mut args = vec!["stop-for-maintenance", "--reason", "pg upgrade"];
    args.extend(extra);
    args.extend(["--", "/bin/sh", "-c", script]);
    orch(&s.c, &s.cfg, &args)
}

#[test]
fn command_that_succeeds_runs_stopped_and_is_followed_by_resume() {
    let _ports = crate::ports::lease_groups(1);
    let s = setup(crate::ports::at(0, 0), &generic(2, crate::ports::at(0, 10)));
    let seen = s._dir.path().join("seen");
    let script = format!(
        "test -e {state}/fx/maintenance.json && echo \"$ORCH_DEPLOYMENT/$ORCH_MAINTENANCE_REASON\" > {seen} && echo upgrading",
        state = s.state.display(),
        seen = seen.display()
    );
    let o = around(&s, &["--output", "json"], &script);
    let text = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{text}\n{err}");
    // It ran in maintenance, with its environment, its output shown (on
    // stderr: stdout stays orch's JSON lines).
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "fx/pg upgrade\n");
    assert!(err.contains("upgrading"), "{err}");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let command = events
        .iter()
        .find(|v| v["event"] == "command")
        .expect("command event");
    assert_eq!(command["exit_code"], 0, "{command}");
    assert_eq!(summary(&o)["ok"], true);
    for u in all_units(2) {
        assert_eq!(state_of(&s.c, &u), "active", "{u}");
    }
    assert!(
        !s.state.join("fx/maintenance.json").exists(),
        "journal left"
    );
    assert_eq!(
        std::fs::read_dir(&s.masks).unwrap().count(),
        0,
        "masks left"
    );
}

#[test]
fn command_that_fails_leaves_the_deployment_in_maintenance_with_its_status() {
    let _ports = crate::ports::lease_groups(1);
    let s = setup(
        crate::ports::at(0, 20),
        &generic(2, crate::ports::at(0, 30)),
    );
    let o = around(&s, &[], "echo broken >&2; exit 7");
    assert_eq!(o.status.code(), Some(7));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("broken")
            && err.contains("stays in maintenance")
            && err.contains("orch resume"),
        "{err}"
    );
    for u in all_units(2) {
        assert!(
            matches!(state_of(&s.c, &u).as_str(), "inactive" | "failed"),
            "{u} is {}",
            state_of(&s.c, &u)
        );
    }
    assert!(
        s.state.join("fx/maintenance.json").exists(),
        "journal removed"
    );
    let st = json(&orch_ok(&s.c, &s.cfg, &["status", "--output", "json"]));
    for r in st["units"].as_array().unwrap() {
        if r["unit"] != "fakedb.service" {
            assert_eq!(r["load_state"], "masked", "{r}");
        }
    }
    // The way out it names.
    orch_ok(&s.c, &s.cfg, &["resume"]);
    assert_eq!(state_of(&s.c, "fx.service"), "active");
}

#[test]
fn sigterm_while_the_command_runs_reaches_it_and_keeps_maintenance() {
    let _ports = crate::ports::lease_groups(1);
    let s = setup(crate::ports::at(0, 8), &generic(1, crate::ports::at(0, 18)));
    let started = s._dir.path().join("started");
    let script = format!("touch {}; exec sleep 60", started.display());
    let mut child = orch_cmd(
        &s.c,
        &s.cfg,
        &["stop-for-maintenance", "--", "/bin/sh", "-c", &script],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the command never started");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("orch outlived SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // sleep got the SIGTERM orch passed on and ended at once.
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(status.code(), Some(128 + 15));
    assert!(
        s.state.join("fx/maintenance.json").exists(),
        "journal removed"
    );
    assert!(matches!(
        state_of(&s.c, "fx.service").as_str(),
        "inactive" | "failed"
    ));
}

/// Waits (bounded) until `path` exists.
fn wait_for_file(path: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{} never appeared", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_lock_is_held_from_the_stop_through_the_command_to_the_resume() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(crate::ports::at(0, 0), &generic(2, crate::ports::at(1, 0)));
    let started = s._dir.path().join("started");
    let inner = s._dir.path().join("inner");
    // CMD runs orch itself: with the token it was given, its install acts
    // under the held lock instead of waiting for it.
    let cmd = orch_cmd(&s.c, &s.cfg, &["install", "--lock-wait", "0"]);
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    let script = format!(
        "ORCH_JOURNAL_ROOT=/proc/{leader}/root {orch} > {inner} 2>&1; echo \"exit $?\" >> {inner}; touch {started}; sleep 6",
        leader = s.c.leader(),
        orch = words.join(" "),
        inner = inner.display(),
        started = started.display(),
    );
    let args = [
        "stop-for-maintenance",
        "--reason",
        "upgrade",
        "--",
        "/bin/sh",
        "-c",
        &script,
    ];
    let mut first = orch_cmd(&s.c, &s.cfg, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&started, &mut first);
    let said = std::fs::read_to_string(&inner).unwrap();
    assert!(said.ends_with("exit 0\n"), "orch inside CMD: {said}");
    let holder = format!("PID {} (orch stop-for-maintenance) on ", first.id());
    // A second operator's resume fails at once, naming the holder.
    let t = Instant::now();
    let o = orch(&s.c, &s.cfg, &["resume"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&holder) && err.contains(" since "), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // install and start wait their bound, then fail naming the holder.
    for args in [&["install"][..], &["start", "--all"][..]] {
        let t = Instant::now();
        let o = orch(&s.c, &s.cfg, &[args, &["--lock-wait", "1"]].concat());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(&holder), "{args:?}: {err}");
        assert!(
            t.elapsed() >= Duration::from_secs(1),
            "{args:?} did not wait"
        );
    }
    for u in all_units(2) {
        let st = state_of(&s.c, &u);
        assert!(matches!(st.as_str(), "inactive" | "failed"), "{u} is {st}");
    }
    let o = first.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("nothing to resume"), "{err}");
    for u in all_units(2) {
        assert_eq!(state_of(&s.c, &u), "active", "{u}");
    }
    assert!(
        !s.state.join("fx/maintenance.json").exists(),
        "journal left"
    );
}

/// Issue 21 item 8: a journal that is a symbolic link or a FIFO is never
/// followed or read, but it hides no unit and `resume --all` is the way out.
#[test]
fn a_symlinked_or_fifo_journal_is_shown_and_resume_all_removes_it() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(crate::ports::at(0, 0), &generic(1, crate::ports::at(1, 0)));
    let units = all_units(1);
    let journal = s.state.join("fx/maintenance.json");
    let victim = s._dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    for fifo in [false, true] {
        orch_ok(&s.c, &s.cfg, &["stop-for-maintenance"]);
        std::fs::remove_file(&journal).unwrap();
        match fifo {
            false => std::os::unix::fs::symlink(&victim, &journal).unwrap(),
            true => nix::unistd::mkfifo(&journal, nix::sys::stat::Mode::S_IRWXU).unwrap(),
        }
        let o = orch(&s.c, &s.cfg, &["status", "--output", "json"]);
        assert_eq!(o.status.code(), Some(1));
        let v = json(&o);
        assert_eq!(v["units"].as_array().unwrap().len(), units.len() + 1, "{v}");
        let why = v["maintenance_unreadable"].as_str().unwrap_or_default();
        assert!(why.contains("orch resume --all"), "{v}");
        let o = orch(&s.c, &s.cfg, &["resume"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("orch resume --all"), "{err}");
        orch_ok(&s.c, &s.cfg, &["resume", "--all"]);
        for u in &units {
            assert_eq!(state_of(&s.c, u), "active", "{u} (fifo: {fifo})");
        }
        assert!(
            journal.symlink_metadata().is_err(),
            "the bad journal is removed"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
}

/// PIDs whose command line contains `needle` (e.g. `sleep 4242.123`).
fn pids_running(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains(needle).then_some(pid)
        })
        .collect()
}

/// Runs `stop-for-maintenance -- sh -c SCRIPT` until SCRIPT touched
/// `started`, sends orch SIGTERM, and returns its exit code and stderr.
fn terminate_during(s: &Setup, script: &str, started: &Path) -> (Option<i32>, String) {
    // stderr goes to a file, not a pipe: a leftover of CMD (the very bug
    // these tests look for) would hold a pipe open and hang the test
    // instead of failing it.
    let err_path = s._dir.path().join("orch.stderr");
    let err_file = std::fs::File::create(&err_path).unwrap();
    let mut child = orch_cmd(
        &s.c,
        &s.cfg,
        &["stop-for-maintenance", "--", "/bin/sh", "-c", script],
    )
    .stdout(Stdio::null())
    .stderr(err_file)
    .spawn()
    .unwrap();
    wait_for_file(started, &mut child);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("orch still running 60 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    (status.code(), err)
}

/// Fails unless no process runs `sleep`; ends (by PID) any that do, so a
/// failing test leaves nothing behind.
fn assert_none_left(sleep: &str, err: &str) {
    let left = pids_running(sleep);
    for p in &left {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
    assert!(left.is_empty(), "`{sleep}` outlived orch: {left:?}\n{err}");
}

/// Issue 21 item 2: SIGTERM reaches CMD's whole process group, and orch
/// reports CMD ended only when nothing of it is left.
#[test]
fn sigterm_ends_the_command_s_whole_process_group() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(crate::ports::at(0, 0), &generic(1, crate::ports::at(1, 0)));
    let started = s._dir.path().join("started");
    let sleep = format!("sleep 4242.{}", std::process::id());
    let done = s._dir.path().join("done");
    let script = format!(
        "touch {}; {sleep}; touch {}",
        started.display(),
        done.display()
    );
    let (code, err) = terminate_during(&s, &script, &started);
    assert_eq!(code, Some(128 + 15), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!done.exists(), "the shell went on after its sleep: {err}");
    assert_none_left(&sleep, &err);
}

/// Issue 21 item 2: a CMD ignoring SIGTERM is killed with its grandchild.
#[test]
fn a_command_ignoring_sigterm_is_killed_with_its_grandchild() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(crate::ports::at(0, 0), &generic(1, crate::ports::at(1, 0)));
    let started = s._dir.path().join("started");
    let sleep = format!("sleep 4343.{}", std::process::id());
    let script = format!(
        "trap '' TERM; {sleep} & touch {}; wait; wait",
        started.display()
    );
    let (code, err) = terminate_during(&s, &script, &started);
    assert_eq!(code, Some(128 + 9), "{err}");
    assert!(err.contains("SIGKILL"), "{err}");
    assert_none_left(&sleep, &err);
}

/// Issue 21 item 2: what CMD leaves behind after exit 0 fails the run: no
/// resume, the deployment stays in maintenance, and orch says why.
#[test]
fn leftovers_of_a_successful_command_keep_the_deployment_in_maintenance() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(crate::ports::at(0, 0), &generic(1, crate::ports::at(1, 0)));
    let o = around(&s, &[], "sleep 1 & exit 0");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("left processes in its group") && err.contains("stays in maintenance"),
        "{err}"
    );
    assert!(s.state.join("fx/maintenance.json").exists(), "resumed");
    assert!(matches!(
        state_of(&s.c, "fx.service").as_str(),
        "inactive" | "failed"
    ));
}

/// What is in the runtime (mask) folder.
fn masks_left(s: &Setup) -> Vec<String> {
    std::fs::read_dir(&s.masks)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Issue 21 item 3: a unit removed by an install during maintenance keeps no
/// runtime mask after resume (the journal records every mask orch made), so
/// the worker can come back and start.
#[test]
fn a_unit_removed_during_maintenance_keeps_no_mask_after_resume() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(crate::ports::at(0, 0), &generic(3, crate::ports::at(1, 0)));
    let three = std::fs::read_to_string(&s.cfg).unwrap();
    assert!(three.contains("count = 3"), "{three}");
    orch_ok(&s.c, &s.cfg, &["stop-for-maintenance"]);
    let masked = std::fs::read_dir(&s.masks).unwrap().count();
    assert!(
        masked >= 4,
        "{masked} masks: the master and 3 workers at least"
    );
    std::fs::write(&s.cfg, three.replace("count = 3", "count = 2")).unwrap();
    orch_ok(&s.c, &s.cfg, &["install"]);
    assert!(
        !s.masks.join("fx-worker-2-generic.service").exists(),
        "install removed the unit but left its mask"
    );
    orch_ok(&s.c, &s.cfg, &["resume"]);
    let left = masks_left(&s);
    assert!(left.is_empty(), "masks outlived resume: {left:?}");
    // The worker comes back: created, and started like the others.
    std::fs::write(&s.cfg, &three).unwrap();
    orch_ok(&s.c, &s.cfg, &["install"]);
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    for u in all_units(3) {
        assert_eq!(state_of(&s.c, &u), "active", "{u}");
    }
}

/// Issue 21 item 3, resume's side: every mask orch made goes, whatever the
/// configuration says now (here a worker dropped from the file during
/// maintenance, with no install to remove its unit).
#[test]
fn resume_removes_every_mask_it_recorded_whatever_the_configuration_says() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(crate::ports::at(0, 0), &generic(3, crate::ports::at(1, 0)));
    let three = std::fs::read_to_string(&s.cfg).unwrap();
    orch_ok(&s.c, &s.cfg, &["stop-for-maintenance"]);
    assert!(s.masks.join("fx-worker-2-generic.service").exists());
    std::fs::write(&s.cfg, three.replace("count = 3", "count = 2")).unwrap();
    orch_ok(&s.c, &s.cfg, &["resume"]);
    let left = masks_left(&s);
    assert!(left.is_empty(), "masks outlived resume: {left:?}");
}

/// Issue 21 item 3: plan and install say when a unit they create is masked
/// at runtime (it would be written, then refuse to start).
#[test]
fn plan_and_install_warn_about_a_runtime_mask_on_a_unit_they_create() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(crate::ports::at(0, 0), &generic(3, crate::ports::at(1, 0)));
    let three = std::fs::read_to_string(&s.cfg).unwrap();
    std::os::unix::fs::symlink("/dev/null", s.masks.join("fx-worker-3-generic.service")).unwrap();
    std::fs::write(&s.cfg, three.replace("count = 3", "count = 4")).unwrap();
    let o = orch(&s.c, &s.cfg, &["plan", "--output", "json"]);
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let unit = |name: &str| {
        plan["units"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["unit"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {plan}"))
    };
    assert_eq!(
        unit("fx-worker-3-generic.service")["runtime_mask"],
        true,
        "{plan}"
    );
    assert!(unit("fx-worker-2-generic.service")
        .get("runtime_mask")
        .is_none());
    let o = orch_ok(&s.c, &s.cfg, &["install"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        out.contains("fx-worker-3-generic.service  (masked at runtime"),
        "{out}"
    );
    assert!(err.contains("is masked in"), "{err}");
}

/// A tmpfs of a few pages mounted over a folder, unmounted on drop.
struct TinyFs(PathBuf);

impl TinyFs {
    fn mount(at: &Path) -> TinyFs {
        std::fs::create_dir_all(at).unwrap();
        let o = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs"])
            .arg(at)
            .output()
            .expect("mount (util-linux) runs");
        assert!(o.status.success(), "mount tmpfs: {o:?}");
        TinyFs(at.to_path_buf())
    }

    /// Fills it with `filler` until the file system says it is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let page = [0u8; 4096];
        while f.write_all(&page).and_then(|_| f.sync_all()).is_ok() {}
        path
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
    }
}

/// Mutation gap (a) of issue 21: the journal is written to a temporary file,
/// synced and renamed. On a state folder with no room left,
/// stop-for-maintenance fails before it stops anything, and leaves no
/// partial `maintenance.json` (written in place, an empty one would stay and
/// make the deployment look in maintenance with a journal nobody can read).
/// A journal already there stays readable on a full folder, and resume
/// (which only removes it) works.
#[test]
fn a_full_state_folder_leaves_no_partial_journal_and_stops_nothing() {
    let _ports = crate::ports::lease_groups(2);
    let s = setup(crate::ports::at(0, 0), &generic(1, crate::ports::at(1, 0)));
    let tiny = TinyFs::mount(&s.state);
    let folder = s.state.join("fx");
    // The lock file exists, with its holder text, before the folder is full.
    orch_ok(&s.c, &s.cfg, &["install"]);
    assert!(folder.join("lock").exists());
    // What install keeps there (the lock, generations for rollback) is
    // the baseline: the failed stop must add nothing to it.
    let listing = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let before = listing();
    assert!(!before.contains("maintenance.json"), "{before:?}");
    let filler = tiny.fill();
    let o = orch(&s.c, &s.cfg, &["stop-for-maintenance", "--reason", "full"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left"), "{err}");
    let left: Vec<String> = listing().difference(&before).cloned().collect();
    assert!(left.is_empty(), "left in the state folder: {left:?}");
    for u in all_units(1) {
        assert_eq!(state_of(&s.c, &u), "active", "{u} stopped: {err}");
    }
    assert_eq!(std::fs::read_dir(&s.masks).unwrap().count(), 0, "masked");
    let v = json(&orch_ok(&s.c, &s.cfg, &["status", "--output", "json"]));
    assert!(v["maintenance"].is_null(), "{v}");

    // Room again: the journal is written; full again: it is still read.
    std::fs::remove_file(&filler).unwrap();
    orch_ok(&s.c, &s.cfg, &["stop-for-maintenance", "--reason", "full"]);
    tiny.fill();
    let v = json(&orch_ok(&s.c, &s.cfg, &["status", "--output", "json"]));
    assert_eq!(v["maintenance"]["reason"], "full", "{v}");
    orch_ok(&s.c, &s.cfg, &["resume"]);
    assert!(!folder.join("maintenance.json").exists());
    assert_eq!(state_of(&s.c, "fx.service"), "active");
}

/// Issue 26 part 1: with `[database] roles`, a database orch cannot reach
/// (nothing listens on the port; no socket at the path) is a clear error
/// before anything changes: every unit still runs, nothing is masked, no
/// journal is written.
#[test]
fn an_unreachable_database_for_the_session_proof_changes_nothing() {
    let _ports = crate::ports::lease_groups(3);
    let s = setup(crate::ports::at(0, 0), &generic(2, crate::ports::at(1, 0)));
    let text = std::fs::read_to_string(&s.cfg).unwrap();
    let units = all_units(2);
    let nowhere = [
        format!("tcp://127.0.0.1:{}", crate::ports::at(2, 0)),
        "/run/orch-test-no-such-dir/.s.PGSQL.5432".to_string(),
    ];
    for connect in &nowhere {
        let with_roles = text.replace(
            "unit = \"fakedb.service\"\n",
            &format!("unit = \"fakedb.service\"\nroles = [\"app\"]\nconnect = \"{connect}\"\n"),
        );
        assert_ne!(with_roles, text, "the test's [database] changed");
        std::fs::write(&s.cfg, with_roles).unwrap();
        let o = orch(&s.c, &s.cfg, &["stop-for-maintenance"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!(
                "cannot reach PostgreSQL at {connect} as `postgres`"
            )) && err.contains("nothing was changed"),
            "{err}"
        );
        for u in &units {
            assert_eq!(state_of(&s.c, u), "active", "{u} after: {err}");
        }
        assert_eq!(masks_left(&s), Vec::<String>::new());
        assert!(!s.state.join("fx").join("maintenance.json").exists());
    }
}

/// The row of `unit` in a lifecycle summary or a maintenance report.
fn row<'a>(units: &'a serde_json::Value, unit: &str) -> &'a serde_json::Value {
    units
        .as_array()
        .and_then(|a| a.iter().find(|u| u["unit"] == unit))
        .unwrap_or_else(|| panic!("{unit} not in {units}"))
}

/// Issue 26 part 4: a unit whose stop outlives its TimeoutStopSec= (2 s
/// here; it ignores SIGTERM) is SIGKILLed by systemd, and every verb says
/// so for that unit, in JSON and for people: restart (its stop phase),
/// rolling restart (one restart job, and the start resets the service's
/// Result: the journal keeps it), stop, and
/// stop-for-maintenance. Units that stopped politely are not flagged.
#[test]
fn a_stop_systemd_had_to_sigkill_is_said_by_every_verb() {
    let _ports = crate::ports::lease_groups(3);
    let workers = format!(
        "{}[[workers]]\nkind = \"stubborn\"\ncount = 1\nport_base = @P0@\nexec_start = \"{{FIXTURE}} --ignore-sigterm --port {{{{ port }}}}\"\nhealth = \"http://127.0.0.1:{{{{ port }}}}/health\"\nstop_timeout = \"2s\"\n",
        generic(1, crate::ports::at(1, 0))
    );
    let s = setup(crate::ports::at(2, 0), &workers);
    let stubborn = "fx-worker-1-stubborn.service";
    let polite = "fx-worker-0-generic.service";
    let flag = |v: &serde_json::Value| v["sigkilled_by_systemd"] == true;

    let o = orch_ok(&s.c, &s.cfg, &["restart", "workers", "--output", "json"]);
    let sum = summary(&o);
    let results = s.c.exec(&["journalctl", "-o", "json", "-u", stubborn]);
    let results = String::from_utf8_lossy(&results.stdout);
    let results: Vec<&str> = results
        .lines()
        .filter(|l| l.contains("UNIT_RESULT"))
        .collect();
    assert!(
        flag(row(&sum["units"], stubborn)),
        "restart: {sum}\njournal: {results:#?}"
    );
    assert!(!flag(row(&sum["units"], polite)), "restart: {sum}");
    assert_eq!(row(&sum["units"], stubborn)["phase"], "ready", "{sum}");
    // Rolling: one restart job, after which only the journal knows.
    let human = orch_ok(&s.c, &s.cfg, &["restart", "--all", "--rolling"]);
    let human = String::from_utf8_lossy(&human.stdout);
    let said = "SIGKILLED by systemd: its stop outlived TimeoutStopSec";
    let line = human.lines().find(|l| l.contains(stubborn));
    assert!(line.is_some_and(|l| l.contains(said)), "restart:\n{human}");

    let o = orch_ok(&s.c, &s.cfg, &["stop", "workers", "--output", "json"]);
    let sum = summary(&o);
    assert!(flag(row(&sum["units"], stubborn)), "stop: {sum}");
    assert!(!flag(row(&sum["units"], polite)), "stop: {sum}");
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);

    let o = orch_ok(&s.c, &s.cfg, &["stop-for-maintenance", "--output", "json"]);
    let report = maintenance_report(&o);
    assert!(flag(row(&report["units"], stubborn)), "{report}");
    assert!(!flag(row(&report["units"], polite)), "{report}");
    assert_eq!(
        report["sigkilled_by_systemd"],
        serde_json::json!([stubborn]),
        "{report}"
    );
    assert_eq!(
        report["killed"],
        serde_json::json!([]),
        "systemd killed it, not orch: {report}"
    );
    let human = orch_ok(&s.c, &s.cfg, &["stop-for-maintenance"]);
    let human = String::from_utf8_lossy(&human.stdout);
    let line = human.lines().find(|l| l.contains(stubborn));
    assert!(
        line.is_some_and(|l| l.contains("SIGKILLED by systemd")),
        "{human}"
    );
    orch_ok(&s.c, &s.cfg, &["resume"]);
}

/// A worker kind `stubborn` of one worker that ignores SIGTERM, stopped by
/// systemd within `stop_timeout` (then SIGKILLed); `@P0@` is its port.
fn stubborn_block(stop_timeout: &str) -> String {
    format!(
        "[[workers]]\nkind = \"stubborn\"\ncount = 1\nport_base = @P0@\n\
         exec_start = \"{{FIXTURE}} --ignore-sigterm --port {{{{ port }}}}\"\n\
         health = \"http://127.0.0.1:{{{{ port }}}}/health\"\nstop_timeout = \"{stop_timeout}\"\n"
    )
}

/// A deployment of `generics` generic workers and one stubborn one (its
/// stop bound `stop_timeout`), installed and started, on ports leased for
/// the test: keep the lease for the test's life.
fn with_stubborn(generics: usize, stop_timeout: &str) -> (crate::ports::PortLease, Setup) {
    let ports = crate::ports::lease_groups(3);
    let workers = format!(
        "{}{}",
        generic(generics, crate::ports::at(1, 0)),
        stubborn_block(stop_timeout)
    );
    (ports, setup(crate::ports::at(2, 0), &workers))
}

/// `config` (as written, ports filled in) without the block
/// [`stubborn_block`] added: from its header to its last line.
fn without_stubborn(config: &str) -> String {
    let start = config
        .find("[[workers]]\nkind = \"stubborn\"")
        .expect("the stubborn block");
    let last = "stop_timeout = \"";
    let tail = start + config[start..].find(last).expect("its stop_timeout");
    let end = tail + config[tail..].find('\n').unwrap() + 1;
    format!("{}{}", &config[..start], &config[end..])
}

/// Issue 26 part 4 for the units `install` and `rollback` remove: a stale
/// unit is stopped before its file goes, and when its stop outlives its
/// TimeoutStopSec= (2 s; it ignores SIGTERM) systemd SIGKILLs it: the
/// report says so for that unit, in JSON and for people, and not for a
/// unit removed in the same run that stopped politely. Each stop is
/// bounded by that unit's own TimeoutStopSec= plus slack (`-v` says it).
#[test]
fn a_unit_removed_by_install_or_rollback_says_when_systemd_had_to_sigkill_it() {
    let (_ports, s) = with_stubborn(2, "2s");
    let stubborn = "fx-worker-2-stubborn.service";
    let polite = "fx-worker-1-generic.service";
    let with = std::fs::read_to_string(&s.cfg).unwrap();
    let without = without_stubborn(&with).replacen("count = 2", "count = 1", 1);
    assert!(
        !without.contains("stubborn") && without != with,
        "{without}"
    );
    let flag = |v: &serde_json::Value| v["sigkilled_by_systemd"] == true;

    std::fs::write(&s.cfg, &without).unwrap();
    let o = orch_ok(&s.c, &s.cfg, &["-v", "install", "--output", "json"]);
    // Each stop was bounded by the unit's own TimeoutStopSec= as systemd
    // loaded it (2 s and 5 s here) plus slack: not one fixed bound.
    let log = String::from_utf8_lossy(&o.stderr);
    let bound = |u: &str| {
        log.lines()
            .find(|l| l.contains("stopping stale unit") && l.contains(u))
            .and_then(|l| l.split("bound=").nth(1))
            .map(|b| b.split_whitespace().next().unwrap_or_default().to_string())
    };
    assert_eq!(bound(stubborn).as_deref(), Some("12s"), "{log}");
    assert_eq!(bound(polite).as_deref(), Some("15s"), "{log}");
    let v = json(&o);
    for u in [stubborn, polite] {
        assert_eq!(row(&v["units"], u)["action"], "remove", "{v}");
    }
    assert!(flag(row(&v["units"], stubborn)), "install: {v}");
    assert!(!flag(row(&v["units"], polite)), "install: {v}");
    // systemd's own record of the kill, kept after the file went.
    assert_eq!(state_of(&s.c, stubborn), "failed");

    // Back to the generation with both, running; then forward again by
    // rollback, which removes them the same way and says it for people.
    let o = orch_ok(&s.c, &s.cfg, &["rollback", "--output", "json"]);
    assert_eq!(json(&o)["rolled_back_to"], 1, "{}", json(&o));
    std::fs::write(&s.cfg, &with).unwrap();
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    let o = orch_ok(&s.c, &s.cfg, &["rollback", "--to", "2"]);
    let human = String::from_utf8_lossy(&o.stdout);
    let line = |u: &str| {
        human
            .lines()
            .find(|l| l.contains(u))
            .unwrap_or_default()
            .to_string()
    };
    let said = "SIGKILLED by systemd: its stop outlived TimeoutStopSec";
    assert!(
        line(stubborn).starts_with("  removed") && line(stubborn).contains(said),
        "rollback:\n{human}"
    );
    assert!(
        line(polite).starts_with("  removed") && !line(polite).contains("SIGKILL"),
        "rollback:\n{human}"
    );
}

/// `install --timeout 2s` bounds the stop of a stale unit whose stop takes
/// longer (it ignores SIGTERM, stop_timeout 20 s): exit 3 within the bound
/// plus slack, naming the unit and the bound, its file kept. Without the
/// flag the unit's own bound (20 s + 10 s) applies and the stop completes.
/// `rollback --timeout 2s` removing it again is bounded the same way.
#[test]
fn install_timeout_bounds_a_stale_unit_s_stop_and_without_it_its_own_bound_applies() {
    let (_ports, s) = with_stubborn(1, "20s");
    let stubborn = "fx-worker-1-stubborn.service";
    let file = s.c.unit_dir().join(stubborn);
    assert!(file.is_file(), "{}", file.display());
    let with = std::fs::read_to_string(&s.cfg).unwrap();
    let without = without_stubborn(&with);
    assert!(!without.contains("stubborn"), "{without}");
    std::fs::write(&s.cfg, &without).unwrap();

    let t = Instant::now();
    let o = orch(&s.c, &s.cfg, &["install", "--timeout", "2s"]);
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(took < Duration::from_secs(8), "took {took:?}: {err}");
    assert!(
        err.contains(&format!("stop stale unit {stubborn}")) && err.contains("after 2s"),
        "{err}"
    );
    assert!(file.is_file(), "a timed-out stop keeps the file");

    // Without the flag: the unit's own TimeoutStopSec= plus slack.
    let t = Instant::now();
    let o = orch_ok(&s.c, &s.cfg, &["-v", "install", "--output", "json"]);
    let log = String::from_utf8_lossy(&o.stderr);
    let bound = log
        .lines()
        .find(|l| l.contains("stopping stale unit") && l.contains(stubborn))
        .and_then(|l| l.split("bound=").nth(1))
        .and_then(|b| b.split_whitespace().next());
    assert_eq!(bound, Some("30s"), "{log}");
    assert_eq!(row(&json(&o)["units"], stubborn)["action"], "remove");
    assert!(!file.exists(), "removed once stopped");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());

    // rollback takes the same bound: back to generation 1 (with the
    // stubborn worker), started, then forward to 2 with `--timeout 2s`.
    orch_ok(&s.c, &s.cfg, &["rollback"]);
    std::fs::write(&s.cfg, &with).unwrap();
    orch_ok(&s.c, &s.cfg, &["start", "--all"]);
    let t = Instant::now();
    let o = orch(&s.c, &s.cfg, &["rollback", "--to", "2", "--timeout", "2s"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "rollback: {err}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(err.contains(stubborn) && err.contains("after 2s"), "{err}");
    assert!(file.is_file(), "a timed-out stop keeps the file");
}

/// PostgreSQL's binaries: Debian's highest installed major version.
pub(crate) fn pg_bin() -> PathBuf {
    let hint = "apt-get install -y postgresql (or run .ci/run)";
    let mut majors: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap_or_else(|e| panic!("PostgreSQL is not installed ({e}): {hint}"))
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|m| Path::new(&format!("/usr/lib/postgresql/{m}/bin/postgres")).is_file())
        .collect();
    majors.sort();
    let major = majors
        .pop()
        .unwrap_or_else(|| panic!("PostgreSQL is not installed: {hint}"));
    PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"))
}

/// `args` in the container as OS user `uid`, from `/`.
fn exec_as(c: &Container, uid: u32, gid: u32, args: &[&str]) -> std::process::Output {
    let (u, g) = (uid.to_string(), gid.to_string());
    let mut full = vec![
        "env",
        "-C",
        "/",
        "setpriv",
        "--reuid",
        &u,
        "--regid",
        &g,
        "--clear-groups",
        "--",
    ];
    full.extend_from_slice(args);
    let o = c.exec(&full);
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Issue 26 part 1, the default connection: a real PostgreSQL whose only
/// door is a Unix socket with peer authentication (`local all all peer`,
/// no TCP), as Debian sets up `postgres`. orch, as root on the host,
/// reaches it through the socket folder (bound into the container) as the
/// OS user `postgres` (the same uid in the container), sees a stray `psql`
/// session of the role `app`, names it and fails (the deployment stays in
/// maintenance), then ends it with `--terminate-sessions`.
#[test]
fn the_session_proof_reaches_postgres_by_its_socket_with_peer_authentication() {
    let bin = pg_bin();
    let pg = nix::unistd::User::from_name("postgres")
        .unwrap()
        .expect("the host's postgres user (apt-get install -y postgresql)");
    let (uid, gid) = (pg.uid.as_raw(), pg.gid.as_raw());
    let app_uid = 2601;
    let dir = tempfile::tempdir().unwrap();
    let (sock, masks, state, sysusers) = (
        dir.path().join("pgsock"),
        dir.path().join("masks"),
        dir.path().join("state"),
        dir.path().join("sysusers.d"),
    );
    for d in [&sock, &masks, &state, &sysusers] {
        std::fs::create_dir(d).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    // orch's child, as postgres, walks down to the socket.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&sock, Some(uid), Some(gid)).unwrap();
    std::fs::write(
        sysusers.join("pg.conf"),
        format!("g postgres {gid}\nu postgres {uid}:{gid} \"PostgreSQL\" /var/lib/pgtest\nu app {app_uid} \"App\" /\n"),
    )
    .unwrap();
    let c = Container::builder()
        .bind(&sock, "/run/orch-pg")
        .bind(&masks, "/run/systemd/system.control")
        .bind_ro(&sysusers, "/etc/sysusers.d")
        .boot();
    let ok = |o: std::process::Output| assert!(o.status.success(), "{o:?}");
    ok(c.exec(&["systemd-sysusers"]));
    ok(c.exec(&[
        "install",
        "-d",
        "-o",
        "postgres",
        "-g",
        "postgres",
        "-m",
        "700",
        "/var/lib/pgtest",
    ]));
    let initdb = bin.join("initdb").display().to_string();
    exec_as(
        &c,
        uid,
        gid,
        &[
            &initdb,
            "-D",
            "/var/lib/pgtest/data",
            "--auth-local=peer",
            "--auth-host=reject",
            "-U",
            "postgres",
            "--no-sync",
        ],
    );
    std::fs::write(
        c.unit_dir().join("pgtest.service"),
        format!(
            "[Service]\nType=notify\nUser=postgres\nExecStart={} -D /var/lib/pgtest/data -c listen_addresses= -c unix_socket_directories=/run/orch-pg -c fsync=off\nKillMode=mixed\nKillSignal=SIGINT\n",
            bin.join("postgres").display()
        ),
    )
    .unwrap();
    let cfg = dir.path().join("orch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[deployment]\nname = \"pf\"\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\n\
             [database]\nunit = \"pgtest.service\"\nroles = [\"app\"]\nconnect = \"{}/.s.PGSQL.5432\"\n\
             [master]\nexec_start = \"/usr/bin/sleep infinity\"\n[[workers]]\nkind = \"w\"\ncount = 2\nexec_start = \"/usr/bin/sleep infinity\"\n",
            state.display(),
            masks.display(),
            sock.display()
        ),
    )
    .unwrap();
    orch_ok(&c, &cfg, &["install"]);
    orch_ok(&c, &cfg, &["start", "--all"]);
    let psql = bin.join("psql").display().to_string();
    let as_pg = |sql: &str| {
        let o = exec_as(
            &c,
            uid,
            gid,
            &[
                &psql,
                "-h",
                "/run/orch-pg",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-At",
                "-c",
                sql,
            ],
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    as_pg("create role app login");
    let (leader, app) = (c.leader().to_string(), app_uid.to_string());
    let mut stray = std::process::Command::new("nsenter")
        .args([
            "-t",
            &leader,
            "-m",
            "-u",
            "-i",
            "-p",
            "--",
            "setpriv",
            "--reuid",
            &app,
            "--regid",
            &app,
            "--clear-groups",
            "--",
        ])
        .args([
            psql.as_str(),
            "-h",
            "/run/orch-pg",
            "-U",
            "app",
            "-d",
            "postgres",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid: i64 = loop {
        if let Ok(p) = as_pg("select pid from pg_stat_activity where usename = 'app'").parse() {
            break p;
        }
        assert!(Instant::now() < deadline, "the stray psql did not connect");
        std::thread::sleep(Duration::from_millis(100));
    };

    let o = orch(
        &c,
        &cfg,
        &[
            "stop-for-maintenance",
            "--timeout",
            "3s",
            "--output",
            "json",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.stdout.is_empty(), "no report: {err}");
    let report = maintenance_report(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{report}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let left = &report["sessions"]["left"];
    assert_eq!(
        (&left[0]["pid"], &left[0]["application_name"]),
        (&pid.into(), &"psql".into()),
        "{report}"
    );
    assert!(
        left[0]["client_addr"].is_null(),
        "over the socket: {report}"
    );
    assert!(
        state.join("pf/maintenance.json").is_file(),
        "stays in maintenance"
    );
    let o = orch_ok(
        &c,
        &cfg,
        &[
            "stop-for-maintenance",
            "--terminate-sessions",
            "--output",
            "json",
        ],
    );
    let report = maintenance_report(&o);
    assert_eq!(report["sessions"]["terminated"][0]["pid"], pid, "{report}");
    assert_eq!(
        as_pg("select count(*) from pg_stat_activity where usename = 'app'"),
        "0"
    );
    let _ = stray.kill();
    let _ = stray.wait();
    orch_ok(&c, &cfg, &["resume"]);
}

//! A deployment over two hosts: two harness containers play hosts `a` and
//! `b`. The SSH command is a wrapper that, like ssh, drops its options and
//! the destination and hands the rest to a shell on the "remote" host (the
//! container named by the destination, entered with nsenter). So D-Bus goes
//! over zbus's unixexec transport and `systemd-stdio-bridge`, and unit files,
//! masks, the lock and the maintenance journal go through a remote `sh`, end
//! to end; only the network hop is missing.

use crate::support::OutputBounded;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::{json, maintenance_report, summary};
use crate::support::Container;

const FIXTURE: &str =
    "/usr/bin/python3 /opt/fixtures/worker.py --name {{ name }} --log /opt/log/events.log";

/// In the test's folder: a unit of host b whose done job ends b's bus
/// (tests/fixtures/cut.py).
const CUT: &str = "cut";

struct Hosts {
    a: Container,
    b: Container,
    dir: tempfile::TempDir,
    ssh: PathBuf,
    log: PathBuf,
}

fn boot() -> Hosts {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    std::fs::create_dir(&log).unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o777)).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let host = || {
        Container::builder()
            .bind_ro(&fixtures, "/opt/fixtures")
            .bind(&log, "/opt/log")
            .boot()
    };
    let (a, b) = (host(), host());
    // Destinations: 127.0.0.2 is host a, 127.0.0.3 host b; anything else
    // fails the way ssh does when it cannot connect. While the file CUT
    // names a unit, host b's bus ends just after that unit's job is done.
    let ssh = dir.path().join("fake-ssh");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\n\
             w=; prev=\n\
             for a in \"$@\"; do [ \"$prev\" = -W ] && w=$a; [ \"$prev\" = -O ] && exit 0; prev=$a; done\n\
             while [ \"$1\" != -- ]; do shift; done; shift\n\
             case \"$1\" in\n\
             *@127.0.0.2|127.0.0.2) pid={a} ;;\n\
             *@127.0.0.3|127.0.0.3) pid={b} ;;\n\
             *@127.0.0.8) exec sleep 300 ;;\n\
             *) echo \"ssh: connect to host $1 port 22: Connection refused\" >&2; exit 255 ;;\n\
             esac\n\
             shift\n\
             [ -n \"$w\" ] && exec /usr/bin/python3 {forward} \"$w\"\n\
             if [ $pid = {b} ] && [ -s {cut} ]; then case \"$*\" in *systemd-stdio-bridge*)\n\
               exec /usr/bin/python3 {cut_py} \"$(cat {cut})\" nsenter -t $pid -m -u -i -p -- sh -c \"$*\" ;; esac; fi\n\
             exec nsenter -t $pid -m -u -i -p -- sh -c \"$*\"\n",
            a = a.leader(),
            b = b.leader(),
            forward = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/forward.py"),
            cut = dir.path().join(CUT).display(),
            cut_py = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cut.py"),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    Hosts {
        a,
        b,
        log: log.join("events.log"),
        dir,
        ssh,
    }
}

impl Hosts {
    fn config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn orch(&self, cfg: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_orch"))
            .arg("--config")
            .arg(cfg)
            .arg("--ssh-command")
            .arg(&self.ssh)
            .args(["--call-timeout", "10s"])
            .args(args)
            .env_remove("ORCH_BUS")
            .env_remove("ORCH_HOST")
            .env_remove("ORCH_CONFIG")
            .output_bounded()
            .unwrap()
    }

    fn ok(&self, cfg: &Path, args: &[&str]) -> Output {
        let o = self.orch(cfg, args);
        assert!(
            o.status.success(),
            "orch {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// `(event, name, time)` lines the fixtures wrote.
    fn events(&self) -> Vec<(String, String, f64)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((
                    w.next()?.to_string(),
                    w.next()?.to_string(),
                    w.next()?.parse().ok()?,
                ))
            })
            .collect()
    }
}

/// Two hosts with the deployment (`config("b", port)`, changed by `edit`)
/// installed: the port lease (kept for the test), the hosts, the master's
/// port and the configuration's path.
fn installed(edit: impl Fn(String) -> String) -> (crate::ports::PortLease, Hosts, u16, PathBuf) {
    let lease = crate::ports::lease_groups(1);
    let port = crate::ports::at(0, 0);
    let h = boot();
    let cfg = h.config("orch.toml", &edit(config("b", port)));
    h.ok(&cfg, &["install"]);
    (lease, h, port, cfg)
}

/// The deployment, with its ports from `port` up: the master on `port`, the
/// generic workers after it (the containers share the host's network, so
/// `port` comes from the test's lease, `ports::at(0, 0)`).
fn config(generic_host: &str, port: u16) -> String {
    format!(
        r#"[deployment]
name = "mh"

[[hosts]]
name = "a"
address = "root@127.0.0.2"

[[hosts]]
name = "b"
address = "admin@127.0.0.3:2222"

[master]
host = "a"
exec_start = "{FIXTURE} --port {{{{ port }}}} --ready-after 0.5"
port = {port}
health = "http://127.0.0.1:{{{{ port }}}}/health"

[[workers]]
kind = "generic"
count = 3
host = "{generic_host}"
port_base = {wport}
exec_start = "{FIXTURE} --port {{{{ port }}}} --ready-after 0.2"
health = "http://127.0.0.1:{{{{ port }}}}/health"

[[workers]]
kind = "pusher"
count = 1
exec_start = "{FIXTURE}"
# Passes only where the unit runs: this machine has no systemd as PID 1.
health = "exec:systemctl is-active --quiet {{{{ name }}}}.service"
health_timeout = "5s"
"#,
        wport = port + 1
    )
}

fn units(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service"))
        .collect();
    v.sort();
    v
}

#[test]
fn install_restart_maintenance_and_resume_across_two_hosts() {
    let _ports = crate::ports::lease_groups(1);
    let port = crate::ports::at(0, 0);
    let h = boot();
    let cfg = h.config("orch.toml", &config("b", port));

    // Plan reads both hosts' unit folders.
    let o = h.orch(&cfg, &["plan", "--output", "json"]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let plan = json(&o);
    let on = |host: &str| {
        plan["units"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["host"] == host && u["action"] == "create")
            .count()
    };
    // Each host also gets the deployment's slice.
    assert_eq!((on("a"), on("b")), (3, 4), "{plan}");

    // Install writes each unit on its own host, through the remote shell.
    let o = h.ok(&cfg, &["install", "--output", "json"]);
    let r = json(&o);
    assert_eq!(r["changed"], true, "{r}");
    assert_eq!(
        units(h.a.unit_dir()),
        ["mh-worker-3-pusher.service", "mh.service"],
        "host a"
    );
    assert_eq!(
        units(h.b.unit_dir()),
        [
            "mh-worker-0-generic.service",
            "mh-worker-1-generic.service",
            "mh-worker-2-generic.service"
        ],
        "host b"
    );
    // What landed is exactly what orch renders (the hash line checks out).
    for (dir, unit) in [
        (h.a.unit_dir(), "mh.service"),
        (h.b.unit_dir(), "mh-worker-1-generic.service"),
    ] {
        let text = std::fs::read_to_string(dir.join(unit)).unwrap();
        assert_eq!(
            orch::render::read_marker(&text).intact,
            Some(true),
            "{unit}: {text}"
        );
    }
    // systemd relations only within a host: the master wants its local
    // worker only; a worker on b has no PartOf= to a unit b does not have.
    let master = std::fs::read_to_string(h.a.unit_dir().join("mh.service")).unwrap();
    assert!(
        master.contains("Wants=mh-worker-3-pusher.service"),
        "{master}"
    );
    assert!(!master.contains("generic"), "{master}");
    let pusher =
        std::fs::read_to_string(h.a.unit_dir().join("mh-worker-3-pusher.service")).unwrap();
    assert!(pusher.contains("PartOf=mh.service"), "{pusher}");
    let generic =
        std::fs::read_to_string(h.b.unit_dir().join("mh-worker-0-generic.service")).unwrap();
    assert!(!generic.contains("PartOf="), "{generic}");
    assert!(!generic.contains("After="), "{generic}");
    let wants =
        h.a.systemctl(&["show", "-p", "Wants", "--value", "mh.service"]);
    assert!(
        String::from_utf8_lossy(&wants.stdout).contains("mh-worker-3-pusher.service"),
        "systemd on a loaded the new master: {wants:?}"
    );

    // Idempotent: nothing rewritten, no host reloaded.
    let r = json(&h.ok(&cfg, &["install", "--output", "json"]));
    assert_eq!(r["changed"], false, "{r}");
    assert!(
        r["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["reloaded"] == false),
        "{r}"
    );
    assert_eq!(h.orch(&cfg, &["plan"]).status.code(), Some(0));

    // Restart everything: the master (host a) is ready before any worker on
    // host b starts, which systemd alone could not order across machines.
    let o = h.ok(&cfg, &["restart", "--all", "--output", "json"]);
    let s = summary(&o);
    let units_ = s["units"].as_array().unwrap();
    assert_eq!(units_.len(), 5, "{s}");
    assert!(units_.iter().all(|u| u["phase"] == "ready"), "{s}");
    let ev = h.events();
    let master_ready = ev
        .iter()
        .find(|(e, n, _)| e == "ready" && n == "mh")
        .unwrap_or_else(|| panic!("no master ready event: {ev:?}"))
        .2;
    let b_starts: Vec<f64> = ev
        .iter()
        .filter(|(e, n, _)| e == "start" && n.contains("generic"))
        .map(|e| e.2)
        .collect();
    assert_eq!(b_starts.len(), 3, "{ev:?}");
    assert!(
        b_starts.iter().all(|t| *t >= master_ready),
        "workers on b started before the master on a was ready: {ev:?}"
    );

    // Status: one row per unit, with its host.
    let v = json(&h.ok(&cfg, &["status", "--output", "json"]));
    for u in v["units"].as_array().unwrap() {
        assert_eq!(u["active_state"], "active", "{v}");
        let expected = if u["unit"].as_str().unwrap().contains("generic") {
            "b"
        } else {
            "a"
        };
        assert_eq!(u["host"], expected, "{u}");
    }
    let pusher = v["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == "mh-worker-3-pusher.service")
        .unwrap();
    assert_eq!(
        pusher["health"], "ok",
        "exec: probes run on the unit's host: {pusher}"
    );
    let text = String::from_utf8_lossy(&h.ok(&cfg, &["status"]).stdout).into_owned();
    assert!(text.starts_with("HOST"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("b ") && l.contains("mh-worker-0-generic")),
        "{text}"
    );

    // The lock lives on the master's host: another orch holding it there
    // (from any machine) is named, and nothing is stopped.
    let mut holder = Command::new("nsenter")
        .args([
            "-t",
            &h.a.leader().to_string(),
            "-m",
            "-u",
            "-i",
            "-p",
            "--",
        ])
        .args([
            "sh",
            "-c",
            "mkdir -p /var/lib/orch/mh && exec 9>>/var/lib/orch/mh/lock && flock 9 && \
             echo PID 4242 on elsewhere > /var/lib/orch/mh/lock && echo held $$ && exec sleep 60",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let pid = line
        .trim()
        .strip_prefix("held ")
        .expect("held PID")
        .to_string();
    let o = h.orch(&cfg, &["stop-for-maintenance"]);
    // The holder runs inside the container's PID namespace: killed there.
    h.a.exec(&["kill", &pid]);
    let _ = holder.kill();
    let _ = holder.wait();
    let t = Instant::now();
    while !h
        .a
        .exec(&["flock", "-n", "/var/lib/orch/mh/lock", "true"])
        .status
        .success()
    {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the holder never let go"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("another orch (PID 4242 on elsewhere) is working on deployment mh"),
        "{err}"
    );
    let o = h.a.systemctl(&["is-active", "mh.service"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "active");

    // Maintenance: every host proved empty.
    let o = h.ok(
        &cfg,
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
    for u in report["units"].as_array().unwrap() {
        assert_eq!(u["processes"], 0, "{u}");
        assert!(
            matches!(u["active_state"].as_str(), Some("inactive" | "failed")),
            "{u}"
        );
    }
    for (c, unit) in [(&h.b, "mh-worker-2-generic.service"), (&h.a, "mh.service")] {
        let o = c.systemctl(&["show", "-p", "LoadState", "--value", unit]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "masked",
            "{unit}"
        );
        let o = c.exec(&[
            "sh",
            "-c",
            &format!("systemd-cgls --no-pager -u {unit} | tail -n +2"),
        ]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "",
            "{unit} has processes"
        );
    }
    // The journal is on the master's host, where any operator finds it.
    assert!(h
        .a
        .exec(&["test", "-f", "/var/lib/orch/mh/maintenance.json"])
        .status
        .success());
    let o = h.orch(&cfg, &["start", "--all"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("in maintenance"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Resume brings back exactly what ran, on both hosts.
    let s = summary(&h.ok(&cfg, &["resume", "--output", "json"]));
    assert_eq!(s["units"].as_array().unwrap().len(), 5, "{s}");
    assert!(!h
        .a
        .exec(&["test", "-e", "/var/lib/orch/mh/maintenance.json"])
        .status
        .success());
    for (c, unit) in [(&h.b, "mh-worker-2-generic.service"), (&h.a, "mh.service")] {
        let o = c.systemctl(&["is-active", unit]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "active",
            "{unit}"
        );
    }

    // Moving a worker kind to the other host: installed on a, stopped and
    // removed from b.
    let moved = h.config("moved.toml", &config("a", port));
    let r = json(&h.ok(&moved, &["install", "--output", "json"]));
    assert_eq!(r["changed"], true, "{r}");
    assert!(
        units(h.b.unit_dir()).is_empty(),
        "{:?}",
        units(h.b.unit_dir())
    );
    assert_eq!(units(h.a.unit_dir()).len(), 5);
    let o = h.b.systemctl(&["is-active", "mh-worker-0-generic.service"]);
    assert_ne!(String::from_utf8_lossy(&o.stdout).trim(), "active");
}

#[test]
fn an_unreachable_host_is_named_after_its_bound_and_the_others_still_show() {
    let (_ports, h, port, cfg) = installed(|c| c);
    h.ok(&cfg, &["start", "--all"]);
    // Host b moves to an address nobody answers at.
    let text = config("b", port).replace("admin@127.0.0.3:2222", "admin@127.0.0.9");
    let down = h.config("down.toml", &text);

    let t = Instant::now();
    let o = h.orch(&down, &["status", "--output", "json"]);
    assert!(
        t.elapsed() < Duration::from_secs(10 + 3),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("host b"), "{err}");
    let v = json(&o);
    let rows = v["units"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "{v}");
    for r in rows {
        let expected = if r["host"] == "b" {
            "unreachable"
        } else {
            "active"
        };
        assert_eq!(r["active_state"], expected, "{r}");
    }
    assert_eq!(v["unreachable"][0]["host"], "b", "{v}");
    assert_eq!(v["maintenance_known"], true, "{v}");

    // The master's host out of reach: its journal cannot be read, and status
    // says so instead of implying the deployment is not in maintenance.
    let text = config("b", port).replace("root@127.0.0.2", "root@127.0.0.9");
    let no_master = h.config("no-master.toml", &text);
    let o = h.orch(&no_master, &["status", "--output", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v["maintenance_known"], false, "{v}");
    assert!(v["maintenance"].is_null(), "{v}");
    let o = h.orch(&no_master, &["status"]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("maintenance state UNKNOWN: the master's host a is unreachable"),
        "{out}"
    );

    // A host that never answers (ssh hangs connecting): named after the
    // bound, and no ssh left behind holding orch's output open.
    let text = config("b", port).replace("admin@127.0.0.3:2222", "admin@127.0.0.8");
    let hung = h.config("hung.toml", &text);
    let t = Instant::now();
    let o = h.orch(
        &hung,
        &["status", "--call-timeout", "2s", "--output", "json"],
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(2 + 3),
        "{took:?}"
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("host b (admin@127.0.0.8 through") && err.contains("no answer within 2s"),
        "{err}"
    );

    // A lifecycle command refuses to act on half the deployment, and says why.
    let t = Instant::now();
    let o = h.orch(&down, &["stop", "--all"]);
    assert!(
        t.elapsed() < Duration::from_secs(10 + 3),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("host b"), "{err}");
    // Nothing was stopped on the reachable host.
    let o = h.a.systemctl(&["is-active", "mh.service"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "active");
}

#[test]
fn a_connection_that_dies_while_jobs_run_fails_bounded_naming_the_host() {
    // The workers on b are Type=notify and take 3 s to say READY=1, so their
    // start jobs are still running inside b's systemd when its bridge dies.
    connection_dies("\ntype = \"notify\"", "while waiting for job");
}

#[test]
fn a_connection_that_dies_while_probing_fails_bounded_naming_the_host() {
    // Type=exec: the jobs are done at once, and the workers' probes fail for
    // 3 s; orch must not call them ready once it can no longer watch them.
    connection_dies("", "while the unit was being probed");
}

fn connection_dies(extra: &str, says: &str) {
    let (_ports, h, _, cfg) =
        installed(|c| c.replace("--ready-after 0.2\"", &format!("--ready-after 3\"{extra}")));
    let child = Command::new(env!("CARGO_BIN_EXE_orch"))
        .arg("--config")
        .arg(&cfg)
        .arg("--ssh-command")
        .arg(&h.ssh)
        .args([
            "--call-timeout",
            "10s",
            "start",
            "--all",
            "--output",
            "json",
        ])
        .env_remove("ORCH_BUS")
        .env_remove("ORCH_HOST")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !h
        .events()
        .iter()
        .any(|(e, n, _)| e == "start" && n.contains("generic"))
    {
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", h.events());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The "connection" to b drops: its bridge process ends.
    let killed = h.b.exec(&["pkill", "-KILL", "-x", "systemd-stdio-b"]);
    assert!(killed.status.success(), "{killed:?}");
    let t = Instant::now();
    let o = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let s = failed_summary(&o);
    for u in s["units"].as_array().unwrap() {
        if u["host"] == "b" {
            assert_eq!(u["phase"], "failed", "{u}");
            let e = u["error"].as_str().unwrap_or_default();
            // A unit whose job ended as the connection dropped is judged
            // after its job: its state can no longer be read (a busy host).
            assert!(
                e.contains("closed")
                    && e.contains("host b")
                    && (e.contains(says) || e.contains("after its start job")),
                "{u}"
            );
        } else {
            assert_eq!(u["phase"], "ready", "{u}");
        }
    }
}

/// The JSON summary of a run that must have failed (exit 1).
fn failed_summary(o: &Output) -> serde_json::Value {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    summary(o)
}

/// The moment `connection_dies` meets only by chance on a busy host, made
/// every time: host b's bus ends right after one worker's start job is done,
/// before orch reads that unit's state. The unit is failed with what
/// happened (before: `unit is unknown after its start job`).
#[test]
fn a_connection_that_closes_just_after_a_job_ends_says_so_for_that_unit() {
    let (_ports, h, _, cfg) = installed(|c| c);
    let unit = "mh-worker-1-generic.service";
    std::fs::write(h.dir.path().join(CUT), unit).unwrap();
    let t = Instant::now();
    let o = h.orch(&cfg, &["start", "--all", "--output", "json"]);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let s = failed_summary(&o);
    let units = s["units"].as_array().unwrap();
    let cut = units.iter().find(|u| u["unit"] == unit).unwrap();
    assert_eq!(cut["phase"], "failed", "{cut}");
    assert_eq!(cut["job"], "done", "{cut}");
    let e = cut["error"].as_str().unwrap_or_default();
    assert!(
        e.starts_with("the connection to host b closed after its start job"),
        "{cut}"
    );
    // Host a's units are judged as usual.
    for u in units.iter().filter(|u| u["host"] == "a") {
        assert_eq!(u["phase"], "ready", "{u}");
    }
}

/// Issue 15 with the fake ssh: a host with a network of its own (its
/// loopback is not this machine's), whose units listen only there, is
/// started, restarted and reported healthy with `http://127.0.0.1:PORT`
/// probes, which travel as `ssh -W` (here: a relay run inside that host's
/// network namespace); a probe to a port nothing listens on fails within
/// its bound.
#[test]
fn loopback_probes_travel_through_ssh_to_a_host_with_its_own_network() {
    // The units listen in their own network, but the test checks the host
    // does not reach them there: the lease keeps the host clear of them.
    let _ports = crate::ports::lease_groups(1);
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let c = Container::builder()
        .bind_ro(&fixtures, "/opt/fixtures")
        .private_network()
        .boot();
    let ssh = dir.path().join("fake-ssh");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\n\
             w=; prev=\n\
             for a in \"$@\"; do [ \"$prev\" = -W ] && w=$a; [ \"$prev\" = -O ] && exit 0; prev=$a; done\n\
             while [ \"$1\" != -- ]; do shift; done; shift 2\n\
             [ -n \"$w\" ] && exec nsenter -t {pid} -n -- /usr/bin/python3 {forward} \"$w\"\n\
             exec nsenter -t {pid} -m -u -i -p -n -- sh -c \"$*\"\n",
            pid = c.leader(),
            forward = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/forward.py"),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = |worker_port: u16| {
        let path = dir.path().join("orch.toml");
        std::fs::write(
            &path,
            crate::ports::fill(&format!(
                "[deployment]\nname = \"ln\"\nunit_dir = \"/etc/systemd/system\"\n\
                 [[hosts]]\nname = \"box\"\naddress = \"root@box.example\"\n\
                 [master]\nhost = \"box\"\nexec_start = \"/usr/bin/python3 /opt/fixtures/worker.py --name m --port @P0@\"\n\
                 health = \"http://127.0.0.1:@P0@/health\"\n\
                 [[workers]]\nkind = \"w\"\ncount = 1\nhost = \"box\"\nhealth_timeout = \"3s\"\n\
                 exec_start = \"/usr/bin/python3 /opt/fixtures/worker.py --name w --port @P0+1@\"\n\
                 health = \"http://127.0.0.1:{worker_port}/health\"\n"
            )),
        )
        .unwrap();
        path
    };
    let orch = |cfg: &Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_orch"))
            .arg("--config")
            .arg(cfg)
            .arg("--ssh-command")
            .arg(&ssh)
            .args(["--call-timeout", "10s"])
            .args(args)
            .env_remove("ORCH_BUS")
            .env_remove("ORCH_HOST")
            .env_remove("ORCH_CONFIG")
            .output_bounded()
            .unwrap()
    };
    let ok = |o: &Output, what: &str| {
        assert!(
            o.status.success(),
            "{what}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let cfg = config(crate::ports::at(0, 1));
    ok(&orch(&cfg, &["install"]), "install");
    let o = orch(&cfg, &["start", "--all", "--output", "json"]);
    ok(&o, "start --all");
    assert!(crate::common::all_in_phase(&summary(&o), "ready"));
    // Only the host's own network reaches the units: not this machine.
    assert!(
        std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], crate::ports::at(0, 0))),
            Duration::from_millis(300)
        )
        .is_err(),
        "the master must not be reachable from the test process"
    );
    let o = orch(&cfg, &["restart", "--all", "--output", "json"]);
    ok(&o, "restart --all");
    assert!(crate::common::all_in_phase(&summary(&o), "ready"));
    let o = orch(&cfg, &["status", "--output", "json"]);
    ok(&o, "status");
    let units = json(&o)["units"].as_array().unwrap().clone();
    assert!(units.iter().all(|u| u["health"] == "ok"), "{units:?}");

    // A worker probed where nothing listens fails within its 3 s bound.
    // Nothing listens there: the lease keeps the host clear of it too.
    let cfg = config(crate::ports::at(0, 2));
    ok(&orch(&cfg, &["install"]), "install");
    let t = Instant::now();
    let o = orch(&cfg, &["restart", "w", "--output", "json"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
}

/// Issue 26 part 2 over two hosts: the master on a, the generic workers on
/// b. A bad release of the generic workers (ready, then a crash restarted
/// by `Restart=`) stops `restart --rolling --changed --canary` after the
/// canary on host b, whose events say `canary`; the other generic workers
/// keep their processes. The generations live on the master's host.
#[test]
fn a_canary_on_another_host_stops_the_rollout_there() {
    let _ports = crate::ports::lease_groups(1);
    let h = boot();
    let port = crate::ports::at(0, 0);
    let good = config("b", port);
    let cfg = h.config("orch.toml", &good);
    h.ok(&cfg, &["install"]);
    h.ok(&cfg, &["start", "--all"]);
    let bad = good.replace(
        "--ready-after 0.2\"",
        "--ready-after 0.2 --exit-after 1.5\"\nrestart = \"on-failure\"\nrestart_sec = \"500ms\"",
    );
    assert_ne!(bad, good);
    let cfg = h.config("orch.toml", &bad);
    h.ok(&cfg, &["install"]);
    let pid = |unit: &str| {
        let o = h.b.systemctl(&["show", "-P", "MainPID", unit]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let rest = ["mh-worker-1-generic.service", "mh-worker-2-generic.service"];
    let before: Vec<String> = rest.iter().map(|u| pid(u)).collect();

    let o = h.orch(
        &cfg,
        &[
            "restart",
            "--rolling",
            "--changed",
            "--canary",
            "--hold",
            "5s",
            "--output",
            "json",
        ],
    );
    let sum = summary(&o);
    assert_eq!(o.status.code(), Some(1), "{sum}");
    assert_eq!(sum["untouched"], serde_json::json!(rest), "{sum}");
    let canary = sum["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == "mh-worker-0-generic.service")
        .unwrap_or_else(|| panic!("{sum}"))
        .clone();
    assert_eq!(
        (canary["phase"].as_str(), canary["host"].as_str()),
        (Some("failed"), Some("b")),
        "{canary}"
    );
    assert_eq!(canary["canary"], true, "{canary}");
    let staged = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("\"stage\":\"canary\"") && l.contains("mh-worker-0-generic"))
        .count();
    assert!(staged >= 2, "{}", String::from_utf8_lossy(&o.stdout));
    let after: Vec<String> = rest.iter().map(|u| pid(u)).collect();
    assert_eq!(after, before, "the rest untouched on host b");

    let v = json(&h.ok(&cfg, &["status", "--output", "json"]));
    assert_eq!(v["generation"]["number"], 2, "{v}");
}

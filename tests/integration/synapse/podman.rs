//! The parent module's real-Synapse stack with Synapse's master and six
//! workers each in a podman container, as examples/synapse-containers.toml
//! deploys them: the image is the harness rootfs (symlinks into the shared
//! `/usr`) with Synapse's user, imported with `podman import` (no
//! registry); the venv, the configuration and `/usr` are bound as volumes;
//! host networking on the leased ports. PostgreSQL and Redis stay bare
//! units. orch reaches the harness container as a remote host (the
//! containers module's fake ssh), so its podman questions (image check,
//! container states, strays) go to the podman that runs the containers.

use super::*;
use crate::containers::{fake_ssh, need_podman, podman_setup, remote_cmd, remote_ok, rootfs_tar};

const IMAGE: &str = "localhost/matrix-synapse:latest";
/// Inside the container: where podman's configuration and the image pass.
const SHARED: &str = "/opt/podman";

/// examples/synapse-containers.toml with the test's paths and ports; the
/// venv's python is the host's, so the container also gets `/usr`.
fn container_config(venv: &Path) -> String {
    let cfg = config_of(
        "examples/synapse-containers.toml",
        venv,
        Path::new("/var/lib/orch"),
        Path::new("/run/systemd/system.control"),
    );
    let from = "\"/opt/venvs/matrix-synapse:/opt/venvs/matrix-synapse:ro\"";
    assert!(cfg.contains(from), "the example binds the venv: {cfg}");
    let v = venv.display();
    cfg.replace(from, &format!("\"{v}:{v}:ro\", \"/usr:/usr:ro\""))
}

/// An orch run through the fake ssh with JSON output, bounded by `limit`.
fn timed(ssh: &Path, cfg: &Path, args: &[&str], limit: Duration) -> (Output, Instant, Duration) {
    let t = Instant::now();
    let o = remote_cmd(ssh, cfg, args)
        .output_within(limit)
        .expect("run orch");
    let took = t.elapsed();
    let o = crate::common::assert_orch_ok(o, args);
    (o, t, took)
}

/// The names of the containers podman knows in the harness, running or not.
fn containers(c: &Container, all: bool) -> Vec<String> {
    let mut args = vec!["podman", "ps", "--format", "{{.Names}}"];
    if all {
        args.push("--all");
    }
    let o = exec_ok(c, &args);
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// The harness with PostgreSQL's cluster initialised, the units of
/// PostgreSQL and Redis, podman configured and the image imported.
fn boot_stack(dir: &Path, venv: &Path, bin: &Path) -> Container {
    let (conf, masks, sysusers, shared) = (
        dir.join("synapse"),
        dir.join("masks"),
        dir.join("sysusers.d"),
        dir.join("podman"),
    );
    for d in [&masks, &sysusers, &shared] {
        std::fs::create_dir(d).unwrap();
    }
    write_synapse_config(&conf);
    chown_r(&conf, SYNAPSE_UID);
    std::fs::write(
        sysusers.join("orch-synapse-test.conf"),
        format!(
            "u matrix-synapse {SYNAPSE_UID} \"Synapse\" {CONF} /usr/sbin/nologin\n\
             u postgres {POSTGRES_UID} \"PostgreSQL\" /var/lib/pgtest /usr/sbin/nologin\n\
             u redis 2003 \"Redis\" /tmp /usr/sbin/nologin\n"
        ),
    )
    .unwrap();
    let c = Container::builder()
        .bind_ro(venv, venv)
        .bind(&conf, CONF)
        .bind(&masks, "/run/systemd/system.control")
        .bind_ro(&sysusers, "/etc/sysusers.d")
        .bind(&shared, SHARED)
        .boot();
    exec_ok(&c, &["systemd-sysusers"]);
    exec_ok(
        &c,
        &[
            "install",
            "-d",
            "-o",
            "postgres",
            "-g",
            "postgres",
            "-m",
            "700",
            "/var/lib/pgtest",
        ],
    );
    // The example's third volume: Synapse's state folder on the host.
    exec_ok(
        &c,
        &[
            "install",
            "-d",
            "-o",
            "matrix-synapse",
            "/var/lib/matrix-synapse",
        ],
    );
    let initdb = bin.join("initdb");
    let o = as_postgres(
        &c,
        &[
            initdb.to_str().unwrap(),
            "-D",
            PGDATA,
            "-E",
            "UTF8",
            "--locale=C",
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
    );
    assert!(o.status.success(), "initdb: {}", text(&o));
    write_service_units(&c, bin);
    let tar = rootfs_tar(dir, &[("matrix-synapse", SYNAPSE_UID)]);
    podman_setup(&c, &shared, SHARED, &tar, IMAGE);
    c
}

/// Each Synapse unit runs its container, whose main process is in the
/// unit's own cgroup, and `orch status` shows the image and its state.
fn check_containers(c: &Container, ssh: &Path, cfg: &Path) {
    let mut want: Vec<String> = [NAME, PERSISTER, FEDERATION, PUSHER, MEDIA]
        .iter()
        .chain(GENERIC_NAMES.iter())
        .map(|s| s.to_string())
        .collect();
    want.sort();
    assert_eq!(containers(c, false), want);
    for name in &want {
        let o = exec_ok(
            c,
            &["podman", "inspect", "--format", "{{.State.Pid}}", name],
        );
        let pid = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let cg = std::fs::read_to_string(format!("/proc/{}/root/proc/{pid}/cgroup", c.leader()))
            .unwrap_or_default();
        assert!(cg.contains(&format!("/{name}.service")), "{name}: {cg}");
    }
    let status = json(&remote_ok(ssh, cfg, &["status", "--output", "json"]));
    for name in &want {
        let row = status_row(&status, &format!("{name}.service"));
        assert_eq!(
            (row["image"].as_str(), row["container_state"].as_str()),
            (Some(IMAGE), Some("running")),
            "{row}"
        );
    }
}

/// Synapse's processes, its database sessions and its containers, read
/// without orch; all must be none.
fn nothing_left(c: &Container, bin: &Path, when: &str, report: &serde_json::Value) {
    let (procs, sessions) = synapse_leftovers(c, bin);
    assert!(
        procs.is_empty(),
        "Synapse processes {when}: {procs:#?}\n{report}"
    );
    assert_eq!(sessions, "0", "sessions of Synapse's role {when}");
    let left = containers(c, true);
    assert!(left.is_empty(), "containers {when}: {left:?}\n{report}");
}

/// stop-for-maintenance, a dump / drop / restore sampled for leftovers
/// while pg_dump runs, resume; the duration of each step.
fn maintenance_cycle(c: &Container, ssh: &Path, cfg: &Path, bin: &Path) -> Vec<(String, String)> {
    let mut timings = Vec::new();
    let args = [
        "stop-for-maintenance",
        "--reason",
        "dump and restore",
        "--output",
        "json",
    ];
    let (o, _, took) = timed(ssh, cfg, &args, Duration::from_secs(180));
    let report = maintenance_report(&o);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report["stray_containers"],
        serde_json::json!([]),
        "{report}"
    );
    timings.push(("stop-for-maintenance".into(), secs(took)));
    nothing_left(c, bin, "before the dump", &report);
    let t = Instant::now();
    let port = PG_PORT.to_string();
    let conn = ["-h", "127.0.0.1", "-p", &port, "-U", "postgres"];
    let pg = |tool: &str, rest: &[&str]| {
        let tool = bin.join(tool).display().to_string();
        let mut args = vec![tool.as_str()];
        args.extend_from_slice(&conn);
        args.extend_from_slice(rest);
        let o = as_postgres(c, &args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    };
    let rows = || {
        psql_in(
            c,
            bin,
            "synapse",
            "select count(*) || ' events' from events",
        )
    };
    let before = rows();
    std::thread::scope(|inner| {
        let dumper = inner.spawn(|| pg("pg_dump", &["-Fc", "-f", DUMP, "synapse"]));
        while !dumper.is_finished() {
            nothing_left(c, bin, "during the dump", &report);
        }
        if let Err(panic) = dumper.join() {
            std::panic::resume_unwind(panic);
        }
    });
    psql(c, bin, "drop database synapse");
    psql(
        c,
        bin,
        "create database synapse owner synapse encoding 'UTF8' locale 'C' template template0",
    );
    pg("pg_restore", &["-d", "synapse", DUMP]);
    nothing_left(c, bin, "after the restore", &report);
    assert_eq!(rows(), before, "the restored database has the dumped rows");
    timings.push(("pg_dump + drop + restore".into(), secs(t.elapsed())));
    let (_, _, took) = timed(
        ssh,
        cfg,
        &["resume", "--output", "json"],
        Duration::from_secs(300),
    );
    timings.push(("resume".into(), secs(took)));
    timings
}

#[test]
fn real_synapse_in_podman_containers_through_orch() {
    let _serial = serial();
    need_podman();
    let test_start = Instant::now();
    let bin = preflight();
    let (venv, install_time) = synapse_venv();
    let dir = tempfile::tempdir().unwrap();
    let c = boot_stack(dir.path(), &venv, &bin);
    let ssh = fake_ssh(&c, dir.path(), "");
    let cfg = dir.path().join("orch.toml");
    std::fs::write(&cfg, container_config(&venv)).unwrap();
    remote_ok(&ssh, &cfg, &["install"]);
    let master_unit =
        std::fs::read_to_string(c.unit_dir().join(format!("{NAME}.service"))).unwrap();
    assert!(
        master_unit.contains(&format!("\nExecStart=/usr/bin/podman run --name={NAME} "))
            && master_unit.contains(" --user=matrix-synapse ")
            && master_unit.contains(&format!(" {IMAGE} {}/bin/python ", venv.display())),
        "the master runs in its container:\n{master_unit}"
    );

    remote_ok(&ssh, &cfg, &["start", "database"]);
    psql(&c, &bin, "create role synapse login password 'synapse'");
    psql(
        &c,
        &bin,
        "create database synapse owner synapse encoding 'UTF8' locale 'C' template template0",
    );
    let args = ["start", "--all", "--output", "json"];
    let (o, _, start_time) = timed(&ssh, &cfg, &args, Duration::from_secs(300));
    let sum = summary(&o);
    assert!(all_in_phase(&sum, "ready"), "{sum}");
    assert_eq!(sum["units"].as_array().unwrap().len(), 9, "{sum}");
    assert_eq!(is_active(&c, "redis-test.service"), "active");
    check_containers(&c, &ssh, &cfg);

    let (token, room) = writer_and_room();

    let stop = AtomicBool::new(false);
    let log = Mutex::new(Vec::<Send>::new());
    let mut timings: Vec<(String, String)> = vec![
        ("pip install (0 = cached)".into(), secs(install_time)),
        (
            "start --all (new database: schema)".into(),
            secs(start_time),
        ),
    ];
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| writer(&token, &room, &stop, &log));
        let _stop = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_secs(3));

        let before = exec_ok(&c, &["podman", "ps", "--format", "{{.ID}}"]).stdout;
        let args = [
            "restart",
            "--all",
            "--rolling",
            "--batch",
            "1",
            // As in the test without containers: the moved requests finish.
            "--settle",
            "2s",
            "--output",
            "json",
        ];
        let (o, from, took) = timed(&ssh, &cfg, &args, Duration::from_secs(300));
        let sum = summary(&o);
        assert!(
            sum["units"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|u| u["role"] != "prerequisite" && u["role"] != "database")
                .all(|u| u["phase"] == "ready"),
            "{sum}"
        );
        std::thread::sleep(Duration::from_secs(2));
        let ev = event_times(&o);
        let workers_from = *ev
            .get(&(format!("{NAME}.service"), "ready".to_string()))
            .unwrap_or_else(|| panic!("no ready event of the master: {ev:?}"));
        let all = window(&log.lock().unwrap(), from, from + took);
        let workers = window(&log.lock().unwrap(), from + workers_from, from + took);
        timings.push((
            "restart --all --rolling --batch 1 --settle 2s".into(),
            secs(took),
        ));
        timings.push((
            "rolling: longest client gap (master included)".into(),
            all.describe(),
        ));
        timings.push((
            "rolling, workers' part: longest client gap".into(),
            workers.describe(),
        ));
        assert!(
            workers.failed.is_empty(),
            "sends failed during the rolling restart of the workers: {:#?}",
            workers.failed
        );
        let after = exec_ok(&c, &["podman", "ps", "--format", "{{.ID}}"]).stdout;
        let (before, after) = (
            String::from_utf8_lossy(&before),
            String::from_utf8_lossy(&after),
        );
        assert!(
            after.lines().all(|id| !before.contains(id)),
            "every container is new after the rolling restart: {before} / {after}"
        );
        check_containers(&c, &ssh, &cfg);

        let from = Instant::now();
        timings.extend(maintenance_cycle(&c, &ssh, &cfg, &bin));
        check_containers(&c, &ssh, &cfg);
        std::thread::sleep(Duration::from_secs(3));
        let w = window(&log.lock().unwrap(), from, Instant::now());
        timings.push(("maintenance: longest client gap".into(), w.describe()));
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer");
    });

    let log = log.into_inner().unwrap();
    let acked: Vec<&Send> = log.iter().filter(|s| s.ok).collect();
    let bodies = room_bodies(&token, &room);
    let lost: Vec<&str> = acked
        .iter()
        .map(|s| s.body.as_str())
        .filter(|b| !bodies.contains(*b))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged sends are not in the room: {lost:?}",
        lost.len(),
        acked.len()
    );
    timings.push((
        "writer".into(),
        format!(
            "{} sends, {} acknowledged, all in the room",
            log.len(),
            acked.len()
        ),
    ));
    // Synapse's output reaches its unit's journal (`--log-driver=passthrough`),
    // with no integrity error in it.
    let o = exec_ok(
        &c,
        &[
            "journalctl",
            "--no-pager",
            "-o",
            "cat",
            "-u",
            "matrix-synapse*",
        ],
    );
    let journal = String::from_utf8_lossy(&o.stdout);
    assert!(
        journal.contains("synapse.storage"),
        "Synapse's log is in the units' journal"
    );
    let bad: Vec<&str> = journal
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            [
                "foreign key",
                "foreignkeyviolation",
                "integrityerror",
                "uniqueviolation",
            ]
            .iter()
            .any(|w| l.contains(w))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "integrity errors in Synapse's journal: {bad:#?}"
    );
    timings.push(("whole test".into(), secs(test_start.elapsed())));
    eprintln!("real Synapse {VERSION} in podman containers, timings:");
    for (what, value) in &timings {
        eprintln!("  {what:<52} {value}");
    }
}

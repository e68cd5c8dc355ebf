//! Tests of the container harness itself (tests/support): boot, unit loading, teardown.

use std::path::Path;
use std::time::Instant;

use crate::support::Container;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn system_state(c: &Container) -> String {
    let out = c.busctl(&[
        "get-property",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        "SystemState",
    ]);
    assert!(
        out.status.success(),
        "busctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

#[test]
fn boot_reaches_running_state() {
    let start = Instant::now();
    let c = Container::boot();
    eprintln!("{} booted in {:?}", c.name(), start.elapsed());

    let state = system_state(&c);
    assert!(
        state == r#"s "running""# || state == r#"s "degraded""#,
        "SystemState: {state}"
    );
    // The same manager is reachable from inside the container.
    let inside = c.systemctl(&["is-system-running"]);
    assert!(
        ["running", "degraded"].contains(&stdout(&inside).as_str()),
        "{inside:?}"
    );
    // Presets are disabled, so the bound unit dir starts empty.
    assert_eq!(std::fs::read_dir(c.unit_dir()).unwrap().count(), 0);
}

#[test]
fn unit_written_to_unit_dir_loads_after_reload() {
    let c = Container::boot();
    std::fs::write(
        c.unit_dir().join("orch-hello.service"),
        "[Service]\nExecStart=/bin/sh -c 'echo hello from orch-hello; exec sleep infinity'\n",
    )
    .unwrap();

    let manager = [
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
    ];
    let reload = c.busctl(&[&["call"], &manager[..], &["Reload"]].concat());
    assert!(reload.status.success(), "Reload: {reload:?}");
    let load = c.busctl(
        &[
            &["call"],
            &manager[..],
            &["LoadUnit", "s", "orch-hello.service"],
        ]
        .concat(),
    );
    assert!(load.status.success(), "LoadUnit: {load:?}");
    let unit_path = stdout(&load)
        .trim_start_matches("o ")
        .trim_matches('"')
        .to_string();
    let state = c.busctl(&[
        "get-property",
        manager[0],
        &unit_path,
        "org.freedesktop.systemd1.Unit",
        "LoadState",
    ]);
    assert_eq!(stdout(&state), r#"s "loaded""#, "{state:?}");

    let start = c.systemctl(&["start", "orch-hello.service"]);
    assert!(
        start.status.success(),
        "start: {start:?}\n{}",
        c.journal("orch-hello.service")
    );
    let active = c.systemctl(&["is-active", "orch-hello.service"]);
    assert_eq!(
        stdout(&active),
        "active",
        "{}",
        c.journal("orch-hello.service")
    );
}

#[test]
fn drop_leaves_no_process_behind() {
    let c = Container::boot();
    let (leader, name, dir) = (c.leader(), c.name().to_string(), c.unit_dir().to_path_buf());
    assert!(Path::new(&format!("/proc/{leader}")).exists());

    let start = Instant::now();
    drop(c);
    eprintln!("{name} torn down in {:?}", start.elapsed());

    assert!(
        !Path::new(&format!("/proc/{leader}")).exists(),
        "leader {leader} survived"
    );
    assert!(!dir.exists(), "temp dir {} survived", dir.display());
    // Every process the container started lived in cgroups named after the machine.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cg) = std::fs::read_to_string(entry.path().join("cgroup")) {
            assert!(
                !cg.contains(&name),
                "process {:?} survived in {cg}",
                entry.file_name()
            );
        }
    }
}

#[test]
fn four_containers_boot_concurrently() {
    let start = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                // Boot and drop on this thread: the PDEATHSIG safety net is per thread.
                let c = Container::boot();
                let booted = start.elapsed();
                let unit = format!("{}.service", c.name());
                std::fs::write(
                    c.unit_dir().join(&unit),
                    "[Service]\nExecStart=/bin/sleep infinity\n",
                )
                .unwrap();
                c.systemctl(&["daemon-reload"]);
                let started = c.systemctl(&["start", &unit]);
                assert!(
                    started.status.success(),
                    "{started:?}\n{}",
                    c.journal(&unit)
                );
                (system_state(&c), booted)
            })
        })
        .collect();
    for t in threads {
        let (state, booted) = t.join().unwrap();
        eprintln!("concurrent container ready after {booted:?}: {state}");
        assert!(state.contains("running") || state.contains("degraded"));
    }
}

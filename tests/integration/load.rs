//! Load: 256 workers through install, restart --all, status and
//! stop-for-maintenance. Prints the times and orch's peak memory (the figures
//! in docs/reliability.md). orch's peak RSS is read from `wait4` on each orch
//! process, so other tests' children in the same binary do not count.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::Container;

const WORKERS: usize = 256;

#[test]
fn two_hundred_fifty_six_workers() {
    let dir = tempfile::tempdir().unwrap();
    let masks = dir.path().join("masks");
    std::fs::create_dir(&masks).unwrap();
    let c = Container::builder()
        .bind(&masks, "/run/systemd/system.control")
        .boot();
    let cfg = dir.path().join("orch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[deployment]\nname = \"big\"\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\n\
             [master]\nexec_start = \"/bin/sleep infinity\"\n\
             [[workers]]\nkind = \"generic\"\ncount = {}\nexec_start = \"/bin/sleep infinity\"\n\
             [[workers]]\nkind = \"pusher\"\ncount = {}\nexec_start = \"/bin/sleep infinity\"\n",
            dir.path().join("state").display(),
            masks.display(),
            WORKERS - 16,
            16
        ),
    )
    .unwrap();
    let peak_kib = std::cell::Cell::new(0i64);
    let timed = |args: &[&str]| {
        let t = Instant::now();
        let (o, rss) = orch_with_rss(orch_cmd(&c, &cfg, args));
        assert!(o.status.success(), "orch {args:?}: {o:?}");
        peak_kib.set(peak_kib.get().max(rss));
        (t.elapsed(), o)
    };
    let (install, _) = timed(&["install"]);
    let (start, o) = timed(&["start", "--all", "--output", "json"]);
    assert_eq!(summary(&o)["units"].as_array().unwrap().len(), 1 + WORKERS);
    let (restart, o) = timed(&["restart", "--all", "--output", "json"]);
    let sum = summary(&o);
    assert!(all_in_phase(&sum, "ready"), "{sum}");
    let mut status_times = Vec::new();
    for _ in 0..5 {
        let (t, o) = timed(&["status", "--output", "json"]);
        let v = json(&o);
        assert_eq!(v["units"].as_array().unwrap().len(), 1 + WORKERS);
        assert!(v["units"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["active_state"] == "active"));
        status_times.push(t);
    }
    status_times.sort();
    let (maint, o) = timed(&["stop-for-maintenance"]);
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains(&format!("{} units stopped, 0 processes left", 1 + WORKERS)),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let (resume, _) = timed(&["resume"]);
    let peak_kib = peak_kib.get();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    println!(
        "LOAD {WORKERS} workers: install {}, start --all {}, restart --all {}, status {} (median of 5), stop-for-maintenance {}, resume {}, orch peak RSS {:.1} MiB",
        ms(install),
        ms(start),
        ms(restart),
        ms(status_times[2]),
        ms(maint),
        ms(resume),
        peak_kib as f64 / 1024.0
    );
}

/// More units than dbus-daemon lets systemd track at once (512 match rules
/// on its connection, one per job a client enqueued), started in one go:
/// systemd must stay on the bus, every unit must come up, and `status` must
/// read every unit's properties (none lost to the 128 pending replies).
#[test]
fn start_all_of_more_units_than_systemd_can_track_keeps_systemd_on_the_bus() {
    const MANY: usize = 700;
    let dir = tempfile::tempdir().unwrap();
    let c = Container::boot();
    let cfg = dir.path().join("orch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[deployment]\nname = \"many\"\nstate_dir = \"{}\"\n\
             [master]\ntype = \"exec\"\nexec_start = \"/bin/sleep infinity\"\n\
             [[workers]]\nkind = \"generic\"\ncount = {MANY}\ntype = \"exec\"\n\
             exec_start = \"/bin/sleep infinity\"\n",
            dir.path().join("state").display(),
        ),
    )
    .unwrap();
    let o = orch_with_rss(orch_cmd(&c, &cfg, &["install"])).0;
    assert!(o.status.success(), "install: {o:?}");
    let o = orch_with_rss(orch_cmd(
        &c,
        &cfg,
        &["start", "--all", "--timeout", "120s", "--output", "json"],
    ))
    .0;
    let journal = String::from_utf8_lossy(&c.exec(&["journalctl", "--no-pager"]).stdout)
        .lines()
        .filter(|l| l.contains("match rules") || l.contains("disconnect on API bus"))
        .take(5)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        journal.is_empty(),
        "systemd lost its bus connection:\n{journal}"
    );
    let sum = summary(&o);
    assert!(
        o.status.success() && all_in_phase(&sum, "ready"),
        "start --all of {} units: {:?}\n{}",
        MANY + 1,
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let o = orch_with_rss(orch_cmd(&c, &cfg, &["status", "--output", "json"])).0;
    let v = json(&o);
    let units = v["units"].as_array().unwrap();
    assert_eq!(units.len(), MANY + 1);
    let unread: Vec<_> = units
        .iter()
        .filter(|u| u["active_state"] != "active" || u["main_pid"].as_u64().is_none())
        .map(|u| u["unit"].as_str().unwrap_or("?"))
        .collect();
    assert!(
        unread.is_empty(),
        "{} units not active or without a MainPID in status, e.g. {:?}",
        unread.len(),
        &unread[..unread.len().min(5)]
    );
    let o = orch_with_rss(orch_cmd(&c, &cfg, &["stop", "--all", "--timeout", "120s"])).0;
    assert!(o.status.success(), "stop --all: {o:?}");
}

/// Runs orch and returns its output and its own peak RSS in KiB (from
/// `wait4`, so the figure is this process's and nobody else's).
// The child is reaped by `wait4` below, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn orch_with_rss(mut cmd: std::process::Command) -> (std::process::Output, i64) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run orch");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t = std::thread::spawn(move || {
        let mut v = Vec::new();
        out.read_to_end(&mut v).unwrap();
        v
    });
    // The same bound as every other orch run in the tests: a hang kills orch
    // (its stdout and stderr close, so the reads below end) and fails below.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(crate::support::ORCH_BOUND).is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let mut stderr = Vec::new();
    err.read_to_end(&mut stderr).unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data; the pid is our own unreaped child.
    let mut ru: nix::libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { nix::libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(pid, child.id() as i32, "wait4");
    let _ = done_tx.send(());
    watchdog.join().unwrap();
    use std::os::unix::process::ExitStatusExt;
    let out = std::process::Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: t.join().unwrap(),
        stderr,
    };
    (out, ru.ru_maxrss)
}

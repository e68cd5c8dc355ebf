//! Load: 256 workers through install, restart --all, status and
//! stop-for-maintenance. Prints the times and orch's peak memory (the figures
//! in docs/reliability.md). Alone in its test binary so that the children's
//! peak RSS is orch's.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::*;
use support::Container;

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
    let timed = |args: &[&str]| {
        let t = Instant::now();
        let o = orch_ok(&c, &cfg, args);
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
    let peak_kib = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .unwrap()
        .max_rss();
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

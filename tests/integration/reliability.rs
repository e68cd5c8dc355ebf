//! Reliability under faults, against a real systemd: kill -9 at random
//! points, the bus going away, systemd re-executing, units that never become
//! ready or hit their start limit, a full or read-only unit folder. Nothing
//! may be lost, nothing may hang.

use crate::support::OutputBounded;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::Container;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const FIXTURE: &str = "/usr/bin/python3 /opt/fixtures/worker.py --name {{ name }}";

/// A small deterministic generator; the seed is printed so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("ORCH_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("ORCH_TEST_SEED={seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn fixture_container(dir: &Path) -> Container {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let masks = dir.join("masks");
    std::fs::create_dir_all(&masks).unwrap();
    Container::builder()
        .bind_ro(&fixtures, "/opt/fixtures")
        .bind(&masks, "/run/systemd/system.control")
        .boot()
}

fn write_config(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "[deployment]\nname = \"fx\"\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\n{}",
        dir.join("state").display(),
        dir.join("masks").display(),
        crate::ports::fill(&body.replace("{FIXTURE}", FIXTURE))
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Rendered contents by file name, as `orch render` produces them.
fn rendered(cfg: &Path) -> HashMap<String, String> {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_orch"))
        .arg("--config")
        .arg(cfg)
        .arg("render")
        .arg("--out")
        .arg(out.path())
        .output_bounded()
        .unwrap();
    assert!(o.status.success());
    std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect()
}

fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".orch-"))
        .collect()
}

fn kill_after(mut child: std::process::Child, delay: Duration) {
    std::thread::sleep(delay);
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    child.wait().unwrap();
}

#[test]
fn install_killed_at_random_points_loses_nothing_and_converges() {
    let dir = tempfile::tempdir().unwrap();
    let c = Container::boot();
    let a = write_config(dir.path(), "a.toml", "[master]\nexec_start = \"/bin/sleep 1000\"\n[[workers]]\nkind = \"w\"\ncount = 24\nexec_start = \"/bin/sleep 1001\"\n");
    let b = write_config(dir.path(), "b.toml", "[master]\nexec_start = \"/bin/sleep 2000\"\n[[workers]]\nkind = \"w\"\ncount = 16\nexec_start = \"/bin/sleep 2001\"\n");
    let (ra, rb) = (rendered(&a), rendered(&b));
    let mut rng = Rng::new();
    for i in 0..50 {
        let cfg = if i % 2 == 0 { &a } else { &b };
        let child = orch_cmd(&c, cfg, &["install"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        kill_after(child, Duration::from_millis(rng.below(60)));
        for e in std::fs::read_dir(c.unit_dir()).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.ends_with(".service") || name.ends_with(".slice")) {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap();
            assert!(
                ra.get(&name) == Some(&text) || rb.get(&name) == Some(&text),
                "iteration {i}: {name} is neither the old nor the new content:\n{text}"
            );
        }
    }
    // The next install converges, and leaves no temporary file behind.
    for cfg in [&a, &b] {
        orch_ok(&c, cfg, &["install"]);
        let o = orch(&c, cfg, &["plan"]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        assert!(
            temporaries(c.unit_dir()).is_empty(),
            "{:?}",
            temporaries(c.unit_dir())
        );
    }
}

#[test]
fn restart_killed_at_random_points_then_start_brings_everything_up() {
    let _ports = crate::ports::lease_groups(2);
    let dir = tempfile::tempdir().unwrap();
    let c = fixture_container(dir.path());
    let cfg = write_config(
        dir.path(),
        "orch.toml",
        "[master]\nexec_start = \"{FIXTURE} --port @P0@ --ready-after 0.2\"\nhealth = \"http://127.0.0.1:@P0@/health\"\n\
         [[workers]]\nkind = \"w\"\ncount = 6\nport_base = @P1@\nexec_start = \"{FIXTURE} --port {{ port }} --ready-after 0.2\"\nhealth = \"http://127.0.0.1:{{ port }}/health\"\n",
    );
    orch_ok(&c, &cfg, &["install"]);
    orch_ok(&c, &cfg, &["start", "--all"]);
    let mut rng = Rng::new();
    for _ in 0..8 {
        let child = orch_cmd(&c, &cfg, &["restart", "--all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        kill_after(child, Duration::from_millis(rng.below(1200)));
        let o = orch_ok(
            &c,
            &cfg,
            &["start", "--all", "--timeout", "60s", "--output", "json"],
        );
        let sum = summary(&o);
        assert!(all_in_phase(&sum, "ready"), "{sum}");
        assert_eq!(sum["units"].as_array().unwrap().len(), 7);
    }
}

#[test]
fn maintenance_killed_at_random_points_completes_on_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let c = fixture_container(dir.path());
    let cfg = write_config(
        dir.path(),
        "orch.toml",
        "[master]\nexec_start = \"{FIXTURE}\"\n[[workers]]\nkind = \"w\"\ncount = 5\nexec_start = \"{FIXTURE}\"\n",
    );
    orch_ok(&c, &cfg, &["install"]);
    orch_ok(&c, &cfg, &["start", "--all"]);
    let units: Vec<String> = std::iter::once("fx.service".to_string())
        .chain((0..5).map(|i| format!("fx-worker-{i}-w.service")))
        .collect();
    let mut rng = Rng::new();
    for _ in 0..6 {
        let child = orch_cmd(&c, &cfg, &["stop-for-maintenance"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        kill_after(child, Duration::from_millis(rng.below(400)));
        let o = orch_ok(&c, &cfg, &["stop-for-maintenance"]);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("6 units stopped, 0 processes left"),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );

        let child = orch_cmd(&c, &cfg, &["resume"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        kill_after(child, Duration::from_millis(rng.below(400)));
        orch_ok(&c, &cfg, &["resume"]);
        let st = json(&orch_ok(&c, &cfg, &["status", "--output", "json"]));
        for u in st["units"].as_array().unwrap() {
            assert_eq!(u["active_state"], "active", "{u}");
            assert_eq!(u["load_state"], "loaded", "{u} left masked");
        }
        assert!(st["maintenance"].is_null());
        let left: Vec<String> = std::fs::read_dir(dir.path().join("masks"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.is_empty(), "left in the runtime folder: {left:?}");
        assert_eq!(units.len(), st["units"].as_array().unwrap().len());
    }
}

#[test]
fn bus_going_away_ends_orch_with_what_it_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let c = fixture_container(dir.path());
    let cfg = write_config(
        dir.path(),
        "orch.toml",
        "[master]\nexec_start = \"{FIXTURE}\"\n[[workers]]\nkind = \"slow\"\ncount = 1\ntype = \"notify\"\nexec_start = \"{FIXTURE} --no-notify\"\nstart_timeout = \"120s\"\n",
    );
    orch_ok(&c, &cfg, &["install"]);
    let mut child = orch_cmd(&c, &cfg, &["start", "--all", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c
        .systemctl(&["list-jobs"])
        .stdout
        .windows(4)
        .any(|w| w == b"slow")
    {
        assert!(
            Instant::now() < deadline,
            "the slow start job never appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = Instant::now();
    let pid = String::from_utf8_lossy(&c.exec(&["pidof", "dbus-daemon"]).stdout)
        .trim()
        .to_string();
    assert!(!pid.is_empty(), "no dbus-daemon in the container");
    let killed = c.exec(&["kill", "-KILL", &pid]);
    assert!(killed.status.success());
    // orch must end on its own, well before the 120 s start timeout.
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("orch still waiting 10 s after the bus went away");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let o = child.wait_with_output().unwrap();
    assert!(!status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        all.contains("fx-worker-0-slow.service") && all.contains("bus connection closed"),
        "{all}"
    );
}

#[test]
fn daemon_reexec_during_restart_is_survived() {
    let _ports = crate::ports::lease_groups(2);
    let dir = tempfile::tempdir().unwrap();
    let c = fixture_container(dir.path());
    let cfg = write_config(
        dir.path(),
        "orch.toml",
        "[master]\nexec_start = \"{FIXTURE} --port @P0@ --ready-after 0.5\"\nhealth = \"http://127.0.0.1:@P0@/health\"\n\
         [[workers]]\nkind = \"w\"\ncount = 6\nport_base = @P1@\nexec_start = \"{FIXTURE} --port {{ port }} --ready-after 1\"\nhealth = \"http://127.0.0.1:{{ port }}/health\"\n",
    );
    orch_ok(&c, &cfg, &["install"]);
    orch_ok(&c, &cfg, &["start", "--all"]);
    let mut rng = Rng::new();
    for _ in 0..3 {
        let child = orch_cmd(
            &c,
            &cfg,
            &["restart", "--all", "--timeout", "60s", "--output", "json"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        std::thread::sleep(Duration::from_millis(100 + rng.below(1200)));
        let t = Instant::now();
        let r = c.systemctl(&["daemon-reexec"]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let o = child.wait_with_output().unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "orch took {:?} after the re-exec",
            t.elapsed()
        );
        // Either it completed correctly, or it failed clearly; never a hang.
        if o.status.success() {
            let sum = summary(&o);
            assert!(all_in_phase(&sum, "ready"), "{sum}");
        } else {
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(all.contains("fx"), "failure must name what failed: {all}");
            orch_ok(&c, &cfg, &["start", "--all"]);
        }
    }
}

#[test]
fn stuck_and_start_limited_units_end_within_their_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let c = fixture_container(dir.path());
    let cfg = write_config(
        dir.path(),
        "orch.toml",
        "[master]\nexec_start = \"{FIXTURE}\"\n\
         [[workers]]\nkind = \"stuck\"\ncount = 1\ntype = \"notify\"\nexec_start = \"{FIXTURE} --no-notify\"\nstart_timeout = \"3s\"\nrestart = \"no\"\n\
         [[workers]]\nkind = \"crashy\"\ncount = 1\nexec_start = \"/bin/false\"\nrestart = \"always\"\nrestart_sec = \"100ms\"\nhealth = \"tcp://127.0.0.1:1\"\nhealth_timeout = \"30s\"\n",
    );
    orch_ok(&c, &cfg, &["install"]);
    let t = Instant::now();
    let o = orch(&c, &cfg, &["start", "--all", "--output", "json"]);
    let took = t.elapsed();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(took < Duration::from_secs(3 + 5), "took {took:?}");
    let sum = summary(&o);
    let by_unit: HashMap<&str, &serde_json::Value> = sum["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["unit"].as_str().unwrap(), u))
        .collect();
    let stuck = by_unit["fx-worker-0-stuck.service"];
    assert_eq!(stuck["phase"], "failed", "{stuck}");
    assert_eq!(stuck["result"], "timeout", "{stuck}");
    // A crash loop is failed, not healthy, and ends long before health_timeout.
    let crashy = by_unit["fx-worker-1-crashy.service"];
    assert_eq!(crashy["phase"], "failed", "{crashy}");
    let why = crashy["error"].as_str().unwrap();
    assert!(
        why.contains("crash loop")
            || why.contains("stopped while being probed")
            || why.contains("after its start job")
            || why.contains("start job failed"),
        "{crashy}"
    );
    assert!(
        matches!(
            crashy["result"].as_str(),
            Some("start-limit-hit") | Some("exit-code")
        ),
        "{crashy}"
    );
}

/// A small tmpfs mounted on a host folder for one test, unmounted on drop.
struct Tmpfs(PathBuf);
impl Tmpfs {
    fn mount(path: &Path, opts: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "orch-test"])
            .arg(path)
            .output_bounded()
            .unwrap();
        assert!(
            o.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Tmpfs(path.to_path_buf())
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_or_read_only_unit_folder_fails_cleanly_without_reload() {
    let dir = tempfile::tempdir().unwrap();
    let c = Container::boot();
    let cfg = write_config(dir.path(), "orch.toml", "[master]\nexec_start = \"/bin/sleep 1000\"\n[[workers]]\nkind = \"w\"\ncount = 40\nexec_start = \"/bin/sleep 1001\"\n");
    let expected = rendered(&cfg);
    for (opts, says) in [
        ("size=12k", "No space left"),
        ("ro,size=1m", "Read-only file system"),
    ] {
        let units = dir.path().join(format!("units-{}", opts.len()));
        let _mount = Tmpfs::mount(&units, opts);
        let o = Command::new(env!("CARGO_BIN_EXE_orch"))
            .arg("--config")
            .arg(&cfg)
            .arg("--bus")
            .arg(c.bus_address())
            .arg("--unit-dir")
            .arg(&units)
            .arg("install")
            .output_bounded()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(says), "{err}");
        for e in std::fs::read_dir(&units).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with(".orch-"), "temporary file {name} left");
            assert_eq!(
                Some(&std::fs::read_to_string(e.path()).unwrap()),
                expected.get(&name),
                "{name} is partial"
            );
        }
        // Nothing reached systemd: none of the units is known to it.
        let listed = c.systemctl(&["list-unit-files", "fx*"]);
        assert!(!String::from_utf8_lossy(&listed.stdout).contains("fx.service"));
    }
}

#[test]
fn twenty_restarts_in_one_process_leak_no_descriptor() {
    let _ports = crate::ports::lease_groups(2);
    let dir = tempfile::tempdir().unwrap();
    let c = fixture_container(dir.path());
    let cfg = write_config(
        dir.path(),
        "orch.toml",
        "[master]\nexec_start = \"{FIXTURE} --port @P0@\"\nhealth = \"http://127.0.0.1:@P0@/health\"\n\
         [[workers]]\nkind = \"w\"\ncount = 6\nport_base = @P1@\nexec_start = \"{FIXTURE} --port {{ port }} --ready-after 0.1\"\nhealth = \"http://127.0.0.1:{{ port }}/health\"\n",
    );
    orch_ok(&c, &cfg, &["install"]);
    let d = orch::model::Deployment::load(&cfg, Some(c.unit_dir())).unwrap();
    let members = orch::members::members(&d);
    struct Quiet;
    impl orch::lifecycle::Observer for Quiet {
        fn event(&self, _: &orch::lifecycle::Event) {}
    }
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let rt = rt();
    let run = || {
        rt.block_on(async {
            let fleet = orch::fleet::Fleet::from_connections(vec![connect(&c).await]);
            let engine = orch::lifecycle::Engine::new(
                &fleet,
                Default::default(),
                std::sync::Arc::new(Quiet),
            )
            .await
            .unwrap();
            engine.run(orch::op::Op::Restart, &members, true).await
        })
    };
    assert!(run().ok, "warm-up run");
    let before = fds();
    for i in 0..20 {
        let s = run();
        assert!(
            s.ok && s
                .units
                .iter()
                .all(|u| u.phase == orch::lifecycle::Phase::Ready),
            "run {i}: {s:?}"
        );
    }
    // Other tests in this binary open and close descriptors too: allow their noise, not growth per run.
    let after = fds();
    assert!(
        after <= before + 4,
        "descriptors grew from {before} to {after} over 20 runs"
    );
}

#[test]
fn non_root_caller_gets_the_permission_message_and_nothing_changes() {
    use std::os::unix::fs::PermissionsExt;
    let c = Container::boot();
    let dir = tempfile::tempdir().unwrap();
    let open = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(dir.path(), 0o755);
    // The unprivileged user must reach the bus socket (the harness keeps its folder private).
    let socket = PathBuf::from(c.bus_address().trim_start_matches("unix:path="));
    let mut p = socket.parent().unwrap();
    while p != Path::new("/tmp") && p != Path::new("/") {
        open(p, 0o755);
        p = p.parent().unwrap();
    }
    let cfg = write_config(dir.path(), "orch.toml", "[master]\nexec_start = \"/bin/sleep 1000\"\n[[workers]]\nkind = \"w\"\ncount = 2\nexec_start = \"/bin/sleep 1001\"\n");
    open(&cfg, 0o644);
    // A unit folder anyone may write: only systemd's (polkit's) answer stands in the way.
    let units = dir.path().join("units");
    std::fs::create_dir(&units).unwrap();
    open(&units, 0o777);
    let bin = dir.path().join("orch");
    std::fs::copy(env!("CARGO_BIN_EXE_orch"), &bin).unwrap();
    open(&bin, 0o755);
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin)
            .arg("--config")
            .arg(&cfg)
            .arg("--bus")
            .arg(c.bus_address())
            .arg("--unit-dir")
            .arg(&units)
            .args(args)
            .output_bounded()
            .expect("setpriv (util-linux)")
    };
    for args in [
        &["install"][..],
        &["restart", "--all"],
        &["stop-for-maintenance"],
    ] {
        let o = as_nobody(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("permission denied by systemd")
                && err.contains("polkit")
                && err.contains("run orch as root"),
            "{args:?}: {err}"
        );
        assert_eq!(
            std::fs::read_dir(&units).unwrap().count(),
            0,
            "{args:?} wrote into the unit folder"
        );
    }
    let listed = c.systemctl(&["list-unit-files", "fx*"]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("fx.service"));

    // Root installs and starts (its state folder is root's): a read-only
    // status by another user reads it, it is not refused.
    orch_ok(&c, &cfg, &["install"]);
    orch_ok(&c, &cfg, &["start", "--all"]);
    let state = dir.path().join("state");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&state).unwrap()),
        0,
        "the state folder is root's"
    );
    open(c.unit_dir(), 0o755);
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .arg("--config")
        .arg(&cfg)
        .arg("--bus")
        .arg(c.bus_address())
        .arg("--unit-dir")
        .arg(c.unit_dir())
        .arg("status")
        .output_bounded()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "status as nobody: {err}");
    assert!(!err.contains("refusing"), "{err}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("fx.service"),
        "{o:?}"
    );
}

//! scripts/demo end to end: every step succeeds, and nothing of the demo is
//! left running afterwards, also when it is stopped with SIGTERM midway.
//! Needs root and systemd-nspawn, like the other container tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The whole demo takes ~20 s; a cold host (first boot of the container) more.
const DEMO_TIMEOUT: Duration = Duration::from_secs(300);

const HEADINGS: &[&str] = &[
    "==> [1] orch plan",
    "==> [2] orch install",
    "==> [3] orch status",
    "==> [4] orch start --all",
    "==> [5] orch restart --all",
    "==> [6] orch restart --all --rolling --batch 4",
    "==> [7] orch stop-for-maintenance --reason demo",
    "==> [8] orch status",
    "==> [9] orch resume",
    "==> [10] orch status",
];

struct Demo {
    name: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
    _dir: tempfile::TempDir,
    _ports: crate::ports::PortLease,
}

impl Demo {
    fn spawn(tag: &str) -> Demo {
        let name = format!("orch-demo-{tag}-{}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = root.join("scripts/demo");
        // examples/demo.toml on leased ports: master, 6 generic, 4 pushers.
        let ports = crate::ports::reserve(11);
        let example = std::fs::read_to_string(root.join("examples/demo.toml")).unwrap();
        let ports_of = [
            ("port = 20000", format!("port = {}", ports.port(0))),
            (
                "port_base = 20100",
                format!("port_base = {}", ports.port(1)),
            ),
            (
                "port_base = 20200",
                format!("port_base = {}", ports.port(7)),
            ),
        ];
        for (line, _) in &ports_of {
            assert!(
                example.lines().any(|l| l == *line),
                "examples/demo.toml has no {line:?}"
            );
        }
        // Line by line, in one pass: a leased port may be one of the
        // example's own (20200), which a second replace would change again.
        let config: String = example
            .lines()
            .map(|l| match ports_of.iter().find(|(from, _)| *from == l) {
                Some((_, to)) => format!("{to}\n"),
                None => format!("{l}\n"),
            })
            .collect();
        let cfg = dir.path().join("demo.toml");
        std::fs::write(&cfg, config).unwrap();
        // Output goes to files: nothing to drain while we poll, and it survives a hang.
        let child = Command::new(&script)
            .args(["--name", &name])
            .arg("--config")
            .arg(&cfg)
            .env("ORCH", env!("CARGO_BIN_EXE_orch"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        Demo {
            name,
            child,
            out,
            err,
            _dir: dir,
            _ports: ports,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn output(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            std::fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), sig);
    }

    fn try_wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `timeout`; past it, SIGTERM (the demo's own teardown), then
    /// SIGKILL (its container then dies by PDEATHSIG), and fails the test.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.try_wait_for(timeout) {
            return status;
        }
        self.signal(Signal::SIGTERM);
        if self.try_wait_for(Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        panic!(
            "scripts/demo did not finish within {timeout:?}; killed\n{}",
            self.output()
        );
    }

    /// Processes of the demo still alive: its systemd-nspawn (by machine name)
    /// or anything in its container's cgroup, which carries the same name.
    fn leftovers(&self) -> Vec<String> {
        let machine = format!("--machine={}", self.name);
        let cgroup = format!("/{}", self.name);
        let mut left = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let cmdline = std::fs::read(e.path().join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            let cg = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
            let in_cgroup = cg.lines().any(|l| {
                let path = l.splitn(3, ':').nth(2).unwrap_or("");
                path.ends_with(&cgroup) || path.contains(&format!("{cgroup}/"))
            });
            if cmdline.contains(&machine) || in_cgroup {
                left.push(format!("{pid}: {cmdline}"));
            }
        }
        left
    }

    fn assert_nothing_left(&self) {
        // The script waits for nspawn before exiting; allow the kernel a moment
        // to reap the container's last processes.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut left = self.leftovers();
        while !left.is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
            left = self.leftovers();
        }
        assert!(
            left.is_empty(),
            "processes of demo {} left behind:\n{}",
            self.name,
            left.join("\n")
        );
        let tmp: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("{}.", self.name)))
            .collect();
        assert!(tmp.is_empty(), "temp dirs left behind: {tmp:?}");
    }
}

#[test]
fn demo_runs_every_step_and_leaves_nothing_behind() {
    let mut demo = Demo::spawn("ok");
    let status = demo.wait(DEMO_TIMEOUT);
    let out = demo.stdout();
    assert!(
        status.success(),
        "demo failed ({status}):\n{}",
        demo.output()
    );
    let mut from = 0;
    for heading in HEADINGS {
        let at = out[from..]
            .find(heading)
            .unwrap_or_else(|| panic!("no heading {heading:?} (in order):\n{}", demo.output()));
        from += at + heading.len();
    }
    assert!(
        out.contains("13 units stopped, 0 processes left"),
        "no maintenance summary:\n{}",
        demo.output()
    );
    demo.assert_nothing_left();
}

#[test]
fn demo_tears_down_on_sigterm() {
    let mut demo = Demo::spawn("term");
    // Stop it while orch is restarting units inside the container.
    let deadline = Instant::now() + DEMO_TIMEOUT;
    while !demo.stdout().contains("==> [5] orch restart --all") {
        if let Some(status) = demo.child.try_wait().unwrap() {
            panic!("demo exited ({status}) before step 5:\n{}", demo.output());
        }
        assert!(
            Instant::now() < deadline,
            "demo did not reach step 5:\n{}",
            demo.output()
        );
        thread::sleep(Duration::from_millis(20));
    }
    // The check below must see the live container and the units' processes
    // inside it (found by cgroup: their command lines do not name the demo),
    // or it proves nothing. Not a count of them: restart is stopping and
    // starting them right now.
    let live = demo.leftovers();
    assert!(
        live.iter().any(|p| p.contains("systemd-nspawn"))
            && live.iter().any(|p| p.contains("/opt/fixtures/worker.py")),
        "leftover detection does not see the running demo: {live:?}"
    );
    demo.signal(Signal::SIGTERM);
    let started = Instant::now();
    let status = demo.wait(Duration::from_secs(15));
    assert_eq!(
        status.code(),
        Some(143),
        "demo should exit 143 on SIGTERM:\n{}",
        demo.output()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "teardown took {:?}",
        started.elapsed()
    );
    demo.assert_nothing_left();
}

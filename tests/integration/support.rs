//! Throwaway systemd instances for integration tests.
//!
//! Each [`Container`] boots the host's own `/usr` with `systemd-nspawn --volatile=yes`
//! (root is a tmpfs, so nothing the container does touches the host), exposes the
//! container's system bus on a host socket and binds a host temp dir as the
//! container's `/etc/systemd/system`. Needs root and `systemd-nspawn`.
//!
//! Teardown: `Drop` sends SIGTERM to our `systemd-nspawn` child, which was started with
//! `--kill-signal=SIGKILL`, so nspawn SIGKILLs the container's PID 1; the kernel then
//! kills the whole PID namespace and nspawn unmounts and exits (~0.1 s). We signal
//! nspawn rather than the leader because nspawn is our unreaped child, so its PID
//! cannot be reused under us. If the test process dies without running `Drop`
//! (SIGKILL, abort), `setpriv --pdeathsig TERM` makes the kernel send nspawn that same
//! SIGTERM. PDEATHSIG fires when the spawning *thread* exits: boot and drop a
//! container on the same thread (the normal per-test pattern); a container shared
//! between tests needs its own long-lived thread.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(3);
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

unsafe extern "C" {
    // From the libc std already links; std only offers SIGKILL for children.
    fn kill(pid: i32, sig: i32) -> i32;
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: plain syscall wrapper; callers only pass PIDs they own (see Drop).
    unsafe { kill(pid, sig) };
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Configures extra bind mounts (and nspawn options) before booting a [`Container`].
#[derive(Default)]
pub struct ContainerBuilder {
    binds: Vec<String>,
}

impl ContainerBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bind `host` read-only at `container` inside the container.
    pub fn bind_ro(mut self, host: impl AsRef<Path>, container: impl AsRef<Path>) -> Self {
        self.binds.push(format!(
            "--bind-ro={}",
            bind_spec(host.as_ref(), container.as_ref())
        ));
        self
    }

    /// Bind `host` read-write at `container` inside the container.
    pub fn bind(mut self, host: impl AsRef<Path>, container: impl AsRef<Path>) -> Self {
        self.binds.push(format!(
            "--bind={}",
            bind_spec(host.as_ref(), container.as_ref())
        ));
        self
    }

    /// A network namespace of its own, with only a loopback device: what
    /// listens there is out of reach of the test process.
    pub fn private_network(mut self) -> Self {
        self.binds.push("--private-network".into());
        self
    }

    pub fn boot(self) -> Container {
        preflight();
        sweep_stale();
        let name = format!(
            "orch-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}."))
            .tempdir()
            .expect("create container temp dir");
        let (bus_dir, unit_dir, preset_dir) = (
            dir.path().join("dbus"),
            dir.path().join("units"),
            dir.path().join("preset"),
        );
        for d in [&bus_dir, &unit_dir, &preset_dir] {
            fs::create_dir(d).expect("create container dir");
        }
        // The volatile /etc has no machine-id, so systemd treats every boot as a first
        // boot and runs `preset-all`, which would enable whatever the host has installed
        // (postgresql, timers, networkd...) and write the symlinks into our bound unit
        // dir. Disabling all presets keeps the container minimal and unit_dir empty.
        fs::write(preset_dir.join("00-orch-test.preset"), "disable *\n").expect("write preset");
        let log_path = dir.path().join("nspawn.log");
        let log = fs::File::create(&log_path).expect("create nspawn log");
        let cgroups = create_cgroups(&name);

        let mut cmd = Command::new("setpriv");
        // sh moves itself into the container's own cgroups, then execs nspawn. Without this,
        // nspawn run from the root cgroup with --keep-unit puts every container in the
        // same /payload cgroup, and concurrent containers' systemds share (and fight
        // over) one cgroup tree.
        cmd.args(["--pdeathsig", "TERM", "--", "sh", "-c"])
            .arg(r#"for d in $ORCH_TEST_CGROUPS; do echo $$ > "$d/cgroup.procs"; done; exec "$@""#)
            .args([
                "sh",
                "systemd-nspawn",
                "--volatile=yes",
                "--directory=/",
                "--boot",
            ])
            .arg(format!("--machine={name}"))
            .args(["--register=no", "--keep-unit", "--kill-signal=SIGKILL"])
            .args(["--console=read-only", "--link-journal=no"])
            .arg(format!("--bind={}:/run/dbus", bus_dir.display()))
            .arg(format!("--bind={}:/etc/systemd/system", unit_dir.display()))
            .arg(format!(
                "--bind-ro={}:/etc/systemd/system-preset",
                preset_dir.display()
            ))
            .args(&self.binds)
            .args([
                "--",
                "systemd.firstboot=off",
                "systemd.unit=multi-user.target",
            ])
            .env("ORCH_TEST_CGROUPS", join_paths(&cgroups))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let nspawn = cmd.spawn().expect("spawn setpriv/systemd-nspawn");

        let mut container = Container {
            bus_address: format!("unix:path={}", bus_dir.join("system_bus_socket").display()),
            name,
            unit_dir,
            log_path,
            leader: 0,
            cgroups,
            nspawn,
            dir,
        };
        // On failure `container` drops during the unwind, so nothing is left running.
        if let Err(why) = container.wait_ready() {
            let kept = std::env::temp_dir().join(format!("{}.log", container.name));
            let _ = fs::copy(&container.log_path, &kept);
            panic!(
                "container {} did not boot: {why}\nnspawn output: {}",
                container.name,
                kept.display()
            );
        }
        container
    }
}

pub struct Container {
    name: String,
    bus_address: String,
    unit_dir: PathBuf,
    log_path: PathBuf,
    leader: i32,
    cgroups: Vec<PathBuf>,
    nspawn: Child,
    // Last field: dropped after Drop::drop has stopped the container.
    dir: tempfile::TempDir,
}

impl Container {
    /// Boots a throwaway systemd; see [`ContainerBuilder`] for extra binds.
    pub fn boot() -> Container {
        ContainerBuilder::new().boot()
    }

    pub fn builder() -> ContainerBuilder {
        ContainerBuilder::new()
    }

    /// Machine name (also the container's hostname), unique per container.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// D-Bus address of the container's system bus, e.g. for `orch --bus`.
    pub fn bus_address(&self) -> String {
        self.bus_address.clone()
    }

    /// Host dir bound read-write as the container's /etc/systemd/system. Starts empty.
    pub fn unit_dir(&self) -> &Path {
        &self.unit_dir
    }

    /// The container's PID 1 as seen from the host.
    pub fn leader(&self) -> i32 {
        self.leader
    }

    /// Runs a command inside the container's namespaces; killed after 30 s.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.leader.to_string(), "-m", "-u", "-i", "-p", "--"])
            .args(args);
        run_bounded(cmd, EXEC_TIMEOUT)
    }

    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut full = vec!["systemctl", "--no-pager"];
        full.extend_from_slice(args);
        self.exec(&full)
    }

    /// Host `busctl` talking to the container's system bus; killed after 30 s.
    pub fn busctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("busctl");
        cmd.arg(format!("--address={}", self.bus_address))
            .args(args);
        run_bounded(cmd, EXEC_TIMEOUT)
    }

    /// Last journal lines of `unit`, for failure messages.
    pub fn journal(&self, unit: &str) -> String {
        let out = self.exec(&["journalctl", "--no-pager", "-n", "100", "-u", unit]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `SystemState` of the container's manager, or the busctl error.
    fn system_state(&self) -> Result<String, String> {
        let mut cmd = Command::new("busctl");
        cmd.arg(format!("--address={}", self.bus_address)).args([
            "--timeout=2",
            "get-property",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "SystemState",
        ]);
        let out = run_bounded(cmd, Duration::from_secs(5));
        if out.status.success() {
            // Output looks like: s "running"
            Ok(String::from_utf8_lossy(&out.stdout)
                .trim()
                .trim_start_matches("s ")
                .trim_matches('"')
                .to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Ready = systemd answers on the bus and has finished booting. On this host that
    /// takes ~0.5 s; "degraded" (some unit failed) still means the manager is usable.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let mut last = String::from("no bus socket yet");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                return Err(format!("systemd-nspawn exited early with {status}"));
            }
            if self.leader == 0 {
                self.leader = find_leader(self.nspawn.id() as i32).unwrap_or(0);
            }
            // The socket file appears before dbus-daemon runs and before systemd has
            // connected to the bus, so only a successful property read counts.
            if self.leader != 0
                && Path::new(self.bus_address.trim_start_matches("unix:path=")).exists()
            {
                match self.system_state() {
                    Ok(s) if s == "running" || s == "degraded" => return Ok(()),
                    Ok(s) => last = format!("SystemState={s}"),
                    Err(e) => last = e,
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        let jobs = if self.leader != 0 {
            String::from_utf8_lossy(&self.systemctl(&["list-jobs"]).stdout).into_owned()
        } else {
            String::new()
        };
        Err(format!(
            "not ready after {BOOT_TIMEOUT:?} (last: {last})\n{jobs}"
        ))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let nspawn = self.nspawn.id() as i32;
        if matches!(self.nspawn.try_wait(), Ok(None)) {
            signal(nspawn, SIGTERM);
            if !wait_child(&mut self.nspawn, TEARDOWN_TIMEOUT) {
                // nspawn ignored us: kill the container directly (the leader is nspawn's
                // unreaped child while nspawn lives, so the PID is still the container's).
                if self.leader != 0 {
                    signal(self.leader, SIGKILL);
                }
                let _ = self.nspawn.kill();
                let _ = self.nspawn.wait();
            }
        }
        // If nspawn died before killing the container, its PID 1 got orphaned: kill it,
        // but only if that PID is still a PID-namespace init (not a reused PID).
        if self.leader != 0 && is_pidns_init(self.leader) {
            signal(self.leader, SIGKILL);
            let deadline = Instant::now() + TEARDOWN_TIMEOUT;
            while Path::new(&format!("/proc/{}", self.leader)).exists() && Instant::now() < deadline
            {
                thread::sleep(Duration::from_millis(10));
            }
        }
        for cg in &self.cgroups {
            remove_cgroup(cg);
        }
    }
}

fn preflight() {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1));
    if euid != Some("0") {
        panic!("container tests must run as root (they use systemd-nspawn, nsenter and cgroups)");
    }
    if which("systemd-nspawn").is_none() {
        panic!(
            "systemd-nspawn not found: install it with `apt-get install -y systemd-container` (and run the tests as root)"
        );
    }
}

fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/bin".into(), "/usr/sbin".into()])
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

fn bind_spec(host: &Path, container: &Path) -> String {
    let (h, c) = (host.display().to_string(), container.display().to_string());
    assert!(
        !h.contains(':') && !c.contains(':'),
        "bind paths must not contain ':': {h} {c}"
    );
    format!("{h}:{c}")
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Removes temp dirs and cgroups left by test processes that were killed before their
/// `Drop` ran (the containers themselves died with them via PDEATHSIG).
fn sweep_stale() {
    let dead = |name: &str| {
        let pid = name
            .strip_prefix("orch-test-")
            .and_then(|r| r.split('-').next());
        pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists())
    };
    let mut roots = vec![std::env::temp_dir()];
    roots.extend(cgroup_parents());
    for root in roots {
        for e in fs::read_dir(&root).into_iter().flatten().flatten() {
            if !dead(&e.file_name().to_string_lossy()) {
                continue;
            }
            if root.starts_with("/sys/fs/cgroup") {
                if !cgroup_has_processes(&e.path()) {
                    remove_cgroup(&e.path());
                }
            } else if e.path().is_dir() {
                let _ = fs::remove_dir_all(e.path()); // kept boot-failure logs are files: left alone
            }
        }
    }
}

/// Our own cgroup in each hierarchy nspawn uses (name=systemd and/or cgroup2).
fn cgroup_parents() -> Vec<PathBuf> {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own_path = |key: &str| {
        own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctl, path) = (parts.next()?, parts.next()?, parts.next()?);
            (ctl == key).then(|| path.trim_start_matches('/').to_string())
        })
    };
    let hierarchies: &[(&str, &str)] = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        &[("/sys/fs/cgroup", "")] // pure cgroup2
    } else {
        &[
            ("/sys/fs/cgroup/systemd", "name=systemd"),
            ("/sys/fs/cgroup/unified", ""),
        ]
    };
    hierarchies
        .iter()
        .filter(|(mount, _)| Path::new(mount).join("cgroup.procs").exists())
        .filter_map(|(mount, key)| Some(Path::new(mount).join(own_path(key)?)))
        .collect()
}

/// Creates a cgroup named after the container under each of [`cgroup_parents`].
fn create_cgroups(name: &str) -> Vec<PathBuf> {
    let mut created = Vec::new();
    for dir in cgroup_parents().into_iter().map(|p| p.join(name)) {
        match fs::create_dir(&dir) {
            Ok(()) => created.push(dir),
            Err(e) => eprintln!("warning: cannot create cgroup {}: {e}", dir.display()),
        }
    }
    created
}

fn cgroup_has_processes(dir: &Path) -> bool {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    !procs.trim().is_empty()
        || fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_type().is_ok_and(|t| t.is_dir()) && cgroup_has_processes(&e.path()))
}

/// Removes a cgroup and the sub-cgroups the container's systemd created, leaves first.
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup(&e.path());
            }
        }
    }
    // A cgroup can briefly stay busy while its last processes are being released.
    for _ in 0..50 {
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    eprintln!("warning: could not remove cgroup {}", dir.display());
}

/// The child of `nspawn` that is PID 1 of its own PID namespace.
fn find_leader(nspawn: i32) -> Option<i32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:"))?.trim();
        (ppid == nspawn.to_string() && is_pidns_init(pid)).then_some(pid)
    })
}

/// True if `pid` is alive and is PID 1 of a nested PID namespace ("NSpid: <host> 1").
fn is_pidns_init(pid: i32) -> bool {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let live = !status
        .lines()
        .any(|l| l.starts_with("State:") && l.contains('Z'));
    let nspid: Vec<&str> = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    live && nspid.len() >= 2 && nspid.last() == Some(&"1")
}

fn wait_child(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Runs `cmd` in its own process group, SIGKILLing the whole group after `timeout`
/// (nsenter -p forks, so killing nsenter alone would leave the real command running).
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    let desc = format!("{:?}", cmd.get_program());
    run_bounded_mut(&mut cmd, timeout)
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"))
        .0
}

/// How long any one orch invocation in the tests may take: a hang becomes a
/// failed assertion with orch's output, never a stuck CI run.
pub const ORCH_BOUND: Duration = Duration::from_secs(300);

/// `Command::output`, bounded: the tests run every orch invocation through
/// this so that an unbounded wait in orch fails the test that found it.
pub trait OutputBounded {
    /// Runs under [`ORCH_BOUND`].
    fn output_bounded(&mut self) -> std::io::Result<Output>;
    /// Runs under `limit`; panics with the command's output when it is hit.
    fn output_within(&mut self, limit: Duration) -> std::io::Result<Output>;
}

impl OutputBounded for Command {
    fn output_bounded(&mut self) -> std::io::Result<Output> {
        self.output_within(ORCH_BOUND)
    }
    fn output_within(&mut self, limit: Duration) -> std::io::Result<Output> {
        let (out, timed_out) = run_bounded_mut(self, limit)?;
        if timed_out {
            panic!(
                "{:?} {:?} did not end within {limit:?} (killed):\nstdout: {}\nstderr: {}",
                self.get_program(),
                self.get_args().collect::<Vec<_>>(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }
}

/// Runs `cmd` with a bound; the flag says whether it had to be killed.
pub fn run_bounded_mut(cmd: &mut Command, timeout: Duration) -> std::io::Result<(Output, bool)> {
    let desc = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let reader = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let timed_out = !wait_child(&mut child, timeout);
    if timed_out {
        signal(-(child.id() as i32), SIGKILL);
    }
    let status = child.wait().expect("wait for command");
    let mut stderr = err.join().unwrap_or_default();
    if timed_out {
        stderr.extend_from_slice(format!("\n[{desc} killed after {timeout:?}]").as_bytes());
    }
    let out = Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr,
    };
    Ok((out, timed_out))
}

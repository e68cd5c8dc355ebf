//! `--host` over a real OpenSSH connection: an `sshd` runs inside the harness
//! container (as a transient unit of the container's systemd, so it dies with
//! the container), and orch reaches the container's system bus through
//! `ssh … systemd-stdio-bridge` with strict host-key checking, exactly as it
//! would reach a remote machine. tests/remote.rs covers the same path with a
//! fake ssh; this file covers what only the real client and server do:
//! authentication, host-key verification and the remote shell.
//!
//! Needs `/usr/sbin/sshd`, `ssh` and `ssh-keygen` on the host
//! (`apt-get install -y openssh-server openssh-client`); the container sees
//! the host's `/usr`, so the same sshd runs inside it.

use crate::support::OutputBounded;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::ports::PortLease;
use crate::support::Container;

/// Where the host dir holding sshd's key, config and authorized_keys is bound
/// (read-only) inside the container. Under /run, whose parents are root-owned
/// and not group/world-writable, so sshd's StrictModes accepts it.
const SSHD_DIR: &str = "/run/orch-test-sshd";
/// orch's `--call-timeout` here (its default is 25 s): each call over SSH
/// includes a session's handshake, which took over 5 s with two runs of the
/// suite saturating 2 cores; the tests' own LIMIT still bounds every run.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
const INSTALL_HINT: &str = "apt-get install -y openssh-server openssh-client";

/// `state_dir` named: the master's host is the container (over ssh), and the
/// harness's local runner (used here for `render`) would otherwise give the
/// file a state folder of this host's.
const CONFIG: &str = "[deployment]\nname = \"fx\"\nstate_dir = \"/var/lib/orch\"\n\
    [master]\nexec_start = \"/bin/sleep infinity\"\n\
    [[workers]]\nkind = \"w\"\ncount = 3\nexec_start = \"/bin/sleep infinity\"\n";

/// A booted container running sshd on 127.0.0.1:`port`, that accepts
/// `client_key` for root, and a deployment's configuration (not installed).
struct Remote {
    // Dropped first: stopping the container kills sshd and every ssh session.
    c: Container,
    port: u16,
    /// Held while sshd listens on `port`; dropped after the container.
    _port_lease: PortLease,
    client_key: PathBuf,
    host_pub: String,
    cfg: PathBuf,
    dir: tempfile::TempDir,
    /// Set for a container with its own network: ssh runs in it (nsenter),
    /// so sshd and the units are reachable only through ssh.
    netns: Option<String>,
}

fn preflight() {
    let missing: Vec<&str> = [
        ("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").is_file()),
        ("ssh", which("ssh")),
        ("ssh-keygen", which("ssh-keygen")),
    ]
    .into_iter()
    .filter(|(_, found)| !found)
    .map(|(name, _)| name)
    .collect();
    assert!(
        missing.is_empty(),
        "{} not found: the real-SSH tests need OpenSSH; install it with `{INSTALL_HINT}`",
        missing.join(", ")
    );
}

fn which(prog: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/bin".into()])
        .any(|d| d.join(prog).is_file())
}

fn keygen(path: &Path, comment: &str) {
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output_bounded()
        .unwrap_or_else(|e| {
            panic!("cannot run ssh-keygen ({e}); install it with `{INSTALL_HINT}`")
        });
    assert!(
        o.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("read {}: {e}", path.as_ref().display()))
}

fn exec_ok(c: &Container, args: &[&str]) -> Output {
    let o = c.exec(args);
    assert!(
        o.status.success(),
        "{args:?} in the container failed ({:?}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

impl Remote {
    fn start() -> Remote {
        Remote::start_with(false, &[])
    }

    /// `private`: the container gets its own network namespace. `sshd_options`
    /// are added to sshd's command line (`-o KEY=VALUE`).
    fn start_with(private: bool, sshd_options: &[&str]) -> Remote {
        preflight();
        let dir = tempfile::tempdir().unwrap();
        // Server side, bound into the container; the client key stays outside.
        let server = dir.path().join("sshd");
        std::fs::create_dir(&server).unwrap();
        keygen(&server.join("host_key"), "orch-test-host");
        let client_key = dir.path().join("client_key");
        keygen(&client_key, "orch-test-client");
        std::fs::write(
            server.join("authorized_keys"),
            read(client_key.with_extension("pub")),
        )
        .unwrap();
        // The volatile container has no /etc/ssh, no PAM configuration and no
        // sshd user: everything sshd reads is named here, and PAM is off.
        std::fs::write(
            server.join("sshd_config"),
            format!(
                "HostKey {SSHD_DIR}/host_key\n\
                 AuthorizedKeysFile {SSHD_DIR}/authorized_keys\n\
                 PermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 UseDNS no\n\
                 X11Forwarding no\n\
                 PidFile none\n\
                 LogLevel INFO\n"
            ),
        )
        .unwrap();
        // sshd's privilege-separation user, created by the container's own sysusers.
        std::fs::write(
            server.join("sysusers.conf"),
            "u sshd - \"sshd privilege separation\" /run/sshd /usr/sbin/nologin\n",
        )
        .unwrap();

        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut b = Container::builder()
            .bind_ro(&server, SSHD_DIR)
            .bind_ro(&fixtures, "/opt/fixtures");
        if private {
            b = b.private_network();
        }
        let c = b.boot();
        exec_ok(
            &c,
            &["systemd-sysusers", &format!("{SSHD_DIR}/sysusers.conf")],
        );
        // sysusers creates root locked ("!*"), and without PAM sshd refuses a
        // locked account even for public-key logins: "*" is no password, not locked.
        exec_ok(&c, &["usermod", "-p", "*", "root"]);
        let (port, port_lease) = start_sshd(&c, sshd_options);
        let netns = private.then(|| format!("/proc/{}/ns/net", c.leader()));

        let cfg = dir.path().join("orch.toml");
        std::fs::write(&cfg, CONFIG).unwrap();
        Remote {
            c,
            port,
            _port_lease: port_lease,
            client_key,
            host_pub: read(server.join("host_key.pub")),
            cfg,
            dir,
            netns,
        }
    }

    fn host(&self) -> String {
        format!("root@127.0.0.1:{}", self.port)
    }

    /// A known_hosts file that pins `key` (an OpenSSH public key line) for our sshd.
    fn known_hosts(&self, name: &str, key: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("[127.0.0.1]:{} {}", self.port, key)).unwrap();
        path
    }

    /// The operator's ssh command: no config files, only our key, only our
    /// known_hosts, strict host-key checking. orch adds `-xT -o BatchMode=yes -p PORT`.
    fn ssh_command(&self, known_hosts: &Path) -> String {
        let netns = match &self.netns {
            Some(ns) => format!("nsenter --net={ns} "),
            None => String::new(),
        };
        format!(
            "{netns}ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} \
             -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o ConnectTimeout=5",
            self.client_key.display(),
            known_hosts.display()
        )
    }

    /// orch over ssh; the test fails if it does not exit within `limit`.
    fn orch(&self, known_hosts: &Path, args: &[&str], limit: Duration) -> (Output, Duration) {
        self.orch_env(known_hosts, args, limit, &[])
    }

    /// [`Remote::orch`] with `env` set for orch.
    fn orch_env(
        &self,
        known_hosts: &Path,
        args: &[&str],
        limit: Duration,
        env: &[(&str, &str)],
    ) -> (Output, Duration) {
        let mut cmd = self.orch_cmd(known_hosts, args);
        cmd.envs(env.iter().copied());
        run_bounded(cmd, limit)
    }

    /// The command [`Remote::orch`] runs.
    fn orch_cmd(&self, known_hosts: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orch"));
        cmd.arg("--config")
            .arg(&self.cfg)
            .args(["--host", &self.host()])
            .args(["--ssh-command", &self.ssh_command(known_hosts)])
            .args(["--call-timeout", &format!("{}s", CALL_TIMEOUT.as_secs())])
            .args(args)
            .env_remove("ORCH_BUS")
            .env_remove("ORCH_CONFIG")
            .env_remove("ORCH_HOST")
            .env_remove("ORCH_SSH");
        cmd
    }

    /// The whole of sshd's journal: `accepted` counts lines in it, and the
    /// harness's `journal` keeps only the last 100 lines, so a busy sshd
    /// made the count go down between two reads.
    fn sshd_journal(&self) -> String {
        let unit = sshd_unit(self.port);
        let out = self.c.exec(&["journalctl", "--no-pager", "-u", &unit]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

fn sshd_unit(port: u16) -> String {
    format!("orch-test-sshd-{port}.service")
}

/// Starts sshd on a leased port (crate::ports) as a transient unit inside
/// the container; the lease lives as long as the returned [`PortLease`].
/// `Type=notify` (Debian's sshd notifies) makes `systemd-run` return once sshd
/// listens. If a process that takes no lease binds the port before sshd
/// does, the unit fails and another port is leased.
fn start_sshd(c: &Container, options: &[&str]) -> (u16, PortLease) {
    let mut last = String::from("no free port");
    for lease in std::iter::repeat_with(|| crate::ports::reserve(1)).take(5) {
        let port = lease.port(0);
        let unit = sshd_unit(port);
        let listen = format!("ListenAddress=127.0.0.1:{port}");
        let config = format!("{SSHD_DIR}/sshd_config");
        let unit_arg = format!("--unit={unit}");
        let mut args = vec![
            "systemd-run",
            "--quiet",
            &unit_arg,
            "--property=Type=notify",
            "--property=RuntimeDirectory=sshd",
            "--property=RuntimeDirectoryMode=0755",
            "--property=TimeoutStartSec=20s",
            "/usr/sbin/sshd",
            "-D",
            "-e",
            "-f",
            &config,
            "-o",
            &listen,
        ];
        for o in options {
            args.extend(["-o", o]);
        }
        let o = c.exec(&args);
        if o.status.success() {
            return (port, lease);
        }
        let journal = c.journal(&unit);
        last = format!(
            "{}{}\n{journal}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        if !journal.contains("Address already in use") {
            break;
        }
    }
    panic!("cannot start sshd in the container: {last}");
}

/// Runs `cmd` in its own process group, SIGKILLing the group (orch and its
/// ssh) if it outlives `limit`, and fails the test then: a hang is a bug.
fn run_bounded(cmd: Command, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let o = crate::support::run_bounded(cmd, limit);
    let took = start.elapsed();
    assert!(
        took < limit,
        "orch still running after {limit:?}, killed\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (o, took)
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} over ssh failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `active_state` of every unit in `orch status --output json`.
fn states(o: &Output) -> Vec<(String, String)> {
    json(o)["units"]
        .as_array()
        .unwrap_or_else(|| panic!("no units: {}", String::from_utf8_lossy(&o.stdout)))
        .iter()
        .map(|u| {
            (
                u["unit"].as_str().unwrap().to_string(),
                u["active_state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn install_lifecycle_and_maintenance_over_real_ssh() {
    let r = Remote::start();
    let kh = r.known_hosts("known_hosts", &r.host_pub);

    // Install writes through the remote shell (the container's
    // /etc/systemd/system, bound to c.unit_dir() on this side).
    let (o, _) = r.orch(&kh, &["install", "--output", "json"], LIMIT);
    assert_ok(&o, "install");
    assert_eq!(json(&o)["changed"], true);
    let rendered = json(&orch_ok(&r.c, &r.cfg, &["render", "--output", "json"]));
    for u in rendered["units"].as_array().unwrap() {
        let unit = u["unit"].as_str().unwrap();
        assert_eq!(
            std::fs::read_to_string(r.c.unit_dir().join(unit)).unwrap(),
            u["content"].as_str().unwrap(),
            "{unit}"
        );
    }
    let (o, _) = r.orch(&kh, &["install", "--output", "json"], LIMIT);
    assert_ok(&o, "second install");
    assert_eq!(json(&o)["reloaded"], false, "nothing changed, no reload");

    let (o, _) = r.orch(&kh, &["start", "--all", "--output", "json"], LIMIT);
    assert_ok(&o, "start --all");
    let sum = summary(&o);
    let units = sum["units"].as_array().unwrap();
    assert_eq!(units.len(), 4, "master and three workers: {sum}");
    assert!(units.iter().all(|u| u["phase"] == "ready"), "{sum}");

    // It went through sshd, as root, with our key: not some other path to the bus.
    let journal = r.sshd_journal();
    assert!(
        journal.contains("Accepted publickey for root from 127.0.0.1"),
        "{journal}"
    );

    let (o, _) = r.orch(&kh, &["status", "--output", "json"], LIMIT);
    assert_ok(&o, "status");
    let s = states(&o);
    assert_eq!(s.len(), 4, "{s:?}");
    assert!(s.iter().all(|(_, state)| state == "active"), "{s:?}");
    // The container's systemd agrees (read locally, not over ssh).
    let out =
        r.c.systemctl(&["is-active", "fx.service", "fx-worker-0-w.service"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "active\nactive\n");

    let (o, _) = r.orch(&kh, &["stop", "--all", "--output", "json"], LIMIT);
    assert_ok(&o, "stop --all");
    let sum = summary(&o);
    assert!(all_in_phase(&sum, "stopped"), "{sum}");

    let (o, _) = r.orch(&kh, &["status", "--output", "json"], LIMIT);
    assert_ok(&o, "status");
    let s = states(&o);
    assert_eq!(s.len(), 4, "{s:?}");
    assert!(s.iter().all(|(_, state)| state == "inactive"), "{s:?}");

    // Maintenance over ssh: the lock is an ssh session holding flock on the
    // remote host, the journal and the masks are written there.
    let (o, _) = r.orch(&kh, &["start", "--all"], LIMIT);
    assert_ok(&o, "start again");
    let (o, _) = r.orch(
        &kh,
        &[
            "stop-for-maintenance",
            "--reason",
            "upgrade",
            "--output",
            "json",
        ],
        LIMIT,
    );
    assert_ok(&o, "stop-for-maintenance");
    let out = r.c.systemctl(&[
        "show",
        "-p",
        "LoadState",
        "--value",
        "fx-worker-1-w.service",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "masked");
    let journal = exec_ok(&r.c, &["cat", "/var/lib/orch/fx/maintenance.json"]);
    assert!(String::from_utf8_lossy(&journal.stdout).contains("upgrade"));
    // The lock was released when that orch ended (its ssh session closed).
    let (o, _) = r.orch(&kh, &["resume", "--output", "json"], LIMIT);
    assert_ok(&o, "resume");
    assert_eq!(summary(&o)["units"].as_array().unwrap().len(), 4);
    let out = r.c.systemctl(&["is-active", "fx-worker-1-w.service"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "active");
}

#[test]
fn a_wrong_host_key_is_a_bounded_failure_naming_the_host() {
    let r = Remote::start();
    orch_ok(&r.c, &r.cfg, &["install"]);
    // known_hosts pins another key for [127.0.0.1]:PORT: a man in the middle,
    // as far as ssh can tell.
    let other = r.dir.path().join("other_key");
    keygen(&other, "orch-test-impostor");
    let kh = r.known_hosts("wrong_known_hosts", &read(other.with_extension("pub")));

    let bound = CALL_TIMEOUT + Duration::from_secs(3);
    let (o, took) = r.orch(&kh, &["start", "--all", "--output", "json"], bound * 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(took < bound, "took {took:?}: {err}");
    assert!(err.contains("root@127.0.0.1"), "names the host: {err}");
    // ssh's own reason reaches the operator.
    assert!(err.contains("Host key verification failed"), "{err}");

    // ssh gave up before authenticating, and nothing was started.
    let journal = r.sshd_journal();
    assert!(!journal.contains("Accepted publickey"), "{journal}");
    let o = orch(&r.c, &r.cfg, &["status", "--output", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = states(&o);
    assert!(s.iter().all(|(_, state)| state == "inactive"), "{s:?}");

    // The same command with the right key works: the failure was the key.
    let good = r.known_hosts("known_hosts", &r.host_pub);
    let (o, _) = r.orch(&good, &["status", "--output", "json"], LIMIT);
    assert_ok(&o, "status");
}

/// The fixture's port inside a private network namespace. It is leased all
/// the same (the test's `ports::lease_groups(1)`): the test proves the host
/// does not reach it, which a foreign listener on the host would disprove.
fn probe_port() -> u16 {
    crate::ports::at(0, 0)
}

/// Master and two workers serving /health on the container's loopback,
/// ready after a second (so several attempts fail first).
fn probed_config(port: u16) -> String {
    let exec = "/usr/bin/python3 /opt/fixtures/worker.py --name {{ name }} --port {{ port }} --ready-after 1";
    format!(
        "[deployment]\nname = \"fx\"\n\
         [master]\nexec_start = \"{exec}\"\nport = {port}\n\
         health = \"http://127.0.0.1:{{{{ port }}}}/health\"\n\
         [[workers]]\nkind = \"w\"\ncount = 2\nport_base = {wport}\nexec_start = \"{exec}\"\n\
         health = \"http://127.0.0.1:{{{{ port }}}}/health\"\n",
        wport = port + 1
    )
}

fn accepted(r: &Remote) -> usize {
    r.sshd_journal().matches("Accepted publickey").count()
}

fn reachable_from_here(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

#[test]
fn loopback_probes_of_a_remote_unit_run_on_its_host_over_one_master() {
    let _ports = crate::ports::lease_groups(1);
    // Its own network: 127.0.0.1 there is not 127.0.0.1 here, so a probe
    // that passes can only have connected from the container.
    let r = Remote::start_with(true, &[]);
    std::fs::write(&r.cfg, probed_config(probe_port())).unwrap();
    let kh = r.known_hosts("known_hosts", &r.host_pub);
    let (o, _) = r.orch(&kh, &["install"], LIMIT);
    assert_ok(&o, "install");

    // What a command without probes costs (the D-Bus bridge, the remote
    // shell sessions), to compare a start with about 20 attempts against.
    let before = accepted(&r);
    let (o, _) = r.orch(&kh, &["stop", "--all"], LIMIT);
    assert_ok(&o, "stop --all");
    let baseline = accepted(&r) - before;
    let before = accepted(&r);
    let (o, _) = r.orch(&kh, &["start", "--all", "--output", "json"], LIMIT);
    assert_ok(&o, "start --all");
    let sum = summary(&o);
    assert!(all_in_phase(&sum, "ready"), "{sum}");
    assert!(
        !reachable_from_here(probe_port()),
        "the fixture must not be reachable from the test"
    );
    // Beyond a stop's: start's read of the maintenance journal, the probes'
    // master, and one direct connection that learns why the first closed
    // port was refused; none per attempt (three units, each failing for a
    // second at up to 150 ms intervals: about 20 attempts).
    let during = accepted(&r) - before;
    assert!(
        during <= baseline + 3,
        "{during} SSH connections for one start, {baseline} for a stop\n{}",
        r.sshd_journal()
    );

    let (o, _) = r.orch(&kh, &["restart", "--all", "--output", "json"], LIMIT);
    assert_ok(&o, "restart --all");
    assert!(all_in_phase(&summary(&o), "ready"));
    let (o, _) = r.orch(&kh, &["status", "--output", "json"], LIMIT);
    assert_ok(&o, "status");
    let units = json(&o)["units"].as_array().unwrap().clone();
    assert_eq!(units.len(), 3);
    assert!(units.iter().all(|u| u["health"] == "ok"), "{units:?}");

    attempts_over_one_master(&r, &kh);
}

/// Many attempts through the library: one new SSH connection (the master)
/// for all of them, a closed port fails fast, and the rate is printed for
/// docs/performance.md.
fn attempts_over_one_master(r: &Remote, kh: &Path) {
    use orch::health::{check, Limits};
    use orch::model::{Probe, ProbeFrom};
    let remote = orch::remote::Remote::parse(&r.host(), &r.ssh_command(kh)).unwrap();
    let ok = Probe::Http {
        host: "127.0.0.1".into(),
        port: probe_port(),
        path: "/health".into(),
        from: ProbeFrom::Host,
    };
    let closed = Probe::Tcp {
        host: "127.0.0.1".into(),
        port: crate::ports::at(0, 20),
        from: ProbeFrom::Host,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Bounds that hold on a saturated host, where one SSH handshake alone
    // has taken over a second: what is asserted is how many connections the
    // attempts make and that a closed port fails before its bound.
    let limits = Limits {
        connect: Duration::from_secs(5),
        attempt: Duration::from_secs(10),
    };
    let before = accepted(r);
    let n = 100;
    let (took, closed_err, closed_took) = rt.block_on(async {
        // The master first, as status makes it, so the rate is the channels'.
        orch::tunnel::prepare(&remote, Duration::from_secs(20))
            .await
            .unwrap();
        let t = Instant::now();
        for _ in 0..n {
            check(&ok, limits, Some(&remote)).await.unwrap();
        }
        let took = t.elapsed();
        let t = Instant::now();
        let e = check(&closed, limits, Some(&remote)).await.unwrap_err();
        (took, e, t.elapsed())
    });
    orch::tunnel::end();
    eprintln!(
        "{n} http attempts over one ssh master in {took:?}: {:.0}/s",
        n as f64 / took.as_secs_f64()
    );
    let new = accepted(r) - before;
    // The master, and one direct connection that learns why the closed port
    // was refused (sshd says so only to a connection of its own).
    assert!(new <= 2, "{new} SSH connections for {n} attempts");
    assert!(!closed_err.is_final(), "{closed_err}");
    assert!(
        closed_err.to_string().contains("Connection refused"),
        "{closed_err}"
    );
    assert!(closed_took < limits.connect, "{closed_took:?}");
}

#[test]
fn a_host_that_refuses_forwarding_is_named_at_the_first_probe() {
    let _ports = crate::ports::lease_groups(1);
    let r = Remote::start_with(true, &["AllowTcpForwarding=no"]);
    std::fs::write(&r.cfg, probed_config(probe_port())).unwrap();
    let kh = r.known_hosts("known_hosts", &r.host_pub);
    let (o, _) = r.orch(&kh, &["install"], LIMIT);
    assert_ok(&o, "install");
    // health_timeout defaults to far more than this bound.
    let (o, took) = r.orch(&kh, &["start", "--all", "--output", "json"], LIMIT);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{text}");
    // Timed by orch, from its engine's start: before it, startup and the
    // D-Bus connection over SSH are bounded by --call-timeout and measure
    // the host (they took 6 of 11 s under load 20); the promise is that the
    // refusal ends the wait long before the 60 s health_timeout, at the
    // first attempts (their SSH handshakes included, seconds under load).
    let engine = Duration::from_millis(summary(&o)["elapsed_ms"].as_u64().unwrap());
    assert!(
        engine < Duration::from_secs(10),
        "took {engine:?} in orch ({took:?} in all): {text}"
    );
    assert!(text.contains("host root@127.0.0.1"), "{text}");
    assert!(text.contains("AllowTcpForwarding no"), "{text}");
    let (o, _) = r.orch(&kh, &["status", "--output", "json"], LIMIT);
    // Units still active are probed, and say why they cannot be.
    let units = json(&o)["units"].to_string();
    assert!(units.contains("AllowTcpForwarding"), "{units}");
}

/// A worker.py fixture on this machine's loopback, killed on drop.
struct LocalFixture(std::process::Child);

impl LocalFixture {
    fn serve(port: u16) -> LocalFixture {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/worker.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--name", "outside", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs the fixture");
        let f = LocalFixture(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !reachable_from_here(port) {
            assert!(
                Instant::now() < deadline,
                "fixture on port {port} never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        f
    }
}

impl Drop for LocalFixture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_probe_from_local_connects_from_orchs_machine_not_the_units_host() {
    // The unit's host has a network of its own and refuses forwarding, so
    // the fixture on this machine's loopback is reachable neither from the
    // host nor through it: a probe that passes connected from here.
    let r = Remote::start_with(true, &["AllowTcpForwarding=no"]);
    let lease = crate::ports::reserve(1);
    let port = lease.port(0);
    let _outside = LocalFixture::serve(port);
    let config = |from: &str| {
        format!(
            "[deployment]\nname = \"fx\"\n[master]\nexec_start = \"/bin/sleep infinity\"\n\
             health = \"http://127.0.0.1:{port}/health\"\n{from}"
        )
    };
    let kh = r.known_hosts("known_hosts", &r.host_pub);
    // Without the key the probe goes through the host, which refuses.
    std::fs::write(&r.cfg, config("")).unwrap();
    let (o, _) = r.orch(&kh, &["install"], LIMIT);
    assert_ok(&o, "install");
    let (o, _) = r.orch(&kh, &["start", "--all", "--output", "json"], LIMIT);
    assert!(!o.status.success(), "a host probe passed: {}", summary(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("AllowTcpForwarding no"),
        "{}",
        summary(&o)
    );

    std::fs::write(&r.cfg, config("probe_from = \"local\"\n")).unwrap();
    let (o, _) = r.orch(&kh, &["restart", "--all", "--output", "json"], LIMIT);
    assert_ok(&o, "restart --all with probe_from = \"local\"");
    assert!(all_in_phase(&summary(&o), "ready"), "{}", summary(&o));
    let (o, _) = r.orch(&kh, &["status", "--output", "json"], LIMIT);
    assert_ok(&o, "status");
    let units = json(&o)["units"].as_array().unwrap().clone();
    assert_eq!(units.len(), 1);
    assert_eq!(units[0]["health"], "ok", "{units:?}");
}

/// Made by the slow worker once its TERM handler is set: a TERM before that
/// ends it at once (Python's default action).
const TRAPPED: &str = "/run/fx-slow-trapped";

/// The database (probed first by a restart), a probed master, and a worker
/// whose stop takes longer than the probes' ControlPersist (10 s).
fn slow_stop_config(port: u16) -> String {
    let exec = "/usr/bin/python3 /opt/fixtures/worker.py --name {{ name }} --port {{ port }}";
    format!(
        "[deployment]\nname = \"fx\"\n\
         [database]\nunit = \"fakedb.service\"\nhealth = \"tcp://127.0.0.1:{db}\"\n\
         [master]\nexec_start = \"{exec}\"\nport = {port}\n\
         health = \"http://127.0.0.1:{{{{ port }}}}/health\"\n\
         [[workers]]\nkind = \"slow\"\ncount = 1\nstop_timeout = \"40s\"\n\
         exec_start = \"/usr/bin/python3 /opt/fixtures/worker.py --stop-takes 13 --armed {TRAPPED}\"\n",
        db = port + 1
    )
}

// Note: this passes on the code before the fix too (measured: the master's
// probe was ready 300 ms after the 13 s stop either way); it guards the
// behaviour, it does not prove the premise in this harness.
#[test]
fn a_probe_after_a_stop_longer_than_control_persist_makes_a_new_master() {
    // Own network: the probes can only pass through the SSH tunnel.
    let r = Remote::start_with(true, &[]);
    // A literal port is safe here: the container's network namespace is
    // its own (--private-network), and ssh, sshd and the units all run in
    // it, so no other test or host service can hold it.
    let port = 41600;
    exec_ok(
        &r.c,
        &[
            "systemd-run",
            "--unit=fakedb",
            "/usr/bin/python3",
            "/opt/fixtures/worker.py",
            "--port",
            &(port + 1).to_string(),
        ],
    );
    std::fs::write(&r.cfg, slow_stop_config(port)).unwrap();
    let kh = r.known_hosts("known_hosts", &r.host_pub);
    let (o, _) = r.orch(&kh, &["install"], LIMIT);
    assert_ok(&o, "install");
    let (o, _) = r.orch(&kh, &["start", "--all"], LIMIT);
    assert_ok(&o, "start --all");
    // The worker is active at its fork, before it has set the handler that
    // makes its stop last 13 s: wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !r.c.exec(&["test", "-e", TRAPPED]).status.success() {
        assert!(
            Instant::now() < deadline,
            "the slow worker never set its TERM handler"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The database is probed (the master made), then ~13 s of stop without
    // a probe: the master exits; the master unit's probe must make another.
    let (o, took) = r.orch(&kh, &["restart", "--all", "--output", "json"], LIMIT);
    assert_ok(&o, "restart --all");
    let sum = summary(&o);
    assert!(all_in_phase(&sum, "ready"), "{sum}");
    assert!(
        took > Duration::from_secs(12),
        "the stop must outlast ControlPersist: {took:?}"
    );
}

/// The PIDs of the ssh masters (`ssh: SOCKET [mux]`, the title ssh gives a
/// master) whose control socket is for `r`'s sshd: `%C` (a hash of the local
/// host, the host, its port and the user) as `ssh -G` computes it.
fn masters_of(r: &Remote) -> Vec<i32> {
    let o = Command::new("ssh")
        .args(["-F", "/dev/null", "-G", "-o", "ControlPath=%C", "-p"])
        .arg(r.port.to_string())
        .arg("root@127.0.0.1")
        .output()
        .expect("ssh -G runs");
    let text = String::from_utf8_lossy(&o.stdout);
    let hash = text
        .lines()
        .find_map(|l| l.strip_prefix("controlpath "))
        .unwrap_or_else(|| panic!("no controlpath in ssh -G: {text}"))
        .to_string();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.starts_with("ssh: ") && cmd.contains(&hash) && cmd.contains("[mux]") {
            pids.push(pid);
        }
    }
    pids
}

/// Item 5 of issue 21: a host's probe master that ends in the middle of a
/// run (SIGTERM as `ssh -O exit` would, or SIGKILL, leaving its socket) is
/// made again by the next probe, which passes at once instead of waiting
/// out its bound. Within the 3 s orch trusts a master seen alive, a
/// `ControlMaster=no` client finds no master and falls back to a connection
/// of its own; before the fix that ends it, the probe failed `no connection
/// within 1s`. (The pre-fix `ControlMaster=auto` code passes: its client
/// became the new master, backgrounded it and re-entered as a mux client.)
#[test]
fn a_probe_after_the_master_ended_mid_run_passes_at_once() {
    use orch::health::{check, Limits};
    use orch::model::{Probe, ProbeFrom};
    let _ports = crate::ports::lease_groups(1);
    let r = Remote::start_with(true, &[]);
    let port = crate::ports::at(0, 0).to_string();
    exec_ok(
        &r.c,
        &[
            "systemd-run",
            "--unit=probed",
            "/usr/bin/python3",
            "/opt/fixtures/worker.py",
            "--name",
            "probed",
            "--port",
            &port,
        ],
    );
    let kh = r.known_hosts("known_hosts", &r.host_pub);
    let remote = orch::remote::Remote::parse(&r.host(), &r.ssh_command(&kh)).unwrap();
    let probe = Probe::Http {
        host: "127.0.0.1".into(),
        port: crate::ports::at(0, 0),
        path: "/health".into(),
        from: ProbeFrom::Host,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The code before the fix waited for a channel that never opened and
    // failed at the connect bound, whatever it is; 5 s leaves room for the
    // new master's handshake on a saturated host (over 1 s seen) and stays
    // under the master's 10 s ControlPersist.
    let limits = Limits {
        connect: Duration::from_secs(5),
        attempt: Duration::from_secs(10),
    };
    let attempt = || {
        let t = Instant::now();
        let r = rt.block_on(check(&probe, limits, Some(&remote)));
        (r, t.elapsed())
    };
    // The fixture may take a moment to listen.
    let end = Instant::now() + Duration::from_secs(10);
    while attempt().0.is_err() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (first, _) = attempt();
    assert!(first.is_ok(), "{first:?}");
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGKILL,
    ] {
        let masters = masters_of(&r);
        assert!(!masters.is_empty(), "no ssh master found for the probes");
        for pid in &masters {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), signal);
        }
        std::thread::sleep(Duration::from_millis(300));
        let (res, took) = attempt();
        eprintln!("after {signal:?} of {masters:?}: {res:?} in {took:?}");
        assert!(
            res.is_ok(),
            "after {signal:?} of the master: {res:?} in {took:?}"
        );
    }
    orch::tunnel::end();
}

/// The container's PostgreSQL superuser and a role the deployment connects
/// as: uids of the container's own (its /etc is its own).
const PG_UID: &str = "2602";
const APP_UID: &str = "2603";
const PG_PASSWORD: &str = "orch-test-superuser";

/// `args` in the container, in its network namespace too (`exec` is not),
/// as `uid` with `env` (`KEY=VALUE`), from `/`.
fn command_in(r: &Remote, uid: &str, env: &[&str], args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    let leader = r.c.leader().to_string();
    cmd.args([
        "-t", &leader, "-m", "-u", "-i", "-p", "-n", "--", "env", "-C", "/",
    ])
    .args(env)
    .args([
        "setpriv",
        "--reuid",
        uid,
        "--regid",
        uid,
        "--clear-groups",
        "--",
    ])
    .args(args);
    cmd
}

/// `sql` through the container's socket (of the server on `port`) as
/// `postgres` (peer), its rows.
fn psql_remote(r: &Remote, bin: &Path, port: u16, sql: &str) -> String {
    let psql = bin.join("psql").display().to_string();
    let port = port.to_string();
    let args = [
        psql.as_str(),
        "-h",
        "/tmp",
        "-p",
        &port,
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-At",
        "-c",
        sql,
    ];
    let o = crate::support::run_bounded(command_in(r, PG_UID, &[], &args), Duration::from_secs(30));
    assert!(
        o.status.success(),
        "psql {sql:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A PostgreSQL cluster in `r`'s container (its own network), listening on
/// 127.0.0.1:`port` there with password authentication, as unit
/// `pgremote.service` (not started).
fn remote_postgres(r: &Remote, bin: &Path, port: u16) {
    let users = [
        format!("u postgres {PG_UID} \"PostgreSQL\" /var/lib/pgtest"),
        format!("u app {APP_UID} \"App\" /"),
    ];
    exec_ok(
        &r.c,
        &["systemd-sysusers", "--inline", &users[0], &users[1]],
    );
    exec_ok(
        &r.c,
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
    let initdb = bin.join("initdb").display().to_string();
    let args = [
        initdb.as_str(),
        "-D",
        "/var/lib/pgtest/data",
        "--auth-local=peer",
        "--auth-host=scram-sha-256",
        "-U",
        "postgres",
        "--no-sync",
    ];
    let o =
        crate::support::run_bounded(command_in(r, PG_UID, &[], &args), Duration::from_secs(120));
    assert!(
        o.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(
        r.c.unit_dir().join("pgremote.service"),
        format!(
            "[Service]\nType=notify\nUser=postgres\nExecStart={} -D /var/lib/pgtest/data \
             -c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=/tmp -c fsync=off\n\
             KillMode=mixed\nKillSignal=SIGINT\n",
            bin.join("postgres").display()
        ),
    )
    .unwrap();
}

/// Issue 26 part 1 with the database on a remote host, for real: the
/// deployment and its PostgreSQL live on a host reached over SSH whose
/// network is its own, so orch's superuser connection (`connect =
/// "tcp://127.0.0.1:PORT"` from that host, password in `PGPASSWORD`) can
/// only go through orch's SSH tunnel. A stray `psql` session of the role
/// `app`, held open across `stop-for-maintenance`, is named (pid, role,
/// application, client address, since) and the stop is not called clean:
/// exit 1, the deployment left in maintenance (journal, masks). Then
/// `--terminate-sessions` ends it and the proof line says `0 database
/// sessions of app`.
#[test]
fn the_session_proof_reaches_a_remote_postgres_through_the_ssh_tunnel() {
    let bin = crate::maintenance::pg_bin();
    let _ports = crate::ports::lease_groups(1);
    let pg_port = crate::ports::at(0, 0);
    let r = Remote::start_with(true, &[]);
    remote_postgres(&r, &bin, pg_port);
    std::fs::write(
        &r.cfg,
        format!(
            "[deployment]\nname = \"fx\"\nstate_dir = \"/var/lib/orch\"\n\
             [database]\nunit = \"pgremote.service\"\nroles = [\"app\"]\nconnect = \"tcp://127.0.0.1:{pg_port}\"\n\
             [master]\nexec_start = \"/bin/sleep infinity\"\n\
             [[workers]]\nkind = \"w\"\ncount = 2\nexec_start = \"/bin/sleep infinity\"\n"
        ),
    )
    .unwrap();
    let kh = r.known_hosts("known_hosts", &r.host_pub);
    let env = [("PGPASSWORD", PG_PASSWORD)];
    let run = |args: &[&str]| r.orch_env(&kh, args, Duration::from_secs(120), &env).0;
    assert_ok(&run(&["install"]), "install");
    assert_ok(
        &run(&["start", "--all"]),
        "start --all (the database first)",
    );
    assert!(
        !reachable_from_here(pg_port),
        "PostgreSQL must be reachable only from its host"
    );
    psql_remote(
        &r,
        &bin,
        pg_port,
        &format!("alter role postgres password '{PG_PASSWORD}'"),
    );
    psql_remote(&r, &bin, pg_port, "create role app login password 'app'");

    // Idle, over TCP on the host's loopback, its standard input held open.
    let psql = bin.join("psql").display().to_string();
    let port = pg_port.to_string();
    let stray_args = [
        psql.as_str(),
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "app",
        "-d",
        "postgres",
    ];
    let mut stray = command_in(&r, APP_UID, &["PGPASSWORD=app"], &stray_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the stray psql");
    let deadline = Instant::now() + Duration::from_secs(20);
    let stray_pid: i64 = loop {
        let q = "select pid from pg_stat_activity where usename = 'app'";
        if let Ok(pid) = psql_remote(&r, &bin, pg_port, q).parse() {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the stray psql session did not appear"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    let o = run(&[
        "stop-for-maintenance",
        "--timeout",
        "10s",
        "--output",
        "json",
    ]);
    assert!(
        !o.stdout.is_empty(),
        "no report ({:?}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let report = one_session_left(&o, stray_pid, "app", "127.0.0.1");
    let database = report["sessions"]["database"].as_str().unwrap_or_default();
    assert_eq!(
        database,
        format!("tcp://127.0.0.1:{pg_port} from host local (root@127.0.0.1) through SSH"),
        "{report}"
    );
    // Left in maintenance: the journal, and the workers masked.
    exec_ok(&r.c, &["test", "-f", "/var/lib/orch/fx/maintenance.json"]);
    let out =
        r.c.systemctl(&["show", "-P", "LoadState", "fx-worker-0-w.service"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "masked");

    let o = run(&[
        "stop-for-maintenance",
        "--terminate-sessions",
        "--output",
        "json",
    ]);
    assert_ok(&o, "stop-for-maintenance --terminate-sessions");
    let report = maintenance_report(&o);
    assert_eq!(
        report["sessions"]["terminated"][0]["pid"], stray_pid,
        "{report}"
    );
    assert_eq!(
        report["sessions"]["left"],
        serde_json::json!([]),
        "{report}"
    );
    let o = run(&["stop-for-maintenance"]);
    assert_ok(&o, "stop-for-maintenance again");
    let human = String::from_utf8_lossy(&o.stdout);
    let proof = "3 units stopped, 0 processes left, 0 database sessions of app";
    assert!(human.contains(proof), "{proof:?} in:\n{human}");
    let _ = stray.kill();
    let _ = stray.wait();
    eprintln!("remote stray psql session {stray_pid}: named, then terminated: {proof}");
    assert_ok(&run(&["resume"]), "resume");
}

/// Ctrl+C during `status` over SSH, while a probe of the remote unit waits
/// (its health port accepts and never answers): status made an SSH master
/// connection and its control folder for its probes; orch exits 130 and
/// leaves neither behind, where the default SIGINT left the folder.
#[test]
fn ctrl_c_during_status_leaves_no_ssh_master_nor_control_folder() {
    let _ports = crate::ports::lease_groups(1);
    let hang = crate::ports::at(0, 0);
    let _listener = std::net::TcpListener::bind(("127.0.0.1", hang)).unwrap();
    let r = Remote::start();
    std::fs::write(
        &r.cfg,
        format!(
            "[deployment]\nname = \"fx\"\nstate_dir = \"/var/lib/orch\"\n\
             [master]\nexec_start = \"/bin/sleep infinity\"\nport = {hang}\n\
             health = \"http://127.0.0.1:{{{{ port }}}}/health\"\n"
        ),
    )
    .unwrap();
    let kh = r.known_hosts("known_hosts", &r.host_pub);
    let (o, _) = r.orch(&kh, &["install"], LIMIT);
    assert_ok(&o, "install");
    let o = r.c.systemctl(&["start", "fx.service"]);
    assert!(o.status.success(), "{o:?}");

    let runtime = r.dir.path().join("xdg");
    std::fs::create_dir(&runtime).unwrap();
    let mut cmd = r.orch_cmd(&kh, &["status"]);
    cmd.env("XDG_RUNTIME_DIR", &runtime)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // The master's control socket, in orch's private folder.
    let socket = || {
        std::fs::read_dir(&runtime)
            .unwrap()
            .flatten()
            .any(|d| std::fs::read_dir(d.path()).is_ok_and(|mut e| e.next().is_some()))
    };
    let end = Instant::now() + Duration::from_secs(20);
    while !socket() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        socket(),
        "status made no SSH master in {}",
        runtime.display()
    );
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("status interrupted"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&runtime)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // And no ssh master of that folder still runs.
    let needle = runtime.display().to_string();
    let masters = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|p| {
                std::fs::read(p.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
            })
            .count()
    };
    let end = Instant::now() + Duration::from_secs(3);
    while masters() > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(masters(), 0, "an ssh master of {needle} still runs");
}

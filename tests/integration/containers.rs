//! Container-backed units against a real podman inside the harness's
//! systemd (see /work/shared/notes/podman-in-the-test-container.md): the
//! image is a rootfs tarball imported with `podman import` (no registry),
//! whose `/bin`, `/lib`… point into the host's `/usr`, bind-mounted
//! read-only, so the fixture worker runs on the host's python.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

pub(crate) const CONTAINERS_CONF: &str = "[containers]\n\
    # nspawn's seccomp filter refuses keyctl()\nkeyring = false\n\
    # crun's cgroup eBPF program needs CAP_SYS_RESOURCE, which the VM does not grant\ncgroups = \"disabled\"\n\
    netns = \"host\"\n";
pub(crate) const POLICY: &str = r#"{"default":[{"type":"insecureAcceptAnything"}]}"#;
const IMAGE: &str = "localhost/orch-fixture:1";

pub(crate) fn need_podman() {
    for tool in [
        "/usr/bin/podman",
        "/usr/bin/crun",
        "/usr/bin/conmon",
        "/usr/bin/catatonit",
    ] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: apt-get install -y podman crun conmon catatonit"
        );
    }
}

/// A rootfs of symlinks into `/usr` and a passwd, as a tarball; `users`
/// are more `passwd` lines (each user gets its group of the same id).
pub(crate) fn rootfs_tar(dir: &Path, users: &[(&str, u32)]) -> std::path::PathBuf {
    let root = dir.join("rootfs");
    for d in ["etc", "tmp", "proc", "sys", "dev", "run", "opt"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for l in ["bin", "sbin", "lib", "lib64"] {
        std::os::unix::fs::symlink(format!("usr/{l}"), root.join(l)).unwrap();
    }
    let (mut passwd, mut group) = (
        "root:x:0:0::/:/bin/sh\n".to_string(),
        "root:x:0:\n".to_string(),
    );
    for (name, id) in users {
        passwd.push_str(&format!("{name}:x:{id}:{id}::/:/usr/sbin/nologin\n"));
        group.push_str(&format!("{name}:x:{id}:\n"));
    }
    std::fs::write(root.join("etc/passwd"), passwd).unwrap();
    std::fs::write(root.join("etc/group"), group).unwrap();
    let tar = dir.join("rootfs.tar");
    let out = std::process::Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    tar
}

/// A container with the fixtures, a log folder and a runtime-mask folder
/// (for maintenance), bound from `dir`.
fn container(dir: &Path) -> Fixtures {
    let (log, masks) = (dir.join("log"), dir.join("masks"));
    std::fs::create_dir(&log).unwrap();
    std::fs::create_dir(&masks).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let c = crate::support::Container::builder()
        .bind_ro(&fixtures, "/opt/fixtures")
        .bind(&log, "/opt/log")
        .bind(&masks, "/run/systemd/system.control")
        .boot();
    Fixtures {
        c,
        cfg: dir.join("orch.toml"),
        log: log.join("events.log"),
        _dir: tempfile::tempdir().unwrap(),
    }
}

/// Writes podman's configuration in the container and imports the image.
fn prepare(f: &Fixtures, dir: &Path) {
    let tar = rootfs_tar(dir, &[]);
    podman_setup(&f.c, f.log.parent().unwrap(), "/opt/log", &tar, IMAGE);
}

/// Writes podman's configuration in the container `c` (its `/etc` is
/// empty) and imports `tar` as `image`, through `shared`, a host folder
/// bound at `inside`.
pub(crate) fn podman_setup(
    c: &crate::support::Container,
    shared: &Path,
    inside: &str,
    tar: &Path,
    image: &str,
) {
    std::fs::copy(tar, shared.join("rootfs.tar")).unwrap();
    std::fs::write(shared.join("containers.conf"), CONTAINERS_CONF).unwrap();
    std::fs::write(shared.join("policy.json"), POLICY).unwrap();
    let script = format!(
        "mkdir -p /etc/containers && cd {inside} && mv containers.conf policy.json /etc/containers/ \
         && podman import -q rootfs.tar {image} && rm rootfs.tar"
    );
    let out = c.exec(&["/bin/sh", "-c", &script]);
    assert!(out.status.success(), "podman setup: {out:?}");
}

fn config(base: u16) -> String {
    format!(
        r#"
[deployment]
name = "ct"
[master]
exec_start = "/usr/bin/python3 /opt/fixtures/worker.py --name {{{{ name }}}} --port {base} --log /opt/log/events.log"
type = "notify"
image = "{IMAGE}"
volumes = ["/usr:/usr:ro", "/opt/fixtures:/opt/fixtures:ro", "/opt/log:/opt/log"]
reload_signal = "HUP"
health = "http://127.0.0.1:{base}/health"
stop_timeout = "10s"
[[workers]]
kind = "generic"
count = 2
port_base = {w}
exec_start = "/usr/bin/python3 /opt/fixtures/worker.py --name {{{{ name }}}} --port {{{{ port }}}} --log /opt/log/events.log"
type = "notify"
image = "{IMAGE}"
volumes = ["/usr:/usr:ro", "/opt/fixtures:/opt/fixtures:ro", "/opt/log:/opt/log"]
reload_signal = "HUP"
stop_timeout = "10s"
"#,
        w = base + 1
    )
}

/// Output of a command run in the container, trimmed; fails the test unless it succeeds.
fn inside(f: &Fixtures, args: &[&str]) -> String {
    let out = f.c.exec(args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `name id` of the deployment's running containers, sorted.
fn running(f: &Fixtures) -> Vec<String> {
    let out = inside(
        f,
        &[
            "podman",
            "ps",
            "--filter",
            "label=orch.deployment=ct",
            "--format",
            "{{.Names}} {{.ID}}",
        ],
    );
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

fn hups(log: &Path, want: usize) -> usize {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let n = text.lines().filter(|l| l.starts_with("hup ")).count();
        if n >= want || Instant::now() > end {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ports from a lease (the containers share the host's network).
#[test]
fn podman_units_start_ready_reload_in_place_and_stop_with_the_proof() {
    need_podman();
    let dir = tempfile::tempdir().unwrap();
    let f = container(dir.path());
    prepare(&f, dir.path());
    let ports = crate::ports::reserve(12);
    std::fs::write(&f.cfg, config(ports.port(0))).unwrap();
    let ssh = fake_ssh(&f.c, dir.path(), "");
    let orch_ok =
        |_: &crate::support::Container, cfg: &Path, args: &[&str]| remote_ok(&ssh, cfg, args);
    orch_ok(&f.c, &f.cfg, &["install"]);
    orch_ok(&f.c, &f.cfg, &["start", "--all", "--output", "json"]);
    let before = running(&f);
    assert_eq!(before.len(), 3, "{before:?}");
    let status = json(&orch_ok(&f.c, &f.cfg, &["status", "--output", "json"]));
    for u in status["units"].as_array().expect("units") {
        assert_eq!(
            (u["image"].as_str(), u["container_state"].as_str()),
            (Some(IMAGE), Some("running")),
            "{u}"
        );
    }
    // Each container's main process lives in its unit's own cgroup.
    for line in &before {
        let name = line.split(' ').next().unwrap();
        let pid = inside(
            &f,
            &["podman", "inspect", "--format", "{{.State.Pid}}", name],
        );
        let cg = inside(&f, &["cat", &format!("/proc/{pid}/cgroup")]);
        assert!(
            cg.contains(&format!("/ct.slice/{name}.service")),
            "{name}: {cg}"
        );
    }
    orch_ok(&f.c, &f.cfg, &["reload", "--all"]);
    assert_eq!(hups(&f.log, 3), 3, "every container got SIGHUP");
    assert_eq!(running(&f), before, "reload replaced no container");

    orch_ok(&f.c, &f.cfg, &["restart", "--all", "--rolling"]);
    let after = running(&f);
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(
        after.iter().all(|c| !before.contains(c)),
        "restart made new containers"
    );

    let o = orch_ok(&f.c, &f.cfg, &["stop-for-maintenance", "--output", "json"]);
    let report = maintenance_report(&o);
    assert!(running(&f).is_empty(), "{report}");
    let all = inside(&f, &["podman", "ps", "-a", "--format", "{{.Names}}"]);
    assert!(all.is_empty(), "no container record is left: {all}");
    assert_eq!(
        report["stray_containers"],
        serde_json::json!([]),
        "{report}"
    );
    orch_ok(&f.c, &f.cfg, &["resume"]);
    assert_eq!(running(&f).len(), 3);

    // A container of the deployment started by hand, outside any unit: the
    // proof names it, stops it and reports it.
    let stray = format!(
        "podman run -d --rm --init --cgroups=disabled --network=host --name=ct-by-hand \
         --label=orch.deployment=ct -v /usr:/usr:ro {IMAGE} /bin/sleep 1000"
    );
    inside(&f, &["/bin/sh", "-c", &stray]);
    let o = orch_ok(&f.c, &f.cfg, &["stop-for-maintenance", "--output", "json"]);
    let report = maintenance_report(&o);
    let strays = report["stray_containers"]
        .as_array()
        .expect("stray_containers");
    assert_eq!(strays.len(), 1, "{report}");
    assert_eq!(
        (strays[0]["name"].as_str(), strays[0]["stopped"].as_bool()),
        (Some("ct-by-hand"), Some(true)),
        "{report}"
    );
    assert!(running(&f).is_empty(), "{report}");

    // An image missing on the host: start refuses before any job, naming it.
    remote_ok(&ssh, &f.cfg, &["resume"]);
    remote_ok(&ssh, &f.cfg, &["stop", "--all"]);
    inside(&f, &["podman", "rmi", "--force", IMAGE]);
    let o = remote(&ssh, &f.cfg, &["start", "--all"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("image {IMAGE} is not present on host local")),
        "{err}"
    );
    assert!(running(&f).is_empty());
    let all = inside(&f, &["podman", "ps", "-a", "--format", "{{.Names}}"]);
    assert!(all.is_empty(), "nothing was started: {all}");
}

/// An ssh that runs the command in the container (`nsenter`), so orch asks
/// that container's podman, as it would on a remote host; `wrap` (words
/// before the `sh -c COMMAND`) changes how it runs.
pub(crate) fn fake_ssh(
    c: &crate::support::Container,
    dir: &Path,
    wrap: &str,
) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let ssh = dir.join(format!(
        "fake-ssh{}",
        if wrap.is_empty() { "" } else { "-wrapped" }
    ));
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\n\
             w=; prev=\n\
             for a in \"$@\"; do [ \"$prev\" = -W ] && w=$a; [ \"$prev\" = -O ] && exit 0; prev=$a; done\n\
             while [ \"$1\" != -- ]; do shift; done; shift 2\n\
             [ -n \"$w\" ] && exec /usr/bin/python3 {forward} \"$w\"\n\
             exec nsenter -t {pid} -m -u -i -p -- {wrap} sh -c \"$*\"\n",
            pid = c.leader(),
            forward = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/forward.py"),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    ssh
}

/// orch with the container as host `127.0.0.2`, through [`fake_ssh`].
pub(crate) fn remote(ssh: &Path, cfg: &Path, args: &[&str]) -> std::process::Output {
    use crate::support::OutputBounded;
    remote_cmd(ssh, cfg, args).output_bounded().unwrap()
}

/// The command of [`remote`], to run with another bound.
pub(crate) fn remote_cmd(ssh: &Path, cfg: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_orch"));
    cmd.arg("--config")
        .arg(cfg)
        .args([
            "--host",
            "root@127.0.0.2",
            "--call-timeout",
            "10s",
            "--ssh-command",
        ])
        .arg(ssh)
        .args(args)
        .env_remove("ORCH_BUS")
        .env_remove("ORCH_HOST")
        .env_remove("ORCH_CONFIG");
    cmd
}

/// [`remote`], failing the test unless orch succeeds.
pub(crate) fn remote_ok(ssh: &Path, cfg: &Path, args: &[&str]) -> std::process::Output {
    crate::common::assert_orch_ok(remote(ssh, cfg, args), args)
}

/// Run by the wrapped [`fake_ssh`]: a host where podman is not installed,
/// `/usr/bin` without it, in a mount namespace of that session only.
const NO_PODMAN: &str = "#!/bin/sh\n\
    mkdir -p /run/orch-usr-bin && mount --bind /usr/bin /run/orch-usr-bin \
    && mount -t tmpfs tmpfs /usr/bin || exit 99\n\
    # links the container's empty /etc leaves dangling are not copied\n\
    /run/orch-usr-bin/cp -s /run/orch-usr-bin/* /usr/bin/ 2>/dev/null\n\
    /run/orch-usr-bin/rm -f /usr/bin/podman && [ -x /usr/bin/sh ] || exit 99\n\
    exec \"$@\"\n";

/// The files of the runtime-mask folder.
fn masks(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("masks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn image_id(f: &Fixtures) -> String {
    inside(
        f,
        &["podman", "image", "inspect", "--format", "{{.Id}}", IMAGE],
    )
}

#[test]
fn podman_missing_or_image_missing_is_named_before_any_job_and_status_shows_containers() {
    need_podman();
    let dir = tempfile::tempdir().unwrap();
    let f = container(dir.path());
    prepare(&f, dir.path());
    let ports = crate::ports::reserve(12);
    std::fs::write(&f.cfg, config(ports.port(0))).unwrap();
    let ssh = fake_ssh(&f.c, dir.path(), "");
    remote_ok(&ssh, &f.cfg, &["install"]);
    remote_ok(&ssh, &f.cfg, &["start", "--all"]);
    let before = running(&f);
    assert_eq!(before.len(), 3, "{before:?}");

    // The human table: each container unit's state and image.
    let o = remote_ok(&ssh, &f.cfg, &["status"]);
    let table = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<&str> = table.lines().filter(|l| l.contains(".service")).collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        table.lines().next().unwrap().ends_with("CONTAINER"),
        "{table}"
    );
    for row in rows {
        assert!(row.ends_with(&format!("  running {IMAGE}")), "{table}");
    }

    // No podman on the host: maintenance says so before anything stops.
    std::fs::write(dir.path().join("log/no-podman.sh"), NO_PODMAN).unwrap();
    let bare = fake_ssh(
        &f.c,
        dir.path(),
        "unshare -m --propagation private /bin/sh /opt/log/no-podman.sh",
    );
    let o = remote(&bare, &f.cfg, &["stop-for-maintenance"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("/usr/bin/podman is not installed on host local"),
        "{err}"
    );
    assert_eq!(running(&f), before, "nothing was stopped: {err}");
    assert!(masks(dir.path()).is_empty(), "nothing was masked: {err}");
    let status = json(&remote_ok(&ssh, &f.cfg, &["status", "--output", "json"]));
    assert!(
        status["maintenance"].is_null(),
        "nothing recorded: {status}"
    );

    // The image gone (untagged; the running containers keep it): reload
    // refuses before any job, no container is signalled.
    let id = image_id(&f);
    inside(&f, &["podman", "untag", IMAGE]);
    let o = remote(&ssh, &f.cfg, &["reload", "--all"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("image {IMAGE} is not present on host local")),
        "{err}"
    );
    let log = std::fs::read_to_string(&f.log).unwrap_or_default();
    assert_eq!(
        log.lines().filter(|l| l.starts_with("hup ")).count(),
        0,
        "{log}"
    );
    assert_eq!(running(&f), before);

    // resume refuses before it unmasks anything.
    inside(&f, &["podman", "tag", &id, IMAGE]);
    remote_ok(&ssh, &f.cfg, &["stop-for-maintenance"]);
    let masked = masks(dir.path());
    assert_eq!(masked.len(), 3, "{masked:?}");
    inside(&f, &["podman", "untag", IMAGE]);
    let o = remote(&ssh, &f.cfg, &["resume"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("image {IMAGE} is not present on host local")),
        "{err}"
    );
    assert_eq!(masks(dir.path()), masked, "the masks stay: {err}");
    assert!(running(&f).is_empty(), "nothing started: {err}");
    inside(&f, &["podman", "tag", &id, IMAGE]);
    remote_ok(&ssh, &f.cfg, &["resume"]);
    assert_eq!(running(&f).len(), 3);
    assert!(masks(dir.path()).is_empty());
}

/// A master ready at once and a worker that never says READY=1, both
/// `type = "notify"` containers.
fn silent_config(base: u16) -> String {
    let run =
        "/usr/bin/python3 /opt/fixtures/worker.py --name {{ name }} --log /opt/log/events.log";
    format!(
        r#"
[deployment]
name = "ct"
[master]
exec_start = "{run} --port {base}"
type = "notify"
image = "{IMAGE}"
volumes = ["/usr:/usr:ro", "/opt/fixtures:/opt/fixtures:ro", "/opt/log:/opt/log"]
stop_timeout = "5s"
[[workers]]
kind = "silent"
count = 1
exec_start = "{run} --no-notify"
type = "notify"
image = "{IMAGE}"
volumes = ["/usr:/usr:ro", "/opt/fixtures:/opt/fixtures:ro", "/opt/log:/opt/log"]
start_timeout = "6s"
stop_timeout = "5s"
"#
    )
}

/// What the harness' podman configuration hid: with podman's own cgroup
/// handling back on, orch's `--cgroups=disabled` alone keeps the container
/// in its unit's cgroup; and a `type = "notify"` unit is ready only when the
/// process in the container says so (`--sdnotify=container`), not when the
/// container starts.
#[test]
fn podman_units_keep_the_units_cgroup_and_are_ready_only_from_inside() {
    need_podman();
    let dir = tempfile::tempdir().unwrap();
    let f = container(dir.path());
    prepare(&f, dir.path());
    inside(
        &f,
        &[
            "sed",
            "-i",
            "/^cgroups/d",
            "/etc/containers/containers.conf",
        ],
    );
    let conf = inside(&f, &["cat", "/etc/containers/containers.conf"]);
    assert!(!conf.contains("cgroups"), "{conf}");
    let ports = crate::ports::reserve(1);
    std::fs::write(&f.cfg, silent_config(ports.port(0))).unwrap();
    let ssh = fake_ssh(&f.c, dir.path(), "");
    remote_ok(&ssh, &f.cfg, &["install"]);
    remote_ok(&ssh, &f.cfg, &["start", "master"]);
    let pid = inside(
        &f,
        &["podman", "inspect", "--format", "{{.State.Pid}}", "ct"],
    );
    let cg = inside(&f, &["cat", &format!("/proc/{pid}/cgroup")]);
    assert!(cg.contains("/ct.slice/ct.service"), "{cg}");

    let o = remote(&ssh, &f.cfg, &["start", "--all"]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !o.status.success(),
        "a worker that never said READY=1 is not ready:\n{out}"
    );
    let worker = "ct-worker-0-silent";
    let state = f.c.systemctl(&["is-active", &format!("{worker}.service")]);
    let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
    assert_ne!(state, "active", "{out}");
    assert!(out.contains(worker), "orch names the unit: {out}");
}

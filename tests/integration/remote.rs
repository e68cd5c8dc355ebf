//! `--host`: D-Bus to a "remote" systemd through the SSH command and
//! `systemd-stdio-bridge`. The SSH command is a wrapper that records its
//! arguments and runs the bridge inside the harness container, so the whole
//! unixexec path is real except the network hop.

use crate::support::OutputBounded;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::Container;

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn remote(cfg: &Path, host: &str, ssh: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_orch"))
        .arg("--config")
        .arg(cfg)
        .args(["--host", host, "--ssh-command", ssh, "--call-timeout", "5s"])
        .args(args)
        .env_remove("ORCH_BUS")
        .output_bounded()
        .unwrap()
}

#[test]
fn lifecycle_and_status_over_the_ssh_bridge() {
    let c = Container::boot();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("orch.toml");
    std::fs::write(
        &cfg,
        "[deployment]\nname = \"fx\"\n[master]\nexec_start = \"/bin/sleep infinity\"\n\
         [[workers]]\nkind = \"w\"\ncount = 3\nexec_start = \"/bin/sleep infinity\"\n\
         [[workers]]\nkind = \"broken\"\ncount = 1\nexec_start = \"/nonexistent/worker\"\nrestart = \"no\"\n",
    )
    .unwrap();
    let argv = dir.path().join("argv");
    // Like ssh: drop the options and the destination, and let the "remote
    // shell" (inside the container) run the rest as one command line.
    let ssh = script(
        dir.path(),
        "fake-ssh",
        &format!(
            "case \"$*\" in *systemd-stdio-bridge) printf '%s\\n' \"$@\" > {} ;; esac\n\
             while [ \"$1\" != -- ]; do shift; done; shift 2\n\
             exec nsenter -t {} -m -u -i -p -- sh -c \"$*\"",
            argv.display(),
            c.leader()
        ),
    );
    let ssh_cmd = format!("{} -o ConnectTimeout=5", ssh.display());

    // Install writes the unit files on the remote host (the container's
    // /etc/systemd/system, which the harness binds to c.unit_dir()).
    let o = remote(
        &cfg,
        "box.example",
        &ssh_cmd,
        &["install", "--output", "json"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&o);
    assert_eq!(r["changed"], true, "{r}");
    assert_eq!(r["reloaded"], true, "{r}");
    assert_eq!(r["enabled"], true, "{r}");
    let rendered = json(&orch_ok(&c, &cfg, &["render", "--output", "json"]));
    for u in rendered["units"].as_array().unwrap() {
        let on_disk =
            std::fs::read_to_string(c.unit_dir().join(u["unit"].as_str().unwrap())).unwrap();
        assert_eq!(on_disk, u["content"].as_str().unwrap(), "{}", u["unit"]);
    }
    let o = c.systemctl(&["is-enabled", "fx.service"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "enabled");
    // Idempotent over SSH too: nothing written, no reload; plan agrees.
    let r = json(&remote(
        &cfg,
        "box.example",
        &ssh_cmd,
        &["install", "--output", "json"],
    ));
    assert_eq!(
        (r["changed"].clone(), r["reloaded"].clone()),
        (false.into(), false.into()),
        "{r}"
    );
    let o = remote(&cfg, "box.example", &ssh_cmd, &["plan"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = remote(
        &cfg,
        "ad@min@box.example:2222",
        &ssh_cmd,
        &["start", "master", "w", "--output", "json"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sum = summary(&o);
    assert_eq!(sum["units"].as_array().unwrap().len(), 4, "{sum}");
    assert!(all_in_phase(&sum, "ready"), "{sum}");
    // The SSH command got the operator's options, then orch's, then the destination intact.
    let args: Vec<String> = std::fs::read_to_string(&argv)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        args,
        [
            "-o",
            "ConnectTimeout=5",
            "-xT",
            "-o",
            "BatchMode=yes",
            "-p",
            "2222",
            "--",
            "ad@min@box.example",
            "systemd-stdio-bridge"
        ],
    );
    assert!(!args.iter().any(|a| a.contains("StrictHostKeyChecking")));

    // A failure on the remote host is reported with that host's journal.
    let o = remote(
        &cfg,
        "box.example",
        &ssh_cmd,
        &["start", "broken", "--output", "json"],
    );
    assert_eq!(o.status.code(), Some(1));
    let u = &summary(&o)["units"][0];
    assert_eq!(u["phase"], "failed", "{u}");
    let journal = u["journal"].as_array().unwrap();
    assert!(
        journal
            .iter()
            .any(|l| l.as_str().unwrap().contains("fx-worker-3-broken")),
        "{u}"
    );

    let o = remote(
        &cfg,
        "box.example",
        &ssh_cmd,
        &["status", "--output", "json"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    let active = v["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["active_state"] == "active")
        .count();
    assert_eq!(active, 4, "master and the three w workers: {v}");

    // A hand edit on the remote host is drift there too: refused, nothing changed.
    let edited = c.unit_dir().join("fx-worker-0-w.service");
    let text = std::fs::read_to_string(&edited).unwrap() + "Nice=5\n";
    std::fs::write(&edited, &text).unwrap();
    let o = remote(&cfg, "box.example", &ssh_cmd, &["install"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("edited by hand"));
    assert_eq!(std::fs::read_to_string(&edited).unwrap(), text);

    // What the remote host wrote is checked before it is renamed into place:
    // a transport that changes one byte of a file fails the install and
    // leaves every unit file as it was.
    let before: Vec<_> = std::fs::read_dir(c.unit_dir())
        .unwrap()
        .flatten()
        .map(|e| (e.file_name(), std::fs::read(e.path()).ok()))
        .collect();
    let corrupt = script(
        dir.path(),
        "corrupt-ssh",
        &format!(
            "while [ \"$1\" != -- ]; do shift; done; shift 2\n\
             [ \"$*\" = \"sh -s\" ] || exec nsenter -t {0} -m -u -i -p -- sh -c \"$*\"\n\
             f=0; while IFS= read -r l; do\n\
               if [ $f = 1 ]; then r=${{l#?}}; case $l in A*) l=B$r;; *) l=A$r;; esac; f=0; fi\n\
               case $l in 'base64 -d'*) f=1;; esac; printf '%s\\n' \"$l\"\n\
             done |\n\
             nsenter -t {0} -m -u -i -p -- sh -c \"$*\"",
            c.leader()
        ),
    );
    let o = remote(
        &cfg,
        "box.example",
        corrupt.to_str().unwrap(),
        &["install", "--force"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("sha256") && err.contains("box.example"),
        "{err}"
    );
    let after: Vec<_> = std::fs::read_dir(c.unit_dir())
        .unwrap()
        .flatten()
        .map(|e| (e.file_name(), std::fs::read(e.path()).ok()))
        .collect();
    assert_eq!(before, after, "nothing changed, no temporary file left");
}

#[test]
fn a_bridge_that_exits_at_once_is_a_bounded_error_naming_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("orch.toml");
    std::fs::write(
        &cfg,
        "[deployment]\nname = \"fx\"\n[master]\nexec_start = \"/bin/true\"\n",
    )
    .unwrap();
    let ssh = script(
        dir.path(),
        "dead-ssh",
        "echo 'ssh: connect to host box.example port 22: Connection refused' >&2\nexit 255",
    );
    let t = Instant::now();
    let o = remote(
        &cfg,
        "admin@box.example",
        ssh.to_str().unwrap(),
        &["status"],
    );
    assert!(
        t.elapsed() < Duration::from_secs(5 + 2),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("host admin@box.example"), "{err}");

    let o = remote(&cfg, "admin@", ssh.to_str().unwrap(), &["status"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a malformed --host is a usage error"
    );
}

//! CLI conventions: version, completions, man page, closed pipes.

use crate::support::OutputBounded;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn orch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_orch"));
    c.env_remove("ORCH_CONFIG").env_remove("ORCH_BUS");
    c
}

#[test]
fn version_names_the_commit() {
    let o = orch().arg("--version").output_bounded().unwrap();
    let v = String::from_utf8_lossy(&o.stdout);
    assert!(
        v.starts_with(&format!("orch {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let o = orch()
            .args(["completions", shell])
            .output_bounded()
            .unwrap();
        assert!(o.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&o.stdout);
        for sub in ["stop-for-maintenance", "resume", "install", "--rolling"] {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    // The bash script must at least parse.
    let o = orch()
        .args(["completions", "bash"])
        .output_bounded()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orch.bash");
    std::fs::write(&path, &o.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output_bounded()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn man_page_renders_with_commands_and_exit_codes() {
    let o = orch().arg("man").output_bounded().unwrap();
    assert!(o.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orch.1");
    std::fs::write(&path, &o.stdout).unwrap();
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&path)
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .output_bounded()
        .expect("man (apt-get install -y man-db)");
    let text = String::from_utf8_lossy(&rendered.stdout);
    for needle in [
        "EXIT STATUS",
        "stop-for-maintenance",
        "changes are pending",
        "--config",
        // Each command's options, in this page.
        "orch restart",
        "--rolling",
        "--batch",
        "--diff",
        "--include-database",
        "Bound on the stop of each stale unit",
    ] {
        assert!(text.contains(needle), "man page lacks {needle:?}:\n{text}");
    }
    // No page it points to is missing: there is one page.
    assert!(
        !text.contains("orch-render(1)") && !text.contains("orch-"),
        "{text}"
    );
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("orch.toml");
    // Enough output (hundreds of KiB) to outlast the pipe buffer.
    std::fs::write(&cfg, "[deployment]\nname = \"big\"\n[master]\nexec_start = \"/bin/true\"\n[[workers]]\nkind = \"w\"\ncount = 600\nexec_start = \"/bin/sleep infinity\"\n").unwrap();
    for args in [&["render"][..], &["render", "--output", "json"], &["plan"]] {
        let mut child = orch()
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        // The reader is dropped here: orch's next write meets a closed pipe.
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        assert!(
            matches!(o.status.code(), Some(0) | Some(4)),
            "{args:?}: {:?} {err}",
            o.status
        );
    }
}

#[test]
fn bad_lifecycle_arguments_are_usage_errors_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("orch.toml");
    std::fs::write(
        &cfg,
        "[deployment]\nname = \"app\"\n[master]\nexec_start = \"/bin/true\"\n[[workers]]\nkind = \"generic\"\ncount = 1\nexec_start = \"/bin/true\"\n",
    )
    .unwrap();
    for (args, says) in [
        (
            &["start", "genric"][..],
            "`genric` is not a unit of deployment app",
        ),
        (
            &["restart", "--all", "--rolling", "--batch", "0"],
            "--batch",
        ),
        (&["stop", "--all", "--timeout", "0s"], "longer than zero"),
        (
            &["restart", "--all", "--rolling", "--settle", "0s"],
            "longer than zero",
        ),
        (
            &["restart", "--all", "--rolling", "--settle", "a while"],
            "not a duration",
        ),
        (&["restart", "--all", "--settle", "5s"], "--rolling"),
        (
            &["stop-for-maintenance", "--timeout", "soon"],
            "not a duration",
        ),
        // No target: the way to say "everything" is named.
        (&["start"], "<--all|TARGET>"),
        (&["stop"], "<--all|TARGET>"),
        (&["reload"], "<--all|TARGET>"),
        (&["restart"], "<--all|TARGET|--changed>"),
        (&["--host", "@box", "status"], "--host"),
    ] {
        // A bus that does not exist: the error must come before any connection.
        let o = orch()
            .arg("--config")
            .arg(&cfg)
            .args(["--bus", "unix:path=/nonexistent"])
            .args(args)
            .output_bounded()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("connect"), "{args:?} tried to connect: {err}");
    }
}

/// Each verb's help says what `--all` means for it, and TARGET lists every
/// group a target may name.
#[test]
fn lifecycle_help_says_what_all_and_targets_mean_per_verb() {
    for (verb, all) in [
        (
            "start",
            "prerequisites are started first if they are not running",
        ),
        ("stop", "prerequisites are left running"),
        (
            "restart",
            "are not restarted, only started if they are not running",
        ),
        ("reload", "prerequisites are never reloaded"),
    ] {
        let text = help_words(verb);
        assert!(text.contains(all), "{verb} --help: {text}");
        assert!(
            text.contains("dependents / database / prerequisites; or --all"),
            "{verb} --help: {text}"
        );
        assert!(!text.contains("started if needed, never stopped"), "{text}");
    }
}

/// `orch VERB --help`, which must succeed, as its words joined by single
/// spaces: help is wrapped to the terminal, so tests compare words, not lines.
fn help_words(verb: &str) -> String {
    let o = orch().args([verb, "--help"]).output_bounded().unwrap();
    assert!(o.status.success(), "{verb} --help failed: {o:?}");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `install` and `rollback` say what their `--timeout` bounds (the stop of
/// the stale units they remove) and its default; a bad duration is a usage
/// error naming the value, before any connection.
#[test]
fn install_and_rollback_help_say_what_timeout_bounds() {
    for (verb, drops) in [
        ("install", "the configuration now drops"),
        ("rollback", "the put-back generation drops"),
    ] {
        let text = help_words(verb);
        let want = format!(
            "--timeout <DURATION> Bound on the stop of each stale unit (one orch wrote that {drops}) \
             before its file is removed; on expiry exit 3, its file kept and systemd not reloaded \
             (run again) [default: the unit's own TimeoutStopSec + 10s]"
        );
        assert!(text.contains(&want), "{verb} --help: {text}");
        let o = orch()
            .args([verb, "--timeout", "soon"])
            .output_bounded()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{verb} --timeout soon");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("'soon'") && err.contains("--timeout"), "{err}");
    }
}

/// No systemd on the bus: the error says what to check and how to reach
/// another one.
#[test]
fn no_systemd_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("orch.toml");
    std::fs::write(
        &cfg,
        "[deployment]\nname = \"app\"\n[master]\nexec_start = \"/bin/true\"\n",
    )
    .unwrap();
    let o = orch()
        .arg("--config")
        .arg(&cfg)
        .args(["--bus", "unix:path=/nonexistent/bus", "start", "--all"])
        .output_bounded()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot connect to"), "{err}");
    assert!(
        err.contains("is systemd running on this machine")
            && err.contains("--bus ADDRESS")
            && err.contains("--host [USER@]HOST"),
        "{err}"
    );
}

/// `plan --diff`: a unified diff per changed unit, from the installed file
/// to the rendered one; a new unit against /dev/null.
#[test]
fn plan_diff_shows_each_change_as_a_unified_diff() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("orch.toml");
    let units = dir.path().join("units");
    let config = |count: usize, sleep: &str| {
        std::fs::write(
            &cfg,
            format!("[deployment]\nname = \"app\"\n[master]\nexec_start = \"/bin/sleep {sleep}\"\n[[workers]]\nkind = \"w\"\ncount = {count}\nexec_start = \"/bin/true\"\n"),
        )
        .unwrap();
    };
    config(1, "100");
    let o = orch()
        .arg("--config")
        .arg(&cfg)
        .args(["render", "--out"])
        .arg(&units)
        .output_bounded()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    config(2, "200");
    let plan = |extra: &[&str]| {
        orch()
            .arg("--config")
            .arg(&cfg)
            .arg("--unit-dir")
            .arg(&units)
            .arg("plan")
            .args(extra)
            .output_bounded()
            .unwrap()
    };
    let o = plan(&["--diff"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(4), "{text}");
    let master = units.join("app.service");
    assert!(
        text.contains(&format!(
            "--- {}\n+++ {}\n",
            master.display(),
            master.display()
        )),
        "{text}"
    );
    assert!(text.contains("\n-ExecStart=/bin/sleep 100\n"), "{text}");
    assert!(text.contains("\n+ExecStart=/bin/sleep 200\n"), "{text}");
    let new = units.join("app-worker-1-w.service");
    assert!(
        text.contains(&format!("--- /dev/null\n+++ {}\n", new.display())),
        "{text}"
    );
    assert!(text.contains("@@ "), "{text}");
    // Without --diff: the plan only.
    let o = plan(&[]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("@@ "));
}

/// `scripts/package-deb` (what `.ci/run` packages with): bad options are
/// usage errors (exit 2) naming the option, a profile name cannot leave the
/// target directory, and `--no-build` with no binary names the path it
/// looked at (exit 1); none of them builds or writes anything.
#[test]
fn package_deb_refuses_bad_options_before_building_or_writing() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(root.join("scripts/package-deb"))
            .args(args)
            .env("CARGO_TARGET_DIR", target.path())
            .output_bounded()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    for (args, says) in [
        (&["--bogus"][..], "unknown option: --bogus"),
        (&["--profile"][..], "--profile needs a cargo profile name"),
        (
            &["--profile", "../../x", "--no-build"][..],
            "--profile '../../x': a cargo profile name is letters, digits, - and _",
        ),
    ] {
        let (code, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(err.contains("usage: scripts/package-deb"), "{err}");
    }
    let (code, err) = run(&["--profile", "never-built", "--no-build"]);
    let wanted = target.path().join("never-built/orch");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("no orch binary at {}", wanted.display())),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(target.path())
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "package-deb wrote {left:?}");
}

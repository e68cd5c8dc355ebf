//! Bad input: a clear error naming file, line, column and key; exit 2; and
//! nothing changed on disk (checked against a populated unit folder).

use crate::support::OutputBounded;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const GOOD: &str = r#"[deployment]
name = "app"

[master]
exec_start = "/bin/sleep infinity"

[[workers]]
kind = "generic"
count = 2
port_base = 9000
exec_start = "/bin/sleep {{ port }}"
"#;

fn orch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(args)
        .env_remove("ORCH_CONFIG")
        .env_remove("ORCH_BUS")
        .output_bounded()
        .expect("run orch")
}

/// Every file under `dir` with its bytes and modification time.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
                m.modified().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Installs GOOD into a unit folder, then runs `install` with `bad` and checks
/// the error and that the folder is byte-for-byte unchanged.
fn refused(bad: &str, line: usize, key: &str, says: &str) {
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, GOOD).unwrap();
    let o = orch(&[
        "--config",
        good.to_str().unwrap(),
        "render",
        "--out",
        units.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = snapshot(&units);

    let cfg = dir.path().join("orch.toml");
    std::fs::write(&cfg, bad).unwrap();
    // A bus that does not exist: a config error must come before any connection attempt.
    for cmd in [&["install"][..], &["plan"], &["render"]] {
        let mut args = vec![
            "--config",
            cfg.to_str().unwrap(),
            "--unit-dir",
            units.to_str().unwrap(),
            "--bus",
            "unix:path=/nonexistent",
        ];
        args.extend_from_slice(cmd);
        let o = orch(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{cmd:?} should exit 2, stderr: {err}"
        );
        let prefix = format!("{}:{line}:", cfg.display());
        assert!(
            err.contains(&prefix),
            "{cmd:?}: error should name {prefix}, got: {err}"
        );
        assert!(
            err.contains(&format!("key `{key}`")),
            "{cmd:?}: error should name key {key}, got: {err}"
        );
        assert!(
            err.contains(says),
            "{cmd:?}: error should say {says:?}, got: {err}"
        );
        assert!(
            o.stdout.is_empty(),
            "nothing printed on stdout for a refused config"
        );
    }
    assert_eq!(before, snapshot(&units), "unit folder changed");
}

#[test]
fn unknown_key() {
    refused(
        &GOOD.replace("count = 2", "count = 2\ncuont = 3"),
        10,
        "workers[0].cuont",
        "unknown key `cuont`: did you mean `count`?",
    );
    refused(
        &GOOD.replace(
            "exec_start = \"/bin/sleep infinity\"",
            "exec_strat = \"/bin/sleep infinity\"",
        ),
        5,
        "master.exec_strat",
        "unknown key `exec_strat`: did you mean `exec_start`?",
    );
    // A misspelled section is named as a section, with the closest one.
    refused(
        &GOOD.replace("[[workers]]", "[[worker]]"),
        7,
        "worker",
        "unknown section `worker`: did you mean `workers`?",
    );
}

/// A configuration without `[master]` (or `[deployment]`) is told the
/// section is missing, not that a field of `deployment` is.
#[test]
fn a_missing_section_is_named_as_a_section() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("orch.toml");
    for (text, says) in [
        (
            "[deployment]\nname = \"app\"\n",
            "missing section `[master]`",
        ),
        (
            "[master]\nexec_start = \"/bin/true\"\n",
            "missing section `[deployment]`",
        ),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let o = orch(&["--config", cfg.to_str().unwrap(), "render"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(!err.contains("missing field"), "{err}");
    }
}

#[test]
fn wrong_type() {
    refused(
        &GOOD.replace("count = 2", "count = \"two\""),
        9,
        "workers[0].count",
        "must be a whole number (such as 4), not text \"two\"",
    );
}

#[test]
fn zero_count() {
    refused(
        &GOOD.replace("count = 2", "count = 0"),
        9,
        "workers[0].count",
        "between 1 and",
    );
}

#[test]
fn negative_count() {
    refused(
        &GOOD.replace("count = 2", "count = -3"),
        9,
        "workers[0].count",
        "got -3",
    );
}

#[test]
fn unknown_naming() {
    refused(
        &GOOD.replace("name = \"app\"", "name = \"app\"\nnaming = \"perkind\""),
        3,
        "deployment.naming",
        "`perkind` is not one of: sequential, per-kind",
    );
}

#[test]
fn duplicate_kind() {
    let bad =
        format!("{GOOD}\n[[workers]]\nkind = \"generic\"\ncount = 1\nexec_start = \"/bin/true\"\n");
    refused(
        &bad,
        14,
        "workers[1].kind",
        "duplicate worker kind `generic` (first defined at line 8)",
    );
}

#[test]
fn invalid_unit_name() {
    refused(
        &GOOD.replace("name = \"app\"", "name = \"app/../../etc\""),
        2,
        "deployment.name",
        "not a valid deployment name",
    );
    refused(
        &GOOD.replace("kind = \"generic\"", "kind = \"gen eric\""),
        8,
        "workers[0].kind",
        "not a valid worker kind",
    );
    let dep = format!("{GOOD}\n[[dependents]]\nunit = \"bridge;rm.service\"\n");
    refused(&dep, 14, "dependents[0].unit", "not a valid unit name");
}

#[test]
fn newline_in_exec_start() {
    let bad = GOOD.replace(
        r#""/bin/sleep infinity""#,
        r#""/bin/sleep 1\nExecStartPre=/bin/rm -rf /""#,
    );
    refused(&bad, 5, "master.exec_start", "control character");
}

#[test]
fn newline_injected_through_expansion() {
    // A value that only becomes dangerous once expanded is refused too.
    let bad = GOOD.replace(
        "exec_start = \"/bin/sleep {{ port }}\"",
        "exec_start = \"/bin/sleep {{ '\\n[Service]' }}\"",
    );
    refused(&bad, 11, "workers[0].exec_start", "control character");
}

#[test]
fn undefined_variable_in_value() {
    refused(
        &GOOD.replace("{{ port }}", "{{ prot }}"),
        11,
        "workers[0].exec_start",
        "undefined variable",
    );
}

#[test]
fn bad_duration_and_probe() {
    refused(
        &GOOD.replace("count = 2", "count = 2\nstop_timeout = \"soon\""),
        10,
        "workers[0].stop_timeout",
        "not a duration",
    );
    refused(
        &GOOD.replace("count = 2", "count = 2\nhealth = \"ftp://x\""),
        10,
        "workers[0].health",
        "unknown probe scheme",
    );
}

#[test]
fn unreadable_missing_directory_and_non_utf8_configs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let missing = dir.path().join("missing.toml");
    let o = orch(&["--config", missing.to_str().unwrap(), "plan"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.toml: cannot read"));

    let o = orch(&["--config", dir.path().to_str().unwrap(), "plan"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a directory"));

    // A FIFO would block a read forever: refused at once.
    let fifo = dir.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let o = orch(&["--config", fifo.to_str().unwrap(), "plan"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a regular file"));

    let latin1 = dir.path().join("latin1.toml");
    std::fs::write(&latin1, b"[deployment]\nname = \"caf\xe9\"\n").unwrap();
    let o = orch(&["--config", latin1.to_str().unwrap(), "plan"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not valid UTF-8"));

    let secret = dir.path().join("secret.toml");
    std::fs::write(&secret, GOOD).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    // root reads any file, so read it as an unprivileged user when we are root.
    let o = if nix::unistd::Uid::effective().is_root() {
        let bin = dir.path().join("orch");
        std::fs::copy(env!("CARGO_BIN_EXE_orch"), &bin).unwrap();
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin)
            .args(["--config", secret.to_str().unwrap(), "plan"])
            .output_bounded()
            .expect("setpriv (util-linux)")
    } else {
        orch(&["--config", secret.to_str().unwrap(), "plan"])
    };
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("secret.toml: cannot read") && err.contains("ermission denied"),
        "{err}"
    );
}

#[test]
fn no_config_found_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_orch"))
        .arg("plan")
        .current_dir(dir.path())
        .env_remove("ORCH_CONFIG")
        .output_bounded()
        .unwrap();
    if Path::new("/etc/orch/orch.toml").exists() {
        return; // the machine has a real configuration; the fallback is then correct
    }
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--config"));
}

/// Installs GOOD with one template override `name` = `body`; returns stderr
/// after checking exit 2 and that nothing was written.
fn template_refused(name: &str, body: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    std::fs::write(dir.path().join("templates").join(name), body).unwrap();
    let cfg = dir.path().join("orch.toml");
    let text = GOOD.replace(
        "name = \"app\"",
        "name = \"app\"\ntemplates = \"templates\"",
    );
    std::fs::write(&cfg, text).unwrap();
    let units = dir.path().join("units");
    std::fs::create_dir(&units).unwrap();
    let (c, u) = (cfg.to_str().unwrap(), units.to_str().unwrap());
    let o = orch(&[
        "--config",
        c,
        "--unit-dir",
        u,
        "--bus",
        "unix:path=/nonexistent",
        "install",
    ]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(
        std::fs::read_dir(&units).unwrap().count(),
        0,
        "nothing written: {err}"
    );
    err
}

#[test]
fn template_with_undefined_variable_names_template_and_line() {
    let err = template_refused(
        "worker.service.j2",
        "[Unit]\nDescription={{ nonsense }}\n[Service]\nExecStart=/bin/true\n",
    );
    assert!(
        err.contains("templates/worker.service.j2:2") && err.contains("undefined"),
        "{err}"
    );
}

#[test]
fn template_that_renders_an_invalid_unit_is_refused() {
    let err = template_refused(
        "master.service.j2",
        "[Unit]\nthis is not a directive\n[Service]\nExecStart=/bin/true\n",
    );
    assert!(
        err.contains("app.service") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn malformed_template_is_refused_with_its_name_and_line() {
    let err = template_refused(
        "worker-generic.service.j2",
        "[Unit]\nDescription=x\n{% if %}\n[Service]\nExecStart=/bin/true\n",
    );
    assert!(
        err.contains("templates/worker-generic.service.j2:3"),
        "{err}"
    );
}

#[test]
fn host_errors() {
    let hosts = |blocks: &str| format!("{GOOD}\n{blocks}");
    refused(
        &GOOD.replace("count = 2", "count = 2\nhost = \"w9\""),
        10,
        "workers[0].host",
        "`w9` is not a host; define it in a [[hosts]] block",
    );
    refused(
        &hosts("[[hosts]]\nname = \"a\"\naddress = \"x@h1\"\n[[hosts]]\nname = \"a\"\naddress = \"h2\"\n"),
        17,
        "hosts[1].name",
        "defined twice",
    );
    refused(
        &hosts("[[hosts]]\nname = \"local\"\naddress = \"h\"\n"),
        14,
        "hosts[0].name",
        "`local` is the name of the machine orch runs on",
    );
    // An address ssh would read as an option never reaches ssh.
    refused(
        &hosts("[[hosts]]\nname = \"a\"\naddress = \"-oProxyCommand=evil\"\n"),
        15,
        "hosts[0].address",
        "is not a host name or address",
    );
    refused(
        &hosts("[[hosts]]\nname = \"a\"\naddress = \"admin@a\\nevil\"\n"),
        15,
        "hosts[0].address",
        "control character",
    );
}

#[test]
fn a_loopback_probe_is_accepted_when_host_moves_everything_elsewhere() {
    // Probes of a remote unit run from its host (through SSH), so a probe
    // of 127.0.0.1 means that host's loopback, as it does locally.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("orch.toml");
    std::fs::write(
        &cfg,
        GOOD.replace(
            "exec_start = \"/bin/sleep infinity\"",
            "exec_start = \"/bin/sleep infinity\"\nhealth = \"http://127.0.0.1:8008/health\"",
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let o = orch(&[
        "--config",
        c,
        "--host",
        "admin@synapse1.example.org",
        "render",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

// Issue 13: extreme values are refused at validation, naming file, line and key.

#[test]
fn huge_duration_is_refused_not_a_panic() {
    refused(
        &GOOD.replace("count = 2", "count = 2\nstart_timeout = \"292277024626y\""),
        10,
        "workers[0].start_timeout",
        "at most 24h",
    );
    refused(
        &GOOD.replace("count = 2", "count = 2\nrestart_sec = \"25h\""),
        10,
        "workers[0].restart_sec",
        "at most 24h",
    );
}

#[test]
fn huge_duration_flag_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("orch.toml");
    std::fs::write(&cfg, GOOD).unwrap();
    let c = cfg.to_str().unwrap();
    let bus = "unix:path=/nonexistent";
    for args in [
        &["start", "--all", "--timeout", "292277024626y"][..],
        &["stop-for-maintenance", "--timeout", "25h"],
        &["--call-timeout", "292277024626y", "status"],
    ] {
        let mut all = vec!["--config", c, "--bus", bus];
        all.extend_from_slice(args);
        let o = orch(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("at most 24h"), "{args:?}: {err}");
    }
}

#[test]
fn sub_millisecond_duration_is_refused_never_rendered_as_zero() {
    refused(
        &GOOD.replace("count = 2", "count = 2\nstart_timeout = \"1ns\""),
        10,
        "workers[0].start_timeout",
        "shorter than 1ms",
    );
    refused(
        &GOOD.replace("count = 2", "count = 2\nstop_timeout = \"999us\""),
        10,
        "workers[0].stop_timeout",
        "shorter than 1ms",
    );
}

#[test]
fn a_fractional_millisecond_is_rounded_up_not_down() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("orch.toml");
    let text = GOOD.replace("count = 2", "count = 2\nstart_timeout = \"1ms 500us\"");
    std::fs::write(&cfg, text).unwrap();
    let out = dir.path().join("units");
    let o = orch(&[
        "--config",
        cfg.to_str().unwrap(),
        "render",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let unit = std::fs::read_to_string(out.join("app-worker-0-generic.service")).unwrap();
    assert!(unit.contains("TimeoutStartSec=2ms\n"), "{unit}");
}

#[test]
fn unit_name_too_long_for_systemd_or_for_orchs_temp_names() {
    // 378 characters: over systemd's 255.
    let long = |n: usize| "a".repeat(n);
    let bad = GOOD
        .replace("name = \"app\"", &format!("name = \"{}\"", long(180)))
        .replace("kind = \"generic\"", &format!("kind = \"{}\"", long(180)));
    refused(&bad, 8, "workers[0].kind", "255");
    // 240 characters: within 255, but `.orch-mask-PID-` makes the temp name longer.
    let bad = GOOD
        .replace("name = \"app\"", &format!("name = \"{}\"", long(110)))
        .replace("kind = \"generic\"", &format!("kind = \"{}\"", long(112)));
    refused(&bad, 8, "workers[0].kind", "characters");
    // A dependent orch masks during maintenance is bounded the same way.
    let dep = format!("{GOOD}\n[[dependents]]\nunit = \"{}.service\"\n", long(240));
    refused(&dep, 14, "dependents[0].unit", "characters");
}

#[test]
fn value_longer_than_the_bound_is_refused() {
    let big = format!("/bin/echo {}", "x".repeat(70 * 1024));
    refused(
        &GOOD.replace("/bin/sleep infinity", &big),
        5,
        "master.exec_start",
        "longer than 65536 bytes",
    );
}

#[test]
fn malformed_probe_urls_are_refused() {
    for url in [
        "http://h:80:90/",
        "http://user@127.0.0.1:8/x",
        "http://127.0.0.1 :8/p q",
        "http://127.0.0.1:8/p q",
        "http://127.0.0.1:8/p#f",
    ] {
        let bad = GOOD.replace(
            "exec_start = \"/bin/sleep infinity\"",
            &format!("exec_start = \"/bin/sleep infinity\"\nhealth = \"{url}\""),
        );
        refused(&bad, 6, "master.health", url);
    }
}

#[test]
fn a_template_that_writes_more_than_the_bound_is_refused() {
    // 2,000 lines of 1,000 bytes: 2 MB, each line a valid X- directive.
    let err = template_refused(
        "master.service.j2",
        "[Unit]\n{% for i in range(2000) %}X-Pad{{ i }}={{ 'x' * 1000 }}\n{% endfor %}[Service]\nExecStart=/bin/true\n",
    );
    assert!(err.contains("larger than 1048576 bytes"), "{err}");
}

#[test]
fn a_template_that_loops_too_long_runs_out_of_fuel() {
    let err = template_refused(
        "worker.service.j2",
        "[Unit]\n{% for i in range(3000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}[Service]\nExecStart=/bin/true\n",
    );
    assert!(
        err.contains("templates/worker.service.j2") && err.contains("fuel"),
        "{err}"
    );
}

#[test]
fn a_loop_inside_a_config_value_is_bounded() {
    refused(
        &GOOD.replace(
            "\"/bin/sleep infinity\"",
            "\"{% for i in range(100000) %}{% endfor %}/bin/sleep infinity\"",
        ),
        5,
        "master.exec_start",
        "fuel",
    );
}

// Issue 13 item 14: each error names file, line and key in an operator's words.

#[test]
fn a_wrong_type_inside_an_inline_table_names_its_key() {
    refused(
        &GOOD.replace(
            "exec_start = \"/bin/sleep infinity\"",
            "exec_start = \"/bin/sleep infinity\"\nenvironment = { A = 1 }",
        ),
        6,
        "master.environment.A",
        "must be text in quotes, not the number 1",
    );
}

#[test]
fn a_missing_field_and_a_wrong_table_kind_name_the_table() {
    refused(
        &GOOD.replace("name = \"app\"\n", ""),
        1,
        "deployment",
        "missing key `name` in this section",
    );
    refused(
        &GOOD.replace("[master]", "[[master]]"),
        4,
        "master",
        "`[[master]]` declares a list; a deployment has one master: write `[master]`",
    );
    refused(
        &GOOD.replace("[[workers]]", "[workers]"),
        7,
        "workers",
        "`[workers]` declares one table; write `[[workers]]`, one block each",
    );
}

#[test]
fn a_worker_kind_error_does_not_offer_the_dot_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("orch.toml");
    std::fs::write(
        &cfg,
        GOOD.replace("kind = \"generic\"", "kind = \"gen.eric\""),
    )
    .unwrap();
    let o = orch(&["--config", cfg.to_str().unwrap(), "render"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("key `workers[0].kind`"), "{err}");
    assert!(!err.contains("`.`"), "offers `.`: {err}");
}

#[test]
fn host_flag_errors_name_the_whole_address() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("orch.toml");
    std::fs::write(&cfg, GOOD).unwrap();
    let c = cfg.to_str().unwrap();
    for (host, says) in [
        ("host:22:33", "in brackets"),
        ("[::1]:2222x", "`2222x` is not a port"),
        ("[::1]x", "`[::1]x`"),
    ] {
        let o = orch(&["--config", c, "--host", host, "status"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{host}: {err}");
        assert!(err.contains(says), "{host}: {err}");
    }
}

#[test]
fn invalid_utf8_is_located_by_line_and_a_relative_unit_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let latin1 = dir.path().join("latin1.toml");
    std::fs::write(&latin1, b"[deployment]\nname = \"caf\xe9\"\n").unwrap();
    let o = orch(&["--config", latin1.to_str().unwrap(), "plan"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("latin1.toml:2:12: not valid UTF-8"), "{err}");

    let cfg = dir.path().join("orch.toml");
    std::fs::write(&cfg, GOOD).unwrap();
    let o = orch(&[
        "--config",
        cfg.to_str().unwrap(),
        "--unit-dir",
        "rel",
        "render",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    // The flag is to blame, not the configuration file.
    assert!(
        err.contains("invalid value 'rel' for '--unit-dir <DIR>'") && err.contains("is relative"),
        "{err}"
    );
    assert!(!err.contains("orch.toml"), "{err}");
}

#[test]
fn prerequisite_without_a_unit() {
    refused(
        &format!("{GOOD}[[prerequisites]]\nhealth = \"tcp://127.0.0.1:6379\"\n"),
        12,
        "prerequisites",
        "missing key `unit` in this section",
    );
}

#[test]
fn prerequisite_that_orch_generates() {
    refused(
        &format!("{GOOD}[[prerequisites]]\nunit = \"app-worker-1-generic\"\n"),
        13,
        "prerequisites[0].unit",
        "a unit orch generates",
    );
}

#[test]
fn prerequisite_with_a_bad_requires() {
    refused(
        &format!("{GOOD}[[prerequisites]]\nunit = \"redis\"\nrequires = \"yes\"\n"),
        14,
        "prerequisites[0].requires",
        "must be true or false, not text \"yes\"",
    );
}

/// Named, the templates folder must be there: a missing one used to render
/// the built-in templates without a word.
#[test]
fn templates_folder_that_does_not_exist() {
    refused(
        &GOOD.replace("name = \"app\"", "name = \"app\"\ntemplates = \"nope\""),
        3,
        "deployment.templates",
        "does not exist; create it, or remove the key",
    );
}

#[test]
fn probe_from_takes_host_or_local_and_never_an_exec_probe() {
    let with = |health: &str, from: &str| {
        GOOD.replace(
            "exec_start = \"/bin/sleep {{ port }}\"",
            &format!(
                "exec_start = \"/bin/sleep {{{{ port }}}}\"\nhealth = \"{health}\"\nprobe_from = \"{from}\""
            ),
        )
    };
    refused(
        &with("http://127.0.0.1:{{ port }}/health", "elsewhere"),
        13,
        "workers[0].probe_from",
        "`elsewhere` is not a place to probe from",
    );
    refused(
        &with("exec:true", "local"),
        13,
        "workers[0].probe_from",
        "an exec: probe always runs on the unit's host",
    );
}

#[test]
fn resource_values_that_systemd_would_not_take() {
    let master = |extra: &str| {
        GOOD.replace(
            "exec_start = \"/bin/sleep infinity\"",
            &format!("exec_start = \"/bin/sleep infinity\"\n{extra}"),
        )
    };
    let worker = |extra: &str| GOOD.replace("count = 2", &format!("count = 2\n{extra}"));
    refused(
        &master("memory_max = \"lots\""),
        6,
        "master.memory_max",
        "is not a size",
    );
    refused(
        &master("memory_max = \"512m\""),
        6,
        "master.memory_max",
        "capitals",
    );
    refused(
        &master("memory_max = \"1G\"\nmemory_high = \"2G\""),
        7,
        "master.memory_high",
        "above memory_max 1G",
    );
    refused(
        &worker("memory_high = \"120%\""),
        10,
        "workers[0].memory_high",
        "between 1% and 100%",
    );
    refused(
        &worker("cpu_quota = \"150\""),
        10,
        "workers[0].cpu_quota",
        "such as \"150%\"",
    );
    refused(
        &worker("cpu_weight = 0"),
        10,
        "workers[0].cpu_weight",
        "between 1 and 10000",
    );
    refused(
        &worker("cpu_weight = true"),
        10,
        "workers[0].cpu_weight",
        "must be",
    );
    refused(
        &worker("tasks_max = \"many\""),
        10,
        "workers[0].tasks_max",
        "number of tasks",
    );
}

#[test]
fn a_deployment_name_that_cannot_name_its_slice() {
    refused(
        &GOOD.replace("name = \"app\"", "name = \"app--x\""),
        2,
        "deployment.name",
        "empty level",
    );
}

#[test]
fn the_deployment_s_own_slice_is_not_a_prerequisite() {
    let bad = format!("{GOOD}\n[[prerequisites]]\nunit = \"app.slice\"\n");
    refused(
        &bad,
        14,
        "prerequisites[0].unit",
        "the deployment's own slice",
    );
}

#[test]
fn a_worker_name_is_not_a_dependent() {
    let bad = format!("{GOOD}\n[[dependents]]\nunit = \"app-worker-7-generic\"\n");
    refused(&bad, 14, "dependents[0].unit", "a unit orch generates");
}

#[test]
fn a_template_without_instance_is_not_a_dependent() {
    let bad = format!("{GOOD}\n[[dependents]]\nunit = \"bridge@.service\"\n");
    refused(
        &bad,
        14,
        "dependents[0].unit",
        "template without an instance",
    );
}

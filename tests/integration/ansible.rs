//! The Ansible collection (ansible/, module orch.systemd.orch) and the
//! playbook docs/ansible/orch.yml, run for real: `ansible-playbook` on this
//! machine (`ansible_connection=local`), orch pointed at a harness
//! container's bus and unit folder. Fails (never skips) when Ansible is
//! missing, so CI cannot pass without running it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;
use crate::support::{Container, OutputBounded};

/// Bound on one `ansible-playbook` or `ansible-doc` run.
const ANSIBLE_BOUND: Duration = Duration::from_secs(120);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn playbook() -> PathBuf {
    root().join("docs/ansible/orch.yml")
}

/// A folder for Ansible: the collection linked as
/// ansible_collections/orch/systemd, an inventory of localhost, a home.
struct Ansible {
    dir: tempfile::TempDir,
}

impl Ansible {
    fn new() -> Ansible {
        let dir = tempfile::tempdir().unwrap();
        let ns = dir.path().join("collections/ansible_collections/orch");
        std::fs::create_dir_all(&ns).unwrap();
        std::os::unix::fs::symlink(root().join("ansible"), ns.join("systemd")).unwrap();
        std::fs::write(
            dir.path().join("inventory"),
            "localhost ansible_connection=local ansible_python_interpreter=\"{{ ansible_playbook_python }}\"\n",
        )
        .unwrap();
        Ansible { dir }
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env(
            "ANSIBLE_COLLECTIONS_PATH",
            self.dir.path().join("collections"),
        )
        .env("ANSIBLE_HOME", self.dir.path().join("home"))
        .env("ANSIBLE_LOCAL_TEMP", self.dir.path().join("tmp"))
        .env("ANSIBLE_NOCOWS", "1")
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .env_remove("ORCH_CONFIG")
        .env_remove("ORCH_BUS")
        .current_dir(root());
        cmd
    }

    /// `ansible-playbook -i inventory PLAYBOOK -e @vars ARGS…`, bounded.
    fn playbook(&self, book: &Path, vars: &serde_json::Value, args: &[&str]) -> Run {
        let file = self.dir.path().join("vars.json");
        std::fs::write(&file, vars.to_string()).unwrap();
        let mut cmd = self.command("ansible-playbook");
        cmd.arg("-i")
            .arg(self.dir.path().join("inventory"))
            .arg(book)
            .arg("-e")
            .arg(format!("@{}", file.display()))
            .args(args);
        Run::new(run(&mut cmd), args)
    }
}

fn run(cmd: &mut Command) -> Output {
    match cmd.output_within(ANSIBLE_BOUND) {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{:?} not found on PATH: install Ansible with `python3 -m pip install ansible-core`",
            cmd.get_program()
        ),
        Err(e) => panic!("cannot run {:?}: {e}", cmd.get_program()),
    }
}

/// One playbook run: its output and the PLAY RECAP's counters.
struct Run {
    ok: bool,
    text: String,
    changed: u32,
    failed: u32,
}

impl Run {
    fn new(out: Output, args: &[&str]) -> Run {
        let text = format!(
            "ansible-playbook {args:?} ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let recap = text
            .lines()
            .rev()
            .find(|l| l.starts_with("localhost") && l.contains("changed="))
            .unwrap_or_else(|| panic!("no PLAY RECAP line: {text}"))
            .to_string();
        let count = |key: &str| -> u32 {
            recap
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {recap}"))
        };
        Run {
            ok: out.status.success(),
            changed: count("changed="),
            failed: count("failed="),
            text,
        }
    }
}

const FIXTURE: &str = "/usr/bin/python3 /opt/fixtures/worker.py --name {{ name }}";

/// A deployment of a master and two workers on `port`, `port + 10`, `+ 11`.
fn config(name: &str, port: u16, master_args: &str, worker_args: &str) -> String {
    format!(
        r#"[deployment]
name = "{name}"
state_dir = "@STATE@"
runtime_dir = "@MASKS@"
[master]
exec_start = "{FIXTURE} --port {{{{ port }}}} {master_args}"
port = {port}
health = "http://127.0.0.1:{{{{ port }}}}/health"
stop_timeout = "5s"
[[workers]]
kind = "generic"
count = 2
port_base = {workers}
exec_start = "{FIXTURE} --port {{{{ port }}}} {worker_args}"
health = "http://127.0.0.1:{{{{ port }}}}/health"
stop_timeout = "5s"
"#,
        workers = port + 10
    )
}

/// A container with the fixtures and a runtime mask folder, the
/// configuration the playbook copies, and the playbook's variables.
struct Setup {
    c: Container,
    ansible: Ansible,
    /// The playbook's `orch_config_src`.
    src: PathBuf,
    /// Where the playbook installs it (`orch_config`).
    cfg: PathBuf,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(config: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let masks = dir.path().join("masks");
        std::fs::create_dir(&masks).unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        // For the fixtures' `--log /opt/log/events.log` (see `events`).
        std::fs::create_dir(dir.path().join("log")).unwrap();
        let c = Container::builder()
            .bind_ro(root().join("tests/fixtures"), "/opt/fixtures")
            .bind(&masks, "/run/systemd/system.control")
            .bind(dir.path().join("log"), "/opt/log")
            .boot();
        let src = dir.path().join("orch.toml");
        // Ports: `@P0@` tokens, filled from the test's lease (crate::ports).
        let text = crate::ports::fill(config)
            .replace("@STATE@", &dir.path().join("state").display().to_string())
            .replace("@MASKS@", &masks.display().to_string());
        std::fs::write(&src, text).unwrap();
        Setup {
            cfg: dir.path().join("etc/orch.toml"),
            src,
            c,
            ansible: Ansible::new(),
            dir,
        }
    }

    fn vars(&self) -> serde_json::Value {
        serde_json::json!({
            "orch_hosts": "localhost",
            "orch_become": false,
            "orch_bin": env!("CARGO_BIN_EXE_orch"),
            "orch_config_src": self.src,
            "orch_config": self.cfg,
            "orch_extra_args": [
                "--bus", self.c.bus_address(),
                "--unit-dir", self.c.unit_dir(),
            ],
        })
    }

    fn play(&self, vars: serde_json::Value, args: &[&str]) -> Run {
        let mut all = self.vars();
        for (k, v) in vars.as_object().unwrap() {
            all[k] = v.clone();
        }
        self.ansible.playbook(&playbook(), &all, args)
    }

    /// Runs one play of `tasks` (YAML, indented for `tasks:`) on localhost,
    /// the module's options for orch preset (`module_defaults`).
    fn tasks(&self, tasks: &str, args: &[&str]) -> Run {
        std::fs::copy(&self.src, &self.cfg).unwrap();
        let book = self.dir.path().join("tasks.yml");
        std::fs::write(
            &book,
            format!(
                "- hosts: localhost\n  gather_facts: false\n  module_defaults:\n    \
                 orch.systemd.orch:\n      binary: \"{{{{ orch_bin }}}}\"\n      \
                 config: \"{{{{ orch_config }}}}\"\n      \
                 extra_args: \"{{{{ orch_extra_args }}}}\"\n  tasks:\n{tasks}"
            ),
        )
        .unwrap();
        self.ansible.playbook(&book, &self.vars(), args)
    }

    /// unit -> ActiveState, and the maintenance record, from `orch status`.
    fn status(&self) -> (Vec<(String, String)>, serde_json::Value) {
        let v = json(&orch(&self.c, &self.cfg, &["status", "--output", "json"]));
        let units = v["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["unit"].as_str().unwrap().to_string(),
                    u["active_state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (units, v["maintenance"].clone())
    }

    fn assert_all(&self, state: &str, why: &str) {
        let (units, _) = self.status();
        assert_eq!(units.len(), 3, "{units:?}");
        assert!(
            units.iter().all(|(_, s)| s == state),
            "{why}: not every unit {state}: {units:?}"
        );
    }

    /// How many times each fixture logged `event` (`start`, `hup`) to
    /// /opt/log/events.log, once at least `want` were logged in all or
    /// after 5 s: a SIGHUP handler may run just after the reload job ended.
    fn events(&self, event: &str, want: usize) -> std::collections::BTreeMap<String, usize> {
        let log = self.dir.path().join("log/events.log");
        let end = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut n = std::collections::BTreeMap::new();
            for l in std::fs::read_to_string(&log).unwrap_or_default().lines() {
                let mut p = l.split_whitespace();
                if p.next() == Some(event) {
                    *n.entry(p.next().unwrap_or("").to_string()).or_default() += 1;
                }
            }
            if n.values().sum::<usize>() >= want || std::time::Instant::now() > end {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every file of the unit folder, with its content.
    fn unit_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(self.c.unit_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect();
        files.sort();
        files
    }
}

#[test]
fn playbook_passes_syntax_check() {
    let a = Ansible::new();
    let out = run(a
        .command("ansible-playbook")
        .arg("--syntax-check")
        .arg(playbook())
        .args(["-i", "localhost,"]));
    assert!(
        out.status.success(),
        "ansible-playbook --syntax-check failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `ansible-test sanity` would check first: the module compiles and
/// its DOCUMENTATION, EXAMPLES and RETURN parse (ansible-doc).
#[test]
fn module_compiles_and_documents_itself() {
    let module = root().join("ansible/plugins/modules/orch.py");
    let out = run(Command::new("python3")
        .args(["-m", "py_compile"])
        .arg(&module)
        .env("PYTHONPYCACHEPREFIX", tempfile::tempdir().unwrap().path()));
    assert!(
        out.status.success(),
        "py_compile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = Ansible::new();
    let out = run(a
        .command("ansible-doc")
        .args(["--json", "orch.systemd.orch"]));
    assert!(
        out.status.success(),
        "ansible-doc failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ansible-doc JSON");
    let m = &doc["orch.systemd.orch"];
    let states = &m["doc"]["options"]["state"]["choices"];
    for s in [
        "installed",
        "started",
        "restarted",
        "reloaded",
        "stopped",
        "maintenance",
        "resumed",
    ] {
        assert!(
            states.as_array().unwrap().iter().any(|c| c == s),
            "state {s} not documented: {states}"
        );
    }
    assert!(m["examples"]
        .as_str()
        .unwrap()
        .contains("orch.systemd.orch"));
    assert!(m["return"]["failed_units"].is_object(), "{}", m["return"]);
}

/// Deploy, idempotence, --check, --diff, then the database-upgrade flow
/// (maintenance → a task → resumed) and its rescue, all through
/// docs/ansible/orch.yml.
#[test]
fn playbook_deploys_idempotently_checks_diffs_and_maintains() {
    let _ports = crate::ports::lease_groups(1);
    let s = Setup::new(&config(
        "ans",
        crate::ports::at(0, 0),
        "--ready-after 0.2",
        "",
    ));

    let first = s.play(serde_json::json!({}), &[]);
    assert!(first.ok && first.failed == 0, "{}", first.text);
    assert!(
        first.changed > 0,
        "first run changed nothing: {}",
        first.text
    );
    s.assert_all("active", "after the first run");

    let second = s.play(serde_json::json!({}), &[]);
    assert!(second.ok, "{}", second.text);
    assert_eq!(
        second.changed, 0,
        "second run not idempotent: {}",
        second.text
    );

    // A config edit: --check reports it and writes nothing.
    let before = s.unit_files();
    let installed_cfg = std::fs::read(&s.cfg).unwrap();
    let edited = std::fs::read_to_string(&s.src)
        .unwrap()
        .replace("--ready-after 0.2", "--ready-after 0.3");
    std::fs::write(&s.src, edited).unwrap();
    let check = s.play(serde_json::json!({}), &["--check"]);
    assert!(check.ok, "{}", check.text);
    assert!(check.changed > 0, "--check saw no change: {}", check.text);
    assert!(
        check.text.contains("changed: [localhost]") && check.text.contains("Install units"),
        "{}",
        check.text
    );
    assert_eq!(s.unit_files(), before, "--check wrote unit files");
    assert_eq!(
        std::fs::read(&s.cfg).unwrap(),
        installed_cfg,
        "--check wrote the config"
    );
    assert!(
        !s.cfg.with_extension("toml.check").exists(),
        "staged configuration left behind"
    );
    let plan = orch(&s.c, &s.cfg, &["plan"]);
    assert_eq!(plan.status.code(), Some(0), "--check changed the plan");

    // --diff applies it and shows the unit file's edited line.
    let diff = s.play(serde_json::json!({}), &["--diff"]);
    assert!(diff.ok && diff.changed > 0, "{}", diff.text);
    let line = format!(
        "ExecStart=/usr/bin/python3 /opt/fixtures/worker.py --name ans --port {} --ready-after 0.3",
        crate::ports::at(0, 0)
    );
    assert!(
        diff.text.lines().any(|l| l == format!("+{line}")),
        "--diff does not show +{line}: {}",
        diff.text
    );
    assert!(
        diff.text
            .lines()
            .any(|l| l == format!("-{}", line.replace("0.3", "0.2"))),
        "{}",
        diff.text
    );
    let unit = std::fs::read_to_string(s.c.unit_dir().join("ans.service")).unwrap();
    assert!(unit.contains(&line), "{unit}");
    s.assert_all("active", "after the --diff run (restart handler)");

    // The database upgrade: the "upgrade" task records what orch status
    // says while it runs.
    let during = s.dir.path().join("during.json");
    let status_cmd = format!(
        "sh -c '{} --config {} --bus {} --unit-dir {} status --output json > {}'",
        env!("CARGO_BIN_EXE_orch"),
        s.cfg.display(),
        s.c.bus_address(),
        s.c.unit_dir().display(),
        during.display()
    );
    let upgrade = s.play(
        serde_json::json!({"pg_old": 15, "pg_new": 16, "pg_upgrade_command": status_cmd}),
        &["--tags", "upgrade-db"],
    );
    assert!(upgrade.ok, "{}", upgrade.text);
    assert_eq!(
        upgrade.changed, 3,
        "maintenance, task, resume: {}",
        upgrade.text
    );
    let seen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&during).expect("the task ran")).unwrap();
    assert_eq!(
        seen["maintenance"]["reason"], "postgres 15 -> 16",
        "not in maintenance during the task: {seen}"
    );
    for u in seen["units"].as_array().unwrap() {
        assert_ne!(u["active_state"], "active", "running during the task: {u}");
    }
    s.assert_all("active", "after resume");
    assert!(s.status().1.is_null(), "still in maintenance after resume");

    // A failing upgrade: the rescue fails the play, saying so, and leaves
    // the deployment in maintenance.
    let failed = s.play(
        serde_json::json!({"pg_old": 15, "pg_new": 16, "pg_upgrade_command": "false"}),
        &["--tags", "upgrade-db"],
    );
    assert!(!failed.ok && failed.failed == 1, "{}", failed.text);
    assert!(
        failed.text.contains("'Upgrade the cluster' failed")
            && failed.text.contains("still in maintenance"),
        "{}",
        failed.text
    );
    let (units, maintenance) = s.status();
    assert!(!maintenance.is_null(), "resumed after a failed upgrade");
    assert!(units.iter().all(|(_, st)| st != "active"), "{units:?}");
}

/// A unit that cannot start fails the task, naming it.
#[test]
fn failing_unit_fails_the_task_with_its_name() {
    let _ports = crate::ports::lease_groups(1);
    let s = Setup::new(&config(
        "ansfail",
        crate::ports::at(0, 0),
        "",
        "--fail-if-exists /opt/fixtures/worker.py",
    ));
    let r = s.play(serde_json::json!({}), &[]);
    assert!(!r.ok && r.failed == 1, "{}", r.text);
    let task = r
        .text
        .split("TASK [")
        .find(|t| t.starts_with("Start every unit"))
        .unwrap_or_else(|| panic!("no start task: {}", r.text));
    assert!(task.contains("fatal: [localhost]"), "{task}");
    assert!(task.contains("orch start failed"), "{task}");
    assert!(
        task.contains("ansfail-worker-0-generic.service"),
        "the failed unit is not named: {task}"
    );
}

/// The lifecycle states on their own: changed only when a unit changes
/// state, check mode acting on nothing, a rolling restart, and resume
/// outside maintenance.
#[test]
fn module_lifecycle_states_report_changes_truthfully() {
    let _ports = crate::ports::lease_groups(1);
    let s = Setup::new(&config("anslc", crate::ports::at(0, 0), "", ""));
    let up = s.tasks(
        "    - orch.systemd.orch: {state: installed}\n    - orch.systemd.orch: {state: started}\n",
        &[],
    );
    assert!(up.ok && up.changed == 2, "{}", up.text);
    s.assert_all("active", "after started");

    let again = s.tasks(
        "    - orch.systemd.orch: {state: started}\n    - orch.systemd.orch: {state: resumed}\n",
        &[],
    );
    assert!(again.ok && again.changed == 0, "{}", again.text);

    // Check mode: stopping would change something, and nothing is stopped.
    let check = s.tasks("    - orch.systemd.orch: {state: stopped}\n", &["--check"]);
    assert!(check.ok && check.changed == 1, "{}", check.text);
    s.assert_all("active", "after stopped in check mode");

    let workers = s.tasks(
        "    - orch.systemd.orch: {state: stopped, targets: [workers]}\n    \
         - orch.systemd.orch: {state: stopped, targets: [workers]}\n",
        &[],
    );
    assert!(workers.ok && workers.changed == 1, "{}", workers.text);
    let (units, _) = s.status();
    for (unit, state) in &units {
        let want = if unit == "anslc.service" {
            "active"
        } else {
            "inactive"
        };
        assert_eq!(state, want, "{unit}: {units:?}");
    }

    let rolling = s.tasks(
        "    - orch.systemd.orch: {state: started, targets: [generic]}\n    \
         - orch.systemd.orch: {state: restarted, rolling: true, batch: 2}\n      \
         register: r\n    \
         - ansible.builtin.assert:\n        \
         that: [\"r.units | map(attribute='phase') | unique == ['ready']\", \"r.units | length == 3\"]\n",
        &[],
    );
    assert!(rolling.ok && rolling.changed == 2, "{}", rolling.text);
    s.assert_all("active", "after the rolling restart");
    // `settle` reaches orch (which refuses zero), and only with rolling.
    for (task, says) in [
        (
            "{state: restarted, rolling: true, settle: 0s}",
            "longer than zero",
        ),
        (
            "{state: restarted, settle: 5s}",
            "settle is for state=restarted with rolling=true",
        ),
    ] {
        let r = s.tasks(&format!("    - orch.systemd.orch: {task}\n"), &[]);
        assert!(!r.ok && r.text.contains(says), "{task}: {}", r.text);
    }
}

/// Master, two `generic` workers and one `federation` worker, each logging
/// its start and every SIGHUP, each reloadable with SIGHUP.
fn reloadable(generic_args: &str) -> String {
    let exec = format!("{FIXTURE} --log /opt/log/events.log --port {{{{ port }}}}");
    let hup = r#"exec_reload = "/bin/kill -HUP $MAINPID""#;
    format!(
        r#"[deployment]
name = "ansrl"
state_dir = "@STATE@"
runtime_dir = "@MASKS@"
[master]
exec_start = "{exec}"
{hup}
port = @P0@
health = "http://127.0.0.1:{{{{ port }}}}/health"
[[workers]]
kind = "generic"
count = 2
port_base = @P0+10@
exec_start = "{exec} {generic_args}"
{hup}
health = "http://127.0.0.1:{{{{ port }}}}/health"
[[workers]]
kind = "federation"
count = 1
port_base = @P0+20@
exec_start = "{exec}"
{hup}
health = "http://127.0.0.1:{{{{ port }}}}/health"
"#
    )
}

const MASTER: &str = "ansrl";
const GENERIC: [&str; 2] = ["ansrl-worker-0-generic", "ansrl-worker-1-generic"];
const FEDERATION: &str = "ansrl-worker-2-federation";

/// `state: reloaded` sends SIGHUP (orch reload) and restarts nothing;
/// `changed_only: true` after a config edit restarts only the kind whose
/// unit file changed, reports changed, and a second run reports nothing.
#[test]
fn module_reloads_and_restarts_only_what_changed() {
    let _ports = crate::ports::lease_groups(1);
    let s = Setup::new(&reloadable("--ready-after 0"));
    let up = s.tasks(
        "    - orch.systemd.orch: {state: installed}\n    - orch.systemd.orch: {state: started}\n",
        &[],
    );
    assert!(up.ok && up.changed == 2, "{}", up.text);
    let once: std::collections::BTreeMap<String, usize> =
        [MASTER, GENERIC[0], GENERIC[1], FEDERATION]
            .iter()
            .map(|n| (n.to_string(), 1))
            .collect();
    assert_eq!(s.events("start", 4), once);

    let reload = s.tasks(
        "    - orch.systemd.orch: {state: reloaded}\n      register: r\n    \
         - ansible.builtin.assert:\n        \
         that: [\"r.units | map(attribute='phase') | unique == ['ready']\", \"r.units | length == 4\"]\n",
        &[],
    );
    assert!(reload.ok && reload.changed == 1, "{}", reload.text);
    assert_eq!(s.events("hup", 4), once, "one SIGHUP each");
    assert_eq!(s.events("start", 4), once, "a reload restarted a unit");

    // Only the generic workers' unit files change.
    let text = std::fs::read_to_string(&s.src).unwrap();
    let edited = text.replace("--ready-after 0\"", "--ready-after 0.1\"");
    assert_ne!(edited, text);
    std::fs::write(&s.src, edited).unwrap();
    let changed = "    - orch.systemd.orch: {state: installed}\n    \
         - orch.systemd.orch: {state: restarted, changed_only: true}\n      register: r\n    \
         - ansible.builtin.assert:\n        \
         that: [\"r.units | map(attribute='unit') | sort == ['ansrl-worker-0-generic.service', 'ansrl-worker-1-generic.service'] or not r.changed\"]\n";
    let first = s.tasks(changed, &[]);
    assert!(first.ok && first.changed == 2, "{}", first.text);
    let starts = s.events("start", 6);
    let want: std::collections::BTreeMap<String, usize> = [
        (MASTER, 1),
        (GENERIC[0], 2),
        (GENERIC[1], 2),
        (FEDERATION, 1),
    ]
    .iter()
    .map(|(n, k)| (n.to_string(), *k))
    .collect();
    assert_eq!(starts, want, "{}", first.text);

    let second = s.tasks(changed, &[]);
    assert!(second.ok && second.changed == 0, "{}", second.text);
    assert_eq!(
        s.events("start", 6),
        want,
        "the second run restarted something"
    );

    // --or-restart reaches orch (every unit here can reload: SIGHUP again).
    let or_restart = s.tasks(
        "    - orch.systemd.orch: {state: reloaded, or_restart: true}\n",
        &[],
    );
    assert!(
        or_restart.ok && or_restart.changed == 1,
        "{}",
        or_restart.text
    );
    assert_eq!(s.events("hup", 8).values().sum::<usize>(), 8);
    let refused = s.tasks(
        "    - orch.systemd.orch: {state: restarted, changed_only: true, targets: [generic]}\n",
        &[],
    );
    assert!(
        !refused.ok
            && refused
                .text
                .contains("changed_only looks at the whole deployment"),
        "{}",
        refused.text
    );
}

/// Issue 26: `canary` reaches `restart --rolling --canary` (the canary is
/// marked in the result), and `state: rolled_back` puts the previous
/// install's unit files back (check mode changes nothing and predicts it),
/// restarting with `restart_changed` only what the put-back files change.
#[test]
fn module_restarts_with_a_canary_and_rolls_back() {
    let _ports = crate::ports::lease_groups(1);
    let s = Setup::new(&reloadable("--ready-after 0"));
    let up = s.tasks(
        "    - orch.systemd.orch: {state: installed}\n    - orch.systemd.orch: {state: started}\n",
        &[],
    );
    assert!(up.ok && up.changed == 2, "{}", up.text);
    let first = s.unit_files();

    let text = std::fs::read_to_string(&s.src).unwrap();
    std::fs::write(
        &s.src,
        text.replace("--ready-after 0\"", "--ready-after 0.1\""),
    )
    .unwrap();
    let canary = s.tasks(
        "    - orch.systemd.orch: {state: installed}\n    \
         - orch.systemd.orch: {state: restarted, rolling: true, changed_only: true, canary: 0, hold: 1s}\n      register: r\n    \
         - ansible.builtin.assert:\n        \
         that: [\"r.units | selectattr('canary', 'defined') | map(attribute='unit') | list == ['ansrl-worker-0-generic.service']\"]\n",
        &[],
    );
    assert!(canary.ok && canary.changed == 2, "{}", canary.text);
    assert_ne!(s.unit_files(), first);
    let starts = s.events("start", 6);
    assert_eq!(starts[GENERIC[0]], 2, "{starts:?}");

    let check = s.tasks(
        "    - orch.systemd.orch: {state: rolled_back}\n",
        &["--check"],
    );
    assert!(check.ok && check.changed == 1, "{}", check.text);
    assert_ne!(s.unit_files(), first, "check mode wrote nothing");
    let back = s.tasks(
        "    - orch.systemd.orch: {state: rolled_back, restart_changed: true}\n      register: r\n    \
         - ansible.builtin.assert:\n        \
         that: [\"r.report.rolled_back_to == 1\", \"r.units | map(attribute='unit') | sort == ['ansrl-worker-0-generic.service', 'ansrl-worker-1-generic.service']\"]\n",
        &[],
    );
    assert!(back.ok && back.changed == 1, "{}", back.text);
    assert_eq!(
        s.unit_files(),
        first,
        "the first install's files, byte for byte"
    );
    let starts = s.events("start", 8);
    assert_eq!(
        (starts[MASTER], starts[GENERIC[0]], starts[FEDERATION]),
        (1, 3, 1),
        "{starts:?}"
    );
}

/// Issue 26 part 4 in the collection: when `installed` or `rolled_back`
/// removes a unit that systemd had to SIGKILL (its stop outlived its
/// TimeoutStopSec=; every worker here ignores SIGTERM), the task warns,
/// naming the unit; a run that removes nothing does not warn.
#[test]
fn module_warns_when_a_removed_unit_was_sigkilled_by_systemd() {
    let _ports = crate::ports::lease_groups(1);
    let two = config("anskill", crate::ports::at(0, 0), "", "--ignore-sigterm")
        .replace("stop_timeout = \"5s\"", "stop_timeout = \"2s\"");
    let s = Setup::new(&two);
    let with = std::fs::read_to_string(&s.src).unwrap();
    let without = with.replacen("count = 2", "count = 1", 1);
    assert_ne!(with, without);
    let removed = "anskill-worker-1-generic.service";
    let warning = |r: &Run| {
        r.text
            .lines()
            .any(|l| l.contains("[WARNING]") && l.contains(removed) && l.contains("SIGKILLed"))
    };

    let up = s.tasks(
        "    - orch.systemd.orch: {state: installed}\n    - orch.systemd.orch: {state: started}\n",
        &[],
    );
    assert!(up.ok && !warning(&up), "{}", up.text);

    std::fs::write(&s.src, &without).unwrap();
    let install = s.tasks("    - orch.systemd.orch: {state: installed}\n", &[]);
    assert!(install.ok && install.changed == 1, "{}", install.text);
    assert!(
        warning(&install),
        "installed did not warn: {}",
        install.text
    );

    // Back to both (generation 1), running; then forward again by rollback.
    std::fs::write(&s.src, &with).unwrap();
    let back = s.tasks(
        "    - orch.systemd.orch: {state: rolled_back}\n    - orch.systemd.orch: {state: started}\n",
        &[],
    );
    assert!(back.ok && !warning(&back), "{}", back.text);
    let forward = s.tasks(
        "    - orch.systemd.orch: {state: rolled_back, generation: 2}\n",
        &[],
    );
    assert!(forward.ok && forward.changed == 1, "{}", forward.text);
    assert!(
        warning(&forward),
        "rolled_back did not warn: {}",
        forward.text
    );
}

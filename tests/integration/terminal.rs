//! The live display in a real terminal: tmux runs orch in a 140×30 window
//! with a master and 60 workers, and the screen is read while it runs and
//! after it ends (`tmux capture-pane`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::{Container, OutputBounded};

const FIXTURE: &str = "/usr/bin/python3 /opt/fixtures/worker.py --name {{ name }}";

fn tmux(sock: &Path, args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .arg("-S")
        .arg(sock)
        .args(args)
        .output_within(Duration::from_secs(10))
        .unwrap_or_else(|e| {
            panic!("cannot run tmux ({e}): install it with `apt-get install -y tmux`")
        })
}

/// Set as the pane's title (OSC 2) after the command: tmux parses the pane's
/// output in order, so once the title says it, everything the command wrote
/// is on the screen. The screen itself is left as the command made it.
const DONE_TITLE: &str = "orch-test-done";

/// A tmux session running `cmd` in a `cols`×`rows` window; the exit code
/// lands in `rc` and the pane stays open for a last capture.
struct Screen {
    sock: PathBuf,
    rc: PathBuf,
}

impl Screen {
    fn run(dir: &Path, cols: u16, rows: u16, cmd: &str) -> Screen {
        let sock = dir.join("tmux.sock");
        let rc = dir.join("rc");
        let script = dir.join("run.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n{cmd}\nrc=$?\nprintf '\\033]2;%s\\033\\\\' {DONE_TITLE}\n\
                 echo $rc > {}\nexec sleep 600\n",
                rc.display()
            ),
        )
        .unwrap();
        let o = tmux(
            &sock,
            &[
                "new-session",
                "-d",
                "-x",
                &cols.to_string(),
                "-y",
                &rows.to_string(),
                "sh",
                script.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "tmux: {o:?}");
        Screen { sock, rc }
    }

    fn capture(&self) -> String {
        String::from_utf8_lossy(&tmux(&self.sock, &["capture-pane", "-p"]).stdout).into_owned()
    }

    fn title(&self) -> String {
        let o = tmux(&self.sock, &["display-message", "-p", "#{pane_title}"]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Every distinct screen until the command ends (bounded), and its exit
    /// code. The last screen is taken once tmux has drawn all the command's
    /// output: the exit code can be written before tmux has read the rest.
    fn watch(&self, bound: Duration) -> (Vec<String>, i32) {
        let t = Instant::now();
        let mut screens: Vec<String> = Vec::new();
        loop {
            let done = self.title() == DONE_TITLE;
            let s = self.capture();
            if screens.last() != Some(&s) {
                screens.push(s);
            }
            if let Some(rc) = std::fs::read_to_string(&self.rc).ok().filter(|_| done) {
                return (screens, rc.trim().parse().unwrap());
            }
            assert!(
                t.elapsed() < bound,
                "orch did not end within {bound:?} (exit code written: {}, pane title {:?}); screen:\n{}",
                self.rc.exists(),
                self.title(),
                screens.last().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        tmux(&self.sock, &["kill-server"]);
    }
}

/// A deployment `fx` with a master and `workers` generic workers, one of
/// which (the last, kind `broken`) fails at every start.
fn deployment(dir: &Path, workers: usize, port_base: u16) -> (Container, PathBuf) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let c = Container::builder()
        .bind_ro(&fixtures, "/opt/fixtures")
        .boot();
    let cfg = dir.join("orch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[deployment]\nname = \"fx\"\nstate_dir = \"{state}\"\n\
             [master]\nexec_start = \"{FIXTURE}\"\n\
             [[workers]]\nkind = \"generic\"\ncount = {n}\nexec_start = \"{FIXTURE} --ready-after 0.5 --port {{{{ port }}}}\"\n\
             port_base = {port_base}\nhealth = \"http://127.0.0.1:{{{{ port }}}}/health\"\n\
             [[workers]]\nkind = \"broken\"\ncount = 1\nexec_start = \"/bin/false\"\nrestart = \"no\"\n",
            state = dir.join("state").display(),
            n = workers - 1,
        ),
    )
    .unwrap();
    orch_ok(&c, &cfg, &["install"]);
    (c, cfg)
}

/// The orch command line that `orch_cmd` would run, for a shell.
fn shell_line(c: &Container, cfg: &Path, args: &[&str]) -> String {
    let cmd = orch_cmd(c, cfg, args);
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    let env: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v?.to_str()?)))
        .collect();
    format!(
        "env -u ORCH_CONFIG -u ORCH_BUS {} {}",
        env.join(" "),
        words.join(" ")
    )
}

/// The units listed on a screen: the first word of each row (journal lines
/// quoted under a failed unit, `| …`, name it again and do not count).
fn units_on(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.starts_with("fx") && w.ends_with(".service"))
        .collect()
}

#[test]
fn sixty_workers_in_a_thirty_line_window() {
    let dir = tempfile::tempdir().unwrap();
    let ports = crate::ports::reserve(60);
    let (c, cfg) = deployment(dir.path(), 60, ports.port(0));
    orch(&c, &cfg, &["start", "--all"]);
    let screen = Screen::run(
        dir.path(),
        140,
        30,
        &shell_line(&c, &cfg, &["restart", "--all"]),
    );
    let (screens, rc) = screen.watch(Duration::from_secs(120));
    let last = screens.last().unwrap();
    assert_eq!(rc, 1, "one worker fails:\n{last}");
    println!(
        "WHILE RUNNING (one of {}):\n{}\nAT THE END:\n{last}",
        screens.len(),
        screens[screens.len() / 2]
    );

    // While it runs: a header with the ready count, never more than the window.
    let running: Vec<&String> = screens
        .iter()
        .filter(|s| s.contains("[+] restart "))
        .collect();
    assert!(
        running
            .iter()
            .any(|s| s.contains("/61 ready") && !s.contains("61/61 ready")),
        "no header with a ready count while it ran; screens:\n{}",
        screens.join("\n----\n")
    );
    for s in &running {
        assert!(s.lines().count() <= 30, "{s}");
        assert!(
            s.lines().next().unwrap().starts_with("[+] restart "),
            "the header is the first line of the live area:\n{s}"
        );
    }

    // At the end: the live area is gone, the result is printed once.
    assert!(
        !last.contains("[+] restart"),
        "live area left behind:\n{last}"
    );
    assert!(
        last.contains("restart FAILED: 1 failed, 0 timed out, 60 ok"),
        "{last}"
    );
    let broken = "fx-worker-59-broken.service";
    let line = last
        .lines()
        .find(|l| l.contains(broken))
        .unwrap_or_else(|| panic!("the failed unit is not on the final screen:\n{last}"));
    assert!(
        line.contains("failed") && line.contains("exit status 1"),
        "the reason: {line}"
    );
    let mut seen = units_on(last);
    seen.sort();
    let n = seen.len();
    seen.dedup();
    assert_eq!(n, seen.len(), "a unit listed twice:\n{last}");
}

#[test]
fn a_few_workers_keep_one_line_per_unit_and_status_groups_when_it_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let ports = crate::ports::reserve(4);
    let (c, cfg) = deployment(dir.path(), 4, ports.port(0));
    orch(&c, &cfg, &["start", "--all"]);
    let screen = Screen::run(
        dir.path(),
        140,
        30,
        &format!(
            "{} && {}",
            shell_line(&c, &cfg, &["restart", "fx-worker-0-generic.service"]),
            shell_line(&c, &cfg, &["status"])
        ),
    );
    let (screens, rc) = screen.watch(Duration::from_secs(60));
    assert_eq!(rc, 0, "{}", screens.last().unwrap());
    let last = screens.last().unwrap();
    assert!(last.contains("restart: 1 of 1 units ready in"), "{last}");
    assert!(
        last.contains("fx-worker-3-broken.service"),
        "status fits: {last}"
    );
    drop(screen);

    // 61 units in 30 lines: status groups the workers by kind, -a does not.
    let dir = tempfile::tempdir().unwrap();
    let ports = crate::ports::reserve(60);
    let (c, cfg) = deployment(dir.path(), 60, ports.port(0));
    let screen = Screen::run(dir.path(), 140, 30, &shell_line(&c, &cfg, &["status"]));
    let (screens, rc) = screen.watch(Duration::from_secs(60));
    let last = screens.last().unwrap();
    assert_eq!(rc, 0, "{last}");
    assert!(last.contains("generic ×59"), "{last}");
    assert!(last.contains("broken ×1"), "{last}");
    assert!(last.contains("--all-units"), "{last}");
    let all = orch_ok(&c, &cfg, &["status", "--all-units"]);
    assert_eq!(
        units_on(&String::from_utf8_lossy(&all.stdout)).len(),
        61,
        "not a terminal, or -a: every row"
    );
}

/// A warning (a FIFO named like a unit of the deployment in the unit
/// folder) is coloured on a terminal only: never through a pipe, never
/// with `NO_COLOR`.
#[test]
fn warnings_are_coloured_only_on_a_terminal_without_no_color() {
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    std::fs::create_dir(&units).unwrap();
    let fifo = units.join("fx-worker.service");
    let made = Command::new("mkfifo").arg(&fifo).output_bounded().unwrap();
    assert!(made.status.success(), "mkfifo: {made:?}");
    let cfg = dir.path().join("orch.toml");
    std::fs::write(
        &cfg,
        "[deployment]\nname = \"fx\"\n[master]\nexec_start = \"/bin/true\"\n",
    )
    .unwrap();
    let line = format!(
        "env -u ORCH_CONFIG -u ORCH_BUS {} --config {} plan --unit-dir {}",
        env!("CARGO_BIN_EXE_orch"),
        cfg.display(),
        units.display()
    );
    // Through a pipe: the warning is there, with no escape sequence.
    let piped = Command::new("sh")
        .args(["-c", &format!("{line} 2>&1 | cat")])
        .output_bounded()
        .unwrap();
    let text = String::from_utf8_lossy(&piped.stdout);
    assert!(text.contains("WARN") && text.contains("FIFO"), "{text}");
    assert!(!text.contains('\x1b'), "colour through a pipe: {text:?}");

    for (env, coloured) in [("", true), ("NO_COLOR=1 ", false)] {
        let run = tempfile::tempdir().unwrap();
        let screen = Screen::run(run.path(), 120, 30, &format!("{env}{line}"));
        let (screens, rc) = screen.watch(Duration::from_secs(30));
        assert_eq!(rc, 4, "{}", screens.last().unwrap());
        let o = tmux(&screen.sock, &["capture-pane", "-p", "-e"]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("WARN"), "{text}");
        assert_eq!(
            text.contains('\x1b'),
            coloured,
            "{env:?}: colour on a terminal must be {coloured}: {text:?}"
        );
    }
}

/// A master and 48 workers (40 generic, 8 pusher), all healthy.
fn forty_eight(dir: &Path, port_base: u16) -> (Container, PathBuf) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let masks = dir.join("masks");
    std::fs::create_dir(&masks).unwrap();
    let c = Container::builder()
        .bind_ro(&fixtures, "/opt/fixtures")
        .bind(&masks, "/run/systemd/system.control")
        .boot();
    let cfg = dir.join("orch.toml");
    let worker = |kind: &str, count: usize, base: u16| {
        format!(
            "[[workers]]\nkind = \"{kind}\"\ncount = {count}\nexec_start = \"{FIXTURE} --ready-after 0.2 --port {{{{ port }}}}\"\n\
             port_base = {base}\nhealth = \"http://127.0.0.1:{{{{ port }}}}/health\"\n"
        )
    };
    std::fs::write(
        &cfg,
        format!(
            "[deployment]\nname = \"fx\"\nstate_dir = \"{state}\"\nruntime_dir = \"{masks}\"\n\
             [master]\nexec_start = \"{FIXTURE}\"\n{}{}",
            worker("generic", 40, port_base),
            worker("pusher", 8, port_base + 40),
            state = dir.join("state").display(),
            masks = dir.join("masks").display(),
        ),
    )
    .unwrap();
    orch_ok(&c, &cfg, &["install"]);
    orch_ok(&c, &cfg, &["start", "--all"]);
    (c, cfg)
}

impl Screen {
    /// Everything the pane shows and scrolled past, wrapped lines joined:
    /// a line longer than the window is one that wrapped.
    fn joined(&self) -> String {
        let o = tmux(&self.sock, &["capture-pane", "-p", "-J", "-S", "-"]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

fn no_wrap(text: &str, cols: usize, what: &str) {
    for l in text.lines() {
        assert!(
            l.trim_end().chars().count() <= cols,
            "{what} at {cols} columns: a line wraps:\n{l}\n----\n{text}"
        );
    }
}

/// The lowest ready count of `kind` in a header (`… generic 36, …`).
fn lowest_of(screen: &str, kind: &str) -> Option<usize> {
    let at = screen.find("lowest ready: ")?;
    let rest = &screen[at..];
    let i = rest.find(&format!("{kind} "))?;
    rest[i + kind.len() + 1..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Issue 25 items 1, 2, 6 and 7 on 48 workers, at 80 and 120 columns: the
/// rolling header tells the truth, resume shows no `0/0` and leaves no live
/// area, stop-for-maintenance ends in one screen with the proof, and status
/// never wraps.
#[test]
fn forty_eight_workers_at_80_and_120_columns() {
    let dir = tempfile::tempdir().unwrap();
    let ports = crate::ports::reserve(48);
    let (c, cfg) = forty_eight(dir.path(), ports.port(0));
    for cols in [80u16, 120] {
        let n = cols as usize;
        // 1. Rolling restart, batches of 4: never fewer than 36 generic and
        // 4 pushers ready, from the first frame; the closing line agrees.
        let run = tempfile::tempdir().unwrap();
        let line = shell_line(&c, &cfg, &["restart", "--all", "--rolling", "--batch", "4"]);
        let screen = Screen::run(run.path(), cols, 30, &line);
        let (screens, rc) = screen.watch(Duration::from_secs(180));
        let last = screens.last().unwrap().clone();
        assert_eq!(rc, 0, "{last}");
        let headed: Vec<&String> = screens
            .iter()
            .filter(|s| s.contains("lowest ready: "))
            .collect();
        assert!(
            !headed.is_empty(),
            "no rolling header:\n{}",
            screens.join("\n----\n")
        );
        let mut low = (usize::MAX, usize::MAX);
        for s in &headed {
            let g = lowest_of(s, "generic").unwrap_or_else(|| panic!("{s}"));
            let p = lowest_of(s, "pusher").unwrap_or_else(|| panic!("{s}"));
            assert!(g >= 36 && p >= 4, "lowest ready too low:\n{s}");
            low = (low.0.min(g), low.1.min(p));
            for l in s.lines() {
                assert!(l.chars().count() < n, "{l}");
            }
        }
        assert!(
            low.0 < 40,
            "the header never showed a worker down: {headed:?}"
        );
        let end = screen.joined();
        assert!(
            end.contains(&format!("generic {}/40", low.0)),
            "the closing line and the header disagree ({low:?}):\n{end}"
        );
        drop(screen);

        // 6. stop-for-maintenance: a live area while it runs, then one
        // screen: the proof, no row per unit, nothing wrapped.
        let run = tempfile::tempdir().unwrap();
        let screen = Screen::run(
            run.path(),
            cols,
            30,
            &shell_line(&c, &cfg, &["stop-for-maintenance", "--reason", "upgrade"]),
        );
        let (screens, rc) = screen.watch(Duration::from_secs(120));
        let end = screen.joined();
        assert_eq!(rc, 0, "{end}");
        assert!(
            screens
                .iter()
                .any(|s| s.contains("[+] stop-for-maintenance ")),
            "no live display:\n{}",
            screens.join("\n----\n")
        );
        assert!(end.contains("49 units stopped, 0 processes left"), "{end}");
        assert!(
            !end.contains("[+] stop-for-maintenance"),
            "live area left:\n{end}"
        );
        assert!(
            !end.lines()
                .any(|l| l.contains("inactive") && l.contains("processes")),
            "a row per unit on success:\n{end}"
        );
        assert!(
            end.trim_end().lines().count() < 30,
            "more than a screen:\n{end}"
        );
        no_wrap(&end, n, "stop-for-maintenance");
        drop(screen);

        // 2. resume: no `0/0` header while it unmasks, no live area left.
        let run = tempfile::tempdir().unwrap();
        let screen = Screen::run(run.path(), cols, 30, &shell_line(&c, &cfg, &["resume"]));
        let (screens, rc) = screen.watch(Duration::from_secs(120));
        let end = screen.joined();
        assert_eq!(rc, 0, "{end}");
        assert!(
            !screens.iter().any(|s| s.contains(" 0/0 ")),
            "a 0/0 header:\n{}",
            screens.join("\n----\n")
        );
        assert!(!end.contains("[+] resume"), "live area left behind:\n{end}");
        assert!(end.contains("49 of 49 units ready"), "{end}");
        no_wrap(&end, n, "resume");
        drop(screen);

        // 7. status, a row per unit: every row fits.
        let run = tempfile::tempdir().unwrap();
        let screen = Screen::run(
            run.path(),
            cols,
            30,
            &shell_line(&c, &cfg, &["status", "--all-units"]),
        );
        let (_, rc) = screen.watch(Duration::from_secs(60));
        let end = screen.joined();
        assert_eq!(rc, 0, "{end}");
        assert_eq!(units_on(&end).len(), 49, "{end}");
        no_wrap(&end, n, "status");
        println!("STATUS AT {cols} COLUMNS:\n{end}");
        drop(screen);
    }
}

/// An interactive shell (`sh -i`, prompt `PROMPT$ `) in a tmux window,
/// driven by typed keys.
struct Shell {
    sock: PathBuf,
}

impl Shell {
    fn start(dir: &Path) -> Shell {
        let sock = dir.join("tmux-shell.sock");
        let o = tmux(
            &sock,
            &[
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "140",
                "-y",
                "40",
                "env PS1='PROMPT$ ' /bin/sh -i",
            ],
        );
        assert!(o.status.success(), "tmux: {o:?}");
        Shell { sock }
    }

    /// Types `text` (literally) then Enter.
    fn line(&self, text: &str) {
        let o = tmux(&self.sock, &["send-keys", "-t", "t", "-l", text]);
        assert!(o.status.success(), "{o:?}");
        self.key("Enter");
    }

    fn key(&self, key: &str) {
        let o = tmux(&self.sock, &["send-keys", "-t", "t", key]);
        assert!(o.status.success(), "{o:?}");
    }

    fn screen(&self) -> String {
        let o = tmux(&self.sock, &["capture-pane", "-p", "-t", "t", "-S", "-200"]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The screen once `text` is on it (bounded).
    fn wait_for(&self, text: &str, bound: Duration) -> String {
        self.wait_until(text, bound, |s| s.contains(text))
    }

    /// The screen once a line starts with `prefix` and a digit: a status
    /// printed by `echo "PREFIX$?"`, not the typed command line.
    fn wait_for_status(&self, prefix: &str, bound: Duration) -> String {
        self.wait_until(prefix, bound, |s| {
            s.lines().any(|l| {
                l.strip_prefix(prefix)
                    .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            })
        })
    }

    fn wait_until(&self, what: &str, bound: Duration, done: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            let s = self.screen();
            if done(&s) {
                return s;
            }
            assert!(t.elapsed() < bound, "no {what:?} within {bound:?}:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        tmux(&self.sock, &["kill-server"]);
    }
}

/// Issue 21: `stop-for-maintenance -- CMD` on a terminal hands it over and
/// takes it back. CMD reads a line typed at the terminal (it is the
/// foreground group: from the background, `read` would stop it with
/// SIGTTIN); Ctrl+C reaches CMD's group, orch says the deployment stays in
/// maintenance; the shell's prompt and input work afterwards. With `stty
/// tostop`, orch writing while not in the foreground would be stopped by
/// SIGTTOU: its resume output after a second CMD shows it took the
/// terminal back.
#[test]
fn the_maintenance_command_gets_the_terminal_and_orch_takes_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let masks = dir.path().join("masks");
    std::fs::create_dir(&masks).unwrap();
    let c = Container::builder()
        .bind_ro(&fixtures, "/opt/fixtures")
        .bind(&masks, "/run/systemd/system.control")
        .boot();
    let cfg = dir.path().join("orch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[deployment]\nname = \"fx\"\nstate_dir = \"{state}\"\nruntime_dir = \"{masks}\"\n\
             [master]\nexec_start = \"{FIXTURE}\"\n\
             [[workers]]\nkind = \"generic\"\ncount = 1\nexec_start = \"{FIXTURE}\"\n",
            state = dir.path().join("state").display(),
            masks = masks.display(),
        ),
    )
    .unwrap();
    orch_ok(&c, &cfg, &["install"]);
    orch_ok(&c, &cfg, &["start", "--all"]);
    let asks = dir.path().join("asks.sh");
    std::fs::write(
        &asks,
        "printf 'name? '; read x; echo \"got:$x\"\n\
         trap 'echo CMD-INT; exit 130' INT\necho waiting\nwhile :; do sleep 0.1; done\n",
    )
    .unwrap();
    let ok = dir.path().join("ok.sh");
    std::fs::write(&ok, "printf 'go? '; read x; echo \"ok:$x\"\n").unwrap();
    let run = |script: &Path| {
        shell_line(
            &c,
            &cfg,
            &[
                "stop-for-maintenance",
                "--reason",
                "term",
                "--",
                "/bin/sh",
                script.to_str().unwrap(),
            ],
        )
    };
    let bound = Duration::from_secs(30);
    let sh = Shell::start(dir.path());
    sh.wait_for("PROMPT$", bound);
    sh.line("stty tostop");

    sh.line(&format!("{}; echo \"rc=$?\"", run(&asks)));
    sh.wait_for("name?", bound);
    sh.line("hello");
    sh.wait_for("waiting", bound);
    assert!(sh.screen().contains("got:hello"));
    sh.key("C-c");
    let s = sh.wait_for_status("rc=", bound);
    assert!(s.contains("CMD-INT"), "Ctrl+C did not reach CMD:\n{s}");
    assert!(s.contains("rc=130"), "{s}");
    assert!(
        s.contains("orch resume"),
        "orch did not say the way out:\n{s}"
    );
    let v = json(&orch_ok(&c, &cfg, &["status", "--output", "json"]));
    assert_eq!(v["maintenance"]["reason"], "term", "{v}");
    sh.line("echo back-$((40+2))");
    sh.wait_for("back-42", bound);

    sh.line(&format!("{}; echo \"rc2=$?\"", run(&ok)));
    sh.wait_for("go?", bound);
    sh.line("yes");
    let s = sh.wait_for_status("rc2=", bound);
    assert!(s.contains("ok:yes"), "{s}");
    assert!(s.contains("rc2=0"), "{s}");
    let after = &s[s.rfind("ok:yes").unwrap()..];
    assert!(after.contains("ready"), "no resume output from orch:\n{s}");
    let v = json(&orch_ok(&c, &cfg, &["status", "--output", "json"]));
    assert!(v["maintenance"].is_null(), "{v}");
}

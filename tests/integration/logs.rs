//! `orch logs` against a real systemd's journal (read with `--journal-root
//! /proc/LEADER/root`, set by `orch_cmd`).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::{Container, OutputBounded};

/// Prints each line written to /opt/talk/NAME, as soon as it appears.
const TALK: &str = r#"name=$1
echo "$name is up"
while :; do
  if [ -e /opt/talk/$name ]; then cat /opt/talk/$name; rm -f /opt/talk/$name; fi
  sleep 0.05
done
"#;

struct Setup {
    c: Container,
    cfg: PathBuf,
    talk: PathBuf,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let talk = dir.path().join("talk");
    std::fs::create_dir(&talk).unwrap();
    std::fs::write(talk.join("talk.sh"), TALK).unwrap();
    let c = Container::builder().bind(&talk, "/opt/talk").boot();
    let cfg = dir.path().join("orch.toml");
    std::fs::write(
        &cfg,
        r#"[deployment]
name = "lg"
[master]
exec_start = "/bin/sh /opt/talk/talk.sh {{ name }}"
[[workers]]
kind = "generic"
count = 1
exec_start = "/bin/sh /opt/talk/talk.sh {{ name }}"
"#,
    )
    .unwrap();
    orch_ok(&c, &cfg, &["install"]);
    orch_ok(&c, &cfg, &["start", "--all"]);
    Setup {
        c,
        cfg,
        talk,
        _dir: dir,
    }
}

/// Makes the unit `name` print `line`, and waits until it is in the journal.
fn say(s: &Setup, name: &str, line: &str) {
    std::fs::write(s.talk.join(name), format!("{line}\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.c.journal(&format!("{name}.service")).contains(line) {
        assert!(
            Instant::now() < deadline,
            "{line} never reached the journal"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `unit | message` lines of our own words, in the order orch printed them.
fn spoken(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("said"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn lines_of_two_units_come_out_in_time_order_with_their_prefixes() {
    let s = setup();
    say(&s, "lg", "said one");
    say(&s, "lg-worker-0-generic", "said two");
    say(&s, "lg", "said three");

    let o = orch_ok(&s.c, &s.cfg, &["logs"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        spoken(&text),
        [
            "lg | said one",
            "lg-worker-0-generic | said two",
            "lg | said three"
        ],
        "{text}"
    );
    assert!(
        text.contains("lg-worker-0-generic | lg-worker-0-generic is up"),
        "{text}"
    );

    // -n is per unit: the master's last line, the worker's last line.
    let o = orch_ok(&s.c, &s.cfg, &["logs", "-n", "1"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert_eq!(
        spoken(&text),
        ["lg-worker-0-generic | said two", "lg | said three"],
        "{text}"
    );

    // A target narrows it; JSON is one object per line.
    let o = orch_ok(
        &s.c,
        &s.cfg,
        &["logs", "master", "-n", "all", "--output", "json"],
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .all(|v| v["unit"] == "lg.service" && v["schema"] == 1 && v["host"] == "local"),
        "{lines:?}"
    );
    let said: Vec<&str> = lines
        .iter()
        .filter_map(|v| v["message"].as_str())
        .filter(|m| m.contains("said"))
        .collect();
    assert_eq!(said, ["said one", "said three"]);
    assert!(
        lines[0]["time"].as_str().unwrap().ends_with('Z'),
        "{:?}",
        lines[0]
    );

    // --since is read by orch in journalctl's syntax: a relative time
    // with a leading dash is one; a phrase journalctl refuses is a usage
    // error before anything runs; a time after every line shows none.
    for since in ["-1h", "1h ago", "today", "yesterday"] {
        let o = orch_ok(&s.c, &s.cfg, &["logs", "master", "--since", since]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            spoken(&text),
            ["lg | said one", "lg | said three"],
            "{since}: {text}"
        );
    }
    let o = orch_ok(&s.c, &s.cfg, &["logs", "--since", "tomorrow"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "");
    // Nothing to show is said (on stderr: a pipe still gets no line).
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no journal entries for the 2 selected units since"),
        "{err}"
    );
    let o = orch(&s.c, &s.cfg, &["logs", "--since", "yesterday-ish"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--since") && err.contains("yesterday-ish"),
        "{err}"
    );
    assert!(!err.contains("journalctl:"), "{err}");

    // A journal root with no journal is named, not read as an empty journal.
    let empty = tempfile::tempdir().unwrap();
    let o = orch_cmd(&s.c, &s.cfg, &["logs"])
        .arg("--journal-root")
        .arg(empty.path())
        .output_bounded()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no journal under"), "{err}");
}

#[test]
fn follow_shows_a_line_written_after_it_started_and_ends_on_ctrl_c() {
    let s = setup();
    say(&s, "lg", "said before");
    let mut child = orch_cmd(&s.c, &s.cfg, &["logs", "-f", "-n", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Read on a thread so that every wait here is bounded.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // Every line up to the first with `want`, which is last.
    let mut seen = Vec::new();
    let mut next = |want: &str| loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) if l.contains(want) => {
                seen.push(l);
                return std::mem::take(&mut seen);
            }
            Ok(l) => seen.push(l),
            Err(e) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                panic!("no line with {want}: {e}")
            }
        }
    };
    let history = next("said before");
    assert_eq!(
        spoken(&history.join("\n")),
        ["lg | said before"],
        "{history:?}"
    );
    std::fs::write(s.talk.join("lg-worker-0-generic"), "said after\n").unwrap();
    let followed = next("said after");
    let after = followed.last().unwrap();
    assert!(after.starts_with("lg-worker-0-generic | "), "{after}");
    // Following starts where the history ended: nothing shown twice.
    assert_eq!(
        spoken(&followed.join("\n")),
        [after.split_whitespace().collect::<Vec<_>>().join(" ")],
        "{followed:?}"
    );

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > Duration::from_secs(5) {
            child.kill().unwrap();
            panic!("orch logs -f outlived Ctrl+C");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(status.code(), Some(0));
}

/// Waits until the JSON output of `orch logs` has a message containing `marker`.
fn in_journal(s: &Setup, marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = orch_ok(&s.c, &s.cfg, &["logs", "-n", "all", "--output", "json"]);
        if String::from_utf8_lossy(&o.stdout).contains(marker) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{marker} never reached the journal"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_unit_s_control_characters_never_reach_the_terminal_raw() {
    let s = setup();
    // Retitles and clears a terminal; then forges a line of another unit.
    std::fs::write(
        s.talk.join("lg"),
        "said \x1b]0;PWNED\x07\x1b[2J\nx\rlg-worker-7-a | forged line said\n",
    )
    .unwrap();
    in_journal(&s, "forged line said");
    let o = orch_ok(&s.c, &s.cfg, &["logs", "master", "-n", "all"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !text.contains(['\x1b', '\x07', '\r']),
        "raw control characters in {text:?}"
    );
    assert!(
        text.contains(r"lg | said \x1b]0;PWNED\x07\x1b[2J"),
        "{text}"
    );
    assert!(
        text.contains(r"lg | x\rlg-worker-7-a | forged line said"),
        "{text}"
    );
    // JSON keeps the message as it was (serde escapes it).
    let o = orch_ok(
        &s.c,
        &s.cfg,
        &["logs", "master", "-n", "all", "--output", "json"],
    );
    let said: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["message"].as_str().map(String::from))
        .collect();
    assert!(
        said.iter()
            .any(|m| m == "x\rlg-worker-7-a | forged line said"),
        "{said:?}"
    );
    assert!(
        said.iter().any(|m| m == "said \x1b]0;PWNED\x07\x1b[2J"),
        "{said:?}"
    );
}

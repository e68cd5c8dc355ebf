//! `orch logs`: the journal of the deployment's units, read with
//! `journalctl -o json` (one process per host, one `-u` per unit), merged
//! across hosts in time order.
//!
//! `-n N` is per unit, as in `docker compose logs --tail`: journalctl's
//! own `-n` counts the merged stream, so orch reads each host's journal
//! newest first (`-r`) and stops as soon as every unit has its N lines.
//! `-f` then follows from the cursor of the newest line read, so no line
//! is lost or shown twice between the two.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::exit;
use crate::remote::Remote;

/// One journal line of a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub unit: String,
    pub host: String,
    /// RFC 3339, microseconds, UTC.
    pub time: String,
    #[serde(skip)]
    pub time_usec: u64,
    pub message: String,
}

/// How many lines of history per unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    Last(usize),
    All,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub lines: Lines,
    /// Passed to `journalctl --since` as `@SECONDS` (parsed by the command line).
    pub since: Option<jiff::Timestamp>,
    pub follow: bool,
    /// `journalctl --root DIR` on this machine.
    pub journal_root: Option<PathBuf>,
    /// Bound on reading the history of every host.
    pub timeout: Duration,
}

/// The units of one host and how to run journalctl there.
#[derive(Debug, Clone)]
pub struct Source {
    pub host: String,
    pub remote: Option<Remote>,
    pub units: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("cannot run journalctl for host {host}: {cause}")]
    Spawn { host: String, cause: std::io::Error },
    #[error("journalctl on host {host} failed ({status}): {stderr}")]
    Journalctl {
        host: String,
        status: String,
        stderr: String,
    },
    #[error("no journal under {}: neither var/log/journal nor run/log/journal holds a *.journal file (is it the root of a machine, e.g. /proc/LEADER/root?)", .root.display())]
    NoJournal { root: PathBuf },
    #[error("timed out after {} reading the journal of host {host}", humantime::format_duration(*.timeout))]
    Timeout { host: String, timeout: Duration },
}

impl LogsError {
    pub fn exit_code(&self) -> i32 {
        match self {
            LogsError::Timeout { .. } => exit::TIMEOUT,
            _ => exit::FAILURE,
        }
    }
}

/// The fields orch reads; journalctl always adds the cursor and the time.
const FIELDS: &str = "MESSAGE,_SYSTEMD_UNIT,UNIT,OBJECT_SYSTEMD_UNIT,COREDUMP_UNIT";

/// The unit an entry belongs to: the process's own unit when it is one of
/// ours, else the unit systemd wrote it about ("Started …", `UNIT=`).
fn unit_of(v: &serde_json::Value, units: &[String]) -> String {
    let fields = [
        "_SYSTEMD_UNIT",
        "UNIT",
        "OBJECT_SYSTEMD_UNIT",
        "COREDUMP_UNIT",
    ];
    let values: Vec<&str> = fields.iter().filter_map(|f| v[*f].as_str()).collect();
    values
        .iter()
        .find(|u| units.iter().any(|x| x == *u))
        .or(values.first())
        .map_or_else(|| "-".to_string(), |u| u.to_string())
}

/// journald writes a field that is not UTF-8 as an array of bytes, and
/// a field given several times as an array of those.
fn text_of(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(a) if a.iter().all(|b| b.is_u64()) => {
            let bytes: Vec<u8> = a
                .iter()
                .filter_map(|b| b.as_u64())
                .map(|b| b as u8)
                .collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        serde_json::Value::Array(a) => a.first().and_then(text_of),
        _ => None,
    }
}

/// A message made safe for a terminal or a plain-text log: every control
/// character but tab (C0, DEL, C1, and the bidirectional overrides that
/// reorder what a reader sees) is written escaped (`\x1b`, `\r`, `\u202e`),
/// as journalctl does for data it cannot show. A unit must not retitle or
/// clear the operator's terminal, nor forge a line of another unit with a
/// carriage return. JSON needs none of this: serde escapes them there.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        c != '\t'
            && (c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
    };
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if unsafe_char(c) && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if unsafe_char(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// One line of `journalctl -o json`, with its cursor; `None` for a line
/// that is not a journal entry.
pub fn parse(line: &str, host: &str, units: &[String]) -> Option<(Entry, String)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let time_usec: u64 = v["__REALTIME_TIMESTAMP"].as_str()?.parse().ok()?;
    let cursor = v["__CURSOR"].as_str().unwrap_or_default().to_string();
    let message = text_of(&v["MESSAGE"]).unwrap_or_default();
    let time = std::time::UNIX_EPOCH + Duration::from_micros(time_usec);
    let entry = Entry {
        unit: unit_of(&v, units),
        host: host.to_string(),
        time: humantime::format_rfc3339_micros(time).to_string(),
        time_usec,
        message,
    };
    Some((entry, cursor))
}

/// What one journalctl process reads.
enum Mode<'a> {
    /// Newest first (`-n N`) or oldest first (all).
    History,
    /// `-f` after the last line of the history, or from now.
    Follow { after: Option<&'a str> },
}

/// The journalctl arguments, without the program.
fn arguments(src: &Source, opts: &Options, mode: &Mode<'_>) -> Vec<String> {
    let mut a: Vec<String> = ["--no-pager", "-q", "-o", "json", "--output-fields", FIELDS]
        .map(String::from)
        .to_vec();
    match mode {
        Mode::History => {
            if matches!(opts.lines, Lines::Last(_)) {
                a.push("-r".into());
            }
            if let Some(s) = opts.since {
                a.extend(["--since".into(), crate::since::journalctl_arg(s)]);
            }
        }
        Mode::Follow { after: Some(c) } => a.extend(["-f".into(), format!("--after-cursor={c}")]),
        Mode::Follow { after: None } => a.extend(["-f", "-n", "0"].map(String::from)),
    }
    for u in &src.units {
        a.extend(["-u".into(), u.clone()]);
    }
    a
}

/// Quotes a word for the remote shell that `ssh` hands the command to.
fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn spawn(src: &Source, opts: &Options, mode: &Mode<'_>) -> Result<Child, LogsError> {
    let args = arguments(src, opts, mode);
    let mut cmd = match &src.remote {
        Some(r) => {
            let words: Vec<String> = args.iter().map(|w| shell_word(w)).collect();
            let (program, ssh_args) = r.run(&format!("journalctl {}", words.join(" ")));
            let mut c = Command::new(program);
            c.args(ssh_args);
            c
        }
        None => {
            let mut c = Command::new("journalctl");
            if let Some(root) = &opts.journal_root {
                c.arg("--root").arg(root);
            }
            c.args(args);
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|cause| LogsError::Spawn {
            host: src.host.clone(),
            cause,
        })
}

/// The history of one host, oldest first, and the cursor of its newest line.
async fn history(src: &Source, opts: &Options) -> Result<(Vec<Entry>, Option<String>), LogsError> {
    let mut child = spawn(src, opts, &Mode::History)?;
    let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut entries: Vec<(Entry, String)> = Vec::new();
    let mut counts = vec![0usize; src.units.len()];
    let mut enough = false;
    while let Ok(Some(line)) = out.next_line().await {
        let Some((e, cursor)) = parse(&line, &src.host, &src.units) else {
            continue;
        };
        if let Lines::Last(n) = opts.lines {
            // Newest first: a unit that has its N lines takes no more.
            let Some(i) = src.units.iter().position(|u| *u == e.unit) else {
                continue;
            };
            if counts[i] >= n {
                continue;
            }
            counts[i] += 1;
            entries.push((e, cursor));
            if counts.iter().all(|c| *c >= n) {
                enough = true;
                break;
            }
        } else {
            entries.push((e, cursor));
        }
    }
    drop(out);
    check(src, child, enough).await?;
    if matches!(opts.lines, Lines::Last(_)) {
        entries.reverse();
    }
    let cursor = entries.last().map(|(_, c)| c.clone());
    Ok((entries.into_iter().map(|(e, _)| e).collect(), cursor))
}

/// A journalctl that ended on its own with an error is one; one orch
/// stopped reading (`enough`: it had its lines) is killed and not judged.
async fn check(src: &Source, mut child: Child, enough: bool) -> Result<(), LogsError> {
    if enough {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Ok(());
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|cause| LogsError::Spawn {
            host: src.host.clone(),
            cause,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(LogsError::Journalctl {
        host: src.host.clone(),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// journalctl reads an empty folder as an empty journal and says nothing:
/// a `--journal-root` with no journal is an operator's mistake to name.
fn check_root(root: &std::path::Path) -> Result<(), LogsError> {
    let has_journal = |dir: std::path::PathBuf| {
        let Ok(machines) = std::fs::read_dir(dir) else {
            return false;
        };
        machines.flatten().any(|m| {
            std::fs::read_dir(m.path()).is_ok_and(|files| {
                files.flatten().any(|f| {
                    let name = f.file_name();
                    let name = name.to_string_lossy();
                    name.ends_with(".journal") || name.ends_with(".journal~")
                })
            })
        })
    };
    match has_journal(root.join("var/log/journal")) || has_journal(root.join("run/log/journal")) {
        true => Ok(()),
        false => Err(LogsError::NoJournal {
            root: root.to_path_buf(),
        }),
    }
}

/// Every host's history, merged in time order (stable: a host's own order
/// is kept for lines of the same microsecond). Returns each host's cursor.
pub async fn read_history(
    sources: &[Source],
    opts: &Options,
) -> Result<(Vec<Entry>, Vec<Option<String>>), LogsError> {
    if let Some(root) = &opts.journal_root {
        if sources.iter().any(|s| s.remote.is_none()) {
            check_root(root)?;
        }
    }
    let reads = sources.iter().map(|s| async move {
        tokio::time::timeout(opts.timeout, history(s, opts))
            .await
            .map_err(|_| LogsError::Timeout {
                host: s.host.clone(),
                timeout: opts.timeout,
            })?
    });
    let mut all = Vec::new();
    let mut cursors = Vec::new();
    for r in futures_util::future::join_all(reads).await {
        let (entries, cursor) = r?;
        all.extend(entries);
        cursors.push(cursor);
    }
    all.sort_by_key(|e| e.time_usec);
    Ok((all, cursors))
}

/// Follows every host from its cursor, sending each entry as it comes.
/// Ends when a journalctl ends (its error, if any) or the receiver is
/// dropped; the caller ends it at once by dropping the future, which
/// kills the journalctl processes.
pub async fn follow(
    sources: &[Source],
    opts: &Options,
    cursors: &[Option<String>],
    tx: mpsc::Sender<Entry>,
) -> Result<(), LogsError> {
    let streams = sources.iter().zip(cursors).map(|(src, cursor)| {
        let tx = tx.clone();
        async move {
            let mut child = spawn(
                src,
                opts,
                &Mode::Follow {
                    after: cursor.as_deref(),
                },
            )?;
            let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
            let mut gone = false;
            while let Ok(Some(line)) = out.next_line().await {
                if let Some((e, _)) = parse(&line, &src.host, &src.units) {
                    if tx.send(e).await.is_err() {
                        gone = true;
                        break;
                    }
                }
            }
            drop(out);
            check(src, child, gone).await
        }
    });
    for r in futures_util::future::join_all(streams).await {
        r?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units() -> Vec<String> {
        vec!["fx.service".into(), "fx-worker-0-generic.service".into()]
    }

    #[test]
    fn an_entry_has_its_unit_time_and_message() {
        let line = r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1700000000123456","_SYSTEMD_UNIT":"fx.service","MESSAGE":"hello"}"#;
        let (e, cursor) = parse(line, "local", &units()).unwrap();
        assert_eq!(e.unit, "fx.service");
        assert_eq!(e.message, "hello");
        assert_eq!(e.time_usec, 1_700_000_000_123_456);
        assert_eq!(e.time, "2023-11-14T22:13:20.123456Z");
        assert_eq!(cursor, "s=1;i=2");
    }

    #[test]
    fn a_line_of_systemd_about_a_unit_is_that_unit_s() {
        let line = r#"{"__REALTIME_TIMESTAMP":"1","_SYSTEMD_UNIT":"init.scope","UNIT":"fx-worker-0-generic.service","MESSAGE":"Started"}"#;
        let (e, _) = parse(line, "local", &units()).unwrap();
        assert_eq!(e.unit, "fx-worker-0-generic.service");
    }

    #[test]
    fn a_message_that_is_not_utf8_is_shown_lossily() {
        let line =
            r#"{"__REALTIME_TIMESTAMP":"1","_SYSTEMD_UNIT":"fx.service","MESSAGE":[104,105,255]}"#;
        let (e, _) = parse(line, "local", &units()).unwrap();
        assert_eq!(e.message, "hi\u{fffd}");
    }

    #[test]
    fn control_characters_are_shown_escaped_and_tabs_kept() {
        let hostile = "\u{1b}]0;PWNED\u{7}\u{1b}[2J";
        assert_eq!(escape_controls(hostile), r"\x1b]0;PWNED\x07\x1b[2J");
        assert_eq!(
            escape_controls("x\rm-worker-7-a | forged line"),
            r"x\rm-worker-7-a | forged line"
        );
        assert_eq!(
            escape_controls("a\tb\u{7f}\u{85}\u{9b}2J\u{202e}"),
            r"a	b\x7f\u0085\u009b2J\u202e"
        );
        assert_eq!(escape_controls("plain é ü 漢"), "plain é ü 漢");
        assert!(matches!(
            escape_controls("plain"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn lines_that_are_not_entries_are_skipped() {
        assert!(parse("-- No entries --", "local", &units()).is_none());
        assert!(parse(r#"{"MESSAGE":"no time"}"#, "local", &units()).is_none());
    }

    #[test]
    fn per_unit_history_reads_newest_first_and_follow_resumes_after_it() {
        let src = Source {
            host: "local".into(),
            remote: None,
            units: units(),
        };
        let opts = Options {
            lines: Lines::Last(5),
            since: Some(jiff::Timestamp::from_second(1_714_557_600).unwrap()),
            follow: true,
            journal_root: None,
            timeout: Duration::from_secs(1),
        };
        let h = arguments(&src, &opts, &Mode::History);
        assert!(
            h.contains(&"-r".to_string()) && h.contains(&"@1714557600.000000".to_string()),
            "{h:?}"
        );
        assert_eq!(h.iter().filter(|a| *a == "-u").count(), 2);
        let f = arguments(&src, &opts, &Mode::Follow { after: Some("s=1") });
        assert!(f.contains(&"--after-cursor=s=1".to_string()) && !f.contains(&"-r".to_string()));
    }

    #[test]
    fn a_root_without_a_journal_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_root(dir.path()).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("no journal under {}", dir.path().display())),
            "{e}"
        );
        let m = dir.path().join("var/log/journal/0123");
        std::fs::create_dir_all(&m).unwrap();
        assert!(check_root(dir.path()).is_err());
        std::fs::write(m.join("system.journal"), "").unwrap();
        check_root(dir.path()).unwrap();
    }

    #[test]
    fn remote_words_are_quoted() {
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("s=1;i=2"), "'s=1;i=2'");
    }
}

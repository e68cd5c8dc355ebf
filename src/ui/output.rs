//! How results reach the operator: human text or JSON for machines.

use std::io::Write;

use serde::Serialize;

/// Version of every JSON document orch prints; bumped on incompatible change.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// Prints one JSON document on a line, with a `"schema"` member added.
pub fn json<T: Serialize>(value: &T) -> std::io::Result<()> {
    let mut v = serde_json::to_value(value).map_err(std::io::Error::other)?;
    if let serde_json::Value::Object(map) = &mut v {
        map.insert("schema".into(), SCHEMA.into());
    }
    let mut line = serde_json::to_string(&v).map_err(std::io::Error::other)?;
    line.push('\n');
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(line.as_bytes())
        .and_then(|_| stdout.flush())
    {
        // A reader that went away (`orch … | head -1`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// Writes text to stdout; a closed pipe (`orch … | head`) ends quietly.
pub fn text(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// The error orch ends with, on stderr.
pub fn error(e: &dyn std::fmt::Display) {
    eprintln!("orch: {e}");
}

/// What clap says when it does not parse the command line, or `--help` and
/// `--version` text; the exit code: usage error, or success for those two.
pub fn command_line(e: &clap::Error) -> i32 {
    let _ = e.print();
    match e.use_stderr() {
        true => crate::exit::USAGE,
        false => crate::exit::OK,
    }
}

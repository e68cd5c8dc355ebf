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
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &v).map_err(std::io::Error::other)?;
    writeln!(stdout)?;
    stdout.flush()
}

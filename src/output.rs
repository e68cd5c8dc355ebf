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

/// Lifecycle progress reporters: the right one for where output goes.
pub mod progress {
    use std::io::{IsTerminal, Write};

    use serde::Serialize;

    use super::Format;
    use crate::lifecycle::{Event, Observer};
    use crate::live::Live;
    pub use crate::live::Title;

    /// The live display ([`crate::live`]) when stderr is a terminal, a plain
    /// line per event otherwise (CI logs), NDJSON on stdout with `--output json`.
    pub fn observer(format: Format, quiet: bool, title: Title) -> std::sync::Arc<dyn Observer> {
        match format {
            Format::Json => std::sync::Arc::new(Json),
            Format::Human if quiet => std::sync::Arc::new(Silent),
            Format::Human if is_live() => std::sync::Arc::new(Live::new(title)),
            Format::Human => std::sync::Arc::new(Plain),
        }
    }

    /// Whether human progress is drawn live (stderr is a terminal); the
    /// summary is then short, since the live area showed every unit.
    pub fn is_live() -> bool {
        std::io::stderr().is_terminal()
    }

    struct Silent;
    impl Observer for Silent {
        fn event(&self, _: &Event) {}
    }

    struct Plain;
    impl Observer for Plain {
        fn event(&self, e: &Event) {
            let detail = e
                .detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            let _ = writeln!(
                std::io::stderr(),
                "[{:>7.2}s] {}: {}{detail}",
                e.elapsed_ms as f64 / 1000.0,
                e.unit,
                e.phase.as_str()
            );
        }
    }

    struct Json;
    #[derive(Serialize)]
    struct JsonEvent<'a> {
        schema: u32,
        event: &'static str,
        #[serde(flatten)]
        inner: &'a Event,
    }
    impl Observer for Json {
        fn event(&self, e: &Event) {
            let line = serde_json::to_string(&JsonEvent {
                schema: super::SCHEMA,
                event: "unit",
                inner: e,
            })
            .expect("events serialize");
            let mut out = std::io::stdout().lock();
            // A closed pipe must not panic; the summary reports what matters.
            let _ = writeln!(out, "{line}").and_then(|_| out.flush());
        }
    }
}

//! Lifecycle progress reporters: the right one for where output goes.

use std::io::{IsTerminal, Write};

use serde::Serialize;

use super::live::Live;
pub use super::live::Title;
use super::output::{Format, SCHEMA};
use crate::lifecycle::{Event, Observer};

/// The live display ([`super::live`]) when stderr is a terminal, a plain
/// line per event otherwise (CI logs), NDJSON on stdout with `--output json`.
pub fn observer(format: Format, quiet: bool, title: Title) -> std::sync::Arc<dyn Observer> {
    match format {
        Format::Json => std::sync::Arc::new(Json),
        Format::Human if quiet => std::sync::Arc::new(Silent),
        Format::Human if is_live() => std::sync::Arc::new(Live::new(title)),
        Format::Human => std::sync::Arc::new(Plain),
    }
}

/// The live display when human output goes to a terminal, nothing otherwise:
/// for an operation whose plain and JSON output are its steps and report.
pub fn live_only(format: Format, quiet: bool, title: Title) -> std::sync::Arc<dyn Observer> {
    match format {
        Format::Human if !quiet && is_live() => std::sync::Arc::new(Live::new(title)),
        _ => std::sync::Arc::new(Silent),
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
            schema: SCHEMA,
            event: "unit",
            inner: e,
        })
        .expect("events serialize");
        let mut out = std::io::stdout().lock();
        // A closed pipe must not panic; the summary reports what matters.
        let _ = writeln!(out, "{line}").and_then(|_| out.flush());
    }
}

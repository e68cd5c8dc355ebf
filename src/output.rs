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

/// Lifecycle progress reporters: the right one for where output goes.
pub mod progress {
    use std::collections::HashMap;
    use std::io::{IsTerminal, Write};
    use std::sync::Mutex;
    use std::time::Duration;

    use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
    use serde::Serialize;

    use super::Format;
    use crate::lifecycle::{Event, Observer, Phase};

    /// indicatif bars when stderr is a terminal, a plain line per event
    /// otherwise (CI logs), NDJSON on stdout with `--output json`.
    pub fn observer(format: Format, quiet: bool) -> std::sync::Arc<dyn Observer> {
        match format {
            Format::Json => std::sync::Arc::new(Json),
            Format::Human if quiet => std::sync::Arc::new(Silent),
            Format::Human if std::io::stderr().is_terminal() => std::sync::Arc::new(Bars::new()),
            Format::Human => std::sync::Arc::new(Plain),
        }
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

    struct Bars {
        multi: MultiProgress,
        bars: Mutex<HashMap<String, ProgressBar>>,
        style: ProgressStyle,
    }

    impl Bars {
        fn new() -> Bars {
            Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: Mutex::new(HashMap::new()),
                style: ProgressStyle::with_template("{spinner} {prefix:<50} {msg} [{elapsed}]")
                    .expect("valid template"),
            }
        }
    }

    impl Observer for Bars {
        fn event(&self, e: &Event) {
            let mut bars = self.bars.lock().unwrap();
            let bar = bars.entry(e.unit.clone()).or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new_spinner());
                b.set_style(self.style.clone());
                b.set_prefix(e.unit.clone());
                b.enable_steady_tick(Duration::from_millis(120));
                b
            });
            let msg = match &e.detail {
                Some(d) => format!("{} ({d})", e.phase.as_str()),
                None => e.phase.as_str().to_string(),
            };
            if e.phase.is_final() {
                bar.finish_with_message(msg);
            } else {
                bar.set_message(msg);
            }
            if e.phase == Phase::Queued {
                bar.reset_elapsed();
            }
        }
    }
}

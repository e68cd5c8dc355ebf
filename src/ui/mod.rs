//! Presentation: everything orch draws or prints for a person or a
//! machine. The library returns typed reports; the commands hand them here.
//!
//! - [`output`]: stdout text and JSON documents, closed pipes ended quietly.
//! - [`progress`]: the lifecycle reporters (live, plain lines, NDJSON).
//! - [`live`]: the live display on a terminal.
//! - [`status`]: the status table.
//! - [`diff`]: `plan --diff`, a unified diff per changed unit.

pub mod diff;
pub mod live;
pub mod output;
pub mod progress;
pub mod status;

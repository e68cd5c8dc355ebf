//! One file per verb (cargo's `commands/*.rs`): each owns its clap `Args`
//! (flags, `--help` text) and a `run(ctx, args)` that turns them into the
//! typed request of one [`crate::ops`] call and prints its typed report as
//! text or JSON, returning the exit code of a run that got a report.
//! Shared: the global flags and the context (`ctx.rs`), the lifecycle
//! verbs' common flags (`lifecycle.rs`), printing (`common.rs`).

pub mod common;
pub mod ctx;
pub mod lifecycle;

pub mod completions;
pub mod install;
pub mod logs;
pub mod man;
pub mod plan;
pub mod reload;
pub mod render;
pub mod restart;
pub mod resume;
pub mod rollback;
pub mod start;
pub mod status;
pub mod stop;
pub mod stop_for_maintenance;

pub use ctx::{Ctx, Global};

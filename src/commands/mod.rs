//! One file per verb (cargo's `commands/*.rs`): turn the parsed arguments
//! into the options of one [`crate::ops`] call, and print its typed report
//! as text or JSON. Each returns the exit code of a run that got a report.

pub mod common;
pub mod docs;
pub mod install;
pub mod lifecycle;
pub mod logs;
pub mod maintenance;
pub mod plan;
pub mod render;
pub mod status;

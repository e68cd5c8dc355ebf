//! orch: run a master + workers service on systemd.
//!
//! Data flows one way: [`config`] (raw TOML with spans) → [`model`]
//! (validated [`model::Deployment`]) → [`render`] (unit file contents) →
//! [`plan`] (diff against the unit directory) → [`install`] (the only stage
//! that changes anything, through [`systemd`] over D-Bus).

pub mod changes;
pub mod cli;
pub mod commands;
pub mod config;
pub mod containers;
pub mod dbsessions;
pub mod error;
pub mod exit;
pub mod fleet;
pub mod generations;
pub mod health;
pub mod install;
pub mod jobs;
pub mod lifecycle;
pub mod logs;
pub mod maintenance;
pub mod members;
pub mod model;
pub mod op;
pub mod ops;
pub mod phases;
pub mod plan;
pub mod remote;
pub mod render;
pub mod restart;
pub mod since;
pub mod state;
pub mod status;
pub mod store;
pub mod systemd;
pub mod tunnel;
pub mod ui;

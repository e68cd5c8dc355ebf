//! One integration-test binary: one harness, one link of zbus and tokio, a module
//! per area (the layout of cargo's tests/testsuite).

/// The real-Synapse tests, named `_synapse::…` so that they start first:
/// libtest starts tests in name order, and these take minutes each (one at
/// a time, see SERIAL there); started last they ran alone after
/// everything else. A filter `synapse::` still selects them.
#[path = "synapse.rs"]
mod _synapse;
mod ansible;
mod bus;
mod canary;
mod cli;
mod common;
mod config_errors;
mod containers;
mod demo;
mod harness;
mod lifecycle;
mod load;
mod logs;
mod maintenance;
mod multihost;
mod names;
mod ports;
mod probe;
mod promises;
mod properties;
mod reliability;
mod reload;
mod remote;
mod render;
mod resources;
mod rollback;
mod ssh_real;
mod support;
mod systemd_install;
mod terminal;
mod window;

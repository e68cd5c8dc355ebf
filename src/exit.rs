//! Exit codes. One table, used by `--help`, the README and `main`.

pub const OK: i32 = 0;
/// A unit failed, or orch could not do what was asked.
pub const FAILURE: i32 = 1;
/// Usage or configuration error; nothing was changed.
pub const USAGE: i32 = 2;
/// A bounded wait ran out.
pub const TIMEOUT: i32 = 3;
/// `orch plan` and `orch install --dry-run`: changes are pending.
pub const CHANGES_PENDING: i32 = 4;
/// Interrupted by SIGINT or SIGTERM.
pub const INTERRUPTED: i32 = 130;

pub const HELP: &str = "\
Exit codes:
  0    success (plan, install --dry-run: nothing to do)
  1    a unit failed, or orch could not complete the operation
  2    usage or configuration error (or reload of a unit without ExecReload=); nothing was changed
  3    a bounded wait timed out
  4    plan, install --dry-run: changes are pending
  130  interrupted (SIGINT/SIGTERM)";

//! The error a command can end with, and its exit code. Each module keeps
//! its own error type; [`Error`] only gathers them so that `main` maps an
//! error to its documented code (src/exit.rs) by its type, never its text.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::exit;
use crate::fleet::AddressError;
use crate::install::InstallError;
use crate::logs::LogsError;
use crate::maintenance::MaintenanceError;
use crate::plan::PlanError;
use crate::render::RenderError;
use crate::status::StatusError;
use crate::systemd::SystemdError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Address(#[from] AddressError),
    /// Boxed: a store error with its paths is large, and `Error` is returned
    /// everywhere.
    #[error(transparent)]
    Plan(Box<PlanError>),
    #[error(transparent)]
    Install(#[from] InstallError),
    /// Systemd failed while install was changing things: named as such,
    /// since some hosts may already carry the new files.
    #[error("install of {deployment} failed: {cause}")]
    InstallSystemd {
        deployment: String,
        cause: SystemdError,
    },
    #[error(transparent)]
    Maintenance(#[from] MaintenanceError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Generation(#[from] crate::generations::GenerationError),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Logs(#[from] LogsError),
    #[error(transparent)]
    Changed(#[from] crate::changes::ChangesError),
    #[error(transparent)]
    Containers(#[from] crate::containers::ContainersError),
    #[error(transparent)]
    Systemd(#[from] SystemdError),
    /// `render --out` refused a unit name as a file name (render.rs says why).
    #[error(transparent)]
    UnitPath(#[from] crate::render::UnitPathError),
    /// A file or folder of `render --out`.
    #[error("cannot {action} {}: {cause}", path.display())]
    Write {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The files of `render --out`, written as one batch.
    #[error("cannot write the units into {}: {cause}", dir.display())]
    WriteUnits {
        dir: PathBuf,
        cause: crate::store::StoreError,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot handle {signal}: {cause}")]
    Signal {
        signal: &'static str,
        cause: std::io::Error,
    },
    /// Writing the result to standard output failed.
    #[error(transparent)]
    Output(std::io::Error),
    /// SIGINT or SIGTERM during a resume: the journal is kept, so a rerun
    /// of `orch resume` finishes it.
    #[error("interrupted during the resume: {deployment} is still in maintenance (its journal is kept, some units may be started and unmasked already); run `orch resume` to finish")]
    ResumeInterrupted { deployment: String },
}

impl From<PlanError> for Error {
    fn from(e: PlanError) -> Error {
        Error::Plan(Box::new(e))
    }
}

impl Error {
    /// The documented exit code (src/exit.rs).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Config(_) | Error::Render(_) | Error::Address(_) => {
                exit::USAGE
            }
            Error::Install(e) => e.exit_code(),
            Error::InstallSystemd { cause, .. } => cause.exit_code(),
            Error::Maintenance(e) => e.exit_code(),
            Error::State(e) => e.exit_code(),
            Error::Status(e) => e.exit_code(),
            Error::Logs(e) => e.exit_code(),
            Error::Systemd(e) => e.exit_code(),
            Error::ResumeInterrupted { .. } => exit::INTERRUPTED,
            Error::Plan(_)
            | Error::Generation(_)
            | Error::Changed(_)
            | Error::Containers(_)
            | Error::UnitPath(_)
            | Error::Write { .. }
            | Error::WriteUnits { .. }
            | Error::Runtime(_)
            | Error::Signal { .. }
            | Error::Output(_) => exit::FAILURE,
        }
    }
}

/// A usage error found after argument parsing: nothing was done (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("--host {0}")]
    Host(#[from] crate::remote::RemoteError),
    #[error("no configuration: pass --config PATH (or ORCH_CONFIG), or create ./orch.toml or /etc/orch/orch.toml")]
    NoConfig,
    /// A lifecycle target that names no unit.
    #[error(transparent)]
    Target(#[from] crate::members::UnknownTarget),
    /// `reload` of units that have nothing to reload with.
    #[error(transparent)]
    NotReloadable(#[from] crate::op::NotReloadable),
    #[error("{flag} must not contain control characters")]
    ControlCharacters { flag: &'static str },
}

impl UsageError {
    pub fn exit_code(&self) -> i32 {
        exit::USAGE
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn timeout() -> SystemdError {
        SystemdError::Timeout {
            action: "start x.service".into(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_timeout_is_3_wherever_it_is_wrapped() {
        assert_eq!(Error::Systemd(timeout()).exit_code(), exit::TIMEOUT);
        let install = Error::InstallSystemd {
            deployment: "d".into(),
            cause: timeout(),
        };
        assert_eq!(install.exit_code(), exit::TIMEOUT);
        assert_eq!(
            Error::Maintenance(MaintenanceError::Systemd(timeout())).exit_code(),
            exit::TIMEOUT
        );
        assert_eq!(
            Error::Install(InstallError::Systemd(timeout())).exit_code(),
            exit::TIMEOUT
        );
    }

    #[test]
    fn other_systemd_failures_are_1() {
        let closed = SystemdError::Closed("a job".into());
        assert_eq!(Error::Systemd(closed).exit_code(), exit::FAILURE);
        assert_eq!(
            Error::Install(InstallError::Drift(vec![])).exit_code(),
            exit::FAILURE
        );
    }

    #[test]
    fn usage_and_configuration_are_2() {
        assert_eq!(Error::from(UsageError::NoConfig).exit_code(), exit::USAGE);
        let config = ConfigError {
            path: "orch.toml".into(),
            line: Some(1),
            column: Some(1),
            key: None,
            message: "bad".into(),
        };
        assert_eq!(Error::from(config).exit_code(), exit::USAGE);
        let render = RenderError::Template {
            template: "t".into(),
            line: None,
            message: "m".into(),
        };
        assert_eq!(Error::from(render).exit_code(), exit::USAGE);
    }

    #[test]
    fn install_names_the_deployment_before_systemd_s_error() {
        let e = Error::InstallSystemd {
            deployment: "synapse".into(),
            cause: timeout(),
        };
        assert_eq!(
            e.to_string(),
            "install of synapse failed: timed out after 1s waiting for systemd to start x.service"
        );
    }
}

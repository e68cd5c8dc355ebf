//! The systemd boundary: D-Bus (zbus, tokio), no `systemctl` subprocesses.
//!
//! Everything orch says to systemd goes through here: the connection
//! ([`Systemd`]), the typed states ([`states`]), the queries that read them
//! under a call permit ([`queries`]), the job watcher ([`JobWatcher`]) and
//! polkit ([`polkit`]). The proxies are private: nothing above this module
//! names zbus or matches on a state's spelling.
//!
//! Every call is bounded by the connection's method timeout; connecting is
//! bounded too. Job completion is observed through the `JobRemoved` signal,
//! drained in its own task by [`JobWatcher`].

mod direct;
mod polkit;
mod proxies;
pub mod queries;
pub mod states;
mod watcher;

use std::sync::Arc;
use std::time::Duration;

use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedObjectPath};

use crate::remote::Remote;
use proxies::{ManagerProxy, ServiceProxy, UnitProxy};

pub use direct::{local_private_socket, PRIVATE_SOCKET};
pub use polkit::actions;
pub use queries::{Enqueued, Listed, MainProcess, UnitFacts, UnitNumbers};
pub use states::{ActiveState, JobKind, JobMode, JobResult, LoadState, ServiceResult};
pub use watcher::{JobOutcome, JobPath, JobWatcher};

/// Which bus to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    System,
    User,
    Address(String),
    /// A remote host's system bus through SSH and `systemd-stdio-bridge`,
    /// the way `systemctl -H` does.
    Remote(Remote),
}

/// A `--bus` value that names no bus.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a bus: use system, user or a D-Bus address such as unix:path=/run/dbus/system_bus_socket")]
pub struct BusError(String);

impl std::str::FromStr for Bus {
    type Err = BusError;
    fn from_str(s: &str) -> Result<Self, BusError> {
        match s {
            "system" => Ok(Bus::System),
            "user" | "session" => Ok(Bus::User),
            a if a.contains(':') => Ok(Bus::Address(a.to_string())),
            other => Err(BusError(other.to_string())),
        }
    }
}

impl std::fmt::Display for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bus::System => f.write_str("the system bus"),
            Bus::User => f.write_str("the user bus"),
            Bus::Address(a) => write!(f, "bus {a}"),
            Bus::Remote(r) => write!(f, "host {} (through {})", r.destination, r.ssh[0]),
        }
    }
}

/// What an operator checks when a bus cannot be reached.
fn connect_hint(bus: &Bus) -> &'static str {
    match bus {
        Bus::System | Bus::Address(_) => "is systemd running on this machine (a container without systemd as PID 1 has no system bus)? Another bus: --bus ADDRESS (e.g. unix:path=/run/dbus/system_bus_socket); another machine: --host [USER@]HOST",
        Bus::User => "is there a user session with its bus (XDG_RUNTIME_DIR, DBUS_SESSION_BUS_ADDRESS)? The system's units: --bus system",
        Bus::Remote(_) => "can this machine reach the host with ssh (the --ssh-command), and does the host run systemd (systemd-stdio-bridge)?",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("permission denied by systemd while trying to {action}: {detail}\n  run orch as root, or grant polkit's org.freedesktop.systemd1.manage-units, manage-unit-files and reload-daemon to this user")]
    PermissionDenied { action: String, detail: String },
    #[error("cannot connect to {bus} (bound {timeout:?}): {detail}\n  {hint}")]
    Connect {
        bus: String,
        timeout: Duration,
        detail: String,
        /// What to check, or how to reach another systemd.
        hint: &'static str,
    },
    #[error("timed out after {timeout:?} waiting for systemd to {action}")]
    Timeout { action: String, timeout: Duration },
    #[error("systemd failed to {action}: {cause}")]
    Call { action: String, cause: zbus::Error },
    #[error("the bus connection closed while waiting for {0}")]
    Closed(String),
}

impl SystemdError {
    /// A bounded wait that ran out is 3; any other failure 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            SystemdError::Timeout { .. } => crate::exit::TIMEOUT,
            _ => crate::exit::FAILURE,
        }
    }

    /// Wraps a zbus error, recognising permission and timeout failures.
    fn from_zbus(action: impl Into<String>, e: zbus::Error, timeout: Duration) -> Self {
        let action = action.into();
        let denied = |name: &str| {
            name == "org.freedesktop.DBus.Error.AccessDenied"
                || name == "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
        };
        match &e {
            zbus::Error::MethodError(name, detail, _) if denied(name.as_str()) => {
                SystemdError::PermissionDenied {
                    action,
                    detail: detail.clone().unwrap_or_else(|| name.to_string()),
                }
            }
            zbus::Error::FDO(f) => match f.as_ref() {
                zbus::fdo::Error::AccessDenied(d)
                | zbus::fdo::Error::InteractiveAuthorizationRequired(d) => {
                    SystemdError::PermissionDenied {
                        action,
                        detail: d.clone(),
                    }
                }
                _ => SystemdError::Call { action, cause: e },
            },
            zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                SystemdError::Timeout { action, timeout }
            }
            _ => SystemdError::Call { action, cause: e },
        }
    }

    /// systemd does not know the unit (`NoSuchUnit`): nothing to act on.
    pub fn is_no_such_unit(&self) -> bool {
        self.dbus_name() == Some("org.freedesktop.systemd1.NoSuchUnit")
    }

    /// The D-Bus error name, when systemd answered with an error.
    fn dbus_name(&self) -> Option<&str> {
        match self {
            SystemdError::Call {
                cause: zbus::Error::MethodError(name, _, _),
                ..
            } => Some(name.as_str()),
            _ => None,
        }
    }
}

/// A connection to systemd's manager.
#[derive(Clone)]
pub struct Systemd {
    /// The deployment's name for the host (`local` unless `[[hosts]]` says otherwise).
    pub host: String,
    pub bus: Bus,
    conn: Connection,
    manager: ManagerProxy<'static>,
    call_timeout: Duration,
    /// dbus-daemon refuses more than 128 pending replies per connection
    /// (`LimitsExceeded`); calls made for many units at once take a permit.
    calls: Arc<tokio::sync::Semaphore>,
    /// Jobs orch has enqueued and not yet seen end (see [`MAX_TRACKED_JOBS`]).
    jobs: Arc<tokio::sync::Semaphore>,
}

/// Jobs orch keeps in systemd's queue at once on one connection. systemd
/// tracks the D-Bus client of every job it enqueues with one match rule
/// (`sd_bus_track`) on *its own* bus connection, and dbus-daemon allows a
/// connection 512 rules (`max_match_rules_per_connection`). Past that,
/// AddMatch fails, sd-bus closes systemd's bus connection ("Got disconnect
/// on API bus"), every call in flight gets `NoReply` and the `JobRemoved`
/// signals sent meanwhile are lost: `start --all` of 1,000 units did that.
/// The rules are shared with systemd's own and every other client's jobs,
/// hence half of the limit.
pub const MAX_TRACKED_JOBS: usize = 256;

/// Method calls in flight at once on one connection, under dbus-daemon's
/// 128 pending replies. [`Systemd::permit`] covers up to
/// [`CALLS_PER_PERMIT`] calls; a query making more at once takes
/// [`Systemd::permits`] for each of them (status reads five properties of a
/// unit at once: with one permit for all five, 1,000 units had up to 160
/// calls in flight and 5-8 % of them came back `LimitsExceeded`).
pub const MAX_PENDING_CALLS: usize = 96;

/// The calls one [`Systemd::permit`] covers.
pub const CALLS_PER_PERMIT: u32 = 3;

impl Systemd {
    /// A permit for one call among many made at once (see `calls`).
    async fn permit(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.permits(CALLS_PER_PERMIT).await
    }

    /// Permits for `calls` calls made at once (at most [`MAX_PENDING_CALLS`]).
    async fn permits(&self, calls: u32) -> tokio::sync::OwnedSemaphorePermit {
        self.calls
            .clone()
            .acquire_many_owned(calls.min(MAX_PENDING_CALLS as u32))
            .await
            .expect("never closed")
    }

    /// A permit to keep one job in systemd's queue (see [`MAX_TRACKED_JOBS`]),
    /// held by the job layer from before it is enqueued until orch has seen
    /// it end.
    pub async fn job_permit(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.jobs
            .clone()
            .acquire_owned()
            .await
            .expect("never closed")
    }

    /// Connects, bounded by `timeout`; every later call is bounded by it too.
    pub async fn connect(bus: &Bus, timeout: Duration) -> Result<Systemd, SystemdError> {
        Self::connect_host(crate::model::LOCAL_HOST, bus, timeout).await
    }

    /// Connects to the systemd of the deployment's host `host`.
    pub async fn connect_host(
        host: &str,
        bus: &Bus,
        timeout: Duration,
    ) -> Result<Systemd, SystemdError> {
        let builder = match bus {
            Bus::System => zbus::conn::Builder::system(),
            Bus::User => zbus::conn::Builder::session(),
            Bus::Address(a) => zbus::conn::Builder::address(a.as_str()),
            Bus::Remote(r) => {
                // Built as a transport, not an address string: nothing in
                // the user or host part needs escaping.
                use zbus::address::transport::{Transport, Unixexec};
                let (program, args) = r.command();
                let exec = Unixexec::new(
                    program.into(),
                    None,
                    args.into_iter().map(Into::into).collect(),
                );
                zbus::conn::Builder::address(zbus::Address::from(Transport::Unixexec(exec)))
            }
        };
        let fail = |detail: String| SystemdError::Connect {
            bus: match bus {
                _ if host == crate::model::LOCAL_HOST => bus.to_string(),
                Bus::Remote(r) => format!("host {host} ({} through {})", r.destination, r.ssh[0]),
                _ => format!("host {host} ({bus})"),
            },
            timeout,
            detail,
            hint: connect_hint(bus),
        };
        let conn = tokio::time::timeout(timeout, builder.method_timeout(timeout).build())
            .await
            .map_err(|_| fail(format!("no answer within {timeout:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        Self::over(host, bus, conn, timeout, MAX_PENDING_CALLS)
            .await
            .map_err(|e| fail(e.to_string()))
    }

    /// The manager on an established connection, with `max_calls` permits.
    async fn over(
        host: &str,
        bus: &Bus,
        conn: Connection,
        timeout: Duration,
        max_calls: usize,
    ) -> Result<Systemd, zbus::Error> {
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        Ok(Systemd {
            host: host.to_string(),
            bus: bus.clone(),
            conn,
            manager,
            call_timeout: timeout,
            calls: Arc::new(tokio::sync::Semaphore::new(max_calls)),
            jobs: Arc::new(tokio::sync::Semaphore::new(MAX_TRACKED_JOBS)),
        })
    }

    /// Wraps a failed call; the action names the host when it is not this machine.
    fn err(&self, action: impl Into<String>, e: zbus::Error) -> SystemdError {
        let action = action.into();
        let action = match (&self.bus, self.host.as_str()) {
            (Bus::Remote(r), crate::model::LOCAL_HOST) => format!("{action} on {}", r.destination),
            (_, crate::model::LOCAL_HOST) => action,
            (_, host) => format!("{action} on host {host}"),
        };
        SystemdError::from_zbus(action, e, self.call_timeout)
    }

    /// The bound of every call on this connection (`--call-timeout`).
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// The remote host, when this connection goes over SSH.
    pub fn remote(&self) -> Option<&Remote> {
        match &self.bus {
            Bus::Remote(r) => Some(r),
            _ => None,
        }
    }

    /// A property reader for one unit, loading it if needed.
    async fn unit(&self, name: &str) -> Result<UnitProxy<'static>, SystemdError> {
        let path = self
            .manager
            .load_unit(name)
            .await
            .map_err(|e| self.err(format!("load {name}"), e))?;
        UnitProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| self.err(format!("open {name}"), e))
    }

    pub async fn reload(&self) -> Result<(), SystemdError> {
        self.manager
            .reload()
            .await
            .map_err(|e| self.err("reload its configuration", e))
    }
}

impl Systemd {
    /// The service interface of a loaded unit at `path`.
    async fn service_at(
        &self,
        path: OwnedObjectPath,
    ) -> Result<ServiceProxy<'static>, SystemdError> {
        ServiceProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| self.err("open service", e))
    }

    /// A unit's interface at a known object path (no `LoadUnit` call).
    async fn unit_at(&self, path: OwnedObjectPath) -> Result<UnitProxy<'static>, SystemdError> {
        UnitProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| self.err("open unit", e))
    }
}

//! systemd over D-Bus (zbus, tokio). No `systemctl` subprocesses.
//!
//! Every call is bounded by the connection's method timeout; connecting is
//! bounded too. Job completion is observed through the `JobRemoved` signal,
//! drained in its own task by [`JobWatcher`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::Notify;
use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedObjectPath};

/// `(name, description, load, active, sub, following, path, job id, job type, job path)`
pub type UnitListEntry = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);
/// `(id, path, unit, type)` of a job systemd added to a transaction.
pub type AffectedJob = (u32, OwnedObjectPath, String, OwnedObjectPath, String);
/// `(id, unit, type, state, job path, unit path)` from `ListJobs`.
pub type JobListEntry = (
    u32,
    String,
    String,
    String,
    OwnedObjectPath,
    OwnedObjectPath,
);
/// One command line of `ExecStart=`, `ExecReload=`, …: `(path, argv,
/// ignore-failure, start realtime, start monotonic, exit realtime, exit
/// monotonic, pid, code, status)`.
pub type ExecCommand = (String, Vec<String>, bool, u64, u64, u64, u64, u32, i32, i32);
/// `(type, file, destination)` of a change to unit files.
pub type UnitFileChange = (String, String, String);

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn reload(&self) -> zbus::Result<()>;
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Returns `(id, job, unit id, unit path, job type, affected jobs)`.
    #[allow(clippy::type_complexity)]
    fn enqueue_unit_job(
        &self,
        name: &str,
        job_type: &str,
        job_mode: &str,
    ) -> zbus::Result<(
        u32,
        OwnedObjectPath,
        String,
        OwnedObjectPath,
        String,
        Vec<AffectedJob>,
    )>;
    fn cancel_job(&self, id: u32) -> zbus::Result<()>;
    fn list_jobs(&self) -> zbus::Result<Vec<JobListEntry>>;
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    fn get_unit_processes(&self, name: &str) -> zbus::Result<Vec<(String, u32, String)>>;
    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<UnitListEntry>>;
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<UnitFileChange>)>;
    fn disable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<UnitFileChange>>;
    fn mask_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<Vec<UnitFileChange>>;
    fn unmask_unit_files(&self, files: &[&str], runtime: bool)
        -> zbus::Result<Vec<UnitFileChange>>;
    fn get_unit_file_state(&self, file: &str) -> zbus::Result<String>;

    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    fn reloading(&self, active: bool) -> zbus::Result<()>;

    #[zbus(property)]
    fn system_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Unit {
    #[zbus(property)]
    fn id(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn fragment_path(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn wants(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn requires(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn binds_to(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn consists_of(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn part_of(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn after(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn need_daemon_reload(&self) -> zbus::Result<bool>;
    /// `(id, path)` of the unit's pending job; id 0 when there is none.
    #[zbus(property)]
    fn job(&self) -> zbus::Result<(u32, OwnedObjectPath)>;
}

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

/// `[USER@]HOST[:PORT]` reached with an SSH command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// `USER@HOST` or `HOST`, passed to ssh as one argument.
    pub destination: String,
    pub host: String,
    pub port: Option<u16>,
    /// The SSH program and the options the operator gave it.
    pub ssh: Vec<String>,
}

/// Why a remote host cannot be reached as given.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Address(#[from] crate::model::AddressError),
    #[error("the SSH command is empty")]
    EmptySshCommand,
}

impl Remote {
    /// Parses `[USER@]HOST[:PORT]` (see [`crate::model::Address`]).
    pub fn parse(spec: &str, ssh_command: &str) -> Result<Remote, RemoteError> {
        let a = crate::model::Address::parse(spec)?;
        let ssh: Vec<String> = ssh_command.split_whitespace().map(str::to_string).collect();
        if ssh.is_empty() {
            return Err(RemoteError::EmptySshCommand);
        }
        Ok(Remote {
            destination: a.destination,
            host: a.host,
            port: a.port,
            ssh,
        })
    }

    /// The program and its arguments: `ssh -xT [-p PORT] -- DEST systemd-stdio-bridge`.
    pub fn command(&self) -> (String, Vec<String>) {
        self.run("systemd-stdio-bridge")
    }

    /// `ssh … -- DEST REMOTE_COMMAND`. BatchMode makes a password or
    /// host-key prompt fail at once instead of waiting for a terminal that
    /// is not there. The remote shell parses `remote_command`.
    pub fn run(&self, remote_command: &str) -> (String, Vec<String>) {
        self.with_options(&[], Some(remote_command))
    }

    /// `ssh … OPTIONS -- DEST [REMOTE_COMMAND]`: `options` go after the
    /// operator's own, before the destination (`-W`, `-o ControlPath=…`).
    pub fn with_options(
        &self,
        options: &[String],
        remote_command: Option<&str>,
    ) -> (String, Vec<String>) {
        let mut args: Vec<String> = self.ssh[1..].to_vec();
        args.extend(["-xT".into(), "-o".into(), "BatchMode=yes".into()]);
        if let Some(p) = self.port {
            args.extend(["-p".into(), p.to_string()]);
        }
        args.extend(options.iter().cloned());
        args.extend(["--".into(), self.destination.clone()]);
        args.extend(remote_command.map(str::to_string));
        (self.ssh[0].clone(), args)
    }
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
    pub fn from_zbus(action: impl Into<String>, e: zbus::Error, timeout: Duration) -> Self {
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

    /// The D-Bus error name, when systemd answered with an error.
    pub fn dbus_name(&self) -> Option<&str> {
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
    pub conn: Connection,
    pub manager: ManagerProxy<'static>,
    pub call_timeout: Duration,
    /// dbus-daemon refuses more than 128 pending replies per connection
    /// (`LimitsExceeded`); calls made for many units at once take a permit.
    calls: Arc<tokio::sync::Semaphore>,
}

/// Permits for method calls in flight at once on one connection; a permit
/// covers up to three calls (status reads three properties under one), which
/// keeps orch well under dbus-daemon's 128.
pub const MAX_PENDING_CALLS: usize = 32;

impl Systemd {
    /// A permit for one call among many made at once (see `calls`).
    pub async fn permit(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.calls
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
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(Systemd {
            host: host.to_string(),
            bus: bus.clone(),
            conn,
            manager,
            call_timeout: timeout,
            calls: Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_CALLS)),
        })
    }

    /// Wraps a failed call; the action names the host when it is not this machine.
    pub fn err(&self, action: impl Into<String>, e: zbus::Error) -> SystemdError {
        let action = action.into();
        let action = match (&self.bus, self.host.as_str()) {
            (Bus::Remote(r), crate::model::LOCAL_HOST) => format!("{action} on {}", r.destination),
            (_, crate::model::LOCAL_HOST) => action,
            (_, host) => format!("{action} on host {host}"),
        };
        SystemdError::from_zbus(action, e, self.call_timeout)
    }

    /// The remote host, when this connection goes over SSH.
    pub fn remote(&self) -> Option<&Remote> {
        match &self.bus {
            Bus::Remote(r) => Some(r),
            _ => None,
        }
    }

    /// A property reader for one unit, loading it if needed.
    pub async fn unit(&self, name: &str) -> Result<UnitProxy<'static>, SystemdError> {
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

/// Result of a job, as systemd names it in `JobRemoved`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobOutcome {
    pub unit: String,
    pub result: crate::jobs::JobResult,
}

#[derive(Default)]
struct JobState {
    done: HashMap<OwnedObjectPath, JobOutcome>,
    closed: bool,
}

/// Collects `JobRemoved` signals so that waiting for a job is race-free: the
/// stream is set up and `Subscribe` called before any job is enqueued, and a
/// job that finishes before anyone waits for it is remembered.
pub struct JobWatcher {
    host: String,
    conn: Connection,
    calls: Arc<tokio::sync::Semaphore>,
    state: Arc<Mutex<JobState>>,
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl JobWatcher {
    pub async fn start(sd: &Systemd) -> Result<JobWatcher, SystemdError> {
        let mut stream = sd
            .manager
            .receive_job_removed()
            .await
            .map_err(|e| sd.err("watch jobs", e))?;
        sd.manager
            .subscribe()
            .await
            .map_err(|e| sd.err("subscribe to job signals", e))?;
        let state = Arc::new(Mutex::new(JobState::default()));
        let notify = Arc::new(Notify::new());
        let (st, nt) = (state.clone(), notify.clone());
        // Drained in its own task so a slow waiter never makes the bus buffer signals.
        let task = tokio::spawn(async move {
            while let Some(signal) = stream.next().await {
                if let Ok(args) = signal.args() {
                    let outcome = JobOutcome {
                        unit: args.unit.clone(),
                        result: crate::jobs::JobResult::from_dbus(&args.result),
                    };
                    st.lock().unwrap().done.insert(args.job.clone(), outcome);
                    nt.notify_waiters();
                }
            }
            st.lock().unwrap().closed = true;
            nt.notify_waiters();
        });
        Ok(JobWatcher {
            host: sd.host.clone(),
            conn: sd.conn.clone(),
            calls: sd.calls.clone(),
            state,
            notify,
            task,
        })
    }

    /// Waits until `job` is removed, up to `timeout`. `None` on timeout.
    ///
    /// A `JobRemoved` can be lost (systemd re-executing, a reconnect), so
    /// every second without news the job object itself is asked for; if it
    /// is gone, the result is reported as `vanished` and the caller judges the
    /// unit by its state.
    pub async fn wait(
        &self,
        job: &OwnedObjectPath,
        timeout: Duration,
    ) -> Result<Option<JobOutcome>, SystemdError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register before checking, so a signal between the two is not lost.
            let notified = self.notify.notified();
            if let Some(o) = self.finished(job)? {
                return Ok(Some(o));
            }
            let tick = (tokio::time::Instant::now() + Duration::from_secs(1)).min(deadline);
            match tokio::time::timeout_at(tick, notified).await {
                Ok(()) => continue,
                Err(_) if tick >= deadline => return Ok(None),
                Err(_) => {
                    if !self.job_exists(job).await {
                        if let Some(o) = self.finished(job)? {
                            return Ok(Some(o));
                        }
                        tracing::debug!(job = job.as_str(), "job gone without a JobRemoved signal");
                        return Ok(Some(JobOutcome {
                            unit: String::new(),
                            result: crate::jobs::JobResult::Vanished,
                        }));
                    }
                }
            }
        }
    }

    /// Whether the connection's signal stream has ended (the bus is gone).
    pub fn is_closed(&self) -> bool {
        self.state.lock().unwrap().closed
    }

    fn finished(&self, job: &OwnedObjectPath) -> Result<Option<JobOutcome>, SystemdError> {
        let st = self.state.lock().unwrap();
        if let Some(o) = st.done.get(job) {
            return Ok(Some(o.clone()));
        }
        if st.closed {
            return Err(SystemdError::Closed(
                if self.host == crate::model::LOCAL_HOST {
                    format!("job {}", job.as_str())
                } else {
                    format!("job {} on host {}", job.as_str(), self.host)
                },
            ));
        }
        Ok(None)
    }

    async fn job_exists(&self, job: &OwnedObjectPath) -> bool {
        let _permit = self
            .calls
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let reply = self
            .conn
            .call_method(
                Some("org.freedesktop.systemd1"),
                job.as_str(),
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &("org.freedesktop.systemd1.Job", "State"),
            )
            .await;
        match reply {
            Ok(_) => true,
            // Only a definite "no such object" counts; any other error keeps waiting.
            Err(zbus::Error::MethodError(name, _, _)) => !matches!(
                name.as_str(),
                "org.freedesktop.DBus.Error.UnknownObject"
                    | "org.freedesktop.systemd1.NoSuchJob"
                    | "org.freedesktop.DBus.Error.UnknownMethod"
            ),
            Err(_) => true,
        }
    }
}

impl Drop for JobWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Service {
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn exec_main_code(&self) -> zbus::Result<i32>;
    #[zbus(property)]
    fn exec_main_status(&self) -> zbus::Result<i32>;
    #[zbus(property)]
    fn n_restarts(&self) -> zbus::Result<u32>;
    #[zbus(property, name = "Type")]
    fn service_type(&self) -> zbus::Result<String>;
    /// `ExecReload=`: one entry per command line, empty when there is none.
    #[zbus(property)]
    fn exec_reload(&self) -> zbus::Result<Vec<ExecCommand>>;
    /// When the main process was started (µs since the epoch; 0: never).
    #[zbus(property)]
    fn exec_main_start_timestamp(&self) -> zbus::Result<u64>;
}

impl Systemd {
    /// The service interface of a loaded unit at `path`.
    pub async fn service_at(
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
    pub async fn unit_at(&self, path: OwnedObjectPath) -> Result<UnitProxy<'static>, SystemdError> {
        UnitProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| self.err("open unit", e))
    }
}

/// polkit actions orch needs, by what it does.
pub mod actions {
    pub const MANAGE_UNITS: &str = "org.freedesktop.systemd1.manage-units";
    pub const MANAGE_UNIT_FILES: &str = "org.freedesktop.systemd1.manage-unit-files";
    pub const RELOAD_DAEMON: &str = "org.freedesktop.systemd1.reload-daemon";
}

impl Systemd {
    /// Fails before anything is changed when a non-root caller may not do
    /// `actions`: systemd trusts root and asks polkit for everyone else, so
    /// orch asks polkit first (without interaction) rather than finding out
    /// half-way through an install.
    pub async fn preflight(&self, what: &str, actions: &[&str]) -> Result<(), SystemdError> {
        let Some(name) = self.conn.unique_name() else {
            return Ok(());
        };
        // Over SSH the caller systemd sees is the remote login, not this process.
        let uid = match self.remote() {
            None => nix::unistd::geteuid().as_raw(),
            Some(_) => {
                let reply = self
                    .conn
                    .call_method(
                        Some("org.freedesktop.DBus"),
                        "/org/freedesktop/DBus",
                        Some("org.freedesktop.DBus"),
                        "GetConnectionUnixUser",
                        &(name.as_str(),),
                    )
                    .await
                    .map_err(|e| self.err("ask the bus who orch is", e))?;
                reply
                    .body()
                    .deserialize::<u32>()
                    .map_err(|e| self.err("read the bus's answer", e))?
            }
        };
        if uid == 0 {
            return Ok(());
        }
        for action in actions {
            let mut subject = HashMap::new();
            subject.insert("name", zbus::Variant::from(name.as_str()));
            let details: HashMap<&str, &str> = HashMap::new();
            let reply = self
                .conn
                .call_method(
                    Some("org.freedesktop.PolicyKit1"),
                    "/org/freedesktop/PolicyKit1/Authority",
                    Some("org.freedesktop.PolicyKit1.Authority"),
                    "CheckAuthorization",
                    &(("system-bus-name", subject), *action, details, 0u32, ""),
                )
                .await;
            let denied = |detail: String| SystemdError::PermissionDenied {
                action: what.to_string(),
                detail,
            };
            match reply {
                Ok(msg) => {
                    let (authorized, challenge, _): (bool, bool, HashMap<String, String>) = msg
                        .body()
                        .deserialize()
                        .map_err(|e| self.err("read polkit's answer", e))?;
                    if !authorized {
                        return Err(denied(format!(
                            "polkit does not grant {action} to uid {uid}{}",
                            if challenge {
                                " without interactive authentication"
                            } else {
                                ""
                            }
                        )));
                    }
                }
                Err(zbus::Error::MethodError(n, _, _))
                    if matches!(
                        n.as_str(),
                        "org.freedesktop.DBus.Error.ServiceUnknown"
                            | "org.freedesktop.DBus.Error.NameHasNoOwner"
                    ) =>
                {
                    return Err(denied(format!(
                        "polkit is not running, so systemd lets only root {action}; uid {uid} is not root"
                    )));
                }
                Err(e) => return Err(self.err(format!("ask polkit about {action}"), e)),
            }
        }
        Ok(())
    }
}

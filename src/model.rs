//! Validated model: the [`Deployment`] with every unit, name, port, probe,
//! timeout and dependency resolved. Built from [`crate::config::RawConfig`];
//! nothing after this stage has to check the operator's input again.

pub mod container;
mod names;
mod resolve;
pub mod resources;
pub mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::{ConfigError, Source};
pub use names::{allocate, renames_by_name, Installed, Naming, Slot};
use resolve::Resolver;
pub use resources::Resources;
pub use values::{
    check_unit_name, check_value, parse_duration, parse_probe, parse_probe_from, AddressError,
    DurationError, ProbeError, UnitNameError, ValueError, MAX_DURATION, MAX_UNIT_NAME,
    MAX_VALUE_LEN,
};

pub const DEFAULT_UNIT_DIR: &str = "/etc/systemd/system";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/orch";
/// Where runtime masks go. Not `/run/systemd/system`, which `MaskUnitFiles`
/// with runtime=true uses: that folder ranks below `/etc/systemd/system`, so
/// a mask there does not hide a unit file installed in /etc.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/systemd/system.control";
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(90);
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
/// More workers than this in one block is almost certainly a typo.
pub const MAX_COUNT: i64 = 10_000;
/// The most workers of a deployment, all blocks together. Celery and PHP-FPM
/// pools run thousands of processes, one unit each; orch renders, plans and
/// installs 5,000 in well under a second and time grows linearly
/// (docs/performance.md), so the bound is systemd's comfort, not orch's: a
/// few thousand units load in seconds, and 10,000 stays within the default
/// `DefaultTasksMax` headroom and file-descriptor limits of PID 1. It also
/// bounds every per-unit list orch builds (the master's `Wants=`, a plan).
pub const MAX_WORKERS: usize = 10_000;
/// The host a unit lives on when nothing says otherwise: the machine orch
/// runs on (over `--bus`), or the one `--host` names.
pub const LOCAL_HOST: &str = "local";

/// What the command line changes about a deployment before it is validated.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--unit-dir`
    pub unit_dir: Option<PathBuf>,
    /// `--host`: the address of the `local` host.
    pub local_address: Option<String>,
    /// The deployment's worker units already installed, which keep their
    /// names (see [`names`]); empty for a fresh allocation.
    pub installed: Installed,
}

/// A machine units live on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    pub name: String,
    /// `[USER@]HOST[:PORT]` reached over SSH; `None` for this machine.
    pub address: Option<String>,
}

impl Host {
    /// The network name of the host, as probes reach it.
    pub fn network_name(&self) -> String {
        match &self.address {
            Some(a) => Address::parse(a)
                .map(|a| a.host)
                .unwrap_or_else(|_| a.clone()),
            None => "localhost".to_string(),
        }
    }

    /// Whether the host is this machine as far as the network goes.
    pub fn is_this_machine(&self) -> bool {
        is_loopback(&self.network_name())
    }
}

/// `[USER@]HOST[:PORT]`, as ssh takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// `USER@HOST` or `HOST`, passed to ssh as one argument.
    pub destination: String,
    pub host: String,
    pub port: Option<u16>,
}

/// `localhost`, `127.0.0.0/8`, `::1`.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    pub name: String,
    pub config_path: PathBuf,
    pub unit_dir: PathBuf,
    pub templates_dir: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// Runtime masks for maintenance (forgotten at reboot).
    pub runtime_dir: PathBuf,
    /// `NAME.slice`: every generated unit runs in it, on every host.
    pub slice: String,
    /// Every host, `local` first; units name theirs by `host`.
    pub hosts: Vec<Host>,
    /// How worker units are named.
    pub naming: Naming,
    pub database: Option<External>,
    /// `[database] roles`: whose sessions `stop-for-maintenance` waits out.
    pub db_sessions: Option<DbSessions>,
    /// `[[prerequisites]]`: started and awaited before the master, like the
    /// database, never stopped with the deployment.
    pub prerequisites: Vec<Prerequisite>,
    pub master: Service,
    pub workers: Vec<Worker>,
    pub dependents: Vec<External>,
}

/// A unit orch generates: the master or one worker.
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    /// Full unit name, e.g. `matrix-synapse-worker-0-generic.service`.
    pub unit: String,
    /// Unit name without the `.service` suffix.
    pub name: String,
    /// The name of the host it lives on.
    pub host: String,
    pub description: String,
    pub exec_start: String,
    pub exec_reload: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub working_directory: Option<String>,
    pub environment: BTreeMap<String, String>,
    pub environment_file: Option<String>,
    #[serde(rename = "type")]
    pub service_type: String,
    pub restart: String,
    #[serde(with = "secs")]
    pub restart_sec: Duration,
    pub port: Option<u16>,
    pub health: Option<Probe>,
    /// `start_timeout`, `stop_timeout`, `health_timeout`.
    #[serde(flatten)]
    pub bounds: Bounds,
    /// `MemoryMax=`, `CPUQuota=`, … of the unit.
    pub resources: Resources,
    /// Set when the section has an `image`: `exec_start` is then the
    /// engine's command line and the container's own command is here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<container::Container>,
    pub exec_stop: Option<String>,
    pub exec_stop_post: Option<String>,
    /// `NotifyAccess=`: `all` for a container (conmon notifies, not podman).
    pub notify_access: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Worker {
    /// The number in the unit's name: with `sequential` naming, an index
    /// across kinds that never shifts; with `per-kind`, `kind_index`.
    pub index: usize,
    /// Rank within its kind (the `i` of `port_base + i`).
    pub kind_index: usize,
    /// The installed unit this worker renames (the naming changed), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    pub kind: String,
    /// `background = true`: no client request waits on this kind. Alone of
    /// its kind, a rolling restart's outage window restarts it after the
    /// master and the lone workers clients need are ready (see
    /// [`crate::phases`]), so that they get the CPU first.
    pub background: bool,
    pub service: Service,
}

/// How long a unit may take to start, to stop, and to pass its probe once
/// active: the unit's own timeouts, which orch's waits outlast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bounds {
    #[serde(rename = "start_timeout", with = "secs")]
    pub start: Duration,
    #[serde(rename = "stop_timeout", with = "secs")]
    pub stop: Duration,
    #[serde(rename = "health_timeout", with = "secs")]
    pub health: Duration,
}

impl Bounds {
    /// The same bound for all three.
    pub fn all(d: Duration) -> Bounds {
        Bounds {
            start: d,
            stop: d,
            health: d,
        }
    }
}

/// A unit orch does not generate but orders and awaits: the database or a dependent.
#[derive(Debug, Clone, Serialize)]
pub struct External {
    pub unit: String,
    pub host: String,
    pub health: Option<Probe>,
    /// `start_timeout`, `stop_timeout`, `health_timeout`.
    #[serde(flatten)]
    pub bounds: Bounds,
}

/// How `stop-for-maintenance` proves the database has no session of the
/// deployment's roles (`[database] roles`, `superuser`, `connect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DbSessions {
    pub roles: Vec<String>,
    /// The role orch connects as: it must see every session
    /// (`pg_stat_activity`) and may end them (`pg_terminate_backend`).
    pub superuser: String,
    pub connect: DbConnect,
    /// The database's host: a `tcp://` address is connected from there.
    pub host: String,
}

/// Where orch reaches PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DbConnect {
    /// The server's Unix socket (`DIR/.s.PGSQL.PORT`) on orch's own host,
    /// connected as the OS user named like the superuser, so that peer
    /// authentication (Debian's default for `postgres`) lets orch in.
    Socket { path: PathBuf },
    /// TCP from the database's host (through SSH when it is remote); a
    /// password, if the server asks, from `PGPASSWORD`.
    Tcp { host: String, port: u16 },
}

/// A `[[prerequisites]]` unit: what the master needs but orch does not own.
#[derive(Debug, Clone, Serialize)]
pub struct Prerequisite {
    #[serde(flatten)]
    pub external: External,
    /// `Requires=` in the master (the master stops with it) rather than
    /// `Wants=` (the master survives it; orch still starts and awaits it).
    pub requires: bool,
}

/// A readiness probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Probe {
    /// `http://host[:port]/path`: ready on a 2xx answer.
    Http {
        host: String,
        port: u16,
        path: String,
        from: ProbeFrom,
    },
    /// `tcp://host:port`: ready when a connection is accepted.
    Tcp {
        host: String,
        port: u16,
        from: ProbeFrom,
    },
    /// `exec:COMMAND`: ready when the command exits 0.
    Exec { command: String },
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Http {
                host, port, path, ..
            } => write!(f, "http://{}:{port}{path}", bracket(host)),
            Probe::Tcp { host, port, .. } => write!(f, "tcp://{}:{port}", bracket(host)),
            Probe::Exec { command } => write!(f, "exec:{command}"),
        }
    }
}

/// Where an `http://` or `tcp://` probe connects from (`probe_from`). An
/// `exec:` probe has no such choice: its command runs on the unit's host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeFrom {
    /// The unit's host: directly when it is this machine, through SSH when
    /// it is remote, so the address means what it means where the unit runs.
    #[default]
    Host,
    /// The machine orch runs on, whatever the unit's host: for a port the
    /// operator wants checked as seen from outside that host.
    Local,
}

impl Probe {
    /// The probe with `probe_from` applied. `exec:` refuses it: there is no
    /// "local" for a command that must run beside the unit.
    pub fn with_from(self, from: ProbeFrom) -> Result<Probe, ProbeError> {
        match self {
            Probe::Http {
                host, port, path, ..
            } => Ok(Probe::Http {
                host,
                port,
                path,
                from,
            }),
            Probe::Tcp { host, port, .. } => Ok(Probe::Tcp { host, port, from }),
            Probe::Exec { .. } => Err(ProbeError::ExecFrom),
        }
    }

    /// `probe_from` of an http or tcp probe; `Host` for `exec:`.
    pub fn from(&self) -> ProbeFrom {
        match self {
            Probe::Http { from, .. } | Probe::Tcp { from, .. } => *from,
            Probe::Exec { .. } => ProbeFrom::Host,
        }
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Which part of the deployment a unit plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Database,
    Master,
    Worker,
    Dependent,
    /// A `[[prerequisites]]` unit, or one the master's own unit requires
    /// (`Requires=`/`BindsTo=`, from a template override or a drop-in), read
    /// from systemd: started and awaited before the master, like the
    /// database, and stopped only when named.
    Prerequisite,
    /// The deployment's `NAME.slice`: installed by orch, never started,
    /// stopped or masked by it (systemd starts it with its first unit).
    Slice,
}

impl Deployment {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path, unit_dir_override: Option<&Path>) -> Result<Deployment, ConfigError> {
        Self::load_with(
            path,
            &Overrides {
                unit_dir: unit_dir_override.map(Path::to_path_buf),
                local_address: None,
                installed: Installed::default(),
            },
        )
    }

    /// Reads, parses and validates a configuration file, with the command line's overrides.
    pub fn load_with(path: &Path, o: &Overrides) -> Result<Deployment, ConfigError> {
        let source = Source::read(path)?;
        let raw = source.parse()?;
        Resolver { src: &source }.deployment(&raw, o)
    }

    /// Validates already-read configuration text, with the command line's
    /// overrides (and the installed worker names).
    pub fn resolve(source: &Source, o: &Overrides) -> Result<Deployment, ConfigError> {
        let raw = source.parse()?;
        Resolver { src: source }.deployment(&raw, o)
    }

    /// Validates already-read configuration text (used by tests and fuzzing).
    pub fn from_source(
        source: &Source,
        unit_dir_override: Option<&Path>,
    ) -> Result<Deployment, ConfigError> {
        let raw = source.parse()?;
        let o = Overrides {
            unit_dir: unit_dir_override.map(Path::to_path_buf),
            local_address: None,
            installed: Installed::default(),
        };
        Resolver { src: source }.deployment(&raw, &o)
    }

    /// The deployment as its installed files name it: a worker the
    /// configuration renames (`naming` changed, not installed yet, or a
    /// rollback put the old names back) keeps its installed unit, so that
    /// `start`/`restart` act on the files that are there.
    pub fn as_installed(mut self) -> Deployment {
        for w in &mut self.workers {
            if let Some(old) = w.previous.take() {
                w.service.unit = old;
            }
        }
        self
    }

    /// Every generated unit: the master, then the workers in order.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        std::iter::once(&self.master).chain(self.workers.iter().map(|w| &w.service))
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .expect("units name only hosts the model resolved")
    }

    /// The hosts at least one unit lives on, `local` first if used.
    pub fn used_hosts(&self) -> Vec<&Host> {
        let mut used: Vec<&str> = self.services().map(|s| s.host.as_str()).collect();
        used.extend(self.database.iter().map(|x| x.host.as_str()));
        used.extend(self.prerequisites.iter().map(|p| p.external.host.as_str()));
        used.extend(self.dependents.iter().map(|x| x.host.as_str()));
        self.hosts
            .iter()
            .filter(|h| used.contains(&h.name.as_str()))
            .collect()
    }

    /// The hosts `install` and `plan` visit: every declared host, whether or
    /// not a unit still lives there (units moved away are pruned from it),
    /// and this machine when a unit lives on it.
    pub fn install_hosts(&self) -> Vec<&Host> {
        let used = self.used_hosts();
        self.hosts
            .iter()
            .filter(|h| h.name != LOCAL_HOST || used.contains(h))
            .collect()
    }

    /// Whether units live on more than one host.
    pub fn is_multi_host(&self) -> bool {
        self.used_hosts().len() > 1
    }
}

mod secs {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

#[cfg(test)]
mod mutants_tests {
    use super::*;

    #[test]
    fn addresses_parse_user_host_and_port() {
        let a = Address::parse("deploy@db.example:2222").unwrap();
        assert_eq!(a.destination, "deploy@db.example");
        assert_eq!(a.host, "db.example");
        assert_eq!(a.port, Some(2222));
        let a = Address::parse("u@x@[::1]:22").unwrap();
        assert_eq!(
            (a.destination.as_str(), a.host.as_str(), a.port),
            ("u@x@::1", "::1", Some(22))
        );
        let a = Address::parse("fe80::1").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("fe80::1", None));
        assert_eq!(Address::parse("h").unwrap().destination, "h");
        for bad in ["@h", "[::1", "", "-h", "h h", "-u@h", "u u@h", "h:0", "h:x"] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_names_and_hosts() {
        for l in ["localhost", "LocalHost", "a.localhost", "127.0.0.2", "::1"] {
            assert!(is_loopback(l), "{l}");
        }
        for n in ["db", "10.0.0.1", "localhost.example", "::2"] {
            assert!(!is_loopback(n), "{n}");
        }
        let host = |a: Option<&str>| Host {
            name: "h".into(),
            address: a.map(str::to_string),
        };
        assert_eq!(host(None).network_name(), "localhost");
        assert!(host(None).is_this_machine());
        assert_eq!(host(Some("u@db:22")).network_name(), "db");
        assert!(!host(Some("u@db:22")).is_this_machine());
        assert!(host(Some("root@127.0.0.1")).is_this_machine());
        assert_eq!(host(Some("@bad")).network_name(), "@bad");
    }

    fn deployment(text: &str) -> Deployment {
        let source = crate::config::Source {
            path: "/etc/orch/orch.toml".into(),
            text: text.to_string(),
        };
        Deployment::from_source(&source, None).unwrap()
    }

    const TWO_HOSTS: &str = r#"
[deployment]
name = "fx"
[[hosts]]
name = "db1"
address = "admin@db1.example"
[[hosts]]
name = "w1"
address = "admin@w1.example"
[[hosts]]
name = "spare"
address = "admin@spare.example"
[database]
unit = "postgresql.service"
host = "db1"
[master]
exec_start = "/bin/m"
[[workers]]
kind = "generic"
count = 2
host = "w1"
exec_start = "/bin/w"
"#;

    #[test]
    fn hosts_in_use_and_hosts_to_install() {
        let d = deployment(TWO_HOSTS);
        let units: Vec<&str> = d.services().map(|s| s.unit.as_str()).collect();
        assert_eq!(
            units,
            [
                "fx.service",
                "fx-worker-0-generic.service",
                "fx-worker-1-generic.service"
            ]
        );
        assert_eq!(d.host("w1").address.as_deref(), Some("admin@w1.example"));
        let names = |v: Vec<&Host>| v.iter().map(|h| h.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(d.used_hosts()), ["local", "db1", "w1"]);
        assert_eq!(names(d.install_hosts()), ["local", "db1", "w1", "spare"]);
        assert!(d.is_multi_host());

        let moved = TWO_HOSTS.replace("[master]\n", "[master]\nhost = \"w1\"\n");
        let d = deployment(&moved);
        assert_eq!(names(d.used_hosts()), ["db1", "w1"]);
        // `local` is visited only when a unit lives on it.
        assert_eq!(names(d.install_hosts()), ["db1", "w1", "spare"]);

        let one = deployment("[deployment]\nname = \"fx\"\n[master]\nexec_start = \"/bin/m\"\n");
        assert!(!one.is_multi_host());
        assert_eq!(names(one.used_hosts()), ["local"]);
    }
}

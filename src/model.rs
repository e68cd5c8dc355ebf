//! Validated model: the [`Deployment`] with every unit, name, port, probe,
//! timeout and dependency resolved. Built from [`crate::config::RawConfig`];
//! nothing after this stage has to check the operator's input again.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::{ConfigError, RawConfig, RawService, Source, S};

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
pub const MAX_COUNT: i64 = 4096;
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

impl Address {
    /// Parses `[USER@]HOST[:PORT]`; the user part may itself contain `@`
    /// (the host is what follows the last one).
    pub fn parse(spec: &str) -> Result<Address, String> {
        let (user, rest) = match spec.rsplit_once('@') {
            Some((u, r)) if !u.is_empty() => (Some(u), r),
            Some(_) => return Err(format!("`{spec}`: empty user before `@`")),
            None => (None, spec),
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or(format!("`{spec}`: unclosed `[`"))?;
            (h, after.strip_prefix(':'))
        } else if rest.matches(':').count() == 1 {
            let (h, p) = rest.split_once(':').expect("one colon");
            (h, Some(p))
        } else {
            (rest, None)
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
        if host.is_empty() || !host.chars().all(valid) || host.starts_with('-') {
            return Err(format!("`{spec}`: `{host}` is not a host name or address"));
        }
        // ssh takes a leading `-` as an option; whitespace would split the word remotely.
        if user.is_some_and(|u| {
            u.starts_with('-') || u.chars().any(|c| c.is_control() || c.is_whitespace())
        }) {
            return Err(format!("`{spec}`: the user name is not valid"));
        }
        let port = port
            .map(|p| parse_port(p).ok_or(format!("`{spec}`: `{p}` is not a port")))
            .transpose()?;
        Ok(Address {
            destination: match user {
                Some(u) => format!("{u}@{host}"),
                None => host.to_string(),
            },
            host: host.to_string(),
            port,
        })
    }
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
    /// Every host, `local` first; units name theirs by `host`.
    pub hosts: Vec<Host>,
    pub database: Option<External>,
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
    #[serde(with = "secs")]
    pub start_timeout: Duration,
    #[serde(with = "secs")]
    pub stop_timeout: Duration,
    #[serde(with = "secs")]
    pub health_timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Worker {
    /// Position across all `[[workers]]` blocks, in file order.
    pub index: usize,
    /// Position within its own block (the `i` of `port_base + i`).
    pub kind_index: usize,
    pub kind: String,
    pub service: Service,
}

/// A unit orch does not generate but orders and awaits: the database or a dependent.
#[derive(Debug, Clone, Serialize)]
pub struct External {
    pub unit: String,
    pub host: String,
    pub health: Option<Probe>,
    #[serde(with = "secs")]
    pub start_timeout: Duration,
    #[serde(with = "secs")]
    pub stop_timeout: Duration,
    #[serde(with = "secs")]
    pub health_timeout: Duration,
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
    },
    /// `tcp://host:port`: ready when a connection is accepted.
    Tcp { host: String, port: u16 },
    /// `exec:COMMAND`: ready when the command exits 0.
    Exec { command: String },
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Http { host, port, path } => write!(f, "http://{}:{port}{path}", bracket(host)),
            Probe::Tcp { host, port } => write!(f, "tcp://{}:{port}", bracket(host)),
            Probe::Exec { command } => write!(f, "exec:{command}"),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Database,
    Master,
    Worker,
    Dependent,
    /// A unit the master's own unit requires (`Requires=`/`BindsTo=`, from
    /// a template override or a drop-in), read from systemd: started and
    /// awaited before the master, like the database, and never stopped.
    Prerequisite,
}

impl Deployment {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path, unit_dir_override: Option<&Path>) -> Result<Deployment, ConfigError> {
        Self::load_with(
            path,
            &Overrides {
                unit_dir: unit_dir_override.map(Path::to_path_buf),
                local_address: None,
            },
        )
    }

    /// Reads, parses and validates a configuration file, with the command line's overrides.
    pub fn load_with(path: &Path, o: &Overrides) -> Result<Deployment, ConfigError> {
        let source = Source::read(path)?;
        let raw = source.parse()?;
        Resolver { src: &source }.deployment(&raw, o)
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
        };
        Resolver { src: source }.deployment(&raw, &o)
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

struct Resolver<'a> {
    src: &'a Source,
}

impl Resolver<'_> {
    fn err(&self, span: Range<usize>, key: &str, msg: impl Into<String>) -> ConfigError {
        self.src.error(span, Some(key.to_string()), msg)
    }

    fn deployment(&self, raw: &RawConfig, o: &Overrides) -> Result<Deployment, ConfigError> {
        let unit_dir_override = o.unit_dir.as_deref();
        let d = raw.deployment.get_ref();
        let name = d.name.get_ref();
        check_name_part(name, "deployment name")
            .map_err(|m| self.err(d.name.span(), "deployment.name", m))?;

        let base = self.src.path.parent().unwrap_or(Path::new("."));
        let unit_dir = match (unit_dir_override, &d.unit_dir) {
            (Some(p), _) => p.to_path_buf(),
            (None, Some(s)) => self.abs_dir(s, "deployment.unit_dir")?,
            (None, None) => PathBuf::from(DEFAULT_UNIT_DIR),
        };
        let templates_dir = match &d.templates {
            Some(s) => {
                self.value(s, "deployment.templates")?;
                Some(base.join(s.get_ref()))
            }
            None => None,
        };
        let state_dir = match &d.state_dir {
            Some(s) => self.abs_dir(s, "deployment.state_dir")?,
            None => PathBuf::from(DEFAULT_STATE_DIR),
        };

        let runtime_dir = match &d.runtime_dir {
            Some(s) => self.abs_dir(s, "deployment.runtime_dir")?,
            None => PathBuf::from(DEFAULT_RUNTIME_DIR),
        };

        let mut hosts = vec![Host {
            name: LOCAL_HOST.to_string(),
            address: o.local_address.clone(),
        }];
        for (i, h) in raw.hosts.iter().enumerate() {
            let h = h.get_ref();
            let at = |k: &str| format!("hosts[{i}].{k}");
            let hname = h.name.get_ref();
            check_name_part(hname, "host name")
                .map_err(|m| self.err(h.name.span(), &at("name"), m))?;
            if hname == LOCAL_HOST {
                return Err(self.err(
                    h.name.span(),
                    &at("name"),
                    format!("`{LOCAL_HOST}` is the name of the machine orch runs on (or the one --host names); pick another"),
                ));
            }
            if hosts.iter().any(|x| &x.name == hname) {
                return Err(self.err(
                    h.name.span(),
                    &at("name"),
                    format!("host `{hname}` is defined twice"),
                ));
            }
            let address = self.value(&h.address, &at("address"))?;
            Address::parse(address).map_err(|m| self.err(h.address.span(), &at("address"), m))?;
            hosts.push(Host {
                name: hname.clone(),
                address: Some(address.to_string()),
            });
        }
        let host_of =
            |v: Option<&S<String>>, key: &str, default: &str| -> Result<Host, ConfigError> {
                let Some(v) = v else {
                    return Ok(hosts
                        .iter()
                        .find(|h| h.name == default)
                        .expect("default host exists")
                        .clone());
                };
                hosts
                    .iter()
                    .find(|h| &h.name == v.get_ref())
                    .cloned()
                    .ok_or_else(|| {
                        let known: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
                        self.err(
                            v.span(),
                            key,
                            format!(
                                "`{}` is not a host; define it in a [[hosts]] block (hosts: {})",
                                v.get_ref(),
                                known.join(", ")
                            ),
                        )
                    })
            };
        let m = raw.master.get_ref();
        let master_host = host_of(m.host.as_ref(), "master.host", LOCAL_HOST)?;

        let database = match &raw.database {
            Some(db) => {
                let db = db.get_ref();
                let host = host_of(db.host.as_ref(), "database.host", &master_host.name)?;
                let health = self.probe(db.health.as_ref(), "database.health")?;
                Some(External {
                    unit: self.external_unit(&db.unit, "database.unit")?,
                    host: host.name,
                    health,
                    start_timeout: self.duration(
                        db.start_timeout.as_ref(),
                        "database.start_timeout",
                        DEFAULT_START_TIMEOUT,
                    )?,
                    stop_timeout: DEFAULT_STOP_TIMEOUT,
                    health_timeout: self.duration(
                        db.health_timeout.as_ref(),
                        "database.health_timeout",
                        DEFAULT_HEALTH_TIMEOUT,
                    )?,
                })
            }
            None => None,
        };

        let master_port = match &m.port {
            Some(p) => Some(self.port(p.span(), *p.get_ref(), "master.port")?),
            None => None,
        };
        let master = self.service(
            &m.service(),
            "master",
            UnitVars {
                name: name.clone(),
                deployment: name.clone(),
                kind: "master".into(),
                index: None,
                port: master_port,
                host: master_host.network_name(),
            },
            &master_host,
            format!("{name} master"),
        )?;

        // Ports are claimed across the whole deployment so two units never share one.
        let mut ports: HashMap<u16, String> = HashMap::new();
        if let Some(p) = master_port {
            ports.insert(p, master.unit.clone());
        }
        let mut kinds: HashMap<&str, usize> = HashMap::new();
        let mut workers = Vec::new();
        for (block, w) in raw.workers.iter().enumerate() {
            let wr = w.get_ref();
            let at = |k: &str| format!("workers[{block}].{k}");
            let kind = wr.kind.get_ref();
            check_name_part(kind, "worker kind")
                .map_err(|m| self.err(wr.kind.span(), &at("kind"), m))?;
            if kind.contains('.') {
                return Err(self.err(
                    wr.kind.span(),
                    &at("kind"),
                    "a worker kind may not contain `.`",
                ));
            }
            if let Some(first) = kinds.insert(kind.as_str(), block) {
                let line = self
                    .src
                    .error(raw.workers[first].get_ref().kind.span(), None, "")
                    .line
                    .unwrap_or(0);
                return Err(self.err(
                    wr.kind.span(),
                    &at("kind"),
                    format!("duplicate worker kind `{kind}` (first defined at line {line}); raise its `count` instead"),
                ));
            }
            let whost = host_of(wr.host.as_ref(), &at("host"), &master_host.name)?;
            let count = *wr.count.get_ref();
            if !(1..=MAX_COUNT).contains(&count) {
                return Err(self.err(
                    wr.count.span(),
                    &at("count"),
                    format!("must be between 1 and {MAX_COUNT}, got {count} (remove the block to run no worker of this kind)"),
                ));
            }
            for i in 0..count as usize {
                let index = workers.len();
                let port = match &wr.port_base {
                    Some(base) => {
                        let p =
                            self.port(base.span(), base.get_ref() + i as i64, &at("port_base"))?;
                        let unit_name = format!("{name}-worker-{index}-{kind}");
                        if let Some(other) = ports.insert(p, unit_name.clone()) {
                            return Err(self.err(
                                base.span(),
                                &at("port_base"),
                                format!("port {p} of {unit_name} is already used by {other}"),
                            ));
                        }
                        Some(p)
                    }
                    None => None,
                };
                let wname = format!("{name}-worker-{index}-{kind}");
                let service = self.service(
                    &wr.service(),
                    &format!("workers[{block}]"),
                    UnitVars {
                        name: wname,
                        deployment: name.clone(),
                        kind: kind.clone(),
                        index: Some(index),
                        port,
                        host: whost.network_name(),
                    },
                    &whost,
                    format!("{name} worker {index} ({kind})"),
                )?;
                workers.push(Worker {
                    index,
                    kind_index: i,
                    kind: kind.clone(),
                    service,
                });
            }
        }

        let mut dependents = Vec::new();
        let mut seen: HashMap<String, ()> = HashMap::new();
        for u in workers
            .iter()
            .map(|w| &w.service.unit)
            .chain([&master.unit])
        {
            seen.insert(u.clone(), ());
        }
        if let Some(db) = &database {
            if seen.insert(db.unit.clone(), ()).is_some() {
                let span = raw
                    .database
                    .as_ref()
                    .map(|d| d.get_ref().unit.span())
                    .unwrap_or(0..0);
                return Err(self.err(
                    span,
                    "database.unit",
                    format!("`{}` is a unit orch generates", db.unit),
                ));
            }
        }
        for (i, dep) in raw.dependents.iter().enumerate() {
            let dep = dep.get_ref();
            let at = |k: &str| format!("dependents[{i}].{k}");
            let unit = self.external_unit(&dep.unit, &at("unit"))?;
            let host = host_of(dep.host.as_ref(), &at("host"), &master_host.name)?;
            if seen.insert(unit.clone(), ()).is_some() {
                return Err(self.err(
                    dep.unit.span(),
                    &at("unit"),
                    format!("`{unit}` is listed twice or is a unit orch generates"),
                ));
            }
            dependents.push(External {
                unit,
                health: self.probe(dep.health.as_ref(), &at("health"))?,
                host: host.name.clone(),
                start_timeout: self.duration(
                    dep.start_timeout.as_ref(),
                    &at("start_timeout"),
                    DEFAULT_START_TIMEOUT,
                )?,
                stop_timeout: self.duration(
                    dep.stop_timeout.as_ref(),
                    &at("stop_timeout"),
                    DEFAULT_STOP_TIMEOUT,
                )?,
                health_timeout: self.duration(
                    dep.health_timeout.as_ref(),
                    &at("health_timeout"),
                    DEFAULT_HEALTH_TIMEOUT,
                )?,
            });
        }

        Ok(Deployment {
            name: name.clone(),
            config_path: self.src.path.clone(),
            unit_dir,
            templates_dir,
            state_dir,
            runtime_dir,
            hosts,
            database,
            master,
            workers,
            dependents,
        })
    }

    fn service(
        &self,
        s: &RawService<'_>,
        section: &str,
        vars: UnitVars,
        host: &Host,
        default_description: String,
    ) -> Result<Service, ConfigError> {
        let at = |k: &str| format!("{section}.{k}");
        let opt = |v: Option<&S<String>>, k: &str| -> Result<Option<String>, ConfigError> {
            v.map(|v| self.value(v, &at(k)).map(str::to_string))
                .transpose()
        };
        let exec_start = self.expand(s.exec_start, &at("exec_start"), &vars)?;
        if exec_start.trim().is_empty() {
            return Err(self.err(s.exec_start.span(), &at("exec_start"), "must not be empty"));
        }
        let exec_reload = s
            .exec_reload
            .map(|v| self.expand(v, &at("exec_reload"), &vars))
            .transpose()?;
        let description = match s.description {
            Some(d) => self.expand(d, &at("description"), &vars)?,
            None => default_description,
        };
        let user = opt(s.user, "user")?;
        let group = opt(s.group, "group")?;
        for (v, k) in [(s.user, "user"), (s.group, "group")] {
            if let Some(v) = v {
                if !valid_account(v.get_ref()) {
                    return Err(self.err(
                        v.span(),
                        &at(k),
                        format!("`{}` is not a valid user or group name", v.get_ref()),
                    ));
                }
            }
        }
        let working_directory = opt(s.working_directory, "working_directory")?;
        let environment_file = opt(s.environment_file, "environment_file")?;
        let mut environment = BTreeMap::new();
        if let Some(env) = s.environment {
            for (k, v) in env.get_ref() {
                let key = k.get_ref();
                let valid = key
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(self.err(
                        k.span(),
                        &at("environment"),
                        format!("`{key}` is not a valid environment variable name"),
                    ));
                }
                let value = self.expand(v, &at(&format!("environment.{key}")), &vars)?;
                environment.insert(key.clone(), value);
            }
        }
        let service_type = self.choice(s.service_type, &at("type"), SERVICE_TYPES, "exec")?;
        let restart = self.choice(s.restart, &at("restart"), RESTART_POLICIES, "on-failure")?;
        let health = match s.health {
            Some(h) => {
                let text = self.expand(h, &at("health"), &vars)?;
                let p = parse_probe(&text).map_err(|m| self.err(h.span(), &at("health"), m))?;
                Some(p)
            }
            None => None,
        };
        Ok(Service {
            unit: format!("{}.service", vars.name),
            name: vars.name,
            host: host.name.clone(),
            description,
            exec_start,
            exec_reload,
            user,
            group,
            working_directory,
            environment,
            environment_file,
            service_type,
            restart,
            restart_sec: self.duration(
                s.restart_sec,
                &at("restart_sec"),
                Duration::from_secs(1),
            )?,
            port: vars.port,
            health,
            start_timeout: self.duration(
                s.start_timeout,
                &at("start_timeout"),
                DEFAULT_START_TIMEOUT,
            )?,
            stop_timeout: self.duration(
                s.stop_timeout,
                &at("stop_timeout"),
                DEFAULT_STOP_TIMEOUT,
            )?,
            health_timeout: self.duration(
                s.health_timeout,
                &at("health_timeout"),
                DEFAULT_HEALTH_TIMEOUT,
            )?,
        })
    }

    /// A string value that will reach a unit file: no control characters
    /// (a newline would inject a directive) and no trailing backslash (it
    /// would join the next line).
    fn value<'v>(&self, v: &'v S<String>, key: &str) -> Result<&'v str, ConfigError> {
        check_value(v.get_ref()).map_err(|m| self.err(v.span(), key, m))?;
        Ok(v.get_ref())
    }

    /// Expands `{{ name }}`, `{{ port }}`, … in a value, strictly.
    fn expand(&self, v: &S<String>, key: &str, vars: &UnitVars) -> Result<String, ConfigError> {
        let text = self.value(v, key)?;
        if !text.contains("{{") && !text.contains("{%") {
            return Ok(text.to_string());
        }
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let out = env
            .render_str(text, minijinja::value::Serde(vars))
            .map_err(|e| {
                let what = match e.kind() {
                    minijinja::ErrorKind::UndefinedError => format!(
                    "undefined variable in `{text}` (available: name, deployment, kind, index, host{})",
                    if vars.port.is_some() { ", port" } else { "; port needs port_base" }
                ),
                    _ => format!(
                        "invalid template `{text}`: {}",
                        e.detail().unwrap_or(&e.to_string())
                    ),
                };
                self.err(v.span(), key, what)
            })?;
        check_value(&out)
            .map_err(|m| self.err(v.span(), key, format!("expands to a value that {m}")))?;
        Ok(out)
    }

    fn probe(&self, v: Option<&S<String>>, key: &str) -> Result<Option<Probe>, ConfigError> {
        v.map(|v| {
            let text = self.value(v, key)?;
            parse_probe(text).map_err(|m| self.err(v.span(), key, m))
        })
        .transpose()
    }

    fn abs_dir(&self, v: &S<String>, key: &str) -> Result<PathBuf, ConfigError> {
        let s = self.value(v, key)?;
        if !s.starts_with('/') {
            return Err(self.err(v.span(), key, "must be an absolute path"));
        }
        Ok(PathBuf::from(s))
    }

    fn external_unit(&self, v: &S<String>, key: &str) -> Result<String, ConfigError> {
        let s = v.get_ref();
        let unit = if s.contains('.') {
            s.clone()
        } else {
            format!("{s}.service")
        };
        check_unit_name(&unit).map_err(|m| self.err(v.span(), key, m))?;
        Ok(unit)
    }

    fn duration(
        &self,
        v: Option<&S<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(v) = v else { return Ok(default) };
        let d = humantime::parse_duration(v.get_ref().trim()).map_err(|e| {
            self.err(
                v.span(),
                key,
                format!(
                    "`{}` is not a duration ({e}); write e.g. \"90s\" or \"2m\"",
                    v.get_ref()
                ),
            )
        })?;
        if d.is_zero() {
            return Err(self.err(v.span(), key, "must be longer than zero"));
        }
        Ok(d)
    }

    fn port(&self, span: Range<usize>, p: i64, key: &str) -> Result<u16, ConfigError> {
        u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| self.err(span, key, format!("port {p} is outside 1..=65535")))
    }

    fn choice(
        &self,
        v: Option<&S<String>>,
        key: &str,
        allowed: &[&str],
        default: &str,
    ) -> Result<String, ConfigError> {
        match v {
            None => Ok(default.to_string()),
            Some(v) if allowed.contains(&v.get_ref().as_str()) => Ok(v.get_ref().clone()),
            Some(v) => Err(self.err(
                v.span(),
                key,
                format!("`{}` is not one of: {}", v.get_ref(), allowed.join(", ")),
            )),
        }
    }
}

const SERVICE_TYPES: &[&str] = &[
    "simple",
    "exec",
    "forking",
    "oneshot",
    "dbus",
    "notify",
    "notify-reload",
    "idle",
];
const RESTART_POLICIES: &[&str] = &[
    "no",
    "on-success",
    "on-failure",
    "on-abnormal",
    "on-watchdog",
    "on-abort",
    "always",
];

/// Variables a value such as `exec_start` may use.
#[derive(Serialize)]
struct UnitVars {
    name: String,
    deployment: String,
    kind: String,
    index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    /// The network name of the unit's host (`localhost` for this machine).
    host: String,
}

/// Refuses what could change the structure of a unit file.
pub fn check_value(s: &str) -> Result<(), String> {
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!(
            "contains the control character {c:?}; a newline or other control character could inject a directive into the unit file"
        ));
    }
    if s.ends_with('\\') {
        return Err(
            "ends with a backslash, which would continue onto the next line of the unit file"
                .into(),
        );
    }
    Ok(())
}

/// A deployment name or worker kind: it becomes part of unit and file names.
fn check_name_part(s: &str, what: &str) -> Result<(), String> {
    let ok_first = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if s.is_empty() || !ok_first || !ok_rest {
        return Err(format!(
            "`{}` is not a valid {what}: use letters, digits, `-`, `_` and `.`, starting with a letter or digit",
            s.escape_debug()
        ));
    }
    if s.len() > 180 {
        return Err(format!("{what} is longer than 180 characters"));
    }
    Ok(())
}

const UNIT_SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "path",
    "timer",
    "slice",
    "scope",
];

/// systemd's unit name rules: `[A-Za-z0-9:_.\\-@]`, at most 255 bytes, a known type suffix.
pub fn check_unit_name(s: &str) -> Result<(), String> {
    let shown = s.escape_debug();
    if s.len() > 255 {
        return Err(format!(
            "`{shown}` is longer than systemd's limit of 255 characters"
        ));
    }
    let Some((stem, suffix)) = s.rsplit_once('.') else {
        return Err(format!(
            "`{shown}` has no unit type suffix such as .service"
        ));
    };
    if !UNIT_SUFFIXES.contains(&suffix) {
        return Err(format!(
            "`{shown}` does not end in a unit type ({})",
            UNIT_SUFFIXES.join(", ")
        ));
    }
    if stem.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-' | '@' | '\\'))
    {
        return Err(format!(
            "`{shown}` is not a valid unit name: systemd allows only letters, digits and `:_.-@\\`"
        ));
    }
    if stem.starts_with('.') || stem.ends_with('@') && s.matches('@').count() > 1 {
        return Err(format!("`{shown}` is not a valid unit name"));
    }
    Ok(())
}

fn valid_account(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Parses `http://host[:port][/path]`, `tcp://host:port` or `exec:COMMAND`.
pub fn parse_probe(s: &str) -> Result<Probe, String> {
    if let Some(cmd) = s.strip_prefix("exec:") {
        let command = cmd.trim().to_string();
        if command.is_empty() {
            return Err("`exec:` needs a command".into());
        }
        return Ok(Probe::Exec { command });
    }
    let (scheme, rest) = s.split_once("://").ok_or_else(|| {
        format!(
            "`{s}` is not a probe: write http://HOST:PORT/PATH, tcp://HOST:PORT or exec:COMMAND"
        )
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = split_host_port(authority).map_err(|m| format!("`{s}`: {m}"))?;
    match scheme {
        "http" => Ok(Probe::Http {
            host,
            port: port.unwrap_or(80),
            path: path.to_string(),
        }),
        "tcp" => {
            if path != "/" {
                return Err(format!("`{s}`: a tcp probe has no path"));
            }
            let port = port.ok_or_else(|| format!("`{s}`: a tcp probe needs a port"))?;
            Ok(Probe::Tcp { host, port })
        }
        "https" => Err(format!(
            "`{s}`: https probes are not supported; probe the plain-HTTP listener or use tcp://"
        )),
        other => Err(format!(
            "`{s}`: unknown probe scheme `{other}` (http, tcp, exec)"
        )),
    }
}

fn split_host_port(a: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("unclosed `[` in host")?;
        (h, after.strip_prefix(':'))
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    let port = port
        .map(|p| parse_port(p).ok_or(format!("`{p}` is not a port")))
        .transpose()?;
    Ok((host.to_string(), port))
}

/// A TCP port: 1 to 65535.
fn parse_port(p: &str) -> Option<u16> {
    p.parse::<u16>().ok().filter(|p| *p > 0)
}

mod secs {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// Unit tests that kill `scripts/mutants`' survivors among the pure parsers
/// and validators (the resolver itself is guarded by the integration tests
/// in tests/integration/config_errors.rs and properties.rs).
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

    #[test]
    fn probes_parse_and_display() {
        let p = parse_probe("http://[::1]:8008/health").unwrap();
        assert_eq!(p.to_string(), "http://[::1]:8008/health");
        assert_eq!(parse_probe("http://h").unwrap().to_string(), "http://h:80/");
        assert_eq!(
            parse_probe("tcp://h:5432").unwrap().to_string(),
            "tcp://h:5432"
        );
        assert_eq!(
            parse_probe("exec: pg_isready ").unwrap().to_string(),
            "exec:pg_isready"
        );
        for bad in [
            "exec: ",
            "h:1",
            "tcp://h:1/x",
            "tcp://h",
            "https://h:1",
            "udp://h:1",
            "http://:1",
            "http://[::1:1",
            "http://h:0",
            "http://h:70000",
        ] {
            assert!(parse_probe(bad).is_err(), "{bad}");
        }
        assert_eq!(split_host_port("h:1").unwrap(), ("h".to_string(), Some(1)));
        assert_eq!(split_host_port("[::1]").unwrap(), ("::1".to_string(), None));
        assert_eq!(parse_port("65535"), Some(65535));
        assert_eq!(parse_port("1"), Some(1));
        assert_eq!(parse_port("0"), None);
    }

    #[test]
    fn values_and_names_are_checked() {
        assert!(check_value("a b % $").is_ok());
        for bad in ["a\nb", "a\u{7f}", "a\\"] {
            assert!(check_value(bad).is_err(), "{bad:?}");
        }
        assert!(check_name_part("a1.b-c_d", "kind").is_ok());
        assert!(check_name_part(&"a".repeat(180), "kind").is_ok());
        for bad in ["", "-a", ".a", "a b", "a/b", &"a".repeat(181)] {
            assert!(check_name_part(bad, "kind").is_err(), "{bad}");
        }
        for ok in [
            "a.service",
            "a@.service",
            "a@b.timer",
            "x:y_z-1\\x2d.socket",
        ] {
            assert!(check_unit_name(ok).is_ok(), "{ok}");
        }
        let long = format!("{}.service", "a".repeat(247));
        assert!(check_unit_name(&long).is_ok());
        let too_long = format!("{}.service", "a".repeat(248));
        for bad in [
            "a",
            "a.conf",
            ".service",
            "a b.service",
            "..service",
            "a@b@.service",
            &too_long,
        ] {
            assert!(check_unit_name(bad).is_err(), "{bad}");
        }
        assert!(valid_account("_synapse-1.x") && valid_account(&"a".repeat(32)));
        for bad in ["", "-a", ".a", "a b", &"a".repeat(33)] {
            assert!(!valid_account(bad), "{bad}");
        }
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

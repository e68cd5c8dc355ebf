//! The resolver: the raw sections become the [`Deployment`], one method per
//! section, each refusing a bad value with its file, line and key. Values
//! are checked by [`super::values`]; this file only says where they are.

mod container;
mod resources;
mod sessions;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::values::{
    check_name_part, check_unit_name, check_value, parse_duration, parse_probe, parse_probe_from,
    valid_account, NamePart,
};
use super::*;
use crate::config::{
    ConfigError, RawConfig, RawDeployment, RawExternal, RawService, RawWorker, Source, S,
};

/// Bounds the work a `{{ … }}` expansion in a configuration value may do
/// (a loop inside a value must end); a real expansion needs a few dozen.
const EXPAND_FUEL: u64 = 10_000;

pub(super) struct Resolver<'a> {
    pub(super) src: &'a Source,
}

/// What unit sections resolve against, once the name and hosts are known.
struct Scope<'a> {
    name: &'a str,
    hosts: &'a [Host],
    master_host: &'a Host,
}

/// Ports claimed across the whole deployment, so two units never share one.
#[derive(Default)]
struct Ports(HashMap<u16, String>);

impl Ports {
    /// Claims `port` for `unit`; returns the unit that already holds it, if any.
    fn claim(&mut self, port: u16, unit: &str) -> Option<String> {
        match self.0.entry(port) {
            Entry::Occupied(e) => Some(e.get().clone()),
            Entry::Vacant(e) => {
                e.insert(unit.to_string());
                None
            }
        }
    }
}

/// One `[[workers]]` block's place in the allocation.
struct Block<'a> {
    block: usize,
    naming: Naming,
    slots: &'a [Slot],
}

struct Dirs {
    unit_dir: PathBuf,
    templates_dir: Option<PathBuf>,
    state_dir: PathBuf,
    runtime_dir: PathBuf,
}

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

/// Why `unit` cannot be a database, prerequisite or dependent: a unit
/// orch generates (stopping the deployment's slice stops every unit in
/// it; a worker name may be one orch creates later), or a template,
/// which systemd cannot start without an instance.
fn not_external(unit: &str, deployment: &str) -> Option<&'static str> {
    let (stem, _) = unit.rsplit_once('.').unwrap_or((unit, ""));
    if unit == format!("{deployment}.slice") {
        return Some("is the deployment's own slice, a unit orch generates");
    }
    if stem == deployment || stem.starts_with(&format!("{deployment}-worker-")) {
        return Some("is a unit orch generates (the master's or a worker's name)");
    }
    if stem.ends_with('@') {
        return Some("is a template without an instance; name one, e.g. `bridge@main.service`");
    }
    None
}

impl Resolver<'_> {
    fn err(&self, span: Range<usize>, key: &str, msg: impl Into<String>) -> ConfigError {
        self.src.error(span, Some(key.to_string()), msg)
    }

    pub(super) fn deployment(
        &self,
        raw: &RawConfig,
        o: &Overrides,
    ) -> Result<Deployment, ConfigError> {
        let d = raw.deployment.get_ref();
        let name = d.name.get_ref();
        self.name_part(&d.name, "deployment.name", NamePart::Deployment)?;
        let dirs = self.dirs(d, o)?;
        let slice = self.slice(&d.name)?;
        let hosts = self.hosts(raw, o)?;
        let master_host = self.host_of(
            &hosts,
            raw.master.get_ref().host.as_ref(),
            "master.host",
            LOCAL_HOST,
        )?;
        let scope = Scope {
            name,
            hosts: &hosts,
            master_host: &master_host,
        };
        let mut ports = Ports::default();
        let master = self.master(raw, &scope, &mut ports)?;
        let naming = self.naming(d)?;
        let workers = self.workers(raw, &scope, &mut ports, naming, &o.installed)?;
        let mut claimed: HashSet<String> = workers
            .iter()
            .map(|w| w.service.unit.clone())
            .chain([master.unit.clone()])
            .collect();
        let database = self.database(raw, &scope, &mut claimed)?;
        let db_sessions = self.db_sessions(raw, database.as_ref(), &hosts)?;
        let prerequisites = self.prerequisites(raw, &scope, &mut claimed)?;
        let dependents = self.dependents(raw, &scope, &mut claimed)?;
        Ok(Deployment {
            name: name.clone(),
            config_path: self.src.path.clone(),
            unit_dir: dirs.unit_dir,
            templates_dir: dirs.templates_dir,
            state_dir: dirs.state_dir,
            runtime_dir: dirs.runtime_dir,
            slice,
            hosts,
            naming,
            database,
            db_sessions,
            prerequisites,
            master,
            workers,
            dependents,
        })
    }

    /// `[deployment]`'s folders: absolute, or the defaults.
    fn dirs(&self, d: &RawDeployment, o: &Overrides) -> Result<Dirs, ConfigError> {
        let or_default = |v: &Option<S<String>>, key: &str, default: &str| match v {
            Some(s) => self.abs_dir(s, key),
            None => Ok(PathBuf::from(default)),
        };
        let unit_dir = match &o.unit_dir {
            // As in the file: a relative folder would depend on where orch runs.
            Some(p) if !p.is_absolute() => {
                return Err(ConfigError {
                    path: self.src.path.clone(),
                    line: None,
                    column: None,
                    key: Some("--unit-dir".into()),
                    message: format!("`{}` must be an absolute path", p.display()),
                })
            }
            Some(p) => p.clone(),
            None => or_default(&d.unit_dir, "deployment.unit_dir", DEFAULT_UNIT_DIR)?,
        };
        // Relative to the configuration file, so a checkout carries its templates.
        let base = self.src.path.parent().unwrap_or(Path::new("."));
        let templates_dir = match &d.templates {
            Some(s) => Some(self.templates_dir(s, base)?),
            None => None,
        };
        Ok(Dirs {
            unit_dir,
            templates_dir,
            state_dir: or_default(&d.state_dir, "deployment.state_dir", DEFAULT_STATE_DIR)?,
            runtime_dir: or_default(
                &d.runtime_dir,
                "deployment.runtime_dir",
                DEFAULT_RUNTIME_DIR,
            )?,
        })
    }

    /// `deployment.templates`, relative to the configuration file. Named, it
    /// must be a folder: a missing one would silently render the built-in
    /// templates instead of the operator's (leave the key out for those).
    fn templates_dir(&self, v: &S<String>, base: &Path) -> Result<PathBuf, ConfigError> {
        let dir = base.join(self.value(v, "deployment.templates")?);
        if !dir.is_dir() {
            let why = match dir.exists() {
                true => "is not a folder",
                false => "does not exist",
            };
            let msg = format!(
                "`{}` {why}; create it, or remove the key to use the built-in templates",
                dir.display()
            );
            return Err(self.err(v.span(), "deployment.templates", msg));
        }
        Ok(dir)
    }

    /// `local` (this machine, or `--host`'s), then every `[[hosts]]` block.
    fn hosts(&self, raw: &RawConfig, o: &Overrides) -> Result<Vec<Host>, ConfigError> {
        let mut hosts = vec![Host {
            name: LOCAL_HOST.to_string(),
            address: o.local_address.clone(),
        }];
        for (i, h) in raw.hosts.iter().enumerate() {
            let h = h.get_ref();
            let key = |k: &str| format!("hosts[{i}].{k}");
            let name = h.name.get_ref();
            self.name_part(&h.name, &key("name"), NamePart::Host)?;
            if name == LOCAL_HOST {
                return Err(self.err(
                    h.name.span(),
                    &key("name"),
                    format!("`{LOCAL_HOST}` is the name of the machine orch runs on (or the one --host names); pick another"),
                ));
            }
            if hosts.iter().any(|x| &x.name == name) {
                let msg = format!("host `{name}` is defined twice");
                return Err(self.err(h.name.span(), &key("name"), msg));
            }
            let address = self.value(&h.address, &key("address"))?;
            Address::parse(address)
                .map_err(|e| self.err(h.address.span(), &key("address"), e.to_string()))?;
            hosts.push(Host {
                name: name.clone(),
                address: Some(address.to_string()),
            });
        }
        Ok(hosts)
    }

    /// The host `v` names, or `default` when the key is absent.
    fn host_of(
        &self,
        hosts: &[Host],
        v: Option<&S<String>>,
        key: &str,
        default: &str,
    ) -> Result<Host, ConfigError> {
        let wanted = v.map_or(default, |v| v.get_ref().as_str());
        if let Some(h) = hosts.iter().find(|h| h.name == wanted) {
            return Ok(h.clone());
        }
        let v = v.expect("the default host is always defined");
        let known: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        Err(self.err(
            v.span(),
            key,
            format!(
                "`{wanted}` is not a host; define it in a [[hosts]] block (hosts: {})",
                known.join(", ")
            ),
        ))
    }

    /// `[master]`: the unit named after the deployment.
    fn master(
        &self,
        raw: &RawConfig,
        scope: &Scope,
        ports: &mut Ports,
    ) -> Result<Service, ConfigError> {
        let m = raw.master.get_ref();
        let port = match &m.port {
            Some(p) => Some(self.port(p.span(), *p.get_ref(), "master.port")?),
            None => None,
        };
        let unit = format!("{}.service", scope.name);
        let name_span = raw.deployment.get_ref().name.span();
        self.unit_name(&unit, name_span, "deployment.name")?;
        if let Some(p) = port {
            ports.claim(p, &unit);
        }
        let vars = UnitVars {
            name: scope.name.to_string(),
            deployment: scope.name.to_string(),
            kind: "master".into(),
            index: None,
            port,
            host: scope.master_host.network_name(),
        };
        let description = format!("{} master", scope.name);
        let mut service =
            self.service(&m.service(), "master", vars, scope.master_host, description)?;
        service.resources = self.resources(&m.resources(), "master")?;
        self.container(&m.container(), "master", scope.name, &mut service)?;
        Ok(service)
    }

    /// `[deployment] naming`: `sequential` unless said otherwise.
    fn naming(&self, d: &RawDeployment) -> Result<Naming, ConfigError> {
        let key = "deployment.naming";
        let v = self.choice(d.naming.as_ref(), key, Naming::CHOICES, "sequential")?;
        Ok(Naming::parse(&v).expect("one of the choices"))
    }

    /// Every `[[workers]]` block, named by `naming` so that no installed
    /// worker is renamed (see [`super::names`]).
    fn workers(
        &self,
        raw: &RawConfig,
        scope: &Scope,
        ports: &mut Ports,
        naming: Naming,
        installed: &Installed,
    ) -> Result<Vec<Worker>, ConfigError> {
        let mut kinds: HashMap<&str, usize> = HashMap::new();
        let mut counts = Vec::with_capacity(raw.workers.len());
        let mut total = 0;
        for (block, w) in raw.workers.iter().enumerate() {
            let wr = w.get_ref();
            self.worker_kind(raw, block, &mut kinds)?;
            let count = self.worker_count(wr, block, total)?;
            total += count;
            counts.push((wr.kind.get_ref().as_str(), count));
        }
        let slots = allocate(scope.name, naming, &counts, installed);
        let mut workers = Vec::with_capacity(total);
        for (block, (w, slots)) in raw.workers.iter().zip(&slots).enumerate() {
            let block = Block {
                block,
                naming,
                slots,
            };
            self.worker_block(w.get_ref(), &block, scope, ports, &mut workers)?;
        }
        Ok(workers)
    }

    fn worker_kind<'r>(
        &self,
        raw: &'r RawConfig,
        block: usize,
        kinds: &mut HashMap<&'r str, usize>,
    ) -> Result<(), ConfigError> {
        let kind = &raw.workers[block].get_ref().kind;
        let key = format!("workers[{block}].kind");
        self.name_part(kind, &key, NamePart::WorkerKind)?;
        if let Some(first) = kinds.insert(kind.get_ref(), block) {
            let first = raw.workers[first].get_ref().kind.span();
            let line = self.src.error(first, None, "").line.unwrap_or(0);
            return Err(self.err(
                kind.span(),
                &key,
                format!("duplicate worker kind `{}` (first defined at line {line}); raise its `count` instead", kind.get_ref()),
            ));
        }
        Ok(())
    }

    /// The block's `count`, within [`MAX_COUNT`] and, with the blocks
    /// before it, within [`MAX_WORKERS`].
    fn worker_count(
        &self,
        wr: &RawWorker,
        block: usize,
        before: usize,
    ) -> Result<usize, ConfigError> {
        let count = *wr.count.get_ref();
        let key = format!("workers[{block}].count");
        if !(1..=MAX_COUNT).contains(&count) {
            return Err(self.err(
                wr.count.span(),
                &key,
                format!("must be between 1 and {MAX_COUNT}, got {count} (remove the block to run no worker of this kind)"),
            ));
        }
        let total = before + count as usize;
        if total > MAX_WORKERS {
            return Err(self.err(
                wr.count.span(),
                &key,
                format!("the deployment would have {total} workers; at most {MAX_WORKERS} in all blocks together"),
            ));
        }
        Ok(count as usize)
    }

    fn worker_block(
        &self,
        wr: &RawWorker,
        b: &Block,
        scope: &Scope,
        ports: &mut Ports,
        workers: &mut Vec<Worker>,
    ) -> Result<(), ConfigError> {
        let block = b.block;
        let at = |k: &str| format!("workers[{block}].{k}");
        let kind = wr.kind.get_ref();
        let default_host = &scope.master_host.name;
        let host = self.host_of(scope.hosts, wr.host.as_ref(), &at("host"), default_host)?;
        let raw_service = wr.service();
        let section = format!("workers[{block}]");
        let resources = self.resources(&wr.resources(), &section)?;
        for slot in b.slots {
            let (index, kind_index) = (slot.number, slot.kind_index);
            let name = b.naming.name(scope.name, kind, index);
            self.unit_name(&format!("{name}.service"), wr.kind.span(), &at("kind"))?;
            let port = self.worker_port(wr, kind_index, &name, &at("port_base"), ports)?;
            let vars = UnitVars {
                name,
                deployment: scope.name.to_string(),
                kind: kind.clone(),
                index: Some(index),
                port,
                host: host.network_name(),
            };
            let description = format!("{} worker {index} ({kind})", scope.name);
            let mut service = self.service(&raw_service, &section, vars, &host, description)?;
            service.resources = resources.clone();
            self.container(&wr.container(), &section, scope.name, &mut service)?;
            workers.push(Worker {
                index,
                kind_index,
                kind: kind.clone(),
                background: wr.background.as_ref().is_some_and(|b| *b.get_ref()),
                previous: slot.previous.as_ref().map(|p| format!("{p}.service")),
                service,
            });
        }
        Ok(())
    }

    /// `port_base + i`, claimed for the worker.
    fn worker_port(
        &self,
        wr: &RawWorker,
        i: usize,
        unit_name: &str,
        key: &str,
        ports: &mut Ports,
    ) -> Result<Option<u16>, ConfigError> {
        let Some(base) = &wr.port_base else {
            return Ok(None);
        };
        let p = self.port(base.span(), base.get_ref().saturating_add(i as i64), key)?;
        if let Some(other) = ports.claim(p, unit_name) {
            let msg = format!("port {p} of {unit_name} is already used by {other}");
            return Err(self.err(base.span(), key, msg));
        }
        Ok(Some(p))
    }

    /// `[database]`, which may not be a unit orch generates.
    fn database(
        &self,
        raw: &RawConfig,
        scope: &Scope,
        claimed: &mut HashSet<String>,
    ) -> Result<Option<External>, ConfigError> {
        let Some(db) = &raw.database else {
            return Ok(None);
        };
        let x = db.get_ref().external();
        let db = self.external(&x, "database", scope)?;
        if !claimed.insert(db.unit.clone()) {
            let msg = format!("`{}` is a unit orch generates", db.unit);
            return Err(self.err(x.unit.span(), "database.unit", msg));
        }
        Ok(Some(db))
    }

    /// Every `[[dependents]]` block: each unit once, none orch generates.
    fn dependents(
        &self,
        raw: &RawConfig,
        scope: &Scope,
        claimed: &mut HashSet<String>,
    ) -> Result<Vec<External>, ConfigError> {
        let mut dependents = Vec::with_capacity(raw.dependents.len());
        for (i, dep) in raw.dependents.iter().enumerate() {
            let x = dep.get_ref().external();
            let section = format!("dependents[{i}]");
            let dep = self.external(&x, &section, scope)?;
            if !claimed.insert(dep.unit.clone()) {
                return Err(self.err(
                    x.unit.span(),
                    &format!("{section}.unit"),
                    format!("`{}` is listed twice or is a unit orch generates", dep.unit),
                ));
            }
            dependents.push(dep);
        }
        Ok(dependents)
    }

    /// Every `[[prerequisites]]` block: each unit once (the database
    /// included), none orch generates.
    fn prerequisites(
        &self,
        raw: &RawConfig,
        scope: &Scope,
        claimed: &mut HashSet<String>,
    ) -> Result<Vec<Prerequisite>, ConfigError> {
        let mut out = Vec::with_capacity(raw.prerequisites.len());
        for (i, p) in raw.prerequisites.iter().enumerate() {
            let p = p.get_ref();
            let x = p.external();
            let section = format!("prerequisites[{i}]");
            let external = self.external(&x, &section, scope)?;
            if !claimed.insert(external.unit.clone()) {
                return Err(self.err(
                    x.unit.span(),
                    &format!("{section}.unit"),
                    format!(
                        "`{}` is listed twice (or is the database) or is a unit orch generates",
                        external.unit
                    ),
                ));
            }
            let requires = p.requires.as_ref().is_none_or(|r| *r.get_ref());
            out.push(Prerequisite { external, requires });
        }
        Ok(out)
    }

    /// The database or a dependent: on the master's host unless it names one.
    fn external(
        &self,
        x: &RawExternal<'_>,
        section: &str,
        scope: &Scope,
    ) -> Result<External, ConfigError> {
        let at = |k: &str| format!("{section}.{k}");
        let unit = self.external_unit(x.unit, &at("unit"))?;
        if let Some(why) = not_external(&unit, scope.name) {
            return Err(self.err(x.unit.span(), &at("unit"), format!("`{unit}` {why}")));
        }
        let default_host = &scope.master_host.name;
        let host = self.host_of(scope.hosts, x.host, &at("host"), default_host)?;
        let health = match x.health {
            Some(v) => Some(self.probe(v, self.value(v, &at("health"))?, &at("health"))?),
            None => None,
        };
        let health = self.probe_from(health, x.probe_from, &at("probe_from"))?;
        let t = self.timeouts(x.start_timeout, x.stop_timeout, x.health_timeout, section)?;
        Ok(External {
            unit,
            host: host.name,
            health,
            bounds: t,
        })
    }

    /// The master or one worker, from its section's keys.
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
        let health = match s.health {
            Some(h) => {
                Some(self.probe(h, &self.expand(h, &at("health"), &vars)?, &at("health"))?)
            }
            None => None,
        };
        let health = self.probe_from(health, s.probe_from, &at("probe_from"))?;
        let t = self.timeouts(s.start_timeout, s.stop_timeout, s.health_timeout, section)?;
        Ok(Service {
            unit: format!("{}.service", vars.name),
            host: host.name.clone(),
            description,
            exec_start,
            exec_reload,
            user: self.account(s.user, &at("user"))?,
            group: self.account(s.group, &at("group"))?,
            working_directory: opt(s.working_directory, "working_directory")?,
            environment: self.environment(s.environment, section, &vars)?,
            environment_file: opt(s.environment_file, "environment_file")?,
            service_type: self.choice(s.service_type, &at("type"), SERVICE_TYPES, "exec")?,
            restart: self.choice(s.restart, &at("restart"), RESTART_POLICIES, "on-failure")?,
            restart_sec: self.duration(
                s.restart_sec,
                &at("restart_sec"),
                Duration::from_secs(1),
            )?,
            port: vars.port,
            health,
            bounds: t,
            // Set by the caller, from the section's resource keys.
            resources: Resources::default(),
            // Set by the caller, from the section's container keys.
            container: None,
            exec_stop: None,
            exec_stop_post: None,
            notify_access: None,
            name: vars.name,
        })
    }

    fn account(&self, v: Option<&S<String>>, key: &str) -> Result<Option<String>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        let s = self.value(v, key)?;
        if !valid_account(s) {
            let msg = format!("`{s}` is not a valid user or group name");
            return Err(self.err(v.span(), key, msg));
        }
        Ok(Some(s.to_string()))
    }

    fn environment(
        &self,
        env: Option<&S<BTreeMap<S<String>, S<String>>>>,
        section: &str,
        vars: &UnitVars,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut out = BTreeMap::new();
        for (k, v) in env.map(|e| e.get_ref().iter()).into_iter().flatten() {
            let name = k.get_ref();
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(self.err(
                    k.span(),
                    &format!("{section}.environment"),
                    format!("`{name}` is not a valid environment variable name"),
                ));
            }
            let value = self.expand(v, &format!("{section}.environment.{name}"), vars)?;
            out.insert(name.clone(), value);
        }
        Ok(out)
    }

    fn timeouts(
        &self,
        start: Option<&S<String>>,
        stop: Option<&S<String>>,
        health: Option<&S<String>>,
        section: &str,
    ) -> Result<Bounds, ConfigError> {
        let at = |k: &str| format!("{section}.{k}");
        Ok(Bounds {
            start: self.duration(start, &at("start_timeout"), DEFAULT_START_TIMEOUT)?,
            stop: self.duration(stop, &at("stop_timeout"), DEFAULT_STOP_TIMEOUT)?,
            health: self.duration(health, &at("health_timeout"), DEFAULT_HEALTH_TIMEOUT)?,
        })
    }

    /// A string value that will reach a unit file (see [`check_value`]).
    fn value<'v>(&self, v: &'v S<String>, key: &str) -> Result<&'v str, ConfigError> {
        check_value(v.get_ref()).map_err(|e| self.err(v.span(), key, e.to_string()))?;
        Ok(v.get_ref())
    }

    fn name_part(&self, v: &S<String>, key: &str, part: NamePart) -> Result<(), ConfigError> {
        check_name_part(v.get_ref(), part).map_err(|e| self.err(v.span(), key, e.to_string()))
    }

    fn unit_name(&self, unit: &str, span: Range<usize>, key: &str) -> Result<(), ConfigError> {
        check_unit_name(unit).map_err(|e| self.err(span, key, e.to_string()))
    }

    /// Expands `{{ name }}`, `{{ port }}`, … in a value, strictly.
    fn expand(&self, v: &S<String>, key: &str, vars: &UnitVars) -> Result<String, ConfigError> {
        let text = self.value(v, key)?;
        if !text.contains("{{") && !text.contains("{%") {
            return Ok(text.to_string());
        }
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_fuel(Some(EXPAND_FUEL));
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
            .map_err(|e| self.err(v.span(), key, format!("expands to a value that {e}")))?;
        Ok(out)
    }

    /// `text` (the value of `v`, expanded or not) as a probe. A loopback
    /// address is fine on any host: http and tcp probes of a remote unit run
    /// on that host, through SSH (src/tunnel.rs).
    fn probe(&self, v: &S<String>, text: &str, key: &str) -> Result<Probe, ConfigError> {
        parse_probe(text).map_err(|e| self.err(v.span(), key, e.to_string()))
    }

    /// The section's probe with its `probe_from` (key `key`) applied. The
    /// key without a probe, or on an `exec:` probe, is refused rather than
    /// ignored: either way the operator expects something orch would not do.
    fn probe_from(
        &self,
        health: Option<Probe>,
        from: Option<&S<String>>,
        key: &str,
    ) -> Result<Option<Probe>, ConfigError> {
        let Some(v) = from else { return Ok(health) };
        let err = |e: String| self.err(v.span(), key, e);
        let from = parse_probe_from(v.get_ref()).map_err(|e| err(e.to_string()))?;
        let Some(probe) = health else {
            return Err(err(
                "probe_from needs a health probe in the same section".into()
            ));
        };
        probe
            .with_from(from)
            .map(Some)
            .map_err(|e| err(e.to_string()))
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
        self.unit_name(&unit, v.span(), key)?;
        Ok(unit)
    }

    fn duration(
        &self,
        v: Option<&S<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(v) = v else { return Ok(default) };
        parse_duration(v.get_ref()).map_err(|e| self.err(v.span(), key, e.to_string()))
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const BASE: &str = "[deployment]\nname = \"app\"\n[master]\nexec_start = \"/bin/m\"\n";

    /// A minimal deployment plus `extra`; shared with the child modules' tests.
    pub(crate) fn resolve(extra: &str) -> Result<Deployment, ConfigError> {
        let source = Source {
            path: "t.toml".into(),
            text: format!("{BASE}{extra}"),
        };
        Deployment::from_source(&source, None)
    }

    /// The error for `extra`, checked to name `line` and `key` and say `says`.
    pub(crate) fn refused(extra: &str, line: usize, key: &str, says: &str) {
        let e = resolve(extra).expect_err("should be refused");
        assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{e}");
        assert!(e.message.contains(says), "{e}");
    }

    const HOSTS: &str = "[[hosts]]\nname = \"db1\"\naddress = \"admin@[2001:db8::1]:2222\"\n";

    #[test]
    fn hosts_local_first_then_each_block() {
        let d = resolve(HOSTS).unwrap();
        let names: Vec<_> = d.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["local", "db1"]);
        assert_eq!(
            d.hosts[1].address.as_deref(),
            Some("admin@[2001:db8::1]:2222")
        );
        refused(
            &format!("{HOSTS}{HOSTS}"),
            9,
            "hosts[1].name",
            "defined twice",
        );
        refused(
            "[[hosts]]\nname = \"local\"\naddress = \"h\"\n",
            6,
            "hosts[0].name",
            "`local`",
        );
        refused(
            "[[hosts]]\nname = \"a\"\naddress = \"h:22:33\"\n",
            7,
            "hosts[0].address",
            "in brackets",
        );
    }

    #[test]
    fn master_takes_the_deployment_name_and_claims_its_port() {
        let d = resolve("port = 8008\n").unwrap();
        assert_eq!(d.master.unit, "app.service");
        assert_eq!(d.master.description, "app master");
        assert_eq!(d.master.port, Some(8008));
        refused("port = 70000\n", 5, "master.port", "outside 1..=65535");
        let clash = "port = 9000\n[[workers]]\nkind = \"w\"\ncount = 1\nport_base = 9000\nexec_start = \"/bin/w\"\n";
        refused(
            clash,
            9,
            "workers[0].port_base",
            "already used by app.service",
        );
    }

    #[test]
    fn workers_are_numbered_across_blocks_with_consecutive_ports() {
        let two = "[[workers]]\nkind = \"a\"\ncount = 2\nport_base = 100\nexec_start = \"/bin/w {{ port }}\"\n\
                   [[workers]]\nkind = \"b\"\ncount = 1\nexec_start = \"/bin/w {{ index }}\"\n";
        let d = resolve(two).unwrap();
        let got: Vec<_> = d
            .workers
            .iter()
            .map(|w| {
                (
                    w.index,
                    w.kind_index,
                    w.service.unit.as_str(),
                    w.service.port,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, 0, "app-worker-0-a.service", Some(100)),
                (1, 1, "app-worker-1-a.service", Some(101)),
                (2, 0, "app-worker-2-b.service", None),
            ]
        );
        assert_eq!(d.workers[1].service.exec_start, "/bin/w 101");
        assert_eq!(d.workers[2].service.exec_start, "/bin/w 2");
        let block = |kind: &str, count: usize| {
            format!("[[workers]]\nkind = \"{kind}\"\ncount = {count}\nexec_start = \"/bin/w\"\n")
        };
        refused(&block("a.b", 1), 6, "workers[0].kind", "`-` and `_`");
        refused(
            &format!("{}{}", block("a", 1), block("a", 1)),
            10,
            "workers[1].kind",
            "first defined at line 6",
        );
        let over = format!("{}{}", block("a", 9000), block("b", 1001));
        refused(
            &over,
            11,
            "workers[1].count",
            "10001 workers; at most 10000",
        );
        let port =
            "[[workers]]\nkind = \"a\"\ncount = 2\nport_base = 65535\nexec_start = \"/bin/w\"\n";
        refused(port, 8, "workers[0].port_base", "port 65536");
    }

    #[test]
    fn per_kind_naming_and_installed_workers_keep_names_and_ports() {
        let two = "[[workers]]\nkind = \"a\"\ncount = 1\nport_base = 100\nexec_start = \"/bin/w {{ index }}\"\n\
                   [[workers]]\nkind = \"b\"\ncount = 2\nport_base = 200\nexec_start = \"/bin/w {{ port }}\"\n";
        let text = format!(
            "{}{two}",
            BASE.replace("\"app\"\n", "\"app\"\nnaming = \"per-kind\"\n")
        );
        let source = Source {
            path: "t.toml".into(),
            text,
        };
        let d = Deployment::from_source(&source, None).unwrap();
        assert_eq!(d.naming, Naming::PerKind);
        let units: Vec<_> = d.workers.iter().map(|w| w.service.unit.as_str()).collect();
        assert_eq!(
            units,
            [
                "app-worker-a-0.service",
                "app-worker-b-0.service",
                "app-worker-b-1.service"
            ]
        );
        assert_eq!(d.workers[2].service.exec_start, "/bin/w 201");

        // Installed b-workers 0 and 1 (sequential): the new kind a, in front, goes above them.
        let source = Source {
            path: "t.toml".into(),
            text: format!("{BASE}{two}"),
        };
        let o = Overrides {
            installed: Installed::new("app", ["app-worker-0-b.service", "app-worker-1-b.service"]),
            ..Overrides::default()
        };
        let d = Deployment::resolve(&source, &o).unwrap();
        let got: Vec<_> = d
            .workers
            .iter()
            .map(|w| (w.service.unit.as_str(), w.service.port))
            .collect();
        assert_eq!(
            got,
            [
                ("app-worker-2-a.service", Some(100)),
                ("app-worker-0-b.service", Some(200)),
                ("app-worker-1-b.service", Some(201)),
            ]
        );
        assert_eq!(d.workers[0].service.exec_start, "/bin/w 2");
    }

    #[test]
    fn long_generated_unit_names_are_refused_at_the_kind() {
        let kind = "k".repeat(180);
        let text = format!("[[workers]]\nkind = \"{kind}\"\ncount = 1\nexec_start = \"/bin/w\"\n");
        let source = Source {
            path: "t.toml".into(),
            text: format!(
                "{}{text}",
                BASE.replace("\"app\"", &format!("\"{}\"", "a".repeat(60)))
            ),
        };
        let e = Deployment::from_source(&source, None).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("workers[0].kind"), "{e}");
        assert!(
            e.message.contains(&format!("at most {MAX_UNIT_NAME}")),
            "{e}"
        );
    }

    #[test]
    fn database_is_one_external_on_the_masters_host() {
        let db = format!("host = \"db1\"\n{HOSTS}[database]\nunit = \"postgresql\"\nstart_timeout = \"2m\"\nhealth = \"exec:pg_isready\"\n");
        let d = resolve(&db).unwrap();
        let x = d.database.unwrap();
        assert_eq!(
            (x.unit.as_str(), x.host.as_str()),
            ("postgresql.service", "db1")
        );
        assert_eq!(x.bounds.start, Duration::from_secs(120));
        assert_eq!(x.bounds.stop, DEFAULT_STOP_TIMEOUT);
        assert_eq!(
            x.health,
            Some(Probe::Exec {
                command: "pg_isready".into()
            })
        );
        refused(
            "[database]\nunit = \"pg\"\nstart_timeout = \"1ns\"\n",
            7,
            "database.start_timeout",
            "shorter than 1ms",
        );
        refused(
            "[database]\nunit = \"app\"\n",
            6,
            "database.unit",
            "a unit orch generates",
        );
        let remote = format!(
            "host = \"db1\"\n{HOSTS}[database]\nunit = \"pg\"\nhealth = \"tcp://127.0.0.1:5432\"\n"
        );
        // A loopback probe of a remote unit is probed from that host (over SSH).
        let d = resolve(&remote).unwrap();
        let db = d.database.unwrap();
        assert_eq!((db.host.as_str(), db.health.is_some()), ("db1", true));
    }

    #[test]
    fn generated_units_and_bare_templates_are_never_external() {
        for (extra, key, says) in [
            (
                "[[prerequisites]]\nunit = \"app.slice\"\n",
                "prerequisites[0].unit",
                "own slice",
            ),
            (
                "[[dependents]]\nunit = \"bridge@.service\"\n",
                "dependents[0].unit",
                "template without an instance",
            ),
            (
                "[[dependents]]\nunit = \"app-worker-9-x\"\n",
                "dependents[0].unit",
                "a unit orch generates",
            ),
            (
                "[database]\nunit = \"app.service\"\n",
                "database.unit",
                "a unit orch generates",
            ),
        ] {
            refused(extra, 6, key, says);
        }
        let d = resolve("[[dependents]]\nunit = \"bridge@main.service\"\n").unwrap();
        assert_eq!(d.dependents[0].unit, "bridge@main.service");
    }

    #[test]
    fn prerequisites_each_once_requiring_by_default() {
        let pre = "[database]\nunit = \"pg\"\n[[prerequisites]]\nunit = \"redis\"\nstop_timeout = \"5s\"\n\
                   health = \"tcp://127.0.0.1:6379\"\n[[prerequisites]]\nunit = \"proxy.service\"\nrequires = false\n";
        let d = resolve(pre).unwrap();
        let got: Vec<_> = d
            .prerequisites
            .iter()
            .map(|p| {
                (
                    p.external.unit.as_str(),
                    p.requires,
                    p.external.host.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("redis.service", true, LOCAL_HOST),
                ("proxy.service", false, LOCAL_HOST)
            ]
        );
        assert_eq!(
            d.prerequisites[0].external.bounds.stop,
            Duration::from_secs(5)
        );
        assert!(d.prerequisites[0].external.health.is_some());
        refused(
            "[[prerequisites]]\nunit = \"app\"\n",
            6,
            "prerequisites[0].unit",
            "a unit orch generates",
        );
        refused(
            "[database]\nunit = \"pg\"\n[[prerequisites]]\nunit = \"pg.service\"\n",
            8,
            "prerequisites[0].unit",
            "listed twice",
        );
        refused(
            "[[prerequisites]]\nunit = \"r\"\n[[dependents]]\nunit = \"r\"\n",
            8,
            "dependents[0].unit",
            "listed twice",
        );
        refused(
            "[[prerequisites]]\nunit = \"r\"\nhost = \"nowhere\"\n",
            7,
            "prerequisites[0].host",
            "not a host",
        );
    }

    #[test]
    fn a_named_templates_folder_must_exist() {
        let text = |t: &str| {
            format!("[deployment]\nname = \"app\"\ntemplates = \"{t}\"\n[master]\nexec_start = \"/bin/m\"\n")
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tpl")).unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let load = |t: &str| {
            let source = Source {
                path: dir.path().join("orch.toml"),
                text: text(t),
            };
            Deployment::from_source(&source, None)
        };
        assert_eq!(
            load("tpl").unwrap().templates_dir,
            Some(dir.path().join("tpl"))
        );
        for (t, says) in [("missing", "does not exist"), ("file", "is not a folder")] {
            let e = load(t).unwrap_err();
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(3), Some("deployment.templates"))
            );
            assert!(
                e.message.contains(says) && e.message.contains("remove the key"),
                "{e}"
            );
        }
    }

    #[test]
    fn dependents_each_once_with_their_own_timeouts() {
        let deps = "[[dependents]]\nunit = \"bridge\"\nstop_timeout = \"5s\"\n[[dependents]]\nunit = \"irc.socket\"\n";
        let d = resolve(deps).unwrap();
        let units: Vec<_> = d.dependents.iter().map(|x| x.unit.as_str()).collect();
        assert_eq!(units, ["bridge.service", "irc.socket"]);
        assert_eq!(d.dependents[0].bounds.stop, Duration::from_secs(5));
        assert_eq!(d.dependents[0].host, LOCAL_HOST);
        let twice = "[[dependents]]\nunit = \"b\"\n[[dependents]]\nunit = \"b.service\"\n";
        refused(twice, 8, "dependents[1].unit", "listed twice");
        refused(
            "[[dependents]]\nunit = \"b\"\nhealth_timeout = \"25h\"\n",
            7,
            "dependents[0].health_timeout",
            "at most 24h",
        );
        refused(
            "[[dependents]]\nunit = \"b\"\nhealth = \"http://u@h/\"\n",
            7,
            "dependents[0].health",
            "user name",
        );
    }

    #[test]
    fn service_keys_are_checked_and_expanded() {
        let m = "[deployment]\nname = \"app\"\n[master]\nexec_start = \"/bin/m\"\nuser = \"synapse\"\n\
                 environment = { A = \"{{ name }}\", B_2 = \"x\" }\nrestart_sec = \"1ms 500us\"\nhealth = \"http://{{ host }}:8/h\"\n";
        let d = Deployment::from_source(
            &Source {
                path: "t.toml".into(),
                text: m.into(),
            },
            None,
        )
        .unwrap();
        let s = &d.master;
        assert_eq!(s.user.as_deref(), Some("synapse"));
        assert_eq!(s.environment["A"], "app");
        assert_eq!(s.restart_sec, Duration::from_millis(2));
        assert_eq!(
            s.health.as_ref().unwrap().to_string(),
            "http://localhost:8/h"
        );
        assert_eq!(
            (s.service_type.as_str(), s.restart.as_str()),
            ("exec", "on-failure")
        );
        refused("user = \"-root\"\n", 5, "master.user", "not a valid user");
        refused(
            "environment = { 1A = \"x\" }\n",
            5,
            "master.environment",
            "not a valid environment variable",
        );
        refused("type = \"weird\"\n", 5, "master.type", "not one of");
        refused(
            "description = \"{{ nope }}\"\n",
            5,
            "master.description",
            "undefined variable",
        );
        let big = "x".repeat(MAX_VALUE_LEN + 1);
        refused(
            &format!("working_directory = \"{big}\"\n"),
            5,
            "master.working_directory",
            "longer than 65536",
        );
        // A loop inside a value ends: the expansion has a bounded amount of fuel.
        let spin = "description = \"{% for i in range(100000) %}{% endfor %}x\"\n";
        refused(spin, 5, "master.description", "fuel");
    }

    #[test]
    fn probe_from_is_carried_on_the_probe_of_every_section() {
        let from = |p: &Option<Probe>| p.as_ref().map(Probe::from);
        let text = format!(
            "health = \"http://127.0.0.1:8/h\"\nprobe_from = \"local\"\n\
             [[workers]]\nkind = \"a\"\ncount = 1\nexec_start = \"/bin/w\"\nhealth = \"tcp://h:9\"\nprobe_from = \"host\"\n\
             [[workers]]\nkind = \"b\"\ncount = 1\nexec_start = \"/bin/w\"\nhealth = \"tcp://h:10\"\n\
             {HOSTS}[database]\nunit = \"pg\"\nhost = \"db1\"\nhealth = \"tcp://db:5432\"\nprobe_from = \"local\"\n\
             [[dependents]]\nunit = \"bot\"\nhealth = \"http://b:1/\"\nprobe_from = \"local\"\n"
        );
        let d = resolve(&text).unwrap();
        assert_eq!(from(&d.master.health), Some(ProbeFrom::Local));
        assert_eq!(from(&d.workers[0].service.health), Some(ProbeFrom::Host));
        assert_eq!(from(&d.workers[1].service.health), Some(ProbeFrom::Host));
        assert_eq!(from(&d.database.unwrap().health), Some(ProbeFrom::Local));
        assert_eq!(from(&d.dependents[0].health), Some(ProbeFrom::Local));
    }

    #[test]
    fn probe_from_is_refused_with_a_bad_value_on_exec_or_without_a_probe() {
        let tcp = "health = \"tcp://h:9\"\n";
        refused(
            &format!("{tcp}probe_from = \"remote\"\n"),
            6,
            "master.probe_from",
            "`remote` is not a place to probe from",
        );
        refused(
            "health = \"exec:true\"\nprobe_from = \"local\"\n",
            6,
            "master.probe_from",
            "an exec: probe always runs on the unit's host",
        );
        // Even `host`: the key promises a choice the exec probe does not have.
        refused(
            "[database]\nunit = \"pg\"\nhealth = \"exec:pg_isready\"\nprobe_from = \"host\"\n",
            8,
            "database.probe_from",
            "exec:",
        );
        refused(
            "[[dependents]]\nunit = \"b\"\nprobe_from = \"local\"\n",
            7,
            "dependents[0].probe_from",
            "needs a health probe",
        );
        refused(
            "[[workers]]\nkind = \"a\"\ncount = 1\nexec_start = \"/bin/w\"\nprobe_from = 1\n",
            9,
            "workers[0].probe_from",
            "",
        );
    }

    #[test]
    fn container_keys_are_checked_and_make_a_container_unit() {
        let w = "[[workers]]\nkind = \"a\"\ncount = 1\nexec_start = \"/bin/w {{ index }}\"\n";
        let d = resolve(&format!(
            "{w}image = \"localhost/tiny:1\"\nvolumes = [\"/usr:/usr:ro\"]\nreload_signal = \"USR1\"\ntype = \"notify\"\nuser = \"synapse\"\nenvironment = {{ A = \"1\" }}\n"
        ))
        .unwrap();
        let s = &d.workers[0].service;
        let c = s.container.as_ref().expect("container");
        assert_eq!(
            (c.command.as_str(), c.user.as_deref()),
            ("/bin/w 0", Some("synapse"))
        );
        assert!(
            s.exec_start.contains("--sdnotify=container"),
            "{}",
            s.exec_start
        );
        assert!(
            s.exec_start.ends_with("localhost/tiny:1 /bin/w 0"),
            "{}",
            s.exec_start
        );
        assert_eq!(
            s.exec_reload.as_deref(),
            Some("/usr/bin/podman kill --signal=USR1 app-worker-0-a")
        );
        assert_eq!(
            (s.service_type.as_str(), s.user.as_deref()),
            ("notify", None)
        );
        assert!(d.master.container.is_none());
        // A bare unit's reload_signal signals its main process.
        let bare = resolve(&format!("{w}reload_signal = \"HUP\"\n")).unwrap();
        let reload = bare.workers[0].service.exec_reload.as_deref();
        assert_eq!(reload, Some("/bin/kill -s HUP $MAINPID"));
        refused(
            &format!("{w}image = \"Bad Image\"\n"),
            9,
            "workers[0].image",
            "image reference",
        );
        refused(
            &format!("{w}image = \"a\"\nruntime = \"docker\"\n"),
            10,
            "workers[0].runtime",
            "not supported",
        );
        refused(
            &format!("{w}image = \"a\"\nvolumes = [\"rel:/x\"]\n"),
            10,
            "workers[0].volumes",
            "HOST:CONTAINER",
        );
        refused(
            &format!("{w}image = \"a\"\ncontainer_args = [\"--name=x\"]\n"),
            10,
            "workers[0].container_args",
            "managed by orch",
        );
        refused(
            &format!("{w}reload_signal = \"NOPE\"\n"),
            9,
            "workers[0].reload_signal",
            "signal name",
        );
        refused(
            &format!("{w}volumes = [\"/a:/b\"]\n"),
            9,
            "workers[0].volumes",
            "needs `image`",
        );
        refused(
            &format!("{w}exec_reload = \"/bin/r\"\nreload_signal = \"HUP\"\n"),
            10,
            "workers[0].reload_signal",
            "not both",
        );
    }
}

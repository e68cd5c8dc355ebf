//! Raw configuration: the TOML file as the operator wrote it, with spans.
//!
//! Nothing here is interpreted beyond TOML types; [`crate::model`] resolves it.
//! Every value keeps its byte span so that a later validation error can name
//! the file, line, column and key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// A value with the byte range it came from.
pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub deployment: S<RawDeployment>,
    pub database: Option<S<RawDatabase>>,
    pub master: S<RawMaster>,
    #[serde(default)]
    pub workers: Vec<S<RawWorker>>,
    #[serde(default)]
    pub dependents: Vec<S<RawDependent>>,
    #[serde(default)]
    pub prerequisites: Vec<S<RawPrerequisite>>,
    #[serde(default)]
    pub hosts: Vec<S<RawHost>>,
}

/// A machine units can live on, reached over SSH.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    pub name: S<String>,
    /// `[USER@]HOST[:PORT]`
    pub address: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    pub name: S<String>,
    pub unit_dir: Option<S<String>>,
    pub templates: Option<S<String>>,
    pub state_dir: Option<S<String>>,
    pub runtime_dir: Option<S<String>>,
    /// `sequential` or `per-kind` (see [`crate::model::Naming`]).
    pub naming: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    pub unit: S<String>,
    pub host: Option<S<String>>,
    pub health: Option<S<String>>,
    /// `host` (default) or `local`: where an http or tcp probe connects from.
    pub probe_from: Option<S<String>>,
    pub start_timeout: Option<S<String>>,
    pub health_timeout: Option<S<String>>,
    /// The roles the deployment connects as: `stop-for-maintenance` proves
    /// PostgreSQL has no session of them.
    pub roles: Option<S<Vec<S<String>>>>,
    /// The role orch checks sessions as (default `postgres`).
    pub superuser: Option<S<String>>,
    /// Where orch reaches PostgreSQL: a socket path or `tcp://HOST:PORT`.
    pub connect: Option<S<String>>,
}

/// Keys shared by the master and every worker block. Listed in both structs
/// (serde cannot combine `flatten` with `deny_unknown_fields`) and viewed
/// through [`RawService`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaster {
    pub host: Option<S<String>>,
    pub description: Option<S<String>>,
    pub exec_start: S<String>,
    pub exec_reload: Option<S<String>>,
    pub user: Option<S<String>>,
    pub group: Option<S<String>>,
    pub working_directory: Option<S<String>>,
    pub environment: Option<S<BTreeMap<S<String>, S<String>>>>,
    pub environment_file: Option<S<String>>,
    #[serde(rename = "type")]
    pub service_type: Option<S<String>>,
    pub restart: Option<S<String>>,
    pub restart_sec: Option<S<String>>,
    pub port: Option<S<i64>>,
    pub health: Option<S<String>>,
    /// `host` (default) or `local`: where an http or tcp probe connects from.
    pub probe_from: Option<S<String>>,
    pub start_timeout: Option<S<String>>,
    pub stop_timeout: Option<S<String>>,
    pub health_timeout: Option<S<String>>,
    // Resources (see [`RawResources`]).
    pub memory_max: Option<S<RawLimit>>,
    pub memory_high: Option<S<RawLimit>>,
    pub cpu_quota: Option<S<RawLimit>>,
    pub cpu_weight: Option<S<RawLimit>>,
    pub tasks_max: Option<S<RawLimit>>,
    // Container (see [`RawContainer`]).
    pub image: Option<S<String>>,
    pub runtime: Option<S<String>>,
    pub volumes: Option<S<Vec<S<String>>>>,
    pub container_args: Option<S<Vec<S<String>>>>,
    pub reload_signal: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorker {
    pub kind: S<String>,
    pub count: S<i64>,
    /// Serves no client request itself (federation sender, pusher): alone
    /// of its kind, it restarts after the rest of the outage window.
    pub background: Option<S<bool>>,
    pub port_base: Option<S<i64>>,
    pub host: Option<S<String>>,
    pub description: Option<S<String>>,
    pub exec_start: S<String>,
    pub exec_reload: Option<S<String>>,
    pub user: Option<S<String>>,
    pub group: Option<S<String>>,
    pub working_directory: Option<S<String>>,
    pub environment: Option<S<BTreeMap<S<String>, S<String>>>>,
    pub environment_file: Option<S<String>>,
    #[serde(rename = "type")]
    pub service_type: Option<S<String>>,
    pub restart: Option<S<String>>,
    pub restart_sec: Option<S<String>>,
    pub health: Option<S<String>>,
    /// `host` (default) or `local`: where an http or tcp probe connects from.
    pub probe_from: Option<S<String>>,
    pub start_timeout: Option<S<String>>,
    pub stop_timeout: Option<S<String>>,
    pub health_timeout: Option<S<String>>,
    // Resources (see [`RawResources`]).
    pub memory_max: Option<S<RawLimit>>,
    pub memory_high: Option<S<RawLimit>>,
    pub cpu_quota: Option<S<RawLimit>>,
    pub cpu_weight: Option<S<RawLimit>>,
    pub tasks_max: Option<S<RawLimit>>,
    // Container (see [`RawContainer`]).
    pub image: Option<S<String>>,
    pub runtime: Option<S<String>>,
    pub volumes: Option<S<Vec<S<String>>>>,
    pub container_args: Option<S<Vec<S<String>>>>,
    pub reload_signal: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDependent {
    pub unit: S<String>,
    pub host: Option<S<String>>,
    pub health: Option<S<String>>,
    /// `host` (default) or `local`: where an http or tcp probe connects from.
    pub probe_from: Option<S<String>>,
    pub start_timeout: Option<S<String>>,
    pub stop_timeout: Option<S<String>>,
    pub health_timeout: Option<S<String>>,
}

/// A unit the deployment needs but does not own (Redis, a reverse proxy):
/// a dependent's keys, plus how the master depends on it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrerequisite {
    pub unit: S<String>,
    pub host: Option<S<String>>,
    pub health: Option<S<String>>,
    pub probe_from: Option<S<String>>,
    pub start_timeout: Option<S<String>>,
    pub stop_timeout: Option<S<String>>,
    pub health_timeout: Option<S<String>>,
    /// `true` (the default): `Requires=` in the master; `false`: `Wants=`.
    pub requires: Option<S<bool>>,
}

/// The keys the master and a worker block have in common.
pub struct RawService<'a> {
    pub description: Option<&'a S<String>>,
    pub exec_start: &'a S<String>,
    pub exec_reload: Option<&'a S<String>>,
    pub user: Option<&'a S<String>>,
    pub group: Option<&'a S<String>>,
    pub working_directory: Option<&'a S<String>>,
    pub environment: Option<&'a S<BTreeMap<S<String>, S<String>>>>,
    pub environment_file: Option<&'a S<String>>,
    pub service_type: Option<&'a S<String>>,
    pub restart: Option<&'a S<String>>,
    pub restart_sec: Option<&'a S<String>>,
    pub health: Option<&'a S<String>>,
    pub probe_from: Option<&'a S<String>>,
    pub start_timeout: Option<&'a S<String>>,
    pub stop_timeout: Option<&'a S<String>>,
    pub health_timeout: Option<&'a S<String>>,
}

macro_rules! service_view {
    ($t:ty) => {
        impl $t {
            pub fn service(&self) -> RawService<'_> {
                RawService {
                    description: self.description.as_ref(),
                    exec_start: &self.exec_start,
                    exec_reload: self.exec_reload.as_ref(),
                    user: self.user.as_ref(),
                    group: self.group.as_ref(),
                    working_directory: self.working_directory.as_ref(),
                    environment: self.environment.as_ref(),
                    environment_file: self.environment_file.as_ref(),
                    service_type: self.service_type.as_ref(),
                    restart: self.restart.as_ref(),
                    restart_sec: self.restart_sec.as_ref(),
                    health: self.health.as_ref(),
                    probe_from: self.probe_from.as_ref(),
                    start_timeout: self.start_timeout.as_ref(),
                    stop_timeout: self.stop_timeout.as_ref(),
                    health_timeout: self.health_timeout.as_ref(),
                }
            }
        }
    };
}
service_view!(RawMaster);
service_view!(RawWorker);

/// A resource value as written: `"512M"`, `"150%"`, `"infinity"` or a bare
/// number (`cpu_weight = 200`, `tasks_max = 512`). Accepting both TOML types
/// keeps `cpu_weight = 200` and `cpu_weight = "200"` equally valid; the
/// model checks what each key allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawLimit {
    Text(String),
    Number(i64),
}

impl<'de> Deserialize<'de> for RawLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawLimit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a string such as \"512M\", \"50%\" or \"infinity\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawLimit, E> {
                Ok(RawLimit::Number(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawLimit, E> {
                i64::try_from(v)
                    .map(RawLimit::Number)
                    .map_err(|_| E::custom("number too large"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawLimit, E> {
                Ok(RawLimit::Text(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The resource keys of the master and a worker block.
pub struct RawResources<'a> {
    pub memory_max: Option<&'a S<RawLimit>>,
    pub memory_high: Option<&'a S<RawLimit>>,
    pub cpu_quota: Option<&'a S<RawLimit>>,
    pub cpu_weight: Option<&'a S<RawLimit>>,
    pub tasks_max: Option<&'a S<RawLimit>>,
}

macro_rules! resources_view {
    ($t:ty) => {
        impl $t {
            pub fn resources(&self) -> RawResources<'_> {
                RawResources {
                    memory_max: self.memory_max.as_ref(),
                    memory_high: self.memory_high.as_ref(),
                    cpu_quota: self.cpu_quota.as_ref(),
                    cpu_weight: self.cpu_weight.as_ref(),
                    tasks_max: self.tasks_max.as_ref(),
                }
            }
        }
    };
}
resources_view!(RawMaster);
resources_view!(RawWorker);

/// The container keys of the master and a worker block: `image` makes the
/// unit container-backed; `reload_signal` applies to bare units too.
pub struct RawContainer<'a> {
    pub image: Option<&'a S<String>>,
    pub runtime: Option<&'a S<String>>,
    pub volumes: Option<&'a S<Vec<S<String>>>>,
    pub container_args: Option<&'a S<Vec<S<String>>>>,
    pub reload_signal: Option<&'a S<String>>,
}

macro_rules! container_view {
    ($t:ty) => {
        impl $t {
            pub fn container(&self) -> RawContainer<'_> {
                RawContainer {
                    image: self.image.as_ref(),
                    runtime: self.runtime.as_ref(),
                    volumes: self.volumes.as_ref(),
                    container_args: self.container_args.as_ref(),
                    reload_signal: self.reload_signal.as_ref(),
                }
            }
        }
    };
}
container_view!(RawMaster);
container_view!(RawWorker);

/// The keys of a unit orch does not generate: the database or a dependent.
pub struct RawExternal<'a> {
    pub unit: &'a S<String>,
    pub host: Option<&'a S<String>>,
    pub health: Option<&'a S<String>>,
    pub probe_from: Option<&'a S<String>>,
    pub start_timeout: Option<&'a S<String>>,
    /// `None` for the database, which has no such key.
    pub stop_timeout: Option<&'a S<String>>,
    pub health_timeout: Option<&'a S<String>>,
}

impl RawDatabase {
    pub fn external(&self) -> RawExternal<'_> {
        RawExternal {
            unit: &self.unit,
            host: self.host.as_ref(),
            health: self.health.as_ref(),
            probe_from: self.probe_from.as_ref(),
            start_timeout: self.start_timeout.as_ref(),
            stop_timeout: None,
            health_timeout: self.health_timeout.as_ref(),
        }
    }
}

/// A dependent and a prerequisite have the same keys for what they are
/// (a prerequisite adds how the master depends on it): one view of both.
macro_rules! external_view {
    ($raw:ty) => {
        impl $raw {
            pub fn external(&self) -> RawExternal<'_> {
                RawExternal {
                    unit: &self.unit,
                    host: self.host.as_ref(),
                    health: self.health.as_ref(),
                    probe_from: self.probe_from.as_ref(),
                    start_timeout: self.start_timeout.as_ref(),
                    stop_timeout: self.stop_timeout.as_ref(),
                    health_timeout: self.health_timeout.as_ref(),
                }
            }
        }
    };
}

external_view!(RawDependent);
external_view!(RawPrerequisite);

/// The text of a configuration file, kept so errors can quote positions in it.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    /// Reads a configuration file. Every failure names the path.
    pub fn read(path: &Path) -> Result<Source, ConfigError> {
        let fail = |message: String| ConfigError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            key: None,
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        if meta.is_dir() {
            return Err(fail("is a directory, not a configuration file".into()));
        }
        // A FIFO or a device could block the read forever.
        if !meta.is_file() {
            return Err(fail("is not a regular file".into()));
        }
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            // Everything before the first bad byte is valid text to count lines in.
            let good = e.utf8_error().valid_up_to();
            let prefix = std::str::from_utf8(&e.as_bytes()[..good]).expect("valid up to here");
            let (line, column) = line_col(prefix, good);
            ConfigError {
                line: Some(line),
                column: Some(column),
                ..fail("not valid UTF-8: save the file as UTF-8 (a byte here is not a UTF-8 character)".into())
            }
        })?;
        Ok(Source {
            path: path.to_path_buf(),
            text,
        })
    }

    pub fn parse(&self) -> Result<RawConfig, ConfigError> {
        toml::from_str(&self.text).map_err(|e| {
            if let Some(shape) = self.wrong_shape() {
                return shape;
            }
            if let Some(missing) = self.missing_section() {
                return missing;
            }
            let message = words::operator_words(e.message().trim());
            match e.span() {
                Some(span) => {
                    let key = key_at(&self.text, span.clone());
                    self.error(span, key, message)
                }
                None => ConfigError {
                    path: self.path.clone(),
                    line: None,
                    column: None,
                    key: None,
                    message,
                },
            }
        })
    }

    /// A section written as a list where the configuration wants one table
    /// (`[[master]]`), or as one table where it wants a list (`[workers]`):
    /// said in the configuration's words, not the parser's.
    fn wrong_shape(&self) -> Option<ConfigError> {
        let table: toml::Table = self.text.parse().ok()?;
        let one = ["deployment", "master", "database"];
        let many = ["workers", "dependents", "prerequisites", "hosts"];
        let (key, header, message) = one
            .iter()
            .find(|k| table.get(**k).is_some_and(toml::Value::is_array))
            .map(|k| {
                (
                    *k,
                    format!("[[{k}]]"),
                    format!("`[[{k}]]` declares a list; a deployment has one {k}: write `[{k}]`"),
                )
            })
            .or_else(|| {
                many.iter()
                    .find(|k| table.get(**k).is_some_and(toml::Value::is_table))
                    .map(|k| {
                        (
                            *k,
                            format!("[{k}]"),
                            format!("`[{k}]` declares one table; write `[[{k}]]`, one block each"),
                        )
                    })
            })?;
        let at = self.text.find(&header).unwrap_or(0);
        Some(self.error(at..at + header.len(), Some(key.to_string()), message))
    }

    /// A required section that is not there (`[deployment]`, `[master]`),
    /// named as a section; serde would say `missing field` at line 1.
    fn missing_section(&self) -> Option<ConfigError> {
        let table: toml::Table = self.text.parse().ok()?;
        // A mistyped section (`[deploymnt]`) is better said by its suggestion.
        if table.keys().any(|k| !words::SECTIONS.contains(&k.as_str())) {
            return None;
        }
        let missing = ["deployment", "master"]
            .into_iter()
            .find(|k| !table.contains_key(*k))?;
        let what = match missing {
            "deployment" => "its `name` at least",
            _ => "its `exec_start` at least",
        };
        Some(ConfigError {
            path: self.path.clone(),
            line: None,
            column: None,
            key: None,
            message: format!(
                "missing section `[{missing}]`: every configuration has one, with {what}"
            ),
        })
    }

    /// An error at a byte range of this file.
    pub fn error(
        &self,
        span: std::ops::Range<usize>,
        key: Option<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = line_col(&self.text, span.start);
        ConfigError {
            path: self.path.clone(),
            line: Some(line),
            column: Some(column),
            key,
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The dotted key an error at `span` is about, e.g. `workers[1].count`:
/// the key before `=` when the span is a value, or the span itself when the
/// parser points at a key (an unknown field), prefixed by the table header
/// above it.
fn key_at(text: &str, span: std::ops::Range<usize>) -> Option<String> {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    // An error about a whole table (a missing field, `[[t]]` for `[t]`) points at its header.
    let at_line_start = text[line_start..start].trim().is_empty();
    // Inside a header (`[[worker]]`, an unknown section): the header's name.
    let line = &text[line_start..];
    if !at_line_start && line.starts_with('[') && !line[..start - line_start].contains(']') {
        let name = line.trim_start_matches('[').split(']').next()?.trim();
        return (!name.is_empty()).then(|| name.to_string());
    }
    if let Some(header) = text[start..].strip_prefix('[').filter(|_| at_line_start) {
        let name = header.trim_start_matches('[').split(']').next()?.trim();
        let table = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        return (!name.is_empty() && name.chars().all(table)).then(|| name.to_string());
    }
    let before = text[line_start..start].trim();
    // In an inline table, `outer = { a = 1, key = `: the key is `outer.key`.
    let (outer, before) = match before.rsplit_once(['{', ',']) {
        Some((head, inner)) => {
            let outer = head
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            (Some(outer.to_string()), inner.trim())
        }
        None => (None, before),
    };
    let is_key = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let key = match before.strip_suffix('=').map(str::trim) {
        Some(k) if is_key(k.trim_matches('"')) => {
            let k = k.trim_matches('"');
            match outer.filter(|o| is_key(o)) {
                Some(o) => format!("{o}.{k}"),
                None => k.to_string(),
            }
        }
        _ => {
            let s = text.get(span)?.trim().trim_matches('"');
            if !is_key(s) {
                return None;
            }
            s.to_string()
        }
    };
    Some(match table_above(&text[..line_start]) {
        Some(t) if t != key => format!("{t}.{key}"),
        _ => key,
    })
}

/// The nearest table header in `above`, with its position among the
/// `[[array]]` headers of the same name: `workers[1]`, `master`.
fn table_above(above: &str) -> Option<String> {
    let header = above
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))?;
    let name = header
        .trim_start_matches('[')
        .split(']')
        .next()?
        .trim()
        .to_string();
    if !header.starts_with("[[") {
        return Some(name);
    }
    let n = above
        .lines()
        .filter(|l| l.trim().starts_with("[[") && l.contains(&format!("[[{name}]]")))
        .count();
    Some(format!("{name}[{}]", n.saturating_sub(1)))
}

mod words;

/// A configuration error: file, position, key and what is wrong.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let (Some(line), Some(col)) = (self.line, self.column) {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RawConfig, ConfigError> {
        Source {
            path: "t.toml".into(),
            text: text.into(),
        }
        .parse()
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err =
            parse("[deployment]\nname = \"x\"\n[master]\nexec_start = \"/bin/true\"\nbogus = 1\n")
                .unwrap_err();
        assert_eq!(err.line, Some(5), "{err}");
        assert_eq!(err.key.as_deref(), Some("master.bogus"), "{err}");
        assert!(
            err.to_string()
                .starts_with("t.toml:5:1: key `master.bogus`"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_is_located() {
        let err = parse("[deployment]\nname = \"x\"\n[master]\nexec_start = \"/bin/true\"\n[[workers]]\nkind = \"a\"\ncount = \"four\"\nexec_start = \"/bin/true\"\n")
            .unwrap_err();
        assert_eq!(err.line, Some(7), "{err}");
        assert_eq!(err.key.as_deref(), Some("workers[0].count"), "{err}");
        assert!(err.message.contains("a whole number"), "{err}");
    }

    #[test]
    fn a_key_in_an_inline_table_is_named_with_its_table() {
        let err = parse("[deployment]\nname = \"x\"\n[master]\nexec_start = \"/bin/true\"\nenvironment = { A = \"a\", B = 1 }\n")
            .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("master.environment.B"), "{err}");
        assert_eq!(err.line, Some(5), "{err}");
    }

    #[test]
    fn an_error_about_a_whole_table_names_the_table() {
        let err = parse("[deployment]\n[master]\nexec_start = \"/bin/true\"\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("deployment"), "{err}");
        assert!(err.message.contains("missing key `name`"), "{err}");
        let err = parse("[deployment]\nname = \"x\"\n[[master]]\nexec_start = \"/bin/true\"\n")
            .unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(3), Some("master")),
            "{err}"
        );
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
    }
}

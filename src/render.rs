//! Rendering: the validated [`Deployment`] becomes unit file contents.
//!
//! Templates are Jinja2 (minijinja), strict about undefined variables. Every
//! printed value goes through [`format_value`], which refuses control
//! characters and escapes `%`, so no value can add a line or a specifier the
//! template did not write. Each rendered file is then checked line by line,
//! stamped with the deployment marker and a hash of its content.

use std::path::{Path, PathBuf};

use minijinja::value::Value;
use minijinja::{Environment, Error as JinjaError, ErrorKind, Output, State, UndefinedBehavior};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::{check_value, Deployment, Role, Service};

/// Built-in templates, embedded so the binary works without `templates/`.
pub const BUILTIN_TEMPLATES: &[(&str, &str)] = &[
    (
        "master.service.j2",
        include_str!("../templates/master.service.j2"),
    ),
    (
        "worker.service.j2",
        include_str!("../templates/worker.service.j2"),
    ),
    (
        "deployment.slice.j2",
        include_str!("../templates/deployment.slice.j2"),
    ),
];

pub const MARKER_KEY: &str = "X-Orch-Deployment";
/// The largest unit file a template may produce: systemd reads lines up to
/// 1 MiB, and a unit near that size is a template bug, not a configuration.
pub const MAX_UNIT_FILE: usize = 1024 * 1024;
/// Bounds the work one unit's template may do (a loop must end). The
/// built-in master template spends about 10 per worker.
pub const RENDER_FUEL: u64 = 2_000_000;
const HASH_PREFIX: &str = "# orch-hash: sha256:";

#[derive(Debug, Clone, Serialize)]
pub struct RenderedUnit {
    pub unit: String,
    /// The host it is installed on.
    pub host: String,
    pub role: Role,
    /// Which template produced it (a built-in name or an override path).
    pub template: String,
    pub content: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template {template}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Template {
        template: String,
        line: Option<usize>,
        message: String,
    },
    #[error("cannot read template override {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{unit} rendered from {template} is not a valid unit file: {cause}")]
    Invalid {
        unit: String,
        template: String,
        #[source]
        cause: UnitFileError,
    },
}

/// Why rendered text is not a unit file orch will install.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitFileError {
    #[error("line {0} contains the control character {1:?}")]
    Control(usize, char),
    #[error("line {0} ends with a backslash (line continuation)")]
    Continuation(usize),
    #[error("line {0}: unexpected section [{1}] for this unit type")]
    Section(usize, String),
    #[error("line {0}: section [{1}] appears twice")]
    SectionTwice(usize, String),
    #[error("line {0} is neither a section, a comment nor Key=value: {1:?}")]
    NotADirective(usize, String),
    #[error("line {0}: `{1}` is not a valid directive name")]
    Key(usize, String),
    #[error("line {0}: `{1}=` comes before any [Section]")]
    NoSection(usize, String),
    #[error("has no [{0}] section")]
    Missing(&'static str),
    #[error("it sets `{existing}` but the deployment is `{deployment}`")]
    Marker {
        existing: String,
        deployment: String,
    },
    #[error("is larger than {MAX_UNIT_FILE} bytes")]
    TooLarge,
}

/// A unit name that would leave the unit directory as a file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unit name {0:?} would leave the unit directory")]
pub struct UnitPathError(pub String);

/// Where a template comes from: an override in the deployment's templates
/// folder wins over the built-in of the same name.
struct Templates {
    overrides: Option<PathBuf>,
}

impl Templates {
    /// The source and a display name for the first of `names` that exists.
    fn find(&self, names: &[String]) -> Result<(String, String), RenderError> {
        if let Some(dir) = &self.overrides {
            for name in names {
                let path = dir.join(name);
                match std::fs::read_to_string(&path) {
                    Ok(text) => return Ok((path.display().to_string(), text)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(cause) => return Err(RenderError::Read { path, cause }),
                }
            }
        }
        for name in names {
            if let Some((_, text)) = BUILTIN_TEMPLATES.iter().find(|(n, _)| n == name) {
                return Ok((format!("{name} (built-in)"), text.to_string()));
            }
        }
        unreachable!("every lookup ends in a built-in name")
    }
}

#[derive(Serialize)]
struct Context<'a> {
    name: &'a str,
    unit: &'a str,
    kind: &'a str,
    index: Option<usize>,
    port: Option<u16>,
    deployment: &'a str,
    /// The host the unit lives on.
    host: &'a str,
    /// The deployment's slice, `NAME.slice`, for `Slice=`.
    slice: &'a str,
    /// The units below are only those on the same host: systemd orders and
    /// pulls in units of its own machine only; across hosts orch's own
    /// ordering holds. `none` (or empty) when they live elsewhere.
    master: Option<&'a str>,
    database: Option<&'a str>,
    /// `[[prerequisites]]` on the same host: `{unit, requires}` each.
    prerequisites: Vec<PrerequisiteRef<'a>>,
    /// Built once per host and shared (a minijinja `Value` is reference
    /// counted), so rendering stays linear in the number of workers.
    workers: Value,
    dependents: Value,
    /// The unit's own configuration section, resolved.
    service: &'a Service,
}

/// A prerequisite as templates see it: the master `Requires=` it, or only
/// `Wants=` it (`requires = false`).
#[derive(Serialize)]
struct PrerequisiteRef<'a> {
    unit: &'a str,
    requires: bool,
}

/// The names of the units on each host, computed once.
struct Neighbours<'a> {
    d: &'a Deployment,
    workers: std::collections::HashMap<&'a str, Value>,
    dependents: std::collections::HashMap<&'a str, Value>,
}

impl<'a> Neighbours<'a> {
    fn new(d: &'a Deployment) -> Self {
        let mut workers: std::collections::HashMap<&str, Vec<&str>> = Default::default();
        for w in &d.workers {
            workers
                .entry(&w.service.host)
                .or_default()
                .push(&w.service.unit);
        }
        let mut dependents: std::collections::HashMap<&str, Vec<&str>> = Default::default();
        for x in &d.dependents {
            dependents.entry(&x.host).or_default().push(&x.unit);
        }
        let values = |m: std::collections::HashMap<&'a str, Vec<&str>>| {
            m.into_iter()
                .map(|(h, v)| (h, Value::from(minijinja::value::Serde(&v))))
                .collect()
        };
        Neighbours {
            d,
            workers: values(workers),
            dependents: values(dependents),
        }
    }

    fn context(&self, s: &'a Service, kind: &'a str, index: Option<usize>) -> Context<'a> {
        let d = self.d;
        let here = |host: &str| host == s.host;
        let on_host = |m: &std::collections::HashMap<&str, Value>| {
            m.get(s.host.as_str())
                .cloned()
                .unwrap_or_else(|| Value::from(Vec::<Value>::new()))
        };
        Context {
            name: &s.name,
            unit: &s.unit,
            kind,
            index,
            port: s.port,
            deployment: &d.name,
            host: &s.host,
            slice: &d.slice,
            master: here(&d.master.host).then_some(d.master.unit.as_str()),
            database: d
                .database
                .as_ref()
                .filter(|x| here(&x.host))
                .map(|x| x.unit.as_str()),
            prerequisites: d
                .prerequisites
                .iter()
                .filter(|p| here(&p.external.host))
                .map(|p| PrerequisiteRef {
                    unit: &p.external.unit,
                    requires: p.requires,
                })
                .collect(),
            workers: on_host(&self.workers),
            dependents: on_host(&self.dependents),
            service: s,
        }
    }
}

/// Renders every unit of the deployment, master first. Each template is
/// read and compiled once.
pub fn render(d: &Deployment) -> Result<Vec<RenderedUnit>, RenderError> {
    let templates = Templates {
        overrides: d.templates_dir.clone(),
    };
    let mut env = environment();
    let neighbours = Neighbours::new(d);
    let mut compiled = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(1 + d.workers.len());
    let units = std::iter::once((&d.master, Role::Master, "master", None)).chain(
        d.workers
            .iter()
            .map(|w| (&w.service, Role::Worker, w.kind.as_str(), Some(w.index))),
    );
    for (s, role, kind, index) in units {
        let names = match role {
            Role::Master => vec!["master.service.j2".to_string()],
            _ => vec![
                format!("worker-{kind}.service.j2"),
                "worker.service.j2".to_string(),
            ],
        };
        let tname = match compiled.get(&names) {
            Some(t) => String::clone(t),
            None => {
                let (tname, source) = templates.find(&names)?;
                env.add_template_owned(tname.clone(), source)
                    .map_err(|e| template_error(&tname, &e))?;
                compiled.insert(names, tname.clone());
                tname
            }
        };
        let ctx = neighbours.context(s, kind, index);
        let what = Rendering {
            unit: &s.unit,
            host: &s.host,
            role,
            tname: &tname,
        };
        out.push(render_one(&env, d, what, ctx)?);
    }
    out.extend(render_slices(d, &templates, &mut env)?);
    Ok(out)
}

/// What the template of a slice sees.
#[derive(Serialize)]
struct SliceContext<'a> {
    name: &'a str,
    unit: &'a str,
    deployment: &'a str,
    host: &'a str,
}

/// `NAME.slice` on every host a generated unit lives on: the units name it
/// in `Slice=`, so the whole deployment is one control group per host.
fn render_slices(
    d: &Deployment,
    templates: &Templates,
    env: &mut Environment<'static>,
) -> Result<Vec<RenderedUnit>, RenderError> {
    let (tname, source) = templates.find(&["deployment.slice.j2".to_string()])?;
    env.add_template_owned(tname.clone(), source)
        .map_err(|e| template_error(&tname, &e))?;
    let mut hosts: Vec<&str> = Vec::new();
    for s in d.services() {
        if !hosts.contains(&s.host.as_str()) {
            hosts.push(&s.host);
        }
    }
    let name = d.slice.trim_end_matches(".slice");
    hosts
        .into_iter()
        .map(|host| {
            let ctx = SliceContext {
                name,
                unit: &d.slice,
                deployment: &d.name,
                host,
            };
            let what = Rendering {
                unit: &d.slice,
                host,
                role: Role::Slice,
                tname: &tname,
            };
            render_one(env, d, what, ctx)
        })
        .collect()
}

/// The unit a template is rendered for.
struct Rendering<'a> {
    unit: &'a str,
    host: &'a str,
    role: Role,
    tname: &'a str,
}

/// Collects a template's output, refusing more than [`MAX_UNIT_FILE`] bytes.
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_UNIT_FILE {
            return Err(std::io::Error::other(format!(
                "the unit file would be larger than {MAX_UNIT_FILE} bytes"
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn render_one(
    env: &Environment<'_>,
    d: &Deployment,
    what: Rendering<'_>,
    ctx: impl Serialize,
) -> Result<RenderedUnit, RenderError> {
    let Rendering {
        unit,
        host,
        role,
        tname,
    } = what;
    let template = env
        .get_template(tname)
        .map_err(|e| template_error(tname, &e))?;
    let mut buf = Bounded(Vec::new());
    template
        .render_captured_to(minijinja::value::Serde(&ctx), &mut buf)
        .map_err(|e| template_error(tname, &e))?;
    let invalid = |cause: UnitFileError| RenderError::Invalid {
        unit: unit.to_string(),
        template: tname.to_string(),
        cause,
    };
    // The formatter and `quote` check every value, and template text is UTF-8.
    let body = String::from_utf8(buf.0).expect("templates write UTF-8");
    match role {
        Role::Slice => check_slice_file(&body),
        _ => check_unit_file(&body),
    }
    .map_err(invalid)?;
    let body = add_marker(&body, &d.name).map_err(invalid)?;
    Ok(RenderedUnit {
        unit: unit.to_string(),
        host: host.to_string(),
        role,
        template: tname.to_string(),
        content: stamp(&d.name, tname, &body),
    })
}

fn template_error(tname: &str, e: &JinjaError) -> RenderError {
    let mut message = match e.kind() {
        ErrorKind::UndefinedError => {
            "undefined variable (see docs/configuration.md for the variables a template may use)"
                .to_string()
        }
        _ => e
            .detail()
            .map(str::to_string)
            .unwrap_or_else(|| e.kind().to_string()),
    };
    // Errors raised inside a filter carry their cause one level down.
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        message.push_str(&format!(": {c}"));
        cause = c.source();
    }
    RenderError::Template {
        template: tname.to_string(),
        line: e.line(),
        message,
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(RENDER_FUEL));
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .expect("default delimiters are valid"),
    );
    env.set_formatter(format_value);
    env.add_filter("quote", quote);
    env.add_filter("seconds", seconds);
    env.add_filter("limit", limit);
    env
}

/// A resource value (`150%`, `512M`, `infinity`) printed as systemd reads
/// it: `CPUQuota=` and `MemoryMax=` expand no specifiers, so `%` must stay
/// one `%`. Only the characters of a checked limit pass.
fn limit(value: &Value) -> Result<Value, JinjaError> {
    let text = value.to_string();
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '%') {
        return Err(JinjaError::new(
            ErrorKind::InvalidOperation,
            format!("{text:?} is not a resource limit"),
        ));
    }
    Ok(Value::from_safe_string(text))
}

/// Prints a value into a unit file: checked, with `%` escaped so systemd
/// reads it literally. Values marked safe (by `quote`) are already escaped.
fn format_value(out: &mut Output, _state: &mut State, value: &Value) -> Result<(), JinjaError> {
    if value.is_none() || value.is_undefined() {
        return Err(JinjaError::new(
            ErrorKind::UndefinedError,
            "a template printed a missing value; guard it with {% if … %}",
        ));
    }
    let text = value.to_string();
    if !value.is_safe() {
        check_value(&text).map_err(|m| {
            JinjaError::new(ErrorKind::InvalidOperation, format!("value {text:?} {m}"))
        })?;
    }
    let text = if value.is_safe() {
        text
    } else {
        text.replace('%', "%%")
    };
    out.write_str(&text)
        .map_err(|_| JinjaError::new(ErrorKind::WriteFailure, "write failed"))
}

/// `"…"` with systemd's C-style escapes, for `Environment=` and arguments
/// with spaces.
fn quote(value: &Value) -> Result<Value, JinjaError> {
    let text = value.to_string();
    check_value(&text)
        .map_err(|m| JinjaError::new(ErrorKind::InvalidOperation, format!("value {text:?} {m}")))?;
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    Ok(Value::from_safe_string(format!("\"{escaped}\"")))
}

/// A number of seconds as systemd's time span (`90s`, `1500ms`), rounded
/// up to the millisecond: a positive duration never prints as 0, which
/// systemd reads as *no timeout*.
fn seconds(value: f64) -> Result<Value, JinjaError> {
    if !value.is_finite() || value < 0.0 {
        return Err(JinjaError::new(
            ErrorKind::InvalidOperation,
            "not a duration",
        ));
    }
    // Through whole microseconds first: 1.1 * 1000.0 is 1100.0000000000002.
    let us = (value * 1_000_000.0).round() as u64;
    let ms = us.div_ceil(1000);
    Ok(Value::from(if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }))
}

/// Checks that rendered text is plain unit-file syntax: sections, `Key=value`
/// lines and comments, nothing continued across lines.
pub fn check_unit_file(text: &str) -> Result<(), UnitFileError> {
    check_sections(text, &["Unit", "Service", "Install"], &["Unit", "Service"])
}

/// As [`check_unit_file`], for a slice: `[Unit]` and `[Slice]`, no `[Install]`
/// (a slice is started by the first unit in it).
pub fn check_slice_file(text: &str) -> Result<(), UnitFileError> {
    check_sections(text, &["Unit", "Slice"], &["Unit", "Slice"])
}

fn check_sections(
    text: &str,
    allowed: &[&str],
    required: &[&'static str],
) -> Result<(), UnitFileError> {
    use UnitFileError as E;
    let mut section: Option<&str> = None;
    let mut seen = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let n = i + 1;
        if let Some(c) = line.chars().find(|c| c.is_control()) {
            return Err(E::Control(n, c));
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if t.ends_with('\\') {
            return Err(E::Continuation(n));
        }
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let known = allowed.contains(&name) || name.starts_with("X-");
            if !known {
                return Err(E::Section(n, name.to_string()));
            }
            if seen.contains(&name) {
                return Err(E::SectionTwice(n, name.to_string()));
            }
            seen.push(name);
            section = Some(name);
            continue;
        }
        let Some((key, _)) = t.split_once('=') else {
            return Err(E::NotADirective(n, t.to_string()));
        };
        let key = key.trim_end();
        let valid_key = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_key {
            return Err(E::Key(n, key.to_string()));
        }
        if section.is_none() {
            return Err(E::NoSection(n, key.to_string()));
        }
    }
    for required in required {
        if !seen.contains(required) {
            return Err(E::Missing(required));
        }
    }
    Ok(())
}

/// Puts `X-Orch-Deployment=NAME` first in `[Unit]` (systemd ignores `X-`
/// keys), unless the template already wrote it.
fn add_marker(body: &str, deployment: &str) -> Result<String, UnitFileError> {
    let marker = format!("{MARKER_KEY}={deployment}");
    if let Some(existing) = body
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{MARKER_KEY}=")))
    {
        return if existing.trim() == marker {
            Ok(body.to_string())
        } else {
            Err(UnitFileError::Marker {
                existing: existing.trim().to_string(),
                deployment: deployment.to_string(),
            })
        };
    }
    let mut out = String::with_capacity(body.len() + marker.len() + 1);
    let mut done = false;
    for line in body.split_inclusive('\n') {
        out.push_str(line);
        if !done && line.trim() == "[Unit]" {
            if !line.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&marker);
            out.push('\n');
            done = true;
        }
    }
    Ok(out)
}

/// Header comment, the hash line, then the body the hash covers.
fn stamp(deployment: &str, template: &str, body: &str) -> String {
    let body = body.trim_start_matches('\n');
    let mut body = body.to_string();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    format!(
        "# Generated by orch for deployment {deployment} from template {template}.\n\
         # Do not edit: `orch plan` reports hand edits as drift, `orch install --force` overwrites them.\n\
         {HASH_PREFIX}{}\n{body}",
        hash(&body)
    )
}

pub fn hash(text: &str) -> String {
    hash_bytes(text.as_bytes())
}

pub fn hash_bytes(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What orch can tell about a unit file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The `X-Orch-Deployment=` value, if any.
    pub deployment: Option<String>,
    /// Whether the hash line matches the content below it; `None` without a hash line.
    pub intact: Option<bool>,
}

pub fn read_marker(text: &str) -> Marker {
    let deployment = text.lines().find_map(|l| {
        l.trim()
            .strip_prefix(MARKER_KEY)
            .and_then(|r| r.trim_start().strip_prefix('='))
            .map(|v| v.trim().to_string())
    });
    let intact = text.find(HASH_PREFIX).map(|start| {
        let line_end = text[start..]
            .find('\n')
            .map_or(text.len(), |i| start + i + 1);
        let recorded = text[start + HASH_PREFIX.len()..line_end].trim();
        recorded == hash(&text[line_end..])
    });
    Marker { deployment, intact }
}

/// The file name a unit is written to, refusing anything that would leave `dir`.
pub fn unit_path(dir: &Path, unit: &str) -> Result<PathBuf, UnitPathError> {
    let ok = !unit.is_empty()
        && !unit.contains('/')
        && unit != "."
        && unit != ".."
        && !unit.starts_with('.')
        && !unit.contains('\0');
    if !ok {
        return Err(UnitPathError(unit.to_string()));
    }
    Ok(dir.join(unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_and_detects_edits() {
        let body = "[Unit]\nDescription=x\n\n[Service]\nExecStart=/bin/true\n";
        let body = add_marker(body, "demo").unwrap();
        let file = stamp("demo", "t", &body);
        assert_eq!(
            read_marker(&file),
            Marker {
                deployment: Some("demo".into()),
                intact: Some(true)
            }
        );
        let edited = file.replace("/bin/true", "/bin/false");
        assert_eq!(read_marker(&edited).intact, Some(false));
        assert_eq!(read_marker("[Unit]\n").deployment, None);
    }

    #[test]
    fn check_refuses_structure_changes() {
        assert!(check_unit_file("[Unit]\nA=b\n[Service]\nExecStart=/x\n").is_ok());
        assert!(check_unit_file("[Unit]\nA=b \\\n[Service]\nExecStart=/x\n").is_err());
        assert!(check_unit_file("[Unit]\nA=b\r\n[Service]\nExecStart=/x\n").is_err());
        assert!(check_unit_file("[Unit]\nnot a directive\n[Service]\n").is_err());
        assert!(check_unit_file("[Unit]\n[Service]\n[Unit]\n").is_err());
        assert!(check_unit_file("A=b\n[Unit]\n[Service]\n").is_err());
    }

    #[test]
    fn values_are_escaped_and_checked() {
        let env = environment();
        let out = env
            .render_str(
                "X={{ v }} Y={{ v|quote }}",
                minijinja::context! { v => "50% \"a\\b\"" },
            )
            .unwrap();
        assert_eq!(out, r#"X=50%% "a\b" Y="50%% \"a\\b\"""#);
        let err = env
            .render_str(
                "X={{ v }}",
                minijinja::context! { v => "a\nExecStartPre=/bin/evil" },
            )
            .unwrap_err();
        assert!(err.to_string().contains("control character"), "{err}");
        assert!(env.render_str("X={{ nope }}", ()).is_err());
    }

    #[test]
    fn the_master_requires_or_wants_its_prerequisites_on_its_host() {
        let text =
            "[deployment]\nname = \"app\"\n[[hosts]]\nname = \"far\"\naddress = \"far.example\"\n\
                    [master]\nexec_start = \"/bin/m\"\n[[prerequisites]]\nunit = \"redis\"\n\
                    [[prerequisites]]\nunit = \"proxy\"\nrequires = false\n\
                    [[prerequisites]]\nunit = \"elsewhere\"\nhost = \"far\"\n";
        let source = crate::config::Source {
            path: "t.toml".into(),
            text: text.into(),
        };
        let d = Deployment::from_source(&source, None).unwrap();
        let units = render(&d).unwrap();
        let master = &units[0].content;
        let unit_section = master.split("[Service]").next().unwrap();
        assert!(
            unit_section.contains("\nRequires=redis.service\nAfter=redis.service\n")
                && unit_section.contains("\nWants=proxy.service\nAfter=proxy.service\n"),
            "{master}"
        );
        assert!(
            !master.contains("Requires=proxy") && !master.contains("elsewhere"),
            "{master}"
        );
    }

    #[test]
    fn unit_paths_stay_inside() {
        assert!(unit_path(Path::new("/u"), "a.service").is_ok());
        for bad in ["../a.service", "a/b.service", "..", ".hidden.service", ""] {
            assert!(unit_path(Path::new("/u"), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_render_as_systemd_time_spans() {
        let sec = |v: f64| seconds(v).map(|x| x.to_string());
        assert_eq!(sec(90.0).unwrap(), "90s");
        assert_eq!(sec(1.5).unwrap(), "1500ms");
        assert_eq!(sec(0.0).unwrap(), "0s");
        assert!(sec(-1.0).is_err() && sec(f64::NAN).is_err() && sec(f64::INFINITY).is_err());
        let env = environment();
        assert_eq!(
            env.render_str("T={{ 2.25|seconds }}", ()).unwrap(),
            "T=2250ms"
        );
        assert!(env.render_str("X={{ none }}", ()).is_err());
        assert_eq!(env.render_str("X={{ 7 }}", ()).unwrap(), "X=7");
    }

    #[test]
    fn check_knows_sections_keys_and_comments() {
        let ok = "# c\n; c\n\n[Unit]\nA-b_1 = x\n[X-Orch]\nK=v\n[Service]\nExecStart=/x\n[Install]\nWantedBy=m\n";
        assert!(check_unit_file(ok).is_ok(), "{:?}", check_unit_file(ok));
        for bad in [
            "[Unit]\n[Service]\n[Timer]\n",
            "[Unit]\n",
            "[Service]\n",
            "[Unit]\n1A=b\n[Service]\n",
            "[Unit]\nA.b=c\n[Service]\n",
            "[Unit]\n=c\n[Service]\n",
            "[Unit]\n# comment \\\n[Service]\nA=b \\\n",
            "[Unit]\n\tA=b\n[Service]\n",
        ] {
            assert!(check_unit_file(bad).is_err(), "{bad:?}");
        }
        // A comment may end with a backslash; a directive may not.
        assert!(check_unit_file("[Unit]\n# a \\\n[Service]\n").is_ok());
    }

    #[test]
    fn the_marker_goes_first_in_unit_once() {
        assert_eq!(
            add_marker("[Unit]", "d").unwrap(),
            "[Unit]\nX-Orch-Deployment=d\n"
        );
        assert_eq!(
            add_marker("[Service]\nA=b\n[Unit]\nB=c\n[Unit]\n", "d").unwrap(),
            "[Service]\nA=b\n[Unit]\nX-Orch-Deployment=d\nB=c\n[Unit]\n"
        );
        let own = "[Unit]\n  X-Orch-Deployment=d  \n";
        assert_eq!(add_marker(own, "d").unwrap(), own);
        assert!(add_marker("[Unit]\nX-Orch-Deployment=other\n", "d").is_err());
    }

    #[test]
    fn stamps_hash_the_body_they_carry() {
        assert_eq!(
            hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(hash_bytes(b"abc"), hash("abc"));
        let file = stamp("d", "t", "\n\n[Unit]\nA=b");
        let body = "[Unit]\nA=b\n";
        assert!(
            file.ends_with(&format!("{HASH_PREFIX}{}\n{body}", hash(body))),
            "{file}"
        );
        assert!(file.starts_with("# Generated by orch for deployment d from template t.\n"));
        assert_eq!(read_marker(&file).intact, Some(true));
    }

    #[test]
    fn no_unit_path_leaves_the_folder() {
        assert_eq!(
            unit_path(Path::new("/u"), "a.service").unwrap(),
            Path::new("/u/a.service")
        );
        for bad in [".", "a\0.service"] {
            assert!(unit_path(Path::new("/u"), bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_override_wins_over_the_built_in_and_falls_back_to_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("worker-x.service.j2"), "mine").unwrap();
        let t = Templates {
            overrides: Some(dir.path().to_path_buf()),
        };
        let names = [
            "worker-x.service.j2".to_string(),
            "worker.service.j2".into(),
        ];
        let (name, text) = t.find(&names).unwrap();
        assert_eq!(text, "mine");
        assert!(name.ends_with("worker-x.service.j2"), "{name}");
        let names = [
            "worker-y.service.j2".to_string(),
            "worker.service.j2".into(),
        ];
        let (name, text) = t.find(&names).unwrap();
        assert_eq!(name, "worker.service.j2 (built-in)");
        assert!(text.contains("[Service]"), "{text}");
        std::fs::create_dir(dir.path().join("master.service.j2")).unwrap();
        assert!(t.find(&["master.service.j2".into()]).is_err());
    }

    #[test]
    fn a_deployment_renders_the_master_then_its_workers_ordered_on_one_host() {
        let source = crate::config::Source {
            path: "/etc/orch/orch.toml".into(),
            text: "[deployment]\nname = \"fx\"\n[master]\nexec_start = \"/bin/m\"\n\
                   [[workers]]\nkind = \"generic\"\ncount = 1\nexec_start = \"/bin/w\"\n"
                .into(),
        };
        let d = Deployment::from_source(&source, None).unwrap();
        let units = render(&d).unwrap();
        let names: Vec<&str> = units.iter().map(|u| u.unit.as_str()).collect();
        assert_eq!(
            names,
            ["fx.service", "fx-worker-0-generic.service", "fx.slice"]
        );
        assert!(
            units[0].content.contains("fx-worker-0-generic.service"),
            "{}",
            units[0].content
        );
        assert!(
            units[1].content.contains("PartOf=fx.service"),
            "{}",
            units[1].content
        );
        let e = check_unit_file("[Unit]\n1A=b\n[Service]\n").unwrap_err();
        assert!(e.to_string().starts_with("line 2:"), "{e}");
    }

    #[test]
    fn every_unit_runs_in_the_slice_with_its_limits_and_each_host_has_the_slice() {
        let source = crate::config::Source {
            path: "/etc/orch/orch.toml".into(),
            text: "[deployment]\nname = \"fx\"\n[[hosts]]\nname = \"w1\"\naddress = \"w1.example\"\n\
                   [database]\nunit = \"pg\"\nhost = \"w1\"\n\
                   [master]\nexec_start = \"/bin/m\"\nmemory_max = \"2G\"\ncpu_quota = \"150%\"\n\
                   [[workers]]\nkind = \"a\"\ncount = 1\nexec_start = \"/bin/w\"\ncpu_weight = 50\ntasks_max = 64\nmemory_high = \"50%\"\n\
                   [[workers]]\nkind = \"b\"\ncount = 1\nhost = \"w1\"\nexec_start = \"/bin/w\"\n"
                .into(),
        };
        let d = Deployment::from_source(&source, None).unwrap();
        let units = render(&d).unwrap();
        let got: Vec<(&str, &str, Role)> = units
            .iter()
            .map(|u| (u.unit.as_str(), u.host.as_str(), u.role))
            .collect();
        assert_eq!(
            &got[3..],
            [
                ("fx.slice", "local", Role::Slice),
                ("fx.slice", "w1", Role::Slice)
            ]
        );
        let lines = |u: &RenderedUnit| -> Vec<String> {
            u.content
                .lines()
                .filter(|l| {
                    ["Slice=", "Memory", "CPU", "Tasks"]
                        .iter()
                        .any(|p| l.starts_with(p))
                })
                .map(str::to_string)
                .collect()
        };
        // `%` stays one `%`: these settings expand no specifiers.
        assert_eq!(
            lines(&units[0]),
            ["Slice=fx.slice", "MemoryMax=2G", "CPUQuota=150%"]
        );
        assert_eq!(
            lines(&units[1]),
            [
                "Slice=fx.slice",
                "MemoryHigh=50%",
                "CPUWeight=50",
                "TasksMax=64"
            ]
        );
        assert_eq!(lines(&units[2]), ["Slice=fx.slice"]);
        let slice = &units[3].content;
        assert!(slice.contains("X-Orch-Deployment=fx\n"), "{slice}");
        assert!(read_marker(slice).intact == Some(true), "{slice}");
        assert!(check_slice_file(slice).is_ok());
        assert!(check_slice_file("[Unit]\n[Slice]\n[Install]\n").is_err());
        assert!(check_unit_file(slice).is_err(), "a slice is not a service");
    }

    #[test]
    fn the_limit_filter_passes_only_limit_characters() {
        let env = environment();
        let out = env.render_str("{{ v|limit }}", minijinja::context! { v => "150%" });
        assert_eq!(out.unwrap(), "150%");
        for bad in ["1G\nExecStart=/x", "a b", ""] {
            let out = env.render_str("{{ v|limit }}", minijinja::context! { v => bad });
            assert!(out.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_containers_example_renders_podman_units_with_stop_and_reload() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/synapse-containers.toml");
        let source = crate::config::Source::read(&path).unwrap();
        let d = Deployment::from_source(&source, None).unwrap();
        let units = render(&d).unwrap();
        let media = units
            .iter()
            .find(|u| u.unit == "matrix-synapse-worker-3-media.service")
            .expect("media worker");
        check_unit_file(&media.content).unwrap();
        for line in [
            "\nType=notify\n",
            "\nNotifyAccess=all\n",
            "\nExecStart=/usr/bin/podman run --name=matrix-synapse-worker-3-media --replace",
            "--sdnotify=container",
            "--user=matrix-synapse",
            "--volume=/opt/venvs/matrix-synapse:/opt/venvs/matrix-synapse:ro",
            "\nExecReload=/usr/bin/podman kill --signal=HUP matrix-synapse-worker-3-media\n",
            // stop_timeout = 60s: the engine kills a second before systemd would.
            "\nExecStop=/usr/bin/podman stop --ignore --time=59 matrix-synapse-worker-3-media\n",
            "\nExecStopPost=-/usr/bin/podman rm --force --ignore matrix-synapse-worker-3-media\n",
        ] {
            assert!(media.content.contains(line), "{line} in\n{}", media.content);
        }
        assert!(!media.content.contains("\nUser="), "{}", media.content);
    }
}

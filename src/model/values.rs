//! Checks on single values: what may reach a unit file, a unit or file name,
//! a probe, an SSH address, a duration. Each refusal is a typed error; the
//! resolver adds the file, line and key.

use std::time::Duration;

use super::{Address, Probe, ProbeFrom};

/// The longest value orch writes into a unit file. systemd refuses lines over
/// LONG_LINE_MAX (1 MiB) and a whole unit then fails to load; no real
/// command line or environment value comes near 64 KiB.
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// The longest deployment name, host name or worker kind.
pub const MAX_NAME_PART: usize = 180;
/// The longest prefix and suffix orch adds to a unit name for a temporary
/// file: `.orch-mask-PID-` in src/store.rs, PID up to 7 digits
/// (`/proc/sys/kernel/pid_max` is at most 2^22).
pub const TEMP_NAME_EXTRA: usize = ".orch-mask-".len() + 7 + "-".len();
/// The longest unit name orch accepts: systemd's (and the file system's)
/// 255, less what orch's temporary names add, so every name orch derives
/// from a unit still fits.
pub const MAX_UNIT_NAME: usize = 255 - TEMP_NAME_EXTRA;
/// The longest duration a configuration key or a flag takes: longer is a
/// typo, and `Instant::now() + it` must never overflow.
pub const MAX_DURATION_HOURS: u64 = 24;
pub const MAX_DURATION: Duration = Duration::from_secs(MAX_DURATION_HOURS * 3600);
/// The shortest duration: units render durations in milliseconds, and a 0
/// there would mean *no timeout* to systemd.
pub const MIN_DURATION: Duration = Duration::from_millis(1);

/// Why a value cannot go into a unit file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("contains the control character {0:?}; a newline or other control character could inject a directive into the unit file")]
    Control(char),
    #[error("ends with a backslash, which would continue onto the next line of the unit file")]
    TrailingBackslash,
    #[error("is {0} bytes long, longer than {MAX_VALUE_LEN} bytes (the bound on one value)")]
    TooLong(usize),
}

/// Refuses what could change the structure of a unit file, or make it too
/// long for systemd to load.
pub fn check_value(s: &str) -> Result<(), ValueError> {
    if s.len() > MAX_VALUE_LEN {
        return Err(ValueError::TooLong(s.len()));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(ValueError::Control(c));
    }
    if s.ends_with('\\') {
        return Err(ValueError::TrailingBackslash);
    }
    Ok(())
}

/// A name that becomes part of unit and file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamePart {
    Deployment,
    Host,
    /// No `.`: a kind ends a unit name before `.service`.
    WorkerKind,
}

impl NamePart {
    fn what(self) -> &'static str {
        match self {
            NamePart::Deployment => "deployment name",
            NamePart::Host => "host name",
            NamePart::WorkerKind => "worker kind",
        }
    }

    fn allowed(self) -> &'static str {
        match self {
            NamePart::WorkerKind => "letters, digits, `-` and `_`",
            _ => "letters, digits, `-`, `_` and `.`",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("`{name}` is not a valid {}: use {}, starting with a letter or digit", part.what(), part.allowed())]
    Chars { name: String, part: NamePart },
    #[error("the {} is {len} characters long; at most {MAX_NAME_PART}", part.what())]
    TooLong { len: usize, part: NamePart },
}

/// A deployment name, host name or worker kind.
pub fn check_name_part(s: &str, part: NamePart) -> Result<(), NameError> {
    let ok_first = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let dot = part != NamePart::WorkerKind;
    let ok_rest = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-') || (dot && c == '.'));
    if !ok_first || !ok_rest {
        return Err(NameError::Chars {
            name: s.escape_debug().to_string(),
            part,
        });
    }
    if s.len() > MAX_NAME_PART {
        return Err(NameError::TooLong { len: s.len(), part });
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitNameError {
    #[error("`{shown}…` is {len} characters long; orch takes unit names of at most {MAX_UNIT_NAME} characters (systemd's limit of 255, less the {TEMP_NAME_EXTRA} orch adds for its temporary files)")]
    TooLong { shown: String, len: usize },
    #[error("`{0}` has no unit type suffix such as .service")]
    NoSuffix(String),
    #[error("`{0}` does not end in a unit type ({suffixes})", suffixes = UNIT_SUFFIXES.join(", "))]
    UnknownSuffix(String),
    #[error("`{0}` is not a valid unit name: systemd allows only letters, digits and `:_.-@\\`")]
    Chars(String),
    #[error("`{0}` is not a valid unit name")]
    Shape(String),
}

/// systemd's unit name rules (`[A-Za-z0-9:_.\\-@]`, a known type suffix),
/// and at most [`MAX_UNIT_NAME`] bytes.
pub fn check_unit_name(s: &str) -> Result<(), UnitNameError> {
    if s.len() > MAX_UNIT_NAME {
        let shown: String = s.chars().take(40).collect();
        return Err(UnitNameError::TooLong {
            shown: shown.escape_debug().to_string(),
            len: s.len(),
        });
    }
    let shown = || s.escape_debug().to_string();
    let Some((stem, suffix)) = s.rsplit_once('.') else {
        return Err(UnitNameError::NoSuffix(shown()));
    };
    if !UNIT_SUFFIXES.contains(&suffix) {
        return Err(UnitNameError::UnknownSuffix(shown()));
    }
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-' | '@' | '\\');
    if stem.is_empty() || !s.chars().all(allowed) {
        return Err(UnitNameError::Chars(shown()));
    }
    if stem.starts_with('.') || stem.ends_with('@') && s.matches('@').count() > 1 {
        return Err(UnitNameError::Shape(shown()));
    }
    Ok(())
}

pub fn valid_account(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    #[error("`{text}` is not a duration ({cause}); write e.g. \"90s\" or \"2m\"")]
    Syntax {
        text: String,
        cause: humantime::DurationError,
    },
    #[error("must be longer than zero")]
    Zero,
    #[error("`{0}` is shorter than 1ms: units give durations in milliseconds, and systemd reads 0 as no timeout at all")]
    TooShort(String),
    #[error("`{0}` is too long: durations are at most {MAX_DURATION_HOURS}h")]
    TooLong(String),
}

/// A duration as configuration keys and flags take it: [`MIN_DURATION`] to
/// [`MAX_DURATION`], a fraction of a millisecond rounded up (so what orch
/// waits and what systemd enforces agree, and nothing rounds down to 0).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let d = humantime::parse_duration(text.trim()).map_err(|cause| DurationError::Syntax {
        text: text.to_string(),
        cause,
    })?;
    if d.is_zero() {
        return Err(DurationError::Zero);
    }
    if d < MIN_DURATION {
        return Err(DurationError::TooShort(text.to_string()));
    }
    if d > MAX_DURATION {
        return Err(DurationError::TooLong(text.to_string()));
    }
    let ms = d.as_nanos().div_ceil(1_000_000);
    Ok(Duration::from_millis(
        u64::try_from(ms).expect("at most 24h"),
    ))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("`{0}` is not a probe: write http://HOST:PORT/PATH, tcp://HOST:PORT or exec:COMMAND")]
    Syntax(String),
    #[error("`exec:` needs a command")]
    EmptyExec,
    #[error("`{probe}` is not a valid URL: {cause}")]
    Url {
        probe: String,
        cause: url::ParseError,
    },
    #[error("`{probe}`: a probe URL may not contain {part}")]
    Part { probe: String, part: &'static str },
    #[error("`{0}`: missing host")]
    NoHost(String),
    #[error("`{0}`: a tcp probe needs a port")]
    TcpPort(String),
    #[error("`{0}`: port 0 is not a port")]
    PortZero(String),
    #[error("`{0}`: https probes are not supported; probe the plain-HTTP listener or use tcp://")]
    Https(String),
    #[error("`{probe}`: unknown probe scheme `{scheme}` (http, tcp, exec)")]
    Scheme { probe: String, scheme: String },
    #[error("`{0}` is not a place to probe from: write \"host\" (the unit's host, the default) or \"local\" (the machine orch runs on)")]
    From(String),
    #[error("an exec: probe always runs on the unit's host; probe_from applies to http:// and tcp:// probes only")]
    ExecFrom,
}

/// Parses `http://host[:port][/path][?query]`, `tcp://host:port` or
/// `exec:COMMAND`. URLs go through the `url` crate (WHATWG rules), then
/// anything a probe would silently ignore or mangle is refused: a user
/// name, a fragment, whitespace, a path on a tcp probe.
pub fn parse_probe(s: &str) -> Result<Probe, ProbeError> {
    if let Some(cmd) = s.strip_prefix("exec:") {
        let command = cmd.trim().to_string();
        if command.is_empty() {
            return Err(ProbeError::EmptyExec);
        }
        return Ok(Probe::Exec { command });
    }
    let scheme = probe_scheme(s)?;
    let part = |part| ProbeError::Part {
        probe: s.to_string(),
        part,
    };
    // The URL parser would percent-encode a space in the path: surely a typo.
    if s.chars().any(char::is_whitespace) {
        return Err(part("whitespace"));
    }
    let url = url::Url::parse(s).map_err(|cause| ProbeError::Url {
        probe: s.to_string(),
        cause,
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(part("a user name or password"));
    }
    if url.fragment().is_some() {
        return Err(part("a fragment (`#…`)"));
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        _ => return Err(ProbeError::NoHost(s.to_string())),
    };
    if url.port() == Some(0) {
        return Err(ProbeError::PortZero(s.to_string()));
    }
    if scheme == "tcp" {
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err(part("a path (a tcp probe has none)"));
        }
        let port = url
            .port()
            .ok_or_else(|| ProbeError::TcpPort(s.to_string()))?;
        return Ok(Probe::Tcp {
            host,
            port,
            from: ProbeFrom::Host,
        });
    }
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    Ok(Probe::Http {
        host,
        port: url.port_or_known_default().unwrap_or(80),
        path,
        from: ProbeFrom::Host,
    })
}

/// `probe_from`: `host` (the default) or `local`.
pub fn parse_probe_from(s: &str) -> Result<ProbeFrom, ProbeError> {
    match s {
        "host" => Ok(ProbeFrom::Host),
        "local" => Ok(ProbeFrom::Local),
        _ => Err(ProbeError::From(s.to_string())),
    }
}

/// `http` or `tcp`, the only URL schemes a probe takes.
fn probe_scheme(s: &str) -> Result<&str, ProbeError> {
    match s.split_once("://") {
        Some((scheme @ ("http" | "tcp"), _)) => Ok(scheme),
        Some(("https", _)) => Err(ProbeError::Https(s.to_string())),
        Some((other, _)) => Err(ProbeError::Scheme {
            probe: s.to_string(),
            scheme: other.to_string(),
        }),
        None => Err(ProbeError::Syntax(s.to_string())),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("`{0}`: empty user before `@`")]
    EmptyUser(String),
    #[error("`{0}`: unclosed `[`")]
    Unclosed(String),
    #[error("`{spec}`: `{host}` is not a host name or address")]
    Host { spec: String, host: String },
    #[error("`{0}`: an IPv6 address with a port is written in brackets, e.g. [::1]:2222")]
    Ambiguous(String),
    #[error("`{0}`: the user name is not valid")]
    User(String),
    #[error("`{spec}`: `{port}` is not a port (1 to 65535)")]
    Port { spec: String, port: String },
}

impl Address {
    /// Parses `[USER@]HOST[:PORT]`; the user part may itself contain `@`
    /// (the host is what follows the last one). An IPv6 address with a port
    /// is bracketed: `[::1]:2222`.
    pub fn parse(spec: &str) -> Result<Address, AddressError> {
        let (user, rest) = match spec.rsplit_once('@') {
            Some((u, r)) if !u.is_empty() => (Some(u), r),
            Some(_) => return Err(AddressError::EmptyUser(spec.to_string())),
            None => (None, spec),
        };
        let (host, port) = split_address(spec, rest)?;
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
        if host.is_empty() || !host.chars().all(valid) || host.starts_with('-') {
            return Err(AddressError::Host {
                spec: spec.to_string(),
                host: host.to_string(),
            });
        }
        // ssh takes a leading `-` as an option; whitespace would split the word remotely.
        if user.is_some_and(|u| {
            u.starts_with('-') || u.chars().any(|c| c.is_control() || c.is_whitespace())
        }) {
            return Err(AddressError::User(spec.to_string()));
        }
        let port = port
            .map(|p| {
                parse_port(p).ok_or_else(|| AddressError::Port {
                    spec: spec.to_string(),
                    port: p.to_string(),
                })
            })
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

/// `HOST`, `HOST:PORT`, `[V6]`, `[V6]:PORT` or a bare IPv6 address.
fn split_address<'s>(
    spec: &str,
    rest: &'s str,
) -> Result<(&'s str, Option<&'s str>), AddressError> {
    if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| AddressError::Unclosed(spec.to_string()))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(AddressError::Host {
                spec: spec.to_string(),
                host: h.to_string(),
            });
        }
        return match after {
            "" => Ok((h, None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((h, Some(p))),
                None => Err(AddressError::Host {
                    spec: spec.to_string(),
                    host: rest.to_string(),
                }),
            },
        };
    }
    match rest.matches(':').count() {
        0 => Ok((rest, None)),
        1 => Ok(rest
            .split_once(':')
            .map(|(h, p)| (h, Some(p)))
            .expect("one colon")),
        // More than one colon: a bare IPv6 address, or `host:22:33`.
        _ if rest.parse::<std::net::Ipv6Addr>().is_ok() => Ok((rest, None)),
        _ => Err(AddressError::Ambiguous(spec.to_string())),
    }
}

/// A TCP port: 1 to 65535.
fn parse_port(p: &str) -> Option<u16> {
    p.parse::<u16>().ok().filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bounded() {
        assert_eq!(check_value(&"x".repeat(MAX_VALUE_LEN)), Ok(()));
        assert_eq!(
            check_value(&"x".repeat(MAX_VALUE_LEN + 1)),
            Err(ValueError::TooLong(MAX_VALUE_LEN + 1))
        );
        assert_eq!(check_value("a\nb"), Err(ValueError::Control('\n')));
        assert_eq!(check_value("a\\"), Err(ValueError::TrailingBackslash));
    }

    #[test]
    fn worker_kinds_refuse_the_dot_their_message_does_not_offer() {
        let e = check_name_part("a.b", NamePart::WorkerKind).unwrap_err();
        assert!(!e.to_string().contains("`.`"), "{e}");
        assert!(check_name_part("a.b", NamePart::Deployment).is_ok());
        assert!(matches!(
            check_name_part(&"a".repeat(181), NamePart::Host),
            Err(NameError::TooLong { len: 181, .. })
        ));
    }

    #[test]
    fn unit_names_leave_room_for_orchs_temp_names() {
        let name = |n: usize| format!("{}.service", "a".repeat(n - ".service".len()));
        assert_eq!(MAX_UNIT_NAME, 255 - ".orch-mask-4194304-".len());
        assert_eq!(check_unit_name(&name(MAX_UNIT_NAME)), Ok(()));
        let e = check_unit_name(&name(MAX_UNIT_NAME + 1)).unwrap_err();
        assert!(matches!(e, UnitNameError::TooLong { len, .. } if len == MAX_UNIT_NAME + 1));
        assert!(check_unit_name("a;b.service").is_err());
        assert!(check_unit_name("a.nope").is_err());
    }

    #[test]
    fn durations_are_bounded_and_never_round_to_zero() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("1ms 1ns"), Ok(Duration::from_millis(2)));
        assert!(matches!(
            parse_duration("292277024626y"),
            Err(DurationError::TooLong(_))
        ));
        assert!(matches!(
            parse_duration("24h 1ms"),
            Err(DurationError::TooLong(_))
        ));
        assert!(matches!(
            parse_duration("1ns"),
            Err(DurationError::TooShort(_))
        ));
        assert!(matches!(
            parse_duration("999us"),
            Err(DurationError::TooShort(_))
        ));
        assert_eq!(parse_duration("0s"), Err(DurationError::Zero));
        assert!(matches!(
            parse_duration("soon"),
            Err(DurationError::Syntax { .. })
        ));
    }

    #[test]
    fn probes_parse_through_a_url_parser() {
        let http = |host: &str, port, path: &str| Probe::Http {
            host: host.into(),
            port,
            path: path.into(),
            from: ProbeFrom::Host,
        };
        assert_eq!(
            parse_probe("http://127.0.0.1:8008/health"),
            Ok(http("127.0.0.1", 8008, "/health"))
        );
        assert_eq!(parse_probe("http://h"), Ok(http("h", 80, "/")));
        assert_eq!(
            parse_probe("http://[::1]:8/r?x=1"),
            Ok(http("::1", 8, "/r?x=1"))
        );
        assert_eq!(
            parse_probe("tcp://db:5432"),
            Ok(Probe::Tcp {
                host: "db".into(),
                port: 5432,
                from: ProbeFrom::Host,
            })
        );
        for bad in [
            "http://h:80:90/",
            "http://user@127.0.0.1:8/x",
            "http://127.0.0.1 :8/p q",
            "http://h:8/p#frag",
            "http://h:0/",
            "tcp://h",
            "tcp://h:1/path",
            "https://h/",
            "ftp://h/",
            "h:80",
            "exec:",
        ] {
            assert!(parse_probe(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn probe_from_is_host_or_local_and_not_for_exec() {
        assert_eq!(parse_probe_from("host"), Ok(ProbeFrom::Host));
        assert_eq!(parse_probe_from("local"), Ok(ProbeFrom::Local));
        for bad in ["Local", "remote", "", " local"] {
            assert_eq!(parse_probe_from(bad), Err(ProbeError::From(bad.into())));
        }
        let tcp = parse_probe("tcp://db:5432").unwrap();
        let local = tcp.clone().with_from(ProbeFrom::Local).unwrap();
        assert_eq!(
            (tcp.from(), local.from()),
            (ProbeFrom::Host, ProbeFrom::Local)
        );
        // The origin is not part of the address the operator reads.
        assert_eq!(local.to_string(), "tcp://db:5432");
        let http = parse_probe("http://h:8/x").unwrap();
        assert_eq!(
            http.with_from(ProbeFrom::Local).unwrap().from(),
            ProbeFrom::Local
        );
        let exec = parse_probe("exec:pg_isready").unwrap();
        assert_eq!(exec.with_from(ProbeFrom::Local), Err(ProbeError::ExecFrom));
    }

    #[test]
    fn addresses() {
        let a = Address::parse("admin@[::1]:2222").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", Some(2222)));
        assert_eq!(Address::parse("::1").unwrap().port, None);
        assert_eq!(Address::parse("h:22").unwrap().port, Some(22));
        for bad in [
            "host:22:33",
            "[::1]x",
            "[nope]:22",
            "@h",
            "-oX",
            "h:0",
            "[::1",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad} accepted");
        }
    }
}

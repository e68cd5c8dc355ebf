//! A real Synapse, driven by orch: the matrix-synapse wheel from PyPI in a
//! venv of the system's python3, PostgreSQL and Redis from Debian, the master
//! and six workers of examples/synapse.toml (an event persister with
//! only a replication listener, a federation sender and a pusher with no
//! listener, a media worker, two generic client workers), all in the harness
//! container. orch installs the units, starts them (Redis as a declared
//! `[[prerequisites]]` unit), restarts them at once and rolling, and
//! stops them for a dump / drop / restore of the database, then resumes,
//! while a writer sends messages through the generic workers the way a
//! reverse proxy does: round-robin, a refused connection (or one cut before
//! any byte of a response, as nginx's `proxy_next_upstream error` retries an
//! idempotent PUT) retried once on the other generic worker.
//!
//! Needs PostgreSQL, Redis and what pip needs to build psycopg2
//! (`apt-get install -y postgresql redis-server python3-venv python3-dev
//! libpq-dev gcc`, which `.ci/run` does) and PyPI (the venv is cached in
//! /var/tmp/orch-synapse/VERSION, reused once complete). Without them the
//! test fails and says so; it never skips.

use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::{Container, OutputBounded};

/// The rolling restart's outage window against its units restarted alone.
#[path = "synapse/outage.rs"]
mod outage;
/// The same stack with Synapse's processes in podman containers.
#[path = "synapse/podman.rs"]
mod podman;

/// The Synapse tests share the stack's ports (one lease) and are too heavy
/// to run side by side on two cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const VERSION: &str = "1.163.2";
const CACHE: &str = "/var/tmp/orch-synapse";
const INSTALL_HINT: &str = "apt-get install -y postgresql redis-server python3-venv python3-dev libpq-dev gcc (or run .ci/run)";

/// The stack's ports: offsets into one lease (crate::ports) held for the
/// whole test process, so a second run or any service elsewhere on the host
/// never meets them. `{PG_PORT}` formats the port; `.get()` is the number.
static LEASE: std::sync::LazyLock<crate::ports::PortLease> =
    std::sync::LazyLock::new(|| crate::ports::reserve(8));
#[derive(Clone, Copy)]
struct Port(u16);
impl Port {
    fn get(self) -> u16 {
        LEASE.port(self.0)
    }
}
impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", self.get())
    }
}
const PG_PORT: Port = Port(0);
const REDIS_PORT: Port = Port(1);
const MASTER_PORT: Port = Port(2);
const REPLICATION_PORT: Port = Port(3);
const PERSISTER_PORT: Port = Port(4);
const MEDIA_PORT: Port = Port(5);
// Consecutive: the example's generic kind numbers them from its port_base.
const GENERIC: [Port; 2] = [Port(6), Port(7)];

const SYNAPSE_UID: u32 = 2001;
const POSTGRES_UID: u32 = 2002;
/// Inside the container: Synapse's configuration (a bound host folder).
const CONF: &str = "/opt/synapse";
const PGDATA: &str = "/var/lib/pgtest/data";
const DUMP: &str = "/var/lib/pgtest/synapse.dump";
const NAME: &str = "matrix-synapse";
const PERSISTER: &str = "matrix-synapse-worker-0-event-persister";
const FEDERATION: &str = "matrix-synapse-worker-1-federation-sender";
const PUSHER: &str = "matrix-synapse-worker-2-pusher";
const MEDIA: &str = "matrix-synapse-worker-3-media";
const GENERIC_NAMES: [&str; 2] = [
    "matrix-synapse-worker-4-generic",
    "matrix-synapse-worker-5-generic",
];

/// The writer's pace and bounds.
const PACE: Duration = Duration::from_millis(40);
const MAX_SENDS: usize = 20_000;
const WRITER_BOUND: Duration = Duration::from_secs(420);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// PostgreSQL's binaries: Debian's highest installed major version.
fn pg_bin() -> PathBuf {
    let mut majors: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|m| Path::new(&format!("/usr/lib/postgresql/{m}/bin/postgres")).is_file())
        .collect();
    majors.sort();
    let major = majors
        .pop()
        .unwrap_or_else(|| panic!("PostgreSQL is not installed: {INSTALL_HINT}"));
    PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"))
}

fn preflight() -> PathBuf {
    assert!(
        Path::new("/usr/bin/redis-server").is_file(),
        "redis-server is not installed: {INSTALL_HINT}"
    );
    let bin = pg_bin();
    let venv = Command::new("/usr/bin/python3")
        .args(["-c", "import ensurepip, venv"])
        .output_within(Duration::from_secs(30))
        .expect("run /usr/bin/python3");
    assert!(
        venv.status.success(),
        "/usr/bin/python3 cannot make venvs: {INSTALL_HINT}\n{}",
        text(&venv)
    );
    bin
}

/// The venv with matrix-synapse, made once per version and reused when it is
/// complete (`.complete` is written last; a venv is built beside it and
/// renamed into place, so a killed install is never taken for a good one).
fn synapse_venv() -> (PathBuf, Duration) {
    let dir = Path::new(CACHE).join(VERSION);
    if dir.join(".complete").is_file() {
        return (dir, Duration::ZERO);
    }
    let t = Instant::now();
    std::fs::create_dir_all(CACHE).unwrap();
    let tmp = Path::new(CACHE).join(format!("{VERSION}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let o = Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&tmp)
        .output_within(Duration::from_secs(120))
        .unwrap();
    assert!(
        o.status.success(),
        "python3 -m venv failed: {INSTALL_HINT}\n{}",
        text(&o)
    );
    let o = Command::new(tmp.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .arg(format!("matrix-synapse[postgres,redis]=={VERSION}"))
        .output_within(Duration::from_secs(900))
        .unwrap();
    if !o.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        panic!(
            "cannot install matrix-synapse {VERSION} from PyPI into a venv: it needs PyPI \
             (network) and, to build psycopg2, gcc, python3-dev and libpq-dev: {INSTALL_HINT}\n{}",
            text(&o)
        );
    }
    std::fs::write(tmp.join(".complete"), VERSION).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).unwrap();
    (dir, t.elapsed())
}

fn chown_r(path: &Path, uid: u32) {
    let o = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{uid}"))
        .arg(path)
        .output_bounded()
        .unwrap();
    assert!(o.status.success(), "chown: {}", text(&o));
}

fn exec_ok(c: &Container, args: &[&str]) -> Output {
    let o = c.exec(args);
    assert!(
        o.status.success(),
        "{args:?} in the container failed ({:?}):\n{}",
        o.status,
        text(&o)
    );
    o
}

/// Runs a command in the container as the `postgres` user, from `/`.
fn as_postgres(c: &Container, args: &[&str]) -> Output {
    let uid = POSTGRES_UID.to_string();
    let mut full = vec![
        "env",
        "-C",
        "/",
        "setpriv",
        "--reuid",
        &uid,
        "--regid",
        &uid,
        "--clear-groups",
        "--",
    ];
    full.extend_from_slice(args);
    c.exec(&full)
}

fn psql(c: &Container, bin: &Path, sql: &str) -> String {
    psql_in(c, bin, "postgres", sql)
}

fn psql_in(c: &Container, bin: &Path, db: &str, sql: &str) -> String {
    let psql = bin.join("psql");
    let port = PG_PORT.to_string();
    let o = as_postgres(
        c,
        &[
            psql.to_str().unwrap(),
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-c",
            sql,
        ],
    );
    assert!(o.status.success(), "psql {sql:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The deployment's configuration: examples/synapse.toml with the test's
/// paths, ports and package units, nothing else.
fn config(venv: &Path, state: &Path, masks: &Path) -> String {
    config_of("examples/synapse.toml", venv, state, masks)
}

/// [`config`] from another example of the same deployment.
fn config_of(file: &str, venv: &Path, state: &Path, masks: &Path) -> String {
    let example = std::fs::read_to_string(root().join(file)).unwrap();
    let venv_python = format!("{}/bin/python", venv.display());
    let state = format!("state_dir = \"{}\"", state.display());
    let masks = format!("runtime_dir = \"{}\"", masks.display());
    let pg = format!("127.0.0.1:{PG_PORT}");
    let master = format!("127.0.0.1:{MASTER_PORT}");
    let redis = format!("127.0.0.1:{REDIS_PORT}");
    let persister = format!("port_base = {PERSISTER_PORT}\n");
    let media = format!("port_base = {MEDIA_PORT}\n");
    // The two generic workers: GENERIC[0] and the next port, GENERIC[1].
    let generic = format!("port_base = {}\n", GENERIC[0]);
    let replacements: [(&str, &str); 12] = [
        ("/opt/venvs/matrix-synapse/bin/python", &venv_python),
        ("/etc/matrix-synapse", CONF),
        ("state_dir = \"/var/lib/orch\"", &state),
        ("runtime_dir = \"/run/systemd/system.control\"", &masks),
        ("postgresql@15-main.service", "postgresql-test.service"),
        ("redis-server.service", "redis-test.service"),
        ("127.0.0.1:6379", &redis),
        ("127.0.0.1:5432", &pg),
        ("127.0.0.1:8008", &master),
        ("port_base = 18201\n", &persister),
        ("port_base = 18401\n", &media),
        ("port_base = 18111\n", &generic),
    ];
    let mut cfg = example;
    for (from, to) in replacements {
        assert!(cfg.contains(from), "{file} has no {from:?}");
        cfg = cfg.replace(from, to);
    }
    cfg
}

/// homeserver.yaml, the workers' YAML files and the signing key.
fn write_synapse_config(conf: &Path) {
    std::fs::create_dir_all(conf.join("workers")).unwrap();
    std::fs::create_dir_all(conf.join("media")).unwrap();
    // A fixed test key: "ed25519 KEY_ID unpadded-base64(32-byte seed)".
    std::fs::write(
        conf.join("signing.key"),
        "ed25519 a_test YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY\n",
    )
    .unwrap();
    let homeserver = format!(
        r#"server_name: test.local
public_baseurl: http://127.0.0.1:{MASTER_PORT}/
report_stats: false
signing_key_path: {CONF}/signing.key
media_store_path: {CONF}/media
macaroon_secret_key: orch-test-macaroon
form_secret: orch-test-form
trusted_key_servers: []
suppress_key_server_warning: true
enable_metrics: false
url_preview_enabled: false
presence:
  enabled: false
enable_registration: true
enable_registration_without_verification: true
rc_message: {{per_second: 1000, burst_count: 1000}}
rc_registration: {{per_second: 100, burst_count: 100}}
rc_login:
  address: {{per_second: 100, burst_count: 100}}
  account: {{per_second: 100, burst_count: 100}}
database:
  name: psycopg2
  args:
    user: synapse
    password: synapse
    dbname: synapse
    host: 127.0.0.1
    port: {PG_PORT}
    cp_min: 1
    cp_max: 5
redis:
  enabled: true
  host: 127.0.0.1
  port: {REDIS_PORT}
listeners:
  - port: {MASTER_PORT}
    type: http
    bind_addresses: ['127.0.0.1']
    x_forwarded: false
    resources:
      - names: [client, federation, health]
  - port: {REPLICATION_PORT}
    type: http
    bind_addresses: ['127.0.0.1']
    resources:
      - names: [replication]
instance_map:
  main: {{host: 127.0.0.1, port: {REPLICATION_PORT}}}
  {PERSISTER}: {{host: 127.0.0.1, port: {PERSISTER_PORT}}}
stream_writers:
  events: [{PERSISTER}]
federation_sender_instances: [{FEDERATION}]
pusher_instances: [{PUSHER}]
enable_media_repo: false
media_instance_running_background_jobs: {MEDIA}
"#
    );
    std::fs::write(conf.join("homeserver.yaml"), homeserver).unwrap();
    let worker = |name: &str, extra: &str, listener: Option<(u16, &str)>| {
        let listeners = listener.map_or(String::new(), |(port, names)| {
            format!(
                "worker_listeners:\n  - type: http\n    port: {port}\n    bind_addresses: ['127.0.0.1']\n    resources:\n      - names: [{names}]\n"
            )
        });
        std::fs::write(
            conf.join("workers").join(format!("{name}.yaml")),
            format!(
                "worker_app: synapse.app.generic_worker\nworker_name: {name}\n{extra}{listeners}"
            ),
        )
        .unwrap();
    };
    worker(PERSISTER, "", Some((PERSISTER_PORT.get(), "replication")));
    worker(FEDERATION, "", None);
    worker(PUSHER, "", None);
    worker(
        MEDIA,
        "enable_media_repo: true\n",
        Some((MEDIA_PORT.get(), "media")),
    );
    for (name, port) in GENERIC_NAMES.iter().zip(GENERIC.map(Port::get)) {
        worker(name, "", Some((port, "client, federation")));
    }
}

/// PostgreSQL and Redis: units of the test's own (Debian's need its /etc),
/// the cluster on the container's tmpfs.
fn write_service_units(c: &Container, bin: &Path) {
    std::fs::write(
        c.unit_dir().join("postgresql-test.service"),
        format!(
            "[Unit]\nDescription=PostgreSQL for the Synapse test\n\
             [Service]\nType=notify\nUser=postgres\n\
             ExecStart={} -D {PGDATA} -c listen_addresses=127.0.0.1 -c port={PG_PORT} \
             -c unix_socket_directories=/tmp -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off\n\
             KillMode=mixed\nKillSignal=SIGINT\nTimeoutStopSec=30\n",
            bin.join("postgres").display()
        ),
    )
    .unwrap();
    std::fs::write(
        c.unit_dir().join("redis-test.service"),
        format!(
            "[Unit]\nDescription=Redis for the Synapse test\n\
             [Service]\nType=notify\nUser=redis\n\
             ExecStart=/usr/bin/redis-server --port {REDIS_PORT} --bind 127.0.0.1 --save \"\" \
             --appendonly no --dir /tmp --supervised systemd\n"
        ),
    )
    .unwrap();
}

// ---------------------------------------------------------------------------
// Plain HTTP/1.1 over TcpStream, one request per connection.

// The fields are read through Debug, in the writer's log.
#[allow(dead_code)]
#[derive(Debug)]
enum HttpError {
    /// Nothing listens: a reverse proxy tries the next upstream.
    Refused,
    /// The connection broke before any byte of a response (nginx's `error`,
    /// retried on the next upstream for an idempotent PUT).
    NoResponse(String),
    Other(String),
}

fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value), HttpError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Err(HttpError::Refused),
        Err(e) => return Err(HttpError::Other(format!("connect: {e}"))),
    };
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = s.write_all(req.as_bytes()) {
        return Err(HttpError::NoResponse(format!("write: {e}")));
    }
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    if raw.is_empty() {
        return Err(HttpError::NoResponse(format!("no response: {read:?}")));
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| HttpError::Other(format!("truncated response ({read:?}): {text}")))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Other(format!("bad status line: {head}")))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let payload = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((
        status,
        serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
    ))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn ok_json(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> serde_json::Value {
    match http(port, method, path, token, Some(&body)) {
        Ok((200, v)) => v,
        other => panic!("{method} {path} on {port}: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The writer: a client behind a round-robin reverse proxy.

#[derive(Debug, Clone)]
struct Send {
    body: String,
    done: Instant,
    ok: bool,
    took: Duration,
    outcome: String,
}

fn writer(token: &str, room: &str, stop: &AtomicBool, log: &Mutex<Vec<Send>>) {
    let start = Instant::now();
    for n in 0..MAX_SENDS {
        if stop.load(Ordering::Relaxed) || start.elapsed() > WRITER_BOUND {
            break;
        }
        let body = format!("msg-{n}");
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/orch-{n}",
            encode(room)
        );
        let content = serde_json::json!({"msgtype": "m.text", "body": body});
        let t = Instant::now();
        let first = GENERIC[n % 2].get();
        let mut r = http(first, "PUT", &path, Some(token), Some(&content));
        let mut outcome = String::new();
        if let Err(HttpError::Refused | HttpError::NoResponse(_)) = &r {
            outcome = format!("{first}: {:?}; retried: ", r.as_ref().unwrap_err());
            r = http(
                GENERIC[(n + 1) % 2].get(),
                "PUT",
                &path,
                Some(token),
                Some(&content),
            );
        }
        let ok = matches!(&r, Ok((200, v)) if v["event_id"].is_string());
        outcome.push_str(&match &r {
            Ok((code, v)) => format!("{code} {v}"),
            Err(e) => format!("{e:?}"),
        });
        log.lock().unwrap().push(Send {
            body,
            done: Instant::now(),
            ok,
            took: t.elapsed(),
            outcome,
        });
        std::thread::sleep(PACE);
    }
}

/// What the writer saw between `from` and `to`: sends, failures, and the
/// longest time without a successful send that overlaps the window.
struct Window {
    sends: usize,
    /// Sends the proxy had to retry on the other generic worker: refused,
    /// and cut before any byte of a response.
    retried: usize,
    cut: usize,
    failed: Vec<Send>,
    gap: Duration,
}

impl Window {
    fn describe(&self) -> String {
        format!(
            "{} ({} of {} sends failed; {} retried on the other generic worker, {} of them cut without a response)",
            secs(self.gap),
            self.failed.len(),
            self.sends,
            self.retried,
            self.cut
        )
    }
}

fn window(log: &[Send], from: Instant, to: Instant) -> Window {
    let inside: Vec<&Send> = log
        .iter()
        .filter(|s| s.done >= from && s.done <= to)
        .collect();
    let oks: Vec<Instant> = log.iter().filter(|s| s.ok).map(|s| s.done).collect();
    let mut gap = Duration::ZERO;
    for w in oks.windows(2) {
        if w[1] >= from && w[0] <= to {
            gap = gap.max(w[1] - w[0]);
        }
    }
    Window {
        sends: inside.len(),
        retried: inside
            .iter()
            .filter(|s| s.outcome.contains("retried"))
            .count(),
        cut: inside
            .iter()
            .filter(|s| s.outcome.contains("NoResponse") && s.outcome.contains("retried"))
            .count(),
        failed: inside
            .iter()
            .filter(|s| !s.ok)
            .map(|s| (*s).clone())
            .collect(),
        gap,
    }
}

/// Every message body in the room, read back through a generic worker.
fn room_bodies(token: &str, room: &str) -> BTreeSet<String> {
    let mut bodies = BTreeSet::new();
    let mut from: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000",
            encode(room)
        );
        if let Some(f) = &from {
            path.push_str(&format!("&from={}", encode(f)));
        }
        let v = match http(GENERIC[0].get(), "GET", &path, Some(token), None) {
            Ok((200, v)) => v,
            other => panic!("GET {path}: {other:?}"),
        };
        let chunk = v["chunk"].as_array().cloned().unwrap_or_default();
        for e in &chunk {
            if let Some(b) = e["content"]["body"].as_str() {
                bodies.insert(b.to_string());
            }
        }
        match v["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_string()),
            _ => return bodies,
        }
    }
    panic!("the room did not end within 100 pages");
}

// ---------------------------------------------------------------------------

/// An orch run with JSON output, bounded by `limit`: its output and duration.
fn timed_orch(
    c: &Container,
    cfg: &Path,
    args: &[&str],
    limit: Duration,
) -> (Output, Instant, Duration) {
    let t = Instant::now();
    let o = orch_cmd(c, cfg, args)
        .output_within(limit)
        .expect("run orch");
    let took = t.elapsed();
    assert!(
        o.status.success(),
        "orch {args:?} failed ({:?}) after {took:?}:\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o, t, took)
}

/// `unit -> phase -> elapsed` of the first such event of a lifecycle run.
fn event_times(o: &Output) -> HashMap<(String, String), Duration> {
    let mut m = HashMap::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["event"] != "unit" {
            continue;
        }
        let key = (
            v["unit"].as_str().unwrap_or_default().to_string(),
            v["phase"].as_str().unwrap_or_default().to_string(),
        );
        m.entry(key)
            .or_insert(Duration::from_millis(v["elapsed_ms"].as_u64().unwrap_or(0)));
    }
    m
}

/// `ELAPSED_MS UNIT PHASE [DETAIL]` for every event orch streamed about the
/// units named (prefixes of unit names), in order: for failure messages.
fn unit_events(o: &Output, names: &[&str]) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "unit")
        .filter(|v| {
            let unit = v["unit"].as_str().unwrap_or_default();
            names.iter().any(|n| unit.starts_with(n))
        })
        .map(|v| {
            format!(
                "{} {} {} {}",
                v["elapsed_ms"], v["unit"], v["phase"], v["detail"]
            )
        })
        .collect()
}

/// Synapse's processes in the container and its role's database sessions,
/// read without orch: `ps` in the container and `pg_stat_activity`.
fn synapse_leftovers(c: &Container, bin: &Path) -> (Vec<String>, String) {
    let ps = exec_ok(c, &["ps", "-eo", "pid,user,args"]);
    let procs = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains("synapse.app"))
        .map(str::to_string)
        .collect();
    let sessions = psql(
        c,
        bin,
        "select count(*) from pg_stat_activity where usename = 'synapse'",
    );
    (procs, sessions)
}

/// The row of `unit` in `orch status --output json`, wherever the rows are.
fn status_row(status: &serde_json::Value, unit: &str) -> serde_json::Value {
    fn find(v: &serde_json::Value, unit: &str) -> Option<serde_json::Value> {
        match v {
            serde_json::Value::Object(o) if o.get("unit").is_some_and(|u| u == unit) => {
                Some(v.clone())
            }
            serde_json::Value::Object(o) => o.values().find_map(|x| find(x, unit)),
            serde_json::Value::Array(a) => a.iter().find_map(|x| find(x, unit)),
            _ => None,
        }
    }
    find(status, unit).unwrap_or_else(|| panic!("{unit} is not in orch status: {status}"))
}

fn is_active(c: &Container, unit: &str) -> String {
    String::from_utf8_lossy(&c.systemctl(&["is-active", unit]).stdout)
        .trim()
        .to_string()
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Issue 26 part 1, maintenance proven from the database's side: with
/// `[database] roles = ["synapse"]`, a stray `psql` session as Synapse's
/// role, held open across `stop-for-maintenance`, is named and the stop is
/// not called clean (exit 1, the deployment stays in maintenance); a rerun
/// with `--terminate-sessions` ends it and completes the proof. Returns
/// that run's output, when the step began and how long it took.
fn stop_with_stray_session(c: &Container, cfg: &Path, bin: &Path) -> (Output, Instant, Duration) {
    let text = std::fs::read_to_string(cfg).unwrap();
    let roles =
        format!("[database]\nroles = [\"synapse\"]\nconnect = \"tcp://127.0.0.1:{PG_PORT}\"\n");
    let with_roles = text.replacen("[database]\n", &roles, 1);
    assert_ne!(with_roles, text, "the configuration has a [database] block");
    std::fs::write(cfg, with_roles).unwrap();
    let (leader, uid, port) = (
        c.leader().to_string(),
        SYNAPSE_UID.to_string(),
        PG_PORT.to_string(),
    );
    let psql = bin.join("psql").display().to_string();
    let ns = [
        "-t",
        &leader,
        "-m",
        "-u",
        "-i",
        "-p",
        "--",
        "setpriv",
        "--reuid",
        &uid,
        "--regid",
        &uid,
        "--clear-groups",
        "--",
    ];
    // Idle, its standard input held open by the test until it ends.
    let mut stray = Command::new("nsenter")
        .args(ns)
        .args([
            psql.as_str(),
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "synapse",
            "-d",
            "synapse",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the stray psql");
    let stray_pid = wait_for_stray(c, bin);
    let t = Instant::now();
    let args = [
        "stop-for-maintenance",
        "--reason",
        "dump and restore",
        "--timeout",
        "20s",
        "--output",
        "json",
    ];
    let o = orch_cmd(c, cfg, &args)
        .output_within(Duration::from_secs(180))
        .expect("run orch");
    let first = one_session_left(&o, stray_pid, "synapse", "127.0.0.1");
    assert_eq!(
        (&first["ok"], &first["left"]),
        (&false.into(), &serde_json::json!([])),
        "the units are proven, the database is not: {first}"
    );
    let journal = s_state(cfg);
    assert!(
        journal.is_file(),
        "the deployment stays in maintenance: no {}",
        journal.display()
    );

    let args = [
        "stop-for-maintenance",
        "--terminate-sessions",
        "--output",
        "json",
    ];
    let (o, _, _) = timed_orch(c, cfg, &args, Duration::from_secs(180));
    let report = maintenance_report(&o);
    assert_eq!(report["resumed_operation"], true, "{report}");
    assert_eq!(
        report["sessions"]["terminated"][0]["pid"], stray_pid,
        "{report}"
    );
    assert_eq!(
        report["sessions"]["left"],
        serde_json::json!([]),
        "{report}"
    );
    let human = orch_ok(c, cfg, &["stop-for-maintenance"]);
    let human = String::from_utf8_lossy(&human.stdout);
    let units = report["units"].as_array().unwrap().len();
    let proof = format!("{units} units stopped, 0 processes left, 0 database sessions of synapse");
    assert!(human.contains(&proof), "{proof:?} in:\n{human}");
    let _ = stray.kill();
    let _ = stray.wait();
    eprintln!("stray psql session {stray_pid}: named, then terminated: {proof}");
    (o, t, t.elapsed())
}

/// The maintenance journal of the configuration's deployment.
fn s_state(cfg: &Path) -> PathBuf {
    let text = std::fs::read_to_string(cfg).unwrap();
    let dir = text
        .lines()
        .find_map(|l| l.strip_prefix("state_dir = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("state_dir in the configuration");
    Path::new(dir).join(NAME).join("maintenance.json")
}

/// The backend pid of the stray psql, once PostgreSQL shows it (bounded).
fn wait_for_stray(c: &Container, bin: &Path) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pid = psql(c, bin, "select pid from pg_stat_activity where usename = 'synapse' and application_name = 'psql'");
        if let Ok(pid) = pid.parse() {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "the stray psql session did not appear: {pid:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn real_synapse_with_workers_through_orch() {
    let _serial = serial();
    let test_start = Instant::now();
    let bin = preflight();
    let (venv, install_time) = synapse_venv();

    let dir = tempfile::tempdir().unwrap();
    let (conf, masks, state, sysusers) = (
        dir.path().join("synapse"),
        dir.path().join("masks"),
        dir.path().join("state"),
        dir.path().join("sysusers.d"),
    );
    for d in [&masks, &state, &sysusers] {
        std::fs::create_dir(d).unwrap();
    }
    write_synapse_config(&conf);
    chown_r(&conf, SYNAPSE_UID);
    // The container's /etc is empty: its own systemd-sysusers makes the users.
    std::fs::write(
        sysusers.join("orch-synapse-test.conf"),
        format!(
            "u matrix-synapse {SYNAPSE_UID} \"Synapse\" {CONF} /usr/sbin/nologin\n\
             u postgres {POSTGRES_UID} \"PostgreSQL\" /var/lib/pgtest /usr/sbin/nologin\n\
             u redis 2003 \"Redis\" /tmp /usr/sbin/nologin\n"
        ),
    )
    .unwrap();
    let c = Container::builder()
        .bind_ro(&venv, &venv)
        .bind(&conf, CONF)
        .bind(&masks, "/run/systemd/system.control")
        .bind_ro(&sysusers, "/etc/sysusers.d")
        .boot();
    exec_ok(&c, &["systemd-sysusers"]);
    exec_ok(
        &c,
        &[
            "install",
            "-d",
            "-o",
            "postgres",
            "-g",
            "postgres",
            "-m",
            "700",
            "/var/lib/pgtest",
        ],
    );
    let initdb = bin.join("initdb");
    let o = as_postgres(
        &c,
        &[
            initdb.to_str().unwrap(),
            "-D",
            PGDATA,
            "-E",
            "UTF8",
            "--locale=C",
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
    );
    assert!(o.status.success(), "initdb: {}", text(&o));
    write_service_units(&c, &bin);

    let cfg = dir.path().join("orch.toml");
    std::fs::write(&cfg, config(&venv, &state, &masks)).unwrap();
    orch_ok(&c, &cfg, &["install"]);

    // The database first (as an operator would, to create Synapse's role).
    orch_ok(&c, &cfg, &["start", "database"]);
    psql(&c, &bin, "create role synapse login password 'synapse'");
    psql(
        &c,
        &bin,
        "create database synapse owner synapse encoding 'UTF8' locale 'C' template template0",
    );

    // start --all: Redis is started by orch, as the master's prerequisite.
    assert_eq!(is_active(&c, "redis-test.service"), "inactive");
    let master_unit =
        std::fs::read_to_string(c.unit_dir().join(format!("{NAME}.service"))).unwrap();
    assert!(
        master_unit.contains("\nRequires=redis-test.service\nAfter=redis-test.service\n"),
        "the master requires the declared prerequisite:\n{master_unit}"
    );
    let (o, _, start_time) = timed_orch(
        &c,
        &cfg,
        &["start", "--all", "--output", "json"],
        Duration::from_secs(300),
    );
    let sum = summary(&o);
    assert!(all_in_phase(&sum, "ready"), "{sum}");
    let redis = sum["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == "redis-test.service")
        .unwrap_or_else(|| panic!("Redis is in orch's summary: {sum}"));
    assert_eq!(redis["role"], "prerequisite", "{redis}");
    assert_eq!(is_active(&c, "redis-test.service"), "active");
    assert_eq!(sum["units"].as_array().unwrap().len(), 9, "{sum}");
    // `orch status` shows the prerequisite, with its declared probe.
    let status = orch_ok(&c, &cfg, &["status", "--output", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let row = status_row(&status, "redis-test.service");
    assert_eq!(
        (&row["role"], &row["active_state"], &row["health"]),
        (&"prerequisite".into(), &"active".into(), &"ok".into()),
        "{status}"
    );

    // A user and a room, then the writer.
    let (token, room) = writer_and_room();

    let stop = AtomicBool::new(false);
    let log = Mutex::new(Vec::<Send>::new());
    let mut timings: Vec<(String, String)> = vec![
        ("pip install (0 = cached)".into(), secs(install_time)),
        (
            "start --all (new database: schema)".into(),
            secs(start_time),
        ),
    ];
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| writer(&token, &room, &stop, &log));
        // Ends the writer whatever happens below, so the scope can join it.
        let _stop = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_secs(3));

        // restart --all
        let (o, from, took) = timed_orch(
            &c,
            &cfg,
            &["restart", "--all", "--output", "json"],
            Duration::from_secs(300),
        );
        assert!(all_in_phase(&summary(&o), "ready"), "{}", summary(&o));
        std::thread::sleep(Duration::from_secs(2));
        let w = window(&log.lock().unwrap(), from, from + took);
        timings.push(("restart --all".into(), secs(took)));
        timings.push(("restart --all: longest client gap".into(), w.describe()));

        // restart --all --rolling --batch 1
        let (o, from, took) = timed_orch(
            &c,
            &cfg,
            &[
                "restart",
                "--all",
                "--rolling",
                "--batch",
                "1",
                // Requests the proxy moved to the second generic worker
                // while the first restarted finish before it is stopped.
                "--settle",
                "2s",
                "--output",
                "json",
            ],
            Duration::from_secs(300),
        );
        let sum = summary(&o);
        assert!(
            sum["units"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|u| u["role"] != "prerequisite" && u["role"] != "database")
                .all(|u| u["phase"] == "ready"),
            "{sum}"
        );
        std::thread::sleep(Duration::from_secs(2));
        let ev = event_times(&o);
        // The workers' part begins once the outage window is over: the last
        // of its units (a background one) is ready.
        let workers_from = [NAME, PERSISTER, FEDERATION, PUSHER, MEDIA]
            .iter()
            .map(|n| {
                *ev.get(&(format!("{n}.service"), "ready".to_string()))
                    .unwrap_or_else(|| panic!("no ready event of {n}: {ev:?}"))
            })
            .max()
            .unwrap();
        let all = window(&log.lock().unwrap(), from, from + took);
        let workers = window(&log.lock().unwrap(), from + workers_from, from + took);
        timings.push((
            "restart --all --rolling --batch 1 --settle 2s".into(),
            secs(took),
        ));
        timings.extend(outage::report("rolling", &c, &o, &log, from));
        timings.push((
            "rolling: longest client gap (master step included)".into(),
            all.describe(),
        ));
        timings.push((
            "rolling, workers' part: longest client gap".into(),
            workers.describe(),
        ));
        if !workers.failed.is_empty() {
            // Everything needed to tell orch's order from Synapse's own
            // behaviour: when each failed send ended, what orch did to the
            // generic workers and when, and what they logged.
            let sends: Vec<String> = workers
                .failed
                .iter()
                .map(|s| {
                    format!(
                        "{} ms: {} ({:?}): {}",
                        (s.done - from).as_millis(),
                        s.body,
                        s.took,
                        s.outcome
                    )
                })
                .collect();
            let journals: Vec<String> = GENERIC_NAMES
                .iter()
                .map(|n| c.journal(&format!("{n}.service")))
                .collect();
            panic!(
                "sends failed during the rolling restart of the workers (times from orch's start):\n{}\n\
                 orch's events of the generic workers:\n{}\n\
                 their journals:\n{}",
                sends.join("\n"),
                unit_events(&o, &GENERIC_NAMES).join("\n"),
                journals.join("\n")
            );
        }

        timings.extend(outage::compare(&c, &cfg, dir.path(), &log));

        // stop-for-maintenance, dump / drop / restore, resume
        let (o, from, took) = stop_with_stray_session(&c, &cfg, &bin);
        let report = maintenance_report(&o);
        timings.push(("stop-for-maintenance".into(), secs(took)));
        let check = |when: &str| {
            let (procs, sessions) = synapse_leftovers(&c, &bin);
            assert!(
                procs.is_empty(),
                "Synapse processes {when}: {procs:#?}\n{report}"
            );
            assert_eq!(sessions, "0", "sessions of Synapse's role {when}");
        };
        check("before the dump");
        let t = Instant::now();
        let port = PG_PORT.to_string();
        let tool = |name: &str| bin.join(name).display().to_string();
        let pg = |args: &[&str]| {
            let o = as_postgres(&c, args);
            assert!(o.status.success(), "{args:?}: {}", text(&o));
        };
        let conn = ["-h", "127.0.0.1", "-p", &port, "-U", "postgres"];
        let dump_tool = tool("pg_dump");
        let mut dump = vec![dump_tool.as_str()];
        dump.extend_from_slice(&conn);
        dump.extend_from_slice(&["-Fc", "-f", DUMP, "synapse"]);
        let rows = || {
            psql_in(
                &c,
                &bin,
                "synapse",
                "select (select count(*) from events) || ' events, ' || \
                 (select count(*) from event_json) || ' event_json, ' || \
                 (select count(*) from users) || ' users'",
            )
        };
        let before = rows();
        // Sampled while pg_dump runs, too.
        let samples = std::thread::scope(|inner| {
            let dumper = inner.spawn(|| pg(&dump));
            let mut samples = 0;
            while !dumper.is_finished() {
                check("during the dump");
                samples += 1;
            }
            if let Err(panic) = dumper.join() {
                std::panic::resume_unwind(panic);
            }
            samples
        });
        check("after the dump");
        psql(&c, &bin, "drop database synapse");
        psql(
            &c,
            &bin,
            "create database synapse owner synapse encoding 'UTF8' locale 'C' template template0",
        );
        let restore_tool = tool("pg_restore");
        let mut restore = vec![restore_tool.as_str()];
        restore.extend_from_slice(&conn);
        restore.extend_from_slice(&["-d", "synapse", DUMP]);
        pg(&restore);
        check("after the restore");
        assert_eq!(rows(), before, "the restored database has the dumped rows");
        eprintln!("dumped and restored: {before}; {samples} samples during the dump");
        timings.push(("pg_dump + drop + restore".into(), secs(t.elapsed())));
        let (_, _, resume) = timed_orch(
            &c,
            &cfg,
            &["resume", "--output", "json"],
            Duration::from_secs(300),
        );
        timings.push(("resume".into(), secs(resume)));
        std::thread::sleep(Duration::from_secs(3));
        let w = window(&log.lock().unwrap(), from, Instant::now());
        timings.push(("maintenance: longest client gap".into(), w.describe()));

        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer");
    });

    // Every acknowledged send is in the room.
    let log = log.into_inner().unwrap();
    let acked: Vec<&Send> = log.iter().filter(|s| s.ok).collect();
    let bodies = room_bodies(&token, &room);
    let lost: Vec<&str> = acked
        .iter()
        .map(|s| s.body.as_str())
        .filter(|b| !bodies.contains(*b))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged sends are not in the room: {lost:?}",
        lost.len(),
        acked.len()
    );
    let slowest = log.iter().map(|s| s.took).max().unwrap_or_default();
    timings.push((
        "writer".into(),
        format!(
            "{} sends, {} acknowledged, all in the room; slowest send {}",
            log.len(),
            acked.len(),
            secs(slowest)
        ),
    ));

    // No foreign-key or integrity error in Synapse's journal.
    let journal = exec_ok(
        &c,
        &[
            "journalctl",
            "--no-pager",
            "-o",
            "cat",
            "-u",
            "matrix-synapse*",
        ],
    );
    let journal = String::from_utf8_lossy(&journal.stdout);
    assert!(
        journal.contains("synapse"),
        "the units' journal is readable"
    );
    let bad: Vec<&str> = journal
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("foreign key")
                || l.contains("foreignkeyviolation")
                || l.contains("integrityerror")
                || l.contains("integrity error")
                || l.contains("uniqueviolation")
        })
        .collect();
    assert!(
        bad.is_empty(),
        "integrity errors in Synapse's journal: {bad:#?}"
    );
    // For the record (clients cut off by the stops): ERROR lines, their
    // request ids' numbers dropped, and the exceptions of their tracebacks.
    let errors: BTreeSet<String> = journal
        .lines()
        .filter_map(|l| l.split_once(" - ERROR - ").map(|(_, m)| m))
        .map(|m| {
            m.split_once(" - ")
                .map_or(m.to_string(), |(request, rest)| {
                    format!(
                        "{} - {rest}",
                        request.trim_end_matches(|c: char| c.is_ascii_digit())
                    )
                })
        })
        .collect();
    let exceptions: BTreeSet<&str> = journal
        .lines()
        .filter(|l| {
            let head = l.split(':').next().unwrap_or_default();
            !l.starts_with(' ')
                && l.contains(": ")
                && (head.ends_with("Error") || head.ends_with("Exception"))
        })
        .collect();
    eprintln!(
        "journal: {} lines; ERROR lines: {errors:#?}; exceptions: {exceptions:#?}",
        journal.lines().count()
    );

    timings.push(("whole test".into(), secs(test_start.elapsed())));
    eprintln!("real Synapse {VERSION} timings:");
    for (what, value) in &timings {
        eprintln!("  {what:<52} {value}");
    }
}

/// Registers the writer's user through one client worker and creates its
/// room through another: (access token, room id).
pub(super) fn writer_and_room() -> (String, String) {
    let reg = ok_json(
        GENERIC[0].get(),
        "POST",
        "/_matrix/client/v3/register",
        None,
        serde_json::json!({"username": "writer", "password": "orch-test-pass",
                           "auth": {"type": "m.login.dummy"}}),
    );
    let token = reg["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let room = ok_json(
        GENERIC[1].get(),
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&token),
        serde_json::json!({"preset": "private_chat", "name": "orch"}),
    )["room_id"]
        .as_str()
        .expect("room_id")
        .to_string();
    (token, room)
}

/// Raises the writer's stop flag when dropped, whatever happens in the
/// scope, so the scope can join the writer.
pub(super) struct StopOnDrop<'a>(pub(super) &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

//! TCP ports for tests: no test hard-codes a port.
//!
//! The test containers share the host's network, and the host is shared: a
//! second run of the suite, a developer's sandbox or any service may hold a
//! port. A test asks for the ports it needs, a block of consecutive ones
//! (a deployment's `port_base` numbers its workers from there), and keeps the
//! [`PortLease`] alive for as long as anything listens on them:
//!
//! ```ignore
//! let ports = ports::reserve(8);          // 8 consecutive ports
//! let master = ports.port(0);
//! let workers_base = ports.port(1);       // workers on port(1)..port(1 + count)
//! ```
//!
//! How a port is leased:
//! - it is below the kernel's ephemeral range (from [`LOW`] up to the start of
//!   `/proc/sys/net/ipv4/ip_local_port_range`), so no outgoing connection is
//!   ever handed one while the test runs;
//! - an exclusive, non-blocking `flock` on `LOCK_DIR/PORT` is held for the
//!   lease's life (drop = release): two runs of the suite at once, or two
//!   threads of one run, never share a port;
//! - it is checked free by binding it on 127.0.0.1, 0.0.0.0 and, when the
//!   host has IPv6, [::], then releasing the bind. A busy port is skipped.
//!
//! A test that needs one exact port asks [`reserve_exact`], which fails with
//! the port it wanted and why it is not free.
//!
//! New tests: never write a port number; take a lease here.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::fcntl::{Flock, FlockArg};

/// The lowest port leased: above the well-known and most registered
/// service ports people run on a development host.
pub const LOW: u16 = 20000;
/// Where the per-port lock files live (shared by every run on the host).
const LOCK_DIR: &str = "/run/lock/orch-test-ports";
/// The kernel's default ephemeral start, if /proc cannot be read.
const DEFAULT_EPHEMERAL_START: u16 = 32768;

/// Consecutive ports held for one test; released when dropped.
pub struct PortLease {
    base: u16,
    len: u16,
    _locks: Vec<Flock<File>>,
}

impl PortLease {
    /// The `i`-th port of the block (0-based).
    pub fn port(&self, i: u16) -> u16 {
        assert!(i < self.len, "port {i} of a lease of {} ports", self.len);
        self.base + i
    }
}

/// Ports per group of a [`lease_groups`] lease: the largest worker kind a
/// test runs fits in one group.
pub const GROUP: u16 = 32;

thread_local! {
    /// The lease of the test running on this thread (libtest runs each test
    /// on its own thread), for [`at`] and [`fill`].
    static CURRENT: std::cell::Cell<Option<u16>> = const { std::cell::Cell::new(None) };
}

/// Leases `groups` groups of [`GROUP`] consecutive ports for the test on
/// this thread: group `k` starts at `at(k, 0)`, and a config names it `@Pk@`
/// (or `@Pk+j@` for `at(k, j)`) through [`fill`]. Keep the lease alive for
/// the whole test (`let _ports = ...`, not `let _ = ...`).
pub fn lease_groups(groups: u16) -> PortLease {
    let lease = reserve(groups * GROUP);
    CURRENT.with(|c| c.set(Some(lease.base)));
    lease
}

/// Port `j` of group `k` of this thread's [`lease_groups`] lease.
pub fn at(k: u16, j: u16) -> u16 {
    assert!(j < GROUP, "port {j} of a group of {GROUP}");
    let base = CURRENT
        .with(|c| c.get())
        .expect("ports::at outside a test holding ports::lease_groups");
    base + k * GROUP + j
}

/// `text` with every `@Pk@` / `@Pk+j@` replaced by [`at`]`(k, j)`.
pub fn fill(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("@P") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 2..];
        let end = tail.find('@').expect("unterminated @P token");
        let (k, j) = match tail[..end].split_once('+') {
            Some((k, j)) => (k, j),
            None => (&tail[..end], "0"),
        };
        out.push_str(&at(k.parse().unwrap(), j.parse().unwrap()).to_string());
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

/// `n` consecutive free ports, below the ephemeral range, leased to the
/// caller. Panics (naming the range searched) when none are free.
pub fn reserve(n: u16) -> PortLease {
    assert!(n > 0, "a lease of 0 ports");
    let (low, high) = range();
    assert!(
        high - low >= n,
        "{n} ports do not fit in {low}..{high} (below the kernel's ephemeral range)"
    );
    let span = u32::from(high - low - n + 1);
    // Start where this process left off, from a per-process offset: two runs
    // at once mostly look at different ports, so they rarely contend.
    static CURSOR: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = CURSOR.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let mut offset = CURSOR.fetch_add(u32::from(n), Ordering::Relaxed) % span;
    let mut tried = 0;
    while tried < span {
        let base = low + offset as u16;
        match try_block(base, n) {
            Ok(lease) => return lease,
            // Skip past the busy port: no block containing it can work.
            Err((busy, _)) => {
                let step = u32::from(busy - base) + 1;
                tried += step;
                offset = (offset + step) % span;
            }
        }
    }
    panic!("no {n} consecutive free ports in {low}..{high}: everything is held or locked in {LOCK_DIR}")
}

/// Exactly `port`, for a test that cannot use another; panics saying which
/// port was wanted and why it is not free.
pub fn reserve_exact(port: u16) -> PortLease {
    try_block(port, 1)
        .unwrap_or_else(|(_, why)| panic!("this test wants port {port}, which is not free: {why}"))
}

/// The block `base..base + n` if every port in it is lockable and free, else
/// the first busy port and why.
fn try_block(base: u16, n: u16) -> Result<PortLease, (u16, String)> {
    let mut locks = Vec::with_capacity(n.into());
    for port in base..base + n {
        locks.push(lock(port).map_err(|why| (port, why))?);
        probe(port).map_err(|why| (port, why))?;
    }
    Ok(PortLease {
        base,
        len: n,
        _locks: locks,
    })
}

fn lock(port: u16) -> Result<Flock<File>, String> {
    let dir = lock_dir();
    let path = dir.join(port.to_string());
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| format!("leased by another test ({} locked: {e})", path.display()))
}

/// Binds and releases the port on every address a fixture may listen on.
fn probe(port: u16) -> Result<(), String> {
    for ip in [Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED] {
        TcpListener::bind(SocketAddr::from((ip, port)))
            .map_err(|e| format!("{ip}:{port} cannot be bound: {e}"))?;
    }
    match TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
        Err(e) if e.kind() == ErrorKind::AddrInUse => Err(format!("[::]:{port} is in use: {e}")),
        // No IPv6 on this host: nothing can listen there either.
        _ => Ok(()),
    }
}

fn lock_dir() -> PathBuf {
    let run_lock = PathBuf::from(LOCK_DIR);
    let dir = if run_lock.parent().is_some_and(|p| p.is_dir()) {
        run_lock
    } else {
        std::env::temp_dir().join("orch-test-ports")
    };
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// `LOW` up to the start of the kernel's ephemeral range.
fn range() -> (u16, u16) {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_START);
    assert!(
        start > LOW + 1000,
        "the kernel's ephemeral range starts at {start}: too close to {LOW} to lease test ports below it"
    );
    (LOW, start)
}

#[test]
fn leases_are_free_distinct_and_released() {
    let a = reserve(4);
    let b = reserve(4);
    let (low, high) = range();
    for i in 0..4 {
        assert!(
            (low..high).contains(&a.port(i)),
            "{} outside {low}..{high}",
            a.port(i)
        );
        assert!(
            !(b.port(0)..=b.port(3)).contains(&a.port(i)),
            "leases overlap"
        );
    }
    // Held: neither another lease nor an exact request gets it.
    let held = a.port(0);
    let err = std::panic::catch_unwind(|| reserve_exact(held).port(0)).unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains(&format!("wants port {held}")), "{msg}");
    // A foreign listener makes the port busy even with no lock file.
    let foreign = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let p = foreign.local_addr().unwrap().port();
    assert!(probe(p).is_err(), "a port with a listener probed free");
    drop(a);
    // Released: the same port can be taken again.
    drop(reserve_exact(held));
}

/// Literal port numbers the test sources may write, each with why no test
/// listens on it: everything else that looks like a port must be leased.
const LITERAL_PORTS: &[(&str, u16, &str)] = &[
    (
        "config_errors.rs",
        9000,
        "validation only: /bin/sleep, nothing listens",
    ),
    (
        "config_errors.rs",
        8008,
        "validation only: nothing is started",
    ),
    (
        "config_errors.rs",
        6379,
        "validation only: nothing is started",
    ),
    ("render.rs", 9000, "render only: nothing is started"),
    (
        "names.rs",
        35100,
        "/bin/sleep takes it as an argument, nothing listens",
    ),
    (
        "names.rs",
        35200,
        "/bin/sleep takes it as an argument, nothing listens",
    ),
    (
        "names.rs",
        35300,
        "/bin/sleep takes it as an argument, nothing listens",
    ),
    (
        "demo.rs",
        20000,
        "examples/demo.toml's, replaced by a leased one",
    ),
    (
        "demo.rs",
        20100,
        "examples/demo.toml's, replaced by a leased one",
    ),
    (
        "demo.rs",
        20200,
        "examples/demo.toml's, replaced by a leased one",
    ),
    (
        "synapse.rs",
        6379,
        "examples/synapse.toml's, replaced by a leased one",
    ),
    (
        "synapse.rs",
        5432,
        "examples/synapse.toml's, replaced by a leased one",
    ),
    (
        "synapse.rs",
        8008,
        "examples/synapse.toml's, replaced by a leased one",
    ),
    (
        "synapse.rs",
        18111,
        "examples/synapse.toml's, replaced by a leased one",
    ),
    (
        "synapse.rs",
        18201,
        "examples/synapse.toml's, replaced by a leased one",
    ),
    (
        "synapse.rs",
        18401,
        "examples/synapse.toml's, replaced by a leased one",
    ),
    (
        "ssh_real.rs",
        41600,
        "its container has a network namespace of its own",
    ),
];

/// Every number of 4–5 digits in `src` written where a port goes (after
/// `port =`, `port_base =`, `--port`, `let port =`, a loopback address, or
/// as a call's last argument), with its line.
fn port_literals(src: &str) -> Vec<(usize, u16)> {
    let b = src.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit()
            || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'.'))
        {
            i += 1;
            continue;
        }
        let end = i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        let number = src[i..end].parse::<u32>().ok();
        // Up to 24 bytes back, from a character's start (the sources hold
        // "—" and "×": a byte offset may fall inside one).
        let mut from = i.saturating_sub(24);
        while !src.is_char_boundary(from) {
            from += 1;
        }
        let before = src[from..i].to_ascii_lowercase();
        let before = before.trim_end_matches([' ', '"', '=', ':']);
        let portish = before.ends_with("port")
            || before.ends_with("port_base")
            || before.ends_with("127.0.0.1")
            || before.ends_with("localhost")
            || (before.ends_with(',') && b.get(end) == Some(&b')'));
        if let Some(n) = number.filter(|n| (1024..=65535).contains(n) && end - i >= 4) {
            if portish
                && b.get(end)
                    .is_none_or(|c| !c.is_ascii_alphanumeric() && *c != b'.')
            {
                found.push((src[..i].lines().count().max(1), n as u16));
            }
        }
        i = end;
    }
    found
}

/// No test writes a port number it would listen on (issue 22: two runs of
/// the suite, or any service, may hold it): each is leased here. A literal
/// that nothing listens on goes in [`LITERAL_PORTS`] with why.
#[test]
fn no_test_writes_a_port_it_listens_on() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration");
    let mut bad = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if !file.ends_with(".rs") || file == "ports.rs" {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        for (line, port) in port_literals(&src) {
            if !LITERAL_PORTS
                .iter()
                .any(|(f, p, _)| *f == file && *p == port)
            {
                bad.push(format!("{file}:{line}: port {port}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "tests write port numbers: lease them (ports::lease_groups / ports::reserve), \
         or list them in LITERAL_PORTS with why nothing listens there:\n{}",
        bad.join("\n")
    );
}

#[test]
fn port_literals_finds_ports_where_ports_go_only() {
    let src = "config(\"b\", 18400)\nport = 20000\nport_base = 9000\n--port 30000\n\
               http://127.0.0.1:8008/x\nlet port = 41600;\nsleep(2000)\nfoo(1, 2000)\n\
               timeout = 5000\nport = 80\nv1.20000\n\
               // ——————————————— port = 25000\n";
    assert_eq!(
        port_literals(src),
        [
            (1, 18400),
            (2, 20000),
            (3, 9000),
            (4, 30000),
            (5, 8008),
            (6, 41600),
            (8, 2000),
            (12, 25000),
        ]
    );
}

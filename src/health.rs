//! Readiness probes: `http://`, `tcp://`, `exec:`.
//!
//! A unit on a remote host is probed from that host (`src/tunnel.rs`).
//! Locally, a host name is resolved to every address it has, and all of them are tried
//! at once, each with its own short connect timeout: an address that
//! black-holes (IPv6 `localhost` with nobody listening, a dead route) never
//! delays one that answers.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::model::{Probe, ProbeFrom};
use crate::remote::Remote;

/// Bounds on one probe attempt.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Per address, per attempt.
    pub connect: Duration,
    /// For the whole attempt (connect, request, answer; or the command).
    pub attempt: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: Duration::from_secs(1),
            attempt: Duration::from_secs(3),
        }
    }
}

/// Why a probe attempt did not pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// In words for the operator; a later attempt may pass.
    #[error("{0}")]
    Failed(String),
    /// Connecting from the unit's host through SSH failed.
    #[error("{probe}: {cause}")]
    Tunnel {
        probe: String,
        cause: crate::tunnel::TunnelError,
    },
}

impl ProbeError {
    /// True when no later attempt can pass (see [`crate::tunnel::TunnelError::is_final`]).
    pub fn is_final(&self) -> bool {
        matches!(self, ProbeError::Tunnel { cause, .. } if cause.is_final())
    }
}

/// Why a unit did not become ready while being probed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadyError {
    /// The bound ran out; `last` is the last attempt's failure.
    #[error("not healthy within {within:?}: {last}")]
    NotHealthy { within: Duration, last: String },
    /// The liveness check failed: the unit died, crash-looped, or orch lost
    /// sight of it.
    #[error("{0}")]
    Died(String),
    /// The probe cannot pass however long orch waits (e.g. the host's sshd
    /// refuses forwarding): reported at the first attempt.
    #[error("{0}")]
    Impossible(ProbeError),
}

/// Runs one probe attempt. `Ok(())` when ready, otherwise why not. `on` is
/// the unit's host when it is reached over SSH: every probe then runs from
/// there, where the unit runs (`exec:` as a command, `http://` and `tcp://`
/// through an SSH channel), so its address means what it means locally;
/// an http or tcp probe with `probe_from = "local"` connects from this
/// machine all the same (see [`origin`]).
pub async fn check(probe: &Probe, limits: Limits, on: Option<&Remote>) -> Result<(), ProbeError> {
    match tokio::time::timeout(limits.attempt, attempt(probe, limits, on)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Failed(format!(
            "{probe}: no answer within {:?}",
            limits.attempt
        ))),
    }
}

/// Where an http or tcp attempt connects from: the unit's host (`on`),
/// unless the probe says `probe_from = "local"`, which connects from this
/// machine even for a remote unit. `exec:` always runs on the unit's host.
fn origin<'r>(probe: &Probe, on: Option<&'r Remote>) -> Option<&'r Remote> {
    match (probe, probe.from()) {
        (Probe::Exec { .. }, _) | (_, ProbeFrom::Host) => on,
        (_, ProbeFrom::Local) => None,
    }
}

/// Whether an attempt of `probe` goes through an SSH channel from `on`
/// (which then needs the host's master connection, and may need
/// [`crate::tunnel::ASK_EXTRA`] to say why a channel was refused).
pub fn tunnelled(probe: &Probe, on: Option<&Remote>) -> bool {
    !matches!(probe, Probe::Exec { .. }) && origin(probe, on).is_some()
}

async fn attempt(probe: &Probe, limits: Limits, on: Option<&Remote>) -> Result<(), ProbeError> {
    let on = origin(probe, on);
    let failed = |e: String| ProbeError::Failed(e);
    let tunnel = |cause| ProbeError::Tunnel {
        probe: probe.to_string(),
        cause,
    };
    match (probe, on) {
        (Probe::Tcp { host, port, .. }, None) => resolve_and_connect(host, *port, limits.connect)
            .await
            .map(drop)
            .map_err(failed),
        (Probe::Tcp { host, port, .. }, Some(r)) => {
            crate::tunnel::connect(r, host, *port, limits.connect)
                .await
                .map(drop)
                .map_err(tunnel)
        }
        (Probe::Http { host, port, .. }, None) => {
            let stream = resolve_and_connect(host, *port, limits.connect)
                .await
                .map_err(failed)?;
            http_exchange(probe, stream).await.map_err(failed)
        }
        (Probe::Http { host, port, .. }, Some(r)) => {
            let stream = crate::tunnel::connect(r, host, *port, limits.connect)
                .await
                .map_err(tunnel)?;
            http_exchange(probe, stream).await.map_err(failed)
        }
        (Probe::Exec { command }, on) => exec(probe, command, on).await.map_err(failed),
    }
}

/// `GET path` over any byte stream (a socket here, ssh's pipes from a
/// remote host); a 2xx status line passes.
async fn http_exchange<S>(probe: &Probe, mut stream: S) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Probe::Http {
        host, port, path, ..
    } = probe
    else {
        unreachable!("an http probe")
    };
    let host_header = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host_header}\r\nUser-Agent: orch\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("{probe}: {e}"))?;
    stream.flush().await.map_err(|e| format!("{probe}: {e}"))?;
    // The status line is all we need; read just enough of it.
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 64];
    while !buf.contains(&b'\n') && buf.len() < 1024 {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("{probe}: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or("");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(s) if (200..300).contains(&s) => Ok(()),
        Some(s) => Err(format!("{probe}: HTTP {s}")),
        None => Err(format!("{probe}: not an HTTP answer: {line:?}")),
    }
}

async fn exec(probe: &Probe, command: &str, on: Option<&Remote>) -> Result<(), String> {
    let mut cmd = match on {
        // The remote shell runs the command line, as `sh -c` does here.
        Some(r) => {
            let (program, args) = r.run(command);
            let mut c = tokio::process::Command::new(program);
            c.args(args);
            c
        }
        None => {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c").arg(command);
            c
        }
    };
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // The attempt's timeout drops the future; the command must not outlive it.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{probe}: cannot run: {e}"))?;
    let status = child.wait().await.map_err(|e| format!("{probe}: {e}"))?;
    match (status.code(), on) {
        (Some(0), _) => Ok(()),
        (Some(255), Some(r)) => Err(format!("{probe}: ssh to {} failed", r.destination)),
        _ => Err(format!("{probe}: {status}")),
    }
}

/// Connects to the first of `host`'s addresses that accepts, trying them all
/// concurrently.
pub async fn connect_any(
    host: &str,
    port: u16,
    connect_timeout: Duration,
) -> Result<TcpStream, ProbeError> {
    resolve_and_connect(host, port, connect_timeout)
        .await
        .map_err(ProbeError::Failed)
}

async fn resolve_and_connect(
    host: &str,
    port: u16,
    connect_timeout: Duration,
) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(connect_timeout, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| format!("resolving {host} took longer than {connect_timeout:?}"))?
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    connect_all(&addrs, connect_timeout).await
}

/// Connects to every address at once, each bounded by `connect_timeout`; the
/// first to accept wins and the others are abandoned.
pub async fn connect_addrs(
    addrs: &[SocketAddr],
    connect_timeout: Duration,
) -> Result<TcpStream, ProbeError> {
    connect_all(addrs, connect_timeout)
        .await
        .map_err(ProbeError::Failed)
}

async fn connect_all(addrs: &[SocketAddr], connect_timeout: Duration) -> Result<TcpStream, String> {
    let mut set = JoinSet::new();
    for addr in addrs.iter().copied() {
        set.spawn(async move {
            match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(format!("{addr}: {e}")),
                Err(_) => Err(format!("{addr}: no answer within {connect_timeout:?}")),
            }
        });
    }
    let mut errors = Vec::new();
    // The first success wins; dropping the set aborts the other attempts.
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(errors.join("; "))
}

/// Probes until ready or `timeout`; calls `alive` between attempts so a unit
/// that died is reported at once instead of after the timeout.
pub async fn wait_ready<F, Fut>(
    probe: &Probe,
    timeout: Duration,
    limits: Limits,
    on: Option<&Remote>,
    mut alive: F,
) -> Result<(), ReadyError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ReadyError>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    // Short and capped low: every gated phase waits for its slowest probe,
    // so detection latency adds straight to a restart's duration.
    let mut delay = Duration::from_millis(20);
    let mut last = String::from("never probed");
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            return Err(ReadyError::NotHealthy {
                within: timeout,
                last,
            });
        }
        let l = Limits {
            connect: limits.connect.min(remaining),
            attempt: limits.attempt.min(remaining),
        };
        match check(probe, l, on).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_final() => return Err(ReadyError::Impossible(e)),
            Err(e) => last = e.to_string(),
        }
        // The liveness check talks to systemd: it may not outlast the probe's own bound.
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Ok(r) = tokio::time::timeout(remaining, alive()).await {
            r?;
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::sleep(delay.min(remaining)).await;
        delay = (delay * 2).min(Duration::from_millis(150));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http_probe_reads_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for status in ["503 Service Unavailable", "200 OK"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
            }
        });
        let probe = Probe::Http {
            host: "127.0.0.1".into(),
            port,
            path: "/health".into(),
            from: ProbeFrom::Host,
        };
        let first = check(&probe, Limits::default(), None).await;
        assert!(first.unwrap_err().to_string().contains("HTTP 503"));
        assert_eq!(check(&probe, Limits::default(), None).await, Ok(()));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn exec_probe_uses_exit_status() {
        assert!(check(
            &Probe::Exec {
                command: "true".into()
            },
            Limits::default(),
            None
        )
        .await
        .is_ok());
        assert!(check(
            &Probe::Exec {
                command: "exit 3".into()
            },
            Limits::default(),
            None
        )
        .await
        .is_err());
        let slow = Limits {
            connect: Duration::from_millis(100),
            attempt: Duration::from_millis(200),
        };
        let t = std::time::Instant::now();
        assert!(check(
            &Probe::Exec {
                command: "sleep 5".into()
            },
            slow,
            None
        )
        .await
        .is_err());
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn refused_tcp_is_an_error_quickly() {
        // Bound but not listening: the port stays ours, and a connect is refused.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        let err = check(
            &Probe::Tcp {
                host: "127.0.0.1".into(),
                port,
                from: ProbeFrom::Host,
            },
            Limits::default(),
            None,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
    }

    #[tokio::test]
    async fn a_local_probe_of_a_remote_unit_connects_from_here() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // An "ssh" that fails at once: any attempt through the host fails.
        let remote = Remote::parse("admin@unreachable.invalid", "false").unwrap();
        let probe = |from| Probe::Tcp {
            host: "127.0.0.1".into(),
            port,
            from,
        };
        let through_host = check(&probe(ProbeFrom::Host), Limits::default(), Some(&remote)).await;
        assert!(through_host.is_err(), "the host's probe cannot pass");
        let local = check(&probe(ProbeFrom::Local), Limits::default(), Some(&remote)).await;
        assert_eq!(local, Ok(()));
        // exec: has no "local": it still goes to the unit's host.
        let exec = Probe::Exec {
            command: "true".into(),
        };
        assert!(origin(&exec, Some(&remote)).is_some());
        drop(listener);
        crate::tunnel::end();
    }

    #[tokio::test]
    async fn a_hanging_liveness_check_cannot_stretch_the_bound() {
        let probe = Probe::Exec {
            command: "exit 1".into(),
        };
        let t = std::time::Instant::now();
        let r = wait_ready(
            &probe,
            Duration::from_millis(500),
            Limits::default(),
            None,
            std::future::pending::<Result<(), ReadyError>>,
        )
        .await;
        assert!(matches!(r, Err(ReadyError::NotHealthy { .. })), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}

//! `http://` and `tcp://` probes of a unit on a remote host connect from
//! that host: each attempt is an `ssh -W HOST:PORT` whose pipes are the TCP
//! stream, multiplexed over one OpenSSH master connection per host
//! (`ControlMaster`), so an attempt costs a channel, not a handshake.
//!
//! The control sockets live in a private folder (0700) that [`end`] removes,
//! after asking each master to exit; a master orch loses track of (orch
//! killed) exits on its own after [`PERSIST`] idle.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader, Join, ReadBuf};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use crate::remote::Remote;

/// How long an idle master outlives its last channel: it bridges the gaps
/// between phases of one command, and no ssh lingers long after orch.
pub const PERSIST: &str = "10s";

/// The bound on making a host's master connection (its SSH handshake).
const WARM_BOUND: Duration = Duration::from_secs(20);

/// How much longer than a channel's bound the one direct connection that
/// learns why a channel was refused may take (it makes an SSH handshake of
/// its own). A caller's whole-attempt bound must leave this room after the
/// connect bound, or the reason is cut off and only a timeout is reported.
pub const ASK_EXTRA: Duration = Duration::from_secs(2);

/// After this long without a probe of a host, its master may be near its
/// [`PERSIST`] end (or gone): it is checked (`ssh -O check`) before the
/// next probe, and made again if it exited. Well under `PERSIST`, so a
/// master seen alive this recently outlives the probe that follows.
const CHECK_AFTER: Duration = Duration::from_secs(3);

/// What ssh's mux client prints (with `-v`) once the master's channel is
/// open, i.e. once the remote host has connected to the target.
const OPENED: &str = "master session id";

/// What ssh prints (with `-v`) when no master answers on the control
/// socket: `Control socket "PATH" does not exist` (gone) or `Control socket
/// connect(PATH): Connection refused` (killed, socket left), then, falling
/// back to a connection of its own, `Connecting to HOST`.
const NO_MASTER: [&str; 2] = ["Control socket", "debug1: Connecting to "];

/// Why a probe connection from a remote host was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// No attempt can pass until the host's sshd is changed.
    #[error("host {host} refuses TCP forwarding, and orch probes {target} from that host through SSH: its sshd has `AllowTcpForwarding no` (or a `PermitOpen` that excludes {target}); allow forwarding for orch's login there, or probe with exec:")]
    ForwardingRefused { host: String, target: String },
    /// The host is reached, but it could not connect to the target.
    #[error("from host {host}: {detail}")]
    Connect { host: String, detail: String },
    /// ssh itself failed (authentication, network, a dead master).
    #[error("ssh to {host} failed: {detail}")]
    Ssh { host: String, detail: String },
    #[error("cannot make a private folder for SSH control sockets: {0}")]
    RuntimeDir(String),
}

impl TunnelError {
    /// True when retrying cannot help: waiting out the probe's bound would
    /// only hide the cause.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TunnelError::ForwardingRefused { .. } | TunnelError::RuntimeDir(_)
        )
    }
}

/// A TCP stream from the remote host: ssh's stdout and stdin.
pub struct Stream {
    io: Join<ChildStdout, ChildStdin>,
    // Kept so ssh can still write its closing lines, and killed with us.
    _stderr: ChildStderr,
    _child: Child,
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What orch knows of one host's SSH.
struct HostState {
    remote: Remote,
    /// When the master was last seen alive (made, checked, or a channel
    /// opened through it); `None` until made or after a failed attempt.
    /// Held while the master is being checked or made, so that concurrent
    /// probes share one connection instead of racing to be the master.
    warm: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    /// Whether its sshd forwards at all; `None` until a refusal is seen.
    /// Held while asking, so concurrent refusals ask once.
    forwards: tokio::sync::Mutex<Option<bool>>,
}

struct Registry {
    dir: Option<tempfile::TempDir>,
    hosts: Vec<Arc<HostState>>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    dir: None,
    hosts: Vec::new(),
});

/// The control folder and `remote`'s state, made on first use.
fn state(remote: &Remote) -> Result<(PathBuf, Arc<HostState>), TunnelError> {
    let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    if reg.dir.is_none() {
        reg.dir = Some(private_dir()?);
    }
    let dir = reg.dir.as_ref().map(|d| d.path().to_path_buf()).unwrap();
    if let Some(h) = reg.hosts.iter().find(|h| h.remote == *remote) {
        return Ok((dir, h.clone()));
    }
    let h = Arc::new(HostState {
        remote: remote.clone(),
        warm: tokio::sync::Mutex::new(None),
        forwards: tokio::sync::Mutex::new(None),
    });
    reg.hosts.push(h.clone());
    Ok((dir, h))
}

/// `$XDG_RUNTIME_DIR` (or the temporary folder) `/orch-ssh-XXXXXX`, mode 0700:
/// whoever can reach a control socket can use the connection.
fn private_dir() -> Result<tempfile::TempDir, TunnelError> {
    use std::os::unix::fs::PermissionsExt;
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("orch-ssh-")
        .tempdir_in(base)
        .map_err(|e| TunnelError::RuntimeDir(e.to_string()))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .map_err(|e| TunnelError::RuntimeDir(e.to_string()))?;
    Ok(dir)
}

/// Who an ssh is on the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mux {
    /// The one ssh that makes (or finds) the master and persists.
    Master,
    /// A probe's `-W`: only ever a client. With `auto`, a client that finds
    /// no master would become one itself, never print [`OPENED`], and be
    /// waited on until its bound.
    Client,
}

/// The multiplexing options; `%C` is a hash of host, port and user, short
/// enough for a socket path.
fn mux_options(dir: &std::path::Path, mux: Mux) -> Vec<String> {
    let path = format!("ControlPath={}/%C", dir.display());
    let opts = match mux {
        Mux::Master => vec![
            "ControlMaster=auto".to_string(),
            path,
            format!("ControlPersist={PERSIST}"),
        ],
        Mux::Client => vec!["ControlMaster=no".to_string(), path],
    };
    opts.into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
}

/// `HOST:PORT` as `-W` wants it (an IPv6 address in brackets).
fn target(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Opens a TCP connection from `remote` to `host:port`, within `bound`.
pub async fn connect(
    remote: &Remote,
    host: &str,
    port: u16,
    bound: Duration,
) -> Result<Stream, TunnelError> {
    let (dir, state) = state(remote)?;
    let target = target(host, port);
    let deadline = tokio::time::Instant::now() + bound;
    // The master's handshake may take longer than one attempt's bound on a
    // loaded machine: it runs in its own task, which an attempt that gives
    // up does not cancel, so the next attempt finds the master ready.
    let warming = tokio::spawn({
        let (state, dir) = (state.clone(), dir.clone());
        async move {
            tokio::time::timeout(WARM_BOUND, warm(&state, &dir))
                .await
                .unwrap_or_else(|_| {
                    let why = format!("no master connection within {WARM_BOUND:?}");
                    Err(ssh_error(&state.remote, why))
                })
        }
    });
    tokio::time::timeout_at(deadline, warming)
        .await
        .map_err(|_| ssh_error(remote, format!("no connection within {bound:?}")))?
        .map_err(|e| ssh_error(remote, format!("the SSH master task failed: {e}")))??;
    let mut opened = channel(remote, &dir, &target, deadline).await?;
    if matches!(opened, (_, _, Ok(Opened::NoMaster))) {
        // The master ended since it was last seen (killed, `-O exit`, its
        // ControlPersist end within CHECK_AFTER): made again at once, and
        // the channel asked for once more within the same bound.
        drop(opened);
        *state.warm.lock().await = None;
        tokio::time::timeout_at(deadline, warm(&state, &dir))
            .await
            .map_err(|_| ssh_error(remote, format!("no connection within {bound:?}")))??;
        opened = channel(remote, &dir, &target, deadline).await?;
    }
    let (mut child, lines, opened) = opened;
    let said = match &opened {
        Ok(Opened::Closed(said)) => said.clone(),
        _ => Vec::new(),
    };
    let opened = opened.map(|o| match o {
        Opened::Yes => true,
        Opened::NoMaster | Opened::Closed(_) => false,
    });
    if !matches!(opened, Ok(true)) {
        // The master may have gone between its check and this channel:
        // the next attempt checks it again rather than trusting it.
        *state.warm.lock().await = None;
    } else {
        *state.warm.lock().await = Some(tokio::time::Instant::now());
    }
    match opened {
        Ok(true) => Ok(Stream {
            io: tokio::io::join(
                child.stdout.take().expect("piped"),
                child.stdin.take().expect("piped"),
            ),
            _stderr: lines.into_inner().into_inner(),
            _child: child,
        }),
        Ok(false) => Err(refused(&state, &target, &said, deadline).await),
        Err(_) => Err(TunnelError::Connect {
            host: remote.destination.clone(),
            detail: format!("{target}: no connection within {bound:?}"),
        }),
    }
}

/// Makes `remote`'s master connection (its SSH handshake) within `bound`,
/// for a caller that probes once (status) and so cannot count on a
/// later attempt finding the master that an earlier one started.
pub async fn prepare(remote: &Remote, bound: Duration) -> Result<(), TunnelError> {
    let (dir, state) = state(remote)?;
    tokio::time::timeout(bound, warm(&state, &dir))
        .await
        .map_err(|_| ssh_error(remote, format!("no master connection within {bound:?}")))?
}

/// How a probe's channel request through the master ended.
enum Opened {
    /// The master opened it: the remote host connected to the target.
    Yes,
    /// No master answered on the control socket: with `ControlMaster=no`
    /// ssh then falls back to a connection of its own, which never says
    /// [`OPENED`]; it is stopped at once instead of waited on.
    NoMaster,
    /// ssh ended without opening it, with what it printed.
    Closed(Vec<String>),
}

type Lines = tokio::io::Lines<BufReader<ChildStderr>>;

/// Asks the host's master for a channel to `target` (`ssh -v -W`) and reads
/// ssh's stderr until it is opened, refused, or ssh finds no master.
async fn channel(
    remote: &Remote,
    dir: &std::path::Path,
    target: &str,
    deadline: tokio::time::Instant,
) -> Result<(Child, Lines, Result<Opened, tokio::time::error::Elapsed>), TunnelError> {
    let mut options = mux_options(dir, Mux::Client);
    options.extend(["-v".into(), "-W".into(), target.to_string()]);
    let mut child = spawn(remote, &options, true)?;
    let stderr = child.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).lines();
    let opened = tokio::time::timeout_at(deadline, async {
        let mut said = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(OPENED) {
                return Opened::Yes;
            }
            if NO_MASTER.iter().any(|m| line.contains(m)) {
                return Opened::NoMaster;
            }
            said.push(line);
        }
        Opened::Closed(said)
    })
    .await;
    Ok((child, lines, opened))
}

/// Makes the host's master connection once (`ssh … DEST true` leaves it
/// running in the background for [`PERSIST`]); later attempts find it. A
/// master that expired is made again by the next attempt (`auto`).
/// Makes sure the host's master runs: trusted when seen alive within
/// [`CHECK_AFTER`], else asked (`ssh -O check`), else made again. A master
/// exits after [`PERSIST`] without a channel (a slow stop phase, a kind
/// without probes, `-- CMD`), and one run of orch outlives it.
async fn warm(state: &HostState, dir: &std::path::Path) -> Result<(), TunnelError> {
    let mut warm = state.warm.lock().await;
    let now = tokio::time::Instant::now();
    if warm.is_some_and(|t| now.duration_since(t) < CHECK_AFTER) {
        return Ok(());
    }
    if warm.is_some() && master_alive(state, dir).await {
        *warm = Some(now);
        return Ok(());
    }
    *warm = None;
    let mut cmd = spawn_command(&state.remote, &mux_options(dir, Mux::Master), Some("true"));
    // No pipe on stdout: the master keeps the first client's descriptors.
    cmd.stdout(std::process::Stdio::null());
    let out = cmd
        .output()
        .await
        .map_err(|e| ssh_error(&state.remote, format!("cannot run ssh: {e}")))?;
    if !out.status.success() {
        return Err(ssh_error(&state.remote, last_line(&out.stderr)));
    }
    *warm = Some(tokio::time::Instant::now());
    Ok(())
}

/// `ssh -O check`: whether the master on the control socket answers.
async fn master_alive(state: &HostState, dir: &std::path::Path) -> bool {
    let mut options = mux_options(dir, Mux::Client);
    options.extend(["-O".into(), "check".into()]);
    let mut cmd = spawn_command(&state.remote, &options, None);
    cmd.stdout(std::process::Stdio::null());
    let check = tokio::time::timeout(Duration::from_secs(5), cmd.output()).await;
    matches!(check, Ok(Ok(out)) if out.status.success())
}

/// The channel was not opened: why, from what ssh printed. Over a master
/// ssh only says "refused by peer", for a closed port and for a host that
/// forbids forwarding alike; the first time, one direct connection (no
/// master) asks again and gets sshd's reason.
async fn refused(
    state: &HostState,
    target: &str,
    said: &[String],
    deadline: tokio::time::Instant,
) -> TunnelError {
    let host = state.remote.destination.clone();
    let text = said.join("\n");
    let mut forwards = state.forwards.lock().await;
    let known = *forwards;
    let reason = match (classify(&text), known) {
        (Refusal::Unclear, None) => {
            // A handshake of its own takes longer than a channel; the
            // attempt's overall bound still holds.
            let ask = deadline + ASK_EXTRA;
            let direct = tokio::time::timeout_at(ask, ask_directly(state, target)).await;
            // Anything but sshd's prohibition means it forwards: the port
            // may simply have opened in between (the ask then connects).
            match direct.map(|t| classify(&t)) {
                Ok(Refusal::Prohibited) => Refusal::Prohibited,
                Ok(Refusal::ConnectFailed(why)) => Refusal::ConnectFailed(why),
                Ok(Refusal::Unclear) => Refusal::ConnectFailed("Connection refused".into()),
                // No answer in time: nothing learnt, ask again next time.
                Err(_) => Refusal::Unclear,
            }
        }
        (r, _) => r,
    };
    match (reason, known) {
        (Refusal::Prohibited, _) | (Refusal::Unclear, Some(false)) => {
            *forwards = Some(false);
            TunnelError::ForwardingRefused {
                host,
                target: target.into(),
            }
        }
        (Refusal::ConnectFailed(why), _) => {
            *forwards = Some(true);
            TunnelError::Connect {
                host,
                detail: format!("{target}: {why}"),
            }
        }
        (Refusal::Unclear, Some(true)) => TunnelError::Connect {
            host,
            detail: format!("{target}: connection refused"),
        },
        (Refusal::Unclear, None) => ssh_error(&state.remote, last_line(text.as_bytes())),
    }
}

/// `ssh -W` without the master, for its error message.
async fn ask_directly(state: &HostState, target: &str) -> String {
    let options: Vec<String> = [
        "-o",
        "ControlMaster=no",
        "-o",
        "ControlPath=none",
        "-W",
        target,
    ]
    .map(str::to_string)
    .to_vec();
    let mut cmd = spawn_command(&state.remote, &options, None);
    cmd.stdout(std::process::Stdio::null());
    match cmd.output().await {
        Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
        Err(_) => String::new(),
    }
}

/// sshd's answer to a channel request, read from ssh's stderr: this is the
/// one place its wording is interpreted.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// `open failed: administratively prohibited` (`AllowTcpForwarding no`,
    /// `PermitOpen`).
    Prohibited,
    /// `open failed: connect failed: REASON`: the host tried, the target refused.
    ConnectFailed(String),
    Unclear,
}

fn classify(stderr: &str) -> Refusal {
    if stderr.contains("administratively prohibited") {
        return Refusal::Prohibited;
    }
    match stderr.split_once("connect failed: ") {
        Some((_, why)) => Refusal::ConnectFailed(why.lines().next().unwrap_or("").trim().into()),
        None => Refusal::Unclear,
    }
}

fn spawn_command(remote: &Remote, options: &[String], command: Option<&str>) -> Command {
    let (program, args) = remote.with_options(options, command);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        // A dropped attempt (its bound, Ctrl+C) must not leave its ssh behind.
        .kill_on_drop(true);
    cmd
}

fn spawn(remote: &Remote, options: &[String], stream: bool) -> Result<Child, TunnelError> {
    let mut cmd = spawn_command(remote, options, None);
    if stream {
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
    }
    cmd.spawn()
        .map_err(|e| ssh_error(remote, format!("cannot run ssh: {e}")))
}

fn ssh_error(remote: &Remote, detail: String) -> TunnelError {
    TunnelError::Ssh {
        host: remote.destination.clone(),
        detail,
    }
}

/// ssh's last line that is not its own debugging.
fn last_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rfind(|l| !l.starts_with("debug") && !l.trim().is_empty())
        .unwrap_or("exited without saying why")
        .to_string()
}

/// Asks every master orch made to exit and removes the control folder.
/// Called once, as orch ends; a master that does not answer within a
/// moment exits on its own after [`PERSIST`].
pub fn end() {
    let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let Some(dir) = reg.dir.take() else { return };
    let mut children = Vec::new();
    for h in reg.hosts.drain(..) {
        let mut options = mux_options(dir.path(), Mux::Client);
        options.extend(["-O".into(), "exit".into()]);
        let (program, args) = h.remote.with_options(&options, None);
        if let Ok(c) = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            children.push(c);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    for mut c in children {
        while matches!(c.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    drop(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshd_refusals_are_told_apart() {
        assert_eq!(
            classify("channel 0: open failed: administratively prohibited: open failed\nstdio forwarding failed"),
            Refusal::Prohibited
        );
        assert_eq!(
            classify("channel 0: open failed: connect failed: Connection refused\nstdio forwarding failed"),
            Refusal::ConnectFailed("Connection refused".into())
        );
        assert_eq!(
            classify("Stdio forwarding request failed: Session open refused by peer"),
            Refusal::Unclear
        );
    }

    #[test]
    fn only_the_master_may_become_one_and_persist() {
        let dir = std::path::Path::new("/run/x");
        let client = mux_options(dir, Mux::Client).join(" ");
        assert_eq!(client, "-o ControlMaster=no -o ControlPath=/run/x/%C");
        let master = mux_options(dir, Mux::Master).join(" ");
        assert!(master.contains("ControlMaster=auto") && master.contains("ControlPersist=10s"));
    }

    #[test]
    fn ipv6_targets_are_bracketed() {
        assert_eq!(target("::1", 80), "[::1]:80");
        assert_eq!(target("db.example.org", 5432), "db.example.org:5432");
    }

    #[test]
    fn only_a_refusal_of_forwarding_is_final() {
        let f = TunnelError::ForwardingRefused {
            host: "h".into(),
            target: "t:1".into(),
        };
        assert!(f.is_final());
        assert!(f.to_string().contains("AllowTcpForwarding"));
        assert!(!TunnelError::Connect {
            host: "h".into(),
            detail: "x".into()
        }
        .is_final());
    }
}

//! Maintenance proven from the database's side: the sessions of the
//! deployment's roles (`[database] roles`) in PostgreSQL's
//! `pg_stat_activity`.
//!
//! Empty control groups prove orch's units are stopped; only the database
//! knows whether anything else still writes (a worker on a host missing
//! from the file, an admin script, a container outside any unit). orch
//! connects as a superuser with tokio-postgres (no shell tool's output is
//! parsed): by default to the local socket as the OS user of the same name,
//! so that peer authentication lets it in; or over TCP from the database's
//! host (through SSH when it is remote).

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_postgres::{Client, Config, NoTls};

use crate::model::{DbConnect, DbSessions};
use crate::remote::Remote;

/// The bound on reaching the database and on each query.
pub const CONNECT_BOUND: Duration = Duration::from_secs(10);
/// A backend ends a moment after its client died: the check waits at least
/// this long, even when the stop used up its bound.
pub const MIN_WAIT: Duration = Duration::from_secs(2);
/// How long a terminated backend has to go.
const TERMINATE_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(200);

/// One session of a watched role, as `pg_stat_activity` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    pub pid: i32,
    pub role: String,
    pub application_name: String,
    /// `None`: over the Unix socket.
    pub client_addr: Option<String>,
    /// `active`, `idle`, `idle in transaction`, …
    pub state: Option<String>,
    /// When the session began (RFC 3339, UTC).
    pub since: Option<String>,
}

/// What the database said once the units were stopped.
#[derive(Debug, Clone, Serialize)]
pub struct SessionsProof {
    pub roles: Vec<String>,
    /// Where orch asked.
    pub database: String,
    /// Sessions still there at the end: the proof fails.
    pub left: Vec<Session>,
    /// Sessions orch ended with `pg_terminate_backend` (`--terminate-sessions`).
    pub terminated: Vec<Session>,
}

impl SessionsProof {
    pub fn is_proven(&self) -> bool {
        self.left.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    #[error("cannot reach PostgreSQL at {target} as `{superuser}` to check the sessions of {roles}: {cause}\n  nothing was changed; check [database] connect and superuser (the superuser must be able to log in there: {how})")]
    Unreachable {
        target: String,
        superuser: String,
        roles: String,
        cause: String,
        /// How the superuser logs in over this kind of connection.
        how: String,
    },
    #[error("PostgreSQL at {target} did not answer within {bound:?} ({what})")]
    Timeout {
        target: String,
        what: &'static str,
        bound: Duration,
    },
    #[error("PostgreSQL at {target}: {what}: {cause}")]
    Query {
        target: String,
        what: &'static str,
        cause: tokio_postgres::Error,
    },
}

impl SessionsError {
    pub fn exit_code(&self) -> i32 {
        match self {
            SessionsError::Timeout { .. } => crate::exit::TIMEOUT,
            _ => crate::exit::FAILURE,
        }
    }
}

/// A superuser's connection to the database.
pub struct Db {
    client: Client,
    target: String,
}

/// How `s` is reached, for messages: over SSH (`on`, the database's host
/// when it is remote, `--host` included) the host and its address.
pub fn target(s: &DbSessions, on: Option<&Remote>) -> String {
    match (&s.connect, on) {
        (DbConnect::Socket { path }, _) => path.display().to_string(),
        (DbConnect::Tcp { host, port }, None) => format!("tcp://{host}:{port}"),
        (DbConnect::Tcp { host, port }, Some(r)) => format!(
            "tcp://{host}:{port} from host {} ({}) through SSH",
            s.host, r.destination
        ),
    }
}

/// Connects as the superuser within [`CONNECT_BOUND`]; `on` is the
/// database's host when it is remote.
pub async fn connect(s: &DbSessions, on: Option<&Remote>) -> Result<Db, SessionsError> {
    let target = target(s, on);
    let how = match &s.connect {
        DbConnect::Socket { .. } => {
            format!("peer authentication as the OS user `{}` on the socket", s.superuser)
        }
        DbConnect::Tcp { .. } => "as pg_hba.conf allows host connections from there, with the password in PGPASSWORD if it asks for one".to_string(),
    };
    let unreachable = |cause: String| SessionsError::Unreachable {
        target: target.clone(),
        superuser: s.superuser.clone(),
        roles: s.roles.join(", "),
        cause,
        how: how.clone(),
    };
    let mut config = Config::new();
    config
        .user(&s.superuser)
        .dbname("postgres")
        .application_name("orch");
    let attempt = async {
        match &s.connect {
            DbConnect::Socket { path } => {
                let stream = socket_as(path, &s.superuser).map_err(&unreachable)?;
                handshake(stream, &config).await.map_err(&unreachable)
            }
            DbConnect::Tcp { host, port } => {
                if let Ok(p) = std::env::var("PGPASSWORD") {
                    config.password(p);
                }
                match on {
                    None => {
                        let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                            .await
                            .map_err(|e| unreachable(e.to_string()))?;
                        handshake(stream, &config).await.map_err(&unreachable)
                    }
                    Some(r) => {
                        let stream = crate::tunnel::connect(r, host, *port, CONNECT_BOUND)
                            .await
                            .map_err(|e| unreachable(e.to_string()))?;
                        handshake(stream, &config).await.map_err(&unreachable)
                    }
                }
            }
        }
    };
    match tokio::time::timeout(CONNECT_BOUND, attempt).await {
        Ok(client) => Ok(Db {
            client: client?,
            target,
        }),
        Err(_) => Err(unreachable(format!("no answer within {CONNECT_BOUND:?}"))),
    }
}

/// The startup exchange over any byte stream; the connection is driven by
/// a task of its own for as long as the client lives.
async fn handshake<S>(stream: S, config: &Config) -> Result<Client, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) =
        config
            .connect_raw(stream, NoTls)
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) => format!("{}: {}", db.severity(), db.message()),
                None => e.to_string(),
            })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "the database connection ended");
        }
    });
    Ok(client)
}

const SESSIONS: &str = "\
select pid, usename::text, coalesce(application_name, ''), host(client_addr), state, \
to_char(backend_start at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
from pg_stat_activity \
where usename::text = any($1::text[]) and pid <> pg_backend_pid() \
order by backend_start";

impl Db {
    /// The sessions of `roles`, oldest first (orch's own excluded).
    pub async fn sessions(&self, roles: &[String]) -> Result<Vec<Session>, SessionsError> {
        let rows = self
            .bounded(
                "read pg_stat_activity",
                self.client.query(SESSIONS, &[&roles]),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Session {
                pid: r.get(0),
                role: r.get(1),
                application_name: r.get(2),
                client_addr: r.get(3),
                state: r.get(4),
                since: r.get(5),
            })
            .collect())
    }

    /// `pg_terminate_backend` for each session.
    async fn terminate(&self, sessions: &[Session]) -> Result<(), SessionsError> {
        for s in sessions {
            let q = "select pg_terminate_backend($1)";
            self.bounded("pg_terminate_backend", self.client.query(q, &[&s.pid]))
                .await?;
        }
        Ok(())
    }

    async fn bounded<T>(
        &self,
        what: &'static str,
        f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, SessionsError> {
        match tokio::time::timeout(CONNECT_BOUND, f).await {
            Ok(r) => r.map_err(|cause| SessionsError::Query {
                target: self.target.clone(),
                what,
                cause,
            }),
            Err(_) => Err(SessionsError::Timeout {
                target: self.target.clone(),
                what,
                bound: CONNECT_BOUND,
            }),
        }
    }

    /// Waits until no session of `roles` remains, up to `until` (and at
    /// least [`MIN_WAIT`]); then, with `terminate`, ends what is left and
    /// waits (bounded) for it to go.
    pub async fn prove(
        &self,
        roles: &[String],
        until: Instant,
        terminate: bool,
    ) -> Result<SessionsProof, SessionsError> {
        let until = until.max(Instant::now() + MIN_WAIT);
        let mut left = self.wait_until_none(roles, until).await?;
        let mut terminated = Vec::new();
        if terminate && !left.is_empty() {
            self.terminate(&left).await?;
            terminated = std::mem::take(&mut left);
            left = self
                .wait_until_none(roles, Instant::now() + TERMINATE_WAIT)
                .await?;
        }
        Ok(SessionsProof {
            roles: roles.to_vec(),
            database: self.target.clone(),
            left,
            terminated,
        })
    }

    async fn wait_until_none(
        &self,
        roles: &[String],
        until: Instant,
    ) -> Result<Vec<Session>, SessionsError> {
        loop {
            let left = self.sessions(roles).await?;
            if left.is_empty() || Instant::now() >= until {
                return Ok(left);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Connects to the Unix socket at `path` as the OS user `user` when orch
/// runs as root (and that user exists): the server's peer authentication
/// reads the credentials of the process that called connect(2), so a child
/// forked for that one call drops to `user` and connects the socket made
/// here; the connected socket is then this process's. Otherwise connects
/// as orch's own user.
fn socket_as(path: &Path, user: &str) -> Result<tokio::net::UnixStream, String> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;

    let shown = path.display();
    let addr = UnixAddr::new(path).map_err(|e| format!("{shown}: {e}"))?;
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let fd = socket(AddressFamily::Unix, SockType::Stream, flags, None)
        .map_err(|e| format!("socket: {e}"))?;
    let os_user = nix::unistd::User::from_name(user).ok().flatten();
    match os_user {
        Some(u) if nix::unistd::geteuid().is_root() && !u.uid.is_root() => {
            connect_as(fd.as_raw_fd(), &addr, u.uid, u.gid)
        }
        _ => connect(fd.as_raw_fd(), &addr),
    }
    .map_err(|e| format!("connect to {shown}: {e}"))?;
    let std = std::os::unix::net::UnixStream::from(fd);
    tokio::net::UnixStream::from_std(std).map_err(|e| e.to_string())
}

/// connect(2) of `fd` to `addr` by a child running as `uid`/`gid`.
fn connect_as(
    fd: std::os::fd::RawFd,
    addr: &nix::sys::socket::UnixAddr,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
) -> nix::Result<()> {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, setgid, setgroups, setuid, ForkResult};

    // SAFETY: the child only makes async-signal-safe system calls (no
    // allocation, no lock) and leaves with _exit.
    match unsafe { fork() }? {
        ForkResult::Child => {
            let r = setgroups(&[gid])
                .and_then(|_| setgid(gid))
                .and_then(|_| setuid(uid))
                .and_then(|_| nix::sys::socket::connect(fd, addr));
            let code = match r {
                Ok(()) => 0,
                Err(e) => (e as i32).clamp(1, 255),
            };
            // SAFETY: ends the child without running the parent's handlers.
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None)? {
            WaitStatus::Exited(_, 0) => Ok(()),
            WaitStatus::Exited(_, code) => Err(nix::errno::Errno::from_raw(code)),
            _ => Err(nix::errno::Errno::ECHILD),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_socket_is_said_with_its_path() {
        let e = socket_as(Path::new("/nonexistent/.s.PGSQL.5432"), "postgres").unwrap_err();
        assert!(
            e.contains("/nonexistent/.s.PGSQL.5432") && e.contains("ENOENT"),
            "{e}"
        );
    }

    #[test]
    fn a_dropped_connect_reaches_a_socket_as_the_other_user() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test checks the privilege drop and needs root");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _stream = rt.block_on(async { socket_as(&path, "nobody").unwrap() });
        let (peer, _) = listener.accept().unwrap();
        let cred = nix::sys::socket::getsockopt(&peer, nix::sys::socket::sockopt::PeerCredentials)
            .unwrap();
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        assert_eq!(
            cred.uid(),
            nobody.uid.as_raw(),
            "the server sees the dropped user"
        );
    }
}

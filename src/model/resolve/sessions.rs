//! The resolver's part for `[database] roles`, `superuser` and `connect`:
//! how `stop-for-maintenance` proves the database has no session left.

use std::path::PathBuf;

use super::Resolver;
use crate::config::{ConfigError, RawConfig, S};
use crate::model::{DbConnect, DbSessions, External, Host};

/// PostgreSQL's identifiers: NAMEDATALEN - 1 bytes.
const MAX_ROLE: usize = 63;
/// `sun_path` holds 108 bytes with the final NUL.
const MAX_SOCKET: usize = 107;
/// Debian's (and the upstream build's) socket for the default port.
pub const DEFAULT_SOCKET: &str = "/var/run/postgresql/.s.PGSQL.5432";
const DEFAULT_SUPERUSER: &str = "postgres";

impl Resolver<'_> {
    /// `None` without `roles`; `superuser` or `connect` alone are refused
    /// (they would silently prove nothing).
    pub(super) fn db_sessions(
        &self,
        raw: &RawConfig,
        database: Option<&External>,
        hosts: &[Host],
    ) -> Result<Option<DbSessions>, ConfigError> {
        let (Some(raw_db), Some(db)) = (&raw.database, database) else {
            return Ok(None);
        };
        let raw_db = raw_db.get_ref();
        let Some(roles) = &raw_db.roles else {
            let orphan = raw_db.superuser.iter().map(|v| (v, "database.superuser"));
            let orphan = orphan.chain(raw_db.connect.iter().map(|v| (v, "database.connect")));
            if let Some((v, key)) = orphan.into_iter().next() {
                let msg = "has no effect without `roles`: name the roles the deployment connects as (roles = [\"synapse\"])";
                return Err(self.err(v.span(), key, msg));
            }
            return Ok(None);
        };
        let roles_span = roles.span();
        let roles = self.roles(roles)?;
        let superuser = match &raw_db.superuser {
            Some(v) => self.role(v, "database.superuser")?,
            None => DEFAULT_SUPERUSER.to_string(),
        };
        let host = hosts
            .iter()
            .find(|h| h.name == db.host)
            .expect("the database's host is resolved");
        let connect = self.db_connect(raw_db.connect.as_ref(), roles_span, host, &superuser)?;
        Ok(Some(DbSessions {
            roles,
            superuser,
            connect,
            host: db.host.clone(),
        }))
    }

    fn roles(&self, roles: &S<Vec<S<String>>>) -> Result<Vec<String>, ConfigError> {
        if roles.get_ref().is_empty() {
            let msg = "is empty: name at least one role, or leave the key out";
            return Err(self.err(roles.span(), "database.roles", msg));
        }
        let mut out: Vec<String> = Vec::new();
        for (i, r) in roles.get_ref().iter().enumerate() {
            let key = format!("database.roles[{i}]");
            let role = self.role(r, &key)?;
            if out.contains(&role) {
                return Err(self.err(r.span(), &key, format!("`{role}` is listed twice")));
            }
            out.push(role);
        }
        Ok(out)
    }

    /// A PostgreSQL role name: 1 to 63 bytes, no control character.
    fn role(&self, v: &S<String>, key: &str) -> Result<String, ConfigError> {
        let r = v.get_ref();
        let why = if r.is_empty() {
            Some("is empty".to_string())
        } else if r.len() > MAX_ROLE {
            Some(format!(
                "is {} bytes long; PostgreSQL's role names have at most {MAX_ROLE}",
                r.len()
            ))
        } else if r.chars().any(char::is_control) {
            Some(format!("{r:?} has a control character"))
        } else {
            None
        };
        match why {
            Some(why) => Err(self.err(v.span(), key, format!("the role {why}"))),
            None => Ok(r.clone()),
        }
    }

    /// An absolute socket path (on orch's own host only) or `tcp://HOST:PORT`.
    fn db_connect(
        &self,
        v: Option<&S<String>>,
        roles_span: std::ops::Range<usize>,
        host: &Host,
        superuser: &str,
    ) -> Result<DbConnect, ConfigError> {
        let text = v.map_or(DEFAULT_SOCKET, |v| v.get_ref().as_str());
        // The default is a local socket: a remote database needs `connect`.
        let (span, key) = match v {
            Some(v) => (v.span(), "database.connect"),
            None => (roles_span, "database.roles"),
        };
        if let Some(rest) = text.strip_prefix("tcp://") {
            let bad = || {
                let msg = format!(
                    "`{text}` is not tcp://HOST:PORT (an IP address or a name, and a port)"
                );
                self.err(span.clone(), key, msg)
            };
            let (h, port) = rest.rsplit_once(':').ok_or_else(bad)?;
            let h = h.trim_start_matches('[').trim_end_matches(']');
            let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
            let host_ok = !h.is_empty()
                && h.len() <= 253
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c));
            if !host_ok {
                return Err(bad());
            }
            return Ok(DbConnect::Tcp {
                host: h.to_string(),
                port,
            });
        }
        let path = PathBuf::from(text);
        let why = if !path.is_absolute() {
            Some("is neither an absolute socket path (/var/run/postgresql/.s.PGSQL.5432) nor tcp://HOST:PORT".to_string())
        } else if text.len() > MAX_SOCKET {
            Some(format!(
                "is {} bytes long; a Unix socket path has at most {MAX_SOCKET}",
                text.len()
            ))
        } else if text.chars().any(char::is_control) {
            Some("has a control character".to_string())
        } else if host.address.is_some() {
            // Peer authentication names the process that connects: through
            // SSH (a forwarded socket) that is the SSH login, not the superuser.
            Some(format!("is a Unix socket, and the database's host `{h}` is remote: orch reaches it through SSH, where peer authentication would see orch's SSH login on `{h}`, not the OS user `{superuser}`; use connect = \"tcp://127.0.0.1:5432\" (connected from `{h}` through SSH; `{superuser}` then logs in as pg_hba.conf allows host connections, with the password in PGPASSWORD if it asks for one)", h = host.name))
        } else {
            None
        };
        match why {
            Some(why) => Err(self.err(span, key, format!("`{text}` {why}"))),
            None => Ok(DbConnect::Socket { path }),
        }
    }
}

#[cfg(test)]
mod tests {
    // The parent's helpers: its minimal deployment (4 lines, so the line
    // numbers below are those of `extra` + 4) and its refusal check.
    use super::super::tests::{refused, resolve};
    use crate::model::DbConnect;

    const REMOTE: &str = "[[hosts]]\nname = \"db1\"\naddress = \"admin@db1\"\n";

    #[test]
    fn roles_default_to_the_local_socket_as_postgres() {
        let d = resolve("[database]\nunit = \"pg\"\nroles = [\"synapse\"]\n").unwrap();
        let s = d.db_sessions.unwrap();
        assert_eq!(
            (s.roles, s.superuser.as_str()),
            (vec!["synapse".to_string()], "postgres")
        );
        assert_eq!(
            s.connect,
            DbConnect::Socket {
                path: super::DEFAULT_SOCKET.into()
            }
        );
        assert!(resolve("[database]\nunit = \"pg\"\n")
            .unwrap()
            .db_sessions
            .is_none());
    }

    #[test]
    fn a_remote_database_is_reached_over_tcp_from_its_host() {
        let cfg = format!("{REMOTE}[database]\nunit = \"pg\"\nhost = \"db1\"\nroles = [\"a\", \"b\"]\nsuperuser = \"admin\"\nconnect = \"tcp://127.0.0.1:6432\"\n");
        let s = resolve(&cfg).unwrap().db_sessions.unwrap();
        let tcp = DbConnect::Tcp {
            host: "127.0.0.1".into(),
            port: 6432,
        };
        assert_eq!(
            (s.connect, s.host.as_str(), s.superuser.as_str()),
            (tcp, "db1", "admin")
        );
        let socket =
            format!("{REMOTE}[database]\nunit = \"pg\"\nhost = \"db1\"\nroles = [\"a\"]\n");
        refused(&socket, 11, "database.roles", "is remote");
        refused(&socket, 11, "database.roles", "not the OS user `postgres`");
        let given = format!("{socket}connect = \"/run/postgresql/.s.PGSQL.5432\"\n");
        refused(
            &given,
            12,
            "database.connect",
            "peer authentication would see orch's SSH login on `db1`",
        );
    }

    #[test]
    fn bad_keys_are_named_with_their_line() {
        let db = "[database]\nunit = \"pg\"\n";
        refused(
            &format!("{db}roles = []\n"),
            7,
            "database.roles",
            "is empty",
        );
        refused(
            &format!("{db}roles = [\"a\", \"a\"]\n"),
            7,
            "database.roles[1]",
            "listed twice",
        );
        let long = "r".repeat(64);
        refused(
            &format!("{db}roles = [\"{long}\"]\n"),
            7,
            "database.roles[0]",
            "at most 63",
        );
        refused(
            &format!("{db}roles = [\"a\\n\"]\n"),
            7,
            "database.roles[0]",
            "control",
        );
        refused(
            &format!("{db}superuser = \"x\"\n"),
            7,
            "database.superuser",
            "without `roles`",
        );
        refused(
            &format!("{db}roles = [\"a\"]\nconnect = \"pg.sock\"\n"),
            8,
            "database.connect",
            "absolute",
        );
        refused(
            &format!("{db}roles = [\"a\"]\nconnect = \"tcp://h\"\n"),
            8,
            "database.connect",
            "tcp://HOST:PORT",
        );
        refused(
            &format!("{db}roles = [\"a\"]\nconnect = \"tcp://h:0\"\n"),
            8,
            "database.connect",
            "tcp://HOST:PORT",
        );
        let long = format!("/{}", "s".repeat(107));
        refused(
            &format!("{db}roles = [\"a\"]\nconnect = \"{long}\"\n"),
            8,
            "database.connect",
            "at most 107",
        );
    }
}

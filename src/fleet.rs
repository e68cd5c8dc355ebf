//! The hosts of a deployment: how each is reached (its bus and its file
//! store), and one systemd connection per host, all made at once.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::join_all;

use crate::model::{Deployment, Host};
use crate::remote::Remote;
use crate::store::Store;
use crate::systemd::{local_private_socket, Bus, Systemd, SystemdError};

/// How to reach one host.
#[derive(Debug, Clone)]
pub struct HostAccess {
    pub name: String,
    pub bus: Bus,
    pub store: Store,
    /// systemd's private socket, which reads try before the bus (local
    /// hosts only, see [`crate::systemd::local_private_socket`]).
    pub private: Option<PathBuf>,
}

/// A host address orch cannot use: nothing was tried (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AddressError {
    pub host: String,
    pub message: String,
}

impl HostAccess {
    /// A host without an address is this machine, over `access.local_bus`
    /// (or systemd's private socket for reads); any other is reached with
    /// `access.ssh_command`.
    pub fn new(host: &Host, access: &Access) -> Result<HostAccess, AddressError> {
        Ok(match &host.address {
            None => HostAccess {
                name: host.name.clone(),
                bus: access.local_bus.clone(),
                store: Store::local(),
                private: local_private_socket(access.systemd_socket.as_deref(), &access.local_bus),
            },
            Some(a) => {
                let remote = Remote::parse(a, &access.ssh_command).map_err(|e| AddressError {
                    host: host.name.clone(),
                    message: e.to_string(),
                })?;
                HostAccess {
                    name: host.name.clone(),
                    bus: Bus::Remote(remote.clone()),
                    store: Store::ssh(remote, access.call_timeout),
                    private: None,
                }
            }
        })
    }
}

/// How orch reaches the hosts of a deployment: the global options
/// `--bus`, `--systemd-socket`, `--ssh-command` and `--call-timeout`.
#[derive(Debug, Clone)]
pub struct Access {
    pub local_bus: Bus,
    /// `--systemd-socket`: the private socket reads try on this machine.
    pub systemd_socket: Option<PathBuf>,
    pub ssh_command: String,
    pub call_timeout: Duration,
}

impl Access {
    /// The targets of `hosts`.
    pub fn targets(&self, hosts: &[&Host]) -> Result<Vec<HostAccess>, AddressError> {
        hosts.iter().map(|h| HostAccess::new(h, self)).collect()
    }

    /// Every host a unit of the deployment lives on.
    pub fn used(&self, d: &Deployment) -> Result<Vec<HostAccess>, AddressError> {
        self.targets(&d.used_hosts())
    }

    /// The hosts `plan` and `install` visit (see [`Deployment::install_hosts`]).
    pub fn install(&self, d: &Deployment) -> Result<Vec<HostAccess>, AddressError> {
        self.targets(&d.install_hosts())
    }

    /// The file store of the master's host: it holds the deployment's state
    /// (the lock and the maintenance journal, see [`crate::state`]).
    pub fn state_store(&self, d: &Deployment) -> Result<Store, AddressError> {
        Ok(self.targets(&[d.host(&d.master.host)])?.remove(0).store)
    }

    /// [`Fleet::connect`] bounded by `--call-timeout`.
    pub async fn connect(&self, targets: &[HostAccess]) -> Result<Fleet, SystemdError> {
        Fleet::connect(targets, self.call_timeout).await
    }
}

/// One systemd connection per host.
#[derive(Clone)]
pub struct Fleet {
    hosts: Vec<Systemd>,
}

impl Fleet {
    /// Connects to every host at once, each bounded by `timeout`. One
    /// unreachable host fails the whole: orch cannot keep the deployment's
    /// order with part of it out of reach. The error names the host.
    pub async fn connect(targets: &[HostAccess], timeout: Duration) -> Result<Fleet, SystemdError> {
        let hosts = Self::connect_each(targets, timeout)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Fleet { hosts })
    }

    /// Connects to every host it can; `Err` for those it cannot.
    pub async fn connect_each(
        targets: &[HostAccess],
        timeout: Duration,
    ) -> Vec<Result<Systemd, SystemdError>> {
        join_all(
            targets
                .iter()
                .map(|t| Systemd::connect_host(&t.name, &t.bus, timeout)),
        )
        .await
    }

    /// Connects for reads to every host it can (see
    /// [`Systemd::connect_reads`]); `Err` for those it cannot.
    pub async fn connect_each_for_reads(
        targets: &[HostAccess],
        timeout: Duration,
    ) -> Vec<Result<Systemd, SystemdError>> {
        join_all(
            targets
                .iter()
                .map(|t| Systemd::connect_reads(&t.name, &t.bus, t.private.as_deref(), timeout)),
        )
        .await
    }

    pub fn from_connections(hosts: Vec<Systemd>) -> Fleet {
        Fleet { hosts }
    }

    /// The connection to `host`.
    pub fn get(&self, host: &str) -> &Systemd {
        self.hosts
            .iter()
            .find(|s| s.host == host)
            .unwrap_or_else(|| panic!("no connection to host {host}"))
    }

    pub fn all(&self) -> &[Systemd] {
        &self.hosts
    }

    /// [`Systemd::preflight`] on every host.
    pub async fn preflight(&self, what: &str, actions: &[&str]) -> Result<(), SystemdError> {
        for r in join_all(self.hosts.iter().map(|sd| sd.preflight(what, actions))).await {
            r?;
        }
        Ok(())
    }
}

/// Ends orch's own child processes still running: the SSH commands the
/// D-Bus library started for `unixexec` (it neither kills nor waits for them). An ssh
/// still connecting to a host that does not answer would otherwise outlive
/// orch and hold its stderr open, so whoever reads orch's output (Ansible,
/// CI) would wait for ssh's own TCP timeout instead of orch's bound.
pub fn end_children() {
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            continue;
        };
        if parent_of(&stat) == Some(me) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// The parent PID in a `/proc/PID/stat` line: `pid (comm) state ppid …`,
/// where comm may itself contain spaces and parentheses.
fn parent_of(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_is_read_after_the_last_parenthesis() {
        assert_eq!(parent_of("42 (ssh) S 7 42 42 0"), Some(7));
        assert_eq!(parent_of("42 (a) b (c) S 9 1"), Some(9));
        assert_eq!(parent_of("42 (ssh"), None);
    }

    #[test]
    fn a_local_host_is_reached_over_the_local_bus_and_files() {
        let access = Access {
            local_bus: Bus::User,
            systemd_socket: None,
            ssh_command: "ssh".into(),
            call_timeout: Duration::from_secs(1),
        };
        let local = Host {
            name: "local".into(),
            address: None,
        };
        let t = access.targets(&[&local]).unwrap();
        assert!(matches!(t[0].bus, Bus::User));
        assert!(matches!(t[0].store, Store::Local(_)));
        let remote = Host {
            name: "db".into(),
            address: Some("db.example.org".into()),
        };
        let empty_ssh = Access {
            ssh_command: " ".into(),
            ..access
        };
        let e = empty_ssh.targets(&[&remote]).unwrap_err();
        assert_eq!(e.host, "db");
        assert_eq!(e.to_string(), "the SSH command is empty");
    }
}

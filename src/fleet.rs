//! The hosts of a deployment: how each is reached (its bus and its file
//! store), and one systemd connection per host, all made at once.

use std::time::Duration;

use futures_util::future::join_all;

use crate::model::Host;
use crate::store::Store;
use crate::systemd::{Bus, Remote, Systemd, SystemdError};

/// How to reach one host.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub bus: Bus,
    pub store: Store,
}

impl Target {
    /// A host without an address is this machine, over `local_bus`; any
    /// other is reached with `ssh_command`.
    pub fn new(
        host: &Host,
        local_bus: &Bus,
        ssh_command: &str,
        timeout: Duration,
    ) -> Result<Target, String> {
        Ok(match &host.address {
            None => Target {
                name: host.name.clone(),
                bus: local_bus.clone(),
                store: Store::local(),
            },
            Some(a) => {
                let remote = Remote::parse(a, ssh_command)?;
                Target {
                    name: host.name.clone(),
                    bus: Bus::Remote(remote.clone()),
                    store: Store::ssh(remote, timeout),
                }
            }
        })
    }
}

/// The targets of `hosts`.
pub fn targets(
    hosts: &[&Host],
    local_bus: &Bus,
    ssh_command: &str,
    timeout: Duration,
) -> Result<Vec<Target>, String> {
    hosts
        .iter()
        .map(|h| Target::new(h, local_bus, ssh_command, timeout))
        .collect()
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
    pub async fn connect(targets: &[Target], timeout: Duration) -> Result<Fleet, SystemdError> {
        let hosts = Self::connect_each(targets, timeout)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Fleet { hosts })
    }

    /// Connects to every host it can; `Err` for those it cannot.
    pub async fn connect_each(
        targets: &[Target],
        timeout: Duration,
    ) -> Vec<Result<Systemd, SystemdError>> {
        join_all(
            targets
                .iter()
                .map(|t| Systemd::connect_host(&t.name, &t.bus, timeout)),
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

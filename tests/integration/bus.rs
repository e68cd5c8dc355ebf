//! The tests' own D-Bus client of the container's systemd: independent of
//! orch's boundary (whose proxies are private to `orch::systemd`), so a
//! test reads what systemd says, not what orch makes of it.

use std::time::Duration;

use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedObjectPath};

use crate::support::Container;

/// `(name, description, load, active, sub, following, path, job id, job type, job path)`
pub type UnitListEntry = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

/// `(id, unit, type, state, job path, unit path)` from `ListJobs`.
pub type JobListEntry = (
    u32,
    String,
    String,
    String,
    OwnedObjectPath,
    OwnedObjectPath,
);

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn get_unit_processes(&self, name: &str) -> zbus::Result<Vec<(String, u32, String)>>;
    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<UnitListEntry>>;
    fn get_unit_file_state(&self, file: &str) -> zbus::Result<String>;
    fn list_jobs(&self) -> zbus::Result<Vec<JobListEntry>>;
    #[zbus(signal)]
    fn reloading(&self, active: bool) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Unit {
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn wants(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn part_of(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn after(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn need_daemon_reload(&self) -> zbus::Result<bool>;
}

/// A connection to the container's systemd manager.
pub struct Bus {
    conn: Connection,
    pub manager: ManagerProxy<'static>,
}

impl Bus {
    /// A property reader for one unit, loading it if needed.
    pub async fn unit(&self, name: &str) -> zbus::Result<UnitProxy<'static>> {
        let path = self.manager.load_unit(name).await?;
        UnitProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
    }
}

pub async fn bus(c: &Container) -> Bus {
    let conn = zbus::conn::Builder::address(c.bus_address().as_str())
        .method_timeout(Duration::from_secs(10))
        .build()
        .await
        .expect("connect to the container's systemd");
    let manager = ManagerProxy::builder(&conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .expect("the manager's proxy");
    Bus { conn, manager }
}

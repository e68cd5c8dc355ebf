//! The D-Bus proxies of systemd's manager, units and services: private to
//! [`crate::systemd`], which turns their strings into typed states.

use zbus::OwnedObjectPath;

/// `(name, description, load, active, sub, following, path, job id, job type, job path)`
pub(super) type UnitListEntry = (
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
/// `(id, path, unit, type)` of a job systemd added to a transaction.
pub(super) type AffectedJob = (u32, OwnedObjectPath, String, OwnedObjectPath, String);
/// One command line of `ExecStart=`, `ExecReload=`, …: `(path, argv,
/// ignore-failure, start realtime, start monotonic, exit realtime, exit
/// monotonic, pid, code, status)`.
pub(super) type ExecCommand = (String, Vec<String>, bool, u64, u64, u64, u64, u32, i32, i32);
/// `(type, file, destination)` of a change to unit files.
pub(super) type UnitFileChange = (String, String, String);

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub(super) trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn reload(&self) -> zbus::Result<()>;
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Returns `(id, job, unit id, unit path, job type, affected jobs)`.
    #[allow(clippy::type_complexity)]
    fn enqueue_unit_job(
        &self,
        name: &str,
        job_type: &str,
        job_mode: &str,
    ) -> zbus::Result<(
        u32,
        OwnedObjectPath,
        String,
        OwnedObjectPath,
        String,
        Vec<AffectedJob>,
    )>;
    fn cancel_job(&self, id: u32) -> zbus::Result<()>;
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    fn get_unit_processes(&self, name: &str) -> zbus::Result<Vec<(String, u32, String)>>;
    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<UnitListEntry>>;
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<UnitFileChange>)>;
    fn disable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<UnitFileChange>>;
    fn mask_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<Vec<UnitFileChange>>;
    fn unmask_unit_files(&self, files: &[&str], runtime: bool)
        -> zbus::Result<Vec<UnitFileChange>>;
    fn get_unit_file_state(&self, file: &str) -> zbus::Result<String>;

    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    fn reloading(&self, active: bool) -> zbus::Result<()>;

    #[zbus(property)]
    fn system_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
pub(super) trait Unit {
    #[zbus(property)]
    fn id(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn fragment_path(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn wants(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn requires(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn binds_to(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn consists_of(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn part_of(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn after(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn need_daemon_reload(&self) -> zbus::Result<bool>;
    /// `(id, path)` of the unit's pending job; id 0 when there is none.
    #[zbus(property)]
    fn job(&self) -> zbus::Result<(u32, OwnedObjectPath)>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
pub(super) trait Service {
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn exec_main_code(&self) -> zbus::Result<i32>;
    #[zbus(property)]
    fn exec_main_status(&self) -> zbus::Result<i32>;
    #[zbus(property)]
    fn n_restarts(&self) -> zbus::Result<u32>;
    #[zbus(property, name = "Type")]
    fn service_type(&self) -> zbus::Result<String>;
    /// `ExecReload=`: one entry per command line, empty when there is none.
    #[zbus(property)]
    fn exec_reload(&self) -> zbus::Result<Vec<ExecCommand>>;
    /// When the main process was started (µs since the epoch; 0: never).
    #[zbus(property)]
    fn exec_main_start_timestamp(&self) -> zbus::Result<u64>;
    /// `TimeoutStopSec=` in µs; `u64::MAX`: none (infinity).
    #[zbus(property, name = "TimeoutStopUSec")]
    fn timeout_stop_usec(&self) -> zbus::Result<u64>;
}

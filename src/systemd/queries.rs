//! Typed queries: each takes its own call permit (see
//! [`super::MAX_PENDING_CALLS`]), reads what it needs of a unit and returns
//! systemd's answer typed. Callers above the boundary never hold a permit
//! nor a proxy.

use zbus::fdo::PropertiesProxy;
use zbus::names::InterfaceName;
use zbus::proxy::CacheProperties;
use zbus::OwnedObjectPath;

use super::{ActiveState, JobKind, JobMode, JobPath, LoadState, ServiceResult};
use super::{Systemd, SystemdError};

/// A job systemd accepted: its id and path, and the jobs it added to the
/// same transaction (a `PartOf=` cascade, `Wants=`) as `(id, path, unit)`.
#[derive(Debug, Clone)]
pub struct Enqueued {
    pub id: u32,
    pub job: JobPath,
    pub affected: Vec<(u32, JobPath, String)>,
}

/// One unit as `ListUnitsByPatterns` shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub load: LoadState,
    pub active: ActiveState,
    pub sub: String,
    path: OwnedObjectPath,
}

/// A unit's state and, for a service, how its last run ended; `None`
/// where systemd did not say.
#[derive(Debug, Clone, Default)]
pub struct UnitFacts {
    pub active: Option<ActiveState>,
    pub result: Option<ServiceResult>,
    pub exit_status: Option<i32>,
}

/// What `status` shows of a running unit; `None` where systemd did not say
/// (or does not account it).
#[derive(Debug, Clone, Default)]
pub struct UnitNumbers {
    pub main_pid: Option<u32>,
    pub restarts: Option<u32>,
    /// `StateChangeTimestamp`: µs since the epoch.
    pub changed_us: Option<u64>,
    pub memory: Option<u64>,
    pub cpu_nsec: Option<u64>,
    /// `ExecMainStartTimestamp`: µs since the epoch.
    pub started_us: Option<u64>,
}

/// Whether a unit runs, and when its main process last started.
#[derive(Debug, Clone, Copy)]
pub struct MainProcess {
    pub up: bool,
    /// `ExecMainStartTimestamp`: µs since the epoch; 0: never.
    pub started_us: u64,
}

/// The calls [`Systemd::numbers`] makes at once.
const PROPERTY_READS: u32 = 6;

/// A change systemd made to unit files (`enable`, `disable`).
#[derive(Debug, Clone)]
pub struct FileChange {
    pub kind: String,
    pub from: String,
    pub to: String,
}

impl Systemd {
    /// Enqueues `kind` for `unit`. A kind that [`JobKind::resets_failed`]
    /// clears the unit's failed state first, under the same permit.
    pub async fn enqueue(
        &self,
        unit: &str,
        kind: JobKind,
        mode: JobMode,
    ) -> Result<Enqueued, SystemdError> {
        let _call = self.permit().await;
        if kind.resets_failed() {
            if let Err(e) = self.manager.reset_failed_unit(unit).await {
                tracing::debug!(%unit, error = %e, "reset-failed");
            }
        }
        let (id, job, _, _, _, affected) = self
            .manager
            .enqueue_unit_job(unit, kind.dbus_name(), mode.dbus_name())
            .await
            .map_err(|e| self.err(format!("{} {unit}", kind.dbus_name()), e))?;
        Ok(Enqueued {
            id,
            job: JobPath(job),
            affected: affected
                .into_iter()
                .map(|(aid, p, u, _, _)| (aid, JobPath(p), u))
                .collect(),
        })
    }

    /// Cancels job `id`.
    pub async fn cancel_job(&self, id: u32) -> Result<(), SystemdError> {
        let _call = self.permit().await;
        self.manager
            .cancel_job(id)
            .await
            .map_err(|e| self.err(format!("cancel job {id}"), e))
    }

    /// SIGKILLs every process of `unit`: the hard stop after a grace period.
    pub async fn kill(&self, unit: &str) -> Result<(), SystemdError> {
        let _call = self.permit().await;
        self.manager
            .kill_unit(unit, "all", nix::sys::signal::Signal::SIGKILL as i32)
            .await
            .map_err(|e| self.err(format!("kill {unit}"), e))
    }

    /// The number of processes in `unit`'s control group. A unit systemd has
    /// unloaded has no control group: zero. `None` when it cannot be read.
    pub async fn processes(&self, unit: &str) -> Option<usize> {
        let _call = self.permit().await;
        match self.manager.get_unit_processes(unit).await {
            Ok(p) => Some(p.len()),
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
            {
                Some(0)
            }
            Err(e) => {
                tracing::warn!(%unit, host = %self.host, error = %e, "cannot list processes");
                None
            }
        }
    }

    /// The units of `units` systemd has loaded, in one call
    /// (`ListUnitsByPatterns`); one it does not list is not loaded.
    pub async fn list(&self, units: &[&str]) -> Result<Vec<Listed>, SystemdError> {
        let listed = {
            let _call = self.permit().await;
            self.manager
                .list_units_by_patterns(&[], units)
                .await
                .map_err(|e| self.err("list units", e))?
        };
        Ok(listed
            .into_iter()
            .map(|e| Listed {
                name: e.0,
                load: LoadState::from_dbus(&e.2),
                active: ActiveState::from_dbus(&e.3),
                sub: e.4,
                path: e.6,
            })
            .collect())
    }

    /// The ActiveState of each of `units` in one call; a unit systemd does
    /// not list is inactive.
    pub async fn active_states(&self, units: &[String]) -> Result<Vec<ActiveState>, SystemdError> {
        let patterns: Vec<&str> = units.iter().map(String::as_str).collect();
        let listed = self.list(&patterns).await?;
        Ok(units
            .iter()
            .map(|u| {
                listed
                    .iter()
                    .find(|e| &e.name == u)
                    .map_or(ActiveState::Inactive, |e| e.active.clone())
            })
            .collect())
    }

    /// The unit's ActiveState (None when it cannot be read).
    pub async fn active_state(&self, unit: &str) -> Option<ActiveState> {
        let _call = self.permit().await;
        let s = self.unit(unit).await.ok()?.active_state().await.ok()?;
        Some(ActiveState::from_dbus(&s))
    }

    /// The unit's LoadState, loading it (a masked unit systemd let go of
    /// shows as masked, not as not-found).
    pub async fn load_state(&self, unit: &str) -> Result<LoadState, SystemdError> {
        let _call = self.permit().await;
        let load = self
            .unit(unit)
            .await?
            .load_state()
            .await
            .map_err(|e| self.err(format!("read {unit}"), e))?;
        Ok(LoadState::from_dbus(&load))
    }

    /// Whether `unit` has no pending job and is not between two states
    /// (true when it cannot be read: there is nothing to wait for).
    pub async fn settled(&self, unit: &str) -> bool {
        let _call = self.permit().await;
        match self.unit(unit).await {
            Ok(u) => {
                let job = u.job().await.map(|j| j.0).unwrap_or(0);
                let state = u.active_state().await.unwrap_or_default();
                job == 0 && !ActiveState::from_dbus(&state).is_transitional()
            }
            Err(_) => true,
        }
    }

    /// `NRestarts` of a service (None for other unit types or on error).
    pub async fn restarts(&self, unit: &str) -> Option<u32> {
        let _call = self.permit().await;
        let path = self.manager.load_unit(unit).await.ok()?;
        self.service_at(path).await.ok()?.n_restarts().await.ok()
    }

    /// The `Result` of service `unit` (`None` for another unit type or when
    /// it cannot be read).
    pub async fn service_result(&self, unit: &str) -> Option<ServiceResult> {
        let _call = self.permit().await;
        let path = self.manager.load_unit(unit).await.ok()?;
        let r = self.service_at(path).await.ok()?.result().await.ok()?;
        Some(ServiceResult::from_dbus(&r))
    }

    /// The service's own `TimeoutStopSec=` as systemd loaded it; `None`
    /// when it has none (infinity) or the unit cannot be loaded.
    pub async fn stop_timeout(&self, unit: &str) -> Option<std::time::Duration> {
        let _call = self.permit().await;
        let path = self.manager.load_unit(unit).await.ok()?;
        let us = self
            .service_at(path)
            .await
            .ok()?
            .timeout_stop_usec()
            .await
            .ok()?;
        (us != u64::MAX).then(|| std::time::Duration::from_micros(us))
    }

    /// The unit's ActiveState and its service's `Result` and exit status,
    /// in one load; `None` when the unit cannot be loaded.
    pub async fn facts(&self, unit: &str) -> Option<UnitFacts> {
        let _call = self.permit().await;
        let mut f = UnitFacts::default();
        let path = self.manager.load_unit(unit).await.ok()?;
        if let Ok(u) = self.unit_at(path.clone()).await {
            f.active = u
                .active_state()
                .await
                .ok()
                .map(|s| ActiveState::from_dbus(&s));
        }
        if let Ok(s) = self.service_at(path).await {
            f.result = s.result().await.ok().map(|r| ServiceResult::from_dbus(&r));
            f.exit_status = s.exec_main_status().await.ok();
        }
        Some(f)
    }

    /// Whether systemd can reload the service `unit`: it has `ExecReload=`,
    /// or is `Type=notify-reload` (reloaded with a signal).
    pub async fn reloadable(&self, unit: &str) -> Result<bool, SystemdError> {
        let _call = self.permit().await;
        let path = self
            .manager
            .load_unit(unit)
            .await
            .map_err(|e| self.err(format!("load {unit}"), e))?;
        let svc = self.service_at(path).await?;
        let what = || format!("read ExecReload of {unit}");
        let exec = svc.exec_reload().await.map_err(|e| self.err(what(), e))?;
        let notify = svc.service_type().await.map_err(|e| self.err(what(), e))? == "notify-reload";
        Ok(!exec.is_empty() || notify)
    }

    /// Whether `unit` runs, and when its main process last started (µs
    /// since the epoch on its host; 0: never; systemd keeps the time after
    /// the process ended).
    pub async fn main_process(&self, unit: &str) -> Result<MainProcess, SystemdError> {
        let _call = self.permit().await;
        let what = || format!("read the start time of {unit}");
        let path = self
            .manager
            .load_unit(unit)
            .await
            .map_err(|e| self.err(what(), e))?;
        let state = self.unit_at(path.clone()).await?.active_state().await;
        let up = ActiveState::from_dbus(&state.map_err(|e| self.err(what(), e))?).is_up();
        let svc = self.service_at(path).await?;
        let started_us = svc
            .exec_main_start_timestamp()
            .await
            .map_err(|e| self.err(what(), e))?;
        Ok(MainProcess { up, started_us })
    }

    /// The units `unit` requires or is bound to (`Requires=`, `BindsTo=`);
    /// empty when it cannot be read.
    pub async fn requirements(&self, unit: &str) -> Vec<String> {
        let _call = self.permit().await;
        let Ok(u) = self.unit(unit).await else {
            return Vec::new();
        };
        let mut v = u.requires().await.unwrap_or_default();
        v.extend(u.binds_to().await.unwrap_or_default());
        v
    }

    /// The units `unit` consists of (`ConsistsOf=`, the other side of
    /// `PartOf=`); empty when it cannot be read.
    pub async fn consists_of(&self, unit: &str) -> Vec<String> {
        let _call = self.permit().await;
        match self.unit(unit).await {
            Ok(u) => u.consists_of().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// MainPID, NRestarts, StateChangeTimestamp, MemoryCurrent,
    /// CPUUsageNSec and ExecMainStartTimestamp of a listed unit, read
    /// concurrently under a permit for each of the [`PROPERTY_READS`].
    pub async fn numbers(&self, unit: &Listed) -> UnitNumbers {
        let _calls = self.permits(PROPERTY_READS).await;
        let Ok(props) = PropertiesProxy::builder(&self.conn)
            .destination("org.freedesktop.systemd1")
            .path(unit.path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
        else {
            return UnitNumbers::default();
        };
        let service = InterfaceName::from_static_str_unchecked("org.freedesktop.systemd1.Service");
        let unit = InterfaceName::from_static_str_unchecked("org.freedesktop.systemd1.Unit");
        let (pid, restarts, changed, memory, cpu, started) = tokio::join!(
            props.get(service.clone(), "MainPID"),
            props.get(service.clone(), "NRestarts"),
            props.get(unit, "StateChangeTimestamp"),
            props.get(service.clone(), "MemoryCurrent"),
            props.get(service.clone(), "CPUUsageNSec"),
            props.get(service, "ExecMainStartTimestamp"),
        );
        UnitNumbers {
            main_pid: number(pid),
            restarts: number(restarts),
            changed_us: number(changed),
            memory: accounted(number(memory)),
            cpu_nsec: accounted(number(cpu)),
            started_us: number(started),
        }
    }

    /// Enables unit `files` (their `[Install]` links); the changes made.
    pub async fn enable(&self, files: &[&str]) -> Result<Vec<FileChange>, SystemdError> {
        let (_, changes) = self
            .manager
            .enable_unit_files(files, false, false)
            .await
            .map_err(|e| self.err(format!("enable {}", files.join(", ")), e))?;
        Ok(changes.into_iter().map(file_change).collect())
    }

    /// Disables unit `files`; the changes made.
    pub async fn disable(&self, files: &[&str]) -> Result<Vec<FileChange>, SystemdError> {
        let changes = self
            .manager
            .disable_unit_files(files, false)
            .await
            .map_err(|e| self.err(format!("disable {}", files.join(", ")), e))?;
        Ok(changes.into_iter().map(file_change).collect())
    }
}

fn file_change((kind, from, to): (String, String, String)) -> FileChange {
    FileChange { kind, from, to }
}

/// A property's value as the number it is, or `None`.
fn number<T: TryFrom<V>, V, E>(v: Result<V, E>) -> Option<T> {
    v.ok().and_then(|v| T::try_from(v).ok())
}

/// systemd's "not accounted" (`[not set]`, u64::MAX) as `None`.
fn accounted(v: Option<u64>) -> Option<u64> {
    v.filter(|n| *n != u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaccounted_is_none() {
        assert_eq!(accounted(Some(u64::MAX)), None);
        assert_eq!(accounted(Some(0)), Some(0));
    }
}

//! `start`, `stop`, `restart`, `reload`: which units, on which hosts,
//! refused during maintenance (or, for a reload, without `ExecReload=`), and
//! what a Ctrl+C does to the jobs already in systemd.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::changes::{Need, Running};
use crate::error::{Error, UsageError};
use crate::fleet::{Access, Fleet, Target};
use crate::jobs::ActiveState;
use crate::lifecycle::{self, Engine, Member, Observer, Op, Summary};
use crate::model::{Deployment, Role};
use crate::store::Store;
use crate::systemd::{Systemd, SystemdError};

/// `reload` of units systemd cannot reload (no `ExecReload=`, not
/// `Type=notify-reload`): refused before any job is sent (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("cannot reload {}: no ExecReload= in the unit; set exec_reload for it in the configuration and run orch install, or pass --or-restart to restart it instead", self.summary())]
pub struct NotReloadable {
    pub units: Vec<String>,
    /// Per unit: its worker kind, or its role (master, dependent).
    pub kinds: Vec<String>,
}

impl NotReloadable {
    /// A few units by name; many as a count per kind and the first few
    /// (61 names would wrap over a dozen lines).
    fn summary(&self) -> String {
        const NAMED: usize = 3;
        if self.units.len() <= NAMED + 1 {
            return self.units.join(", ");
        }
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for k in &self.kinds {
            match counts.iter_mut().find(|(name, _)| name == k) {
                Some((_, n)) => *n += 1,
                None => counts.push((k, 1)),
            }
        }
        let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!(
            "{} units ({}): {} and {} more",
            self.units.len(),
            counts.join(", "),
            self.units[..NAMED].join(", "),
            self.units.len() - NAMED
        )
    }
}

/// What the operator named.
#[derive(Debug, Clone)]
pub enum Selection {
    /// `--all`.
    All,
    /// Unit names, worker kinds, or master / workers / dependents / database.
    Targets(Vec<String>),
}

/// The units `op` acts on. `--all` is every unit except, for `stop`, the
/// database and the prerequisites: other services may use them, and
/// stopping the database is maintenance's decision (`stop-for-maintenance
/// --include-database`). Named, they are acted on.
pub fn members(d: &Deployment, op: Op, selection: &Selection) -> Result<Vec<Member>, UsageError> {
    let needed = |m: &Member| matches!(m.role, Role::Database | Role::Prerequisite);
    match selection {
        Selection::All => Ok(lifecycle::members(d)
            .into_iter()
            .filter(|m| !needed(m) || matches!(op, Op::Start | Op::Restart))
            .collect()),
        Selection::Targets(t) => lifecycle::select(d, t).map_err(UsageError::from),
    }
}

/// How the operation ended.
#[derive(Debug)]
pub enum Outcome {
    Done(Summary),
    /// A signal came while connecting: nothing was enqueued.
    NotStarted,
}

/// One lifecycle operation, resolved: its units and the hosts they are on.
pub struct Job<'a> {
    d: &'a Deployment,
    access: &'a Access,
    op: Op,
    all: bool,
    members: Vec<Member>,
    targets: Vec<Target>,
    home: Store,
}

/// What the operator asked for besides the units.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub opts: lifecycle::Options,
    /// On a signal, cancel the jobs orch enqueued that are not finished.
    pub cancel_on_interrupt: bool,
    /// Start or restart even though the deployment is in maintenance.
    pub force: bool,
    /// `restart --changed`: only the units whose file changed since they started.
    pub changed: bool,
}

impl<'a> Job<'a> {
    pub fn new(
        d: &'a Deployment,
        access: &'a Access,
        op: Op,
        selection: &Selection,
    ) -> Result<Job<'a>, Error> {
        let members = members(d, op, selection)?;
        let targets = access
            .used(d)?
            .into_iter()
            .filter(|t| members.iter().any(|m| m.host == t.name))
            .collect();
        Ok(Job {
            d,
            access,
            op,
            all: matches!(selection, Selection::All),
            members,
            home: access.home(d)?,
            targets,
        })
    }

    /// The units, in start order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Runs the operation until it ends or SIGINT/SIGTERM comes. A signal
    /// drops the run, so every wait in it ends at once; the summary then
    /// says where each unit was.
    pub fn run(&self, req: Request, observer: Arc<dyn Observer>) -> Result<Outcome, Error> {
        super::runtime()?.block_on(async {
            // Installed before anything else so an early Ctrl+C is ours, not the default kill.
            let mut sigint = handler(SignalKind::interrupt(), "SIGINT")?;
            let mut sigterm = handler(SignalKind::terminate(), "SIGTERM")?;
            // The lock (taken in `connect`) is held to the end of the run.
            let (fleet, engine, members, _lock) = tokio::select! {
                r = self.connect(&req, observer) => r?,
                _ = sigint.recv() => return Ok(Outcome::NotStarted),
                _ = sigterm.recv() => return Ok(Outcome::NotStarted),
            };
            // --changed is a whole-deployment operation: the master alone.
            let all = self.all || req.changed;
            {
                let run = engine.run(self.op, &members, all);
                tokio::pin!(run);
                tokio::select! {
                    s = &mut run => return Ok(Outcome::Done(s)),
                    _ = sigint.recv() => {}
                    _ = sigterm.recv() => {}
                }
            }
            let mut s = engine.summary(self.op, &members, Vec::new(), true);
            if req.cancel_on_interrupt {
                cancel(&fleet, &engine, &mut s).await;
            }
            Ok(Outcome::Done(s))
        })
    }

    /// Connects (first, so an unreachable host is named as such, not as a
    /// failure to read the journal on it), refuses during maintenance,
    /// checks polkit, and starts the engine's job watchers. Returns the
    /// units to act on (with `--changed`, the changed ones).
    async fn connect(
        &self,
        req: &Request,
        observer: Arc<dyn Observer>,
    ) -> Result<(Fleet, Engine, Vec<Member>, crate::store::Lock), Error> {
        let fleet = self.access.connect(&self.targets).await?;
        let what = format!("{:?} units of {}", self.op, self.d.name).to_lowercase();
        fleet
            .preflight(&what, &[crate::systemd::actions::MANAGE_UNITS])
            .await?;
        // After the preflight (a caller systemd refuses hears so first), held
        // to the end of the run: a second operator's resume or install waits
        // for it, and it for theirs (a maintenance's `-- CMD` runs orch with
        // the holder's token, under its lock).
        let wait = crate::lock::wait();
        let lock = crate::maintenance::lock_within(self.d, &self.home, wait).await?;
        // All but the database is stopped and masked in maintenance: a reload
        // would fail, a reload-or-restart would start units. The database is
        // never masked: the operator starts and stops it through orch then
        // (a restore into a new cluster).
        // Nor are the prerequisites, which are not the deployment's.
        let only_database = self
            .members
            .iter()
            .all(|m| matches!(m.role, Role::Database | Role::Prerequisite));
        let refused = matches!(self.op, Op::Start | Op::Restart | Op::Reload);
        if refused && !req.force && !only_database {
            crate::maintenance::refuse_if_in_maintenance(self.d, &self.home).await?;
        }
        if self.op == Op::Reload && !req.opts.or_restart {
            let units = not_reloadable(&fleet, &self.members).await?;
            if !units.is_empty() {
                let kinds = units
                    .iter()
                    .map(|u| {
                        let m = self.members.iter().find(|m| &m.unit == u);
                        m.and_then(|m| {
                            m.kind
                                .clone()
                                .or_else(|| Some(format!("{:?}", m.role).to_lowercase()))
                        })
                        .unwrap_or_default()
                    })
                    .collect();
                return Err(UsageError::from(NotReloadable { units, kinds }).into());
            }
        }
        let members = match req.changed {
            true => self.changed(&fleet).await?,
            false => self.members.clone(),
        };
        // A reload reaches the running container, but `--or-restart` and a
        // unit that died since make new ones: the image must be there.
        if matches!(self.op, Op::Start | Op::Restart | Op::Reload) {
            let units: Vec<&str> = members.iter().map(|m| m.unit.as_str()).collect();
            let remote = |h: &str| fleet.get(h).remote().cloned();
            crate::containers::check_images(self.d, &units, remote).await?;
        }
        let engine = Engine::new(&fleet, req.opts.clone(), observer).await?;
        Ok((fleet, engine, members, lock))
    }

    /// The master and workers whose running process started before the
    /// last restart-worthy change install recorded for them (the restart
    /// record, [`crate::changes`]), plus the units install created that
    /// never ran since when the master runs (a new worker of a running
    /// deployment). A change of wiring only (a new kind's `Wants=` in the
    /// master) is not recorded, so it restarts nothing. The database and
    /// dependents are not orch's files, so never "changed".
    async fn changed(&self, fleet: &Fleet) -> Result<Vec<Member>, Error> {
        let record = crate::changes::read(self.d, &self.home).await?;
        let ours: Vec<&Member> = self
            .members
            .iter()
            .filter(|m| matches!(m.role, Role::Master | Role::Worker))
            .collect();
        let now = join_all(ours.iter().map(|m| running(fleet.get(&m.host), &m.unit)));
        let now = now.await.into_iter().collect::<Result<Vec<_>, _>>()?;
        let master_up = ours
            .iter()
            .zip(&now)
            .any(|(m, r)| m.role == Role::Master && r.up);
        let changed = ours.iter().zip(&now).filter(|(m, r)| {
            let need = record.need(&m.unit, **r);
            tracing::debug!(unit = %m.unit, ?need, started_us = r.started_us, "restart record");
            match need {
                Need::Restart => true,
                Need::Start => master_up,
                Need::Nothing => false,
            }
        });
        Ok(changed.map(|(m, _)| (*m).clone()).collect())
    }
}

/// The services of `members` that systemd could not reload, read at once
/// (each call under a permit). The database and prerequisites are never
/// reloaded; a unit of another type is left for systemd to judge.
async fn not_reloadable(fleet: &Fleet, members: &[Member]) -> Result<Vec<String>, SystemdError> {
    let checks = members
        .iter()
        .filter(|m| !matches!(m.role, Role::Database | Role::Prerequisite))
        .filter(|m| m.unit.ends_with(".service"))
        .map(|m| async move {
            let sd = fleet.get(&m.host);
            let _call = sd.permit().await;
            let path = sd
                .manager
                .load_unit(&m.unit)
                .await
                .map_err(|e| sd.err(format!("load {}", m.unit), e))?;
            let svc = sd.service_at(path).await?;
            let what = || format!("read ExecReload of {}", m.unit);
            let exec = svc.exec_reload().await.map_err(|e| sd.err(what(), e))?;
            // notify-reload: systemd reloads with a signal, no ExecReload= needed.
            let notify =
                svc.service_type().await.map_err(|e| sd.err(what(), e))? == "notify-reload";
            Ok::<_, SystemdError>((exec.is_empty() && !notify).then(|| m.unit.clone()))
        });
    let found = futures_util::future::join_all(checks).await;
    found.into_iter().filter_map(Result::transpose).collect()
}

/// Whether `unit` runs and when its main process last started (0: never;
/// systemd keeps the time after the process ended).
pub(crate) async fn running(sd: &Systemd, unit: &str) -> Result<Running, SystemdError> {
    let _call = sd.permit().await;
    let what = || format!("read the start time of {unit}");
    let path = sd
        .manager
        .load_unit(unit)
        .await
        .map_err(|e| sd.err(what(), e))?;
    let state = sd.unit_at(path.clone()).await?.active_state().await;
    let up = ActiveState::from_dbus(&state.map_err(|e| sd.err(what(), e))?).is_up();
    let svc = sd.service_at(path).await?;
    let started_us = svc
        .exec_main_start_timestamp()
        .await
        .map_err(|e| sd.err(what(), e))?;
    Ok(Running { up, started_us })
}

pub(crate) fn handler(kind: SignalKind, name: &'static str) -> Result<Signal, Error> {
    signal(kind).map_err(|cause| Error::Signal {
        signal: name,
        cause,
    })
}

/// Cancels the jobs still in flight, bounded so that orch still exits
/// within a second of the signal, and says so in the summary.
async fn cancel(fleet: &Fleet, engine: &Engine, s: &mut Summary) {
    let jobs = engine.inflight().jobs();
    let cancels = futures_util::future::join_all(jobs.iter().map(|(host, id, _)| {
        let sd = fleet.get(host);
        async move {
            let _call = sd.permit().await;
            sd.manager.cancel_job(*id).await
        }
    }));
    let _ = tokio::time::timeout(Duration::from_millis(500), cancels).await;
    mark_canceled(&mut s.running_jobs);
}

fn mark_canceled(running_jobs: &mut [String]) {
    for j in running_jobs {
        j.push_str(", canceled");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;

    fn deployment() -> Deployment {
        let text = r#"
[deployment]
name = "syn"
unit_dir = "/tmp/orch-unit-test"
[database]
unit = "postgresql.service"
[[prerequisites]]
unit = "redis"
[master]
exec_start = "/bin/true"
[[workers]]
kind = "generic"
count = 2
exec_start = "/bin/true"
[[dependents]]
unit = "bridge.service"
"#;
        let source = Source {
            path: "t.toml".into(),
            text: text.into(),
        };
        Deployment::from_source(&source, None).expect("valid configuration")
    }

    fn roles(members: &[Member]) -> Vec<Role> {
        members.iter().map(|m| m.role).collect()
    }

    #[test]
    fn many_units_without_exec_reload_are_summarised() {
        let units: Vec<String> = (0..60)
            .map(|i| format!("fx-worker-{i}-generic.service"))
            .chain(["fx.service".to_string()])
            .collect();
        let mut kinds = vec!["generic".to_string(); 60];
        kinds.push("master".into());
        let e = NotReloadable { units, kinds }.to_string();
        assert!(
            e.starts_with("cannot reload 61 units (generic 60, master 1): fx-worker-0-generic.service, fx-worker-1-generic.service, fx-worker-2-generic.service and 58 more: no ExecReload="),
            "{e}"
        );
        let few = NotReloadable {
            units: vec!["a.service".into(), "b.service".into()],
            kinds: vec!["pusher".into(), "pusher".into()],
        };
        assert!(few
            .to_string()
            .starts_with("cannot reload a.service, b.service: "));
    }

    #[test]
    fn all_never_stops_the_database_nor_a_prerequisite() {
        let d = deployment();
        let stop = members(&d, Op::Stop, &Selection::All).unwrap();
        assert!(!roles(&stop).contains(&Role::Database), "{stop:?}");
        assert!(!roles(&stop).contains(&Role::Prerequisite), "{stop:?}");
        assert_eq!(stop.len(), 4, "master, two workers, the dependent");
    }

    #[test]
    fn all_starts_and_restarts_every_unit_from_the_database() {
        let d = deployment();
        for op in [Op::Start, Op::Restart] {
            let m = members(&d, op, &Selection::All).unwrap();
            assert_eq!(
                roles(&m),
                [
                    Role::Database,
                    Role::Prerequisite,
                    Role::Master,
                    Role::Worker,
                    Role::Worker,
                    Role::Dependent
                ],
                "{op:?}"
            );
        }
    }

    #[test]
    fn a_named_database_or_prerequisite_is_stopped() {
        let d = deployment();
        let m = members(&d, Op::Stop, &Selection::Targets(vec!["database".into()])).unwrap();
        assert_eq!(roles(&m), [Role::Database]);
        let t = Selection::Targets(vec!["prerequisites".into()]);
        let m = members(&d, Op::Stop, &t).unwrap();
        assert_eq!(
            m.iter().map(|m| m.unit.as_str()).collect::<Vec<_>>(),
            ["redis.service"]
        );
    }

    #[test]
    fn an_unknown_target_is_a_usage_error() {
        let d = deployment();
        let e = members(&d, Op::Start, &Selection::Targets(vec!["nope".into()])).unwrap_err();
        assert!(matches!(e, UsageError::Target(_)));
        assert!(e.to_string().starts_with("`nope` is not a unit"), "{e}");
    }

    #[test]
    fn canceled_jobs_say_so() {
        let mut jobs = vec!["x.service start running".to_string()];
        mark_canceled(&mut jobs);
        assert_eq!(jobs, ["x.service start running, canceled"]);
    }
}

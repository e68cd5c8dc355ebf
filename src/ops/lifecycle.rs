//! `start`, `stop`, `restart`, `reload`: which units, on which hosts,
//! refused during maintenance (or, for a reload, without `ExecReload=`), and
//! what a Ctrl+C does to the jobs already in systemd.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::changes::{Need, Running};
use crate::error::{Error, UsageError};
use crate::fleet::{Access, Fleet, HostAccess};
use crate::lifecycle::{self, Engine, Observer, Summary};
use crate::members::{Member, Selection};
use crate::model::{Deployment, Role};
use crate::op::{NotReloadable, Op};
use crate::store::Store;
use crate::systemd::{Systemd, SystemdError};

/// The units `op` acts on: with `--all`, what [`Op::all_units`] covers;
/// named, they are acted on.
pub fn members(d: &Deployment, op: Op, selection: &Selection) -> Result<Vec<Member>, UsageError> {
    selection
        .resolve(d, op.all_units())
        .map_err(UsageError::from)
}

/// How the operation ended.
#[derive(Debug)]
pub enum Outcome {
    Done(Summary),
    /// A signal came while connecting: nothing was enqueued.
    NotStarted,
}

/// What the operator asked of a lifecycle verb, typed: the one request a
/// command builds from its flags, passed down as it is.
#[derive(Debug, Clone)]
pub struct Request {
    pub op: Op,
    /// The units; `--changed` takes the whole deployment whatever this says.
    pub selection: Selection,
    pub opts: lifecycle::Options,
    /// On a signal, cancel the jobs orch enqueued that are not finished.
    pub cancel_on_interrupt: bool,
    /// Start or restart even though the deployment is in maintenance.
    pub force: bool,
    /// `restart --changed`: only the units whose file changed since they started.
    pub changed: bool,
}

impl Request {
    /// `op` on `selection`, every other flag at its default.
    pub fn new(op: Op, selection: Selection) -> Request {
        Request {
            op,
            selection,
            opts: lifecycle::Options::default(),
            cancel_on_interrupt: false,
            force: false,
            changed: false,
        }
    }

    /// `restart --changed` of the whole deployment, every other flag at its
    /// default: what `install --restart-changed` and `rollback
    /// --restart-changed` run once the files are in place.
    pub fn restart_changed() -> Request {
        Request {
            changed: true,
            ..Request::new(Op::Restart, Selection::All)
        }
    }

    /// The units asked for: `--changed` is a whole-deployment operation.
    fn selection(&self) -> &Selection {
        match self.changed {
            true => &Selection::All,
            false => &self.selection,
        }
    }
}

/// How a command shows a lifecycle operation while it runs.
pub trait Show {
    /// The display of `op` about to run on `members` (in start order):
    /// live on a terminal, plain lines or JSON events otherwise.
    fn observer(&self, op: Op, rolling: Option<usize>, members: &[Member]) -> Arc<dyn Observer>;
}

/// Runs one lifecycle operation: resolves its units and hosts, shows it
/// through `show`, and returns how it ended (the display cleared).
pub fn run(
    d: &Deployment,
    access: &Access,
    req: Request,
    show: &dyn Show,
) -> Result<Outcome, Error> {
    let operation = Operation::new(d, access, &req)?;
    let observer = show.observer(req.op, req.opts.rolling, operation.members());
    let outcome = operation.run(req, observer.clone());
    observer.finish();
    outcome
}

/// One lifecycle operation, resolved: its units and the hosts they are on.
pub struct Operation<'a> {
    d: &'a Deployment,
    access: &'a Access,
    op: Op,
    all: bool,
    members: Vec<Member>,
    targets: Vec<HostAccess>,
    state_store: Store,
}

impl<'a> Operation<'a> {
    pub fn new(
        d: &'a Deployment,
        access: &'a Access,
        req: &Request,
    ) -> Result<Operation<'a>, Error> {
        let selection = req.selection();
        let members = members(d, req.op, selection)?;
        let targets = access
            .used(d)?
            .into_iter()
            .filter(|t| members.iter().any(|m| m.host == t.name))
            .collect();
        Ok(Operation {
            d,
            access,
            op: req.op,
            all: matches!(selection, Selection::All),
            members,
            state_store: access.state_store(d)?,
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
            {
                let run = engine.run(self.op, &members, self.all);
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
        let wait = crate::state::holder::wait();
        let lock = crate::state::lock_within(self.d, &self.state_store, wait).await?;
        // All but the database is stopped and masked in maintenance: a reload
        // would fail, a reload-or-restart would start units. The database is
        // never masked: the operator starts and stops it through orch then
        // (a restore into a new cluster).
        // Nor are the prerequisites, which are not the deployment's.
        let only_database = self
            .members
            .iter()
            .all(|m| matches!(m.role, Role::Database | Role::Prerequisite));
        let refused = self.op.refused_in_maintenance();
        if refused && !req.force && !only_database {
            crate::state::refuse_if_in_maintenance(self.d, &self.state_store).await?;
        }
        if self.op.needs_reload_support() && !req.opts.or_restart {
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
        if self.op.needs_images() {
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
        let record = crate::changes::read(self.d, &self.state_store).await?;
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
            let reloadable = fleet.get(&m.host).reloadable(&m.unit).await?;
            Ok::<_, SystemdError>((!reloadable).then(|| m.unit.clone()))
        });
    let found = futures_util::future::join_all(checks).await;
    found.into_iter().filter_map(Result::transpose).collect()
}

/// Whether `unit` runs and when its main process last started (0: never;
/// systemd keeps the time after the process ended).
pub(crate) async fn running(sd: &Systemd, unit: &str) -> Result<Running, SystemdError> {
    let p = sd.main_process(unit).await?;
    Ok(Running {
        up: p.up,
        started_us: p.started_us,
    })
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
        async move { sd.cancel_job(*id).await }
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
        let m = members(&d, Op::Stop, &Selection::Named(vec!["database".into()])).unwrap();
        assert_eq!(roles(&m), [Role::Database]);
        let t = Selection::Named(vec!["prerequisites".into()]);
        let m = members(&d, Op::Stop, &t).unwrap();
        assert_eq!(
            m.iter().map(|m| m.unit.as_str()).collect::<Vec<_>>(),
            ["redis.service"]
        );
    }

    #[test]
    fn an_unknown_target_is_a_usage_error() {
        let d = deployment();
        let e = members(&d, Op::Start, &Selection::Named(vec!["nope".into()])).unwrap_err();
        assert!(matches!(e, UsageError::Target(_)));
        assert!(e.to_string().starts_with("`nope` is not a unit"), "{e}");
    }

    #[test]
    fn changed_is_the_whole_deployment_whatever_was_named() {
        let d = deployment();
        let mut req = Request::new(Op::Restart, Selection::Named(vec!["master".into()]));
        assert_eq!(members(&d, req.op, req.selection()).unwrap().len(), 1);
        req.changed = true;
        let whole = members(&d, req.op, req.selection()).unwrap();
        assert_eq!(whole.len(), 6, "{whole:?}");
        // What install and rollback chain: every other flag at its default.
        let chained = Request::restart_changed();
        assert!(chained.changed && chained.op == Op::Restart);
        assert!(!chained.force && !chained.cancel_on_interrupt);
        assert!(chained.opts.rolling.is_none() && chained.opts.timeout.is_none());
    }

    #[test]
    fn canceled_jobs_say_so() {
        let mut jobs = vec!["x.service start running".to_string()];
        mark_canceled(&mut jobs);
        assert_eq!(jobs, ["x.service start running, canceled"]);
    }
}

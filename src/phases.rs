//! The order of an operation, defined once: a pure function from the
//! operation, its units and its shape to a list of steps. Nothing here
//! talks to systemd, so the order is unit-tested on its own.
//!
//! Start: database (started if needed, never restarted) → master → workers
//! and dependents. Stop: dependents → workers → master (→ a database named
//! on the command line), so nothing loses what it depends on while it
//! still runs. Maintenance stops in that same order ([`stop_order`]). A
//! restart makes sure of the database *before* it stops anything: what
//! cannot be brought back is not taken down. A reload is one phase (see
//! [`reload`]); the database is never reloaded.

use std::time::Duration;

use crate::members::Member;
use crate::model::Role;
use crate::op::Op;
use crate::systemd::{JobKind, JobMode};

/// One step of an operation.
#[derive(Debug, Clone)]
pub enum Step {
    /// Start what is not active, then await readiness (the database).
    EnsureRunning(Vec<Member>),
    /// Restart the canaries, await readiness, then watch them for `hold`
    /// (still active, same process, no restart by `Restart=`, probe still
    /// passing) before the rest of the rollout.
    Canary {
        members: Vec<Member>,
        hold: Duration,
    },
    /// A rolling batch just restarted and ready, watched for `hold` as a
    /// canary is (see [`Shape::settle`]) before the next batch is stopped.
    Settle {
        members: Vec<Member>,
        hold: Duration,
    },
    /// The same job for every member, enqueued at once.
    Jobs {
        members: Vec<Member>,
        kind: JobKind,
        mode: JobMode,
    },
}

impl Step {
    pub fn members(&self) -> &[Member] {
        match self {
            Step::EnsureRunning(m)
            | Step::Jobs { members: m, .. }
            | Step::Canary { members: m, .. }
            | Step::Settle { members: m, .. } => m,
        }
    }
}

/// How an operation was asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    /// `--all` (or resume): the master is started alone, see [`master_mode`].
    pub all: bool,
    /// `--rolling --batch N`.
    pub rolling: Option<usize>,
    /// `reload --or-restart`.
    pub or_restart: bool,
    /// `restart --rolling --canary [N] --hold D`.
    pub canary: Option<Canary>,
    /// `restart --rolling --settle D`: each batch of workers that have twins
    /// (the canaries included) stays ready and watched for D before the
    /// next batch is stopped. While a batch was down, a proxy sent its
    /// requests to the next batch's workers; stopping those the moment the
    /// first batch passes its probe cuts the requests they still serve
    /// (a 502 behind nginx). Kubernetes calls it `minReadySeconds`.
    pub settle: Option<Duration>,
    /// In a rolling restart, a worker with no twin requires the master
    /// (`Requires=`/`BindsTo=` as systemd has it): the outage window then
    /// restarts the master first, and those workers once it is ready.
    pub master_first: bool,
}

/// `--canary [N] --hold D`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canary {
    /// Workers to restart first; `None`: one of each kind that has twins.
    pub count: Option<usize>,
    pub hold: Duration,
}

/// The roles in the order they stop. A prerequisite or the database is
/// only among the members when named (or in maintenance, the database).
const STOP_ROLES: [Role; 5] = [
    Role::Dependent,
    Role::Worker,
    Role::Master,
    Role::Prerequisite,
    Role::Database,
];

fn with_role(members: &[Member], role: Role) -> Vec<Member> {
    members.iter().filter(|m| m.role == role).cloned().collect()
}

/// What must run before the master: the database and the master's other
/// prerequisites, started if needed and awaited, never restarted.
fn prerequisites(members: &[Member]) -> Vec<Member> {
    let mut v = with_role(members, Role::Database);
    v.extend(with_role(members, Role::Prerequisite));
    v
}

/// `members` grouped into stop phases: dependents, workers, master, database;
/// empty groups left out.
pub fn stop_order(members: &[Member]) -> Vec<Vec<Member>> {
    STOP_ROLES
        .iter()
        .map(|r| with_role(members, *r))
        .filter(|g| !g.is_empty())
        .collect()
}

/// With the whole deployment, the master is started alone: its `Wants=`
/// would pull the workers in at once, and `PartOf=` would restart them with
/// it; orch starts the workers itself once the master is ready.
fn master_mode(shape: Shape) -> JobMode {
    if shape.all {
        JobMode::IgnoreRequirements
    } else {
        JobMode::Replace
    }
}

fn jobs(members: Vec<Member>, kind: JobKind, mode: JobMode) -> Step {
    Step::Jobs {
        members,
        kind,
        mode,
    }
}

/// The steps of `op` on `members`, in order; no step is empty.
pub fn plan(op: Op, members: &[Member], shape: Shape) -> Vec<Step> {
    let mut steps = match (op, shape.rolling) {
        (Op::Reload, _) => reload(members, shape),
        (Op::Restart, Some(batch)) => rolling(members, batch, shape),
        (Op::Restart, None) => {
            // The database is made sure of before anything is stopped.
            let mut steps = vec![Step::EnsureRunning(prerequisites(members))];
            steps.extend(stops(members, shape, false));
            steps.extend(starts(members, shape));
            steps
        }
        (Op::Start, _) => {
            let mut steps = vec![Step::EnsureRunning(prerequisites(members))];
            steps.extend(starts(members, shape));
            steps
        }
        (Op::Stop, _) => stops(members, shape, true),
    };
    steps.retain(|s| !s.members().is_empty());
    steps
}

/// Stop phases. A restart never stops the database nor a prerequisite
/// (`needed_too` false): they are awaited, not restarted; a plain stop
/// stops them only when they were named (they are among `members` then).
fn stops(members: &[Member], shape: Shape, needed_too: bool) -> Vec<Step> {
    stop_order(members)
        .into_iter()
        .filter(|g| needed_too || !matches!(g[0].role, Role::Database | Role::Prerequisite))
        .map(|g| {
            let mode = match g[0].role {
                Role::Master => master_mode(shape),
                _ => JobMode::Replace,
            };
            jobs(g, JobKind::Stop, mode)
        })
        .collect()
}

/// Start phases after the database: the master, then everything else.
fn starts(members: &[Member], shape: Shape) -> Vec<Step> {
    let rest = [
        with_role(members, Role::Worker),
        with_role(members, Role::Dependent),
    ]
    .concat();
    vec![
        jobs(
            with_role(members, Role::Master),
            JobKind::Start,
            master_mode(shape),
        ),
        jobs(rest, JobKind::Start, JobMode::Replace),
    ]
}

/// A reload: master, workers and dependents at once, each in
/// `ignore-requirements` mode so that systemd adds nothing (no
/// `ReloadPropagatedFrom=` cascade, no `PartOf=` restart): every unit gets
/// exactly one job, orch's. A reload takes nothing down, so there is no
/// order to keep and one phase is the fastest. With `--or-restart` a unit
/// may be restarted instead, so the master goes first, as in a restart:
/// workers must not come up against a master that is starting. The
/// database and the master's prerequisites are never reloaded.
fn reload(members: &[Member], shape: Shape) -> Vec<Step> {
    let kind = match shape.or_restart {
        true => JobKind::ReloadOrRestart,
        false => JobKind::Reload,
    };
    let ours: Vec<Member> = members
        .iter()
        .filter(|m| !matches!(m.role, Role::Database | Role::Prerequisite))
        .cloned()
        .collect();
    let mode = JobMode::IgnoreRequirements;
    if !shape.or_restart {
        return vec![jobs(ours, kind, mode)];
    }
    let (master, rest): (Vec<Member>, Vec<Member>) =
        ours.into_iter().partition(|m| m.role == Role::Master);
    vec![jobs(master, kind, mode), jobs(rest, kind, mode)]
}

/// A rolling restart: the prerequisites awaited; then one outage window
/// for the units that have no twin (the master and the workers alone of
/// their kind, see [`window`]); then, with `--canary`, the canaries,
/// watched for the hold; then the other workers `batch` at a time (see
/// [`batches`]), each batch but the last watched for the settle time
/// before the next; then the dependents. The window comes before the canaries:
/// a new release's master migrates the database schema, which workers of
/// the new release may need before they start.
fn rolling(members: &[Member], batch: usize, shape: Shape) -> Vec<Step> {
    let mut steps = vec![Step::EnsureRunning(prerequisites(members))];
    let (lone, twins) = lone_and_twins(&with_role(members, Role::Worker));
    steps.extend(window(with_role(members, Role::Master), lone, shape));
    let canaries = match shape.canary {
        Some(c) => canaries(&twins, c.count),
        None => Vec::new(),
    };
    let rest: Vec<Member> = twins
        .into_iter()
        .filter(|w| {
            !canaries
                .iter()
                .any(|c| c.unit == w.unit && c.host == w.host)
        })
        .collect();
    let settle = shape.settle.unwrap_or_default();
    let mut groups = batches(&rest, batch).into_iter().peekable();
    if let (false, Some(c)) = (canaries.is_empty(), shape.canary) {
        // The hold is the canaries' settle time, made up to --settle.
        let more = settle.saturating_sub(c.hold);
        steps.push(Step::Canary {
            members: canaries.clone(),
            hold: c.hold,
        });
        steps.extend(settled(canaries, more, groups.peek().is_some()));
    }
    while let Some(group) = groups.next() {
        steps.push(jobs(group.clone(), JobKind::Restart, JobMode::Replace));
        steps.extend(settled(group, settle, groups.peek().is_some()));
    }
    steps.push(jobs(
        with_role(members, Role::Dependent),
        JobKind::Restart,
        JobMode::Replace,
    ));
    steps
}

/// A settle step for `batch` when a batch of twins follows it: the
/// outage window's units have no twin that took their requests, and after
/// the last batch nothing else is stopped.
fn settled(batch: Vec<Member>, hold: Duration, more: bool) -> Option<Step> {
    (more && !hold.is_zero()).then_some(Step::Settle {
        members: batch,
        hold,
    })
}

/// Workers alone of their kind (among `workers`), and those with twins.
pub fn lone_and_twins(workers: &[Member]) -> (Vec<Member>, Vec<Member>) {
    // A kind spread over several hosts has twins all the same.
    workers
        .iter()
        .cloned()
        .partition(|w| workers.iter().filter(|o| o.kind == w.kind).count() == 1)
}

/// The outage window: restarting a unit that has no twin is an outage of
/// what it serves, rolling or not, so all of them restart at once and
/// clients see one gap, as long as the slowest of them, not the sum. At
/// once means `ignore-dependencies`: the workers' `After=` on the master
/// only orders boot, and would make systemd start them one after the
/// other. Where a lone worker cannot start without the master (it
/// `Requires=` it, [`Shape::master_first`]) the master restarts first and
/// the lone workers once it is ready.
///
/// Lone workers of a `background = true` kind (no client request waits on
/// them) restart last, once the others are ready: a start is CPU-bound,
/// and on a host with fewer cores than units in the window every start
/// slows the others; the clients' gap is set by the units on their path.
fn window(master: Vec<Member>, lone: Vec<Member>, shape: Shape) -> Vec<Step> {
    let restart = |m, mode| jobs(m, JobKind::Restart, mode);
    let (background, lone): (Vec<Member>, Vec<Member>) =
        lone.into_iter().partition(|m| m.background);
    let mut steps = if master.is_empty() || lone.is_empty() || shape.master_first {
        vec![
            restart(master, JobMode::IgnoreRequirements),
            restart(lone, JobMode::Replace),
        ]
    } else {
        vec![restart(
            [master, lone].concat(),
            JobMode::IgnoreDependencies,
        )]
    };
    steps.push(restart(background, JobMode::Replace));
    steps
}

/// The canaries among workers that have twins: one of each kind, or the
/// first `count` taken across kinds as a batch is (never a whole kind).
fn canaries(twins: &[Member], count: Option<usize>) -> Vec<Member> {
    match count {
        Some(n) => batches(twins, n).into_iter().next().unwrap_or_default(),
        None => {
            let mut seen: Vec<&Option<String>> = Vec::new();
            let mut v = Vec::new();
            for w in twins {
                if !seen.contains(&&w.kind) {
                    seen.push(&w.kind);
                    v.push(w.clone());
                }
            }
            v
        }
    }
}

/// Cuts workers into batches of at most `batch` that interleave kinds, so
/// that no kind with two or more workers ever has all of them down at once:
/// a batch takes at most `count - 1` workers of a kind (one of a kind that
/// has only one). Within a kind, workers keep their order.
pub fn batches(workers: &[Member], batch: usize) -> Vec<Vec<Member>> {
    let batch = batch.max(1);
    // Kinds in order of first appearance, each with its pending workers.
    let mut kinds: Vec<(Option<String>, std::collections::VecDeque<Member>)> = Vec::new();
    for w in workers {
        match kinds.iter_mut().find(|(k, _)| *k == w.kind) {
            Some((_, q)) => q.push_back(w.clone()),
            None => kinds.push((w.kind.clone(), [w.clone()].into())),
        }
    }
    let caps: Vec<usize> = kinds.iter().map(|(_, q)| (q.len() - 1).max(1)).collect();
    let (n, mut next) = (kinds.len(), 0);
    let mut out = Vec::new();
    while kinds.iter().any(|(_, q)| !q.is_empty()) {
        let mut taken = vec![0; n];
        let mut group = Vec::new();
        // Round-robin over the kinds, each batch starting after the kind the
        // last one ended with, until it is full or no kind may give more.
        loop {
            let (before, start) = (group.len(), next);
            for i in (0..n).map(|j| (start + j) % n) {
                if group.len() == batch || taken[i] == caps[i] {
                    continue;
                }
                if let Some(w) = kinds[i].1.pop_front() {
                    taken[i] += 1;
                    group.push(w);
                    next = (i + 1) % n;
                }
            }
            if group.len() == before || group.len() == batch {
                break;
            }
        }
        out.push(group);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn member(unit: &str, role: Role) -> Member {
        Member {
            unit: format!("{unit}.service"),
            host: "local".into(),
            role,
            kind: (role == Role::Worker).then(|| "generic".to_string()),
            background: false,
            health: None,
            bounds: crate::model::Bounds::all(Duration::from_secs(1)),
        }
    }

    fn deployment(db: bool, dependents: bool) -> Vec<Member> {
        let mut v = Vec::new();
        if db {
            v.push(member("db", Role::Database));
        }
        v.push(member("m", Role::Master));
        for i in 0..3 {
            v.push(member(&format!("w{i}"), Role::Worker));
        }
        if dependents {
            v.push(member("bridge", Role::Dependent));
        }
        v
    }

    /// Each step as `kind/mode:unit,unit` (`ensure:` for EnsureRunning).
    fn show(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| {
                let units: Vec<&str> = s
                    .members()
                    .iter()
                    .map(|m| m.unit.trim_end_matches(".service"))
                    .collect();
                match s {
                    Step::EnsureRunning(_) => format!("ensure:{}", units.join(",")),
                    Step::Canary { hold, .. } => {
                        format!("canary {}s:{}", hold.as_secs(), units.join(","))
                    }
                    Step::Settle { hold, .. } => {
                        format!("settle {}s:{}", hold.as_secs(), units.join(","))
                    }
                    Step::Jobs { kind, mode, .. } => format!(
                        "{}/{}:{}",
                        kind.dbus_name(),
                        mode.dbus_name(),
                        units.join(",")
                    ),
                }
            })
            .collect()
    }

    const ALL: Shape = Shape {
        all: true,
        rolling: None,
        or_restart: false,
        canary: None,
        settle: None,
        master_first: false,
    };

    #[test]
    fn reload_is_one_phase_without_the_database_and_adds_no_jobs() {
        assert_eq!(
            show(&plan(Op::Reload, &deployment(true, true), ALL)),
            ["reload/ignore-requirements:m,w0,w1,w2,bridge"]
        );
        let mut d = deployment(true, false);
        d.push(member("redis", Role::Prerequisite));
        assert_eq!(
            show(&plan(Op::Reload, &d, Shape::default())),
            ["reload/ignore-requirements:m,w0,w1,w2"]
        );
        assert!(plan(Op::Reload, &[member("db", Role::Database)], ALL).is_empty());
    }

    #[test]
    fn reload_or_restart_puts_the_master_first() {
        let shape = Shape {
            or_restart: true,
            ..ALL
        };
        assert_eq!(
            show(&plan(Op::Reload, &deployment(true, true), shape)),
            [
                "reload-or-restart/ignore-requirements:m",
                "reload-or-restart/ignore-requirements:w0,w1,w2,bridge"
            ]
        );
        let workers = [member("w0", Role::Worker)];
        assert_eq!(
            show(&plan(Op::Reload, &workers, shape)),
            ["reload-or-restart/ignore-requirements:w0"]
        );
    }

    #[test]
    fn start_all_awaits_the_database_then_the_master_alone_then_the_rest() {
        assert_eq!(
            show(&plan(Op::Start, &deployment(true, true), ALL)),
            [
                "ensure:db",
                "start/ignore-requirements:m",
                "start/replace:w0,w1,w2,bridge"
            ]
        );
        assert_eq!(
            show(&plan(Op::Start, &deployment(false, false), ALL)),
            ["start/ignore-requirements:m", "start/replace:w0,w1,w2"]
        );
    }

    #[test]
    fn stop_all_stops_dependents_then_workers_then_the_master() {
        let no_db: Vec<Member> = deployment(true, true)
            .into_iter()
            .filter(|m| m.role != Role::Database)
            .collect();
        assert_eq!(
            show(&plan(Op::Stop, &no_db, ALL)),
            [
                "stop/replace:bridge",
                "stop/replace:w0,w1,w2",
                "stop/ignore-requirements:m"
            ]
        );
        assert_eq!(
            show(&plan(Op::Stop, &deployment(false, false), ALL)),
            ["stop/replace:w0,w1,w2", "stop/ignore-requirements:m"]
        );
    }

    #[test]
    fn a_named_database_is_stopped_last_but_never_restarted() {
        let named = [member("m", Role::Master), member("db", Role::Database)];
        let shape = Shape::default();
        assert_eq!(
            show(&plan(Op::Stop, &named, shape)),
            ["stop/replace:m", "stop/replace:db"]
        );
        assert_eq!(
            show(&plan(Op::Restart, &named, shape)),
            ["ensure:db", "stop/replace:m", "start/replace:m"]
        );
    }

    #[test]
    fn restart_all_makes_sure_of_the_database_before_stopping_anything() {
        assert_eq!(
            show(&plan(Op::Restart, &deployment(true, true), ALL)),
            [
                "ensure:db",
                "stop/replace:bridge",
                "stop/replace:w0,w1,w2",
                "stop/ignore-requirements:m",
                "start/ignore-requirements:m",
                "start/replace:w0,w1,w2,bridge"
            ]
        );
    }

    #[test]
    fn targets_without_all_use_replace_for_the_master() {
        let named = [member("m", Role::Master)];
        assert_eq!(
            show(&plan(Op::Restart, &named, Shape::default())),
            ["stop/replace:m", "start/replace:m"]
        );
        let workers = [member("w0", Role::Worker), member("w1", Role::Worker)];
        assert_eq!(
            show(&plan(Op::Start, &workers, Shape::default())),
            ["start/replace:w0,w1"]
        );
    }

    #[test]
    fn rolling_restarts_the_master_alone_then_workers_in_batches_then_dependents() {
        let shape = Shape {
            all: true,
            rolling: Some(2),
            or_restart: false,
            ..ALL
        };
        assert_eq!(
            show(&plan(Op::Restart, &deployment(true, true), shape)),
            [
                "ensure:db",
                "restart/ignore-requirements:m",
                "restart/replace:w0,w1",
                "restart/replace:w2",
                "restart/replace:bridge"
            ]
        );
        let one = Shape {
            all: true,
            rolling: Some(1),
            or_restart: false,
            ..ALL
        };
        assert_eq!(
            show(&plan(Op::Restart, &deployment(false, false), one)),
            [
                "restart/ignore-requirements:m",
                "restart/replace:w0",
                "restart/replace:w1",
                "restart/replace:w2"
            ]
        );
    }

    fn kinds(spec: &[(&str, usize)]) -> Vec<Member> {
        let mut v = Vec::new();
        for (kind, n) in spec {
            for i in 0..*n {
                let mut w = member(&format!("{kind}{i}"), Role::Worker);
                w.kind = Some(kind.to_string());
                v.push(w);
            }
        }
        v
    }

    fn names(groups: &[Vec<Member>]) -> Vec<String> {
        groups
            .iter()
            .map(|g| {
                let u: Vec<&str> = g
                    .iter()
                    .map(|m| m.unit.trim_end_matches(".service"))
                    .collect();
                u.join(",")
            })
            .collect()
    }

    #[test]
    fn batches_interleave_kinds_and_never_take_a_whole_kind() {
        // Two generic workers side by side (as the docs advise): never together.
        let w = kinds(&[("media", 1), ("generic", 2), ("pusher", 1)]);
        assert_eq!(
            names(&batches(&w, 2)),
            ["media0,generic0", "pusher0,generic1"]
        );
        assert_eq!(
            names(&batches(&w, 4)),
            ["media0,generic0,pusher0", "generic1"]
        );
        assert_eq!(
            names(&batches(&w, 1)),
            ["media0", "generic0", "pusher0", "generic1"]
        );
        let many = kinds(&[("generic", 3), ("fed", 2)]);
        assert_eq!(
            names(&batches(&many, 8)),
            ["generic0,fed0,generic1", "fed1,generic2"]
        );
    }

    #[test]
    fn batches_keep_every_worker_once_and_respect_the_size() {
        let w = kinds(&[("a", 5), ("b", 3), ("c", 1), ("d", 2)]);
        for size in 1..=12 {
            let groups = batches(&w, size);
            let mut seen: Vec<String> = groups.iter().flatten().map(|m| m.unit.clone()).collect();
            assert_eq!(seen.len(), w.len(), "size {size}");
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), w.len(), "size {size}: a worker twice");
            for g in &groups {
                assert!(
                    !g.is_empty() && g.len() <= size,
                    "size {size}: {:?}",
                    names(&groups)
                );
                for (kind, count) in [("a", 5), ("b", 3), ("d", 2)] {
                    let down = g.iter().filter(|m| m.kind.as_deref() == Some(kind)).count();
                    assert!(
                        down < count,
                        "size {size}: all of {kind} in {:?}",
                        names(&groups)
                    );
                }
            }
        }
    }

    #[test]
    fn rolling_batches_by_kind_in_the_plan() {
        let mut d = vec![member("m", Role::Master)];
        d.extend(kinds(&[("generic", 2), ("fed", 1)]));
        let shape = Shape {
            all: true,
            rolling: Some(2),
            or_restart: false,
            ..ALL
        };
        // fed has no twin: it restarts in the master's window, not in a batch.
        assert_eq!(
            show(&plan(Op::Restart, &d, shape)),
            [
                "restart/ignore-dependencies:m,fed0",
                "restart/replace:generic0",
                "restart/replace:generic1"
            ]
        );
    }

    /// Synapse's shape: a master, four kinds of one worker, two generic.
    fn synapse() -> Vec<Member> {
        let mut d = vec![
            member("redis", Role::Prerequisite),
            member("m", Role::Master),
        ];
        d.extend(kinds(&[
            ("persister", 1),
            ("fed", 1),
            ("generic", 2),
            ("media", 1),
        ]));
        d.push(member("bridge", Role::Dependent));
        d
    }

    fn rolling(batch: usize) -> Shape {
        Shape {
            rolling: Some(batch),
            ..ALL
        }
    }

    #[test]
    fn units_without_a_twin_restart_in_one_window_after_the_prerequisites() {
        assert_eq!(
            show(&plan(Op::Restart, &synapse(), rolling(1))),
            [
                "ensure:redis",
                "restart/ignore-dependencies:m,persister0,fed0,media0",
                "restart/replace:generic0",
                "restart/replace:generic1",
                "restart/replace:bridge"
            ]
        );
        // --changed without the master: the lone workers still go together.
        let changed: Vec<Member> = synapse()
            .into_iter()
            .filter(|m| m.role == Role::Worker)
            .collect();
        assert_eq!(
            show(&plan(Op::Restart, &changed, rolling(4)))[0],
            "restart/replace:persister0,fed0,media0"
        );
    }

    #[test]
    fn a_lone_worker_that_requires_the_master_waits_for_it_within_the_window() {
        let shape = Shape {
            master_first: true,
            ..rolling(1)
        };
        assert_eq!(
            show(&plan(Op::Restart, &synapse(), shape))[1..3],
            [
                "restart/ignore-requirements:m",
                "restart/replace:persister0,fed0,media0"
            ]
        );
    }

    /// [`synapse`] with the federation sender and media marked background.
    fn synapse_with_background() -> Vec<Member> {
        let mut d = synapse();
        for m in d.iter_mut() {
            m.background = matches!(m.kind.as_deref(), Some("fed" | "media"));
        }
        d
    }

    #[test]
    fn background_lone_workers_restart_after_the_rest_of_the_window_is_ready() {
        assert_eq!(
            show(&plan(Op::Restart, &synapse_with_background(), rolling(1))),
            [
                "ensure:redis",
                "restart/ignore-dependencies:m,persister0",
                "restart/replace:fed0,media0",
                "restart/replace:generic0",
                "restart/replace:generic1",
                "restart/replace:bridge"
            ]
        );
        // Where a lone worker requires the master: master, the others, then
        // the background ones.
        let first = Shape {
            master_first: true,
            ..rolling(1)
        };
        assert_eq!(
            show(&plan(Op::Restart, &synapse_with_background(), first))[1..4],
            [
                "restart/ignore-requirements:m",
                "restart/replace:persister0",
                "restart/replace:fed0,media0"
            ]
        );
        // Only background lone workers beside the master: the master alone first.
        let d: Vec<Member> = synapse_with_background()
            .into_iter()
            .filter(|m| m.kind.as_deref() != Some("persister"))
            .collect();
        assert_eq!(
            show(&plan(Op::Restart, &d, rolling(2)))[1..3],
            [
                "restart/ignore-requirements:m",
                "restart/replace:fed0,media0"
            ]
        );
        // A background kind with twins rolls in batches as any other.
        let mut twins = kinds(&[("fed", 2)]);
        twins.iter_mut().for_each(|m| m.background = true);
        assert_eq!(
            show(&plan(Op::Restart, &twins, rolling(1))),
            ["restart/replace:fed0", "restart/replace:fed1"]
        );
    }

    #[test]
    fn canaries_are_one_of_each_kind_with_twins_after_the_window_then_the_rest() {
        let hold = Duration::from_secs(30);
        let mut d = synapse();
        d.extend(kinds(&[("pusher", 3)]));
        let shape = Shape {
            canary: Some(Canary { count: None, hold }),
            ..rolling(2)
        };
        assert_eq!(
            show(&plan(Op::Restart, &d, shape)),
            [
                "ensure:redis",
                "restart/ignore-dependencies:m,persister0,fed0,media0",
                "canary 30s:generic0,pusher0",
                "restart/replace:generic1,pusher1",
                "restart/replace:pusher2",
                "restart/replace:bridge"
            ]
        );
        // N canaries are taken across kinds, never a whole kind.
        let three = Shape {
            canary: Some(Canary {
                count: Some(3),
                hold,
            }),
            ..rolling(1)
        };
        let steps = show(&plan(Op::Restart, &d, three));
        assert_eq!(steps[2], "canary 30s:generic0,pusher0,pusher1", "{steps:?}");
        assert_eq!(
            steps[3..6],
            [
                "restart/replace:generic1",
                "restart/replace:pusher2",
                "restart/replace:bridge"
            ]
        );
        // Without twins there is nothing to try first: no canary step.
        let lone = Shape {
            canary: Some(Canary { count: None, hold }),
            ..rolling(1)
        };
        let d = vec![member("m", Role::Master)]
            .into_iter()
            .chain(kinds(&[("a", 1), ("b", 1)]))
            .collect::<Vec<_>>();
        assert_eq!(
            show(&plan(Op::Restart, &d, lone)),
            ["restart/ignore-dependencies:m,a0,b0"]
        );
    }

    #[test]
    fn settle_watches_each_batch_of_twins_but_the_last_before_the_next_is_stopped() {
        let mut d = synapse();
        d.extend(kinds(&[("pusher", 2)]));
        let settle = |s, canary| Shape {
            settle: Some(Duration::from_secs(s)),
            canary,
            ..rolling(1)
        };
        assert_eq!(
            show(&plan(Op::Restart, &d, settle(5, None))),
            [
                "ensure:redis",
                "restart/ignore-dependencies:m,persister0,fed0,media0",
                "restart/replace:generic0",
                "settle 5s:generic0",
                "restart/replace:pusher0",
                "settle 5s:pusher0",
                "restart/replace:generic1",
                "settle 5s:generic1",
                "restart/replace:pusher1",
                "restart/replace:bridge"
            ]
        );
        // A canary's hold counts as its settle time, made up to --settle.
        let hold = |h| {
            Some(Canary {
                count: None,
                hold: Duration::from_secs(h),
            })
        };
        let steps = show(&plan(Op::Restart, &d, settle(5, hold(2))));
        assert_eq!(
            steps[2..6],
            [
                "canary 2s:generic0,pusher0",
                "settle 3s:generic0,pusher0",
                "restart/replace:generic1",
                "settle 5s:generic1"
            ],
            "{steps:?}"
        );
        let steps = show(&plan(Op::Restart, &d, settle(5, hold(30))));
        assert_eq!(
            steps[2..4],
            ["canary 30s:generic0,pusher0", "restart/replace:generic1"]
        );
        // One batch of twins: nothing is stopped after it, nothing to settle.
        let two = kinds(&[("generic", 2)]);
        assert_eq!(
            show(&plan(
                Op::Restart,
                &two,
                Shape {
                    settle: Some(Duration::from_secs(5)),
                    ..rolling(1)
                }
            )),
            [
                "restart/replace:generic0",
                "settle 5s:generic0",
                "restart/replace:generic1"
            ]
        );
        let shape = Shape {
            settle: Some(Duration::from_secs(5)),
            ..rolling(2)
        };
        assert_eq!(
            show(&plan(Op::Restart, &kinds(&[("generic", 3)]), shape)),
            [
                "restart/replace:generic0,generic1",
                "settle 5s:generic0,generic1",
                "restart/replace:generic2"
            ]
        );
    }

    #[test]
    fn rolling_only_applies_to_restart() {
        let shape = Shape {
            all: true,
            rolling: Some(1),
            or_restart: false,
            ..ALL
        };
        assert_eq!(
            show(&plan(Op::Start, &deployment(false, false), shape)),
            ["start/ignore-requirements:m", "start/replace:w0,w1,w2"]
        );
    }

    #[test]
    fn prerequisites_are_awaited_with_the_database_and_never_stopped() {
        let mut d = deployment(true, false);
        d.push(member("redis", Role::Prerequisite));
        assert_eq!(
            show(&plan(Op::Restart, &d, ALL)),
            [
                "ensure:db,redis",
                "stop/replace:w0,w1,w2",
                "stop/ignore-requirements:m",
                "start/ignore-requirements:m",
                "start/replace:w0,w1,w2"
            ]
        );
        let rolling = Shape {
            all: true,
            rolling: Some(3),
            or_restart: false,
            ..ALL
        };
        assert_eq!(show(&plan(Op::Restart, &d, rolling))[0], "ensure:db,redis");
        // Named on the command line, a prerequisite stops after the master.
        let named = [
            member("m", Role::Master),
            member("redis", Role::Prerequisite),
        ];
        assert_eq!(
            show(&plan(Op::Stop, &named, Shape::default())),
            ["stop/replace:m", "stop/replace:redis"]
        );
    }

    #[test]
    fn stop_order_includes_the_database_last() {
        let groups: Vec<Vec<String>> = stop_order(&deployment(true, true))
            .iter()
            .map(|g| g.iter().map(|m| m.unit.clone()).collect())
            .collect();
        assert_eq!(
            groups,
            [
                vec!["bridge.service"],
                vec!["w0.service", "w1.service", "w2.service"],
                vec!["m.service"],
                vec!["db.service"],
            ]
        );
    }
}

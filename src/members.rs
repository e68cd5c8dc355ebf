//! The units orch acts on: [`Member`] (a unit, its host, role and
//! bounds), every member of a deployment in start order, and what the
//! operator named ([`Selection`], resolved by [`select`]). Shared by
//! lifecycle, maintenance, status and logs; depends on the model only.

use crate::model::{Bounds, Deployment, Probe, Role};

/// One unit orch acts on, with its bounds.
#[derive(Debug, Clone)]
pub struct Member {
    pub unit: String,
    /// The host it lives on.
    pub host: String,
    pub role: Role,
    pub kind: Option<String>,
    /// A worker of a `background = true` kind (see [`crate::phases`]).
    pub background: bool,
    pub health: Option<Probe>,
    pub bounds: Bounds,
}

/// Every unit of the deployment, in start order: the database and the
/// `[[prerequisites]]` first.
pub fn members(d: &Deployment) -> Vec<Member> {
    let mut v = Vec::new();
    let ext = |x: &crate::model::External, role| Member {
        unit: x.unit.clone(),
        host: x.host.clone(),
        role,
        kind: None,
        background: false,
        health: x.health.clone(),
        bounds: x.bounds,
    };
    let svc = |s: &crate::model::Service, role, kind: Option<&str>, background| Member {
        unit: s.unit.clone(),
        host: s.host.clone(),
        role,
        kind: kind.map(str::to_string),
        background,
        health: s.health.clone(),
        bounds: s.bounds,
    };
    if let Some(db) = &d.database {
        v.push(ext(db, Role::Database));
    }
    v.extend(
        d.prerequisites
            .iter()
            .map(|p| ext(&p.external, Role::Prerequisite)),
    );
    v.push(svc(&d.master, Role::Master, None, false));
    v.extend(
        d.workers
            .iter()
            .map(|w| svc(&w.service, Role::Worker, Some(&w.kind), w.background)),
    );
    v.extend(d.dependents.iter().map(|x| ext(x, Role::Dependent)));
    v
}

/// A command-line target that names nothing of the deployment (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("`{target}` is not a unit of deployment {deployment} nor a target (master, workers, dependents, database, prerequisites, or a worker kind: {kinds})")]
pub struct UnknownTarget {
    pub target: String,
    pub deployment: String,
    pub kinds: String,
}

/// Resolves command-line targets: a unit name, a worker kind, `master`,
/// `workers`, `dependents`, `database` or `prerequisites`. The database and
/// the prerequisites are only acted on when named.
pub fn select(d: &Deployment, targets: &[String]) -> Result<Vec<Member>, UnknownTarget> {
    let all = members(d);
    let mut chosen: Vec<Member> = Vec::new();
    for t in targets {
        let unit = if t.contains('.') {
            t.clone()
        } else {
            format!("{t}.service")
        };
        let matched: Vec<&Member> = match t.as_str() {
            "master" => all.iter().filter(|m| m.role == Role::Master).collect(),
            "workers" => all.iter().filter(|m| m.role == Role::Worker).collect(),
            "dependents" => all.iter().filter(|m| m.role == Role::Dependent).collect(),
            "database" => all.iter().filter(|m| m.role == Role::Database).collect(),
            "prerequisites" => all
                .iter()
                .filter(|m| m.role == Role::Prerequisite)
                .collect(),
            _ => {
                let by_kind: Vec<&Member> = all
                    .iter()
                    .filter(|m| m.kind.as_deref() == Some(t.as_str()))
                    .collect();
                if by_kind.is_empty() {
                    all.iter().filter(|m| m.unit == unit).collect()
                } else {
                    by_kind
                }
            }
        };
        if matched.is_empty() {
            let kinds: Vec<&str> = d
                .workers
                .iter()
                .map(|w| w.kind.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            return Err(UnknownTarget {
                target: t.clone(),
                deployment: d.name.clone(),
                kinds: kinds.join(", "),
            });
        }
        for m in matched {
            if !chosen.iter().any(|c| c.unit == m.unit) {
                chosen.push(m.clone());
            }
        }
    }
    Ok(chosen)
}

/// What the operator named.
#[derive(Debug, Clone)]
pub enum Selection {
    /// `--all`.
    All,
    /// Unit names, worker kinds, or master / workers / dependents / database.
    Named(Vec<String>),
}

/// What `--all` covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllUnits {
    /// Every unit, the database and the prerequisites first.
    WithPrerequisites,
    /// Every unit but the database and the prerequisites: other services
    /// may use them (what `stop --all` and `logs` cover).
    DeploymentOnly,
}

impl Selection {
    /// The members named, or with `--all` those `all` covers, in start order.
    pub fn resolve(&self, d: &Deployment, all: AllUnits) -> Result<Vec<Member>, UnknownTarget> {
        let needed = |m: &Member| matches!(m.role, Role::Database | Role::Prerequisite);
        match self {
            Selection::All => Ok(members(d)
                .into_iter()
                .filter(|m| !needed(m) || all == AllUnits::WithPrerequisites)
                .collect()),
            Selection::Named(t) => select(d, t),
        }
    }
}

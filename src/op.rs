//! The lifecycle verbs, and what each implies. Every decision that depends
//! on the verb is an exhaustive method here: a new verb does not compile
//! until each of them is made for it.

use serde::Serialize;

use crate::members::AllUnits;

/// A lifecycle verb: `start`, `stop`, `restart`, `reload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Start,
    Stop,
    Restart,
    Reload,
}

impl Op {
    /// The verb as the operator types it.
    pub fn name(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Restart => "restart",
            Op::Reload => "reload",
        }
    }

    /// What `--all` covers. Stop and reload leave the database and the
    /// prerequisites alone: other services may use them, and stopping the
    /// database is maintenance's decision (`stop-for-maintenance
    /// --include-database`). Start and restart need them running.
    pub fn all_units(self) -> AllUnits {
        match self {
            Op::Start | Op::Restart => AllUnits::WithPrerequisites,
            Op::Stop | Op::Reload => AllUnits::DeploymentOnly,
        }
    }

    /// Refused while the deployment is in maintenance (without `--force`):
    /// everything but the database is stopped and masked then; a reload
    /// would fail, a reload-or-restart would start units. Stopping is
    /// always allowed.
    pub fn refused_in_maintenance(self) -> bool {
        match self {
            Op::Start | Op::Restart | Op::Reload => true,
            Op::Stop => false,
        }
    }

    /// Starts units: the master's own `Requires=`/`BindsTo=` are started
    /// and awaited before it (stop and reload never start anything the
    /// master needs).
    pub fn starts_units(self) -> bool {
        match self {
            Op::Start | Op::Restart => true,
            Op::Stop | Op::Reload => false,
        }
    }

    /// Needs each container unit's image on its host before any job: a
    /// start makes new containers, and so may a reload (`--or-restart`, or
    /// a unit that died since).
    pub fn needs_images(self) -> bool {
        match self {
            Op::Start | Op::Restart | Op::Reload => true,
            Op::Stop => false,
        }
    }

    /// Needs each unit able to reload (`ExecReload=`, or `notify-reload`),
    /// checked before any job is sent, unless `--or-restart`.
    pub fn needs_reload_support(self) -> bool {
        match self {
            Op::Reload => true,
            Op::Start | Op::Stop | Op::Restart => false,
        }
    }

    /// Leaves its units stopped (judged stopped), rather than ready.
    pub fn leaves_stopped(self) -> bool {
        match self {
            Op::Stop => true,
            Op::Start | Op::Restart | Op::Reload => false,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_verb_has_its_decisions() {
        let all = [Op::Start, Op::Stop, Op::Restart, Op::Reload];
        let names: Vec<&str> = all.iter().map(|o| o.name()).collect();
        assert_eq!(names, ["start", "stop", "restart", "reload"]);
        for op in all {
            assert_eq!(
                serde_json::to_string(&op).unwrap(),
                format!("\"{}\"", op.name())
            );
        }
        let refused: Vec<bool> = all.iter().map(|o| o.refused_in_maintenance()).collect();
        assert_eq!(refused, [true, false, true, true]);
        let starts: Vec<bool> = all.iter().map(|o| o.starts_units()).collect();
        assert_eq!(starts, [true, false, true, false]);
        let images: Vec<bool> = all.iter().map(|o| o.needs_images()).collect();
        assert_eq!(images, [true, false, true, true]);
        assert_eq!(Op::Stop.all_units(), AllUnits::DeploymentOnly);
        assert_eq!(Op::Reload.all_units(), AllUnits::DeploymentOnly);
        assert_eq!(Op::Restart.all_units(), AllUnits::WithPrerequisites);
        assert!(Op::Reload.needs_reload_support() && !Op::Restart.needs_reload_support());
        assert!(Op::Stop.leaves_stopped() && !Op::Start.leaves_stopped());
    }
}

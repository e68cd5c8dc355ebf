//! `logs`: which units, the journalctl of each host, and the end on Ctrl+C.

use tokio::sync::mpsc;

use super::lifecycle::handler;
use crate::error::Error;
use crate::fleet::Access;
use crate::logs::{self, Entry, Options, Source};
use crate::members::{AllUnits, Selection};
use crate::model::Deployment;
use crate::systemd::Bus;
use tokio::signal::unix::SignalKind;

/// How `logs` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The history was shown (and, with `-f`, a journalctl ended).
    Done,
    /// Ctrl+C or SIGTERM: the normal end of `-f`.
    Interrupted,
}

/// The units of the selection (without targets: every unit but the
/// database, as `stop --all`: a shared PostgreSQL is not the
/// deployment's), grouped by the host they live on.
pub fn sources(
    d: &Deployment,
    access: &Access,
    selection: &Selection,
) -> Result<Vec<Source>, Error> {
    let members = selection
        .resolve(d, AllUnits::DeploymentOnly)
        .map_err(crate::error::UsageError::from)?;
    Ok(access
        .used(d)?
        .into_iter()
        .filter_map(|t| {
            let units: Vec<String> = members
                .iter()
                .filter(|m| m.host == t.name)
                .map(|m| m.unit.clone())
                .collect();
            let remote = match t.bus {
                Bus::Remote(r) => Some(r),
                _ => None,
            };
            (!units.is_empty()).then_some(Source {
                host: t.name,
                remote,
                units,
            })
        })
        .collect())
}

/// Shows the history of every host in time order, then with `-f` each new
/// line as it comes, through `sink`, until Ctrl+C or SIGTERM.
pub fn logs(
    d: &Deployment,
    access: &Access,
    selection: &Selection,
    opts: Options,
    sink: &mut dyn FnMut(&Entry) -> Result<(), Error>,
) -> Result<Outcome, Error> {
    let sources = sources(d, access, selection)?;
    super::runtime()?.block_on(async {
        let mut sigint = handler(SignalKind::interrupt(), "SIGINT")?;
        let mut sigterm = handler(SignalKind::terminate(), "SIGTERM")?;
        let (entries, cursors) = tokio::select! {
            r = logs::read_history(&sources, &opts) => r?,
            _ = sigint.recv() => return Ok(Outcome::Interrupted),
            _ = sigterm.recv() => return Ok(Outcome::Interrupted),
        };
        for e in &entries {
            sink(e)?;
        }
        if !opts.follow {
            return Ok(Outcome::Done);
        }
        let (tx, mut rx) = mpsc::channel(256);
        // Dropping this future (on a signal) kills every journalctl at once.
        let follow = logs::follow(&sources, &opts, &cursors, tx);
        tokio::pin!(follow);
        loop {
            tokio::select! {
                Some(e) = rx.recv() => sink(&e)?,
                r = &mut follow => {
                    while let Ok(e) = rx.try_recv() {
                        sink(&e)?;
                    }
                    r?;
                    return Ok(Outcome::Done);
                }
                _ = sigint.recv() => return Ok(Outcome::Interrupted),
                _ = sigterm.recv() => return Ok(Outcome::Interrupted),
            }
        }
    })
}

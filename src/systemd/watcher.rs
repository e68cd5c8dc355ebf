//! The job watcher: `JobRemoved` signals collected in their own task, so
//! that waiting for a job is race-free and bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::Notify;
use zbus::{Connection, OwnedObjectPath};

use super::{JobResult, Systemd, SystemdError};

/// A job's object path: what identifies a job on one host's bus (paths
/// repeat across hosts).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobPath(pub(super) OwnedObjectPath);

impl JobPath {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// A path as systemd spells it (`/org/freedesktop/systemd1/job/7`), for
    /// the job layer's unit tests.
    #[cfg(test)]
    pub(crate) fn parse(p: &str) -> JobPath {
        JobPath(OwnedObjectPath::try_from(p).expect("an object path"))
    }
}

/// Result of a job, as systemd names it in `JobRemoved`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobOutcome {
    pub unit: String,
    pub result: JobResult,
}

#[derive(Default)]
struct JobState {
    done: HashMap<JobPath, JobOutcome>,
    closed: bool,
}

/// Collects `JobRemoved` signals so that waiting for a job is race-free: the
/// stream is set up and `Subscribe` called before any job is enqueued, and a
/// job that finishes before anyone waits for it is remembered.
pub struct JobWatcher {
    host: String,
    conn: Connection,
    calls: Arc<tokio::sync::Semaphore>,
    state: Arc<Mutex<JobState>>,
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl JobWatcher {
    pub async fn start(sd: &Systemd) -> Result<JobWatcher, SystemdError> {
        let mut stream = sd
            .manager
            .receive_job_removed()
            .await
            .map_err(|e| sd.err("watch jobs", e))?;
        sd.manager
            .subscribe()
            .await
            .map_err(|e| sd.err("subscribe to job signals", e))?;
        let state = Arc::new(Mutex::new(JobState::default()));
        let notify = Arc::new(Notify::new());
        let (st, nt) = (state.clone(), notify.clone());
        // Drained in its own task so a slow waiter never makes the bus buffer signals.
        let task = tokio::spawn(async move {
            while let Some(signal) = stream.next().await {
                if let Ok(args) = signal.args() {
                    let outcome = JobOutcome {
                        unit: args.unit.clone(),
                        result: JobResult::from_dbus(&args.result),
                    };
                    st.lock()
                        .unwrap()
                        .done
                        .insert(JobPath(args.job.clone()), outcome);
                    nt.notify_waiters();
                }
            }
            st.lock().unwrap().closed = true;
            nt.notify_waiters();
        });
        Ok(JobWatcher {
            host: sd.host.clone(),
            conn: sd.conn.clone(),
            calls: sd.calls.clone(),
            state,
            notify,
            task,
        })
    }

    /// Waits until `job` is removed, up to `timeout`. `None` on timeout.
    ///
    /// A `JobRemoved` can be lost (systemd re-executing, a reconnect), so
    /// every second without news the job object itself is asked for; if it
    /// is gone, the result is reported as `vanished` and the caller judges the
    /// unit by its state.
    pub async fn wait(
        &self,
        job: &JobPath,
        timeout: Duration,
    ) -> Result<Option<JobOutcome>, SystemdError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register before checking, so a signal between the two is not lost.
            let notified = self.notify.notified();
            if let Some(o) = self.finished(job)? {
                return Ok(Some(o));
            }
            let tick = (tokio::time::Instant::now() + Duration::from_secs(1)).min(deadline);
            match tokio::time::timeout_at(tick, notified).await {
                Ok(()) => continue,
                Err(_) if tick >= deadline => return Ok(None),
                Err(_) => {
                    if !self.job_exists(job).await {
                        if let Some(o) = self.finished(job)? {
                            return Ok(Some(o));
                        }
                        tracing::debug!(job = job.as_str(), "job gone without a JobRemoved signal");
                        return Ok(Some(JobOutcome {
                            unit: String::new(),
                            result: JobResult::Vanished,
                        }));
                    }
                }
            }
        }
    }

    /// Whether the signal stream ends within `bound`: a call that failed
    /// as the connection dropped can return before the stream's end is seen.
    pub async fn closed_within(&self, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let notified = self.notify.notified();
            if self.is_closed() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.is_closed();
            }
        }
    }

    /// Whether the connection's signal stream has ended (the bus is gone).
    pub fn is_closed(&self) -> bool {
        self.state.lock().unwrap().closed
    }

    fn finished(&self, job: &JobPath) -> Result<Option<JobOutcome>, SystemdError> {
        let st = self.state.lock().unwrap();
        if let Some(o) = st.done.get(job) {
            return Ok(Some(o.clone()));
        }
        if st.closed {
            return Err(SystemdError::Closed(
                if self.host == crate::model::LOCAL_HOST {
                    format!("job {}", job.as_str())
                } else {
                    format!("job {} on host {}", job.as_str(), self.host)
                },
            ));
        }
        Ok(None)
    }

    async fn job_exists(&self, job: &JobPath) -> bool {
        let _permit = self
            .calls
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let reply = self
            .conn
            .call_method(
                Some("org.freedesktop.systemd1"),
                job.as_str(),
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &("org.freedesktop.systemd1.Job", "State"),
            )
            .await;
        match reply {
            Ok(_) => true,
            // Only a definite "no such object" counts; any other error keeps waiting.
            Err(zbus::Error::MethodError(name, _, _)) => !matches!(
                name.as_str(),
                "org.freedesktop.DBus.Error.UnknownObject"
                    | "org.freedesktop.systemd1.NoSuchJob"
                    | "org.freedesktop.DBus.Error.UnknownMethod"
            ),
            Err(_) => true,
        }
    }
}

impl Drop for JobWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

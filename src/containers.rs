//! Questions to the container engine on a unit's host: which containers of
//! the deployment run, and stopping those that run outside any unit. Run
//! locally, or over the same SSH as the rest for a remote host; every call
//! is bounded.

use std::time::Duration;

use serde::Serialize;

use crate::model::container::Runtime;
use crate::model::Deployment;
use crate::remote::Remote;

/// The bound on one query (`podman ps`); a stop adds its own grace.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ContainersError {
    #[error("cannot run {program} on host {host}: {source}")]
    Spawn {
        host: String,
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` on host {host} did not answer within {}s", timeout.as_secs())]
    Timeout {
        host: String,
        command: String,
        timeout: Duration,
    },
    #[error("`{command}` on host {host} failed ({status}): {stderr}")]
    Failed {
        host: String,
        command: String,
        status: String,
        /// The exit code, when it exited.
        code: Option<i32>,
        stderr: String,
    },
    #[error("{program} is not installed on host {host} (container units run there: it answered `{command}` with {why}); install it there (`apt-get install podman`) before starting, reloading or stopping them")]
    MissingRuntime {
        host: String,
        program: String,
        command: String,
        why: String,
    },
    #[error("cannot read podman's answer on host {host}: {cause}")]
    Parse { host: String, cause: String },
    #[error("image {image} is not present on host {host} (needed by {}); units never pull: pull it there first (`podman pull {image}`)", units.join(", "))]
    MissingImage {
        host: String,
        image: String,
        units: Vec<String>,
    },
}

/// A running container of the deployment found outside every unit.
#[derive(Debug, Clone, Serialize)]
pub struct Stray {
    pub host: String,
    pub name: String,
    /// Stopped (or killed after the stop bound) and gone on the second look.
    pub stopped: bool,
}

/// Runs `args` (engine arguments, plain words) on `host`, bounded.
async fn run(
    runtime: Runtime,
    host: &str,
    on: Option<&Remote>,
    args: &[String],
    timeout: Duration,
) -> Result<String, ContainersError> {
    let command = format!("{} {}", runtime.binary(), args.join(" "));
    let mut cmd = match on {
        Some(r) => {
            let (program, a) = r.run(&command);
            let mut c = tokio::process::Command::new(program);
            c.args(a);
            c
        }
        None => {
            let mut c = tokio::process::Command::new(runtime.binary());
            c.args(args);
            c
        }
    };
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| ContainersError::Timeout {
            host: host.into(),
            command: command.clone(),
            timeout,
        })?
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ContainersError::MissingRuntime {
                host: host.into(),
                program: runtime.binary().into(),
                command: command.clone(),
                why: source.to_string(),
            },
            _ => ContainersError::Spawn {
                host: host.into(),
                program: runtime.binary().into(),
                source,
            },
        })?;
    // A remote shell says "command not found" by exit status 127.
    if on.is_some() && out.status.code() == Some(127) {
        return Err(ContainersError::MissingRuntime {
            host: host.into(),
            program: runtime.binary().into(),
            command,
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    if !out.status.success() {
        return Err(ContainersError::Failed {
            host: host.into(),
            command,
            status: out.status.to_string(),
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The names of the running containers labelled `orch.deployment=NAME` on `host`.
pub async fn running(
    d: &Deployment,
    host: &str,
    on: Option<&Remote>,
) -> Result<Vec<String>, ContainersError> {
    let args = [
        "ps".to_string(),
        "--filter".into(),
        format!("label=orch.deployment={}", d.name),
        "--format".into(),
        "{{.Names}}".into(),
    ];
    let args: Vec<String> = match on {
        // The remote shell would read `{{.Names}}` as is, but quote it anyway.
        Some(_) => args
            .iter()
            .map(|a| {
                if a.contains('{') {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            })
            .collect(),
        None => args.to_vec(),
    };
    let out = run(Runtime::Podman, host, on, &args, QUERY_TIMEOUT).await?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// The hosts with a container unit, each once.
pub fn container_hosts(d: &Deployment) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for s in d.services().filter(|s| s.container.is_some()) {
        if !hosts.contains(&s.host) {
            hosts.push(s.host.clone());
        }
    }
    hosts
}

/// Asks the engine on every host with a container unit for the deployment's
/// containers: run before a maintenance stop, so a host without the engine
/// (or where it fails) is named before any unit stops, not after, when the
/// proof could not be completed.
pub async fn check_runtime(
    d: &Deployment,
    remote_of: impl Fn(&str) -> Option<Remote>,
) -> Result<(), ContainersError> {
    for host in container_hosts(d) {
        running(d, &host, remote_of(&host).as_ref()).await?;
    }
    Ok(())
}

/// Stops every running container of the deployment on `host`: called when
/// every unit is proved stopped, so each one found runs outside any unit
/// (started by hand, or brought back by an engine's restart policy).
/// `podman stop --time` kills after `grace`.
pub async fn stop_strays(
    d: &Deployment,
    host: &str,
    on: Option<&Remote>,
    grace: Duration,
) -> Result<Vec<Stray>, ContainersError> {
    let names = running(d, host, on).await?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let secs = grace.as_secs().max(1);
    let mut args = vec![
        "stop".to_string(),
        "--ignore".into(),
        format!("--time={secs}"),
    ];
    args.extend(names.iter().cloned());
    let bound = Duration::from_secs(secs) + QUERY_TIMEOUT;
    run(Runtime::Podman, host, on, &args, bound).await?;
    let still = running(d, host, on).await?;
    Ok(names
        .into_iter()
        .map(|name| Stray {
            host: host.to_string(),
            stopped: !still.contains(&name),
            name,
        })
        .collect())
}

/// Refuses, before any job, a start of a container unit whose image is not
/// on its host (`podman image exists`): the operator learns it before
/// anything stops, not from a failed unit's journal.
pub async fn check_images(
    d: &Deployment,
    units: &[&str],
    remote_of: impl Fn(&str) -> Option<Remote>,
) -> Result<(), ContainersError> {
    let mut wanted: Vec<(String, String, Vec<String>)> = Vec::new();
    for s in d.services().filter(|s| units.contains(&s.unit.as_str())) {
        let Some(c) = &s.container else { continue };
        match wanted.iter_mut().find(|w| w.0 == s.host && w.1 == c.image) {
            Some(w) => w.2.push(s.unit.clone()),
            None => wanted.push((s.host.clone(), c.image.clone(), vec![s.unit.clone()])),
        }
    }
    for (host, image, units) in wanted {
        let remote = remote_of(&host);
        let args = ["image".to_string(), "exists".into(), image.clone()];
        match run(
            Runtime::Podman,
            &host,
            remote.as_ref(),
            &args,
            QUERY_TIMEOUT,
        )
        .await
        {
            Ok(_) => {}
            // `podman image exists` says "no" by exit status 1.
            Err(ContainersError::Failed { code: Some(1), .. }) => {
                return Err(ContainersError::MissingImage { host, image, units });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `name -> state` (`running`, `exited`, …) of every container of the
/// deployment on `host`, running or not.
pub async fn states(
    d: &Deployment,
    host: &str,
    on: Option<&Remote>,
) -> Result<std::collections::HashMap<String, String>, ContainersError> {
    // `{{.State}}` is the human "Up 3 seconds" in podman 4; the JSON has the state.
    let args = [
        "ps".to_string(),
        "--all".into(),
        "--filter".into(),
        format!("label=orch.deployment={}", d.name),
        "--format".into(),
        "json".into(),
    ];
    let out = run(Runtime::Podman, host, on, &args, QUERY_TIMEOUT).await?;
    #[derive(serde::Deserialize)]
    struct Ps {
        #[serde(rename = "Names", default)]
        names: Vec<String>,
        #[serde(rename = "State", default)]
        state: String,
    }
    let list: Vec<Ps> = serde_json::from_str(&out).map_err(|e| ContainersError::Parse {
        host: host.into(),
        cause: e.to_string(),
    })?;
    Ok(list
        .into_iter()
        .flat_map(|p| p.names.into_iter().map(move |n| (n, p.state.clone())))
        .collect())
}

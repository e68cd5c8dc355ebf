//! Container-backed units: checks on the container keys (`image`,
//! `runtime`, `volumes`, `container_args`, `reload_signal`) and the command
//! lines a container unit runs. The resolver adds file, line and key.

use std::str::FromStr;

use serde::Serialize;

/// The engine's binary, as `podman generate systemd` writes it.
pub const PODMAN: &str = "/usr/bin/podman";
/// The longest image reference (registry/name:tag@digest), as the
/// distribution spec bounds a name (255) plus tag and digest.
pub const MAX_IMAGE_LEN: usize = 512;

/// Why a container key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerError {
    #[error("`{0}` is not an image reference: expected [REGISTRY/]NAME[:TAG][@sha256:DIGEST] in lower case, with no spaces")]
    Image(String),
    #[error("`{0}` is not one of: podman, docker")]
    Runtime(String),
    #[error("runtime = \"docker\" is not supported: docker runs each container in its own scope (system.slice/docker-ID.scope), outside the unit's cgroup, where the unit's memory_max, slice and orch's \"0 processes left\" proof do not reach, and the test harness does not run dockerd, so no docker path is tested; use runtime = \"podman\" (see docs/containers.md)")]
    Docker,
    #[error("`{0}` is not a volume: expected HOST:CONTAINER[:ro|:rw] with two absolute paths, no spaces or quotes")]
    Volume(String),
    #[error("`{0}` is not a signal name (HUP, SIGHUP, USR1, …)")]
    Signal(String),
    #[error("`{0}` is managed by orch and cannot be given in container_args")]
    ReservedArg(String),
    #[error("needs `image`: it only applies to a container-backed unit")]
    NeedsImage,
}

/// The container engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Podman,
}

impl Runtime {
    pub fn parse(s: &str) -> Result<Runtime, ContainerError> {
        match s {
            "podman" => Ok(Runtime::Podman),
            "docker" => Err(ContainerError::Docker),
            other => Err(ContainerError::Runtime(other.to_string())),
        }
    }

    pub fn binary(self) -> &'static str {
        match self {
            Runtime::Podman => PODMAN,
        }
    }
}

/// A `HOST:CONTAINER[:ro|:rw]` bind mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    pub host: String,
    pub container: String,
    pub read_only: bool,
}

impl Volume {
    pub fn parse(s: &str) -> Result<Volume, ContainerError> {
        let bad = || ContainerError::Volume(s.to_string());
        let plain = |p: &str| {
            p.starts_with('/')
                && !p.contains("..")
                && !p
                    .chars()
                    .any(|c| c.is_whitespace() || "\"'\\:,".contains(c))
        };
        let parts: Vec<&str> = s.split(':').collect();
        let (host, container, read_only) = match parts.as_slice() {
            [h, c] => (*h, *c, false),
            [h, c, "ro"] => (*h, *c, true),
            [h, c, "rw"] => (*h, *c, false),
            _ => return Err(bad()),
        };
        if !plain(host) || !plain(container) {
            return Err(bad());
        }
        Ok(Volume {
            host: host.into(),
            container: container.into(),
            read_only,
        })
    }

    fn arg(&self) -> String {
        let mode = if self.read_only { ":ro" } else { "" };
        format!("--volume={}:{}{mode}", self.host, self.container)
    }
}

/// Checks an image reference: `[REGISTRY[:PORT]/]PATH[:TAG][@DIGEST]`.
pub fn check_image(s: &str) -> Result<(), ContainerError> {
    let bad = || ContainerError::Image(s.to_string());
    if s.is_empty() || s.len() > MAX_IMAGE_LEN || s.starts_with('-') {
        return Err(bad());
    }
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let hex = d.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
    }
    // A tag follows the last `:` after the last `/` (a registry port does not).
    let last = name.rsplit('/').next().unwrap_or(name);
    let (path, tag) = match last.rsplit_once(':') {
        Some((_, t)) => (&name[..name.len() - t.len() - 1], Some(t)),
        None => (name, None),
    };
    let tag_ok = |t: &str| {
        !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    };
    if tag.is_some_and(|t| !tag_ok(t)) {
        return Err(bad());
    }
    let component = |c: &str, first: bool| {
        let port_ok = first && c.contains(':');
        !c.is_empty()
            && c.chars().all(|ch| {
                ch.is_ascii_lowercase()
                    || ch.is_ascii_digit()
                    || "._-".contains(ch)
                    || (port_ok && (ch == ':' || ch.is_ascii_uppercase()))
                    || (first && ch.is_ascii_uppercase() && c.contains('.'))
            })
    };
    let comps: Vec<&str> = path.split('/').collect();
    let many = comps.len() > 1;
    if !comps
        .iter()
        .enumerate()
        .all(|(i, c)| component(c, i == 0 && many))
    {
        return Err(bad());
    }
    Ok(())
}

/// A signal name as systemd and the engines take it: `HUP` for `SIGHUP`.
pub fn parse_signal(s: &str) -> Result<String, ContainerError> {
    let upper = s.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&full)
        .map(|sig| sig.as_str().trim_start_matches("SIG").to_string())
        .map_err(|_| ContainerError::Signal(s.to_string()))
}

/// Options orch sets itself: given again in `container_args`, they would
/// break the naming, labels, cgroup placement or readiness orch relies on.
const RESERVED: &[&str] = &[
    "--name",
    "--replace",
    "--rm",
    "--cgroups",
    "--sdnotify",
    "--label",
    "-l",
    "--detach",
    "-d",
    "--cgroup-parent",
    "--log-driver",
];

/// Refuses an argument that overrides one orch sets.
pub fn check_arg(a: &str) -> Result<(), ContainerError> {
    let opt = a.split('=').next().unwrap_or(a);
    if RESERVED.contains(&opt) {
        return Err(ContainerError::ReservedArg(opt.to_string()));
    }
    Ok(())
}

/// How the unit learns that the container is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Readiness {
    /// `type = "notify"`: the application says READY=1 from inside.
    Container,
    /// Otherwise: conmon says ready once the container runs.
    Conmon,
}

/// A container-backed unit, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    pub runtime: Runtime,
    pub image: String,
    /// The container's name: the unit's name without `.service`.
    pub name: String,
    /// `exec_start` as written: what runs in the container.
    pub command: String,
    pub volumes: Vec<Volume>,
    pub args: Vec<String>,
    /// `--user`, from the section's `user`/`group`.
    pub user: Option<String>,
    /// `--workdir`, from `working_directory`.
    pub workdir: Option<String>,
    /// `--env NAME` for each `environment` key (the value is the unit's).
    pub env: Vec<String>,
    pub env_file: Option<String>,
    pub readiness: Readiness,
}

/// Quotes one argument for a unit's command line when it needs it.
fn sd_arg(a: &str) -> String {
    if !a.is_empty() && !a.chars().any(|c| c.is_whitespace() || "\"'\\;".contains(c)) {
        return a.to_string();
    }
    let escaped = a.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

impl Container {
    /// `ExecStart=`: the container in the foreground of the unit, in the
    /// unit's own cgroup (`--cgroups=disabled`: conmon and the container's
    /// processes stay where systemd put podman), named after the unit,
    /// labelled with the deployment, output to the unit's journal.
    pub fn exec_start(&self, deployment: &str, unit: &str) -> String {
        let sdnotify = match self.readiness {
            Readiness::Container => "container",
            Readiness::Conmon => "conmon",
        };
        let mut a: Vec<String> = vec![
            self.runtime.binary().into(),
            "run".into(),
            format!("--name={}", self.name),
            "--replace".into(),
            "--rm".into(),
            "--init".into(),
            "--pull=never".into(),
            "--cgroups=disabled".into(),
            format!("--sdnotify={sdnotify}"),
            "--detach".into(),
            "--log-driver=passthrough".into(),
            "--network=host".into(),
            format!("--label=orch.deployment={deployment}"),
            format!("--label=orch.unit={unit}"),
        ];
        a.extend(self.user.iter().map(|u| format!("--user={u}")));
        a.extend(self.workdir.iter().map(|w| format!("--workdir={w}")));
        a.extend(self.env.iter().map(|e| format!("--env={e}")));
        a.extend(self.env_file.iter().map(|f| format!("--env-file={f}")));
        a.extend(self.volumes.iter().map(Volume::arg));
        a.extend(self.args.iter().cloned());
        a.push(self.image.clone());
        let head: Vec<String> = a.iter().map(|x| sd_arg(x)).collect();
        format!("{} {}", head.join(" "), self.command)
    }

    /// `ExecReload=`: the signal to the container's main process.
    pub fn exec_reload(&self, signal: &str) -> String {
        let bin = self.runtime.binary();
        format!("{bin} kill --signal={signal} {}", self.name)
    }

    /// `ExecStop=`: within the unit's stop timeout, less a second so the
    /// engine's own kill comes before systemd's.
    pub fn exec_stop(&self, stop: std::time::Duration) -> String {
        let secs = stop.as_secs().saturating_sub(1).max(1);
        let bin = self.runtime.binary();
        format!("{bin} stop --ignore --time={secs} {}", self.name)
    }

    /// `ExecStopPost=`: no record of the container is left, even after a crash.
    pub fn exec_stop_post(&self) -> String {
        let bin = self.runtime.binary();
        format!("-{bin} rm --force --ignore {}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_references() {
        for ok in [
            "busybox",
            "localhost/orch-tiny",
            "docker.io/matrixdotorg/synapse:v1.98.0",
            "registry.example:5000/a/b:1.0",
            &format!("a/b@sha256:{}", "0".repeat(64)),
        ] {
            assert_eq!(check_image(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Busybox",
            "a b",
            "-x",
            "a//b",
            "a:",
            "a@sha256:12",
            "a:t t",
        ] {
            assert!(check_image(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes_are_two_absolute_paths_and_a_mode() {
        let v = Volume::parse("/usr:/usr:ro").unwrap();
        assert!(v.read_only && v.host == "/usr");
        assert!(!Volume::parse("/a:/b").unwrap().read_only);
        assert!(!Volume::parse("/a:/b:rw").unwrap().read_only);
        for bad in [
            "/a",
            "a:/b",
            "/a:b",
            "/a:/b:x",
            "/a b:/b",
            "/a:/b:ro:z",
            "/../x:/y",
        ] {
            assert!(Volume::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signals_by_name_with_or_without_sig() {
        assert_eq!(parse_signal("HUP").unwrap(), "HUP");
        assert_eq!(parse_signal("sigusr1").unwrap(), "USR1");
        assert!(parse_signal("BOGUS").is_err());
        assert!(parse_signal("").is_err());
    }

    #[test]
    fn docker_is_refused_with_why() {
        let e = Runtime::parse("docker").unwrap_err();
        assert!(e.to_string().contains("outside the unit's cgroup"), "{e}");
        assert!(Runtime::parse("rkt").is_err());
        assert_eq!(
            check_arg("--name=x"),
            Err(ContainerError::ReservedArg("--name".into()))
        );
        assert_eq!(check_arg("--memory=1g"), Ok(()));
    }

    #[test]
    fn command_lines_name_label_and_keep_the_cgroup() {
        let c = Container {
            runtime: Runtime::Podman,
            image: "localhost/tiny".into(),
            name: "fx-worker-0-a".into(),
            command: "/bin/w --port 9000".into(),
            volumes: vec![Volume::parse("/usr:/usr:ro").unwrap()],
            args: vec!["--security-opt=label=disable".into(), "a b".into()],
            user: None,
            workdir: None,
            env: vec!["A".into()],
            env_file: None,
            readiness: Readiness::Container,
        };
        let s = c.exec_start("fx", "fx-worker-0-a.service");
        assert!(
            s.starts_with("/usr/bin/podman run --name=fx-worker-0-a --replace --rm --init"),
            "{s}"
        );
        for part in [
            "--cgroups=disabled",
            "--sdnotify=container",
            "--label=orch.deployment=fx",
            "--label=orch.unit=fx-worker-0-a.service",
            "--env=A",
            "--volume=/usr:/usr:ro",
            "\"a b\" localhost/tiny /bin/w --port 9000",
        ] {
            assert!(s.contains(part), "{part} in {s}");
        }
        assert_eq!(
            c.exec_reload("HUP"),
            "/usr/bin/podman kill --signal=HUP fx-worker-0-a"
        );
        let stop = c.exec_stop(std::time::Duration::from_secs(30));
        assert_eq!(
            stop,
            "/usr/bin/podman stop --ignore --time=29 fx-worker-0-a"
        );
        assert!(c
            .exec_stop_post()
            .starts_with("-/usr/bin/podman rm --force --ignore"));
    }
}

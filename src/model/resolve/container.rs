//! The resolver's part for containers: `image`, `runtime`, `volumes`,
//! `container_args` and `reload_signal` of a section (checked by
//! [`crate::model::container`]), applied to the resolved service.

use super::Resolver;
use crate::config::{ConfigError, RawContainer, S};
use crate::model::container::{
    check_arg, check_image, parse_signal, Container, ContainerError, Readiness, Runtime, Volume,
};
use crate::model::Service;

impl Resolver<'_> {
    /// Makes `service` container-backed when the section has an `image`,
    /// and renders `reload_signal` as its `ExecReload=`.
    pub(super) fn container(
        &self,
        r: &RawContainer<'_>,
        section: &str,
        deployment: &str,
        service: &mut Service,
    ) -> Result<(), ConfigError> {
        let at = |k: &str| format!("{section}.{k}");
        let signal = match r.reload_signal {
            Some(v) => Some(self.checked(v, &at("reload_signal"), parse_signal)?),
            None => None,
        };
        if let (Some(_), Some(v)) = (&signal, r.reload_signal) {
            if service.exec_reload.is_some() {
                let msg = "give either exec_reload or reload_signal, not both";
                return Err(self.err(v.span(), &at("reload_signal"), msg));
            }
        }
        let Some(image) = r.image else {
            self.no_container_keys(r, section)?;
            if let Some(sig) = signal {
                service.exec_reload = Some(format!("/bin/kill -s {sig} $MAINPID"));
            }
            return Ok(());
        };
        check_image(image.get_ref()).map_err(|e| self.cerr(image, &at("image"), e))?;
        let runtime = match r.runtime {
            Some(v) => self.checked(v, &at("runtime"), Runtime::parse)?,
            None => Runtime::Podman,
        };
        let c = Container {
            runtime,
            image: image.get_ref().clone(),
            name: service.name.clone(),
            command: service.exec_start.clone(),
            volumes: self.list(r.volumes, &at("volumes"), Volume::parse)?,
            args: self.list(r.container_args, &at("container_args"), |a| {
                check_arg(a).map(|()| a.to_string())
            })?,
            user: match (&service.user, &service.group) {
                (Some(u), Some(g)) => Some(format!("{u}:{g}")),
                (Some(u), None) => Some(u.clone()),
                (None, Some(g)) => Some(format!("0:{g}")),
                (None, None) => None,
            },
            workdir: service.working_directory.take(),
            env: service.environment.keys().cloned().collect(),
            env_file: service.environment_file.clone(),
            readiness: match service.service_type.as_str() {
                "notify" => Readiness::Container,
                _ => Readiness::Conmon,
            },
        };
        apply(service, c, deployment, signal);
        Ok(())
    }

    /// The container keys without `image` are refused, not ignored.
    fn no_container_keys(&self, r: &RawContainer<'_>, section: &str) -> Result<(), ConfigError> {
        let err = |span, k: &str| {
            let key = format!("{section}.{k}");
            Err(self.err(span, &key, ContainerError::NeedsImage.to_string()))
        };
        if let Some(v) = r.runtime {
            return err(v.span(), "runtime");
        }
        if let Some(v) = r.volumes {
            return err(v.span(), "volumes");
        }
        if let Some(v) = r.container_args {
            return err(v.span(), "container_args");
        }
        Ok(())
    }

    fn checked<T>(
        &self,
        v: &S<String>,
        key: &str,
        check: impl Fn(&str) -> Result<T, ContainerError>,
    ) -> Result<T, ConfigError> {
        check(v.get_ref()).map_err(|e| self.cerr(v, key, e))
    }

    fn list<T>(
        &self,
        v: Option<&S<Vec<S<String>>>>,
        key: &str,
        check: impl Fn(&str) -> Result<T, ContainerError>,
    ) -> Result<Vec<T>, ConfigError> {
        let Some(v) = v else { return Ok(Vec::new()) };
        v.get_ref()
            .iter()
            .map(|item| {
                self.value(item, key)?;
                self.checked(item, key, &check)
            })
            .collect()
    }

    fn cerr(&self, v: &S<String>, key: &str, e: ContainerError) -> ConfigError {
        self.err(v.span(), key, e.to_string())
    }
}

/// The unit's command lines and type for a container: the engine is what
/// the unit runs; systemd's `User=`/`WorkingDirectory=` would apply to the
/// engine, so they go to the container instead.
fn apply(service: &mut Service, c: Container, deployment: &str, signal: Option<String>) {
    service.exec_start = c.exec_start(deployment, &service.unit);
    service.exec_reload = Some(c.exec_reload(signal.as_deref().unwrap_or("HUP")));
    service.exec_stop = Some(c.exec_stop(service.bounds.stop));
    service.exec_stop_post = Some(c.exec_stop_post());
    // conmon (the main process) or the application through conmon's proxy
    // sends READY=1: both are notify, from a process other than podman.
    service.service_type = "notify".into();
    service.notify_access = Some("all".into());
    service.user = None;
    service.group = None;
    service.container = Some(c);
}

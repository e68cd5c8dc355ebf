//! polkit: what orch asks for, and whether the caller may, before anything
//! is changed.

use std::collections::HashMap;

use super::{Systemd, SystemdError};

/// polkit actions orch needs, by what it does.
pub mod actions {
    pub const MANAGE_UNITS: &str = "org.freedesktop.systemd1.manage-units";
    pub const MANAGE_UNIT_FILES: &str = "org.freedesktop.systemd1.manage-unit-files";
    pub const RELOAD_DAEMON: &str = "org.freedesktop.systemd1.reload-daemon";
}

impl Systemd {
    /// Fails before anything is changed when a non-root caller may not do
    /// `actions`: systemd trusts root and asks polkit for everyone else, so
    /// orch asks polkit first (without interaction) rather than finding out
    /// half-way through an install.
    pub async fn preflight(&self, what: &str, actions: &[&str]) -> Result<(), SystemdError> {
        let Some(name) = self.conn.unique_name() else {
            return Ok(());
        };
        // Over SSH the caller systemd sees is the remote login, not this process.
        let uid = match self.remote() {
            None => nix::unistd::geteuid().as_raw(),
            Some(_) => {
                let reply = self
                    .conn
                    .call_method(
                        Some("org.freedesktop.DBus"),
                        "/org/freedesktop/DBus",
                        Some("org.freedesktop.DBus"),
                        "GetConnectionUnixUser",
                        &(name.as_str(),),
                    )
                    .await
                    .map_err(|e| self.err("ask the bus who orch is", e))?;
                reply
                    .body()
                    .deserialize::<u32>()
                    .map_err(|e| self.err("read the bus's answer", e))?
            }
        };
        if uid == 0 {
            return Ok(());
        }
        for action in actions {
            let mut subject = HashMap::new();
            subject.insert("name", zbus::Variant::from(name.as_str()));
            let details: HashMap<&str, &str> = HashMap::new();
            let reply = self
                .conn
                .call_method(
                    Some("org.freedesktop.PolicyKit1"),
                    "/org/freedesktop/PolicyKit1/Authority",
                    Some("org.freedesktop.PolicyKit1.Authority"),
                    "CheckAuthorization",
                    &(("system-bus-name", subject), *action, details, 0u32, ""),
                )
                .await;
            let denied = |detail: String| SystemdError::PermissionDenied {
                action: what.to_string(),
                detail,
            };
            match reply {
                Ok(msg) => {
                    let (authorized, challenge, _): (bool, bool, HashMap<String, String>) = msg
                        .body()
                        .deserialize()
                        .map_err(|e| self.err("read polkit's answer", e))?;
                    if !authorized {
                        return Err(denied(format!(
                            "polkit does not grant {action} to uid {uid}{}",
                            if challenge {
                                " without interactive authentication"
                            } else {
                                ""
                            }
                        )));
                    }
                }
                Err(zbus::Error::MethodError(n, _, _))
                    if matches!(
                        n.as_str(),
                        "org.freedesktop.DBus.Error.ServiceUnknown"
                            | "org.freedesktop.DBus.Error.NameHasNoOwner"
                    ) =>
                {
                    return Err(denied(format!(
                        "polkit is not running, so systemd lets only root {action}; uid {uid} is not root"
                    )));
                }
                Err(e) => return Err(self.err(format!("ask polkit about {action}"), e)),
            }
        }
        Ok(())
    }
}

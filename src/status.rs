//! `orch status`: one row per unit of the deployment, read in one
//! `ListUnitsByPatterns` call plus concurrent property reads.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use serde::Serialize;
use zbus::fdo::PropertiesProxy;
use zbus::names::InterfaceName;
use zbus::proxy::CacheProperties;
use zbus::OwnedObjectPath;

use crate::health::{self, Limits};
use crate::lifecycle::Member;
use crate::model::Role;
use crate::systemd::{Systemd, SystemdError};

#[derive(Debug, Clone, Serialize)]
pub struct UnitStatus {
    pub unit: String,
    pub host: String,
    pub role: Role,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub main_pid: Option<u32>,
    /// Milliseconds since the last change of ActiveState.
    pub since_ms: Option<u64>,
    pub restarts: Option<u32>,
    /// `ok`, the probe's failure, or absent when there is no probe or the unit is not active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

/// Reads the state of every member.
pub async fn status(
    sd: &Systemd,
    members: &[Member],
    limits: Limits,
) -> Result<Vec<UnitStatus>, SystemdError> {
    let patterns: Vec<&str> = members.iter().map(|m| m.unit.as_str()).collect();
    let listed = sd
        .manager
        .list_units_by_patterns(&[], &patterns)
        .await
        .map_err(|e| sd.err("list units", e))?;
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64;
    let rows = members.iter().map(|m| {
        let entry = listed.iter().find(|e| e.0 == m.unit);
        async move {
            let mut row = UnitStatus {
                unit: m.unit.clone(),
                host: m.host.clone(),
                role: m.role,
                load_state: "not-found".into(),
                active_state: "inactive".into(),
                sub_state: "dead".into(),
                main_pid: None,
                since_ms: None,
                restarts: None,
                health: None,
            };
            let Some(e) = entry else {
                // Not loaded (e.g. masked and stopped, so systemd let it go):
                // ask for it, so a mask shows as "masked", not "not-found".
                let _call = sd.permit().await;
                if let Ok(u) = sd.unit(&m.unit).await {
                    if let Ok(load) = u.load_state().await {
                        row.load_state = load;
                    }
                }
                return row;
            };
            row.load_state = e.2.clone();
            row.active_state = e.3.clone();
            row.sub_state = e.4.clone();
            let call = sd.permit().await;
            let (pid, restarts, changed) = properties(sd, e.6.clone()).await;
            drop(call);
            row.main_pid = pid.filter(|p| *p != 0);
            row.restarts = restarts;
            row.since_ms = changed
                .filter(|t| *t > 0 && *t <= now_us)
                .map(|t| (now_us - t) / 1000);
            if let (Some(probe), "active") = (&m.health, row.active_state.as_str()) {
                row.health = Some(match health::check(probe, limits, sd.remote()).await {
                    Ok(()) => "ok".into(),
                    Err(e) => e,
                });
            }
            row
        }
    });
    Ok(join_all(rows).await)
}

/// The rows of units on a host orch could not reach: what is known is
/// that nothing is known.
pub fn unreachable(members: &[Member]) -> Vec<UnitStatus> {
    members
        .iter()
        .map(|m| UnitStatus {
            unit: m.unit.clone(),
            host: m.host.clone(),
            role: m.role,
            load_state: "unknown".into(),
            active_state: "unreachable".into(),
            sub_state: "unknown".into(),
            main_pid: None,
            since_ms: None,
            restarts: None,
            health: None,
        })
        .collect()
}

/// MainPID, NRestarts and StateChangeTimestamp, read concurrently.
async fn properties(
    sd: &Systemd,
    path: OwnedObjectPath,
) -> (Option<u32>, Option<u32>, Option<u64>) {
    let Ok(props) = PropertiesProxy::builder(&sd.conn)
        .destination("org.freedesktop.systemd1")
        .path(path)
        .cache_properties(CacheProperties::No)
        .build()
        .await
    else {
        return (None, None, None);
    };
    let service = InterfaceName::from_static_str_unchecked("org.freedesktop.systemd1.Service");
    let unit = InterfaceName::from_static_str_unchecked("org.freedesktop.systemd1.Unit");
    let (pid, restarts, changed) = tokio::join!(
        props.get(service.clone(), "MainPID"),
        props.get(service, "NRestarts"),
        props.get(unit, "StateChangeTimestamp"),
    );
    (
        pid.ok().and_then(|v| u32::try_from(v).ok()),
        restarts.ok().and_then(|v| u32::try_from(v).ok()),
        changed.ok().and_then(|v| u64::try_from(v).ok()),
    )
}

/// `1h2m`, `3m4s`, `5.2s`: short, for a table.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86400 {
        format!("{}d{}h", s / 86400, s % 86400 / 3600)
    } else if s >= 3600 {
        format!("{}h{}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

//! The status table: a row per unit, or per worker kind when the terminal
//! is too short, from [`crate::status::UnitStatus`] rows.

use std::time::Duration;

use crate::model::Role;
use crate::status::UnitStatus;

/// `512.0M`, `1.5G`, `300K`: bytes in base 1024, short, for a table.
pub fn short_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1}{}", UNITS[i])
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

/// One row of the human table: a unit, or every worker of one kind.
struct Row {
    host: String,
    unit: String,
    role: String,
    active: String,
    sub: String,
    pid: String,
    since: String,
    restarts: String,
    memory: String,
    cpu: String,
    health: String,
}

impl Row {
    fn of(r: &UnitStatus) -> Row {
        let dash = || "-".to_string();
        Row {
            host: r.host.clone(),
            unit: r.unit.clone(),
            role: role_name(r.role),
            active: r.active_state.clone(),
            sub: r.sub_state.clone(),
            pid: r.main_pid.map_or_else(dash, |p| p.to_string()),
            since: r
                .since_ms
                .map_or_else(dash, |ms| short_duration(Duration::from_millis(ms))),
            restarts: r.restarts.map_or_else(dash, |n| n.to_string()),
            memory: r.memory_current.map_or_else(dash, short_bytes),
            cpu: r
                .cpu_usage_nsec
                .map_or_else(dash, |ns| short_duration(Duration::from_nanos(ns))),
            health: r.health.clone().unwrap_or_else(dash),
        }
    }

    /// Every worker of one kind on one host: counts instead of states.
    fn group(kind: &str, members: &[&UnitStatus]) -> Row {
        let n = members.len();
        let active = members.iter().filter(|r| r.is_active()).count();
        let probed = members.iter().filter(|r| r.health.is_some()).count();
        let ok = members
            .iter()
            .filter(|r| r.health.as_deref() == Some("ok"))
            .count();
        let restarts: u32 = members.iter().filter_map(|r| r.restarts).sum();
        // Totals of the kind: what its units use together right now.
        let total = |v: Vec<u64>| (!v.is_empty()).then(|| v.iter().sum::<u64>());
        let memory = total(members.iter().filter_map(|r| r.memory_current).collect());
        let cpu = total(members.iter().filter_map(|r| r.cpu_usage_nsec).collect());
        Row {
            host: members[0].host.clone(),
            unit: format!("{kind} ×{n}"),
            role: "workers".into(),
            active: format!("{active}/{n}"),
            sub: "-".into(),
            pid: "-".into(),
            since: "-".into(),
            restarts: restarts.to_string(),
            memory: memory.map_or_else(|| "-".into(), short_bytes),
            cpu: cpu.map_or_else(|| "-".into(), |ns| short_duration(Duration::from_nanos(ns))),
            health: if probed == 0 {
                "-".into()
            } else {
                format!("{ok}/{probed} ok")
            },
        }
    }

    fn line(&self, hosts: bool) -> String {
        let host = if hosts {
            format!("{:<12} ", self.host)
        } else {
            String::new()
        };
        format!(
            "{host}{:<50} {:<10} {:<11} {:<12} {:>8} {:>8} {:>8} {:>8} {:>8}  {}\n",
            self.unit,
            self.role,
            self.active,
            self.sub,
            self.pid,
            self.since,
            self.restarts,
            self.memory,
            self.cpu,
            self.health
        )
    }
}

fn role_name(role: Role) -> String {
    serde_json::to_value(role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The human table. With `kinds` (unit → worker kind), workers are shown one
/// row per kind and host (count, active, healthy, restarts), for a terminal
/// too short for a row per unit; without, one row per unit.
pub fn table(
    rows: &[UnitStatus],
    hosts: bool,
    kinds: Option<&std::collections::HashMap<String, String>>,
) -> String {
    let header = Row {
        host: "HOST".into(),
        unit: if kinds.is_some() {
            "UNIT / KIND"
        } else {
            "UNIT"
        }
        .into(),
        role: "ROLE".into(),
        active: "ACTIVE".into(),
        sub: "SUB".into(),
        pid: "PID".into(),
        since: "SINCE".into(),
        restarts: "RESTARTS".into(),
        memory: "MEMORY".into(),
        cpu: "CPU".into(),
        health: "HEALTH".into(),
    };
    let mut text = header.line(hosts);
    let mut grouped: Vec<((String, String), Vec<&UnitStatus>)> = Vec::new();
    for r in rows {
        match kinds.and_then(|k| k.get(&r.unit)) {
            Some(kind) => {
                let key = (r.host.clone(), kind.clone());
                match grouped.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.push(r),
                    None => grouped.push((key, vec![r])),
                }
            }
            None => text.push_str(&Row::of(r).line(hosts)),
        }
    }
    for ((_, kind), members) in &grouped {
        text.push_str(&Row::group(kind, members).line(hosts));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(unit: &str, role: Role, active: &str, health: Option<&str>) -> UnitStatus {
        UnitStatus {
            unit: unit.into(),
            host: "local".into(),
            role,
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: "running".into(),
            main_pid: Some(7),
            since_ms: Some(1500),
            restarts: Some(1),
            memory_current: Some(300 << 20),
            cpu_usage_nsec: Some(1_500_000_000),
            image: None,
            container_state: None,
            health: health.map(str::to_string),
        }
    }

    #[test]
    fn workers_group_by_kind_with_counts() {
        let rows = vec![
            row("fx.service", Role::Master, "active", Some("ok")),
            row(
                "fx-worker-0-generic.service",
                Role::Worker,
                "active",
                Some("ok"),
            ),
            row("fx-worker-1-generic.service", Role::Worker, "failed", None),
            row("fx-worker-2-pusher.service", Role::Worker, "active", None),
        ];
        let kinds = [("generic", 0), ("generic", 1), ("pusher", 2)]
            .iter()
            .map(|(k, i)| (rows[i + 1].unit.clone(), k.to_string()))
            .collect();
        let text = table(&rows, false, Some(&kinds));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].starts_with("fx.service "), "{text}");
        assert!(lines[2].starts_with("generic ×2 "), "{text}");
        assert!(
            lines[2].contains(" 1/2 ") && lines[2].ends_with("1/1 ok"),
            "{text}"
        );
        assert!(
            lines[2].contains("       2  "),
            "restarts are summed: {text}"
        );
        assert!(
            lines[3].starts_with("pusher ×1 ") && lines[3].ends_with("  -"),
            "{text}"
        );
        let flat = table(&rows, false, None);
        assert_eq!(flat.lines().count(), 5, "{flat}");
    }

    #[test]
    fn memory_and_cpu_per_unit_and_totals_per_kind() {
        let mut rows = vec![
            row("fx.service", Role::Master, "active", None),
            row("fx-worker-0-generic.service", Role::Worker, "active", None),
            row("fx-worker-1-generic.service", Role::Worker, "active", None),
            row("fx-worker-2-pusher.service", Role::Worker, "failed", None),
        ];
        rows[2].memory_current = Some(724 << 20);
        rows[3].memory_current = None;
        rows[3].cpu_usage_nsec = None;
        let kinds = [(1, "generic"), (2, "generic"), (3, "pusher")]
            .iter()
            .map(|(i, k)| (rows[*i].unit.clone(), k.to_string()))
            .collect();
        let text = table(&rows, false, Some(&kinds));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("  MEMORY      CPU  HEALTH"), "{text}");
        assert!(lines[1].contains("  300.0M     1.5s  "), "{text}");
        // 300M + 724M, 1.5s + 1.5s.
        assert!(lines[2].starts_with("generic ×2 "), "{text}");
        assert!(lines[2].contains("    1.0G     3.0s  "), "{text}");
        assert!(lines[3].contains("       -        -  "), "{text}");
        let flat = table(&rows, false, None);
        assert!(flat.lines().nth(3).unwrap().contains("  724.0M "), "{flat}");
        let json = serde_json::to_value(&rows[1]).unwrap();
        assert_eq!(json["memory_current"], 300 << 20);
        assert_eq!(json["cpu_usage_nsec"], 1_500_000_000u64);
    }

    #[test]
    fn sizes_are_short() {
        assert_eq!(short_bytes(512), "512B");
        assert_eq!(short_bytes(1536), "1.5K");
        assert_eq!(short_bytes(2 << 30), "2.0G");
    }
}

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
    /// `restart needed` (per unit) or how many need one (per kind).
    note: String,
    /// The engine's state and the image, for a container unit; empty for a
    /// bare one (a table without container units has no such column).
    container: String,
}

impl Row {
    fn of(r: &UnitStatus) -> Row {
        let dash = || "-".to_string();
        Row {
            host: r.host.clone(),
            unit: r.unit.clone(),
            role: role_name(r.role),
            active: r.active_state.to_string(),
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
            note: match r.restart_needed {
                true => "restart needed".into(),
                false => String::new(),
            },
            container: container_cell(r),
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
        let stale = members.iter().filter(|r| r.restart_needed).count();
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
            note: match stale {
                0 => String::new(),
                k => format!("{k}/{n} restart needed"),
            },
            container: group_container_cell(members),
        }
    }

    fn cells(self) -> [String; COLUMNS] {
        [
            self.host,
            self.unit,
            self.role,
            self.active,
            self.sub,
            self.pid,
            self.since,
            self.restarts,
            self.memory,
            self.cpu,
            self.health,
            self.container,
            self.note,
        ]
    }
}

/// The columns in the order shown; numbers are right-aligned.
const COLUMNS: usize = 13;
const RIGHT: [bool; COLUMNS] = [
    false, false, false, false, false, true, true, true, true, true, false, false, false,
];
const HOST: usize = 0;
const UNIT: usize = 1;
const ROLE: usize = 2;
const SUB: usize = 4;
const PID: usize = 5;
const RESTARTS: usize = 7;
const MEMORY: usize = 8;
const CPU: usize = 9;
/// Column titles, by index.
const TITLES: [&str; COLUMNS] = [
    "HOST",
    "UNIT",
    "ROLE",
    "ACTIVE",
    "SUB",
    "PID",
    "SINCE",
    "RESTARTS",
    "MEMORY",
    "CPU",
    "HEALTH",
    "CONTAINER",
    "",
];
const CONTAINER: usize = 11;
/// `restart needed`: last, untitled, there only for some rows.
const NOTE: usize = 12;
/// Dropped first when the table is wider than the terminal; UNIT, ACTIVE,
/// HEALTH (and HOST on several hosts) stay.
const DROP_ORDER: [usize; 6] = [CPU, MEMORY, SUB, ROLE, PID, RESTARTS];
const GAP: &str = "  ";
const HEALTH: usize = 10;
/// The room HEALTH is counted with when deciding what to drop.
const HEALTH_ROOM: usize = 16;
/// A unit name is never cut shorter than this.
const MIN_UNIT: usize = 16;

fn width(s: &str) -> usize {
    s.chars().count()
}

/// `s` cut to `n` characters, the last one `…` when cut.
fn cut(s: &str, n: usize) -> String {
    if width(s) <= n {
        return s.to_string();
    }
    let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// Lays out `rows` (the header first) within `limit` columns: drops columns
/// by priority, then shortens the unit names, then cuts the last column.
fn layout(rows: Vec<[String; COLUMNS]>, shown: &mut Vec<usize>, limit: Option<usize>) -> String {
    let widths: Vec<usize> = (0..COLUMNS)
        .map(|c| rows.iter().map(|r| width(&r[c])).max().unwrap_or(0))
        .collect();
    let total = |shown: &[usize], w: &[usize]| -> usize {
        shown.iter().map(|c| w[*c]).sum::<usize>() + GAP.len() * shown.len().saturating_sub(1)
    };
    let mut widths = widths;
    if let Some(limit) = limit {
        // A long probe failure is cut, not a reason to drop columns.
        let mut fit = widths.clone();
        fit[HEALTH] = fit[HEALTH].min(HEALTH_ROOM);
        for c in DROP_ORDER {
            if total(shown, &fit) <= limit {
                break;
            }
            shown.retain(|s| *s != c);
        }
        let over = total(shown, &fit).saturating_sub(limit);
        widths[UNIT] = widths[UNIT]
            .saturating_sub(over)
            .max(MIN_UNIT.min(widths[UNIT]));
    }
    let mut text = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, c) in shown.iter().enumerate() {
            let cell = cut(&r[*c], widths[*c]);
            let last = i + 1 == shown.len();
            if i > 0 {
                line.push_str(GAP);
            }
            match (RIGHT[*c], last) {
                (_, true) => line.push_str(&cell),
                (true, false) => line.push_str(&format!("{cell:>w$}", w = widths[*c])),
                (false, false) => line.push_str(&format!("{cell:<w$}", w = widths[*c])),
            }
        }
        if let Some(limit) = limit {
            line = cut(&line, limit);
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// `running localhost/app:1`: the engine's state (the reason why it could not
/// be asked is in the JSON output) and the image.
fn container_cell(r: &UnitStatus) -> String {
    let Some(image) = &r.image else {
        return String::new();
    };
    let state = r.container_state.as_deref().unwrap_or("-");
    let state = state.split(':').next().unwrap_or(state);
    format!("{state} {image}")
}

/// `2/3 running localhost/app:1` for a kind's containers.
fn group_container_cell(members: &[&UnitStatus]) -> String {
    let with: Vec<&&UnitStatus> = members.iter().filter(|r| r.image.is_some()).collect();
    let Some(first) = with.first() else {
        return String::new();
    };
    let running = with
        .iter()
        .filter(|r| r.container_state.as_deref() == Some("running"))
        .count();
    let same = with.iter().all(|r| r.image == first.image);
    let image = match same {
        true => first.image.clone().unwrap_or_default(),
        false => "(several images)".into(),
    };
    format!("{running}/{} running {image}", with.len())
}

fn role_name(role: Role) -> String {
    serde_json::to_value(role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The human table. With `kinds` (unit → worker kind), workers are shown one
/// row per kind and host (count, active, healthy, restarts), for a terminal
/// too short for a row per unit; without, one row per unit. With `width`
/// (a terminal's), columns are dropped or shortened by priority to fit.
/// MEMORY and CPU are left out when no unit has a figure, and a note says
/// why.
pub fn table(
    rows: &[UnitStatus],
    hosts: bool,
    kinds: Option<&std::collections::HashMap<String, String>>,
    width: Option<usize>,
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
        container: "CONTAINER".into(),
        note: String::new(),
    };
    let mut cells = vec![header.cells()];
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
            None => cells.push(Row::of(r).cells()),
        }
    }
    for ((_, kind), members) in &grouped {
        cells.push(Row::group(kind, members).cells());
    }
    let containers = rows.iter().any(|r| r.image.is_some());
    let mut shown: Vec<usize> = (0..COLUMNS)
        .filter(|c| hosts || *c != HOST)
        .filter(|c| containers || *c != CONTAINER)
        .filter(|c| *c != NOTE || rows.iter().any(|r| r.restart_needed))
        .collect();
    let unaccounted = rows
        .iter()
        .all(|r| r.memory_current.is_none() && r.cpu_usage_nsec.is_none());
    if unaccounted {
        shown.retain(|c| *c != MEMORY && *c != CPU);
    }
    let mut text = layout(cells, &mut shown, width);
    if unaccounted && rows.iter().any(UnitStatus::is_active) {
        text.push_str("(no MEMORY, CPU: systemd accounts neither for these units here)\n");
    }
    let dropped: Vec<&str> = DROP_ORDER
        .into_iter()
        .filter(|c| !shown.contains(c) && !(unaccounted && (*c == CPU || *c == MEMORY)))
        .map(|c| TITLES[c])
        .collect();
    if !dropped.is_empty() {
        text.push_str(&format!(
            "(left out to fit: {}; --output json has all)\n",
            dropped.join(", ")
        ));
    }
    match width {
        // The notes too: nothing wraps.
        Some(w) => text.lines().map(|l| cut(l, w) + "\n").collect(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::tests::row;

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
        let text = table(&rows, false, Some(&kinds), None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].starts_with("fx.service "), "{text}");
        assert!(lines[2].starts_with("generic ×2 "), "{text}");
        let words: Vec<&str> = lines[2].split_whitespace().collect();
        // UNIT / KIND (2 words), ROLE, ACTIVE, SUB, PID, SINCE, RESTARTS, …
        assert_eq!(words[3], "1/2", "{text}");
        assert_eq!(words[7], "2", "restarts are summed: {text}");
        assert!(lines[2].ends_with("1/1 ok"), "{text}");
        assert!(
            lines[3].starts_with("pusher ×1 ") && lines[3].ends_with(" -"),
            "{text}"
        );
        let flat = table(&rows, false, None, None);
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
        let text = table(&rows, false, Some(&kinds), None);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("  MEMORY   CPU  HEALTH"), "{text}");
        assert!(lines[1].contains("  300.0M  1.5s  "), "{text}");
        // 300M + 724M, 1.5s + 1.5s.
        assert!(lines[2].starts_with("generic ×2 "), "{text}");
        assert!(lines[2].contains("    1.0G  3.0s  "), "{text}");
        assert!(lines[3].contains("       -     -  "), "{text}");
        let flat = table(&rows, false, None, None);
        assert!(flat.lines().nth(3).unwrap().contains("  724.0M "), "{flat}");
        let json = serde_json::to_value(&rows[1]).unwrap();
        assert_eq!(json["memory_current"], 300 << 20);
        assert_eq!(json["cpu_usage_nsec"], 1_500_000_000u64);
    }

    fn sixty() -> Vec<UnitStatus> {
        let mut rows = vec![row("fx.service", Role::Master, "active", Some("ok"))];
        for i in 0..60 {
            let mut r = row(
                &format!("fx-worker-{i}-generic.service"),
                Role::Worker,
                "activating",
                Some("http://127.0.0.1:9000/health: connection refused"),
            );
            r.sub_state = "auto-restart".into();
            rows.push(r);
        }
        rows
    }

    #[test]
    fn the_table_fits_80_and_120_columns_dropping_columns_by_priority() {
        let rows = sixty();
        let wide = table(&rows, false, None, None);
        assert!(wide.lines().nth(2).unwrap().chars().count() > 120, "{wide}");
        for limit in [80, 120] {
            let text = table(&rows, false, None, Some(limit));
            for l in text.lines() {
                assert!(l.chars().count() <= limit, "{limit}: {l:?}\n{text}");
            }
            let header = text.lines().next().unwrap();
            for kept in ["UNIT", "ACTIVE", "SINCE", "HEALTH"] {
                assert!(header.contains(kept), "{limit}: {header}");
            }
            assert!(text.contains("fx-worker-59-generic.service"), "{text}");
        }
        let narrow = table(&rows, false, None, Some(80));
        let header = narrow.lines().next().unwrap();
        assert!(!header.contains("CPU"), "CPU goes first: {narrow}");
        assert!(header.contains("RESTARTS"), "{narrow}");
        assert!(
            narrow.contains("(left out to fit: CPU, MEMORY, SUB, ROLE;"),
            "{narrow}"
        );
        let mid = table(&rows, false, None, Some(120));
        assert!(mid.contains("RESTARTS"), "120 columns keep more: {mid}");
    }

    #[test]
    fn memory_and_cpu_nobody_fills_are_hidden_with_the_reason() {
        let mut rows = sixty();
        for r in &mut rows {
            r.memory_current = None;
            r.cpu_usage_nsec = None;
        }
        let text = table(&rows, false, None, None);
        let header = text.lines().next().unwrap();
        assert!(
            !header.contains("MEMORY") && !header.contains("CPU"),
            "{header}"
        );
        assert!(
            text.contains("no MEMORY, CPU: systemd accounts neither for these units here"),
            "{text}"
        );
        assert!(!text.contains("left out to fit"), "{text}");
    }

    #[test]
    fn container_units_show_state_and_image_and_bare_tables_stay_as_they_were() {
        let mut rows = vec![
            row("fx.service", Role::Master, "active", Some("ok")),
            row("fx-worker-0-generic.service", Role::Worker, "active", None),
            row("fx-worker-1-generic.service", Role::Worker, "failed", None),
        ];
        let bare = table(&rows, false, None, None);
        assert!(!bare.contains("CONTAINER"), "{bare}");
        assert!(bare.lines().nth(1).unwrap().ends_with("  ok"), "{bare}");
        for (r, state) in rows
            .iter_mut()
            .zip(["running", "running", "unknown: timeout"])
        {
            r.image = Some("localhost/app:1".into());
            r.container_state = Some(state.into());
        }
        let text = table(&rows, false, None, None);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("HEALTH  CONTAINER"), "{text}");
        assert!(
            lines[1].ends_with("ok      running localhost/app:1"),
            "{text}"
        );
        assert!(lines[3].ends_with("  unknown localhost/app:1"), "{text}");
        // Columns before HEALTH are where they were.
        assert_eq!(
            lines[1].find("  ok"),
            bare.lines().nth(1).unwrap().find("  ok"),
            "{text}"
        );
        let kinds = [1, 2]
            .iter()
            .map(|&i| (rows[i].unit.clone(), "generic".to_string()))
            .collect();
        let grouped = table(&rows, false, Some(&kinds), None);
        assert!(
            grouped
                .lines()
                .nth(2)
                .unwrap()
                .ends_with("  1/2 running localhost/app:1"),
            "{grouped}"
        );
    }

    #[test]
    fn restart_needed_ends_the_row_of_a_unit_and_is_counted_per_kind() {
        let mut rows = vec![
            row("fx.service", Role::Master, "active", Some("ok")),
            row("fx-worker-0-a.service", Role::Worker, "active", None),
            row("fx-worker-1-a.service", Role::Worker, "active", None),
        ];
        rows[0].restart_needed = true;
        rows[2].restart_needed = true;
        let flat = table(&rows, false, None, None);
        let lines: Vec<&str> = flat.lines().collect();
        // An aligned column of its own, after HEALTH.
        assert!(lines[1].ends_with("ok      restart needed"), "{flat}");
        assert!(!lines[2].contains("restart needed"), "{flat}");
        assert!(lines[3].ends_with("  restart needed"), "{flat}");
        let kinds = (1..3)
            .map(|i| (rows[i].unit.clone(), "a".to_string()))
            .collect();
        let grouped = table(&rows, false, Some(&kinds), None);
        let kind = grouped.lines().find(|l| l.starts_with("a ×2")).unwrap();
        assert!(kind.ends_with("  1/2 restart needed"), "{grouped}");
    }

    #[test]
    fn sizes_are_short() {
        assert_eq!(short_bytes(512), "512B");
        assert_eq!(short_bytes(1536), "1.5K");
        assert_eq!(short_bytes(2 << 30), "2.0G");
    }
}

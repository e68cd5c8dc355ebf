//! The deployment's slice and the resource keys, against a real systemd:
//! what systemd reports for each unit is what the configuration says.

use crate::common::*;
use crate::support::Container;

const CONFIG: &str = r#"
[deployment]
name = "res-fx"
state_dir = "{state}"
runtime_dir = "{masks}"
[master]
exec_start = "/bin/sleep infinity"
memory_max = "256M"
cpu_weight = 50
[[workers]]
kind = "generic"
count = 2
exec_start = "/bin/sleep infinity"
memory_max = "128M"
memory_high = "100M"
cpu_quota = "50%"
tasks_max = 16
[[workers]]
kind = "pusher"
count = 1
exec_start = "/bin/sleep infinity"
"#;

const UNITS: [&str; 4] = [
    "res-fx.service",
    "res-fx-worker-0-generic.service",
    "res-fx-worker-1-generic.service",
    "res-fx-worker-2-pusher.service",
];

/// `systemctl show UNIT -p NAME --value`.
fn show(c: &Container, unit: &str, property: &str) -> String {
    let o = c.systemctl(&["show", unit, "-p", property, "--value"]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn every_unit_runs_in_the_slice_with_the_limits_systemd_reports() {
    // Masks and the maintenance journal as the maintenance tests keep them.
    let dir = tempfile::tempdir().unwrap();
    let masks = dir.path().join("masks");
    std::fs::create_dir(&masks).unwrap();
    let c = Container::builder()
        .bind(&masks, "/run/systemd/system.control")
        .boot();
    let cfg = dir.path().join("orch.toml");
    let text = CONFIG
        .replace("{state}", dir.path().join("state").to_str().unwrap())
        .replace("{masks}", masks.to_str().unwrap());
    std::fs::write(&cfg, text).unwrap();
    orch_ok(&c, &cfg, &["install"]);
    let slice = std::fs::read_to_string(c.unit_dir().join("res-fx.slice")).unwrap();
    assert!(slice.contains("\nX-Orch-Deployment=res-fx\n"), "{slice}");
    orch_ok(&c, &cfg, &["start", "--all"]);

    // `-` nests: res-fx.slice lives in res.slice, as systemd names slices.
    for unit in UNITS {
        assert_eq!(show(&c, unit, "Slice"), "res-fx.slice", "{unit}");
        let cgroup = show(&c, unit, "ControlGroup");
        assert_eq!(cgroup, format!("/res.slice/res-fx.slice/{unit}"));
    }
    assert_eq!(show(&c, "res-fx.slice", "ActiveState"), "active");
    assert_eq!(
        show(&c, "res-fx.service", "MemoryMax"),
        (256u64 << 20).to_string()
    );
    assert_eq!(show(&c, "res-fx.service", "CPUWeight"), "50");
    let w = UNITS[1];
    assert_eq!(show(&c, w, "MemoryMax"), (128u64 << 20).to_string());
    assert_eq!(show(&c, w, "MemoryHigh"), (100u64 << 20).to_string());
    assert_eq!(show(&c, w, "CPUQuotaPerSecUSec"), "500ms");
    assert_eq!(show(&c, w, "TasksMax"), "16");
    assert_eq!(show(&c, UNITS[3], "MemoryMax"), "infinity");

    // Status has memory and CPU time of each running unit, and no row for the slice.
    let v = json(&orch_ok(&c, &cfg, &["status", "--output", "json"]));
    let rows = v["units"].as_array().unwrap();
    let units: Vec<&str> = rows.iter().map(|r| r["unit"].as_str().unwrap()).collect();
    assert_eq!(units, UNITS, "{v}");
    // orch says what systemd says: a number where it accounts the unit,
    // null where it cannot (`[not set]`: a host without the memory or cpu
    // controller, such as a cgroup v1 sandbox).
    for r in rows {
        let unit = r["unit"].as_str().unwrap();
        for (key, property) in [
            ("memory_current", "MemoryCurrent"),
            ("cpu_usage_nsec", "CPUUsageNSec"),
        ] {
            let systemd = show(&c, unit, property).parse::<u64>().ok();
            let orch = r[key].as_u64();
            assert!(r.get(key).is_some(), "{key} missing: {r}");
            assert_eq!(orch.is_some(), systemd.is_some(), "{unit} {key}: {r}");
            if let (Some(o), Some(s)) = (orch, systemd) {
                // Read a moment apart: close, not equal.
                assert!(
                    o > 0 && o.abs_diff(s) < (s / 2).max(16 << 20),
                    "{unit} {key}: {o} vs {s}"
                );
            }
        }
    }
    // The human table has a MEMORY column when systemd accounts memory for
    // some unit, and says why it has none otherwise (this harness's nspawn
    // may not delegate the memory controller).
    let accounted = rows.iter().any(|r| r["memory_current"].is_u64());
    let o = orch_ok(&c, &cfg, &["status", "--all-units"]);
    let text = String::from_utf8_lossy(&o.stdout);
    let header = text.lines().next().unwrap();
    if accounted {
        assert!(header.contains("MEMORY"), "{text}");
    } else {
        assert!(!header.contains("MEMORY"), "{text}");
        assert!(text.contains("(no MEMORY"), "{text}");
    }

    // Maintenance masks and stops the units, never the slice.
    orch_ok(&c, &cfg, &["stop-for-maintenance"]);
    assert_eq!(show(&c, "res-fx.slice", "LoadState"), "loaded");
    assert_eq!(show(&c, UNITS[0], "LoadState"), "masked");
    orch_ok(&c, &cfg, &["resume"]);
    assert_eq!(show(&c, UNITS[3], "ActiveState"), "active");

    // Installed as it is: the slice is unchanged like every unit.
    let o = orch(&c, &cfg, &["plan"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

//! Whether a change of a unit file needs the unit restarted, or only the
//! `daemon-reload` that install does. Adding a worker kind rewrites the
//! master's unit (new `Wants=` lines): restarting Synapse's master for it
//! is an outage for nothing.
//!
//! A change needs a restart when it changes what the running process was
//! started with: `[Service]` settings (the command, environment, user,
//! working directory, type, sandboxing, …). It does not when it is only
//! dependencies and ordering (`Wants=`, `Requires=`, `After=`, `Before=`,
//! `PartOf=`, …), `Description=`, `[Install]`, comments (orch's header), or
//! a resource limit systemd applies to the running control group at
//! `daemon-reload` (`MemoryMax=`, `CPUQuota=`, `TasksMax=`, …).
//!
//! systemd 254+ has its own `Markers=needs-restart` (set by `systemctl
//! set-property`/a package manager, shown by `systemctl status`); orch
//! judges from the file text instead, which works on systemd 252 too.

use std::collections::BTreeMap;

/// `[Unit]` keys that only wire the unit to others or name it.
const UNIT_LIVE: &[&str] = &[
    "Description",
    "Documentation",
    "Wants",
    "Requires",
    "Requisite",
    "BindsTo",
    "PartOf",
    "Upholds",
    "Conflicts",
    "Before",
    "After",
    "OnFailure",
    "OnSuccess",
    "PropagatesReloadTo",
    "ReloadPropagatedFrom",
    "JoinsNamespaceOf",
];

/// `[Service]` (and `[Slice]`) keys systemd applies to the running control
/// group at `daemon-reload` (systemd.resource-control(5)).
const LIVE_LIMITS: &[&str] = &[
    "CPUWeight",
    "StartupCPUWeight",
    "CPUQuota",
    "CPUQuotaPeriodSec",
    "AllowedCPUs",
    "AllowedMemoryNodes",
    "MemoryMin",
    "MemoryLow",
    "MemoryHigh",
    "MemoryMax",
    "MemorySwapMax",
    "MemoryZSwapMax",
    "TasksMax",
    "IOWeight",
    "StartupIOWeight",
    "IODeviceWeight",
    "IOReadBandwidthMax",
    "IOWriteBandwidthMax",
    "IOReadIOPSMax",
    "IOWriteIOPSMax",
    "DeviceAllow",
    "DevicePolicy",
    "IPAddressAllow",
    "IPAddressDeny",
];

/// The settings of a unit file that a running process depends on:
/// `section -> [(key, value)]` in file order, without the rest.
fn restart_worthy(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let live = match section.as_str() {
            "Unit" => UNIT_LIVE.contains(&key),
            "Install" => true,
            _ => LIVE_LIMITS.contains(&key),
        };
        if !live {
            let entry = out.entry(section.clone()).or_default();
            entry.push((key.to_string(), value.trim().to_string()));
        }
    }
    out
}

/// Whether replacing `before` with `after` needs the unit restarted.
pub fn needs_restart(before: &str, after: &str) -> bool {
    restart_worthy(before) != restart_worthy(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "# orch header\n[Unit]\nDescription=m\nWants=m-worker-0-a.service\nAfter=network.target\n\
        [Service]\nType=exec\nExecStart=/bin/app --port 1\nEnvironment=A=1\nMemoryMax=1G\nSlice=m.slice\n\
        [Install]\nWantedBy=multi-user.target\n";

    #[test]
    fn wiring_description_install_and_live_limits_need_no_restart() {
        let after = MASTER
            .replace("# orch header", "# orch header v2")
            .replace("Description=m", "Description=the master")
            .replace(
                "Wants=m-worker-0-a.service",
                "Wants=m-worker-0-a.service\nWants=m-worker-1-b.service\nPartOf=x.target",
            )
            .replace("MemoryMax=1G", "MemoryMax=2G\nCPUQuota=50%\nTasksMax=100")
            .replace("WantedBy=multi-user.target", "WantedBy=default.target");
        assert!(!needs_restart(MASTER, &after));
    }

    #[test]
    fn what_the_process_was_started_with_needs_a_restart() {
        for (from, to) in [
            ("ExecStart=/bin/app --port 1", "ExecStart=/bin/app --port 2"),
            ("Environment=A=1", "Environment=A=2"),
            ("Type=exec", "Type=notify\nUser=app"),
            ("Slice=m.slice", "Slice=other.slice"),
        ] {
            assert!(needs_restart(MASTER, &MASTER.replace(from, to)), "{to}");
        }
        // A key moved between sections is a different setting.
        let moved = MASTER
            .replace("Environment=A=1\n", "")
            .replace("[Install]\n", "[Install]\nEnvironment=A=1\n");
        assert!(needs_restart(MASTER, &moved));
    }
}

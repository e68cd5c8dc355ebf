//! Resource controls of a generated unit: `MemoryMax=`, `MemoryHigh=`,
//! `CPUQuota=`, `CPUWeight=`, `TasksMax=`. Each value is checked here and
//! kept in the exact spelling systemd reads, so the templates print it as is.

use serde::Serialize;

use crate::config::RawLimit;

/// The limits of one unit; `None` leaves systemd's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// Bytes (`536870912`), a size (`512M`), a percentage of RAM (`50%`) or `infinity`.
    pub memory_max: Option<String>,
    /// As `memory_max`.
    pub memory_high: Option<String>,
    /// A percentage of one CPU (`150%` is one and a half CPUs).
    pub cpu_quota: Option<String>,
    pub cpu_weight: Option<u16>,
    /// A number of tasks or `infinity`.
    pub tasks_max: Option<String>,
}

/// The largest `cpu_quota`: a thousand CPUs. Beyond that a quota is a typo.
pub const MAX_CPU_QUOTA_PERCENT: u64 = 100_000;
pub const MAX_CPU_WEIGHT: u64 = 10_000;

/// Why a resource value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("`{0}` is not a size: write bytes or a number with K, M, G or T (base 1024), a percentage of RAM such as \"50%\", or \"infinity\"")]
    Size(String),
    #[error("`{0}`: write the size suffix in capitals (K, M, G, T), as systemd reads it")]
    Lowercase(String),
    #[error("`{0}` is more bytes than systemd can count")]
    SizeTooLarge(String),
    #[error("must be more than 0 (0 would leave the unit no memory at all; remove the key for no limit)")]
    Zero,
    #[error("`{0}` is not a percentage of RAM between 1% and 100%")]
    MemoryPercent(String),
    #[error("`{0}` is not a CPU quota: write a percentage of one CPU between 1% and {MAX_CPU_QUOTA_PERCENT}%, such as \"150%\" for one and a half CPUs")]
    CpuQuota(String),
    #[error("`{0}` is not a CPU weight: a whole number between 1 and {MAX_CPU_WEIGHT} (systemd's default is 100)")]
    CpuWeight(String),
    #[error("`{0}` is not a number of tasks: a whole number of at least 1, or \"infinity\"")]
    Tasks(String),
    #[error(
        "{high} is above memory_max {max}: the unit would be killed before it is ever throttled"
    )]
    HighAboveMax { high: String, max: String },
}

fn shown(v: &RawLimit) -> String {
    match v {
        RawLimit::Text(s) => s.clone(),
        RawLimit::Number(n) => n.to_string(),
    }
}

/// A whole number written only with ASCII digits, within u64.
fn digits(s: &str) -> Option<u64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `memory_max` or `memory_high`.
pub fn memory(v: &RawLimit) -> Result<String, ResourceError> {
    let text = match v {
        RawLimit::Number(n) if *n <= 0 => return Err(ResourceError::Zero),
        RawLimit::Number(n) => return Ok(n.to_string()),
        RawLimit::Text(t) => t.as_str(),
    };
    if text == "infinity" {
        return Ok(text.to_string());
    }
    if let Some(p) = text.strip_suffix('%') {
        return match digits(p) {
            Some(1..=100) => Ok(text.to_string()),
            _ => Err(ResourceError::MemoryPercent(text.to_string())),
        };
    }
    bytes(text)?;
    Ok(text.to_string())
}

/// The bytes of a size such as `512M`, checked to fit in u64 and be above 0.
fn bytes(text: &str) -> Result<u64, ResourceError> {
    let (number, shift) = match text.as_bytes().last() {
        Some(b'K') => (&text[..text.len() - 1], 10),
        Some(b'M') => (&text[..text.len() - 1], 20),
        Some(b'G') => (&text[..text.len() - 1], 30),
        Some(b'T') => (&text[..text.len() - 1], 40),
        Some(b'k' | b'm' | b'g' | b't') if digits(&text[..text.len() - 1]).is_some() => {
            return Err(ResourceError::Lowercase(text.to_string()))
        }
        _ => (text, 0),
    };
    let n = digits(number).ok_or_else(|| ResourceError::Size(text.to_string()))?;
    if n == 0 {
        return Err(ResourceError::Zero);
    }
    // systemd reads u64::MAX as `infinity`; one below is the largest real limit.
    n.checked_mul(1u64 << shift)
        .filter(|b| *b < u64::MAX)
        .ok_or_else(|| ResourceError::SizeTooLarge(text.to_string()))
}

/// The bytes of a checked `memory` value, when it is absolute.
fn absolute(checked: &str) -> Option<u64> {
    bytes(checked).ok()
}

/// Refuses `memory_high` above `memory_max` when both are absolute sizes.
pub fn memory_pair(high: &str, max: &str) -> Result<(), ResourceError> {
    match (absolute(high), absolute(max)) {
        (Some(h), Some(m)) if h > m => Err(ResourceError::HighAboveMax {
            high: high.to_string(),
            max: max.to_string(),
        }),
        _ => Ok(()),
    }
}

pub fn cpu_quota(v: &RawLimit) -> Result<String, ResourceError> {
    let bad = || ResourceError::CpuQuota(shown(v));
    let RawLimit::Text(text) = v else {
        return Err(bad());
    };
    match text.strip_suffix('%').and_then(digits) {
        Some(1..=MAX_CPU_QUOTA_PERCENT) => Ok(text.clone()),
        _ => Err(bad()),
    }
}

pub fn cpu_weight(v: &RawLimit) -> Result<u16, ResourceError> {
    let n = match v {
        RawLimit::Number(n) => u64::try_from(*n).ok(),
        RawLimit::Text(t) => digits(t),
    };
    match n {
        Some(n @ 1..=MAX_CPU_WEIGHT) => Ok(n as u16),
        _ => Err(ResourceError::CpuWeight(shown(v))),
    }
}

pub fn tasks_max(v: &RawLimit) -> Result<String, ResourceError> {
    let n = match v {
        RawLimit::Text(t) if t == "infinity" => return Ok(t.clone()),
        RawLimit::Number(n) => u64::try_from(*n).ok(),
        RawLimit::Text(t) => digits(t),
    };
    match n {
        // u64::MAX is systemd's own spelling of infinity.
        Some(n) if (1..u64::MAX).contains(&n) => Ok(n.to_string()),
        _ => Err(ResourceError::Tasks(shown(v))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> RawLimit {
        RawLimit::Text(s.to_string())
    }

    #[test]
    fn memory_takes_sizes_percentages_and_infinity() {
        for ok in ["512M", "2G", "1T", "4096", "1K", "infinity", "50%", "100%"] {
            assert_eq!(memory(&t(ok)).as_deref(), Ok(ok), "{ok}");
        }
        assert_eq!(memory(&RawLimit::Number(1024)).as_deref(), Ok("1024"));
        assert_eq!(
            memory(&t("512m")),
            Err(ResourceError::Lowercase("512m".into()))
        );
        assert_eq!(memory(&t("0")), Err(ResourceError::Zero));
        assert_eq!(memory(&t("0G")), Err(ResourceError::Zero));
        assert_eq!(memory(&RawLimit::Number(0)), Err(ResourceError::Zero));
        for bad in ["", "lots", "1.5G", "-1G", "12 M", "G", "1GB", "+5M"] {
            assert_eq!(
                memory(&t(bad)),
                Err(ResourceError::Size(bad.into())),
                "{bad}"
            );
        }
        for bad in ["0%", "101%", "x%", "%"] {
            assert_eq!(
                memory(&t(bad)),
                Err(ResourceError::MemoryPercent(bad.into()))
            );
        }
        assert_eq!(
            memory(&t("99999999T")),
            Err(ResourceError::SizeTooLarge("99999999T".into()))
        );
    }

    #[test]
    fn memory_high_may_not_exceed_memory_max() {
        assert!(memory_pair("1G", "2G").is_ok());
        assert!(memory_pair("2G", "2G").is_ok());
        assert!(memory_pair("3G", "2G").is_err());
        assert!(memory_pair("2048M", "2G").is_ok());
        // Relative values are not compared: RAM is the host's.
        assert!(memory_pair("90%", "1G").is_ok());
        assert!(memory_pair("1G", "infinity").is_ok());
    }

    #[test]
    fn cpu_quota_is_a_percentage() {
        assert_eq!(cpu_quota(&t("150%")).as_deref(), Ok("150%"));
        assert_eq!(cpu_quota(&t("1%")).as_deref(), Ok("1%"));
        for bad in ["150", "0%", "1.5%", "100001%", "fast", "-5%"] {
            assert!(cpu_quota(&t(bad)).is_err(), "{bad}");
        }
        assert!(cpu_quota(&RawLimit::Number(150)).is_err());
    }

    #[test]
    fn cpu_weight_is_between_1_and_10000() {
        assert_eq!(cpu_weight(&RawLimit::Number(1)), Ok(1));
        assert_eq!(cpu_weight(&RawLimit::Number(10_000)), Ok(10_000));
        assert_eq!(cpu_weight(&t("200")), Ok(200));
        for bad in [0, 10_001, -3] {
            assert!(cpu_weight(&RawLimit::Number(bad)).is_err(), "{bad}");
        }
        assert!(cpu_weight(&t("idle")).is_err());
    }

    #[test]
    fn tasks_max_is_a_number_or_infinity() {
        assert_eq!(tasks_max(&RawLimit::Number(512)).as_deref(), Ok("512"));
        assert_eq!(tasks_max(&t("64")).as_deref(), Ok("64"));
        assert_eq!(tasks_max(&t("infinity")).as_deref(), Ok("infinity"));
        for bad in ["0", "many", "10%", "-1"] {
            assert!(tasks_max(&t(bad)).is_err(), "{bad}");
        }
        assert!(tasks_max(&RawLimit::Number(0)).is_err());
    }
}

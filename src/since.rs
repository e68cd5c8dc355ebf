//! `logs --since WHEN`: journalctl's time syntax (systemd.time(7)) read by
//! orch itself, before anything runs, into one instant. A typo is then a
//! usage error (exit 2) rather than journalctl's exit 1 after the hosts
//! were reached, and every host gets the same instant (`@SECONDS`)
//! whatever its clock's time zone, which also keeps the value out of
//! reach of the remote shell.
//!
//! Accepted, as journalctl: `now`, `today`, `yesterday`, `tomorrow`;
//! relative `-1h`, `+30min`, `1h 30min ago`; absolute `2024-05-01`,
//! `2024-05-01 10:00[:00[.123]]`, `10:00[:00]` (today), optionally
//! preceded by a weekday (`Wed 2024-05-01 10:00`) and followed by `UTC`
//! or an IANA zone; RFC 3339 with an offset; `@1714557600`. Local times
//! are in this machine's time zone (`TZ`), as journalctl does.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};

/// Bound on the text, before parsing.
const MAX_LEN: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SinceError {
    #[error("longer than {MAX_LEN} characters")]
    Long,
    #[error(
        "`{0}` is not a time journalctl takes; write e.g. `2024-05-01 10:00`, `1h ago`, `-30min`, `yesterday` or `@1714557600`"
    )]
    Unknown(String),
    #[error("`{0}` is out of range")]
    Range(String),
}

/// The instant `text` names, relative to `now` (its zone is the local one).
pub fn parse(text: &str, now: &Zoned) -> Result<Timestamp, SinceError> {
    if text.len() > MAX_LEN {
        return Err(SinceError::Long);
    }
    let s = text.trim();
    let unknown = || SinceError::Unknown(text.to_string());
    let range = |_| SinceError::Range(text.to_string());
    if let Some(day) = named_day(s, now) {
        return day.map_err(range);
    }
    if let Some(secs) = s.strip_prefix('@') {
        let secs: f64 = secs.parse().map_err(|_| unknown())?;
        let whole = secs.trunc() as i64;
        let nanos = (secs.fract() * 1e9).round() as i32;
        return Timestamp::new(whole, nanos).map_err(range);
    }
    if let Some(span) = relative(s) {
        return now.checked_add(span).map(|z| z.timestamp()).map_err(range);
    }
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    absolute(s, now).ok_or_else(unknown)?.map_err(range)
}

/// `now`, `today`, `yesterday`, `tomorrow` (midnight, local time).
fn named_day(s: &str, now: &Zoned) -> Option<Result<Timestamp, jiff::Error>> {
    let day = |d: Result<Date, jiff::Error>| {
        d.and_then(|d| d.to_zoned(now.time_zone().clone()))
            .map(|z| z.timestamp())
    };
    match s {
        "now" => Some(Ok(now.timestamp())),
        "today" => Some(day(Ok(now.date()))),
        "yesterday" => Some(day(now.date().yesterday())),
        "tomorrow" => Some(day(now.date().tomorrow())),
        _ => None,
    }
}

/// `-1h`, `+30min`, `1h 30min ago`: a signed span, never a bare number
/// (journalctl reads `-5` as seconds; orch asks for a unit).
fn relative(s: &str) -> Option<Span> {
    let signed = s.starts_with(['-', '+']) || s.ends_with(" ago");
    if !signed {
        return None;
    }
    s.parse::<Span>().ok()
}

/// A calendar time, with an optional leading weekday and trailing zone.
fn absolute(s: &str, now: &Zoned) -> Option<Result<Timestamp, jiff::Error>> {
    let mut words: Vec<&str> = s.split_whitespace().collect();
    if words.first().is_some_and(|w| weekday(w)) {
        words.remove(0);
    }
    let mut tz = now.time_zone().clone();
    if words.len() > 1 {
        if let Some(zone) = zone(words[words.len() - 1]) {
            tz = zone;
            words.pop();
        }
    }
    let dt = match words.as_slice() {
        [d] if d.contains(':') => now.date().to_datetime(d.parse::<Time>().ok()?),
        [d] => d.parse::<Date>().ok()?.to_datetime(Time::midnight()),
        [d, t] => d.parse::<Date>().ok()?.to_datetime(t.parse::<Time>().ok()?),
        _ => return None,
    };
    Some(DateTime::to_zoned(dt, tz).map(|z| z.timestamp()))
}

fn weekday(w: &str) -> bool {
    let w = w.to_ascii_lowercase();
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .any(|d| w.starts_with(d) && w.len() <= 9)
}

fn zone(w: &str) -> Option<TimeZone> {
    match w {
        "UTC" | "utc" | "Z" => Some(TimeZone::UTC),
        w if w.contains('/') => TimeZone::get(w).ok(),
        _ => None,
    }
}

/// journalctl's own form of an instant: seconds since the epoch.
pub fn journalctl_arg(t: Timestamp) -> String {
    format!("@{}.{:06}", t.as_second(), t.subsec_microsecond().max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Zoned {
        "2024-05-01T10:30:00+02:00[Europe/Paris]"
            .parse::<Zoned>()
            .unwrap()
    }

    fn at(s: &str) -> String {
        parse(s, &now()).unwrap().to_string()
    }

    #[test]
    fn every_form_journalctl_takes_is_one_instant() {
        assert_eq!(at("now"), "2024-05-01T08:30:00Z");
        assert_eq!(at("today"), "2024-04-30T22:00:00Z");
        assert_eq!(at("yesterday"), "2024-04-29T22:00:00Z");
        assert_eq!(at("tomorrow"), "2024-05-01T22:00:00Z");
        assert_eq!(at("-1h"), "2024-05-01T07:30:00Z");
        assert_eq!(at("+30min"), "2024-05-01T09:00:00Z");
        assert_eq!(at("1h 30min ago"), "2024-05-01T07:00:00Z");
        assert_eq!(at("2 days ago"), "2024-04-29T08:30:00Z");
        assert_eq!(at("2024-04-30"), "2024-04-29T22:00:00Z");
        assert_eq!(at("2024-04-30 10:00"), "2024-04-30T08:00:00Z");
        assert_eq!(at("2024-04-30 10:00:05.5"), "2024-04-30T08:00:05.5Z");
        assert_eq!(at("Tue 2024-04-30 10:00:00"), "2024-04-30T08:00:00Z");
        assert_eq!(at("2024-04-30 10:00 UTC"), "2024-04-30T10:00:00Z");
        assert_eq!(
            at("2024-04-30 10:00 America/New_York"),
            "2024-04-30T14:00:00Z"
        );
        assert_eq!(at("09:15"), "2024-05-01T07:15:00Z");
        assert_eq!(at("2024-04-30T10:00:00Z"), "2024-04-30T10:00:00Z");
        assert_eq!(at("@1714557600"), "2024-05-01T10:00:00Z");
    }

    #[test]
    fn anything_else_is_refused_with_examples() {
        for bad in [
            "yesterday-ish",
            "",
            "1h",
            "soon",
            "2024-13-01",
            "-5",
            "25:00",
            "today'; rm",
        ] {
            let e = parse(bad, &now()).unwrap_err();
            assert!(matches!(e, SinceError::Unknown(_)), "{bad}: {e}");
            assert!(e.to_string().contains("1h ago"), "{e}");
        }
        assert_eq!(parse(&"1".repeat(65), &now()), Err(SinceError::Long));
    }

    #[test]
    fn journalctl_gets_epoch_seconds() {
        let t: Timestamp = "2024-05-01T10:00:00.25Z".parse().unwrap();
        assert_eq!(journalctl_arg(t), "@1714557600.250000");
    }
}

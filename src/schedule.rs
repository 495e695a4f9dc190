//! When targets are polled: the plan of one target's polls and the backoff after failures.
//!
//! An interval target polls on a grid of its interval, with a phase drawn once (monotonic time:
//! a wall-clock step does not bunch or stretch polls). A cron target polls at the local times
//! its expression names in `global.timezone`, found afresh from the wall clock for every run
//! (croner), so it fires at the configured local times on both sides of a DST change; a time
//! that does not exist on the day clocks go forward runs at the first instant after the gap,
//! and one that exists twice runs once. The supervisor ([`crate::supervisor`]) runs the plan.
//!
//! After consecutive failed polls a target backs off ([`backoff_gap`]): the gap to its next
//! poll doubles from the second failure on, up to 8 intervals or 10 minutes (whichever is
//! less, never less than one interval), jittered; the first success returns it to its plan.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// The longest backoff gap, unless the interval itself is longer.
pub const BACKOFF_CAP: Duration = Duration::from_secs(600);
/// The most intervals a backoff gap spans.
pub const BACKOFF_MAX_INTERVALS: u32 = 8;

/// When a target is polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every so often, with a jitter drawn once.
    Interval(Duration),
    /// A cron expression with seconds, in the global time zone.
    Cron(String),
}

/// Parses a cron expression with seconds (6 or 7 fields), as the scheduler will.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| format!("invalid cron expression \"{expr}\" (six fields, seconds first): {e}"))
}

/// Whether a cron expression never fires after `now` in `tz` (Feb 30, a year gone by).
pub fn never_fires(cron: &croner::Cron, tz: Tz, now: chrono::DateTime<chrono::Utc>) -> bool {
    next_cron(cron, tz, now).is_none()
}

/// The seconds between a target's polls (cron: between its next two runs after `now`).
pub fn interval_seconds(schedule: &Schedule, tz: Tz, now: DateTime<Utc>) -> f64 {
    match schedule {
        Schedule::Interval(d) => d.as_secs_f64(),
        Schedule::Cron(expr) => {
            let Ok(cron) = parse_cron(expr) else {
                return 0.0;
            };
            let next = next_cron(&cron, tz, now);
            let after = next.and_then(|n| next_cron(&cron, tz, n));
            match (next, after) {
                (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
                _ => 0.0,
            }
        }
    }
}

/// The first run of `cron` in zone `tz` strictly after `after`.
///
/// croner may answer a time that its expression does not name next to a DST gap (from
/// 23:58 before a midnight that clocks skip, `0 0 12 * * *` gave the gap's end, 01:00): an
/// answer is taken only where the expression matches it, or where it stands for a time the
/// gap skipped that the expression names (such a run is moved to the gap's end); otherwise
/// the search goes on after it.
pub fn next_cron(cron: &croner::Cron, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut from = after;
    for _ in 0..16 {
        let next = cron
            .find_next_occurrence(&from.with_timezone(&tz), false)
            .ok()?
            .with_timezone(&Utc);
        if next <= from {
            return None;
        }
        if cron
            .is_time_matching(&next.with_timezone(&tz))
            .unwrap_or(false)
            || names_a_skipped_time(cron, tz, next)
        {
            return Some(next);
        }
        from = next;
    }
    None
}

/// Whether `at` ends a DST gap (the wall clock jumped forward to it) in which the expression
/// names a local time.
fn names_a_skipped_time(cron: &croner::Cron, tz: Tz, at: DateTime<Utc>) -> bool {
    let one = chrono::Duration::seconds(1);
    let before = (at - one).with_timezone(&tz).naive_local() + one;
    let after = at.with_timezone(&tz).naive_local();
    if after <= before {
        return false;
    }
    // The skipped wall-clock times [before, after), read as UTC (a zone without gaps).
    let Ok(first) = cron.find_next_occurrence(&before.and_utc(), true) else {
        return false;
    };
    first.naive_utc() < after
}

/// The least time from the start of the last poll to the next one, after `failures` failed
/// polls in a row: one interval while all is well and after the first failure, then 2, 4, 8
/// intervals, capped at [`BACKOFF_MAX_INTERVALS`] intervals and at [`BACKOFF_CAP`] (but never
/// under one interval). `jitter` in [0, 1) spreads targets that failed together by ±10 % of
/// the extra wait.
pub fn backoff_gap(failures: u32, interval: Duration, jitter: f64) -> Duration {
    if failures <= 1 || interval.is_zero() {
        return interval;
    }
    let factor = 1u32 << (failures - 1).min(BACKOFF_MAX_INTERVALS.trailing_zeros());
    let cap = BACKOFF_CAP.max(interval);
    let gap = interval.saturating_mul(factor).min(cap);
    let extra = gap.saturating_sub(interval);
    interval + extra.mul_f64(0.9 + 0.2 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_second_failure_and_is_capped() {
        let m = Duration::from_secs(60);
        let gaps: Vec<u64> = (0..7).map(|f| backoff_gap(f, m, 0.5).as_secs()).collect();
        assert_eq!(gaps, vec![60, 60, 120, 240, 480, 480, 480]);
        // Ten minutes caps a long interval's ladder, but never shortens the interval itself.
        let long = Duration::from_secs(300);
        assert_eq!(backoff_gap(3, long, 0.5).as_secs(), 600);
        let huge = Duration::from_secs(3600);
        assert_eq!(backoff_gap(5, huge, 0.5).as_secs(), 3600);
        // Jitter moves only the extra wait, by at most 10 %.
        let lo = backoff_gap(3, m, 0.0).as_secs_f64();
        let hi = backoff_gap(3, m, 0.999).as_secs_f64();
        assert!(
            (222.0..=224.0).contains(&lo) && (257.0..=258.0).contains(&hi),
            "{lo} {hi}"
        );
        assert_eq!(backoff_gap(40, m, 0.5).as_secs(), 480);
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn cron_keeps_local_times_across_dst() {
        let cron = parse_cron("0 0 9 * * *").unwrap();
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // 2026-03-29: clocks go from 02:00 to 03:00 local; 09:00 is 08:00Z before, 07:00Z after.
        let a = next_cron(&cron, tz, at("2026-03-28T07:30:00Z")).unwrap();
        assert_eq!(a, at("2026-03-28T08:00:00Z"));
        let b = next_cron(&cron, tz, a).unwrap();
        assert_eq!(b, at("2026-03-29T07:00:00Z"));
        // 2026-10-25: back from 03:00 to 02:00; 09:00 is 08:00Z again.
        let c = next_cron(&cron, tz, at("2026-10-24T08:00:00Z")).unwrap();
        assert_eq!(c, at("2026-10-25T08:00:00Z"));
        // A time in the gap runs once, right after it; a doubled time runs once.
        let gap = parse_cron("0 30 2 * * *").unwrap();
        let g = next_cron(&gap, tz, at("2026-03-29T00:00:00Z")).unwrap();
        assert_eq!(g, at("2026-03-29T01:00:00Z"));
        let twice = next_cron(&gap, tz, at("2026-10-24T23:00:00Z")).unwrap();
        let after = next_cron(&gap, tz, twice).unwrap();
        assert_eq!(twice, at("2026-10-25T00:30:00Z"));
        assert_eq!(after, at("2026-10-26T01:30:00Z"));
    }
}

#[cfg(test)]
mod dst {
    use super::*;

    fn at(unix: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(unix, 0).unwrap_or_default()
    }

    #[test]
    fn a_noon_run_is_at_noon_on_a_day_whose_midnight_clocks_skip() {
        // America/Santiago, 2026-09-06: 00:00 does not exist, the day begins at 01:00 -03
        // (04:00 UTC); noon is 15:00 UTC.
        let tz = chrono_tz::America::Santiago;
        let noon = parse_cron("0 0 12 * * *").unwrap();
        assert_eq!(
            next_cron(&noon, tz, at(1_788_667_200 - 120)),
            Some(at(1_788_667_200 + 11 * 3600))
        );
        // A run named inside the gap moves to its end.
        let half_past = parse_cron("0 30 0 * * *").unwrap();
        assert_eq!(
            next_cron(&half_past, tz, at(1_788_667_200 - 120)),
            Some(at(1_788_667_200))
        );
        // Every hour: 01:00 (the gap's end) is a run of its own.
        let hourly = parse_cron("0 0 * * * *").unwrap();
        assert_eq!(
            next_cron(&hourly, tz, at(1_788_667_200 - 120)),
            Some(at(1_788_667_200))
        );
    }
}

//! Scheduled classes: when the config says rooms are expected in use, for
//! `rtc_room_class_scheduled` and the alerts on an empty class or a class without its teacher.
//!
//! A class is a start time (a cron expression with seconds, in `global.timezone`), a duration,
//! and the rooms it is held in: room ids as the `room` label shows them, or globs (`*` any run
//! of characters, `?` one character). A class is in session at `now` when one of its starts
//! lies in (now − duration, now]. Starts are found with croner from the wall clock in the
//! zone, as the scheduler finds cron runs ([`crate::schedule::next_cron`]), so a class keeps
//! its local time on both sides of a DST change: a start in the hour skipped when clocks go
//! forward begins at the first instant after the gap, a start in the hour that happens twice
//! begins once, at its first occurrence. The duration is elapsed time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::schedule::next_cron;

/// One configured class.
#[derive(Debug, Clone)]
pub struct Class {
    /// Room ids and globs, as configured.
    pub rooms: Vec<String>,
    /// The cron expression of its starts, as configured.
    pub schedule: String,
    /// How long it lasts.
    pub duration: Duration,
    cron: croner::Cron,
}

/// Compared as configured: the parsed expression follows from `schedule`.
impl PartialEq for Class {
    fn eq(&self, other: &Self) -> bool {
        self.rooms == other.rooms
            && self.schedule == other.schedule
            && self.duration == other.duration
    }
}

impl Class {
    /// A class from its parts; the expression must already have parsed.
    pub fn new(
        rooms: Vec<String>,
        schedule: String,
        cron: croner::Cron,
        duration: Duration,
    ) -> Self {
        Class {
            rooms,
            schedule,
            duration,
            cron,
        }
    }

    /// Whether the class is held in `room`.
    pub fn covers(&self, room: &str) -> bool {
        self.rooms.iter().any(|p| glob_match(p, room))
    }

    /// The start of the session running at `now` in zone `tz`, if one runs.
    pub fn session_start(&self, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let duration = chrono::Duration::from_std(self.duration).ok()?;
        let start = next_cron(&self.cron, tz, now.checked_sub_signed(duration)?)?;
        let end = start.checked_add_signed(duration)?;
        (start <= now && now < end).then_some(start)
    }
}

/// Every class of a target, in the zone of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Classes {
    tz: Tz,
    list: Vec<Class>,
}

impl Default for Classes {
    fn default() -> Self {
        Classes {
            tz: Tz::UTC,
            list: Vec::new(),
        }
    }
}

impl Classes {
    /// The classes of one target, their starts read in `tz`.
    pub fn new(tz: Tz, list: Vec<Class>) -> Self {
        Classes { tz, list }
    }

    /// No class is configured.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The classes, in config order.
    pub fn list(&self) -> &[Class] {
        &self.list
    }

    /// Which classes are in session at `now`, one flag per class: computed once per render,
    /// then [`Classes::scheduled`] asks it per room.
    pub fn sessions(&self, now: DateTime<Utc>) -> Vec<bool> {
        self.list
            .iter()
            .map(|c| c.session_start(self.tz, now).is_some())
            .collect()
    }

    /// Whether a class in session (per `sessions`) is held in `room`.
    pub fn scheduled(&self, room: &str, sessions: &[bool]) -> bool {
        self.list
            .iter()
            .zip(sessions)
            .any(|(c, on)| *on && c.covers(room))
    }

    /// Whether some class is held in `room`.
    pub fn covers(&self, room: &str) -> bool {
        self.list.iter().any(|c| c.covers(room))
    }

    /// The rooms named without a wildcard: they get `rtc_room_class_scheduled` whether or not
    /// the vendor has shown them today, so a class whose room never opened is seen.
    pub fn named_rooms(&self) -> impl Iterator<Item = &str> {
        self.list
            .iter()
            .flat_map(|c| c.rooms.iter())
            .filter(|p| !is_glob(p))
            .map(String::as_str)
    }
}

/// Whether a room pattern has a wildcard (`*` or `?`).
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// Matches `text` against a glob: `*` any run of characters (also none), `?` one character,
/// anything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // The classic linear backtracking over the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::parse_cron;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn class(rooms: &[&str], cron: &str, minutes: u64) -> Class {
        Class::new(
            rooms.iter().map(|r| r.to_string()).collect(),
            cron.to_string(),
            parse_cron(cron).unwrap(),
            Duration::from_secs(minutes * 60),
        )
    }

    #[test]
    fn globs() {
        assert!(glob_match("math-*", "math-101"));
        assert!(glob_match("math-*", "math-"));
        assert!(!glob_match("math-*", "maths-101"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*-10?", "eng-101"));
        assert!(!glob_match("*-10?", "eng-1011"));
        assert!(glob_match("7100*1", "7100000001"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match("*a*b*", "xxbxxaxx"));
        assert!(glob_match("课堂-*", "课堂-一"));
        assert!(glob_match("open-day", "open-day"));
        assert!(!glob_match("open-day", "open-day2"));
        assert!(is_glob("a*") && is_glob("a?") && !is_glob("7100000001"));
    }

    #[test]
    fn in_session_from_the_start_until_just_before_the_end() {
        // Weekdays 19:00 Shanghai (11:00Z), 45 minutes.
        let c = class(&["r"], "0 0 19 * * MON-FRI", 45);
        let tz = chrono_tz::Asia::Shanghai;
        // 2026-11-20 is a Friday.
        assert_eq!(c.session_start(tz, at("2026-11-20T10:59:59Z")), None);
        assert_eq!(
            c.session_start(tz, at("2026-11-20T11:00:00Z")),
            Some(at("2026-11-20T11:00:00Z"))
        );
        assert!(c.session_start(tz, at("2026-11-20T11:44:59Z")).is_some());
        assert_eq!(c.session_start(tz, at("2026-11-20T11:45:00Z")), None);
        // Saturday: no class.
        assert_eq!(c.session_start(tz, at("2026-11-21T11:10:00Z")), None);
    }

    #[test]
    fn a_class_longer_than_the_gap_between_starts_is_always_in_session() {
        let c = class(&["r"], "0 0 * * * *", 90);
        for t in [
            "2026-11-20T00:00:00Z",
            "2026-11-20T00:59:59Z",
            "2026-11-20T13:30:00Z",
        ] {
            assert!(c.session_start(Tz::UTC, at(t)).is_some(), "{t}");
        }
    }

    #[test]
    fn classes_keep_their_local_time_across_dst() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let c = class(&["r"], "0 0 9 * * *", 60);
        // 2026-03-29, clocks forward at 02:00: 09:00 is 08:00Z the day before, 07:00Z that day.
        assert!(c.session_start(tz, at("2026-03-28T08:30:00Z")).is_some());
        assert!(c.session_start(tz, at("2026-03-28T07:30:00Z")).is_none());
        assert_eq!(
            c.session_start(tz, at("2026-03-29T07:30:00Z")),
            Some(at("2026-03-29T07:00:00Z"))
        );
        assert!(c.session_start(tz, at("2026-03-29T08:30:00Z")).is_none());
        // 2026-10-25, clocks back at 03:00: 09:00 is 08:00Z again.
        assert!(c.session_start(tz, at("2026-10-25T07:30:00Z")).is_none());
        assert_eq!(
            c.session_start(tz, at("2026-10-25T08:30:00Z")),
            Some(at("2026-10-25T08:00:00Z"))
        );
        // A start in the skipped hour (02:30) begins right after the gap (03:00 CEST, 01:00Z)
        // and lasts its elapsed duration.
        let gap = class(&["r"], "0 30 2 * * *", 30);
        assert_eq!(
            gap.session_start(tz, at("2026-03-29T01:10:00Z")),
            Some(at("2026-03-29T01:00:00Z"))
        );
        assert!(gap.session_start(tz, at("2026-03-29T01:30:00Z")).is_none());
        // A start in the hour that happens twice begins once, at the first 02:30 (00:30Z).
        assert_eq!(
            gap.session_start(tz, at("2026-10-25T00:45:00Z")),
            Some(at("2026-10-25T00:30:00Z"))
        );
        assert!(gap.session_start(tz, at("2026-10-25T01:15:00Z")).is_none());
        assert!(gap.session_start(tz, at("2026-10-25T01:45:00Z")).is_none());
    }

    #[test]
    fn rooms_are_scheduled_by_the_classes_in_session_that_cover_them() {
        let classes = Classes::new(
            Tz::UTC,
            vec![
                class(&["math-*", "7100000001"], "0 0 9 * * *", 60),
                class(&["eng-?"], "0 0 10 * * *", 30),
            ],
        );
        let nine = classes.sessions(at("2026-11-20T09:15:00Z"));
        assert_eq!(nine, [true, false]);
        assert!(classes.scheduled("math-1", &nine));
        assert!(classes.scheduled("7100000001", &nine));
        assert!(!classes.scheduled("eng-1", &nine));
        assert!(!classes.scheduled("art-1", &nine));
        let ten = classes.sessions(at("2026-11-20T10:15:00Z"));
        assert!(classes.scheduled("eng-1", &ten) && !classes.scheduled("math-1", &ten));
        assert!(classes.covers("eng-2") && !classes.covers("eng-12"));
        assert_eq!(classes.named_rooms().collect::<Vec<_>>(), ["7100000001"]);
        assert!(Classes::default().is_empty());
    }
}

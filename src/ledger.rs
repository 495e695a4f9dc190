//! Peak and accumulated users per room and per target, for the local day.
//!
//! Vendor-reported figures are taken as they are (never lowered within a day); where a vendor
//! only lists who is present, the peak is the maximum observed and the accumulated count the
//! distinct user ids observed (lower bounds). A room seen today keeps its series until local
//! midnight: once the vendor stops listing it, it shows users 0 and active 0 with its figures.

use std::collections::{BTreeMap, HashSet};

use chrono::NaiveDate;

use crate::config::Capacity;
use crate::snapshot::{RoomRow, TargetData};
use crate::vendor::{DayFigures, Observation};

#[derive(Debug, Default)]
struct RoomDay {
    peak: u64,
    accumulated: u64,
    reported_accumulated: u64,
    ids: HashSet<String>,
    invisible_known: bool,
}

/// One target's figures for the current local day.
#[derive(Debug, Default)]
pub struct Ledger {
    day: Option<NaiveDate>,
    rooms: BTreeMap<String, RoomDay>,
    peak: u64,
    accumulated: u64,
    ids: HashSet<String>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// The local day the figures belong to (`None` before the first poll).
    pub fn day(&self) -> Option<NaiveDate> {
        self.day
    }

    /// Forgets everything: a new local day began without a successful poll.
    pub fn reset(&mut self) {
        *self = Ledger::default();
    }

    /// Folds one successful poll into the day and returns the target's series values.
    pub fn apply(
        &mut self,
        today: NaiveDate,
        obs: &Observation,
        capacity: &Capacity,
        max_rooms: usize,
    ) -> TargetData {
        if self.day != Some(today) {
            *self = Ledger {
                day: Some(today),
                ..Ledger::default()
            };
        }
        let mut now: BTreeMap<&str, (bool, u64, Option<u64>)> = BTreeMap::new();
        let mut users_now = 0u64;
        for r in &obs.rooms {
            let day = self.rooms.entry(r.room.clone()).or_default();
            day.invisible_known |= r.invisible.is_some();
            day.peak = day.peak.max(r.users);
            match &r.day {
                DayFigures::Reported { peak, accumulated } => {
                    day.peak = day.peak.max(*peak);
                    day.reported_accumulated = day.reported_accumulated.max(*accumulated);
                    day.accumulated = day.accumulated.max(*accumulated);
                }
                DayFigures::Present(ids) => {
                    for id in ids {
                        if !day.ids.contains(id) {
                            day.ids.insert(id.clone());
                        }
                        if !self.ids.contains(id) {
                            self.ids.insert(id.clone());
                        }
                    }
                    day.accumulated = day.accumulated.max(day.ids.len() as u64);
                }
            }
            let e = now.entry(&r.room).or_insert((false, 0, None));
            e.0 |= r.active;
            e.1 = e.1.saturating_add(r.users);
            e.2 = match (e.2, r.invisible) {
                (Some(a), Some(b)) => Some(a.saturating_add(b)),
                (a, b) => a.or(b),
            };
            users_now = users_now.saturating_add(r.users);
        }

        let mut rows: Vec<RoomRow> = self
            .rooms
            .iter()
            .map(|(room, day)| {
                let (active, users, invisible) = now.get(room.as_str()).copied().unwrap_or((
                    false,
                    0,
                    day.invisible_known.then_some(0),
                ));
                RoomRow {
                    room: room.clone(),
                    active,
                    users,
                    invisible,
                    peak: day.peak,
                    accumulated: day.accumulated,
                    capacity: capacity.of(room),
                }
            })
            .collect();
        let rooms_active = rows.iter().filter(|r| r.active).count() as u64;
        let biggest_room_peak = rows.iter().map(|r| r.peak).max().unwrap_or(0);
        self.peak = self.peak.max(users_now).max(biggest_room_peak);
        let reported = self
            .rooms
            .values()
            .fold(0u64, |sum, d| sum.saturating_add(d.reported_accumulated));
        self.accumulated = self
            .accumulated
            .max((self.ids.len() as u64).saturating_add(reported));

        let mut rooms_dropped = 0;
        if rows.len() > max_rooms {
            // Keep the busiest rooms' series; the rest still count in the totals.
            rows.sort_by(|a, b| {
                (b.active, b.users, b.peak)
                    .cmp(&(a.active, a.users, a.peak))
                    .then_with(|| a.room.cmp(&b.room))
            });
            rooms_dropped = (rows.len() - max_rooms) as u64;
            rows.truncate(max_rooms);
            rows.sort_by(|a, b| a.room.cmp(&b.room));
        }
        TargetData {
            rooms: rows,
            rooms_active,
            users: users_now,
            peak: self.peak,
            accumulated: self.accumulated,
            devices: obs.devices.clone(),
            watched: obs.watched.clone(),
            rooms_dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendor::RoomObservation;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap_or_default()
    }

    fn present(room: &str, ids: &[&str]) -> RoomObservation {
        RoomObservation {
            room: room.into(),
            active: !ids.is_empty(),
            users: ids.len() as u64,
            invisible: Some(0),
            day: DayFigures::Present(ids.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn obs(rooms: Vec<RoomObservation>) -> Observation {
        Observation {
            rooms,
            ..Observation::default()
        }
    }

    #[test]
    fn observed_peak_and_distinct_users_never_decrease() {
        let mut l = Ledger::new();
        let cap = Capacity::default();
        l.apply(
            day(1),
            &obs(vec![present("a", &["u1", "u2", "u3"])]),
            &cap,
            10,
        );
        let d = l.apply(day(1), &obs(vec![present("a", &["u1", "u4"])]), &cap, 10);
        assert_eq!(d.rooms[0].users, 2);
        assert_eq!(d.rooms[0].peak, 3);
        assert_eq!(d.rooms[0].accumulated, 4);
        assert_eq!(d.peak, 3);
        assert_eq!(d.accumulated, 4);
    }

    #[test]
    fn a_room_no_longer_listed_ends_but_keeps_its_figures_until_midnight() {
        let mut l = Ledger::new();
        let cap = Capacity::default();
        l.apply(
            day(1),
            &obs(vec![present("a", &["u1", "u2"]), present("b", &["u3"])]),
            &cap,
            10,
        );
        let d = l.apply(day(1), &obs(vec![present("b", &["u3"])]), &cap, 10);
        let a = &d.rooms[0];
        assert_eq!(
            (a.room.as_str(), a.active, a.users, a.peak, a.accumulated),
            ("a", false, 0, 2, 2)
        );
        assert_eq!(d.rooms_active, 1);
        let next = l.apply(day(2), &obs(vec![present("b", &["u3"])]), &cap, 10);
        assert_eq!(next.rooms.len(), 1);
        assert_eq!(next.accumulated, 1);
    }

    #[test]
    fn reported_figures_are_kept_and_summed_for_the_target() {
        let mut l = Ledger::new();
        let rep = |room: &str, users, peak, acc| RoomObservation {
            room: room.into(),
            active: true,
            users,
            invisible: None,
            day: DayFigures::Reported {
                peak,
                accumulated: acc,
            },
        };
        let cap = Capacity::default();
        let d = l.apply(
            day(1),
            &obs(vec![rep("a", 3, 5, 9), rep("b", 1, 2, 4)]),
            &cap,
            10,
        );
        assert_eq!((d.users, d.accumulated), (4, 13));
        assert_eq!(d.peak, 5);
        let d = l.apply(
            day(1),
            &obs(vec![rep("a", 1, 4, 8), rep("b", 1, 2, 4)]),
            &cap,
            10,
        );
        assert_eq!(
            d.rooms[0].peak, 5,
            "a vendor figure never lowers the day's peak"
        );
        assert_eq!(d.rooms[0].accumulated, 9);
    }

    #[test]
    fn rooms_over_max_rooms_count_in_totals_only() {
        let mut l = Ledger::new();
        let rooms = vec![
            present("a", &["1"]),
            present("b", &["2", "3", "4"]),
            present("c", &["5", "6"]),
        ];
        let d = l.apply(day(1), &obs(rooms), &Capacity::default(), 2);
        let names: Vec<_> = d.rooms.iter().map(|r| r.room.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
        assert_eq!((d.rooms_dropped, d.users, d.rooms_active), (1, 6, 3));
    }
}

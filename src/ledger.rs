//! Peak and accumulated users per room and per target, for the local day.
//!
//! Three kinds of rooms, by what the vendor gives ([`DayFigures`]):
//!
//! - **Reported**: the vendor's own peak and accumulated, taken as they are (never lowered
//!   within a day).
//! - **Present**: who is in now; the peak is the maximum observed and the accumulated count
//!   the distinct user ids observed (lower bounds).
//! - **Sessions**: join and leave times. The ledger keeps the day's sessions of each room and
//!   computes exact figures: users now = distinct users with an open session; peak = the
//!   maximum number of distinct users present at once over the local day, by a sweep over
//!   join/leave events ([`peak_concurrency`]: a call that opened and closed between two polls
//!   counts, a user who leaves and rejoins or is in twice at once is one person at a time,
//!   sessions begun before local midnight count from midnight); accumulated = distinct user ids.
//!   The target's peak is the same sweep over the union of its rooms' sessions, its accumulated
//!   the distinct ids across rooms.
//!
//! User ids are kept as 64-bit hashes (xxh3), interned once per target ([`Users`]: about
//! 18.5 bytes per distinct id at a million, whatever the ids' length), rooms holding 4-byte
//! indices; two ids collide with probability n²/2⁶⁵ (3·10⁻⁸ at a million).
//!
//! A partial poll (some rooms failed, or `poll_timeout` cut it short) publishes the rooms that
//! answered; the others keep their last values, and a room whose refresh failed `stale_after`
//! times in a row loses its series. A room seen today keeps its series until local midnight:
//! once a complete poll no longer lists it, it shows users 0 and active 0 with its figures.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;

use crate::config::Capacity;
use crate::model::{DayFigures, Device, DeviceCounts, Observation, Role, RoleCounts, SessionObs};
use crate::snapshot::{RoomRow, TargetData};

mod packed;
pub use packed::PackedLedger;

/// The 64-bit key of a user id.
pub fn user_key(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

/// The leave time of a session still open.
const OPEN: i64 = i64::MAX;

/// One interval of presence: (user index, start, end), half-open [start, end).
pub type Presence = (u32, i64, i64);

/// The maximum number of distinct users present at once, over half-open intervals.
///
/// One sort of the join and leave events, each a `u64` (time, then leave before join at the
/// same instant, then the user), and one pass that keeps a presence count per user: the
/// number of people changes only when a user's count goes from 0 to 1 or back, so a user who
/// is in twice at once, or leaves and rejoins at the same instant, is one person at a time.
/// Users are dense indices ([`Users`]), so the counts are a plain array.
pub fn peak_concurrency(intervals: &[Presence]) -> u64 {
    let Some(base) = intervals.iter().map(|p| p.1).min() else {
        return 0;
    };
    let mut users = 0usize;
    let mut events: Vec<u64> = Vec::with_capacity(intervals.len() * 2);
    for &(user, start, end) in intervals {
        if start >= end {
            continue;
        }
        users = users.max(user as usize + 1);
        // Times relative to the earliest start, in 31 bits (68 years).
        let at = |t: i64| (t.saturating_sub(base).clamp(0, i64::from(i32::MAX)) as u64) << 33;
        events.push(at(start) | 1 << 32 | u64::from(user));
        events.push(at(end) | u64::from(user));
    }
    events.sort_unstable();
    let mut present = vec![0u32; users];
    let (mut now, mut best) = (0u64, 0u64);
    for ev in events {
        let count = &mut present[(ev & 0xffff_ffff) as usize];
        if ev & (1 << 32) != 0 {
            *count += 1;
            if *count == 1 {
                now += 1;
                best = best.max(now);
            }
        } else {
            *count = count.saturating_sub(1);
            if *count == 0 {
                now = now.saturating_sub(1);
            }
        }
    }
    best
}

/// The day's distinct user ids, interned: each 64-bit key stored once, found through a table of
/// 4-byte indices (about 18.5 bytes per id at a million: 8 for the key, 4 + 1 control byte per
/// slot at 7/8 load). The dense indices let the sweep count presence in an array.
#[derive(Debug, Default)]
pub struct Users {
    keys: Vec<u64>,
    table: hashbrown::HashTable<u32>,
}

impl Users {
    /// The index of a user key, adding it if new.
    pub fn intern(&mut self, key: u64) -> u32 {
        let Users { keys, table } = self;
        if let Some(i) = table.find(key, |&i| keys[i as usize] == key) {
            return *i;
        }
        let i = keys.len() as u32;
        keys.push(key);
        table.insert_unique(key, i, |&j| keys[j as usize]);
        i
    }

    /// Distinct users.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No users yet.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Bytes held (keys and table), for the memory figures.
    pub fn bytes(&self) -> usize {
        self.keys.capacity() * 8 + (self.table.capacity() * 8 / 7).next_power_of_two() * 5
    }
}

/// The local day a poll belongs to, and the poll's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day {
    /// The local date.
    pub date: NaiveDate,
    /// Its local midnight, Unix seconds.
    pub start: i64,
    /// The time of the poll, Unix seconds.
    pub now: i64,
}

impl Day {
    /// The local day of `now` in `tz`.
    pub fn at(now: chrono::DateTime<chrono::Utc>, tz: chrono_tz::Tz) -> Day {
        let date = now.with_timezone(&tz).date_naive();
        Day {
            date,
            start: crate::clock::local_midnight(tz, date).timestamp(),
            now: now.timestamp(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Stay {
    /// Leave time, or [`OPEN`].
    leave: i64,
    device: Device,
    role: Option<Role>,
}

#[derive(Debug, Default)]
struct RoomDay {
    peak: u64,
    accumulated: u64,
    reported_accumulated: u64,
    ids: HashSet<u32>,
    invisible_known: bool,
    // Its now-figures as of its last refresh.
    active: bool,
    users: u64,
    invisible: Option<u64>,
    roles: Option<RoleCounts>,
    /// The day's sessions, by (user index, join time); only for session rooms.
    sessions: HashMap<(u32, i64), Stay>,
    has_sessions: bool,
    /// When its sessions were last reported.
    refreshed_at: i64,
    /// Failed refreshes in a row.
    failures: u32,
    /// When it last answered (Unix seconds; not saved: 0 after a restore).
    seen_at: i64,
}

impl RoomDay {
    /// Merges a delta of sessions (see [`DayFigures::Sessions`]).
    fn merge(&mut self, day: &Day, since: i64, sessions: &[SessionObs], users: &mut Users) {
        let last_seen = if self.has_sessions {
            self.refreshed_at
        } else {
            day.now
        };
        self.has_sessions = true;
        let mut reported: HashSet<(u32, i64)> = HashSet::with_capacity(sessions.len());
        for s in sessions {
            let leave = s.leave.unwrap_or(OPEN);
            if leave <= day.start || s.join > day.now {
                continue;
            }
            let user = users.intern(user_key(&s.user));
            let key = (user, s.join);
            self.sessions.insert(
                key,
                Stay {
                    leave: leave.max(s.join),
                    device: s.device,
                    role: s.role,
                },
            );
            reported.insert(key);
            self.ids.insert(user);
        }
        for (key, stay) in self.sessions.iter_mut() {
            if stay.leave == OPEN && key.1 < since && !reported.contains(key) {
                stay.leave = last_seen.max(key.1);
            }
        }
        self.refreshed_at = day.now;
        self.accumulated = self.accumulated.max(self.ids.len() as u64);
        // Users and roles now: distinct users with an open session.
        let mut users = HashSet::new();
        let mut roles: Option<RoleCounts> = None;
        let mut role_seen = HashSet::new();
        for ((user, _), stay) in &self.sessions {
            if stay.leave != OPEN {
                continue;
            }
            users.insert(*user);
            if let Some(role) = stay.role {
                let counts =
                    roles.get_or_insert_with(|| Role::ALL.iter().map(|r| (*r, 0)).collect());
                if role_seen.insert((*user, role)) {
                    *counts.entry(role).or_default() += 1;
                }
            }
        }
        if roles.is_none() && self.sessions.values().any(|s| s.role.is_some()) {
            roles = Some(Role::ALL.iter().map(|r| (*r, 0)).collect());
        }
        self.users = users.len() as u64;
        self.roles = roles;
        let mut presence = Vec::with_capacity(self.sessions.len());
        self.presence(day.start, &mut presence);
        self.peak = self.peak.max(peak_concurrency(&presence));
    }

    /// Its sessions as presence intervals within the day; open ones up to its last refresh.
    fn presence(&self, day_start: i64, out: &mut Vec<Presence>) {
        for ((user, join), stay) in &self.sessions {
            let end = if stay.leave == OPEN {
                self.refreshed_at.saturating_add(1)
            } else {
                stay.leave
            };
            let start = (*join).max(day_start);
            if start < end {
                out.push((*user, start, end));
            }
        }
    }

    /// Closes its open sessions (the room is no longer listed).
    fn close_sessions(&mut self) {
        let at = self.refreshed_at;
        for stay in self.sessions.values_mut() {
            if stay.leave == OPEN {
                stay.leave = at;
            }
        }
    }
}

/// One target's figures for the current local day.
#[derive(Debug, Default)]
pub struct Ledger {
    day: Option<NaiveDate>,
    rooms: BTreeMap<String, RoomDay>,
    peak: u64,
    accumulated: u64,
    users: Users,
    devices: Option<DeviceCounts>,
    watched: Vec<(String, bool)>,
    /// Rooms whose refresh failed before they ever answered: failed refreshes in a row. They
    /// have no figures (never a 0), only a name for `rtc_exporter_room_refresh_failures`.
    failing_unseen: BTreeMap<String, u32>,
    /// In the last poll stale rooms stood beside fresh ones: the cap on the target's users now
    /// (the day's people, or the fresh rooms' users), kept for re-renders without a poll.
    users_cap: Option<u64>,
}

/// What the ledger needs to know besides the observation.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// Room capacities.
    pub capacity: &'a Capacity,
    /// Rooms that get their own series.
    pub max_rooms: usize,
    /// Failed refreshes in a row after which a room loses its series.
    pub stale_after: u32,
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

    /// Rooms known today.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Forgets everything: a new local day began without a successful poll.
    pub fn reset(&mut self) {
        *self = Ledger::default();
    }

    /// Begins the local day `day` (at its midnight, polled or not): yesterday's figures must not
    /// pass for today's. What is known to be so at midnight carries over: every room in
    /// progress with its users now (and, where the vendor gives sessions, its open sessions,
    /// counted from midnight), so today's peak and accumulated start at the users now; rooms
    /// that ended yesterday, and people who left, are gone. A ledger already on `day` (or on a
    /// later one) is left alone. Returns whether it rolled.
    /// Only rooms that answered at or after `fresh_since` carry over, and none that is failing
    /// (it stays named, with no figures): a reading from hours before midnight, or of a room
    /// whose refresh fails, says nothing of who is in at midnight.
    pub fn roll(&mut self, day: &Day, fresh_since: i64) -> bool {
        match self.day {
            Some(d) if d < day.date => {}
            _ => return false,
        }
        let old = std::mem::take(self);
        let mut users = Users::default();
        let mut rooms = BTreeMap::new();
        let mut failing_unseen = old.failing_unseen;
        for (name, mut room) in old.rooms {
            if room.failures > 0 {
                failing_unseen.insert(name, room.failures);
                continue;
            }
            if !room.active || room.seen_at < fresh_since {
                continue;
            }
            let mut ids = HashSet::new();
            if room.has_sessions {
                // Open sessions carry over under their new user index; closed ones are
                // yesterday's.
                room.sessions = room
                    .sessions
                    .into_iter()
                    .filter(|(_, stay)| stay.leave == OPEN)
                    .map(|((user, join), stay)| {
                        let key = old
                            .users
                            .keys
                            .get(user as usize)
                            .copied()
                            .unwrap_or_default();
                        let user = users.intern(key);
                        ids.insert(user);
                        ((user, join), stay)
                    })
                    .collect();
            } else {
                // Who of the day's ids is in now is not known: the count is.
                room.sessions.clear();
            }
            room.ids = ids;
            // Open at its last refresh, so open at midnight: counted from there.
            room.refreshed_at = room.refreshed_at.max(day.start);
            room.peak = room.users;
            room.accumulated = room.users.max(room.ids.len() as u64);
            room.reported_accumulated = 0;
            room.failures = 0;
            rooms.insert(name, room);
        }
        *self = Ledger {
            day: Some(day.date),
            rooms,
            peak: 0,
            accumulated: 0,
            users,
            devices: old.devices,
            watched: old.watched,
            failing_unseen,
            users_cap: None,
        };
        true
    }

    /// Folds one poll into the day and returns the target's series values. `complete`: every
    /// room the vendor knows was refreshed, so a room it did not list has ended; otherwise
    /// (a partial poll) unlisted rooms keep their last values.
    pub fn apply(
        &mut self,
        day: &Day,
        obs: &Observation,
        complete: bool,
        limits: &Limits<'_>,
    ) -> TargetData {
        if self.day.is_some_and(|d| d < day.date) {
            // A new day the midnight roll has not begun yet: begin it now, carrying what
            // answered within the hour before midnight.
            self.roll(day, day.start - 3600);
        }
        if self.day != Some(day.date) {
            *self = Ledger {
                day: Some(day.date),
                ..Ledger::default()
            };
        }
        let mut refreshed: HashSet<&str> = HashSet::new();
        for r in &obs.rooms {
            self.failing_unseen.remove(&r.room);
            let first = refreshed.insert(r.room.as_str());
            let room = self.rooms.entry(r.room.clone()).or_default();
            room.invisible_known |= r.invisible.is_some();
            room.failures = 0;
            room.seen_at = day.now;
            if first {
                room.active = false;
                room.users = 0;
                room.invisible = None;
            }
            room.active |= r.active;
            match &r.day {
                DayFigures::Reported { peak, accumulated } => {
                    room.users = room.users.saturating_add(r.users);
                    room.peak = room.peak.max(*peak);
                    room.reported_accumulated = room.reported_accumulated.max(*accumulated);
                    room.accumulated = room.accumulated.max(*accumulated);
                }
                DayFigures::Present(ids) => {
                    room.users = room.users.saturating_add(r.users);
                    for id in ids {
                        room.ids.insert(self.users.intern(user_key(id)));
                    }
                    // A count above the ids listed (Volcengine's `TotalUser` 6 with two ids):
                    // at least that many people were in, so accumulated ≥ peak holds.
                    room.accumulated = room.accumulated.max(room.ids.len() as u64).max(room.users);
                }
                DayFigures::Sessions { since, sessions } => {
                    room.merge(day, *since, sessions, &mut self.users);
                    room.active |= room.users > 0;
                }
            }
            room.invisible = match (room.invisible, r.invisible) {
                (Some(a), Some(b)) => Some(a.saturating_add(b)),
                (a, b) => a.or(b),
            };
            room.peak = room.peak.max(room.users);
        }
        for name in &obs.failed {
            if refreshed.contains(name.as_str()) {
                continue;
            }
            match self.rooms.get_mut(name) {
                Some(room) => room.failures = room.failures.saturating_add(1),
                None => {
                    let n = self.failing_unseen.entry(name.clone()).or_default();
                    *n = n.saturating_add(1);
                }
            }
        }
        if complete {
            for (name, room) in self.rooms.iter_mut() {
                if !refreshed.contains(name.as_str()) && !obs.failed.contains(name) {
                    room.active = false;
                    room.users = 0;
                    room.invisible = room.invisible_known.then_some(0);
                    room.close_sessions();
                    if room.roles.is_some() {
                        room.roles = Some(Role::ALL.iter().map(|r| (*r, 0)).collect());
                    }
                }
            }
        }

        let mut users_now = 0u64;
        let mut rooms_active = 0u64;
        let mut biggest_room_peak = 0u64;
        let mut presence: Vec<Presence> = Vec::new();
        let mut session_devices: Option<HashSet<(u32, Device)>> = None;
        let mut open_users: HashSet<u32> = HashSet::new();
        for room in self.rooms.values() {
            users_now = users_now.saturating_add(room.users);
            rooms_active += u64::from(room.active);
            biggest_room_peak = biggest_room_peak.max(room.peak);
            if room.has_sessions {
                room.presence(day.start, &mut presence);
                let devices = session_devices.get_or_insert_with(HashSet::new);
                for ((user, _), stay) in &room.sessions {
                    if stay.leave == OPEN {
                        devices.insert((*user, stay.device));
                        open_users.insert(*user);
                    }
                }
            }
        }
        if session_devices.is_some() {
            // Users now of a session target: distinct people, as its peak counts them.
            users_now = open_users.len() as u64;
        }
        let reported = self
            .rooms
            .values()
            .fold(0u64, |sum, d| sum.saturating_add(d.reported_accumulated));
        // The people of the day known so far: distinct ids, plus what vendors report.
        let distinct = self
            .accumulated
            .max((self.users.len() as u64).saturating_add(reported));
        // A partial poll: fresh rooms beside stale ones at their last values. People who moved
        // from a stale room to a fresh one would count twice in the sum, so the target's users
        // now and its peak never go above the people of the day (peak ≤ accumulated).
        if obs.rooms.is_empty() && obs.failed.is_empty() {
            // No new reading (a re-render after a reload, the roll): the last cap holds.
        } else {
            let stale_beside_fresh = !complete
                && !obs.rooms.is_empty()
                && self
                    .rooms
                    .iter()
                    .any(|(name, d)| d.users > 0 && !refreshed.contains(name.as_str()));
            // The people in the fresh rooms are there now, each once: never capped below them,
            // nor below the day's people (ids, reported figures, any room's own count).
            let fresh: u64 = self
                .rooms
                .iter()
                .filter(|(name, _)| refreshed.contains(name.as_str()))
                .fold(0u64, |sum, (_, d)| sum.saturating_add(d.users));
            let biggest = self.rooms.values().map(|d| d.users).max().unwrap_or(0);
            self.users_cap = (stale_beside_fresh && session_devices.is_none())
                .then(|| distinct.max(fresh).max(biggest));
        }
        if let Some(cap) = self.users_cap {
            users_now = users_now.min(cap);
        }
        let union_peak = if presence.is_empty() {
            0
        } else {
            peak_concurrency(&presence)
        };
        self.peak = if presence.is_empty() && session_devices.is_none() {
            self.peak.max(users_now).max(biggest_room_peak)
        } else {
            // Sessions: the sweep over the union is exact (a user in two rooms at once is one
            // person), where the sum of the rooms' users now would count them twice.
            self.peak.max(union_peak)
        };
        // Never below the peak: people counted but not listed by id are people all the same.
        self.accumulated = distinct.max(self.peak);
        if let Some(devices) = &obs.devices {
            self.devices = Some(devices.clone());
        } else if let Some(pairs) = session_devices {
            let mut counts: DeviceCounts = Device::ALL.iter().map(|d| (*d, 0)).collect();
            for (_, d) in pairs {
                *counts.entry(d).or_default() += 1;
            }
            self.devices = Some(counts);
        } else if complete {
            self.devices = None;
        }
        if !obs.watched.is_empty() || complete {
            self.watched = obs.watched.clone();
        }

        let mut rows: Vec<RoomRow> = self
            .rooms
            .iter()
            .filter(|(_, d)| d.failures < limits.stale_after)
            .map(|(room, d)| RoomRow {
                room: room.clone(),
                active: d.active,
                users: d.users,
                invisible: d.invisible,
                peak: d.peak,
                accumulated: d.accumulated,
                capacity: limits.capacity.of(room),
                roles: d.roles.clone(),
            })
            .collect();
        let mut rooms_dropped = 0;
        if rows.len() > limits.max_rooms {
            // Keep the busiest rooms' series; the rest still count in the totals.
            rows.sort_by(|a, b| {
                (b.active, b.users, b.peak)
                    .cmp(&(a.active, a.users, a.peak))
                    .then_with(|| a.room.cmp(&b.room))
            });
            rooms_dropped = (rows.len() - limits.max_rooms) as u64;
            rows.truncate(limits.max_rooms);
            rows.sort_by(|a, b| a.room.cmp(&b.room));
        }
        let failed: HashSet<&String> = obs.failed.iter().collect();
        TargetData {
            rooms: rows,
            rooms_active,
            users: users_now,
            peak: self.peak,
            accumulated: self.accumulated,
            devices: self.devices.clone(),
            watched: self.watched.clone(),
            rooms_dropped,
            rooms_failed: failed.len() as u64,
            failing_rooms: {
                let mut failing: Vec<(String, u32)> = self
                    .rooms
                    .iter()
                    .filter(|(_, d)| d.failures > 0)
                    .map(|(room, d)| (room.clone(), d.failures))
                    .chain(self.failing_unseen.iter().map(|(r, n)| (r.clone(), *n)))
                    .collect();
                failing.sort();
                failing
            },
        }
    }
}

/// A ledger as the single state file of earlier releases keeps it (format 1, read only; this
/// release writes [`PackedLedger`]): the day, the target's figures, its interned user keys and
/// every room's figures and sessions. Loading checks every index, so a damaged file is refused
/// rather than half-read.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedLedger {
    /// The local day, `YYYY-MM-DD`.
    pub date: NaiveDate,
    peak: u64,
    accumulated: u64,
    /// User keys (xxh3 of the id), in index order.
    users: Vec<u64>,
    rooms: BTreeMap<String, SavedRoom>,
}

/// (user index, join, leave or null while open, device, role)
type SavedSession = (u32, i64, Option<i64>, String, Option<String>);

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedRoom {
    peak: u64,
    accumulated: u64,
    reported_accumulated: u64,
    ids: Vec<u32>,
    invisible_known: bool,
    active: bool,
    users: u64,
    invisible: Option<u64>,
    roles: Option<BTreeMap<String, u64>>,
    sessions: Vec<SavedSession>,
    has_sessions: bool,
    refreshed_at: i64,
    failures: u32,
}

fn role_named(name: &str) -> Option<Role> {
    Role::ALL.into_iter().find(|r| r.label() == name)
}

fn device_named(name: &str) -> Option<Device> {
    Device::ALL.into_iter().find(|d| d.label() == name)
}

impl Ledger {
    /// A ledger from a state file of format 1; an error names what is inconsistent.
    pub fn restore(saved: SavedLedger) -> Result<Ledger, String> {
        Ledger::restore_packed(PackedLedger::from_v1(saved)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RoomObservation;

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

    const CAP: Capacity = Capacity {
        default: None,
        rooms: BTreeMap::new(),
        warning_ratio: None,
        room_warning_ratios: BTreeMap::new(),
    };
    const LIMITS: Limits<'static> = Limits {
        capacity: &CAP,
        max_rooms: 10,
        stale_after: 3,
    };

    fn at(d: u32, now: i64) -> Day {
        Day {
            date: day(d),
            start: 0,
            now,
        }
    }

    /// The old shape of a call: one complete poll.
    trait Apply {
        fn apply_at(&mut self, d: u32, obs: &Observation, max_rooms: usize) -> TargetData;
    }
    impl Apply for Ledger {
        fn apply_at(&mut self, d: u32, obs: &Observation, max_rooms: usize) -> TargetData {
            let limits = Limits {
                max_rooms,
                ..LIMITS
            };
            self.apply(&at(d, 100), obs, true, &limits)
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
        l.apply_at(1, &obs(vec![present("a", &["u1", "u2", "u3"])]), 10);
        let d = l.apply_at(1, &obs(vec![present("a", &["u1", "u4"])]), 10);
        assert_eq!(d.rooms[0].users, 2);
        assert_eq!(d.rooms[0].peak, 3);
        assert_eq!(d.rooms[0].accumulated, 4);
        assert_eq!(d.peak, 3);
        assert_eq!(d.accumulated, 4);
    }

    fn reported(room: &str, active: bool, users: u64, peak: u64, acc: u64) -> RoomObservation {
        RoomObservation {
            room: room.into(),
            active,
            users,
            invisible: None,
            day: DayFigures::Reported {
                peak,
                accumulated: acc,
            },
        }
    }

    /// Figures of every room: (room, active, users, peak, accumulated).
    fn figures(d: &TargetData) -> Vec<(&str, bool, u64, u64, u64)> {
        d.rooms
            .iter()
            .map(|r| (r.room.as_str(), r.active, r.users, r.peak, r.accumulated))
            .collect()
    }

    #[test]
    fn local_midnight_rolls_the_day_keeping_only_what_is_in_progress() {
        let d1 = Day {
            date: day(1),
            start: 0,
            now: 1000,
        };
        let d2 = Day {
            date: day(2),
            start: 2000,
            now: 2000,
        };
        let roll = |l: &mut Ledger| {
            assert!(l.roll(&d2, 0), "a new day rolls");
            assert!(!l.roll(&d2, 0), "the same day does not roll again");
            l.apply(&d2, &Observation::default(), false, &LIMITS)
        };
        // Ids listed: the count now carries over; who it was is not known.
        let mut l = Ledger::new();
        l.apply(
            &d1,
            &obs(vec![present("p", &["u1", "u2", "u3", "u4"])]),
            true,
            &LIMITS,
        );
        l.apply(
            &d1,
            &obs(vec![present("p", &["u1", "u2"]), present("gone", &[])]),
            true,
            &LIMITS,
        );
        let d = roll(&mut l);
        assert_eq!(figures(&d), vec![("p", true, 2, 2, 2)]);
        assert_eq!((d.users, d.peak, d.accumulated), (2, 2, 2));
        // Reported figures: yesterday's peak and accumulated go; an ended call's room goes.
        let mut l = Ledger::new();
        let o = obs(vec![
            reported("r", true, 5, 40, 90),
            reported("ended", false, 0, 30, 60),
        ]);
        l.apply(&d1, &o, true, &LIMITS);
        let d = roll(&mut l);
        assert_eq!(figures(&d), vec![("r", true, 5, 5, 5)]);
        assert_eq!((d.users, d.peak, d.accumulated), (5, 5, 5));
        // Sessions: the open ones carry over, counted from midnight; who left is yesterday's.
        let mut l = Ledger::new();
        let o = obs(vec![sessions(
            "s",
            0,
            vec![
                stay("x", 100, None),
                stay("y", 100, Some(500)),
                stay("z", 600, None),
            ],
        )]);
        let before = l.apply(&d1, &o, true, &LIMITS);
        assert_eq!(figures(&before), vec![("s", true, 2, 2, 3)]);
        let d = roll(&mut l);
        assert_eq!(figures(&d), vec![("s", true, 2, 2, 2)]);
        assert_eq!((d.users, d.peak, d.accumulated), (2, 2, 2));
        // The first poll of the new day: x still in, z left, w came; y never counts today.
        let d3 = Day { now: 2500, ..d2 };
        let o = obs(vec![sessions(
            "s",
            2000,
            vec![
                stay("x", 100, None),
                stay("z", 600, Some(2100)),
                stay("w", 2200, None),
            ],
        )]);
        let d = l.apply(&d3, &o, true, &LIMITS);
        // x with z until 2100, x with w from 2200: never three at once.
        assert_eq!(figures(&d), vec![("s", true, 2, 2, 3)]);
        // A ledger saved after the roll comes back with the same figures.
        let back = Ledger::restore_packed(l.save().unwrap()).unwrap().apply(
            &d3,
            &Observation::default(),
            false,
            &LIMITS,
        );
        assert_eq!(figures(&back), figures(&d));
    }

    #[test]
    fn the_roll_carries_no_failing_room_and_no_old_reading() {
        let d1 = |now| Day {
            date: day(1),
            start: 0,
            now,
        };
        let d2 = Day {
            date: day(2),
            start: 2000,
            now: 2000,
        };
        let mut l = Ledger::new();
        let o = obs(vec![
            present("fails", &["f1", "f2", "f3"]),
            present("old", &["o1"]),
            present("fresh", &["n1"]),
        ]);
        l.apply(&d1(100), &o, true, &LIMITS);
        // "old" is not in the last polls' listings of a partial kind: it keeps its last values.
        for now in [1800, 1900] {
            let partial = Observation {
                rooms: vec![present("fresh", &["n1"])],
                failed: vec!["fails".into()],
                ..Observation::default()
            };
            l.apply(&d1(now), &partial, false, &LIMITS);
        }
        assert!(l.roll(&d2, 1500));
        let d = l.apply(&d2, &Observation::default(), false, &LIMITS);
        // "fresh" answered at 1900: carried; "old" last answered at 100: not; "fails" is named,
        // with no figures.
        assert_eq!(figures(&d), vec![("fresh", true, 1, 1, 1)]);
        assert_eq!(d.failing_rooms, vec![("fails".to_string(), 2)]);
        assert_eq!((d.users, d.peak, d.accumulated), (1, 1, 1));
    }

    #[test]
    fn a_partial_poll_never_caps_users_below_a_room_that_answered() {
        let d1 = Day {
            date: day(1),
            start: 0,
            now: 100,
        };
        let mut l = Ledger::new();
        l.apply(&d1, &obs(vec![present("s", &["x"])]), true, &LIMITS);
        // A fresh room counts 50 with two ids listed; the other room fails.
        let mut a = present("a", &["u1", "u2"]);
        a.users = 50;
        let partial = Observation {
            rooms: vec![a],
            failed: vec!["s".into()],
            ..Observation::default()
        };
        let d = l.apply(&d1, &partial, false, &LIMITS);
        assert!(d.users >= 50, "{}", d.users);
        assert!(d.peak <= d.accumulated);
        // A re-render without a poll (a reload) keeps the same figures.
        let again = l.apply(&d1, &Observation::default(), false, &LIMITS);
        assert_eq!((again.users, again.peak), (d.users, d.peak));
    }

    #[test]
    fn a_partial_poll_never_counts_people_who_moved_from_a_stale_room_twice() {
        let ids: Vec<String> = (0..50).map(|i| format!("u{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let d1 = Day {
            date: day(1),
            start: 0,
            now: 100,
        };
        let mut l = Ledger::new();
        l.apply(
            &d1,
            &obs(vec![present("a", &ids), present("b", &[])]),
            true,
            &LIMITS,
        );
        // Room a fails; its 50 people are now in room b.
        let partial = Observation {
            rooms: vec![present("b", &ids)],
            failed: vec!["a".into()],
            ..Observation::default()
        };
        let d = l.apply(&d1, &partial, false, &LIMITS);
        assert_eq!((d.users, d.peak, d.accumulated), (50, 50, 50));
        assert_eq!(d.rooms_failed, 1);
        // Fifty others in b beside a's stale fifty: a hundred people, all counted.
        let others: Vec<String> = (50..100).map(|i| format!("u{i}")).collect();
        let others: Vec<&str> = others.iter().map(String::as_str).collect();
        let partial = Observation {
            rooms: vec![present("b", &others)],
            failed: vec!["a".into()],
            ..Observation::default()
        };
        let d = l.apply(&d1, &partial, false, &LIMITS);
        assert_eq!((d.users, d.peak, d.accumulated), (100, 100, 100));
    }

    #[test]
    fn a_count_above_the_ids_keeps_accumulated_at_or_above_the_peak() {
        // Volcengine's later doc example: TotalUser 6, one visible and one invisible id.
        let mut l = Ledger::new();
        let mut a = present("a", &["normal_user_1", "silent_user_1"]);
        a.users = 6;
        let d = l.apply_at(1, &obs(vec![a, present("b", &["u3"])]), 10);
        let a = &d.rooms[0];
        assert_eq!((a.users, a.peak, a.accumulated), (6, 6, 6));
        assert_eq!((d.users, d.peak, d.accumulated), (7, 7, 7));
        // Fewer later, the ids seen still count: never lower than before.
        let d = l.apply_at(1, &obs(vec![present("a", &["u9"])]), 10);
        assert_eq!((d.rooms[0].peak, d.rooms[0].accumulated), (6, 6));
        assert!(d.peak <= d.accumulated, "{} > {}", d.peak, d.accumulated);
    }

    #[test]
    fn a_room_no_longer_listed_ends_but_keeps_its_figures_until_midnight() {
        let mut l = Ledger::new();
        l.apply_at(
            1,
            &obs(vec![present("a", &["u1", "u2"]), present("b", &["u3"])]),
            10,
        );
        let d = l.apply_at(1, &obs(vec![present("b", &["u3"])]), 10);
        let a = &d.rooms[0];
        assert_eq!(
            (a.room.as_str(), a.active, a.users, a.peak, a.accumulated),
            ("a", false, 0, 2, 2)
        );
        assert_eq!(d.rooms_active, 1);
        let next = l.apply_at(2, &obs(vec![present("b", &["u3"])]), 10);
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
        let d = l.apply_at(1, &obs(vec![rep("a", 3, 5, 9), rep("b", 1, 2, 4)]), 10);
        assert_eq!((d.users, d.accumulated), (4, 13));
        assert_eq!(d.peak, 5);
        let d = l.apply_at(1, &obs(vec![rep("a", 1, 4, 8), rep("b", 1, 2, 4)]), 10);
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
        let d = l.apply_at(1, &obs(rooms), 2);
        let names: Vec<_> = d.rooms.iter().map(|r| r.room.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
        assert_eq!((d.rooms_dropped, d.users, d.rooms_active), (1, 6, 3));
    }

    fn stay(user: &str, join: i64, leave: Option<i64>) -> SessionObs {
        SessionObs {
            user: user.into(),
            join,
            leave,
            device: Device::Web,
            role: None,
        }
    }

    fn sessions(room: &str, since: i64, list: Vec<SessionObs>) -> RoomObservation {
        RoomObservation {
            room: room.into(),
            active: true,
            users: 0,
            invisible: None,
            day: DayFigures::Sessions {
                since,
                sessions: list,
            },
        }
    }

    #[test]
    fn sweep_counts_distinct_users_at_once() {
        assert_eq!(
            peak_concurrency(&[(1, 0, 10), (1, 10, 20), (2, 20, 30)]),
            1,
            "rejoin and hand-over"
        );
        assert_eq!(
            peak_concurrency(&[(1, 0, 10), (1, 5, 20), (2, 6, 7)]),
            2,
            "a user in twice is one"
        );
        assert_eq!(peak_concurrency(&[(1, 0, 10), (2, 9, 20), (3, 9, 10)]), 3);
        assert_eq!(
            peak_concurrency(&[(1, 5, 5)]),
            0,
            "empty stays count for nobody"
        );
        assert_eq!(peak_concurrency(&[]), 0);
        assert_eq!(
            peak_concurrency(&[(0, -100, 10), (1, i64::MIN / 2, -50)]),
            1,
            "times before the base and far back are safe"
        );
    }

    #[test]
    fn sweep_matches_brute_force_on_random_sessions() {
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..200 {
            let n = rng.usize(1..40);
            let v: Vec<Presence> = (0..n)
                .map(|_| {
                    let s = rng.i64(0..100);
                    (rng.u32(0..8), s, s + rng.i64(0..30))
                })
                .collect();
            let brute = (0..130)
                .map(|t| {
                    v.iter()
                        .filter(|(_, s, e)| *s <= t && t < *e)
                        .map(|(u, _, _)| *u)
                        .collect::<HashSet<_>>()
                        .len() as u64
                })
                .max()
                .unwrap_or(0);
            assert_eq!(peak_concurrency(&v), brute, "{v:?}");
        }
    }

    #[test]
    fn sessions_give_exact_peak_current_and_distinct_users() {
        let mut l = Ledger::new();
        // Poll at 100: u1 in since before midnight (day starts at 0), u2 came and went, u3 in.
        let first = obs(vec![sessions(
            "a",
            0,
            vec![
                stay("u1", -50, None),
                stay("u2", 10, Some(20)),
                stay("u3", 15, None),
            ],
        )]);
        let d = l.apply(&at(1, 100), &first, true, &LIMITS);
        let a = &d.rooms[0];
        assert_eq!((a.users, a.peak, a.accumulated), (2, 3, 3));
        // Poll at 200, delta since 90: u1 left at 150, u3 still in, u4 opened and closed
        // between the polls, u2 rejoined.
        let second = obs(vec![sessions(
            "a",
            90,
            vec![
                stay("u1", -50, Some(150)),
                stay("u3", 15, None),
                stay("u4", 120, Some(130)),
                stay("u2", 140, None),
            ],
        )]);
        let d = l.apply(&at(1, 200), &second, true, &LIMITS);
        let a = &d.rooms[0];
        assert_eq!(a.users, 2, "u3 and u2");
        assert_eq!(a.peak, 3);
        assert_eq!(a.accumulated, 4);
        assert_eq!(d.accumulated, 4);
        assert_eq!(d.users, 2);
    }

    #[test]
    fn an_open_session_missing_from_a_covering_delta_has_ended() {
        let mut l = Ledger::new();
        let first = obs(vec![sessions(
            "a",
            0,
            vec![stay("u1", 10, None), stay("u2", 20, None)],
        )]);
        l.apply(&at(1, 100), &first, true, &LIMITS);
        // The report covers [50, 200] and lists only u2: u1 left before 50.
        let second = obs(vec![sessions("a", 50, vec![stay("u2", 20, None)])]);
        let d = l.apply(&at(1, 200), &second, true, &LIMITS);
        assert_eq!(d.rooms[0].users, 1);
        assert_eq!(d.rooms[0].peak, 2);
    }

    #[test]
    fn target_peak_is_a_sweep_of_the_union_not_a_sum() {
        let mut l = Ledger::new();
        let o = obs(vec![
            sessions(
                "a",
                0,
                vec![stay("u1", 0, Some(10)), stay("u2", 0, Some(10))],
            ),
            sessions(
                "b",
                0,
                vec![stay("u3", 20, Some(30)), stay("u1", 20, Some(30))],
            ),
        ]);
        let d = l.apply(&at(1, 100), &o, true, &LIMITS);
        assert_eq!((d.rooms[0].peak, d.rooms[1].peak), (2, 2));
        assert_eq!(d.peak, 2, "the rooms peaked at different times");
        assert_eq!(d.accumulated, 3, "u1 in both rooms counts once");
        let o = obs(vec![sessions("b", 0, vec![stay("u4", 5, Some(8))])]);
        let d = l.apply(&at(1, 110), &o, false, &LIMITS);
        assert_eq!(d.peak, 3, "u1, u2 and u4 at 5..8");
    }

    #[test]
    fn one_person_in_two_session_rooms_at_once_is_one_at_the_target() {
        let mut l = Ledger::new();
        let o = obs(vec![
            sessions("a", 0, vec![stay("u1", 0, None)]),
            sessions("b", 0, vec![stay("u1", 10, None)]),
        ]);
        let d = l.apply(&at(1, 100), &o, true, &LIMITS);
        assert_eq!((d.users, d.peak, d.accumulated), (1, 1, 1));
        assert_eq!((d.rooms[0].users, d.rooms[1].users), (1, 1));
    }

    #[test]
    fn sessions_give_devices_and_roles_now() {
        let mut l = Ledger::new();
        let mut t = stay("t", 0, None);
        t.role = Some(Role::Teacher);
        t.device = Device::Mac;
        let mut s1 = stay("s1", 0, None);
        s1.role = Some(Role::Student);
        let mut s2 = stay("s2", 0, Some(50));
        s2.role = Some(Role::Student);
        let d = l.apply(
            &at(1, 100),
            &obs(vec![sessions("a", 0, vec![t, s1, s2])]),
            true,
            &LIMITS,
        );
        let roles = d.rooms[0].roles.clone().unwrap_or_default();
        assert_eq!(roles[&Role::Teacher], 1);
        assert_eq!(roles[&Role::Student], 1);
        assert_eq!(roles[&Role::Viewer], 0);
        let devices = d.devices.unwrap_or_default();
        assert_eq!((devices[&Device::Mac], devices[&Device::Web]), (1, 1));
    }

    #[test]
    fn a_partial_poll_keeps_the_rooms_it_did_not_refresh() {
        let mut l = Ledger::new();
        l.apply_at(
            1,
            &obs(vec![present("a", &["1", "2"]), present("b", &["3"])]),
            10,
        );
        // a failed, b answered: a keeps its values.
        let mut o = obs(vec![present("b", &["3", "4"])]);
        o.failed = vec!["a".into()];
        let d = l.apply(&at(1, 200), &o, false, &LIMITS);
        assert_eq!((d.rooms[0].users, d.rooms[0].active), (2, true));
        assert_eq!(d.rooms[1].users, 2);
        assert_eq!((d.users, d.rooms_failed), (4, 1));
        // Not reached at all in a poll cut short: also kept.
        let d = l.apply(
            &at(1, 300),
            &obs(vec![present("b", &["3"])]),
            false,
            &LIMITS,
        );
        assert_eq!(d.rooms[0].users, 2);
        assert_eq!(d.rooms_failed, 0);
        // A room failing stale_after times in a row loses its series, never zeroed.
        for _ in 0..2 {
            l.apply(&at(1, 400), &o, false, &LIMITS);
        }
        let d = l.apply(&at(1, 500), &o, false, &LIMITS);
        assert_eq!(d.rooms.len(), 1, "{:?}", d.rooms);
        assert_eq!(d.rooms[0].room, "b");
    }

    #[test]
    fn a_saved_ledger_comes_back_with_the_same_figures() {
        let mut l = Ledger::new();
        let d = at(1, 100);
        let sessions = |v: &[(&str, i64, Option<i64>)]| DayFigures::Sessions {
            since: 0,
            sessions: v
                .iter()
                .map(|(u, j, leave)| SessionObs {
                    user: u.to_string(),
                    join: *j,
                    leave: *leave,
                    device: Device::Ios,
                    role: Some(Role::Teacher),
                })
                .collect(),
        };
        let o = obs(vec![
            present("a", &["u1", "u2"]),
            RoomObservation {
                room: "s".into(),
                active: true,
                users: 1,
                invisible: None,
                day: sessions(&[("x", 10, Some(50)), ("y", 20, None), ("x", 60, None)]),
            },
        ]);
        let before = l.apply(&d, &o, true, &LIMITS);
        let mut saved = l.save().unwrap();
        saved.compact();
        let text = serde_json::to_string(&saved).unwrap();
        // Five numbers a session (user, join after the previous join, stay or -1 while open,
        // device code, role code), sorted by join; the session users are not listed again.
        assert!(
            text.contains(r#""ids":[],"sessions":[2,10,40,0,0,3,10,-1,0,0,2,40,-1,0,0]"#),
            "{text}"
        );
        let saved: PackedLedger = serde_json::from_str(&text).unwrap();
        let mut back = Ledger::restore_packed(saved).unwrap();
        let after = back.apply(&at(1, 100), &Observation::default(), false, &LIMITS);
        assert_eq!(before, after);
        // A damaged file is refused, not half-read.
        let bad = text.replace("[2,10,40", "[99,10,40");
        assert_ne!(bad, text);
        let saved: PackedLedger = serde_json::from_str(&bad).unwrap();
        assert!(Ledger::restore_packed(saved)
            .unwrap_err()
            .contains("user index 99"));
        let cut = text.replace(",2,40,-1,0,0]", ",2,40,-1]");
        let err = serde_json::from_str::<PackedLedger>(&cut).unwrap_err();
        assert!(err.to_string().contains("without its device"), "{err}");
        let bad = text.replace(",-1,0,0,2,40", ",-1,0,7,2,40");
        let saved: PackedLedger = serde_json::from_str(&bad).unwrap();
        assert!(Ledger::restore_packed(saved)
            .unwrap_err()
            .contains("role code 7 unknown"));
        let bad = text.replace(r#""ios","android""#, r#""ios?","android""#);
        let saved: PackedLedger = serde_json::from_str(&bad).unwrap();
        assert!(Ledger::restore_packed(saved)
            .unwrap_err()
            .contains("unknown device"));
    }
}

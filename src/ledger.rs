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
//! Each kind is a type of its own (`Reported`, `Present`, `Sessions`) behind one small enum,
//! `Kind` (fold a reading, end, count into the target, roll at midnight, roles now); what every
//! room publishes (`Figures`), whatever its kind, sits beside it in `RoomDay`. [`Ledger::apply`]
//! runs in named steps: begin the day, fold the rooms, mark the failed ones, end the unlisted
//! ones, the target's figures, devices and watched users, the rows.
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
use crate::model::{
    DayFigures, Device, DeviceCounts, Observation, Role, RoleCounts, RoomObservation, SessionObs,
};
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
            start: crate::clouds::local_midnight(tz, date).timestamp(),
            now: now.timestamp(),
        }
    }
}

/// One stay in a session room: (user index, join time) is its key.
#[derive(Debug, Clone, Copy)]
struct Stay {
    /// Leave time, or [`OPEN`].
    leave: i64,
    device: Device,
    role: Option<Role>,
}

/// What every room publishes, whatever its kind: its figures now (as of its last refresh) and
/// for the day.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    active: bool,
    users: u64,
    peak: u64,
    accumulated: u64,
}

/// One room's day: the figures every kind publishes, its refresh state, and its [`Kind`].
#[derive(Debug)]
struct RoomDay {
    figures: Figures,
    /// Invisible users now, where the vendor tells.
    invisible: Option<u64>,
    /// The vendor told its invisible users at least once today.
    invisible_known: bool,
    /// Refreshed by the poll being folded (cleared when the next one begins).
    fresh: bool,
    /// Failed refreshes in a row.
    failures: u32,
    /// When it last answered (Unix seconds; not saved: 0 after a restore).
    seen_at: i64,
    kind: Kind,
}

/// What a room keeps besides its [`Figures`], by how the vendor gives its day
/// ([`DayFigures`]): three types behind one small interface (fold a reading, end, count into
/// the target, roll at midnight, roles now; save and restore beside [`SavedRoom`]).
///
/// A URTC room carries 8 bytes of its own here; the sets of the other two kinds are boxed, so a
/// room of one kind never pays for another's. A reading of another kind than the room holds
/// (no vendor sends one) replaces its kind; the figures already published stay.
#[derive(Debug)]
enum Kind {
    Reported(Reported),
    Present(Box<Present>),
    Sessions(Box<Sessions>),
}

/// The vendor reports the day's peak and accumulated itself.
#[derive(Debug, Default)]
struct Reported {
    /// The highest accumulated the vendor reported today (summed over rooms for the target).
    accumulated: u64,
}

/// The vendor lists who is in now: the ids observed today, and the users now by role where
/// the vendor lists roles apart.
#[derive(Debug, Default)]
struct Present {
    ids: HashSet<u32>,
    roles: Option<RoleCounts>,
}

/// The vendor gives join and leave times: the day's sessions.
#[derive(Debug, Default)]
struct Sessions {
    /// By (user index, join time).
    sessions: HashMap<(u32, i64), Stay>,
    /// When its sessions were last reported.
    refreshed_at: i64,
    /// Users now by role, where a session tells a role.
    roles: Option<RoleCounts>,
}

/// What the rooms add up to for the target, as [`Kind::count`] and [`RoomDay::count`] gather it.
#[derive(Debug, Default)]
struct Totals {
    /// The rooms' users now, summed.
    users: u64,
    rooms_active: u64,
    biggest_peak: u64,
    /// The vendor-reported accumulated users, summed.
    reported: u64,
    /// Where the target has session rooms: their people.
    sessions: Option<SessionTotals>,
}

/// The people of a target's session rooms.
#[derive(Debug, Default)]
struct SessionTotals {
    /// Every stay of the day, as presence intervals.
    presence: Vec<Presence>,
    /// Who is in now, on which device.
    devices: HashSet<(u32, Device)>,
    /// Who is in now.
    open: HashSet<u32>,
}

/// A session room's roles before anyone is counted: every role of a class at 0 (a role
/// outside them counts where a session names it).
fn zero_roles() -> RoleCounts {
    Role::CLASS.iter().map(|r| (*r, 0)).collect()
}

impl RoomDay {
    fn new(kind: Kind) -> Self {
        RoomDay {
            figures: Figures::default(),
            invisible: None,
            invisible_known: false,
            fresh: false,
            failures: 0,
            seen_at: 0,
            kind,
        }
    }

    /// Folds one reading of the room in this poll (a room listed twice in one poll adds up).
    fn fold(&mut self, r: &RoomObservation, day: &Day, users: &mut Users) {
        self.invisible_known |= r.invisible.is_some();
        self.failures = 0;
        self.seen_at = day.now;
        if !self.fresh {
            // Its first reading in this poll: the figures now start over.
            self.fresh = true;
            self.figures.active = false;
            self.figures.users = 0;
            self.invisible = None;
        }
        self.figures.active |= r.active;
        self.kind.fold(r, &mut self.figures, day, users);
        self.invisible = match (self.invisible, r.invisible) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            (a, b) => a.or(b),
        };
        self.figures.peak = self.figures.peak.max(self.figures.users);
    }

    /// A complete poll no longer lists it: it ended, keeping its figures for the day.
    fn end(&mut self) {
        self.figures.active = false;
        self.figures.users = 0;
        self.invisible = self.invisible_known.then_some(0);
        self.kind.end();
    }

    /// Adds it to the target's totals.
    fn count(&self, day_start: i64, totals: &mut Totals) {
        totals.users = totals.users.saturating_add(self.figures.users);
        totals.rooms_active += u64::from(self.figures.active);
        totals.biggest_peak = totals.biggest_peak.max(self.figures.peak);
        self.kind.count(day_start, totals);
    }

    /// Its series values.
    fn row(&self, room: &str, capacity: &Capacity) -> RoomRow {
        RoomRow {
            room: room.to_string(),
            active: self.figures.active,
            users: self.figures.users,
            invisible: self.invisible,
            peak: self.figures.peak,
            accumulated: self.figures.accumulated,
            capacity: capacity.of(room),
            roles: self.kind.roles().cloned(),
        }
    }
}

impl Kind {
    /// An empty day of the kind `reading` is.
    fn of(reading: &DayFigures) -> Kind {
        match reading {
            DayFigures::Reported { .. } => Kind::Reported(Reported::default()),
            DayFigures::Present(_) | DayFigures::PresentByRole { .. } => {
                Kind::Present(Box::default())
            }
            DayFigures::Sessions { .. } => Kind::Sessions(Box::default()),
        }
    }

    /// Folds one reading into the room's figures.
    fn fold(&mut self, r: &RoomObservation, f: &mut Figures, day: &Day, users: &mut Users) {
        match (self, &r.day) {
            (Kind::Reported(k), DayFigures::Reported { peak, accumulated }) => {
                k.fold(f, r.users, *peak, *accumulated)
            }
            (Kind::Present(k), DayFigures::Present(ids)) => {
                k.roles = None;
                k.fold(f, r.users, ids, users)
            }
            // Only the roles the vendor tells apart: a role it cannot tell (Agora has no
            // teacher) is absent, never 0.
            (Kind::Present(k), DayFigures::PresentByRole { ids, roles }) => {
                k.roles = Some(roles.clone());
                k.fold(f, r.users, ids, users)
            }
            (Kind::Sessions(k), DayFigures::Sessions { since, sessions }) => {
                k.fold(f, day, *since, sessions, users)
            }
            (kind, reading) => {
                *kind = Kind::of(reading);
                kind.fold(r, f, day, users);
            }
        }
    }

    /// The room is no longer listed.
    fn end(&mut self) {
        match self {
            Kind::Sessions(k) => k.end(),
            Kind::Present(k) => {
                for n in k.roles.iter_mut().flat_map(|r| r.values_mut()) {
                    *n = 0;
                }
            }
            Kind::Reported(_) => {}
        }
    }

    /// Adds what the kind knows of the day to the target's totals.
    fn count(&self, day_start: i64, totals: &mut Totals) {
        match self {
            Kind::Reported(k) => totals.reported = totals.reported.saturating_add(k.accumulated),
            Kind::Present(_) => {}
            Kind::Sessions(k) => k.count(day_start, totals.sessions.get_or_insert_default()),
        }
    }

    /// Begins a new day at `day_start` (the room is in progress): keeps what is known to be so
    /// at midnight, re-interning user indices from `old` into `new`. Returns the distinct users
    /// it carries.
    fn roll(&mut self, day_start: i64, old: &Users, new: &mut Users) -> u64 {
        match self {
            Kind::Reported(k) => {
                k.accumulated = 0;
                0
            }
            // Who of the day's ids is in now is not known: the count is.
            Kind::Present(k) => {
                k.ids.clear();
                0
            }
            Kind::Sessions(k) => k.roll(day_start, old, new),
        }
    }

    /// Users now by role, where the vendor tells roles.
    fn roles(&self) -> Option<&RoleCounts> {
        match self {
            Kind::Sessions(k) => k.roles.as_ref(),
            Kind::Present(k) => k.roles.as_ref(),
            Kind::Reported(_) => None,
        }
    }
}

impl Reported {
    fn fold(&mut self, f: &mut Figures, users_now: u64, peak: u64, accumulated: u64) {
        f.users = f.users.saturating_add(users_now);
        f.peak = f.peak.max(peak);
        self.accumulated = self.accumulated.max(accumulated);
        f.accumulated = f.accumulated.max(accumulated);
    }
}

impl Present {
    fn fold(&mut self, f: &mut Figures, users_now: u64, ids: &[String], users: &mut Users) {
        f.users = f.users.saturating_add(users_now);
        for id in ids {
            self.ids.insert(users.intern(user_key(id)));
        }
        // A count above the ids listed (Volcengine's `TotalUser` 6 with two ids): at least that
        // many people were in, so accumulated ≥ peak holds.
        f.accumulated = f.accumulated.max(self.ids.len() as u64).max(f.users);
    }
}

impl Sessions {
    /// Merges a delta of sessions (see [`DayFigures::Sessions`]): users and roles now, the
    /// peak by a sweep, accumulated the distinct users.
    fn fold(
        &mut self,
        f: &mut Figures,
        day: &Day,
        since: i64,
        sessions: &[SessionObs],
        users: &mut Users,
    ) {
        // A room new today holds no session to close.
        let last_seen = self.refreshed_at;
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
        }
        for (key, stay) in self.sessions.iter_mut() {
            if stay.leave == OPEN && key.1 < since && !reported.contains(key) {
                stay.leave = last_seen.max(key.1);
            }
        }
        self.refreshed_at = day.now;
        f.accumulated = f.accumulated.max(self.distinct_users());
        // Users and roles now: distinct users with an open session.
        let mut open = HashSet::new();
        let mut roles: Option<RoleCounts> = None;
        let mut role_seen = HashSet::new();
        for ((user, _), stay) in &self.sessions {
            if stay.leave != OPEN {
                continue;
            }
            open.insert(*user);
            if let Some(role) = stay.role {
                let counts = roles.get_or_insert_with(zero_roles);
                if role_seen.insert((*user, role)) {
                    *counts.entry(role).or_default() += 1;
                }
            }
        }
        if roles.is_none() && self.sessions.values().any(|s| s.role.is_some()) {
            roles = Some(zero_roles());
        }
        f.users = open.len() as u64;
        f.active |= f.users > 0;
        self.roles = roles;
        let mut presence = Vec::with_capacity(self.sessions.len());
        self.presence(day.start, &mut presence);
        f.peak = f.peak.max(peak_concurrency(&presence));
    }

    /// The distinct users of its sessions.
    fn distinct_users(&self) -> u64 {
        let mut users: Vec<u32> = self.sessions.keys().map(|k| k.0).collect();
        users.sort_unstable();
        users.dedup();
        users.len() as u64
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

    /// The room is no longer listed: its open sessions close at its last refresh, and nobody
    /// is in by role.
    fn end(&mut self) {
        let at = self.refreshed_at;
        for stay in self.sessions.values_mut() {
            if stay.leave == OPEN {
                stay.leave = at;
            }
        }
        if self.roles.is_some() {
            self.roles = Some(zero_roles());
        }
    }

    fn count(&self, day_start: i64, totals: &mut SessionTotals) {
        self.presence(day_start, &mut totals.presence);
        for ((user, _), stay) in &self.sessions {
            if stay.leave == OPEN {
                totals.devices.insert((*user, stay.device));
                totals.open.insert(*user);
            }
        }
    }

    /// Open sessions carry over under their new user index, counted from midnight; closed
    /// ones are yesterday's.
    fn roll(&mut self, day_start: i64, old: &Users, new: &mut Users) -> u64 {
        let mut carried = HashSet::new();
        self.sessions = std::mem::take(&mut self.sessions)
            .into_iter()
            .filter(|(_, stay)| stay.leave == OPEN)
            .map(|((user, join), stay)| {
                let key = old.keys.get(user as usize).copied().unwrap_or_default();
                let user = new.intern(key);
                carried.insert(user);
                ((user, join), stay)
            })
            .collect();
        // Open at its last refresh, so open at midnight: counted from there.
        self.refreshed_at = self.refreshed_at.max(day_start);
        carried.len() as u64
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
            if !room.figures.active || room.seen_at < fresh_since {
                continue;
            }
            let carried = room.kind.roll(day.start, &old.users, &mut users);
            let f = &mut room.figures;
            f.peak = f.users;
            f.accumulated = f.users.max(carried);
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
    ///
    /// In steps: begin the day, fold the rooms that answered, mark the ones that failed, end
    /// the ones no longer listed, then the target's totals (users now under the partial-poll
    /// cap, peak, accumulated), devices and watched users, and the rooms' rows under
    /// `max_rooms`.
    pub fn apply(
        &mut self,
        day: &Day,
        obs: &Observation,
        complete: bool,
        limits: &Limits<'_>,
    ) -> TargetData {
        self.begin(day);
        self.fold_rooms(day, obs);
        self.mark_failed(&obs.failed);
        let named_failed: HashSet<&str> = obs.failed.iter().map(String::as_str).collect();
        // A partial poll (failed or cut short by `poll_timeout`): a room in progress it never
        // reached keeps its last values as a failed one does, and is named as one (counted
        // towards `stale_after`), not shown as if it had answered.
        let reading = !obs.rooms.is_empty() || !obs.failed.is_empty();
        let unreached = if complete || !reading {
            Vec::new()
        } else {
            self.unreached(&named_failed)
        };
        self.mark_failed(&unreached);
        if complete {
            self.end_unlisted(&named_failed);
        }
        let mut totals = Totals::default();
        for room in self.rooms.values() {
            room.count(day.start, &mut totals);
        }
        let users = self.target_figures(obs, complete, &totals);
        self.devices_and_watched(obs, complete, totals.sessions);
        let (rooms, rooms_dropped) = self.rows(limits);
        let failed = named_failed.len() + unreached.len();
        TargetData {
            rooms,
            rooms_active: totals.rooms_active,
            users,
            peak: self.peak,
            accumulated: self.accumulated,
            devices: self.devices.clone(),
            watched: self.watched.clone(),
            rooms_dropped,
            rooms_failed: failed as u64,
            failing_rooms: self.failing_rooms(),
        }
    }

    /// Puts the ledger on `day`: the midnight roll if it has not run, or a fresh day.
    fn begin(&mut self, day: &Day) {
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
    }

    /// Folds every room the poll refreshed, each as its kind does.
    fn fold_rooms(&mut self, day: &Day, obs: &Observation) {
        for room in self.rooms.values_mut() {
            room.fresh = false;
        }
        let mut added = 0;
        for r in &obs.rooms {
            self.failing_unseen.remove(&r.room);
            let room = match self.rooms.get_mut(&r.room) {
                Some(room) => room,
                None => {
                    added += 1;
                    self.rooms
                        .entry(r.room.clone())
                        .or_insert_with(|| RoomDay::new(Kind::of(&r.day)))
                }
            };
            room.fold(r, day, &mut self.users);
        }
        if added > 0 && added >= self.rooms.len() / 8 {
            // Rooms inserted one by one in order leave the map's nodes about half full; built
            // again from its sorted entries, they are full (at 50 000 rooms, 4 MB less).
            self.rooms = std::mem::take(&mut self.rooms).into_iter().collect();
        }
    }

    /// Counts a failed refresh of each room named (once a poll, and not for a room that also
    /// answered in it); a room never seen is named with no figures.
    fn mark_failed(&mut self, failed: &[String]) {
        for name in failed {
            match self.rooms.get_mut(name) {
                Some(room) if room.fresh => {}
                Some(room) => room.failures = room.failures.saturating_add(1),
                None => {
                    let n = self.failing_unseen.entry(name.clone()).or_default();
                    *n = n.saturating_add(1);
                }
            }
        }
    }

    /// The rooms in progress that a partial poll neither refreshed nor named as failed.
    fn unreached(&self, failed: &HashSet<&str>) -> Vec<String> {
        self.rooms
            .iter()
            .filter(|(name, room)| {
                !room.fresh && room.figures.active && !failed.contains(name.as_str())
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// A complete poll: a room neither refreshed nor failed has ended.
    fn end_unlisted(&mut self, failed: &HashSet<&str>) {
        for (name, room) in self.rooms.iter_mut() {
            if !room.fresh && !failed.contains(name.as_str()) {
                room.end();
            }
        }
    }

    /// The target's users now (returned), peak and accumulated, from the rooms' totals.
    fn target_figures(&mut self, obs: &Observation, complete: bool, totals: &Totals) -> u64 {
        let mut users_now = match &totals.sessions {
            // Users now of a session target: distinct people, as its peak counts them.
            Some(s) => s.open.len() as u64,
            None => totals.users,
        };
        // The people of the day known so far: distinct ids, plus what vendors report.
        let distinct = self
            .accumulated
            .max((self.users.len() as u64).saturating_add(totals.reported));
        // A partial poll: fresh rooms beside stale ones at their last values. People who moved
        // from a stale room to a fresh one would count twice in the sum, so the target's users
        // now and its peak never go above the people of the day (peak ≤ accumulated).
        if obs.rooms.is_empty() && obs.failed.is_empty() {
            // No new reading (a re-render after a reload, the roll): the last cap holds.
        } else {
            let stale_beside_fresh = !complete
                && !obs.rooms.is_empty()
                && self.rooms.values().any(|d| d.figures.users > 0 && !d.fresh);
            // The people in the fresh rooms are there now, each once: never capped below them,
            // nor below the day's people (ids, reported figures, any room's own count).
            let fresh: u64 = self
                .rooms
                .values()
                .filter(|d| d.fresh)
                .fold(0u64, |sum, d| sum.saturating_add(d.figures.users));
            let biggest = self
                .rooms
                .values()
                .map(|d| d.figures.users)
                .max()
                .unwrap_or(0);
            self.users_cap = (stale_beside_fresh && totals.sessions.is_none())
                .then(|| distinct.max(fresh).max(biggest));
        }
        if let Some(cap) = self.users_cap {
            users_now = users_now.min(cap);
        }
        self.peak = match &totals.sessions {
            None => self.peak.max(users_now).max(totals.biggest_peak),
            // Sessions: the sweep over the union is exact (a user in two rooms at once is one
            // person), where the sum of the rooms' users now would count them twice.
            Some(s) if s.presence.is_empty() => self.peak,
            Some(s) => self.peak.max(peak_concurrency(&s.presence)),
        };
        // Never below the peak: people counted but not listed by id are people all the same.
        self.accumulated = distinct.max(self.peak);
        users_now
    }

    /// Users by device (the vendor's, else its session rooms' people now) and watched users.
    fn devices_and_watched(
        &mut self,
        obs: &Observation,
        complete: bool,
        sessions: Option<SessionTotals>,
    ) {
        if let Some(devices) = &obs.devices {
            self.devices = Some(devices.clone());
        } else if let Some(s) = sessions {
            let mut counts: DeviceCounts = Device::ALL.iter().map(|d| (*d, 0)).collect();
            for (_, d) in s.devices {
                *counts.entry(d).or_default() += 1;
            }
            self.devices = Some(counts);
        } else if complete {
            self.devices = None;
        }
        if !obs.watched.is_empty() || complete {
            self.watched = obs.watched.clone();
        }
    }

    /// The rooms' series (not those failing `stale_after` times in a row), the busiest
    /// `max_rooms` of them, sorted by room; and how many were left out. Rows are made only for
    /// the rooms kept.
    fn rows(&self, limits: &Limits<'_>) -> (Vec<RoomRow>, u64) {
        let mut shown: Vec<(&String, &RoomDay)> = self
            .rooms
            .iter()
            .filter(|(_, d)| d.failures < limits.stale_after)
            .collect();
        let mut rooms_dropped = 0;
        if shown.len() > limits.max_rooms {
            // Keep the busiest rooms' series; the rest still count in the totals.
            let busy = |d: &RoomDay| (d.figures.active, d.figures.users, d.figures.peak);
            shown.sort_by(|(a, x), (b, y)| busy(y).cmp(&busy(x)).then_with(|| a.cmp(b)));
            rooms_dropped = (shown.len() - limits.max_rooms) as u64;
            shown.truncate(limits.max_rooms);
            shown.sort_by(|a, b| a.0.cmp(b.0));
        }
        let rows = shown
            .into_iter()
            .map(|(room, d)| d.row(room, limits.capacity))
            .collect();
        (rows, rooms_dropped)
    }

    /// Rooms whose last refresh failed, with their failed refreshes in a row, sorted.
    fn failing_rooms(&self) -> Vec<(String, u32)> {
        let mut failing: Vec<(String, u32)> = self
            .rooms
            .iter()
            .filter(|(_, d)| d.failures > 0)
            .map(|(room, d)| (room.clone(), d.failures))
            .chain(self.failing_unseen.iter().map(|(r, n)| (r.clone(), *n)))
            .collect();
        failing.sort();
        failing
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
        // "fresh" answered at 1900: carried; "old" last answered at 100: not; "fails" and
        // "old" (in progress, never reached by the partial polls since) are named, with no
        // figures.
        assert_eq!(figures(&d), vec![("fresh", true, 1, 1, 1)]);
        assert_eq!(
            d.failing_rooms,
            vec![("fails".to_string(), 2), ("old".to_string(), 2)]
        );
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
    fn listed_rooms_with_roles_show_only_the_roles_told_and_zero_them_when_they_end() {
        let mut l = Ledger::new();
        let live = |users: u64, ids: &[&str]| RoomObservation {
            room: "live".into(),
            active: true,
            users,
            invisible: None,
            day: DayFigures::PresentByRole {
                ids: ids.iter().map(|s| s.to_string()).collect(),
                roles: [(Role::Broadcaster, 1), (Role::Viewer, users - 1)]
                    .into_iter()
                    .collect(),
            },
        };
        let d = l.apply(
            &at(1, 100),
            &obs(vec![live(3, &["h", "a", "b"])]),
            true,
            &LIMITS,
        );
        let roles = d.rooms[0].roles.clone().unwrap_or_default();
        assert_eq!(roles.len(), 2, "no teacher, no other: {roles:?}");
        assert_eq!((roles[&Role::Broadcaster], roles[&Role::Viewer]), (1, 2));
        assert_eq!((d.rooms[0].peak, d.rooms[0].accumulated), (3, 3));
        // Listed again with another viewer: the day's ids grow.
        let d = l.apply(&at(1, 200), &obs(vec![live(2, &["h", "c"])]), true, &LIMITS);
        assert_eq!((d.rooms[0].users, d.rooms[0].accumulated), (2, 4));
        // No longer listed: ended, its roles 0.
        let d = l.apply(&at(1, 300), &obs(vec![]), true, &LIMITS);
        let roles = d.rooms[0].roles.clone().unwrap_or_default();
        assert_eq!((roles[&Role::Broadcaster], roles[&Role::Viewer]), (0, 0));
        assert_eq!((d.rooms[0].users, d.rooms[0].peak), (0, 3));
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
        // Not reached at all in a poll cut short: also kept, and named as failing (a room
        // the poll never reached is no fresher than one that failed).
        let d = l.apply(
            &at(1, 300),
            &obs(vec![present("b", &["3"])]),
            false,
            &LIMITS,
        );
        assert_eq!(d.rooms[0].users, 2);
        assert_eq!(d.rooms_failed, 1);
        assert_eq!(d.failing_rooms, vec![("a".to_string(), 2)]);
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

    #[test]
    fn a_room_saved_empty_takes_its_kind_at_its_next_reading() {
        let mut l = Ledger::new();
        let d = at(1, 100);
        // An empty listed room and a reported one: the file holds no ids for either.
        let o = obs(vec![present("e", &[]), reported("r", true, 2, 3, 4)]);
        l.apply(&d, &o, true, &LIMITS);
        let mut back = Ledger::restore_packed(l.save().unwrap()).unwrap();
        let o = obs(vec![
            present("e", &["u1", "u2"]),
            reported("r", true, 1, 3, 5),
        ]);
        let d = back.apply(&at(1, 200), &o, true, &LIMITS);
        assert_eq!(
            figures(&d),
            vec![("e", true, 2, 2, 2), ("r", true, 1, 3, 5)]
        );
        assert_eq!((d.users, d.peak, d.accumulated), (3, 3, 7));
    }

    #[test]
    fn a_reading_of_another_kind_keeps_the_published_figures() {
        let mut l = Ledger::new();
        l.apply_at(1, &obs(vec![reported("a", true, 4, 6, 9)]), 10);
        let d = l.apply_at(1, &obs(vec![present("a", &["u1"])]), 10);
        assert_eq!(figures(&d), vec![("a", true, 1, 6, 9)]);
    }

    #[test]
    fn a_room_of_reported_figures_stays_small() {
        // Every room pays for what every kind keeps; the sets of the other kinds are boxed.
        assert!(std::mem::size_of::<RoomDay>() <= 80);
        assert_eq!(std::mem::size_of::<Kind>(), 16);
    }
}

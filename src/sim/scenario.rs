//! A seeded, vendor-neutral scenario: rooms whose calls (classes, meetings) start and end, users
//! who join and leave (some twice), a device mix, invisible users and bots. Everything a
//! simulator answers, and the ground truth tests compare against, is a pure function of the
//! scenario and a time.

use std::collections::HashSet;

use crate::model::Device;

/// One stay of one user in a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// User id.
    pub user: String,
    /// Join time, Unix seconds.
    pub join: i64,
    /// Leave time (exclusive), Unix seconds.
    pub leave: i64,
    /// Device class.
    pub device: Device,
    /// Joined invisibly (audience).
    pub invisible: bool,
    /// A vendor bot (recording, CDN push, ASR): its MediaProcessingType.
    pub bot: Option<u8>,
}

impl Session {
    /// Present at `t`.
    pub fn present(&self, t: i64) -> bool {
        self.join <= t && t < self.leave
    }
}

/// One call of a room: from its start to its end.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Call id.
    pub id: String,
    /// Start, Unix seconds.
    pub start: i64,
    /// End (exclusive), Unix seconds.
    pub end: i64,
    /// Who was in it.
    pub sessions: Vec<Session>,
}

impl Call {
    /// In progress at `t`.
    pub fn active(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }

    /// Sessions present at `t`.
    pub fn present(&self, t: i64) -> impl Iterator<Item = &Session> {
        self.sessions.iter().filter(move |s| s.present(t))
    }

    /// Peak concurrent sessions (bots included when `bots`) within [from, to].
    pub fn peak(&self, from: i64, to: i64, bots: bool) -> u64 {
        let mut events: Vec<(i64, i64)> = Vec::new();
        for s in self.sessions.iter().filter(|s| bots || s.bot.is_none()) {
            let (a, b) = (s.join.max(from), s.leave.min(to + 1));
            if a < b {
                events.push((a, 1));
                events.push((b, -1));
            }
        }
        // Leaves before joins at the same instant: [join, leave) intervals.
        events.sort();
        let (mut cur, mut best) = (0i64, 0i64);
        for (_, d) in events {
            cur += d;
            best = best.max(cur);
        }
        best as u64
    }

    /// Distinct users (bots included when `bots`) present at some time within [from, to].
    pub fn accumulated(&self, from: i64, to: i64, bots: bool) -> u64 {
        self.sessions
            .iter()
            .filter(|s| (bots || s.bot.is_none()) && s.join <= to && s.leave > from)
            .map(|s| s.user.as_str())
            .collect::<HashSet<_>>()
            .len() as u64
    }
}

/// One room and its calls, in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Room {
    /// Room id.
    pub id: String,
    /// Its calls.
    pub calls: Vec<Call>,
}

impl Room {
    /// The call in progress at `t`.
    pub fn active_call(&self, t: i64) -> Option<&Call> {
        self.calls.iter().find(|c| c.active(t))
    }
}

/// Knobs of a generated scenario.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Room ids start with this.
    pub prefix: String,
    /// Number of rooms.
    pub rooms: usize,
    /// Most users in one call.
    pub max_users: usize,
    /// Add bots to some calls.
    pub bots: bool,
    /// Make some users invisible.
    pub invisible: bool,
    /// User ids are numbers (Volcengine `QueryOnlineStatus` takes numeric ids).
    pub numeric_users: bool,
}

/// Rooms, calls and sessions around a time `t0`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The rooms.
    pub rooms: Vec<Room>,
}

const DEVICES: [(Device, u32); 7] = [
    (Device::Ios, 25),
    (Device::Android, 30),
    (Device::Windows, 18),
    (Device::Mac, 10),
    (Device::Linux, 2),
    (Device::Web, 12),
    (Device::Other, 3),
];

fn device(rng: &mut fastrand::Rng) -> Device {
    let total: u32 = DEVICES.iter().map(|d| d.1).sum();
    let mut pick = rng.u32(..total);
    for (d, w) in DEVICES {
        if pick < w {
            return d;
        }
        pick -= w;
    }
    Device::Other
}

impl Scenario {
    /// Generates rooms with calls from 6 h before `t0` to 18 h after it; about two rooms in
    /// three are in a call at `t0`.
    pub fn generate(seed: u64, t0: i64, shape: &Shape) -> Scenario {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut rooms = Vec::with_capacity(shape.rooms);
        let mut user_no = 10_000u64;
        for r in 0..shape.rooms {
            let id = format!("{}{:03}", shape.prefix, r + 1);
            let mut calls = Vec::new();
            // Roughly two in three rooms have a call running at t0.
            let running_at_t0 = rng.u32(..3) < 2;
            let mut start = if running_at_t0 {
                t0 - rng.i64(300..3600)
            } else {
                t0 + rng.i64(120..5400)
            };
            // Earlier calls of the day, before the first one.
            let mut earlier = Vec::new();
            let mut back = start;
            for _ in 0..rng.usize(0..3) {
                let end = back - rng.i64(300..1800);
                let begin = end - rng.i64(1200..5400);
                if begin < t0 - 6 * 3600 {
                    break;
                }
                earlier.push((begin, end));
                back = begin;
            }
            earlier.reverse();
            let mut spans = earlier;
            while start < t0 + 18 * 3600 {
                let len = rng.i64(1800..7200);
                spans.push((start, start + len));
                start += len + rng.i64(600..3600);
            }
            for (n, (begin, end)) in spans.into_iter().enumerate() {
                let users = rng.usize(1..=shape.max_users.max(1));
                let mut sessions = Vec::new();
                for _ in 0..users {
                    user_no += 1;
                    let user = if shape.numeric_users {
                        user_no.to_string()
                    } else {
                        format!("u{user_no}")
                    };
                    let dev = device(&mut rng);
                    let invisible = shape.invisible && rng.u32(..10) == 0;
                    let join = begin + rng.i64(0..(end - begin) / 2);
                    let stay = rng.i64((end - begin) / 8..(end - begin));
                    let leave = (join + stay).min(end);
                    sessions.push(Session {
                        user: user.clone(),
                        join,
                        leave,
                        device: dev,
                        invisible,
                        bot: None,
                    });
                    // One in five comes back later.
                    if rng.u32(..5) == 0 && leave + 60 < end {
                        let join2 = leave + rng.i64(60..(end - leave).max(61));
                        if join2 < end {
                            sessions.push(Session {
                                user,
                                join: join2,
                                leave: end,
                                device: dev,
                                invisible,
                                bot: None,
                            });
                        }
                    }
                }
                if shape.bots && rng.bool() {
                    let kind = [21u8, 23, 32][rng.usize(..3)];
                    sessions.push(Session {
                        user: format!("bot_{kind}_{id}_{n}"),
                        join: begin,
                        leave: end,
                        device: Device::Linux,
                        invisible: true,
                        bot: Some(kind),
                    });
                }
                calls.push(Call {
                    id: format!("{id}-{}", begin),
                    start: begin,
                    end,
                    sessions,
                });
            }
            rooms.push(Room { id, calls });
        }
        Scenario { rooms }
    }

    /// Ends the call of `room` running at `t`: it and everyone in it leave at `t`. Returns
    /// whether there was such a call.
    pub fn end_call(&mut self, room: &str, t: i64) -> bool {
        let Some(call) = self
            .rooms
            .iter_mut()
            .find(|r| r.id == room)
            .and_then(|r| r.calls.iter_mut().find(|c| c.active(t)))
        else {
            return false;
        };
        call.end = t;
        call.sessions.retain(|s| s.join < t);
        for s in &mut call.sessions {
            s.leave = s.leave.min(t);
        }
        true
    }

    /// A room by id.
    pub fn room(&self, id: &str) -> Option<&Room> {
        self.rooms.iter().find(|r| r.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            prefix: "r".into(),
            rooms: 20,
            max_users: 30,
            bots: true,
            invisible: true,
            numeric_users: false,
        }
    }

    #[test]
    fn same_seed_same_scenario() {
        assert_eq!(
            Scenario::generate(7, 1_700_000_000, &shape()),
            Scenario::generate(7, 1_700_000_000, &shape())
        );
    }

    #[test]
    fn most_rooms_run_at_t0_and_sessions_stay_in_their_call() {
        let t0 = 1_700_000_000;
        let s = Scenario::generate(3, t0, &shape());
        let running = s
            .rooms
            .iter()
            .filter(|r| r.active_call(t0).is_some())
            .count();
        assert!(running >= 5, "{running} of 20 rooms running");
        for c in s.rooms.iter().flat_map(|r| &r.calls) {
            for x in &c.sessions {
                assert!(c.start <= x.join && x.leave <= c.end && x.join < x.leave);
            }
        }
    }

    #[test]
    fn peak_sweeps_and_accumulated_counts_distinct_users() {
        let s = |user: &str, join, leave| Session {
            user: user.into(),
            join,
            leave,
            device: Device::Web,
            invisible: false,
            bot: None,
        };
        let call = Call {
            id: "c".into(),
            start: 0,
            end: 100,
            sessions: vec![s("a", 0, 10), s("b", 5, 20), s("a", 10, 30), s("c", 20, 40)],
        };
        assert_eq!(call.peak(0, 100, false), 2);
        assert_eq!(call.accumulated(0, 100, false), 3);
        assert_eq!(call.accumulated(25, 100, false), 2);
        assert_eq!(call.peak(31, 100, false), 1);
    }
}

//! A day as the state file keeps it ([`PackedLedger`], format 2): numbers, not strings. A
//! session is five numbers in one flat array per room (user index, join as the difference from
//! the room's previous join, stay, device code, role code), devices and roles are codes into
//! two short lists of labels written once, and a session room's users are not listed again
//! beside its sessions: about 25 bytes of JSON a session, 40 % of format 1. The copy taken
//! under the target's lock ([`Ledger::save`]) is 24 bytes a session and no `String`; sorting
//! and the rest ([`PackedLedger::compact`]) come after, without the lock.
//!
//! Format 1 ([`SavedLedger`]) is still read: it is converted, then restored the same way.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use chrono::NaiveDate;
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{
    device_named, role_named, Figures, Kind, Ledger, Present, Reported, RoomDay, SavedLedger,
    Sessions as SessionRoom, Stay, OPEN,
};
use crate::model::{Device, Role};

/// A ledger as the state file keeps it (format 2): the day, the target's figures, its interned
/// user keys and every room's figures and sessions. Restoring checks every index and code, so a
/// damaged file is refused rather than half-read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackedLedger {
    /// The local day, `YYYY-MM-DD`.
    pub date: NaiveDate,
    peak: u64,
    accumulated: u64,
    /// The device labels, by code.
    devices: Vec<String>,
    /// The role labels, by code.
    roles: Vec<String>,
    /// User keys (xxh3 of the id), in index order.
    users: Vec<u64>,
    rooms: BTreeMap<String, PackedRoom>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackedRoom {
    peak: u64,
    accumulated: u64,
    reported_accumulated: u64,
    invisible_known: bool,
    active: bool,
    users: u64,
    invisible: Option<u64>,
    roles: Option<BTreeMap<String, u64>>,
    has_sessions: bool,
    refreshed_at: i64,
    failures: u32,
    /// The room's users that have no session in it, ascending.
    ids: Ids,
    sessions: Sessions,
}

/// No role, in a session's role code.
const NO_ROLE: u8 = u8::MAX;

/// One session: 24 bytes. Ordered by join time, then user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Session {
    join: i64,
    user: u32,
    /// Leave time, or [`OPEN`].
    leave: i64,
    /// Index into [`PackedLedger::devices`].
    device: u8,
    /// Index into [`PackedLedger::roles`], or [`NO_ROLE`].
    role: u8,
}

/// User indices, ascending once compacted, written as the differences from the previous one
/// (the first from 0; wrapping, so any order reads back).
#[derive(Debug, Clone, Default)]
struct Ids(Vec<u32>);

/// A room's sessions, sorted once compacted; written flat, five numbers a session: user, join
/// (the difference from the previous session's join; the first is the time itself), stay
/// (leave − join, or −1 while open), device code, role code (−1: none). Differences wrap, so
/// every time reads back exactly.
#[derive(Debug, Clone, Default)]
struct Sessions(Vec<Session>);

fn code<T: PartialEq>(all: &[T], x: &T) -> u8 {
    all.iter().position(|a| a == x).unwrap_or(0) as u8
}

impl Ledger {
    /// Today's figures for the state file (`None` before the first poll): a plain copy of the
    /// day, for the time the target's lock is held; [`PackedLedger::compact`] it after.
    pub fn save(&self) -> Option<PackedLedger> {
        let date = self.day?;
        let rooms = self
            .rooms
            .iter()
            .map(|(name, r)| {
                let mut room = PackedRoom {
                    peak: r.figures.peak,
                    accumulated: r.figures.accumulated,
                    reported_accumulated: 0,
                    invisible_known: r.invisible_known,
                    active: r.figures.active,
                    users: r.figures.users,
                    invisible: r.invisible,
                    roles: None,
                    has_sessions: false,
                    refreshed_at: 0,
                    failures: r.failures,
                    ids: Ids(Vec::new()),
                    sessions: Sessions(Vec::new()),
                };
                match &r.kind {
                    Kind::Reported(k) => room.reported_accumulated = k.accumulated,
                    Kind::Present(k) => room.ids = Ids(k.ids.iter().copied().collect()),
                    Kind::Sessions(k) => {
                        room.sessions = Sessions(
                            k.sessions
                                .iter()
                                .map(|(&(user, join), stay)| Session {
                                    join,
                                    user,
                                    leave: stay.leave,
                                    device: code(&Device::ALL, &stay.device),
                                    role: stay.role.map_or(NO_ROLE, |x| code(&Role::ALL, &x)),
                                })
                                .collect(),
                        );
                        room.roles = k.roles.as_ref().map(|m| {
                            m.iter()
                                .map(|(role, n)| (role.label().to_string(), *n))
                                .collect()
                        });
                        room.has_sessions = true;
                        room.refreshed_at = k.refreshed_at;
                    }
                }
                (name.clone(), room)
            })
            .collect();
        Some(PackedLedger {
            date,
            peak: self.peak,
            accumulated: self.accumulated,
            devices: Device::ALL.iter().map(|d| d.label().to_string()).collect(),
            roles: Role::ALL.iter().map(|r| r.label().to_string()).collect(),
            users: self.users.keys.clone(),
            rooms,
        })
    }

    /// A ledger from the state file (format 2); an error names what is inconsistent.
    pub fn restore_packed(saved: PackedLedger) -> Result<Ledger, String> {
        let devices = saved
            .devices
            .iter()
            .map(|l| device_named(l).ok_or_else(|| format!("unknown device {l:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        let roles = saved
            .roles
            .iter()
            .map(|l| role_named(l).ok_or_else(|| format!("unknown role {l:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ledger = Ledger {
            day: Some(saved.date),
            peak: saved.peak,
            accumulated: saved.accumulated,
            ..Ledger::default()
        };
        for key in &saved.users {
            ledger.users.intern(*key);
        }
        if ledger.users.len() != saved.users.len() {
            return Err("a user key appears twice".into());
        }
        let known = saved.users.len();
        let check = |i: u32| -> Result<u32, String> {
            if (i as usize) < known {
                Ok(i)
            } else {
                Err(format!("user index {i} beyond the {known} users"))
            }
        };
        for (name, r) in saved.rooms {
            let mut ids = HashSet::new();
            for i in r.ids.0 {
                ids.insert(check(i)?);
            }
            let mut room_roles = None;
            if let Some(saved_roles) = r.roles {
                // A class role the file does not name counts 0, as the room's sessions would
                // give it.
                let mut counts = super::zero_roles();
                for (label, n) in saved_roles {
                    let role = role_named(&label)
                        .ok_or_else(|| format!("room {name}: unknown role {label:?}"))?;
                    counts.insert(role, n);
                }
                room_roles = Some(counts);
            }
            let mut sessions = HashMap::with_capacity(r.sessions.0.len());
            for s in r.sessions.0 {
                let device = *devices
                    .get(usize::from(s.device))
                    .ok_or_else(|| format!("room {name}: device code {} unknown", s.device))?;
                let role = match s.role {
                    NO_ROLE => None,
                    c => Some(
                        *roles
                            .get(usize::from(c))
                            .ok_or_else(|| format!("room {name}: role code {c} unknown"))?,
                    ),
                };
                let user = check(s.user)?;
                sessions.insert(
                    (user, s.join),
                    Stay {
                        leave: s.leave,
                        device,
                        role,
                    },
                );
            }
            // The file does not name a room's kind: what it holds does (a room with neither
            // ids nor sessions is empty of either kind, and takes its kind at its next reading).
            let kind = if r.has_sessions || !sessions.is_empty() || room_roles.is_some() {
                Kind::Sessions(Box::new(SessionRoom {
                    sessions,
                    refreshed_at: r.refreshed_at,
                    roles: room_roles,
                }))
            } else if !ids.is_empty() {
                Kind::Present(Box::new(Present { ids, roles: None }))
            } else {
                Kind::Reported(Reported {
                    accumulated: r.reported_accumulated,
                })
            };
            let room = RoomDay {
                figures: Figures {
                    active: r.active,
                    users: r.users,
                    peak: r.peak,
                    accumulated: r.accumulated,
                },
                invisible: r.invisible,
                invisible_known: r.invisible_known,
                failures: r.failures,
                ..RoomDay::new(kind)
            };
            ledger.rooms.insert(name, room);
        }
        Ok(ledger)
    }
}

impl PackedLedger {
    /// Makes it smaller to write: each room's sessions sorted (their join times then differ
    /// little), and its users without the session users (restoring adds them back). What is
    /// not compacted reads back the same.
    pub fn compact(&mut self) {
        for room in self.rooms.values_mut() {
            room.sessions.0.sort_unstable();
            let in_sessions: HashSet<u32> = room.sessions.0.iter().map(|s| s.user).collect();
            room.ids.0.retain(|i| !in_sessions.contains(i));
            room.ids.0.sort_unstable();
        }
    }

    /// The same day from a file of format 1; an error names what is not known (a device or
    /// role label).
    pub fn from_v1(saved: SavedLedger) -> Result<PackedLedger, String> {
        let rooms = saved
            .rooms
            .into_iter()
            .map(|(name, r)| {
                let mut sessions = Vec::with_capacity(r.sessions.len());
                for (user, join, leave, device, role) in r.sessions {
                    let device = device_named(&device)
                        .ok_or_else(|| format!("room {name}: unknown device {device:?}"))?;
                    let role = match role {
                        Some(label) => code(
                            &Role::ALL,
                            &role_named(&label)
                                .ok_or_else(|| format!("room {name}: unknown role {label:?}"))?,
                        ),
                        None => NO_ROLE,
                    };
                    sessions.push(Session {
                        join,
                        user,
                        leave: leave.unwrap_or(OPEN),
                        device: code(&Device::ALL, &device),
                        role,
                    });
                }
                let room = PackedRoom {
                    peak: r.peak,
                    accumulated: r.accumulated,
                    reported_accumulated: r.reported_accumulated,
                    invisible_known: r.invisible_known,
                    active: r.active,
                    users: r.users,
                    invisible: r.invisible,
                    roles: r.roles,
                    has_sessions: r.has_sessions,
                    refreshed_at: r.refreshed_at,
                    failures: r.failures,
                    ids: Ids(r.ids),
                    sessions: Sessions(sessions),
                };
                Ok((name, room))
            })
            .collect::<Result<_, String>>()?;
        Ok(PackedLedger {
            date: saved.date,
            peak: saved.peak,
            accumulated: saved.accumulated,
            devices: Device::ALL.iter().map(|d| d.label().to_string()).collect(),
            roles: Role::ALL.iter().map(|r| r.label().to_string()).collect(),
            users: saved.users,
            rooms,
        })
    }
}

impl Serialize for Ids {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        let mut previous = 0u32;
        for &i in &self.0 {
            seq.serialize_element(&i.wrapping_sub(previous))?;
            previous = i;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Ids {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ids;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of differences between user indices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ids, A::Error> {
                let mut out = Vec::new();
                let mut at = 0u32;
                while let Some(step) = seq.next_element::<u32>()? {
                    at = at.wrapping_add(step);
                    out.push(at);
                }
                Ok(Ids(out))
            }
        }
        d.deserialize_seq(V)
    }
}

impl Serialize for Sessions {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len() * 5))?;
        let mut previous = 0i64;
        for x in &self.0 {
            seq.serialize_element(&x.user)?;
            seq.serialize_element(&x.join.wrapping_sub(previous))?;
            previous = x.join;
            let stay = if x.leave == OPEN {
                -1
            } else {
                x.leave.wrapping_sub(x.join)
            };
            seq.serialize_element(&stay)?;
            seq.serialize_element(&x.device)?;
            seq.serialize_element(&if x.role == NO_ROLE {
                -1
            } else {
                i16::from(x.role)
            })?;
        }
        seq.end()
    }
}

/// The next number of a session, which must be there.
fn next<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
    seq: &mut A,
    what: &str,
) -> Result<T, A::Error> {
    seq.next_element::<T>()?
        .ok_or_else(|| de::Error::custom(format!("a session without its {what}")))
}

impl<'de> Deserialize<'de> for Sessions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Sessions;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a flat array of sessions, five numbers each")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Sessions, A::Error> {
                let mut out = Vec::new();
                let mut join = 0i64;
                while let Some(user) = seq.next_element::<u32>()? {
                    let step: i64 = next(&mut seq, "join")?;
                    let stay: i64 = next(&mut seq, "stay")?;
                    let device: u8 = next(&mut seq, "device")?;
                    let role: i16 = next(&mut seq, "role")?;
                    // Wrapping, as written: any time reads back as it was.
                    join = join.wrapping_add(step);
                    let leave = match stay {
                        -1 => OPEN,
                        s => join.wrapping_add(s),
                    };
                    let role = match role {
                        -1 => NO_ROLE,
                        r => u8::try_from(r)
                            .ok()
                            .filter(|&r| r != NO_ROLE)
                            .ok_or_else(|| de::Error::custom(format!("role code {r}")))?,
                    };
                    out.push(Session {
                        join,
                        user,
                        leave,
                        device,
                        role,
                    });
                }
                Ok(Sessions(out))
            }
        }
        d.deserialize_seq(V)
    }
}

//! Talk-cloud (拓课云): `getLiveLogininfo`, the enter and leave records of a room's live
//! viewers and of its users on stage, turned into sessions for the ledger's exact figures
//! (users now, peak by a sweep, distinct users, devices and roles).
//!
//! # Requests
//!
//! `POST <endpoint>/WebAPI/getLiveLogininfo` with a form body: the enterprise `key` (a
//! [`Secret`]: it is sent in the body and nowhere else, never logged, and cut out of any vendor
//! message), the room as `serial` or `thirdroomid`, `starttime` / `endtime` (Unix seconds) and
//! `page`. One room per request; pages of [`PAGE`] rows of `logininfo` until a short page (a
//! 4105 on a later page also ends the listing); `uptablelist` (users on stage) comes with
//! page 1. Rooms are fetched [`CONCURRENCY`] at a time, all through one limiter per key at
//! [`QPS`] (no limit is published; `qps:` may lower it). Each room is reported to the poll's
//! progress (`room_done` / `room_failed`) as soon as all its pages arrived or one failed, so a
//! partial poll publishes the rooms that answered and the failed ones keep their last values.
//!
//! Codes: 0 ok; 4105 (no data) is an empty answer, the room has nobody and the target stays
//! up; 4101 (no key), 4102 (wrong key), 4007 (no such room), 3001 (service expired), 4108 (no
//! permission) and -1 are counted under their own `code` label, any other code as `other`
//! (Talk-cloud documents no throttle code, and no QPS limit).
//!
//! Reading an answer (the README's "Answers that disagree with themselves"): the records are the data. A record
//! sent twice (the same user and enter time, on one page, a later page or both lists) is one
//! stay, merged and counted as `duplicate_row`; a `count` that is neither the last page's rows
//! nor the rows (or distinct records) of all pages is `total_mismatch`, also when an empty page
//! ends the listing before it; a full page of records already held ends the listing (a vendor
//! ignoring `page`), and the page cap is `page_cap` and fails the room. Still `malformed`: an
//! answer that cannot be read ([`answer`]: a record without its `userid` or enter time, an
//! `outtime` with `outtimestamp` 0, a leave before the enter, a null or absent `logininfo`
//! with a positive `count`), and an answer that lacks a record the last answer showed still
//! open and that entered within the window (a 4105 included): the API lists by enter time, so
//! such a record cannot have left the listing, and taking the loss as the viewer leaving would
//! write the room as empty. That check runs inside the last page's request, so the request
//! counts as `malformed`.
//!
//! # Later polls: one cursor per room
//!
//! The API filters records by **enter time** within [`starttime`, `endtime`] and lists them in
//! enter-time order (simulator decision, vendors.md §4: not documented). A record that is
//! still open (`outtimestamp` 0) changes later, when the viewer leaves, but keeps its enter
//! time: asking only for what entered since the last poll would never see that viewer leave.
//! So each room keeps a cursor, advanced only when all its pages arrived (in the same step as
//! the room is reported):
//!
//! - the first poll asks [local midnight, now];
//! - a later poll asks [`from`, now], where `from` is the earliest enter time among the
//!   sessions still open at the last poll, or the last poll's end less [`OVERLAP`] (records
//!   written late) when that is earlier or nobody was in. A viewer who entered before the last
//!   poll and left since is thus listed again, now with a leave time; one who entered and left
//!   between two polls is listed too;
//! - the report's `since` ([`DayFigures::Sessions`]) is the last poll's end: every session that
//!   entered before `from` had left by then, so the answer holds every session overlapping
//!   [`since`, now], as the ledger's contract asks, and a session the ledger holds open that
//!   the answer no longer lists is closed.
//!
//! A failed room keeps its cursor; a cursor older than [`MAX_SPAN`] (the API refuses windows
//! over a month), or ahead of the clock, is dropped and the room starts again at local
//! midnight. The cursor survives local midnight, so a viewer in since before midnight is still
//! seen (counted from midnight by the ledger); the first poll after a start cannot see those,
//! since the API lists by enter time.
//!
//! **Cost.** The first poll reads every record of the day: ⌊R / 200⌋ + 1 requests for R
//! records. Later polls read the records entered since the earliest viewer still in: while a
//! class runs and someone who came early stays, that is about the class's records so far, so
//! the saving is small during a class and large between classes (one request a room).

pub mod answer;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::stream::{self, StreamExt};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use answer::parse_page;
pub use answer::{Record, API, CODES, PAGE};

use super::merged::{Identity, Merged};
use super::{
    Anomaly, Api, BoxFuture, CallError, DayFigures, Observation, PollCtx, PollError,
    RoomObservation, SessionObs, TargetInfo, Vendor, VendorEntry,
};
use crate::config::{from_value, FieldError, Secret};
use crate::sim::talkcloud::TalkSim;

/// The registry row.
pub const ENTRY: VendorEntry = VendorEntry {
    name: "talkcloud",
    parse,
    simulator: |seed| Arc::new(TalkSim::new(seed)),
};

const DEFAULT_ENDPOINT: &str = "https://global.talk-cloud.net";
const PATH: &str = "/WebAPI/getLiveLogininfo";
/// No QPS is published: 5 per key (vendors.md §4 decision; `qps:` may lower it).
pub const QPS: f64 = 5.0;
/// Rooms asked at once: enough that 5 QPS is reached with up to 800 ms of latency.
pub const CONCURRENCY: usize = 4;
/// A later window starts at least this long before the last poll's end, for records the
/// vendor writes late.
pub const OVERLAP: i64 = 120;
/// The widest window asked: the API refuses windows over a month.
pub const MAX_SPAN: i64 = 28 * 86_400;
/// A vendor that keeps sending full pages must not keep us paging forever (100 000 records).
const MAX_PAGES: usize = 500;

/// A room as configured: its serial, or the customer's own room id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RoomRef {
    /// `serial`: the room number Talk-cloud gave.
    Serial(String),
    /// `thirdroomid`: the room id the customer set when creating the room.
    ThirdRoomId(String),
}

impl RoomRef {
    /// The `room` label: the serial or the thirdroomid as configured.
    pub fn label(&self) -> &str {
        match self {
            RoomRef::Serial(s) | RoomRef::ThirdRoomId(s) => s,
        }
    }

    /// The form field naming the room.
    fn param(&self) -> (&'static str, &str) {
        match self {
            RoomRef::Serial(s) => ("serial", s),
            RoomRef::ThirdRoomId(s) => ("thirdroomid", s),
        }
    }
}

impl<'de> Deserialize<'de> for RoomRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RoomVisitor;
        impl<'de> Visitor<'de> for RoomVisitor {
            type Value = RoomRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a room serial, or { thirdroomid: ID }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RoomRef, E> {
                Ok(RoomRef::Serial(v.trim().to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RoomRef, E> {
                Ok(RoomRef::Serial(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RoomRef, E> {
                Err(E::custom(format!("{v} is not a room serial")))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RoomRef, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom("expected { thirdroomid: ID }"));
                };
                let value: IdText = map.next_value()?;
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom(
                        "a room is one of { serial: ID } or { thirdroomid: ID }",
                    ));
                }
                match key.as_str() {
                    "thirdroomid" => Ok(RoomRef::ThirdRoomId(value.0)),
                    "serial" => Ok(RoomRef::Serial(value.0)),
                    other => Err(de::Error::custom(format!(
                        "unknown key `{other}`, expected thirdroomid or serial"
                    ))),
                }
            }
        }
        d.deserialize_any(RoomVisitor)
    }
}

/// A room id in YAML: a string or a non-negative integer.
struct IdText(String);

impl<'de> Deserialize<'de> for IdText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = IdText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a room id")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IdText, E> {
                Ok(IdText(v.trim().to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IdText, E> {
                Ok(IdText(v.to_string()))
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    credentials: Credentials,
    rooms: Vec<RoomRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    key: Secret,
}

fn parse(value: serde_yaml::Value) -> Result<Arc<dyn Vendor>, FieldError> {
    Ok(Arc::new(parse_conf(value)?))
}

fn parse_conf(value: serde_yaml::Value) -> Result<Talkcloud, FieldError> {
    let s: Settings = from_value(value)?;
    if s.rooms.is_empty() {
        return Err(FieldError::new(
            "rooms",
            "list the rooms to poll: serials, or { thirdroomid: ID }",
        ));
    }
    let mut labels = HashSet::new();
    for (i, r) in s.rooms.iter().enumerate() {
        if r.label().is_empty() {
            return Err(FieldError::new(
                format!("rooms[{i}]"),
                "a room id must not be empty",
            ));
        }
        if !labels.insert(r.label()) {
            return Err(FieldError::new(
                format!("rooms[{i}]"),
                format!("room `{}` is listed twice", r.label()),
            ));
        }
    }
    // The limiter is keyed by a hash of the key, so the key itself is kept in one place only.
    let account = format!(
        "key-{:016x}",
        xxhash_rust::xxh3::xxh3_64(s.credentials.key.expose().as_bytes())
    );
    Ok(Talkcloud {
        key: s.credentials.key,
        account,
        rooms: s.rooms,
        cursors: Mutex::new(HashMap::new()),
        asked: Mutex::new(HashMap::new()),
    })
}

/// Where a room's next window starts, and what its last answer covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The next window starts here: every session that entered before it had left by
    /// `covered`.
    pub from: i64,
    /// The end of the last window that answered.
    pub covered: i64,
}

/// One request window of one room, and the `since` of its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `starttime`.
    pub start: i64,
    /// `endtime`: the poll's time.
    pub end: i64,
    /// The report holds every session overlapping [`since`, `end`].
    pub since: i64,
}

/// The window of a room's request at `now`, from its cursor (none: the first poll).
pub fn window(cursor: Option<Cursor>, now: i64, day_start: i64) -> Window {
    match cursor {
        Some(c) if c.from <= c.covered && c.covered <= now && c.from >= now - MAX_SPAN => Window {
            start: c.from,
            end: now,
            since: c.covered,
        },
        _ => {
            let start = day_start.min(now);
            Window {
                start,
                end: now,
                since: start,
            }
        }
    }
}

/// The cursor after a complete answer for `w`: the earliest enter time of a session still
/// open, or the window's end less [`OVERLAP`] if that is earlier or nobody is in.
pub fn advance(w: &Window, records: &[Record]) -> Cursor {
    let late = w.end - OVERLAP;
    let from = records
        .iter()
        .filter(|r| r.leave.is_none())
        .map(|r| r.join)
        .min()
        .map_or(late, |open| open.min(late));
    Cursor {
        from,
        covered: w.end,
    }
}

/// A room's report: its records as sessions over [`since`, now].
fn observation(room: &str, w: &Window, records: Vec<Record>) -> RoomObservation {
    let open: HashSet<&str> = records
        .iter()
        .filter(|r| r.leave.is_none())
        .map(|r| r.user.as_str())
        .collect();
    let users = open.len() as u64;
    RoomObservation {
        room: room.to_string(),
        active: users > 0,
        users,
        invisible: None,
        day: DayFigures::Sessions {
            since: w.since,
            sessions: records
                .into_iter()
                .map(|r| SessionObs {
                    user: r.user,
                    join: r.join,
                    leave: r.leave,
                    device: r.device,
                    role: Some(r.role),
                })
                .collect(),
        },
    }
}

/// One configured Talk-cloud target.
pub struct Talkcloud {
    key: Secret,
    /// The limiter's account: a hash of the key.
    account: String,
    rooms: Vec<RoomRef>,
    /// Per room label: the cursor, and (user, enter time) of the records still open at the
    /// last complete answer.
    cursors: Mutex<HashMap<String, (Cursor, Vec<Stay>)>>,
    /// Per room label, when it was last answered (a running count): a poll cut short
    /// by `poll_timeout` goes on with the rooms asked longest ago, so every room is covered
    /// over several polls.
    asked: Mutex<HashMap<String, u64>>,
}

/// A stay as (user id, enter time).
type Stay = (String, i64);

impl fmt::Debug for Talkcloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Talkcloud")
            .field("key", &self.key)
            .field("rooms", &self.rooms)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// (user, enter time) of the records still open (the stage included).
fn still_open(records: &[Record]) -> Vec<Stay> {
    let mut open: Vec<Stay> = records
        .iter()
        .filter(|r| r.leave.is_none())
        .map(|r| (r.user.clone(), r.join))
        .collect();
    open.sort();
    open.dedup();
    open
}

/// A complete answer for `w` must list again every record that was open at the last answer
/// and entered within the window (the API lists by enter time, and a record keeps its enter
/// time when the viewer leaves): one that vanished is a lost row, not a viewer who left.
fn check_kept<'r>(
    open_before: &[Stay],
    w: &Window,
    records: impl Iterator<Item = &'r Record>,
) -> Result<(), CallError> {
    let listed: HashSet<(&str, i64)> = records.map(|r| (r.user.as_str(), r.join)).collect();
    let lost = open_before
        .iter()
        .filter(|(_, join)| w.start <= *join && *join <= w.end)
        .filter(|(user, join)| !listed.contains(&(user.as_str(), *join)))
        .count();
    if lost == 0 {
        return Ok(());
    }
    Err(CallError::Malformed {
        api: API,
        message: format!(
            "{lost} record(s) of users still in at the last poll are no longer listed ({} listed now)",
            listed.len()
        ),
    })
}

/// How the last data page's `count` squares with the rows: it is either that page's rows, the
/// rows of all pages, or the distinct records they held (the docs do not say which; the
/// simulator sends the total). `Some(detail)` when it is none of them: an anomaly
/// (`total_mismatch`), the rows being the data.
fn check_count(
    count: Option<u64>,
    last_rows: usize,
    received: usize,
    distinct: usize,
) -> Option<String> {
    match count {
        Some(c)
            if c != last_rows as u64 && c != received as u64 && c != distinct as u64 =>
        {
            Some(format!(
                "count is {c} on the last page, neither its {last_rows} rows nor the {received} rows ({distinct} distinct) of all pages: read from the rows"
            ))
        }
        _ => None,
    }
}

/// A user and an enter time are one stay, whichever page (or list) sends it again: the later
/// reading replaces the earlier (it may carry the leave), never adds to it.
impl Identity for Record {
    type Key = (String, i64);
    fn key(&self) -> (String, i64) {
        (self.user.clone(), self.join)
    }
}

/// Whether page `p` is the last: a short (or empty) page, or a full page holding no record
/// not already held (a vendor repeating a page, ignoring `page`, would repeat it up to the cap).
fn is_last(p: &answer::Page, held: &Merged<Record>) -> bool {
    p.rows < PAGE || p.records.iter().all(|r| held.knows(r))
}

impl Talkcloud {
    /// Every record of `room` in `w`, all pages: `logininfo` then `uptablelist`, merged by
    /// stay ([`Merged`]). Paging ends on a short or empty page, a 4105, or a full page of
    /// records already held (a vendor ignoring `page`). The last page is checked inside its
    /// request: the records open at the last answer must be listed again ([`check_kept`],
    /// else `malformed`). What disagrees but reads is an anomaly: `count` against the rows
    /// ([`check_count`], `total_mismatch`), a record sent twice (`duplicate_row`).
    async fn room(
        &self,
        ctx: &PollCtx,
        api: &Api<'_>,
        url: &str,
        room: &RoomRef,
        w: Window,
        open_before: &[Stay],
    ) -> Result<Vec<Record>, CallError> {
        let key = self.key.expose();
        let (field, id) = room.param();
        let (start, end) = (w.start.to_string(), w.end.to_string());
        let mut merged = Merged::new();
        let mut stage = Vec::new();
        let mut received = 0usize;
        let mut last: Option<(Option<u64>, usize)> = None;
        let mut complete = false;
        for page in 1..=MAX_PAGES {
            let page_text = page.to_string();
            let body = form_urlencoded::Serializer::new(String::new())
                .append_pair("key", key)
                .append_pair(field, id)
                .append_pair("starttime", &start)
                .append_pair("endtime", &end)
                .append_pair("page", &page_text)
                .finish();
            let request = ctx
                .plumbing
                .http
                .post(url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body);
            let (prior, prior_stage) = (&merged, &stage);
            let p = api
                .call(request, |status, body| {
                    let p = parse_page(status, body, key)?;
                    if p.no_data {
                        // Nothing in the window, or nothing after the last full page.
                        check_kept(open_before, &w, prior.rows.iter().chain(prior_stage))?;
                    } else if is_last(&p, prior) {
                        let stage = if page == 1 { &p.stage } else { prior_stage };
                        let all = prior.rows.iter().chain(&p.records).chain(stage);
                        check_kept(open_before, &w, all)?;
                    }
                    Ok(p)
                })
                .await?;
            if p.no_data {
                complete = true;
                break;
            }
            let ends = is_last(&p, &merged);
            received += p.rows;
            last = Some((p.count, p.rows));
            merged.extend(p.records);
            if page == 1 {
                stage = p.stage;
            }
            if ends {
                complete = true;
                break;
            }
        }
        if !complete {
            // Still full pages of new records at the cap: records past it are unknown, and a
            // viewer there would read as gone (the ledger closing their stay). Counted as
            // `page_cap`, and the room fails.
            ctx.anomaly(
                API,
                Anomaly::PageCap,
                format!(
                    "room {}: still full pages of new records after {MAX_PAGES} pages",
                    room.label()
                ),
            );
            return Err(CallError::Malformed {
                api: API,
                message: format!("still full pages after {MAX_PAGES} pages"),
            });
        }
        // `count` is of `logininfo`: its distinct records, before the stage joins them.
        let distinct = merged.rows.len();
        merged.extend(stage);
        if let Some((count, rows)) = last {
            if let Some(detail) = check_count(count, rows, received, distinct) {
                ctx.anomaly(
                    API,
                    Anomaly::TotalMismatch,
                    format!("room {}: {detail}", room.label()),
                );
            }
        }
        if merged.repeated > 0 {
            ctx.anomaly(
                API,
                Anomaly::DuplicateRow,
                format!(
                    "room {}: {} record(s) repeated a stay (user and enter time) already listed: merged, {} records",
                    room.label(),
                    merged.repeated,
                    merged.rows.len()
                ),
            );
        }
        Ok(merged.rows)
    }

    async fn fetch(&self, ctx: &PollCtx) -> Result<Observation, PollError> {
        let now = ctx.now.timestamp();
        let day_start = ctx.day_start();
        let api = ctx.api(API, &self.account, QPS);
        let api = &api;
        let url = format!(
            "{}{PATH}",
            ctx.endpoint_or(DEFAULT_ENDPOINT).trim_end_matches('/')
        );
        let url = url.as_str();
        let jobs: Vec<(RoomRef, Window, Vec<Stay>)> = {
            let cursors = lock(&self.cursors);
            let asked = lock(&self.asked);
            let mut rooms: Vec<&RoomRef> = self.rooms.iter().collect();
            // Never asked first, then the longest ago; config order among equals.
            rooms.sort_by_key(|r| asked.get(r.label()).copied().unwrap_or(0));
            rooms
                .into_iter()
                .map(|r| {
                    let (c, open) = match cursors.get(r.label()) {
                        Some((c, open)) => (Some(*c), open.clone()),
                        None => (None, Vec::new()),
                    };
                    (r.clone(), window(c, now, day_start), open)
                })
                .collect()
        };
        // Owned items: a closure over borrowed ones makes the boxed poll future not `Send`
        // for every lifetime (rust-lang/rust#102211).
        let mut answers = stream::iter(jobs)
            .map(|(room, w, open)| async move {
                let r = self.room(ctx, api, url, &room, w, &open).await;
                // Marked once answered (or failed): rooms a deadline cut short go first next.
                let mut asked = lock(&self.asked);
                let turn = asked.values().copied().max().unwrap_or(0) + 1;
                asked.insert(room.label().to_string(), turn);
                drop(asked);
                (room, w, r)
            })
            .buffer_unordered(CONCURRENCY);
        let mut answered = 0usize;
        let mut first_error = None;
        while let Some((room, w, result)) = answers.next().await {
            match result {
                Ok(records) => {
                    // The cursor moves in the same step as the room is reported: a poll cut
                    // short after this point loses neither.
                    let mut cursors = lock(&self.cursors);
                    cursors.insert(
                        room.label().to_string(),
                        (advance(&w, &records), still_open(&records)),
                    );
                    ctx.room_done(observation(room.label(), &w, records));
                    answered += 1;
                }
                Err(e) => {
                    ctx.room_failed(room.label(), &e);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if answered == 0 => Err(e.into()),
            _ => Ok(Observation::default()),
        }
    }
}

impl Vendor for Talkcloud {
    fn documented_qps(&self) -> Option<f64> {
        Some(QPS)
    }
    fn info(&self) -> TargetInfo {
        TargetInfo::default()
    }

    fn poll<'a>(&'a self, ctx: &'a PollCtx) -> BoxFuture<'a, Result<Observation, PollError>> {
        Box::pin(self.fetch(ctx))
    }

    fn budget(&self) -> Option<super::Budget> {
        // One request per room at least (a quiet room: one page); a busy room adds a request
        // per 200 records, which no config can tell.
        Some(super::Budget {
            requests: self.rooms.len() as u64,
            qps: QPS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendor::{Device, Role};

    fn conf(yaml: &str) -> Result<Talkcloud, FieldError> {
        parse_conf(serde_yaml::from_str(yaml).unwrap())
    }

    fn err(yaml: &str) -> String {
        match conf(yaml) {
            Err(e) => format!("{}: {}", e.path, e.message),
            Ok(_) => panic!("accepted: {yaml}"),
        }
    }

    #[test]
    fn rooms_are_serials_or_thirdroomids() {
        let t = conf(
            "credentials: { key: abcdefabcdef1234 }\nrooms: [\"111111\", 222222, { thirdroomid: my-class }, { serial: \"333\" }]",
        )
        .unwrap();
        assert_eq!(
            t.rooms,
            vec![
                RoomRef::Serial("111111".into()),
                RoomRef::Serial("222222".into()),
                RoomRef::ThirdRoomId("my-class".into()),
                RoomRef::Serial("333".into()),
            ]
        );
        assert_eq!(t.rooms[2].param(), ("thirdroomid", "my-class"));
    }

    #[test]
    fn bad_configs_name_the_field_and_never_the_key() {
        let key = "credentials: { key: abcdefabcdef1234 }\n";
        assert_eq!(
            err(&format!("{key}rooms: []")),
            "rooms: list the rooms to poll: serials, or { thirdroomid: ID }"
        );
        assert!(err(key).contains("missing field `rooms`"));
        assert_eq!(
            err(&format!("{key}rooms: [\"1\", 1]")),
            "rooms[1]: room `1` is listed twice"
        );
        assert_eq!(
            err(&format!("{key}rooms: [\"\"]")),
            "rooms[0]: a room id must not be empty"
        );
        assert!(err(&format!("{key}rooms: [{{ roomid: x }}]")).contains("unknown key `roomid`"));
        assert!(err(&format!("{key}rooms: [1]\napp_id: x")).contains("unknown field `app_id`"));
        let e = err("credentials: { key: abcdefabcdef1234, secret: x }\nrooms: [1]");
        assert!(
            e.contains("unknown field `secret`") && !e.contains("abcdef"),
            "{e}"
        );
        let t = conf(&format!("{key}rooms: [1]")).unwrap();
        let debug = format!("{t:?}");
        assert!(!debug.contains("abcdefabcdef1234"), "{debug}");
        assert!(!t.account.contains("abcdefabcdef1234"));
    }

    fn rec(user: &str, join: i64, leave: Option<i64>) -> Record {
        Record {
            user: user.into(),
            join,
            leave,
            device: Device::Ios,
            role: Role::Viewer,
        }
    }

    #[test]
    fn the_first_window_is_the_day_so_far() {
        assert_eq!(
            window(None, 5000, 1000),
            Window {
                start: 1000,
                end: 5000,
                since: 1000
            }
        );
    }

    #[test]
    fn a_later_window_starts_at_the_earliest_viewer_still_in() {
        let w = window(None, 5000, 1000);
        // a entered at 1500 and is in; b came and went; c is in since 4000.
        let c = advance(
            &w,
            &[
                rec("a", 1500, None),
                rec("b", 1200, Some(1300)),
                rec("c", 4000, None),
            ],
        );
        assert_eq!(
            c,
            Cursor {
                from: 1500,
                covered: 5000
            }
        );
        // a leaves at 5500: the next window still lists a (entered 1500), now with a leave.
        let next = window(Some(c), 6000, 1000);
        assert_eq!(
            next,
            Window {
                start: 1500,
                end: 6000,
                since: 5000
            }
        );
        // Nobody in: the last end less the overlap.
        let c = advance(
            &next,
            &[rec("a", 1500, Some(5500)), rec("c", 4000, Some(5900))],
        );
        assert_eq!(c.from, 6000 - OVERLAP);
        // Someone entered just before the end: the overlap still reaches further back.
        let c = advance(&next, &[rec("d", 5990, None)]);
        assert_eq!(c.from, 6000 - OVERLAP);
    }

    #[test]
    fn a_cursor_survives_midnight_and_is_dropped_when_too_old_or_ahead() {
        let c = Cursor {
            from: 80_000,
            covered: 86_000,
        };
        // The new day starts at 86 400: the window reaches back for who is still in.
        assert_eq!(window(Some(c), 87_000, 86_400).start, 80_000);
        // The clock went back: start again at midnight.
        assert_eq!(window(Some(c), 85_000, 0).start, 0);
        // Older than MAX_SPAN: start again at midnight.
        let far = 80_000 + MAX_SPAN + 10;
        assert_eq!(window(Some(c), far, far - 100).start, far - 100);
    }

    #[test]
    fn a_record_open_at_the_last_answer_must_be_listed_again() {
        let w = Window {
            start: 1000,
            end: 5000,
            since: 4000,
        };
        let before = still_open(&[
            rec("a", 1500, None),
            rec("a", 1500, None),
            rec("b", 1200, Some(1300)),
            rec("c", 900, None),
        ]);
        assert_eq!(before, vec![("a".into(), 1500), ("c".into(), 900)]);
        // a is listed again (now closed): fine; c entered before the window: not asked.
        let now = [rec("a", 1500, Some(4500))];
        assert!(check_kept(&before, &w, now.iter()).is_ok());
        // a no longer listed (a 4105, or an empty listing): malformed, naming no user.
        let e = check_kept(&before, &w, [].iter()).unwrap_err().to_string();
        assert_eq!(
            e,
            "getLiveLogininfo: malformed response: 1 record(s) of users still in at the last poll are no longer listed (0 listed now)"
        );
        // a listed with another enter time is another stay: a's is still lost.
        assert!(check_kept(&before, &w, [rec("a", 1600, None)].iter()).is_err());
        // The first poll expects nothing.
        assert!(check_kept(&[], &w, [].iter()).is_ok());
    }

    #[test]
    fn counts_square_with_the_rows_either_way() {
        assert_eq!(check_count(None, 10, 410, 400), None);
        assert_eq!(check_count(Some(10), 10, 410, 400), None, "the page's rows");
        assert_eq!(check_count(Some(410), 10, 410, 400), None, "all rows");
        assert_eq!(
            check_count(Some(400), 10, 410, 400),
            None,
            "distinct records"
        );
        // The reading rule (README, "Answers that disagree with themselves"): a count that is none of them is an anomaly, no longer a failed request.
        assert_eq!(
            check_count(Some(500), 10, 410, 400).as_deref(),
            Some(
                "count is 500 on the last page, neither its 10 rows nor the 410 rows (400 distinct) of all pages: read from the rows"
            )
        );
        // An empty page after a full one, count saying more: an anomaly too.
        assert!(check_count(Some(700), 0, 200, 200).is_some());
    }

    #[test]
    fn a_stay_sent_twice_is_merged_never_added() {
        let mut m = Merged::new();
        m.extend(vec![rec("a", 100, None), rec("b", 100, Some(150))]);
        assert!(m.knows(&rec("a", 100, Some(300))));
        assert!(!m.knows(&rec("a", 200, None)), "another stay of a");
        m.extend(vec![rec("a", 100, Some(300)), rec("a", 200, None)]);
        assert_eq!(m.repeated, 1);
        assert_eq!(
            m.rows,
            vec![
                rec("a", 100, Some(300)),
                rec("b", 100, Some(150)),
                rec("a", 200, None)
            ],
            "the later reading of a's first stay, with its leave"
        );
    }

    #[test]
    fn a_report_is_the_records_as_sessions_since_the_last_end() {
        let w = Window {
            start: 100,
            end: 900,
            since: 500,
        };
        let o = observation(
            "room",
            &w,
            vec![
                rec("a", 100, None),
                rec("a", 200, None),
                rec("b", 150, Some(300)),
            ],
        );
        assert_eq!((o.active, o.users), (true, 1), "a is in twice: one user");
        match o.day {
            DayFigures::Sessions { since, sessions } => {
                assert_eq!(since, 500);
                assert_eq!(sessions.len(), 3);
                assert_eq!(sessions[0].role, Some(Role::Viewer));
            }
            other => panic!("{other:?}"),
        }
    }
}

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
//! So each room keeps a [`Cursor`]: when its last complete listing ended (`covered`) and the
//! stays still open then. It moves only when all pages of all windows arrived (in the same
//! step as the room is reported). A listing asks ([`windows`]):
//!
//! - with no cursor (a first start): [local midnight less [`LOOKBACK`], now], so a viewer in
//!   since yesterday is seen (the ledger counts them from midnight);
//! - else [`covered` less [`OVERLAP`] (records written late), now], and, for the viewers still
//!   in who entered before that, one narrow window per cluster of their enter times (gaps
//!   under [`GAP`]; a cluster within [`GAP`] of the main window joins it). A viewer who entered
//!   before the last poll and left since is thus listed again, now with a leave time, and one
//!   who never leaves costs one small window, not every record since they came;
//! - the report's `since` ([`DayFigures::Sessions`]) is `covered`: every session that
//!   entered before the main window and is not in a narrow one had left by then, so the
//!   answer holds every session overlapping [`since`, now], as the ledger's contract asks,
//!   and a session the ledger holds open that the answer no longer lists is closed.
//!
//! A listing lives in the client, not in the poll: a room that needs more pages than fit in
//! one `poll_timeout` goes on at the next poll from the page it reached (its windows fixed
//! when it began), and is reported when complete. A throttle or timeout keeps it; an answer
//! that cannot be read starts it again. A failed room keeps its cursor; a cursor older than
//! [`MAX_SPAN`] (the API refuses windows over a month), or ahead of the clock, is dropped (a
//! first listing again). The cursor survives local midnight, a reload that restarts the target
//! and, through the state file, a restart of the exporter.
//!
//! **Cost.** A first listing reads every record of yesterday and today: ⌊R / 200⌋ + 1
//! requests for R records. Later polls read the records entered since the last poll (less the
//! overlap), plus one request per cluster of enter times of viewers still in: one request a
//! room between classes, a few during one.

pub mod answer;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex as AsyncMutex;

use answer::parse_page;
pub use answer::{Record, API, CODES, PAGE};

use super::anomaly::LOST_BEFORE_BELIEVED;
use super::merged::{Identity, Merged};
use super::{
    Anomaly, Api, BoxFuture, CallError, DayFigures, Observation, PollCtx, PollError,
    RoomObservation, SessionObs, TargetInfo, Vendor, VendorEntry,
};
use crate::fields::{from_value, FieldError, Secret};
use crate::lock::lock;

/// The registry row.
pub const ENTRY: VendorEntry = VendorEntry {
    name: "talkcloud",
    parse,
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
/// A first listing (no cursor: a fresh start, or one too old) reaches back this far before
/// local midnight, so a viewer in since yesterday is seen (and counted from midnight).
pub const LOOKBACK: i64 = 86_400;
/// Enter times of viewers still in that lie closer together than this are asked in one
/// window.
pub const GAP: i64 = 600;
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
        listings: Mutex::new(HashMap::new()),
        lost: Mutex::new(HashMap::new()),
        asked: Mutex::new(HashMap::new()),
    })
}

/// Where a room's reading stood at its last complete answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The end of the last listing that answered: the next report's `since`.
    pub covered: i64,
    /// (user, enter time) of the records still open then (the stage included), sorted.
    pub open: Vec<Stay>,
}

/// One request window of one room, and the `since` of its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `starttime`.
    pub start: i64,
    /// `endtime`.
    pub end: i64,
    /// The report holds every session overlapping [`since`, the listing's end].
    pub since: i64,
}

/// The windows of a room's listing at `now`, from its cursor (none, or one too old or ahead
/// of the clock: a first listing). The last window ends at `now`; the others each cover a
/// cluster of enter times of viewers still in at the last answer (see the module's "Later
/// polls"). Sorted, disjoint, never wider than [`MAX_SPAN`] back from `now`.
pub fn windows(cursor: Option<&Cursor>, now: i64, day_start: i64) -> Vec<Window> {
    let floor = now - MAX_SPAN;
    let c = match cursor {
        Some(c) if c.covered <= now && c.covered >= floor => c,
        _ => {
            let start = (day_start - LOOKBACK).max(floor).min(now);
            return vec![Window {
                start,
                end: now,
                since: start,
            }];
        }
    };
    let late = c.covered - OVERLAP;
    let mut joins: Vec<i64> = c
        .open
        .iter()
        .map(|(_, join)| *join)
        .filter(|j| (floor..late).contains(j))
        .collect();
    joins.sort_unstable();
    joins.dedup();
    let mut clusters: Vec<(i64, i64)> = Vec::new();
    for j in joins {
        match clusters.last_mut() {
            Some((_, b)) if j - *b <= GAP => *b = j,
            _ => clusters.push((j, j)),
        }
    }
    let mut start = late;
    if let Some(&(a, b)) = clusters.last() {
        if b >= late - GAP {
            start = a;
            clusters.pop();
        }
    }
    let since = c.covered;
    clusters
        .into_iter()
        .map(|(a, b)| Window {
            start: a,
            end: b,
            since,
        })
        .chain(std::iter::once(Window {
            start: start.max(floor).min(now),
            end: now,
            since,
        }))
        .collect()
}

/// The cursor after a complete listing that ended at `end`.
pub fn advance(end: i64, records: &[Record]) -> Cursor {
    Cursor {
        covered: end,
        open: still_open(records),
    }
}

/// A room's report: its records as sessions over [`since`, the listing's end].
fn observation(room: &str, since: i64, records: Vec<Record>) -> RoomObservation {
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
            since,
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

/// A room's listing in progress: its windows, fixed when it began, and what arrived so far.
/// It lives in the client (not in the poll), so a listing longer than one poll goes on at
/// the next poll from the page it reached.
struct Listing {
    windows: Vec<Window>,
    /// The records open at the last complete answer: each must be listed again.
    open_before: Vec<Stay>,
    /// The window being read, and its next page.
    at: usize,
    page: usize,
    /// Records of the windows already read.
    done: Vec<Record>,
    /// The window being read: its records, its stage list, rows received and the last
    /// page's (`count`, rows).
    merged: Merged<Record>,
    stage: Vec<Record>,
    received: usize,
    last: Option<(Option<u64>, usize)>,
    /// This poll believes a listing that lost users still in (the same loss poll after poll).
    believe: bool,
    /// This poll's listing lost users still in at the last answer.
    lost: AtomicBool,
}

impl Listing {
    fn new(windows: Vec<Window>, open_before: Vec<Stay>) -> Self {
        Listing {
            windows,
            open_before,
            at: 0,
            page: 1,
            done: Vec::new(),
            merged: Merged::new(),
            stage: Vec::new(),
            received: 0,
            last: None,
            believe: false,
            lost: AtomicBool::new(false),
        }
    }

    /// The report's `since` and the listing's end.
    fn span(&self) -> (i64, i64) {
        match (self.windows.first(), self.windows.last()) {
            (Some(first), Some(last)) => (first.since, last.end),
            _ => (0, 0),
        }
    }
}

/// One configured Talk-cloud target.
pub struct Talkcloud {
    key: Secret,
    /// The limiter's account: a hash of the key.
    account: String,
    rooms: Vec<RoomRef>,
    /// Per room label: its cursor.
    cursors: Mutex<HashMap<String, Cursor>>,
    /// Per room label: its listing in progress, if one was cut short.
    listings: Mutex<HashMap<String, Arc<AsyncMutex<Listing>>>>,
    /// Per room label, polls in a row whose listing lost users still in at the last answer.
    lost: Mutex<HashMap<String, u32>>,
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
    /// Reads `room`'s listing on from where it stands: every window, all pages, each
    /// `logininfo` then `uptablelist`, merged by stay ([`Merged`]). A window's paging ends on a
    /// short or empty page, a 4105, or a full page of records already held (a vendor ignoring
    /// `page`). Its last page is checked inside its request: the records open at the last
    /// answer that entered within it must be listed again ([`check_kept`], else `malformed`).
    /// What disagrees but reads is an anomaly: `count` against the rows ([`check_count`],
    /// `total_mismatch`), a record sent twice (`duplicate_row`). Every page is folded into
    /// `l` as it arrives, so a poll cut short keeps what it read. Returns every record.
    async fn list(
        &self,
        ctx: &PollCtx,
        api: &Api<'_>,
        url: &str,
        room: &RoomRef,
        l: &mut Listing,
    ) -> Result<Vec<Record>, CallError> {
        let key = self.key.expose();
        let (field, id) = room.param();
        while let Some(&w) = l.windows.get(l.at) {
            let (start, end) = (w.start.to_string(), w.end.to_string());
            let mut complete = false;
            while l.page <= MAX_PAGES {
                let page = l.page;
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
                let (prior, prior_stage, open_before) = (&l.merged, &l.stage, &l.open_before);
                let (believe, lost) = (l.believe, &l.lost);
                let p = api
                    .call(request, |status, body| {
                        let p = parse_page(status, body, key)?;
                        let kept = if p.no_data {
                            // Nothing in the window, or nothing after the last full page.
                            check_kept(open_before, &w, prior.rows.iter().chain(prior_stage))
                        } else if is_last(&p, prior) {
                            let stage = if page == 1 { &p.stage } else { prior_stage };
                            let all = prior.rows.iter().chain(&p.records).chain(stage);
                            check_kept(open_before, &w, all)
                        } else {
                            Ok(())
                        };
                        if let Err(e) = kept {
                            lost.store(true, Ordering::Relaxed);
                            if !believe {
                                return Err(e);
                            }
                        }
                        Ok(p)
                    })
                    .await?;
                // From here to the next request, `l` changes in one step.
                l.page += 1;
                if p.no_data {
                    complete = true;
                    break;
                }
                let ends = is_last(&p, &l.merged);
                l.received += p.rows;
                l.last = Some((p.count, p.rows));
                l.merged.extend(p.records);
                if page == 1 {
                    l.stage = p.stage;
                }
                if ends {
                    complete = true;
                    break;
                }
            }
            if !complete {
                // Still full pages of new records at the cap: records past it are unknown, and
                // a viewer there would read as gone (the ledger closing their stay). Counted as
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
            let mut merged = std::mem::take(&mut l.merged);
            let distinct = merged.rows.len();
            merged.extend(std::mem::take(&mut l.stage));
            if let Some((count, rows)) = l.last.take() {
                if let Some(detail) = check_count(count, rows, l.received, distinct) {
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
            l.done.append(&mut merged.rows);
            l.received = 0;
            l.at += 1;
            l.page = 1;
        }
        // Windows are disjoint by enter time; the stage list may come again with each.
        let mut all = Merged::new();
        all.extend(std::mem::take(&mut l.done));
        Ok(all.rows)
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
        let jobs: Vec<(RoomRef, Arc<AsyncMutex<Listing>>)> = {
            let cursors = lock(&self.cursors);
            let mut listings = lock(&self.listings);
            let asked = lock(&self.asked);
            let mut rooms: Vec<&RoomRef> = self.rooms.iter().collect();
            // Never asked first, then the longest ago; config order among equals.
            rooms.sort_by_key(|r| asked.get(r.label()).copied().unwrap_or(0));
            rooms
                .into_iter()
                .map(|r| {
                    // A listing cut short goes on; else a new one from the room's cursor.
                    let listing = listings
                        .entry(r.label().to_string())
                        .or_insert_with(|| {
                            let c = cursors.get(r.label());
                            let open = c.map(|c| c.open.clone()).unwrap_or_default();
                            Arc::new(AsyncMutex::new(Listing::new(
                                windows(c, now, day_start),
                                open,
                            )))
                        })
                        .clone();
                    (r.clone(), listing)
                })
                .collect()
        };
        // Owned items: a closure over borrowed ones makes the boxed poll future not `Send`
        // for every lifetime (rust-lang/rust#102211).
        let mut answers = stream::iter(jobs)
            .map(|(room, listing)| async move {
                // The same loss poll after poll: this time the listing is believed.
                let believe = lock(&self.lost)
                    .get(room.label())
                    .is_some_and(|n| n + 1 >= LOST_BEFORE_BELIEVED);
                let mut l = listing.lock().await;
                l.believe = believe;
                l.lost = AtomicBool::new(false);
                let r = self.list(ctx, api, url, &room, &mut l).await;
                let span = l.span();
                let lost = l.lost.load(Ordering::Relaxed);
                drop(l);
                // Marked once answered (or failed): rooms a deadline cut short go first next.
                let mut asked = lock(&self.asked);
                let turn = asked.values().copied().max().unwrap_or(0) + 1;
                asked.insert(room.label().to_string(), turn);
                drop(asked);
                (room, span, r, lost)
            })
            .buffer_unordered(CONCURRENCY);
        let mut answered = 0usize;
        let mut first_error = None;
        while let Some((room, (since, end), result, lost)) = answers.next().await {
            if !lost {
                lock(&self.lost).remove(room.label());
            } else if result.is_ok() {
                lock(&self.lost).remove(room.label());
                ctx.anomaly(
                    API,
                    Anomaly::LostRows,
                    format!(
                        "room {}: users still in at the last answer no longer listed, {LOST_BEFORE_BELIEVED} polls in a row: the listing is believed (they left)",
                        room.label()
                    ),
                );
            } else {
                *lock(&self.lost)
                    .entry(room.label().to_string())
                    .or_default() += 1;
            }
            match result {
                Ok(records) => {
                    // The cursor moves in the same step as the room is reported: a poll cut
                    // short after this point loses neither.
                    lock(&self.listings).remove(room.label());
                    lock(&self.cursors).insert(room.label().to_string(), advance(end, &records));
                    ctx.room_done(observation(room.label(), since, records));
                    answered += 1;
                }
                Err(e) => {
                    // An answer that cannot be read starts the room's listing again at the
                    // next poll; any other failure (a throttle, a timeout) goes on from the
                    // page it reached.
                    if matches!(e, CallError::Malformed { .. }) {
                        lock(&self.listings).remove(room.label());
                    }
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

    fn cursors(&self) -> Option<serde_json::Value> {
        let cursors = lock(&self.cursors);
        serde_json::to_value(&*cursors).ok()
    }

    fn restore_cursors(&self, saved: serde_json::Value) -> Result<(), String> {
        let saved: HashMap<String, Cursor> =
            serde_json::from_value(saved).map_err(|e| format!("Talk-cloud cursors: {e}"))?;
        let mut cursors = lock(&self.cursors);
        for r in &self.rooms {
            if let Some(c) = saved.get(r.label()) {
                cursors.insert(r.label().to_string(), c.clone());
            }
        }
        Ok(())
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
    use crate::clouds::{Device, Role};

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
    fn the_first_listing_reaches_back_a_day_before_midnight() {
        let midnight = 100 * 86_400;
        assert_eq!(
            windows(None, midnight + 5000, midnight),
            vec![Window {
                start: midnight - LOOKBACK,
                end: midnight + 5000,
                since: midnight - LOOKBACK
            }]
        );
    }

    fn cursor(covered: i64, open: &[(&str, i64)]) -> Cursor {
        Cursor {
            covered,
            open: open.iter().map(|(u, j)| (u.to_string(), *j)).collect(),
        }
    }

    #[test]
    fn a_later_listing_asks_since_the_last_and_narrow_windows_for_who_is_still_in() {
        let day = 100 * 86_400;
        let w = windows(None, day + 5000, day);
        // a entered at 1500 and is in; b came and went; c is in since 4500 and d since 4950.
        let c = advance(
            w[0].end,
            &[
                rec("a", day + 1500, None),
                rec("b", day + 1200, Some(day + 1300)),
                rec("c", day + 4500, None),
                rec("d", day + 4950, None),
            ],
        );
        assert_eq!(
            c,
            cursor(
                5000 + day,
                &[("a", day + 1500), ("c", day + 4500), ("d", day + 4950)]
            )
        );
        // a's enter time gets a window of its own; c's is within GAP of the main window, which
        // starts there; d entered within the overlap.
        let next = windows(Some(&c), day + 6000, day);
        assert_eq!(
            next,
            vec![
                Window {
                    start: day + 1500,
                    end: day + 1500,
                    since: day + 5000
                },
                Window {
                    start: day + 4500,
                    end: day + 6000,
                    since: day + 5000
                },
            ]
        );
        // Nobody in: the last end less the overlap.
        let c = advance(day + 6000, &[rec("a", day + 1500, Some(day + 5500))]);
        assert_eq!(
            windows(Some(&c), day + 7000, day),
            vec![Window {
                start: day + 6000 - OVERLAP,
                end: day + 7000,
                since: day + 6000
            }]
        );
    }

    #[test]
    fn enter_times_close_together_share_one_window() {
        let c = cursor(
            100_000,
            &[
                ("a", 10_000),
                ("b", 10_300),
                ("c", 10_800),
                ("d", 50_000),
                ("e", 50_000),
            ],
        );
        let w = windows(Some(&c), 100_500, 90_000);
        let spans: Vec<(i64, i64)> = w.iter().map(|w| (w.start, w.end)).collect();
        assert_eq!(
            spans,
            vec![
                (10_000, 10_800),
                (50_000, 50_000),
                (100_000 - OVERLAP, 100_500)
            ]
        );
        assert!(w.iter().all(|w| w.since == 100_000));
    }

    #[test]
    fn a_cursor_survives_midnight_and_is_dropped_when_too_old_or_ahead() {
        let c = cursor(86_000, &[("a", 80_000)]);
        // The new day starts at 86 400: a window still reaches back for who is still in.
        assert_eq!(windows(Some(&c), 87_000, 86_400)[0].start, 80_000);
        // The clock went back: a first listing.
        assert_eq!(
            windows(Some(&c), 85_000, 86_400),
            windows(None, 85_000, 86_400)
        );
        // Older than MAX_SPAN: a first listing, never wider than MAX_SPAN.
        let far = 86_000 + MAX_SPAN + 10;
        assert_eq!(
            windows(Some(&c), far, far - 100),
            vec![Window {
                start: far - 100 - LOOKBACK,
                end: far,
                since: far - 100 - LOOKBACK
            }]
        );
        // A viewer in for longer than MAX_SPAN falls out of the windows.
        let c = cursor(far - 60, &[("a", 80_000), ("b", far - 1000)]);
        let w = windows(Some(&c), far, far - 100);
        assert!(w.iter().all(|w| w.start >= far - MAX_SPAN), "{w:?}");
        assert_eq!(w.len(), 2, "{w:?}");
    }

    #[test]
    fn cursors_go_out_and_come_back_for_configured_rooms_only() {
        let t = conf("credentials: { key: abcdefabcdef1234 }\nrooms: [\"1\", \"2\"]").unwrap();
        lock(&t.cursors).insert("1".into(), cursor(500, &[("u", 100)]));
        let saved = t.cursors().unwrap();
        let mut with_other = saved.clone();
        with_other["9"] = serde_json::json!({"covered": 1, "open": []});
        let u = conf("credentials: { key: abcdefabcdef1234 }\nrooms: [\"1\", \"2\"]").unwrap();
        u.restore_cursors(with_other).unwrap();
        assert_eq!(*lock(&u.cursors), *lock(&t.cursors));
        assert!(u
            .restore_cursors(serde_json::json!({"1": {"covered": "x"}}))
            .unwrap_err()
            .contains("Talk-cloud cursors"));
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
            w.since,
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

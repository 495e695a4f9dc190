//! Simulated Talk-cloud `getLiveLogininfo` (vendors.md §4), from a seeded set of classes.
//!
//! What it checks and answers, in this order:
//!
//! 1. `POST /WebAPI/getLiveLogininfo` with a form body (other paths 404, other methods 405).
//! 2. `key`: missing or empty → 4101, wrong → 4102.
//! 3. The room: `serial`, else `thirdroomid` (neither → -1); unknown → 4007.
//! 4. The [`Fault`] of the API, then the fault set under `getLiveLogininfo:<serial>` for one
//!    room: an error `code`, an HTML page with `http_status`, a connection `reset`.
//! 5. The window: `starttime` / `endtime` (Unix seconds; neither → the last 24 h, one → a month
//!    from or to it); not integers, `endtime` before `starttime`, or more than a month apart
//!    (31 days here) → -1. `page` from 1 (not a positive integer → -1).
//! 6. The records that **entered** within [`starttime`, min(`endtime`, now)], in enter-time
//!    order (then by user id), as they stand now: a viewer still in has `outtimestamp` 0 and
//!    `outtime` "". Live viewers in `logininfo`, [`PAGE`] a page; the users on stage in
//!    `uptablelist`, all of them, on page 1 only. `count` is the number of `logininfo` records
//!    in the window (all pages). Nothing at all in the window, or a page past the last → 4105.
//!
//! As the official docs show, `terminal`, `terminal_details`, `userroleid`, `duration` and
//! `paytime` are strings and the timestamps numbers; with `code_as_string` every number is a
//! string (`result`, `count`, the timestamps). `missing_fields` sends the seed's spelling
//! `startimestamp` and no `count`. `malformed` cuts the body in half. `null_list` sends
//! `logininfo` (and `uptablelist`) as null with `count` kept; `empty_later_pages` sends pages
//! after the first with an empty `logininfo`, `count` kept; `absent_list` leaves `logininfo`
//! and `uptablelist` out, `count` kept; `total_larger` sends `count` 5 above the records,
//! `total_smaller` one below; `duplicate_rows` lists a room's first three records again at the
//! end (on a later page, or twice on the one page), `count` counting the rows sent;
//! `lose_rows` answers 4105 (no data)
//! whatever the window holds; `pad_bytes` appends whitespace. An injected error `code` echoes
//! the request form, key included, in its message (as a careless vendor might). No QPS limit
//! is published: nothing is throttled (requests are counted and logged for tests).
//!
//! The classes, around the time `t0` the simulator is made for:
//!
//! - `7100000001` (thirdroomid `class-big`): a big class from t0 − 100 min to t0 + 50 min: a
//!   teacher and two assistants on stage (one assistant steps out for five minutes), two
//!   students on stage for a while, an inspector, an auditor and a parent (role `other`), and
//!   450 viewers and students joining, leaving and rejoining (about 700 records by t0: four
//!   pages), one of them on two devices at once, several who entered before t0 and leave
//!   within ten minutes after it.
//! - `7100000002` (`class-early`): a class from t0 − 60 min to t0 + 30 min whose teacher left
//!   at t0 − 15 min; 40 viewers, one of whom also watches the big class.
//! - `7100000003` (`class-later`): a class from t0 + 2 h to t0 + 3 h: nothing before (4105).
//! - `7100000004` (`open-day`): a class from t0 − 5 h to t0 − 4 h, over at t0.

pub mod classes;

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::DateTime;
use serde_json::{json, Value};

use super::{Fault, Faults, SimClock, SimRequest, SimResponse, Simulator};
use crate::lock::lock;
use crate::model::{Device, DeviceCounts, Role, RoleCounts};
use futures_util::future::BoxFuture;

pub use classes::{ClassRoom, Stay};

/// The API this simulator serves (the [`Faults`] key; `API:<serial>` for one room).
pub const API: &str = "getLiveLogininfo";
/// The path it serves.
pub const PATH: &str = "/WebAPI/getLiveLogininfo";
/// Rows of `logininfo` a page.
pub const PAGE: usize = 200;
/// The widest window: a month, 31 days here.
pub const MAX_WINDOW: i64 = 31 * 86_400;

/// What the exporter should show for one room (or, from [`TalkSim::target_truth`], the
/// target), computed by brute force from the stays.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Truth {
    /// Distinct users in now (the target: the sum over rooms).
    pub users: u64,
    /// Most distinct users in at once within [from, at].
    pub peak: u64,
    /// Distinct users in at some time within [from, at].
    pub accumulated: u64,
    /// Distinct (user, device) pairs in now.
    pub devices: DeviceCounts,
    /// Distinct (user, role) pairs in now, every role listed (rooms only).
    pub roles: RoleCounts,
    /// `logininfo` records that entered within [from, at].
    pub records: usize,
}

/// One request as the simulator saw it (after the key check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The room's serial.
    pub serial: String,
    /// `starttime` as understood.
    pub start: i64,
    /// `endtime` as understood.
    pub end: i64,
    /// `page`.
    pub page: usize,
}

/// The simulated Talk-cloud service.
pub struct TalkSim {
    key: String,
    /// Scenario clock.
    pub clock: SimClock,
    /// Fault switches: [`API`] for every room, `API:<serial>` for one.
    pub faults: Faults,
    t0: i64,
    rooms: Vec<ClassRoom>,
    log: Mutex<Vec<Logged>>,
    requests: AtomicU64,
}

impl TalkSim {
    /// A simulator whose classes are laid out around now.
    pub fn new(seed: u64) -> Self {
        Self::at(seed, chrono::Utc::now().timestamp())
    }

    /// A simulator whose classes are laid out around `t0` (its clock runs from now; tests
    /// freeze it).
    pub fn at(seed: u64, t0: i64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let key = super::random_key(&mut rng, 16);
        TalkSim {
            key,
            clock: SimClock::default(),
            faults: Faults::default(),
            t0,
            rooms: classes::classes(&mut rng, t0),
            log: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
        }
    }

    /// The enterprise key (tests and the demo configure the exporter with it).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The time the classes are laid out around.
    pub fn t0(&self) -> i64 {
        self.t0
    }

    /// Every room.
    pub fn rooms(&self) -> &[ClassRoom] {
        &self.rooms
    }

    /// Every room's serial, in order.
    pub fn serials(&self) -> Vec<String> {
        self.rooms.iter().map(|r| r.serial.clone()).collect()
    }

    /// A room by serial or thirdroomid.
    pub fn room(&self, id: &str) -> Option<&ClassRoom> {
        self.rooms.iter().find(|r| r.serial == id || r.third == id)
    }

    /// Requests answered so far (every status).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The requests that passed the key and room checks, in order.
    pub fn log(&self) -> Vec<Logged> {
        lock(&self.log).clone()
    }

    /// Users of `room` who entered at or before `t1` and left within (`t1`, `t2`].
    pub fn left_between(&self, room: &str, t1: i64, t2: i64) -> Vec<Stay> {
        self.room(room)
            .map(|r| {
                r.stays
                    .iter()
                    .filter(|s| s.join <= t1 && t1 < s.leave && s.leave <= t2)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The truth for one room (serial or thirdroomid) over [from, at].
    pub fn truth(&self, room: &str, from: i64, at: i64) -> Truth {
        let Some(r) = self.room(room) else {
            return Truth::default();
        };
        let stays: Vec<&Stay> = r.stays.iter().collect();
        let mut t = brute_force(&stays, from, at);
        t.records = r
            .stays
            .iter()
            .filter(|s| !s.on_stage && from <= s.join && s.join <= at)
            .count();
        let mut roles: RoleCounts = Role::CLASS.iter().map(|r| (*r, 0)).collect();
        let pairs: HashSet<(&str, Role)> = r
            .stays
            .iter()
            .filter(|s| s.present(at))
            .map(|s| (s.user.as_str(), role(s.role)))
            .collect();
        for (_, role) in pairs {
            *roles.entry(role).or_default() += 1;
        }
        t.roles = roles;
        t
    }

    /// The truth for a target of `rooms` (serials or thirdroomids): users now, peak and
    /// accumulated over the union of their stays (a user in two rooms is one person), devices
    /// by distinct (user, device).
    pub fn target_truth(&self, rooms: &[&str], from: i64, at: i64) -> Truth {
        let stays: Vec<&Stay> = rooms
            .iter()
            .filter_map(|id| self.room(id))
            .flat_map(|r| r.stays.iter())
            .collect();
        brute_force(&stays, from, at)
    }

    fn answer(&self, req: &SimRequest) -> SimResponse {
        if req.path != PATH {
            return SimResponse::new(
                404,
                "text/html",
                b"<html><body><h1>404 Not Found</h1></body></html>".to_vec(),
            );
        }
        if req.method != "POST" {
            return SimResponse::new(
                405,
                "text/html",
                b"<html><body><h1>405 Not Allowed</h1></body></html>".to_vec(),
            );
        }
        let params: HashMap<String, String> =
            form_urlencoded::parse(&req.body).into_owned().collect();
        let fault = self.faults.get(API);
        let get = |k: &str| params.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        match get("key") {
            None => return error(4101, "key is required", &fault),
            Some(k) if k != self.key => return error(4102, "key is wrong", &fault),
            Some(_) => {}
        }
        let room = match (get("serial"), get("thirdroomid")) {
            (Some(s), _) => self.rooms.iter().find(|r| r.serial == s),
            (None, Some(t)) => self.rooms.iter().find(|r| r.third == t),
            (None, None) => return error(-1, "serial or thirdroomid is required", &fault),
        };
        let Some(room) = room else {
            return error(4007, "room does not exist", &fault);
        };
        // The room's own fault, where set, wins over the API's.
        let fault = {
            let own = self.faults.get(&format!("{API}:{}", room.serial));
            Fault {
                latency: fault.latency,
                code: own.code.or(fault.code),
                http_status: own.http_status.or(fault.http_status),
                malformed: own.malformed || fault.malformed,
                code_as_string: own.code_as_string || fault.code_as_string,
                missing_fields: own.missing_fields || fault.missing_fields,
                reset: own.reset || fault.reset,
                null_list: own.null_list || fault.null_list,
                empty_later_pages: own.empty_later_pages || fault.empty_later_pages,
                lose_rows: own.lose_rows || fault.lose_rows,
                pad_bytes: own.pad_bytes.max(fault.pad_bytes),
                chunked: own.chunked || fault.chunked,
                total_larger: own.total_larger || fault.total_larger,
                total_smaller: own.total_smaller || fault.total_smaller,
                duplicate_rows: own.duplicate_rows || fault.duplicate_rows,
                absent_list: own.absent_list || fault.absent_list,
            }
        };
        if let Some(code) = &fault.code {
            let code = code.parse().unwrap_or(-1);
            // A hostile vendor that echoes the request, key included: the client must cut
            // the key out of the message it logs and shows.
            let echo = format!(
                "injected fault for request {}",
                String::from_utf8_lossy(&req.body)
            );
            return error(code, &echo, &fault);
        }
        if let Some(status) = fault.http_status {
            return SimResponse::gateway(status);
        }
        if fault.reset {
            return SimResponse::reset();
        }
        let int = |k: &str| -> Result<Option<i64>, SimResponse> {
            match get(k) {
                None => Ok(None),
                Some(v) => v
                    .parse::<i64>()
                    .map(Some)
                    .map_err(|_| error(-1, &format!("{k} is not an integer"), &fault)),
            }
        };
        let now = self.clock.now();
        let window = (|| {
            let (start, end) = match (int("starttime")?, int("endtime")?) {
                (None, None) => (now - 86_400, now),
                (Some(s), None) => (s, s + MAX_WINDOW),
                (None, Some(e)) => (e - MAX_WINDOW, e),
                (Some(s), Some(e)) => (s, e),
            };
            if end < start || end - start > MAX_WINDOW {
                return Err(error(-1, "time range is invalid or over one month", &fault));
            }
            let page = match int("page")? {
                None => 1,
                Some(p) if p >= 1 => p as usize,
                Some(_) => return Err(error(-1, "page is invalid", &fault)),
            };
            Ok((start, end, page))
        })();
        let (start, end, page) = match window {
            Ok(w) => w,
            Err(resp) => return resp,
        };
        lock(&self.log).push(Logged {
            serial: room.serial.clone(),
            start,
            end,
            page,
        });
        let at = end.min(now);
        let in_window: Vec<&Stay> = room
            .stays
            .iter()
            .filter(|s| start <= s.join && s.join <= at)
            .collect();
        let (stage, mut viewers): (Vec<&Stay>, Vec<&Stay>) =
            in_window.into_iter().partition(|s| s.on_stage);
        if fault.duplicate_rows {
            // The first three records listed again at the end: on a later page, or twice on
            // the one page; `count` counts the rows sent.
            let again: Vec<&Stay> = viewers.iter().take(3).copied().collect();
            viewers.extend(again);
        }
        let rows: Vec<&Stay> = viewers
            .iter()
            .skip((page - 1).saturating_mul(PAGE))
            .take(PAGE)
            .copied()
            .collect();
        if (rows.is_empty() && (page > 1 || stage.is_empty())) || fault.lose_rows {
            return error(4105, "no data", &fault);
        }
        let rows = if fault.empty_later_pages && page > 1 {
            Vec::new()
        } else {
            rows
        };
        let strings = fault.code_as_string;
        let list = |stays: &[&Stay]| -> Value {
            if fault.null_list {
                Value::Null
            } else {
                stays
                    .iter()
                    .map(|s| record(&room.serial, s, now, &fault))
                    .collect()
            }
        };
        let count = viewers.len() as i64;
        let count = if fault.total_larger {
            count + 5
        } else if fault.total_smaller && count > 1 {
            count - 1
        } else {
            count
        };
        let mut body = json!({
            "result": num(0, strings),
            "count": num(count, strings),
            "logininfo": list(&rows),
        });
        if page == 1 {
            body["uptablelist"] = list(&stage);
        }
        if let Some(o) = body.as_object_mut() {
            if fault.missing_fields {
                o.remove("count");
            }
            if fault.absent_list {
                o.remove("logininfo");
                o.remove("uptablelist");
            }
        }
        SimResponse::json(200, &body).with_body_faults(&fault)
    }
}

/// A number, or with `strings` a string holding it.
fn num(n: i64, strings: bool) -> Value {
    if strings {
        json!(n.to_string())
    } else {
        json!(n)
    }
}

fn error(code: i64, msg: &str, fault: &Fault) -> SimResponse {
    SimResponse::json(
        200,
        &json!({"result": num(code, fault.code_as_string), "msg": msg}),
    )
}

fn beijing(t: i64) -> String {
    DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// One record as it stands at `now`.
fn record(serial: &str, s: &Stay, now: i64, fault: &Fault) -> Value {
    let strings = fault.code_as_string;
    let left = s.leave <= now;
    let (out, out_text) = if left {
        (s.leave, beijing(s.leave))
    } else {
        (0, String::new())
    };
    let duration = if left { s.leave - s.join } else { now - s.join };
    let mut v = json!({
        "serial": serial,
        "userid": s.user,
        "username": s.name,
        "entertime": beijing(s.join),
        "outtime": out_text,
        "duration": duration.to_string(),
        "terminal": s.terminal.to_string(),
        "terminal_details": s.details.to_string(),
        "starttime": beijing(s.join),
        "endtime": out_text,
        "paytime": duration.to_string(),
        "videotype": "1280*720",
        "userroleid": s.role.to_string(),
        "entertimestamp": num(s.join, strings),
        "outtimestamp": num(out, strings),
        "endtimestamp": num(out, strings),
    });
    let start_field = if fault.missing_fields {
        "startimestamp"
    } else {
        "starttimestamp"
    };
    v[start_field] = num(s.join, strings);
    v
}

/// The exporter's device classes for `terminal`.
fn device(terminal: u8) -> Device {
    match terminal {
        0 => Device::Windows,
        1 => Device::Mac,
        2 => Device::Ios,
        3 => Device::Android,
        4 => Device::Linux,
        _ => Device::Other,
    }
}

/// The exporter's roles for `userroleid`.
fn role(id: u8) -> Role {
    match id {
        0 => Role::Teacher,
        1 => Role::Assistant,
        2 => Role::Student,
        3 => Role::Viewer,
        4 => Role::Inspector,
        _ => Role::Other,
    }
}

/// Users now, peak, accumulated and devices of `stays` over [from, at], by brute force: the
/// distinct users present at every instant where presence can change.
fn brute_force(stays: &[&Stay], from: i64, at: i64) -> Truth {
    let visible: Vec<&&Stay> = stays.iter().filter(|s| s.join <= at).collect();
    let present_at = |t: i64| -> HashSet<&str> {
        visible
            .iter()
            .filter(|s| s.present(t))
            .map(|s| s.user.as_str())
            .collect()
    };
    let mut instants: Vec<i64> = vec![from, at];
    for s in &visible {
        instants.push(s.join);
        instants.push(s.leave);
    }
    instants.retain(|t| from <= *t && *t <= at);
    instants.sort_unstable();
    instants.dedup();
    let peak = instants
        .iter()
        .map(|t| present_at(*t).len() as u64)
        .max()
        .unwrap_or(0);
    let accumulated = visible
        .iter()
        .filter(|s| s.leave > from)
        .map(|s| s.user.as_str())
        .collect::<HashSet<_>>()
        .len() as u64;
    let mut devices: DeviceCounts = Device::ALL.iter().map(|d| (*d, 0)).collect();
    let pairs: HashSet<(&str, Device)> = visible
        .iter()
        .filter(|s| s.present(at))
        .map(|s| (s.user.as_str(), device(s.terminal)))
        .collect();
    for (_, d) in pairs {
        *devices.entry(d).or_default() += 1;
    }
    Truth {
        users: present_at(at).len() as u64,
        peak,
        accumulated,
        devices,
        roles: RoleCounts::new(),
        records: 0,
    }
}

impl Simulator for TalkSim {
    fn vendor(&self) -> &'static str {
        "talkcloud"
    }

    fn handle<'a>(&'a self, req: SimRequest) -> BoxFuture<'a, SimResponse> {
        Box::pin(async move {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let latency = self.faults.get(API).latency;
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            self.answer(&req)
        })
    }

    fn demo_target(&self, endpoint: &str) -> serde_yaml::Value {
        let mut rooms: Vec<Value> = self.rooms[..3].iter().map(|r| json!(r.serial)).collect();
        rooms.extend(
            self.rooms[3..]
                .iter()
                .map(|r| json!({"thirdroomid": r.third})),
        );
        let target = json!({
            "name": "talkcloud-demo",
            "vendor": "talkcloud",
            "interval": "5s",
            "endpoint": endpoint,
            "credentials": {"key": self.key},
            "rooms": rooms,
            "capacity": {"default": 600},
            "max_users": 1000,
            "classes": [{"rooms": "*", "schedule": "0 */10 * * * *", "duration": "5m"}],
        });
        serde_yaml::to_value(target).unwrap_or(serde_yaml::Value::Null)
    }

    fn describe(&self) -> String {
        format!("key={} rooms={}", self.key, self.serials().join(","))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
    fn faults(&self) -> Option<&Faults> {
        Some(&self.faults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_000_000;

    fn post(sim: &TalkSim, form: &[(&str, &str)]) -> (u16, Value) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let r = sim.answer(&SimRequest {
            method: "POST".into(),
            path: PATH.into(),
            query: String::new(),
            headers: Default::default(),
            body: body.into_bytes().into(),
        });
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    fn sim() -> TalkSim {
        let s = TalkSim::at(1, T0);
        s.clock.freeze(T0);
        s
    }

    #[test]
    fn the_big_class_has_over_600_records_by_t0_and_the_same_seed_the_same_classes() {
        let s = sim();
        let t = s.truth("class-big", T0 - 86_400, T0);
        assert!((601..800).contains(&t.records), "{} records", t.records);
        assert_eq!(TalkSim::at(1, T0).rooms, s.rooms);
        assert_eq!(
            s.truth("7100000003", T0 - 86_400, T0),
            Truth {
                roles: Role::CLASS.iter().map(|r| (*r, 0)).collect(),
                devices: Device::ALL.iter().map(|d| (*d, 0)).collect(),
                ..Truth::default()
            }
        );
        let early = s.truth("class-early", T0 - 86_400, T0);
        assert_eq!(early.roles[&Role::Teacher], 0, "the teacher left early");
        assert!(early.users > 0);
        assert!(!s.left_between("class-big", T0, T0 + 600).is_empty());
    }

    #[test]
    fn keys_rooms_and_windows_are_checked() {
        let s = sim();
        let k = s.key().to_string();
        let code = |form: &[(&str, &str)]| post(&s, form).1["result"].clone();
        assert_eq!(code(&[("serial", "7100000001")]), json!(4101));
        assert_eq!(
            code(&[("key", "nope"), ("serial", "7100000001")]),
            json!(4102)
        );
        assert_eq!(code(&[("key", &k), ("serial", "1")]), json!(4007));
        assert_eq!(code(&[("key", &k), ("thirdroomid", "nope")]), json!(4007));
        assert_eq!(code(&[("key", &k)]), json!(-1));
        let start = (T0 - 40 * 86_400).to_string();
        let end = T0.to_string();
        assert_eq!(
            code(&[
                ("key", &k),
                ("serial", "7100000001"),
                ("starttime", &start),
                ("endtime", &end)
            ]),
            json!(-1)
        );
        assert_eq!(code(&[("key", &k), ("serial", "7100000003")]), json!(4105));
        assert_eq!(code(&[("key", &k), ("thirdroomid", "class-big")]), json!(0));
    }

    #[test]
    fn pages_of_200_with_the_stage_on_page_1_then_4105() {
        let s = sim();
        let k = s.key().to_string();
        let start = (T0 - 86_400).to_string();
        let end = T0.to_string();
        let truth = s.truth("class-big", T0 - 86_400, T0);
        let mut rows = 0;
        for page in 1..=5 {
            let p = page.to_string();
            let (status, v) = post(
                &s,
                &[
                    ("key", &k),
                    ("serial", "7100000001"),
                    ("starttime", &start),
                    ("endtime", &end),
                    ("page", &p),
                ],
            );
            assert_eq!(status, 200);
            if page == 5 {
                assert_eq!(v["result"], json!(4105));
                break;
            }
            assert_eq!(v["count"], json!(truth.records));
            let n = v["logininfo"].as_array().map_or(0, Vec::len);
            rows += n;
            assert_eq!(n, if page < 4 { 200 } else { truth.records - 600 });
            assert_eq!(v.get("uptablelist").is_some(), page == 1);
            assert!(
                v["logininfo"][0]["terminal"].is_string(),
                "strings as documented"
            );
            assert!(v["logininfo"][0]["entertimestamp"].is_number());
        }
        assert_eq!(rows, truth.records);
    }

    #[test]
    fn brute_force_counts_distinct_users() {
        let st = |user: &str, join, leave| Stay {
            user: user.into(),
            name: String::new(),
            join,
            leave,
            terminal: 2,
            details: 4,
            role: 3,
            on_stage: false,
        };
        let v = [
            st("a", 0, 10),
            st("a", 5, 20),
            st("b", 10, 30),
            st("c", 30, 40),
        ];
        let refs: Vec<&Stay> = v.iter().collect();
        let t = brute_force(&refs, 0, 35);
        assert_eq!((t.users, t.peak, t.accumulated), (1, 2, 3));
        assert_eq!(t.devices[&Device::Ios], 1);
        let t = brute_force(&refs, 12, 100);
        assert_eq!((t.users, t.peak, t.accumulated), (0, 2, 3));
    }
}

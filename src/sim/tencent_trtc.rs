//! Simulated Tencent Cloud TRTC API (version `2019-07-22`): `DescribeRoomInfo` and
//! `DescribeUserInfo`, from a seeded [`Scenario`].
//!
//! Every answer is HTTP 200 JSON, `{"Response": {..., "RequestId"}}` or
//! `{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`. What it checks, in this order
//! (vendors.md §3):
//!
//! 1. `POST /`, else `UnsupportedProtocol` (this simulator's choice: Tencent also takes GET).
//! 2. The TC3-HMAC-SHA256 signature, with its own code ([`verify`]) at the simulator's clock:
//!    `MissingParameter`, `AuthFailure.SecretIdNotFound`, `AuthFailure.SignatureExpire` (over
//!    300 s of skew) or `AuthFailure.SignatureFailure`.
//! 3. `X-TC-Action` (`MissingParameter`, `InvalidAction`), `X-TC-Version` (`NoSuchVersion`) and
//!    `X-TC-Region` (`UnsupportedRegion`; the four regions the API page lists).
//! 4. 20 QPS per (SecretId, action) → `RequestLimitExceeded`.
//! 5. The [`Fault`] of the action: an error `code`, an HTML page with `http_status`, a `reset`,
//!    a `malformed` (truncated) body, `latency`, `pad_bytes`; on a listing `null_list`,
//!    `empty_later_pages`, `lose_rows`, `missing_fields` (no `Total`, no optional row fields),
//!    `total_larger`, `total_smaller`, `absent_list`, `duplicate_rows` (the first row sent again
//!    on every page) and `code_as_string` (every number of the answer a string); see
//!    `listing_faults` and `page_of`.
//! 6. The parameters: integers must be JSON numbers; `MissingParameter.*`,
//!    `InvalidParameter.SdkAppId`, `InvalidParameter.QueryScaleOversize` (span over 24 h, or 4 h
//!    for `DescribeUserInfo`), `InvalidParameter.StartTsOversize` (more than 14 days back),
//!    `InvalidParameter.PageSizeOversize` (over 100), else `InvalidParameter[.Field]`.
//!
//! `DescribeRoomInfo` lists the calls created in [StartTime, EndTime] (up to now) by creation
//! time; `Total` is the count over all pages. `DescribeUserInfo` lists the sessions of one call
//! that overlap [StartTime, min(EndTime, now)], by join time; a user still in has `LeaveTs` =
//! that end and `Finished` false.

pub mod verify;

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde_json::{json, Map, Value};

use super::scenario::{Call, Room, Scenario, Session, Shape};
use super::{Fault, Faults, SimClock, SimRequest, SimResponse, Simulator, Throttle};
use crate::lock::lock;
use crate::model::{Device, DeviceCounts};
use futures_util::future::BoxFuture;

/// Calls by creation time.
pub const ROOM_INFO: &str = "DescribeRoomInfo";
/// Users of one call.
pub const USER_INFO: &str = "DescribeUserInfo";
/// The API version the simulator serves.
pub const VERSION: &str = "2019-07-22";
/// The region of the demo target.
pub const REGION: &str = "ap-guangzhou";
/// The regions `X-TC-Region` may name (the API page's list).
pub const REGIONS: [&str; 4] = ["ap-beijing", "ap-guangzhou", "ap-mumbai", "ap-singapore"];
const SERVICE: &str = "trtc";
const QPS: f64 = 20.0;
const DAY: i64 = 86_400;
const USER_SPAN: i64 = 4 * 3600;

/// One room in the ground truth of a day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomTruth {
    /// A call is in progress at the evaluation time.
    pub active: bool,
    /// Distinct users present at the evaluation time.
    pub users: u64,
    /// Most distinct users present at one instant of the day so far.
    pub peak: u64,
    /// Distinct users present at some time of the day so far.
    pub accumulated: u64,
}

/// Ground truth of one local day evaluated at one time: per room and for the whole target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Truth {
    /// Rooms with a session or a call in the day so far.
    pub rooms: BTreeMap<String, RoomTruth>,
    /// Distinct users present now, over all rooms.
    pub users: u64,
    /// Peak of distinct users over all rooms together (not a sum of room peaks).
    pub peak: u64,
    /// Distinct users of the day so far, over all rooms.
    pub accumulated: u64,
    /// Distinct users present now on each device (every class present, zeros included).
    pub devices: DeviceCounts,
}

/// The simulated TRTC service.
pub struct TrtcSim {
    /// The application it serves.
    pub sdk_app_id: u64,
    /// The one account's SecretId.
    pub secret_id: String,
    secret_key: Mutex<String>,
    /// Scenario clock (also the gateway's clock for `X-TC-Timestamp`).
    pub clock: SimClock,
    /// Fault switches, by action.
    pub faults: Faults,
    /// Vendor-side throttle.
    pub throttle: Throttle,
    scenario: Mutex<Scenario>,
    requests: Mutex<HashMap<String, u64>>,
    request_no: AtomicU64,
    /// `DescribeUserInfo` for the calls of this room answers this error code.
    failing_room: Mutex<Option<(String, String)>>,
}

/// An error answer: code and message.
struct SimError {
    code: String,
    message: String,
}

fn err(code: &str, message: impl Into<String>) -> SimError {
    SimError {
        code: code.to_string(),
        message: message.into(),
    }
}

impl TrtcSim {
    /// A simulator with `rooms` generated rooms around the clock's now, keys drawn from `seed`.
    pub fn new(seed: u64, rooms: usize) -> Self {
        let clock = SimClock::default();
        let shape = Shape {
            prefix: "meeting-".into(),
            rooms,
            max_users: 40,
            bots: false,
            invisible: false,
            numeric_users: false,
        };
        let scenario = Scenario::generate(seed, clock.now(), &shape);
        let mut rng = fastrand::Rng::with_seed(seed);
        TrtcSim {
            sdk_app_id: 1_400_000_000 + rng.u64(0..100_000_000),
            secret_id: format!("AKID{}", super::random_key(&mut rng, 32)),
            secret_key: Mutex::new(super::random_key(&mut rng, 32)),
            clock,
            faults: Faults::default(),
            throttle: Throttle::default(),
            scenario: Mutex::new(scenario),
            requests: Mutex::new(HashMap::new()),
            request_no: AtomicU64::new(0),
            failing_room: Mutex::new(None),
        }
    }

    /// The SecretKey (tests and the demo configure the exporter with it).
    pub fn secret_key(&self) -> String {
        lock(&self.secret_key).clone()
    }

    /// Replaces the SecretKey (the exporter's then no longer signs right).
    pub fn set_secret_key(&self, k: &str) {
        *lock(&self.secret_key) = k.to_string();
    }

    fn lock(&self) -> MutexGuard<'_, Scenario> {
        lock(&self.scenario)
    }

    /// Adds a call to `room` (creating the room if needed), keeping its calls in start order.
    pub fn add_call(&self, room: &str, call: Call) {
        let mut scenario = self.lock();
        let idx = match scenario.rooms.iter().position(|r| r.id == room) {
            Some(i) => i,
            None => {
                scenario.rooms.push(Room {
                    id: room.to_string(),
                    calls: Vec::new(),
                });
                scenario.rooms.len() - 1
            }
        };
        let calls = &mut scenario.rooms[idx].calls;
        calls.push(call);
        calls.sort_by(|a, b| (a.start, &a.id).cmp(&(b.start, &b.id)));
    }

    /// Ends `room`'s running call now (as the scenario clock says).
    pub fn end_room(&self, room: &str) -> bool {
        let t = self.clock.now();
        self.lock().end_call(room, t)
    }

    /// Every room id, in order.
    pub fn room_ids(&self) -> Vec<String> {
        self.lock().rooms.iter().map(|r| r.id.clone()).collect()
    }

    /// Makes `DescribeUserInfo` for the calls of `room` answer the error `code` (one room
    /// failing while the others answer); `None` clears it.
    pub fn fail_room(&self, failing: Option<(&str, &str)>) {
        *lock(&self.failing_room) =
            failing.map(|(room, code)| (room.to_string(), code.to_string()));
    }

    /// Requests per action answered so far (every status).
    pub fn requests(&self, action: &str) -> u64 {
        lock(&self.requests).get(action).copied().unwrap_or(0)
    }

    /// Ground truth for the local day starting at `day_start`, evaluated at time `at`.
    ///
    /// By brute force: sessions are half-open [join, leave); those overlapping
    /// [day_start, at] count, clamped to it. Peaks are evaluated at every clamped join time.
    pub fn truth(&self, day_start: i64, at: i64) -> Truth {
        let scenario = self.lock();
        let mut rooms = BTreeMap::new();
        let mut all: Vec<&Session> = Vec::new();
        for room in &scenario.rooms {
            let sessions: Vec<&Session> = room
                .calls
                .iter()
                .flat_map(|c| &c.sessions)
                .filter(|s| s.join <= at && s.leave > day_start)
                .collect();
            let call_in_day = room
                .calls
                .iter()
                .any(|c| c.start <= at && c.end > day_start);
            if sessions.is_empty() && !call_in_day {
                continue;
            }
            let (users, peak, accumulated) = figures(&sessions, day_start, at);
            let active = room.calls.iter().any(|c| c.active(at));
            rooms.insert(
                room.id.clone(),
                RoomTruth {
                    active,
                    users,
                    peak,
                    accumulated,
                },
            );
            all.extend(sessions);
        }
        let (users, peak, accumulated) = figures(&all, day_start, at);
        let devices = Device::ALL
            .iter()
            .map(|d| {
                let n = all
                    .iter()
                    .filter(|s| s.device == *d && s.present(at))
                    .map(|s| s.user.as_str())
                    .collect::<HashSet<_>>()
                    .len() as u64;
                (*d, n)
            })
            .collect();
        Truth {
            rooms,
            users,
            peak,
            accumulated,
            devices,
        }
    }

    fn comm_id(&self, room: &str, call: &Call) -> String {
        format!("{}_{room}_{}", self.sdk_app_id, call.start)
    }

    fn request_id(&self) -> String {
        let n = self.request_no.fetch_add(1, Ordering::Relaxed);
        format!(
            "{:08x}-{:04x}-4000-8000-{n:012x}",
            self.sdk_app_id & 0xffff_ffff,
            n >> 48
        )
    }

    fn envelope(&self, mut result: Map<String, Value>) -> SimResponse {
        result.insert("RequestId".into(), json!(self.request_id()));
        SimResponse::json(200, &json!({ "Response": result }))
    }

    fn error(&self, e: &SimError) -> SimResponse {
        SimResponse::json(
            200,
            &json!({"Response": {
                "Error": {"Code": e.code, "Message": e.message},
                "RequestId": self.request_id(),
            }}),
        )
    }

    /// Counts and answers one request (everything but the latency fault, which
    /// [`Simulator::handle`] adds).
    fn respond(&self, req: &SimRequest) -> SimResponse {
        let action = req.header("x-tc-action").unwrap_or_default();
        *lock(&self.requests).entry(action.clone()).or_default() += 1;
        let fault = self.faults.get(&action);
        match self.answer(req, &action, &fault) {
            Ok(resp) => resp,
            Err(e) => self.error(&e),
        }
    }

    fn answer(
        &self,
        req: &SimRequest,
        action: &str,
        fault: &Fault,
    ) -> Result<SimResponse, SimError> {
        if req.method != "POST" || req.path != "/" {
            return Err(err(
                "UnsupportedProtocol",
                "this simulator takes POST / with a JSON body only",
            ));
        }
        let header = |name: &str| req.header(name);
        let incoming = verify::Incoming {
            header: &header,
            body: &req.body,
        };
        let secret_for = |id: &str| (id == self.secret_id).then(|| self.secret_key());
        let secret_id = verify::verify(&incoming, &secret_for, SERVICE, self.clock.now())
            .map_err(|r| err(r.code, r.message))?;
        match action {
            "" => return Err(err("MissingParameter", "The X-TC-Action header is missing")),
            ROOM_INFO | USER_INFO => {}
            _ => return Err(err("InvalidAction", format!("unknown action `{action}`"))),
        }
        match req.header("x-tc-version").as_deref() {
            None => {
                return Err(err(
                    "MissingParameter",
                    "The X-TC-Version header is missing",
                ))
            }
            Some(VERSION) => {}
            Some(v) => return Err(err("NoSuchVersion", format!("unknown version `{v}`"))),
        }
        match req.header("x-tc-region") {
            None => return Err(err("MissingParameter", "The X-TC-Region header is missing")),
            Some(r) if REGIONS.contains(&r.as_str()) => {}
            Some(r) => {
                return Err(err(
                    "UnsupportedRegion",
                    format!("unsupported region `{r}`"),
                ))
            }
        }
        if !self.throttle.allow(&secret_id, action, QPS) {
            return Err(err(
                "RequestLimitExceeded",
                format!("{action}: more than {QPS} requests per second"),
            ));
        }
        if let Some(code) = &fault.code {
            return Err(err(code, "injected fault"));
        }
        if let Some(status) = fault.http_status {
            return Ok(SimResponse::gateway(status));
        }
        if fault.reset {
            return Ok(SimResponse::reset());
        }
        let now = self.clock.now();
        let body = serde_json::from_slice::<Value>(&req.body);
        let later_page = body
            .as_ref()
            .ok()
            .and_then(|b| b.get("PageNumber"))
            .and_then(Value::as_i64)
            .is_some_and(|p| p > 0);
        let result = match body {
            Ok(Value::Object(m)) if action == ROOM_INFO => {
                self.room_info(&Params(m), now, fault.duplicate_rows)
            }
            Ok(Value::Object(m)) => self.user_info(&Params(m), now, fault.duplicate_rows),
            _ => Err(err(
                "InvalidParameter.BodyParamsError",
                "the body is not a JSON object",
            )),
        };
        Ok(match result {
            Ok(r) => self.envelope(listing_faults(r, action, fault, later_page)),
            Err(e) => self.error(&e),
        }
        .with_body_faults(fault))
    }

    fn check_app(&self, p: &Params) -> Result<(), SimError> {
        match p.int("SdkAppId")? {
            None => Err(err("MissingParameter.SdkAppId", "SdkAppId is missing")),
            Some(a) if u64::try_from(a).ok() != Some(self.sdk_app_id) => {
                Err(err("InvalidParameter.SdkAppId", "SdkAppId is incorrect"))
            }
            Some(_) => Ok(()),
        }
    }

    fn room_info(
        &self,
        p: &Params,
        now: i64,
        duplicate: bool,
    ) -> Result<Map<String, Value>, SimError> {
        self.check_app(p)?;
        let (start, end) = p.window(DAY, now)?;
        let room_filter = match p.0.get("RoomId") {
            None => None,
            Some(Value::String(r)) => Some(r.as_str()),
            Some(_) => return Err(err("InvalidParameter", "RoomId must be a String")),
        };
        let (skip, size) = p.page(10)?;
        let scenario = self.lock();
        let mut calls: Vec<(String, &Room, &Call)> = scenario
            .rooms
            .iter()
            .filter(|r| room_filter.is_none_or(|f| f == r.id))
            .flat_map(|r| r.calls.iter().map(move |c| (r, c)))
            .filter(|(_, c)| start <= c.start && c.start <= end && c.start <= now)
            .map(|(r, c)| (self.comm_id(&r.id, c), r, c))
            .collect();
        calls.sort_by(|a, b| (a.2.start, &a.0).cmp(&(b.2.start, &b.0)));
        let total = calls.len();
        let list: Vec<Value> = page_of(calls, skip, size, duplicate)
            .into_iter()
            .map(|(comm_id, room, call)| {
                let finished = call.end <= now;
                let first = call
                    .sessions
                    .iter()
                    .filter(|s| s.join <= now)
                    .min_by(|a, b| (a.join, &a.user).cmp(&(b.join, &b.user)))
                    .map(|s| s.user.clone())
                    .unwrap_or_default();
                json!({
                    "CommId": comm_id, "RoomString": room.id, "CreateTime": call.start,
                    "DestroyTime": if finished { call.end } else { 0 },
                    "IsFinished": finished, "UserId": first,
                })
            })
            .collect();
        let mut out = Map::new();
        out.insert("Total".into(), json!(total));
        out.insert("RoomList".into(), Value::Array(list));
        Ok(out)
    }

    fn user_info(
        &self,
        p: &Params,
        now: i64,
        duplicate: bool,
    ) -> Result<Map<String, Value>, SimError> {
        self.check_app(p)?;
        let comm_id = match p.0.get("CommId") {
            None => return Err(err("MissingParameter.CommId", "CommId is missing")),
            Some(Value::String(c)) if c.is_empty() => {
                return Err(err("MissingParameter.CommId", "CommId is missing"))
            }
            Some(Value::String(c)) => c.as_str(),
            Some(_) => return Err(err("InvalidParameter", "CommId must be a String")),
        };
        if let Some((room, code)) = &*lock(&self.failing_room) {
            if comm_id.contains(&format!("_{room}_")) {
                return Err(err(code, "injected fault for this room"));
            }
        }
        let (start, end) = p.window(USER_SPAN, now)?;
        let users: Option<HashSet<&str>> = match p.0.get("UserIds") {
            None => None,
            Some(Value::Array(a)) if a.len() <= 100 => {
                let ids: Option<HashSet<&str>> = a.iter().map(Value::as_str).collect();
                match ids {
                    Some(ids) if ids.is_empty() => None,
                    Some(ids) => Some(ids),
                    None => return Err(err("InvalidParameter", "UserIds are Strings")),
                }
            }
            Some(_) => {
                return Err(err(
                    "InvalidParameter",
                    "UserIds is an array of 1 to 100 Strings",
                ))
            }
        };
        let (skip, size) = p.page(6)?;
        let at = end.min(now);
        let scenario = self.lock();
        let found = scenario
            .rooms
            .iter()
            .flat_map(|r| r.calls.iter().map(move |c| (r, c)))
            .find(|(r, c)| c.start <= now && self.comm_id(&r.id, c) == comm_id);
        let mut sessions: Vec<(&Room, &Session)> = match found {
            None => Vec::new(),
            Some((room, call)) => call
                .sessions
                .iter()
                .filter(|s| start <= at && s.join <= at && s.leave > start)
                .filter(|s| users.as_ref().is_none_or(|u| u.contains(s.user.as_str())))
                .map(|s| (room, s))
                .collect(),
        };
        sessions.sort_by(|a, b| (a.1.join, &a.1.user).cmp(&(b.1.join, &b.1.user)));
        let total = sessions.len();
        let list: Vec<Value> = page_of(sessions, skip, size, duplicate)
            .into_iter()
            .map(|(room, s)| {
                let still_in = s.leave > at;
                json!({
                    "RoomStr": room.id, "UserId": s.user, "JoinTs": s.join,
                    "LeaveTs": if still_in { at } else { s.leave }, "Finished": !still_in,
                    "DeviceType": device_type(s.device), "SdkVersion": "4.3.14",
                    "ClientIp": client_ip(&s.user),
                })
            })
            .collect();
        let mut out = Map::new();
        out.insert("Total".into(), json!(total));
        out.insert("UserList".into(), Value::Array(list));
        Ok(out)
    }
}

/// One page of a listing: `size` rows from `skip`. With the `duplicate_rows` fault, the
/// listing's first row is sent once more at the end of every page: twice on the first page,
/// again on each later one (and alone on a page past the end).
fn page_of<T: Clone>(all: Vec<T>, skip: usize, size: usize, duplicate: bool) -> Vec<T> {
    let again = all.first().cloned().filter(|_| duplicate);
    let mut page: Vec<T> = all.into_iter().skip(skip).take(size).collect();
    page.extend(again);
    page
}

/// The listing faults on an answer (`Total` and `RoomList` or `UserList`): `lose_rows` (an empty
/// list, `Total` 0), `empty_later_pages` (pages after the first empty, `Total` kept),
/// `null_list` (the list null, `Total` kept), `missing_fields` (no `Total`, and the optional
/// fields of each row left out), `total_larger` (`Total` 3 above the rows of all pages),
/// `total_smaller` (`Total` one below them, never below 1), `absent_list` (the list key left
/// out, `Total` kept) and `code_as_string` (every number a string).
fn listing_faults(
    mut r: Map<String, Value>,
    action: &str,
    fault: &Fault,
    later_page: bool,
) -> Map<String, Value> {
    let field = if action == ROOM_INFO {
        "RoomList"
    } else {
        "UserList"
    };
    if fault.lose_rows {
        r.insert("Total".into(), json!(0));
        r.insert(field.into(), json!([]));
    }
    if fault.empty_later_pages && later_page {
        r.insert(field.into(), json!([]));
    }
    if fault.missing_fields {
        r.remove("Total");
        if let Some(Value::Array(rows)) = r.get_mut(field) {
            for row in rows.iter_mut().filter_map(Value::as_object_mut) {
                for optional in ["DeviceType", "SdkVersion", "ClientIp", "RoomStr", "UserId"] {
                    if action == USER_INFO && optional == "UserId" {
                        continue;
                    }
                    row.remove(optional);
                }
                if row.get("DestroyTime") == Some(&json!(0)) {
                    row.remove("DestroyTime");
                }
            }
        }
    }
    if let Some(Value::Number(n)) = r.get("Total") {
        let total = n.as_u64().unwrap_or(0);
        if fault.total_larger {
            r.insert("Total".into(), json!(total + 3));
        } else if fault.total_smaller && total >= 2 {
            r.insert("Total".into(), json!(total - 1));
        }
    }
    if fault.code_as_string {
        fn strings(v: &mut Value) {
            match v {
                Value::Number(n) => *v = Value::String(n.to_string()),
                Value::Array(a) => a.iter_mut().for_each(strings),
                Value::Object(o) => o.values_mut().for_each(strings),
                _ => {}
            }
        }
        for v in r.values_mut() {
            strings(v);
        }
    }
    if fault.null_list {
        r.insert(field.into(), Value::Null);
    }
    if fault.absent_list {
        r.remove(field);
    }
    r
}

/// Distinct users present at `at`, peak of distinct users at any clamped join time, and
/// distinct users in all, of sessions already known to overlap [day_start, at].
///
/// Brute force, with two economies that change no result: users are numbered so that counting
/// the distinct ones at an instant is a pass over stamps, and a span present at `t` (join ≤ t <
/// leave, leave − join ≤ the longest span) joined within (t − longest, t], so only those are
/// looked at.
fn figures(sessions: &[&Session], day_start: i64, at: i64) -> (u64, u64, u64) {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut spans: Vec<(i64, i64, usize)> = sessions
        .iter()
        .map(|s| {
            let next = ids.len();
            let id = *ids.entry(s.user.as_str()).or_insert(next);
            (s.join.max(day_start), s.leave, id)
        })
        .collect();
    spans.sort_unstable();
    let longest = spans.iter().map(|(j, l, _)| l - j).max().unwrap_or(0);
    let mut stamp = vec![usize::MAX; ids.len()];
    let mut present = |t: i64, mark: usize| -> u64 {
        let lo = spans.partition_point(|s| s.0 <= t - longest);
        let hi = spans.partition_point(|s| s.0 <= t);
        let mut n = 0;
        for &(_, leave, id) in &spans[lo..hi] {
            if t < leave && stamp[id] != mark {
                stamp[id] = mark;
                n += 1;
            }
        }
        n
    };
    let mut peak = 0;
    for (mark, &(t, _, _)) in spans.iter().enumerate() {
        if mark == 0 || spans[mark - 1].0 != t {
            peak = peak.max(present(t, mark));
        }
    }
    let now = present(at, spans.len());
    (now, peak, ids.len() as u64)
}

/// The JSON body's parameters.
struct Params(Map<String, Value>);

impl Params {
    /// An Integer parameter: a JSON integer, nothing else (Tencent is strict).
    fn int(&self, k: &str) -> Result<Option<i64>, SimError> {
        match self.0.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| err("InvalidParameter", format!("{k} must be an Integer"))),
        }
    }

    /// `StartTime` and `EndTime`: at most `span` apart, at most 14 days back.
    fn window(&self, span: i64, now: i64) -> Result<(i64, i64), SimError> {
        let start = self
            .int("StartTime")?
            .ok_or_else(|| err("MissingParameter.StartTs", "StartTime is missing"))?;
        let end = self
            .int("EndTime")?
            .ok_or_else(|| err("MissingParameter.EndTs", "EndTime is missing"))?;
        if end < start {
            return Err(err("InvalidParameter", "EndTime is before StartTime"));
        }
        if end.saturating_sub(start) > span {
            return Err(err(
                "InvalidParameter.QueryScaleOversize",
                format!("the query period exceeds {span} s"),
            ));
        }
        if start < now - 14 * DAY {
            return Err(err(
                "InvalidParameter.StartTsOversize",
                "StartTime is more than 14 days back",
            ));
        }
        Ok((start, end))
    }

    /// `PageNumber` (from 0) and `PageSize` (1 to 100): (entries to skip, page size).
    fn page(&self, default_size: i64) -> Result<(usize, usize), SimError> {
        let number = self.int("PageNumber")?.unwrap_or(0);
        let size = self.int("PageSize")?.unwrap_or(default_size);
        if number < 0 {
            return Err(err("InvalidParameter.PageNumber", "PageNumber is from 0"));
        }
        if size < 1 {
            return Err(err("InvalidParameter.PageSize", "PageSize is 1 to 100"));
        }
        if size > 100 {
            return Err(err(
                "InvalidParameter.PageSizeOversize",
                "PageSize exceeds 100",
            ));
        }
        let number = usize::try_from(number).unwrap_or(usize::MAX);
        let size = usize::try_from(size).unwrap_or(100);
        Ok((number.saturating_mul(size), size))
    }
}

/// `DeviceType` of a session: OS names; nothing for other devices, as Tencent's examples.
fn device_type(d: Device) -> &'static str {
    match d {
        Device::Ios => "iOS",
        Device::Android => "Android",
        Device::Windows => "Windows",
        Device::Mac => "Mac",
        Device::Linux => "Linux",
        Device::Web => "Web",
        Device::Other => "",
    }
}

/// A stable private address per user.
fn client_ip(user: &str) -> String {
    let h = user.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    });
    format!("10.0.0.{}", 1 + h % 254)
}

impl Simulator for TrtcSim {
    fn vendor(&self) -> &'static str {
        "tencent_trtc"
    }

    fn handle<'a>(&'a self, req: SimRequest) -> BoxFuture<'a, SimResponse> {
        Box::pin(async move {
            let action = req.header("x-tc-action").unwrap_or_default();
            let latency = self.faults.get(&action).latency;
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            self.respond(&req)
        })
    }

    fn demo_target(&self, endpoint: &str) -> serde_yaml::Value {
        let target = json!({
            "name": "trtc-demo",
            "vendor": "tencent_trtc",
            "interval": "10s",
            "endpoint": endpoint,
            "sdk_app_id": self.sdk_app_id,
            "region": REGION,
            "credentials": {
                "secret_id": self.secret_id,
                "secret_key": self.secret_key(),
            },
            "capacity": {"default": 30},
        });
        serde_yaml::to_value(target).unwrap_or(serde_yaml::Value::Null)
    }

    fn describe(&self) -> String {
        format!(
            "sdk_app_id={} secret_id={} secret_key={}",
            self.sdk_app_id,
            self.secret_id,
            self.secret_key()
        )
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
    fn faults(&self) -> Option<&Faults> {
        Some(&self.faults)
    }
}

#[cfg(test)]
mod tests;

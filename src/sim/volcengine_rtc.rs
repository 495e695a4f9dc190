//! Simulated Volcengine RTC OpenAPI: `GetRoomOnlineUsers` (2023-11-01), `QueryOnlineStatus`
//! (2020-12-01) and `ListRoomInfo` (2023-11-01), from a seeded [`Scenario`].
//!
//! What it checks and answers, in this order (vendors.md §2):
//!
//! 1. The V4 signature, with its own code ([`verify`]) at the simulator's clock: a skewed
//!    [`SimClock`] gives `InvalidTimestamp`. Gateway errors carry their HTTP status (400 / 401).
//! 2. `Action` and `Version` in the query: missing → `MissingParameter` (400); an unknown pair →
//!    `InvalidActionOrVersion` (400; the code and status are this simulator's choice,
//!    unverified).
//! 3. The rate limit per (access key, API): `GetRoomOnlineUsers` 40 QPS, with `Property=true`
//!    1 QPS (its own bucket), `QueryOnlineStatus` 100 QPS, `ListRoomInfo` 10 QPS; over it →
//!    HTTP 429 `FlowLimitExceeded` (CodeN 100018, unverified).
//! 4. The [`Fault`] of the API (`GetRoomOnlineUsers.Property` for `Property=true` requests,
//!    `GetRoomOnlineUsers` for the others): an error `code` (with the HTTP status the code has), an HTML
//!    page with `http_status`, a `malformed` (truncated) body, `latency`, `pad_bytes`, a
//!    `reset`; `null_list` (the user lists or `RoomList` null, totals kept), `missing_fields`
//!    (no `TotalInvisibleUser`) and `code_as_string` (those totals as strings; Volcengine
//!    codes are strings anyway); `total_larger`, `total_smaller`, `duplicate_rows` and
//!    `absent_list` as `result_faults` says. `GetRoomOnlineUsers` has no pages and an empty
//!    room is a valid answer, so `empty_later_pages` and `lose_rows` do nothing here.
//! 5. The API itself; business errors are `MissingParameter` or `InvalidParameter.<Field>`
//!    (HTTP 400, CodeN 0: unverified).
//!
//! `Property=true` answers use the documentation example's spelling (`RoomExist`, `UserID`),
//! list at most 200 users (visible first) and mark bots with `MediaProcessingType`;
//! `Property=false` lists at most 10 000 invisible users (`TotalInvisibleUser` is the true
//! count). `QueryOnlineStatus` knows the platforms `Android`, `iOS` and `Web` only: desktop and
//! other devices show as `Web`. `ListRoomInfo` lists the calls created in [StartTime, EndTime]
//! (up to now) by creation time, clamps a span over 24 h to 24 h and refuses a `StartTime` more
//! than 14 days back.
//!
//! Besides the generated rooms, the scenario has three rooms whose call started 26 h, 3 days
//! and 9 days before the start and still runs (`long-*`: for discovery, created before any
//! local midnight of today), one whose call ended two days ago (`old-001`), and three users
//! online outside every room (the "lobby").

pub mod verify;

use std::any::Any;
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat};
use serde_json::{json, Value};

use super::scenario::{Call, Room, Scenario, Session, Shape};
use super::{Fault, Faults, SimClock, SimRequest, SimResponse, Simulator, Throttle};
use crate::lock::lock;
use crate::model::{Device, DeviceCounts};
use futures_util::future::BoxFuture;

/// Users in one room.
pub const GET_ROOM: &str = "GetRoomOnlineUsers";
/// The throttle bucket of `GetRoomOnlineUsers` with `Property=true`.
pub const GET_ROOM_PROPERTY: &str = "GetRoomOnlineUsers.Property";
/// Online status of user ids.
pub const QUERY_ONLINE: &str = "QueryOnlineStatus";
/// Calls by creation time.
pub const LIST_ROOMS: &str = "ListRoomInfo";
/// The signing region the simulator expects.
pub const REGION: &str = "cn-north-1";
const SERVICE: &str = "rtc";
const ROOM_VERSION: &str = "2023-11-01";
const ONLINE_VERSION: &str = "2020-12-01";
/// Users a `Property=true` answer lists at most (visible first).
pub const PROPERTY_CAP: usize = 200;
/// Invisible user ids a `Property=false` answer lists at most.
pub const INVISIBLE_CAP: usize = 10_000;
const DAY: i64 = 86_400;

/// One room as the exporter should show it: bots left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomTruth {
    /// Room id.
    pub room: String,
    /// A call is in progress.
    pub active: bool,
    /// People in the room now (visible + invisible, bots left out).
    pub users: u64,
    /// Invisible people now (bots left out).
    pub invisible: u64,
    /// Bots in the room now.
    pub bots: u64,
}

/// The simulated Volcengine RTC service.
pub struct VolcSim {
    /// The application id (digits, so `QueryOnlineStatus` gets it as a number).
    pub app_id: String,
    /// The one account's access key id.
    pub access_key_id: String,
    secret_access_key: String,
    /// Scenario clock (also the gateway's clock for `X-Date`).
    pub clock: SimClock,
    /// Fault switches, by API name.
    pub faults: Faults,
    /// Vendor-side throttle.
    pub throttle: Throttle,
    t0: i64,
    scenario: Mutex<Scenario>,
    /// Users online outside every room, with their connections' devices.
    lobby: Vec<(String, Vec<Device>)>,
    requests: AtomicU64,
}

/// A generated scenario's shape for `rooms` rooms: bots, invisible users, numeric user ids.
pub fn shape(rooms: usize) -> Shape {
    Shape {
        prefix: "room-".into(),
        rooms,
        max_users: 30,
        bots: true,
        invisible: true,
        numeric_users: true,
    }
}

impl VolcSim {
    /// A simulator with `rooms` generated rooms (plus the long-running and old ones), keys drawn
    /// from `seed`.
    pub fn new(seed: u64, rooms: usize) -> Self {
        Self::with_shape(seed, &shape(rooms))
    }

    /// A simulator with rooms of the given shape (plus the long-running and old ones).
    pub fn with_shape(seed: u64, shape: &Shape) -> Self {
        let t0 = chrono::Utc::now().timestamp();
        let mut scenario = Scenario::generate(seed, t0, shape);
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x766f_6c63);
        scenario.rooms.extend(extra_rooms(t0, &mut rng));
        Self::from_scenario(seed, t0, scenario)
    }

    /// A simulator serving `scenario` as it is (`t0`: the time it was made around).
    pub fn from_scenario(seed: u64, t0: i64, scenario: Scenario) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let app_id = format!("{}", rng.u64(100_000_000_000..1_000_000_000_000));
        let access_key_id = format!("AKLT{}", super::random_key(&mut rng, 32));
        let secret_access_key = super::random_key(&mut rng, 40);
        let lobby = (1..=3)
            .map(|n| {
                let devices = match n {
                    1 => vec![Device::Android],
                    2 => vec![Device::Ios, Device::Web],
                    _ => vec![Device::Mac],
                };
                (format!("{}", 800_000 + n), devices)
            })
            .collect();
        let clock = SimClock::default();
        VolcSim {
            app_id,
            access_key_id,
            secret_access_key,
            clock,
            faults: Faults::default(),
            throttle: Throttle::default(),
            t0,
            scenario: Mutex::new(scenario),
            lobby,
            requests: AtomicU64::new(0),
        }
    }

    /// The secret access key (tests and the demo configure the exporter with it).
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The time the scenario was generated around.
    pub fn t0(&self) -> i64 {
        self.t0
    }

    /// Requests refused by the throttle so far.
    pub fn refused(&self) -> u64 {
        self.throttle.refused()
    }

    /// Every room id, in order.
    pub fn room_ids(&self) -> Vec<String> {
        self.lock().rooms.iter().map(|r| r.id.clone()).collect()
    }

    /// The generated rooms (a demo or test lists them under `rooms:`).
    pub fn generated_rooms(&self) -> Vec<String> {
        self.room_ids()
            .into_iter()
            .filter(|r| r.starts_with("room-"))
            .collect()
    }

    /// Rooms whose running call was created more than a day ago (found by discovery only).
    pub fn long_running_rooms(&self) -> Vec<String> {
        let now = self.clock.now();
        self.lock()
            .rooms
            .iter()
            .filter(|r| r.active_call(now).is_some_and(|c| c.start < now - DAY))
            .map(|r| r.id.clone())
            .collect()
    }

    /// Ends `room`'s running call now.
    pub fn end_room(&self, room: &str) -> bool {
        let t = self.clock.now();
        self.lock().end_call(room, t)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Scenario> {
        lock(&self.scenario)
    }

    /// Ground truth of one room now.
    pub fn room_truth(&self, room: &str) -> RoomTruth {
        let (visible, invisible) = self.present(room, self.clock.now()).unwrap_or_default();
        let bots = invisible
            .iter()
            .chain(&visible)
            .filter(|s| s.bot.is_some())
            .count() as u64;
        let people = |l: &[Session]| l.iter().filter(|s| s.bot.is_none()).count() as u64;
        RoomTruth {
            room: room.to_string(),
            active: self.present(room, self.clock.now()).is_some(),
            users: people(&visible) + people(&invisible),
            invisible: people(&invisible),
            bots,
        }
    }

    /// Whether a user is online now (in a running call or in the lobby).
    pub fn online(&self, user: &str) -> bool {
        !self.connections(user, self.clock.now()).is_empty()
    }

    /// Watched ids for a demo or test: three in a room now, two in the lobby, two unknown.
    pub fn watch_candidates(&self) -> Vec<String> {
        let now = self.clock.now();
        let mut out: Vec<String> = {
            let scenario = self.lock();
            scenario
                .rooms
                .iter()
                .filter_map(|r| r.active_call(now))
                .flat_map(|c| c.present(now))
                .filter(|s| s.bot.is_none())
                .map(|s| s.user.clone())
                .take(3)
                .collect()
        };
        out.extend(self.lobby.iter().take(2).map(|(u, _)| u.clone()));
        out.extend(["99999001".to_string(), "99999002".to_string()]);
        out
    }

    /// The device figures the exporter should show once each of `rooms` was refreshed: people
    /// by device as the `Property=true` answers list them, plus the online users of `watched`
    /// listed in none of them, once per device class of their connections.
    pub fn device_truth(&self, rooms: &[String], watched: &[String]) -> DeviceCounts {
        let now = self.clock.now();
        let mut counts: DeviceCounts = Device::ALL.iter().map(|d| (*d, 0)).collect();
        let mut people = HashSet::new();
        for room in rooms {
            let Some((visible, invisible)) = self.present(room, now) else {
                continue;
            };
            let mut in_room = HashSet::new();
            for (s, _) in property_listing(&visible, &invisible, 0) {
                if s.bot.is_none() && in_room.insert(s.user.clone()) {
                    *counts.entry(s.device).or_default() += 1;
                }
            }
            people.extend(in_room);
        }
        for user in watched {
            if people.contains(user) {
                continue;
            }
            let classes: BTreeSet<Device> = self
                .connections(user, now)
                .iter()
                .map(|d| Device::from_name(platform(*d)))
                .collect();
            for d in classes {
                *counts.entry(d).or_default() += 1;
            }
        }
        counts
    }

    /// Visible and invisible sessions present in `room` at `t`, or `None` if no call runs.
    fn present(&self, room: &str, t: i64) -> Option<(Vec<Session>, Vec<Session>)> {
        let scenario = self.lock();
        let call = scenario.room(room)?.active_call(t)?;
        let (invisible, visible) = call.present(t).cloned().partition(|s| s.invisible);
        Some((visible, invisible))
    }

    /// The devices of a user's connections at `t`.
    fn connections(&self, user: &str, t: i64) -> Vec<Device> {
        if let Some((_, devices)) = self.lobby.iter().find(|(u, _)| u == user) {
            return devices.clone();
        }
        let scenario = self.lock();
        scenario
            .rooms
            .iter()
            .filter_map(|r| r.active_call(t))
            .flat_map(|c| c.present(t))
            .filter(|s| s.user == user && s.bot.is_none())
            .map(|s| s.device)
            .collect()
    }

    fn request_id(&self) -> String {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        format!("{}{n:012X}", self.app_id)
    }

    fn envelope(&self, action: &str, version: &str, result: Value) -> SimResponse {
        SimResponse::json(
            200,
            &json!({
                "ResponseMetadata": {"RequestId": self.request_id(), "Action": action,
                    "Version": version, "Service": SERVICE, "Region": REGION},
                "Result": result,
            }),
        )
    }

    fn error(&self, action: &str, version: &str, e: &SimError) -> SimResponse {
        SimResponse::json(
            e.status,
            &json!({
                "ResponseMetadata": {"RequestId": self.request_id(), "Action": action,
                    "Version": version, "Service": SERVICE, "Region": REGION,
                    "Error": {"CodeN": e.code_n, "Code": e.code, "Message": e.message}},
            }),
        )
    }

    fn answer(&self, req: &SimRequest, query: &[(String, String)], fault: &Fault) -> SimResponse {
        let get = |k: &str| param(query, k);
        let action = get("Action").unwrap_or_default();
        let version = get("Version").unwrap_or_default();
        let fail = |e: SimError| self.error(action, version, &e);

        let header = |name: &str| req.header(name);
        let incoming = verify::Incoming {
            method: &req.method,
            path: &req.path,
            raw_query: &req.query,
            header: &header,
            body: &req.body,
        };
        let secret_for =
            |ak: &str| (ak == self.access_key_id).then(|| self.secret_access_key.clone());
        let now = self.clock.now();
        let ak = match verify::verify(&incoming, &secret_for, REGION, SERVICE, now) {
            Ok(ak) => ak,
            Err(r) => {
                return fail(SimError {
                    status: r.http_status,
                    code: r.code.to_string(),
                    code_n: r.code_n,
                    message: r.message,
                })
            }
        };
        if action.is_empty() || version.is_empty() {
            return fail(SimError::new(
                "MissingParameter",
                "Action and Version are required in the query",
            ));
        }
        let property = match get("Property").map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return fail(SimError::new(
                    "InvalidParameter.Property",
                    "Property must be true or false",
                ))
            }
        };
        let (bucket, qps) = match (action, version) {
            (GET_ROOM, ROOM_VERSION) if property => (GET_ROOM_PROPERTY, 1.0),
            (GET_ROOM, ROOM_VERSION) => (GET_ROOM, 40.0),
            (QUERY_ONLINE, ONLINE_VERSION) => (QUERY_ONLINE, 100.0),
            (LIST_ROOMS, ROOM_VERSION) => (LIST_ROOMS, 10.0),
            _ => {
                return fail(SimError::new(
                    "InvalidActionOrVersion",
                    &format!("unknown Action {action} or Version {version}"),
                ))
            }
        };
        if !self.throttle.allow(&ak, bucket, qps) {
            return fail(SimError::new(
                "FlowLimitExceeded",
                &format!("{bucket}: more than {qps} requests per second"),
            ));
        }
        if let Some(code) = &fault.code {
            return fail(SimError::new(code, "injected fault"));
        }
        if let Some(status) = fault.http_status {
            return SimResponse::gateway(status);
        }
        if fault.reset {
            return SimResponse::reset();
        }
        let result = match action {
            GET_ROOM => self.get_room(query, property, now),
            QUERY_ONLINE => self.query_online(req, now),
            _ => self.list_rooms(query, now),
        };
        match result {
            Ok(v) => self.envelope(action, version, result_faults(v, fault)),
            Err(e) => fail(e),
        }
        .with_body_faults(fault)
    }

    fn check_app(&self, app: Option<&str>) -> Result<(), SimError> {
        match app {
            None | Some("") => Err(SimError::new("MissingParameter", "AppId is required")),
            Some(a) if a != self.app_id => {
                Err(SimError::new("InvalidParameter.AppId", "unknown AppId"))
            }
            Some(_) => Ok(()),
        }
    }

    fn get_room(
        &self,
        query: &[(String, String)],
        property: bool,
        now: i64,
    ) -> Result<Value, SimError> {
        let get = |k: &str| param(query, k);
        self.check_app(get("AppId"))?;
        let room = match get("RoomId") {
            None | Some("") => return Err(SimError::new("MissingParameter", "RoomId is required")),
            Some(r) => r,
        };
        let role = match get("RoleType") {
            None => 0,
            Some(r) => match r.parse::<u8>() {
                Ok(n @ 0..=2) if property => n,
                _ => {
                    return Err(SimError::new(
                        "InvalidParameter.RoleType",
                        "RoleType is 0, 1 or 2, and only with Property=true",
                    ))
                }
            },
        };
        let Some((visible, invisible)) = self.present(room, now) else {
            return Ok(if property {
                json!({"RoomExist": false})
            } else {
                json!({"RoomExists": false})
            });
        };
        if !property {
            let ids = |l: &[Session]| l.iter().map(|s| s.user.clone()).collect::<Vec<_>>();
            let mut invisible_ids = ids(&invisible);
            invisible_ids.truncate(INVISIBLE_CAP);
            return Ok(json!({
                "RoomExists": true,
                "TotalUser": visible.len() + invisible.len(),
                "TotalInvisibleUser": invisible.len(),
                "VisibleUserList": ids(&visible),
                "InvisibleUserList": invisible_ids,
            }));
        }
        let (mut vis, mut inv) = (Vec::new(), Vec::new());
        for (s, hidden) in property_listing(&visible, &invisible, role) {
            let mut user = json!({
                "UserID": s.user,
                "DeviceType": device_type(s.device),
                "PlatformType": if s.device == Device::Web { 2 } else { 1 },
            });
            if let (Some(kind), Value::Object(m)) = (s.bot, &mut user) {
                m.insert("MediaProcessingType".into(), json!(kind));
            }
            if hidden {
                inv.push(user)
            } else {
                vis.push(user)
            }
        }
        Ok(json!({"RoomExist": true, "VisibleUserList": vis, "InvisibleUserList": inv}))
    }

    fn query_online(&self, req: &SimRequest, now: i64) -> Result<Value, SimError> {
        let body: Value = serde_json::from_slice(&req.body)
            .map_err(|_| SimError::new("InvalidParameter", "the body is not a JSON object"))?;
        let app = match body.get("AppId") {
            None => return Err(SimError::new("MissingParameter", "AppId is required")),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => {
                return Err(SimError::new(
                    "InvalidParameter.AppId",
                    "AppId is an integer",
                ))
            }
        };
        self.check_app(Some(&app))?;
        let ids = match body.get("UserIds") {
            None => return Err(SimError::new("MissingParameter", "UserIds is required")),
            Some(Value::Array(a)) => a,
            Some(_) => {
                return Err(SimError::new(
                    "InvalidParameter.UserIds",
                    "UserIds is an array of integers",
                ))
            }
        };
        if ids.len() > 100 || ids.iter().any(|v| v.as_u64().is_none()) {
            return Err(SimError::new(
                "InvalidParameter.UserIds",
                "UserIds: at most 100 integers",
            ));
        }
        let mut results = serde_json::Map::new();
        for id in ids.iter().filter_map(Value::as_u64) {
            let conns = self.connections(&id.to_string(), now);
            if conns.is_empty() {
                continue;
            }
            let list: Vec<Value> = conns
                .iter()
                .enumerate()
                .map(|(n, d)| {
                    json!({"ConnId": format!("conn-{id}-{n}"), "UserId": id,
                           "DeviceId": id * 10 + n as u64, "ClientVersion": 100,
                           "Platform": platform(*d)})
                })
                .collect();
            results.insert(id.to_string(), Value::Array(list));
        }
        let app_n: u64 = app.parse().unwrap_or_default();
        Ok(json!({"AppId": app_n, "QueryOnlineResults": results}))
    }

    fn list_rooms(&self, query: &[(String, String)], now: i64) -> Result<Value, SimError> {
        let get = |k: &str| param(query, k);
        self.check_app(get("AppId"))?;
        let time = |k: &'static str| -> Result<i64, SimError> {
            let v = get(k).ok_or_else(|| SimError::new("MissingParameter", k))?;
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.timestamp())
                .map_err(|_| {
                    SimError::new(
                        &format!("InvalidParameter.{k}"),
                        "RFC 3339 with an offset expected",
                    )
                })
        };
        let (start, end) = (time("StartTime")?, time("EndTime")?);
        if end < start {
            return Err(SimError::new(
                "InvalidParameter.EndTime",
                "EndTime is before StartTime",
            ));
        }
        if start < now - 14 * DAY {
            return Err(SimError::new(
                "InvalidParameter.StartTime",
                "StartTime is more than 14 days back",
            ));
        }
        let end = end.min(start + DAY);
        let num = |k: &'static str, default: u64, max: u64| -> Result<u64, SimError> {
            match get(k) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(n),
                    _ => Err(SimError::new(
                        &format!("InvalidParameter.{k}"),
                        &format!("{k} is 1 to {max}"),
                    )),
                },
            }
        };
        let page = num("PageNum", 1, u64::MAX / 1000)?;
        let size = num("PageSize", 10, 100)?;
        let scenario = self.lock();
        let mut calls: Vec<(&Room, &Call)> = scenario
            .rooms
            .iter()
            .flat_map(|r| r.calls.iter().map(move |c| (r, c)))
            .filter(|(_, c)| c.start >= start && c.start <= end && c.start <= now)
            .collect();
        calls.sort_by(|a, b| (a.1.start, &a.0.id).cmp(&(b.1.start, &b.0.id)));
        let total = calls.len() as u64;
        let list: Vec<Value> = calls
            .iter()
            .skip(((page - 1) * size) as usize)
            .take(size as usize)
            .map(|(r, c)| {
                let finished = c.end <= now;
                json!({
                    "CallId": c.id, "RoomId": r.id, "IsFinished": finished,
                    "CreatedTime": beijing(c.start),
                    "DestroyTime": if finished { beijing(c.end) } else { String::new() },
                    "ActiveUserNum": c.present(now).count(),
                })
            })
            .collect();
        Ok(json!({"Total": total, "HasMore": page * size < total, "RoomList": list}))
    }
}

/// The faults on a `Result`: `null_list` (every documented list null, the totals kept),
/// `missing_fields` (no `TotalInvisibleUser`: the invisible list tells; `TotalUser` is
/// required), `code_as_string` (the totals as strings), and the anomalies (`crate::clouds::Anomaly`) on
/// `Property=false` answers and `ListRoomInfo` pages:
///
/// - `total_larger`: the count above the rows. `Property=false` keeps `TotalUser` (the truth)
///   and leaves one id out of the lists, as the later doc example (`TotalUser` 6, two ids);
///   `ListRoomInfo` declares `Total` + 1.
/// - `total_smaller`: `TotalUser` one below the ids listed (rooms of two or more, so never 0
///   where ids are); `Total` − 1 where it is above 1.
/// - `duplicate_rows`: the first id (or call) listed twice on the page.
/// - `absent_list`: the list whose count says people (calls) are there left out, the count
///   kept.
fn result_faults(mut v: Value, fault: &Fault) -> Value {
    let Value::Object(r) = &mut v else {
        return v;
    };
    for total in ["TotalUser", "TotalInvisibleUser"] {
        if fault.missing_fields && total == "TotalInvisibleUser" {
            r.remove(total);
        } else if fault.code_as_string {
            if let Some(n) = r.get(total).and_then(Value::as_u64) {
                r.insert(total.into(), json!(n.to_string()));
            }
        }
    }
    if r.contains_key("TotalUser") {
        occupancy_faults(r, fault);
    } else if r.contains_key("Total") {
        listing_faults(r, fault);
    }
    if fault.null_list {
        for list in ["VisibleUserList", "InvisibleUserList", "RoomList"] {
            if r.contains_key(list) {
                r.insert(list.into(), Value::Null);
            }
        }
    }
    v
}

/// The length of the list at `key` (0 when it is not a list).
fn list_len(r: &serde_json::Map<String, Value>, key: &str) -> usize {
    r.get(key).and_then(Value::as_array).map_or(0, Vec::len)
}

/// The anomaly faults on a `Property=false` answer (see [`result_faults`]).
fn occupancy_faults(r: &mut serde_json::Map<String, Value>, fault: &Fault) {
    // The list with ids in it: the visible one, else the invisible one.
    let list = if list_len(r, "VisibleUserList") > 0 {
        "VisibleUserList"
    } else {
        "InvisibleUserList"
    };
    if fault.total_larger {
        if let Some(Value::Array(ids)) = r.get_mut(list) {
            ids.pop();
        }
    }
    if fault.total_smaller {
        let ids = list_len(r, "VisibleUserList") + list_len(r, "InvisibleUserList");
        if ids >= 2 {
            let total = r.get("TotalUser").and_then(Value::as_u64).unwrap_or(0);
            r.insert("TotalUser".into(), json!(total.saturating_sub(1)));
        }
    }
    if fault.duplicate_rows {
        if let Some(Value::Array(ids)) = r.get_mut(list) {
            if let Some(first) = ids.first().cloned() {
                ids.push(first);
            }
        }
    }
    if fault.absent_list && list_len(r, list) > 0 {
        r.remove(list);
    }
}

/// The anomaly faults on a `ListRoomInfo` page (see [`result_faults`]).
fn listing_faults(r: &mut serde_json::Map<String, Value>, fault: &Fault) {
    let total = r.get("Total").and_then(Value::as_u64).unwrap_or(0);
    if fault.total_larger {
        r.insert("Total".into(), json!(total + 1));
    }
    if fault.total_smaller && total > 1 {
        r.insert("Total".into(), json!(total - 1));
    }
    if fault.duplicate_rows {
        if let Some(Value::Array(rows)) = r.get_mut("RoomList") {
            if let Some(first) = rows.first().cloned() {
                rows.push(first);
            }
        }
    }
    if fault.absent_list && total > 0 {
        r.remove("RoomList");
    }
}

/// A query parameter (decoded).
fn param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// An error answer.
struct SimError {
    status: u16,
    code: String,
    code_n: u32,
    message: String,
}

impl SimError {
    /// A code with the HTTP status and CodeN this simulator gives it.
    fn new(code: &str, message: &str) -> Self {
        let family = code.split('.').next().unwrap_or(code);
        let (status, code_n) = match family {
            "MissingParameter" => (400, 100002),
            "InvalidTimestamp" => (400, 100006),
            "InvalidAccessKey" => (401, 100009),
            "SignatureDoesNotMatch" => (401, 100010),
            "InternalError" => (500, 100014),
            "FlowLimitExceeded" => (429, 100018),
            // The gateway's per-account throttle (CodeN unverified).
            "AccountFlowLimitExceeded" => (429, 100018),
            "InvalidActionOrVersion" => (400, 100008),
            _ => (400, 0),
        };
        SimError {
            status,
            code: code.to_string(),
            code_n,
            message: message.to_string(),
        }
    }
}

/// What a `Property=true` answer lists: visible users first, at most [`PROPERTY_CAP`] in all;
/// `role` 1 visible only, 2 invisible only. Each with whether it is invisible.
fn property_listing(visible: &[Session], invisible: &[Session], role: u8) -> Vec<(Session, bool)> {
    let vis = visible
        .iter()
        .filter(|_| role != 2)
        .map(|s| (s.clone(), false));
    let inv = invisible
        .iter()
        .filter(|_| role != 1)
        .map(|s| (s.clone(), true));
    vis.chain(inv).take(PROPERTY_CAP).collect()
}

fn device_type(d: Device) -> &'static str {
    match d {
        Device::Ios => "ios",
        Device::Android => "android",
        Device::Windows => "windows",
        Device::Mac => "mac",
        Device::Linux => "linux",
        Device::Web => "web",
        Device::Other => "harmony",
    }
}

/// `QueryOnlineStatus` platforms: Android, iOS and Web only.
fn platform(d: Device) -> &'static str {
    match d {
        Device::Ios => "iOS",
        Device::Android => "Android",
        _ => "Web",
    }
}

fn beijing(t: i64) -> String {
    DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// Rooms for discovery: three calls started 26 h, 3 days and 9 days before `t0` that still
/// run, and one that ended two days ago.
fn extra_rooms(t0: i64, rng: &mut fastrand::Rng) -> Vec<Room> {
    let specs = [
        ("long-001", t0 - 26 * 3600, t0 + 30 * 3600, false),
        ("long-002", t0 - 3 * DAY - 7200, t0 + DAY, true),
        ("long-003", t0 - 9 * DAY, t0 + 2 * DAY, false),
        ("old-001", t0 - 2 * DAY, t0 - 2 * DAY + 3600, false),
    ];
    let mut user = 900_000u64;
    specs
        .iter()
        .map(|(id, start, end, bot)| {
            let mut sessions: Vec<Session> = (0..rng.usize(3..9))
                .map(|_| {
                    user += 1;
                    let join = (*start).max(t0 - rng.i64(60..7200));
                    Session {
                        user: user.to_string(),
                        join,
                        leave: *end,
                        device: [Device::Ios, Device::Android, Device::Windows, Device::Web]
                            [rng.usize(..4)],
                        invisible: rng.u32(..4) == 0,
                        bot: None,
                    }
                })
                .collect();
            if *bot {
                sessions.push(Session {
                    user: format!("bot_23_{id}"),
                    join: *start,
                    leave: *end,
                    device: Device::Linux,
                    invisible: true,
                    bot: Some(23),
                });
            }
            Room {
                id: id.to_string(),
                calls: vec![Call {
                    id: format!("{id}-{start}"),
                    start: *start,
                    end: *end,
                    sessions,
                }],
            }
        })
        .collect()
}

impl Simulator for VolcSim {
    fn vendor(&self) -> &'static str {
        "volcengine_rtc"
    }

    fn handle<'a>(&'a self, req: SimRequest) -> BoxFuture<'a, SimResponse> {
        Box::pin(async move {
            let query: Vec<(String, String)> = form_urlencoded::parse(req.query.as_bytes())
                .into_owned()
                .collect();
            // `GetRoomOnlineUsers.Property` faults only the Property=true requests.
            let property = query
                .iter()
                .any(|(k, v)| k == "Property" && v.eq_ignore_ascii_case("true"));
            let fault = query
                .iter()
                .find(|(k, _)| k == "Action")
                .map(|(_, a)| match a.as_str() {
                    GET_ROOM if property => self.faults.get(GET_ROOM_PROPERTY),
                    _ => self.faults.get(a),
                })
                .unwrap_or_default();
            if !fault.latency.is_zero() {
                tokio::time::sleep(fault.latency).await;
            }
            self.answer(&req, &query, &fault)
        })
    }

    fn demo_target(&self, endpoint: &str) -> serde_yaml::Value {
        let target = json!({
            "name": "volc-demo",
            "vendor": "volcengine_rtc",
            "interval": "5s",
            "endpoint": endpoint,
            "app_id": self.app_id,
            "credentials": {
                "access_key_id": self.access_key_id,
                "secret_access_key": self.secret_access_key,
            },
            "rooms": self.generated_rooms(),
            "devices": true,
            "watch_users": self.watch_candidates(),
            "capacity": {"default": 30},
        });
        serde_yaml::to_value(target).unwrap_or(serde_yaml::Value::Null)
    }

    fn describe(&self) -> String {
        format!(
            "app_id={} access_key_id={} secret_access_key={}",
            self.app_id, self.access_key_id, self.secret_access_key
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
mod tests {
    use super::*;
    use crate::clouds::volcengine_rtc::sign;

    /// Signs a request as a client would (the client's signer: the verifier is independent).
    fn request(
        sim: &VolcSim,
        method: &str,
        query: &[(&str, &str)],
        body: &[u8],
        at: i64,
    ) -> SimRequest {
        let ct = if method == "POST" {
            "application/json"
        } else {
            "application/x-www-form-urlencoded"
        };
        let x_date = sign::x_date(at).unwrap_or_default();
        let s = sign::sign(
            &sign::Request {
                method,
                host: "127.0.0.1:1",
                path: "/",
                query,
                content_type: Some(ct),
                body,
            },
            &sign::Credentials {
                access_key_id: &sim.access_key_id,
                secret_access_key: sim.secret_access_key(),
                region: REGION,
                service: SERVICE,
            },
            &x_date,
        );
        let mut headers = hyper::header::HeaderMap::new();
        for (k, v) in [
            ("host", "127.0.0.1:1".to_string()),
            ("content-type", ct.to_string()),
            ("x-date", s.x_date),
            ("x-content-sha256", s.x_content_sha256),
            ("authorization", s.authorization),
        ] {
            if let (Ok(k), Ok(v)) = (
                hyper::header::HeaderName::from_bytes(k.as_bytes()),
                hyper::header::HeaderValue::from_str(&v),
            ) {
                headers.insert(k, v);
            }
        }
        SimRequest {
            method: method.into(),
            path: "/".into(),
            query: s.canonical_query,
            headers,
            body: bytes::Bytes::copy_from_slice(body),
        }
    }

    fn call(sim: &VolcSim, req: SimRequest) -> (u16, Value) {
        let query: Vec<(String, String)> = form_urlencoded::parse(req.query.as_bytes())
            .into_owned()
            .collect();
        let r = sim.answer(&req, &query, &Fault::default());
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    fn room_query<'a>(
        sim: &'a VolcSim,
        room: &'a str,
        property: &'a str,
    ) -> Vec<(&'a str, &'a str)> {
        vec![
            ("Action", GET_ROOM),
            ("Version", ROOM_VERSION),
            ("AppId", &sim.app_id),
            ("RoomId", room),
            ("Property", property),
        ]
    }

    fn big_room(t0: i64, visible: usize, invisible: usize) -> Scenario {
        let sessions = (0..visible + invisible)
            .map(|n| Session {
                user: (100_000 + n).to_string(),
                join: t0 - 10,
                leave: t0 + 10,
                device: Device::Android,
                invisible: n >= visible,
                bot: None,
            })
            .collect();
        Scenario {
            rooms: vec![Room {
                id: "big".into(),
                calls: vec![Call {
                    id: "c".into(),
                    start: t0 - 60,
                    end: t0 + 60,
                    sessions,
                }],
            }],
        }
    }

    #[test]
    fn property_true_lists_200_visible_first_in_the_doc_spelling() {
        let t0 = 1_800_000_000;
        let sim = VolcSim::from_scenario(1, t0, big_room(t0, 150, 120));
        sim.clock.freeze(t0);
        let (status, v) = call(
            &sim,
            request(&sim, "GET", &room_query(&sim, "big", "true"), b"", t0),
        );
        assert_eq!(status, 200, "{v}");
        let r = &v["Result"];
        assert_eq!(r["RoomExist"], json!(true));
        assert!(r.get("RoomExists").is_none());
        assert_eq!(r["VisibleUserList"].as_array().map(Vec::len), Some(150));
        assert_eq!(r["InvisibleUserList"].as_array().map(Vec::len), Some(50));
        assert!(r["VisibleUserList"][0].get("UserID").is_some());
    }

    #[test]
    fn property_false_caps_invisible_ids_at_10000() {
        let t0 = 1_800_000_000;
        let sim = VolcSim::from_scenario(1, t0, big_room(t0, 2, 10_005));
        sim.clock.freeze(t0);
        let (status, v) = call(
            &sim,
            request(&sim, "GET", &room_query(&sim, "big", "false"), b"", t0),
        );
        assert_eq!(status, 200);
        let r = &v["Result"];
        assert_eq!(r["TotalUser"], json!(10_007));
        assert_eq!(r["TotalInvisibleUser"], json!(10_005));
        assert_eq!(
            r["InvisibleUserList"].as_array().map(Vec::len),
            Some(INVISIBLE_CAP)
        );
        assert_eq!(r["RoomExists"], json!(true));
    }

    #[test]
    fn gateway_errors_and_throttle() {
        let t0 = 1_800_000_000;
        let sim = VolcSim::from_scenario(1, t0, big_room(t0, 1, 0));
        sim.clock.freeze(t0);
        let q = room_query(&sim, "big", "true");
        // Skew: X-Date 901 s off.
        let (status, v) = call(&sim, request(&sim, "GET", &q, b"", t0 - 901));
        assert_eq!(
            (status, &v["ResponseMetadata"]["Error"]["Code"]),
            (400, &json!("InvalidTimestamp"))
        );
        // 1 QPS with Property=true: the second at once is refused with 429.
        let (s1, _) = call(&sim, request(&sim, "GET", &q, b"", t0));
        let (s2, v) = call(&sim, request(&sim, "GET", &q, b"", t0));
        assert_eq!((s1, s2), (200, 429));
        assert_eq!(
            v["ResponseMetadata"]["Error"]["Code"],
            json!("FlowLimitExceeded")
        );
        assert_eq!(sim.refused(), 1);
        // Property=false has its own 40 QPS bucket.
        let (s3, _) = call(
            &sim,
            request(&sim, "GET", &room_query(&sim, "big", "false"), b"", t0),
        );
        assert_eq!(s3, 200);
        // A wrong Version.
        let bad = [
            ("Action", GET_ROOM),
            ("Version", "2020-12-01"),
            ("AppId", &sim.app_id),
        ];
        let (s4, v) = call(&sim, request(&sim, "GET", &bad, b"", t0));
        assert_eq!(
            (s4, &v["ResponseMetadata"]["Error"]["Code"]),
            (400, &json!("InvalidActionOrVersion"))
        );
    }

    #[test]
    fn query_online_status_takes_json_and_lists_online_ids_only() {
        let t0 = 1_800_000_000;
        let sim = VolcSim::from_scenario(1, t0, big_room(t0, 2, 0));
        sim.clock.freeze(t0);
        let q = [("Action", QUERY_ONLINE), ("Version", ONLINE_VERSION)];
        let body = format!(r#"{{"AppId":{},"UserIds":[100000,800002,5]}}"#, sim.app_id);
        let (status, v) = call(&sim, request(&sim, "POST", &q, body.as_bytes(), t0));
        assert_eq!(status, 200, "{v}");
        let results = &v["Result"]["QueryOnlineResults"];
        assert_eq!(results["100000"][0]["Platform"], json!("Android"));
        assert_eq!(results["800002"].as_array().map(Vec::len), Some(2));
        assert!(results.get("5").is_none());
        let ids: Vec<u64> = (0..101).collect();
        let body =
            json!({"AppId": sim.app_id.parse::<u64>().unwrap_or(0), "UserIds": ids}).to_string();
        let (status, v) = call(&sim, request(&sim, "POST", &q, body.as_bytes(), t0));
        assert_eq!(
            (status, &v["ResponseMetadata"]["Error"]["Code"]),
            (400, &json!("InvalidParameter.UserIds"))
        );
    }

    #[test]
    fn list_room_info_pages_by_creation_time() {
        let sim = VolcSim::new(5, 12);
        let t = sim.t0();
        sim.clock.freeze(t);
        let at = |s: i64| beijing(s);
        let (from, to) = (at(t - 10 * DAY), at(t - 8 * DAY));
        let q = [
            ("Action", LIST_ROOMS),
            ("Version", ROOM_VERSION),
            ("AppId", sim.app_id.as_str()),
            ("StartTime", from.as_str()),
            ("EndTime", to.as_str()),
            ("PageNum", "1"),
            ("PageSize", "100"),
        ];
        let (status, v) = call(&sim, request(&sim, "GET", &q, b"", t));
        assert_eq!(status, 200, "{v}");
        // Clamped to 24 h: [t-10d, t-9d] holds long-003 (created at t-9d).
        let list = v["Result"]["RoomList"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(list.len(), 1, "{v}");
        assert_eq!(list[0]["RoomId"], json!("long-003"));
        assert_eq!(list[0]["IsFinished"], json!(false));
        let far = at(t - 15 * DAY);
        let q = [
            ("Action", LIST_ROOMS),
            ("Version", ROOM_VERSION),
            ("AppId", sim.app_id.as_str()),
            ("StartTime", far.as_str()),
            ("EndTime", to.as_str()),
        ];
        let (status, v) = call(&sim, request(&sim, "GET", &q, b"", t));
        assert_eq!(
            (status, &v["ResponseMetadata"]["Error"]["Code"]),
            (400, &json!("InvalidParameter.StartTime"))
        );
        assert_eq!(
            sim.long_running_rooms(),
            ["long-001", "long-002", "long-003"]
        );
    }

    #[test]
    fn truth_leaves_bots_out() {
        let sim = VolcSim::new(9, 20);
        sim.clock.freeze(sim.t0());
        let t = sim.room_truth("long-002");
        assert!(t.active);
        assert_eq!(t.bots, 1);
        let all: u64 = sim.room_ids().iter().map(|r| sim.room_truth(r).bots).sum();
        assert!(all >= 2, "the scenario has bots");
        let devices = sim.device_truth(&sim.room_ids(), &sim.watch_candidates());
        let people: u64 = sim.room_ids().iter().map(|r| sim.room_truth(r).users).sum();
        let lobby = 1 + 2; // 800001: Android; 800002: iOS + Web
        assert_eq!(devices.values().sum::<u64>(), people + lobby);
        assert!(sim.online("800001") && !sim.online("99999001"));
    }
}

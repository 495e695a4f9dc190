//! Simulated ZEGO server API v2: `DescribeUserNum` and `DescribeUserList`, GET with every
//! parameter in the query.
//!
//! Checks the public parameters with code of its own, answering ZEGO's public codes: `AppId`
//! (100000001 not a number, 100000010 not the app's), `SignatureVersion` 2.0 (100000013 /
//! 100000014), a `SignatureNonce` of 16 hex characters, a `Timestamp` within 10 minutes of its
//! clock (100000004 otherwise), and `Signature` = md5 of `AppId`, `SignatureNonce`, the server
//! secret and `Timestamp` as sent, in hex (100000005 otherwise). Answers 206 (rate limit)
//! above 10 requests per second per AppId (each API) and above one `DescribeUserList` per room
//! per second; 2 (input parameter error) for a request it cannot read. `DescribeUserNum`
//! takes 1 to 10 `RoomId[]` (an unknown room counts 0); `DescribeUserList` takes `Limit` 0 to
//! 200 and pages by `Marker` in join order.
//!
//! Rooms are classes that start and end (the seeded scenario). In even-numbered rooms (as if
//! on ZEGO's LiveRoom service) users whose id divides by 4 have `UserRole` 1 (anchor), the
//! rest 2 (audience); odd rooms send 0, as Express rooms do.
//!
//! Fault switches (per API): `latency`, `http_status`, `reset`, `malformed`, `pad_bytes`,
//! `chunked`; `code` answers `{"Code": code}`; `null_list` / `absent_list` (`UserCountList` or
//! `UserList` null or left out); `code_as_string` (codes and counts as strings);
//! `missing_fields` (no `AdminUserCount`, `UserName`, `UserRole`, `RequestId`, and no
//! `Marker` on the last page); `total_larger` (a room's last user left out of its list, the
//! count kept), `total_smaller` (the count one below the users listed) and `duplicate_rows`
//! (a room's first user listed again on the next page, or at the end of a single page).

use std::any::Any;
use std::collections::HashSet;
use std::sync::Mutex;

use md5::{Digest, Md5};
use serde_json::{json, Value};

use super::scenario::{Scenario, Session, Shape};
use super::{Fault, Faults, SimClock, SimRequest, SimResponse, Simulator, Throttle};
use crate::lock::lock;
use futures_util::future::BoxFuture;

/// The API names (fault keys and `Action`).
pub const USER_NUM: &str = "DescribeUserNum";
/// See [`USER_NUM`].
pub const USER_LIST: &str = "DescribeUserList";
const QPS: f64 = 10.0;
const ROOM_QPS: f64 = 1.0;
const RATE_LIMITED: &str = "The rate limit (requests per second) has exceeded the limit.";
/// A room id no class uses: it counts 0.
pub const UNKNOWN_ROOM: &str = "no-such-room";

/// One room as the exporter should show it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomTruth {
    /// Room id.
    pub room: String,
    /// Users now.
    pub users: u64,
    /// Anchors now (LiveRoom rooms).
    pub broadcasters: u64,
}

/// The simulated ZEGO service.
pub struct ZegoSim {
    /// The AppId.
    pub app_id: u32,
    secret: Mutex<String>,
    /// Scenario clock.
    pub clock: SimClock,
    /// Fault switches.
    pub faults: Faults,
    /// Vendor-side throttle.
    pub throttle: Throttle,
    scenario: Mutex<Scenario>,
}

fn is_live(room: &str) -> bool {
    room.rsplit('-')
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n % 2 == 0)
}

fn role(room: &str, user: &str) -> u64 {
    match (is_live(room), user.parse::<u64>().is_ok_and(|n| n % 4 == 0)) {
        (false, _) => 0,
        (true, true) => 1,
        (true, false) => 2,
    }
}

impl ZegoSim {
    /// A simulator with `rooms` classes around now, keys drawn from `seed`.
    pub fn new(seed: u64, rooms: usize) -> Self {
        let clock = SimClock::default();
        let t0 = clock.now();
        Self::at(seed, rooms, t0)
    }

    /// The same around `t0`.
    pub fn at(seed: u64, rooms: usize, t0: i64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let shape = Shape {
            prefix: "class-".into(),
            rooms,
            max_users: 30,
            bots: false,
            invisible: false,
            numeric_users: true,
        };
        ZegoSim {
            app_id: rng.u32(1_000_000_000..=4_000_000_000),
            secret: Mutex::new(super::random_key(&mut rng, 32)),
            clock: SimClock::default(),
            faults: Faults::default(),
            throttle: Throttle::default(),
            scenario: Mutex::new(Scenario::generate(seed, t0, &shape)),
        }
    }

    /// The ServerSecret.
    pub fn secret(&self) -> String {
        lock(&self.secret).clone()
    }

    /// Replaces the ServerSecret (the exporter then signs wrong).
    pub fn set_secret(&self, secret: &str) {
        *lock(&self.secret) = secret.to_string();
    }

    /// Every room of the scenario, and [`UNKNOWN_ROOM`]: what a target should configure.
    pub fn rooms(&self) -> Vec<String> {
        let mut out: Vec<String> = lock(&self.scenario)
            .rooms
            .iter()
            .map(|r| r.id.clone())
            .collect();
        out.push(UNKNOWN_ROOM.to_string());
        out
    }

    /// Ends the class of `room` running now: everyone leaves.
    pub fn end_room(&self, room: &str) -> bool {
        let t = self.clock.now();
        lock(&self.scenario).end_call(room, t)
    }

    /// Who is in `room` at `t`, once each, in join order.
    fn present(&self, room: &str, t: i64) -> Vec<Session> {
        let scenario = lock(&self.scenario);
        let Some(call) = scenario.room(room).and_then(|r| r.active_call(t)) else {
            return Vec::new();
        };
        let mut seen = HashSet::new();
        let mut people: Vec<Session> = call
            .present(t)
            .filter(|s| seen.insert(s.user.clone()))
            .cloned()
            .collect();
        people.sort_by(|a, b| (a.join, &a.user).cmp(&(b.join, &b.user)));
        people
    }

    /// `rooms` at `t`, as the exporter should show them.
    pub fn truth(&self, rooms: &[String], t: i64) -> Vec<RoomTruth> {
        rooms
            .iter()
            .map(|room| {
                let people = self.present(room, t);
                RoomTruth {
                    room: room.clone(),
                    users: people.len() as u64,
                    broadcasters: people.iter().filter(|s| role(room, &s.user) == 1).count() as u64,
                }
            })
            .collect()
    }

    /// The public parameters checked; the error answer otherwise.
    fn check(&self, q: &[(String, String)], fault: &Fault) -> Result<(), SimResponse> {
        let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let err = |code: u64, msg: &str| Err(error(code, msg, fault));
        let Some(app) = get("AppId") else {
            return err(100000001, "AppId field format error");
        };
        if app.parse::<u32>().is_err() {
            return err(100000001, "AppId field format error");
        }
        if app != self.app_id.to_string() {
            return err(100000010, "Failed to get ServerSecret");
        }
        let Some(ts) = get("Timestamp") else {
            return err(100000002, "Timestamp field is empty");
        };
        let Some(nonce) = get("SignatureNonce") else {
            return err(100000008, "SignatureNonce field is empty");
        };
        let Some(sig) = get("Signature") else {
            return err(100000009, "Signature field is empty");
        };
        match get("SignatureVersion") {
            None => return err(100000013, "SignatureVersion field is empty"),
            Some("2.0") => {}
            Some(_) => return err(100000014, "Unsupported SignatureVersion"),
        }
        if nonce.len() != 16 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return err(100000005, "SignatureNonce is not 16 hex characters");
        }
        let Ok(t) = ts.parse::<i64>() else {
            return err(100000003, "Timestamp field format error");
        };
        if (t - self.clock.now()).abs() > 600 {
            return err(100000004, "signature expired");
        }
        let mut h = Md5::new();
        for part in [app, nonce, &self.secret(), ts] {
            h.update(part.as_bytes());
        }
        let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if !sig.eq_ignore_ascii_case(&want) {
            return err(100000005, "signature wrong");
        }
        Ok(())
    }

    fn answer(&self, req: &SimRequest) -> SimResponse {
        let q: Vec<(String, String)> = form_urlencoded::parse(req.query.as_bytes())
            .into_owned()
            .collect();
        let action = q
            .iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let api = match action.as_str() {
            USER_NUM => USER_NUM,
            USER_LIST => USER_LIST,
            "" => return error(100000006, "Action is empty", &Fault::default()),
            _ => return error(100000007, "Unsupported Action", &Fault::default()),
        };
        let fault = self.faults.get(api);
        if req.method != "GET" {
            return error(2, "Input parameter error: GET only", &fault);
        }
        if let Err(r) = self.check(&q, &fault) {
            return r;
        }
        let app = self.app_id.to_string();
        if !self.throttle.allow(&app, api, QPS) {
            return error(206, RATE_LIMITED, &fault);
        }
        if let Some(code) = &fault.code {
            return error(code.parse().unwrap_or(1), "injected fault", &fault);
        }
        if let Some(status) = fault.http_status {
            return SimResponse::gateway(status);
        }
        if fault.reset {
            return SimResponse::reset();
        }
        let now = self.clock.now();
        let data = if api == USER_NUM {
            let rooms: Vec<&str> = q
                .iter()
                .filter(|(k, _)| k == "RoomId[]")
                .map(|(_, v)| v.as_str())
                .collect();
            if rooms.is_empty() || rooms.len() > 10 {
                return error(
                    2,
                    "Input parameter error: RoomId[] takes 1 to 10 rooms",
                    &fault,
                );
            }
            self.counts(&rooms, now, &fault)
        } else {
            let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            let Some(room) = get("RoomId").filter(|r| !r.is_empty()) else {
                return error(2, "Input parameter error: RoomId", &fault);
            };
            let limit = match get("Limit").map(str::parse::<usize>) {
                None => 200,
                Some(Ok(n)) if n <= 200 => n,
                Some(_) => return error(2, "Input parameter error: Limit is 0 to 200", &fault),
            };
            let offset = match get("Marker").filter(|m| !m.is_empty()) {
                None => 0,
                Some(m) => match m.strip_prefix("m").and_then(|n| n.parse::<usize>().ok()) {
                    Some(n) => n,
                    None => return error(2, "Input parameter error: Marker", &fault),
                },
            };
            if !self
                .throttle
                .allow(&app, &format!("{USER_LIST} {room}"), ROOM_QPS)
            {
                return error(206, RATE_LIMITED, &fault);
            }
            self.users(room, offset, limit, now, &fault)
        };
        let mut body = serde_json::Map::new();
        body.insert("Code".into(), num(0, &fault));
        body.insert("Data".into(), data);
        if !fault.missing_fields {
            body.insert("Message".into(), json!("success"));
            body.insert("RequestId".into(), json!(format!("sim-{now}")));
        }
        SimResponse::json(200, &Value::Object(body)).with_body_faults(&fault)
    }

    fn counts(&self, rooms: &[&str], now: i64, fault: &Fault) -> Value {
        let list: Vec<Value> = rooms
            .iter()
            .map(|room| {
                let n = self.present(room, now).len() as u64;
                let n = if fault.total_smaller && n >= 2 {
                    n - 1
                } else {
                    n
                };
                let mut row = serde_json::Map::new();
                row.insert("RoomId".into(), json!(room));
                row.insert("UserCount".into(), num(n, fault));
                if !fault.missing_fields {
                    row.insert("AdminUserCount".into(), num(0, fault));
                }
                Value::Object(row)
            })
            .collect();
        let mut d = serde_json::Map::new();
        if fault.null_list {
            d.insert("UserCountList".into(), Value::Null);
        } else if !fault.absent_list {
            d.insert("UserCountList".into(), Value::Array(list));
        }
        Value::Object(d)
    }

    fn users(&self, room: &str, offset: usize, limit: usize, now: i64, fault: &Fault) -> Value {
        let mut people: Vec<(String, u64)> = self
            .present(room, now)
            .into_iter()
            .map(|s| {
                let r = role(room, &s.user);
                (s.user, r)
            })
            .collect();
        if fault.total_larger {
            people.pop();
        }
        let first = people.first().cloned();
        let mut page: Vec<(String, u64)> =
            people.iter().skip(offset).take(limit).cloned().collect();
        let next = offset + page.len();
        let more = next < people.len() && limit > 0;
        if fault.duplicate_rows {
            if let Some(first) = first {
                // The first user again on the second page, or at the end of a single page.
                if (offset > 0 && offset <= limit) || (offset == 0 && !more) {
                    page.push(first);
                }
            }
        }
        let rows: Vec<Value> = page
            .into_iter()
            .map(|(user, r)| {
                let mut row = serde_json::Map::new();
                row.insert("UserId".into(), json!(user));
                if !fault.missing_fields {
                    row.insert("UserName".into(), json!(format!("user {user}")));
                    row.insert("UserRole".into(), num(r, fault));
                }
                Value::Object(row)
            })
            .collect();
        let mut d = serde_json::Map::new();
        if more {
            d.insert("Marker".into(), json!(format!("m{next}")));
        } else if !fault.missing_fields {
            d.insert("Marker".into(), json!(""));
        }
        let someone = !people.is_empty();
        if fault.null_list && someone {
            d.insert("UserList".into(), Value::Null);
        } else if !(fault.absent_list && someone) {
            d.insert("UserList".into(), Value::Array(rows));
        }
        Value::Object(d)
    }
}

/// A number as sent: a number, or a string with `code_as_string`.
fn num(n: u64, fault: &Fault) -> Value {
    if fault.code_as_string {
        json!(n.to_string())
    } else {
        json!(n)
    }
}

/// An error answer: HTTP 200 with ZEGO's `Code` and `Message`.
fn error(code: u64, message: &str, fault: &Fault) -> SimResponse {
    SimResponse::json(
        200,
        &json!({"Code": num(code, fault), "Message": message, "RequestId": "sim-error"}),
    )
}

/// The API a request goes to.
pub fn api_of(query: &str) -> Option<&'static str> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "Action")
        .and_then(|(_, v)| match v.as_ref() {
            USER_NUM => Some(USER_NUM),
            USER_LIST => Some(USER_LIST),
            _ => None,
        })
}

impl Simulator for ZegoSim {
    fn vendor(&self) -> &'static str {
        "zego"
    }

    fn handle<'a>(&'a self, req: SimRequest) -> BoxFuture<'a, SimResponse> {
        Box::pin(async move {
            if let Some(api) = api_of(&req.query) {
                let latency = self.faults.get(api).latency;
                if !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
            }
            self.answer(&req)
        })
    }

    fn demo_target(&self, endpoint: &str) -> serde_yaml::Value {
        let target = json!({
            "name": "zego-demo",
            "vendor": "zego",
            "interval": "5s",
            "endpoint": endpoint,
            "app_id": self.app_id,
            "credentials": { "server_secret": self.secret() },
            "rooms": self.rooms(),
        });
        serde_yaml::to_value(target).unwrap_or(serde_yaml::Value::Null)
    }

    fn describe(&self) -> String {
        format!(
            "app_id={} server_secret={} rooms={}",
            self.app_id,
            self.secret(),
            self.rooms().join(",")
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

    fn get(sim: &ZegoSim, query: &str) -> Value {
        let r = sim.answer(&SimRequest {
            method: "GET".into(),
            path: "/".into(),
            query: query.into(),
            headers: hyper::header::HeaderMap::new(),
            body: bytes::Bytes::new(),
        });
        serde_json::from_slice(&r.body).unwrap()
    }

    /// The public parameters, signed by a vector computed outside this code (Python's
    /// hashlib; see the client's test): AppId 1234567890, nonce a1b2c3d4e5f60718, secret
    /// 0123456789abcdef0123456789abcdef, Timestamp 1700000000.
    const SIGNED: &str = "AppId=1234567890&SignatureNonce=a1b2c3d4e5f60718&Timestamp=1700000000&SignatureVersion=2.0&Signature=c90a56c08221a571fbf3007d1d7300d6";

    fn vector_sim() -> ZegoSim {
        let mut sim = ZegoSim::at(1, 6, 1_700_000_000);
        sim.app_id = 1_234_567_890;
        sim.set_secret("0123456789abcdef0123456789abcdef");
        sim.clock.freeze(1_700_000_000);
        sim
    }

    #[test]
    fn the_signature_is_verified_against_an_independent_vector() {
        let sim = vector_sim();
        let ok = get(&sim, &format!("Action=DescribeUserNum&RoomId[]=x&{SIGNED}"));
        assert_eq!(ok["Code"], 0, "{ok}");
        assert_eq!(ok["Data"]["UserCountList"][0]["UserCount"], 0);
        let wrong = SIGNED.replace("c90a", "d90a");
        let v = get(&sim, &format!("Action=DescribeUserNum&RoomId[]=x&{wrong}"));
        assert_eq!(v["Code"], 100000005);
        let nonce = SIGNED.replace("a1b2c3d4e5f60718", "a1b2c3d4e5f6071");
        let v = get(&sim, &format!("Action=DescribeUserNum&RoomId[]=x&{nonce}"));
        assert_eq!(v["Code"], 100000005);
        sim.clock.freeze(1_700_000_601);
        let v = get(&sim, &format!("Action=DescribeUserNum&RoomId[]=x&{SIGNED}"));
        assert_eq!(v["Code"], 100000004);
        sim.clock.freeze(1_699_999_400);
        let v = get(&sim, &format!("Action=DescribeUserNum&RoomId[]=x&{SIGNED}"));
        assert_eq!(v["Code"], 0);
        let other = SIGNED.replace("AppId=1234567890", "AppId=1234567891");
        let v = get(&sim, &format!("Action=DescribeUserNum&RoomId[]=x&{other}"));
        assert_eq!(v["Code"], 100000010);
    }

    #[test]
    fn one_list_a_second_per_room_and_ten_rooms_a_count() {
        let sim = vector_sim();
        let q = format!("Action=DescribeUserList&RoomId=class-001&{SIGNED}");
        assert_eq!(get(&sim, &q)["Code"], 0);
        assert_eq!(get(&sim, &q)["Code"], 206);
        let q2 = format!("Action=DescribeUserList&RoomId=class-002&{SIGNED}");
        assert_eq!(get(&sim, &q2)["Code"], 0);
        let eleven: String = (0..11).map(|i| format!("RoomId[]=r{i}&")).collect();
        let v = get(&sim, &format!("Action=DescribeUserNum&{eleven}{SIGNED}"));
        assert_ne!(v["Code"], 0);
    }
}

//! Simulated LiveKit server: the Twirp `RoomService` methods `ListRooms` and
//! `ListParticipants`, JSON in and out.
//!
//! Checks the bearer token with its own code, as the server's middleware and `RoomService` do:
//! HS256 only, `iss` a known API key, the signature under its secret, `exp` required, `nbf` and
//! `exp` with a minute's leeway (all against the simulator's clock); a token that fails any of
//! these is a plain-text 401. Then the grant per call: `roomList` for `ListRooms`, `roomAdmin`
//! with `room` equal to the room asked for `ListParticipants`; without it, Twirp
//! `unauthenticated` "permissions denied". Above 10 requests per second per API key (both
//! methods together): 429 `resource_exhausted`. Answers are protojson as a Twirp server writes
//! them by default: `snake_case` names, every field at its default included, 64-bit integers
//! as strings, enums by name.
//!
//! Rooms come from a seeded scenario whose calls start and end: a room is listed while a call
//! runs and for the 20 s departure timeout after it ended (then with nobody in). Bots of the
//! scenario are agents, egress recorders and ingress streams; every seventh user calls in by
//! SIP; invisible users are hidden participants; a user who left in the last 15 s is still
//! listed, `DISCONNECTED`. A room not listed answers `not_found` to `ListParticipants`.
//!
//! Faults (per method): `code` (a Twirp error with its HTTP status), `http_status`, `reset`,
//! `latency`, `malformed`, `pad_bytes`, `chunked`, `null_list` (`null` for the list),
//! `missing_fields` (defaults skipped and `lowerCamelCase` names, the Twirp server's two JSON
//! options), `code_as_string` (every number as a string), `duplicate_rows` (the first three
//! rows again).

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Mutex;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use super::scenario::{Scenario, Session, Shape};
use super::{Fault, Faults, SimClock, SimRequest, SimResponse, Simulator, Throttle};
use futures_util::future::BoxFuture;

use crate::lock::lock;

/// `ListRooms` (fault key).
pub const LIST_ROOMS: &str = "ListRooms";
/// `ListParticipants` (fault key).
pub const LIST_PARTICIPANTS: &str = "ListParticipants";
/// The path prefix of the room service.
pub const PREFIX: &str = "/twirp/livekit.RoomService/";
const QPS: f64 = 10.0;
/// The server's token leeway.
const LEEWAY: i64 = 60;
/// A room stays listed this long after its last participant left.
const DEPARTURE_TIMEOUT: i64 = 20;
/// A participant who left is still listed, `DISCONNECTED`, this long.
const DISCONNECTED_FOR: i64 = 15;

/// One room as the exporter should show it now (the default participant kinds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomTruth {
    /// Room name.
    pub room: String,
    /// Listed by `ListRooms`.
    pub active: bool,
    /// People in now: standard and SIP participants, hidden ones included.
    pub users: u64,
    /// Hidden people now.
    pub hidden: u64,
}

/// The simulated LiveKit server.
pub struct LkSim {
    /// The one API key.
    pub api_key: String,
    api_secret: Mutex<String>,
    /// Scenario clock (also the token check's clock).
    pub clock: SimClock,
    /// Fault switches, by method.
    pub faults: Faults,
    /// Server-side throttle.
    pub throttle: Throttle,
    scenario: Mutex<Scenario>,
}

/// Who a participant is, as the server lists it.
#[derive(Debug, Clone)]
struct Listed {
    identity: String,
    joined_at: i64,
    state: &'static str,
    kind: &'static str,
    hidden: bool,
}

fn kind_of(s: &Session) -> &'static str {
    match s.bot {
        Some(21) => "EGRESS",
        Some(32) => "INGRESS",
        Some(_) => "AGENT",
        None if s.user.ends_with('7') => "SIP",
        None => "STANDARD",
    }
}

impl LkSim {
    /// A server with `rooms` rooms, keys drawn from `seed`.
    pub fn new(seed: u64, rooms: usize) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let clock = SimClock::default();
        let shape = Shape {
            prefix: "lk-room-".into(),
            rooms,
            max_users: 25,
            bots: true,
            invisible: true,
            numeric_users: false,
        };
        let scenario = Scenario::generate(seed, clock.now(), &shape);
        LkSim {
            api_key: format!("API{}", super::random_key(&mut rng, 12)),
            api_secret: Mutex::new(super::random_key(&mut rng, 43)),
            clock,
            faults: Faults::default(),
            throttle: Throttle::default(),
            scenario: Mutex::new(scenario),
        }
    }

    /// The API secret (tests and the demo configure the exporter with it).
    pub fn api_secret(&self) -> String {
        lock(&self.api_secret).clone()
    }

    /// Replaces the secret (the exporter's tokens then fail).
    pub fn set_api_secret(&self, secret: &str) {
        *lock(&self.api_secret) = secret.to_string();
    }

    /// Ends `room`'s running call now.
    pub fn end_room(&self, room: &str) -> bool {
        let t = self.clock.now();
        lock(&self.scenario).end_call(room, t)
    }

    /// Every room of the scenario.
    pub fn room_names(&self) -> Vec<String> {
        lock(&self.scenario)
            .rooms
            .iter()
            .map(|r| r.id.clone())
            .collect()
    }

    /// The rooms listed at `t`, with who is listed in each.
    fn listing(&self, t: i64) -> BTreeMap<String, (i64, Vec<Listed>)> {
        let scenario = lock(&self.scenario);
        let mut out = BTreeMap::new();
        for room in &scenario.rooms {
            let Some(call) = room
                .calls
                .iter()
                .find(|c| c.start <= t && t < c.end + DEPARTURE_TIMEOUT)
            else {
                continue;
            };
            let mut listed = Vec::new();
            let mut by_user: BTreeMap<&str, Listed> = BTreeMap::new();
            for s in &call.sessions {
                let state = if s.present(t) {
                    if t - s.join < 2 {
                        "JOINING"
                    } else {
                        "ACTIVE"
                    }
                } else if s.leave <= t && t - s.leave < DISCONNECTED_FOR {
                    "DISCONNECTED"
                } else {
                    continue;
                };
                let entry = Listed {
                    identity: s.user.clone(),
                    joined_at: s.join,
                    state,
                    kind: kind_of(s),
                    hidden: s.invisible,
                };
                // One entry per identity: a user back in a room is listed once, present.
                match by_user.get(s.user.as_str()) {
                    Some(e) if e.state != "DISCONNECTED" => {}
                    _ => {
                        by_user.insert(&s.user, entry);
                    }
                }
            }
            listed.extend(by_user.into_values());
            out.insert(room.id.clone(), (call.start, listed));
        }
        out
    }

    /// Every room the exporter should show at `t` (rooms listed now, and rooms of the
    /// scenario not listed as ended).
    pub fn truth(&self, t: i64) -> Vec<RoomTruth> {
        let listing = self.listing(t);
        self.room_names()
            .into_iter()
            .map(|room| match listing.get(&room) {
                Some((_, people)) => {
                    let counted: Vec<&Listed> = people
                        .iter()
                        .filter(|p| {
                            p.state != "DISCONNECTED" && matches!(p.kind, "STANDARD" | "SIP")
                        })
                        .collect();
                    RoomTruth {
                        room,
                        active: true,
                        users: counted.len() as u64,
                        hidden: counted.iter().filter(|p| p.hidden).count() as u64,
                    }
                }
                None => RoomTruth {
                    room,
                    active: false,
                    users: 0,
                    hidden: 0,
                },
            })
            .collect()
    }

    /// The rooms listed at `t`.
    pub fn listed_rooms(&self, t: i64) -> Vec<String> {
        self.listing(t).into_keys().collect()
    }

    fn answer(&self, req: &SimRequest, method: &str, fault: &Fault) -> SimResponse {
        if req.method != "POST" {
            return twirp(
                405,
                "bad_route",
                "unsupported method (only POST is allowed)",
            );
        }
        if !matches!(method, LIST_ROOMS | LIST_PARTICIPANTS) {
            return twirp(404, "bad_route", "no handler for path");
        }
        let now = self.clock.now();
        let claims = match self.verify(req.header("authorization").as_deref(), now) {
            Ok(c) => c,
            Err(text) => return SimResponse::new(401, "text/plain", text.into_bytes()),
        };
        if !self.throttle.allow(&self.api_key, "RoomService", QPS) {
            return twirp(429, "resource_exhausted", "rate limit exceeded");
        }
        if let Some(code) = &fault.code {
            return twirp(status_of(code), code, "injected fault");
        }
        if let Some(status) = fault.http_status {
            return SimResponse::gateway(status);
        }
        if fault.reset {
            return SimResponse::reset();
        }
        let body: Map<String, Value> = match serde_json::from_slice(&req.body) {
            Ok(Value::Object(o)) => o,
            _ => return twirp(400, "malformed", "the json request could not be decoded"),
        };
        let video = claims.get("video").and_then(Value::as_object);
        let flag = |k: &str| video.and_then(|v| v.get(k)).and_then(Value::as_bool) == Some(true);
        let listing = self.listing(now);
        let answer = if method == LIST_ROOMS {
            if !flag("roomList") {
                return twirp(401, "unauthenticated", "permissions denied");
            }
            let names: Option<Vec<String>> = body
                .get("names")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                });
            let mut rooms: Vec<Value> = listing
                .iter()
                .filter(|(name, _)| names.as_ref().is_none_or(|n| n.contains(name)))
                .map(|(name, (start, people))| room_json(name, *start, people))
                .collect();
            if fault.duplicate_rows {
                let again: Vec<Value> = rooms.iter().take(3).cloned().collect();
                rooms.extend(again);
            }
            let list = if fault.null_list {
                Value::Null
            } else {
                Value::Array(rooms)
            };
            json!({ "rooms": list })
        } else {
            let room = body.get("room").and_then(Value::as_str).unwrap_or_default();
            let granted = video
                .and_then(|v| v.get("room"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !flag("roomAdmin") || granted != room {
                return twirp(401, "unauthenticated", "permissions denied");
            }
            let Some((_, people)) = listing.get(room) else {
                return twirp(404, "not_found", "requested room does not exist");
            };
            let mut list: Vec<Value> = people.iter().map(participant_json).collect();
            if fault.duplicate_rows {
                let again: Vec<Value> = list.iter().take(3).cloned().collect();
                list.extend(again);
            }
            let list = if fault.null_list {
                Value::Null
            } else {
                Value::Array(list)
            };
            json!({ "participants": list })
        };
        let mut answer = answer;
        if fault.missing_fields {
            answer = skip_defaults(answer, true);
        }
        if fault.code_as_string {
            answer = numbers_as_strings(answer);
        }
        SimResponse::json(200, &answer).with_body_faults(fault)
    }

    /// The server's token check: the claims, or the plain-text 401 it answers.
    fn verify(&self, header: Option<&str>, now: i64) -> Result<Map<String, Value>, String> {
        let invalid = |why: &str| format!("invalid authorization token: {why}");
        let Some(header) = header else {
            return Err(invalid("no token"));
        };
        let Some(jwt) = header.strip_prefix("Bearer ") else {
            return Err("invalid authorization header. Must start with Bearer ".into());
        };
        let parts: Vec<&str> = jwt.split('.').collect();
        let [h, p, s] = parts.as_slice() else {
            return Err(invalid("token is malformed"));
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let decode = |part: &str| -> Option<Map<String, Value>> {
            let bytes = b64.decode(part.trim_end_matches('=')).ok()?;
            match serde_json::from_slice(&bytes).ok()? {
                Value::Object(o) => Some(o),
                _ => None,
            }
        };
        let (Some(header), Some(claims)) = (decode(h), decode(p)) else {
            return Err(invalid("token is malformed"));
        };
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(invalid("signing method is invalid"));
        }
        if claims.get("iss").and_then(Value::as_str) != Some(self.api_key.as_str()) {
            return Err("invalid API key".into());
        }
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.api_secret().as_bytes()) else {
            return Err(invalid("no secret"));
        };
        mac.update(format!("{h}.{p}").as_bytes());
        let sig = b64.decode(s.trim_end_matches('=')).unwrap_or_default();
        if mac.verify_slice(&sig).is_err() {
            return Err(invalid("token signature is invalid"));
        }
        let time = |k: &str| claims.get(k).and_then(Value::as_i64);
        match time("exp") {
            None => {
                return Err(invalid(
                    "token is missing required claim: exp claim is required",
                ))
            }
            Some(exp) if now > exp + LEEWAY => return Err(invalid("token is expired")),
            Some(_) => {}
        }
        if time("nbf").is_some_and(|nbf| nbf > now + LEEWAY) {
            return Err(invalid("token is not valid yet"));
        }
        Ok(claims)
    }
}

/// The HTTP status Twirp gives an error code.
fn status_of(code: &str) -> u16 {
    match code {
        "canceled" | "deadline_exceeded" => 408,
        "invalid_argument" | "malformed" | "out_of_range" => 400,
        "not_found" | "bad_route" => 404,
        "already_exists" | "aborted" => 409,
        "permission_denied" => 403,
        "unauthenticated" => 401,
        "resource_exhausted" => 429,
        "failed_precondition" => 412,
        "unimplemented" => 501,
        "unavailable" => 503,
        _ => 500,
    }
}

/// A Twirp error answer.
fn twirp(status: u16, code: &str, msg: &str) -> SimResponse {
    SimResponse::json(status, &json!({ "code": code, "msg": msg }))
}

fn room_json(name: &str, start: i64, people: &[Listed]) -> Value {
    let in_now = people.iter().filter(|p| p.state != "DISCONNECTED");
    let counted = in_now
        .clone()
        .filter(|p| !p.hidden && !matches!(p.kind, "AGENT" | "EGRESS"))
        .count();
    json!({
        "sid": format!("RM_{}", name.replace('-', "")),
        "name": name,
        "empty_timeout": 300,
        "departure_timeout": DEPARTURE_TIMEOUT,
        "max_participants": 0,
        "creation_time": start.to_string(),
        "creation_time_ms": (start * 1000).to_string(),
        "turn_password": "",
        "enabled_codecs": [{"mime": "audio/opus", "fmtp_line": ""}, {"mime": "video/VP8", "fmtp_line": ""}],
        "metadata": "",
        "num_participants": counted,
        "num_publishers": 0,
        "active_recording": people.iter().any(|p| p.kind == "EGRESS"),
        "version": null,
    })
}

fn participant_json(p: &Listed) -> Value {
    json!({
        "sid": format!("PA_{}", p.identity),
        "identity": p.identity,
        "state": p.state,
        "tracks": [],
        "metadata": "",
        "joined_at": p.joined_at.to_string(),
        "joined_at_ms": (p.joined_at * 1000).to_string(),
        "name": "",
        "version": 3,
        "permission": {
            "can_subscribe": true, "can_publish": true, "can_publish_data": true,
            "can_publish_sources": [], "hidden": p.hidden, "recorder": p.kind == "EGRESS",
            "can_update_metadata": false, "agent": p.kind == "AGENT",
            "can_subscribe_metrics": false, "can_manage_agent_session": false,
        },
        "region": "",
        "is_publisher": false,
        "kind": p.kind,
        "attributes": {},
        "disconnect_reason": "UNKNOWN_REASON",
        "kind_details": [],
        "data_tracks": [],
        "client_protocol": 0,
        "capabilities": [],
    })
}

/// Protojson with defaults skipped (fields at 0, "", false, an empty list or map, the first
/// enum value, or null are left out) and, with `camel`, `lowerCamelCase` names.
fn skip_defaults(v: Value, camel: bool) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .filter(|(_, v)| !is_default(v))
                .map(|(k, v)| {
                    let k = if camel { lower_camel(&k) } else { k };
                    (k, skip_defaults(v, camel))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| skip_defaults(v, camel)).collect()),
        other => other,
    }
}

fn is_default(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => {
            s.is_empty()
                || s == "0"
                || matches!(s.as_str(), "STANDARD" | "JOINING" | "UNKNOWN_REASON")
        }
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn lower_camel(k: &str) -> String {
    let mut out = String::with_capacity(k.len());
    let mut up = false;
    for c in k.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn numbers_as_strings(v: Value) -> Value {
    match v {
        Value::Number(n) => Value::String(n.to_string()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k, numbers_as_strings(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_strings).collect()),
        other => other,
    }
}

impl Simulator for LkSim {
    fn vendor(&self) -> &'static str {
        "livekit"
    }

    fn handle<'a>(&'a self, req: SimRequest) -> BoxFuture<'a, SimResponse> {
        Box::pin(async move {
            let method = req
                .path
                .strip_prefix(PREFIX)
                .unwrap_or_default()
                .to_string();
            let fault = self.faults.get(&method);
            if !fault.latency.is_zero() {
                tokio::time::sleep(fault.latency).await;
            }
            self.answer(&req, &method, &fault)
        })
    }

    fn demo_target(&self, endpoint: &str) -> serde_yaml::Value {
        // LiveKit's SDKs take the server's URL as ws(s)://; the exporter maps it as they do.
        let endpoint = endpoint.replacen("http://", "ws://", 1);
        let target = json!({
            "name": "livekit-demo",
            "vendor": "livekit",
            "interval": "5s",
            "endpoint": endpoint,
            "credentials": { "api_key": self.api_key, "api_secret": self.api_secret() },
            "capacity": { "default": 25 },
        });
        serde_yaml::to_value(target).unwrap_or(serde_yaml::Value::Null)
    }

    fn describe(&self) -> String {
        format!("api_key={} api_secret={}", self.api_key, self.api_secret())
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

    fn token(sim: &LkSim, secret: &str, now: i64, video: Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let h = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let p = b64.encode(
            json!({"iss": sim.api_key, "sub": "", "nbf": now, "exp": now + 600, "video": video})
                .to_string(),
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{h}.{p}").as_bytes());
        format!("{h}.{p}.{}", b64.encode(mac.finalize().into_bytes()))
    }

    fn req(method: &str, jwt: &str, body: Value) -> SimRequest {
        let mut headers = hyper::header::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {jwt}").parse().unwrap());
        SimRequest {
            method: "POST".into(),
            path: format!("{PREFIX}{method}"),
            query: String::new(),
            headers,
            body: body.to_string().into(),
        }
    }

    #[test]
    fn tokens_are_checked_and_grants_per_call() {
        let sim = LkSim::new(3, 6);
        let now = sim.clock.now();
        sim.clock.freeze(now);
        let secret = sim.api_secret();
        let ok = |method: &str, jwt: &str, body: Value| {
            sim.answer(&req(method, jwt, body), method, &Fault::default())
        };
        let list = token(&sim, &secret, now, json!({"roomList": true}));
        assert_eq!(ok(LIST_ROOMS, &list, json!({})).status, 200);
        let wrong = token(&sim, "not-the-secret", now, json!({"roomList": true}));
        let r = ok(LIST_ROOMS, &wrong, json!({}));
        assert_eq!((r.status, r.content_type), (401, "text/plain"));
        let old = token(&sim, &secret, now - 700, json!({"roomList": true}));
        assert_eq!(ok(LIST_ROOMS, &old, json!({})).status, 401);
        let early = token(&sim, &secret, now + 120, json!({"roomList": true}));
        assert_eq!(ok(LIST_ROOMS, &early, json!({})).status, 401);
        // Within the leeway.
        let skewed = token(&sim, &secret, now + 30, json!({"roomList": true}));
        assert_eq!(ok(LIST_ROOMS, &skewed, json!({})).status, 200);
        let room = sim
            .listed_rooms(now)
            .into_iter()
            .next()
            .expect("a room listed");
        let admin = token(&sim, &secret, now, json!({"roomAdmin": true, "room": room}));
        assert_eq!(
            ok(LIST_PARTICIPANTS, &admin, json!({"room": room})).status,
            200
        );
        let r = ok(LIST_PARTICIPANTS, &admin, json!({"room": "other"}));
        assert_eq!(r.status, 401, "the grant names another room");
        assert!(String::from_utf8_lossy(&r.body).contains("unauthenticated"));
        let r = ok(LIST_PARTICIPANTS, &list, json!({"room": room}));
        assert_eq!(r.status, 401, "roomList is not roomAdmin");
        let r = ok(LIST_ROOMS, &admin, json!({}));
        assert_eq!(r.status, 401, "roomAdmin is not roomList");
        let gone = token(
            &sim,
            &secret,
            now,
            json!({"roomAdmin": true, "room": "nope"}),
        );
        assert_eq!(
            ok(LIST_PARTICIPANTS, &gone, json!({"room": "nope"})).status,
            404
        );
    }

    #[test]
    fn the_truth_counts_people_of_the_default_kinds() {
        let sim = LkSim::new(5, 10);
        let now = sim.clock.now();
        let listing = sim.listing(now);
        let truth = sim.truth(now);
        assert_eq!(truth.len(), 10);
        let kinds: std::collections::BTreeSet<&str> = listing
            .values()
            .flat_map(|(_, p)| p.iter().map(|p| p.kind))
            .collect();
        assert!(kinds.contains("STANDARD"), "{kinds:?}");
        for t in truth.iter().filter(|t| t.active) {
            let people = &listing[&t.room].1;
            assert!(t.users <= people.len() as u64);
        }
    }

    #[test]
    fn skipped_defaults_and_camel_case() {
        let v = skip_defaults(
            json!({"num_participants": 0, "kind": "STANDARD", "identity": "a", "joined_at": "5"}),
            true,
        );
        assert_eq!(v, json!({"identity": "a", "joinedAt": "5"}));
    }
}

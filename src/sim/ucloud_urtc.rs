//! Simulated UCloud API for `QueryURtcOnlineUsers`.
//!
//! Verifies the SHA1 signature with its own code (sorted `keyvalue` pairs + private key),
//! answers 170 / 171 / 172 as UCloud does, 153 above 10 QPS per public key, 220 for
//! `Limit` > 100, 300 for `EndTime` < `StartTime`, and pages by `Offset` / `Limit` with
//! `TotalCount`. One entry per call of a room in the window, as the API lists them.
//!
//! Answers that disagree with themselves (README: "Answers that disagree with themselves"): `total_larger` declares `TotalCount` 7
//! above the calls (as UCloud's own example does), `total_smaller` one below;
//! `duplicate_rows` lists the first three calls again at the end of the listing (so on a later
//! page, or twice on the one page), `TotalCount` counting the rows sent; `absent_list` leaves
//! `Data` out, `TotalCount` kept.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use super::scenario::{Scenario, Shape};
use super::{Fault, Faults, SimClock, SimRequest, SimResponse, Simulator, Throttle};
use futures_util::future::BoxFuture;

use crate::lock::lock;

/// The API this simulator serves.
pub const API: &str = "QueryURtcOnlineUsers";
const QPS: f64 = 10.0;

/// One room as the exporter should show it for a window: calls aggregated per room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomTruth {
    /// Room id.
    pub room: String,
    /// A call is in progress.
    pub active: bool,
    /// Users now.
    pub users: u64,
    /// Highest peak of its calls in the window.
    pub peak: u64,
    /// Sum of its calls' accumulated users in the window.
    pub accumulated: u64,
}

/// The simulated URTC service.
pub struct UrtcSim {
    /// The application id it serves.
    pub app_id: String,
    /// The one account's public key.
    pub public_key: String,
    private_key: Mutex<String>,
    /// Scenario clock.
    pub clock: SimClock,
    /// Fault switches.
    pub faults: Faults,
    /// Vendor-side throttle.
    pub throttle: Throttle,
    scenario: Mutex<Scenario>,
    last_window: Mutex<Option<(i64, i64)>>,
}

impl UrtcSim {
    /// A simulator with `rooms` rooms, keys drawn from `seed`.
    pub fn new(seed: u64, rooms: usize) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let clock = SimClock::default();
        let shape = Shape {
            prefix: "class-".into(),
            rooms,
            max_users: 40,
            bots: false,
            invisible: false,
            numeric_users: false,
        };
        let scenario = Scenario::generate(seed, clock.now(), &shape);
        UrtcSim {
            app_id: format!("URtc-{}", super::random_key(&mut rng, 8)),
            public_key: format!("demo-{}", super::random_key(&mut rng, 24)),
            private_key: Mutex::new(super::random_key(&mut rng, 40)),
            clock,
            faults: Faults::default(),
            throttle: Throttle::default(),
            scenario: Mutex::new(scenario),
            last_window: Mutex::new(None),
        }
    }

    /// The private key (tests and the demo configure the exporter with it).
    pub fn private_key(&self) -> String {
        lock(&self.private_key).clone()
    }

    /// Replaces the account's private key (the exporter's then no longer signs right).
    pub fn set_private_key(&self, key: &str) {
        *lock(&self.private_key) = key.to_string();
    }

    /// Ends `room`'s running call now (as the scenario clock says).
    pub fn end_room(&self, room: &str) -> bool {
        let t = self.clock.now();
        lock(&self.scenario).end_call(room, t)
    }

    /// The window of the last successful answer: (StartTime, the time it was evaluated at).
    pub fn last_window(&self) -> Option<(i64, i64)> {
        *lock(&self.last_window)
    }

    /// Ground truth per room for the window [from, at], calls aggregated as the exporter
    /// documents it (peak = max, accumulated = sum).
    pub fn truth(&self, from: i64, at: i64) -> Vec<RoomTruth> {
        let mut out: BTreeMap<String, RoomTruth> = BTreeMap::new();
        for (room, entry) in self.entries(from, at) {
            let t = out.entry(room.clone()).or_insert(RoomTruth {
                room,
                active: false,
                users: 0,
                peak: 0,
                accumulated: 0,
            });
            t.active |= entry.active;
            t.users += entry.current;
            t.peak = t.peak.max(entry.peak);
            t.accumulated += entry.accumulated;
        }
        out.into_values().collect()
    }

    /// How many calls (entries of the listing) the window [from, at] has.
    pub fn call_count(&self, from: i64, at: i64) -> usize {
        self.entries(from, at).len()
    }

    fn entries(&self, from: i64, at: i64) -> Vec<(String, CallEntry)> {
        let scenario = lock(&self.scenario);
        let mut list = Vec::new();
        for room in &scenario.rooms {
            for call in &room.calls {
                if call.start > at || call.end < from {
                    continue;
                }
                let active = call.active(at);
                let lo = from.max(call.start);
                list.push((
                    room.id.clone(),
                    CallEntry {
                        call_id: call.id.clone(),
                        start: call.start,
                        end: if active { 0 } else { call.end },
                        active,
                        current: if active {
                            call.present(at).count() as u64
                        } else {
                            0
                        },
                        peak: call.peak(lo, at, true),
                        accumulated: call.accumulated(lo, at, true),
                    },
                ));
            }
        }
        list.sort_by(|a, b| (a.1.start, &a.1.call_id).cmp(&(b.1.start, &b.1.call_id)));
        list
    }

    fn answer(&self, params: &BTreeMap<String, String>) -> SimResponse {
        let fault = self.faults.get(API);
        let err = |code: u32, msg: &str| error(code, msg, &fault);
        // The signature first, as the gateway does.
        let Some(sig) = params.get("Signature") else {
            return err(170, "Missing Signature");
        };
        let Some(pk) = params.get("PublicKey") else {
            return err(172, "User Not Exists");
        };
        if *pk != self.public_key {
            return err(172, "User Not Exists");
        }
        if !verify(params, &self.private_key(), sig) {
            return err(171, "Signature VerifyAC Error");
        }
        match params.get("Action").map(String::as_str) {
            None | Some("") => return err(160, "Missing Action"),
            Some(API) => {}
            Some(_) => return err(161, "Action Not Exists"),
        }
        if !self.throttle.allow(pk, API, QPS) {
            return err(153, "API Frequency Limit Exceeded");
        }
        if let Some(code) = &fault.code {
            let code: u32 = code.parse().unwrap_or(999);
            return err(code, "injected fault");
        }
        if let Some(status) = fault.http_status {
            return SimResponse::gateway(status);
        }
        if fault.reset {
            return SimResponse::reset();
        }
        let int = |k: &str| -> Result<Option<i64>, SimResponse> {
            match params.get(k) {
                None => Ok(None),
                Some(v) => v
                    .parse::<i64>()
                    .map(Some)
                    .map_err(|_| err(230, &format!("Params [{k}] not valid"))),
            }
        };
        let parsed = (|| {
            let app = params
                .get("AppId")
                .ok_or_else(|| err(210, "Missing Params [AppId]"))?;
            let start = int("StartTime")?.ok_or_else(|| err(210, "Missing Params [StartTime]"))?;
            let end = int("EndTime")?.ok_or_else(|| err(210, "Missing Params [EndTime]"))?;
            let offset = int("Offset")?.unwrap_or(0);
            let limit = int("Limit")?.unwrap_or(20);
            if *app != self.app_id {
                return Err(err(230, "Params [AppId] not valid"));
            }
            if end < start {
                return Err(err(300, "EndTime must not be before StartTime"));
            }
            if !(0..=100).contains(&limit) || offset < 0 {
                return Err(err(220, "Params [Limit] out of range"));
            }
            Ok((start, end, offset as usize, limit as usize))
        })();
        let (start, end, offset, limit) = match parsed {
            Ok(p) => p,
            Err(resp) => return resp,
        };
        let at = end.min(self.clock.now());
        let room_filter = params.get("RoomId");
        let entries: Vec<_> = self
            .entries(start, at)
            .into_iter()
            .filter(|(room, _)| room_filter.is_none_or(|f| f == room))
            .collect();
        *lock(&self.last_window) = Some((start, at));
        let mut entries = entries;
        if fault.duplicate_rows {
            let again: Vec<_> = entries.iter().take(3).cloned().collect();
            entries.extend(again);
        }
        let total = entries.len();
        let entries = if fault.lose_rows || (fault.empty_later_pages && offset > 0) {
            Vec::new()
        } else {
            entries
        };
        let total = if fault.lose_rows {
            0
        } else if fault.total_larger {
            total + 7
        } else if fault.total_smaller && total > 1 {
            total - 1
        } else {
            total
        };
        let data: Vec<Value> = entries
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(room, e)| {
                if fault.missing_fields {
                    // The seed's own example: only the room and the deprecated count.
                    return json!({"RoomId": room, "Num": e.current});
                }
                json!({
                    "RoomId": room, "CallId": e.call_id, "RoomType": "RTC",
                    "StartTime": e.start, "EndTime": e.end, "RoomStatus": e.active,
                    "Num": e.current, "CurrentAmount": e.current,
                    "PeekAmount": e.peak, "AccumulationAmount": e.accumulated,
                })
            })
            .collect();
        let code = if fault.code_as_string {
            json!("0")
        } else {
            json!(0)
        };
        let mut body = json!({"RetCode": code, "Action": "QueryURtcOnlineUsersResponse",
                              "Msg": "Succeed", "Data": data, "TotalCount": total});
        if let Some(o) = body.as_object_mut() {
            if fault.missing_fields {
                o.remove("TotalCount");
            }
            if fault.null_list {
                o.insert("Data".into(), Value::Null);
            }
            if fault.absent_list {
                o.remove("Data");
            }
        }
        SimResponse::json(200, &body).with_body_faults(&fault)
    }
}

#[derive(Clone)]
struct CallEntry {
    call_id: String,
    start: i64,
    end: i64,
    active: bool,
    current: u64,
    peak: u64,
    accumulated: u64,
}

fn error(code: u32, message: &str, fault: &Fault) -> SimResponse {
    let code = if fault.code_as_string {
        json!(code.to_string())
    } else {
        json!(code)
    };
    SimResponse::json(
        200,
        &json!({"RetCode": code, "Action": "QueryURtcOnlineUsersResponse", "Message": message}),
    )
}

/// UCloud's check: every parameter but `Signature`, sorted by key bytes, `keyvalue`
/// concatenated, private key appended, SHA1 in lower-case hex.
fn verify(params: &BTreeMap<String, String>, private_key: &str, signature: &str) -> bool {
    let mut h = Sha1::new();
    for (k, v) in params.iter().filter(|(k, _)| k.as_str() != "Signature") {
        h.update(k.as_bytes());
        h.update(v.as_bytes());
    }
    h.update(private_key.as_bytes());
    hex::encode(h.finalize()) == signature.to_ascii_lowercase()
}

/// Query and form body merged, as UCloud's gateway reads them.
fn params(req: &SimRequest) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = form_urlencoded::parse(req.query.as_bytes())
        .into_owned()
        .collect();
    let ct = req.header("content-type").unwrap_or_default();
    if ct.starts_with("application/json") {
        if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&req.body) {
            for (k, v) in m {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(k, v);
            }
        }
    } else {
        out.extend(form_urlencoded::parse(&req.body).into_owned());
    }
    out
}

impl Simulator for UrtcSim {
    fn vendor(&self) -> &'static str {
        "ucloud_urtc"
    }

    fn handle<'a>(&'a self, req: SimRequest) -> BoxFuture<'a, SimResponse> {
        Box::pin(async move {
            let latency = self.faults.get(API).latency;
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            self.answer(&params(&req))
        })
    }

    fn demo_target(&self, endpoint: &str) -> serde_yaml::Value {
        let text = format!(
            "name: urtc-demo\nvendor: ucloud_urtc\ninterval: 5s\nendpoint: \"{endpoint}\"\napp_id: \"{}\"\ncredentials:\n  public_key: \"{}\"\n  private_key: \"{}\"\ncapacity: {{ default: 30 }}\n",
            self.app_id, self.public_key, self.private_key()
        );
        serde_yaml::from_str(&text).unwrap_or(serde_yaml::Value::Null)
    }

    fn describe(&self) -> String {
        format!(
            "app_id={} public_key={} private_key={}",
            self.app_id,
            self.public_key,
            self.private_key()
        )
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
    fn faults(&self) -> Option<&Faults> {
        Some(&self.faults)
    }
}

//! Simulated Agora Channel Management RESTful API: the channel list, the user list of a
//! channel, and one user's status.
//!
//! Checks HTTP Basic auth with code of its own (it decodes the header and compares the pair),
//! answers 401 `{"message": ...}` for a wrong pair or an unknown app id, 400 for a `page_size`
//! outside [1, 500], 404 for a path it does not serve, and 429 above 20 requests per second per
//! customer id (the three APIs share the limit). A channel is in progress while someone is in
//! it. Even-numbered channels are live channels (`mode` 2: user ids divisible by 4 are
//! broadcasters, the rest audience), odd ones communication channels (`mode` 1).
//!
//! The channel list is sorted by user count (most first), then name. With
//! [`AgoraSim::set_shifting`] on, every page after the first is cut from the list rotated by its
//! page number, as if counts changed between the pages: a channel can come twice or not at
//! all, as Agora warns.
//!
//! Fault switches (per API): `latency`, `http_status` (an HTML page), `reset`, `malformed`,
//! `pad_bytes`, `chunked`; `code` answers that HTTP status with `{"message"}`; `null_list` and
//! `absent_list` (the list null or left out, its count kept); `empty_later_pages` (pages after
//! the first empty, `total_size` kept); `lose_rows` (an empty listing, `total_size` 0);
//! `code_as_string` (counts as strings); `missing_fields` (no `total_size`, no
//! `audience_total`); `total_larger` (`total_size` + 1; a user id left out of a list whose count
//! is kept), `total_smaller` (the count one below the ids) and `duplicate_rows` (the first
//! channel listed again at the end; the first id of a list twice).

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use base64::Engine as _;
use serde_json::{json, Value};

use super::scenario::{Scenario, Session, Shape};
use super::{Fault, Faults, SimClock, SimRequest, SimResponse, Simulator, Throttle};
use crate::lock::lock;
use crate::model::{Device, DeviceCounts};
use futures_util::future::BoxFuture;

/// The API names (fault keys).
pub const LIST_CHANNELS: &str = "QueryChannelList";
/// See [`LIST_CHANNELS`].
pub const LIST_USERS: &str = "QueryUserList";
/// See [`LIST_CHANNELS`].
pub const USER_STATUS: &str = "QueryUserStatus";
const QPS: f64 = 20.0;
const AUDIENCE_CAP: usize = 10_000;

/// One channel as the exporter should show it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelTruth {
    /// Channel name.
    pub channel: String,
    /// Users now.
    pub users: u64,
    /// A live channel (`mode` 2).
    pub live: bool,
    /// Broadcasters now (live channels).
    pub broadcasters: u64,
    /// Audience now (live channels).
    pub audience: u64,
    /// Users now by device.
    pub devices: DeviceCounts,
}

/// The simulated Agora service.
pub struct AgoraSim {
    /// The project's App ID.
    pub app_id: String,
    /// The customer id.
    pub customer_id: String,
    secret: Mutex<String>,
    /// Scenario clock.
    pub clock: SimClock,
    /// Fault switches.
    pub faults: Faults,
    /// Vendor-side throttle.
    pub throttle: Throttle,
    scenario: Mutex<Scenario>,
    shifting: AtomicBool,
}

fn is_live(channel: &str) -> bool {
    channel
        .rsplit('-')
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n % 2 == 0)
}

fn is_broadcaster(uid: &str) -> bool {
    uid.parse::<u64>().is_ok_and(|n| n % 4 == 0)
}

/// The platform code Agora sends for a device class.
fn platform(d: Device) -> u64 {
    match d {
        Device::Android => 1,
        Device::Ios => 2,
        Device::Windows => 5,
        Device::Linux => 6,
        Device::Web => 7,
        Device::Mac => 8,
        Device::Other => 0,
    }
}

impl AgoraSim {
    /// A simulator with `channels` channels around now, keys drawn from `seed`.
    pub fn new(seed: u64, channels: usize) -> Self {
        let clock = SimClock::default();
        let t0 = clock.now();
        Self::at(seed, channels, t0)
    }

    /// The same around `t0`.
    pub fn at(seed: u64, channels: usize, t0: i64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let shape = Shape {
            prefix: "chan-".into(),
            rooms: channels,
            max_users: 30,
            bots: false,
            invisible: false,
            numeric_users: true,
        };
        AgoraSim {
            app_id: super::random_key(&mut rng, 32),
            customer_id: super::random_key(&mut rng, 32),
            secret: Mutex::new(super::random_key(&mut rng, 32)),
            clock: SimClock::default(),
            faults: Faults::default(),
            throttle: Throttle::default(),
            scenario: Mutex::new(Scenario::generate(seed, t0, &shape)),
            shifting: AtomicBool::new(false),
        }
    }

    /// The customer secret.
    pub fn secret(&self) -> String {
        lock(&self.secret).clone()
    }

    /// Replaces the customer secret (the exporter's pair is then wrong).
    pub fn set_secret(&self, secret: &str) {
        *lock(&self.secret) = secret.to_string();
    }

    /// Pages after the first cut from a shifted list (see the module doc).
    pub fn set_shifting(&self, on: bool) {
        self.shifting.store(on, Ordering::Relaxed);
    }

    /// Ends the call of `channel` running now: everyone leaves.
    pub fn end_channel(&self, channel: &str) -> bool {
        let t = self.clock.now();
        lock(&self.scenario).end_call(channel, t)
    }

    /// Who is in each channel at `t`: the channels with someone in them.
    fn present(&self, t: i64) -> BTreeMap<String, Vec<Session>> {
        let scenario = lock(&self.scenario);
        let mut out = BTreeMap::new();
        for room in &scenario.rooms {
            let Some(call) = room.active_call(t) else {
                continue;
            };
            // One entry per user (a user in twice at once counts once).
            let mut seen = std::collections::HashSet::new();
            let people: Vec<Session> = call
                .present(t)
                .filter(|s| seen.insert(s.user.clone()))
                .cloned()
                .collect();
            if !people.is_empty() {
                out.insert(room.id.clone(), people);
            }
        }
        out
    }

    /// The channels in progress at `t`, as the exporter should show them.
    pub fn truth(&self, t: i64) -> Vec<ChannelTruth> {
        self.present(t)
            .into_iter()
            .map(|(channel, people)| {
                let live = is_live(&channel);
                let hosts = people.iter().filter(|s| is_broadcaster(&s.user)).count() as u64;
                let mut devices: DeviceCounts = Device::ALL.iter().map(|d| (*d, 0)).collect();
                for s in &people {
                    *devices.entry(s.device).or_default() += 1;
                }
                ChannelTruth {
                    users: people.len() as u64,
                    broadcasters: if live { hosts } else { 0 },
                    audience: if live { people.len() as u64 - hosts } else { 0 },
                    live,
                    devices,
                    channel,
                }
            })
            .collect()
    }

    /// The channel list as Agora orders it: most users first, then by name.
    fn listing(&self, t: i64) -> Vec<(String, u64)> {
        let mut list: Vec<(String, u64)> = self
            .present(t)
            .into_iter()
            .map(|(c, p)| (c, p.len() as u64))
            .collect();
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        list
    }

    fn authorized(&self, req: &SimRequest) -> bool {
        let Some(header) = req.header("authorization") else {
            return false;
        };
        let Some(token) = header.strip_prefix("Basic ") else {
            return false;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(token.trim()) else {
            return false;
        };
        let Ok(pair) = String::from_utf8(raw) else {
            return false;
        };
        match pair.split_once(':') {
            Some((id, secret)) => id == self.customer_id && secret == self.secret(),
            None => false,
        }
    }

    fn answer(&self, req: &SimRequest) -> SimResponse {
        let segments: Vec<String> = req
            .path
            .trim_start_matches('/')
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
        let (api, app) = match seg.as_slice() {
            ["dev", "v1", "channel", "user", "property", app, _, _] => (USER_STATUS, *app),
            ["dev", "v1", "channel", "user", app, _] => (LIST_USERS, *app),
            ["dev", "v1", "channel", app] => (LIST_CHANNELS, *app),
            _ => return message(404, "Not Found", &Fault::default()),
        };
        let fault = self.faults.get(api);
        if req.method != "GET" {
            return message(404, "Not Found", &fault);
        }
        if !self.authorized(req) || app != self.app_id {
            return message(401, "Invalid authentication credentials", &fault);
        }
        if !self.throttle.allow(&self.customer_id, "channel", QPS) {
            return message(429, "Too Many Requests", &fault);
        }
        if let Some(code) = &fault.code {
            let status = code.parse::<u16>().unwrap_or(500);
            return message(status, "injected fault", &fault);
        }
        if let Some(status) = fault.http_status {
            return SimResponse::gateway(status);
        }
        if fault.reset {
            return SimResponse::reset();
        }
        let now = self.clock.now();
        let data = match api {
            LIST_CHANNELS => match self.channels(req, now, &fault) {
                Ok(d) => d,
                Err(r) => return r,
            },
            LIST_USERS => self.users(seg[5], now, &fault),
            _ => self.status(seg[7], seg[6], now),
        };
        SimResponse::json(200, &json!({"success": true, "data": data})).with_body_faults(&fault)
    }

    fn channels(&self, req: &SimRequest, now: i64, fault: &Fault) -> Result<Value, SimResponse> {
        let q: BTreeMap<String, String> = form_urlencoded::parse(req.query.as_bytes())
            .into_owned()
            .collect();
        let num = |k: &str, default: usize| -> Result<usize, SimResponse> {
            match q.get(k) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .map_err(|_| message(400, &format!("invalid {k}"), fault)),
            }
        };
        let page_no = num("page_no", 0)?;
        let size = num("page_size", 100)?;
        if !(1..=500).contains(&size) {
            return Err(message(400, "invalid page_size", fault));
        }
        let mut list = self.listing(now);
        if fault.duplicate_rows {
            if let Some(first) = list.first().cloned() {
                list.push(first);
            }
        }
        let total = if fault.lose_rows { 0 } else { list.len() };
        if self.shifting.load(Ordering::Relaxed) && !list.is_empty() {
            let n = page_no % list.len();
            list.rotate_left(n);
        }
        let page: Vec<Value> = if fault.lose_rows || (fault.empty_later_pages && page_no > 0) {
            Vec::new()
        } else {
            list.into_iter()
                .skip(page_no.saturating_mul(size))
                .take(size)
                .map(|(c, n)| json!({"channel_name": c, "user_count": count(n, fault)}))
                .collect()
        };
        let total = if fault.total_larger {
            total + 1
        } else if fault.total_smaller && total > 1 {
            total - 1
        } else {
            total
        };
        let mut d = serde_json::Map::new();
        if fault.null_list && total > 0 {
            d.insert("channels".into(), Value::Null);
        } else if !(fault.absent_list && total > 0) {
            d.insert("channels".into(), Value::Array(page));
        }
        if !fault.missing_fields {
            d.insert("total_size".into(), count(total as u64, fault));
        }
        Ok(Value::Object(d))
    }

    fn users(&self, channel: &str, now: i64, fault: &Fault) -> Value {
        let present = self.present(now);
        let Some(people) = present.get(channel) else {
            return json!({"channel_exist": false});
        };
        let uid = |s: &Session| -> Value {
            match s.user.parse::<u64>() {
                Ok(n) if !fault.code_as_string => json!(n),
                _ => json!(s.user),
            }
        };
        let mut d = serde_json::Map::new();
        d.insert("channel_exist".into(), json!(true));
        if is_live(channel) {
            d.insert("mode".into(), count(2, fault));
            let hosts: Vec<Value> = people
                .iter()
                .filter(|s| is_broadcaster(&s.user))
                .map(uid)
                .collect();
            let mut audience: Vec<Value> = people
                .iter()
                .filter(|s| !is_broadcaster(&s.user))
                .map(uid)
                .collect();
            let mut total = audience.len() as u64;
            audience.truncate(AUDIENCE_CAP);
            list_faults(&mut audience, &mut total, fault);
            d.insert("broadcasters".into(), Value::Array(hosts));
            if fault.null_list && total > 0 {
                d.insert("audience".into(), Value::Null);
            } else if !(fault.absent_list && total > 0) {
                d.insert("audience".into(), Value::Array(audience));
            }
            if !fault.missing_fields {
                d.insert("audience_total".into(), count(total, fault));
            }
        } else {
            d.insert("mode".into(), count(1, fault));
            let mut users: Vec<Value> = people.iter().map(uid).collect();
            let mut total = users.len() as u64;
            list_faults(&mut users, &mut total, fault);
            d.insert("total".into(), count(total, fault));
            if fault.null_list && total > 0 {
                d.insert("users".into(), Value::Null);
            } else if !(fault.absent_list && total > 0) {
                d.insert("users".into(), Value::Array(users));
            }
        }
        Value::Object(d)
    }

    fn status(&self, channel: &str, uid: &str, now: i64) -> Value {
        let present = self.present(now);
        let Some(s) = present
            .get(channel)
            .and_then(|people| people.iter().find(|s| s.user == uid))
        else {
            return json!({"in_channel": false});
        };
        let role = match (is_live(channel), is_broadcaster(uid)) {
            (false, _) => 1,
            (true, true) => 2,
            (true, false) => 3,
        };
        json!({
            "in_channel": true,
            "uid": uid.parse::<u64>().unwrap_or(0),
            "join": s.join,
            "role": role,
            "platform": platform(s.device),
        })
    }
}

/// The API a path goes to.
pub fn api_of(path: &str) -> Option<&'static str> {
    if path.starts_with("/dev/v1/channel/user/property/") {
        Some(USER_STATUS)
    } else if path.starts_with("/dev/v1/channel/user/") {
        Some(LIST_USERS)
    } else if path.starts_with("/dev/v1/channel/") {
        Some(LIST_CHANNELS)
    } else {
        None
    }
}

/// A count as sent: a number, or a string with `code_as_string`.
fn count(n: u64, fault: &Fault) -> Value {
    if fault.code_as_string {
        json!(n.to_string())
    } else {
        json!(n)
    }
}

/// The anomaly faults on a list of user ids and its count.
fn list_faults(list: &mut Vec<Value>, total: &mut u64, fault: &Fault) {
    if fault.total_larger {
        list.pop();
    }
    if fault.total_smaller && list.len() >= 2 {
        *total -= 1;
    }
    if fault.duplicate_rows {
        if let Some(first) = list.first().cloned() {
            list.push(first);
        }
    }
}

/// An error answer: the status and `{"message"}`.
fn message(status: u16, text: &str, fault: &Fault) -> SimResponse {
    SimResponse::json(status, &json!({ "message": text })).with_body_faults(&Fault {
        malformed: false,
        ..fault.clone()
    })
}

impl Simulator for AgoraSim {
    fn vendor(&self) -> &'static str {
        "agora"
    }

    fn handle<'a>(&'a self, req: SimRequest) -> BoxFuture<'a, SimResponse> {
        Box::pin(async move {
            if let Some(api) = api_of(&req.path) {
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
            "name": "agora-demo",
            "vendor": "agora",
            "interval": "5s",
            "endpoint": endpoint,
            "app_id": self.app_id,
            "credentials": {
                "customer_id": self.customer_id,
                "customer_secret": self.secret(),
            },
        });
        serde_yaml::to_value(target).unwrap_or(serde_yaml::Value::Null)
    }

    fn describe(&self) -> String {
        format!(
            "app_id={} customer_id={} customer_secret={} (the RESTful API key pair)",
            self.app_id,
            self.customer_id,
            self.secret()
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

    fn get(sim: &AgoraSim, path: &str, query: &str, auth: Option<String>) -> SimResponse {
        let mut headers = hyper::header::HeaderMap::new();
        if let Some(a) = auth {
            headers.insert("authorization", a.parse().unwrap());
        }
        sim.answer(&SimRequest {
            method: "GET".into(),
            path: path.into(),
            query: query.into(),
            headers,
            body: bytes::Bytes::new(),
        })
    }

    fn basic(id: &str, secret: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    }

    #[test]
    fn basic_auth_and_app_id_are_checked() {
        let sim = AgoraSim::at(1, 6, 1_700_000_000);
        sim.clock.freeze(1_700_000_000);
        let path = format!("/dev/v1/channel/{}", sim.app_id);
        let good = basic(&sim.customer_id, &sim.secret());
        assert_eq!(get(&sim, &path, "", Some(good.clone())).status, 200);
        assert_eq!(get(&sim, &path, "", None).status, 401);
        assert_eq!(
            get(&sim, &path, "", Some(basic(&sim.customer_id, "wrong"))).status,
            401
        );
        assert_eq!(
            get(&sim, "/dev/v1/channel/other", "", Some(good.clone())).status,
            401
        );
        assert_eq!(get(&sim, &path, "page_size=501", Some(good)).status, 400);
    }

    #[test]
    fn shifting_pages_repeat_and_miss_channels() {
        let t = 1_700_000_000;
        let sim = AgoraSim::at(3, 12, t);
        sim.clock.freeze(t);
        let good = basic(&sim.customer_id, &sim.secret());
        let path = format!("/dev/v1/channel/{}", sim.app_id);
        let all = sim.listing(t);
        assert!(all.len() >= 4, "{} channels", all.len());
        sim.set_shifting(true);
        let mut names = Vec::new();
        for page in 0..all.len().div_ceil(2) {
            let r = get(
                &sim,
                &path,
                &format!("page_no={page}&page_size=2"),
                Some(good.clone()),
            );
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            for c in v["data"]["channels"].as_array().unwrap() {
                names.push(c["channel_name"].as_str().unwrap().to_string());
            }
        }
        let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
        assert!(distinct.len() < all.len(), "some channel missed");
        assert!(distinct.len() < names.len(), "some channel repeated");
    }
}

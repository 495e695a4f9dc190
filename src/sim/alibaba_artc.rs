//! Simulated Alibaba Cloud ARTC (RPC API 2018-01-11): `DescribeChannels` and
//! `DescribeChannelUsers` at `/`.
//!
//! Verifies both of Alibaba's signing schemes with code of its own: the V3 scheme
//! (`Authorization: ACS3-HMAC-SHA256 ...`, what Alibaba's Python SDK sends by default) and the
//! RPC HMAC-SHA1 scheme (`SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0`, what the SDK sends
//! with `signature_algorithm="v2"`). A request is refused with Alibaba's codes: an unknown
//! access key `InvalidAccessKeyId.NotFound` (404), a wrong signature `SignatureDoesNotMatch`,
//! a signature missing its parts `IncompleteSignature`, a time more than 15 minutes from the
//! simulator's clock `InvalidTimeStamp.Expired`, a nonce used before by the same key
//! `SignatureNonceUsed`, a wrong version, app id or page size `InvalidParameter` /
//! `MissingParameter` (400 each), and above the documented rate `Throttling.User` (400):
//! `DescribeChannels` 10 and `DescribeChannelUsers` 100 requests per second per access key.
//!
//! Channels come from a seeded class scenario (calls start and end); a channel is in progress
//! while someone is in it, and for [`EMPTIED_FOR`] seconds after its last user left it still
//! exists with 0 users (as Alibaba's channels do). Even-numbered channels are interactive-live
//! (`ChannelProfile` 2: user ids divisible by 4 interactive, the rest live audience, the
//! audience list cut at 1 000), odd ones communication (1).
//!
//! Fault switches (per API): `latency`, `http_status` (an HTML page), `reset`, `malformed`,
//! `pad_bytes`, `chunked`; `code` answers that Alibaba code (with its HTTP status);
//! `null_list` / `absent_list` (a list null or left out, its count kept); `empty_later_pages`
//! (pages after the first empty, `TotalCnt` kept); `lose_rows` (an empty listing, `TotalCnt`
//! 0); `code_as_string` (counts as strings); `missing_fields` (no `RequestId`, `TimeStamp`,
//! `PageNo`, `PageSize`, `TotalCnt`, nor the other profile's zero fields); `total_larger`
//! (`TotalCnt` + 1; an id left out of a list whose count is kept), `total_smaller` (the count
//! one below the ids) and `duplicate_rows` (the first channel again at the end of the listing;
//! the first id of a list twice).

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::scenario::{Scenario, Session, Shape};
use super::{Fault, Faults, SimClock, SimRequest, SimResponse, Simulator, Throttle};
use crate::lock::lock;
use futures_util::future::BoxFuture;

/// The API names (fault keys).
pub const LIST_CHANNELS: &str = "DescribeChannels";
/// See [`LIST_CHANNELS`].
pub const LIST_USERS: &str = "DescribeChannelUsers";
const VERSION: &str = "2018-01-11";
const LIST_QPS: f64 = 10.0;
const USERS_QPS: f64 = 100.0;
const AUDIENCE_CAP: usize = 1000;
/// Seconds a channel still exists, with 0 users, after its last user left.
pub const EMPTIED_FOR: i64 = 10;
/// How far the request's time may be from the simulator's clock.
const TIME_WINDOW: i64 = 15 * 60;

/// One channel as the exporter should show it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelTruth {
    /// Channel id.
    pub channel: String,
    /// Users now.
    pub users: u64,
    /// An interactive-live channel.
    pub live: bool,
    /// Interactive users now (live channels).
    pub broadcasters: u64,
    /// Live audience now (live channels).
    pub audience: u64,
}

/// The simulated ARTC service.
pub struct ArtcSim {
    /// The app id.
    pub app_id: String,
    /// The access key id.
    pub access_key_id: String,
    secret: Mutex<String>,
    /// Scenario clock.
    pub clock: SimClock,
    /// Fault switches.
    pub faults: Faults,
    /// Vendor-side throttle.
    pub throttle: Throttle,
    scenario: Mutex<Scenario>,
    /// Nonces seen, with the time they came.
    nonces: Mutex<HashMap<String, i64>>,
    /// Requests accepted, by scheme: (V3, RPC).
    schemes: Mutex<(u64, u64)>,
}

fn is_live(channel: &str) -> bool {
    channel
        .rsplit('-')
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n % 2 == 0)
}

fn is_interactive(uid: &str) -> bool {
    uid.parse::<u64>().is_ok_and(|n| n % 4 == 0)
}

/// Alibaba's percent-encoding, written here on its own: unreserved bytes kept, the rest `%XX`.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The pairs of a query string or form body, percent-decoded (`+` taken as itself).
fn pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let d = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (d(k), d(v))
        })
        .collect()
}

fn sorted_query(params: &[(String, String)]) -> String {
    let mut e: Vec<(String, String)> = params.iter().map(|(k, v)| (enc(k), enc(v))).collect();
    e.sort();
    e.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn unix_of(text: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%SZ")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

/// Alibaba's error answer: the status it comes with, and `{RequestId, HostId, Code, Message}`.
fn error(code: &str, message: &str, fault: &Fault) -> SimResponse {
    let status = match code {
        "InvalidAccessKeyId.NotFound" => 404,
        "Forbidden.RAM" => 403,
        "InternalError" => 500,
        "ServiceUnavailable" => 503,
        _ => 400,
    };
    SimResponse::json(
        status,
        &json!({"RequestId": "5C0D4A3E-0000-4000-8000-000000000000",
            "HostId": "rtc.aliyuncs.com", "Code": code, "Message": message}),
    )
    .with_body_faults(&Fault {
        malformed: false,
        ..fault.clone()
    })
}

/// What a verified request asks.
struct Asked {
    action: String,
    params: BTreeMap<String, String>,
}

impl ArtcSim {
    /// A simulator with `channels` channels around now, keys drawn from `seed`.
    pub fn new(seed: u64, channels: usize) -> Self {
        let t0 = SimClock::default().now();
        Self::at(seed, channels, t0)
    }

    /// The same around `t0`.
    pub fn at(seed: u64, channels: usize, t0: i64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let shape = Shape {
            prefix: "class-".into(),
            rooms: channels,
            max_users: 30,
            bots: false,
            invisible: false,
            numeric_users: true,
        };
        ArtcSim {
            app_id: super::random_key(&mut rng, 8),
            access_key_id: format!("LTAI{}", super::random_key(&mut rng, 20)),
            secret: Mutex::new(super::random_key(&mut rng, 30)),
            clock: SimClock::default(),
            faults: Faults::default(),
            throttle: Throttle::default(),
            scenario: Mutex::new(Scenario::generate(seed, t0, &shape)),
            nonces: Mutex::new(HashMap::new()),
            schemes: Mutex::new((0, 0)),
        }
    }

    /// The access key secret.
    pub fn secret(&self) -> String {
        lock(&self.secret).clone()
    }

    /// Replaces the secret (the exporter's is then wrong).
    pub fn set_secret(&self, secret: &str) {
        *lock(&self.secret) = secret.to_string();
    }

    /// Requests whose signature held, by scheme: (V3, RPC).
    pub fn accepted(&self) -> (u64, u64) {
        *lock(&self.schemes)
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

    /// Whether `channel` emptied within [`EMPTIED_FOR`] seconds before `t`.
    fn just_emptied(&self, channel: &str, t: i64) -> bool {
        let scenario = lock(&self.scenario);
        scenario.room(channel).is_some_and(|room| {
            room.calls.iter().any(|c| {
                let last = c.sessions.iter().map(|s| s.leave).max().unwrap_or(c.end);
                last <= t && t - last < EMPTIED_FOR
            })
        })
    }

    /// The channels in progress at `t`, as the exporter should show them.
    pub fn truth(&self, t: i64) -> Vec<ChannelTruth> {
        self.present(t)
            .into_iter()
            .map(|(channel, people)| {
                let live = is_live(&channel);
                let hosts = people.iter().filter(|s| is_interactive(&s.user)).count() as u64;
                ChannelTruth {
                    users: people.len() as u64,
                    broadcasters: if live { hosts } else { 0 },
                    audience: if live { people.len() as u64 - hosts } else { 0 },
                    live,
                    channel,
                }
            })
            .collect()
    }

    /// Checks the signature (either scheme), time, nonce and version; the action and
    /// parameters asked, or the refusal.
    fn verify(&self, req: &SimRequest, fault: &Fault) -> Result<Asked, SimResponse> {
        let mut params = pairs(&req.query);
        if req.method == "POST" {
            params.extend(pairs(&String::from_utf8_lossy(&req.body)));
        }
        let secret = self.secret();
        let (key_id, time, nonce, action, version, v3) = match req.header("authorization") {
            Some(auth) if auth.starts_with("ACS3-HMAC-SHA256 ") => {
                let parts: HashMap<&str, &str> = auth["ACS3-HMAC-SHA256 ".len()..]
                    .split(',')
                    .filter_map(|p| p.trim().split_once('='))
                    .collect();
                let (Some(cred), Some(signed), Some(sig)) = (
                    parts.get("Credential"),
                    parts.get("SignedHeaders"),
                    parts.get("Signature"),
                ) else {
                    return Err(error(
                        "IncompleteSignature",
                        "The request signature does not conform to Aliyun standards.",
                        fault,
                    ));
                };
                let names: Vec<&str> = signed.split(';').collect();
                for must in [
                    "host",
                    "x-acs-action",
                    "x-acs-version",
                    "x-acs-date",
                    "x-acs-signature-nonce",
                    "x-acs-content-sha256",
                ] {
                    if !names.contains(&must) {
                        return Err(error(
                            "IncompleteSignature",
                            &format!("{must} is not signed"),
                            fault,
                        ));
                    }
                }
                if *cred != self.access_key_id {
                    return Err(error(
                        "InvalidAccessKeyId.NotFound",
                        "Specified access key is not found.",
                        fault,
                    ));
                }
                let mut lines = String::new();
                for n in &names {
                    let Some(v) = req.header(n) else {
                        return Err(error(
                            "IncompleteSignature",
                            &format!("signed header {n} is missing"),
                            fault,
                        ));
                    };
                    lines.push_str(&format!("{n}:{}\n", v.trim()));
                }
                let payload = hex::encode(Sha256::digest(&req.body));
                if req.header("x-acs-content-sha256").as_deref() != Some(payload.as_str()) {
                    return Err(error(
                        "SignatureDoesNotMatch",
                        "x-acs-content-sha256 is not the body's hash",
                        fault,
                    ));
                }
                let canonical = format!(
                    "{}\n{}\n{}\n{lines}\n{signed}\n{payload}",
                    req.method,
                    req.path,
                    sorted_query(&pairs(&req.query))
                );
                let sts = format!(
                    "ACS3-HMAC-SHA256\n{}",
                    hex::encode(Sha256::digest(canonical.as_bytes()))
                );
                let want = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
                    Ok(mut m) => {
                        m.update(sts.as_bytes());
                        hex::encode(m.finalize().into_bytes())
                    }
                    Err(_) => String::new(),
                };
                if !sig.eq_ignore_ascii_case(&want) {
                    return Err(error(
                        "SignatureDoesNotMatch",
                        "Specified signature is not matched with our calculation.",
                        fault,
                    ));
                }
                (
                    cred.to_string(),
                    req.header("x-acs-date").unwrap_or_default(),
                    req.header("x-acs-signature-nonce").unwrap_or_default(),
                    req.header("x-acs-action").unwrap_or_default(),
                    req.header("x-acs-version").unwrap_or_default(),
                    true,
                )
            }
            _ => {
                let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                let (Some(sig), Some(key_id)) = (get("Signature"), get("AccessKeyId")) else {
                    return Err(error(
                        "MissingParameter",
                        "Signature or AccessKeyId is mandatory for this action.",
                        fault,
                    ));
                };
                if get("SignatureMethod").as_deref() != Some("HMAC-SHA1")
                    || get("SignatureVersion").as_deref() != Some("1.0")
                {
                    return Err(error(
                        "IncompleteSignature",
                        "SignatureMethod must be HMAC-SHA1 and SignatureVersion 1.0",
                        fault,
                    ));
                }
                if key_id != self.access_key_id {
                    return Err(error(
                        "InvalidAccessKeyId.NotFound",
                        "Specified access key is not found.",
                        fault,
                    ));
                }
                let unsigned: Vec<(String, String)> = params
                    .iter()
                    .filter(|(k, _)| k != "Signature")
                    .cloned()
                    .collect();
                let sts = format!("{}&%2F&{}", req.method, enc(&sorted_query(&unsigned)));
                let want = match Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes()) {
                    Ok(mut m) => {
                        m.update(sts.as_bytes());
                        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
                    }
                    Err(_) => String::new(),
                };
                if sig != want {
                    return Err(error(
                        "SignatureDoesNotMatch",
                        "Specified signature is not matched with our calculation.",
                        fault,
                    ));
                }
                (
                    key_id,
                    get("Timestamp").unwrap_or_default(),
                    get("SignatureNonce").unwrap_or_default(),
                    get("Action").unwrap_or_default(),
                    get("Version").unwrap_or_default(),
                    false,
                )
            }
        };
        let now = self.clock.now();
        let Some(t) = unix_of(&time) else {
            return Err(error(
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
                fault,
            ));
        };
        if (t - now).abs() > TIME_WINDOW {
            return Err(error(
                "InvalidTimeStamp.Expired",
                "Specified time stamp or date value is expired.",
                fault,
            ));
        }
        if nonce.is_empty() {
            return Err(error(
                "MissingParameter",
                "SignatureNonce is mandatory for this action.",
                fault,
            ));
        }
        {
            let mut seen = lock(&self.nonces);
            if seen.len() > 100_000 {
                seen.retain(|_, at| now - *at <= TIME_WINDOW);
            }
            if seen.insert(format!("{key_id}/{nonce}"), now).is_some() {
                return Err(error(
                    "SignatureNonceUsed",
                    "Specified signature nonce was used already.",
                    fault,
                ));
            }
        }
        if version != VERSION {
            return Err(error(
                "InvalidParameter",
                "Specified Version is not valid.",
                fault,
            ));
        }
        let mut schemes = lock(&self.schemes);
        if v3 {
            schemes.0 += 1;
        } else {
            schemes.1 += 1;
        }
        Ok(Asked {
            action,
            params: params.into_iter().collect(),
        })
    }

    fn answer(&self, req: &SimRequest) -> SimResponse {
        let fault = self.faults.get(api_of(req).unwrap_or(""));
        let asked = match self.verify(req, &fault) {
            Ok(a) => a,
            Err(r) => return r,
        };
        let (api, qps) = match asked.action.as_str() {
            LIST_CHANNELS => (LIST_CHANNELS, LIST_QPS),
            LIST_USERS => (LIST_USERS, USERS_QPS),
            other => {
                return error(
                    "InvalidAction.NotFound",
                    &format!("Specified api {other} is not found"),
                    &fault,
                )
            }
        };
        match asked.params.get("AppId") {
            None => return error("MissingParameter", "AppId is mandatory.", &fault),
            Some(a) if *a != self.app_id => {
                return error(
                    "InvalidParameter",
                    "The specified AppId is not found.",
                    &fault,
                )
            }
            Some(_) => {}
        }
        if !self.throttle.allow(&self.access_key_id, api, qps) {
            return error(
                "Throttling.User",
                "Request was denied due to user flow control.",
                &fault,
            );
        }
        if let Some(code) = &fault.code {
            return error(code, "injected fault", &fault);
        }
        if let Some(status) = fault.http_status {
            return SimResponse::gateway(status);
        }
        if fault.reset {
            return SimResponse::reset();
        }
        let now = self.clock.now();
        let body = if api == LIST_CHANNELS {
            match self.channels(&asked.params, now, &fault) {
                Ok(b) => b,
                Err(r) => return r,
            }
        } else {
            let Some(channel) = asked.params.get("ChannelId") else {
                return error("MissingParameter", "ChannelId is mandatory.", &fault);
            };
            self.users(channel, now, &fault)
        };
        SimResponse::json(200, &body).with_body_faults(&fault)
    }

    fn channels(
        &self,
        q: &BTreeMap<String, String>,
        now: i64,
        fault: &Fault,
    ) -> Result<Value, SimResponse> {
        let num = |k: &str, default: usize| -> Result<usize, SimResponse> {
            match q.get(k) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| {
                    error(
                        "InvalidParameter",
                        &format!("Specified {k} is not valid."),
                        fault,
                    )
                }),
            }
        };
        let page_no = num("PageNo", 1)?;
        let size = num("PageSize", 10)?;
        if page_no == 0 || !(1..=100).contains(&size) {
            return Err(error(
                "InvalidParameter",
                "Specified PageNo or PageSize is not valid.",
                fault,
            ));
        }
        let mut list: Vec<String> = self.present(now).into_keys().collect();
        if fault.duplicate_rows {
            if let Some(first) = list.first().cloned() {
                list.push(first);
            }
        }
        let total = if fault.lose_rows { 0 } else { list.len() };
        let page: Vec<Value> = if fault.lose_rows || (fault.empty_later_pages && page_no > 1) {
            Vec::new()
        } else {
            list.into_iter()
                .skip((page_no - 1).saturating_mul(size))
                .take(size)
                .map(Value::String)
                .collect()
        };
        let total = if fault.total_larger {
            total + 1
        } else if fault.total_smaller && total > 1 {
            total - 1
        } else {
            total
        };
        let mut d = Map::new();
        if !fault.missing_fields {
            d.insert("RequestId".into(), json!(request_id(now)));
            d.insert("PageNo".into(), count(page_no as u64, fault));
            d.insert("PageSize".into(), count(size as u64, fault));
            d.insert("TotalCnt".into(), count(total as u64, fault));
        }
        if fault.null_list && total > 0 {
            d.insert("Records".into(), Value::Null);
        } else if !(fault.absent_list && total > 0) {
            d.insert("Records".into(), Value::Array(page));
        }
        Ok(Value::Object(d))
    }

    fn users(&self, channel: &str, now: i64, fault: &Fault) -> Value {
        let present = self.present(now);
        let live = is_live(channel);
        let mut d = Map::new();
        if !fault.missing_fields {
            d.insert("RequestId".into(), json!(request_id(now)));
            d.insert("TimeStamp".into(), json!(now));
        }
        let people = match present.get(channel) {
            Some(p) => p.clone(),
            None if self.just_emptied(channel, now) => Vec::new(),
            None => {
                d.insert("IsChannelExist".into(), json!(false));
                return Value::Object(d);
            }
        };
        d.insert("IsChannelExist".into(), json!(true));
        d.insert(
            "ChannelProfile".into(),
            count(if live { 2 } else { 1 }, fault),
        );
        let ids = |filter: &dyn Fn(&Session) -> bool| -> Vec<Value> {
            people
                .iter()
                .filter(|s| filter(s))
                .map(|s| json!(s.user))
                .collect()
        };
        let put = |d: &mut Map<String, Value>, num: &str, list: &str, l: Vec<Value>, n: u64| {
            if fault.null_list && n > 0 {
                d.insert(list.into(), Value::Null);
            } else if !(fault.absent_list && n > 0) {
                d.insert(list.into(), Value::Array(l));
            }
            d.insert(num.into(), count(n, fault));
        };
        if live {
            let hosts = ids(&|s| is_interactive(&s.user));
            let mut audience = ids(&|s| !is_interactive(&s.user));
            let mut total = audience.len() as u64;
            audience.truncate(AUDIENCE_CAP);
            list_faults(&mut audience, &mut total, fault);
            let h = hosts.len() as u64;
            put(
                &mut d,
                "InteractiveUserNum",
                "InteractiveUserList",
                hosts,
                h,
            );
            put(&mut d, "LiveUserNum", "LiveUserList", audience, total);
            if !fault.missing_fields {
                d.insert("CommTotalNum".into(), count(0, fault));
                d.insert("UserList".into(), json!([]));
            }
        } else {
            let mut users = ids(&|_| true);
            let mut total = users.len() as u64;
            list_faults(&mut users, &mut total, fault);
            put(&mut d, "CommTotalNum", "UserList", users, total);
            if !fault.missing_fields {
                d.insert("InteractiveUserNum".into(), count(0, fault));
                d.insert("LiveUserNum".into(), count(0, fault));
                d.insert("InteractiveUserList".into(), json!([]));
                d.insert("LiveUserList".into(), json!([]));
            }
        }
        Value::Object(d)
    }
}

fn request_id(now: i64) -> String {
    format!("6159BA01-6687-4FB2-A831-{:012X}", now.max(0))
}

/// The API a request goes to: `x-acs-action` (V3) or `Action` (RPC).
pub fn api_of(req: &SimRequest) -> Option<&'static str> {
    let action = req.header("x-acs-action").or_else(|| {
        pairs(&req.query)
            .into_iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v)
    })?;
    match action.as_str() {
        LIST_CHANNELS => Some(LIST_CHANNELS),
        LIST_USERS => Some(LIST_USERS),
        _ => None,
    }
}

fn count(n: u64, fault: &Fault) -> Value {
    if fault.code_as_string {
        json!(n.to_string())
    } else {
        json!(n)
    }
}

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

impl Simulator for ArtcSim {
    fn vendor(&self) -> &'static str {
        "alibaba_artc"
    }

    fn handle<'a>(&'a self, req: SimRequest) -> BoxFuture<'a, SimResponse> {
        Box::pin(async move {
            if let Some(api) = api_of(&req) {
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
            "name": "alibaba-demo",
            "vendor": "alibaba_artc",
            "interval": "5s",
            "endpoint": endpoint,
            "app_id": self.app_id,
            "credentials": {
                "access_key_id": self.access_key_id,
                "access_key_secret": self.secret(),
            },
        });
        serde_yaml::to_value(target).unwrap_or(serde_yaml::Value::Null)
    }

    fn describe(&self) -> String {
        format!(
            "app_id={} access_key_id={} access_key_secret={} (V3 and RPC HMAC-SHA1 signatures)",
            self.app_id,
            self.access_key_id,
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

    const T: i64 = 1_700_000_000;

    fn stamp(t: i64) -> String {
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    /// An RPC request signed by this test's own hand.
    fn rpc(sim: &ArtcSim, secret: &str, nonce: &str, t: i64, extra: &[(&str, &str)]) -> SimRequest {
        let mut p: Vec<(String, String)> = [
            ("Action", "DescribeChannels"),
            ("Version", VERSION),
            ("Format", "JSON"),
            ("AccessKeyId", sim.access_key_id.as_str()),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", nonce),
            ("AppId", sim.app_id.as_str()),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        p.push(("Timestamp".into(), stamp(t)));
        let sts = format!("GET&%2F&{}", enc(&sorted_query(&p)));
        let mut m = Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes()).unwrap();
        m.update(sts.as_bytes());
        p.push((
            "Signature".into(),
            base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes()),
        ));
        SimRequest {
            method: "GET".into(),
            path: "/".into(),
            query: p
                .iter()
                .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                .collect::<Vec<_>>()
                .join("&"),
            headers: hyper::header::HeaderMap::new(),
            body: bytes::Bytes::new(),
        }
    }

    fn code(r: &SimResponse) -> String {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        v["Code"].as_str().unwrap_or("").to_string()
    }

    #[test]
    fn rpc_signature_time_and_nonce_are_checked() {
        let sim = ArtcSim::at(1, 6, T);
        sim.clock.freeze(T);
        let s = sim.secret();
        assert_eq!(sim.answer(&rpc(&sim, &s, "n1", T, &[])).status, 200);
        let r = sim.answer(&rpc(&sim, &s, "n1", T, &[]));
        assert_eq!(code(&r), "SignatureNonceUsed");
        let r = sim.answer(&rpc(&sim, "wrong", "n2", T, &[]));
        assert_eq!((r.status, code(&r)), (400, "SignatureDoesNotMatch".into()));
        let r = sim.answer(&rpc(&sim, &s, "n3", T - 901, &[]));
        assert_eq!(code(&r), "InvalidTimeStamp.Expired");
        assert_eq!(sim.answer(&rpc(&sim, &s, "n4", T + 899, &[])).status, 200);
        let r = sim.answer(&rpc(&sim, &s, "n5", T, &[("PageSize", "101")]));
        assert_eq!(code(&r), "InvalidParameter");
        assert_eq!(sim.accepted(), (0, 3));
    }

    #[test]
    fn the_listing_is_throttled_at_ten_per_second() {
        let sim = ArtcSim::at(2, 6, T);
        sim.clock.freeze(T);
        let s = sim.secret();
        let throttled = (0..30)
            .filter(|i| {
                code(&sim.answer(&rpc(&sim, &s, &format!("q{i}"), T, &[]))) == "Throttling.User"
            })
            .count();
        assert!(throttled >= 15, "{throttled}");
    }

    #[test]
    fn a_channel_just_emptied_exists_with_nobody() {
        let sim = ArtcSim::at(3, 8, T);
        let channel = sim.truth(T).first().map(|c| c.channel.clone()).unwrap();
        sim.clock.freeze(T);
        assert!(sim.end_channel(&channel));
        let v = sim.users(&channel, T + 1, &Fault::default());
        assert_eq!(v["IsChannelExist"], json!(true));
        let v = sim.users(&channel, T + EMPTIED_FOR + 1, &Fault::default());
        assert_eq!(v["IsChannelExist"], json!(false));
    }

    /// The client's signers against this simulator's checks (the one place they meet).
    #[test]
    fn the_clients_signers_pass() {
        use crate::clouds::alibaba_artc::{rpc as crpc, v3};
        let sim = ArtcSim::at(4, 6, T);
        sim.clock.freeze(T);
        let s = sim.secret();
        let params = vec![("AppId".to_string(), sim.app_id.clone())];
        let q = crpc::signed_query("DescribeChannels", &params, &sim.access_key_id, &s, T, "c1");
        let req = SimRequest {
            method: "GET".into(),
            path: "/".into(),
            query: q,
            headers: hyper::header::HeaderMap::new(),
            body: bytes::Bytes::new(),
        };
        assert_eq!(sim.answer(&req).status, 200);
        let mut headers = hyper::header::HeaderMap::new();
        for (k, v) in v3::signed_headers(
            "127.0.0.1:1",
            "DescribeChannels",
            &params,
            &sim.access_key_id,
            &s,
            T,
            "c2",
        ) {
            headers.insert(
                hyper::header::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let req = SimRequest {
            method: "GET".into(),
            path: "/".into(),
            query: format!("AppId={}", sim.app_id),
            headers: headers.clone(),
            body: bytes::Bytes::new(),
        };
        assert_eq!(
            sim.answer(&req).status,
            200,
            "{}",
            String::from_utf8_lossy(&sim.answer(&req).body)
        );
        assert_eq!(sim.accepted(), (1, 1));
    }
}

//! Alibaba Cloud ARTC: the RPC API of version 2018-01-11 at `rtc.aliyuncs.com`.
//! `DescribeChannels` lists the channels of an app in progress (paged), `DescribeChannelUsers`
//! tells who is in one channel.
//!
//! # Signing
//!
//! Two schemes are implemented beside each other, and `signature:` picks one:
//!
//! - `v3` (the default): ACS3-HMAC-SHA256 ([`v3`]). Alibaba calls it the current scheme and its
//!   V2 page says the older one is discontinued; it is what Alibaba's own SDK
//!   (`alibabacloud-rtc20180111`) sends unless told otherwise. The parameters stay in the query;
//!   `x-acs-action`, `x-acs-version`, `x-acs-date`, `x-acs-signature-nonce`,
//!   `x-acs-content-sha256` and `host` are signed; `Authorization: ACS3-HMAC-SHA256
//!   Credential=...,SignedHeaders=...,Signature=<hex>`.
//! - `rpc`: the RPC HMAC-SHA1 scheme, `SignatureVersion=1.0` ([`rpc`]), tested against the
//!   vector of Alibaba's signature page.
//!
//! Either way the time (`x-acs-date` or `Timestamp`) is the exporter's clock when the request is
//! built ([`PollCtx::wall_now`]), and every request carries a fresh random nonce: Alibaba refuses
//! a nonce used before (`SignatureNonceUsed`) and a time more than 15 minutes off
//! (`InvalidTimeStamp.Expired`).
//!
//! # Answers and errors
//!
//! A 200 is the API's JSON object. An error is a 4xx/5xx with `{"RequestId", "Code",
//! "Message"}`: the code is counted from a closed table ([`CODES`]). `Throttling.User`,
//! `Throttling` and `Throttling.Api` throttle the account ([`super::Api::call`] pauses it);
//! signature and key codes fail the poll with their code. A status without Alibaba's JSON is an
//! HTTP error.
//!
//! # Rooms
//!
//! Without `rooms:`, each poll pages `DescribeChannels` (`PageNo` from 1, `PageSize`
//! `page_size`) until a short or empty page or a page with no channel not already listed;
//! a channel listed twice is one channel (`duplicate_row`), a `TotalCnt` that is neither the
//! channels nor the rows sent is `total_mismatch`, and an empty page that `TotalCnt` says is
//! full fails the request (`malformed`). Then `DescribeChannelUsers` for each channel,
//! [`CONCURRENCY`] in flight. With `rooms:` only those channels' user lists are asked.
//!
//! `IsChannelExist: false` is a channel not in progress: users 0. A channel that exists with
//! 0 users (for a few seconds after it empties) is a real 0 too. In the communication profile
//! (`ChannelProfile` 1) users now are the larger of `CommTotalNum` and the distinct ids of
//! `UserList`, without roles. In the interactive-live profile (2) the interactive users
//! (`InteractiveUserNum`, `InteractiveUserList`) are broadcasters and the live audience
//! (`LiveUserNum`, `LiveUserList`) viewers; the audience list holds the first 1 000 only, so
//! the audience is counted from `LiveUserNum` and only the ids listed feed the day. Peak and
//! accumulated are observed by polling: lower bounds.
//!
//! # Rate
//!
//! Per account (access key): `DescribeChannels` 10 QPS, `DescribeChannelUsers` 100 QPS (Alibaba's
//! pages for each API). A poll of N channels costs ⌊N / page_size⌋ + 1 listing pages (the last
//! one short or empty) plus N user lists; with `rooms:`, the N user lists only.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::merged::{Identity, Merged};
use super::util::{
    code_label, distinct, hmac_sha256, id_string, lenient_bool, lenient_u64, optional, sha256_hex,
    Occupancy,
};
use super::{
    anomaly::LOST_BEFORE_BELIEVED, Anomaly, Api, BoxFuture, CallError, Observation, PollCtx,
    PollError, Role, RoleCounts, TargetInfo, Vendor, VendorEntry,
};
use crate::fields::{from_value, FieldError, Secret};
use crate::lock::lock;

/// The registry row.
pub const ENTRY: VendorEntry = VendorEntry {
    name: "alibaba_artc",
    parse,
};

/// The channels in progress, paged.
pub const LIST_CHANNELS: &str = "DescribeChannels";
/// Who is in one channel.
pub const LIST_USERS: &str = "DescribeChannelUsers";
/// The API version.
pub const VERSION: &str = "2018-01-11";
/// `DescribeChannels`: requests per second per account.
pub const LIST_QPS: f64 = 10.0;
/// `DescribeChannelUsers`: requests per second per account.
pub const USERS_QPS: f64 = 100.0;
const DEFAULT_ENDPOINT: &str = "https://rtc.aliyuncs.com";
/// The default `page_size` (Alibaba names no maximum; its example asks 10).
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The largest `page_size` accepted.
pub const MAX_PAGE_SIZE: usize = 100;
/// A listing that keeps sending full pages of new channels stops here (`page_cap`).
const MAX_PAGES: usize = 1000;
/// User lists in flight at once.
const CONCURRENCY: usize = 8;
/// The live audience a user list shows at most.
pub const AUDIENCE_CAP: usize = 1000;

/// The codes counted as themselves (Alibaba's common error codes this API answers with); the
/// rest count as `other`.
pub const CODES: &[&str] = &[
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidAccessKeyId.NotFound",
    "InvalidAccessKeyId.Inactive",
    "SignatureNonceUsed",
    "InvalidTimeStamp.Expired",
    "InvalidTimeStamp.Format",
    "Forbidden.RAM",
    "MissingParameter",
    "InvalidParameter",
    "InternalError",
    "ServiceUnavailable",
    "Throttling.User",
    "Throttling.Api",
    "Throttling",
];

/// The codes that mean "too many requests".
fn is_throttle(code: &str) -> bool {
    code == "Throttling" || code.starts_with("Throttling.")
}

fn default_signature() -> Signature {
    Signature::V3
}

/// Which signing scheme the client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Signature {
    V3,
    Rpc,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    credentials: Credentials,
    app_id: String,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    page_size: Option<usize>,
    #[serde(default = "default_signature")]
    signature: Signature,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    access_key_id: String,
    access_key_secret: Secret,
}

fn parse(value: serde_yaml::Value) -> Result<Arc<dyn Vendor>, FieldError> {
    let s: Settings = from_value(value)?;
    if s.app_id.trim().is_empty() {
        return Err(FieldError::new("app_id", "must not be empty"));
    }
    if s.credentials.access_key_id.trim().is_empty() {
        return Err(FieldError::new(
            "credentials.access_key_id",
            "must not be empty",
        ));
    }
    if s.credentials.access_key_secret.expose().is_empty() {
        return Err(FieldError::new(
            "credentials.access_key_secret",
            "must not be empty",
        ));
    }
    if let Some(n) = s.page_size {
        if !(1..=MAX_PAGE_SIZE).contains(&n) {
            return Err(FieldError::new(
                "page_size",
                format!("must be 1 to {MAX_PAGE_SIZE}, not {n}"),
            ));
        }
    }
    if let Some(rooms) = &s.rooms {
        super::util::check_rooms(rooms)?;
    }
    Ok(Arc::new(Artc {
        s: Arc::new(s),
        listed: Mutex::new(Listed::default()),
        next: AtomicUsize::new(0),
    }))
}

// ---------------------------------------------------------------------------------------------
// Signing

/// RFC 3986 percent-encoding as Alibaba asks: every byte but `A-Z a-z 0-9 - _ . ~` as `%XX`
/// (upper case), so a space is `%20`, `*` is `%2A` and `~` stays.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The parameters sorted by name, each `percentEncode(k)=percentEncode(v)`, joined by `&`.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// ISO 8601 UTC to the second, as both schemes send the time.
pub fn timestamp(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// A fresh nonce: 32 random hex digits.
fn nonce() -> String {
    (0..32)
        .map(|_| char::from(b"0123456789abcdef"[fastrand::usize(..16)]))
        .collect()
}

/// The RPC HMAC-SHA1 scheme (`SignatureVersion=1.0`).
pub mod rpc {
    use super::*;
    use hmac::{Hmac, Mac};
    use sha1::Sha1;

    /// `METHOD&%2F&percentEncode(canonical query)`.
    pub fn string_to_sign(method: &str, params: &[(String, String)]) -> String {
        format!(
            "{method}&{}&{}",
            percent_encode("/"),
            percent_encode(&canonical_query(params))
        )
    }

    /// `Base64(HMAC-SHA1(secret + "&", string_to_sign))`.
    pub fn signature(secret: &str, string_to_sign: &str) -> String {
        let key = format!("{secret}&");
        let mac = match Hmac::<Sha1>::new_from_slice(key.as_bytes()) {
            Ok(mut mac) => {
                mac.update(string_to_sign.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        };
        base64::engine::general_purpose::STANDARD.encode(mac)
    }

    /// The whole query string of a signed GET: the API's parameters, the common ones and
    /// `Signature`.
    pub fn signed_query(
        action: &str,
        params: &[(String, String)],
        key_id: &str,
        secret: &str,
        unix: i64,
        nonce: &str,
    ) -> String {
        let mut all: Vec<(String, String)> = params.to_vec();
        for (k, v) in [
            ("Action", action),
            ("Version", VERSION),
            ("Format", "JSON"),
            ("AccessKeyId", key_id),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", nonce),
        ] {
            all.push((k.to_string(), v.to_string()));
        }
        all.push(("Timestamp".to_string(), timestamp(unix)));
        let sig = signature(secret, &string_to_sign("GET", &all));
        all.push(("Signature".to_string(), sig));
        all.iter()
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// The V3 scheme (ACS3-HMAC-SHA256).
pub mod v3 {
    use super::*;

    /// The algorithm's name.
    pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

    /// The canonical request: method, path, canonical query, the signed headers as
    /// `name:value` lines (names lower case, sorted), their names joined by `;`, and the
    /// payload's SHA-256 in hex.
    pub fn canonical_request(
        method: &str,
        path: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        payload_hash: &str,
    ) -> (String, String) {
        let mut h: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        h.sort();
        let lines: String = h.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed = h
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let cr = format!(
            "{method}\n{path}\n{}\n{lines}\n{signed}\n{payload_hash}",
            canonical_query(query)
        );
        (cr, signed)
    }

    /// `ACS3-HMAC-SHA256\n` + hex(SHA-256(canonical request)).
    pub fn string_to_sign(canonical_request: &str) -> String {
        format!("{ALGORITHM}\n{}", sha256_hex(canonical_request.as_bytes()))
    }

    /// hex(HMAC-SHA256(secret, string to sign)).
    pub fn signature(secret: &str, string_to_sign: &str) -> String {
        hex::encode(hmac_sha256(secret.as_bytes(), string_to_sign.as_bytes()))
    }

    /// The headers of a signed GET with `query` and no body, `Authorization` last.
    pub fn signed_headers(
        host: &str,
        action: &str,
        query: &[(String, String)],
        key_id: &str,
        secret: &str,
        unix: i64,
        nonce: &str,
    ) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = [
            ("host", host.to_string()),
            ("x-acs-action", action.to_string()),
            ("x-acs-version", VERSION.to_string()),
            ("x-acs-date", timestamp(unix)),
            ("x-acs-signature-nonce", nonce.to_string()),
            ("x-acs-content-sha256", sha256_hex(b"")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let (cr, signed) = canonical_request("GET", "/", query, &headers, &sha256_hex(b""));
        let sig = signature(secret, &string_to_sign(&cr));
        headers.push((
            "Authorization".to_string(),
            format!("{ALGORITHM} Credential={key_id},SignedHeaders={signed},Signature={sig}"),
        ));
        headers
    }
}

// ---------------------------------------------------------------------------------------------
// Reading answers

fn malformed(api: &'static str, message: impl Into<String>) -> CallError {
    CallError::Malformed {
        api,
        message: message.into(),
    }
}

/// The JSON object of a 200 answer, or the error the answer is.
fn body(api: &'static str, status: u16, body: &[u8]) -> Result<Map<String, Value>, CallError> {
    let json: Result<Value, _> = serde_json::from_slice(body);
    let code = json
        .as_ref()
        .ok()
        .and_then(|v| v.get("Code"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if status != 200 || code.is_some() {
        let Some(code) = code else {
            return Err(CallError::Http { api, status });
        };
        let message = json
            .as_ref()
            .ok()
            .and_then(|v| v.get("Message"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        return Err(CallError::Vendor {
            api,
            throttled: is_throttle(&code),
            label: code_label(CODES, &code),
            message,
            code,
        });
    }
    match json {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(malformed(api, "the answer is not a JSON object")),
        Err(e) => Err(malformed(api, e.to_string())),
    }
}

fn count(api: &'static str, d: &Map<String, Value>, field: &str) -> Result<Option<u64>, CallError> {
    optional(d.get(field), lenient_u64)
        .map_err(|_| malformed(api, format!("{field} is not a count")))
}

fn id_list(
    api: &'static str,
    d: &Map<String, Value>,
    field: &str,
) -> Result<Option<Vec<String>>, CallError> {
    match d.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                id_string(v).ok_or_else(|| malformed(api, format!("{field}[{i}] is not an id")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(malformed(api, format!("{field} is not a list"))),
    }
}

/// One channel id of the listing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChannelRow(pub(crate) String);

impl Identity for ChannelRow {
    type Key = String;
    fn key(&self) -> String {
        self.0.clone()
    }
}

/// One page of `DescribeChannels`.
#[derive(Debug)]
pub(crate) struct ChannelPage {
    pub(crate) rows: Vec<ChannelRow>,
    pub(crate) total: Option<u64>,
}

/// Reads one page of `DescribeChannels`.
pub(crate) fn parse_channels(status: u16, raw: &[u8]) -> Result<ChannelPage, CallError> {
    let api = LIST_CHANNELS;
    let d = body(api, status, raw)?;
    let total = count(api, &d, "TotalCnt")?;
    let rows = match id_list(api, &d, "Records")? {
        Some(list) => list,
        // No list is no channel only where the answer says so: `TotalCnt` 0. Without either,
        // the answer is not a channel list (reading it would end every channel).
        None if total == Some(0) => Vec::new(),
        None => {
            return Err(malformed(
                api,
                match total {
                    Some(t) => format!("Records is null or missing but TotalCnt is {t}"),
                    None => "neither Records nor TotalCnt".to_string(),
                },
            ))
        }
    };
    Ok(ChannelPage {
        rows: rows.into_iter().map(ChannelRow).collect(),
        total,
    })
}

/// An empty page (1-based `page_no`) that `TotalCnt` says holds channels fails: reading it
/// would end channels in progress.
pub(crate) fn check_not_cut(
    page: &ChannelPage,
    page_no: usize,
    size: usize,
) -> Result<(), CallError> {
    if !page.rows.is_empty() {
        return Ok(());
    }
    let Some(t) = page.total else {
        return Ok(());
    };
    let full = (page_no as u64).saturating_mul(size as u64);
    if (page_no == 1 && t > 0) || (page_no > 1 && full <= t) {
        return Err(malformed(
            LIST_CHANNELS,
            format!("page {page_no} is empty but TotalCnt is {t}"),
        ));
    }
    Ok(())
}

/// What disagreed in an answer that still read.
pub(crate) type Findings = Vec<(Anomaly, String)>;

/// A count and its list: the list (`None` when null or absent) must be there where the count
/// says people are.
fn counted(
    api: &'static str,
    d: &Map<String, Value>,
    num: &str,
    list: &str,
) -> Result<(Option<u64>, Vec<String>), CallError> {
    let n = count(api, d, num)?;
    let l = match (id_list(api, d, list)?, n) {
        (Some(l), _) => l,
        (None, None | Some(0)) => Vec::new(),
        (None, Some(t)) => {
            return Err(malformed(
                api,
                format!("{list} is null or missing but {num} is {t}"),
            ))
        }
    };
    Ok((n, l))
}

/// Users now from a count and the distinct ids listed: the larger, the disagreement noted
/// (except a list cut at `cap` by design).
fn reconcile(
    num: &str,
    n: Option<u64>,
    listed: usize,
    ids: u64,
    cap: Option<usize>,
    found: &mut Findings,
) -> u64 {
    match n {
        Some(t) if t > ids => {
            if cap.is_none_or(|c| listed < c) {
                found.push((
                    Anomaly::ListShorterThanCount,
                    format!("{num} {t}, {ids} ids listed: users from {num}"),
                ));
            }
            t
        }
        Some(t) if t < ids => {
            found.push((
                Anomaly::ListLongerThanCount,
                format!("{num} {t}, {ids} ids listed: users from the ids"),
            ));
            ids
        }
        _ => ids,
    }
}

/// Reads `DescribeChannelUsers`.
pub(crate) fn parse_users(status: u16, raw: &[u8]) -> Result<(Occupancy, Findings), CallError> {
    let api = LIST_USERS;
    let d = body(api, status, raw)?;
    let exists = match d.get("IsChannelExist").map(lenient_bool) {
        Some(Some(b)) => b,
        _ => return Err(malformed(api, "IsChannelExist missing or not a boolean")),
    };
    if !exists {
        return Ok((Occupancy::Gone, Vec::new()));
    }
    let profile = count(api, &d, "ChannelProfile")?
        .ok_or_else(|| malformed(api, "ChannelProfile missing"))?;
    let mut found = Findings::new();
    let mut seen = HashSet::new();
    let occupancy = match profile {
        1 => {
            let (n, list) = counted(api, &d, "CommTotalNum", "UserList")?;
            let listed = list.len();
            let (ids, r) = distinct(list, &mut seen);
            if r > 0 {
                found.push((
                    Anomaly::DuplicateRow,
                    format!("{r} user id(s) listed twice: counted once"),
                ));
            }
            let users = reconcile(
                "CommTotalNum",
                n,
                listed,
                ids.len() as u64,
                None,
                &mut found,
            );
            Occupancy::Present {
                users,
                ids,
                roles: None,
            }
        }
        2 => {
            let (hn, hosts) = counted(api, &d, "InteractiveUserNum", "InteractiveUserList")?;
            let (an, audience) = counted(api, &d, "LiveUserNum", "LiveUserList")?;
            let (hl, al) = (hosts.len(), audience.len());
            let (hosts, r1) = distinct(hosts, &mut seen);
            let (viewers, r2) = distinct(audience, &mut seen);
            if r1 + r2 > 0 {
                found.push((
                    Anomaly::DuplicateRow,
                    format!("{} user id(s) listed twice: counted once", r1 + r2),
                ));
            }
            let b = reconcile(
                "InteractiveUserNum",
                hn,
                hl,
                hosts.len() as u64,
                None,
                &mut found,
            );
            let a = reconcile(
                "LiveUserNum",
                an,
                al,
                viewers.len() as u64,
                Some(AUDIENCE_CAP),
                &mut found,
            );
            let roles: RoleCounts = [(Role::Broadcaster, b), (Role::Viewer, a)]
                .into_iter()
                .collect();
            let mut ids = hosts;
            ids.extend(viewers);
            Occupancy::Present {
                users: b.saturating_add(a),
                ids,
                roles: Some(roles),
            }
        }
        p => {
            return Err(malformed(
                api,
                format!("ChannelProfile {p} is neither 1 nor 2"),
            ))
        }
    };
    Ok((occupancy, found))
}

// ---------------------------------------------------------------------------------------------
// Polling

/// One configured ARTC target.
pub struct Artc {
    s: Arc<Settings>,
    /// The channels of the last listing taken, and the listings in a row that lost some of
    /// them by ending early.
    listed: Mutex<Listed>,
    /// Where the next poll begins among the channels (round robin).
    next: AtomicUsize,
}

/// What the last listings showed (see [`Artc::lost_rows`]).
#[derive(Debug, Default)]
struct Listed {
    channels: HashSet<String>,
    lost_in_a_row: u32,
}

fn base(ctx: &PollCtx) -> String {
    ctx.endpoint_or(DEFAULT_ENDPOINT)
        .trim_end_matches('/')
        .to_string()
}

/// `host[:port]` of the endpoint, as the `Host` header carries it.
fn host_of(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(u) => {
            let host = u.host_str().unwrap_or_default().to_string();
            match u.port() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            }
        }
        Err(_) => String::new(),
    }
}

impl Artc {
    fn api<'a>(&self, ctx: &'a PollCtx, name: &'static str) -> Api<'a> {
        let qps = if name == LIST_CHANNELS {
            LIST_QPS
        } else {
            USERS_QPS
        };
        ctx.api(name, &self.s.credentials.access_key_id, qps)
    }

    /// A signed GET of `action` with `params`, the time and nonce taken now.
    fn request(
        &self,
        ctx: &PollCtx,
        action: &str,
        params: &[(String, String)],
    ) -> reqwest::RequestBuilder {
        let root = base(ctx);
        let unix = ctx.wall_now().timestamp();
        let key_id = &self.s.credentials.access_key_id;
        let secret = self.s.credentials.access_key_secret.expose();
        let n = nonce();
        match self.s.signature {
            Signature::Rpc => {
                let q = rpc::signed_query(action, params, key_id, secret, unix, &n);
                ctx.plumbing.http.get(format!("{root}/?{q}"))
            }
            Signature::V3 => {
                let q: String = params
                    .iter()
                    .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
                    .collect::<Vec<_>>()
                    .join("&");
                let mut r = ctx.plumbing.http.get(format!("{root}/?{q}"));
                let headers =
                    v3::signed_headers(&host_of(&root), action, params, key_id, secret, unix, &n);
                for (k, v) in headers {
                    r = r.header(k, v);
                }
                r
            }
        }
        .header("Accept", "application/json")
    }

    async fn list(&self, ctx: &PollCtx) -> Result<Vec<ChannelRow>, CallError> {
        let api = self.api(ctx, LIST_CHANNELS);
        let size = self.s.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        let mut listing: Merged<ChannelRow> = Merged::new();
        let mut total = None;
        let mut complete = false;
        let mut ended_empty = false;
        for page_no in 1..=MAX_PAGES {
            let params = vec![
                ("AppId".to_string(), self.s.app_id.clone()),
                ("PageNo".to_string(), page_no.to_string()),
                ("PageSize".to_string(), size.to_string()),
            ];
            let page = api
                .call(self.request(ctx, LIST_CHANNELS, &params), |status, raw| {
                    let page = parse_channels(status, raw)?;
                    check_not_cut(&page, page_no, size)?;
                    Ok(page)
                })
                .await?;
            if page.total.is_some() {
                total = page.total;
            }
            let nothing_new = listing.fresh(&page.rows) == 0;
            let short = page.rows.len() < size;
            ended_empty = page_no > 1 && page.rows.is_empty();
            listing.extend(page.rows);
            if short || nothing_new {
                complete = true;
                break;
            }
        }
        if !complete {
            ctx.anomaly(
                LIST_CHANNELS,
                Anomaly::PageCap,
                format!(
                    "still full pages of new channels after {MAX_PAGES} pages ({} channels)",
                    listing.rows.len()
                ),
            );
            return Err(malformed(
                LIST_CHANNELS,
                format!("still more channels after {MAX_PAGES} pages"),
            ));
        }
        if let Some(first) = listing.first_repeat.and_then(|i| listing.rows.get(i)) {
            ctx.anomaly(
                LIST_CHANNELS,
                Anomaly::DuplicateRow,
                format!(
                    "{} row(s) repeated a channel already listed (e.g. {}): merged, {} channels from {} rows",
                    listing.repeated,
                    first.0,
                    listing.rows.len(),
                    listing.sent()
                ),
            );
        }
        if let Some(t) = total {
            if t != listing.rows.len() as u64 && t != listing.sent() as u64 {
                if ended_empty && t > listing.rows.len() as u64 {
                    self.lost_rows(ctx, &listing.rows, t)?;
                }
                ctx.anomaly(
                    LIST_CHANNELS,
                    Anomaly::TotalMismatch,
                    format!(
                        "TotalCnt {t}, but {} channels listed ({} rows sent): read from the rows",
                        listing.rows.len(),
                        listing.sent()
                    ),
                );
            }
        }
        let mut last = lock(&self.listed);
        last.channels = listing.rows.iter().map(|r| r.0.clone()).collect();
        last.lost_in_a_row = 0;
        Ok(listing.rows)
    }

    /// A listing that ended on an empty page while `TotalCnt` said there were more channels,
    /// and lacks channels the last listing had: it lost rows the ledger would read as channels
    /// that ended. The request fails (`malformed`), keeping their last values, until
    /// [`LOST_BEFORE_BELIEVED`] listings in a row did so (then the listing is the truth).
    fn lost_rows(&self, ctx: &PollCtx, rows: &[ChannelRow], total: u64) -> Result<(), CallError> {
        let now: HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let mut last = lock(&self.listed);
        let Some(lost) = last
            .channels
            .iter()
            .find(|c| !now.contains(c.as_str()))
            .cloned()
        else {
            return Ok(());
        };
        last.lost_in_a_row = last.lost_in_a_row.saturating_add(1);
        let detail = format!(
            "the listing ended on an empty page with {} of TotalCnt {total} channels and lost channels of the last listing (e.g. {lost})",
            rows.len()
        );
        if last.lost_in_a_row < LOST_BEFORE_BELIEVED {
            return Err(malformed(LIST_CHANNELS, detail));
        }
        drop(last);
        ctx.anomaly(
            LIST_CHANNELS,
            Anomaly::LostRows,
            format!("{detail}: believed after {LOST_BEFORE_BELIEVED} listings in a row"),
        );
        Ok(())
    }

    async fn users(&self, ctx: &PollCtx, api: &Api<'_>, channel: &str) {
        let params = vec![
            ("AppId".to_string(), self.s.app_id.clone()),
            ("ChannelId".to_string(), channel.to_string()),
        ];
        match api
            .call(self.request(ctx, LIST_USERS, &params), parse_users)
            .await
        {
            Ok((occ, found)) => {
                for (kind, detail) in found {
                    ctx.anomaly(LIST_USERS, kind, format!("channel {channel}: {detail}"));
                }
                // A channel that exists with nobody in it (just emptied) is not in progress: a
                // real 0.
                ctx.room_done(occ.observation(channel, false));
            }
            Err(e) => ctx.room_failed(channel, &e),
        }
    }

    async fn fetch(&self, ctx: &PollCtx) -> Result<Observation, PollError> {
        let mut channels: Vec<String> = match &self.s.rooms {
            Some(rooms) => rooms.clone(),
            None => self.list(ctx).await?.into_iter().map(|r| r.0).collect(),
        };
        // Round robin: begin where the last poll's answers ended, so a poll cut by
        // `poll_timeout` is continued by the next, not begun again.
        if !channels.is_empty() {
            let at = self.next.load(Ordering::Relaxed) % channels.len();
            channels.rotate_left(at);
        }
        let api = &self.api(ctx, LIST_USERS);
        stream::iter(channels.iter())
            .for_each_concurrent(CONCURRENCY, |c| async move {
                self.users(ctx, api, c).await;
                self.next.fetch_add(1, Ordering::Relaxed);
            })
            .await;
        Ok(Observation::default())
    }
}

impl Vendor for Artc {
    fn info(&self) -> TargetInfo {
        TargetInfo {
            app: self.s.app_id.clone(),
            region: String::new(),
        }
    }

    fn poll<'a>(&'a self, ctx: &'a PollCtx) -> BoxFuture<'a, Result<Observation, PollError>> {
        Box::pin(self.fetch(ctx))
    }

    fn budget(&self) -> Option<super::Budget> {
        self.s.rooms.as_ref().map(|rooms| super::Budget {
            requests: rooms.len() as u64,
            qps: USERS_QPS,
        })
    }

    fn documented_qps(&self) -> Option<f64> {
        Some(USERS_QPS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rpc_signature_matches_alibabas_published_vector() {
        // Alibaba's signature page: secret `testsecret`, this StringToSign.
        let sts = "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0%26TimeStamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26";
        assert_eq!(
            rpc::signature("testsecret", sts),
            "CT9X0VtwR86fNWSnsc6v8YGOjuE="
        );
        // The same StringToSign built from the page's parameters.
        let params = pairs(&[
            ("Version", "2014-05-26"),
            ("Action", "DescribeRegions"),
            ("TimeStamp", "2016-02-23T12:46:24Z"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("Format", "XML"),
            ("SignatureVersion", "1.0"),
            ("AccessKeyId", "testid"),
            ("SignatureMethod", "HMAC-SHA1"),
        ]);
        assert_eq!(rpc::string_to_sign("GET", &params), sts);
    }

    #[test]
    fn percent_encoding_is_rfc_3986() {
        assert_eq!(percent_encode("a b*c~d/é"), "a%20b%2Ac~d%2F%C3%A9");
        assert_eq!(percent_encode("A-Z_a.z0~9"), "A-Z_a.z0~9");
    }

    #[test]
    fn v3_authorization_names_its_signed_headers_and_signs_them() {
        let q = pairs(&[("PageSize", "50"), ("AppId", "app 1"), ("PageNo", "1")]);
        let h = v3::signed_headers(
            "rtc.aliyuncs.com",
            "DescribeChannels",
            &q,
            "id",
            "secret",
            1_700_000_000,
            "n1",
        );
        let auth = &h.last().unwrap().1;
        assert!(auth.starts_with("ACS3-HMAC-SHA256 Credential=id,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature="), "{auth}");
        // Built again by hand from the documented layout.
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let cr = format!(
            "GET\n/\nAppId=app%201&PageNo=1&PageSize=50\nhost:rtc.aliyuncs.com\nx-acs-action:DescribeChannels\nx-acs-content-sha256:{empty}\nx-acs-date:2023-11-14T22:13:20Z\nx-acs-signature-nonce:n1\nx-acs-version:2018-01-11\n\nhost;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n{empty}"
        );
        let sts = format!("ACS3-HMAC-SHA256\n{}", sha256_hex(cr.as_bytes()));
        let want = hex::encode(hmac_sha256(b"secret", sts.as_bytes()));
        assert!(auth.ends_with(&format!("Signature={want}")), "{auth}");
    }

    #[test]
    fn rpc_query_carries_every_common_parameter() {
        let q = rpc::signed_query(
            "DescribeChannels",
            &pairs(&[("AppId", "a")]),
            "id",
            "s",
            0,
            "n",
        );
        for p in [
            "Action=DescribeChannels",
            "Version=2018-01-11",
            "Format=JSON",
            "AccessKeyId=id",
            "SignatureMethod=HMAC-SHA1",
            "SignatureVersion=1.0",
            "SignatureNonce=n",
            "Timestamp=1970-01-01T00%3A00%3A00Z",
            "Signature=",
        ] {
            assert!(q.contains(p), "{p} in {q}");
        }
    }

    #[test]
    fn the_published_examples_read() {
        let body = br#"{"RequestId":"16A96B9A-F203-4EC5-8E43-CB92E68F4CF8","PageNo":1,"PageSize":10,"TotalCnt":1,"Records":["test"]}"#;
        let page = parse_channels(200, body).unwrap();
        assert_eq!(page.rows, vec![ChannelRow("test".into())]);
        assert_eq!(page.total, Some(1));
        // The published DescribeChannelUsers example: CommTotalNum 100, three ids.
        let body = br#"{"RequestId":"6159ba01-6687-4fb2-a831-f0cd8d188648","TimeStamp":1557909133,"IsChannelExist":true,"ChannelProfile":1,"CommTotalNum":100,"InteractiveUserNum":0,"LiveUserNum":0,"UserList":["4455****","3267****","efbc****"],"InteractiveUserList":[],"LiveUserList":[]}"#;
        let (occ, found) = parse_users(200, body).unwrap();
        assert!(
            matches!(occ, Occupancy::Present { users: 100, ref ids, roles: None } if ids.len() == 3)
        );
        assert_eq!(found[0].0, Anomaly::ListShorterThanCount);
    }

    #[test]
    fn live_channels_have_roles_and_a_capped_audience() {
        let audience: Vec<String> = (0..AUDIENCE_CAP).map(|i| format!("v{i}")).collect();
        let body = serde_json::json!({"IsChannelExist": true, "ChannelProfile": 2,
            "CommTotalNum": 0, "UserList": [], "InteractiveUserNum": 2,
            "InteractiveUserList": ["h1", "h2"], "LiveUserNum": 1500, "LiveUserList": audience});
        let (occ, found) = parse_users(200, body.to_string().as_bytes()).unwrap();
        let Occupancy::Present { users, ids, roles } = occ else {
            panic!("present")
        };
        assert_eq!(users, 1502);
        assert_eq!(ids.len(), 1002);
        let roles = roles.unwrap();
        assert_eq!(roles[&Role::Broadcaster], 2);
        assert_eq!(roles[&Role::Viewer], 1500);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_channel_just_emptied_is_a_real_zero() {
        let body = br#"{"IsChannelExist":true,"ChannelProfile":1,"CommTotalNum":0,"UserList":[]}"#;
        let (occ, _) = parse_users(200, body).unwrap();
        let obs = occ.observation("c", false);
        assert_eq!((obs.users, obs.active), (0, false));
        let gone = parse_users(200, br#"{"IsChannelExist":false}"#).unwrap().0;
        assert_eq!(gone, Occupancy::Gone);
    }

    #[test]
    fn odd_shapes_fail_where_they_would_lose_people() {
        for body in [
            r#"{"IsChannelExist":true,"ChannelProfile":1,"CommTotalNum":2}"#,
            r#"{"IsChannelExist":true,"ChannelProfile":1,"CommTotalNum":2,"UserList":null}"#,
            r#"{"IsChannelExist":true,"ChannelProfile":2,"LiveUserNum":3}"#,
            r#"{"IsChannelExist":true,"ChannelProfile":3,"UserList":[]}"#,
            r#"{"IsChannelExist":true,"CommTotalNum":0,"UserList":[]}"#,
            r#"{"ChannelProfile":1,"CommTotalNum":0,"UserList":[]}"#,
            r#"{"IsChannelExist":true,"ChannelProfile":1,"CommTotalNum":"x","UserList":[]}"#,
            r#"{"IsChannelExist":true,"ChannelProfile":1,"CommTotalNum":1,"UserList":[{"u":1}]}"#,
        ] {
            let e = parse_users(200, body.as_bytes()).unwrap_err();
            assert_eq!(e.outcome(), "malformed", "{body}");
        }
        for body in [r#"{"TotalCnt":4}"#, r#"{"TotalCnt":4,"Records":null}"#] {
            assert_eq!(
                parse_channels(200, body.as_bytes()).unwrap_err().outcome(),
                "malformed"
            );
        }
        let empty = |t| ChannelPage {
            rows: Vec::new(),
            total: t,
        };
        assert!(check_not_cut(&empty(Some(1)), 1, 50).is_err());
        assert!(check_not_cut(&empty(Some(0)), 1, 50).is_ok());
        assert!(check_not_cut(&empty(Some(8)), 2, 3).is_err());
        assert!(check_not_cut(&empty(Some(10)), 4, 3).is_ok());
    }

    #[test]
    fn errors_carry_alibabas_code() {
        let e = parse_channels(
            400,
            br#"{"RequestId":"r","HostId":"rtc.aliyuncs.com","Code":"SignatureDoesNotMatch","Message":"Specified signature is not matched with our calculation."}"#,
        )
        .unwrap_err();
        assert_eq!(e.code_label(), Some("SignatureDoesNotMatch"));
        assert!(!e.is_throttle());
        for code in ["Throttling.User", "Throttling", "Throttling.Api"] {
            let body = format!(r#"{{"RequestId":"r","Code":"{code}","Message":"m"}}"#);
            let e = parse_users(400, body.as_bytes()).unwrap_err();
            assert!(e.is_throttle(), "{code}");
            assert_eq!(e.code_label(), Some(code));
        }
        let e = parse_users(403, br#"{"Code":"Something.New","Message":"m"}"#).unwrap_err();
        assert_eq!(e.code_label(), Some("other"));
        let e = parse_users(502, b"<html>bad gateway</html>").unwrap_err();
        assert!(matches!(e, CallError::Http { status: 502, .. }));
    }

    fn yaml(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn a_listing_cut_short_that_loses_channels_fails_until_believed() {
        let artc = Artc {
            s: Arc::new(
                from_value(yaml(
                    "app_id: a\ncredentials: {access_key_id: c, access_key_secret: s}\n",
                ))
                .unwrap(),
            ),
            listed: Mutex::new(Listed::default()),
            next: AtomicUsize::new(0),
        };
        let metrics = Arc::new(crate::metrics::SelfMetrics::new().unwrap());
        let plumbing = Arc::new(
            super::super::Plumbing::new(std::time::Duration::from_secs(1), metrics).unwrap(),
        );
        let ctx = PollCtx::new(
            "t",
            "alibaba_artc",
            chrono::Utc::now(),
            chrono_tz::UTC,
            plumbing,
        );
        let rows = |names: &[&str]| -> Vec<ChannelRow> {
            names.iter().map(|n| ChannelRow(n.to_string())).collect()
        };
        lock(&artc.listed).channels = ["a", "b", "c", "d"].iter().map(|c| c.to_string()).collect();
        // Nothing of the last listing lost (a total one high): read.
        assert!(artc
            .lost_rows(&ctx, &rows(&["a", "b", "c", "d"]), 5)
            .is_ok());
        // "d" lost by a listing that ended early: failed, four times, then believed.
        for _ in 1..LOST_BEFORE_BELIEVED {
            let e = artc
                .lost_rows(&ctx, &rows(&["a", "b", "c"]), 4)
                .unwrap_err();
            assert!(e.to_string().contains("(e.g. d)"), "{e}");
        }
        assert!(artc.lost_rows(&ctx, &rows(&["a", "b", "c"]), 4).is_ok());
    }

    #[test]
    fn config_keys() {
        let ok = "app_id: a\ncredentials: {access_key_id: c, access_key_secret: s}\n";
        assert!(parse(yaml(ok)).is_ok());
        assert!(parse(yaml(&format!("{ok}signature: rpc\n"))).is_ok());
        let budget = parse(yaml(&format!("{ok}rooms: [x, y]\n")))
            .ok()
            .and_then(|v| v.budget());
        assert_eq!(budget.map(|b| (b.requests, b.qps)), Some((2, USERS_QPS)));
        for bad in [
            format!("{ok}region: x\n"),
            format!("{ok}page_size: 101\n"),
            format!("{ok}page_size: 0\n"),
            format!("{ok}signature: v2\n"),
            "app_id: a\ncredentials: {access_key_id: c}\n".to_string(),
            "app_id: \"\"\ncredentials: {access_key_id: c, access_key_secret: s}\n".to_string(),
        ] {
            assert!(parse(yaml(&bad)).is_err(), "{bad}");
        }
    }
}

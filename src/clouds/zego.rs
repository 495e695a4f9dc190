//! ZEGO: server API v2 (`https://rtc-api.zego.im/`). `DescribeUserNum` counts the users of up
//! to ten rooms a call; `DescribeUserList` lists who is in one room, paged by `Marker`.
//!
//! # Authentication
//!
//! Every parameter goes in the query of a GET: `Action`, `AppId`, `SignatureNonce` (16 hex
//! characters, fresh for each request), `Timestamp` (Unix seconds from the exporter's clock;
//! ZEGO allows 10 minutes either way), `SignatureVersion=2.0` and `Signature` =
//! md5(`AppId` + `SignatureNonce` + `ServerSecret` + `Timestamp`) in lower-case hex
//! ([`signature`]). ZEGO publishes no test vector: the unit test's expected value was computed
//! once with Python's `hashlib` (see the test).
//!
//! # Answers and errors
//!
//! `{"Code": 0, "Message": "success", "RequestId": "...", "Data": {...}}`; any other `Code` is
//! the error. 206 (the room APIs' rate limit) and 7 (the public one) throttle the account
//! ([`super::Api::call`] pauses it); 100000004 (signature expired), 100000005 (signature
//! wrong), 100000010 (no ServerSecret found: a wrong AppId) and every other error of
//! `DescribeUserNum` fail the poll with their code. An HTTP status other than 200 without
//! ZEGO's JSON is an HTTP error.
//!
//! # Rooms
//!
//! `rooms:` is required: listing an app's rooms is a feature ZEGO switches on per account.
//! Each poll asks `DescribeUserNum` for the rooms ten at a time: `UserCount` is users now
//! (ZEGO's count, which includes `AdminUserCount`; an unknown room counts 0, a room not in
//! progress). Then every room with someone in it has its user list paged (`Limit`
//! `page_size`, 200 at most; `Marker` until it comes back empty, or a page comes back empty),
//! at most one request per room per second, [`CONCURRENCY`] rooms at once. A user listed
//! twice (on one page or across pages) is one user (`duplicate_row`). The count and the list
//! are read a moment apart: users now are the larger of the two, and a difference is
//! `list_shorter_than_count` or `list_longer_than_count`. A null or absent list, or a room
//! asked but missing from the counts, is `malformed`. A list that fails leaves that room with
//! its last values (a partial poll).
//!
//! The ids listed feed the day's distinct users: peak and accumulated are observed by polling,
//! lower bounds. `UserRole` means something only for rooms of ZEGO's LiveRoom service (1 the
//! anchor, 2 the audience; Express rooms send no meaningful role): where a listed user has
//! role 1 or 2 the room's users now are told by role (`broadcaster`, `viewer`, and `other`
//! for the rest of the users now), otherwise no role series.
//!
//! # Rate
//!
//! `DescribeUserNum`: 10 requests per second per AppId. `DescribeUserList`: one request per
//! second per room, and per AppId ZEGO's pages say 10 (older) or 200 (newer): the exporter
//! keeps to 10. A poll of N rooms costs ⌈N / 10⌉ counts plus one list page per room with users
//! (more past 200 users).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::merged::{Identity, Merged};
use super::util::{code_label, code_string, id_string, lenient_u64, optional};
use super::{
    Anomaly, Api, BoxFuture, CallError, DayFigures, Observation, PollCtx, PollError, Role,
    RoleCounts, RoomObservation, TargetInfo, Vendor, VendorEntry,
};
use crate::fields::{from_value, FieldError, Secret};
use crate::lock::lock;

/// The registry row.
pub const ENTRY: VendorEntry = VendorEntry {
    name: "zego",
    parse,
};

/// Users now of up to ten rooms.
pub const USER_NUM: &str = "DescribeUserNum";
/// Who is in one room, paged.
pub const USER_LIST: &str = "DescribeUserList";
/// Requests per second per AppId (both APIs; see the module doc).
pub const QPS: f64 = 10.0;
/// Rooms per `DescribeUserNum` call.
pub const ROOMS_PER_CALL: usize = 10;
/// The largest `Limit` ZEGO takes, and the default.
pub const MAX_PAGE_SIZE: usize = 200;
/// One room's list is asked at most this often (ZEGO: once a second per room), with a margin.
pub const ROOM_GAP: Duration = Duration::from_millis(1100);
const DEFAULT_ENDPOINT: &str = "https://rtc-api.zego.im";
/// User lists in flight at once.
const CONCURRENCY: usize = 8;
/// A list still handing out Markers after this many pages stops (`page_cap`).
const MAX_PAGES: usize = 100;

/// The codes ZEGO documents for server API v2 (the public codes and the room signaling ones);
/// others count as `other`.
const CODES: &[&str] = &[
    "1",
    "2",
    "3",
    "4",
    "7",
    "104",
    "206",
    "5018",
    "5024",
    "50001",
    "50002",
    "100000000",
    "100000001",
    "100000002",
    "100000003",
    "100000004",
    "100000005",
    "100000006",
    "100000007",
    "100000008",
    "100000009",
    "100000010",
    "100000011",
    "100000012",
    "100000013",
    "100000014",
    "100000015",
    "100000016",
    "100000017",
];
/// Too many requests: 206 (the room APIs' rate limit) and 7 (the public one).
const THROTTLED: &[&str] = &["206", "7"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    credentials: Credentials,
    app_id: AppId,
    rooms: Vec<String>,
    #[serde(default)]
    page_size: Option<usize>,
}

/// ZEGO's AppId is a number (uint32): YAML may give it as a number or a string of digits.
#[derive(Deserialize)]
#[serde(untagged)]
enum AppId {
    Number(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    server_secret: Secret,
}

/// The AppId as ZEGO types it: 1 to 4294967295, decimal digits only.
fn app_id(v: &AppId) -> Result<u32, String> {
    let n = match v {
        AppId::Number(n) => *n,
        AppId::Text(s) => {
            let t = s.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("must be ZEGO's numeric AppId, not {s:?}"));
            }
            t.parse::<u64>().map_err(|_| "is too large".to_string())?
        }
    };
    match u32::try_from(n) {
        Ok(0) => Err("must not be 0".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{n} is above ZEGO's range (a 32-bit number)")),
    }
}

struct Conf {
    app_id: u32,
    secret: Secret,
    rooms: Vec<String>,
    page_size: usize,
}

fn parse(value: serde_yaml::Value) -> Result<Arc<dyn Vendor>, FieldError> {
    let s: Settings = from_value(value)?;
    let app = app_id(&s.app_id).map_err(|e| FieldError::new("app_id", e))?;
    if s.credentials.server_secret.expose().is_empty() {
        return Err(FieldError::new(
            "credentials.server_secret",
            "must not be empty",
        ));
    }
    if s.rooms.is_empty() {
        return Err(FieldError::new(
            "rooms",
            "must list the rooms: ZEGO lists an app's rooms only where it switched that on",
        ));
    }
    if s.rooms.iter().any(|r| r.is_empty()) {
        return Err(FieldError::new("rooms", "a room id must not be empty"));
    }
    let page_size = s.page_size.unwrap_or(MAX_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(FieldError::new(
            "page_size",
            format!("must be 1 to {MAX_PAGE_SIZE} (ZEGO's Limit), not {page_size}"),
        ));
    }
    let mut rooms = s.rooms;
    let mut seen = std::collections::HashSet::new();
    rooms.retain(|r| seen.insert(r.clone()));
    Ok(Arc::new(Zego {
        c: Arc::new(Conf {
            app_id: app,
            secret: s.credentials.server_secret,
            rooms,
            page_size,
        }),
        last_list: Mutex::new(HashMap::new()),
    }))
}

/// The `Signature` parameter: md5(AppId + SignatureNonce + ServerSecret + Timestamp), the
/// four as decimal or as given, in lower-case hex.
pub fn signature(app_id: u32, nonce: &str, server_secret: &str, timestamp: i64) -> String {
    let mut h = Md5::new();
    h.update(app_id.to_string().as_bytes());
    h.update(nonce.as_bytes());
    h.update(server_secret.as_bytes());
    h.update(timestamp.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// A fresh `SignatureNonce`: 8 random bytes as 16 lower-case hex characters.
pub fn nonce() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// The public parameters of one request, signed.
pub fn public_params(
    app_id: u32,
    server_secret: &str,
    timestamp: i64,
    nonce: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("AppId", app_id.to_string()),
        ("SignatureNonce", nonce.to_string()),
        ("Timestamp", timestamp.to_string()),
        ("SignatureVersion", "2.0".to_string()),
        (
            "Signature",
            signature(app_id, nonce, server_secret, timestamp),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Reading answers

fn malformed(api: &'static str, message: impl Into<String>) -> CallError {
    CallError::Malformed {
        api,
        message: message.into(),
    }
}

/// The `Data` object of a successful answer, or the error the answer is.
fn data(api: &'static str, status: u16, body: &[u8]) -> Result<Map<String, Value>, CallError> {
    let json: Result<Value, _> = serde_json::from_slice(body);
    let top = match json {
        Ok(Value::Object(o)) => o,
        Ok(_) if status == 200 => return Err(malformed(api, "the answer is not a JSON object")),
        Err(e) if status == 200 => return Err(malformed(api, e.to_string())),
        _ => return Err(CallError::Http { api, status }),
    };
    let code = match top.get("Code").map(code_string) {
        Some(Some(c)) => c,
        _ if status != 200 => return Err(CallError::Http { api, status }),
        _ => return Err(malformed(api, "Code missing or not a code")),
    };
    if code != "0" {
        let message = top
            .get("Message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        return Err(CallError::Vendor {
            api,
            throttled: THROTTLED.contains(&code.as_str()),
            label: code_label(CODES, &code),
            message,
            code,
        });
    }
    if status != 200 {
        return Err(CallError::Http { api, status });
    }
    let mut top = top;
    match top.remove("Data") {
        Some(Value::Object(d)) => Ok(d),
        _ => Err(malformed(api, "Data missing or not an object")),
    }
}

/// Reads `DescribeUserNum`: users now by room, as listed.
pub(crate) fn parse_counts(status: u16, body: &[u8]) -> Result<Vec<(String, u64)>, CallError> {
    let api = USER_NUM;
    let d = data(api, status, body)?;
    let list = match d.get("UserCountList") {
        Some(Value::Array(a)) => a,
        Some(Value::Null) | None => return Err(malformed(api, "UserCountList is null or missing")),
        Some(_) => return Err(malformed(api, "UserCountList is not a list")),
    };
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            let o = v
                .as_object()
                .ok_or_else(|| malformed(api, format!("UserCountList[{i}] is not an object")))?;
            let room = match o.get("RoomId") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => {
                    return Err(malformed(
                        api,
                        format!("UserCountList[{i}]: RoomId missing or empty"),
                    ))
                }
            };
            let users = optional(o.get("UserCount"), lenient_u64)
                .map_err(|_| {
                    malformed(api, format!("UserCountList[{i}]: UserCount is not a count"))
                })?
                .ok_or_else(|| malformed(api, format!("UserCountList[{i}]: UserCount missing")))?;
            Ok((room, users))
        })
        .collect()
}

/// One row of a user list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UserRow {
    pub(crate) id: String,
    /// `UserRole` where sent.
    pub(crate) role: Option<u64>,
}

impl Identity for UserRow {
    type Key = String;
    fn key(&self) -> String {
        self.id.clone()
    }
}

/// One page of `DescribeUserList`.
#[derive(Debug)]
pub(crate) struct UserPage {
    pub(crate) rows: Vec<UserRow>,
    /// The next page's `Marker`; `None` when empty or absent (the list is complete).
    pub(crate) marker: Option<String>,
}

/// Reads one page of `DescribeUserList`.
pub(crate) fn parse_users(status: u16, body: &[u8]) -> Result<UserPage, CallError> {
    let api = USER_LIST;
    let d = data(api, status, body)?;
    let list = match d.get("UserList") {
        Some(Value::Array(a)) => a,
        Some(Value::Null) | None => return Err(malformed(api, "UserList is null or missing")),
        Some(_) => return Err(malformed(api, "UserList is not a list")),
    };
    let rows = list
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let o = v
                .as_object()
                .ok_or_else(|| malformed(api, format!("UserList[{i}] is not an object")))?;
            let id = o
                .get("UserId")
                .and_then(id_string)
                .ok_or_else(|| malformed(api, format!("UserList[{i}]: UserId missing or empty")))?;
            let role = optional(o.get("UserRole"), lenient_u64)
                .map_err(|_| malformed(api, format!("UserList[{i}]: UserRole is not a number")))?;
            Ok(UserRow { id, role })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let marker = match d.get("Marker") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(malformed(api, "Marker is not a string")),
    };
    Ok(UserPage { rows, marker })
}

/// `UserRole` as a role: 1 the anchor (broadcaster), 2 the audience (viewer), anything else
/// unknown (`None`).
pub fn user_role(code: u64) -> Option<Role> {
    match code {
        1 => Some(Role::Broadcaster),
        2 => Some(Role::Viewer),
        _ => None,
    }
}

/// What disagreed in a room's reading that still read.
pub(crate) type Findings = Vec<(Anomaly, String)>;

/// One room's figures from its count and its merged list.
pub(crate) fn room_figures(
    room: &str,
    count: u64,
    list: &Merged<UserRow>,
) -> (RoomObservation, Findings) {
    let mut found = Findings::new();
    if list.repeated > 0 {
        found.push((
            Anomaly::DuplicateRow,
            format!(
                "{} user row(s) listed again: {} users from {} rows",
                list.repeated,
                list.rows.len(),
                list.sent()
            ),
        ));
    }
    let n = list.rows.len() as u64;
    let users = if count > n {
        found.push((
            Anomaly::ListShorterThanCount,
            format!("UserCount {count}, {n} users listed: users now from the count"),
        ));
        count
    } else if count < n {
        found.push((
            Anomaly::ListLongerThanCount,
            format!("UserCount {count}, {n} users listed: users now from the list"),
        ));
        n
    } else {
        n
    };
    let ids: Vec<String> = list.rows.iter().map(|r| r.id.clone()).collect();
    let roles: Vec<Role> = list
        .rows
        .iter()
        .filter_map(|r| r.role.and_then(user_role))
        .collect();
    let day = if roles.is_empty() {
        DayFigures::Present(ids)
    } else {
        let hosts = roles.iter().filter(|r| **r == Role::Broadcaster).count() as u64;
        let viewers = roles.iter().filter(|r| **r == Role::Viewer).count() as u64;
        let counts: RoleCounts = [
            (Role::Broadcaster, hosts),
            (Role::Viewer, viewers),
            (Role::Other, users.saturating_sub(hosts + viewers)),
        ]
        .into_iter()
        .collect();
        DayFigures::PresentByRole { ids, roles: counts }
    };
    (
        RoomObservation {
            room: room.to_string(),
            active: users > 0,
            users,
            invisible: None,
            day,
        },
        found,
    )
}

// ---------------------------------------------------------------------------------------------
// Polling

/// One configured ZEGO target.
pub struct Zego {
    c: Arc<Conf>,
    /// When each room's list was last asked (ZEGO: once a second per room).
    last_list: Mutex<HashMap<String, tokio::time::Instant>>,
}

fn base(ctx: &PollCtx) -> String {
    ctx.endpoint_or(DEFAULT_ENDPOINT)
        .trim_end_matches('/')
        .to_string()
}

/// A signed GET of `action` with `params`, timestamped by the exporter's clock.
fn get(
    ctx: &PollCtx,
    c: &Conf,
    action: &str,
    params: &[(&str, String)],
) -> reqwest::RequestBuilder {
    let t = ctx.wall_now().timestamp();
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("Action", action);
    for (k, v) in params {
        q.append_pair(k, v);
    }
    for (k, v) in public_params(c.app_id, c.secret.expose(), t, &nonce()) {
        q.append_pair(k, &v);
    }
    let url = format!("{}/?{}", base(ctx), q.finish());
    ctx.plumbing
        .http
        .get(url)
        .header("Accept", "application/json")
}

fn empty_room(room: &str) -> RoomObservation {
    RoomObservation {
        room: room.to_string(),
        active: false,
        users: 0,
        invisible: None,
        day: DayFigures::Present(Vec::new()),
    }
}

impl Zego {
    /// Users now of every configured room, ten rooms a call.
    async fn counts(&self, ctx: &PollCtx) -> Result<HashMap<String, u64>, CallError> {
        let api = ctx.api(USER_NUM, &self.c.app_id.to_string(), QPS);
        let mut out = HashMap::new();
        for chunk in self.c.rooms.chunks(ROOMS_PER_CALL) {
            let params: Vec<(&str, String)> =
                chunk.iter().map(|r| ("RoomId[]", r.clone())).collect();
            let rows = api
                .call(get(ctx, &self.c, USER_NUM, &params), |status, body| {
                    let rows = parse_counts(status, body)?;
                    if let Some(missing) = chunk.iter().find(|r| !rows.iter().any(|(x, _)| x == *r))
                    {
                        return Err(malformed(
                            USER_NUM,
                            format!("room {missing} was asked but is not in UserCountList"),
                        ));
                    }
                    Ok(rows)
                })
                .await?;
            for (room, users) in rows {
                if chunk.contains(&room) {
                    out.insert(room, users);
                }
            }
        }
        Ok(out)
    }

    /// Waits until `room`'s list was last answered [`ROOM_GAP`] ago (ZEGO: one request a
    /// second per room). The time is taken when an answer is in, not when the request was
    /// queued: the account's limiter may hold a request back, and the vendor counts arrivals.
    async fn room_turn(&self, room: &str) {
        let wait = {
            let map = lock(&self.last_list);
            map.get(room)
                .map(|t| (*t + ROOM_GAP).saturating_duration_since(tokio::time::Instant::now()))
        };
        if let Some(w) = wait.filter(|w| !w.is_zero()) {
            tokio::time::sleep(w).await;
        }
    }

    fn room_answered(&self, room: &str) {
        lock(&self.last_list).insert(room.to_string(), tokio::time::Instant::now());
    }

    /// One room's user list, every page, merged.
    async fn list(
        &self,
        ctx: &PollCtx,
        api: &Api<'_>,
        room: &str,
    ) -> Result<Merged<UserRow>, CallError> {
        let mut merged = Merged::new();
        let mut marker = String::new();
        for page_no in 0..MAX_PAGES {
            self.room_turn(room).await;
            let params = [
                ("RoomId", room.to_string()),
                ("Mode", "0".to_string()),
                ("Limit", self.c.page_size.to_string()),
                ("Marker", marker.clone()),
            ];
            let page = api
                .call(get(ctx, &self.c, USER_LIST, &params), parse_users)
                .await;
            self.room_answered(room);
            let page = page?;
            // An empty page ends the list whatever its Marker says: there is nothing more
            // to read, and paging on would spend a second per page.
            let empty = page.rows.is_empty();
            merged.extend(page.rows);
            match page.marker {
                None => return Ok(merged),
                Some(_) if empty => return Ok(merged),
                Some(m) if m == marker => {
                    return Err(malformed(
                        USER_LIST,
                        format!("page {page_no} handed back the Marker it was asked with"),
                    ))
                }
                Some(m) => marker = m,
            }
        }
        ctx.anomaly(
            USER_LIST,
            Anomaly::PageCap,
            format!(
                "room {room}: still more users after {MAX_PAGES} pages ({} listed)",
                merged.rows.len()
            ),
        );
        Ok(merged)
    }

    async fn room(&self, ctx: &PollCtx, api: &Api<'_>, room: &str, count: u64) {
        match self.list(ctx, api, room).await {
            Ok(list) => {
                let (obs, found) = room_figures(room, count, &list);
                for (kind, detail) in found {
                    ctx.anomaly(USER_LIST, kind, format!("room {room}: {detail}"));
                }
                ctx.room_done(obs);
            }
            Err(e) => ctx.room_failed(room, &e),
        }
    }

    async fn fetch(&self, ctx: &PollCtx) -> Result<Observation, PollError> {
        let counts = self.counts(ctx).await?;
        let mut busy = Vec::new();
        for room in &self.c.rooms {
            match counts.get(room).copied().unwrap_or(0) {
                0 => ctx.room_done(empty_room(room)),
                n => busy.push((room.clone(), n)),
            }
        }
        let api = ctx.api(USER_LIST, &self.c.app_id.to_string(), QPS);
        stream::iter(busy.iter())
            .for_each_concurrent(CONCURRENCY, |(room, n)| self.room(ctx, &api, room, *n))
            .await;
        Ok(Observation::default())
    }
}

impl Vendor for Zego {
    fn info(&self) -> TargetInfo {
        TargetInfo {
            app: self.c.app_id.to_string(),
            region: String::new(),
        }
    }

    fn poll<'a>(&'a self, ctx: &'a PollCtx) -> BoxFuture<'a, Result<Observation, PollError>> {
        Box::pin(self.fetch(ctx))
    }

    fn budget(&self) -> Option<super::Budget> {
        // The counts, then one list page per room (a room with more than `page_size` users
        // needs more; an empty room none).
        let n = self.c.rooms.len() as u64;
        Some(super::Budget {
            requests: n.div_ceil(ROOMS_PER_CALL as u64) + n,
            qps: QPS,
        })
    }

    fn documented_qps(&self) -> Option<f64> {
        Some(QPS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_an_independent_md5() {
        // The expected values were computed once with Python 3's hashlib, outside this code:
        //   hashlib.md5(b'1234567890' + b'a1b2c3d4e5f60718'
        //               + b'0123456789abcdef0123456789abcdef' + b'1700000000').hexdigest()
        //   hashlib.md5(('296889649' + '7f3a9c0e5b1d2468'
        //               + 'd0b4b019c53947f30bf4420b2df23af6' + '1795176000').encode()).hexdigest()
        assert_eq!(
            signature(
                1_234_567_890,
                "a1b2c3d4e5f60718",
                "0123456789abcdef0123456789abcdef",
                1_700_000_000
            ),
            "c90a56c08221a571fbf3007d1d7300d6"
        );
        assert_eq!(
            signature(
                296_889_649,
                "7f3a9c0e5b1d2468",
                "d0b4b019c53947f30bf4420b2df23af6",
                1_795_176_000
            ),
            "9dfa3d8efdb8d9df8434ca8d3a3b54b2"
        );
        // RFC 1321's own test suite, for the digest itself.
        assert_eq!(
            hex::encode(Md5::digest(b"message digest")),
            "f96b697d7cb7938d525a2f31aaf161d0"
        );
    }

    #[test]
    fn nonces_are_16_hex_characters_and_fresh() {
        let a = nonce();
        let b = nonce();
        assert_eq!(a.len(), 16);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        let p = public_params(7, "s", 100, "00000000000000ff");
        let keys: Vec<&str> = p.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "AppId",
                "SignatureNonce",
                "Timestamp",
                "SignatureVersion",
                "Signature"
            ]
        );
        assert_eq!(p[3].1, "2.0");
    }

    #[test]
    fn the_published_count_example_reads() {
        // docs.zegocloud.com/article/9788, "Response example".
        let body = br#"{
    "Code": 0,
    "Message": "success",
    "RequestId": "7840039829955402142",
    "Data": {
        "UserCountList": [
            {
                "RoomId": "room1",
                "UserCount": 2,
                "AdminUserCount": 0
            },
            {
                "RoomId": "room2",
                "UserCount": 3,
                "AdminUserCount": 1
            }
        ]
    }
}"#;
        assert_eq!(
            parse_counts(200, body).unwrap(),
            vec![("room1".to_string(), 2), ("room2".to_string(), 3)]
        );
    }

    #[test]
    fn errors_are_the_code() {
        let e =
            parse_counts(200, br#"{"Code":206,"Message":"App request QPS too high"}"#).unwrap_err();
        assert!(e.is_throttle());
        assert_eq!(e.code_label(), Some("206"));
        for code in ["100000004", "100000005", "100000010"] {
            let body = format!(r#"{{"Code":{code},"Message":"x","RequestId":"r"}}"#);
            let e = parse_users(200, body.as_bytes()).unwrap_err();
            assert_eq!(e.code_label(), Some(code));
            assert!(!e.is_throttle());
        }
        let e = parse_users(200, br#"{"Code":"7","Message":"x"}"#).unwrap_err();
        assert!(e.is_throttle());
        let e = parse_users(200, br#"{"Code":"123","Message":"x"}"#).unwrap_err();
        assert_eq!(e.code_label(), Some("other"));
        let e = parse_users(502, b"<html>bad gateway</html>").unwrap_err();
        assert!(matches!(e, CallError::Http { status: 502, .. }));
        for body in [
            r#"{"Code":0,"Data":{"UserList":null}}"#,
            r#"{"Code":0,"Data":{}}"#,
            r#"{"Code":0}"#,
            r#"{"Code":0,"Data":{"UserList":[{"UserName":"x"}]}}"#,
            r#"{"Code":0,"Data":{"UserList":[{"UserId":"a","UserRole":"x"}]}}"#,
            r#"{"Data":{"UserList":[]}}"#,
        ] {
            let e = parse_users(200, body.as_bytes()).unwrap_err();
            assert_eq!(e.outcome(), "malformed", "{body}");
        }
    }

    #[test]
    fn roles_and_disagreements() {
        let mut list = Merged::new();
        list.extend([
            UserRow {
                id: "a".into(),
                role: Some(1),
            },
            UserRow {
                id: "b".into(),
                role: Some(2),
            },
            UserRow {
                id: "b".into(),
                role: Some(2),
            },
            UserRow {
                id: "c".into(),
                role: Some(0),
            },
        ]);
        let (obs, found) = room_figures("r", 5, &list);
        assert_eq!(obs.users, 5);
        let kinds: Vec<Anomaly> = found.iter().map(|f| f.0).collect();
        assert_eq!(
            kinds,
            [Anomaly::DuplicateRow, Anomaly::ListShorterThanCount]
        );
        let DayFigures::PresentByRole { ids, roles } = obs.day else {
            panic!("roles")
        };
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(roles[&Role::Broadcaster], 1);
        assert_eq!(roles[&Role::Viewer], 1);
        assert_eq!(roles[&Role::Other], 3);
        // Express rooms: no meaningful role, no role series.
        let mut list = Merged::new();
        list.extend([UserRow {
            id: "a".into(),
            role: Some(0),
        }]);
        let (obs, found) = room_figures("r", 0, &list);
        assert_eq!(obs.users, 1);
        assert!(obs.active);
        assert_eq!(found[0].0, Anomaly::ListLongerThanCount);
        assert!(matches!(obs.day, DayFigures::Present(ref ids) if ids == &["a"]));
    }

    fn yaml(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn config_keys() {
        let ok = "credentials: {server_secret: s}\nrooms: [a, b]\n";
        for app in ["1234567890", "\"1234567890\"", "4294967295"] {
            assert!(
                parse(yaml(&format!("app_id: {app}\n{ok}"))).is_ok(),
                "{app}"
            );
        }
        let rooms: Vec<String> = (0..25).map(|i| format!("r{i}")).collect();
        let v = parse(yaml(&format!(
            "app_id: 1\ncredentials: {{server_secret: s}}\nrooms: [{}]\n",
            rooms.join(", ")
        )))
        .ok()
        .and_then(|v| v.budget());
        // ⌈25 / 10⌉ counts + 25 lists.
        assert_eq!(v.map(|b| (b.requests, b.qps)), Some((28, QPS)));
        for bad in [
            format!("app_id: 0\n{ok}"),
            format!("app_id: 4294967296\n{ok}"),
            format!("app_id: \"12ab\"\n{ok}"),
            format!("app_id: -1\n{ok}"),
            format!("app_id: 1\n{ok}page_size: 201\n"),
            format!("app_id: 1\n{ok}region: x\n"),
            "app_id: 1\ncredentials: {server_secret: s}\n".to_string(),
            "app_id: 1\ncredentials: {server_secret: s}\nrooms: []\n".to_string(),
            "app_id: 1\ncredentials: {server_secret: \"\"}\nrooms: [a]\n".to_string(),
        ] {
            assert!(parse(yaml(&bad)).is_err(), "{bad}");
        }
    }
}

//! Volcengine RTC: `GetRoomOnlineUsers` (2023-11-01) for each room, `QueryOnlineStatus`
//! (2020-12-01) for watched users, and optionally `ListRoomInfo` (2023-11-01) to find the rooms.
//!
//! Requests are signed with the V4-style HMAC-SHA256 of [`sign`] (vendors.md §2) at the moment
//! they are built (`X-Date` is the wall clock then, not the poll's start). Every answer is read
//! for `ResponseMetadata.Error` whatever its HTTP status; codes are counted from a closed set
//! ([`code_label`]).
//!
//! # Rooms
//!
//! One `GetRoomOnlineUsers` call per room with `Property=false`, 40 QPS per access key, up to
//! [`CONCURRENCY`] in flight so that the limiter, not the latency, sets the pace (N rooms take
//! about N / 40 s). `RoomExists`/`RoomExist` false: the room is not active, users 0.
//! `rtc_room_users` = `TotalUser`, `rtc_room_invisible_users` = `TotalInvisibleUser`, both less
//! the room's known bots; the ledger gets the visible and invisible ids (bots removed) for the
//! observed peak and distinct users (lower bounds).
//!
//! Reading the answer (the rules of [`super::Anomaly`]): `RoomExists` (or `RoomExist`) is required, and when it is
//! true so are `TotalUser` and a list wherever a count says people are there; without them the
//! request failed (never an empty room). A count and lists that disagree are an anomaly, not a
//! failure: users now are the larger of `TotalUser` and the distinct ids (the ids listed still
//! count as seen, and the ledger keeps accumulated at or above the peak), reported as
//! `list_shorter_than_count` / `list_longer_than_count`; an id listed twice counts once
//! (`duplicate_row`). See `parse_occupancy`.
//!
//! # Bots
//!
//! Users with `MediaProcessingType` (recording, CDN push, ASR) are not people. Only
//! `Property=true` answers mark them, so bots are learnt per room from the device refresh below
//! (the bot ids of the room's last refresh) and subtracted from the room's `TotalUser`,
//! `TotalInvisibleUser` and id lists. Without `devices: true` the exporter never asks
//! `Property=true` and bots count as users. A bot beyond the 200 users a `Property=true`
//! answer lists (visible first) is not recognised either.
//!
//! # Devices (`devices: true`)
//!
//! Device types need `Property=true`, limited to 1 QPS per access key. The occupancy poll does
//! not wait for them: at the start of each poll a refresher task is spawned that refreshes the
//! rooms (all polled rooms except those that did not exist at the previous poll) one at a time
//! at 1 QPS, round robin from the room after the one the previous refresher stopped at, each
//! room at most once, until every room is refreshed or the next poll starts (which aborts it and
//! spawns the next). It runs in a task rather than inside the poll so that it keeps the 1 QPS
//! budget busy for the whole interval, not only for the N / 40 s the occupancy poll takes: with
//! the interval I in seconds, a poll refreshes about I rooms instead of about N / 40.
//! `rtc_device_users` = the sum over the rooms active in this poll of their last refreshed
//! device counts (bots left out; `harmony` and unknown types count as `other`), plus the watched
//! users who are online but not listed in any of those refreshed rooms, one per distinct device
//! class among their connections' `Platform` (so a watched user inside a refreshed room is not
//! counted twice). A room never refreshed yet adds nothing: the first figures are low. While
//! rooms have people and none of them has had a readable `Property=true` answer (the refresher
//! has not got to them yet, or every answer failed), the device figures were never measured and
//! are absent, never 0.
//!
//! **Age of a device figure**, for N rooms to refresh, interval I, poll duration D (about
//! N / 40 s) and the limiter's spacing of 1.07 s at 1 QPS: when N ≤ I / 1.07 every room is
//! refreshed in every interval, at about the same offset, so a figure is about I + D old;
//! otherwise a full round takes 1.07·N s and a figure is at most about 1.07·N + I s old. A bound
//! for both: max age ≤ max(I, 1.07·N s) + I. Several
//! `devices: true` targets on one access key share the 1 QPS: count their rooms together in N.
//! Example: 400 rooms, I = 60 s: about 490 s.
//!
//! # Watched users
//!
//! `watch_users` (numeric ids) → `QueryOnlineStatus`, POST JSON `{"AppId", "UserIds"}` in
//! batches of 100 at 100 QPS; an id listed in `QueryOnlineResults` is online, one missing from
//! it offline; an answer without the map (or with it null) is a failed request. `AppId` is sent as
//! a JSON number when `app_id` is all digits (as the API documents), as a string otherwise.
//!
//! # Room discovery (`discover_rooms: true`)
//!
//! `ListRoomInfo` lists calls by creation time in RFC 3339 windows of at most 24 h, at most 14
//! days back, pages of 100 at 10 QPS. Paging ends on a short or empty page (or `HasMore`
//! false), at most 1000 pages (`page_cap`); calls listed again merge by room and `CallId`
//! (`duplicate_row`); `Total` against the distinct calls is `total_mismatch`; `IsFinished`
//! false with a `DestroyTime` reads as ended (`finished_with_running_flag`). The rooms with an unfinished call are polled, together
//! with `rooms:` (the union). A call's creation time never changes, so listed windows need not be
//! listed again: each poll lists only the windows since the previous listing (less a 10 minute
//! margin for late indexing), and the unfinished rooms created before that are remembered until
//! `GetRoomOnlineUsers` says they no longer exist. The 14 days before the first poll are walked
//! back [`DEEP_WINDOWS_PER_POLL`] window a poll (the first poll lists the last 24 h plus the day
//! before), so rooms created up to 14 days ago that still run are found within 13 polls, and no
//! poll lists more than two days of a busy app (10 000 calls a day: 100 pages a day at 10 QPS).

pub mod sign;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat};
use chrono_tz::Tz;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::merged::{Identity, Merged};
use super::util::{distinct, id_string, lenient_bool, lenient_u64, windows_back};
use super::{
    Anomaly, Api, BoxFuture, CallError, DayFigures, Device, DeviceCounts, Observation, PollCtx,
    PollError, RoomObservation, TargetInfo, Vendor, VendorEntry,
};
use crate::fields::{from_value, FieldError, Secret};
use crate::lock::lock;

/// The registry row.
pub const ENTRY: VendorEntry = VendorEntry {
    name: "volcengine_rtc",
    parse,
};

/// Users in one room (the `api` label and the 40 QPS bucket).
pub const GET_ROOM: &str = "GetRoomOnlineUsers";
/// The limiter bucket of `GetRoomOnlineUsers` with `Property=true` (1 QPS).
pub const PROPERTY_BUCKET: &str = "GetRoomOnlineUsers.Property";
/// Online status of given user ids.
pub const QUERY_ONLINE: &str = "QueryOnlineStatus";
/// Calls of the app by creation time.
pub const LIST_ROOMS: &str = "ListRoomInfo";

const ROOM_VERSION: &str = "2023-11-01";
const ONLINE_VERSION: &str = "2020-12-01";
const ROOM_QPS: f64 = 40.0;
const PROPERTY_QPS: f64 = 1.0;
const ONLINE_QPS: f64 = 100.0;
const LIST_QPS: f64 = 10.0;
const DEFAULT_ENDPOINT: &str = "https://rtc.volcengineapi.com";
const SERVICE: &str = "rtc";
const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";
const JSON: &str = "application/json";

/// Requests in flight per API during a poll: enough that 40 QPS is reached with up to 200 ms
/// of latency, few enough that a request never waits long at the limiter after being signed.
pub const CONCURRENCY: usize = 8;
/// `InvisibleUserList` holds at most this many ids (documented).
const INVISIBLE_CAP: usize = 10_000;
/// User ids per `QueryOnlineStatus` call.
const BATCH: usize = 100;
/// `ListRoomInfo` page size.
const PAGE: u64 = 100;
/// A vendor that keeps saying "more" must not keep us paging forever.
const MAX_PAGES: u64 = 1000;
const DAY: i64 = 86_400;
/// How far back `ListRoomInfo` is asked: 14 days, less a margin for clocks that differ.
const DISCOVERY_BACK: i64 = 14 * DAY - 300;
/// Calls created this recently are listed again at the next poll (late indexing).
const DISCOVERY_LAG: i64 = 600;
/// Day windows of the initial 14-day walk listed per poll.
pub const DEEP_WINDOWS_PER_POLL: usize = 1;

/// Every code counted under its own label; the rest count as `other`. `InvalidParameter.*`
/// counts under its prefix; every throttle spelling (`FlowLimitExceeded`,
/// `FlowLimitExceeded.QPSOverLimit`, the gateway's `AccountFlowLimitExceeded`, any code naming
/// `FlowLimitExceeded`) counts as `FlowLimitExceeded` and pauses the account ([`throttle`]).
pub const CODES: &[&str] = &[
    "InvalidTimestamp",
    "InvalidAccessKey",
    "SignatureDoesNotMatch",
    "MissingParameter",
    "InternalError",
    "FlowLimitExceeded",
    "InvalidParameter",
];

/// The `code` label of a vendor error code: a closed set, never the raw value.
pub fn code_label(code: &str) -> &'static str {
    if throttle(code) {
        return "FlowLimitExceeded";
    }
    match code.split_once('.') {
        Some(("FlowLimitExceeded", _)) => "FlowLimitExceeded",
        Some(("InvalidParameter", _)) => "InvalidParameter",
        Some(_) => "other",
        None => CODES
            .iter()
            .find(|c| **c == code)
            .copied()
            .unwrap_or("other"),
    }
}

/// Whether a code means "too many requests": Volcengine spells it `FlowLimitExceeded`,
/// `FlowLimitExceeded.QPSOverLimit` (RTC) and `AccountFlowLimitExceeded` (the gateway, HTTP
/// 429), so any code naming `FlowLimitExceeded`.
pub fn throttle(code: &str) -> bool {
    code.contains("FlowLimitExceeded")
}

fn default_region() -> String {
    "cn-north-1".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    credentials: Credentials,
    app_id: String,
    #[serde(default = "default_region")]
    region: String,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    devices: bool,
    #[serde(default)]
    watch_users: Vec<UserId>,
    #[serde(default)]
    discover_rooms: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    access_key_id: String,
    secret_access_key: Secret,
}

/// A numeric user id: a YAML number or a string of digits.
struct UserId(u64);

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = UserId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a numeric user id (QueryOnlineStatus takes integer ids)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<UserId, E> {
                Ok(UserId(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<UserId, E> {
                u64::try_from(v)
                    .map(UserId)
                    .map_err(|_| E::custom(format!("{v} is not a user id: ids are not negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UserId, E> {
                let t = v.trim();
                if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                    if let Ok(n) = t.parse() {
                        return Ok(UserId(n));
                    }
                }
                Err(E::custom(format!(
                    "`{v}` is not a numeric user id (QueryOnlineStatus takes integer ids)"
                )))
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

/// A validated target configuration.
struct Conf {
    access_key_id: String,
    secret: Secret,
    app_id: String,
    region: String,
    rooms: BTreeSet<String>,
    devices: bool,
    /// Sorted, without duplicates.
    watch: Vec<u64>,
    discover: bool,
}

fn parse(value: serde_yaml::Value) -> Result<Arc<dyn Vendor>, FieldError> {
    Ok(Arc::new(VolcengineRtc::new(parse_conf(value)?)))
}

fn parse_conf(value: serde_yaml::Value) -> Result<Conf, FieldError> {
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
    if s.region.trim().is_empty() {
        return Err(FieldError::new("region", "must not be empty"));
    }
    if let Some(i) = s.rooms.iter().position(|r| r.is_empty()) {
        return Err(FieldError::new(
            format!("rooms[{i}]"),
            "a room id must not be empty",
        ));
    }
    if s.rooms.is_empty() && !s.discover_rooms {
        return Err(FieldError::new(
            "rooms",
            "list the rooms to poll, or set discover_rooms: true",
        ));
    }
    let watch: BTreeSet<u64> = s.watch_users.iter().map(|u| u.0).collect();
    Ok(Conf {
        access_key_id: s.credentials.access_key_id,
        secret: s.credentials.secret_access_key,
        app_id: s.app_id,
        region: s.region,
        rooms: s.rooms.into_iter().collect(),
        devices: s.devices,
        watch: watch.into_iter().collect(),
        discover: s.discover_rooms,
    })
}

// ---------------------------------------------------------------------------------------------
// Answers

/// Reads the vendor envelope: `ResponseMetadata.Error` first, whatever the HTTP status, then
/// `Result` as `T`.
fn envelope<T: DeserializeOwned>(
    api: &'static str,
    status: u16,
    body: &[u8],
) -> Result<T, CallError> {
    let ok_status = (200..300).contains(&status);
    let mut v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) if !ok_status => return Err(CallError::Http { api, status }),
        Err(e) => {
            return Err(CallError::Malformed {
                api,
                message: e.to_string(),
            })
        }
    };
    if let Some(err) = v
        .pointer("/ResponseMetadata/Error")
        .filter(|e| !e.is_null())
    {
        let code = match (err.get("Code"), err.get("CodeN")) {
            (Some(Value::String(c)), _) if !c.is_empty() => c.clone(),
            (_, Some(Value::Number(n))) => n.to_string(),
            _ => "unknown".to_string(),
        };
        let label = code_label(&code);
        let message = err
            .get("Message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        return Err(CallError::Vendor {
            api,
            throttled: throttle(&code),
            label,
            message,
            code,
        });
    }
    if !ok_status {
        return Err(CallError::Http { api, status });
    }
    let result = v.get_mut("Result").map(Value::take).unwrap_or(Value::Null);
    if result.is_null() {
        return Err(CallError::Malformed {
            api,
            message: "no Result and no ResponseMetadata.Error".into(),
        });
    }
    serde_json::from_value(result).map_err(|e| CallError::Malformed {
        api,
        message: e.to_string(),
    })
}

/// `GetRoomOnlineUsers` with `Property=false`.
#[derive(Debug, Default, Deserialize)]
struct RawOccupancy {
    // Both spellings as separate fields: an alias would reject an answer carrying both.
    #[serde(rename = "RoomExists", default)]
    exists: Option<Value>,
    #[serde(rename = "RoomExist", default)]
    exist: Option<Value>,
    #[serde(rename = "TotalUser", default)]
    total: Option<Value>,
    #[serde(rename = "TotalInvisibleUser", default)]
    total_invisible: Option<Value>,
    #[serde(rename = "VisibleUserList", default)]
    visible: Option<Vec<Value>>,
    #[serde(rename = "InvisibleUserList", default)]
    invisible: Option<Vec<Value>>,
}

/// What disagreed in one answer: reported by the poll, where the context is.
pub(crate) type Found = Vec<(Anomaly, String)>;

/// One room now, as `Property=false` tells it.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Occupancy {
    pub(crate) exists: bool,
    /// Users now: `TotalUser`, or the distinct ids listed where they are more.
    pub(crate) total: u64,
    /// Invisible users now: `TotalInvisibleUser`, or the distinct invisible ids where they are
    /// more; never above `total`.
    pub(crate) total_invisible: u64,
    /// Distinct visible ids, in the vendor's order.
    pub(crate) visible: Vec<String>,
    /// Distinct invisible ids (an id listed as visible too counts once, as visible).
    pub(crate) invisible: Vec<String>,
    /// What the answer disagreed with itself about.
    pub(crate) anomalies: Found,
}

fn malformed(api: &'static str, message: impl Into<String>) -> CallError {
    CallError::Malformed {
        api,
        message: message.into(),
    }
}

/// An optional field ([`super::util::optional`]), its error naming the field.
fn optional<T>(
    api: &'static str,
    v: &Option<Value>,
    field: &str,
    read: fn(&Value) -> Option<T>,
) -> Result<Option<T>, CallError> {
    super::util::optional(v.as_ref(), read)
        .map_err(|_| malformed(api, format!("{field} is not what the API documents")))
}

/// A list of user ids: every entry an id (a string or a number).
fn user_ids(list: &Option<Vec<Value>>, field: &str) -> Result<Vec<String>, CallError> {
    list.iter()
        .flatten()
        .enumerate()
        .map(|(i, v)| {
            id_string(v)
                .ok_or_else(|| malformed(GET_ROOM, format!("{field}[{i}] is not a user id")))
        })
        .collect()
}

/// Reads a `Property=false` answer (see [`Anomaly`] for what disagrees but still reads).
///
/// Required: `RoomExists` (or `RoomExist`); when it is true, `TotalUser`, and a list wherever
/// a count says people are there (`VisibleUserList` for `TotalUser` − `TotalInvisibleUser`,
/// `InvisibleUserList` for `TotalInvisibleUser`): without them the answer is a failed request,
/// never an empty room. A count and lists that disagree read as the larger (the count covers
/// ids a list left out; ids listed are people there): users now = max(`TotalUser`, distinct
/// ids), reported as [`Anomaly::ListShorterThanCount`] or [`Anomaly::ListLongerThanCount`]; an
/// id listed twice counts once ([`Anomaly::DuplicateRow`]). The invisible list holds at most
/// 10 000 ids by the API's documentation: a list cut there is no anomaly.
pub(crate) fn parse_occupancy(status: u16, body: &[u8]) -> Result<Occupancy, CallError> {
    let raw: RawOccupancy = envelope(GET_ROOM, status, body)?;
    let exists = match &raw.exists {
        None | Some(Value::Null) => &raw.exist,
        some => some,
    };
    let Some(exists) = optional(GET_ROOM, exists, "RoomExists", lenient_bool)? else {
        return Err(malformed(
            GET_ROOM,
            "RoomExists missing (nor RoomExist): whether the room is in progress is not told",
        ));
    };
    if !exists {
        return Ok(Occupancy::default());
    }
    let visible = user_ids(&raw.visible, "VisibleUserList")?;
    let invisible = user_ids(&raw.invisible, "InvisibleUserList")?;
    let Some(total) = optional(GET_ROOM, &raw.total, "TotalUser", lenient_u64)? else {
        return Err(malformed(GET_ROOM, "RoomExists true but TotalUser missing"));
    };
    let declared_invisible = optional(
        GET_ROOM,
        &raw.total_invisible,
        "TotalInvisibleUser",
        lenient_u64,
    )?;
    // A list left out (or null) where its count says people are there: a failed request.
    let invisible_count = declared_invisible.unwrap_or(invisible.len() as u64);
    let visible_count = total.saturating_sub(invisible_count);
    if raw.visible.is_none() && raw.invisible.is_none() && total > 0 {
        return Err(malformed(
            GET_ROOM,
            format!("TotalUser {total} but neither VisibleUserList nor InvisibleUserList"),
        ));
    }
    if raw.visible.is_none() && visible_count > 0 {
        return Err(malformed(
            GET_ROOM,
            format!(
                "VisibleUserList missing or null with TotalUser {total} and TotalInvisibleUser {invisible_count}"
            ),
        ));
    }
    if raw.invisible.is_none() && invisible_count > 0 {
        return Err(malformed(
            GET_ROOM,
            format!("InvisibleUserList missing or null with TotalInvisibleUser {invisible_count}"),
        ));
    }
    let listed_invisible = invisible.len();
    let mut seen = HashSet::new();
    let (visible, rv) = distinct(visible, &mut seen);
    let (invisible, ri) = distinct(invisible, &mut seen);
    let mut anomalies = Found::new();
    if rv + ri > 0 {
        anomalies.push((
            Anomaly::DuplicateRow,
            format!(
                "{} ids listed more than once ({rv} in VisibleUserList, {ri} in InvisibleUserList or both lists): counted once",
                rv + ri
            ),
        ));
    }
    let ids = (visible.len() + invisible.len()) as u64;
    // The invisible list is documented to stop at 10 000 ids.
    let cut = listed_invisible >= INVISIBLE_CAP
        && (visible.len() as u64) >= visible_count
        && invisible_count > listed_invisible as u64;
    let lists = || {
        format!(
            "TotalUser {total}, TotalInvisibleUser {}, {} visible and {} invisible ids listed",
            declared_invisible.map_or("absent".to_string(), |n| n.to_string()),
            visible.len(),
            invisible.len()
        )
    };
    if ids < total && !cut {
        anomalies.push((
            Anomaly::ListShorterThanCount,
            format!("{}: users now {total} from TotalUser", lists()),
        ));
    } else if ids > total {
        anomalies.push((
            Anomaly::ListLongerThanCount,
            format!("{}: users now {ids} from the ids", lists()),
        ));
    }
    if let Some(ti) = declared_invisible.filter(|ti| *ti > total.max(ids)) {
        anomalies.push((
            Anomaly::TotalMismatch,
            format!("TotalInvisibleUser {ti} above TotalUser {total}: invisible users read as at most the users"),
        ));
    }
    let users = total.max(ids);
    let invisible_now = invisible_count.max(invisible.len() as u64).min(users);
    Ok(Occupancy {
        exists,
        total: users,
        total_invisible: invisible_now,
        visible,
        invisible,
        anomalies,
    })
}

/// `GetRoomOnlineUsers` with `Property=true`.
#[derive(Debug, Deserialize)]
struct RawDetail {
    // Both spellings as separate fields: an alias would reject an answer carrying both.
    #[serde(rename = "RoomExists", default)]
    exists: Option<Value>,
    #[serde(rename = "RoomExist", default)]
    exist: Option<Value>,
    #[serde(rename = "VisibleUserList", default)]
    visible: Option<Vec<RawUser>>,
    #[serde(rename = "InvisibleUserList", default)]
    invisible: Option<Vec<RawUser>>,
}

#[derive(Debug, Deserialize)]
struct RawUser {
    #[serde(rename = "UserId", default)]
    user: Option<Value>,
    #[serde(rename = "UserID", default)]
    user_upper: Option<Value>,
    #[serde(rename = "DeviceType", default)]
    device: Option<String>,
    #[serde(rename = "MediaProcessingType", default)]
    media_processing: Option<Value>,
}

/// What one room's last `Property=true` answer said.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RoomDevices {
    /// People (bots left out) by device class.
    pub(crate) counts: DeviceCounts,
    /// The people listed.
    pub(crate) people: HashSet<String>,
    /// The bots listed (`MediaProcessingType` present).
    pub(crate) bots: HashSet<String>,
}

/// Reads a `Property=true` answer: people by device, and the bots. `RoomExist` (or
/// `RoomExists`) is required, and so is each listed user's id; a user listed twice counts once
/// ([`Anomaly::DuplicateRow`]).
#[cfg(test)]
pub(crate) fn parse_detail(status: u16, body: &[u8]) -> Result<RoomDevices, CallError> {
    read_detail(status, body).map(|(d, _)| d)
}

/// [`parse_detail`] with what the answer disagreed with itself about.
fn read_detail(status: u16, body: &[u8]) -> Result<(RoomDevices, Found), CallError> {
    let raw: RawDetail = envelope(GET_ROOM, status, body)?;
    let mut out = RoomDevices::default();
    let mut found = Found::new();
    let exists = match &raw.exists {
        None | Some(Value::Null) => &raw.exist,
        some => some,
    };
    match optional(GET_ROOM, exists, "RoomExist", lenient_bool)? {
        None => {
            return Err(malformed(
                GET_ROOM,
                "RoomExist missing (nor RoomExists): whether the room is in progress is not told",
            ))
        }
        Some(false) => return Ok((out, found)),
        Some(true) => {}
    }
    let mut repeats = 0usize;
    let lists = [
        ("VisibleUserList", &raw.visible),
        ("InvisibleUserList", &raw.invisible),
    ];
    for (field, list) in lists {
        for (i, u) in list.iter().flatten().enumerate() {
            let Some(id) = u
                .user
                .as_ref()
                .filter(|v| !v.is_null())
                .or(u.user_upper.as_ref())
                .and_then(id_string)
            else {
                return Err(malformed(
                    GET_ROOM,
                    format!("{field}[{i}] has no UserId (nor UserID)"),
                ));
            };
            if u.media_processing.as_ref().is_some_and(|m| !m.is_null()) {
                if !out.bots.insert(id) {
                    repeats += 1;
                }
            } else if out.people.insert(id) {
                let device = Device::from_name(u.device.as_deref().unwrap_or(""));
                *out.counts.entry(device).or_default() += 1;
            } else {
                repeats += 1;
            }
        }
    }
    if repeats > 0 {
        found.push((
            Anomaly::DuplicateRow,
            format!("{repeats} users listed more than once (Property=true): counted once"),
        ));
    }
    Ok((out, found))
}

#[derive(Debug, Deserialize)]
struct RawOnline {
    #[serde(rename = "QueryOnlineResults", default)]
    results: Option<HashMap<String, Option<Vec<RawConn>>>>,
}

#[derive(Debug, Deserialize)]
struct RawConn {
    #[serde(rename = "Platform", default)]
    platform: Option<String>,
}

/// Online users of one batch: id → the distinct device classes of their connections. An id
/// missing from `QueryOnlineResults` is offline; the map itself is required.
pub(crate) fn parse_online(
    status: u16,
    body: &[u8],
) -> Result<HashMap<String, BTreeSet<Device>>, CallError> {
    let raw: RawOnline = envelope(QUERY_ONLINE, status, body)?;
    // The map lists who is online; without it nobody's status is told (never "all offline").
    let Some(results) = raw.results else {
        return Err(malformed(
            QUERY_ONLINE,
            "QueryOnlineResults missing or null: no user's status is told",
        ));
    };
    Ok(results
        .into_iter()
        .map(|(id, conns)| {
            let devices = conns
                .iter()
                .flatten()
                .map(|c| Device::from_name(c.platform.as_deref().unwrap_or("")))
                .collect();
            (id.trim().to_string(), devices)
        })
        .collect())
}

#[derive(Debug, Deserialize)]
struct RawRoomsPage {
    #[serde(rename = "Total", default)]
    total: Option<Value>,
    #[serde(rename = "HasMore", default)]
    has_more: Option<Value>,
    #[serde(rename = "RoomList", default)]
    rooms: Option<Vec<Value>>,
}

/// One call of `ListRoomInfo`.
#[derive(Debug, Clone, PartialEq)]
struct Listed {
    room: String,
    /// `CallId`: with the room, the row's identity.
    call: Option<String>,
    finished: bool,
    /// Creation time, Unix seconds, when it could be read.
    created: Option<i64>,
}

/// One page of `ListRoomInfo`.
pub(crate) struct RoomsPage {
    rows: Vec<Listed>,
    /// What the page disagreed with itself about.
    anomalies: Found,
    pub(crate) returned: u64,
    pub(crate) total: Option<u64>,
    pub(crate) has_more: Option<bool>,
}

fn parse_time(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .map(|t| t.timestamp())
            .or_else(|| s.trim().parse::<i64>().ok().map(unix_seconds)),
        Value::Number(n) => n.as_i64().map(unix_seconds),
        _ => None,
    }
}

/// Seconds or milliseconds since 1970, whichever the number is.
fn unix_seconds(n: i64) -> i64 {
    if n > 100_000_000_000 {
        n / 1000
    } else {
        n
    }
}

/// Reads one `ListRoomInfo` page. `RoomList` is required when `Total` or `HasMore` says there
/// are calls. A call with `IsFinished: false` and a `DestroyTime` is read as finished
/// ([`Anomaly::FinishedWithRunningFlag`]).
pub(crate) fn parse_rooms_page(status: u16, body: &[u8]) -> Result<RoomsPage, CallError> {
    let raw: RawRoomsPage = envelope(LIST_ROOMS, status, body)?;
    let total = optional(LIST_ROOMS, &raw.total, "Total", lenient_u64)?;
    let has_more = optional(LIST_ROOMS, &raw.has_more, "HasMore", lenient_bool)?;
    let Some(list) = raw.rooms else {
        if total.is_some_and(|t| t > 0) || has_more == Some(true) {
            return Err(malformed(
                LIST_ROOMS,
                format!(
                    "RoomList missing or null with Total {} and HasMore {}",
                    total.map_or("absent".to_string(), |t| t.to_string()),
                    has_more.map_or("absent".to_string(), |m| m.to_string())
                ),
            ));
        }
        return Ok(RoomsPage {
            rows: Vec::new(),
            anomalies: Found::new(),
            returned: 0,
            total,
            has_more,
        });
    };
    let mut anomalies = Found::new();
    let mut running_but_ended = Vec::new();
    let rows = list
        .iter()
        .filter_map(|r| {
            let room = r.get("RoomId").and_then(id_string)?;
            let flagged = r.get("IsFinished").and_then(lenient_bool).unwrap_or(false);
            let destroyed = r.get("DestroyTime").and_then(parse_time).filter(|t| *t > 0);
            if !flagged && destroyed.is_some() {
                running_but_ended.push(room.clone());
            }
            Some(Listed {
                call: r.get("CallId").and_then(id_string),
                finished: flagged || destroyed.is_some(),
                created: r.get("CreatedTime").and_then(parse_time),
                room,
            })
        })
        .collect();
    if !running_but_ended.is_empty() {
        anomalies.push((
            Anomaly::FinishedWithRunningFlag,
            format!(
                "{} calls with IsFinished false and a DestroyTime, read as ended (rooms {})",
                running_but_ended.len(),
                running_but_ended.join(", ")
            ),
        ));
    }
    Ok(RoomsPage {
        rows,
        anomalies,
        returned: list.len() as u64,
        total,
        has_more,
    })
}

/// The calls of all pages of one window, merged by identity (room and `CallId`): a call listed
/// again (on one page or a later one) counts once, its last listing winning.
fn merge_calls(pages: Vec<Vec<Listed>>) -> (Vec<Listed>, usize) {
    let mut merged = Merged::new();
    merged.extend(pages.into_iter().flatten());
    (merged.rows, merged.repeated)
}

impl Identity for Listed {
    type Key = (String, Option<String>);
    fn key(&self) -> (String, Option<String>) {
        (self.room.clone(), self.call.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// Pure pieces of the poll

/// A room's observation from its occupancy and the bots its last refresh named.
fn room_observation(room: &str, occ: &Occupancy, bots: &HashSet<String>) -> RoomObservation {
    if !occ.exists {
        return RoomObservation {
            room: room.to_string(),
            active: false,
            users: 0,
            invisible: Some(0),
            day: DayFigures::Present(Vec::new()),
        };
    }
    let visible_bots = occ.visible.iter().filter(|u| bots.contains(*u)).count() as u64;
    let invisible_bots = occ.invisible.iter().filter(|u| bots.contains(*u)).count() as u64;
    let mut ids: Vec<String> = occ
        .visible
        .iter()
        .chain(&occ.invisible)
        .filter(|u| !bots.contains(*u))
        .cloned()
        .collect();
    ids.sort();
    ids.dedup();
    RoomObservation {
        room: room.to_string(),
        active: true,
        users: occ.total.saturating_sub(visible_bots + invisible_bots),
        invisible: Some(occ.total_invisible.saturating_sub(invisible_bots)),
        day: DayFigures::Present(ids),
    }
}

/// Device totals: the active rooms' last refreshed counts, plus online watched users listed in
/// none of those refreshes, once per distinct device class of their connections.
fn device_totals<'a>(
    refreshed: impl Iterator<Item = &'a RoomDevices>,
    online: &HashMap<String, BTreeSet<Device>>,
) -> DeviceCounts {
    let mut counts: DeviceCounts = Device::ALL.iter().map(|d| (*d, 0)).collect();
    let mut people: HashSet<&str> = HashSet::new();
    for r in refreshed {
        for (d, n) in &r.counts {
            *counts.entry(*d).or_default() += n;
        }
        people.extend(r.people.iter().map(String::as_str));
    }
    for (user, devices) in online {
        if !people.contains(user.as_str()) {
            for d in devices {
                *counts.entry(*d).or_default() += 1;
            }
        }
    }
    counts
}

/// The refresh order: `rooms` (sorted) starting after `cursor`, wrapping around.
fn refresh_order(rooms: &[String], cursor: Option<&str>) -> Vec<String> {
    let start = cursor.map_or(0, |c| rooms.partition_point(|r| r.as_str() <= c));
    let mut order = rooms.to_vec();
    let n = order.len();
    order.rotate_left(start.min(n));
    order
}

/// Windows of at most one day covering [from, to], newest first.
fn windows(from: i64, to: i64) -> Vec<(i64, i64)> {
    windows_back(from, to, DAY)
}

/// What one poll lists: `fresh` windows since the last listing, `deep` windows of the initial
/// 14-day walk, and the bounds to remember once they are all listed.
#[derive(Debug, PartialEq)]
struct Plan {
    fresh: Vec<(i64, i64)>,
    deep: Vec<(i64, i64)>,
    /// Calls created before this are remembered; later ones are listed again next poll.
    remember_before: i64,
    back_to: i64,
}

/// `listed`: creation times in [back_to, listed_to) listed so far (`None` before the first).
fn plan(listed: Option<(i64, i64)>, now: i64) -> Plan {
    let floor = now - DISCOVERY_BACK;
    let (back_to, listed_to) = listed.unwrap_or((now - DAY, now - DAY));
    let fresh = windows(listed_to.max(floor), now);
    let deep: Vec<_> = windows(floor, back_to)
        .into_iter()
        .take(DEEP_WINDOWS_PER_POLL)
        .collect();
    Plan {
        back_to: deep.last().map_or(back_to, |w| w.0),
        remember_before: (now - DISCOVERY_LAG).max(listed_to),
        fresh,
        deep,
    }
}

// ---------------------------------------------------------------------------------------------
// The client

/// Rooms found by `ListRoomInfo`, kept across polls.
#[derive(Debug, Default)]
struct Discovery {
    /// Rooms with an unfinished call created before `listed.1`, until they no longer exist.
    known: BTreeSet<String>,
    /// Creation times in [back_to, listed_to) have been listed.
    listed: Option<(i64, i64)>,
}

/// What the target remembers between polls.
#[derive(Default)]
struct State {
    /// Each room's last `Property=true` answer.
    devices: HashMap<String, RoomDevices>,
    /// The last room the refresher got to.
    cursor: Option<String>,
    /// Rooms that did not exist at the last poll (not refreshed).
    gone: HashSet<String>,
    /// The running refresher.
    refresher: Option<JoinHandle<()>>,
    discovery: Discovery,
    /// The last room of the occupancy round that every room before it (in the round's order)
    /// got to: a poll cut short by `poll_timeout` continues after it.
    poll_cursor: Option<String>,
}

/// One configured Volcengine RTC target.
pub struct VolcengineRtc {
    conf: Arc<Conf>,
    state: Arc<Mutex<State>>,
}

impl VolcengineRtc {
    fn new(conf: Conf) -> Self {
        VolcengineRtc {
            conf: Arc::new(conf),
            state: Arc::new(Mutex::new(State::default())),
        }
    }
}

impl Drop for VolcengineRtc {
    fn drop(&mut self) {
        if let Some(h) = lock(&self.state).refresher.take() {
            h.abort();
        }
    }
}

/// Signs and sends requests for one poll.
struct Client<'a> {
    ctx: &'a PollCtx,
    conf: &'a Conf,
    /// `scheme://host[:port]`.
    base: String,
    /// The `Host` header as sent.
    host: String,
}

impl<'a> Client<'a> {
    fn new(ctx: &'a PollCtx, conf: &'a Conf) -> Result<Self, CallError> {
        let endpoint = ctx.endpoint_or(DEFAULT_ENDPOINT);
        let bad = || CallError::Transport {
            api: GET_ROOM,
            message: "endpoint is not an http(s) URL with a host".into(),
        };
        let url = reqwest::Url::parse(endpoint).map_err(|_| bad())?;
        let host = url.host_str().ok_or_else(bad)?;
        let host = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(Client {
            ctx,
            conf,
            base: format!("{}://{host}", url.scheme()),
            host,
        })
    }

    /// A signed request; `X-Date` is now.
    fn request(
        &self,
        method: reqwest::Method,
        query: &[(&str, &str)],
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        // Years 0000-9999 only; the clock is in them.
        let x_date = sign::x_date(self.ctx.wall_now().timestamp()).unwrap_or_default();
        let signed = sign::sign(
            &sign::Request {
                method: method.as_str(),
                host: &self.host,
                path: "/",
                query,
                content_type: Some(content_type),
                body: &body,
            },
            &sign::Credentials {
                access_key_id: &self.conf.access_key_id,
                secret_access_key: self.conf.secret.expose(),
                region: &self.conf.region,
                service: SERVICE,
            },
            &x_date,
        );
        self.ctx
            .plumbing
            .http
            .request(method, format!("{}/?{}", self.base, signed.canonical_query))
            .header("Content-Type", content_type)
            .header("X-Date", signed.x_date)
            .header("X-Content-Sha256", signed.x_content_sha256)
            .header("Authorization", signed.authorization)
            .body(body)
    }

    fn room_query<'q>(&'q self, room: &'q str, property: &'q str) -> [(&'q str, &'q str); 5] {
        [
            ("Action", GET_ROOM),
            ("Version", ROOM_VERSION),
            ("AppId", &self.conf.app_id),
            ("RoomId", room),
            ("Property", property),
        ]
    }

    async fn occupancy(&self, api: &Api<'_>, room: &str) -> Result<Occupancy, CallError> {
        let req = self.request(
            reqwest::Method::GET,
            &self.room_query(room, "false"),
            FORM,
            Vec::new(),
        );
        let occ = api.call(req, parse_occupancy).await?;
        for (kind, detail) in &occ.anomalies {
            self.ctx
                .anomaly(GET_ROOM, *kind, format!("room {room}: {detail}"));
        }
        Ok(occ)
    }

    async fn detail(&self, api: &Api<'_>, room: &str) -> Result<RoomDevices, CallError> {
        let req = self.request(
            reqwest::Method::GET,
            &self.room_query(room, "true"),
            FORM,
            Vec::new(),
        );
        let (devices, found) = api.call(req, read_detail).await?;
        for (kind, detail) in found {
            self.ctx
                .anomaly(GET_ROOM, kind, format!("room {room}: {detail}"));
        }
        Ok(devices)
    }

    /// Every room's occupancy, [`CONCURRENCY`] in flight, in `order`. Each answer is reported
    /// to the poll's progress as it arrives (a failed room keeps its last values) together with
    /// the round-robin cursor, so a poll cut short continues where it stopped. Returns the
    /// rooms that answered, or the first error when none did.
    async fn occupancies(
        &self,
        order: Vec<String>,
        state: &Mutex<State>,
    ) -> Result<Vec<(String, Occupancy)>, CallError> {
        let api = self.ctx.api(GET_ROOM, &self.conf.access_key_id, ROOM_QPS);
        let api = &api;
        let total = order.len();
        // Owned items: a closure over borrowed ones makes the boxed poll future not `Send`
        // for every lifetime (rust-lang/rust#102211).
        let mut answers = stream::iter(order.into_iter().enumerate())
            .map(|(i, room)| async move {
                let occ = self.occupancy(api, &room).await;
                (i, room, occ)
            })
            .buffer_unordered(CONCURRENCY);
        let mut finished = vec![false; total];
        let mut contiguous = 0usize;
        let mut names: Vec<Option<String>> = vec![None; total];
        let mut got = Vec::new();
        let mut first_error = None;
        let none = HashSet::new();
        while let Some((i, room, occ)) = answers.next().await {
            let mut st = lock(state);
            match occ {
                Ok(occ) => {
                    if occ.exists {
                        st.gone.remove(&room);
                    } else {
                        st.gone.insert(room.clone());
                        st.devices.remove(&room);
                        st.discovery.known.remove(&room);
                    }
                    let bots = st.devices.get(&room).map_or(&none, |d| &d.bots);
                    self.ctx.room_done(room_observation(&room, &occ, bots));
                    got.push((room.clone(), occ));
                }
                Err(e) => {
                    self.ctx.room_failed(&room, &e);
                    first_error.get_or_insert(e);
                }
            }
            finished[i] = true;
            names[i] = Some(room);
            while contiguous < total && finished[contiguous] {
                contiguous += 1;
            }
            if contiguous > 0 {
                st.poll_cursor = names[contiguous - 1].clone();
            }
        }
        match first_error {
            Some(e) if got.is_empty() && total > 0 => Err(e),
            _ => Ok(got),
        }
    }

    /// Online watched users: id → device classes of their connections.
    async fn online(&self) -> Result<HashMap<String, BTreeSet<Device>>, CallError> {
        if self.conf.watch.is_empty() {
            return Ok(HashMap::new());
        }
        let api = self
            .ctx
            .api(QUERY_ONLINE, &self.conf.access_key_id, ONLINE_QPS);
        let api = &api;
        let app: Value = match self.conf.app_id.parse::<u64>() {
            Ok(n) if self.conf.app_id.bytes().all(|b| b.is_ascii_digit()) => n.into(),
            _ => self.conf.app_id.clone().into(),
        };
        let app = &app;
        let batches: Vec<HashMap<String, BTreeSet<Device>>> =
            stream::iter(self.conf.watch.chunks(BATCH).map(<[u64]>::to_vec))
                .map(|ids| async move {
                    let body = serde_json::json!({ "AppId": app, "UserIds": ids }).to_string();
                    let req = self.request(
                        reqwest::Method::POST,
                        &[("Action", QUERY_ONLINE), ("Version", ONLINE_VERSION)],
                        JSON,
                        body.into_bytes(),
                    );
                    api.call(req, parse_online).await
                })
                .buffer_unordered(CONCURRENCY)
                .try_collect()
                .await?;
        Ok(batches.into_iter().flatten().collect())
    }

    /// Every call created in [start, end], all pages.
    async fn list_window(
        &self,
        api: &Api<'_>,
        tz: Tz,
        (start, end): (i64, i64),
    ) -> Result<Vec<Listed>, CallError> {
        let rfc3339 = |t: i64| {
            DateTime::from_timestamp(t, 0)
                .unwrap_or_default()
                .with_timezone(&tz)
                .to_rfc3339_opts(SecondsFormat::Secs, false)
        };
        let (from, to) = (rfc3339(start), rfc3339(end));
        let size = PAGE.to_string();
        let mut pages = Vec::new();
        let mut declared = None;
        let mut capped = false;
        for page in 1..=MAX_PAGES {
            let page_num = page.to_string();
            let req = self.request(
                reqwest::Method::GET,
                &[
                    ("Action", LIST_ROOMS),
                    ("Version", ROOM_VERSION),
                    ("AppId", &self.conf.app_id),
                    ("StartTime", &from),
                    ("EndTime", &to),
                    ("PageNum", &page_num),
                    ("PageSize", &size),
                ],
                FORM,
                Vec::new(),
            );
            let p = api.call(req, parse_rooms_page).await?;
            for (kind, detail) in p.anomalies {
                self.ctx
                    .anomaly(LIST_ROOMS, kind, format!("window {from}..{to}: {detail}"));
            }
            declared = declared.or(p.total);
            pages.push(p.rows);
            // A short or empty page is the last, whatever HasMore says; so is a full one the
            // vendor says nothing follows.
            if p.returned < PAGE || p.has_more == Some(false) {
                break;
            }
            if page == MAX_PAGES {
                capped = true;
            }
        }
        let (rows, repeats) = merge_calls(pages);
        if repeats > 0 {
            self.ctx.anomaly(
                LIST_ROOMS,
                Anomaly::DuplicateRow,
                format!("window {from}..{to}: {repeats} calls listed again (room and CallId), counted once"),
            );
        }
        if capped {
            self.ctx.anomaly(
                LIST_ROOMS,
                Anomaly::PageCap,
                format!("window {from}..{to}: stopped at {MAX_PAGES} pages of {PAGE}, the vendor still listing"),
            );
        } else if let Some(t) = declared.filter(|t| *t != rows.len() as u64) {
            self.ctx.anomaly(
                LIST_ROOMS,
                Anomaly::TotalMismatch,
                format!(
                    "window {from}..{to}: Total {t}, {} distinct calls listed",
                    rows.len()
                ),
            );
        }
        Ok(rows)
    }

    /// Lists the windows of `plan`: (fresh calls, calls of the deep walk).
    async fn discover(&self, plan: &Plan) -> Result<(Vec<Listed>, Vec<Listed>), CallError> {
        let api = self.ctx.api(LIST_ROOMS, &self.conf.access_key_id, LIST_QPS);
        let mut fresh = Vec::new();
        for w in &plan.fresh {
            fresh.extend(self.list_window(&api, self.ctx.tz, *w).await?);
        }
        let mut deep = Vec::new();
        for w in &plan.deep {
            deep.extend(self.list_window(&api, self.ctx.tz, *w).await?);
        }
        Ok((fresh, deep))
    }
}

/// Refreshes `order` with `Property=true`, one room at a time at the 1 QPS limiter. Failures are
/// counted and logged by [`Api::call`] and skipped: the room keeps its last figures.
async fn refresh(ctx: PollCtx, conf: Arc<Conf>, state: Arc<Mutex<State>>, order: Vec<String>) {
    let Ok(client) = Client::new(&ctx, &conf) else {
        return;
    };
    let api = ctx.api_bucket(GET_ROOM, PROPERTY_BUCKET, &conf.access_key_id, PROPERTY_QPS);
    for room in order {
        let result = client.detail(&api, &room).await;
        let mut st = lock(&state);
        if let Ok(d) = result {
            st.devices.insert(room.clone(), d);
        }
        st.cursor = Some(room);
    }
}

impl VolcengineRtc {
    /// Aborts the previous refresher and spawns one for `rooms`.
    fn start_refresher(&self, ctx: &PollCtx, rooms: &[String]) {
        let mut st = lock(&self.state);
        if let Some(h) = st.refresher.take() {
            h.abort();
        }
        let candidates: Vec<String> = rooms
            .iter()
            .filter(|r| !st.gone.contains(*r))
            .cloned()
            .collect();
        let mut order = refresh_order(&candidates, st.cursor.as_deref());
        // Rooms never refreshed first (a stable sort keeps the round robin among the rest):
        // until a room's first Property=true answer its bots cannot be told from users.
        order.sort_by_key(|r| st.devices.contains_key(r));
        st.refresher = Some(tokio::spawn(refresh(
            ctx.to_owned_ctx(),
            self.conf.clone(),
            self.state.clone(),
            order,
        )));
    }

    /// The rooms to poll: `rooms:` plus, with discovery, the rooms with an unfinished call.
    async fn rooms(&self, ctx: &PollCtx, client: &Client<'_>) -> Result<Vec<String>, CallError> {
        let mut rooms = self.conf.rooms.clone();
        if !self.conf.discover {
            return Ok(rooms.into_iter().collect());
        }
        let listed = lock(&self.state).discovery.listed;
        let plan = plan(listed, ctx.now.timestamp());
        let (fresh, deep) = client.discover(&plan).await?;
        let mut st = lock(&self.state);
        let d = &mut st.discovery;
        for l in deep.iter().filter(|l| !l.finished) {
            d.known.insert(l.room.clone());
        }
        for l in fresh.iter().filter(|l| !l.finished) {
            // Created recently: listed again next poll. Not told when: remembered.
            if l.created.is_none_or(|c| c < plan.remember_before) {
                d.known.insert(l.room.clone());
            } else {
                rooms.insert(l.room.clone());
            }
        }
        d.listed = Some((plan.back_to, plan.remember_before));
        rooms.extend(d.known.iter().cloned());
        Ok(rooms.into_iter().collect())
    }

    async fn fetch(&self, ctx: &PollCtx) -> Result<Observation, PollError> {
        let client = Client::new(ctx, &self.conf)?;
        let rooms = self.rooms(ctx, &client).await?;
        if self.conf.devices {
            self.start_refresher(ctx, &rooms);
        }
        // Round robin: a target with more rooms than one poll can ask for at 40 QPS within
        // poll_timeout covers them over several polls.
        let order = refresh_order(&rooms, lock(&self.state).poll_cursor.as_deref());
        let (occupancies, online) =
            tokio::join!(client.occupancies(order, &self.state), client.online());
        let occupancies = occupancies?;
        let online = online?;

        let mut st = lock(&self.state);
        let st = &mut *st;
        // Forget rooms no longer polled.
        let polled: HashSet<&String> = rooms.iter().collect();
        st.devices.retain(|r, _| polled.contains(r));
        st.gone.retain(|r| polled.contains(r));
        let active: Vec<&String> = occupancies
            .iter()
            .filter(|(_, occ)| occ.exists)
            .map(|(room, _)| room)
            .collect();
        // A figure never measured is absent, never 0: while rooms have people and none of
        // them has had a Property=true answer yet (the refresher has not got to them, or
        // every answer failed), there are no device figures. Rooms refreshed earlier keep
        // their last counts.
        let occupied = occupancies
            .iter()
            .filter(|(_, occ)| occ.exists && occ.total > 0);
        let measured = occupied
            .clone()
            .any(|(room, _)| st.devices.contains_key(room));
        let unmeasured = occupied.count() > 0 && !measured;
        let devices = (self.conf.devices && !unmeasured).then(|| {
            device_totals(
                active.iter().filter_map(|room| st.devices.get(*room)),
                &online,
            )
        });
        let watched = self
            .conf
            .watch
            .iter()
            .map(|id| {
                let id = id.to_string();
                let on = online.contains_key(&id);
                (id, on)
            })
            .collect();
        Ok(Observation {
            devices,
            watched,
            ..Observation::default()
        })
    }
}

impl Vendor for VolcengineRtc {
    fn documented_qps(&self) -> Option<f64> {
        Some(ONLINE_QPS)
    }
    fn info(&self) -> TargetInfo {
        TargetInfo {
            app: self.conf.app_id.clone(),
            region: self.conf.region.clone(),
        }
    }

    /// Where the device refresher and the occupancy round stood: a restart goes on with the
    /// rooms after them instead of the first rooms again.
    fn cursors(&self) -> Option<Value> {
        let st = lock(&self.state);
        if st.cursor.is_none() && st.poll_cursor.is_none() {
            return None;
        }
        Some(serde_json::json!({"refresh": st.cursor, "round": st.poll_cursor}))
    }

    fn restore_cursors(&self, saved: Value) -> Result<(), String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Saved {
            refresh: Option<String>,
            round: Option<String>,
        }
        let saved: Saved =
            serde_json::from_value(saved).map_err(|e| format!("Volcengine cursors: {e}"))?;
        let mut st = lock(&self.state);
        st.cursor = saved.refresh;
        st.poll_cursor = saved.round;
        Ok(())
    }

    fn poll<'a>(&'a self, ctx: &'a PollCtx) -> BoxFuture<'a, Result<Observation, PollError>> {
        Box::pin(self.fetch(ctx))
    }

    fn budget(&self) -> Option<super::Budget> {
        // Discovery adds rooms the config does not know.
        (!self.conf.discover).then(|| super::Budget {
            requests: self.conf.rooms.len() as u64,
            qps: ROOM_QPS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(result: Value) -> Vec<u8> {
        serde_json::json!({
            "ResponseMetadata": {"RequestId": "r", "Action": "GetRoomOnlineUsers",
                "Version": "2023-11-01", "Service": "rtc", "Region": "cn-north-1"},
            "Result": result,
        })
        .to_string()
        .into_bytes()
    }

    fn failure(code: &str, code_n: u64) -> Vec<u8> {
        serde_json::json!({
            "ResponseMetadata": {"RequestId": "r", "Action": "GetRoomOnlineUsers",
                "Version": "2023-11-01", "Service": "rtc", "Region": "cn-north-1",
                "Error": {"CodeN": code_n, "Code": code, "Message": "because"}},
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn property_false_doc_example() {
        let body = br#"{ "ResponseMetadata": { "RequestId": "20230604110420****100232280022D31", "Action": "GetRoomOnlineUsers", "Version": "2023-11-01", "Service": "rtc", "Region": "cn-north-1" }, "Result": { "TotalUser": 2, "TotalInvisibleUser": 1, "VisibleUserList": [ "normal_user_1" ], "InvisibleUserList": [ "silent_user_1" ], "RoomExists": true } }"#;
        let occ = parse_occupancy(200, body).map_err(|e| e.to_string());
        assert_eq!(
            occ,
            Ok(Occupancy {
                exists: true,
                total: 2,
                total_invisible: 1,
                visible: vec!["normal_user_1".into()],
                invisible: vec!["silent_user_1".into()],
                anomalies: Vec::new(),
            })
        );
    }

    #[test]
    fn room_exists_in_both_spellings() {
        for key in ["RoomExists", "RoomExist"] {
            let gone = parse_occupancy(200, &ok(serde_json::json!({ key: false })));
            assert_eq!(gone.ok(), Some(Occupancy::default()), "{key}");
            let here = parse_occupancy(
                200,
                &ok(serde_json::json!({ key: true, "TotalUser": 1, "VisibleUserList": ["a"] })),
            );
            assert_eq!(here.map(|o| (o.exists, o.total)).ok(), Some((true, 1)));
            let detail = parse_detail(200, &ok(serde_json::json!({ key: false })));
            assert_eq!(detail.ok(), Some(RoomDevices::default()));
        }
        // Both spellings in one answer are read, not rejected as a duplicate field.
        let both = parse_occupancy(
            200,
            &ok(
                serde_json::json!({ "RoomExists": true, "RoomExist": true, "TotalUser": 1, "VisibleUserList": ["a"] }),
            ),
        );
        assert_eq!(both.map(|o| o.exists).ok(), Some(true));
        // Users counted, lists there but empty: the count is read (the rows do not
        // cover it: an anomaly, no longer a failed request).
        let short = parse_occupancy(
            200,
            &ok(
                serde_json::json!({ "RoomExists": true, "TotalUser": 30, "TotalInvisibleUser": 0,
                                    "VisibleUserList": [], "InvisibleUserList": [] }),
            ),
        );
        let short = short.map(|o| (o.total, o.anomalies.iter().map(|a| a.0).collect::<Vec<_>>()));
        assert_eq!(
            short.as_ref().ok(),
            Some(&(30, vec![Anomaly::ListShorterThanCount])),
            "{short:?}"
        );
        // Users counted and no list at all (absent or null): still a failed request.
        for lists in [
            serde_json::json!({ "RoomExists": true, "TotalUser": 30, "TotalInvisibleUser": 0 }),
            serde_json::json!({ "RoomExists": true, "TotalUser": 30, "TotalInvisibleUser": 0,
                                "VisibleUserList": null, "InvisibleUserList": [] }),
            serde_json::json!({ "RoomExists": true, "TotalUser": 3, "TotalInvisibleUser": 2,
                                "VisibleUserList": ["a"] }),
        ] {
            let missing = parse_occupancy(200, &ok(lists.clone()));
            assert!(
                matches!(missing, Err(CallError::Malformed { ref message, .. }) if message.contains("List")),
                "{lists}: {missing:?}"
            );
        }
        let users = serde_json::json!({ "RoomExist": true, "VisibleUserList": [
            { "UserId": "a", "UserID": "a", "DeviceType": "ios" } ] });
        let d = parse_detail(200, &ok(users)).unwrap_or_default();
        assert_eq!(d.counts.get(&Device::Ios), Some(&1));
    }

    #[test]
    fn a_count_or_id_that_is_there_but_unreadable_is_malformed_never_zero() {
        let room = |v: Value| parse_occupancy(200, &ok(v));
        for (bad, field) in [
            (
                serde_json::json!({ "RoomExists": true, "TotalUser": "many", "VisibleUserList": [] }),
                "TotalUser",
            ),
            (
                serde_json::json!({ "RoomExists": true, "TotalUser": 1, "TotalInvisibleUser": -1,
                                    "VisibleUserList": ["a"] }),
                "TotalInvisibleUser",
            ),
            (
                serde_json::json!({ "RoomExists": "perhaps", "TotalUser": 1, "VisibleUserList": ["a"] }),
                "RoomExists",
            ),
            (
                serde_json::json!({ "RoomExists": true, "VisibleUserList": ["a", {}] }),
                "VisibleUserList[1]",
            ),
        ] {
            match room(bad.clone()) {
                Err(CallError::Malformed { message, .. }) => {
                    assert!(message.starts_with(field), "{bad}: {message}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        // Valid but odd: totals as strings.
        let o = room(serde_json::json!({ "RoomExists": "true", "TotalUser": "2",
            "TotalInvisibleUser": "1", "VisibleUserList": [7], "InvisibleUserList": ["b"] }))
        .unwrap();
        assert_eq!(
            (o.total, o.total_invisible, o.visible),
            (2, 1, vec!["7".to_string()])
        );
        // No TotalInvisibleUser: the invisible list tells.
        let o = room(serde_json::json!({ "RoomExists": true, "TotalUser": 2,
            "VisibleUserList": ["a"], "InvisibleUserList": ["b"] }))
        .unwrap();
        assert_eq!((o.exists, o.total, o.total_invisible), (true, 2, 1));
        // Required fields missing: a failed request, never an empty room with the target up
        // (these read as rooms of 0 before).
        for (bad, what) in [
            (
                serde_json::json!({ "VisibleUserList": ["a"], "InvisibleUserList": ["b"] }),
                "RoomExists",
            ),
            (
                serde_json::json!({ "TotalUser": 0, "VisibleUserList": [] }),
                "RoomExists",
            ),
            (
                serde_json::json!({ "RoomExists": true, "VisibleUserList": ["a"] }),
                "TotalUser",
            ),
            (
                serde_json::json!({ "RoomExists": true, "VisibleUserList": [] }),
                "TotalUser",
            ),
        ] {
            match room(bad.clone()) {
                Err(CallError::Malformed { message, .. }) => {
                    assert!(message.contains(what), "{bad}: {message}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn counts_and_lists_that_disagree_read_as_both_support() {
        let room = |v: Value| parse_occupancy(200, &ok(v));
        let kinds = |o: &Occupancy| o.anomalies.iter().map(|a| a.0).collect::<Vec<_>>();
        // The later doc edition: TotalUser 6, one visible and one invisible id.
        let o = room(serde_json::json!({ "RoomExists": true, "TotalUser": 6,
            "TotalInvisibleUser": 1, "VisibleUserList": ["normal_user_1"],
            "InvisibleUserList": ["silent_user_1"] }))
        .unwrap();
        assert_eq!((o.total, o.total_invisible), (6, 1));
        assert_eq!(
            o.visible.len() + o.invisible.len(),
            2,
            "the ids still count as seen"
        );
        assert_eq!(kinds(&o), [Anomaly::ListShorterThanCount]);
        // More ids than the count: the ids are people there.
        let o = room(serde_json::json!({ "RoomExists": true, "TotalUser": 1,
            "TotalInvisibleUser": 0, "VisibleUserList": ["a", "b", "c"], "InvisibleUserList": [] }))
        .unwrap();
        assert_eq!((o.total, o.total_invisible), (3, 0));
        assert_eq!(kinds(&o), [Anomaly::ListLongerThanCount]);
        // An id twice, or in both lists: once.
        let o = room(serde_json::json!({ "RoomExists": true, "TotalUser": 2,
            "TotalInvisibleUser": 1, "VisibleUserList": ["a", "a"], "InvisibleUserList": ["b", "a"] }))
        .unwrap();
        assert_eq!(
            (o.total, o.visible.clone(), o.invisible.clone()),
            (2, vec!["a".to_string()], vec!["b".to_string()])
        );
        assert_eq!(kinds(&o), [Anomaly::DuplicateRow]);
        // The invisible list cut at its documented 10 000: no anomaly.
        let ids: Vec<String> = (0..INVISIBLE_CAP).map(|i| format!("i{i}")).collect();
        let o = room(serde_json::json!({ "RoomExists": true, "TotalUser": 12_001,
            "TotalInvisibleUser": 12_000, "VisibleUserList": ["v"], "InvisibleUserList": ids }))
        .unwrap();
        assert_eq!((o.total, o.total_invisible), (12_001, 12_000));
        assert!(o.anomalies.is_empty(), "{:?}", o.anomalies);
    }

    #[test]
    fn list_room_info_rows_merge_by_room_and_call() {
        let call = |room: &str, call: &str, finished: bool| Listed {
            room: room.into(),
            call: Some(call.into()),
            finished,
            created: None,
        };
        let (rows, repeats) = merge_calls(vec![
            vec![call("a", "c1", false), call("b", "c2", false)],
            vec![call("a", "c1", true), call("a", "c3", false)],
        ]);
        assert_eq!(repeats, 1);
        assert_eq!(
            rows,
            [
                call("a", "c1", true),
                call("b", "c2", false),
                call("a", "c3", false)
            ]
        );
        // A running flag with an end time reads as ended; a list left out while Total says
        // there are calls is a failed request.
        let p = parse_rooms_page(
            200,
            &ok(serde_json::json!({"Total": 1, "HasMore": false,
            "RoomList": [{"CallId": "c", "RoomId": "a", "IsFinished": false,
                          "DestroyTime": "2026-11-22T08:00:00+08:00"}]})),
        );
        let p = p.map(|p| {
            (
                p.rows[0].finished,
                p.anomalies.iter().map(|a| a.0).collect::<Vec<_>>(),
            )
        });
        assert_eq!(p.ok(), Some((true, vec![Anomaly::FinishedWithRunningFlag])));
        for absent in [
            serde_json::json!({"Total": 3, "HasMore": false}),
            serde_json::json!({"Total": 3, "HasMore": true, "RoomList": null}),
        ] {
            assert!(matches!(
                parse_rooms_page(200, &ok(absent)),
                Err(CallError::Malformed { .. })
            ));
        }
        let empty = parse_rooms_page(200, &ok(serde_json::json!({"Total": 0, "HasMore": false})));
        assert_eq!(empty.map(|p| p.rows.len()).ok(), Some(0));
    }

    #[test]
    fn property_true_doc_example_and_user_id_spellings() {
        // The doc's example, its trailing commas removed.
        let body = br#"{ "ResponseMetadata": { "RequestId": "", "Action": "GetRoomOnlineUserStatus", "Version": "2023-11-01", "Service": "rtc", "Region": "cn-north-1" }, "Result": { "RoomExist": true, "VisibleUserList": [ { "UserID": "normalUser1", "DeviceType": "ios" }, { "UserID": "normalUser2", "DeviceType": "mac" } ], "InvisibleUserList": [ { "UserID": "segment1", "DeviceType": "linux", "MediaProcessingType": 32 } ] } }"#;
        let d = parse_detail(200, body).unwrap_or_default();
        assert_eq!(d.counts.get(&Device::Ios), Some(&1));
        assert_eq!(d.counts.get(&Device::Mac), Some(&1));
        assert_eq!(
            d.counts.get(&Device::Linux),
            None,
            "the ASR bot is no person"
        );
        assert_eq!(d.bots, HashSet::from(["segment1".to_string()]));
        assert_eq!(d.people.len(), 2);

        let other = ok(serde_json::json!({"RoomExists": true,
            "VisibleUserList": [{"UserId": "a", "DeviceType": "harmony", "PlatformType": 1},
                                {"UserId": 42, "DeviceType": "android"}],
            "InvisibleUserList": [{"UserId": "r", "DeviceType": "linux", "MediaProcessingType": 21}]}));
        let d = parse_detail(200, &other).unwrap_or_default();
        assert_eq!(
            d.counts.get(&Device::Other),
            Some(&1),
            "harmony counts as other"
        );
        assert_eq!(d.counts.get(&Device::Android), Some(&1));
        assert!(d.people.contains("42") && d.bots.contains("r"));
    }

    #[test]
    fn error_envelope_is_read_whatever_the_status() {
        let cases = [
            (200, "InvalidParameter.RoomId", 0, "InvalidParameter", false),
            (400, "InvalidTimestamp", 100006, "InvalidTimestamp", false),
            (400, "MissingParameter", 100002, "MissingParameter", false),
            (
                401,
                "SignatureDoesNotMatch",
                100010,
                "SignatureDoesNotMatch",
                false,
            ),
            (401, "InvalidAccessKey", 100009, "InvalidAccessKey", false),
            (429, "FlowLimitExceeded", 100018, "FlowLimitExceeded", true),
            // The gateway's spelling (counted as `other` before, and never paused the account).
            (
                429,
                "AccountFlowLimitExceeded",
                0,
                "FlowLimitExceeded",
                true,
            ),
            (
                200,
                "FlowLimitExceeded.QPSOverLimit",
                0,
                "FlowLimitExceeded",
                true,
            ),
            (500, "InternalError", 100014, "InternalError", false),
            (400, "SomethingNew", 1, "other", false),
            (400, "InvalidTimestampX", 1, "other", false),
            (400, "InvalidAccessKey.Sub", 1, "other", false),
        ];
        for (status, code, code_n, want, throttled) in cases {
            let e = parse_occupancy(status, &failure(code, code_n));
            match e {
                Err(CallError::Vendor {
                    label,
                    code: ref c,
                    throttled: t,
                    ref message,
                    ..
                }) => {
                    assert_eq!((label, c.as_str(), t), (want, code, throttled), "{code}");
                    assert_eq!(message, "because");
                }
                other => panic!("{code} at {status}: {other:?}"),
            }
        }
        // CodeN only.
        let body = br#"{"ResponseMetadata":{"Error":{"CodeN":100010}}}"#;
        assert!(matches!(
            parse_occupancy(401, body),
            Err(CallError::Vendor { label: "other", ref code, .. }) if code == "100010"
        ));
    }

    #[test]
    fn bodies_without_an_envelope() {
        assert!(matches!(
            parse_occupancy(502, b"<html>bad gateway</html>"),
            Err(CallError::Http { status: 502, .. })
        ));
        assert!(matches!(
            parse_occupancy(429, b"{}"),
            Err(CallError::Http { status: 429, .. })
        ));
        assert!(matches!(
            parse_occupancy(200, b"{\"ResponseMetadata\":{},\"Resu"),
            Err(CallError::Malformed { .. })
        ));
        assert!(matches!(
            parse_occupancy(200, b"{\"ResponseMetadata\":{}}"),
            Err(CallError::Malformed { .. })
        ));
        assert!(matches!(
            parse_occupancy(
                200,
                &ok(serde_json::json!({"TotalUser": "x", "VisibleUserList": 3}))
            ),
            Err(CallError::Malformed { .. })
        ));
    }

    #[test]
    fn bots_are_left_out_of_counts_and_ids() {
        let occ = Occupancy {
            exists: true,
            total: 5,
            total_invisible: 3,
            visible: vec!["a".into(), "b".into()],
            invisible: vec!["c".into(), "rec".into(), "asr".into()],
            anomalies: Vec::new(),
        };
        let bots: HashSet<String> = ["rec".to_string(), "asr".to_string()].into();
        let o = room_observation("r1", &occ, &bots);
        assert_eq!((o.active, o.users, o.invisible), (true, 3, Some(1)));
        assert_eq!(
            o.day,
            DayFigures::Present(vec!["a".into(), "b".into(), "c".into()])
        );
        // Not known as bots: counted as the vendor counts them.
        let o = room_observation("r1", &occ, &HashSet::new());
        assert_eq!((o.users, o.invisible), (5, Some(3)));
        let gone = room_observation("r2", &Occupancy::default(), &bots);
        assert_eq!((gone.active, gone.users), (false, 0));
    }

    #[test]
    fn devices_sum_rooms_and_fold_in_watched_users_once() {
        let room = |people: &[(&str, Device)]| RoomDevices {
            counts: people.iter().fold(DeviceCounts::new(), |mut m, (_, d)| {
                *m.entry(*d).or_default() += 1;
                m
            }),
            people: people.iter().map(|(p, _)| p.to_string()).collect(),
            bots: HashSet::new(),
        };
        let a = room(&[("1", Device::Ios), ("2", Device::Web)]);
        let b = room(&[("3", Device::Ios)]);
        let online: HashMap<String, BTreeSet<Device>> = [
            // In room a: already counted there.
            ("1".to_string(), BTreeSet::from([Device::Android])),
            // Outside the refreshed rooms: counted once per device class.
            (
                "9".to_string(),
                BTreeSet::from([Device::Android, Device::Web]),
            ),
        ]
        .into();
        let c = device_totals([&a, &b].into_iter(), &online);
        assert_eq!(c.len(), Device::ALL.len(), "every class has a value");
        assert_eq!(c[&Device::Ios], 2);
        assert_eq!(c[&Device::Web], 2);
        assert_eq!(c[&Device::Android], 1);
        assert_eq!(c[&Device::Mac], 0);
    }

    #[test]
    fn online_status_reads_platforms() {
        let body = br#"{"ResponseMetadata":{"RequestId":"x","Action":"QueryOnlineStatus","Version":"2020-12-01","Service":"rtc","Region":"cn-beijing"},"Result":{"AppId":123,"QueryOnlineResults":{"10001":[{"ConnId":"ConnID_1","UserId":10001,"DeviceId":10001,"ClientVersion":1,"Platform":"Android"},{"ConnId":"c2","UserId":10001,"Platform":"iOS"}]}}}"#;
        let m = parse_online(200, body).unwrap_or_default();
        assert_eq!(m["10001"], BTreeSet::from([Device::Ios, Device::Android]));
        let none = parse_online(
            200,
            br#"{"ResponseMetadata":{},"Result":{"AppId":123,"QueryOnlineResults":{}}}"#,
        );
        assert_eq!(none.ok().map(|m| m.len()), Some(0));
        // No map at all tells nobody's status: a failed request, not everyone offline.
        for body in [
            &br#"{"ResponseMetadata":{},"Result":{"AppId":123}}"#[..],
            br#"{"ResponseMetadata":{},"Result":{"AppId":123,"QueryOnlineResults":null}}"#,
        ] {
            assert!(matches!(
                parse_online(200, body),
                Err(CallError::Malformed { ref message, .. }) if message.contains("QueryOnlineResults")
            ));
        }
    }

    fn yaml(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).unwrap_or(serde_yaml::Value::Null)
    }

    const BASE: &str = "credentials: {access_key_id: AK, secret_access_key: SK}\napp_id: \"123\"\n";

    #[test]
    fn watch_users_take_numbers_or_numeric_strings() {
        let c = parse_conf(yaml(&format!(
            "{BASE}rooms: [a]\nwatch_users: [10002, \"10001\", \" 10003 \", 10002]\n"
        )));
        let c = c.map_err(|e| e.message);
        assert_eq!(
            c.as_ref().map(|c| c.watch.clone()),
            Ok(vec![10001, 10002, 10003])
        );
        assert_eq!(
            c.as_ref()
                .map(|c| (c.region.as_str(), c.devices, c.discover)),
            Ok(("cn-north-1", false, false))
        );
        for bad in ["[10001, alice]", "[10001, \"12a\"]", "[-5]", "[1.5]"] {
            let e = parse_conf(yaml(&format!("{BASE}rooms: [a]\nwatch_users: {bad}\n")));
            match e {
                Err(e) => {
                    assert!(e.path.starts_with("watch_users["), "{bad}: {}", e.path);
                    assert!(
                        e.message.contains("user id") || e.message.contains("numeric"),
                        "{bad}: {}",
                        e.message
                    );
                }
                Ok(_) => panic!("{bad} accepted"),
            }
        }
    }

    #[test]
    fn rooms_or_discovery_is_required_and_unknown_keys_are_errors() {
        let e = parse_conf(yaml(BASE)).err().map(|e| (e.path, e.message));
        assert_eq!(
            e,
            Some((
                "rooms".to_string(),
                "list the rooms to poll, or set discover_rooms: true".to_string()
            ))
        );
        assert!(parse_conf(yaml(&format!("{BASE}discover_rooms: true\n"))).is_ok());
        let e = parse_conf(yaml(&format!("{BASE}rooms: [a]\nroom: b\n")));
        assert!(matches!(e, Err(e) if e.message.starts_with("unknown field")));
        let e = parse_conf(yaml(&format!("{BASE}rooms: [a, \"\"]\n")));
        assert!(matches!(e, Err(e) if e.path == "rooms[1]"));
        let e = parse_conf(yaml(
            "credentials: {access_key_id: AK, secret_access_key: SK, extra: 1}\napp_id: x\nrooms: [a]\n",
        ));
        let e = e.err().map(|e| (e.path, e.message));
        assert!(
            matches!(e, Some((ref p, ref m)) if p.starts_with("credentials") && m.contains("extra")),
            "{e:?}"
        );
    }

    #[test]
    fn code_labels_are_a_closed_set() {
        assert_eq!(code_label("InvalidParameter.AppId"), "InvalidParameter");
        assert_eq!(
            code_label("FlowLimitExceeded.QPSOverLimit"),
            "FlowLimitExceeded"
        );
        assert_eq!(code_label("SignatureDoesNotMatch"), "SignatureDoesNotMatch");
        assert_eq!(code_label("AccountFlowLimitExceeded"), "FlowLimitExceeded");
        assert!(throttle("AccountFlowLimitExceeded") && !throttle("InternalError"));
        assert_eq!(code_label("a\"b"), "other");
        assert_eq!(code_label(""), "other");
    }

    #[test]
    fn refresh_goes_round_robin_from_the_cursor() {
        let rooms: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(refresh_order(&rooms, None), rooms);
        assert_eq!(refresh_order(&rooms, Some("b")), ["c", "d", "a", "b"]);
        assert_eq!(refresh_order(&rooms, Some("bb")), ["c", "d", "a", "b"]);
        assert_eq!(refresh_order(&rooms, Some("d")), rooms);
        assert!(refresh_order(&[], Some("x")).is_empty());
    }

    #[test]
    fn windows_step_back_a_day_at_most() {
        assert_eq!(
            windows(0, 2 * DAY + 5),
            [(DAY + 5, 2 * DAY + 5), (5, DAY + 5), (0, 5)]
        );
        assert!(windows(10, 10).is_empty());
    }

    #[test]
    fn discovery_walks_14_days_once_then_lists_only_what_is_new() {
        let now = 1_800_000_000;
        let first = plan(None, now);
        assert_eq!(first.fresh, [(now - DAY, now)]);
        assert_eq!(first.deep.len(), DEEP_WINDOWS_PER_POLL);
        assert_eq!(first.deep[0], (now - 2 * DAY, now - DAY));
        assert_eq!(first.remember_before, now - DISCOVERY_LAG);
        // Later polls: the new stretch only, and the walk goes on until 14 days back.
        let mut listed = (first.back_to, first.remember_before);
        let mut t = now;
        let mut deep = first.deep.len();
        for _ in 0..14 {
            t += 60;
            let p = plan(Some(listed), t);
            assert_eq!(p.fresh, [(listed.1, t)]);
            deep += p.deep.len();
            listed = (p.back_to, p.remember_before);
        }
        assert_eq!(deep, 13, "13 day windows behind the first");
        assert!(listed.0 <= t - DISCOVERY_BACK + 600);
        // After a long outage, at most 14 days are listed again.
        let p = plan(Some(listed), t + 30 * DAY);
        assert_eq!(p.fresh.len(), 14);
        assert!(p.deep.is_empty());
    }

    #[test]
    fn rooms_list_reads_pages_and_times() {
        let body = ok(
            serde_json::json!({"Total": 3, "HasMore": true, "RoomList": [
                {"RoomId": "a", "IsFinished": false, "CreatedTime": "2026-11-22T08:00:00+08:00"},
                {"RoomId": "b", "IsFinished": true, "CreatedTime": 1_800_000_000_000i64},
                {"RoomId": "", "IsFinished": false},
            ]}),
        );
        let p = parse_rooms_page(200, &body);
        let p = p.map(|p| (p.rows, p.returned, p.total, p.has_more)).ok();
        let t = DateTime::parse_from_rfc3339("2026-11-22T00:00:00Z")
            .map(|t| t.timestamp())
            .ok();
        assert_eq!(
            p,
            Some((
                vec![
                    Listed {
                        room: "a".into(),
                        call: None,
                        finished: false,
                        created: t
                    },
                    Listed {
                        room: "b".into(),
                        call: None,
                        finished: true,
                        created: Some(1_800_000_000)
                    },
                ],
                3,
                Some(3),
                Some(true)
            ))
        );
    }
}

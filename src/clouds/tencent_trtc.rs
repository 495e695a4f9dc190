//! Tencent Cloud TRTC: `DescribeRoomInfo` lists the day's calls (their `CommId`), then
//! `DescribeUserInfo` gives each call's users with join and leave times (API version
//! 2019-07-22). The ledger turns those sessions into exact figures (README, "Peak and accumulated").
//!
//! Requests are `POST /` with a JSON body, signed with TC3-HMAC-SHA256 ([`sign`], signed
//! headers `content-type;host;x-tc-action`) at the moment they are built. Errors come as
//! HTTP 200 with `Response.Error.Code`; codes are counted from a closed set ([`code_label`]).
//!
//! # A poll
//!
//! "Now" for the vendor is the poll's time less `delay` (default 60 s: TRTC's data lags).
//!
//! 1. **Calls.** `DescribeRoomInfo` in windows of at most 24 h, pages of 100 until a short one,
//!    20 QPS per SecretId. The first poll of a local day lists from 24 h before local midnight
//!    (calls created before midnight and still running count from midnight; a call running
//!    for more than a day before midnight is not found); later polls list only the creation
//!    times since the previous listing (less 10 minutes for late indexing) or since the
//!    oldest call still running, whichever is older — a listing is where a call's end shows —
//!    and keep the calls they know. Several calls of one room (`RoomString`) on one day are one room.
//! 2. **Users.** For every call that can have changed since the last poll — not yet fetched,
//!    still running, or finished after its last fetch — `DescribeUserInfo` for [from, now]:
//!    from = local midnight for a call not fetched yet today, else the end of its last fetch
//!    less 2 minutes (late data). Windows of at most 4 h, never more than 14 days back, pages
//!    of 100 until a short one, 20 QPS. A fetch returns every session that overlaps its window,
//!    so users still in are seen again and their leave time arrives once they left; the rest
//!    of the day stays in the ledger. A finished call fetched past its end is never asked again.
//!
//! **Reading answers** (the README's "Answers that disagree with themselves"): the rows the vendor sent are the
//! data. Rows repeated across the pages of a listing merge by identity (a call by `CommId`, a
//! session by user and `JoinTs`), never summed, and so do rows that two windows both list.
//! Paging ends on a short page, a page with nothing new, or the page cap. What reads but
//! disagrees is an anomaly, counted and logged ([`PollCtx::anomaly`]): a `Total` that is
//! neither the distinct rows of all pages nor the rows of the last one (`total_mismatch`:
//! Tencent's own `DescribeUserInfo` example has `Total` 1 with two rows), a repeated row
//! (`duplicate_row`), a call flagged `IsFinished: false` that has its `DestroyTime`
//! (`finished_with_running_flag`: read as ended then, its sessions still open closed at that
//! time), the page cap (`page_cap`). A failed (`malformed`) request, checked inside the request
//! of the last page: an unreadable answer or row (a row without its `CommId` or `UserId`); a
//! null or absent list beside a positive `Total`, or with no `Total` at all (never read as an
//! empty call); a listing of calls that lacks a call it listed as running before (its creation
//! time is in the window); a user listing whose first window lacks a session the last fetch
//! left open (it was present at that fetch's end, which the window holds). Without the last
//! two, a lost answer would close every session and write the room as empty.
//!
//! Rooms are refreshed least recently fetched first, up to four in flight, each reported to the
//! poll's progress (with its calls' new fetch times) as soon as all its pages arrived: one
//! failing room leaves the others published and keeps its last values, and a poll cut short by
//! `poll_timeout` continues with the rooms it did not reach.
//!
//! **Requests per poll**, for N calls today with M users each: the first poll makes
//! ⌈N/100⌉ + 1 listing requests (two windows) and, per call, ⌈hours since its start / 4⌉
//! windows × ⌈its users in each window / 100⌉ pages, about N·⌈M/100⌉ for calls under 4 h.
//! A steady poll makes ⌈calls created since the oldest running one / 100⌉ listing requests
//! (usually 1) plus, per running (or just finished) call,
//! ⌈users present in the last interval / 100⌉ requests: R running calls of M users make
//! 1 + R·⌈M/100⌉, whatever the day's total.
//!
//! `DeviceType` is not documented (examples send ""): known OS names map to their device
//! class, the rest to `other`.

pub mod sign;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

use super::merged::{Identity, Merged};
use super::util::{
    code_label as table_label, id_string, lenient_bool, lenient_i64, windows_forward,
};
use super::{
    Anomaly, Api, BoxFuture, CallError, DayFigures, Device, Observation, PollCtx, PollError,
    RoomObservation, SessionObs, TargetInfo, Vendor, VendorEntry,
};
use crate::fields::{from_value, FieldError, PromDuration, Secret};
use crate::lock::lock;

/// The registry row.
pub const ENTRY: VendorEntry = VendorEntry {
    name: "tencent_trtc",
    parse,
};

/// Lists calls.
pub const ROOM_INFO: &str = "DescribeRoomInfo";
/// Users of one call.
pub const USER_INFO: &str = "DescribeUserInfo";
/// A running call's `DestroyTime` is about the time of the query: this much before the
/// listing's end still counts as "running, as of now".
const DESTROY_SLACK: i64 = 60;
const VERSION: &str = "2019-07-22";
const SERVICE: &str = "trtc";
const DEFAULT_ENDPOINT: &str = "https://trtc.tencentcloudapi.com";
const CONTENT_TYPE: &str = "application/json";
/// Both APIs: 20 requests a second (per account).
const QPS: f64 = 20.0;
const PAGE: usize = 100;
/// A vendor that keeps sending full pages must not keep us paging forever.
const MAX_PAGES: usize = 1000;
const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;
/// `DescribeRoomInfo` spans at most 24 h, `DescribeUserInfo` 4 h; both look back 14 days.
const ROOM_SPAN: i64 = DAY;
const USER_SPAN: i64 = 4 * HOUR;
const MAX_BACK: i64 = 14 * DAY - 300;
/// Listing overlap for late indexing, and fetch overlap for late user data.
const LIST_OVERLAP: i64 = 600;
const FETCH_OVERLAP: i64 = 120;
/// Rooms refreshed at once.
const CONCURRENCY: usize = 4;
/// The regions `DescribeUserInfo` supports.
pub const REGIONS: &[&str] = &["ap-beijing", "ap-guangzhou", "ap-mumbai", "ap-singapore"];

/// Codes counted under their own label; `AuthFailure.*`, `FailedOperation.*`,
/// `InternalError.*` and `MissingParameter.*` others count under their prefix.
pub const CODES: &[&str] = &[
    "AuthFailure.SignatureFailure",
    "AuthFailure.SignatureExpire",
    "AuthFailure.SecretIdNotFound",
    "AuthFailure",
    "RequestLimitExceeded",
    "InvalidParameter.QueryScaleOversize",
    "InvalidParameter.StartTsOversize",
    "InvalidParameter.PageSizeOversize",
    "InvalidParameter",
    "FailedOperation",
    "InternalError",
    "MissingParameter",
];

/// The `code` label of an error code: a closed set, never the raw value.
pub fn code_label(code: &str) -> &'static str {
    match table_label(CODES, code) {
        "other" => match code.split_once('.') {
            Some((prefix, _)) => table_label(CODES, prefix),
            None => "other",
        },
        known => known,
    }
}

fn default_region() -> String {
    "ap-guangzhou".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    credentials: Credentials,
    sdk_app_id: u64,
    #[serde(default = "default_region")]
    region: String,
    #[serde(default)]
    delay: Option<PromDuration>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    secret_id: String,
    secret_key: Secret,
}

fn parse(value: serde_yaml::Value) -> Result<Arc<dyn Vendor>, FieldError> {
    let s: Settings = from_value(value)?;
    if s.credentials.secret_id.is_empty() {
        return Err(FieldError::new(
            "credentials.secret_id",
            "must not be empty",
        ));
    }
    if !REGIONS.contains(&s.region.as_str()) {
        return Err(FieldError::new(
            "region",
            format!(
                "\"{}\" is not a region DescribeUserInfo supports ({})",
                s.region,
                REGIONS.join(", ")
            ),
        ));
    }
    if s.sdk_app_id == 0 {
        return Err(FieldError::new(
            "sdk_app_id",
            "must be the application's SDKAppID, a positive integer",
        ));
    }
    let delay = s.delay.map_or(Duration::from_secs(60), |d| d.0);
    if delay > Duration::from_secs(3600) {
        return Err(FieldError::new("delay", "must be at most 1h"));
    }
    Ok(Arc::new(TencentTrtc {
        s,
        delay: delay.as_secs() as i64,
        state: Mutex::new(State::default()),
    }))
}

/// One call as the target knows it.
#[derive(Debug, Clone)]
struct Call {
    room: String,
    created: i64,
    finished: bool,
    destroyed: i64,
    /// The end of its last successful user fetch.
    synced_to: Option<i64>,
    /// (user, join) of the sessions still open at that fetch: the next fetch, whose window
    /// starts before its end, must list each of them again.
    open: Vec<(String, i64)>,
}

impl Call {
    /// Its users can have changed since its last fetch.
    fn stale(&self) -> bool {
        match self.synced_to {
            None => true,
            Some(t) => !self.finished || t < self.destroyed,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    day: Option<NaiveDate>,
    /// Calls by CommId.
    calls: BTreeMap<String, Call>,
    /// Creation times are listed up to here.
    listed_to: Option<i64>,
}

/// One configured TRTC target.
pub struct TencentTrtc {
    s: Settings,
    delay: i64,
    state: Mutex<State>,
}

/// Reads `Response`: `Error` first, then the payload.
fn response(api: &'static str, status: u16, body: &[u8]) -> Result<Value, CallError> {
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
    let Some(resp) = v.get_mut("Response").map(Value::take) else {
        if !ok_status {
            return Err(CallError::Http { api, status });
        }
        return Err(CallError::Malformed {
            api,
            message: "no Response object".into(),
        });
    };
    if let Some(err) = resp.get("Error").filter(|e| !e.is_null()) {
        let code = err
            .get("Code")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        let message = err
            .get("Message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let label = code_label(&code);
        return Err(CallError::Vendor {
            api,
            throttled: label == "RequestLimitExceeded",
            label,
            message,
            code,
        });
    }
    if !ok_status {
        return Err(CallError::Http { api, status });
    }
    Ok(resp)
}

/// One page: its rows and the declared `Total`.
pub(crate) struct Page<T> {
    pub(crate) rows: Vec<T>,
    pub(crate) total: Option<u64>,
}

/// Reads a list that the API documents as possibly null: null is an empty page only when
/// `Total` says there is nothing.
fn page_rows<T>(
    api: &'static str,
    resp: &Value,
    field: &str,
    row: impl Fn(&Value) -> Option<T>,
) -> Result<Page<T>, CallError> {
    let total =
        super::util::optional(resp.get("Total"), super::util::lenient_u64).map_err(|_| {
            CallError::Malformed {
                api,
                message: "Total is not a count".into(),
            }
        })?;
    let list = match (resp.get(field), total) {
        (Some(Value::Array(a)), _) => a.as_slice(),
        (None | Some(Value::Null), Some(0)) => &[],
        // Neither a list nor a count: nothing says the call is empty (read as empty, it was a
        // false zero with the target up).
        (None, None) => {
            return Err(CallError::Malformed {
                api,
                message: format!("the answer has neither {field} nor Total"),
            })
        }
        (Some(Value::Null), None) => {
            return Err(CallError::Malformed {
                api,
                message: format!("{field} is null and there is no Total"),
            })
        }
        (None, Some(t)) => {
            return Err(CallError::Malformed {
                api,
                message: format!("{field} is absent but Total is {t}"),
            })
        }
        (Some(Value::Null), Some(t)) => {
            return Err(CallError::Malformed {
                api,
                message: format!("{field} is null but Total is {t}"),
            })
        }
        (Some(_), _) => {
            return Err(CallError::Malformed {
                api,
                message: format!("{field} is not a list"),
            })
        }
    };
    let mut rows = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        rows.push(row(v).ok_or_else(|| CallError::Malformed {
            api,
            message: format!("{field}[{i}] lacks a field it must have"),
        })?);
    }
    Ok(Page { rows, total })
}

/// A call as `DescribeRoomInfo` lists it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListedCall {
    pub(crate) comm_id: String,
    pub(crate) room: String,
    pub(crate) created: i64,
    pub(crate) destroyed: i64,
    pub(crate) finished: bool,
}

/// An optional field of a row: absent or null is `Some(None)`; there but unreadable is `None`
/// (the row is then unreadable, never a default).
fn optional<T>(v: &Value, field: &str, read: fn(&Value) -> Option<T>) -> Option<Option<T>> {
    super::util::optional(v.get(field), read).ok()
}

/// Reads one `DescribeRoomInfo` page.
pub(crate) fn parse_rooms(status: u16, body: &[u8]) -> Result<Page<ListedCall>, CallError> {
    let resp = response(ROOM_INFO, status, body)?;
    page_rows(ROOM_INFO, &resp, "RoomList", |v| {
        Some(ListedCall {
            comm_id: v.get("CommId").and_then(id_string)?,
            room: v.get("RoomString").and_then(id_string)?,
            created: v.get("CreateTime").and_then(lenient_i64)?,
            destroyed: optional(v, "DestroyTime", lenient_i64)?.unwrap_or(0),
            finished: optional(v, "IsFinished", lenient_bool)?.unwrap_or(false),
        })
    })
}

/// Reads one `DescribeUserInfo` page.
pub(crate) fn parse_users(status: u16, body: &[u8]) -> Result<Page<SessionObs>, CallError> {
    let resp = response(USER_INFO, status, body)?;
    page_rows(USER_INFO, &resp, "UserList", |v| {
        let join = v.get("JoinTs").and_then(lenient_i64)?;
        let leave = v.get("LeaveTs").and_then(lenient_i64)?;
        let finished = v.get("Finished").and_then(lenient_bool)?;
        Some(SessionObs {
            user: v.get("UserId").and_then(id_string)?,
            join,
            leave: finished.then_some(leave.max(join)),
            device: v
                .get("DeviceType")
                .and_then(Value::as_str)
                .map_or(Device::Other, Device::from_name),
            role: None,
        })
    })
}

/// The declared `Total` of the last page against the rows: it is the grand total (the
/// distinct rows of all pages) or the rows of that page. Either reading may hold; when neither
/// does, the rows are still the data and the disagreement is an anomaly (README: "Answers that disagree with themselves"), described
/// here.
fn total_mismatch(total: Option<u64>, distinct: usize, last: usize) -> Option<String> {
    match total {
        Some(t) if t != distinct as u64 && t != last as u64 => Some(format!(
            "Total says {t} but the pages held {distinct} distinct rows (last page {last}); the rows are read"
        )),
        _ => None,
    }
}

/// How many of `expected` a complete listing (`rows`) lacks.
fn lacking<K: std::hash::Hash + Eq>(
    expected: impl IntoIterator<Item = K>,
    rows: impl IntoIterator<Item = K>,
) -> usize {
    let listed: std::collections::HashSet<K> = rows.into_iter().collect();
    expected.into_iter().filter(|k| !listed.contains(k)).count()
}

/// (user, join) of the sessions a fetch leaves open: listed open, and not listed closed too.
fn still_open(sessions: &[SessionObs]) -> Vec<(String, i64)> {
    let closed: std::collections::HashSet<(&str, i64)> = sessions
        .iter()
        .filter(|s| s.leave.is_some())
        .map(|s| (s.user.as_str(), s.join))
        .collect();
    let mut open: Vec<(String, i64)> = sessions
        .iter()
        .filter(|s| s.leave.is_none() && !closed.contains(&(s.user.as_str(), s.join)))
        .map(|s| (s.user.clone(), s.join))
        .collect();
    open.sort();
    open.dedup();
    open
}

// Rows repeated across pages (or windows) merge by identity ([`Identity`]), never summed.
impl Identity for ListedCall {
    type Key = String;
    fn key(&self) -> String {
        self.comm_id.clone()
    }
    /// A call one row says ended has ended.
    fn merge(&mut self, later: Self) {
        self.finished |= later.finished;
        self.destroyed = self.destroyed.max(later.destroyed);
    }
}

impl Identity for SessionObs {
    type Key = (String, i64);
    fn key(&self) -> (String, i64) {
        (self.user.clone(), self.join)
    }
    /// A session one row says closed is closed (a rejoin is a new session, a new JoinTs).
    fn merge(&mut self, later: Self) {
        self.leave = match (self.leave, later.leave) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// The sessions of a call that ended at `ended`: one still listed open (`Finished` false) is
/// read as left when the call ended, else the ledger would keep it open (the finished call is
/// never fetched again) and show a user in an ended room.
fn close_at_end(mut sessions: Vec<SessionObs>, ended: Option<i64>) -> Vec<SessionObs> {
    if let Some(end) = ended {
        for s in sessions.iter_mut().filter(|s| s.leave.is_none()) {
            s.leave = Some(end.max(s.join));
        }
    }
    sessions
}

/// Pages a listing until a short page, a page with no row not already held (a vendor repeating
/// itself), or [`MAX_PAGES`]. Rows repeated across its pages merge by identity ([`Identity`]).
/// The last page is checked, inside its request (so a contradiction counts as `malformed`), by
/// `complete` (the rows of the earlier pages, the rows of this one): a listing that lost rows
/// is a failed request. What read but disagreed is reported to `ctx` as anomalies: a declared
/// `Total` that is neither reading ([`total_mismatch`]), repeated rows, the page cap.
async fn all_pages<T: Identity>(
    ctx: &PollCtx,
    api: &Api<'_>,
    mut request: impl FnMut(usize) -> reqwest::RequestBuilder,
    parse: fn(u16, &[u8]) -> Result<Page<T>, CallError>,
    complete: impl Fn(&[T], &[T]) -> Result<(), CallError>,
) -> Result<Vec<T>, CallError> {
    let mut merged = Merged::new();
    for page in 0..MAX_PAGES {
        let held = &merged;
        let complete = &complete;
        let capped = page + 1 == MAX_PAGES;
        let (p, fresh) = api
            .call(request(page), |status, body| {
                let p = parse(status, body)?;
                let fresh = held.fresh(&p.rows);
                if p.rows.len() < PAGE || fresh == 0 || capped {
                    complete(&held.rows, &p.rows)?;
                }
                Ok((p, fresh))
            })
            .await?;
        let got = p.rows.len();
        let last = got < PAGE || fresh == 0 || capped;
        merged.extend(p.rows);
        if !last {
            continue;
        }
        let name = api.name();
        let distinct = merged.rows.len();
        if merged.repeated > 0 {
            ctx.anomaly(
                name,
                Anomaly::DuplicateRow,
                format!(
                    "{} of {} rows over {} page(s) repeated rows already listed; merged into {distinct}",
                    merged.repeated,
                    merged.sent(),
                    page + 1
                ),
            );
        }
        if let Some(detail) = total_mismatch(p.total, distinct, got) {
            ctx.anomaly(name, Anomaly::TotalMismatch, detail);
        }
        if capped && got >= PAGE && fresh > 0 {
            ctx.anomaly(
                name,
                Anomaly::PageCap,
                format!("still full pages after {MAX_PAGES} pages; {distinct} rows read"),
            );
        }
        break;
    }
    Ok(merged.rows)
}

/// Signs and sends requests for one poll.
struct Client<'a> {
    ctx: &'a PollCtx,
    s: &'a Settings,
    url: String,
    host: String,
}

impl<'a> Client<'a> {
    fn new(ctx: &'a PollCtx, s: &'a Settings) -> Result<Self, CallError> {
        let endpoint = ctx.endpoint_or(DEFAULT_ENDPOINT);
        let bad = || CallError::Transport {
            api: ROOM_INFO,
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
            s,
            url: format!("{}://{host}/", url.scheme()),
            host,
        })
    }

    fn api(&self, name: &'static str) -> Api<'a> {
        self.ctx.api(name, &self.s.credentials.secret_id, QPS)
    }

    /// A signed request; `X-TC-Timestamp` is now.
    fn request(&self, action: &str, body: &Value) -> reqwest::RequestBuilder {
        let payload = body.to_string().into_bytes();
        let timestamp = self.ctx.wall_now().timestamp();
        let signed = sign::sign(
            &sign::Request {
                method: "POST",
                host: &self.host,
                action,
                content_type: CONTENT_TYPE,
                payload: &payload,
                timestamp,
                service: SERVICE,
                sign_action: true,
            },
            &self.s.credentials.secret_id,
            self.s.credentials.secret_key.expose(),
        );
        self.ctx
            .plumbing
            .http
            .post(&self.url)
            .header("Content-Type", CONTENT_TYPE)
            .header("X-TC-Action", action)
            .header("X-TC-Timestamp", timestamp.to_string())
            .header("X-TC-Version", VERSION)
            .header("X-TC-Region", &self.s.region)
            .header("Authorization", signed.authorization)
            .body(payload)
    }

    /// Calls created in [from, to]. `running` (CommId, creation time) are calls listed
    /// earlier and not finished: a listing of a window holding their creation time that lacks
    /// one of them contradicts the earlier one (a call cannot vanish) and is `malformed`.
    async fn list(
        &self,
        from: i64,
        to: i64,
        running: &[(String, i64)],
    ) -> Result<Vec<ListedCall>, CallError> {
        let api = self.api(ROOM_INFO);
        // Windows meet at their ends: a call listed by two is one call.
        let mut calls = Merged::new();
        for (start, end) in windows_forward(from, to, ROOM_SPAN) {
            let complete = |prior: &[ListedCall], last: &[ListedCall]| {
                let expected = running
                    .iter()
                    .filter(|(_, created)| start <= *created && *created <= end)
                    .map(|(id, _)| id.as_str());
                let rows = prior.iter().chain(last).map(|c| c.comm_id.as_str());
                match lacking(expected, rows) {
                    0 => Ok(()),
                    n => Err(CallError::Malformed {
                        api: ROOM_INFO,
                        message: format!(
                            "the listing lost {n} call(s) still running at the last listing"
                        ),
                    }),
                }
            };
            let request = |page: usize| {
                self.request(
                    ROOM_INFO,
                    &json!({
                        "SdkAppId": self.s.sdk_app_id, "StartTime": start, "EndTime": end,
                        "PageNumber": page, "PageSize": PAGE,
                    }),
                )
            };
            for call in all_pages(self.ctx, &api, request, parse_rooms, complete).await? {
                calls.add(call);
            }
        }
        // A call still flagged running but with an end time before the listing's own end is
        // read as ended then. Tencent's own DescribeRoomInfo example (tencentcloud-cli) lists
        // ten running calls that all share one DestroyTime, the time of the query, as
        // DescribeUserInfo's LeaveTs is "now" for users still in: a DestroyTime at or after
        // the listing's end (less [`DESTROY_SLACK`]) is that, not an end.
        for c in &mut calls.rows {
            if !c.finished && c.destroyed > 0 && c.destroyed < to - DESTROY_SLACK {
                self.ctx.anomaly(
                    ROOM_INFO,
                    Anomaly::FinishedWithRunningFlag,
                    format!(
                        "call {} of room {}: IsFinished false but DestroyTime {}; read as ended then",
                        c.comm_id, c.room, c.destroyed
                    ),
                );
                c.finished = true;
            }
        }
        Ok(calls.rows)
    }

    /// Every session of one call overlapping [from, to]. `open` (user, join) are the sessions
    /// still open at the end of the last fetch, which lies in the first window: that window's
    /// listing must hold each of them again (closed or not), else it lost them and is
    /// `malformed` (never taken as those users having left).
    async fn users(
        &self,
        api: &Api<'_>,
        comm_id: &str,
        (from, to): (i64, i64),
        open: &[(String, i64)],
    ) -> Result<Vec<SessionObs>, CallError> {
        // A session overlapping two windows is listed by both: one session.
        let mut sessions = Merged::new();
        for (i, (start, end)) in windows_forward(from, to, USER_SPAN).into_iter().enumerate() {
            let complete = |prior: &[SessionObs], last: &[SessionObs]| {
                if i > 0 {
                    return Ok(());
                }
                let expected = open
                    .iter()
                    .filter(|(_, join)| *join <= end)
                    .map(|(user, join)| (user.as_str(), *join));
                let rows = prior.iter().chain(last).map(|s| (s.user.as_str(), s.join));
                match lacking(expected, rows) {
                    0 => Ok(()),
                    n => Err(CallError::Malformed {
                        api: USER_INFO,
                        message: format!(
                            "{n} user(s) still in the call at the last fetch are no longer listed"
                        ),
                    }),
                }
            };
            let request = |page: usize| {
                self.request(
                    USER_INFO,
                    &json!({
                        "SdkAppId": self.s.sdk_app_id, "CommId": comm_id,
                        "StartTime": start, "EndTime": end,
                        "PageNumber": page, "PageSize": PAGE,
                    }),
                )
            };
            for session in all_pages(self.ctx, api, request, parse_users, complete).await? {
                sessions.add(session);
            }
        }
        Ok(sessions.rows)
    }
}

/// One call to fetch: its CommId, the window start, and the sessions its last fetch left open.
#[derive(Debug, Clone, PartialEq)]
struct Fetch {
    comm_id: String,
    from: i64,
    open: Vec<(String, i64)>,
    /// When the call ended, if it has by the fetch's end: nobody is in it after that.
    ended: Option<i64>,
}

/// What to fetch for one room: its stale calls.
#[derive(Debug, Clone, PartialEq)]
struct RoomPlan {
    room: String,
    active: bool,
    calls: Vec<Fetch>,
    /// The oldest fetch among them (for the order).
    oldest: Option<i64>,
}

/// The rooms to refresh, least recently fetched first.
fn plan(calls: &BTreeMap<String, Call>, day_start: i64, floor: i64, to: i64) -> Vec<RoomPlan> {
    let mut rooms: BTreeMap<&str, RoomPlan> = BTreeMap::new();
    let mut active: HashMap<&str, bool> = HashMap::new();
    for c in calls.values() {
        // In progress as of `to`, the time the users are fetched for.
        *active.entry(&c.room).or_default() |= !c.finished || c.destroyed > to;
    }
    for (id, c) in calls.iter().filter(|(_, c)| c.stale()) {
        let from = c
            .synced_to
            .map_or(day_start, |t| t - FETCH_OVERLAP)
            .max(day_start)
            .max(floor);
        if from >= to {
            continue;
        }
        let p = rooms.entry(&c.room).or_insert_with(|| RoomPlan {
            room: c.room.clone(),
            active: false,
            calls: Vec::new(),
            oldest: c.synced_to,
        });
        p.calls.push(Fetch {
            comm_id: id.clone(),
            from,
            open: c.open.clone(),
            // A finished call listed without its DestroyTime has `destroyed` = its creation:
            // its end is then not known, and its sessions are read as listed.
            ended: (c.finished && c.created < c.destroyed && c.destroyed <= to)
                .then_some(c.destroyed),
        });
        p.oldest = match (p.oldest, c.synced_to) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        };
    }
    let mut out: Vec<RoomPlan> = rooms
        .into_values()
        .map(|mut p| {
            p.active = active.get(p.room.as_str()).copied().unwrap_or(false);
            p
        })
        .collect();
    out.sort_by(|a, b| a.oldest.cmp(&b.oldest).then_with(|| a.room.cmp(&b.room)));
    out
}

impl TencentTrtc {
    /// Lists the calls since the last listing and merges them into the state.
    async fn refresh_calls(
        &self,
        client: &Client<'_>,
        day_start: i64,
        floor: i64,
        to: i64,
    ) -> Result<(), CallError> {
        let (listed_to, running) = {
            let st = lock(&self.state);
            let running: Vec<(String, i64)> = st
                .calls
                .iter()
                .filter(|(_, c)| !c.finished)
                .map(|(id, c)| (id.clone(), c.created))
                .collect();
            (st.listed_to, running)
        };
        let oldest_running = running.iter().map(|(_, created)| *created).min();
        // From the last listing, and back to the oldest call still running: a listing by
        // creation time is the only place a call's end shows.
        let from = listed_to
            .map_or(day_start - DAY, |t| t - LIST_OVERLAP)
            .min(oldest_running.unwrap_or(i64::MAX))
            .max(floor);
        if from >= to {
            return Ok(());
        }
        let listed = client.list(from, to, &running).await?;
        let mut st = lock(&self.state);
        for l in listed {
            if self
                .s
                .rooms
                .as_ref()
                .is_some_and(|allow| !allow.contains(&l.room))
            {
                continue;
            }
            // Finished before today: not today's.
            if l.finished && l.destroyed > 0 && l.destroyed < day_start {
                continue;
            }
            let destroyed = if l.finished {
                l.destroyed.max(l.created)
            } else {
                0
            };
            match st.calls.get_mut(&l.comm_id) {
                Some(c) => {
                    c.finished = l.finished;
                    c.destroyed = destroyed;
                }
                None => {
                    st.calls.insert(
                        l.comm_id,
                        Call {
                            room: l.room,
                            created: l.created,
                            finished: l.finished,
                            destroyed,
                            synced_to: None,
                            open: Vec::new(),
                        },
                    );
                }
            }
        }
        st.listed_to = Some(to);
        Ok(())
    }

    async fn fetch(&self, ctx: &PollCtx) -> Result<Observation, PollError> {
        let day_start = ctx.day_start();
        // In the first `delay` after local midnight the vendor's lagging data does not reach
        // today yet: ask for the day's first second, so calls running across midnight stay
        // shown rather than the day starting from nothing.
        let now = ctx.now.timestamp();
        let to = (now - self.delay).max((day_start + 1).min(now));
        let floor = ctx.now.timestamp() - MAX_BACK;
        {
            let mut st = lock(&self.state);
            if st.day != Some(ctx.today()) {
                *st = State {
                    day: Some(ctx.today()),
                    ..State::default()
                };
            }
        }
        let client = Client::new(ctx, &self.s)?;
        // A failed listing still lets the known calls be refreshed; the poll is then not whole.
        let listing = self.refresh_calls(&client, day_start, floor, to).await;
        let plans = plan(&lock(&self.state).calls, day_start, floor, to);
        let api = client.api(USER_INFO);
        let (api, client_ref) = (&api, &client);
        let mut answers = stream::iter(plans)
            .map(|p| async move {
                let mut fetched = Vec::new();
                for f in &p.calls {
                    match client_ref
                        .users(api, &f.comm_id, (f.from, to), &f.open)
                        .await
                    {
                        Ok(s) => fetched.push(close_at_end(s, f.ended)),
                        Err(e) => return Err((p.room, e)),
                    }
                }
                Ok((p, fetched))
            })
            .buffer_unordered(CONCURRENCY);
        let mut refreshed = 0usize;
        let mut first_error = None;
        while let Some(answer) = answers.next().await {
            match answer {
                Ok((p, fetched)) => {
                    let mut st = lock(&self.state);
                    for (f, sessions) in p.calls.iter().zip(&fetched) {
                        if let Some(c) = st.calls.get_mut(&f.comm_id) {
                            c.synced_to = Some(to);
                            c.open = still_open(sessions);
                        }
                    }
                    let sessions: Vec<SessionObs> = fetched.into_iter().flatten().collect();
                    let since = p.calls.iter().map(|f| f.from).min().unwrap_or(to);
                    ctx.room_done(RoomObservation {
                        room: p.room,
                        active: p.active,
                        users: 0,
                        invisible: None,
                        day: DayFigures::Sessions { since, sessions },
                    });
                    refreshed += 1;
                }
                Err((room, e)) => {
                    ctx.room_failed(&room, &e);
                    first_error.get_or_insert(e);
                }
            }
        }
        if let (0, Some(e)) = (refreshed, first_error) {
            return Err(e.into());
        }
        // Rooms whose calls are all finished and fetched are not asked again: they keep their
        // figures, and as they were not refreshed the ledger shows them ended.
        listing?;
        Ok(Observation::default())
    }
}

impl Vendor for TencentTrtc {
    fn documented_qps(&self) -> Option<f64> {
        Some(QPS)
    }
    fn info(&self) -> TargetInfo {
        TargetInfo {
            app: self.s.sdk_app_id.to_string(),
            region: self.s.region.clone(),
        }
    }

    fn poll<'a>(&'a self, ctx: &'a PollCtx) -> BoxFuture<'a, Result<Observation, PollError>> {
        Box::pin(self.fetch(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user: &str, join: i64, leave: Option<i64>) -> SessionObs {
        SessionObs {
            user: user.into(),
            join,
            leave,
            device: Device::Other,
            role: None,
        }
    }

    #[test]
    fn a_total_is_the_grand_total_or_the_last_pages_rows() {
        assert_eq!(total_mismatch(None, 150, 50), None);
        assert_eq!(total_mismatch(Some(150), 150, 50), None);
        assert_eq!(total_mismatch(Some(50), 150, 50), None);
        // Neither reading: an anomaly now (README: "Answers that disagree with themselves"), no longer a failed request; the rows
        // are read.
        assert_eq!(
            total_mismatch(Some(150), 100, 0).as_deref(),
            Some("Total says 150 but the pages held 100 distinct rows (last page 0); the rows are read")
        );
        // Tencent's own DescribeUserInfo example: Total 1, two rows on one page.
        assert!(total_mismatch(Some(1), 2, 2).is_some());
    }

    #[test]
    fn repeated_rows_merge_by_identity() {
        let mut m = Merged::new();
        m.add(session("a", 10, None));
        m.add(session("b", 20, None));
        assert_eq!(m.fresh(&[session("a", 10, None), session("c", 5, None)]), 1);
        assert_eq!(m.fresh(&[session("c", 5, None), session("c", 5, None)]), 1);
        m.add(session("a", 10, Some(40)));
        m.add(session("a", 10, None));
        // A rejoin is another session.
        m.add(session("a", 50, None));
        assert_eq!(m.repeated, 2);
        let got: Vec<_> = m
            .rows
            .iter()
            .map(|s| (s.user.as_str(), s.join, s.leave))
            .collect();
        assert_eq!(
            got,
            vec![("a", 10, Some(40)), ("b", 20, None), ("a", 50, None)]
        );
        let call = |id: &str, finished: bool, destroyed: i64| ListedCall {
            comm_id: id.into(),
            room: "r".into(),
            created: 1,
            destroyed,
            finished,
        };
        let mut m = Merged::new();
        m.add(call("x", false, 0));
        m.add(call("x", true, 9));
        m.add(call("x", false, 0));
        assert_eq!(m.rows, vec![call("x", true, 9)]);
        assert_eq!(m.repeated, 2);
    }

    #[test]
    fn sessions_of_an_ended_call_are_closed_at_its_end() {
        let got = close_at_end(
            vec![
                session("a", 10, None),
                session("b", 20, Some(25)),
                session("c", 90, None),
            ],
            Some(50),
        );
        let leaves: Vec<_> = got.iter().map(|s| s.leave).collect();
        assert_eq!(leaves, vec![Some(50), Some(25), Some(90)]);
        assert_eq!(
            close_at_end(vec![session("a", 10, None)], None)[0].leave,
            None
        );
    }

    #[test]
    fn sessions_left_open_are_those_not_also_listed_closed() {
        // Two windows: a is open in the first and closed in the second; b stays open.
        let open = still_open(&[
            session("a", 10, None),
            session("b", 20, None),
            session("a", 10, Some(30)),
            session("b", 20, None),
        ]);
        assert_eq!(open, vec![("b".into(), 20)]);
        assert_eq!(lacking([("b", 20)], [("a", 10), ("b", 20)]), 0);
        assert_eq!(lacking([("b", 20), ("c", 5)], [("b", 21)]), 2);
        assert_eq!(lacking(Vec::<&str>::new(), Vec::new()), 0);
    }

    #[test]
    fn a_null_list_is_empty_only_when_total_says_so() {
        let body = |v: Value| serde_json::to_vec(&json!({ "Response": v })).unwrap();
        let p = parse_users(200, &body(json!({"Total": 0, "UserList": null}))).unwrap();
        assert!(p.rows.is_empty());
        let e = parse_users(200, &body(json!({"Total": 3, "UserList": null})))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("DescribeUserInfo: malformed response: UserList is null but Total is 3")
        );
        // Absent with a count, or with no count at all: never an empty call.
        for (v, want) in [
            (json!({"Total": 3}), "UserList is absent but Total is 3"),
            (json!({}), "the answer has neither UserList nor Total"),
            (
                json!({"UserList": null}),
                "UserList is null and there is no Total",
            ),
        ] {
            let e = parse_users(200, &body(v)).err().map(|e| e.to_string());
            assert_eq!(
                e,
                Some(format!("DescribeUserInfo: malformed response: {want}"))
            );
        }
        assert!(parse_users(200, &body(json!({"Total": 0})))
            .unwrap()
            .rows
            .is_empty());
        let e = parse_rooms(200, &body(json!({"RequestId": "x"})))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("DescribeRoomInfo: malformed response: the answer has neither RoomList nor Total")
        );
    }

    #[test]
    fn tencents_own_user_info_example_reads_both_rows() {
        // Seed 002, DescribeUserInfo "Output Example", as published.
        let body = br#"{"Response": {"Total": 1, "UserList": [
            {"RoomStr": "218695", "UserId": "user1_54816741", "JoinTs": 1590065777, "LeaveTs": 1590067658, "Finished": true, "DeviceType": "", "SdkVersion": "4.3.14", "ClientIp": "10.4.1.13"},
            {"RoomStr": "218695", "UserId": "user2_2107025", "JoinTs": 1590065700, "LeaveTs": 1590067693, "Finished": true, "DeviceType": "", "SdkVersion": "4.3.14", "ClientIp": "10.4.1.13"}],
            "RequestId": "2e12e365-43e8-4efd-902d-906303e2ee4a"}}"#;
        let p = parse_users(200, body).unwrap();
        assert_eq!(p.rows.len(), 2);
        assert_eq!(p.total, Some(1));
        assert!(total_mismatch(p.total, 2, 2).is_some());
    }

    #[test]
    fn every_documented_throttle_spelling_is_throttled() {
        // Tencent Cloud API 3.0 common error codes: RequestLimitExceeded and its
        // .UinLimitExceeded, .IPLimitExceeded, .GlobalRegionUinLimitExceeded. LimitExceeded is a
        // quota, not a rate.
        for code in [
            "RequestLimitExceeded",
            "RequestLimitExceeded.UinLimitExceeded",
            "RequestLimitExceeded.IPLimitExceeded",
            "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
        ] {
            let body = serde_json::to_vec(
                &json!({"Response": {"Error": {"Code": code, "Message": "m"}, "RequestId": "r"}}),
            )
            .unwrap();
            match parse_users(200, &body) {
                Err(CallError::Vendor {
                    throttled, label, ..
                }) => {
                    assert!(throttled, "{code}");
                    assert_eq!(label, "RequestLimitExceeded");
                }
                _ => panic!("{code}: not a vendor error"),
            }
        }
        let body = serde_json::to_vec(&json!({"Response": {"Error": {"Code": "LimitExceeded", "Message": "m"}, "RequestId": "r"}})).unwrap();
        assert!(matches!(
            parse_users(200, &body),
            Err(CallError::Vendor {
                throttled: false,
                ..
            })
        ));
    }
}

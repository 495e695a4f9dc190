//! Agora: the Channel Management RESTful API. `QueryChannelList`
//! (`GET /dev/v1/channel/{appid}`) finds the channels in progress and their user counts,
//! `QueryUserList` (`GET /dev/v1/channel/user/{appid}/{channelName}`) lists who is in each, and
//! `QueryUserStatus` (`GET /dev/v1/channel/user/property/{appid}/{uid}/{channelName}`) tells one
//! user's platform.
//!
//! # Authentication
//!
//! HTTP Basic: `Authorization: Basic base64(customer_id:customer_secret)` on every request
//! ([`authorization`]). No signing. Agora publishes no test vector; the unit test builds the
//! header from the published format by its own means.
//!
//! # Answers and errors
//!
//! A 200 carries `{"success": true, "data": {...}}`; any other status is the error, with
//! `{"message": "..."}` in the body where Agora sends one. The documented statuses (400, 401
//! for a wrong key pair or app id, 403, 404, 415, 429, 500) are the vendor's codes; others count
//! as `other` when the body is Agora's JSON, and as an HTTP error otherwise. 429 throttles the
//! whole account ([`super::Api::call`] pauses it).
//!
//! # Rooms
//!
//! Without `rooms:`, each poll pages the channel list (`page_size` 500 by default, at most 500)
//! until a short (or empty) page or a page with no channel not already listed (not by
//! `total_size`, which changes while it pages), then asks each listed channel's user list, [`CONCURRENCY`] in flight.
//! Agora warns that while counts change a channel can appear on two pages or on none: a
//! channel listed twice is one channel (its later row kept, never summed: `duplicate_row`), a
//! `total_size` that is neither the channels nor the rows sent is `total_mismatch`, and a
//! channel that was in progress but is missing from one listing is not taken as ended: it keeps
//! its last figures (its last reading is reported again, without a request) until a second
//! listing in a row lacks it too, which ends it. A page that comes back empty while
//! `total_size` says it holds channels (page 0 with a total above 0, or page n whose
//! `(n + 1) × page_size` is within the total) fails the request (`malformed`): the listing
//! would lose channels. With `rooms:`, there is no listing: each configured channel's user list
//! is asked, and `channel_exist: false` says it is not in progress (users 0).
//!
//! A user list with `channel_exist: false` is a channel that ended: users 0, a real 0. In the
//! communication profile (`mode` 1), users now are the larger of `total` and the distinct ids
//! of `users` (they disagree: `list_shorter_than_count` / `list_longer_than_count`); no role.
//! In the live-broadcasting profile (`mode` 2), `broadcasters` are broadcasters and `audience`
//! (the first 10 000 only) viewers; users now = broadcasters + the larger of `audience_total`
//! and the audience listed. A null or absent list where a count says people are there is
//! `malformed`, never an empty channel. The ids listed feed the day's distinct users: peak and
//! accumulated are observed by polling, lower bounds.
//!
//! # Devices
//!
//! A platform is told only per user (`QueryUserStatus`, one request each). After each poll a
//! sampler task asks the users present whose platform is not known yet, round robin, at the
//! account's rate, until the next poll starts (which stops it): the poll's own requests never
//! wait behind it. A user's platform does not change during a stay, so it is asked once per
//! user and channel. `rtc_device_users` counts the users present whose platform is known:
//! a lower bound for each class (their sum is at most the users now); while users are present
//! and none of them is known yet, the device figures are absent, never 0. `devices: false`
//! turns the sampler off.
//!
//! # Rate
//!
//! These APIs share one limit: 20 requests per second per customer id (Agora's default). A poll
//! costs ⌈N / 500⌉ listing pages (at least 1) plus N user lists for N channels.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use futures_util::stream::{self, StreamExt};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::task::JoinHandle;

use super::merged::{Identity, Merged};
use super::util::{
    code_label, distinct, id_string, lenient_bool, lenient_u64, optional, Occupancy,
};
use super::{
    Anomaly, Api, BoxFuture, CallError, DayFigures, Device, DeviceCounts, Observation, PollCtx,
    PollError, Role, RoleCounts, RoomObservation, TargetInfo, Vendor, VendorEntry,
};
use crate::fields::{from_value, FieldError, Secret};
use crate::lock::lock;

/// The registry row.
pub const ENTRY: VendorEntry = VendorEntry {
    name: "agora",
    parse,
};

/// The channels of a project, paged.
pub const LIST_CHANNELS: &str = "QueryChannelList";
/// The users of one channel.
pub const LIST_USERS: &str = "QueryUserList";
/// One user's status (platform) in one channel.
pub const USER_STATUS: &str = "QueryUserStatus";
/// The one limiter bucket the three share.
const BUCKET: &str = "ChannelManagement";
/// Requests per second per customer id (Agora's default for these APIs).
pub const QPS: f64 = 20.0;
const DEFAULT_ENDPOINT: &str = "https://api.agora.io";
/// The largest `page_size` Agora takes, and the default.
pub const MAX_PAGE_SIZE: usize = 500;
/// A listing that keeps sending full pages of new channels stops here (`page_cap`).
const MAX_PAGES: usize = 1000;
/// User lists in flight at once.
const CONCURRENCY: usize = 8;
/// The audience a user list shows at most.
pub const AUDIENCE_CAP: usize = 10_000;

/// The HTTP statuses Agora documents for these APIs; others count as `other`.
const CODES: &[&str] = &["400", "401", "403", "404", "415", "429", "500"];

/// A channel name as one path segment: everything but unreserved characters encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn yes() -> bool {
    true
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
    #[serde(default = "yes")]
    devices: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    customer_id: String,
    customer_secret: Secret,
}

fn parse(value: serde_yaml::Value) -> Result<Arc<dyn Vendor>, FieldError> {
    let s: Settings = from_value(value)?;
    if s.app_id.trim().is_empty() {
        return Err(FieldError::new("app_id", "must not be empty"));
    }
    if s.credentials.customer_id.trim().is_empty() {
        return Err(FieldError::new(
            "credentials.customer_id",
            "must not be empty",
        ));
    }
    if s.credentials.customer_secret.expose().is_empty() {
        return Err(FieldError::new(
            "credentials.customer_secret",
            "must not be empty",
        ));
    }
    if let Some(n) = s.page_size {
        if !(1..=MAX_PAGE_SIZE).contains(&n) {
            return Err(FieldError::new(
                "page_size",
                format!("must be 1 to {MAX_PAGE_SIZE} (Agora's range), not {n}"),
            ));
        }
    }
    if let Some(rooms) = &s.rooms {
        super::util::check_rooms(rooms)?;
    }
    Ok(Arc::new(Agora {
        s: Arc::new(s),
        state: Arc::new(Mutex::new(State::default())),
        next: AtomicUsize::new(0),
    }))
}

/// The `Authorization` header: `Basic ` and the Base64 of `customer_id:customer_secret`.
pub fn authorization(customer_id: &str, customer_secret: &str) -> String {
    let pair = format!("{customer_id}:{customer_secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
    )
}

// ---------------------------------------------------------------------------------------------
// Reading answers

fn malformed(api: &'static str, message: impl Into<String>) -> CallError {
    CallError::Malformed {
        api,
        message: message.into(),
    }
}

/// The `data` object of a 200 answer, or the error the answer is.
fn data(api: &'static str, status: u16, body: &[u8]) -> Result<Map<String, Value>, CallError> {
    let json: Result<Value, _> = serde_json::from_slice(body);
    if status != 200 {
        let message = json
            .as_ref()
            .ok()
            .and_then(|v| v.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let code = status.to_string();
        let label = code_label(CODES, &code);
        if label == "other" && message.is_none() {
            // Not Agora's answer (a gateway's page): an HTTP error.
            return Err(CallError::Http { api, status });
        }
        return Err(CallError::Vendor {
            api,
            throttled: status == 429,
            label,
            message: message.unwrap_or_default(),
            code,
        });
    }
    let json = json.map_err(|e| malformed(api, e.to_string()))?;
    let Value::Object(mut top) = json else {
        return Err(malformed(api, "the answer is not a JSON object"));
    };
    match top.get("success").map(lenient_bool) {
        Some(Some(true)) => {}
        Some(Some(false)) => return Err(malformed(api, "success is false")),
        _ => return Err(malformed(api, "success missing or not a boolean")),
    }
    match top.remove("data") {
        Some(Value::Object(d)) => Ok(d),
        _ => Err(malformed(api, "data missing or not an object")),
    }
}

/// A count field: absent or null is `None`; there but not a count is an error.
fn count(api: &'static str, d: &Map<String, Value>, field: &str) -> Result<Option<u64>, CallError> {
    optional(d.get(field), lenient_u64)
        .map_err(|_| malformed(api, format!("{field} is not a count")))
}

/// A list of user ids: `None` when absent or null; an id that is not a number or a non-empty
/// string is an error.
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
                id_string(v).ok_or_else(|| malformed(api, format!("{field}[{i}] is not a user id")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(malformed(api, format!("{field} is not a list"))),
    }
}

/// One row of the channel list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChannelRow {
    pub(crate) name: String,
    pub(crate) users: u64,
}

impl Identity for ChannelRow {
    type Key = String;
    fn key(&self) -> String {
        self.name.clone()
    }
}

/// One page of the channel list.
#[derive(Debug)]
pub(crate) struct ChannelPage {
    pub(crate) rows: Vec<ChannelRow>,
    pub(crate) total: Option<u64>,
}

/// Reads one page of `QueryChannelList`.
pub(crate) fn parse_channels(status: u16, body: &[u8]) -> Result<ChannelPage, CallError> {
    let api = LIST_CHANNELS;
    let d = data(api, status, body)?;
    let total = count(api, &d, "total_size")?;
    let list = match d.get("channels") {
        Some(Value::Array(a)) => a.as_slice(),
        None | Some(Value::Null) if total.unwrap_or(0) == 0 => &[],
        None | Some(Value::Null) => {
            return Err(malformed(
                api,
                format!(
                    "channels is null or missing but total_size is {}",
                    total.unwrap_or(0)
                ),
            ))
        }
        Some(_) => return Err(malformed(api, "channels is not a list")),
    };
    let rows = list
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let o = v
                .as_object()
                .ok_or_else(|| malformed(api, format!("channels[{i}] is not an object")))?;
            let name = match o.get("channel_name") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => {
                    return Err(malformed(
                        api,
                        format!("channels[{i}]: channel_name missing or empty"),
                    ))
                }
            };
            let users = count(api, o, "user_count")?
                .ok_or_else(|| malformed(api, format!("channels[{i}]: user_count missing")))?;
            Ok(ChannelRow { name, users })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ChannelPage { rows, total })
}

/// A page that comes back empty while `total_size` says it holds channels (page 0 with a total
/// above 0, or a later page the total says is full) would end channels that are in progress:
/// the request fails.
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
    let full = (page_no as u64 + 1).saturating_mul(size as u64);
    if (page_no == 0 && t > 0) || (page_no > 0 && full <= t) {
        return Err(malformed(
            LIST_CHANNELS,
            format!("page {page_no} is empty but total_size is {t}"),
        ));
    }
    Ok(())
}

/// What disagreed in an answer that still read.
pub(crate) type Findings = Vec<(Anomaly, String)>;

/// Reads `QueryUserList`.
pub(crate) fn parse_users(status: u16, body: &[u8]) -> Result<(Occupancy, Findings), CallError> {
    let api = LIST_USERS;
    let d = data(api, status, body)?;
    let exists = match d.get("channel_exist").map(lenient_bool) {
        Some(Some(b)) => b,
        _ => return Err(malformed(api, "channel_exist missing or not a boolean")),
    };
    if !exists {
        return Ok((Occupancy::Gone, Vec::new()));
    }
    let mode = count(api, &d, "mode")?.ok_or_else(|| malformed(api, "mode missing"))?;
    let mut found = Findings::new();
    let mut seen = HashSet::new();
    let mut repeats = 0;
    let occupancy = match mode {
        1 => {
            let total = count(api, &d, "total")?;
            let listed = id_list(api, &d, "users")?;
            let listed = match (listed, total) {
                (Some(l), _) => l,
                (None, Some(0)) => Vec::new(),
                (None, Some(t)) => {
                    return Err(malformed(
                        api,
                        format!("users is null or missing but total is {t}"),
                    ))
                }
                (None, None) => return Err(malformed(api, "neither total nor users")),
            };
            let (ids, r) = distinct(listed, &mut seen);
            repeats += r;
            let n = ids.len() as u64;
            let users = match total {
                Some(t) if t > n => {
                    found.push((
                        Anomaly::ListShorterThanCount,
                        format!("total {t}, {n} user ids: users now from total"),
                    ));
                    t
                }
                Some(t) if t < n => {
                    found.push((
                        Anomaly::ListLongerThanCount,
                        format!("total {t}, {n} user ids: users now from the ids"),
                    ));
                    n
                }
                _ => n,
            };
            Occupancy::Present {
                users,
                ids,
                roles: None,
            }
        }
        2 => {
            let broadcasters = id_list(api, &d, "broadcasters")?
                .ok_or_else(|| malformed(api, "broadcasters missing in a live channel"))?;
            let audience_total = count(api, &d, "audience_total")?;
            let audience = match (id_list(api, &d, "audience")?, audience_total) {
                (Some(l), _) => l,
                (None, None | Some(0)) => Vec::new(),
                (None, Some(t)) => {
                    return Err(malformed(
                        api,
                        format!("audience is null or missing but audience_total is {t}"),
                    ))
                }
            };
            let listed_audience = audience.len();
            let (hosts, r1) = distinct(broadcasters, &mut seen);
            let (viewers, r2) = distinct(audience, &mut seen);
            repeats += r1 + r2;
            let a = viewers.len() as u64;
            let audience_now = match audience_total {
                Some(t) if t > a => {
                    // Beyond the first 10 000 the list is cut by design: no anomaly then.
                    if listed_audience < AUDIENCE_CAP {
                        found.push((
                            Anomaly::ListShorterThanCount,
                            format!(
                                "audience_total {t}, {a} audience ids: audience from the total"
                            ),
                        ));
                    }
                    t
                }
                Some(t) if t < a => {
                    found.push((
                        Anomaly::ListLongerThanCount,
                        format!("audience_total {t}, {a} audience ids: audience from the ids"),
                    ));
                    a
                }
                _ => a,
            };
            let b = hosts.len() as u64;
            let roles: RoleCounts = [(Role::Broadcaster, b), (Role::Viewer, audience_now)]
                .into_iter()
                .collect();
            let mut ids = hosts;
            ids.extend(viewers);
            Occupancy::Present {
                users: b.saturating_add(audience_now),
                ids,
                roles: Some(roles),
            }
        }
        m => return Err(malformed(api, format!("mode {m} is neither 1 nor 2"))),
    };
    if repeats > 0 {
        found.push((
            Anomaly::DuplicateRow,
            format!("{repeats} user id(s) listed twice: counted once"),
        ));
    }
    Ok((occupancy, found))
}

/// A user's platform code as a device class: 1 Android, 2 iOS, 5 Windows, 6 Linux, 7 Web,
/// 8 macOS; 0 and anything else `other`.
pub fn platform_device(code: u64) -> Device {
    match code {
        1 => Device::Android,
        2 => Device::Ios,
        5 => Device::Windows,
        6 => Device::Linux,
        7 => Device::Web,
        8 => Device::Mac,
        _ => Device::Other,
    }
}

/// Reads `QueryUserStatus`: the user's device class while in the channel, `None` when not in
/// it. A user in the channel without a `platform` (Agora's older example shows none) is
/// `other`.
pub(crate) fn parse_status(status: u16, body: &[u8]) -> Result<Option<Device>, CallError> {
    let api = USER_STATUS;
    let d = data(api, status, body)?;
    let in_channel = match d.get("in_channel").map(lenient_bool) {
        Some(Some(b)) => b,
        _ => return Err(malformed(api, "in_channel missing or not a boolean")),
    };
    if !in_channel {
        return Ok(None);
    }
    let platform = count(api, &d, "platform")?;
    Ok(Some(platform.map_or(Device::Other, platform_device)))
}

// ---------------------------------------------------------------------------------------------
// Polling

/// What the target remembers between polls.
#[derive(Default)]
struct State {
    /// Each channel's last reading (channels in progress only).
    last: BTreeMap<String, RoomObservation>,
    /// Channels in progress that the previous listing lacked: one more miss ends them.
    missed: HashSet<String>,
    /// Who is in now, by (channel, uid), as the last poll's user lists showed.
    present: BTreeSet<(String, String)>,
    /// The platforms known, by (channel, uid).
    platforms: HashMap<(String, String), Device>,
    /// Where the sampler stopped.
    cursor: Option<(String, String)>,
    /// The running sampler.
    sampler: Option<JoinHandle<()>>,
}

/// One configured Agora target.
pub struct Agora {
    s: Arc<Settings>,
    state: Arc<Mutex<State>>,
    /// Round robin over the channels' user lists: a poll begins where the last one's answers
    /// ended, so a poll cut by `poll_timeout` is continued by the next, not begun again.
    next: AtomicUsize,
}

impl Drop for Agora {
    fn drop(&mut self) {
        if let Some(h) = lock(&self.state).sampler.take() {
            h.abort();
        }
    }
}

fn base(ctx: &PollCtx) -> String {
    ctx.endpoint_or(DEFAULT_ENDPOINT)
        .trim_end_matches('/')
        .to_string()
}

fn get(ctx: &PollCtx, s: &Settings, url: String) -> reqwest::RequestBuilder {
    ctx.plumbing
        .http
        .get(url)
        .header(
            "Authorization",
            authorization(
                &s.credentials.customer_id,
                s.credentials.customer_secret.expose(),
            ),
        )
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
}

fn api<'a>(ctx: &'a PollCtx, s: &Settings, name: &'static str) -> Api<'a> {
    ctx.api_bucket(name, BUCKET, &s.credentials.customer_id, QPS)
}

/// The room as the ledger gets it.
fn listed_ids(day: &DayFigures) -> &[String] {
    match day {
        DayFigures::Present(ids) | DayFigures::PresentByRole { ids, .. } => ids,
        _ => &[],
    }
}

impl Agora {
    /// Pages the channel list: the distinct channels in progress.
    async fn list(&self, ctx: &PollCtx) -> Result<Vec<ChannelRow>, CallError> {
        let api = api(ctx, &self.s, LIST_CHANNELS);
        let size = self.s.page_size.unwrap_or(MAX_PAGE_SIZE);
        let root = base(ctx);
        let app = utf8_percent_encode(&self.s.app_id, SEGMENT).to_string();
        let mut listing: Merged<ChannelRow> = Merged::new();
        let mut total = None;
        let mut complete = false;
        for page_no in 0..MAX_PAGES {
            let url = format!("{root}/dev/v1/channel/{app}?page_no={page_no}&page_size={size}");
            // Checked inside the request, so that the answer counts as `malformed`.
            let page = api
                .call(get(ctx, &self.s, url), |status, body| {
                    let page = parse_channels(status, body)?;
                    check_not_cut(&page, page_no, size)?;
                    Ok(page)
                })
                .await?;
            if page.total.is_some() {
                total = page.total;
            }
            // `total_size` does not end the listing: counts change while it pages, and a
            // total one short would leave the last channel out.
            let nothing_new = listing.fresh(&page.rows) == 0;
            let short = page.rows.len() < size;
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
                    first.name,
                    listing.rows.len(),
                    listing.sent()
                ),
            );
        }
        if let Some(t) = total {
            if t != listing.rows.len() as u64 && t != listing.sent() as u64 {
                ctx.anomaly(
                    LIST_CHANNELS,
                    Anomaly::TotalMismatch,
                    format!(
                        "total_size {t}, but {} channels listed ({} rows sent): read from the rows",
                        listing.rows.len(),
                        listing.sent()
                    ),
                );
            }
        }
        Ok(listing.rows)
    }

    /// One channel's user list, read and reported.
    async fn users(&self, ctx: &PollCtx, api: &Api<'_>, channel: &str) {
        let url = format!(
            "{}/dev/v1/channel/user/{}/{}",
            base(ctx),
            utf8_percent_encode(&self.s.app_id, SEGMENT),
            utf8_percent_encode(channel, SEGMENT)
        );
        match api.call(get(ctx, &self.s, url), parse_users).await {
            Ok((occ, found)) => {
                for (kind, detail) in found {
                    ctx.anomaly(LIST_USERS, kind, format!("channel {channel}: {detail}"));
                }
                let obs = occ.observation(channel, true);
                {
                    let mut st = lock(&self.state);
                    if obs.active {
                        st.last.insert(channel.to_string(), obs.clone());
                    } else {
                        st.last.remove(channel);
                    }
                }
                ctx.room_done(obs);
            }
            Err(e) => ctx.room_failed(channel, &e),
        }
    }

    async fn fetch(&self, ctx: &PollCtx) -> Result<Observation, PollError> {
        if let Some(h) = lock(&self.state).sampler.take() {
            h.abort();
        }
        let channels: Vec<String> = match &self.s.rooms {
            Some(rooms) => rooms.clone(),
            None => {
                let rows = self.list(ctx).await?;
                let listed: HashSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
                // A channel in progress that this listing lacks: kept once, ended the second
                // time in a row.
                let kept: Vec<RoomObservation> = {
                    let mut st = lock(&self.state);
                    let st = &mut *st;
                    st.missed.retain(|c| !listed.contains(c.as_str()));
                    let lacking: Vec<String> = st
                        .last
                        .keys()
                        .filter(|c| !listed.contains(c.as_str()))
                        .cloned()
                        .collect();
                    let mut kept = Vec::new();
                    for c in lacking {
                        if st.missed.remove(&c) {
                            st.last.remove(&c);
                        } else if let Some(obs) = st.last.get(&c) {
                            st.missed.insert(c.clone());
                            kept.push(obs.clone());
                        }
                    }
                    kept
                };
                for obs in kept {
                    ctx.room_done(obs);
                }
                rows.into_iter().map(|r| r.name).collect()
            }
        };
        let users_api = api(ctx, &self.s, LIST_USERS);
        let mut channels = channels;
        if !channels.is_empty() {
            let at = self.next.load(Ordering::Relaxed) % channels.len();
            channels.rotate_left(at);
        }
        let users_api = &users_api;
        stream::iter(channels.iter())
            .for_each_concurrent(CONCURRENCY, |c| async move {
                self.users(ctx, users_api, c).await;
                self.next.fetch_add(1, Ordering::Relaxed);
            })
            .await;
        let devices = self.devices(ctx);
        Ok(Observation {
            devices,
            ..Observation::default()
        })
    }

    /// Who is present now (from every channel's last reading), the device figures of those
    /// whose platform is known, and a sampler started for the rest.
    fn devices(&self, ctx: &PollCtx) -> Option<DeviceCounts> {
        if !self.s.devices {
            return None;
        }
        let mut st = lock(&self.state);
        let st = &mut *st;
        st.present = st
            .last
            .iter()
            .filter(|(_, o)| o.active)
            .flat_map(|(c, o)| listed_ids(&o.day).iter().map(|u| (c.clone(), u.clone())))
            .collect();
        let present = &st.present;
        st.platforms.retain(|k, _| present.contains(k));
        let mut counts: DeviceCounts = Device::ALL.iter().map(|d| (*d, 0)).collect();
        for d in st.platforms.values() {
            *counts.entry(*d).or_default() += 1;
        }
        let unknown: Vec<(String, String)> = sample_order(
            st.present
                .iter()
                .filter(|k| !st.platforms.contains_key(*k))
                .cloned()
                .collect(),
            st.cursor.as_ref(),
        );
        let measured = !st.platforms.is_empty() || st.present.is_empty();
        if !unknown.is_empty() {
            st.sampler = Some(tokio::spawn(sample(
                ctx.to_owned_ctx(),
                self.s.clone(),
                self.state.clone(),
                unknown,
            )));
        }
        measured.then_some(counts)
    }
}

/// Round robin: the users after `cursor` first, then the rest (both in order).
fn sample_order(
    users: Vec<(String, String)>,
    cursor: Option<&(String, String)>,
) -> Vec<(String, String)> {
    let Some(cursor) = cursor else {
        return users;
    };
    let (before, after): (Vec<_>, Vec<_>) = users.into_iter().partition(|u| u <= cursor);
    after.into_iter().chain(before).collect()
}

/// Asks each user's platform in turn at the account's rate. Failures are counted and logged
/// by [`Api::call`] and skipped (the user is asked again after the next poll).
async fn sample(
    ctx: PollCtx,
    s: Arc<Settings>,
    state: Arc<Mutex<State>>,
    order: Vec<(String, String)>,
) {
    let api = api(&ctx, &s, USER_STATUS);
    let root = base(&ctx);
    let app = utf8_percent_encode(&s.app_id, SEGMENT).to_string();
    for (channel, uid) in order {
        // The API takes integer user ids only.
        if uid.parse::<u64>().is_err() {
            continue;
        }
        let url = format!(
            "{root}/dev/v1/channel/user/property/{app}/{uid}/{}",
            utf8_percent_encode(&channel, SEGMENT)
        );
        let result = api.call(get(&ctx, &s, url), parse_status).await;
        let mut st = lock(&state);
        if let Ok(Some(device)) = result {
            let key = (channel.clone(), uid.clone());
            if st.present.contains(&key) {
                st.platforms.insert(key, device);
            }
        }
        st.cursor = Some((channel, uid));
    }
}

impl Vendor for Agora {
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
        // Without `rooms:` the listing finds the channels: one user list each besides.
        self.s.rooms.as_ref().map(|rooms| super::Budget {
            requests: rooms.len() as u64,
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

    /// Base64 by hand (RFC 4648 §4), so the header is checked by other means than the client's.
    fn b64(input: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn basic_auth_is_base64_of_id_colon_secret() {
        // RFC 7617's own example: Aladdin / open sesame.
        assert_eq!(
            authorization("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        for (id, secret) in [
            ("4855xxxxxxxxxxxxxxxxxxxxxxxxeae2", "1c8b2f3e9d"),
            ("a", "b"),
            ("ab", "cd:ef"),
            ("customer", "sécret"),
        ] {
            let want = format!("Basic {}", b64(format!("{id}:{secret}").as_bytes()));
            assert_eq!(authorization(id, secret), want);
        }
        assert_eq!(b64(b"Aladdin:open sesame"), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }

    #[test]
    fn the_published_channel_list_example_reads() {
        let body = br#"{"success": true, "data": {"channels": [{"channel_name": "lkj144", "user_count": 3}], "total_size": 1}}"#;
        let page = parse_channels(200, body).unwrap();
        assert_eq!(
            page.rows,
            vec![ChannelRow {
                name: "lkj144".into(),
                users: 3
            }]
        );
        assert_eq!(page.total, Some(1));
    }

    #[test]
    fn the_published_user_list_examples_read() {
        let comm = br#"{"success": true, "data": {"channel_exist": true, "mode": 1, "total": 1, "users": [906218805]}}"#;
        let (occ, found) = parse_users(200, comm).unwrap();
        assert_eq!(
            occ,
            Occupancy::Present {
                users: 1,
                ids: vec!["906218805".into()],
                roles: None
            }
        );
        assert!(found.is_empty());
        let live = br#"{"success": true, "data": {"channel_exist": true, "mode": 2, "broadcasters": [2206227541, 2845863044], "audience": [906219905], "audience_total": 1}}"#;
        let (occ, found) = parse_users(200, live).unwrap();
        let Occupancy::Present { users, ids, roles } = occ else {
            panic!("present")
        };
        assert_eq!(users, 3);
        assert_eq!(ids, vec!["2206227541", "2845863044", "906219905"]);
        let roles = roles.unwrap();
        assert_eq!(roles[&Role::Broadcaster], 2);
        assert_eq!(roles[&Role::Viewer], 1);
        assert!(found.is_empty());
        let gone = br#"{"success": true, "data": {"channel_exist": false}}"#;
        assert_eq!(parse_users(200, gone).unwrap().0, Occupancy::Gone);
    }

    #[test]
    fn counts_and_lists_that_disagree() {
        let body =
            br#"{"success":true,"data":{"channel_exist":true,"mode":1,"total":5,"users":[1,2,2]}}"#;
        let (occ, found) = parse_users(200, body).unwrap();
        assert!(matches!(occ, Occupancy::Present { users: 5, ref ids, .. } if ids.len() == 2));
        let kinds: Vec<Anomaly> = found.iter().map(|f| f.0).collect();
        assert_eq!(
            kinds,
            vec![Anomaly::ListShorterThanCount, Anomaly::DuplicateRow]
        );
        // A capped audience is not an anomaly.
        let audience: Vec<u64> = (0..AUDIENCE_CAP as u64).collect();
        let body = serde_json::json!({"success": true, "data": {"channel_exist": true, "mode": 2,
            "broadcasters": [], "audience": audience, "audience_total": 12000}});
        let (occ, found) = parse_users(200, body.to_string().as_bytes()).unwrap();
        assert!(matches!(occ, Occupancy::Present { users: 12000, .. }));
        assert!(found.is_empty());
    }

    #[test]
    fn lists_missing_where_counts_say_people_are_there_are_malformed() {
        for body in [
            r#"{"success":true,"data":{"channel_exist":true,"mode":1,"total":2}}"#,
            r#"{"success":true,"data":{"channel_exist":true,"mode":1,"total":2,"users":null}}"#,
            r#"{"success":true,"data":{"channel_exist":true,"mode":2,"audience":[1]}}"#,
            r#"{"success":true,"data":{"channel_exist":true,"mode":2,"broadcasters":[],"audience_total":3}}"#,
            r#"{"success":true,"data":{"channel_exist":true,"mode":3,"users":[]}}"#,
            r#"{"success":true,"data":{"channel_exist":true,"mode":1,"total":"x","users":[]}}"#,
            r#"{"success":true,"data":{"mode":1,"total":0,"users":[]}}"#,
            r#"{"success":false,"data":{}}"#,
            r#"{"success":true,"data":{"channel_exist":true,"mode":1,"total":1,"users":[{"uid":1}]}}"#,
        ] {
            let e = parse_users(200, body.as_bytes()).unwrap_err();
            assert_eq!(e.outcome(), "malformed", "{body}");
        }
        for body in [
            r#"{"success":true,"data":{"channels":null,"total_size":4}}"#,
            r#"{"success":true,"data":{"total_size":4}}"#,
            r#"{"success":true,"data":{"channels":[{"user_count":1}],"total_size":1}}"#,
            r#"{"success":true,"data":{"channels":[{"channel_name":"a"}],"total_size":1}}"#,
        ] {
            let e = parse_channels(200, body.as_bytes()).unwrap_err();
            assert_eq!(e.outcome(), "malformed", "{body}");
        }
        let empty = parse_channels(
            200,
            br#"{"success":true,"data":{"channels":[],"total_size":0}}"#,
        )
        .unwrap();
        assert!(empty.rows.is_empty());
    }

    #[test]
    fn an_empty_page_the_total_says_is_full_fails() {
        let empty = |t| ChannelPage {
            rows: Vec::new(),
            total: t,
        };
        // Page 0 empty with channels said to be there.
        assert!(check_not_cut(&empty(Some(1)), 0, 500).is_err());
        assert!(check_not_cut(&empty(Some(0)), 0, 500).is_ok());
        assert!(check_not_cut(&empty(None), 0, 500).is_ok());
        // Page 1 of 3 with 8 channels: the total says it is full.
        assert!(check_not_cut(&empty(Some(8)), 1, 3).is_err());
        // The page after the last full one, with a total one above the channels: read.
        assert!(check_not_cut(&empty(Some(10)), 3, 3).is_ok());
        let row = ChannelPage {
            rows: vec![ChannelRow {
                name: "a".into(),
                users: 1,
            }],
            total: Some(99),
        };
        assert!(check_not_cut(&row, 5, 3).is_ok());
    }

    #[test]
    fn errors_are_the_http_status() {
        let e = parse_channels(400, br#"{"message": "invalid appid"}"#).unwrap_err();
        assert!(
            matches!(&e, CallError::Vendor { code, label: "400", message, throttled: false, .. }
            if code == "400" && message == "invalid appid")
        );
        let e = parse_users(429, b"").unwrap_err();
        assert!(e.is_throttle());
        assert_eq!(e.code_label(), Some("429"));
        let e = parse_users(401, b"<html>401</html>").unwrap_err();
        assert_eq!(e.code_label(), Some("401"));
        let e = parse_users(502, b"<html>bad gateway</html>").unwrap_err();
        assert!(matches!(e, CallError::Http { status: 502, .. }));
        let e = parse_users(503, br#"{"message":"busy"}"#).unwrap_err();
        assert_eq!(e.code_label(), Some("other"));
    }

    #[test]
    fn platforms_map_to_device_classes() {
        let want = [
            (0, Device::Other),
            (1, Device::Android),
            (2, Device::Ios),
            (5, Device::Windows),
            (6, Device::Linux),
            (7, Device::Web),
            (8, Device::Mac),
            (3, Device::Other),
        ];
        for (code, device) in want {
            assert_eq!(platform_device(code), device);
        }
        let body = br#"{"success":true,"data":{"join":1549073054,"in_channel":true,"role":2}}"#;
        assert_eq!(parse_status(200, body).unwrap(), Some(Device::Other));
        let body = br#"{"success":true,"data":{"in_channel":true,"uid":5,"join":1,"role":2,"platform":7}}"#;
        assert_eq!(parse_status(200, body).unwrap(), Some(Device::Web));
        let body = br#"{"success":true,"data":{"in_channel":false}}"#;
        assert_eq!(parse_status(200, body).unwrap(), None);
    }

    #[test]
    fn sampling_goes_round_robin_from_the_cursor() {
        let u = |c: &str, id: &str| (c.to_string(), id.to_string());
        let users = vec![u("a", "1"), u("a", "2"), u("b", "1")];
        assert_eq!(sample_order(users.clone(), None), users);
        assert_eq!(
            sample_order(users.clone(), Some(&u("a", "2"))),
            vec![u("b", "1"), u("a", "1"), u("a", "2")]
        );
    }

    fn yaml(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn config_keys() {
        let ok = "app_id: a\ncredentials: {customer_id: c, customer_secret: s}\n";
        assert!(parse(yaml(ok)).is_ok());
        let budget = parse(yaml(&format!("{ok}rooms: [x, y]\n")))
            .ok()
            .and_then(|v| v.budget());
        assert_eq!(budget.map(|b| (b.requests, b.qps)), Some((2, QPS)));
        for bad in [
            format!("{ok}region: x\n"),
            format!("{ok}page_size: 501\n"),
            format!("{ok}page_size: 0\n"),
            "app_id: a\ncredentials: {customer_id: c}\n".to_string(),
            "app_id: \"\"\ncredentials: {customer_id: c, customer_secret: s}\n".to_string(),
        ] {
            assert!(parse(yaml(&bad)).is_err(), "{bad}");
        }
    }
}

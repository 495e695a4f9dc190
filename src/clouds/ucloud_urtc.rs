//! UCloud URTC: `QueryURtcOnlineUsers`, the rooms of an app in [local midnight, now] with the
//! vendor's current, peak and accumulated users.
//!
//! Signing (vendors.md §1): every parameter but `Signature`, sorted by key bytes, `keyvalue`
//! concatenated with decoded values, the private key appended, SHA1 in lower-case hex. Form
//! POST; `RetCode` number or string; `Message` or `Msg`; `CurrentAmount` falls back to `Num`.
//! Several calls of one room in the day: peak = max, accumulated = sum. A count or status that
//! is there but unreadable (text, a fraction, a negative number) is `malformed`, never 0; one
//! that is missing falls back as the seed's example needs (no `RoomStatus`: in progress if
//! someone is in; no peak: the users now), but a call in progress must tell its users. A row
//! without its `RoomId` (or with another spelling, `RoomID`) fails the request: skipping it
//! would show its room as empty.
//!
//! Reading an answer (the README's "Answers that disagree with themselves"): the rows are the data. Pages of 100
//! until a short or empty page (`TotalCount` does not drive paging: UCloud's own example says 7
//! with one row); a row sent twice (the same room and `CallId`; without a `CallId`, the same
//! room and figures) is one call, counted as `duplicate_row`, never summed; a `TotalCount` that
//! is neither the calls listed nor the rows sent is `total_mismatch`. Still a failed request:
//! an unreadable answer or row, a null or absent `Data` unless `TotalCount` is 0, and a listing
//! that lost calls it listed earlier the same day.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::Value;
use sha1::{Digest, Sha1};

use super::anomaly::LOST_BEFORE_BELIEVED;
use super::merged::{Identity, Merged};
use super::util::{code_label, code_string, lenient_u64, optional};
use super::{
    Anomaly, BoxFuture, CallError, DayFigures, Observation, PollCtx, PollError, RoomObservation,
    TargetInfo, Vendor, VendorEntry,
};
use crate::fields::{from_value, FieldError, Secret};
use crate::lock::lock;

/// The registry row.
pub const ENTRY: VendorEntry = VendorEntry {
    name: "ucloud_urtc",
    parse,
};

const API: &str = "QueryURtcOnlineUsers";
const DEFAULT_ENDPOINT: &str = "https://api.ucloud.cn";
/// No QPS is published; 10 per public key (vendors.md §1 decision).
const QPS: f64 = 10.0;
const PAGE: usize = 100;
/// A vendor that keeps sending full pages of new rows must not keep us paging forever
/// (100 000 calls in a day, far beyond any app).
const MAX_PAGES: usize = 1000;

/// Every RetCode vendors.md §1 documents; others count as `other`.
const CODES: &[&str] = &[
    "110", "130", "150", "151", "152", "153", "160", "161", "170", "171", "172", "200", "210",
    "220", "230", "300", "999",
];
const THROTTLED: &str = "153";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    credentials: Credentials,
    app_id: String,
    #[serde(default)]
    rooms: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    public_key: String,
    private_key: Secret,
}

fn parse(value: serde_yaml::Value) -> Result<Arc<dyn Vendor>, FieldError> {
    let s: Settings = from_value(value)?;
    if s.app_id.is_empty() {
        return Err(FieldError::new("app_id", "must not be empty"));
    }
    if s.credentials.public_key.is_empty() {
        return Err(FieldError::new(
            "credentials.public_key",
            "must not be empty",
        ));
    }
    Ok(Arc::new(UcloudUrtc {
        s,
        seen: Mutex::new((None, HashSet::new(), 0)),
    }))
}

/// A call as the day's listings showed it: its room, and its `CallId` where the answer had one.
type SeenCall = (String, Option<String>);

/// The string UCloud signs: sorted `keyvalue` pairs, then the private key.
pub fn string_to_sign(params: &[(&str, String)], private_key: &str) -> String {
    let mut sorted: Vec<_> = params.iter().filter(|(k, _)| *k != "Signature").collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut s = String::new();
    for (k, v) in sorted {
        s.push_str(k);
        s.push_str(v);
    }
    s.push_str(private_key);
    s
}

/// The `Signature` parameter: SHA1 of [`string_to_sign`], lower-case hex.
pub fn signature(params: &[(&str, String)], private_key: &str) -> String {
    hex::encode(Sha1::digest(string_to_sign(params, private_key).as_bytes()))
}

/// One configured URTC target.
pub struct UcloudUrtc {
    s: Settings,
    /// The calls listed so far today, and the polls in a row whose listing lost some.
    seen: Mutex<(Option<chrono::NaiveDate>, HashSet<SeenCall>, u32)>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "RetCode")]
    ret_code: Option<Value>,
    #[serde(rename = "Message")]
    message: Option<String>,
    #[serde(rename = "Msg")]
    msg: Option<String>,
    #[serde(rename = "Data")]
    data: Option<Vec<Value>>,
    #[serde(rename = "TotalCount")]
    total_count: Option<Value>,
}

/// One entry of `Data`: one call of one room.
#[derive(Debug, PartialEq)]
pub(crate) struct CallRow {
    /// `CallId`, where the answer has one.
    pub(crate) call: Option<String>,
    /// `StartTime` as sent (only to tell calls without a `CallId` apart).
    pub(crate) start: Option<String>,
    pub(crate) room: String,
    pub(crate) active: bool,
    pub(crate) current: u64,
    pub(crate) peak: u64,
    pub(crate) accumulated: u64,
}

/// A count: absent or null is `None` (the field is optional), anything but a non-negative
/// integer (or a string holding one) is an error naming the field.
fn count(o: &serde_json::Map<String, Value>, field: &str) -> Result<Option<u64>, String> {
    optional(o.get(field), lenient_u64).map_err(|_| format!("{field} is not a count"))
}

/// Reads one entry; an entry that is not an object, or has no readable `RoomId`, is an
/// error naming the field (skipping it would show its room as empty), as is a field that is
/// there but unreadable (never taken as 0).
fn call_row(v: &Value) -> Result<CallRow, String> {
    let Some(o) = v.as_object() else {
        return Err("not an object".into());
    };
    let room = match o.get("RoomId") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::Number(n)) if n.is_u64() => n.to_string(),
        Some(Value::String(_)) => return Err("RoomId is empty".into()),
        Some(_) => return Err("RoomId is not a room id".into()),
        None => {
            // Another spelling (`RoomID`, `roomId`) is not UCloud's field: name it.
            return Err(match o.keys().find(|k| k.eq_ignore_ascii_case("RoomId")) {
                Some(other) => format!("RoomId missing (the row has `{other}` instead)"),
                None => "RoomId missing".into(),
            });
        }
    };
    let current = match count(o, "CurrentAmount")? {
        Some(n) => Some(n),
        None => count(o, "Num")?,
    };
    let active = match o.get("RoomStatus") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("true") => Some(true),
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("false") => Some(false),
        Some(v) => Some(super::util::lenient_bool(v).ok_or("RoomStatus is not a boolean")?),
    };
    let (active, current) = match (active, current) {
        (Some(false), _) => (false, 0),
        (Some(true), Some(n)) => (true, n),
        // Not told: in progress if someone is in.
        (None, Some(n)) => (n > 0, n),
        (_, None) => return Err("neither CurrentAmount nor Num for a call in progress".into()),
    };
    let call = o.get("CallId").and_then(super::util::id_string);
    let start = o
        .get("StartTime")
        .filter(|v| !v.is_null())
        .map(Value::to_string);
    Ok(CallRow {
        call,
        start,
        room,
        active,
        current,
        peak: count(o, "PeekAmount")?.unwrap_or(current).max(current),
        accumulated: count(o, "AccumulationAmount")?.unwrap_or(current),
    })
}

/// One page of `QueryURtcOnlineUsers`.
pub(crate) struct Page {
    pub(crate) rows: Vec<CallRow>,
    pub(crate) returned: usize,
    pub(crate) total: Option<u64>,
}

/// Reads one answer: the envelope, the code, the rows (see [`call_row`]).
pub(crate) fn parse_page(status: u16, body: &[u8]) -> Result<Page, CallError> {
    let env: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(_) if !(200..300).contains(&status) => {
            return Err(CallError::Http { api: API, status })
        }
        Err(e) => {
            return Err(CallError::Malformed {
                api: API,
                message: e.to_string(),
            })
        }
    };
    let code = env
        .ret_code
        .as_ref()
        .and_then(code_string)
        .ok_or_else(|| CallError::Malformed {
            api: API,
            message: "RetCode missing or not a number".into(),
        })?;
    if code != "0" {
        let label = code_label(CODES, &code);
        return Err(CallError::Vendor {
            api: API,
            throttled: code == THROTTLED,
            label,
            message: env.message.or(env.msg).unwrap_or_default(),
            code,
        });
    }
    if !(200..300).contains(&status) {
        return Err(CallError::Http { api: API, status });
    }
    let total =
        optional(env.total_count.as_ref(), lenient_u64).map_err(|_| CallError::Malformed {
            api: API,
            message: "TotalCount is not a count".into(),
        })?;
    let data = match env.data {
        Some(d) => d,
        // A null (or missing) list is an empty page only when the total says so.
        None if total == Some(0) => Vec::new(),
        None => {
            return Err(CallError::Malformed {
                api: API,
                message: format!(
                    "Data is null but TotalCount is {}",
                    total.map_or("missing".to_string(), |t| t.to_string())
                ),
            })
        }
    };
    let rows = data
        .iter()
        .enumerate()
        .map(|(i, v)| {
            call_row(v).map_err(|e| CallError::Malformed {
                api: API,
                message: format!("Data[{i}]: {e}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page {
        returned: data.len(),
        rows,
        total,
    })
}

/// What makes two rows one call: its room and `CallId`; a row without a `CallId` (the seed's
/// example) is the same row only with the same room, `StartTime` and figures (two calls of
/// one room that differ are two calls, summed by [`aggregate`]). Rows of the seed's shape,
/// `RoomId` and `Num` only, cannot tell two ended calls of one room apart (both `Num` 0): they
/// merge, which changes no figure, and count as `duplicate_row`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum RowKey {
    Call(String, String),
    Bare(String, Option<String>, bool, u64, u64, u64),
}

fn row_key(r: &CallRow) -> RowKey {
    match &r.call {
        Some(c) => RowKey::Call(r.room.clone(), c.clone()),
        None => RowKey::Bare(
            r.room.clone(),
            r.start.clone(),
            r.active,
            r.current,
            r.peak,
            r.accumulated,
        ),
    }
}

/// The calls of all pages so far merge by [`RowKey`]: a row sent again (on the same page or a
/// later one) replaces the earlier reading of its call, never adds to it.
impl Identity for CallRow {
    type Key = RowKey;
    fn key(&self) -> RowKey {
        row_key(self)
    }
}

/// The calls of all pages so far.
type Listing = Merged<CallRow>;

/// Whether `page` is the last: a short (or empty) page ends the listing; so does a full page
/// that holds no call not already listed (a vendor repeating a page, ignoring `Offset`, would
/// repeat it up to the page cap and bring nothing new).
fn is_last(page: &Page, listing: &Listing) -> bool {
    page.returned < PAGE || page.rows.iter().all(|r| listing.knows(r))
}

/// Calls aggregated per room: in progress if any call is, users of the running call,
/// peak = max, accumulated = sum.
fn aggregate(rows: Vec<CallRow>, allow: Option<&[String]>) -> Vec<RoomObservation> {
    let mut rooms: BTreeMap<String, (bool, u64, u64, u64)> = BTreeMap::new();
    for r in rows {
        if allow.is_some_and(|a| !a.contains(&r.room)) {
            continue;
        }
        let e = rooms.entry(r.room).or_default();
        e.0 |= r.active;
        e.1 = e.1.saturating_add(r.current);
        e.2 = e.2.max(r.peak);
        e.3 = e.3.saturating_add(r.accumulated);
    }
    rooms
        .into_iter()
        .map(
            |(room, (active, users, peak, accumulated))| RoomObservation {
                room,
                active,
                users,
                invisible: None,
                day: DayFigures::Reported { peak, accumulated },
            },
        )
        .collect()
}

impl UcloudUrtc {
    /// A listing since local midnight cannot lose a call it listed earlier the same day: if it
    /// does, the answer is wrong (not the rooms empty). Calls are matched by `CallId`; an
    /// entry without one (the seed's example) stands for every call of its room.
    fn check_nothing_lost<'r>(
        &self,
        ctx: &PollCtx,
        rows: impl Iterator<Item = &'r CallRow>,
    ) -> Result<(), CallError> {
        let mut seen = lock(&self.seen);
        if seen.0 != Some(ctx.today()) {
            *seen = (Some(ctx.today()), HashSet::new(), 0);
        }
        let now: HashSet<(&str, Option<&str>)> =
            rows.map(|r| (r.room.as_str(), r.call.as_deref())).collect();
        let rooms: HashSet<&str> = now.iter().map(|(room, _)| *room).collect();
        let listed = |(room, call): &SeenCall| match call {
            Some(c) => {
                now.contains(&(room.as_str(), Some(c.as_str())))
                    || now.contains(&(room.as_str(), None))
            }
            None => rooms.contains(room.as_str()),
        };
        let lost: Vec<&SeenCall> = seen.1.iter().filter(|c| !listed(c)).collect();
        if let Some((room, call)) = lost.first() {
            let detail = format!(
                "the listing since midnight lost {} call(s) it listed earlier today (e.g. room {room} call {}): {} listed now",
                lost.len(),
                call.as_deref().unwrap_or("-"),
                now.len()
            );
            seen.2 += 1;
            if seen.2 < LOST_BEFORE_BELIEVED {
                return Err(CallError::Malformed {
                    api: API,
                    message: detail,
                });
            }
            // The same loss poll after poll: the vendor's listing is the truth now.
            ctx.anomaly(
                API,
                Anomaly::LostRows,
                format!(
                    "{detail}; {LOST_BEFORE_BELIEVED} polls in a row, so the listing is believed"
                ),
            );
            seen.1.clear();
        }
        seen.2 = 0;
        let now: Vec<SeenCall> = now
            .into_iter()
            .map(|(room, call)| (room.to_string(), call.map(str::to_string)))
            .collect();
        seen.1.extend(now);
        Ok(())
    }

    async fn fetch(&self, ctx: &PollCtx) -> Result<Observation, PollError> {
        let api = ctx.api(API, &self.s.credentials.public_key, QPS);
        let url = format!(
            "{}/?Action={API}",
            ctx.endpoint_or(DEFAULT_ENDPOINT).trim_end_matches('/')
        );
        let (start, end) = (ctx.day_start(), ctx.now.timestamp());
        let mut listing = Listing::new();
        let mut offset = 0usize;
        let mut total = None;
        let mut complete = false;
        for _ in 0..MAX_PAGES {
            let mut params: Vec<(&str, String)> = vec![
                ("Action", API.to_string()),
                ("AppId", self.s.app_id.clone()),
                ("StartTime", start.to_string()),
                ("EndTime", end.to_string()),
                ("Offset", offset.to_string()),
                ("Limit", PAGE.to_string()),
                ("PublicKey", self.s.credentials.public_key.clone()),
            ];
            let sig = signature(&params, self.s.credentials.private_key.expose());
            params.push(("Signature", sig));
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
                .finish();
            let request = ctx
                .plumbing
                .http
                .post(&url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body);
            // On the last page, the whole listing is checked against the day inside the
            // request: a listing that lost calls fails it (counted `malformed`).
            let prior = &listing;
            let page = api
                .call(request, |status, body| {
                    let page = parse_page(status, body)?;
                    if is_last(&page, prior) {
                        self.check_nothing_lost(ctx, prior.rows.iter().chain(&page.rows))?;
                    }
                    Ok(page)
                })
                .await?;
            let last = is_last(&page, &listing);
            if page.total.is_some() {
                total = page.total;
            }
            offset += page.returned;
            listing.extend(page.rows);
            if last {
                complete = true;
                break;
            }
        }
        if !complete {
            // Still full pages of new calls at the cap: the calls past it are unknown, and
            // publishing the rest would show their rooms as empty (and the ledger read them as
            // left). Counted as `page_cap`, and the request fails.
            ctx.anomaly(
                API,
                Anomaly::PageCap,
                format!(
                    "still full pages of new calls after {MAX_PAGES} pages ({} calls)",
                    listing.rows.len()
                ),
            );
            return Err(CallError::Malformed {
                api: API,
                message: format!("still more calls after {MAX_PAGES} pages"),
            }
            .into());
        }
        if let Some(first) = listing.first_repeat.and_then(|i| listing.rows.get(i)) {
            let (room, call) = (&first.room, &first.call);
            ctx.anomaly(
                API,
                Anomaly::DuplicateRow,
                format!(
                    "{} row(s) repeated a call already listed (e.g. room {room} call {}): merged, {} calls from {} rows",
                    listing.repeated,
                    call.as_deref().unwrap_or("-"),
                    listing.rows.len(),
                    listing.sent()
                ),
            );
        }
        if let Some(t) = total {
            // The total may count the rows sent (repeats included) or the calls: either agrees.
            if t != listing.rows.len() as u64 && t != listing.sent() as u64 {
                ctx.anomaly(
                    API,
                    Anomaly::TotalMismatch,
                    format!(
                        "TotalCount {t}, but {} calls listed ({} rows sent): read from the rows",
                        listing.rows.len(),
                        listing.sent()
                    ),
                );
            }
        }
        Ok(Observation {
            rooms: aggregate(listing.rows, self.s.rooms.as_deref()),
            ..Observation::default()
        })
    }
}

impl Vendor for UcloudUrtc {
    fn documented_qps(&self) -> Option<f64> {
        Some(QPS)
    }
    fn info(&self) -> TargetInfo {
        TargetInfo {
            app: self.s.app_id.clone(),
            region: String::new(),
        }
    }

    fn poll<'a>(&'a self, ctx: &'a PollCtx) -> BoxFuture<'a, Result<Observation, PollError>> {
        Box::pin(self.fetch(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUB: &str = "ucloudsomeone@example.com1296235120854146120";
    const PRIV: &str = "46f09bb9fab4f12dfc160dae12273d5332b5debe";

    fn p(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn published_vector_describe_uhost() {
        let params = p(&[
            ("Action", "DescribeUHostInstance"),
            ("Region", "cn-bj2"),
            ("Limit", "10"),
            ("PublicKey", PUB),
        ]);
        assert_eq!(
            string_to_sign(&params, PRIV),
            "ActionDescribeUHostInstanceLimit10PublicKeyucloudsomeone@example.com1296235120854146120Regioncn-bj246f09bb9fab4f12dfc160dae12273d5332b5debe"
        );
        assert_eq!(
            signature(&params, PRIV),
            "cba5cf5ec4d4233d206b1b54951e3787350a642f"
        );
    }

    #[test]
    fn published_vector_create_uhost() {
        let params = p(&[
            ("Action", "CreateUHostInstance"),
            ("CPU", "2"),
            ("ChargeType", "Month"),
            ("DiskSpace", "10"),
            ("ImageId", "f43736e1-65a5-4bea-ad2e-8a46e18883c2"),
            ("LoginMode", "Password"),
            ("Memory", "2048"),
            ("Name", "Host01"),
            ("Password", "VUNsb3VkLmNu"),
            ("Quantity", "1"),
            ("Region", "cn-bj2"),
            ("Zone", "cn-bj2-04"),
            ("PublicKey", PUB),
        ]);
        assert_eq!(
            signature(&params, PRIV),
            "4f9ef5df2abab2c6fccd1e9515cb7e2df8c6bb65"
        );
    }

    #[test]
    fn seed_request_example() {
        let params = p(&[
            ("Action", "QueryURtcOnlineUsers"),
            ("AppId", "URtc-h4r1txxy"),
            ("StartTime", "1563150096"),
            ("EndTime", "1563158718"),
            ("RoomId", "oMMAvLDR"),
            ("Offset", "4"),
            ("Limit", "8"),
            ("PublicKey", PUB),
        ]);
        assert_eq!(
            signature(&params, PRIV),
            "40e24d75febea3fffc2605fb3099da9e2ba0a6fc"
        );
    }

    #[test]
    fn keys_sort_by_bytes() {
        let s = string_to_sign(&p(&[("X.2", "b"), ("X.10", "a"), ("Signature", "zz")]), "k");
        assert_eq!(s, "X.10aX.2bk");
    }

    #[test]
    fn seed_response_example_with_only_num() {
        let body = br#"{"Action":"QueryURtcOnlineUsersResponse","Data":[{"Num":123,"RoomId":"111"}],"Msg":"Succeed","RetCode":0,"TotalCount":7}"#;
        let page = parse_page(200, body).map_err(|e| e.to_string());
        let page = page.as_ref().map(|p| (&p.rows, p.total));
        assert_eq!(
            page,
            Ok((
                &vec![CallRow {
                    call: None,
                    start: None,
                    room: "111".into(),
                    active: true,
                    current: 123,
                    peak: 123,
                    accumulated: 123
                }],
                Some(7)
            ))
        );
    }

    #[test]
    fn retcode_as_string_and_message_or_msg() {
        let e = parse_page(
            200,
            br#"{"RetCode":"171","Message":"Signature VerifyAC Error"}"#,
        );
        assert!(
            matches!(e, Err(CallError::Vendor { ref code, label: "171", ref message, throttled: false, .. }) if code == "171" && message == "Signature VerifyAC Error")
        );
        let e = parse_page(200, br#"{"RetCode":153,"Msg":"slow down"}"#);
        assert!(
            matches!(e, Err(CallError::Vendor { label: "153", throttled: true, ref message, .. }) if message == "slow down")
        );
        let e = parse_page(200, br#"{"RetCode":4242}"#);
        assert!(matches!(e, Err(CallError::Vendor { label: "other", .. })));
        let null = parse_page(200, br#"{"RetCode":0,"Data":null,"TotalCount":250}"#);
        assert!(
            matches!(null, Err(CallError::Malformed { ref message, .. }) if message.contains("TotalCount is 250")),
            "a null list with a total is a contradiction"
        );
        let ok = parse_page(200, br#"{"RetCode":"0","Data":[]}"#);
        assert!(matches!(
            ok,
            Ok(Page {
                returned: 0,
                total: None,
                ..
            })
        ));
    }

    #[test]
    fn every_documented_code_maps_to_itself() {
        for c in CODES {
            let body = format!(r#"{{"RetCode":{c},"Message":"x"}}"#);
            assert!(
                matches!(parse_page(200, body.as_bytes()), Err(CallError::Vendor { label, .. }) if label == *c)
            );
        }
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        assert!(matches!(
            parse_page(200, b"{\"RetCode\":0,\"Da"),
            Err(CallError::Malformed { .. })
        ));
        assert!(matches!(
            parse_page(502, b"<html>"),
            Err(CallError::Http { status: 502, .. })
        ));
        assert!(matches!(
            parse_page(200, b"{}"),
            Err(CallError::Malformed { .. })
        ));
        let fine =
            br#"{"RetCode":0,"Data":[{"RoomId":"a","CurrentAmount":"3","RoomStatus":true}]}"#;
        let page = parse_page(200, fine).map(|p| p.rows).unwrap_or_default();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].current, 3);
    }

    /// The reading rule (README, "Answers that disagree with themselves"): a row without its room id fails the request (it used to be skipped, which
    /// showed its room as empty).
    #[test]
    fn a_row_without_its_room_id_fails_the_request_naming_the_field() {
        for (data, want) in [
            (
                r#"[{"RoomID":"111","Num":123}]"#,
                "Data[0]: RoomId missing (the row has `RoomID` instead)",
            ),
            (
                r#"[{"RoomId":"a","Num":1},{"Num":"x"}]"#,
                "Data[1]: RoomId missing",
            ),
            (r#"[7]"#, "Data[0]: not an object"),
            (r#"[{"RoomId":"","Num":1}]"#, "Data[0]: RoomId is empty"),
            (
                r#"[{"RoomId":{"a":1},"Num":1}]"#,
                "Data[0]: RoomId is not a room id",
            ),
        ] {
            let body = format!(r#"{{"RetCode":0,"TotalCount":1,"Data":{data}}}"#);
            match parse_page(200, body.as_bytes()) {
                Err(CallError::Malformed { message, .. }) => assert_eq!(message, want),
                other => panic!("{data}: {:?}", other.map(|p| p.rows)),
            }
        }
    }

    fn call(room: &str, call: Option<&str>, current: u64) -> CallRow {
        CallRow {
            call: call.map(str::to_string),
            start: None,
            room: room.into(),
            active: current > 0,
            current,
            peak: current,
            accumulated: current,
        }
    }

    /// The reading rule (README, "Answers that disagree with themselves"): a row sent twice is one call (merged by room and CallId, or without a
    /// CallId by room and figures), never summed; the later reading wins.
    #[test]
    fn repeated_rows_merge_by_identity() {
        let mut l = Listing::new();
        l.extend(vec![
            call("111", None, 123),
            call("111", None, 123),
            call("a", Some("c1"), 3),
        ]);
        l.extend(vec![call("a", Some("c1"), 4), call("a", Some("c2"), 2)]);
        assert_eq!((l.sent(), l.repeated, l.rows.len()), (5, 2, 3));
        let example = l
            .first_repeat
            .map(|i| (l.rows[i].room.clone(), l.rows[i].call.clone()));
        assert_eq!(example, Some(("111".to_string(), None)));
        let rooms = aggregate(l.rows, None);
        assert_eq!(
            rooms
                .iter()
                .map(|r| (r.room.as_str(), r.users))
                .collect::<Vec<_>>(),
            vec![("111", 123), ("a", 6)],
            "c1 read again with 4 users, c2 another call"
        );
        // Two bare rows of one room that differ (in figures or start) are two calls.
        let mut l = Listing::new();
        let mut later = call("b", None, 1);
        later.start = Some("1563150096".into());
        l.extend(vec![call("b", None, 1), call("b", None, 2), later]);
        assert_eq!((l.repeated, l.rows.len()), (0, 3));
    }

    #[test]
    fn a_short_page_or_a_full_page_of_known_calls_ends_the_listing() {
        let page = |rows: Vec<CallRow>, returned| Page {
            rows,
            returned,
            total: Some(7),
        };
        let mut l = Listing::new();
        assert!(is_last(&page(vec![call("111", None, 123)], 1), &l));
        assert!(
            is_last(&page(Vec::new(), 0), &l),
            "empty, whatever the total"
        );
        let full: Vec<CallRow> = (0..PAGE)
            .map(|i| call("r", Some(&i.to_string()), 1))
            .collect();
        assert!(!is_last(&page(full, PAGE), &l));
        l.extend((0..PAGE).map(|i| call("r", Some(&i.to_string()), 1)));
        let again: Vec<CallRow> = (0..PAGE)
            .map(|i| call("r", Some(&i.to_string()), 1))
            .collect();
        assert!(is_last(&page(again, PAGE), &l), "the vendor repeats itself");
    }

    #[test]
    fn a_count_that_is_there_but_unreadable_is_malformed_never_zero() {
        let page = |row: &str| {
            let body = format!(r#"{{"RetCode":0,"TotalCount":1,"Data":[{row}]}}"#);
            parse_page(200, body.as_bytes()).map(|p| p.rows)
        };
        for (row, field) in [
            (
                r#"{"RoomId":"a","CurrentAmount":"x","Num":3}"#,
                "CurrentAmount",
            ),
            (r#"{"RoomId":"a","Num":-1}"#, "Num"),
            (r#"{"RoomId":"a","Num":3,"PeekAmount":1.5}"#, "PeekAmount"),
            (
                r#"{"RoomId":"a","Num":3,"AccumulationAmount":[]}"#,
                "AccumulationAmount",
            ),
            (r#"{"RoomId":"a","Num":3,"RoomStatus":"yes"}"#, "RoomStatus"),
            (
                r#"{"RoomId":"a","RoomStatus":true}"#,
                "neither CurrentAmount nor Num",
            ),
        ] {
            match page(row) {
                Err(CallError::Malformed { message, .. }) => {
                    assert!(
                        message.starts_with("Data[0]: ") && message.contains(field),
                        "{message}"
                    )
                }
                other => panic!("{row}: {other:?}"),
            }
        }
        // Valid but odd: strings, null for absent, an ended call without counts.
        let rows = page(
            r#"{"RoomId":"a","CurrentAmount":null,"Num":"4","RoomStatus":"TRUE","PeekAmount":"9"}"#,
        )
        .unwrap();
        assert_eq!(
            (rows[0].current, rows[0].peak, rows[0].accumulated),
            (4, 9, 4)
        );
        let rows = page(r#"{"RoomId":"a","RoomStatus":false,"PeekAmount":5}"#).unwrap();
        assert_eq!(
            (rows[0].active, rows[0].current, rows[0].peak),
            (false, 0, 5)
        );
        let total = parse_page(200, br#"{"RetCode":0,"TotalCount":"lots","Data":[]}"#);
        assert!(matches!(total, Err(CallError::Malformed { .. })));
    }

    #[test]
    fn calls_of_one_room_aggregate() {
        let row = |room: &str, active, current, peak, acc| CallRow {
            call: None,
            start: None,
            room: room.into(),
            active,
            current,
            peak,
            accumulated: acc,
        };
        let rooms = aggregate(
            vec![
                row("a", false, 0, 7, 10),
                row("a", true, 3, 5, 6),
                row("b", true, 1, 1, 1),
            ],
            None,
        );
        assert_eq!(
            rooms[0].day,
            DayFigures::Reported {
                peak: 7,
                accumulated: 16
            }
        );
        assert!(rooms[0].active);
        assert_eq!(rooms[0].users, 3);
        let only_b = aggregate(
            vec![row("a", true, 1, 1, 1), row("b", true, 1, 1, 1)],
            Some(&["b".to_string()]),
        );
        assert_eq!(only_b.len(), 1);
    }
}

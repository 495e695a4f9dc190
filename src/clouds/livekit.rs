//! LiveKit (a self-hosted server or a LiveKit Cloud project): the Twirp `RoomService`.
//!
//! `POST {endpoint}/twirp/livekit.RoomService/ListRooms` with `{}` (or `{"names": [...]}` where
//! the target names its rooms) lists the rooms that exist now; `ListParticipants`
//! (`{"room": NAME}`) then lists each room's participants: identity, state, kind, hidden. Every
//! request carries `Authorization: Bearer <JWT>`: HS256 under the API secret, `iss` the API key,
//! `sub`, `nbf`, `exp`, and the grant the call needs (`{"roomList": true}`, or
//! `{"roomAdmin": true, "room": NAME}`), made fresh for each request (an HMAC costs nothing
//! beside the request). A poll costs 1 + N requests for N rooms; all of them share one limiter of
//! 10 requests per second per API key (LiveKit publishes no limit for a self-hosted server).
//!
//! Who counts: participants of the kinds in `participant_kinds` (default `standard` and `sip`: a
//! SIP participant is a person on a phone), in any state but `DISCONNECTED`, one per identity.
//! Agents, egress (recorders), ingress (pushed streams), connectors and bridges are services,
//! not people, unless the target lists them. Hidden participants count, as invisible users.
//! `num_participants` of `ListRooms` is not used as a count: the server leaves agents and
//! recorders out of it (hidden participants too, as they leave) and refreshes it on its own
//! schedule.
//!
//! Figures: LiveKit tells who is in now (and since when), never who came and went between two
//! polls, so peak and accumulated are what polling observed since local midnight: lower bounds.
//! Join times would not raise them: anyone present at one poll with a join time before the
//! previous poll was listed at that poll too.
//!
//! Reading an answer (README, "Answers that disagree with themselves"): Twirp's JSON is
//! protojson: field names in `snake_case` (or `lowerCamelCase`, a server option), 64-bit
//! integers as strings, enums by name (numbers accepted), and fields at their default left out
//! when the server skips defaults (an absent `kind` is `STANDARD`, an absent `state` `JOINING`,
//! an absent list empty). A JSON `null` where a list belongs is not protojson: `malformed`. A
//! participant without an identity fails the request; one listed twice is one participant
//! (`duplicate_row`), as is a room listed twice. An absent list is empty only in the empty
//! message `{}`. Errors are `{"code", "msg"}` with the HTTP
//! status Twirp gives the code; a bad token never reaches Twirp and is a plain-text 401
//! (`unauthenticated`). `not_found` from `ListParticipants` means the room ended since it was
//! listed: a real 0, not a failure.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::util::{code_label, hmac_sha256, lenient_bool, lenient_i64, lenient_u64, optional};
use super::{
    Anomaly, Api, BoxFuture, Budget, CallError, DayFigures, Observation, PollCtx, PollError,
    RoomObservation, TargetInfo, Vendor, VendorEntry,
};
use crate::fields::{from_value, FieldError, Secret};

/// The registry row.
pub const ENTRY: VendorEntry = VendorEntry {
    name: "livekit",
    parse,
};

/// `ListRooms`, the `api` label.
pub const LIST_ROOMS: &str = "ListRooms";
/// `ListParticipants`, the `api` label.
pub const LIST_PARTICIPANTS: &str = "ListParticipants";
/// The Twirp path of the room service.
pub const PREFIX: &str = "/twirp/livekit.RoomService/";
/// LiveKit publishes no rate limit for a self-hosted server: 10 per API key (decision),
/// shared by both APIs.
const QPS: f64 = 10.0;
/// The limiter both APIs share.
const BUCKET: &str = "RoomService";
/// Rooms asked at once.
const CONCURRENCY: usize = 4;
/// A token is valid this long from the moment it is made.
pub const TOKEN_TTL: i64 = 600;
/// The `sub` of the exporter's tokens.
pub const IDENTITY: &str = "rtc-exporter";

/// Twirp's error codes; others count as `other`.
const CODES: &[&str] = &[
    "canceled",
    "unknown",
    "invalid_argument",
    "malformed",
    "deadline_exceeded",
    "not_found",
    "bad_route",
    "already_exists",
    "permission_denied",
    "unauthenticated",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "dataloss",
];
const THROTTLED: &str = "resource_exhausted";

/// A participant kind (`ParticipantInfo.Kind`), as `participant_kinds` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// 0: people in a browser or an app.
    Standard,
    /// 1: a stream pushed in (RTMP, WHIP, URL).
    Ingress,
    /// 2: a recorder or a stream out.
    Egress,
    /// 3: a phone call.
    Sip,
    /// 4: an agent.
    Agent,
    /// 7: a connector (WhatsApp, Twilio).
    Connector,
    /// 8: a bridge (RTSP).
    Bridge,
}

/// An enum value as protojson sends it: its name (upper case), or its number (also as a
/// string). Anything else (`true`, `"1.5"`, a list) is not an enum value: `None`.
#[derive(Debug, PartialEq)]
enum EnumValue<'a> {
    Name(&'a str),
    Number(u64),
}

fn enum_value(v: &Value) -> Option<EnumValue<'_>> {
    match v {
        Value::String(s)
            if s.starts_with(|c: char| c.is_ascii_uppercase())
                && s.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') =>
        {
            Some(EnumValue::Name(s))
        }
        other => lenient_u64(other).map(EnumValue::Number),
    }
}

/// Whether a participant's state (`ParticipantInfo.State`) is `DISCONNECTED`; a state newer
/// than this build counts as in. `None`: no enum value.
fn disconnected(v: Option<&Value>) -> Option<bool> {
    match v {
        None | Some(Value::Null) => Some(false),
        Some(v) => Some(matches!(
            enum_value(v)?,
            EnumValue::Name("DISCONNECTED") | EnumValue::Number(3)
        )),
    }
}

impl Kind {
    /// Reads the enum: `Some(None)` for a kind newer than this build (a name or number it does
    /// not know: never counted), `None` for what is no enum value at all.
    fn read(v: &Value) -> Option<Option<Kind>> {
        Some(match enum_value(v)? {
            EnumValue::Name("STANDARD") | EnumValue::Number(0) => Some(Kind::Standard),
            EnumValue::Name("INGRESS") | EnumValue::Number(1) => Some(Kind::Ingress),
            EnumValue::Name("EGRESS") | EnumValue::Number(2) => Some(Kind::Egress),
            EnumValue::Name("SIP") | EnumValue::Number(3) => Some(Kind::Sip),
            EnumValue::Name("AGENT") | EnumValue::Number(4) => Some(Kind::Agent),
            EnumValue::Name("CONNECTOR") | EnumValue::Number(7) => Some(Kind::Connector),
            EnumValue::Name("BRIDGE") | EnumValue::Number(8) => Some(Kind::Bridge),
            _ => None,
        })
    }
}

/// The kinds counted when the target names none.
pub const DEFAULT_KINDS: &[Kind] = &[Kind::Standard, Kind::Sip];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    credentials: Credentials,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    participant_kinds: Option<Vec<Kind>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    api_key: String,
    api_secret: Secret,
}

fn parse(value: serde_yaml::Value) -> Result<Arc<dyn Vendor>, FieldError> {
    let s: Settings = from_value(value)?;
    if s.credentials.api_key.is_empty() {
        return Err(FieldError::new("credentials.api_key", "must not be empty"));
    }
    if let Some(rooms) = &s.rooms {
        if let Some(i) = rooms.iter().position(|r| r.is_empty()) {
            return Err(FieldError::new(format!("rooms[{i}]"), "must not be empty"));
        }
    }
    let kinds: BTreeSet<Kind> = match &s.participant_kinds {
        Some(k) if k.is_empty() => {
            return Err(FieldError::new(
                "participant_kinds",
                "must name at least one kind (standard, sip, agent, egress, ingress, connector, bridge)",
            ))
        }
        Some(k) => k.iter().copied().collect(),
        None => DEFAULT_KINDS.iter().copied().collect(),
    };
    Ok(Arc::new(Livekit {
        s,
        kinds,
        cursor: AtomicUsize::new(0),
    }))
}

/// The HS256 JWT LiveKit takes: `{"alg":"HS256","typ":"JWT"}`, then the claims (`exp`, `iss`,
/// `nbf`, `sub`, `video`, in that order), base64url without padding, signed under the secret.
pub fn token(api_key: &str, secret: &str, now: i64, video: &Value) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = json!({
        "exp": now.saturating_add(TOKEN_TTL),
        "iss": api_key,
        "nbf": now,
        "sub": IDENTITY,
        "video": video,
    });
    let payload = b64(claims.to_string().as_bytes());
    let input = format!("{header}.{payload}");
    let signature = b64(&hmac_sha256(secret.as_bytes(), input.as_bytes()));
    format!("{input}.{signature}")
}

/// The grant `ListRooms` needs.
pub fn list_grant() -> Value {
    json!({"roomList": true})
}

/// The grant `ListParticipants` of `room` needs.
pub fn admin_grant(room: &str) -> Value {
    json!({"roomAdmin": true, "room": room})
}

/// Maps the configured endpoint as LiveKit's SDKs do: `ws://` → `http://`, `wss://` →
/// `https://` (a project URL as LiveKit Cloud shows it); required, as there is no default host.
pub fn map_endpoint(configured: Option<&str>) -> Result<Option<String>, String> {
    let Some(ep) = configured else {
        return Err(
            "required for livekit: the server's URL (https://livekit.example.com, or the project URL LiveKit Cloud shows, wss://PROJECT.livekit.cloud)"
                .into(),
        );
    };
    let mapped = if let Some(rest) = ep.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = ep.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        ep.to_string()
    };
    Ok(Some(mapped))
}

/// One configured LiveKit target.
pub struct Livekit {
    s: Settings,
    kinds: BTreeSet<Kind>,
    /// Rooms refreshed so far (all polls): the next poll starts that far into its list, so a
    /// poll cut by `poll_timeout` is continued by the next, not begun again.
    cursor: AtomicUsize,
}

/// A Twirp error body.
#[derive(Deserialize)]
struct TwirpError {
    code: String,
    #[serde(default)]
    msg: String,
}

/// Reads an answer's status and body: 200 with a JSON object, or the Twirp error (a plain-text
/// 401 from the server's token check is `unauthenticated`).
pub(crate) fn envelope(
    api: &'static str,
    status: u16,
    body: &[u8],
) -> Result<Map<String, Value>, CallError> {
    if status != 200 {
        let (code, message) = match serde_json::from_slice::<TwirpError>(body) {
            Ok(e) => (e.code, e.msg),
            Err(_) if status == 401 => (
                "unauthenticated".to_string(),
                String::from_utf8_lossy(body).trim().to_string(),
            ),
            Err(_) => return Err(CallError::Http { api, status }),
        };
        return Err(CallError::Vendor {
            api,
            label: code_label(CODES, &code),
            throttled: code == THROTTLED,
            message,
            code,
        });
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(CallError::Malformed {
            api,
            message: "the answer is not a JSON object".into(),
        }),
        Err(e) => Err(CallError::Malformed {
            api,
            message: e.to_string(),
        }),
    }
}

/// A field by its protojson name or its `lowerCamelCase` name.
fn field<'a>(o: &'a Map<String, Value>, snake: &str, camel: &str) -> Option<&'a Value> {
    o.get(snake).or_else(|| o.get(camel))
}

/// A repeated field: absent is empty when the whole answer is `{}` (defaults skipped: the
/// empty message); absent beside other fields, `null` or another type is malformed (an
/// answer that is not this message must not read as nobody).
fn list<'a>(
    api: &'static str,
    o: &'a Map<String, Value>,
    name: &str,
) -> Result<&'a [Value], CallError> {
    match o.get(name) {
        None if o.is_empty() => Ok(&[]),
        None => Err(CallError::Malformed {
            api,
            message: format!("no {name} in an answer that is not empty"),
        }),
        Some(Value::Array(a)) => Ok(a),
        Some(Value::Null) => Err(CallError::Malformed {
            api,
            message: format!("{name} is null (protojson sends a list, or leaves an empty one out)"),
        }),
        Some(_) => Err(CallError::Malformed {
            api,
            message: format!("{name} is not a list"),
        }),
    }
}

/// One room of `ListRooms`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RoomRow {
    pub(crate) name: String,
    /// `num_participants` (agents and recorders left out by the server).
    pub(crate) listed: u64,
}

/// Reads a `ListRooms` answer: the rooms by name, repeats merged (the count of repeats).
pub(crate) fn parse_rooms(status: u16, body: &[u8]) -> Result<(Vec<RoomRow>, usize), CallError> {
    let api = LIST_ROOMS;
    let o = envelope(api, status, body)?;
    let mut rooms: Vec<RoomRow> = Vec::new();
    let mut seen = HashSet::new();
    let mut repeated = 0;
    for (i, v) in list(api, &o, "rooms")?.iter().enumerate() {
        let bad = |m: &str| CallError::Malformed {
            api,
            message: format!("rooms[{i}]: {m}"),
        };
        let r = v.as_object().ok_or_else(|| bad("not an object"))?;
        let name = match r.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(bad("name missing or empty")),
        };
        let listed = optional(field(r, "num_participants", "numParticipants"), lenient_u64)
            .map_err(|_| bad("num_participants is not a count"))?
            .unwrap_or(0);
        if seen.insert(name.clone()) {
            rooms.push(RoomRow { name, listed });
        } else {
            repeated += 1;
        }
    }
    Ok((rooms, repeated))
}

/// Who of a room counts now.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Present {
    /// Identities counted, sorted, once each.
    pub(crate) ids: Vec<String>,
    /// Of them, hidden.
    pub(crate) hidden: u64,
    /// Participants listed twice.
    pub(crate) repeated: usize,
    /// Listed but not counted: another kind, or disconnected.
    pub(crate) left_out: usize,
}

/// Reads a `ListParticipants` answer; `kinds` are the kinds counted.
pub(crate) fn parse_participants(
    status: u16,
    body: &[u8],
    kinds: &BTreeSet<Kind>,
) -> Result<Present, CallError> {
    let api = LIST_PARTICIPANTS;
    let o = envelope(api, status, body)?;
    let mut out = Present::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut hidden: HashSet<String> = HashSet::new();
    for (i, v) in list(api, &o, "participants")?.iter().enumerate() {
        let bad = |m: &str| CallError::Malformed {
            api,
            message: format!("participants[{i}]: {m}"),
        };
        let p = v.as_object().ok_or_else(|| bad("not an object"))?;
        let identity = match p.get("identity") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(bad("identity missing or empty")),
        };
        let gone = disconnected(p.get("state")).ok_or_else(|| bad("state is not a state"))?;
        let kind = match p.get("kind") {
            None | Some(Value::Null) => Some(Kind::Standard),
            Some(k) => Kind::read(k).ok_or_else(|| bad("kind is not a kind"))?,
        };
        // Read to refuse an unreadable one, as the other fields.
        optional(field(p, "joined_at", "joinedAt"), lenient_i64)
            .map_err(|_| bad("joined_at is not a time"))?;
        let is_hidden = match p.get("permission") {
            None | Some(Value::Null) => false,
            Some(Value::Object(perm)) => optional(perm.get("hidden"), lenient_bool)
                .map_err(|_| bad("permission.hidden is not a boolean"))?
                .unwrap_or(false),
            Some(_) => return Err(bad("permission is not an object")),
        };
        if !seen.insert(identity.clone()) {
            out.repeated += 1;
            continue;
        }
        if gone || !kind.is_some_and(|k| kinds.contains(&k)) {
            out.left_out += 1;
            continue;
        }
        if is_hidden {
            hidden.insert(identity.clone());
        }
        out.ids.push(identity);
    }
    out.ids.sort();
    out.hidden = hidden.len() as u64;
    Ok(out)
}

/// A room as the poll reports it.
fn observation(room: &str, present: Present) -> RoomObservation {
    RoomObservation {
        room: room.to_string(),
        active: true,
        users: present.ids.len() as u64,
        invisible: Some(present.hidden),
        day: DayFigures::Present(present.ids),
    }
}

/// A room that ended between the listing and its participants.
fn ended(room: &str) -> RoomObservation {
    RoomObservation {
        room: room.to_string(),
        active: false,
        users: 0,
        invisible: Some(0),
        day: DayFigures::Present(Vec::new()),
    }
}

impl Livekit {
    fn url(&self, ctx: &PollCtx, api: &str) -> Result<String, CallError> {
        match ctx.endpoint.as_deref() {
            Some(ep) => Ok(format!("{}{PREFIX}{api}", ep.trim_end_matches('/'))),
            None => Err(CallError::Malformed {
                api: LIST_ROOMS,
                message: "no endpoint: livekit needs the server's URL".into(),
            }),
        }
    }

    fn request(
        &self,
        ctx: &PollCtx,
        url: &str,
        grant: &Value,
        body: &Value,
    ) -> reqwest::RequestBuilder {
        let jwt = token(
            &self.s.credentials.api_key,
            self.s.credentials.api_secret.expose(),
            ctx.wall_now().timestamp(),
            grant,
        );
        ctx.plumbing
            .http
            .post(url)
            .header("Authorization", format!("Bearer {jwt}"))
            .header("Content-Type", "application/json")
            .body(body.to_string())
    }

    async fn participants(
        &self,
        ctx: &PollCtx,
        api: &Api<'_>,
        url: &str,
        room: &str,
    ) -> Result<Option<Present>, CallError> {
        let request = self.request(ctx, url, &admin_grant(room), &json!({ "room": room }));
        let kinds = &self.kinds;
        api.call(request, |status, body| {
            match parse_participants(status, body, kinds) {
                Ok(p) => Ok(Some(p)),
                // The room ended since it was listed: nobody is in it.
                Err(CallError::Vendor { code, .. }) if code == "not_found" => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn fetch(&self, ctx: &PollCtx) -> Result<Observation, PollError> {
        let list_url = self.url(ctx, LIST_ROOMS)?;
        let part_url = self.url(ctx, LIST_PARTICIPANTS)?;
        let key = &self.s.credentials.api_key;
        let body = match &self.s.rooms {
            Some(names) => json!({ "names": names }),
            None => json!({}),
        };
        let request = self.request(ctx, &list_url, &list_grant(), &body);
        let (mut rooms, repeated) = ctx
            .api_bucket(LIST_ROOMS, BUCKET, key, QPS)
            .call(request, parse_rooms)
            .await?;
        if repeated > 0 {
            ctx.anomaly(
                LIST_ROOMS,
                Anomaly::DuplicateRow,
                format!(
                    "{repeated} room(s) listed twice: merged, {} rooms",
                    rooms.len()
                ),
            );
        }
        if let Some(allow) = &self.s.rooms {
            rooms.retain(|r| allow.contains(&r.name));
        }
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        // Start where the last poll's count of refreshed rooms ends (round robin).
        if !rooms.is_empty() {
            let at = self.cursor.load(Ordering::Relaxed) % rooms.len();
            rooms.rotate_left(at);
        }
        let api = ctx.api_bucket(LIST_PARTICIPANTS, BUCKET, key, QPS);
        let (api, part_url) = (&api, part_url.as_str());
        let total = rooms.len();
        let mut answers = stream::iter(rooms)
            .map(|r| async move {
                let got = self.participants(ctx, api, part_url, &r.name).await;
                (r.name, got)
            })
            .buffer_unordered(CONCURRENCY);
        let mut answered = 0usize;
        let mut first_error = None;
        while let Some((room, got)) = answers.next().await {
            self.cursor.fetch_add(1, Ordering::Relaxed);
            match got {
                Ok(Some(present)) => {
                    if present.repeated > 0 {
                        ctx.anomaly(
                            LIST_PARTICIPANTS,
                            Anomaly::DuplicateRow,
                            format!(
                                "room {room}: {} participant(s) listed twice: merged by identity",
                                present.repeated
                            ),
                        );
                    }
                    ctx.room_done(observation(&room, present));
                    answered += 1;
                }
                Ok(None) => {
                    ctx.room_done(ended(&room));
                    answered += 1;
                }
                Err(e) => {
                    ctx.room_failed(&room, &e);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            // No room answered: the poll failed as a whole.
            Some(e) if answered == 0 && total > 0 => Err(e.into()),
            _ => Ok(Observation::default()),
        }
    }
}

impl Vendor for Livekit {
    fn info(&self) -> TargetInfo {
        TargetInfo {
            app: self.s.credentials.api_key.clone(),
            region: String::new(),
        }
    }

    fn poll<'a>(&'a self, ctx: &'a PollCtx) -> BoxFuture<'a, Result<Observation, PollError>> {
        Box::pin(self.fetch(ctx))
    }

    fn budget(&self) -> Option<Budget> {
        self.s.rooms.as_ref().map(|rooms| Budget {
            requests: 1 + rooms.len() as u64,
            qps: QPS,
        })
    }

    fn documented_qps(&self) -> Option<f64> {
        Some(QPS)
    }

    fn endpoint(&self, configured: Option<&str>) -> Result<Option<String>, String> {
        map_endpoint(configured)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "APIexample123";
    const SECRET: &str = "lk-test-secret-0123456789abcdefghijklmnopqrstuv";

    /// Made with PyJWT 2.15.1 (`jwt.encode(claims, SECRET, algorithm="HS256")`, the library
    /// LiveKit's Python SDK signs with), the claims in the order ours are written; the
    /// signature of the first checked again with `openssl dgst -sha256 -hmac`.
    #[test]
    fn tokens_equal_an_independent_implementation() {
        assert_eq!(
            token(KEY, SECRET, 1_700_000_000, &list_grant()),
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDA2MDAsImlzcyI6IkFQSWV4YW1wbGUxMjMiLCJuYmYiOjE3MDAwMDAwMDAsInN1YiI6InJ0Yy1leHBvcnRlciIsInZpZGVvIjp7InJvb21MaXN0Ijp0cnVlfX0.SGA99ya6aJnJbEekDlCM2Bx8WGPeiGEWAKgvzzQUc8E"
        );
        assert_eq!(
            token(KEY, SECRET, 1_700_000_000, &admin_grant("math-101")),
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDA2MDAsImlzcyI6IkFQSWV4YW1wbGUxMjMiLCJuYmYiOjE3MDAwMDAwMDAsInN1YiI6InJ0Yy1leHBvcnRlciIsInZpZGVvIjp7InJvb20iOiJtYXRoLTEwMSIsInJvb21BZG1pbiI6dHJ1ZX19.tCOIpQ9BHBCVeDDJmuajUdDtvUXU67mG9D6SecQahSY"
        );
    }

    #[test]
    fn endpoints_map_as_the_sdks_do_and_one_is_required() {
        assert_eq!(
            map_endpoint(Some("wss://p-1.livekit.cloud")),
            Ok(Some("https://p-1.livekit.cloud".into()))
        );
        assert_eq!(
            map_endpoint(Some("ws://127.0.0.1:7880")),
            Ok(Some("http://127.0.0.1:7880".into()))
        );
        assert_eq!(
            map_endpoint(Some("https://lk.example.com")),
            Ok(Some("https://lk.example.com".into()))
        );
        assert!(map_endpoint(None).is_err_and(|m| m.contains("required")));
    }

    fn kinds() -> BTreeSet<Kind> {
        DEFAULT_KINDS.iter().copied().collect()
    }

    #[test]
    fn participants_count_people_of_the_kinds_and_not_the_disconnected() {
        let body = br#"{"participants":[
            {"sid":"PA_1","identity":"alice","state":"ACTIVE","joined_at":"1700000000","kind":"STANDARD","permission":{"hidden":false}},
            {"sid":"PA_2","identity":"bob","state":"JOINED","kind":"SIP"},
            {"sid":"PA_3","identity":"agent-1","state":"ACTIVE","kind":"AGENT"},
            {"sid":"PA_4","identity":"rec","state":"ACTIVE","kind":"EGRESS","permission":{"hidden":true}},
            {"sid":"PA_5","identity":"carol","state":"DISCONNECTED","kind":"STANDARD"},
            {"sid":"PA_6","identity":"dave","permission":{"hidden":true}},
            {"sid":"PA_7","identity":"alice","state":"ACTIVE"},
            {"identity":"eve","state":2,"kind":0,"joinedAt":1700000100},
            {"identity":"zed","state":"ACTIVE","kind":9},
            {"identity":"yan","state":"ACTIVE","kind":"ROBOT"},
            {"identity":"xia","state":"MIGRATING"},
            {"identity":"wim","state":"3"}
        ]}"#;
        let p = parse_participants(200, body, &kinds()).unwrap();
        // zed and yan are kinds newer than this build (not counted); xia's state is newer (in);
        // wim is DISCONNECTED by number.
        assert_eq!(p.ids, vec!["alice", "bob", "dave", "eve", "xia"]);
        assert_eq!((p.hidden, p.repeated, p.left_out), (1, 1, 6));
        let all: BTreeSet<Kind> = [Kind::Standard, Kind::Agent, Kind::Egress]
            .into_iter()
            .collect();
        let p = parse_participants(200, body, &all).unwrap();
        assert_eq!(p.ids, vec!["agent-1", "alice", "dave", "eve", "rec", "xia"]);
        assert_eq!(p.hidden, 2);
    }

    #[test]
    fn an_empty_answer_is_an_empty_room_and_null_is_malformed() {
        assert_eq!(
            parse_participants(200, b"{}", &kinds()).unwrap().ids.len(),
            0
        );
        assert_eq!(
            parse_participants(200, br#"{"participants":[]}"#, &kinds())
                .unwrap()
                .ids
                .len(),
            0
        );
        assert!(matches!(
            parse_participants(200, br#"{"participants":null}"#, &kinds()),
            Err(CallError::Malformed { .. })
        ));
        assert!(matches!(
            parse_rooms(200, br#"{"rooms":null}"#),
            Err(CallError::Malformed { .. })
        ));
        assert_eq!(parse_rooms(200, b"{}").unwrap().0, Vec::new());
        assert!(matches!(
            parse_rooms(200, br#"{"a":{"a":1}}"#),
            Err(CallError::Malformed { .. })
        ));
        assert!(matches!(
            parse_participants(200, br#"{"participant":[]}"#, &kinds()),
            Err(CallError::Malformed { .. })
        ));
    }

    #[test]
    fn rows_without_their_id_or_unreadable_fields_fail_the_request() {
        for (body, want) in [
            (
                r#"{"participants":[{"state":"ACTIVE"}]}"#,
                "participants[0]: identity",
            ),
            (
                r#"{"participants":[{"identity":"a","state":"gone"}]}"#,
                "state",
            ),
            (
                r#"{"participants":[{"identity":"a","state":true}]}"#,
                "state",
            ),
            (
                r#"{"participants":[{"identity":"a","kind":"1.5"}]}"#,
                "kind",
            ),
            (
                r#"{"participants":[{"identity":"a","joined_at":"soon"}]}"#,
                "joined_at",
            ),
            (
                r#"{"participants":[{"identity":"a","permission":{"hidden":"maybe"}}]}"#,
                "hidden",
            ),
            (r#"{"participants":[7]}"#, "not an object"),
        ] {
            match parse_participants(200, body.as_bytes(), &kinds()) {
                Err(CallError::Malformed { message, .. }) => {
                    assert!(message.contains(want), "{body}: {message}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        for (body, want) in [
            (r#"{"rooms":[{"sid":"RM_1"}]}"#, "rooms[0]: name"),
            (
                r#"{"rooms":[{"name":"a","num_participants":-1}]}"#,
                "num_participants",
            ),
        ] {
            match parse_rooms(200, body.as_bytes()) {
                Err(CallError::Malformed { message, .. }) => {
                    assert!(message.contains(want), "{body}: {message}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn rooms_read_in_either_spelling_and_repeats_merge() {
        let (rooms, repeated) = parse_rooms(
            200,
            br#"{"rooms":[{"name":"a","num_participants":2},{"name":"b","numParticipants":"3"},{"name":"a","num_participants":2}]}"#,
        )
        .unwrap();
        assert_eq!(
            rooms,
            vec![
                RoomRow {
                    name: "a".into(),
                    listed: 2
                },
                RoomRow {
                    name: "b".into(),
                    listed: 3
                }
            ]
        );
        assert_eq!(repeated, 1);
    }

    #[test]
    fn twirp_errors_carry_their_code() {
        let e = parse_rooms(
            401,
            br#"{"code":"unauthenticated","msg":"permissions denied"}"#,
        );
        assert!(
            matches!(e, Err(CallError::Vendor { ref code, label: "unauthenticated", throttled: false, ref message, .. }) if code == "unauthenticated" && message == "permissions denied")
        );
        let e = parse_rooms(429, br#"{"code":"resource_exhausted","msg":"slow down"}"#);
        assert!(matches!(
            e,
            Err(CallError::Vendor {
                throttled: true,
                ..
            })
        ));
        let e = parse_rooms(403, br#"{"code":"permission_denied","msg":"no"}"#);
        assert!(matches!(
            e,
            Err(CallError::Vendor {
                label: "permission_denied",
                ..
            })
        ));
        // The server's token check answers in plain text.
        let e = parse_rooms(
            401,
            b"invalid authorization token: token signature is invalid",
        );
        assert!(
            matches!(e, Err(CallError::Vendor { label: "unauthenticated", ref message, .. }) if message.contains("signature is invalid"))
        );
        let e = parse_rooms(502, b"<html>bad gateway</html>");
        assert!(matches!(e, Err(CallError::Http { status: 502, .. })));
        let e = parse_rooms(418, br#"{"code":"teapot","msg":"x"}"#);
        assert!(matches!(e, Err(CallError::Vendor { label: "other", .. })));
        for c in CODES {
            let body = format!(r#"{{"code":"{c}","msg":"x"}}"#);
            assert!(
                matches!(parse_rooms(400, body.as_bytes()), Err(CallError::Vendor { label, .. }) if label == *c)
            );
        }
    }

    #[test]
    fn config_keys() {
        let y = |s: &str| serde_yaml::from_str::<serde_yaml::Value>(s).unwrap();
        assert!(parse(y("credentials: {api_key: k, api_secret: s}")).is_ok());
        assert!(parse(y(
            "credentials: {api_key: k, api_secret: s}\nparticipant_kinds: [standard, agent]\nrooms: [a]"
        ))
        .is_ok());
        let e = parse(y(
            "credentials: {api_key: k, api_secret: s}\nparticipant_kinds: []",
        ));
        assert!(e.is_err_and(|e| e.path == "participant_kinds"));
        let e = parse(y(
            "credentials: {api_key: k, api_secret: s}\nparticipant_kinds: [robot]",
        ));
        assert!(e.is_err());
        let e = parse(y("credentials: {api_key: k, api_secret: s}\nregion: x"));
        assert!(e.is_err_and(|e| e.message.starts_with("unknown field")));
        let e = parse(y("credentials: {api_key: \"\", api_secret: s}"));
        assert!(e.is_err_and(|e| e.path == "credentials.api_key"));
    }
}

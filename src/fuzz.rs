//! Property tests (proptest, stable Rust) over everything the outside controls: the config
//! file ([`crate::config::parse`]) and every function that turns a vendor's answer into data.
//!
//! - No input panics: random bytes (invalid UTF-8 included) at any HTTP status, valid sample
//!   answers mutated (a field deleted, a value replaced by a number at the limits, a numeric
//!   string, a wrong type, deep nesting), then cut or flipped byte by byte; 20 000 open brackets.
//! - No zero that was not a valid zero: a count, time, status or id of a sample answer replaced
//!   by something that is not a valid value of its kind (or deleted) makes the parser fail, or
//!   leaves every figure of the sample non-zero and no row lost. Samples whose numbers are all
//!   strings read the same (valid but odd answers keep working).
//! - A mutated config either fails or holds no zero or negative where one is not valid
//!   (intervals and timeouts of at least 100 ms, `stale_after`, `max_rooms`, a positive
//!   `qps`, `max_response_bytes` of at least 1 KiB); an invalid value at one of those keys is
//!   an error, never a default.
//!
//! Each property runs `PROPTEST_CASES` cases (proptest's default, 256, when unset); a long
//! campaign sets it higher (README, "Run the tests").

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Value};

use crate::clouds::talkcloud::answer;
use crate::clouds::{alibaba_artc, livekit, tencent_trtc, ucloud_urtc, volcengine_rtc};

const KEY: &str = "0123456789abcdef";

fn config() -> Config {
    Config {
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The parsers and their samples

/// What one answer yields, as figures that must not become 0 (`None`: an optional field not
/// sent), or `None` when the answer was refused.
type Figures = fn(u16, &[u8]) -> Option<Vec<Option<u64>>>;

/// The kinds of value a field holds.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A non-negative integer, or a string holding one.
    Count,
    /// Unix seconds: a number or a numeric string.
    Time,
    /// true/false (or "true"/"false", 0/1).
    Bool,
    /// A user, room or call id: a non-empty string or a number.
    Id,
}

/// A parser with a valid sample answer and the fields of it that feed figures.
struct Parser {
    name: &'static str,
    sample: fn() -> Value,
    figures: Figures,
    /// JSON pointers into the sample, with the kind of value each holds.
    fields: &'static [(&'static str, Kind)],
}

fn nonzero(n: u64) -> Option<u64> {
    Some(n)
}

fn time(t: i64) -> Option<u64> {
    Some(t.unsigned_abs())
}

const PARSERS: &[Parser] = &[
    Parser {
        name: "ucloud_urtc QueryURtcOnlineUsers",
        sample: || {
            json!({"RetCode": 0, "Action": "QueryURtcOnlineUsersResponse", "Msg": "Succeed",
                "TotalCount": 2, "Data": [
                {"RoomId": "r1", "CallId": "c1", "RoomType": "RTC", "StartTime": 1_795_170_000,
                 "EndTime": 0, "RoomStatus": true, "Num": 3, "CurrentAmount": 3,
                 "PeekAmount": 5, "AccumulationAmount": 8},
                {"RoomId": 42, "CallId": "c2", "RoomStatus": "true", "Num": "1",
                 "CurrentAmount": 1, "PeekAmount": 2, "AccumulationAmount": 4}]})
        },
        figures: |status, body| {
            let p = ucloud_urtc::parse_page(status, body).ok()?;
            let mut f = vec![p.total];
            for r in &p.rows {
                f.extend([nonzero(r.current), nonzero(r.peak), nonzero(r.accumulated)]);
            }
            Some(f)
        },
        fields: &[
            ("/TotalCount", Kind::Count),
            ("/Data/0/CurrentAmount", Kind::Count),
            ("/Data/0/Num", Kind::Count),
            ("/Data/0/PeekAmount", Kind::Count),
            ("/Data/0/AccumulationAmount", Kind::Count),
            ("/Data/0/RoomStatus", Kind::Bool),
            ("/Data/1/CurrentAmount", Kind::Count),
            ("/Data/1/Num", Kind::Count),
            ("/Data/1/RoomStatus", Kind::Bool),
        ],
    },
    Parser {
        name: "volcengine_rtc GetRoomOnlineUsers",
        sample: || {
            json!({"ResponseMetadata": {"RequestId": "r", "Action": "GetRoomOnlineUsers",
                "Version": "2023-11-01", "Service": "rtc", "Region": "cn-north-1"},
                "Result": {"RoomExists": true, "TotalUser": 5, "TotalInvisibleUser": 2,
                    "VisibleUserList": ["a", "b", 3], "InvisibleUserList": ["d", "e"]}})
        },
        figures: |status, body| {
            let o = volcengine_rtc::parse_occupancy(status, body).ok()?;
            Some(vec![
                nonzero(o.total),
                nonzero(o.total_invisible),
                nonzero(o.visible.len() as u64),
                nonzero(o.invisible.len() as u64),
            ])
        },
        fields: &[
            ("/Result/TotalUser", Kind::Count),
            ("/Result/TotalInvisibleUser", Kind::Count),
            ("/Result/RoomExists", Kind::Bool),
            ("/Result/VisibleUserList/0", Kind::Id),
            ("/Result/InvisibleUserList/1", Kind::Id),
        ],
    },
    Parser {
        name: "volcengine_rtc GetRoomOnlineUsers Property=true",
        sample: || {
            json!({"ResponseMetadata": {"RequestId": "r"}, "Result": {"RoomExist": true,
                "VisibleUserList": [
                    {"UserID": "a", "DeviceType": "ios", "PlatformType": 1},
                    {"UserId": "bot", "DeviceType": "linux", "MediaProcessingType": 23}],
                "InvisibleUserList": [{"UserID": 7, "DeviceType": "web", "PlatformType": 2}]}})
        },
        figures: |status, body| {
            let d = volcengine_rtc::parse_detail(status, body).ok()?;
            Some(vec![
                nonzero(d.people.len() as u64),
                nonzero(d.counts.values().sum()),
            ])
        },
        fields: &[("/Result/RoomExist", Kind::Bool)],
    },
    Parser {
        name: "volcengine_rtc QueryOnlineStatus",
        sample: || {
            json!({"ResponseMetadata": {"RequestId": "r"}, "Result": {"AppId": 1,
                "QueryOnlineResults": {"10001": [{"ConnId": "c", "UserId": 10001,
                    "DeviceId": 1, "ClientVersion": 100, "Platform": "iOS"}]}}})
        },
        figures: |status, body| {
            let o = volcengine_rtc::parse_online(status, body).ok()?;
            Some(vec![nonzero(o.len() as u64)])
        },
        fields: &[],
    },
    Parser {
        name: "volcengine_rtc ListRoomInfo",
        sample: || {
            json!({"ResponseMetadata": {"RequestId": "r"}, "Result": {"Total": 2,
                "HasMore": false, "RoomList": [
                {"CallId": "c1", "RoomId": "r1", "IsFinished": false,
                 "CreatedTime": "2026-11-20T12:00:00+08:00", "DestroyTime": "", "ActiveUserNum": 3},
                {"CallId": "c2", "RoomId": "r2", "IsFinished": true,
                 "CreatedTime": 1_795_170_000, "DestroyTime": 1_795_173_600}]}})
        },
        figures: |status, body| {
            let p = volcengine_rtc::parse_rooms_page(status, body).ok()?;
            Some(vec![p.total, nonzero(p.returned)])
        },
        fields: &[
            ("/Result/Total", Kind::Count),
            ("/Result/HasMore", Kind::Bool),
        ],
    },
    Parser {
        name: "tencent_trtc DescribeRoomInfo",
        sample: || {
            json!({"Response": {"Total": 2, "RequestId": "x", "RoomList": [
                {"CommId": "1400000001_r1_1795170000", "RoomString": "r1",
                 "CreateTime": 1_795_170_000, "DestroyTime": 0, "IsFinished": false,
                 "UserId": "u1"},
                {"CommId": "1400000001_r2_1795160000", "RoomString": "r2",
                 "CreateTime": 1_795_160_000, "DestroyTime": 1_795_163_600, "IsFinished": true,
                 "UserId": "u2"}]}})
        },
        figures: |status, body| {
            let p = tencent_trtc::parse_rooms(status, body).ok()?;
            // DestroyTime paces the fetches (0: not told); the users come from their own times.
            let mut f = vec![p.total];
            for c in &p.rows {
                f.push(time(c.created));
            }
            Some(f)
        },
        fields: &[
            ("/Response/Total", Kind::Count),
            ("/Response/RoomList/0/CreateTime", Kind::Time),
            ("/Response/RoomList/0/DestroyTime", Kind::Time),
            ("/Response/RoomList/0/IsFinished", Kind::Bool),
            ("/Response/RoomList/1/CommId", Kind::Id),
            ("/Response/RoomList/1/DestroyTime", Kind::Time),
            ("/Response/RoomList/1/IsFinished", Kind::Bool),
        ],
    },
    Parser {
        name: "tencent_trtc DescribeUserInfo",
        sample: || {
            json!({"Response": {"Total": 2, "RequestId": "x", "UserList": [
                {"RoomStr": "r1", "UserId": "a", "JoinTs": 1_795_170_000,
                 "LeaveTs": 1_795_170_100, "Finished": true, "DeviceType": "iOS",
                 "SdkVersion": "4.3.14", "ClientIp": "10.0.0.1"},
                {"RoomStr": "r1", "UserId": 7, "JoinTs": 1_795_170_050,
                 "LeaveTs": 1_795_176_000, "Finished": false, "DeviceType": ""}]}})
        },
        figures: |status, body| {
            let p = tencent_trtc::parse_users(status, body).ok()?;
            let mut f = vec![p.total];
            for s in &p.rows {
                f.push(time(s.join));
                f.extend(s.leave.map(time));
            }
            Some(f)
        },
        fields: &[
            ("/Response/Total", Kind::Count),
            ("/Response/UserList/0/JoinTs", Kind::Time),
            ("/Response/UserList/0/LeaveTs", Kind::Time),
            ("/Response/UserList/0/Finished", Kind::Bool),
            ("/Response/UserList/0/UserId", Kind::Id),
            ("/Response/UserList/1/JoinTs", Kind::Time),
            ("/Response/UserList/1/Finished", Kind::Bool),
        ],
    },
    Parser {
        name: "talkcloud getLiveLogininfo",
        sample: || {
            json!({"result": 0, "count": "2",
                "uptablelist": [{"serial": "1", "userid": "t", "entertimestamp": 1_795_170_000,
                    "outtimestamp": 0, "outtime": "", "terminal": "0", "userroleid": "0"}],
                "logininfo": [
                    {"serial": "1", "userid": "a", "entertime": "2026-11-20 20:00:00",
                     "outtime": "2026-11-20 20:01:40", "entertimestamp": 1_795_170_000,
                     "outtimestamp": "1795170100", "starttimestamp": 1_795_170_000,
                     "terminal": "2", "userroleid": "3"},
                    {"serial": "1", "userid": 12, "entertimestamp": "1795170050",
                     "outtimestamp": 0, "outtime": "", "startimestamp": 1_795_170_050,
                     "terminal": 3, "userroleid": 3}]})
        },
        figures: |status, body| {
            let p = answer::parse_page(status, body, KEY).ok()?;
            let mut f = vec![p.count, nonzero(p.rows as u64)];
            for r in p.records.iter().chain(&p.stage) {
                f.push(time(r.join));
                f.extend(r.leave.map(time));
            }
            Some(f)
        },
        fields: &[
            ("/count", Kind::Count),
            ("/logininfo/0/entertimestamp", Kind::Time),
            ("/logininfo/0/outtimestamp", Kind::Time),
            ("/logininfo/0/userid", Kind::Id),
            ("/logininfo/1/entertimestamp", Kind::Time),
            ("/uptablelist/0/entertimestamp", Kind::Time),
            ("/uptablelist/0/userid", Kind::Id),
        ],
    },
    Parser {
        name: "livekit ListRooms",
        sample: || {
            json!({"rooms": [
                {"sid": "RM_1", "name": "a", "num_participants": 3, "creation_time": "1795170000"},
                {"sid": "RM_2", "name": "b", "numParticipants": 2, "creationTime": 1_795_170_100}]})
        },
        figures: |status, body| {
            let (rooms, _) = livekit::parse_rooms(status, body).ok()?;
            Some(vec![nonzero(rooms.len() as u64)])
        },
        fields: &[
            ("/rooms/0/name", Kind::Id),
            ("/rooms/1/name", Kind::Id),
            ("/rooms/0/num_participants", Kind::Count),
            ("/rooms/1/numParticipants", Kind::Count),
        ],
    },
    Parser {
        name: "livekit ListParticipants",
        sample: || {
            json!({"participants": [
                {"sid": "PA_1", "identity": "a", "state": "ACTIVE", "joined_at": "1795170000",
                 "kind": "STANDARD", "permission": {"hidden": true}},
                {"identity": "b", "state": 2, "joined_at": 1_795_170_050, "kind": "SIP"},
                {"identity": "c", "joinedAt": "1795170060"}]})
        },
        figures: |status, body| {
            let kinds = livekit::DEFAULT_KINDS.iter().copied().collect();
            let p = livekit::parse_participants(status, body, &kinds).ok()?;
            Some(vec![nonzero(p.ids.len() as u64)])
        },
        fields: &[
            ("/participants/0/identity", Kind::Id),
            ("/participants/1/identity", Kind::Id),
            ("/participants/2/identity", Kind::Id),
            ("/participants/0/joined_at", Kind::Time),
            ("/participants/1/joined_at", Kind::Time),
            ("/participants/2/joinedAt", Kind::Time),
        ],
    },
    Parser {
        name: "alibaba_artc DescribeChannels",
        sample: || {
            json!({"RequestId": "16A96B9A-F203-4EC5-8E43-CB92E68F4CF8", "PageNo": 1,
                "PageSize": 10, "TotalCnt": 2, "Records": ["test", 42]})
        },
        figures: |status, body| {
            let p = alibaba_artc::parse_channels(status, body).ok()?;
            Some(vec![p.total, nonzero(p.rows.len() as u64)])
        },
        fields: &[
            ("/TotalCnt", Kind::Count),
            ("/Records/0", Kind::Id),
            ("/Records/1", Kind::Id),
        ],
    },
    Parser {
        name: "alibaba_artc DescribeChannelUsers",
        sample: || {
            json!({"RequestId": "6159ba01-6687-4fb2-a831-f0cd8d188648",
                "TimeStamp": 1_557_909_133, "IsChannelExist": true, "ChannelProfile": 2,
                "CommTotalNum": 0, "UserList": [], "InteractiveUserNum": 1,
                "InteractiveUserList": ["4455****"], "LiveUserNum": 2,
                "LiveUserList": ["3267****", 7]})
        },
        figures: |status, body| {
            let (occ, _) = alibaba_artc::parse_users(status, body).ok()?;
            match occ {
                crate::clouds::util::Occupancy::Gone => None,
                crate::clouds::util::Occupancy::Present { users, ids, roles } => {
                    let mut f = vec![nonzero(users), nonzero(ids.len() as u64)];
                    f.extend(roles.iter().flat_map(|r| r.values().map(|n| nonzero(*n))));
                    Some(f)
                }
            }
        },
        fields: &[
            ("/IsChannelExist", Kind::Bool),
            ("/ChannelProfile", Kind::Count),
            ("/InteractiveUserNum", Kind::Count),
            ("/InteractiveUserList/0", Kind::Id),
            ("/LiveUserNum", Kind::Count),
            ("/LiveUserList/1", Kind::Id),
        ],
    },
];

fn body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Values

/// Values at the limits and of the wrong type: what a hostile or broken vendor sends.
fn hostile() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(1e308)),
        Just(json!(-1e308)),
        Just(json!(0.5)),
        Just(json!(-0.0)),
        Just(json!("NaN")),
        Just(json!("-inf")),
        Just(json!("Infinity")),
        Just(json!("18446744073709551616")),
        Just(json!("9223372036854775808")),
        Just(json!("-1")),
        Just(json!("1e3")),
        Just(json!("")),
        Just(json!(" ")),
        Just(json!("\u{0}")),
        Just(json!("🙂")),
        Just(json!(null)),
        Just(json!(true)),
        Just(json!([])),
        Just(json!({})),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        (1usize..300).prop_map(|n| nested(n, json!(1))),
    ]
}

/// `depth` arrays around `inner`.
fn nested(depth: usize, inner: Value) -> Value {
    (0..depth).fold(inner, |v, _| Value::Array(vec![v]))
}

/// A value that is not a valid value of `kind` (null and deletion are handled apart: they mean
/// "not sent").
fn invalid(kind: Kind) -> BoxedStrategy<Value> {
    let wrong_type = prop_oneof![
        Just(json!([])),
        Just(json!([1])),
        Just(json!({})),
        Just(json!({"n": 1})),
    ];
    match kind {
        Kind::Count | Kind::Time => prop_oneof![
            wrong_type,
            Just(json!(true)),
            Just(json!(false)),
            Just(json!(1e308)),
            Just(json!(-1e308)),
            Just(json!(1e20)),
            Just(json!(0.5)),
            Just(json!("NaN")),
            Just(json!("inf")),
            Just(json!("1.5")),
            Just(json!("0x1F")),
            Just(json!("1 2")),
            Just(json!("18446744073709551616")),
            (i64::MIN..0).prop_map(Value::from),
            (i64::MIN..0).prop_map(|n| Value::from(n.to_string())),
            "[a-zA-Z_.+-]{1,12}".prop_map(Value::from),
            (0.001f64..1e6)
                .prop_filter("a fraction", |f| f.fract() != 0.0)
                .prop_map(Value::from),
        ]
        .boxed(),
        Kind::Bool => prop_oneof![
            wrong_type,
            Just(json!("yes")),
            Just(json!("1")),
            Just(json!(2)),
            Just(json!(-1)),
            Just(json!(0.5)),
            Just(json!("")),
            "[a-z]{2,8}"
                .prop_filter("not a boolean", |s| s != "true" && s != "false")
                .prop_map(Value::from),
        ]
        .boxed(),
        Kind::Id => prop_oneof![
            wrong_type,
            Just(json!(true)),
            Just(json!(false)),
            Just(json!("")),
        ]
        .boxed(),
    }
}

/// The pointers of every node of `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                pointers(
                    x,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        _ => {}
    }
}

/// Deletes the node at `pointer` (an object member or an array element).
fn delete(v: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    match v.pointer_mut(parent) {
        Some(Value::Object(o)) => {
            o.remove(&last);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = last.parse::<usize>() {
                if i < a.len() {
                    a.remove(i);
                }
            }
        }
        _ => {}
    }
}

/// One structural mutation: (node index, operation, value).
#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Replace(usize, Value),
    Wrap(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), hostile()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        any::<usize>().prop_map(Mutation::Wrap),
    ]
}

fn apply(v: &mut Value, m: &Mutation) {
    let mut all = Vec::new();
    pointers(v, String::new(), &mut all);
    let pick = |i: usize| all[i % all.len()].clone();
    match m {
        Mutation::Delete(i) => delete(v, &pick(*i)),
        Mutation::Replace(i, x) => {
            if let Some(node) = v.pointer_mut(&pick(*i)) {
                *node = x.clone();
            }
        }
        Mutation::Wrap(i) => {
            if let Some(node) = v.pointer_mut(&pick(*i)) {
                *node = Value::Array(vec![node.take()]);
            }
        }
    }
}

/// Byte-level damage after the structural mutations.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(usize),
    Flip(Vec<(usize, u8)>),
    Insert(usize, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::None),
        any::<usize>().prop_map(Damage::Truncate),
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..8).prop_map(Damage::Flip),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Damage::Insert(i, b)),
    ]
}

fn damaged(mut b: Vec<u8>, d: &Damage) -> Vec<u8> {
    if b.is_empty() {
        return b;
    }
    match d {
        Damage::None => {}
        Damage::Truncate(i) => b.truncate(i % b.len()),
        Damage::Flip(flips) => {
            for (i, x) in flips {
                let n = b.len();
                b[i % n] = *x;
            }
        }
        Damage::Insert(i, bytes) => {
            let at = i % b.len();
            b.splice(at..at, bytes.iter().copied());
        }
    }
    b
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => Just(200u16),
        1 => prop::sample::select(vec![204u16, 400, 401, 429, 500, 502, 503]),
        1 => 0u16..1000,
    ]
}

/// Every number of `v` as a string.
fn numbers_as_strings(v: &mut Value) {
    match v {
        Value::Number(n) => *v = Value::String(n.to_string()),
        Value::Array(a) => a.iter_mut().for_each(numbers_as_strings),
        Value::Object(o) => o.values_mut().for_each(numbers_as_strings),
        _ => {}
    }
}

/// A field of a sample (parser, field), how to break it (0 delete, 1 null, else replace) and
/// a value that is invalid for its kind.
fn field_case() -> impl Strategy<Value = (usize, usize, u8, Value)> {
    let cases: Vec<(usize, usize)> = PARSERS
        .iter()
        .enumerate()
        .flat_map(|(i, p)| (0..p.fields.len()).map(move |j| (i, j)))
        .collect();
    prop::sample::select(cases)
        .prop_flat_map(|(i, j)| (Just(i), Just(j), 0u8..10, invalid(PARSERS[i].fields[j].1)))
}

// ---------------------------------------------------------------------------------------------
// Answer parsers

#[test]
fn every_sample_reads_with_figures_and_reads_the_same_with_numbers_as_strings() {
    for p in PARSERS {
        let sample = (p.sample)();
        let figures = (p.figures)(200, &body(&sample));
        let Some(f) = &figures else {
            panic!("{}: the sample does not read", p.name)
        };
        assert!(!f.is_empty() && !f.contains(&Some(0)), "{}: {f:?}", p.name);
        let mut strings = sample.clone();
        numbers_as_strings(&mut strings);
        assert_eq!((p.figures)(200, &body(&strings)), figures, "{}", p.name);
        for (pointer, _) in p.fields {
            assert!(sample.pointer(pointer).is_some(), "{}: {pointer}", p.name);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Random bytes, valid UTF-8 or not, at any status: an answer or an error, never a panic.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), status in status()) {
        for p in PARSERS {
            let _ = (p.figures)(status, &bytes);
        }
    }

    /// Valid answers mutated (fields deleted, values at the limits or of the wrong type, nodes
    /// wrapped in arrays) and then cut, flipped or added to: never a panic.
    #[test]
    fn mutated_answers_never_panic(
        which in any::<usize>(),
        mutations in prop::collection::vec(mutation(), 1..6),
        damage in damage(),
        status in status(),
    ) {
        let p = &PARSERS[which % PARSERS.len()];
        let mut v = (p.sample)();
        for m in &mutations {
            apply(&mut v, m);
        }
        let _ = (p.figures)(status, &damaged(body(&v), &damage));
    }

    /// Deep nesting, alone or in place of a field: an error, never a stack overflow.
    #[test]
    fn deep_nesting_is_an_error(depth in 100usize..20_000, open in prop::sample::select(vec!["[", "{\"a\":", "[{\"b\":"]), close in any::<bool>(), which in any::<usize>(), node in any::<usize>()) {
        let mut text = open.repeat(depth);
        if close {
            text.push('1');
            for _ in 0..depth {
                text.push_str(if open == "[" { "]" } else if open == "{\"a\":" { "}" } else { "}]" });
            }
        }
        for p in PARSERS {
            prop_assert!((p.figures)(200, text.as_bytes()).is_none(), "{}", p.name);
        }
        // A valid answer with one field replaced by the nest.
        let p = &PARSERS[which % PARSERS.len()];
        let mut v = (p.sample)();
        let mut all = Vec::new();
        pointers(&v, String::new(), &mut all);
        let at = all[node % all.len()].clone();
        let marker = "\"@nest@\"";
        if let Some(n) = v.pointer_mut(&at) {
            *n = json!("@nest@");
        }
        let text = String::from_utf8_lossy(&body(&v)).replace(marker, &text);
        let _ = (p.figures)(200, text.as_bytes());
    }

    /// A count, time, status or id that is not a valid value of its kind, or is missing, never
    /// becomes a 0 and never loses a row: the answer is refused, or every figure of the sample
    /// is still there and non-zero.
    #[test]
    fn an_invalid_field_never_becomes_zero((which, field, how, value) in field_case()) {
        let p = &PARSERS[which];
        let (pointer, _) = p.fields[field];
        let mut v = (p.sample)();
        let want = (p.figures)(200, &body(&v)).map(|f| f.len());
        match how {
            0 => delete(&mut v, pointer),
            1 => {
                if let Some(n) = v.pointer_mut(pointer) {
                    *n = Value::Null;
                }
            }
            _ => {
                if let Some(n) = v.pointer_mut(pointer) {
                    *n = value.clone();
                }
            }
        }
        if let Some(f) = (p.figures)(200, &body(&v)) {
            prop_assert!(
                !f.contains(&Some(0)) && Some(f.len()) == want,
                "{}: {pointer} = {:?} ({how}) gave {f:?}",
                p.name,
                v.pointer(pointer)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The config parser

/// A valid config with every vendor and every global key; secrets are plain strings (no file
/// or environment is read).
const CONFIG: &str = r#"global:
  timezone: Asia/Shanghai
  interval: 60s
  poll_timeout: 50s
  request_timeout: 10s
  stale_after: 3
  max_rooms: 5000
  max_response_bytes: 8MiB
targets:
  - name: urtc
    vendor: ucloud_urtc
    interval: 30s
    endpoint: https://api.ucloud.cn
    app_id: URtc-h4r1txxy
    credentials: { public_key: pk, private_key: not-a-real-private-key }
    rooms: [oMMAvLDR]
    capacity: { default: 50, rooms: { oMMAvLDR: 30 } }
    qps: 5
  - name: volc
    vendor: volcengine_rtc
    app_id: "661e0000543cf"
    credentials: { access_key_id: AKLTexample, secret_access_key: not-a-real-secret }
    region: cn-north-1
    rooms: [room-1, room-2]
    devices: true
    watch_users: [10001, "10002"]
  - name: trtc
    vendor: tencent_trtc
    schedule: "0 */5 * * * *"
    sdk_app_id: 1400000001
    region: ap-guangzhou
    delay: 90s
    credentials: { secret_id: AKIDexample, secret_key: not-a-real-key }
  - name: talk
    vendor: talkcloud
    credentials: { key: abcdefabcdef1234 }
    rooms: ["7100000001", 7100000002, { thirdroomid: my-class }]
  - name: lk
    vendor: livekit
    endpoint: wss://project.livekit.cloud
    credentials: { api_key: APIexample, api_secret: not-a-real-secret }
    rooms: [math-101]
    participant_kinds: [standard, sip, agent]
  - name: artc
    vendor: alibaba_artc
    app_id: a2hzexample
    credentials: { access_key_id: LTAIexample, access_key_secret: not-a-real-secret }
    page_size: 50
    signature: rpc
    rooms: [testId]
"#;

fn parse_config(text: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
    crate::config::parse(text, std::path::Path::new("fuzz.yaml"))
}

/// What a config that loads must hold: no zero or negative where one is not valid.
fn holds(c: &crate::config::Config) -> Result<(), String> {
    let g = &c.global;
    let ms100 = std::time::Duration::from_millis(100);
    for (k, d) in [
        ("interval", g.interval),
        ("poll_timeout", g.poll_timeout),
        ("request_timeout", g.request_timeout),
    ] {
        if d < ms100 {
            return Err(format!("global.{k} {d:?}"));
        }
    }
    if g.stale_after == 0 || g.max_rooms == 0 || g.max_response_bytes < 1024 {
        return Err(format!("global {g:?}"));
    }
    for t in &c.targets {
        if let crate::schedule::Schedule::Interval(d) = t.schedule {
            if d < ms100 {
                return Err(format!("{} interval {d:?}", t.name));
            }
        }
        if t.qps.is_some_and(|q| !(q.is_finite() && q > 0.0)) {
            return Err(format!("{} qps {:?}", t.name, t.qps));
        }
        if !crate::config::valid_name(&t.name) {
            return Err(format!("name {:?}", t.name));
        }
    }
    Ok(())
}

/// YAML scalars at the limits and of the wrong type.
fn hostile_yaml() -> impl Strategy<Value = serde_yaml::Value> {
    let scalar = |s: &str| serde_yaml::Value::String(s.to_string());
    prop_oneof![
        Just(serde_yaml::Value::Null),
        Just(serde_yaml::Value::Bool(true)),
        Just(serde_yaml::Value::from(0)),
        Just(serde_yaml::Value::from(-1)),
        Just(serde_yaml::Value::from(i64::MAX)),
        Just(serde_yaml::Value::from(u64::MAX)),
        Just(serde_yaml::Value::from(1e308)),
        Just(serde_yaml::Value::from(f64::NAN)),
        Just(serde_yaml::Value::from(f64::INFINITY)),
        Just(scalar("")),
        Just(scalar("0s")),
        Just(scalar("99ms")),
        Just(scalar("-1s")),
        Just(scalar("1.5s")),
        Just(scalar("18446744073709551615ms")),
        Just(scalar("18446744073709551615h")),
        Just(scalar("9999999999999999999999d")),
        Just(scalar("1s1s1s1s")),
        Just(scalar("99999999999GiB")),
        Just(scalar("8 MiB")),
        Just(scalar("8EiB")),
        Just(scalar("Mars/Olympus_Mons")),
        Just(scalar("* * * *")),
        Just(scalar("60 60 25 32 13 8")),
        Just(scalar("ftp://x")),
        Just(scalar("http://")),
        Just(serde_yaml::Value::Sequence(vec![])),
        Just(serde_yaml::Value::Mapping(serde_yaml::Mapping::new())),
        any::<i64>().prop_map(serde_yaml::Value::from),
        any::<f64>().prop_map(serde_yaml::Value::from),
        ".{0,30}".prop_map(serde_yaml::Value::String),
    ]
}

/// Every scalar's place in a YAML tree: (path of keys and indices).
fn yaml_paths(
    v: &serde_yaml::Value,
    at: Vec<serde_yaml::Value>,
    out: &mut Vec<Vec<serde_yaml::Value>>,
) {
    out.push(at.clone());
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, x) in m {
                let mut p = at.clone();
                p.push(k.clone());
                yaml_paths(x, p, out);
            }
        }
        serde_yaml::Value::Sequence(s) => {
            for (i, x) in s.iter().enumerate() {
                let mut p = at.clone();
                p.push(serde_yaml::Value::from(i as u64));
                yaml_paths(x, p, out);
            }
        }
        _ => {}
    }
}

fn yaml_at<'a>(
    v: &'a mut serde_yaml::Value,
    path: &[serde_yaml::Value],
) -> Option<&'a mut serde_yaml::Value> {
    let mut node = v;
    for k in path {
        node = match node {
            serde_yaml::Value::Mapping(m) => m.get_mut(k)?,
            serde_yaml::Value::Sequence(s) => s.get_mut(usize::try_from(k.as_u64()?).ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

fn yaml_delete(v: &mut serde_yaml::Value, path: &[serde_yaml::Value]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    match yaml_at(v, parent) {
        Some(serde_yaml::Value::Mapping(m)) => {
            m.remove(last);
        }
        Some(serde_yaml::Value::Sequence(s)) => {
            if let Some(i) = last.as_u64().and_then(|i| usize::try_from(i).ok()) {
                if i < s.len() {
                    s.remove(i);
                }
            }
        }
        _ => {}
    }
}

/// Keys whose value must be valid or the file is refused: (path, valid examples are not drawn).
const STRICT_KEYS: &[&[&str]] = &[
    &["global", "interval"],
    &["global", "poll_timeout"],
    &["global", "request_timeout"],
    &["global", "stale_after"],
    &["global", "max_rooms"],
    &["global", "max_response_bytes"],
];

fn invalid_for(key: &str) -> Vec<serde_yaml::Value> {
    let s = |x: &str| serde_yaml::Value::String(x.to_string());
    let mut v = vec![
        serde_yaml::Value::Null,
        serde_yaml::Value::Bool(true),
        serde_yaml::Value::from(-1),
        serde_yaml::Value::from(1.5),
        serde_yaml::Value::from(f64::NAN),
        serde_yaml::Value::Sequence(vec![]),
        s(""),
        s("abc"),
        s("-1"),
    ];
    match key {
        "interval" | "poll_timeout" | "request_timeout" => v.extend([
            serde_yaml::Value::from(0),
            serde_yaml::Value::from(60),
            s("0s"),
            s("99ms"),
            s("1.5s"),
            s("1e3s"),
            s("18446744073709551615h"),
        ]),
        "stale_after" => v.extend([
            serde_yaml::Value::from(0),
            serde_yaml::Value::from(u64::from(u32::MAX) + 1),
            s("3"),
        ]),
        "max_rooms" => v.extend([serde_yaml::Value::from(0), s("5000")]),
        _ => v.extend([
            serde_yaml::Value::from(0),
            serde_yaml::Value::from(1023),
            s("1KB"),
            s("8 TB"),
            s("99999999999999999999GiB"),
        ]),
    }
    v
}

#[test]
fn the_config_sample_loads_and_an_invalid_value_at_a_strict_key_is_refused() {
    let c = parse_config(CONFIG).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.targets.len(), 6);
    holds(&c).unwrap();
    let root: serde_yaml::Value = serde_yaml::from_str(CONFIG).unwrap();
    for path in STRICT_KEYS {
        let key = path[path.len() - 1];
        for bad in invalid_for(key) {
            let mut v = root.clone();
            let keys: Vec<serde_yaml::Value> =
                path.iter().map(|k| serde_yaml::Value::from(*k)).collect();
            *yaml_at(&mut v, &keys).unwrap() = bad.clone();
            let text = serde_yaml::to_string(&v).unwrap();
            assert!(
                parse_config(&text).is_err(),
                "{path:?} = {bad:?} was accepted"
            );
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any text at all: a config or errors, never a panic.
    #[test]
    fn any_config_text_never_panics(text in prop_oneof![
        ".{0,400}",
        "[a-z_:{}\\[\\], \\n\"'0-9*&!|>-]{0,400}",
    ]) {
        if let Ok(c) = parse_config(&text) {
            prop_assert!(holds(&c).is_ok(), "{text:?}: {:?}", holds(&c));
        }
    }

    /// The sample mutated (keys deleted, values replaced at the limits or by the wrong type,
    /// lines dropped or repeated): errors, or a config with no invalid zero.
    #[test]
    fn a_mutated_config_is_refused_or_holds(
        edits in prop::collection::vec((any::<usize>(), any::<bool>(), hostile_yaml()), 1..4),
        lines in prop::collection::vec((any::<usize>(), 0u8..3), 0..3),
        depth in prop::option::of(100usize..10_000),
    ) {
        let mut v: serde_yaml::Value = serde_yaml::from_str(CONFIG).unwrap();
        for (i, del, x) in &edits {
            let mut all = Vec::new();
            yaml_paths(&v, Vec::new(), &mut all);
            let path = all[i % all.len()].clone();
            if *del {
                yaml_delete(&mut v, &path);
            } else if let Some(n) = yaml_at(&mut v, &path) {
                *n = x.clone();
            }
        }
        let mut text = serde_yaml::to_string(&v).unwrap_or_default();
        for (i, op) in &lines {
            let mut l: Vec<&str> = text.lines().collect();
            if l.is_empty() {
                break;
            }
            let at = i % l.len();
            match op {
                0 => { l.remove(at); }
                1 => { let x = l[at]; l.insert(at, x); }
                _ => { l[at] = l[at].trim_start(); }
            }
            text = l.join("\n");
        }
        if let Some(d) = depth {
            text.push_str(&format!("\nextra: {}", "[".repeat(d)));
        }
        if let Ok(c) = parse_config(&text) {
            prop_assert!(holds(&c).is_ok(), "{text}\n{:?}", holds(&c));
        }
    }

    /// A strict key with any invalid value, in the otherwise valid sample: refused.
    #[test]
    fn an_invalid_value_at_a_strict_key_is_refused(which in any::<usize>(), bad in hostile_yaml()) {
        let path = STRICT_KEYS[which % STRICT_KEYS.len()];
        let mut v: serde_yaml::Value = serde_yaml::from_str(CONFIG).unwrap();
        let keys: Vec<serde_yaml::Value> = path.iter().map(|k| serde_yaml::Value::from(*k)).collect();
        *yaml_at(&mut v, &keys).unwrap() = bad.clone();
        let text = serde_yaml::to_string(&v).unwrap();
        match parse_config(&text) {
            Err(_) => {}
            Ok(c) => prop_assert!(holds(&c).is_ok(), "{path:?} = {bad:?}: {:?}", holds(&c)),
        }
    }
}

/// Found while writing these properties, outside their reach (it takes over a thousand
/// terms): a duration whose terms sum past `Duration::MAX` panicked in `PromDuration::parse`
/// instead of being refused, so a hostile config file crashed `--config.check` and a reload.
#[test]
fn a_duration_summing_past_the_maximum_is_refused() {
    let long = "18446744073709551615ms".repeat(1100);
    let text = CONFIG.replace("interval: 60s", &format!("interval: \"{long}\""));
    let refused = std::panic::catch_unwind(|| parse_config(&text).is_err());
    assert_eq!(refused.ok(), Some(true), "a panic, or accepted");
}

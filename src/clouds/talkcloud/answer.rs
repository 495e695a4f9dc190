//! Reading one `getLiveLogininfo` answer: the envelope (`result`, `count`), the records of
//! `logininfo` and `uptablelist`, and the checks of the answer against itself (a `count`
//! that disagrees with the rows is not one of them: see the module above).
//!
//! Every number is read leniently ([`lenient_i64`], [`lenient_u64`]): the official docs type
//! most of them as strings and the example sends some as numbers. What cannot be read, or
//! contradicts itself, is a [`CallError::Malformed`] naming the field (never a value: values may
//! be user data, and an error message is logged and shown on `/`).

use crate::fields::{cut, MAX_MESSAGE};
use serde_json::{Map, Value};

use crate::clouds::util::{code_label, id_string, lenient_i64, lenient_u64};
use crate::clouds::{CallError, Device, Role};

/// The API (the `api` label).
pub const API: &str = "getLiveLogininfo";
/// Rows of `logininfo` in a full page.
pub const PAGE: usize = 200;
/// "No data matches": an empty answer, not a failure.
pub const NO_DATA: i64 = 4105;
/// The codes counted under their own label (vendors.md §4); others count as `other`.
pub const CODES: &[&str] = &["4101", "4102", "4007", "3001", "4108", "-1"];

/// One stay of one user, as a record of `logininfo` or `uptablelist` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `userid`.
    pub user: String,
    /// `entertimestamp` (or, where it is missing, `starttimestamp` / `startimestamp`).
    pub join: i64,
    /// `outtimestamp`; `None` while the user is still watching (`outtimestamp` 0 or missing,
    /// `outtime` "").
    pub leave: Option<i64>,
    /// From `terminal`.
    pub device: Device,
    /// From `userroleid`.
    pub role: Role,
}

/// One page of an answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// `result` 4105: nothing matches.
    pub no_data: bool,
    /// `count`, where sent.
    pub count: Option<u64>,
    /// Rows of `logininfo` on this page (the paging unit).
    pub rows: usize,
    /// The records of `logininfo`.
    pub records: Vec<Record>,
    /// The records of `uptablelist` (users on stage; sent on page 1 only).
    pub stage: Vec<Record>,
}

fn malformed(message: impl Into<String>) -> CallError {
    CallError::Malformed {
        api: API,
        message: message.into(),
    }
}

/// `terminal`: 0 windows, 1 mac, 2 ios, 3 android, 4 linux; 5 (unknown) and anything else
/// other.
pub fn device(terminal: Option<&Value>) -> Device {
    match terminal.and_then(lenient_u64) {
        Some(0) => Device::Windows,
        Some(1) => Device::Mac,
        Some(2) => Device::Ios,
        Some(3) => Device::Android,
        Some(4) => Device::Linux,
        _ => Device::Other,
    }
}

/// `userroleid`: 0 teacher, 1 assistant, 2 student, 3 viewer, 4 inspector; anything else
/// (6 auditor, 27 parent, missing) other.
pub fn role(userroleid: Option<&Value>) -> Role {
    match userroleid.and_then(lenient_i64) {
        Some(0) => Role::Teacher,
        Some(1) => Role::Assistant,
        Some(2) => Role::Student,
        Some(3) => Role::Viewer,
        Some(4) => Role::Inspector,
        _ => Role::Other,
    }
}

/// A field that is absent, `null` or `""`: not sent.
fn absent(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        _ => false,
    }
}

/// A Unix time: a positive integer, or a numeric string holding one.
fn unix_time(
    o: &Map<String, Value>,
    field: &str,
    at: &dyn Fn() -> String,
) -> Result<Option<i64>, CallError> {
    let v = o.get(field);
    if absent(v) {
        return Ok(None);
    }
    match v.and_then(lenient_i64) {
        Some(t) if t >= 0 => Ok(Some(t)),
        _ => Err(malformed(format!("{}: {field} is not a Unix time", at()))),
    }
}

/// `outtime` with no time in it: `""`, `"0"`, `"0000-00-00 00:00:00"`.
fn empty_time(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.chars().all(|c| matches!(c, '0' | '-' | ':' | ' ')),
        Some(Value::Number(n)) => n.as_u64() == Some(0),
        _ => false,
    }
}

/// Reads one record; `list` and `i` name it in errors.
pub fn record(v: &Value, list: &str, i: usize) -> Result<Record, CallError> {
    let at = || format!("{list}[{i}]");
    let o = v
        .as_object()
        .ok_or_else(|| malformed(format!("{} is not an object", at())))?;
    let user = o
        .get("userid")
        .and_then(id_string)
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| malformed(format!("{}: userid missing or empty", at())))?;
    // The seed misspells `starttimestamp` as `startimestamp`: either is read.
    let start = match unix_time(o, "starttimestamp", &at)? {
        Some(t) => Some(t),
        None => unix_time(o, "startimestamp", &at)?,
    };
    let join = unix_time(o, "entertimestamp", &at)?
        .filter(|t| *t > 0)
        .or(start.filter(|t| *t > 0))
        .ok_or_else(|| malformed(format!("{}: no entertimestamp", at())))?;
    let leave = match unix_time(o, "outtimestamp", &at)? {
        Some(t) if t > 0 => Some(t),
        // 0 or not sent: still watching, and then `outtime` must say so too.
        _ if !empty_time(o.get("outtime")) => {
            return Err(malformed(format!(
                "{}: outtime says the user left but outtimestamp is 0 or missing",
                at()
            )))
        }
        _ => None,
    };
    if let Some(l) = leave {
        if l < join {
            return Err(malformed(format!(
                "{}: outtimestamp before entertimestamp",
                at()
            )));
        }
    }
    Ok(Record {
        user,
        join,
        leave,
        device: device(o.get("terminal")),
        role: role(o.get("userroleid")),
    })
}

fn records(o: &Map<String, Value>, list: &str) -> Result<Option<Vec<Record>>, CallError> {
    match o.get(list) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(rows)) => rows
            .iter()
            .enumerate()
            .map(|(i, v)| record(v, list, i))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(malformed(format!("{list} is not a list"))),
    }
}

/// The vendor's message, with the key cut out should the vendor echo it, and cut short.
fn message(o: &Map<String, Value>, secret: &str) -> String {
    let raw = ["msg", "message", "errmsg", "error"]
        .iter()
        .find_map(|k| o.get(*k).and_then(Value::as_str))
        .unwrap_or_default();
    let m = if secret.is_empty() {
        raw.to_string()
    } else {
        raw.replace(secret, "<redacted>")
    };
    // It reaches logs and the `/` page.
    cut(&m, MAX_MESSAGE)
}

/// Reads one answer. `secret` (the key) is cut out of any vendor message.
pub fn parse_page(status: u16, body: &[u8], secret: &str) -> Result<Page, CallError> {
    let ok_status = (200..300).contains(&status);
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) if !ok_status => return Err(CallError::Http { api: API, status }),
        Err(e) => return Err(malformed(format!("not JSON: {e}"))),
    };
    let Value::Object(o) = v else {
        return Err(if ok_status {
            malformed("not a JSON object")
        } else {
            CallError::Http { api: API, status }
        });
    };
    let code = match o.get("result") {
        None | Some(Value::Null) if !ok_status => return Err(CallError::Http { api: API, status }),
        None | Some(Value::Null) => return Err(malformed("no result code")),
        Some(r) => lenient_i64(r).ok_or_else(|| malformed("result is not an integer"))?,
    };
    if code == NO_DATA {
        return Ok(Page {
            no_data: true,
            ..Page::default()
        });
    }
    if code != 0 {
        let code = code.to_string();
        return Err(CallError::Vendor {
            api: API,
            label: code_label(CODES, &code),
            message: message(&o, secret),
            throttled: false,
            code,
        });
    }
    if !ok_status {
        return Err(CallError::Http { api: API, status });
    }
    let count = match o.get("count") {
        v if absent(v) => None,
        Some(v) => {
            Some(lenient_u64(v).ok_or_else(|| malformed("count is not a non-negative integer"))?)
        }
        None => None,
    };
    let logininfo = records(&o, "logininfo")?;
    let stage = records(&o, "uptablelist")?.unwrap_or_default();
    let records = match (logininfo, count) {
        (Some(r), _) => r,
        (None, Some(c)) if c > 0 => {
            return Err(malformed(format!(
                "logininfo is null or missing but count is {c}"
            )))
        }
        (None, _) => Vec::new(),
    };
    // A `count` below the rows is read from the rows: the caller counts it as an anomaly
    // (README: "Answers that disagree with themselves"), once all pages are in.
    Ok(Page {
        no_data: false,
        count,
        rows: records.len(),
        records,
        stage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "0123456789abcdef";

    fn page(v: &Value) -> Result<Page, CallError> {
        parse_page(200, v.to_string().as_bytes(), KEY)
    }

    fn malformed_message(r: Result<Page, CallError>) -> String {
        match r {
            Err(CallError::Malformed { message, .. }) => message,
            other => panic!("expected malformed, got {other:?}"),
        }
    }

    /// The seed's example, with its missing and trailing commas repaired.
    const SEED: &str = r#"{
        "result":0,
        "count":1,
        "uptablelist": [
            {
                "serial": "111111",
                "userid": "123123123123",
                "username": "李思淼",
                "entertime": "2020-08-29 09:48:47",
                "outtime": "2020-08-29 09:49:07",
                "duration": "20",
                "terminal":"0",
                "terminal_details":"1",
                "userroleid": "2",
                "starttime": "2020-08-29 09:48:47",
                "endtime": "2020-08-29 09:49:07",
                "paytime": "20",
                "videotype": "320*240",
                "entertimestamp":1598665727,
                "outtimestamp":1598665747,
                "startimestamp":1598665727,
                "endtimestamp":1598665747
            }
        ],
        "logininfo":[
            {
                "serial":"111111",
                "userid":"123123123123",
                "username":"IWantSeeYouAgain",
                "entertime":"2020-06-17 17:05:04",
                "outtime":"2020-06-17 17:05:18",
                "duration":"14",
                "terminal":"0",
                "terminal_details":"1",
                "starttime":"2020-06-17 17:05:18",
                "endtime":"2020-06-17 17:05:18",
                "paytime":"0",
                "videotype":"320*240",
                "userroleid": "2",
                "entertimestamp":1592384704,
                "outtimestamp":1592384718,
                "startimestamp":1592384718,
                "endtimestamp":1592384718
            }
        ]
    }"#;

    #[test]
    fn the_seed_example_reads_with_its_spellings() {
        let p = parse_page(200, SEED.as_bytes(), KEY).unwrap();
        assert_eq!((p.no_data, p.count, p.rows), (false, Some(1), 1));
        assert_eq!(
            p.records,
            vec![Record {
                user: "123123123123".into(),
                join: 1592384704,
                leave: Some(1592384718),
                device: Device::Windows,
                role: Role::Student,
            }]
        );
        assert_eq!(p.stage.len(), 1);
        assert_eq!(
            (p.stage[0].join, p.stage[0].leave),
            (1598665727, Some(1598665747))
        );
    }

    #[test]
    fn the_seed_example_as_published_is_not_json_and_is_malformed() {
        // The published example misses a comma after `uptablelist` and has trailing commas.
        let published = SEED.replace(
            "        ],\n        \"logininfo\"",
            "        ]\n        \"logininfo\"",
        );
        assert_ne!(published, SEED);
        let m = malformed_message(parse_page(200, published.as_bytes(), KEY));
        assert!(m.starts_with("not JSON"), "{m}");
    }

    #[test]
    fn numbers_may_be_strings_and_strings_numbers() {
        let p = page(&json!({
            "result": "0", "count": "2",
            "logininfo": [
                {"userid": 42, "entertimestamp": "100", "outtimestamp": "0", "outtime": "",
                 "terminal": 3, "userroleid": 3},
                {"userid": "u2", "entertimestamp": 90, "outtimestamp": 95,
                 "terminal": "2", "userroleid": "4"},
            ],
        }))
        .unwrap();
        assert_eq!(p.count, Some(2));
        assert_eq!(
            p.records[0],
            Record {
                user: "42".into(),
                join: 100,
                leave: None,
                device: Device::Android,
                role: Role::Viewer
            }
        );
        assert_eq!(
            (p.records[1].leave, p.records[1].device, p.records[1].role),
            (Some(95), Device::Ios, Role::Inspector)
        );
    }

    #[test]
    fn still_watching_is_outtimestamp_0_or_missing_with_no_outtime() {
        for rec in [
            json!({"userid": "a", "entertimestamp": 10, "outtimestamp": 0, "outtime": ""}),
            json!({"userid": "a", "entertimestamp": 10, "outtimestamp": "", "outtime": null}),
            json!({"userid": "a", "entertimestamp": 10}),
            json!({"userid": "a", "entertimestamp": 10, "outtimestamp": 0,
                   "outtime": "0000-00-00 00:00:00"}),
        ] {
            assert_eq!(record(&rec, "logininfo", 0).unwrap().leave, None, "{rec}");
        }
    }

    #[test]
    fn the_enter_time_falls_back_to_either_start_spelling() {
        for field in ["starttimestamp", "startimestamp"] {
            let rec = json!({"userid": "a", field: "77", "outtimestamp": 80});
            assert_eq!(record(&rec, "logininfo", 0).unwrap().join, 77, "{field}");
        }
        let rec = json!({"userid": "a", "entertimestamp": 70, "startimestamp": 77});
        assert_eq!(record(&rec, "logininfo", 0).unwrap().join, 70);
    }

    #[test]
    fn devices_and_roles_map_the_documented_values_and_the_rest_to_other() {
        let d = |t: Value| device(Some(&t));
        assert_eq!(
            [
                d(json!(0)),
                d(json!("1")),
                d(json!(2)),
                d(json!("3")),
                d(json!(4))
            ],
            [
                Device::Windows,
                Device::Mac,
                Device::Ios,
                Device::Android,
                Device::Linux
            ]
        );
        assert_eq!(d(json!(5)), Device::Other);
        assert_eq!(d(json!("x")), Device::Other);
        assert_eq!(device(None), Device::Other);
        let r = |t: Value| role(Some(&t));
        assert_eq!(
            [
                r(json!("0")),
                r(json!(1)),
                r(json!(2)),
                r(json!("3")),
                r(json!(4))
            ],
            [
                Role::Teacher,
                Role::Assistant,
                Role::Student,
                Role::Viewer,
                Role::Inspector
            ]
        );
        assert_eq!(r(json!(6)), Role::Other);
        assert_eq!(r(json!("27")), Role::Other);
        assert_eq!(role(None), Role::Other);
    }

    #[test]
    fn no_data_is_not_an_error() {
        let p = page(&json!({"result": 4105})).unwrap();
        assert!(p.no_data);
        let p = page(&json!({"result": "4105", "msg": "no data"})).unwrap();
        assert!(p.no_data);
    }

    #[test]
    fn codes_are_vendor_errors_counted_from_a_closed_set() {
        for (code, label) in [
            (json!(4102), "4102"),
            (json!("4101"), "4101"),
            (json!(-1), "-1"),
            (json!("-1"), "-1"),
            (json!(4007), "4007"),
            (json!(3001), "3001"),
            (json!(4108), "4108"),
            (json!(9999), "other"),
        ] {
            match page(&json!({"result": code, "msg": "bad"})) {
                Err(CallError::Vendor {
                    label: l,
                    throttled,
                    message,
                    ..
                }) => {
                    assert_eq!((l, throttled, message.as_str()), (label, false, "bad"));
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_key_never_reaches_an_error_message() {
        let body = json!({"result": 4102, "msg": format!("key {KEY} is wrong")});
        let e = page(&body).unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(!text.contains(KEY), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn http_errors_without_a_code_are_http() {
        let e = parse_page(502, b"<html>bad gateway</html>", KEY).unwrap_err();
        assert!(matches!(e, CallError::Http { status: 502, .. }), "{e:?}");
        let e = parse_page(500, br#"{"result": 4102}"#, KEY).unwrap_err();
        assert!(matches!(e, CallError::Vendor { .. }), "{e:?}");
        let e = parse_page(503, br#"{"result": 0, "logininfo": []}"#, KEY).unwrap_err();
        assert!(matches!(e, CallError::Http { status: 503, .. }), "{e:?}");
    }

    #[test]
    fn contradictions_are_malformed_and_named() {
        let rec = |u: &str| json!({"userid": u, "entertimestamp": 10, "outtimestamp": 20});
        let cases = [
            (
                json!({"result": 0, "count": 3, "logininfo": null}),
                "logininfo is null or missing but count is 3",
            ),
            (
                json!({"result": 0, "count": "1"}),
                "logininfo is null or missing but count is 1",
            ),
            (
                json!({"result": 0, "count": "x", "logininfo": []}),
                "count is not a non-negative integer",
            ),
            (
                json!({"result": 0, "count": -2, "logininfo": []}),
                "count is not a non-negative integer",
            ),
            (
                json!({"result": 0, "logininfo": {"a": 1}}),
                "logininfo is not a list",
            ),
            (
                json!({"result": 0, "logininfo": [], "uptablelist": "x"}),
                "uptablelist is not a list",
            ),
            (
                json!({"result": 0, "logininfo": [1]}),
                "logininfo[0] is not an object",
            ),
            (
                json!({"result": 0, "logininfo": [{"entertimestamp": 1}]}),
                "logininfo[0]: userid missing or empty",
            ),
            (
                json!({"result": 0, "logininfo": [{"userid": "a"}]}),
                "logininfo[0]: no entertimestamp",
            ),
            (
                json!({"result": 0, "logininfo": [{"userid": "a", "entertimestamp": "soon"}]}),
                "logininfo[0]: entertimestamp is not a Unix time",
            ),
            (
                json!({"result": 0, "logininfo": [rec("a"), {"userid": "a", "entertimestamp": 10, "outtimestamp": -5}]}),
                "logininfo[1]: outtimestamp is not a Unix time",
            ),
            (
                json!({"result": 0, "logininfo": [{"userid": "a", "entertimestamp": 10, "outtimestamp": 5}]}),
                "logininfo[0]: outtimestamp before entertimestamp",
            ),
            (
                json!({"result": 0, "logininfo": [{"userid": "a", "entertimestamp": 10, "outtimestamp": 0, "outtime": "2020-06-17 17:05:18"}]}),
                "logininfo[0]: outtime says the user left but outtimestamp is 0 or missing",
            ),
            (
                json!({"result": 0, "uptablelist": [{"userid": "", "entertimestamp": 1}]}),
                "uptablelist[0]: userid missing or empty",
            ),
            (json!({"result": null}), "no result code"),
            (json!({"result": "ok"}), "result is not an integer"),
            (json!([1, 2]), "not a JSON object"),
        ];
        for (body, want) in cases {
            assert_eq!(malformed_message(page(&body)), want, "{body}");
        }
    }

    /// The reading rule (README, "Answers that disagree with themselves"): a count below the rows no longer fails the answer; the rows are read.
    #[test]
    fn a_count_below_the_rows_reads_the_rows() {
        let rec = |u: &str| json!({"userid": u, "entertimestamp": 10, "outtimestamp": 20});
        let p = page(&json!({"result": 0, "count": 1, "logininfo": [rec("a"), rec("b")]})).unwrap();
        assert_eq!((p.count, p.rows, p.records.len()), (Some(1), 2, 2));
    }

    #[test]
    fn an_empty_page_and_a_missing_count_are_fine() {
        let p = page(&json!({"result": 0, "count": 0, "logininfo": []})).unwrap();
        assert_eq!((p.rows, p.count), (0, Some(0)));
        let p = page(&json!({"result": 0, "logininfo": null, "uptablelist": null})).unwrap();
        assert_eq!((p.rows, p.count, p.stage.len()), (0, None, 0));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(4);
        let full = SEED.as_bytes();
        for _ in 0..2000 {
            let mut body = full.to_vec();
            match rng.u8(..4) {
                0 => body.truncate(rng.usize(..full.len())),
                1 => {
                    for _ in 0..rng.usize(1..8) {
                        let i = rng.usize(..body.len());
                        body[i] = rng.u8(..);
                    }
                }
                2 => body = (0..rng.usize(..64)).map(|_| rng.u8(..)).collect(),
                _ => {
                    let i = rng.usize(..body.len());
                    body.insert(i, b"{}[]\",:0-"[rng.usize(..9)]);
                }
            }
            let _ = parse_page(rng.u16(100..600), &body, KEY);
        }
        // Valid JSON of every odd shape.
        for v in [
            json!(null),
            json!(0),
            json!("x"),
            json!({"result": 1e300}),
            json!({"result": 0, "count": 1e300, "logininfo": []}),
            json!({"result": 0, "logininfo": [{"userid": [], "entertimestamp": {}}]}),
            json!({"result": 0, "logininfo": [{"userid": "a", "entertimestamp": 9e18, "outtimestamp": 1e19}]}),
        ] {
            let _ = page(&v);
        }
    }
}

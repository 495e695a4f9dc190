//! Unit tests of the TRTC simulator, with a test-only signer written apart from [`super::verify`].

use super::*;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// 2027-01-15T08:00:00Z.
const T: i64 = 1_800_000_000;
const HOST: &str = "127.0.0.1:1";
const PLAIN: &str = "content-type;host";
const WITH_ACTION: &str = "content-type;host;x-tc-action";

fn hmac(key: &[u8], msg: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(msg.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// A test-only TC3 signer, written apart from the verifier: the signature hex.
fn signature(key: &str, host: &str, action: &str, body: &str, ts: i64, signed: &str) -> String {
    let mut headers = format!("content-type:application/json\nhost:{host}\n");
    if signed == WITH_ACTION {
        headers += &format!("x-tc-action:{}\n", action.to_lowercase());
    }
    let canonical = format!(
        "POST\n/\n\n{headers}\n{signed}\n{}",
        hex::encode(Sha256::digest(body.as_bytes()))
    );
    let date = chrono::DateTime::from_timestamp(ts, 0)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let to_sign = format!(
        "TC3-HMAC-SHA256\n{ts}\n{date}/trtc/tc3_request\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let k = hmac(
        &hmac(&hmac(format!("TC3{key}").as_bytes(), &date), "trtc"),
        "tc3_request",
    );
    hex::encode(hmac(&k, &to_sign))
}

fn request(id: &str, key: &str, action: &str, body: &Value, ts: i64, signed: &str) -> SimRequest {
    let body = body.to_string();
    let sig = signature(key, HOST, action, &body, ts, signed);
    let date = chrono::DateTime::from_timestamp(ts, 0)
        .unwrap()
        .format("%Y-%m-%d");
    let auth = format!(
        "TC3-HMAC-SHA256 Credential={id}/{date}/trtc/tc3_request, SignedHeaders={signed}, \
         Signature={sig}"
    );
    let mut headers = hyper::header::HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json".to_string()),
        ("host", HOST.to_string()),
        ("x-tc-action", action.to_string()),
        ("x-tc-timestamp", ts.to_string()),
        ("x-tc-version", VERSION.to_string()),
        ("x-tc-region", REGION.to_string()),
        ("authorization", auth),
    ] {
        headers.insert(k, v.parse().unwrap());
    }
    SimRequest {
        method: "POST".into(),
        path: "/".into(),
        query: String::new(),
        headers,
        body: bytes::Bytes::from(body),
    }
}

fn signed(sim: &TrtcSim, action: &str, body: &Value) -> SimRequest {
    let ts = sim.clock.now();
    request(&sim.secret_id, &sim.secret_key(), action, body, ts, PLAIN)
}

/// The `Response` object of an answer (always HTTP 200 JSON).
fn send(sim: &TrtcSim, req: &SimRequest) -> Value {
    let r = sim.respond(req);
    assert_eq!((r.status, r.content_type), (200, "application/json"));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(v["Response"]["RequestId"].is_string(), "{v}");
    v["Response"].clone()
}

fn code(v: &Value) -> &str {
    v["Error"]["Code"].as_str().unwrap_or("")
}

fn rooms(sim: &TrtcSim, from: i64, to: i64) -> Value {
    json!({"SdkAppId": sim.sdk_app_id, "StartTime": from, "EndTime": to, "PageSize": 100})
}

fn users(sim: &TrtcSim, comm_id: &str, from: i64, to: i64) -> Value {
    json!({"SdkAppId": sim.sdk_app_id, "CommId": comm_id, "StartTime": from, "EndTime": to,
           "PageSize": 100})
}

fn session(user: &str, join: i64, leave: i64, device: Device) -> Session {
    Session {
        user: user.into(),
        join,
        leave,
        device,
        invisible: false,
        bot: None,
    }
}

fn call(start: i64, end: i64, sessions: Vec<Session>) -> Call {
    Call {
        id: format!("c{start}"),
        start,
        end,
        sessions,
    }
}

/// A simulator with no generated rooms, frozen at `T`.
fn empty() -> TrtcSim {
    let sim = TrtcSim::new(1, 0);
    sim.clock.freeze(T);
    sim
}

#[test]
fn test_signer_reproduces_the_published_vectors() {
    let body = r#"{"SdkAppId": 1400000001, "StartTime": 1735700645, "EndTime": 1735787045, "PageNumber": 0, "PageSize": 100}"#;
    let host = "trtc.tencentcloudapi.com";
    let sign = |signed| {
        signature(
            "exampleSecretKey",
            host,
            ROOM_INFO,
            body,
            1_735_787_045,
            signed,
        )
    };
    assert_eq!(
        sign(PLAIN),
        "76727108bc9fc9fb3fc2223c8bc3118588f618421d41ce5b93d70b273011cef5"
    );
    assert_eq!(
        sign(WITH_ACTION),
        "ced8e6412af34be1484123abf218c6239016aff2f88c41a7fa49f3c4f1dcbdff"
    );
}

#[test]
fn auth_and_header_failures_answer_their_codes() {
    let sim = empty();
    let body = rooms(&sim, T - 3600, T);
    let (id, key) = (sim.secret_id.clone(), sim.secret_key());
    for variant in [PLAIN, WITH_ACTION] {
        let v = send(&sim, &request(&id, &key, ROOM_INFO, &body, T, variant));
        assert_eq!((code(&v), &v["Total"]), ("", &json!(0)), "{v}");
    }
    let mut absent = signed(&sim, ROOM_INFO, &body);
    absent.headers.remove("authorization");
    assert_eq!(code(&send(&sim, &absent)), "MissingParameter");
    let mut garbled = signed(&sim, ROOM_INFO, &body);
    garbled
        .headers
        .insert("authorization", "TC3-HMAC-SHA256 nonsense".parse().unwrap());
    assert_eq!(code(&send(&sim, &garbled)), "AuthFailure.SignatureFailure");
    let stranger = request("AKIDstranger", &key, ROOM_INFO, &body, T, PLAIN);
    assert_eq!(code(&send(&sim, &stranger)), "AuthFailure.SecretIdNotFound");
    let other_headers = request(
        &id,
        &key,
        ROOM_INFO,
        &body,
        T,
        "content-type;host;x-tc-region",
    );
    assert_eq!(
        code(&send(&sim, &other_headers)),
        "AuthFailure.SignatureFailure"
    );
    let mut tampered = signed(&sim, ROOM_INFO, &body);
    tampered.body = bytes::Bytes::from(rooms(&sim, T - 7200, T).to_string());
    assert_eq!(code(&send(&sim, &tampered)), "AuthFailure.SignatureFailure");

    let mut get = signed(&sim, ROOM_INFO, &body);
    get.method = "GET".into();
    assert_eq!(code(&send(&sim, &get)), "UnsupportedProtocol");
    let unknown = signed(&sim, "DescribeCallDetail", &body);
    assert_eq!(code(&send(&sim, &unknown)), "InvalidAction");
    for (header, value, expected) in [
        ("x-tc-version", "2017-03-12", "NoSuchVersion"),
        ("x-tc-region", "eu-frankfurt", "UnsupportedRegion"),
    ] {
        let mut r = signed(&sim, ROOM_INFO, &body);
        r.headers.insert(header, value.parse().unwrap());
        assert_eq!(code(&send(&sim, &r)), expected);
    }

    sim.set_secret_key("rotated");
    let v = send(&sim, &request(&id, &key, ROOM_INFO, &body, T, PLAIN));
    assert_eq!(code(&v), "AuthFailure.SignatureFailure");
    assert!(!v.to_string().contains(&key) && !v.to_string().contains("rotated"));
}

#[test]
fn skew_over_five_minutes_is_signature_expire() {
    let sim = empty();
    let body = rooms(&sim, T - 3600, T);
    let at = |ts| {
        let v = send(
            &sim,
            &request(
                &sim.secret_id,
                &sim.secret_key(),
                ROOM_INFO,
                &body,
                ts,
                PLAIN,
            ),
        );
        code(&v).to_string()
    };
    assert_eq!(at(T - 300), "");
    assert_eq!(at(T + 300), "");
    assert_eq!(at(T - 301), "AuthFailure.SignatureExpire");
    assert_eq!(at(T + 301), "AuthFailure.SignatureExpire");
    sim.clock.set_skew(3600);
    assert_eq!(at(T), "AuthFailure.SignatureExpire");
}

#[test]
fn throttle_answers_request_limit_exceeded() {
    let sim = empty();
    let body = rooms(&sim, T - 3600, T);
    // The bucket starts full: 20 pass at once.
    for _ in 0..20 {
        assert_eq!(code(&send(&sim, &signed(&sim, ROOM_INFO, &body))), "");
    }
    // The 21st is refused unless the bucket refilled meanwhile (50 ms a token), so keep
    // asking quickly until one is refused.
    let mut sent = 20;
    let refused = (0..200).any(|_| {
        sent += 1;
        code(&send(&sim, &signed(&sim, ROOM_INFO, &body))) == "RequestLimitExceeded"
    });
    assert!(refused);
    assert_eq!(sim.requests(ROOM_INFO), sent);
    // Per action: DescribeUserInfo has its own bucket.
    let v = send(&sim, &signed(&sim, USER_INFO, &users(&sim, "x", T - 60, T)));
    assert_eq!(code(&v), "");
    assert_eq!(sim.requests(USER_INFO), 1);
}

#[test]
fn window_page_and_parameter_errors() {
    let sim = empty();
    let app = sim.sdk_app_id;
    let ask =
        |action: &str, body: Value| code(&send(&sim, &signed(&sim, action, &body))).to_string();
    let room = |start: i64, end: i64, size: i64| {
        ask(
            ROOM_INFO,
            json!({"SdkAppId": app, "StartTime": start, "EndTime": end, "PageSize": size}),
        )
    };
    assert_eq!(room(T - DAY, T, 100), "");
    assert_eq!(
        room(T - DAY - 1, T, 100),
        "InvalidParameter.QueryScaleOversize"
    );
    assert_eq!(
        room(T - 14 * DAY - 1, T - 14 * DAY, 100),
        "InvalidParameter.StartTsOversize"
    );
    assert_eq!(room(T, T - 1, 100), "InvalidParameter");
    assert_eq!(room(T - 60, T, 101), "InvalidParameter.PageSizeOversize");
    assert_eq!(room(T - 60, T, 0), "InvalidParameter.PageSize");
    let bad = [
        (
            json!({"StartTime": T - 60, "EndTime": T}),
            "MissingParameter.SdkAppId",
        ),
        (
            json!({"SdkAppId": app + 1, "StartTime": T - 60, "EndTime": T}),
            "InvalidParameter.SdkAppId",
        ),
        (
            json!({"SdkAppId": app.to_string(), "StartTime": T - 60, "EndTime": T}),
            "InvalidParameter",
        ),
        (
            json!({"SdkAppId": app, "EndTime": T}),
            "MissingParameter.StartTs",
        ),
        (
            json!({"SdkAppId": app, "StartTime": T - 60}),
            "MissingParameter.EndTs",
        ),
        (
            json!({"SdkAppId": app, "StartTime": T - 60, "EndTime": T, "PageNumber": -1}),
            "InvalidParameter.PageNumber",
        ),
        (
            json!({"SdkAppId": app, "StartTime": T - 60, "EndTime": T, "RoomId": 5}),
            "InvalidParameter",
        ),
    ];
    for (body, expected) in bad {
        assert_eq!(ask(ROOM_INFO, body.clone()), expected, "{body}");
    }
    let user = |start: i64, end: i64, size: i64| {
        ask(
            USER_INFO,
            json!({"SdkAppId": app, "CommId": "x", "StartTime": start, "EndTime": end, "PageSize": size}),
        )
    };
    assert_eq!(user(T - USER_SPAN, T, 100), "");
    assert_eq!(
        user(T - USER_SPAN - 1, T, 100),
        "InvalidParameter.QueryScaleOversize"
    );
    assert_eq!(
        user(T - 14 * DAY - 1, T - 14 * DAY, 100),
        "InvalidParameter.StartTsOversize"
    );
    assert_eq!(user(T - 60, T, 101), "InvalidParameter.PageSizeOversize");
    assert_eq!(
        ask(
            USER_INFO,
            json!({"SdkAppId": app, "StartTime": T - 60, "EndTime": T})
        ),
        "MissingParameter.CommId"
    );
    assert_eq!(
        ask(
            USER_INFO,
            json!({"SdkAppId": app, "CommId": "x", "StartTime": T - 60, "EndTime": T, "UserIds": [1]})
        ),
        "InvalidParameter"
    );
    let mut junk = signed(&sim, ROOM_INFO, &json!({}));
    junk.body = bytes::Bytes::from_static(b"[1,2]");
    assert_eq!(code(&send(&sim, &junk)), "AuthFailure.SignatureFailure");
    let not_object = request(
        &sim.secret_id,
        &sim.secret_key(),
        ROOM_INFO,
        &json!([1, 2]),
        T,
        PLAIN,
    );
    assert_eq!(
        code(&send(&sim, &not_object)),
        "InvalidParameter.BodyParamsError"
    );
}

#[test]
fn unknown_comm_id_lists_nobody() {
    let sim = empty();
    sim.add_call(
        "r",
        call(
            T - 60,
            T + 60,
            vec![session("a", T - 60, T + 60, Device::Web)],
        ),
    );
    let v = send(
        &sim,
        &signed(&sim, USER_INFO, &users(&sim, "1_r_1", T - 60, T)),
    );
    assert_eq!(
        (code(&v), &v["Total"], &v["UserList"]),
        ("", &json!(0), &json!([]))
    );
}

#[test]
fn user_info_pages_250_sessions_by_100() {
    let sim = empty();
    let sessions = (0..250)
        .map(|n| session(&format!("u{n:03}"), T - 3000 + n, T + 600, Device::Android))
        .collect();
    sim.add_call("big", call(T - 3600, T + 3600, sessions));
    let comm_id = format!("{}_big_{}", sim.sdk_app_id, T - 3600);
    let mut seen = Vec::new();
    for (page, len) in [(0, 100), (1, 100), (2, 50), (3, 0)] {
        let mut body = users(&sim, &comm_id, T - 3600, T);
        body["PageNumber"] = json!(page);
        let v = send(&sim, &signed(&sim, USER_INFO, &body));
        assert_eq!(v["Total"], json!(250), "{v}");
        let list = v["UserList"].as_array().unwrap();
        assert_eq!(list.len(), len);
        seen.extend(
            list.iter()
                .map(|u| u["UserId"].as_str().unwrap().to_string()),
        );
    }
    let expected: Vec<String> = (0..250).map(|n| format!("u{n:03}")).collect();
    assert_eq!(seen, expected, "by join time, no gaps, no repeats");
    // The default page size is 6.
    let mut body = users(&sim, &comm_id, T - 3600, T);
    body.as_object_mut().unwrap().remove("PageSize");
    let v = send(&sim, &signed(&sim, USER_INFO, &body));
    assert_eq!(v["UserList"].as_array().map(Vec::len), Some(6));
}

#[test]
fn open_sessions_leave_at_the_query_time() {
    let sim = empty();
    sim.add_call(
        "r",
        call(
            T - 1000,
            T + 1000,
            vec![
                session("a", T - 600, T + 600, Device::Other),
                session("b", T - 500, T - 100, Device::Ios),
                session("c", T + 10, T + 20, Device::Mac),
                session("d", T - 900, T - 800, Device::Web),
            ],
        ),
    );
    let comm_id = format!("{}_r_{}", sim.sdk_app_id, T - 1000);
    let list = |from: i64, to: i64, filter: Option<Value>| {
        let mut body = users(&sim, &comm_id, from, to);
        if let Some(f) = filter {
            body["UserIds"] = f;
        }
        let v = send(&sim, &signed(&sim, USER_INFO, &body));
        v["UserList"].clone()
    };
    // EndTime after now: evaluated at now. d left before StartTime; c has not joined.
    let now = list(T - 700, T + 3000, None);
    assert_eq!(
        now,
        json!([
            {"RoomStr": "r", "UserId": "a", "JoinTs": T - 600, "LeaveTs": T, "Finished": false,
             "DeviceType": "", "SdkVersion": "4.3.14", "ClientIp": client_ip("a")},
            {"RoomStr": "r", "UserId": "b", "JoinTs": T - 500, "LeaveTs": T - 100, "Finished": true,
             "DeviceType": "iOS", "SdkVersion": "4.3.14", "ClientIp": client_ip("b")},
        ])
    );
    // At EndTime T - 300 both are still in.
    let earlier = list(T - 700, T - 300, None);
    assert_eq!(earlier[1]["LeaveTs"], json!(T - 300));
    assert_eq!(earlier[1]["Finished"], json!(false));
    // A window that starts after now lists nobody, not even who is in now.
    assert_eq!(list(T + 5, T + 100, None), json!([]));
    let only_b = list(T - 700, T, Some(json!(["b", "zz"])));
    assert_eq!(only_b.as_array().map(Vec::len), Some(1));
    assert_eq!(only_b[0]["UserId"], json!("b"));
}

#[test]
fn room_info_lists_calls_by_creation_time() {
    let sim = empty();
    let app = sim.sdk_app_id;
    sim.add_call("r2", call(T + 600, T + 1200, vec![]));
    sim.add_call(
        "r2",
        call(T - 600, T + 60, vec![session("y", T - 500, T, Device::Web)]),
    );
    sim.add_call(
        "r1",
        call(
            T - 600,
            T + 600,
            vec![
                session("late", T - 100, T, Device::Web),
                session("early", T - 590, T, Device::Web),
            ],
        ),
    );
    sim.add_call("r1", call(T - 7200, T - 3600, vec![]));
    assert_eq!(sim.room_ids(), ["r2", "r1"]);
    let v = send(
        &sim,
        &signed(&sim, ROOM_INFO, &rooms(&sim, T - DAY + 3600, T + 3600)),
    );
    assert_eq!(v["Total"], json!(3), "{v}");
    assert_eq!(
        v["RoomList"],
        json!([
            {"CommId": format!("{app}_r1_{}", T - 7200), "RoomString": "r1", "CreateTime": T - 7200,
             "DestroyTime": T - 3600, "IsFinished": true, "UserId": ""},
            {"CommId": format!("{app}_r1_{}", T - 600), "RoomString": "r1", "CreateTime": T - 600,
             "DestroyTime": 0, "IsFinished": false, "UserId": "early"},
            {"CommId": format!("{app}_r2_{}", T - 600), "RoomString": "r2", "CreateTime": T - 600,
             "DestroyTime": 0, "IsFinished": false, "UserId": "y"},
        ])
    );
    let mut body = rooms(&sim, T - DAY, T);
    body["PageSize"] = json!(1);
    body["PageNumber"] = json!(2);
    let v = send(&sim, &signed(&sim, ROOM_INFO, &body));
    assert_eq!(
        (&v["Total"], &v["RoomList"][0]["RoomString"]),
        (&json!(3), &json!("r2"))
    );
    body["RoomId"] = json!("r2");
    body["PageNumber"] = json!(0);
    let v = send(&sim, &signed(&sim, ROOM_INFO, &body));
    assert_eq!(v["Total"], json!(1));
    // Created before StartTime: not listed, though still running.
    let v = send(&sim, &signed(&sim, ROOM_INFO, &rooms(&sim, T - 300, T)));
    assert_eq!(v["Total"], json!(0));
    // Ending a room: finished now.
    assert!(sim.end_room("r2"));
    assert!(!sim.end_room("r2"));
    let v = send(&sim, &signed(&sim, ROOM_INFO, &rooms(&sim, T - DAY, T)));
    assert_eq!(v["RoomList"][2]["DestroyTime"], json!(T));
    assert_eq!(v["RoomList"][2]["IsFinished"], json!(true));
}

#[test]
fn faults_answer_as_injected() {
    let sim = empty();
    let body = rooms(&sim, T - 60, T);
    sim.faults.set(
        ROOM_INFO,
        Fault {
            code: Some("InternalError.DBError".into()),
            ..Fault::default()
        },
    );
    assert_eq!(
        code(&send(&sim, &signed(&sim, ROOM_INFO, &body))),
        "InternalError.DBError"
    );
    // The signature is checked before any fault.
    let stranger = request("AKIDx", "k", ROOM_INFO, &body, T, PLAIN);
    assert_eq!(code(&send(&sim, &stranger)), "AuthFailure.SecretIdNotFound");
    // Another action is untouched.
    assert_eq!(
        code(&send(
            &sim,
            &signed(&sim, USER_INFO, &users(&sim, "x", T - 60, T))
        )),
        ""
    );
    sim.faults.set(
        ROOM_INFO,
        Fault {
            http_status: Some(502),
            ..Fault::default()
        },
    );
    let r = sim.respond(&signed(&sim, ROOM_INFO, &body));
    assert_eq!((r.status, r.content_type), (502, "text/html"));
    sim.faults.set(
        ROOM_INFO,
        Fault {
            malformed: true,
            ..Fault::default()
        },
    );
    let r = sim.respond(&signed(&sim, ROOM_INFO, &body));
    assert!(r.status == 200 && serde_json::from_slice::<Value>(&r.body).is_err());
    // Refused requests are answered whole: the fault is past the gateway.
    let stranger = request("AKIDx", "k", ROOM_INFO, &body, T, PLAIN);
    assert_eq!(code(&send(&sim, &stranger)), "AuthFailure.SecretIdNotFound");
    sim.faults.set(
        ROOM_INFO,
        Fault {
            reset: true,
            ..Fault::default()
        },
    );
    assert_eq!(sim.respond(&signed(&sim, ROOM_INFO, &body)).status, 0);
    sim.faults.clear();
    assert_eq!(code(&send(&sim, &signed(&sim, ROOM_INFO, &body))), "");
    assert_eq!(sim.requests(ROOM_INFO), 7);
}

#[test]
fn answers_that_disagree_with_themselves_as_injected() {
    let sim = empty();
    let sessions = (0..150)
        .map(|n| session(&format!("u{n:03}"), T - 3000 + n, T + 600, Device::Ios))
        .collect();
    sim.add_call("big", call(T - 3600, T + 3600, sessions));
    let comm_id = format!("{}_big_{}", sim.sdk_app_id, T - 3600);
    let page = |n: i64| {
        let mut body = users(&sim, &comm_id, T - 3600, T);
        body["PageNumber"] = json!(n);
        send(&sim, &signed(&sim, USER_INFO, &body))
    };
    let ids = |v: &Value| -> Vec<String> {
        v["UserList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["UserId"].as_str().unwrap().to_string())
            .collect()
    };
    let set = |f: Fault| sim.faults.set(USER_INFO, f);
    set(Fault {
        total_larger: true,
        ..Fault::default()
    });
    assert_eq!(page(0)["Total"], json!(153));
    assert_eq!(ids(&page(1)).len(), 50);
    set(Fault {
        total_smaller: true,
        ..Fault::default()
    });
    assert_eq!(page(1)["Total"], json!(149));
    set(Fault {
        duplicate_rows: true,
        ..Fault::default()
    });
    // The first row twice on the first page, again on each later one, alone past the end.
    let first = ids(&page(0));
    assert_eq!(
        (first.len(), first[0].as_str(), first[100].as_str()),
        (101, "u000", "u000")
    );
    let second = ids(&page(1));
    assert_eq!(
        (second.len(), second[0].as_str(), second[50].as_str()),
        (51, "u100", "u000")
    );
    assert_eq!(ids(&page(2)), vec!["u000".to_string()]);
    assert_eq!(page(0)["Total"], json!(150));
    set(Fault {
        absent_list: true,
        ..Fault::default()
    });
    let v = page(0);
    assert_eq!(v["Total"], json!(150));
    assert!(v.get("UserList").is_none(), "{v}");
    sim.faults.clear();
    assert_eq!(ids(&page(0)).len(), 100);
}

#[test]
fn truth_counts_a_rejoin_once_at_a_time() {
    let sim = empty();
    let d = T - 5000;
    sim.add_call(
        "a",
        call(
            d,
            d + 1000,
            vec![
                session("u1", d, d + 100, Device::Ios),
                session("u1", d + 50, d + 150, Device::Ios),
                session("u2", d + 10, d + 60, Device::Web),
                session("u3", d + 300, d + 1000, Device::Web),
            ],
        ),
    );
    let t = sim.truth(d, d + 120);
    let room = RoomTruth {
        active: true,
        users: 1,
        peak: 2,
        accumulated: 2,
    };
    assert_eq!(t.rooms["a"], room);
    assert_eq!((t.users, t.peak, t.accumulated), (1, 2, 2));
    assert_eq!(t.devices[&Device::Ios], 1);
    assert_eq!(t.devices.len(), Device::ALL.len());
    assert_eq!(t.devices.values().sum::<u64>(), 1);
    // After the call: inactive, nobody in, the day's figures kept.
    let t = sim.truth(d, d + 2000);
    let room = RoomTruth {
        active: false,
        users: 0,
        peak: 2,
        accumulated: 3,
    };
    assert_eq!(t.rooms["a"], room);
}

#[test]
fn truth_counts_a_user_in_two_rooms_once_for_the_target() {
    let sim = empty();
    let d = T - 5000;
    sim.add_call(
        "a",
        call(
            d,
            d + 1000,
            vec![
                session("u1", d + 10, d + 500, Device::Android),
                session("u2", d + 20, d + 500, Device::Android),
            ],
        ),
    );
    sim.add_call(
        "b",
        call(
            d,
            d + 1000,
            vec![
                session("u1", d + 30, d + 500, Device::Mac),
                session("u3", d + 600, d + 700, Device::Mac),
            ],
        ),
    );
    let t = sim.truth(d, d + 400);
    assert_eq!((t.rooms["a"].peak, t.rooms["b"].peak), (2, 1));
    assert_eq!((t.users, t.peak, t.accumulated), (2, 2, 2));
    // Per device: u1 is on Android in one room and on a Mac in the other.
    assert_eq!(
        (t.devices[&Device::Android], t.devices[&Device::Mac]),
        (2, 1)
    );
    let t = sim.truth(d, d + 650);
    assert_eq!((t.users, t.peak, t.accumulated), (1, 2, 3));
    assert_eq!(
        t.rooms["b"],
        RoomTruth {
            active: true,
            users: 1,
            peak: 1,
            accumulated: 2
        }
    );
}

#[test]
fn truth_counts_from_day_start() {
    let sim = empty();
    let d = T - 5000;
    // Starts before midnight and runs past it.
    sim.add_call(
        "night",
        call(
            d - 3600,
            d + 3600,
            vec![
                session("owl", d - 3000, d + 100, Device::Linux),
                session("gone", d - 3000, d, Device::Linux),
                session("lark", d - 2000, d - 1000, Device::Linux),
            ],
        ),
    );
    // Ended before midnight: not in the day at all.
    sim.add_call(
        "yesterday",
        call(
            d - 7200,
            d - 3600,
            vec![session("x", d - 7000, d - 4000, Device::Web)],
        ),
    );
    // Opened and closed between two polls.
    sim.add_call(
        "blink",
        call(
            d + 200,
            d + 260,
            vec![session("quick", d + 210, d + 250, Device::Web)],
        ),
    );
    let t = sim.truth(d, d + 50);
    assert_eq!(t.rooms.keys().collect::<Vec<_>>(), ["night"]);
    assert_eq!(
        t.rooms["night"],
        RoomTruth {
            active: true,
            users: 1,
            peak: 1,
            accumulated: 1
        }
    );
    let t = sim.truth(d, d + 300);
    assert_eq!(t.rooms.keys().collect::<Vec<_>>(), ["blink", "night"]);
    assert_eq!(
        t.rooms["blink"],
        RoomTruth {
            active: false,
            users: 0,
            peak: 1,
            accumulated: 1
        }
    );
    assert_eq!((t.users, t.peak, t.accumulated), (0, 1, 2));
}

#[test]
fn generated_scenario_agrees_with_its_truth() {
    let sim = TrtcSim::new(7, 12);
    let now = sim.clock.now();
    sim.clock.freeze(now);
    let v = send(
        &sim,
        &signed(&sim, ROOM_INFO, &rooms(&sim, now - 6 * 3600, now)),
    );
    let list = v["RoomList"].as_array().unwrap().clone();
    assert!(!list.is_empty() && list.len() < 100, "{v}");
    let mut present = HashSet::new();
    for entry in list.iter().filter(|e| e["IsFinished"] == json!(false)) {
        let comm_id = entry["CommId"].as_str().unwrap();
        let v = send(
            &sim,
            &signed(&sim, USER_INFO, &users(&sim, comm_id, now - 3600, now)),
        );
        for u in v["UserList"].as_array().unwrap() {
            if u["Finished"] == json!(false) {
                assert_eq!(u["LeaveTs"], json!(now));
                present.insert(u["UserId"].as_str().unwrap().to_string());
            }
        }
    }
    let truth = sim.truth(now - 6 * 3600, now);
    assert!(truth.users > 0);
    assert_eq!(present.len() as u64, truth.users);
    let active = truth.rooms.values().filter(|r| r.active).count();
    assert_eq!(
        active,
        list.iter()
            .filter(|e| e["IsFinished"] == json!(false))
            .count()
    );
}

#[test]
fn demo_target_and_describe() {
    let sim = TrtcSim::new(3, 2);
    assert!((1_400_000_000..1_500_000_000).contains(&sim.sdk_app_id));
    assert!(sim.secret_id.starts_with("AKID") && sim.secret_id.len() == 36);
    assert_eq!(sim.secret_key().len(), 32);
    let t = sim.demo_target("http://127.0.0.1:9");
    let expected: serde_yaml::Value = serde_yaml::from_str(&format!(
        "name: trtc-demo\nvendor: tencent_trtc\ninterval: 10s\nendpoint: \"http://127.0.0.1:9\"\n\
         sdk_app_id: {}\nregion: ap-guangzhou\ncredentials:\n  secret_id: \"{}\"\n  \
         secret_key: \"{}\"\ncapacity: {{ default: 30 }}\n",
        sim.sdk_app_id,
        sim.secret_id,
        sim.secret_key()
    ))
    .unwrap();
    assert_eq!(t, expected);
    let d = sim.describe();
    assert!(!d.contains('\n'));
    assert_eq!(
        d,
        format!(
            "sdk_app_id={} secret_id={} secret_key={}",
            sim.sdk_app_id,
            sim.secret_id,
            sim.secret_key()
        )
    );
    assert_eq!(sim.vendor(), "tencent_trtc");
    assert!(sim.as_any().downcast_ref::<TrtcSim>().is_some());
}

#[test]
fn truth_figures_match_a_naive_count() {
    // The naive definition: distinct users present at each clamped join time.
    let sim = TrtcSim::new(11, 30);
    let scenario = sim.lock().clone();
    let now = sim.clock.now();
    for (day_start, at) in [(now - 6 * 3600, now), (now - 3600, now + 9 * 3600)] {
        let sessions: Vec<&Session> = scenario
            .rooms
            .iter()
            .flat_map(|r| r.calls.iter().flat_map(|c| &c.sessions))
            .filter(|s| s.join <= at && s.leave > day_start)
            .collect();
        let distinct = |t: i64| {
            sessions
                .iter()
                .filter(|s| s.present(t))
                .map(|s| s.user.as_str())
                .collect::<HashSet<_>>()
                .len() as u64
        };
        let peak = sessions
            .iter()
            .map(|s| distinct(s.join.max(day_start)))
            .max()
            .unwrap_or(0);
        let all = sessions
            .iter()
            .map(|s| s.user.as_str())
            .collect::<HashSet<_>>()
            .len() as u64;
        assert!(peak > 0);
        assert_eq!(figures(&sessions, day_start, at), (distinct(at), peak, all));
    }
}

#[tokio::test]
async fn answers_over_loopback() {
    let sim = std::sync::Arc::new(TrtcSim::new(5, 4));
    sim.faults.set(
        ROOM_INFO,
        Fault {
            latency: std::time::Duration::from_millis(5),
            ..Fault::default()
        },
    );
    let server = super::super::SimServer::start(sim.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let now = sim.clock.now();
    let body = rooms(&sim, now - 3600, now).to_string();
    let host = server.addr.to_string();
    let sig = signature(&sim.secret_key(), &host, ROOM_INFO, &body, now, WITH_ACTION);
    let date = chrono::DateTime::from_timestamp(now, 0)
        .unwrap()
        .format("%Y-%m-%d");
    let auth = format!(
        "TC3-HMAC-SHA256 Credential={}/{date}/trtc/tc3_request, SignedHeaders={WITH_ACTION}, \
         Signature={sig}",
        sim.secret_id
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/", server.endpoint))
        .header("Content-Type", "application/json")
        .header("X-TC-Action", ROOM_INFO)
        .header("X-TC-Timestamp", now.to_string())
        .header("X-TC-Version", VERSION)
        .header("X-TC-Region", REGION)
        .header("Authorization", auth)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert!(v["Response"]["Error"].is_null(), "{v}");
    assert!(v["Response"]["Total"].is_u64(), "{v}");
    assert_eq!(sim.requests(ROOM_INFO), 1);
}

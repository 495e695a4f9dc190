//! LiveKit: tokens made by LiveKit's official Python SDK (`livekit-api`, its `AccessToken`)
//! against the simulator over real HTTP on loopback: the simulator's own token check accepts
//! them with the grant each call needs, and refuses one signed with another secret or carrying
//! another call's grant. So the simulator checks what LiveKit's SDKs send, not only what our
//! client sends.
//!
//! Needs `python3` with `livekit-api` (`pip install livekit-api`); `RTC_PYTHON` names another
//! interpreter (CI's virtual environment). Without them the test says so and passes; with
//! `RTC_PYTHON` set, a missing package fails it (CI must run it).

use std::process::Command;
use std::sync::Arc;

use rtc_exporter::sim::livekit::{LkSim, PREFIX};
use rtc_exporter::sim::SimServer;
use serde_json::{json, Value};

/// A token from the official SDK: `AccessToken(key, secret).with_grants(VideoGrants(GRANTS))`.
fn sdk_token(python: &str, key: &str, secret: &str, grants: &str) -> String {
    let script = format!(
        "from livekit import api\nprint(api.AccessToken({key:?}, {secret:?}).with_grants(api.VideoGrants({grants})).to_jwt())"
    );
    let out = Command::new(python)
        .args(["-W", "ignore", "-c", &script])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "the SDK made no token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn post(endpoint: &str, method: &str, token: &str, body: Value) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("{endpoint}{PREFIX}{method}"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("the simulator answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn tokens_of_the_official_python_sdk_are_accepted_and_wrong_ones_refused() {
    let Some((python, version)) = common::python_with(
        "livekit-api",
        "import livekit.api, importlib.metadata as m; print(m.version('livekit-api'))",
    ) else {
        return;
    };
    eprintln!("livekit-api {version} ({python})");

    let server = SimServer::start(Arc::new(LkSim::new(11, 8)), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sim = server.get::<LkSim>().expect("the LiveKit simulator");
    let (key, secret) = (sim.api_key.clone(), sim.api_secret());
    let endpoint = &server.endpoint;

    let list = sdk_token(&python, &key, &secret, "room_list=True");
    let (status, body) = post(endpoint, "ListRooms", &list, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let rooms: Value = serde_json::from_str(&body).unwrap();
    let room = rooms["rooms"][0]["name"]
        .as_str()
        .expect("a room listed")
        .to_string();

    let admin = sdk_token(
        &python,
        &key,
        &secret,
        &format!("room_admin=True, room={room:?}"),
    );
    let (status, body) = post(
        endpoint,
        "ListParticipants",
        &admin,
        json!({ "room": room }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"participants\""), "{body}");

    // Signed with another secret: the server's plain-text 401.
    let forged = sdk_token(
        &python,
        &key,
        "not-the-secret-of-this-key",
        "room_list=True",
    );
    let (status, body) = post(endpoint, "ListRooms", &forged, json!({})).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("signature"), "{body}");
    // Another key: refused too.
    let stranger = sdk_token(&python, "APIsomeoneelse", &secret, "room_list=True");
    assert_eq!(
        post(endpoint, "ListRooms", &stranger, json!({})).await.0,
        401
    );
    // A grant for another call: Twirp unauthenticated.
    let (status, body) = post(endpoint, "ListParticipants", &list, json!({ "room": room })).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"unauthenticated\""), "{body}");
    let (status, _) = post(
        endpoint,
        "ListParticipants",
        &admin,
        json!({ "room": format!("{room}-other") }),
    )
    .await;
    assert_eq!(status, 401, "a grant for one room reads no other");
}

mod common;

use common::{start, value, wait_polls};

const T: &str = "lk";

fn lk(s: &SimServer) -> &LkSim {
    s.get::<LkSim>().expect("the LiveKit simulator")
}

fn config(s: &SimServer) -> String {
    let sim = lk(s);
    // The endpoint as LiveKit's SDKs take it: ws://, read as http://.
    format!(
        "global:\n  interval: 1s\ntargets:\n  - name: {T}\n    vendor: livekit\n    endpoint: {}\n    credentials:\n      api_key: {}\n      api_secret: \"{}\"\n",
        s.endpoint.replacen("http://", "ws://", 1),
        sim.api_key,
        sim.api_secret()
    )
}

fn room_value(text: &str, metric: &str, room: &str) -> Option<f64> {
    value(text, metric, &[("target", T), ("room", room)])
}

fn requests(text: &str, api: &str) -> f64 {
    value(
        text,
        "rtc_exporter_vendor_requests_total",
        &[("target", T), ("api", api), ("outcome", "ok")],
    )
    .unwrap_or(0.0)
}

fn successes(text: &str) -> f64 {
    value(
        text,
        "rtc_exporter_polls_total",
        &[("target", T), ("result", "success")],
    )
    .unwrap_or(0.0)
}

/// A poll is `ListRooms` and one `ListParticipants` per room listed; the rooms' users are the
/// simulator's truth; a class that ends shows its room with nobody in while LiveKit keeps it,
/// then ended, its peak kept.
#[tokio::test]
async fn a_poll_asks_once_per_room_and_a_class_that_ends_keeps_its_peak() {
    let at = chrono::Utc::now().timestamp();
    let sim = LkSim::new(21, 10);
    sim.clock.freeze(at);
    let s = SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let exporter = start(&config(&s)).await;
    let base = exporter.url();
    let text = wait_polls(&base, T, "success", 2.0).await;

    let listed = lk(&s).listed_rooms(at).len() as f64;
    assert!(listed > 0.0, "rooms listed");
    // Whole polls only (a poll in flight at the scrape may have counted part of its requests).
    let (lists, parts) = (
        requests(&text, "ListRooms"),
        requests(&text, "ListParticipants"),
    );
    assert!(
        parts >= listed * (lists - 1.0) && parts <= listed * lists,
        "{parts} ListParticipants for {lists} ListRooms of {listed} rooms"
    );
    for t in lk(&s).truth(at).into_iter().filter(|t| t.active) {
        assert_eq!(
            room_value(&text, "rtc_room_users", &t.room),
            Some(t.users as f64),
            "{}",
            t.room
        );
        assert_eq!(
            room_value(&text, "rtc_room_invisible_users", &t.room),
            Some(t.hidden as f64),
            "{}",
            t.room
        );
    }
    assert!(
        common::all(&text, "rtc_device_users").is_empty(),
        "LiveKit tells no device"
    );

    let room = lk(&s)
        .truth(at)
        .into_iter()
        .find(|t| t.active && t.users > 0)
        .expect("a room with people in it");
    let peak = room_value(&text, "rtc_room_peak_users", &room.room).expect("its peak");
    assert!(lk(&s).end_room(&room.room));
    // Within LiveKit's departure timeout the room is still listed, with nobody in.
    lk(&s).clock.freeze(at + 5);
    let n = successes(&wait_polls(&base, T, "success", 0.0).await);
    let text = wait_polls(&base, T, "success", n + 2.0).await;
    assert_eq!(room_value(&text, "rtc_room_users", &room.room), Some(0.0));
    assert_eq!(room_value(&text, "rtc_room_active", &room.room), Some(1.0));
    // Then no longer listed: ended, the day's figures kept.
    lk(&s).clock.freeze(at + 60);
    let n = successes(&text);
    let text = wait_polls(&base, T, "success", n + 2.0).await;
    assert_eq!(room_value(&text, "rtc_room_active", &room.room), Some(0.0));
    assert_eq!(room_value(&text, "rtc_room_users", &room.room), Some(0.0));
    assert_eq!(
        room_value(&text, "rtc_room_peak_users", &room.room),
        Some(peak)
    );
    assert!(room_value(&text, "rtc_room_accumulated_users", &room.room) >= Some(peak));

    // Another secret at the server: every token refused, the target down, the code counted.
    lk(&s).set_api_secret("rotated-secret");
    let failures = wait_polls(&base, T, "failure", 2.0).await;
    assert_eq!(
        value(&failures, "rtc_exporter_target_up", &[("target", T)]),
        Some(0.0)
    );
    assert!(
        value(
            &failures,
            "rtc_exporter_vendor_errors_total",
            &[
                ("target", T),
                ("api", "ListRooms"),
                ("code", "unauthenticated")
            ]
        )
        .is_some_and(|n| n >= 2.0),
        "unauthenticated counted"
    );
    exporter.stop().await.unwrap();
}

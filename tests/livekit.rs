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

fn python() -> (String, bool) {
    match std::env::var("RTC_PYTHON") {
        Ok(p) if !p.is_empty() => (p, true),
        _ => ("python3".to_string(), false),
    }
}

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
    let (python, required) = python();
    let probe = Command::new(&python)
        .args([
            "-c",
            "import livekit.api, importlib.metadata as m; print(m.version('livekit-api'))",
        ])
        .output();
    let version = match probe {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            assert!(!required, "RTC_PYTHON={python} has no livekit-api: {why}");
            eprintln!(
                "skipped: {python} with the livekit-api package is needed (pip install livekit-api): {why}"
            );
            return;
        }
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

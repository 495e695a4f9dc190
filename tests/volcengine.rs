//! The exporter against the simulated Volcengine RTC API, over real HTTP on loopback.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{scrape, start, value, wait_polls};
use rtc_exporter::model::Device;
use rtc_exporter::sim::volcengine_rtc::VolcSim;
use rtc_exporter::sim::{Fault, SimServer};

const T: &str = "volc";

async fn sim(rooms: usize, seed: u64) -> SimServer {
    let sim = VolcSim::new(seed, rooms);
    // A frozen scenario: the truth cannot move between a poll and the check.
    sim.clock.freeze(sim.t0());
    SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn volc(s: &SimServer) -> &VolcSim {
    s.get::<VolcSim>().unwrap()
}

/// A config with one target; `keys` are the vendor keys after the credentials.
fn config(s: &SimServer, secret: &str, interval: &str, keys: &str) -> String {
    let v = volc(s);
    format!(
        "global:\n  interval: {interval}\n  poll_timeout: 20s\n  request_timeout: 5s\ntargets:\n  - name: {T}\n    vendor: volcengine_rtc\n    endpoint: {}\n    app_id: \"{}\"\n    credentials:\n      access_key_id: {}\n      secret_access_key: \"{secret}\"\n{keys}",
        s.endpoint, v.app_id, v.access_key_id
    )
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

fn room_value(text: &str, metric: &str, room: &str) -> Option<f64> {
    value(text, metric, &[("target", T), ("room", room)])
}

/// Where the scrape differs from the simulator's truth, or `None` when it does not.
fn mismatch(text: &str, v: &VolcSim, configured: &[String], watched: &[String]) -> Option<String> {
    let mut bad = Vec::new();
    if value(text, "rtc_exporter_target_up", &[("target", T)]) != Some(1.0) {
        bad.push("target not up".to_string());
    }
    for room in v.room_ids() {
        let t = v.room_truth(&room);
        let got = (
            room_value(text, "rtc_room_active", &room),
            room_value(text, "rtc_room_users", &room),
            room_value(text, "rtc_room_invisible_users", &room),
        );
        let want = if t.active {
            // Configured, or found by discovery (the long-running rooms too).
            (Some(1.0), Some(t.users as f64), Some(t.invisible as f64))
        } else if configured.contains(&room) {
            (Some(0.0), Some(0.0), Some(0.0))
        } else {
            // Finished before the exporter started and not configured: no series.
            (None, None, None)
        };
        if got != want {
            bad.push(format!(
                "{room}: (active, users, invisible) {got:?}, truth {want:?}"
            ));
        }
    }
    let devices = v.device_truth(&v.room_ids(), watched);
    for d in Device::ALL {
        let got = value(
            text,
            "rtc_device_users",
            &[("target", T), ("device", d.label())],
        );
        if got != Some(devices[&d] as f64) {
            bad.push(format!(
                "device {}: {got:?}, truth {}",
                d.label(),
                devices[&d]
            ));
        }
    }
    for user in watched {
        let got = value(text, "rtc_user_online", &[("target", T), ("user", user)]);
        let want = if v.online(user) { 1.0 } else { 0.0 };
        if got != Some(want) {
            bad.push(format!("user {user}: online {got:?}, truth {want}"));
        }
    }
    (!bad.is_empty()).then(|| bad.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_invisible_users_devices_and_watched_users_equal_the_truth() {
    let s = sim(12, 21).await;
    let v = volc(&s);
    let configured = v.generated_rooms();
    let watched = v.watch_candidates();
    assert!(
        v.room_ids()
            .iter()
            .map(|r| v.room_truth(r).bots)
            .sum::<u64>()
            > 0,
        "bots to leave out"
    );
    assert_eq!(
        v.long_running_rooms().len(),
        3,
        "rooms only discovery finds"
    );
    let keys = format!(
        "    rooms: {}\n    discover_rooms: true\n    devices: true\n    watch_users: {}\n",
        list(&configured),
        list(&watched)
    );
    let exporter = start(&config(&s, v.secret_access_key(), "2s", &keys)).await;
    let base = exporter.url();
    // Devices need every active room refreshed once at 1 QPS (about 12 s here).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let text = scrape(&base).await;
        match mismatch(&text, v, &configured, &watched) {
            None => break,
            Some(m) if tokio::time::Instant::now() > deadline => {
                panic!("the exporter does not match the simulator:\n{m}")
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let text = scrape(&base).await;
    // Peak and accumulated are observed lower bounds: at least what is there now.
    for room in v.long_running_rooms() {
        let t = v.room_truth(&room);
        assert!(room_value(&text, "rtc_room_peak_users", &room) >= Some(t.users as f64));
        assert!(room_value(&text, "rtc_room_accumulated_users", &room) >= Some(t.users as f64));
    }
    assert_eq!(value(&text, "rtc_target_info", &[("target", T)]), Some(1.0));
    assert!(text.contains("region=\"cn-north-1\""));
    assert_eq!(v.refused(), 0);
    exporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_rooms_with_devices_never_get_a_throttle_answer() {
    let s = sim(60, 22).await;
    let v = volc(&s);
    // 250 watched ids: three QueryOnlineStatus batches a poll.
    let mut watched = v.watch_candidates();
    watched.extend((0..243).map(|n| (70_000_000 + n).to_string()));
    let keys = format!(
        "    rooms: {}\n    discover_rooms: true\n    devices: true\n    watch_users: {}\n",
        list(&v.generated_rooms()),
        list(&watched)
    );
    // About 63 rooms at 40 QPS: 1.6 s a poll.
    let exporter = start(&config(&s, v.secret_access_key(), "2500ms", &keys)).await;
    let base = exporter.url();
    let text = wait_polls(&base, T, "success", 4.0).await;
    assert_eq!(v.refused(), 0, "the simulator refused requests");
    let throttled = common::all(&text, "rtc_exporter_vendor_requests_total")
        .iter()
        .filter(|s| s.label("outcome") == Some("throttled"))
        .map(|s| s.value)
        .sum::<f64>();
    assert_eq!(throttled, 0.0);
    let rooms = value(
        &text,
        "rtc_exporter_vendor_requests_total",
        &[
            ("target", T),
            ("api", "GetRoomOnlineUsers"),
            ("outcome", "ok"),
        ],
    )
    .unwrap_or(0.0);
    assert!(rooms >= 4.0 * 60.0, "{rooms} room requests");
    exporter.stop().await.unwrap();
    assert_eq!(v.refused(), 0);
}

/// Starts a one-room target, waits for a failed poll, returns the scrape.
async fn failing(s: &SimServer, secret: &str) -> String {
    let v = volc(s);
    let room = v.generated_rooms().remove(0);
    let exporter = start(&config(s, secret, "1s", &format!("    rooms: [{room}]\n"))).await;
    let text = wait_polls(&exporter.url(), T, "failure", 1.0).await;
    exporter.stop().await.unwrap();
    text
}

fn errors(text: &str, code: &str) -> f64 {
    value(
        text,
        "rtc_exporter_vendor_errors_total",
        &[("target", T), ("api", "GetRoomOnlineUsers"), ("code", code)],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_secret_is_signature_does_not_match_and_the_target_is_down() {
    let s = sim(3, 23).await;
    let text = failing(&s, "not-the-secret").await;
    assert!(errors(&text, "SignatureDoesNotMatch") >= 1.0, "{text}");
    assert_eq!(
        value(&text, "rtc_exporter_target_up", &[("target", T)]),
        Some(0.0)
    );
    assert!(!text.contains("not-the-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_vendor_clock_is_invalid_timestamp() {
    let s = sim(3, 24).await;
    volc(&s).clock.set_skew(1000);
    let text = failing(&s, volc(&s).secret_access_key()).await;
    assert!(errors(&text, "InvalidTimestamp") >= 1.0, "{text}");
    assert_eq!(
        value(&text, "rtc_exporter_target_up", &[("target", T)]),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_answer_is_counted_as_throttled() {
    let s = sim(3, 25).await;
    let v = volc(&s);
    v.faults.set(
        "GetRoomOnlineUsers",
        Fault {
            code: Some("FlowLimitExceeded.QPSOverLimit".into()),
            ..Fault::default()
        },
    );
    let text = failing(&s, v.secret_access_key()).await;
    assert!(errors(&text, "FlowLimitExceeded") >= 1.0, "{text}");
    let throttled = value(
        &text,
        "rtc_exporter_vendor_requests_total",
        &[
            ("target", T),
            ("api", "GetRoomOnlineUsers"),
            ("outcome", "throttled"),
        ],
    );
    assert!(throttled >= Some(1.0), "{throttled:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_rooms_than_one_poll_can_ask_for_are_all_covered_over_several_polls() {
    // 80 rooms at 40 QPS need 2 s; a poll may take 0.6 s, so each covers about a quarter. A
    // room a poll does not reach counts as failing: stale_after above the polls a round takes
    // keeps every room's series between its reads.
    let s = sim(80, 23).await;
    let v = volc(&s);
    let configured = v.generated_rooms();
    assert_eq!(configured.len(), 80);
    let text = format!(
        "global:\n  interval: 1s\n  poll_timeout: 600ms\n  request_timeout: 5s\n  stale_after: 10\ntargets:\n  - name: {T}\n    vendor: volcengine_rtc\n    endpoint: {}\n    app_id: \"{}\"\n    credentials:\n      access_key_id: {}\n      secret_access_key: \"{}\"\n    rooms: {}\n",
        s.endpoint,
        v.app_id,
        v.access_key_id,
        v.secret_access_key(),
        list(&configured)
    );
    let exporter = start(&text).await;
    let base = exporter.url();
    let first = common::wait_polls(&base, T, "success", 1.0).await;
    let shown = |text: &str| common::all(text, "rtc_room_users").len();
    assert!(
        shown(&first) < 80,
        "one poll cut short covers only part of the rooms ({} shown)",
        shown(&first)
    );
    // A poll cut short answered for part of the rooms: up, not backed off; the rest keep
    // their last values (here: none yet, never a 0).
    assert_eq!(
        value(&first, "rtc_exporter_target_up", &[("target", T)]),
        Some(1.0),
        "a poll cut short answered"
    );
    assert_eq!(
        value(
            &first,
            "rtc_exporter_target_consecutive_failures",
            &[("target", T)]
        ),
        Some(0.0)
    );
    // Round robin: within a few polls every room has its series, with the truth's values.
    let text = common::wait_for("every room covered", Duration::from_secs(30), || async {
        let text = scrape(&base).await;
        (shown(&text) == 80).then_some(text)
    })
    .await;
    for room in &configured {
        let t = v.room_truth(room);
        // Without `devices: true` bots cannot be told apart and count as users.
        assert_eq!(
            room_value(&text, "rtc_room_users", room),
            Some((t.users + t.bots) as f64),
            "{room}"
        );
    }
    assert_eq!(v.refused(), 0, "never over the vendor's QPS");
    exporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_throttle_account_flow_limit_exceeded_pauses_the_account() {
    let s = sim(3, 26).await;
    let v = volc(&s);
    v.faults.set(
        "GetRoomOnlineUsers",
        Fault {
            code: Some("AccountFlowLimitExceeded".into()),
            ..Fault::default()
        },
    );
    let text = failing(&s, v.secret_access_key()).await;
    // Counted as `other` before, never throttled.
    assert!(errors(&text, "FlowLimitExceeded") >= 1.0, "{text}");
    assert_eq!(errors(&text, "other"), 0.0, "{text}");
    let throttled = value(
        &text,
        "rtc_exporter_vendor_requests_total",
        &[
            ("target", T),
            ("api", "GetRoomOnlineUsers"),
            ("outcome", "throttled"),
        ],
    );
    assert!(throttled >= Some(1.0), "{throttled:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_never_measured_are_absent_not_zero() {
    // Every Property=true answer unreadable: the rooms are read, the devices never are.
    let s = sim(4, 27).await;
    let v = volc(&s);
    v.faults.set(
        rtc_exporter::sim::volcengine_rtc::GET_ROOM_PROPERTY,
        Fault {
            malformed: true,
            ..Fault::default()
        },
    );
    let configured = v.generated_rooms();
    let people: u64 = configured
        .iter()
        .map(|r| v.room_truth(r))
        .map(|t| t.users + t.bots)
        .sum();
    assert!(people > 0, "rooms with people in them");
    let keys = format!("    rooms: {}\n    devices: true\n", list(&configured));
    let exporter = start(&config(&s, v.secret_access_key(), "1s", &keys)).await;
    let base = exporter.url();
    // Long enough for the refresher (1 QPS) to have asked every room at least once.
    let text = wait_polls(&base, T, "success", 6.0).await;
    let malformed = value(
        &text,
        "rtc_exporter_vendor_requests_total",
        &[
            ("target", T),
            ("api", "GetRoomOnlineUsers"),
            ("outcome", "malformed"),
        ],
    );
    assert!(malformed >= Some(4.0), "Property=true asked: {malformed:?}");
    assert_eq!(
        value(&text, "rtc_exporter_target_up", &[("target", T)]),
        Some(1.0)
    );
    assert!(
        !text.contains("\nrtc_device_users{"),
        "devices never measured must be absent, not 0:\n{text}"
    );
    let users: f64 = configured
        .iter()
        .filter_map(|r| room_value(&text, "rtc_room_users", r))
        .sum();
    assert_eq!(users, people as f64, "the rooms are still read");
    // Once Property=true answers read, the devices appear.
    v.faults.set(
        rtc_exporter::sim::volcengine_rtc::GET_ROOM_PROPERTY,
        Fault::default(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !scrape(&base).await.contains("\nrtc_device_users{") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "devices never appear"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    exporter.stop().await.unwrap();
}

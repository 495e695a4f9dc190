//! The exporter against the simulated Tencent TRTC API, over real HTTP on loopback. The
//! simulator's clock and the exporter's clock are driven together, so the scenario (calls
//! across local midnight, a call that opens and closes between two polls, rejoins, several
//! calls of one room) is checked against the simulator's brute-force truth at exact times.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{all, config, scrape, value, wait_for};
use rtc_exporter::app::{self, Running};
use rtc_exporter::clock::ManualClock;
use rtc_exporter::model::Device;
use rtc_exporter::sim::scenario::{Call, Session};
use rtc_exporter::sim::tencent_trtc::{TrtcSim, USER_INFO};
use rtc_exporter::sim::SimServer;

const T: &str = "trtc";
const DELAY: i64 = 60;

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

fn call(id: &str, start: i64, end: i64, sessions: Vec<Session>) -> Call {
    Call {
        id: id.into(),
        start,
        end,
        sessions,
    }
}

/// The next UTC midnight after the real now: the scenario is generated around the real now,
/// so its calls run across that midnight too.
fn next_midnight() -> i64 {
    let now = chrono::Utc::now().timestamp();
    (now / 86_400 + 1) * 86_400
}

struct World {
    server: SimServer,
    clock: Arc<ManualClock>,
    midnight: i64,
}

impl World {
    fn sim(&self) -> &TrtcSim {
        self.server.get::<TrtcSim>().expect("a TRTC simulator")
    }

    /// Sets both clocks.
    fn at(&self, t: i64) {
        self.sim().clock.freeze(t);
        self.clock.set(t);
    }
}

async fn world(seed: u64) -> World {
    let midnight = next_midnight();
    let sim = TrtcSim::new(seed, 8);
    let m = midnight;
    // Across midnight: e1 counts from midnight; e2 left before it and is not today's; e3
    // leaves and rejoins.
    sim.add_call(
        "evening",
        call(
            "evening-1",
            m - 1800,
            m + 7200,
            vec![
                session("e1", m - 1500, m + 600, Device::Ios),
                session("e2", m - 1200, m - 600, Device::Android),
                session("e3", m + 100, m + 1000, Device::Mac),
                session("e3", m + 1500, m + 7200, Device::Mac),
                session("e4", m + 200, m + 7200, Device::Other),
            ],
        ),
    );
    // Two calls of one room on one day; m1 is in both.
    sim.add_call(
        "multi",
        call(
            "multi-1",
            m + 600,
            m + 1800,
            vec![
                session("m1", m + 600, m + 1700, Device::Windows),
                session("m2", m + 700, m + 1800, Device::Windows),
            ],
        ),
    );
    sim.add_call(
        "multi",
        call(
            "multi-2",
            m + 2400,
            m + 4 * 3600,
            vec![
                session("m1", m + 2400, m + 4 * 3600, Device::Windows),
                session("m3", m + 2500, m + 3000, Device::Linux),
            ],
        ),
    );
    let server = SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts");
    World {
        server,
        clock: Arc::new(ManualClock::at(m + 3600)),
        midnight,
    }
}

fn target_config(w: &World, secret_key: &str, extra: &str) -> String {
    let s = w.sim();
    format!(
        "global:\n  timezone: UTC\n  interval: 1s\n  poll_timeout: 20s\n  request_timeout: 5s\ntargets:\n  - name: {T}\n    vendor: tencent_trtc\n    endpoint: {}\n    sdk_app_id: {}\n    region: ap-guangzhou\n    credentials:\n      secret_id: {}\n      secret_key: \"{secret_key}\"\n{extra}",
        w.server.endpoint, s.sdk_app_id, s.secret_id
    )
}

async fn start(w: &World, text: &str) -> Running {
    app::start_with_clock(
        config(text),
        &["127.0.0.1:0".to_string()],
        "/metrics",
        w.clock.clone(),
    )
    .await
    .expect("exporter starts")
}

fn polls(text: &str, result: &str) -> f64 {
    value(
        text,
        "rtc_exporter_polls_total",
        &[("target", T), ("result", result)],
    )
    .unwrap_or(0.0)
}

/// Waits for `n` more successful polls than there were, returns the scrape after them.
async fn more_polls(base: &str, n: f64) -> String {
    let before = polls(&scrape(base).await, "success");
    wait_for(
        &format!("{n} more successful polls"),
        Duration::from_secs(60),
        || async {
            let text = scrape(base).await;
            (polls(&text, "success") >= before + n).then_some(text)
        },
    )
    .await
}

fn room(text: &str, metric: &str, room: &str) -> Option<f64> {
    value(text, metric, &[("target", T), ("room", room)])
}

/// Where the scrape differs from the truth at `at` (the data time: poll time less delay).
fn mismatch(text: &str, w: &World, at: i64) -> Vec<String> {
    let truth = w.sim().truth(w.midnight, at);
    let mut bad = Vec::new();
    for (id, t) in &truth.rooms {
        let got = (
            room(text, "rtc_room_active", id),
            room(text, "rtc_room_users", id),
            room(text, "rtc_room_peak_users", id),
            room(text, "rtc_room_accumulated_users", id),
        );
        let want = (
            Some(f64::from(u8::from(t.active))),
            Some(t.users as f64),
            Some(t.peak as f64),
            Some(t.accumulated as f64),
        );
        if got != want {
            bad.push(format!(
                "{id}: (active, users, peak, accumulated) {got:?}, truth {want:?}"
            ));
        }
    }
    let shown: Vec<String> = all(text, "rtc_room_users")
        .iter()
        .filter_map(|s| s.label("room").map(str::to_string))
        .collect();
    for r in &shown {
        if !truth.rooms.contains_key(r) {
            bad.push(format!("{r}: shown but not in the truth"));
        }
    }
    let totals = [
        ("rtc_users", truth.users),
        ("rtc_peak_users", truth.peak),
        ("rtc_accumulated_users", truth.accumulated),
        (
            "rtc_rooms",
            truth.rooms.values().filter(|r| r.active).count() as u64,
        ),
    ];
    for (name, want) in totals {
        let got = value(text, name, &[("target", T)]);
        if got != Some(want as f64) {
            bad.push(format!("{name}: {got:?}, truth {want}"));
        }
    }
    for d in Device::ALL {
        let got = value(
            text,
            "rtc_device_users",
            &[("target", T), ("device", d.label())],
        );
        let want = truth.devices.get(&d).copied().unwrap_or(0) as f64;
        if got != Some(want) {
            bad.push(format!("device {}: {got:?}, truth {want}", d.label()));
        }
    }
    bad
}

fn not_ok_requests(text: &str) -> f64 {
    all(text, "rtc_exporter_vendor_requests_total")
        .iter()
        .filter(|s| s.label("target") == Some(T) && s.label("outcome") != Some("ok"))
        .map(|s| s.value)
        .sum()
}

#[tokio::test]
async fn figures_equal_the_truth_across_midnight_rejoins_and_calls_between_polls() {
    let w = world(11).await;
    let m = w.midnight;
    let t1 = m + 3600;
    w.at(t1);
    let exporter = start(&w, &target_config(&w, &w.sim().secret_key(), "")).await;
    let base = exporter.url();
    let text = more_polls(&base, 2.0).await;
    let bad = mismatch(&text, &w, t1 - DELAY);
    assert!(bad.is_empty(), "at t1:\n{}", bad.join("\n"));
    // The injected rooms, by hand: e1 counts from midnight, e2 (gone before midnight) not at
    // all, e3 rejoined and is one person.
    assert_eq!(
        room(&text, "rtc_room_accumulated_users", "evening"),
        Some(3.0)
    );
    assert_eq!(room(&text, "rtc_room_peak_users", "evening"), Some(3.0));
    assert_eq!(room(&text, "rtc_room_users", "evening"), Some(2.0));
    assert_eq!(
        room(&text, "rtc_room_accumulated_users", "multi"),
        Some(3.0)
    );

    // A call that opens and closes between two polls.
    w.sim().add_call(
        "blip",
        call(
            "blip-1",
            t1 + 30,
            t1 + 90,
            vec![
                session("b1", t1 + 30, t1 + 90, Device::Web),
                session("b2", t1 + 31, t1 + 80, Device::Web),
                session("b3", t1 + 40, t1 + 60, Device::Android),
            ],
        ),
    );
    let t2 = t1 + 300;
    w.at(t2);
    let text = more_polls(&base, 2.0).await;
    let bad = mismatch(&text, &w, t2 - DELAY);
    assert!(bad.is_empty(), "at t2:\n{}", bad.join("\n"));
    assert_eq!(room(&text, "rtc_room_peak_users", "blip"), Some(3.0));
    assert_eq!(room(&text, "rtc_room_users", "blip"), Some(0.0));
    assert_eq!(room(&text, "rtc_room_active", "blip"), Some(0.0));
    assert_eq!(not_ok_requests(&text), 0.0, "no throttle or span error");
    assert_eq!(w.sim().throttle.refused(), 0);

    // Steady state: polls at one time fetch only the running calls, not the whole day.
    let before = w.sim().requests(USER_INFO);
    let text = more_polls(&base, 3.0).await;
    let polled = polls(&text, "success");
    let per_poll = (w.sim().requests(USER_INFO) - before) as f64 / 3.0;
    let running = w
        .sim()
        .truth(m, t2 - DELAY)
        .rooms
        .values()
        .filter(|r| r.active)
        .count() as f64;
    assert!(
        per_poll <= running + 2.0,
        "{per_poll} DescribeUserInfo requests a poll for {running} running rooms ({polled} polls)"
    );
    exporter.stop().await.expect("stops");
}

#[tokio::test]
async fn within_the_data_delay_after_midnight_calls_running_across_it_stay_shown() {
    let w = world(12).await;
    let m = w.midnight;
    // Ten seconds into the day: the vendor's data (60 s behind) is still yesterday's.
    w.at(m + 10);
    let exporter = start(&w, &target_config(&w, &w.sim().secret_key(), "")).await;
    let text = more_polls(&exporter.url(), 2.0).await;
    // e1 is in across midnight: the room runs and has its user, the day's first figures.
    assert_eq!(
        room(&text, "rtc_room_active", "evening"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(room(&text, "rtc_room_users", "evening"), Some(1.0));
    assert_eq!(room(&text, "rtc_room_peak_users", "evening"), Some(1.0));
    assert!(value(&text, "rtc_users", &[("target", T)]).unwrap_or(0.0) >= 1.0);
    exporter.stop().await.expect("stops");
}

#[tokio::test]
async fn a_wrong_key_is_counted_and_the_target_goes_down_without_the_key_anywhere() {
    let w = world(12).await;
    w.at(w.midnight + 3600);
    let wrong = "wrong-secret-key-0123456789abcdef";
    let exporter = start(&w, &target_config(&w, wrong, "")).await;
    let base = exporter.url();
    let text = wait_for("a failed poll", Duration::from_secs(30), || async {
        let text = scrape(&base).await;
        (polls(&text, "failure") >= 1.0).then_some(text)
    })
    .await;
    assert_eq!(
        value(&text, "rtc_exporter_target_up", &[("target", T)]),
        Some(0.0)
    );
    let counted = value(
        &text,
        "rtc_exporter_vendor_errors_total",
        &[("target", T), ("code", "AuthFailure.SignatureFailure")],
    );
    assert!(counted.unwrap_or(0.0) >= 1.0, "{text}");
    let (_, landing) = common::get(&base, "/").await;
    let error = exporter
        .board
        .view(T)
        .and_then(|v| v.last_error.clone())
        .unwrap_or_default();
    assert!(error.contains("AuthFailure.SignatureFailure"), "{error}");
    for page in [&text, &landing, &error] {
        assert!(!page.contains(wrong));
        assert!(!page.contains(&w.sim().secret_key()));
    }
    exporter.stop().await.expect("stops");
}

#[tokio::test]
async fn one_failing_room_keeps_its_values_while_the_others_are_published() {
    let w = world(13).await;
    let m = w.midnight;
    let t1 = m + 3600;
    w.at(t1);
    let exporter = start(&w, &target_config(&w, &w.sim().secret_key(), "")).await;
    let base = exporter.url();
    let first = more_polls(&base, 1.0).await;
    assert!(mismatch(&first, &w, t1 - DELAY).is_empty());
    let evening_before = room(&first, "rtc_room_users", "evening");

    // From now on the evening call's users fail; time moves on, so every other room's
    // figures are new ones.
    let t2 = t1 + 600;
    w.sim()
        .fail_room(Some(("evening", "InternalError.DBError")));
    w.at(t2);
    let text = wait_for("a partial poll", Duration::from_secs(30), || async {
        let text = scrape(&base).await;
        (value(&text, "rtc_exporter_target_rooms_failed", &[("target", T)]) == Some(1.0))
            .then_some(text)
    })
    .await;
    // A partial poll: the target is up (it answered), the failing room is named.
    assert_eq!(
        value(&text, "rtc_exporter_target_up", &[("target", T)]),
        Some(1.0)
    );
    assert!(value(
        &text,
        "rtc_exporter_room_refresh_failures",
        &[("target", T), ("room", "evening")]
    )
    .is_some_and(|n| n >= 1.0));
    assert_eq!(
        room(&text, "rtc_room_users", "evening"),
        evening_before,
        "kept, not zeroed"
    );
    let truth = w.sim().truth(m, t2 - DELAY);
    let multi = &truth.rooms["multi"];
    assert_eq!(
        room(&text, "rtc_room_users", "multi"),
        Some(multi.users as f64)
    );
    assert_eq!(
        room(&text, "rtc_room_accumulated_users", "multi"),
        Some(multi.accumulated as f64)
    );
    exporter.stop().await.expect("stops");
}

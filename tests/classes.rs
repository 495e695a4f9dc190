//! Occupancy thresholds and scheduled classes over HTTP: the exporter against the simulated
//! Talk-cloud API (which tells roles), both on one frozen clock that the test moves, so whether
//! a class is scheduled is decided by the time the test set, in the configured zone.

mod common;

use std::sync::Arc;

use common::{all, value, wait_polls};
use rtc_exporter::app;
use rtc_exporter::clock::ManualClock;
use rtc_exporter::sim::talkcloud::TalkSim;
use rtc_exporter::sim::SimServer;

const T: &str = "classes";
/// 2026-11-20 12:00 UTC, a Friday: 20:00 in Shanghai.
const T0: i64 = 1_795_176_000;
const BIG: &str = "7100000001";
const EARLY: &str = "7100000002";
const LATER: &str = "7100000003";
const OVER: &str = "open-day";
const NEVER: &str = "never-opened";

/// The class of the `71000000*` rooms and of a room the vendor never shows runs 19:30 to 20:15
/// on Fridays in Shanghai (11:30 to 12:15 UTC); `open-day`'s class at 09:00 every day.
fn config(s: &SimServer, key: &str) -> String {
    format!(
        "global:
  timezone: Asia/Shanghai
  interval: 1s
  poll_timeout: 20s
  request_timeout: 5s
  capacity_warning_ratio: 0.8
targets:
  - name: {T}
    vendor: talkcloud
    endpoint: {}
    credentials:
      key: \"{key}\"
    rooms: [\"{BIG}\", \"{EARLY}\", \"{LATER}\", {{ thirdroomid: {OVER} }}]
    capacity:
      default: 600
      rooms:
        \"{EARLY}\": {{ capacity: 40, warning_ratio: 0.95 }}
        {OVER}: 0
    max_users: 1000
    classes:
      - {{ rooms: [\"71000000*\", {NEVER}], schedule: \"0 30 19 * * FRI\", duration: 45m }}
      - {{ rooms: {OVER}, schedule: \"0 0 9 * * *\", duration: 1h }}
",
        s.endpoint
    )
}

fn room(text: &str, metric: &str, room: &str) -> Option<f64> {
    value(text, metric, &[("target", T), ("room", room)])
}

fn scheduled(text: &str) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = all(text, "rtc_room_class_scheduled")
        .into_iter()
        .map(|s| (s.label("room").unwrap_or_default().to_string(), s.value))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn polls(text: &str) -> f64 {
    value(
        text,
        "rtc_exporter_polls_total",
        &[("target", T), ("result", "success")],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_classes_thresholds_and_the_landing_page_follow_the_clock() {
    let sim = TalkSim::at(3, T0);
    sim.clock.freeze(T0);
    let s = SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let talk = s.get::<TalkSim>().unwrap();
    let clock = Arc::new(ManualClock::at(T0));
    let exporter = app::start_with_clock(
        common::config(&config(&s, talk.key())),
        &["127.0.0.1:0".to_string()],
        "/metrics",
        clock.clone(),
    )
    .await
    .expect("exporter starts");
    let base = exporter.url();
    let text = wait_polls(&base, T, "success", 1.0).await;

    // 20:00 Shanghai on a Friday: the 19:30 class is on in every room it names or matches,
    // also in the room the vendor never showed; the 09:00 class is not.
    assert_eq!(
        scheduled(&text),
        [
            (BIG.to_string(), 1.0),
            (EARLY.to_string(), 1.0),
            (LATER.to_string(), 1.0),
            (NEVER.to_string(), 1.0),
            (OVER.to_string(), 0.0),
        ]
    );
    // What the class alerts compare: the early class's teacher left while viewers stay;
    // the later class's room is empty and (nobody today) has no role series.
    let teacher = |r: &str| {
        value(
            &text,
            "rtc_room_role_users",
            &[("target", T), ("room", r), ("role", "teacher")],
        )
    };
    assert_eq!(teacher(EARLY), Some(0.0));
    assert!(room(&text, "rtc_room_users", EARLY).unwrap_or(0.0) > 0.0);
    assert_eq!(teacher(BIG), Some(1.0));
    assert_eq!(room(&text, "rtc_room_users", LATER), Some(0.0));
    assert_eq!(teacher(LATER), None);
    assert_eq!(room(&text, "rtc_room_users", NEVER), None);

    // Thresholds: a room's own ratio, else the global one; capacity 0 keeps its series.
    assert_eq!(
        room(&text, "rtc_room_capacity_warning_ratio", EARLY),
        Some(0.95)
    );
    assert_eq!(
        room(&text, "rtc_room_capacity_warning_ratio", BIG),
        Some(0.8)
    );
    assert_eq!(room(&text, "rtc_room_capacity", OVER), Some(0.0));
    assert_eq!(room(&text, "rtc_room_capacity", BIG), Some(600.0));
    assert_eq!(
        value(&text, "rtc_target_max_users", &[("target", T)]),
        Some(1000.0)
    );

    // The landing page reads the same clock: the last success was at the (frozen) now.
    let (status, page) = common::get(&base, "/").await;
    assert_eq!(status, 200);
    for header in [
        "<th>last success</th>",
        "<th>interval</th>",
        "<th>next poll</th>",
        "<th>poll duration</th>",
    ] {
        assert!(page.contains(header), "{header} in {page}");
    }
    assert!(page.contains("<td>0s ago</td><td>1s</td>"), "{page}");
    assert!(page.contains(" s</td>"), "poll duration in seconds: {page}");

    // 20:15 Shanghai: the class is over. The next polls re-render with the new time.
    let done = polls(&common::scrape(&base).await);
    talk.clock.freeze(T0 + 15 * 60);
    clock.set(T0 + 15 * 60);
    let text = wait_polls(&base, T, "success", done + 2.0).await;
    assert!(
        scheduled(&text).iter().all(|(_, v)| *v == 0.0),
        "{:?}",
        scheduled(&text)
    );
    let (_, page) = common::get(&base, "/").await;
    assert!(page.contains("<td>0s ago</td>"), "{page}");

    // 19:30 Shanghai the next Friday: on again, by the local clock.
    let friday = T0 + 7 * 86_400 - 30 * 60;
    let done = polls(&common::scrape(&base).await);
    talk.clock.freeze(friday);
    clock.set(friday);
    let text = wait_polls(&base, T, "success", done + 2.0).await;
    assert_eq!(room(&text, "rtc_room_class_scheduled", NEVER), Some(1.0));
    exporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_without_classes_or_thresholds_serves_none_of_their_series() {
    let sim = TalkSim::at(3, T0);
    sim.clock.freeze(T0);
    let s = SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let talk = s.get::<TalkSim>().unwrap();
    let text = format!(
        "targets:\n  - name: {T}\n    vendor: talkcloud\n    endpoint: {}\n    credentials: {{ key: \"{}\" }}\n    rooms: [\"{BIG}\"]\n",
        s.endpoint,
        talk.key()
    );
    let exporter = app::start_with_clock(
        common::config(&text),
        &["127.0.0.1:0".to_string()],
        "/metrics",
        Arc::new(ManualClock::at(T0)),
    )
    .await
    .expect("exporter starts");
    let text = wait_polls(&exporter.url(), T, "success", 1.0).await;
    assert!(room(&text, "rtc_room_users", BIG).is_some());
    for absent in [
        "rtc_room_capacity",
        "rtc_room_capacity_warning_ratio",
        "rtc_room_class_scheduled",
        "rtc_target_max_users",
    ] {
        assert!(all(&text, absent).is_empty(), "{absent} served");
    }
    exporter.stop().await.unwrap();
}

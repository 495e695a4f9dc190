//! One dead room does not take its target down (issue: a deleted Talk-cloud room, 4007, kept
//! `target_up 0` for good and sent the target into backoff): the other rooms stay fresh, the
//! target is up and polled on its schedule, and the dead room is named.

mod common;

use std::sync::Arc;
use std::time::Duration;

use rtc_exporter::sim::replay::{Recorded, Replay};
use rtc_exporter::sim::SimServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_room_leaves_the_target_up_fresh_and_not_backed_off() {
    let now = chrono::Utc::now().timestamp();
    let alive = format!(
        r#"{{"result": 0, "count": 1, "logininfo": [{{"serial": "111111", "userid": "u1", "terminal": "1", "terminal_details": "1", "userroleid": "2", "entertimestamp": {}, "outtimestamp": 0}}]}}"#,
        now - 600
    );
    let answer = |when: &str, body: String| Recorded {
        api: "getLiveLogininfo".into(),
        when: Some(when.into()),
        status: 200,
        body: body.into_bytes(),
    };
    let replay = Replay::new(
        "talkcloud",
        vec![
            answer("serial=111111", alive),
            answer(
                "serial=222222",
                r#"{"result": 4007, "msg": "room does not exist"}"#.into(),
            ),
        ],
    );
    let server = SimServer::start(Arc::new(replay), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let text = format!(
        "global:\n  stale_after: 2\ntargets:\n\
         - name: talk\n  vendor: talkcloud\n  interval: 1s\n  endpoint: {}\n  credentials: {{key: k}}\n  rooms: [\"111111\", \"222222\"]\n",
        server.endpoint
    );
    let exporter = common::start(&text).await;
    let base = exporter.url();
    // Four polls within a few seconds: one a second, no backoff (1 s, doubling, after a
    // failed poll would make them 1 + 2 + 4 s apart).
    let started = tokio::time::Instant::now();
    let text = common::wait_polls(&base, "talk", "success", 4.0).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "polled on the 1 s interval, not backed off: {:?}",
        started.elapsed()
    );
    let v = |name: &str, labels: &[(&str, &str)]| common::value(&text, name, labels);
    let target = [("target", "talk")];
    assert_eq!(v("rtc_exporter_target_up", &target), Some(1.0));
    assert_eq!(
        v("rtc_exporter_target_consecutive_failures", &target),
        Some(0.0)
    );
    assert_eq!(v("rtc_exporter_target_rooms_failed", &target), Some(1.0));
    assert_eq!(
        v(
            "rtc_exporter_polls_total",
            &[("target", "talk"), ("result", "failure")]
        ),
        Some(0.0)
    );
    // The dead room is named; past stale_after its figures are gone, never a 0.
    let failures = v(
        "rtc_exporter_room_refresh_failures",
        &[("target", "talk"), ("room", "222222")],
    );
    assert!(failures.is_some_and(|n| n >= 2.0), "{failures:?}");
    assert_eq!(
        v("rtc_room_users", &[("target", "talk"), ("room", "222222")]),
        None
    );
    // The live room: fresh, and no failure series of its own.
    assert_eq!(
        v("rtc_room_users", &[("target", "talk"), ("room", "111111")]),
        Some(1.0)
    );
    assert_eq!(
        v(
            "rtc_exporter_room_refresh_failures",
            &[("target", "talk"), ("room", "111111")]
        ),
        None
    );
    assert!(v(
        "rtc_exporter_vendor_errors_total",
        &[("target", "talk"), ("code", "4007")]
    )
    .is_some_and(|n| n >= 4.0));
    // The landing page says so too: up, with the room failing, not plain "up".
    let (_, page) = common::get(&base, "/").await;
    assert!(
        page.contains("<td class=\"partial\">up, 1 room failing</td>"),
        "{page}"
    );
    exporter.stop().await.unwrap();
}

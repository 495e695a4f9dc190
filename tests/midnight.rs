//! The day rolls at local midnight whether or not a poll runs then: on a manual clock, a cron
//! target (UCloud, polled at start, next at noon), an interval target of a session vendor
//! (Talk-cloud, every hour) and a zone whose midnight a DST change skips (America/Santiago,
//! 2026-09-06 begins at 01:00). Each is polled once before midnight against recorded answers;
//! the clock then crosses midnight and, with no further poll, every "today" figure restarts
//! from what is in progress.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use rtc_exporter::app;
use rtc_exporter::clock::ManualClock;
use rtc_exporter::sim::replay::{Recorded, Replay};
use rtc_exporter::sim::SimServer;

/// Two calls: room 111 in progress (123 now, peak 200, 300 in the day); room 222 ended.
const URTC: &str = r#"{"RetCode": 0, "TotalCount": 2, "Data": [
  {"RoomId": "111", "CallId": "c1", "RoomStatus": true, "CurrentAmount": 123, "PeekAmount": 200, "AccumulationAmount": 300},
  {"RoomId": "222", "CallId": "c2", "RoomStatus": false, "CurrentAmount": 0, "PeekAmount": 30, "AccumulationAmount": 60}]}"#;

async fn replay(vendor: &'static str, api: &str, body: String) -> SimServer {
    let r = Replay::new(
        vendor,
        vec![Recorded {
            api: api.into(),
            when: None,
            status: 200,
            body: body.into_bytes(),
        }],
    );
    SimServer::start(Arc::new(r), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The exporter on a manual clock standing at `at`.
async fn start(config: rtc_exporter::config::Config, at: i64) -> (app::Running, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at(at));
    let exporter = app::start_with_clock(
        config,
        &["127.0.0.1:0".to_string()],
        "/metrics",
        clock.clone(),
    )
    .await
    .unwrap();
    (exporter, clock)
}

fn figure(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    common::value(text, name, labels)
}

/// Waits until `check` holds for a scrape, or panics with the scrape.
async fn until(base: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    let base = base.to_string();
    common::wait_for(what, Duration::from_secs(30), || {
        let base = base.clone();
        let check = &check;
        async move {
            let text = common::scrape(&base).await;
            check(&text).then_some(text)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_today_figure_rolls_at_local_midnight_without_a_poll() {
    // 2026-11-20 23:59 in Shanghai; midnight is 16:00 UTC.
    let midnight = Utc
        .with_ymd_and_hms(2026, 11, 20, 16, 0, 0)
        .unwrap()
        .timestamp();
    let before = midnight - 60;
    // Talk-cloud: u1 in since 22:00, u2 from 22:10 to 22:30, u3 in since 22:20 (local).
    let rec = |user: &str, join: i64, leave: i64| {
        format!(
            r#"{{"serial": "111111", "userid": "{user}", "username": "{user}", "terminal": "1", "terminal_details": "1", "userroleid": "2", "entertimestamp": {join}, "outtimestamp": {leave}}}"#
        )
    };
    let talk = format!(
        r#"{{"result": 0, "count": 3, "logininfo": [{}, {}, {}]}}"#,
        rec("u1", midnight - 7200, 0),
        rec("u2", midnight - 6600, midnight - 5400),
        rec("u3", midnight - 6000, 0)
    );
    let urtc = replay("ucloud_urtc", "QueryURtcOnlineUsers", URTC.into()).await;
    let talkcloud = replay("talkcloud", "getLiveLogininfo", talk).await;
    let text = format!(
        "global:\n  timezone: Asia/Shanghai\ntargets:\n\
         - name: urtc\n  vendor: ucloud_urtc\n  schedule: \"0 0 12 * * *\"\n  endpoint: {}\n  app_id: a\n  credentials: {{public_key: p, private_key: k}}\n\
         - name: talk\n  vendor: talkcloud\n  interval: 1h\n  endpoint: {}\n  credentials: {{key: k}}\n  rooms: [\"111111\"]\n",
        urtc.endpoint, talkcloud.endpoint
    );
    let (exporter, clock) = start(common::config(&text), before).await;
    let base = exporter.url();
    common::wait_polls(&base, "urtc", "success", 1.0).await;
    let text = common::wait_polls(&base, "talk", "success", 1.0).await;
    let room = |t: &str, r: &str, name: &str| {
        let target = if r == "111111" { "talk" } else { "urtc" };
        figure(t, name, &[("target", target), ("room", r)])
    };
    // Yesterday, as the vendors told it.
    assert_eq!(room(&text, "111", "rtc_room_peak_users"), Some(200.0));
    assert_eq!(
        room(&text, "111", "rtc_room_accumulated_users"),
        Some(300.0)
    );
    assert_eq!(room(&text, "222", "rtc_room_peak_users"), Some(30.0));
    assert_eq!(room(&text, "111111", "rtc_room_users"), Some(2.0));
    assert_eq!(room(&text, "111111", "rtc_room_peak_users"), Some(3.0));
    assert_eq!(
        room(&text, "111111", "rtc_room_accumulated_users"),
        Some(3.0)
    );

    clock.set(midnight + 1);
    let text = until(&base, "the roll at midnight", |t| {
        room(t, "111", "rtc_room_peak_users") == Some(123.0)
            && room(t, "111111", "rtc_room_accumulated_users") == Some(2.0)
    })
    .await;
    // No poll ran: the roll did it.
    for target in ["urtc", "talk"] {
        assert_eq!(
            figure(
                &text,
                "rtc_exporter_polls_total",
                &[("target", target), ("result", "success")]
            ),
            Some(1.0)
        );
    }
    // UCloud: the room in progress starts the day at its users now; the ended room is gone.
    assert_eq!(room(&text, "111", "rtc_room_users"), Some(123.0));
    assert_eq!(
        room(&text, "111", "rtc_room_accumulated_users"),
        Some(123.0)
    );
    assert_eq!(room(&text, "222", "rtc_room_peak_users"), None);
    let total = |name: &str, target: &str| figure(&text, name, &[("target", target)]);
    assert_eq!(total("rtc_peak_users", "urtc"), Some(123.0));
    assert_eq!(total("rtc_accumulated_users", "urtc"), Some(123.0));
    // Talk-cloud: u1 and u3 are still in, counted from midnight; u2 left yesterday.
    assert_eq!(room(&text, "111111", "rtc_room_users"), Some(2.0));
    assert_eq!(room(&text, "111111", "rtc_room_peak_users"), Some(2.0));
    assert_eq!(total("rtc_peak_users", "talk"), Some(2.0));
    assert_eq!(total("rtc_accumulated_users", "talk"), Some(2.0));
    exporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_day_rolls_where_dst_skips_midnight() {
    // America/Santiago: 2026-09-06 has no 00:00; its first instant is 01:00 -03 (04:00 UTC).
    let tz = chrono_tz::America::Santiago;
    let date = NaiveDate::from_ymd_opt(2026, 9, 6).unwrap();
    let first = rtc_exporter::clouds::local_midnight(tz, date).with_timezone(&Utc);
    assert_eq!(first, Utc.with_ymd_and_hms(2026, 9, 6, 4, 0, 0).unwrap());
    let urtc = replay("ucloud_urtc", "QueryURtcOnlineUsers", URTC.into()).await;
    let text = format!(
        "global:\n  timezone: America/Santiago\ntargets:\n\
         - name: urtc\n  vendor: ucloud_urtc\n  schedule: \"0 0 12 * * *\"\n  endpoint: {}\n  app_id: a\n  credentials: {{public_key: p, private_key: k}}\n",
        urtc.endpoint
    );
    let (exporter, clock) = start(common::config(&text), first.timestamp() - 120).await;
    let base = exporter.url();
    let text = common::wait_polls(&base, "urtc", "success", 1.0).await;
    let peak = |t: &str| {
        figure(
            t,
            "rtc_room_peak_users",
            &[("target", "urtc"), ("room", "111")],
        )
    };
    assert_eq!(peak(&text), Some(200.0));
    // A minute before the day's first instant: still the old day.
    clock.set(first.timestamp() - 60);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(peak(&common::scrape(&base).await), Some(200.0));
    clock.set(first.timestamp() + 1);
    let text = until(&base, "the roll at 01:00 -03", |t| peak(t) == Some(123.0)).await;
    assert_eq!(
        figure(&text, "rtc_accumulated_users", &[("target", "urtc")]),
        Some(123.0)
    );
    // The noon target is not polled at the day's first instant (croner answered 01:00 for
    // `0 0 12 * * *` there): the next poll is at noon, 15:00 UTC.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = common::scrape(&base).await;
    assert_eq!(
        figure(
            &text,
            "rtc_exporter_polls_total",
            &[("target", "urtc"), ("result", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        figure(
            &text,
            "rtc_exporter_target_next_poll_timestamp_seconds",
            &[("target", "urtc")]
        ),
        Some((first.timestamp() + 11 * 3600) as f64)
    );
    exporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_render_only_keys_just_after_midnight_restarts_nothing() {
    let midnight = Utc
        .with_ymd_and_hms(2026, 11, 20, 16, 0, 0)
        .unwrap()
        .timestamp();
    // A class in progress across midnight: the teacher and a student since 23:00.
    let rec = |user: &str, role: u8| {
        format!(
            r#"{{"serial": "111111", "userid": "{user}", "terminal": "1", "terminal_details": "1", "userroleid": "{role}", "entertimestamp": {}, "outtimestamp": 0}}"#,
            midnight - 3600
        )
    };
    let talk = format!(
        r#"{{"result": 0, "count": 2, "logininfo": [{}, {}]}}"#,
        rec("t", 0),
        rec("s", 2)
    );
    let talkcloud = replay("talkcloud", "getLiveLogininfo", talk).await;
    let urtc = replay("ucloud_urtc", "QueryURtcOnlineUsers", URTC.into()).await;
    let config = |ratio: &str, capacity: u32| {
        format!(
            "global:\n  timezone: Asia/Shanghai\n  capacity_warning_ratio: {ratio}\ntargets:\n\
             - name: urtc\n  vendor: ucloud_urtc\n  schedule: \"0 0 12 * * *\"\n  endpoint: {}\n  app_id: a\n  credentials: {{public_key: p, private_key: k}}\n  capacity: {{default: {capacity}}}\n\
             - name: talk\n  vendor: talkcloud\n  interval: 1h\n  endpoint: {}\n  credentials: {{key: k}}\n  rooms: [\"111111\"]\n  capacity: {{default: {capacity}}}\n  classes: [{{rooms: [\"*\"], schedule: \"0 0 23 * * *\", duration: 2h}}]\n",
            urtc.endpoint, talkcloud.endpoint
        )
    };
    let dir = std::env::temp_dir().join(format!("rtc-midnight-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("exporter.yaml");
    std::fs::write(&path, config("0.9", 300)).unwrap();
    let (exporter, clock) = start(rtc_exporter::config::load(&path).unwrap(), midnight - 60).await;
    let base = exporter.url();
    common::wait_polls(&base, "urtc", "success", 1.0).await;
    common::wait_polls(&base, "talk", "success", 1.0).await;
    clock.set(midnight + 5);
    let room = |t: &str, target: &str, r: &str, name: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![("target", target), ("room", r)];
        labels.extend_from_slice(extra);
        figure(t, name, &labels)
    };
    let rolled = until(&base, "the roll at midnight", |t| {
        room(t, "urtc", "111", "rtc_room_peak_users", &[]) == Some(123.0)
    })
    .await;
    let supervisors: Vec<_> = ["urtc", "talk"]
        .iter()
        .map(|n| exporter.fleet.supervisor(n).unwrap())
        .collect();

    // Just after midnight: the warning ratio and the capacities change, nothing else.
    std::fs::write(&path, config("0.75", 500)).unwrap();
    let report = exporter.reload().await.unwrap();
    assert_eq!(
        report.applied_in_place,
        vec!["urtc".to_string(), "talk".to_string()]
    );
    assert!(report.unchanged.is_empty(), "{report:?}");
    assert!(
        report.restarted.is_empty() && report.replaced.is_empty(),
        "{report:?}"
    );
    for (s, n) in supervisors.iter().zip(["urtc", "talk"]) {
        assert!(
            Arc::ptr_eq(s, &exporter.fleet.supervisor(n).unwrap()),
            "{n} keeps its supervisor: ledger, vendor cursors, schedule phase"
        );
    }
    let text = until(&base, "the new ratio and capacity", |t| {
        room(t, "talk", "111111", "rtc_room_capacity_warning_ratio", &[]) == Some(0.75)
            && room(t, "urtc", "111", "rtc_room_capacity", &[]) == Some(500.0)
    })
    .await;
    // Users, roles and the class as before the reload; no poll ran (the cron target is not
    // polled at once).
    for (target, r) in [("urtc", "111"), ("talk", "111111")] {
        for name in [
            "rtc_room_users",
            "rtc_room_peak_users",
            "rtc_room_accumulated_users",
        ] {
            assert_eq!(
                room(&text, target, r, name, &[]),
                room(&rolled, target, r, name, &[]),
                "{target} {name}"
            );
        }
        assert_eq!(
            figure(
                &text,
                "rtc_exporter_polls_total",
                &[("target", target), ("result", "success")]
            ),
            Some(1.0)
        );
    }
    for role in ["teacher", "student"] {
        assert_eq!(
            room(
                &text,
                "talk",
                "111111",
                "rtc_room_role_users",
                &[("role", role)]
            ),
            Some(1.0),
            "{role}"
        );
    }
    assert_eq!(
        room(&text, "talk", "111111", "rtc_room_class_scheduled", &[]),
        Some(1.0)
    );
    exporter.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cron_target_polls_at_its_next_planned_time_not_at_once() {
    // 2026-11-20 10:00 in Shanghai; the target runs at noon.
    let ten = Utc
        .with_ymd_and_hms(2026, 11, 20, 2, 0, 0)
        .unwrap()
        .timestamp();
    let noon = ten + 2 * 3600;
    let urtc = replay("ucloud_urtc", "QueryURtcOnlineUsers", URTC.into()).await;
    let config = |timeout: &str| {
        format!(
            "global:\n  timezone: Asia/Shanghai\n  request_timeout: {timeout}\ntargets:\n\
             - name: urtc\n  vendor: ucloud_urtc\n  schedule: \"0 0 12 * * *\"\n  endpoint: {}\n  app_id: a\n  credentials: {{public_key: p, private_key: k}}\n",
            urtc.endpoint
        )
    };
    let dir = std::env::temp_dir().join(format!("rtc-cron-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("exporter.yaml");
    std::fs::write(&path, config("5s")).unwrap();
    let (exporter, clock) = start(rtc_exporter::config::load(&path).unwrap(), ten).await;
    let base = exporter.url();
    // Polled at start, so it is ready without waiting for noon.
    common::wait_polls(&base, "urtc", "success", 1.0).await;

    // A key that shapes polls changes: the target restarts, and keeps to its plan.
    std::fs::write(&path, config("6s")).unwrap();
    let report = exporter.reload().await.unwrap();
    assert_eq!(report.restarted, vec!["urtc".to_string()], "{report:?}");
    let text = until(&base, "the next poll planned at noon", |t| {
        figure(
            t,
            "rtc_exporter_target_next_poll_timestamp_seconds",
            &[("target", "urtc")],
        ) == Some(noon as f64)
    })
    .await;
    // Its poll state carries over: still up, its last success still shown.
    assert_eq!(
        figure(&text, "rtc_exporter_target_up", &[("target", "urtc")]),
        Some(1.0)
    );
    assert!(figure(
        &text,
        "rtc_exporter_target_last_success_timestamp_seconds",
        &[("target", "urtc")]
    )
    .is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text_later = common::scrape(&base).await;
    for t in [&text, &text_later] {
        let polls: f64 = common::all(t, "rtc_exporter_polls_total")
            .iter()
            .filter(|s| s.label("target") == Some("urtc"))
            .map(|s| s.value)
            .sum();
        assert_eq!(polls, 1.0, "no poll at once after the restart");
    }
    clock.set(noon);
    common::wait_polls(&base, "urtc", "success", 2.0).await;
    exporter.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

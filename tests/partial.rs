//! One dead room does not take its target down (issue: a deleted Talk-cloud room, 4007, kept
//! `target_up 0` for good and sent the target into backoff): the other rooms stay fresh, the
//! target is up and polled on its schedule, and the dead room is named; and the class alerts
//! fire for the live rooms of such a target (the real binary's series through promtool).

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

/// Writes one series of promtool's `input_series`: its name and labels as scraped, with `job`
/// and `instance` as Prometheus adds them.
fn series_selector(s: &common::Sample, instance: &str) -> String {
    let escape = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let mut labels = vec![
        ("job".to_string(), "rtc-exporter".to_string()),
        ("instance".to_string(), instance.to_string()),
    ];
    labels.extend(s.labels.iter().cloned());
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{}{{{}}}", s.name, inner.join(","))
}

/// The real binary, one Talk-cloud target with a class in session in three rooms: 111111 with
/// students and no teacher, 333333 empty, 222222 deleted at the vendor (4007). Its scraped
/// series, fed to promtool with the shipped rules (their `for:` as shipped), fire
/// `RtcClassNoTeacher` for 111111 and `RtcClassRoomEmpty` for 333333, neither for the dead
/// room, `RtcExporterRoomsFailing` for the target, and no `RtcExporterTargetDown` (issue 16:
/// one dead room kept the target down, so no class alert of the target could fire).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_dead_room_the_class_alerts_fire_for_the_live_rooms() {
    if std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("promtool is not installed (Debian: apt-get install prometheus): skipped");
        return;
    }
    let now = chrono::Utc::now().timestamp();
    let student = |id: &str| {
        format!(
            r#"{{"serial": "111111", "userid": "{id}", "terminal": "1", "terminal_details": "1", "userroleid": "2", "entertimestamp": {}, "outtimestamp": 0}}"#,
            now - 600
        )
    };
    let waiting = format!(
        r#"{{"result": 0, "count": 3, "logininfo": [{}, {}, {}]}}"#,
        student("s1"),
        student("s2"),
        student("s3")
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
            answer("serial=111111", waiting),
            answer(
                "serial=222222",
                r#"{"result": 4007, "msg": "room does not exist"}"#.into(),
            ),
            answer(
                "serial=333333",
                r#"{"result": 0, "count": 0, "logininfo": []}"#.into(),
            ),
        ],
    );
    let server = SimServer::start(Arc::new(replay), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("rtc-partial-alerts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("exporter.yaml");
    // A class every hour on the hour, an hour long: in session whenever the test runs.
    std::fs::write(
        &config,
        format!(
            "global:\n  timezone: UTC\n  stale_after: 2\ntargets:\n\
             - name: talk\n  vendor: talkcloud\n  interval: 1s\n  endpoint: {}\n  credentials: {{key: k}}\n  rooms: [\"111111\", \"222222\", \"333333\"]\n\
             \x20 classes:\n    - {{ rooms: [\"111111\", \"222222\", \"333333\"], schedule: \"0 0 * * * *\", duration: 1h }}\n",
            server.endpoint
        ),
    )
    .unwrap();
    let port = common::free_port();
    let instance = format!("127.0.0.1:{port}");
    let base = format!("http://{instance}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rtc-exporter"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address={instance}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let polls = |text: &str| {
        common::value(
            text,
            "rtc_exporter_polls_total",
            &[("target", "talk"), ("result", "success")],
        )
        .unwrap_or(0.0)
    };
    // Five scrapes, each after a poll of its own, once the dead room is past stale_after.
    let mut scrapes: Vec<String> = Vec::new();
    while scrapes.len() < 5 {
        let after = scrapes.last().map_or(3.0, |t| polls(t) + 1.0);
        let text = common::wait_for(
            &format!("poll {after} of talk"),
            Duration::from_secs(30),
            || {
                let base = base.clone();
                async move {
                    let text = common::try_scrape(&base).await?;
                    (polls(&text) >= after).then_some(text)
                }
            },
        )
        .await;
        scrapes.push(text);
    }
    let status = common::terminate(&mut child);
    assert!(status.success(), "{status:?}");

    // What the alerts read, as scraped: the premise of the test.
    let last = scrapes.last().unwrap();
    let v = |name: &str, labels: &[(&str, &str)]| common::value(last, name, labels);
    let room = |r: &'static str| [("target", "talk"), ("room", r)];
    assert_eq!(
        v("rtc_exporter_target_up", &[("target", "talk")]),
        Some(1.0)
    );
    assert_eq!(
        v("rtc_exporter_target_rooms_failed", &[("target", "talk")]),
        Some(1.0)
    );
    for r in ["111111", "222222", "333333"] {
        assert_eq!(v("rtc_room_class_scheduled", &room(r)), Some(1.0), "{r}");
    }
    assert_eq!(v("rtc_room_users", &room("111111")), Some(3.0));
    assert_eq!(
        v(
            "rtc_room_role_users",
            &[("target", "talk"), ("room", "111111"), ("role", "teacher")]
        ),
        Some(0.0)
    );
    assert!(v("rtc_exporter_room_refresh_failures", &room("222222")).is_some_and(|n| n >= 2.0));
    assert_eq!(v("rtc_room_users", &room("222222")), None);

    // Every rtc_* series of the five scrapes, one a minute, then as last scraped for 25
    // minutes; a series missing from a scrape is missing there too.
    let mut series: Vec<String> = Vec::new();
    for s in scrapes.iter().flat_map(|t| common::samples(t)) {
        if s.name.starts_with("rtc_") {
            let selector = series_selector(&s, &instance);
            if !series.contains(&selector) {
                series.push(selector);
            }
        }
    }
    let mut input = String::new();
    for selector in &series {
        let values: Vec<String> = scrapes
            .iter()
            .map(|t| {
                common::samples(t)
                    .into_iter()
                    .find(|s| series_selector(s, &instance) == *selector)
                    .filter(|s| s.value.is_finite())
                    .map_or("_".to_string(), |s| s.value.to_string())
            })
            .collect();
        let last = values.last().unwrap().clone();
        input.push_str(&format!(
            "      - series: '{}'\n        values: '{} {last}x25'\n",
            selector.replace('\'', "''"),
            values.join(" ")
        ));
    }
    let rules = std::fs::canonicalize("alerts/rtc-exporter.rules.yml").unwrap();
    let alerts = r#"ALERTS{alertstate="firing", alertname=~"RtcClass.*|RtcExporterRoomsFailing|RtcExporterTargetDown"}"#;
    let firing = |alert: &str, severity: &str, room: Option<&str>| {
        let room = room.map_or(String::new(), |r| format!(",room=\"{r}\""));
        format!(
            "          - labels: 'ALERTS{{alertname=\"{alert}\",alertstate=\"firing\",severity=\"{severity}\",job=\"rtc-exporter\",target=\"talk\",vendor=\"talkcloud\"{room}}}'\n            value: 1\n"
        )
    };
    let test = format!(
        "rule_files: ['{}']\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{input}\
         \x20   promql_expr_test:\n\
         \x20     # Within every grace (for:), nothing fires yet.\n\
         \x20     - expr: '{alerts}'\n        eval_time: 4m\n        exp_samples: []\n\
         \x20     # No teacher for 5 minutes in 111111; 333333 empty for 10; the dead room failing\n\
         \x20     # for 10: each alert for its own room, none for the dead room's class.\n\
         \x20     - expr: '{alerts}'\n        eval_time: 11m\n        exp_samples:\n{}{}{}",
        rules.display(),
        firing("RtcClassNoTeacher", "critical", Some("111111")),
        firing("RtcClassRoomEmpty", "warning", Some("333333")),
        firing("RtcExporterRoomsFailing", "warning", None),
    );
    let file = dir.join("one-dead-room.test.yml");
    std::fs::write(&file, &test).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool on the scraped series:\n{}{}\n---\n{test}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{} scraped series: RtcClassNoTeacher (111111), RtcClassRoomEmpty (333333) and RtcExporterRoomsFailing fire; nothing for 222222",
        series.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

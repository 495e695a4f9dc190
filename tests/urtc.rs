//! The exporter against the simulated UCloud URTC API, over real HTTP on loopback.

mod common;

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use common::{all, scrape, start, value, wait_for, wait_polls};
use rtc_exporter::sim::ucloud_urtc::UrtcSim;
use rtc_exporter::sim::{Fault, SimServer};

const T: &str = "urtc";

async fn sim(rooms: usize, seed: u64) -> SimServer {
    let sim = UrtcSim::new(seed, rooms);
    // A frozen scenario: the truth cannot move between a poll and the check.
    sim.clock.freeze(chrono::Utc::now().timestamp());
    SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn urtc(s: &SimServer) -> &UrtcSim {
    s.get::<UrtcSim>().unwrap()
}

fn set_fault(s: &SimServer, fault: Fault) {
    urtc(s).faults.set("QueryURtcOnlineUsers", fault);
}

fn config(s: &SimServer, global: &str) -> String {
    let u = urtc(s);
    let global = if global.contains("  interval:") {
        global.to_string()
    } else {
        format!("  interval: 1s\n{global}")
    };
    format!(
        "global:\n{global}targets:\n  - name: {T}\n    vendor: ucloud_urtc\n    endpoint: {}\n    app_id: {}\n    credentials:\n      public_key: {}\n      private_key: {}\n    capacity: {{ default: 25, rooms: {{ class-001: 5 }} }}\n",
        s.endpoint,
        u.app_id,
        u.public_key,
        u.private_key()
    )
}

fn room_value(text: &str, metric: &str, room: &str) -> Option<f64> {
    value(text, metric, &[("target", T), ("room", room)])
}

/// Every room series equals the simulator's truth for the window it last answered.
fn assert_matches_truth(text: &str, sim: &UrtcSim) {
    let (from, at) = sim.last_window().expect("the simulator answered");
    let truth = sim.truth(from, at);
    assert!(!truth.is_empty(), "the scenario has rooms today");
    assert_eq!(
        all(text, "rtc_room_users").len(),
        truth.len(),
        "one series per room"
    );
    for t in &truth {
        let r = &t.room;
        assert_eq!(
            room_value(text, "rtc_room_users", r),
            Some(t.users as f64),
            "{r} users"
        );
        assert_eq!(
            room_value(text, "rtc_room_peak_users", r),
            Some(t.peak as f64),
            "{r} peak"
        );
        assert_eq!(
            room_value(text, "rtc_room_accumulated_users", r),
            Some(t.accumulated as f64),
            "{r} accumulated"
        );
        assert_eq!(
            room_value(text, "rtc_room_active", r),
            Some(if t.active { 1.0 } else { 0.0 }),
            "{r} active"
        );
    }
    let users: u64 = truth.iter().map(|t| t.users).sum();
    let active = truth.iter().filter(|t| t.active).count();
    assert_eq!(
        value(text, "rtc_users", &[("target", T)]),
        Some(users as f64)
    );
    assert_eq!(
        value(text, "rtc_rooms", &[("target", T)]),
        Some(active as f64)
    );
    assert_eq!(
        room_value(text, "rtc_room_capacity", "class-001"),
        Some(5.0)
    );
}

#[tokio::test]
async fn room_series_equal_the_simulators_truth_across_pages() {
    // 150 rooms list well over 100 calls a day: several pages of 100.
    let s = sim(150, 11).await;
    let exporter = start(&config(&s, "")).await;
    let text = wait_polls(&exporter.url(), T, "success", 1.0).await;
    assert_matches_truth(&text, urtc(&s));
    let pages = value(
        &text,
        "rtc_exporter_vendor_requests_total",
        &[
            ("target", T),
            ("api", "QueryURtcOnlineUsers"),
            ("outcome", "ok"),
        ],
    );
    let (from, at) = urtc(&s).last_window().unwrap_or_default();
    let calls: usize = urtc(&s).truth(from, at).len();
    assert!(calls > 0);
    assert!(pages.unwrap_or(0.0) >= 1.0);
    assert_eq!(
        value(&text, "rtc_exporter_target_up", &[("target", T)]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "rtc_target_info",
            &[("target", T), ("app", &urtc(&s).app_id)]
        ),
        Some(1.0)
    );
    exporter.stop().await.unwrap();
}

#[tokio::test]
async fn paging_walks_every_page() {
    let s = sim(200, 12).await;
    let exporter = start(&config(&s, "")).await;
    let text = wait_polls(&exporter.url(), T, "success", 1.0).await;
    let ok = value(
        &text,
        "rtc_exporter_vendor_requests_total",
        &[
            ("target", T),
            ("api", "QueryURtcOnlineUsers"),
            ("outcome", "ok"),
        ],
    )
    .unwrap_or(0.0);
    let polls = value(
        &text,
        "rtc_exporter_polls_total",
        &[("target", T), ("result", "success")],
    )
    .unwrap_or(0.0);
    // Count the simulator's entries: calls overlapping the window.
    let (from, at) = urtc(&s).last_window().unwrap_or_default();
    let rooms = urtc(&s).truth(from, at).len();
    assert!(
        rooms > 100,
        "the scenario lists {rooms} rooms: more than one page"
    );
    assert!(
        ok >= 2.0 * polls,
        "{ok} requests for {polls} polls: every poll pages"
    );
    assert_matches_truth(&text, urtc(&s));
    exporter.stop().await.unwrap();
}

#[tokio::test]
async fn a_room_that_closes_shows_inactive_and_keeps_its_peak() {
    let s = sim(20, 5).await;
    let exporter = start(&config(&s, "")).await;
    let base = exporter.url();
    let text = wait_polls(&base, T, "success", 1.0).await;
    let (from, at) = urtc(&s).last_window().unwrap();
    let room = urtc(&s)
        .truth(from, at)
        .into_iter()
        .find(|t| t.active && t.users > 0)
        .expect("a room in progress with users");
    let peak = room_value(&text, "rtc_room_peak_users", &room.room).unwrap();
    assert!(urtc(&s).end_room(&room.room));
    let polls = value(
        &text,
        "rtc_exporter_polls_total",
        &[("target", T), ("result", "success")],
    )
    .unwrap();
    // A poll may have been answered between the scrape and end_room: wait for one more.
    let text = wait_polls(&base, T, "success", polls + 2.0).await;
    assert_eq!(room_value(&text, "rtc_room_active", &room.room), Some(0.0));
    assert_eq!(room_value(&text, "rtc_room_users", &room.room), Some(0.0));
    assert_eq!(
        room_value(&text, "rtc_room_peak_users", &room.room),
        Some(peak)
    );
    assert_matches_truth(&text, urtc(&s));
    exporter.stop().await.unwrap();
}

#[tokio::test]
async fn a_wrong_private_key_keeps_last_values_then_drops_them() {
    let s = sim(20, 6).await;
    let exporter = start(&config(&s, "  stale_after: 3\n")).await;
    let base = exporter.url();
    let good = wait_polls(&base, T, "success", 1.0).await;
    let rooms_before = all(&good, "rtc_room_users");
    assert!(!rooms_before.is_empty());
    urtc(&s).set_private_key("0000000000000000000000000000000000000000");

    let text = wait_polls(&base, T, "failure", 1.0).await;
    assert_eq!(
        value(&text, "rtc_exporter_target_up", &[("target", T)]),
        Some(0.0)
    );
    let errors = value(
        &text,
        "rtc_exporter_vendor_errors_total",
        &[("target", T), ("code", "171")],
    );
    assert!(errors.unwrap_or(0.0) >= 1.0, "171 counted");
    assert_eq!(
        all(&text, "rtc_room_users"),
        rooms_before,
        "last good values kept"
    );

    let text = wait_polls(&base, T, "failure", 3.0).await;
    assert!(
        all(&text, "rtc_room_users").is_empty(),
        "room series dropped after stale_after polls"
    );
    assert!(all(&text, "rtc_users").is_empty());
    let failures = value(
        &text,
        "rtc_exporter_polls_total",
        &[("target", T), ("result", "failure")],
    );
    assert_eq!(
        value(
            &text,
            "rtc_exporter_target_consecutive_failures",
            &[("target", T)]
        ),
        failures,
        "every failure since the last success counts"
    );
    let errors_later = value(
        &text,
        "rtc_exporter_vendor_errors_total",
        &[("target", T), ("code", "171")],
    )
    .unwrap_or(0.0);
    assert!(errors_later >= 3.0, "171 keeps being counted");
    let view = exporter.board.view(T).unwrap();
    assert!(
        view.last_error.as_deref().unwrap_or("").contains("171"),
        "{:?}",
        view.last_error
    );
    exporter.stop().await.unwrap();
}

/// Sets a fault, waits for a failed poll, and returns the scrape and the target's last error.
async fn fail_with(fault: Fault, global: &str) -> (String, String, String) {
    let s = sim(10, 7).await;
    set_fault(&s, fault);
    let exporter = start(&config(&s, global)).await;
    let base = exporter.url();
    let text = wait_polls(&base, T, "failure", 1.0).await;
    assert_eq!(
        value(&text, "rtc_exporter_target_up", &[("target", T)]),
        Some(0.0)
    );
    let (status, landing) = common::get(&base, "/").await;
    assert_eq!(status, 200);
    let err = exporter
        .board
        .view(T)
        .unwrap()
        .last_error
        .clone()
        .unwrap_or_default();
    exporter.stop().await.unwrap();
    (text, err, landing)
}

/// A fault fails the poll, is counted under `outcome` and named in the target's last error.
async fn fails_counted_and_named(
    fault: Fault,
    global: &str,
    outcome: &str,
    needle: &str,
) -> String {
    let (text, err, _) = fail_with(fault, global).await;
    assert!(requests(&text, outcome) >= 1.0, "counted as {outcome}");
    assert!(err.contains(needle), "{err}");
    text
}

/// A fault the exporter copes with: the first successful poll's scrape.
async fn polled_with(fault: Fault, seed: u64) -> (SimServer, rtc_exporter::app::Running, String) {
    let s = sim(10, seed).await;
    set_fault(&s, fault);
    let exporter = start(&config(&s, "")).await;
    let text = wait_polls(&exporter.url(), T, "success", 1.0).await;
    (s, exporter, text)
}

fn requests(text: &str, outcome: &str) -> f64 {
    value(
        text,
        "rtc_exporter_vendor_requests_total",
        &[("target", T), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn throttling_is_counted_and_named() {
    let fault = Fault {
        code: Some("153".into()),
        ..Fault::default()
    };
    let (text, err, landing) = fail_with(fault, "").await;
    assert!(requests(&text, "throttled") >= 1.0);
    assert!(
        value(
            &text,
            "rtc_exporter_vendor_errors_total",
            &[("target", T), ("code", "153")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(err.contains("vendor error 153"), "{err}");
    assert!(landing.contains("vendor error 153"));
}

#[tokio::test]
async fn http_5xx_is_named() {
    let fault = Fault {
        http_status: Some(502),
        ..Fault::default()
    };
    fails_counted_and_named(fault, "", "error", "HTTP 502").await;
}

#[tokio::test]
async fn malformed_json_is_named() {
    let fault = Fault {
        malformed: true,
        ..Fault::default()
    };
    fails_counted_and_named(fault, "", "malformed", "malformed response").await;
}

#[tokio::test]
async fn retcode_as_a_string_is_understood() {
    let fault = Fault {
        code_as_string: true,
        ..Fault::default()
    };
    let (s, exporter, text) = polled_with(fault, 8).await;
    assert_matches_truth(&text, urtc(&s));
    exporter.stop().await.unwrap();
}

#[tokio::test]
async fn latency_beyond_poll_timeout_fails_the_poll_and_metrics_answer_meanwhile() {
    let s = sim(10, 9).await;
    set_fault(
        &s,
        Fault {
            latency: Duration::from_secs(3),
            ..Fault::default()
        },
    );
    let exporter = start(&config(
        &s,
        "  interval: 5s\n  poll_timeout: 1500ms\n  request_timeout: 10s\n",
    ))
    .await;
    let base = exporter.url();
    // A request is being held by the simulator: the poll is in flight.
    wait_for(
        "a request at the simulator",
        Duration::from_secs(15),
        || async { (s.served.load(std::sync::atomic::Ordering::Relaxed) > 0).then_some(()) },
    )
    .await;
    let text = scrape(&base).await;
    assert_eq!(
        value(
            &text,
            "rtc_exporter_polls_total",
            &[("target", T), ("result", "failure")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "rtc_exporter_polls_total",
            &[("target", T), ("result", "success")]
        ),
        Some(0.0)
    );
    let text = wait_polls(&base, T, "failure", 1.0).await;
    assert_eq!(
        value(&text, "rtc_exporter_target_up", &[("target", T)]),
        Some(0.0)
    );
    let err = exporter
        .board
        .view(T)
        .unwrap()
        .last_error
        .clone()
        .unwrap_or_default();
    assert!(err.contains("poll_timeout"), "{err}");
    exporter.stop().await.unwrap();
}

#[tokio::test]
async fn request_timeout_is_counted_as_timeout() {
    let fault = Fault {
        latency: Duration::from_secs(3),
        ..Fault::default()
    };
    let (text, err, _) = fail_with(
        fault,
        "  interval: 5s\n  request_timeout: 500ms\n  poll_timeout: 4s\n",
    )
    .await;
    assert!(requests(&text, "timeout") >= 1.0);
    assert!(err.contains("timed out"), "{err}");
}

#[tokio::test]
async fn ready_after_the_first_poll_health_and_errors() {
    let s = sim(10, 10).await;
    set_fault(
        &s,
        Fault {
            latency: Duration::from_millis(1500),
            ..Fault::default()
        },
    );
    let exporter = start(&config(&s, "  interval: 10s\n")).await;
    let base = exporter.url();
    let (status, body) = common::get(&base, "/-/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(common::get(&base, "/-/healthy").await.0, 200);
    wait_for("ready", Duration::from_secs(20), || {
        let base = base.clone();
        async move { (common::get(&base, "/-/ready").await.0 == 200).then_some(()) }
    })
    .await;
    assert_eq!(common::get(&base, "/nope").await.0, 404);
    let post = reqwest::Client::new()
        .post(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status().as_u16(), 405);
    exporter.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_are_gzipped_when_asked() {
    let s = sim(10, 13).await;
    let exporter = start(&config(&s, "")).await;
    let base = exporter.url();
    wait_polls(&base, T, "success", 1.0).await;
    let r = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap_or("")),
        Some("gzip")
    );
    let bytes = r.bytes().await.unwrap();
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert!(plain.contains("rtc_room_users{"));
    let r = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    exporter.stop().await.unwrap();
}

#[tokio::test]
async fn promtool_finds_nothing_wrong_with_live_metrics() {
    let s = sim(30, 14).await;
    let exporter = start(&config(&s, "")).await;
    let base = exporter.url();
    let text = wait_polls(&base, T, "success", 1.0).await;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (.ci/run installs Debian's prometheus package)");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {report}");
    assert_eq!(report.trim(), "", "promtool reports nothing");
    exporter.stop().await.unwrap();
}

#[tokio::test]
async fn an_overlapping_tick_is_skipped_and_counted() {
    let s = sim(5, 15).await;
    set_fault(
        &s,
        Fault {
            latency: Duration::from_millis(1200),
            ..Fault::default()
        },
    );
    let exporter = start(&config(&s, "  interval: 300ms\n  poll_timeout: 5s\n")).await;
    let text = wait_polls(&exporter.url(), T, "overlap", 2.0).await;
    let view = exporter.board.view(T).unwrap();
    assert!(view.polled, "the slow poll finishes: {text}");
    exporter.stop().await.unwrap();
}

#[tokio::test]
async fn a_cron_schedule_polls_and_reports_its_interval() {
    let s = sim(5, 16).await;
    let u = urtc(&s);
    let cfg = format!(
        "targets:\n  - name: {T}\n    vendor: ucloud_urtc\n    schedule: \"*/2 * * * * *\"\n    endpoint: {}\n    app_id: {}\n    credentials: {{ public_key: {}, private_key: {} }}\n",
        s.endpoint, u.app_id, u.public_key, u.private_key()
    );
    let exporter = start(&cfg).await;
    // The first poll at start, then the cron slots.
    let text = wait_polls(&exporter.url(), T, "success", 3.0).await;
    assert_eq!(
        value(
            &text,
            "rtc_exporter_target_interval_seconds",
            &[("target", T)]
        ),
        Some(2.0)
    );
    exporter.stop().await.unwrap();
}

#[tokio::test]
async fn rooms_over_max_rooms_count_in_totals_only() {
    let s = sim(40, 17).await;
    let exporter = start(&config(&s, "  max_rooms: 5\n")).await;
    let text = wait_polls(&exporter.url(), T, "success", 1.0).await;
    let (from, at) = urtc(&s).last_window().unwrap();
    let truth = urtc(&s).truth(from, at);
    assert!(truth.len() > 5);
    assert_eq!(all(&text, "rtc_room_users").len(), 5);
    assert_eq!(
        value(&text, "rtc_exporter_target_rooms_dropped", &[("target", T)]),
        Some((truth.len() - 5) as f64)
    );
    let users: u64 = truth.iter().map(|t| t.users).sum();
    assert_eq!(
        value(&text, "rtc_users", &[("target", T)]),
        Some(users as f64)
    );
    // The busiest rooms keep their series.
    let mut busiest: Vec<_> = truth.iter().map(|t| t.users).collect();
    busiest.sort_unstable_by(|a, b| b.cmp(a));
    let shown: f64 = all(&text, "rtc_room_users").iter().map(|s| s.value).sum();
    assert_eq!(shown, busiest[..5].iter().sum::<u64>() as f64);
    exporter.stop().await.unwrap();
}

#[tokio::test]
async fn a_connection_reset_is_a_transport_error() {
    let fault = Fault {
        reset: true,
        ..Fault::default()
    };
    fails_counted_and_named(fault, "", "transport", "transport error").await;
}

#[tokio::test]
async fn entries_with_only_room_and_num_are_read() {
    let fault = Fault {
        missing_fields: true,
        ..Fault::default()
    };
    let (s, exporter, text) = polled_with(fault, 18).await;
    let (from, at) = urtc(&s).last_window().unwrap();
    // Without RoomStatus, PeekAmount and AccumulationAmount: users from Num, a room with
    // users counts as in progress, and the day's figures are at least the users now.
    for t in urtc(&s).truth(from, at) {
        assert_eq!(
            room_value(&text, "rtc_room_users", &t.room),
            Some(t.users as f64),
            "{}",
            t.room
        );
        let peak = room_value(&text, "rtc_room_peak_users", &t.room).unwrap_or(-1.0);
        assert!(peak >= t.users as f64);
        assert_eq!(
            room_value(&text, "rtc_room_active", &t.room),
            Some(if t.users > 0 { 1.0 } else { 0.0 })
        );
    }
    exporter.stop().await.unwrap();
}

/// The hostile answers review found: each one is a failed request (never rooms written as 0),
/// the target goes down, and every room keeps its last good values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contradicting_or_oversized_answers_never_write_zeros() {
    let cases: [(&str, Fault, &str); 4] = [
        (
            "a null list with a total",
            Fault {
                null_list: true,
                ..Fault::default()
            },
            "malformed",
        ),
        (
            // An empty page ends the listing (TotalCount is only counted as an anomaly);
            // what fails it is that it lost the calls the first poll listed.
            "empty pages before the declared end, losing calls listed earlier",
            Fault {
                empty_later_pages: true,
                ..Fault::default()
            },
            "malformed",
        ),
        (
            "a since-midnight listing that lost its calls",
            Fault {
                lose_rows: true,
                ..Fault::default()
            },
            "malformed",
        ),
        (
            "a valid answer followed by 64 MiB of whitespace",
            Fault {
                pad_bytes: 64 << 20,
                ..Fault::default()
            },
            "too_large",
        ),
    ];
    for (what, fault, outcome) in cases {
        // 180 rooms: over 100 calls running now, so more than one page at any time of day
        // (90 listed one page shortly after UTC midnight).
        let s = sim(180, 31).await;
        let exporter = start(&config(&s, "  stale_after: 100\n")).await;
        let base = exporter.url();
        let good = wait_polls(&base, T, "success", 1.0).await;
        let rooms: Vec<(String, f64)> = all(&good, "rtc_room_users")
            .into_iter()
            .map(|s| (s.label("room").unwrap_or("").to_string(), s.value))
            .collect();
        let (from, at) = urtc(&s).last_window().expect("answered");
        let calls: usize = urtc(&s).truth(from, at).len();
        assert!(
            calls > 0 && rooms.len() == calls,
            "{what}: every room shown"
        );
        assert!(
            urtc(&s).call_count(from, at) > 100,
            "{what}: more than one page of calls"
        );
        assert!(rooms.iter().any(|(_, v)| *v > 0.0), "{what}: someone is in");
        set_fault(&s, fault);
        let text = wait_polls(&base, T, "failure", 1.0).await;
        assert_eq!(
            value(&text, "rtc_exporter_target_up", &[("target", T)]),
            Some(0.0),
            "{what}"
        );
        assert!(
            requests(&text, outcome) >= 1.0,
            "{what}: counted as {outcome}"
        );
        for (room, before) in &rooms {
            assert_eq!(
                room_value(&text, "rtc_room_users", room),
                Some(*before),
                "{what}: {room} kept its last value"
            );
        }
        exporter.stop().await.unwrap();
    }
}

/// A vendor that reset its data: the listing lost the day's earlier calls, poll after poll.
/// The first four polls fail (`malformed`, no figure written as 0); the fifth believes the
/// listing, counts `lost_rows`, and the target is up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_keeps_losing_calls_is_believed_on_the_fifth_poll() {
    let s = sim(40, 37).await;
    let exporter = start(&config(&s, "  stale_after: 100\n")).await;
    let base = exporter.url();
    wait_polls(&base, T, "success", 1.0).await;
    set_fault(
        &s,
        Fault {
            lose_rows: true,
            ..Fault::default()
        },
    );
    let text = wait_polls(&base, T, "failure", 4.0).await;
    let successes = value(
        &text,
        "rtc_exporter_polls_total",
        &[("target", T), ("result", "success")],
    )
    .unwrap_or(0.0);
    let text = wait_polls(&base, T, "success", successes + 1.0).await;
    assert_eq!(
        value(&text, "rtc_exporter_target_up", &[("target", T)]),
        Some(1.0)
    );
    let believed: f64 = all(&text, "rtc_exporter_vendor_anomalies_total")
        .iter()
        .filter(|s| s.label("kind") == Some("lost_rows"))
        .map(|s| s.value)
        .sum();
    assert_eq!(believed, 1.0, "counted once, when believed");
    let failures = value(
        &text,
        "rtc_exporter_polls_total",
        &[("target", T), ("result", "failure")],
    )
    .unwrap_or(0.0);
    assert!(
        (4.0..=5.0).contains(&failures),
        "{failures} failed polls before the listing was believed"
    );
    exporter.stop().await.unwrap();
}

//! The exporter against the simulated Talk-cloud API, over real HTTP on loopback. The
//! simulator's clock and the exporter's clock are both frozen and moved together, so the truth
//! cannot move between a poll and the check.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{all, get, scrape, value, wait_for, wait_polls};
use rtc_exporter::app::{self, Running};
use rtc_exporter::clock::ManualClock;
use rtc_exporter::clouds::talkcloud::LOOKBACK;
use rtc_exporter::model::{Device, Role};
use rtc_exporter::sim::talkcloud::{TalkSim, Truth, API};
use rtc_exporter::sim::{Fault, SimServer};

const T: &str = "talk";
/// 2026-11-20 12:00 UTC: every class of the scenario lies within the (UTC) day.
const T0: i64 = 1_795_176_000;
const MIDNIGHT: i64 = T0 - 12 * 3600;
const BIG: &str = "7100000001";
const EARLY: &str = "7100000002";
const LATER: &str = "7100000003";
const OVER: &str = "open-day";

async fn sim(seed: u64) -> SimServer {
    let sim = TalkSim::at(seed, T0);
    sim.clock.freeze(T0);
    SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn talk(s: &SimServer) -> &TalkSim {
    s.get::<TalkSim>().unwrap()
}

/// A one-target config; `rooms` is the YAML list.
fn config(s: &SimServer, key: &str, rooms: &str) -> String {
    format!(
        "global:\n  interval: 1s\n  poll_timeout: 20s\n  request_timeout: 5s\ntargets:\n  - name: {T}\n    vendor: talkcloud\n    endpoint: {}\n    credentials:\n      key: \"{key}\"\n    rooms: {rooms}\n",
        s.endpoint
    )
}

/// Starts the exporter with its clock at `T0`.
async fn start(text: &str) -> (Running, Arc<ManualClock>) {
    start_at(text, T0).await
}

/// Moves both clocks to `t`.
fn set_time(s: &SimServer, clock: &ManualClock, t: i64) {
    talk(s).clock.freeze(t);
    clock.set(t);
}

fn room_value(text: &str, metric: &str, room: &str) -> Option<f64> {
    value(text, metric, &[("target", T), ("room", room)])
}

/// Where a room's series differ from the truth.
fn room_mismatch(text: &str, room: &str, t: &Truth) -> Vec<String> {
    let mut bad = Vec::new();
    let mut check = |what: &str, got: Option<f64>, want: u64| {
        if got != Some(want as f64) {
            bad.push(format!("{room} {what}: {got:?}, truth {want}"));
        }
    };
    check("users", room_value(text, "rtc_room_users", room), t.users);
    check(
        "peak",
        room_value(text, "rtc_room_peak_users", room),
        t.peak,
    );
    check(
        "accumulated",
        room_value(text, "rtc_room_accumulated_users", room),
        t.accumulated,
    );
    check(
        "active",
        room_value(text, "rtc_room_active", room),
        u64::from(t.users > 0),
    );
    let roles = all(text, "rtc_room_role_users")
        .into_iter()
        .filter(|s| s.label("target") == Some(T) && s.label("room") == Some(room))
        .count();
    if t.accumulated == 0 {
        // Nobody today: the vendor told no roles, so the room has no role series.
        if roles != 0 {
            bad.push(format!("{room}: {roles} role series for an empty room"));
        }
        return bad;
    }
    for role in Role::ALL {
        let got = value(
            text,
            "rtc_room_role_users",
            &[("target", T), ("room", room), ("role", role.label())],
        );
        match (t.roles.get(&role), got) {
            (Some(want), _) => check(&format!("role {}", role.label()), got, *want),
            // A role no class has (a live channel's broadcaster): no series at all.
            (None, Some(v)) => check(
                &format!("role {} (Talk-cloud never names it) at {v}", role.label()),
                None,
                0,
            ),
            (None, None) => {}
        }
    }
    bad
}

/// Where the target's totals and devices differ from the truth.
fn target_mismatch(text: &str, t: &Truth) -> Vec<String> {
    let mut bad = Vec::new();
    let mut check = |what: &str, got: Option<f64>, want: u64| {
        if got != Some(want as f64) {
            bad.push(format!("target {what}: {got:?}, truth {want}"));
        }
    };
    let target = [("target", T)];
    check("users", value(text, "rtc_users", &target), t.users);
    check("peak", value(text, "rtc_peak_users", &target), t.peak);
    check(
        "accumulated",
        value(text, "rtc_accumulated_users", &target),
        t.accumulated,
    );
    for d in Device::ALL {
        let got = value(
            text,
            "rtc_device_users",
            &[("target", T), ("device", d.label())],
        );
        check(&format!("device {}", d.label()), got, t.devices[&d]);
    }
    bad
}

fn assert_truth(text: &str, sim: &TalkSim, rooms: &[&str], at: i64) {
    assert_truth_since(text, sim, rooms, MIDNIGHT, at)
}

/// As [`assert_truth`], for a day that began at `midnight`.
fn assert_truth_since(text: &str, sim: &TalkSim, rooms: &[&str], midnight: i64, at: i64) {
    let mut bad = Vec::new();
    for room in rooms {
        bad.extend(room_mismatch(text, room, &sim.truth(room, midnight, at)));
    }
    bad.extend(target_mismatch(
        text,
        &sim.target_truth(rooms, midnight, at),
    ));
    assert!(
        bad.is_empty(),
        "the exporter differs from the simulator:\n{}",
        bad.join("\n")
    );
}

fn up(text: &str) -> Option<f64> {
    value(text, "rtc_exporter_target_up", &[("target", T)])
}

fn requests(text: &str, outcome: &str) -> f64 {
    value(
        text,
        "rtc_exporter_vendor_requests_total",
        &[("target", T), ("api", API), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

fn errors(text: &str, code: &str) -> f64 {
    value(
        text,
        "rtc_exporter_vendor_errors_total",
        &[("target", T), ("api", API), ("code", code)],
    )
    .unwrap_or(0.0)
}

/// Waits for two more polls with `result` than have finished now: the first may have started
/// before a change (a clock moved, a fault set), the second started after it.
async fn two_more(base: &str, result: &str) -> String {
    let now = polls(&common::scrape(base).await, result);
    wait_polls(base, T, result, now + 2.0).await
}

fn polls(text: &str, result: &str) -> f64 {
    value(
        text,
        "rtc_exporter_polls_total",
        &[("target", T), ("result", result)],
    )
    .unwrap_or(0.0)
}

const ALL_ROOMS: &str =
    "[\"7100000001\", \"7100000002\", \"7100000003\", { thirdroomid: open-day }]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_class_over_four_pages_equals_the_truth() {
    let s = sim(1).await;
    let v = talk(&s);
    let big = v.truth(BIG, MIDNIGHT, T0);
    assert!(big.records > 600, "{} records: four pages", big.records);
    let (exporter, _clock) = start(&config(&s, v.key(), ALL_ROOMS)).await;
    let text = wait_polls(&exporter.url(), T, "success", 1.0).await;
    assert_truth(&text, v, &[BIG, EARLY, LATER, OVER], T0);
    assert_eq!(up(&text), Some(1.0));
    // The first poll read the day so far: four pages of the big class.
    let first: Vec<_> = v
        .log()
        .into_iter()
        .filter(|l| l.serial == BIG && l.start == MIDNIGHT - LOOKBACK)
        .map(|l| l.page)
        .collect();
    assert_eq!(first, [1, 2, 3, 4]);
    // What the figures rest on: the early class's teacher left while viewers stay, the big
    // class's peak is not its users now, and the class that ended has a peak but nobody in.
    let early = v.truth(EARLY, MIDNIGHT, T0);
    assert_eq!(early.roles[&Role::Teacher], 0);
    assert!(early.users > 0);
    assert!(big.peak > big.users);
    let over = v.truth(OVER, MIDNIGHT, T0);
    assert!(over.peak > 0 && over.users == 0);
    assert_eq!(all(&text, "rtc_room_users").len(), 4);
    assert_eq!(
        value(
            &text,
            "rtc_target_info",
            &[("target", T), ("vendor", "talkcloud")]
        ),
        Some(1.0)
    );
    exporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_who_enters_before_a_poll_and_leaves_after_it_is_seen_leaving() {
    let s = sim(2).await;
    let v = talk(&s);
    let t2 = T0 + 10 * 60;
    let leavers = v.left_between(BIG, T0, t2);
    assert!(!leavers.is_empty(), "viewers in at t1 who leave before t2");
    let (t1_truth, t2_truth) = (v.truth(BIG, MIDNIGHT, T0), v.truth(BIG, MIDNIGHT, t2));
    assert_ne!(t1_truth.users, t2_truth.users);
    let rooms = format!("[{BIG}, {EARLY}]");
    let (exporter, clock) = start(&config(&s, v.key(), &rooms)).await;
    let base = exporter.url();
    let text = wait_polls(&base, T, "success", 1.0).await;
    assert_truth(&text, v, &[BIG, EARLY], T0);

    let before = v.log().len();
    set_time(&s, &clock, t2);
    let text = two_more(&base, "success").await;
    assert_truth(&text, v, &[BIG, EARLY], t2);
    // Later polls asked the last poll's end (less the overlap) and narrow windows around the
    // enter times of viewers still in, not from midnight, and those windows hold every leaver.
    let later: Vec<_> = v.log()[before..]
        .iter()
        .filter(|l| l.serial == BIG && l.page == 1)
        .cloned()
        .collect();
    assert!(later.iter().any(|l| l.end == t2), "{later:?}");
    for l in &later {
        assert!(l.start > MIDNIGHT, "{l:?}");
    }
    for s in &leavers {
        assert!(
            later.iter().any(|l| l.start <= s.join && s.join <= l.end),
            "{s:?} in none of {later:?}"
        );
    }
    exporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_as_strings_are_read() {
    let s = sim(3).await;
    let v = talk(&s);
    v.faults.set(
        API,
        Fault {
            code_as_string: true,
            ..Fault::default()
        },
    );
    let (exporter, _clock) = start(&config(&s, v.key(), &format!("[{BIG}]"))).await;
    let text = wait_polls(&exporter.url(), T, "success", 1.0).await;
    assert_truth(&text, v, &[BIG], T0);
    assert_eq!(requests(&text, "malformed"), 0.0);
    exporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_spelling_without_count_is_read() {
    let s = sim(4).await;
    let v = talk(&s);
    v.faults.set(
        API,
        Fault {
            missing_fields: true,
            ..Fault::default()
        },
    );
    let (exporter, _clock) = start(&config(&s, v.key(), &format!("[{EARLY}]"))).await;
    let text = wait_polls(&exporter.url(), T, "success", 1.0).await;
    assert_truth(&text, v, &[EARLY], T0);
    exporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_is_an_empty_room_and_the_target_stays_up() {
    let s = sim(5).await;
    let v = talk(&s);
    let (exporter, _clock) = start(&config(&s, v.key(), &format!("[{LATER}]"))).await;
    let text = wait_polls(&exporter.url(), T, "success", 2.0).await;
    assert_eq!(up(&text), Some(1.0));
    assert_truth(&text, v, &[LATER], T0);
    assert_eq!(room_value(&text, "rtc_room_users", LATER), Some(0.0));
    assert_eq!(room_value(&text, "rtc_room_active", LATER), Some(0.0));
    assert_eq!(errors(&text, "other"), 0.0);
    assert!(requests(&text, "ok") >= 2.0);
    assert_eq!(requests(&text, "error"), 0.0);
    exporter.stop().await.unwrap();
}

/// Everything every test of this binary logs, at every level.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| Capture)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_4102_counted_the_target_down_and_the_key_shown_nowhere() {
    capture_logs();
    let s = sim(6).await;
    let v = talk(&s);
    let wrong = "f00dfeedc0ffee42";
    assert_ne!(wrong, v.key());
    let (exporter, _clock) = start(&config(&s, wrong, ALL_ROOMS)).await;
    let base = exporter.url();
    let text = wait_polls(&base, T, "failure", 2.0).await;
    assert!(errors(&text, "4102") >= 4.0, "every room counts: {text}");
    assert_eq!(up(&text), Some(0.0));
    assert!(all(&text, "rtc_room_users").is_empty());
    let landing = get(&base, "/").await.1;
    assert!(
        landing.contains("4102"),
        "the error is on the page: {landing}"
    );
    let view = exporter.board.view(T).unwrap();
    let error = view.last_error.clone().unwrap_or_default();
    assert!(error.contains("4102"), "{error}");
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).to_string();
    assert!(logs.contains("vendor request failed"), "logs captured");
    assert!(logs.contains("4102"));
    for (what, haystack) in [
        ("/metrics", &text),
        ("/", &landing),
        ("the last error", &error),
        ("a log line", &logs),
        ("the view", &format!("{view:?}")),
    ] {
        assert!(!haystack.contains(wrong), "the key in {what}");
        assert!(!haystack.contains(v.key()), "the right key in {what}");
    }
    exporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_room_keeps_its_last_values_while_the_others_are_published() {
    capture_logs();
    let s = sim(7).await;
    let v = talk(&s);
    let t2 = T0 + 10 * 60;
    let early_t1 = v.truth(EARLY, MIDNIGHT, T0);
    assert_ne!(
        early_t1,
        v.truth(EARLY, MIDNIGHT, t2),
        "the early class moves"
    );
    let rooms = format!("[{BIG}, {EARLY}]");
    let (exporter, clock) = start(&config(&s, v.key(), &rooms)).await;
    let base = exporter.url();
    wait_polls(&base, T, "success", 1.0).await;

    v.faults.set(
        &format!("{API}:{EARLY}"),
        Fault {
            code: Some("3001".into()),
            ..Fault::default()
        },
    );
    set_time(&s, &clock, t2);
    // Partial polls: up (the other room answered), the failing room named.
    let text = two_more(&base, "success").await;
    let mut bad = room_mismatch(&text, BIG, &v.truth(BIG, MIDNIGHT, t2));
    bad.extend(room_mismatch(&text, EARLY, &early_t1));
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert_eq!(up(&text), Some(1.0));
    assert!(value(
        &text,
        "rtc_exporter_room_refresh_failures",
        &[("target", T), ("room", EARLY)]
    )
    .is_some_and(|n| n >= 1.0));
    assert_eq!(
        value(&text, "rtc_exporter_target_rooms_failed", &[("target", T)]),
        Some(1.0)
    );
    assert!(errors(&text, "3001") >= 2.0);
    let error = exporter.board.view(T).unwrap().last_error.clone();
    assert!(
        error
            .as_deref()
            .unwrap_or("")
            .contains(&format!("room {EARLY}")),
        "{error:?}"
    );

    // Once it answers again, it catches up.
    v.faults.clear();
    let text = two_more(&base, "success").await;
    assert_truth(&text, v, &[BIG, EARLY], t2);
    exporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_answer_is_malformed_and_an_unknown_room_is_4007() {
    let s = sim(8).await;
    let v = talk(&s);
    v.faults.set(
        &format!("{API}:{EARLY}"),
        Fault {
            malformed: true,
            ..Fault::default()
        },
    );
    let rooms = format!("[{BIG}, {EARLY}, \"7199999999\"]");
    let (exporter, _clock) = start(&config(&s, v.key(), &rooms)).await;
    // A partial poll: the big room answered.
    let text = wait_polls(&exporter.url(), T, "success", 1.0).await;
    assert_eq!(up(&text), Some(1.0));
    assert!(requests(&text, "malformed") >= 1.0, "{text}");
    assert!(errors(&text, "4007") >= 1.0, "{text}");
    assert_eq!(
        value(&text, "rtc_exporter_target_rooms_failed", &[("target", T)]),
        Some(2.0)
    );
    let bad = room_mismatch(&text, BIG, &v.truth(BIG, MIDNIGHT, T0));
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    exporter.stop().await.unwrap();
}

/// A poll cut short by `poll_timeout` goes on with the rooms answered longest ago: over
/// several polls every room gets its series, not always the same first ones. (Five one-page
/// rooms, four asked at once, about two requests a poll.)
#[tokio::test]
async fn polls_cut_short_cover_every_room_in_turn() {
    let s = sim(7).await;
    let key = talk(&s).key().to_string();
    let rooms = format!(
        "[\"{EARLY}\", \"{LATER}\", \"7100000004\", {{thirdroomid: class-early}}, {{thirdroomid: class-later}}]"
    );
    let text = config(&s, &key, &rooms)
        .replace("poll_timeout: 20s", "poll_timeout: 1500ms")
        .replace("interval: 1s", "interval: 2s")
        .replace("    rooms:", "    qps: 1\n    rooms:");
    let (running, _clock) = start(&text).await;
    let base = running.url();
    let text = wait_for(
        "every room answered once",
        Duration::from_secs(60),
        || async {
            let text = scrape(&base).await;
            let done = [
                "7100000002",
                "7100000003",
                "7100000004",
                "class-early",
                "class-later",
            ]
            .iter()
            .all(|r| room_value(&text, "rtc_room_peak_users", r).is_some());
            done.then_some(text)
        },
    )
    .await;
    // About two requests a poll: five rooms took several polls, each cut short (a partial
    // poll counts as a success).
    let polls = value(
        &text,
        "rtc_exporter_polls_total",
        &[("target", T), ("result", "success")],
    );
    assert!(
        polls.unwrap_or(0.0) >= 2.0,
        "the polls were cut short: {text}"
    );
    running.stop().await.unwrap();
}

/// Two simulators of one scenario, laid out around the next UTC midnight (the big class runs
/// across it), with their exporters: a control that runs throughout and a subject that is
/// restarted.
const NEXT_MIDNIGHT: i64 = MIDNIGHT + 86_400;

async fn sim_at(seed: u64, t0: i64, now: i64) -> SimServer {
    let sim = TalkSim::at(seed, t0);
    sim.clock.freeze(now);
    SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn start_at(text: &str, at: i64) -> (Running, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at(at));
    let running = app::start_with_clock(
        common::config(text),
        &["127.0.0.1:0".to_string()],
        "/metrics",
        clock.clone(),
    )
    .await
    .expect("exporter starts");
    (running, clock)
}

/// The windows (room, start, end) a simulator was asked from its `from`th request on.
fn windows_from(s: &SimServer, from: usize) -> std::collections::BTreeSet<(String, i64, i64)> {
    talk(s).log()[from..]
        .iter()
        .map(|l| (l.serial.clone(), l.start, l.end))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_just_after_midnight_keeps_users_roles_and_cursors_against_a_control() {
    let rooms = ["7100000001", "7100000002", "7100000003"];
    let list = "[\"7100000001\", \"7100000002\", \"7100000003\"]";
    let dir = std::env::temp_dir().join(format!("rtc-talk-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    let before = NEXT_MIDNIGHT - 10 * 60;
    let control_sim = sim_at(7, NEXT_MIDNIGHT, before).await;
    let subject_sim = sim_at(7, NEXT_MIDNIGHT, before).await;
    let text = |s: &SimServer, timeout: &str, state_file: bool| {
        let mut c = config(s, talk(s).key(), list)
            .replace(
                "request_timeout: 5s",
                &format!("request_timeout: {timeout}"),
            )
            .replace("global:\n", "global:\n  timezone: UTC\n");
        if state_file {
            c = c.replace(
                "global:\n",
                &format!("global:\n  state_file: {}\n", state.display()),
            );
        }
        c
    };
    let (control, control_clock) = start_at(&text(&control_sim, "5s", false), before).await;
    let path = dir.join("exporter.yaml");
    std::fs::write(&path, text(&subject_sim, "5s", true)).unwrap();
    // Loaded from a file, so it can be reloaded.
    let subject_clock = Arc::new(ManualClock::at(before));
    let subject = app::start_with_clock(
        rtc_exporter::config::load(&path).unwrap(),
        &["127.0.0.1:0".to_string()],
        "/metrics",
        subject_clock.clone(),
    )
    .await
    .unwrap();
    let both = |t: i64| {
        talk(&control_sim).clock.freeze(t);
        talk(&subject_sim).clock.freeze(t);
        control_clock.set(t);
        subject_clock.set(t);
    };
    two_more(&control.url(), "success").await;
    two_more(&subject.url(), "success").await;

    // Just after midnight, both poll the new day.
    let after = NEXT_MIDNIGHT + 5 * 60;
    both(after);
    let control_from = talk(&control_sim).log().len();
    let text_c = two_more(&control.url(), "success").await;
    two_more(&subject.url(), "success").await;
    assert_truth_since(&text_c, talk(&control_sim), &rooms, NEXT_MIDNIGHT, after);
    let control_windows = windows_from(&control_sim, control_from);

    // A key that shapes polls changes: the subject's target restarts, its client is new.
    std::fs::write(&path, text(&subject_sim, "6s", true)).unwrap();
    let report = subject.reload().await.unwrap();
    assert_eq!(report.restarted, vec![T.to_string()], "{report:?}");
    let subject_from = talk(&subject_sim).log().len();
    let text_s = two_more(&subject.url(), "success").await;
    assert_truth_since(&text_s, talk(&subject_sim), &rooms, NEXT_MIDNIGHT, after);
    // Its cursors carried over: it asks what the control asks at the same time, never the
    // first listing's day and a half again.
    let asked = windows_from(&subject_sim, subject_from);
    assert!(
        asked.is_subset(&control_windows),
        "after the restart: {asked:?}\nthe control: {control_windows:?}"
    );
    let first = NEXT_MIDNIGHT - LOOKBACK;
    assert!(
        asked.iter().all(|(_, start, _)| *start > first),
        "{asked:?}"
    );

    // Three minutes on (a viewer leaves), then the subject's process restarts from its state
    // file: the same again.
    let later = after + 3 * 60;
    both(later);
    let control_from = talk(&control_sim).log().len();
    let text_c = two_more(&control.url(), "success").await;
    two_more(&subject.url(), "success").await;
    let control_windows = windows_from(&control_sim, control_from);
    subject.stop().await.unwrap();
    let saved = rtc_exporter::state::load_target(&state, T)
        .unwrap()
        .unwrap();
    assert!(saved.cursors.is_some(), "{saved:?}");
    let subject_from = talk(&subject_sim).log().len();
    let (subject, _clock) = start_at(&text(&subject_sim, "6s", true), later).await;
    let text_s = two_more(&subject.url(), "success").await;
    let asked = windows_from(&subject_sim, subject_from);
    assert!(
        asked.is_subset(&control_windows),
        "after the restart: {asked:?}\nthe control: {control_windows:?}"
    );
    for text in [&text_c, &text_s] {
        assert_truth_since(text, talk(&control_sim), &rooms, NEXT_MIDNIGHT, later);
    }

    // A fresh exporter (no state) started now still sees who is in since before midnight.
    let fresh_sim = sim_at(7, NEXT_MIDNIGHT, later).await;
    let (fresh, _clock) = start_at(&text(&fresh_sim, "5s", false), later).await;
    let text_f = two_more(&fresh.url(), "success").await;
    assert_truth_since(&text_f, talk(&fresh_sim), &rooms, NEXT_MIDNIGHT, later);
    assert!(
        talk(&fresh_sim)
            .truth("7100000001", NEXT_MIDNIGHT, later)
            .users
            > 0,
        "the big class is in progress across midnight"
    );

    for e in [control, subject, fresh] {
        e.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_longer_than_one_poll_is_read_over_several() {
    // One request a second and a poll cut after one second: the big class's four pages never
    // fit in one poll. Each poll goes on from the page the last one reached.
    let s = sim(11).await;
    let v = talk(&s);
    let text = config(&s, v.key(), &format!("[{BIG}]"))
        .replace("interval: 1s", "interval: 2s")
        .replace("poll_timeout: 20s", "poll_timeout: 1s")
        .replace("request_timeout: 5s", "request_timeout: 1s")
        .replace("    rooms:", "    qps: 1\n    rooms:");
    let (exporter, _clock) = start(&text).await;
    let text = wait_for(
        "the big class read whole",
        Duration::from_secs(60),
        || async {
            let text = scrape(&exporter.url()).await;
            room_value(&text, "rtc_room_users", BIG).map(|_| text)
        },
    )
    .await;
    assert_truth(&text, v, &[BIG], T0);
    // Pages 1 to 4 of the first listing, each asked once, over more than one poll.
    let first: Vec<_> = v
        .log()
        .into_iter()
        .filter(|l| l.start == MIDNIGHT - LOOKBACK)
        .map(|l| l.page)
        .collect();
    assert_eq!(first, [1, 2, 3, 4]);
    let polls: f64 = all(&text, "rtc_exporter_polls_total")
        .iter()
        .filter(|s| s.label("target") == Some(T))
        .map(|s| s.value)
        .sum();
    assert!(polls >= 2.0, "{polls} polls");
    exporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_keeps_losing_users_still_in_is_believed_on_the_fifth_poll() {
    let s = sim(13).await;
    let v = talk(&s);
    let (exporter, _clock) = start(&config(&s, v.key(), &format!("[{BIG}]"))).await;
    let base = exporter.url();
    wait_polls(&base, T, "success", 1.0).await;
    v.faults.set(
        API,
        Fault {
            lose_rows: true,
            ..Fault::default()
        },
    );
    let text = wait_polls(&base, T, "failure", 4.0).await;
    assert!(errors(&text, "malformed") + requests(&text, "malformed") >= 4.0);
    let ok = polls(&text, "success");
    let text = wait_polls(&base, T, "success", ok + 1.0).await;
    let believed: f64 = all(&text, "rtc_exporter_vendor_anomalies_total")
        .iter()
        .filter(|s| s.label("kind") == Some("lost_rows"))
        .map(|s| s.value)
        .sum();
    assert!(believed >= 1.0, "lost_rows counted when believed");
    assert!(
        (4.0..=5.0).contains(&polls(&text, "failure")),
        "failed polls before the listing was believed: {}",
        polls(&text, "failure")
    );
    exporter.stop().await.unwrap();
}

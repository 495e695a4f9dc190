//! A change of `global.timezone`, on reload or between runs (a state file written in another
//! zone): a target's day is kept where its date is still today's date in the new zone, and
//! dropped otherwise, with a log line naming the target, the day and the zones.
//!
//! On a manual clock at 2026-11-20 10:30 UTC: 18:30 of the 20th in Shanghai and in UTC still
//! the 20th, but 00:30 of the 21st in Pacific/Kiritimati (UTC+14). The vendor (UCloud, recorded
//! answers) first tells of a peak of 200, then of 60: a day kept shows 200, a day dropped 60
//! (or nothing before its next poll).

mod common;

use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use rtc_exporter::app;
use rtc_exporter::clock::ManualClock;
use rtc_exporter::sim::replay::{Recorded, Replay};
use rtc_exporter::sim::SimServer;

const FIRST: &str = r#"{"RetCode": 0, "TotalCount": 1, "Data": [
  {"RoomId": "111", "CallId": "c1", "RoomStatus": true, "CurrentAmount": 123, "PeekAmount": 200, "AccumulationAmount": 300}]}"#;
const THEN: &str = r#"{"RetCode": 0, "TotalCount": 1, "Data": [
  {"RoomId": "111", "CallId": "c1", "RoomStatus": true, "CurrentAmount": 50, "PeekAmount": 60, "AccumulationAmount": 70}]}"#;

/// Every log line of this test binary, for the assertions on what was said.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        buffer
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines that mention `target`.
fn said_of(target: &str) -> Vec<String> {
    let bytes = logs().lock().unwrap().clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| l.contains(&format!("target_name={target}")))
        .map(str::to_string)
        .collect()
}

fn at() -> i64 {
    Utc.with_ymd_and_hms(2026, 11, 20, 10, 30, 0)
        .unwrap()
        .timestamp()
}

async fn urtc() -> SimServer {
    let answer = |body: &str| Recorded {
        api: "QueryURtcOnlineUsers".into(),
        when: None,
        status: 200,
        body: body.as_bytes().to_vec(),
    };
    let r = Replay::new("ucloud_urtc", vec![answer(FIRST), answer(THEN)]);
    SimServer::start(Arc::new(r), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A config in zone `tz` with one cron target `name` (polled at start, next at noon).
fn config(tz: &str, name: &str, endpoint: &str, state: Option<&std::path::Path>) -> String {
    let state = state
        .map(|p| format!("  state_file: {}\n", p.display()))
        .unwrap_or_default();
    format!(
        "global:\n  timezone: {tz}\n{state}targets:\n\
         - name: {name}\n  vendor: ucloud_urtc\n  schedule: \"0 0 12 * * *\"\n  endpoint: {endpoint}\n  app_id: a\n  credentials: {{public_key: p, private_key: k}}\n"
    )
}

async fn start(config: rtc_exporter::config::Config, clock: Arc<ManualClock>) -> app::Running {
    app::start_with_clock(config, &["127.0.0.1:0".to_string()], "/metrics", clock)
        .await
        .unwrap()
}

fn peak(text: &str, target: &str) -> Option<f64> {
    common::value(
        text,
        "rtc_room_peak_users",
        &[("target", target), ("room", "111")],
    )
}

/// Waits until the room's peak is `want` (`None`: no series).
async fn until_peak(base: &str, target: &str, want: Option<f64>) -> String {
    let base = base.to_string();
    common::wait_for(
        &format!("{target}'s peak {want:?}"),
        Duration::from_secs(30),
        || {
            let base = base.clone();
            async move {
                let text = common::scrape(&base).await;
                (peak(&text, target) == want).then_some(text)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_the_zone_keeps_the_day_where_it_is_still_today() {
    logs();
    let sim = urtc().await;
    let dir = std::env::temp_dir().join(format!("rtc-tz-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("exporter.yaml");
    let write = |tz: &str| {
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(config(tz, "reloaded", &sim.endpoint, None).as_bytes())
            .unwrap();
    };
    write("Asia/Shanghai");
    let clock = Arc::new(ManualClock::at(at()));
    let exporter = start(rtc_exporter::config::load(&path).unwrap(), clock).await;
    let base = exporter.url();
    common::wait_polls(&base, "reloaded", "success", 1.0).await;
    until_peak(&base, "reloaded", Some(200.0)).await;

    // Shanghai to UTC: the 20th in both, the day is kept.
    write("UTC");
    let report = exporter.reload().await.unwrap();
    assert_eq!(report.restarted, vec!["reloaded".to_string()], "{report:?}");
    assert!(report.replaced.is_empty(), "{report:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = common::scrape(&base).await;
    assert_eq!(peak(&text, "reloaded"), Some(200.0), "{text}");
    let kept = said_of("reloaded");
    assert!(
        kept.iter().any(|l| l.contains("figures are kept")
            && l.contains("day=2026-11-20")
            && l.contains("from=\"Asia/Shanghai\"")
            && l.contains("to=\"UTC\"")),
        "{kept:#?}"
    );

    // UTC to Kiritimati, where it is already the 21st: the day is dropped, and said so.
    write("Pacific/Kiritimati");
    let report = exporter.reload().await.unwrap();
    assert_eq!(report.replaced, vec!["reloaded".to_string()], "{report:?}");
    // The new supervisor's view replaces the old one at its start.
    let b = base.clone();
    common::wait_for("the day dropped", Duration::from_secs(30), || {
        let b = b.clone();
        async move {
            let text = common::scrape(&b).await;
            (peak(&text, "reloaded") != Some(200.0)).then_some(())
        }
    })
    .await;
    let dropped = said_of("reloaded");
    assert!(
        dropped.iter().any(|l| l.contains("WARN")
            && l.contains("figures are dropped")
            && l.contains("day=2026-11-20")
            && l.contains("today=2026-11-21")
            && l.contains("from=\"UTC\"")
            && l.contains("to=\"Pacific/Kiritimati\"")),
        "{dropped:#?}"
    );
    exporter.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_of_another_zone_keeps_the_day_where_it_is_still_today() {
    logs();
    let sim = urtc().await;
    let dir = std::env::temp_dir().join(format!("rtc-tz-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    let _ = std::fs::remove_file(&state);
    let run = |tz: &'static str| {
        let text = config(tz, "restarted", &sim.endpoint, Some(&state));
        async move {
            let clock = Arc::new(ManualClock::at(at()));
            let exporter = start(common::config(&text), clock).await;
            let base = exporter.url();
            let text = common::wait_polls(&base, "restarted", "success", 1.0).await;
            exporter.stop().await.unwrap();
            text
        }
    };
    // Written in UTC on the 20th, with the peak of 200.
    let text = run("UTC").await;
    assert_eq!(peak(&text, "restarted"), Some(200.0), "{text}");
    // Read in Shanghai, still the 20th: kept; the vendor's 60 does not lower it.
    let text = run("Asia/Shanghai").await;
    assert_eq!(peak(&text, "restarted"), Some(200.0), "{text}");
    let kept = said_of("restarted");
    assert!(
        kept.iter().any(|l| l.contains("figures are kept")
            && l.contains("day=2026-11-20")
            && l.contains("from=UTC")
            && l.contains("to=\"Asia/Shanghai\"")),
        "{kept:#?}"
    );
    // Read in Kiritimati, already the 21st: dropped, and said why.
    let text = run("Pacific/Kiritimati").await;
    assert_eq!(peak(&text, "restarted"), Some(60.0), "{text}");
    let dropped = said_of("restarted");
    assert!(
        dropped.iter().any(|l| l.contains("saved figures not used")
            && l.contains(
                "saved for 2026-11-20 in time zone Asia/Shanghai; the zone is now Pacific/Kiritimati, where today is 2026-11-21"
            )),
        "{dropped:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! The state file (`global.state_file`, README "Restarts and reloads"): where a relative path
//! resolves, its metrics from the first scrape, what becomes of a damaged file, and a saved day
//! read in another time zone.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{scrape, value, wait_polls};
use rtc_exporter::app;
use rtc_exporter::sim::replay::{Recorded, Replay};
use rtc_exporter::sim::SimServer;

/// One call in progress: room 111 (123 now, peak 200, 300 in the day).
const URTC: &str = r#"{"RetCode": 0, "TotalCount": 1, "Data": [
  {"RoomId": "111", "CallId": "c1", "RoomStatus": true, "CurrentAmount": 123, "PeekAmount": 200, "AccumulationAmount": 300}]}"#;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rtc-state-{name}-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A UCloud simulator that answers every request with [`URTC`].
async fn urtc() -> SimServer {
    let r = Replay::new(
        "ucloud_urtc",
        vec![Recorded {
            api: "QueryURtcOnlineUsers".into(),
            when: None,
            status: 200,
            body: URTC.as_bytes().to_vec(),
        }],
    );
    SimServer::start(Arc::new(r), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A cron target: polled once at start, next at noon.
fn urtc_target(endpoint: &str) -> String {
    format!(
        "  - name: urtc\n    vendor: ucloud_urtc\n    schedule: \"0 0 12 * * *\"\n    endpoint: {endpoint}\n    app_id: a\n    credentials: {{public_key: p, private_key: k}}\n"
    )
}

async fn start_file(path: &Path) -> app::Running {
    let config = rtc_exporter::config::load(path).unwrap_or_else(|e| panic!("config: {e}"));
    app::start(config, &["127.0.0.1:0".to_string()], "/metrics")
        .await
        .unwrap()
}

#[tokio::test]
async fn the_state_metrics_are_served_from_the_first_scrape() {
    let dir = temp_dir("metrics");
    let state = dir.join("state.json");
    // No target: nothing polls, so nothing publishes or writes.
    let running = common::start(&format!(
        "global:\n  state_file: {}\ntargets: []\n",
        state.display()
    ))
    .await;
    let text = scrape(&running.url()).await;
    assert_eq!(
        value(&text, "rtc_exporter_state_write_failures_total", &[]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "rtc_exporter_state_last_write_timestamp_seconds",
            &[]
        ),
        Some(0.0),
        "never written yet"
    );
    assert!(!state.exists(), "no write happened before the scrape");
    running.stop().await.unwrap();

    // A target whose vendor never answers: scraped before any poll completes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let running = common::start(&format!(
        "global:\n  state_file: {}\ntargets:\n{}",
        state.display(),
        urtc_target(&endpoint)
    ))
    .await;
    let text = scrape(&running.url()).await;
    assert_eq!(
        value(
            &text,
            "rtc_exporter_polls_total",
            &[("target", "urtc"), ("result", "success")]
        )
        .unwrap_or(0.0)
            + value(
                &text,
                "rtc_exporter_polls_total",
                &[("target", "urtc"), ("result", "failure")]
            )
            .unwrap_or(0.0),
        0.0,
        "no poll has completed"
    );
    assert_eq!(
        value(&text, "rtc_exporter_state_write_failures_total", &[]),
        Some(0.0),
        "{text}"
    );
    assert!(value(
        &text,
        "rtc_exporter_state_last_write_timestamp_seconds",
        &[]
    )
    .is_some());
    drop(silent);
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_relative_state_file_is_written_beside_the_config_file() {
    let dir = temp_dir("relative");
    let sim = urtc().await;
    let config = dir.join("exporter.yaml");
    std::fs::write(
        &config,
        format!(
            "global:\n  state_file: state.json\ntargets:\n{}",
            urtc_target(&sim.endpoint)
        ),
    )
    .unwrap();
    let running = start_file(&config).await;
    wait_polls(&running.url(), "urtc", "success", 1.0).await;
    running.stop().await.unwrap();
    assert!(dir.join("state.json").is_file(), "beside the config file");
    assert!(
        !Path::new("state.json").exists(),
        "not in the working directory"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! What a reload says it did (README "Restarts and reloads"): the targets whose render-only
//! keys changed and applied in place, beside those restarted, replaced, added and removed, in
//! its report and its log line.

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use rtc_exporter::app;
use rtc_exporter::sim::replay::{Recorded, Replay};
use rtc_exporter::sim::SimServer;

/// Every log line of this test binary.
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

/// The "config reloaded" lines logged so far.
fn reloaded_lines() -> Vec<String> {
    let bytes = logs().lock().unwrap().clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| l.contains("config reloaded"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_line_names_what_applied_in_place() {
    logs();
    let r = Replay::new(
        "ucloud_urtc",
        vec![Recorded {
            api: "QueryURtcOnlineUsers".into(),
            when: None,
            status: 200,
            body: br#"{"RetCode": 0, "TotalCount": 0, "Data": []}"#.to_vec(),
        }],
    );
    let sim = SimServer::start(Arc::new(r), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let target = |name: &str, extra: &str| {
        format!(
            "  - name: {name}\n    vendor: ucloud_urtc\n    schedule: \"0 0 12 * * *\"\n    endpoint: {}\n    app_id: a\n    credentials: {{public_key: p, private_key: k}}\n{extra}",
            sim.endpoint
        )
    };
    let dir = std::env::temp_dir().join(format!("rtc-reload-line-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("exporter.yaml");
    let config = |capacity: u32, schedule: &str| {
        format!(
            "targets:\n{}{}{}",
            target("ratio", &format!("    capacity: {{default: {capacity}}}\n")),
            target("polls", "").replace("0 0 12 * * *", schedule),
            target("same", ""),
        )
    };
    std::fs::write(&path, config(300, "0 0 12 * * *")).unwrap();
    let exporter = app::start(
        rtc_exporter::config::load(&path).unwrap(),
        &["127.0.0.1:0".to_string()],
        "/metrics",
    )
    .await
    .unwrap();
    for t in ["ratio", "polls", "same"] {
        common::wait_polls(&exporter.url(), t, "success", 1.0).await;
    }

    // A capacity (render only), a schedule (polls), and nothing.
    std::fs::write(&path, config(500, "0 0 13 * * *")).unwrap();
    let report = exporter.reload().await.unwrap();
    assert_eq!(report.applied_in_place, vec!["ratio".to_string()]);
    assert_eq!(report.restarted, vec!["polls".to_string()]);
    assert_eq!(report.unchanged, vec!["same".to_string()]);
    let lines = reloaded_lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    for field in [
        "unchanged=1",
        "applied_in_place=[\"ratio\"]",
        "restarted=[\"polls\"]",
        "replaced=[]",
        "added=[]",
        "removed=[]",
    ] {
        assert!(lines[0].contains(field), "{field}: {}", lines[0]);
    }

    // The same file again: nothing changed, also for the target changed in place before.
    let report = exporter.reload().await.unwrap();
    assert!(report.applied_in_place.is_empty(), "{report:?}");
    assert_eq!(report.unchanged.len(), 3, "{report:?}");
    let lines = reloaded_lines();
    assert!(
        lines[1].contains("unchanged=3") && lines[1].contains("applied_in_place=[]"),
        "{}",
        lines[1]
    );
    exporter.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

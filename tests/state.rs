//! The state file (`global.state_file`, README "Restarts and reloads"): where a relative path
//! resolves, its metrics from the first scrape, what becomes of a damaged file, and a saved day
//! read in another time zone.

mod common;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, scrape, terminate, try_scrape, value, wait_for, wait_polls};
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
    assert!(
        !state.exists() && !dir.join("state.json.d").exists(),
        "no write happened before the scrape"
    );
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
    assert!(
        dir.join("state.json.d/urtc.json").is_file(),
        "beside the config file"
    );
    assert!(
        !Path::new("state.json").exists(),
        "not in the working directory"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the binary on `config` until its target has been polled, then stops it with SIGTERM
/// (which writes the state file); returns its log.
async fn run_until_polled(config: &Path) -> String {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtc-exporter"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("a poll", Duration::from_secs(30), || {
        let base = base.clone();
        async move {
            let text = try_scrape(&base).await?;
            let polls = value(
                &text,
                "rtc_exporter_polls_total",
                &[("target", "urtc"), ("result", "success")],
            )?;
            (polls >= 1.0).then_some(())
        }
    })
    .await;
    let status = terminate(&mut child);
    let mut logs = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut logs);
    }
    assert!(status.success(), "{status:?}\n{logs}");
    logs
}

/// The inode of `path`: a write replaces the file (a rename), so a new inode is a new write.
fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_target_whose_day_changed_is_written_and_a_removed_one_is_deleted() {
    let dir = temp_dir("incremental");
    let sim = urtc().await;
    let config = dir.join("exporter.yaml");
    // `often` is polled every second, `urtc` once (at start; next at noon).
    let often = urtc_target(&sim.endpoint)
        .replace("name: urtc", "name: often")
        .replace("schedule: \"0 0 12 * * *\"", "interval: 1s");
    let both = format!(
        "global:\n  state_file: state.json\ntargets:\n{}{often}",
        urtc_target(&sim.endpoint)
    );
    std::fs::write(&config, &both).unwrap();
    let running = start_file(&config).await;
    let (once_file, often_file) = (
        dir.join("state.json.d/urtc.json"),
        dir.join("state.json.d/often.json"),
    );
    let first = wait_for("both files", Duration::from_secs(30), || async {
        Some((inode(&once_file)?, inode(&often_file)?))
    })
    .await;
    wait_polls(&running.url(), "urtc", "success", 1.0).await;
    let polls = |text: &str| {
        value(
            text,
            "rtc_exporter_polls_total",
            &[("target", "often"), ("result", "success")],
        )
        .unwrap_or(0.0)
    };
    let seen = polls(&scrape(&running.url()).await);
    wait_polls(&running.url(), "often", "success", seen + 3.0).await;
    wait_for("often written again", Duration::from_secs(30), || async {
        (inode(&often_file)? != first.1).then_some(())
    })
    .await;
    assert_eq!(
        inode(&once_file),
        Some(first.0),
        "a target polled once is written once"
    );

    // A reload drops `often`: its file goes at the next write.
    std::fs::write(
        &config,
        format!(
            "global:\n  state_file: state.json\ntargets:\n{}",
            urtc_target(&sim.endpoint)
        ),
    )
    .unwrap();
    let report = running.reload().await.unwrap();
    assert_eq!(report.removed, vec!["often".to_string()]);
    wait_for("often's file removed", Duration::from_secs(30), || async {
        (!often_file.exists()).then_some(())
    })
    .await;
    assert!(once_file.is_file());
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_that_cannot_be_used_is_kept_beside_it_before_the_first_write() {
    let dir = temp_dir("damaged");
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
    let state = dir.join("state.json");
    let own = dir.join("state.json.d/urtc.json");
    let valid = || {
        let file = rtc_exporter::state::load_target(&state, "urtc")
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("{} written", own.display()));
        assert_eq!(file.target, "urtc");
        assert!(!state.exists(), "no single file is written");
        file
    };

    // A first start writes the target's own file and keeps nothing.
    run_until_polled(&config).await;
    let file = valid();
    let good = serde_json::to_value(&file).unwrap();
    let copies = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .chain(std::fs::read_dir(dir.join("state.json.d")).unwrap())
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".damaged"))
            })
            .count()
    };
    assert_eq!(copies(), 0);

    // The same day in the single file of the previous format, with figures that do not hold
    // together (a user key twice).
    let mut single = serde_json::json!({
        "version": 1, "timezone": file.timezone, "written_at": 1,
        "targets": {"urtc": {"vendor": "ucloud_urtc", "identity": file.identity, "ledger": {
            "date": good["ledger"]["date"], "peak": 1, "accumulated": 1, "users": [7, 7],
            "rooms": {}}}}
    });
    let mut twice = good.clone();
    twice["ledger"]["users"] = serde_json::json!([7, 7]);
    let mut version = good.clone();
    version["version"] = serde_json::json!(99);
    // (what, file, its bytes, what the warning says). Each is kept as the copy, replacing an
    // older copy, before the first write replaces it with a good file.
    let cases: [(&str, &PathBuf, Vec<u8>, &str); 6] = [
        (
            "a damaged entry of the previous format",
            &state,
            serde_json::to_vec(&single).unwrap(),
            "saved figures damaged",
        ),
        (
            "garbage of the previous format",
            &state,
            b"\x00{\"version\": 1, \"targ not json".to_vec(),
            "state file ignored",
        ),
        (
            "another format version",
            &state,
            br#"{"version": 99, "timezone": "UTC", "written_at": 1, "targets": {}}"#.to_vec(),
            "state file ignored",
        ),
        (
            "a damaged entry",
            &own,
            serde_json::to_vec(&twice).unwrap(),
            "saved figures damaged",
        ),
        (
            "garbage",
            &own,
            b"\x00{\"version\": 2, \"targ not json".to_vec(),
            "state file ignored",
        ),
        (
            "a target file of another format version",
            &own,
            serde_json::to_vec(&version).unwrap(),
            "state file ignored",
        ),
    ];
    for (what, path, bytes, said) in cases {
        let copy = rtc_exporter::state::damaged_copy(path);
        if path == &state {
            // Its own file would be read first.
            std::fs::remove_file(&own).unwrap();
        }
        std::fs::write(&copy, b"an older copy").unwrap();
        std::fs::write(path, &bytes).unwrap();
        let logs = run_until_polled(&config).await;
        assert_eq!(
            String::from_utf8_lossy(&std::fs::read(&copy).unwrap()),
            String::from_utf8_lossy(&bytes),
            "{what}: the copy"
        );
        valid();
        let line = logs
            .lines()
            .find(|l| l.contains(said))
            .unwrap_or_else(|| panic!("{what}: no line saying {said:?}:\n{logs}"));
        assert!(
            line.contains("level=warn") && line.contains(&copy.display().to_string()),
            "{what}: the warning names the copy: {line}"
        );
        eprintln!("{line}");
        std::fs::remove_file(&copy).unwrap();
    }

    // A good file is replaced with no copy; so is a good single file of the previous format,
    // which is then removed.
    single["targets"]["urtc"]["ledger"]["users"] = serde_json::json!([7]);
    std::fs::write(&state, serde_json::to_vec(&single).unwrap()).unwrap();
    run_until_polled(&config).await;
    valid();
    assert_eq!(copies(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tests/fixtures/state/v1.json`: the single state file of the previous release (format 1),
/// written by that release's code on 2026-12-06 (UTC) after two polls of a Volcengine target
/// (rooms observed), a Talk-cloud one (sessions, roles, cursors) and a UCloud one (reported
/// figures). Its clock, and the targets' credentials (the simulators' fake keys of seeds 41
/// and 7), so their identities match.
const V1_AT: i64 = 1_796_529_884;
const V1_TARGETS: &str = "  - name: volc\n    vendor: volcengine_rtc\n    endpoint: ENDPOINT\n    app_id: \"327940615106\"\n    credentials:\n      access_key_id: AKLT14e1b743dce477a3ab411006302bc945\n      secret_access_key: \"1438d60ad8d44753e90510fcaf236d28b7430bbf\"\n    rooms: [room-003, room-004, room-005, room-007]\n  - name: talk\n    vendor: talkcloud\n    endpoint: ENDPOINT\n    credentials:\n      key: \"c3b712c12790fd77\"\n    rooms: [\"7100000001\", \"7100000002\", \"7100000003\"]\n  - name: urtc\n    vendor: ucloud_urtc\n    endpoint: ENDPOINT\n    app_id: a\n    credentials: {public_key: p, private_key: k}\n";
/// The day's figures that release served before it stopped: (metric, target, room, role, value).
const V1_FIGURES: &[(&str, &str, &str, &str, f64)] = &[
    ("rtc_peak_users", "talk", "", "", 367.0),
    ("rtc_peak_users", "urtc", "", "", 200.0),
    ("rtc_peak_users", "volc", "", "", 70.0),
    ("rtc_accumulated_users", "talk", "", "", 505.0),
    ("rtc_accumulated_users", "urtc", "", "", 300.0),
    ("rtc_accumulated_users", "volc", "", "", 70.0),
    ("rtc_room_peak_users", "talk", "7100000001", "", 334.0),
    ("rtc_room_peak_users", "talk", "7100000002", "", 33.0),
    ("rtc_room_peak_users", "talk", "7100000003", "", 0.0),
    ("rtc_room_peak_users", "urtc", "111", "", 200.0),
    ("rtc_room_peak_users", "volc", "room-003", "", 30.0),
    ("rtc_room_peak_users", "volc", "room-004", "", 6.0),
    ("rtc_room_peak_users", "volc", "room-005", "", 20.0),
    ("rtc_room_peak_users", "volc", "room-007", "", 14.0),
    (
        "rtc_room_accumulated_users",
        "talk",
        "7100000001",
        "",
        463.0,
    ),
    ("rtc_room_accumulated_users", "talk", "7100000002", "", 43.0),
    ("rtc_room_accumulated_users", "talk", "7100000003", "", 0.0),
    ("rtc_room_accumulated_users", "urtc", "111", "", 300.0),
    ("rtc_room_accumulated_users", "volc", "room-003", "", 30.0),
    ("rtc_room_accumulated_users", "volc", "room-004", "", 6.0),
    ("rtc_room_accumulated_users", "volc", "room-005", "", 20.0),
    ("rtc_room_accumulated_users", "volc", "room-007", "", 14.0),
    ("rtc_room_role_users", "talk", "7100000001", "teacher", 1.0),
    (
        "rtc_room_role_users",
        "talk",
        "7100000001",
        "assistant",
        2.0,
    ),
    ("rtc_room_role_users", "talk", "7100000001", "student", 19.0),
    ("rtc_room_role_users", "talk", "7100000001", "viewer", 211.0),
    (
        "rtc_room_role_users",
        "talk",
        "7100000001",
        "inspector",
        0.0,
    ),
    ("rtc_room_role_users", "talk", "7100000001", "other", 2.0),
    ("rtc_room_role_users", "talk", "7100000002", "teacher", 0.0),
    (
        "rtc_room_role_users",
        "talk",
        "7100000002",
        "assistant",
        1.0,
    ),
    ("rtc_room_role_users", "talk", "7100000002", "student", 4.0),
    ("rtc_room_role_users", "talk", "7100000002", "viewer", 16.0),
    (
        "rtc_room_role_users",
        "talk",
        "7100000002",
        "inspector",
        0.0,
    ),
    ("rtc_room_role_users", "talk", "7100000002", "other", 0.0),
];

/// Where `text` differs from [`V1_FIGURES`].
fn v1_mismatch(text: &str) -> Vec<String> {
    V1_FIGURES
        .iter()
        .filter_map(|&(metric, target, room, role, want)| {
            let mut labels = vec![("target", target)];
            if !room.is_empty() {
                labels.push(("room", room));
            }
            if !role.is_empty() {
                labels.push(("role", role));
            }
            let got = value(text, metric, &labels);
            (got != Some(want)).then(|| format!("{metric} {labels:?}: {got:?}, saved {want}"))
        })
        .collect()
}

/// Starts the three targets of [`V1_TARGETS`] against a vendor that never answers (so what
/// is served is what was restored), on a clock at [`V1_AT`]; returns the first scrape.
async fn serve_restored(state: &Path) -> String {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let text = format!(
        "global:\n  interval: 1m\n  poll_timeout: 50s\n  request_timeout: 30s\n  timezone: UTC\n  state_file: {}\ntargets:\n{}",
        state.display(),
        V1_TARGETS.replace("ENDPOINT", &endpoint)
    );
    let clock = Arc::new(rtc_exporter::clock::ManualClock::at(V1_AT));
    let running = app::start_with_clock(
        common::config(&text),
        &["127.0.0.1:0".to_string()],
        "/metrics",
        clock,
    )
    .await
    .unwrap();
    let scraped = scrape(&running.url()).await;
    running.stop().await.unwrap();
    drop(silent);
    scraped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_of_the_previous_release_restores_the_day() {
    let dir = temp_dir("v1");
    let state = dir.join("state.json");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/state/v1.json"),
        &state,
    )
    .unwrap();
    let text = serve_restored(&state).await;
    assert_eq!(v1_mismatch(&text), Vec::<String>::new(), "{text}");
    // The stop wrote each target into its own file, then removed the single file.
    assert!(!state.exists());
    for name in ["volc", "talk", "urtc"] {
        let file = rtc_exporter::state::load_target(&state, name)
            .unwrap()
            .unwrap_or_else(|| panic!("{name} has its own file"));
        assert_eq!(file.version, rtc_exporter::state::VERSION);
        assert_eq!(file.cursors.is_some(), name != "urtc", "{name}");
    }
    // They hold the same day.
    let text = serve_restored(&state).await;
    assert_eq!(v1_mismatch(&text), Vec::<String>::new(), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

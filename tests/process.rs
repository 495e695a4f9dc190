//! The binary as an operator runs it: logs, SIGTERM, the demo.

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, terminate, try_scrape, value, wait_for};
use rtc_exporter::sim::ucloud_urtc::UrtcSim;
use rtc_exporter::sim::SimServer;

fn read_all(r: Option<impl std::io::Read>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        let _ = r.read_to_string(&mut s);
    }
    s
}

#[tokio::test]
async fn secrets_reach_no_log_line_and_no_metric_and_sigterm_exits_0() {
    let sim = UrtcSim::new(21, 10);
    let (app, public, private) = (
        sim.app_id.clone(),
        sim.public_key.clone(),
        sim.private_key(),
    );
    let server = SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("rtc-exporter-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("urtc.key");
    std::fs::write(&key_file, format!("{private}\n")).unwrap();
    let wrong = "wrong-private-key-7f7f7f";
    let cfg = format!(
        "global: {{ interval: 500ms }}\ntargets:\n  - name: good\n    vendor: ucloud_urtc\n    endpoint: {ep}\n    app_id: {app}\n    credentials: {{ public_key: {public}, private_key: {{ file: {key} }} }}\n  - name: bad\n    vendor: ucloud_urtc\n    endpoint: {ep}\n    app_id: {app}\n    credentials: {{ public_key: {public}, private_key: {{ env: RTC_TEST_WRONG_KEY }} }}\n",
        ep = server.endpoint,
        key = key_file.display(),
    );
    let cfg_path = dir.join("exporter.yaml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtc-exporter"))
        .arg(format!("--config.file={}", cfg_path.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=debug")
        .env("RTC_TEST_WRONG_KEY", wrong)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let text = wait_for("both targets polled twice", Duration::from_secs(30), || {
        let base = base.clone();
        async move {
            let text = try_scrape(&base).await?;
            let ok = value(
                &text,
                "rtc_exporter_polls_total",
                &[("target", "good"), ("result", "success")],
            )?;
            let bad = value(
                &text,
                "rtc_exporter_polls_total",
                &[("target", "bad"), ("result", "failure")],
            )?;
            (ok >= 2.0 && bad >= 2.0).then_some(text)
        }
    })
    .await;
    let landing = common::get(&base, "/").await.1;
    let status = terminate(&mut child);
    let logs = read_all(child.stderr.take()) + &read_all(child.stdout.take());
    assert!(status.success(), "SIGTERM exits 0: {status:?}\n{logs}");
    assert!(
        logs.contains("vendor request failed"),
        "failures are logged:\n{logs}"
    );
    assert!(logs.contains("171"), "the vendor code is logged");
    for secret in [private.as_str(), wrong] {
        assert!(!logs.contains(secret), "a secret in the logs:\n{logs}");
        assert!(!text.contains(secret), "a secret in /metrics");
        assert!(!landing.contains(secret), "a secret on the landing page");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn json_logs_are_json() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtc-exporter"))
        .args([
            "demo",
            "--log.format=json",
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_for("a poll", Duration::from_secs(30), || {
        let base = base.clone();
        async move {
            let text = try_scrape(&base).await?;
            (value(
                &text,
                "rtc_exporter_polls_total",
                &[("target", "urtc-demo"), ("result", "success")],
            )? >= 1.0)
                .then_some(())
        }
    })
    .await;
    terminate(&mut child);
    let logs = read_all(child.stderr.take());
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.get("level").is_some(), "{l}");
    }
}

#[tokio::test]
async fn demo_shows_rooms_of_every_simulated_vendor() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtc-exporter"))
        .args(["demo", &format!("--web.listen-address=127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let vendors: Vec<&str> = rtc_exporter::clouds::REGISTRY
        .iter()
        .map(|e| e.name)
        .collect();
    let text = wait_for("rooms of every vendor", Duration::from_secs(30), || {
        let base = base.clone();
        let vendors = vendors.clone();
        async move {
            let text = try_scrape(&base).await?;
            let rooms = common::all(&text, "rtc_room_users");
            vendors
                .iter()
                .all(|v| rooms.iter().any(|s| s.label("vendor") == Some(v)))
                .then_some(text)
        }
    })
    .await;
    assert_eq!(common::get(&base, "/-/ready").await.0, 200);
    let status = terminate(&mut child);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success());
    assert!(
        out.contains(&format!("http://127.0.0.1:{port}/metrics")),
        "demo prints what to open: {out}"
    );
    assert!(text.contains("rtc_exporter_build_info{"));
}

#[test]
fn simulate_prints_endpoints_and_keys_that_work() {
    use std::io::BufRead as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtc-exporter"))
        .args(["simulate", "--listen=127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for _ in rtc_exporter::clouds::REGISTRY {
        seen.push(lines.next().unwrap().unwrap());
    }
    let status = terminate(&mut child);
    assert!(status.success());
    for (entry, line) in rtc_exporter::clouds::REGISTRY.iter().zip(&seen) {
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some(entry.name), "{line}");
        assert!(
            words.next().unwrap_or("").starts_with("http://127.0.0.1:"),
            "{line}"
        );
        // The simulator's credentials: a key (pair) or a secret, by the vendor's names.
        assert!(
            line.contains("key") || line.contains("secret="),
            "keys are printed: {line}"
        );
    }
}

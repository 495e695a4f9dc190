//! The shipped alert rules and dashboard against real Prometheus tools: promtool's rule unit
//! tests, and a real Prometheus server that scrapes the exporter and evaluates the rules.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::wait_for;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("{cmd} must be installed (Debian: apt-get install prometheus): {e}")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?}:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    run(
        "promtool",
        &["check", "rules", "alerts/rtc-exporter.rules.yml"],
    );
    run(
        "promtool",
        &["test", "rules", "alerts/rtc-exporter.test.yml"],
    );
}

/// Every `rtc_*` name the dashboard and the alerts use is one the exporter serves.
#[tokio::test]
async fn dashboard_and_alerts_use_only_served_metric_names() {
    let (_sims, running) = rtc_exporter::app::demo(&["127.0.0.1:0".into()], "/metrics", 1)
        .await
        .unwrap();
    let base = running.url();
    let text = wait_for("every demo target polled", Duration::from_secs(30), || {
        let base = base.clone();
        async move {
            let text = common::scrape(&base).await;
            let ready = common::get(&base, "/-/ready").await.0 == 200;
            ready.then_some(text)
        }
    })
    .await;
    let families = rtc_exporter::metrics::FAMILIES;
    for name in text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
    {
        assert!(
            families.contains(&name) || name.starts_with("process_"),
            "{name} is served but missing from metrics::FAMILIES"
        );
    }
    let mut known: Vec<String> = families.iter().map(|s| s.to_string()).collect();
    let histogram = "rtc_exporter_vendor_request_duration_seconds";
    known.extend(["_bucket", "_sum", "_count"].map(|s| format!("{histogram}{s}")));
    let dashboard = std::fs::read_to_string("dashboards/rtc-exporter.json").unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let rules = std::fs::read_to_string("alerts/rtc-exporter.rules.yml").unwrap();
    for (file, body) in [("dashboard", &dashboard), ("alerts", &rules)] {
        for name in metric_names(body) {
            assert!(
                known.contains(&name),
                "{file} uses {name}, which the exporter does not serve"
            );
        }
    }
    running.stop().await.unwrap();
}

fn metric_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("rtc_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + text[start..]
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
        if boundary
            && !text[end..].starts_with('.')
            && !text[start..end].starts_with("rtc_exporter.")
        {
            out.push(text[start..end].to_string());
        }
        i = end;
    }
    out.sort();
    out.dedup();
    out.retain(|n| n != "rtc_exporter" && !n.ends_with('_'));
    out
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_exporter_and_evaluates_the_rules() {
    let (_sims, running) = rtc_exporter::app::demo(&["127.0.0.1:0".into()], "/metrics", 2)
        .await
        .unwrap();
    let exporter = running.addrs[0];
    let dir = std::env::temp_dir().join(format!("rtc-exporter-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = std::fs::canonicalize("alerts/rtc-exporter.rules.yml").unwrap();
    let config = format!(
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: [\"{}\"]\nscrape_configs:\n  - job_name: rtc\n    static_configs: [{{ targets: [\"{exporter}\"] }}]\n",
        rules.display()
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _prom = KillOnDrop(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (Debian: apt-get install prometheus)"),
    );
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let query = |q: &'static str| {
        let api = api.clone();
        async move {
            let r = reqwest::Client::new()
                .get(format!("{api}/query"))
                .query(&[("query", q)])
                .send()
                .await
                .ok()?;
            let v: serde_json::Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
            v["data"]["result"].as_array().cloned()
        }
    };
    let base = running.url();
    wait_for("every demo target polled", Duration::from_secs(30), || {
        let base = base.clone();
        async move { (common::get(&base, "/-/ready").await.0 == 200).then_some(()) }
    })
    .await;
    // Rooms come and go in the demo: retry until Prometheus holds what the exporter serves.
    wait_for(
        "Prometheus to hold every room series the exporter serves",
        Duration::from_secs(60),
        || {
            let base = base.clone();
            async move {
                let up = query("up{job=\"rtc\"} == 1").await?;
                let rooms = query("rtc_room_users").await?;
                let served = common::all(&common::scrape(&base).await, "rtc_room_users").len();
                (!up.is_empty() && served > 0 && rooms.len() == served).then_some(())
            }
        },
    )
    .await;
    // Every rule evaluates on live data without an error (e.g. no many-to-many matches).
    let rules = wait_for(
        "the rules to be evaluated",
        Duration::from_secs(30),
        || async {
            let r = reqwest::get(format!("{api}/rules")).await.ok()?;
            let v: serde_json::Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
            let rules: Vec<serde_json::Value> = v["data"]["groups"][0]["rules"].as_array()?.clone();
            rules
                .iter()
                .all(|r| {
                    r["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001"))
                })
                .then_some(rules)
        },
    )
    .await;
    assert!(rules.len() >= 8, "{} rules loaded", rules.len());
    for r in &rules {
        assert_eq!(
            r["health"], "ok",
            "rule {} on live data: {}",
            r["name"], r["lastError"]
        );
    }
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

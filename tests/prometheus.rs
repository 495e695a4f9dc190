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

const RULES: &str = "alerts/rtc-exporter.rules.yml";

/// Every `alerts/*.test.yml`, sorted.
fn rule_test_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir("alerts")
        .expect("alerts/")
        .filter_map(|e| e.ok())
        .map(|e| e.path().display().to_string())
        .filter(|p| p.ends_with(".test.yml"))
        .collect();
    files.sort();
    files
}

fn yaml(path: &str) -> serde_yaml::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    run("promtool", &["check", "rules", RULES]);
    let files = rule_test_files();
    assert!(files.len() >= 2, "{files:?}");
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    run("promtool", &args);
}

/// The alerts by name, with their rule.
fn alerts() -> Vec<(String, serde_yaml::Value)> {
    let rules = yaml(RULES);
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            if let Some(name) = rule["alert"].as_str() {
                out.push((name.to_string(), rule.clone()));
            }
        }
    }
    out
}

/// Every alert waits a `for:`, has a severity of the ladder and a runbook link to its own
/// section of docs/runbook.md, and has unit tests where it fires and where it must not.
#[test]
fn every_alert_has_for_severity_runbook_and_tests_both_ways() {
    let alerts = alerts();
    assert!(alerts.len() >= 14, "{} alerts", alerts.len());
    let runbook = std::fs::read_to_string("docs/runbook.md").unwrap();
    let sections: Vec<&str> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .collect();
    let rules_text = std::fs::read_to_string(RULES).unwrap();
    // The base URL is written once: in the recording rule the links read.
    assert_eq!(
        rules_text.matches("https://").count(),
        1,
        "the runbook base URL is set in one place"
    );
    let link = r#"{{ with query "rtc_exporter:runbook_base:info" }}{{ . | first | label "url" }}{{ end }}#"#;
    for (name, rule) in &alerts {
        assert!(
            rule["for"].as_str().is_some_and(|f| f != "0s" && f != "0m"),
            "{name} has no for:"
        );
        let severity = rule["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        let url = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
        assert_eq!(url, format!("{link}{}", name.to_lowercase()), "{name}");
        assert!(
            sections.contains(&name.as_str()),
            "docs/runbook.md has no section {name}"
        );
        for key in ["summary", "description"] {
            assert!(
                rule["annotations"][key].as_str().is_some(),
                "{name}: no {key}"
            );
        }
    }
    for s in &sections {
        assert!(
            alerts.iter().any(|(n, _)| n == s),
            "docs/runbook.md section {s} is no alert"
        );
    }
    let ladder: std::collections::HashMap<&str, &str> = [
        ("RtcRoomNearCapacity", "warning"),
        ("RtcRoomOverCapacity", "critical"),
        ("RtcTargetLicenceLimit", "critical"),
        ("RtcClassNoTeacher", "critical"),
        ("RtcExporterDown", "critical"),
        ("RtcExporterAbsent", "critical"),
    ]
    .into();
    for (name, rule) in &alerts {
        if let Some(want) = ladder.get(name.as_str()) {
            assert_eq!(rule["labels"]["severity"].as_str(), Some(*want), "{name}");
        }
    }

    // (fires, must not fire) cases per alert, over every test file.
    let mut cases: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for file in rule_test_files() {
        let tests = yaml(&file);
        assert_eq!(
            tests["rule_files"][0].as_str(),
            Some("rtc-exporter.rules.yml"),
            "{file} tests the shipped rules"
        );
        for group in tests["tests"].as_sequence().into_iter().flatten() {
            for case in group["alert_rule_test"].as_sequence().into_iter().flatten() {
                let name = case["alertname"].as_str().unwrap_or_default().to_string();
                let fires = case["exp_alerts"]
                    .as_sequence()
                    .is_some_and(|a| !a.is_empty());
                let entry = cases.entry(name).or_default();
                if fires {
                    entry.0 += 1;
                } else {
                    entry.1 += 1;
                }
            }
        }
    }
    for (name, _) in &alerts {
        let (fires, quiet) = cases.get(name).copied().unwrap_or_default();
        assert!(
            fires > 0 && quiet > 0,
            "{name}: {fires} firing and {quiet} quiet test cases"
        );
    }
    let total: usize = cases.values().map(|(f, q)| f + q).sum();
    eprintln!(
        "{} alerts, {total} alert test cases ({} firing, {} quiet)",
        alerts.len(),
        cases.values().map(|c| c.0).sum::<usize>(),
        cases.values().map(|c| c.1).sum::<usize>()
    );
}

/// The alerts over target and room gauges (`max by (job, target, vendor...)`: with `ha:` their
/// series move between replicas, and after a crash no replica serves them for a lease and a
/// scrape or two) keep firing 2m, which bridges that gap; the others (each process's own, the
/// shards', the counter rates, whose window still holds the dead leader's samples) have no
/// keep_firing_for, so they resolve when they clear.
#[test]
fn the_target_and_room_alerts_keep_firing_across_a_failover_gap() {
    let mut kept = Vec::new();
    for (name, rule) in alerts() {
        let expr = rule["expr"].as_str().unwrap_or_default().trim_start();
        let keep = rule["keep_firing_for"].as_str();
        if expr.starts_with("max by (job, target, vendor") {
            assert_eq!(
                keep,
                Some("2m"),
                "{name}: over target series, no keep_firing_for: 2m"
            );
            kept.push(name);
        } else {
            assert_eq!(
                keep, None,
                "{name}: keep_firing_for on an alert that does not move"
            );
        }
    }
    assert!(kept.len() >= 9, "{kept:?}");
    for name in [
        "RtcExporterTargetDown",
        "RtcRoomOverCapacity",
        "RtcClassNoTeacher",
    ] {
        assert!(kept.iter().any(|k| k == name), "{name}: {kept:?}");
    }
}

/// The dashboard's day figures (peak and distinct users today, of targets and of rooms) at a
/// failover across local midnight: the old leader's last scrape before midnight (at 10m here:
/// yesterday's 500) and the new leader's first after it (10m15s: today's 20) overlap until the
/// old one's series go stale (10m30s). The figure is the newest scrape's, today's 20, not the
/// larger (yesterday's).
/// promtool evaluates the dashboard's own queries, with its variables as "All" selects them.
#[test]
fn the_day_figures_at_a_failover_across_midnight_come_from_the_newest_scrape() {
    let queries = dashboard_queries();
    let wanted = [
        (
            "panel Peak concurrent users today (A)",
            "{job=\"j\",target=\"t\",vendor=\"v\"}",
        ),
        (
            "panel Accumulated users today (A)",
            "{job=\"j\",target=\"t\",vendor=\"v\"}",
        ),
        (
            "panel Rooms now (the 50 busiest) (B)",
            "{target=\"t\",vendor=\"v\",room=\"r\"}",
        ),
        (
            "panel Rooms now (the 50 busiest) (C)",
            "{target=\"t\",vendor=\"v\",room=\"r\"}",
        ),
    ];
    // Scrapes every 30 s, a's on the minute and half minute, b's 15 s later.
    let series = |name: &str, room: bool, instance: &str| {
        let values: Vec<String> = (0..50)
            .map(|i| {
                let t = i * 15;
                match (instance, t % 30 == 0) {
                    ("a", true) if t <= 600 => "500".into(),
                    ("a", true) if t == 630 => "stale".into(),
                    ("b", false) if t >= 615 => "20".into(),
                    _ => "_".into(),
                }
            })
            .collect();
        let room = if room { ",room=\"r\"" } else { "" };
        format!(
            "      - series: '{name}{{job=\"j\",instance=\"{instance}\",target=\"t\",vendor=\"v\"{room}}}'\n        values: '{}'\n",
            values.join(" ")
        )
    };
    let mut input = String::new();
    for (name, room) in [
        ("rtc_peak_users", false),
        ("rtc_accumulated_users", false),
        ("rtc_room_peak_users", true),
        ("rtc_room_accumulated_users", true),
        ("rtc_room_users", true),
    ] {
        input.push_str(&series(name, room, "a"));
        input.push_str(&series(name, room, "b"));
    }
    let mut cases = String::new();
    for (what, labels) in wanted {
        let (_, q) = queries
            .iter()
            .find(|(w, _)| w == what)
            .unwrap_or_else(|| panic!("no {what} in the dashboard"));
        for (at, value) in [("10m", 500), ("10m15s", 20), ("10m20s", 20), ("11m", 20)] {
            cases.push_str(&format!(
                "      - expr: '{}'\n        eval_time: {at}\n        exp_samples:\n          - labels: '{labels}'\n            value: {value}\n",
                q.replace('\'', "''")
            ));
        }
    }
    let test = format!(
        "rule_files: []\nevaluation_interval: 15s\ntests:\n  - interval: 15s\n    input_series:\n{input}    promql_expr_test:\n{cases}"
    );
    let dir = std::env::temp_dir().join(format!("rtc-midnight-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("midnight.test.yml");
    std::fs::write(&file, &test).unwrap();
    run("promtool", &["test", "rules", &file.display().to_string()]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Alertmanager example names only alerts that exist, and amtool accepts it where
/// installed.
#[test]
fn the_alertmanager_example_inhibits_existing_alerts() {
    let names: Vec<String> = alerts().into_iter().map(|(n, _)| n).collect();
    let example = yaml("examples/alertmanager.yml");
    let rules = example["inhibit_rules"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    assert!(rules.len() >= 3);
    let mut named = 0;
    for rule in &rules {
        for side in ["source_matchers", "target_matchers"] {
            for m in rule[side].as_sequence().into_iter().flatten() {
                let m = m.as_str().unwrap_or_default();
                let Some((_, value)) = m.split_once('=') else {
                    panic!("{m}: not a matcher");
                };
                for alert in value.trim_matches(['~', '"']).split('|') {
                    if alert.chars().all(|c| c.is_ascii_alphanumeric()) {
                        assert!(names.iter().any(|n| n == alert), "{m}: no alert {alert}");
                        named += 1;
                    }
                }
            }
        }
        let equal = rule["equal"].as_sequence().cloned().unwrap_or_default();
        assert!(
            !equal.is_empty(),
            "an inhibition without equal: silences every instance"
        );
    }
    assert!(named >= 8, "{named} alert names");
    // Target down silences its stale and error alerts, on the same target.
    let target_down = rules
        .iter()
        .find(|r| r["source_matchers"][0].as_str() == Some("alertname=\"RtcExporterTargetDown\""))
        .expect("an inhibition by RtcExporterTargetDown");
    let targets = format!("{:?}", target_down["target_matchers"]);
    for silenced in ["RtcExporterTargetStale", "RtcVendorErrors"] {
        assert!(targets.contains(silenced), "{targets}");
    }
    assert!(format!("{:?}", target_down["equal"]).contains("target"));
    if let Ok(out) = Command::new("amtool")
        .args(["check-config", "examples/alertmanager.yml"])
        .output()
    {
        assert!(
            out.status.success(),
            "amtool: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
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
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: [\"{}\"]\nscrape_configs:\n  - job_name: rtc-exporter\n    static_configs: [{{ targets: [\"{exporter}\"] }}]\n",
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
                let up = query("up{job=\"rtc-exporter\"} == 1").await?;
                let rooms = query("rtc_room_users").await?;
                let served = common::all(&common::scrape(&base).await, "rtc_room_users").len();
                (!up.is_empty() && served > 0 && rooms.len() == served).then_some(())
            }
        },
    )
    .await;
    // Every rule of every group evaluates on live data without an error (e.g. no many-to-many
    // matches).
    let rules = wait_for(
        "the rules to be evaluated",
        Duration::from_secs(30),
        || async {
            let r = reqwest::get(format!("{api}/rules")).await.ok()?;
            let v: serde_json::Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
            let rules: Vec<serde_json::Value> = v["data"]["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
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
    assert!(rules.len() >= 19, "{} rules loaded", rules.len());
    for r in &rules {
        assert_eq!(
            r["health"], "ok",
            "rule {} on live data: {}",
            r["name"], r["lastError"]
        );
    }

    // Every query of the dashboard (panels and variables) returns data from the demo, and no
    // value is NaN or infinite (a room with capacity 0 must not show +Inf).
    let queries = dashboard_queries();
    assert!(queries.len() >= 30, "{} dashboard queries", queries.len());
    let mut left: Vec<(String, String)> = queries.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut still = Vec::new();
        for (what, q) in left {
            let got = instant(&api, &q).await;
            match got {
                Some(series) if !series.is_empty() => {
                    for s in &series {
                        let v = s["value"][1].as_str().unwrap_or("");
                        assert!(
                            !matches!(v, "NaN" | "+Inf" | "-Inf"),
                            "{what}: {q} gives {v} for {}",
                            s["metric"]
                        );
                    }
                }
                _ => still.push((what, q)),
            }
        }
        left = still;
        if left.is_empty() || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        left.is_empty(),
        "dashboard queries without data on the demo:\n{}",
        left.iter()
            .map(|(w, q)| format!("{w}: {q}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "{} dashboard queries checked, every one with data",
        queries.len()
    );
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// An instant query's result, `None` on an error (the error is printed).
async fn instant(api: &str, q: &str) -> Option<Vec<serde_json::Value>> {
    let r = reqwest::Client::new()
        .get(format!("{api}/query"))
        .query(&[("query", q)])
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
    if v["status"] != "success" {
        eprintln!("{q}: {}", v["error"]);
    }
    v["data"]["result"].as_array().cloned()
}

/// Every PromQL expression of the dashboard, named by panel title (and ref id) or variable,
/// with Grafana's variables replaced as "All" selects them: `$__rate_interval` by a window that
/// holds a few of the test's 1 s scrapes, every other `$var` by `.*`; a variable's
/// `label_values(metric, label)` by its metric.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("dashboards/rtc-exporter.json").unwrap();
    let board: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut out = Vec::new();
    fn panels(list: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("(untitled)");
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            if p["type"] != "row" && p["type"] != "text" {
                assert!(!targets.is_empty(), "panel {title} has no query");
            }
            for t in targets {
                let expr = t["expr"].as_str().unwrap_or_default();
                assert!(!expr.is_empty(), "panel {title}: a target without expr");
                let what = format!("panel {title} ({})", t["refId"].as_str().unwrap_or("?"));
                out.push((what, expr.to_string()));
            }
            panels(&p["panels"], out);
        }
    }
    panels(&board["panels"], &mut out);
    for v in board["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or("");
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.rsplit_once(','))
            .map(|(m, _)| m.to_string())
            .unwrap_or_else(|| panic!("variable {}: {q}", v["name"]));
        out.push((format!("variable {}", v["name"]), inner));
    }
    out.into_iter()
        .map(|(what, q)| {
            let q = q.replace("$__rate_interval", "15s");
            let mut r = String::new();
            let mut rest = q.as_str();
            while let Some(i) = rest.find('$') {
                r.push_str(&rest[..i]);
                let name_len = rest[i + 1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len() - i - 1);
                r.push_str(".*");
                rest = &rest[i + 1 + name_len..];
            }
            r.push_str(rest);
            (what, r)
        })
        .collect()
}

//! Helpers shared by the integration tests: start the exporter against a config, scrape it,
//! read samples by name and labels, wait for a condition; [`etcd`] runs real etcd servers.
#![allow(dead_code)]

pub mod etcd;

use std::time::Duration;

use rtc_exporter::app::{self, Running};
use rtc_exporter::config;

/// Parses config text (errors printed in full).
pub fn config(text: &str) -> config::Config {
    match config::parse(text, std::path::Path::new("test.yaml")) {
        Ok(c) => c,
        Err(e) => panic!("test config does not parse:\n{e}\n---\n{text}"),
    }
}

/// Starts the exporter on a free loopback port.
pub async fn start(text: &str) -> Running {
    app::start(config(text), &["127.0.0.1:0".to_string()], "/metrics")
        .await
        .expect("exporter starts")
}

/// GETs a path and returns (status, body).
pub async fn get(base: &str, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("{base}{path}"))
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

/// The `/metrics` text.
pub async fn scrape(base: &str) -> String {
    let (status, body) = get(base, "/metrics").await;
    assert_eq!(status, 200);
    body
}

/// One parsed sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of the exposition text.
pub fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = line.rsplit_once(' ').expect("sample line has a value");
        let value: f64 = value.parse().expect("numeric value");
        let (name, labels) = match head.find('{') {
            None => (head.to_string(), Vec::new()),
            Some(i) => {
                let inner = &head[i + 1..head.len() - 1];
                let mut labels = Vec::new();
                let mut rest = inner;
                while !rest.is_empty() {
                    let eq = rest.find("=\"").expect("label =\"");
                    let key = rest[..eq].to_string();
                    let mut val = String::new();
                    let mut chars = rest[eq + 2..].char_indices();
                    let mut end = 0;
                    while let Some((j, c)) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some((_, n)) = chars.next() {
                                    val.push(if n == 'n' { '\n' } else { n });
                                }
                            }
                            '"' => {
                                end = eq + 2 + j + 1;
                                break;
                            }
                            c => val.push(c),
                        }
                    }
                    labels.push((key, val));
                    rest = rest[end..].trim_start_matches(',');
                }
                (head[..i].to_string(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The value of the one sample named `name` whose labels include `labels`.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<_> = samples(text)
        .into_iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .collect();
    assert!(
        found.len() <= 1,
        "{name} {labels:?} matches {} samples",
        found.len()
    );
    found.first().map(|s| s.value)
}

/// Every sample named `name`.
pub fn all(text: &str, name: &str) -> Vec<Sample> {
    samples(text)
        .into_iter()
        .filter(|s| s.name == name)
        .collect()
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `rtc_exporter_polls_total{target, result}` reaches `at_least`; returns the scrape.
pub async fn wait_polls(base: &str, target: &str, result: &str, at_least: f64) -> String {
    wait_for(
        &format!("{at_least} {result} polls of {target}"),
        Duration::from_secs(30),
        || async {
            let text = scrape(base).await;
            let n = value(
                &text,
                "rtc_exporter_polls_total",
                &[("target", target), ("result", result)],
            )
            .unwrap_or(0.0);
            (n >= at_least).then_some(text)
        },
    )
    .await
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends SIGTERM to a child and waits for it.
pub fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait().unwrap()
}

/// The `/metrics` text, or `None` while the exporter is not up yet.
pub async fn try_scrape(base: &str) -> Option<String> {
    reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The Python interpreter for a test of a vendor's official SDK, with the versions `check`
/// prints (a script that imports the package): `RTC_PYTHON`, else `python3`. Where the package
/// is missing, `None` after a line saying the test is skipped; with `RTC_PYTHON` set (CI), a
/// failure instead.
pub fn python_with(package: &str, check: &str) -> Option<(String, String)> {
    let (python, required) = match std::env::var("RTC_PYTHON") {
        Ok(p) if !p.is_empty() => (p, true),
        _ => ("python3".to_string(), false),
    };
    let probe = std::process::Command::new(&python)
        .args(["-c", check])
        .output();
    match probe {
        Ok(o) if o.status.success() => {
            let version = String::from_utf8_lossy(&o.stdout).trim().to_string();
            Some((python, version))
        }
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            assert!(!required, "RTC_PYTHON={python} has no {package}: {why}");
            eprintln!(
                "skipped: {python} with the {package} package is needed (pip install {package}): {why}"
            );
            None
        }
    }
}

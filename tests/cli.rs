//! The command line a newcomer meets: `--version`, flags checked before anything starts, the
//! exit status of a bad config, the demo on loopback, and `simulate --write-config` feeding the
//! real daemon.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{free_port, terminate, try_scrape, wait_for};

fn exporter() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rtc-exporter"));
    c.env_remove("CREDENTIALS_DIRECTORY");
    c
}

fn run(args: &[&str]) -> Output {
    exporter().args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rtc-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn version_shows_revision_and_build_date() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    let line = stdout(&out);
    let line = line.trim();
    let rest = line
        .strip_prefix(&format!(
            "rtc-exporter {} (revision ",
            env!("CARGO_PKG_VERSION")
        ))
        .unwrap_or_else(|| panic!("{line}"));
    let (revision, rest) = rest
        .split_once(", built ")
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        revision == "unknown"
            || (revision.len() == 12 && revision.chars().all(|c| c.is_ascii_hexdigit())),
        "{line}"
    );
    assert_eq!(revision, rtc_exporter::REVISION, "{line}");
    let date = rest.strip_suffix(')').unwrap_or_else(|| panic!("{line}"));
    assert!(
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok(),
        "{line}"
    );
}

#[test]
fn telemetry_path_must_be_absolute_and_shadow_no_endpoint() {
    for (path, says) in [
        ("metrics", "must start with /"),
        ("", "must start with /"),
        ("/", "/ is the exporter's own endpoint"),
        ("/-/healthy", "/-/healthy is the exporter's own endpoint"),
        ("/-/ready", "/-/ready is the exporter's own endpoint"),
        ("/-/reload", "/-/reload is the exporter's own endpoint"),
    ] {
        let flag = format!("--web.telemetry-path={path}");
        // Refused before the config is even read.
        let out = run(&[&flag, "--config.file=/nonexistent/exporter.yaml"]);
        assert_eq!(out.status.code(), Some(2), "{path}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(says) && stderr(&out).contains("--web.telemetry-path"),
            "{path}: {}",
            stderr(&out)
        );
        let out = run(&["demo", &flag]);
        assert_eq!(out.status.code(), Some(2), "demo {path}: {}", stderr(&out));
    }
}

#[test]
fn simulate_help_lists_only_its_own_flags() {
    let out = run(&["simulate", "--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for flag in ["--listen", "--seed", "--write-config", "--log.level"] {
        assert!(help.contains(flag), "{flag} missing:\n{help}");
    }
    for flag in ["--config.", "--web."] {
        assert!(!help.contains(flag), "{flag} listed:\n{help}");
    }
    let out = run(&["demo", "--help"]);
    let help = stdout(&out);
    assert!(help.contains("--web.listen-address") && help.contains("127.0.0.1:10063"));
    assert!(!help.contains("--config."), "{help}");
}

#[test]
fn flags_a_subcommand_does_not_use_are_refused_not_ignored() {
    for args in [
        &["demo", "--config.file=exporter.yaml"][..],
        &["--config.file=exporter.yaml", "demo"][..],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("demo reads no config file") && err.contains("simulate --write-config"),
            "{args:?}: {err}"
        );
    }
    let out = run(&["--web.listen-address=127.0.0.1:0", "simulate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("`simulate` does not use --web.listen-address"),
        "{}",
        stderr(&out)
    );
    let out = run(&["simulate", "--config.file=x"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_bad_config_at_start_exits_78() {
    let dir = temp_dir("bad-config");
    let bad = dir.join("exporter.yaml");
    std::fs::write(&bad, "targets:\n  - name: a\n    vendor: nope\n").unwrap();
    let port = free_port();
    for file in [bad.as_path(), Path::new("/nonexistent/exporter.yaml")] {
        let out = exporter()
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    }
    // `--config.check` keeps 0 or 1.
    let out = run(&[
        "--config.check",
        &format!("--config.file={}", bad.display()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn no_targets_starts_serves_its_own_metrics_and_warns() {
    let dir = temp_dir("no-targets");
    let file = dir.join("exporter.yaml");
    std::fs::write(&file, "global:\n  timezone: UTC\ntargets:\n  # - name: a\n").unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = exporter()
        .arg(format!("--config.file={}", file.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let text = wait_for("the exporter up", Duration::from_secs(30), || {
        let base = base.clone();
        async move { try_scrape(&base).await }
    })
    .await;
    assert!(text.contains("rtc_exporter_build_info{"), "{text}");
    assert_eq!(common::get(&base, "/-/ready").await.0, 200);
    let status = terminate(&mut child);
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(status.success(), "{logs}");
    assert!(
        logs.contains("level=warn") && logs.contains("no targets"),
        "{logs}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The listening sockets on `port` (Linux `/proc/net/tcp*`): their local addresses, in the
/// kernel's hex form (`0100007F` is 127.0.0.1).
fn listeners_on(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address, rem_address, st (0A: LISTEN)
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                continue;
            };
            let Some((ip, p)) = local.split_once(':') else {
                continue;
            };
            if *state == "0A" && u16::from_str_radix(p, 16).ok() == Some(port) {
                out.push(ip.to_string());
            }
        }
    }
    out
}

#[test]
fn demo_binds_loopback_by_default() {
    let mut child = exporter()
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let opened = lines.find_map(|l| l.ok().filter(|l| l.starts_with("rtc-exporter demo: open ")));
    let Some(opened) = opened else {
        // Nothing printed: it could not start. The default port taken by something else on
        // this machine is the one reason to let pass.
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!status.success());
        assert!(err.contains("10063"), "demo failed: {err}");
        eprintln!("port 10063 busy, cannot check the demo's default address: {err}");
        return;
    };
    assert!(
        opened.contains("http://127.0.0.1:10063/metrics"),
        "{opened}"
    );
    let bound = listeners_on(10063);
    let status = terminate(&mut child);
    assert!(status.success());
    if Path::new("/proc/net/tcp").exists() {
        assert_eq!(bound, ["0100007F"], "the demo listens on 127.0.0.1 only");
    }
}

#[tokio::test]
async fn simulate_writes_a_config_the_daemon_checks_and_runs() {
    let dir = temp_dir("write-config");
    let file = dir.join("exporter.yaml");
    let mut sim = exporter()
        .arg("simulate")
        .arg(format!("--write-config={}", file.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sim.stdout.take().unwrap()).lines();
    let wrote = lines.find_map(|l| l.ok().filter(|l| l.starts_with("wrote ")));
    assert!(wrote.is_some_and(|l| l.contains(&file.display().to_string())));
    let text = std::fs::read_to_string(&file).unwrap();

    let out = exporter()
        .args(["--config.check", "--config.file"])
        .arg(&file)
        .output()
        .unwrap();
    let vendors: Vec<&str> = rtc_exporter::clouds::REGISTRY
        .iter()
        .map(|e| e.name)
        .collect();
    assert!(out.status.success(), "{}\n{text}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("OK, {} target(s)", vendors.len())),
        "{}",
        stdout(&out)
    );

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut daemon = exporter()
        .arg(format!("--config.file={}", file.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("every vendor's target up", Duration::from_secs(60), || {
        let base = base.clone();
        let vendors = vendors.clone();
        async move {
            let text = try_scrape(&base).await?;
            let up = common::all(&text, "rtc_exporter_target_up");
            vendors
                .iter()
                .all(|v| {
                    up.iter()
                        .any(|s| s.label("vendor") == Some(v) && s.value == 1.0)
                })
                .then_some(())
        }
    })
    .await;
    assert!(terminate(&mut daemon).success());
    assert!(terminate(&mut sim).success());
    let _ = std::fs::remove_dir_all(&dir);
}

//! Config fixtures (`tests/fixtures/config/*.ok.yaml` must load; each `*.bad.yaml` must fail with
//! exactly the `# error:` lines at its top) and the `--config.check` command line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use rtc_exporter::config;

const FIXTURES: &str = "tests/fixtures/config";
const SECRET_FROM_ENV: &str = "env-secret-value-9f2c";

fn fixtures(suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(FIXTURES)
        .expect("fixtures folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no {suffix} fixtures");
    v
}

fn exporter() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rtc-exporter"));
    c.env("RTC_TEST_SECRET", SECRET_FROM_ENV);
    c.env_remove("CREDENTIALS_DIRECTORY");
    c
}

/// A folder of systemd credentials (`$CREDENTIALS_DIRECTORY`), one file per `(name, value)`.
fn credentials_dir(test: &str, creds: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rtc-creds-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, value) in creds {
        std::fs::write(dir.join(name), format!("{value}\n")).unwrap();
    }
    dir
}

#[test]
fn ok_fixtures_load() {
    for path in fixtures(".ok.yaml") {
        let out = exporter()
            .args(["--config.check", "--config.file"])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("OK"), "{stdout}");
        assert!(!stdout.contains(SECRET_FROM_ENV) && !stdout.contains("file-secret-value"));
    }
}

#[test]
fn bad_fixtures_fail_with_exactly_their_messages() {
    // `{vendors}` stands for the registry's names, so adding a vendor touches no fixture.
    let vendors = rtc_exporter::clouds::REGISTRY
        .iter()
        .map(|e| e.name)
        .collect::<Vec<_>>()
        .join(", ");
    for path in fixtures(".bad.yaml") {
        let text = std::fs::read_to_string(&path).unwrap();
        let expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# error: "))
            .map(|m| m.replace("{vendors}", &vendors))
            .map(|m| format!("{}: {m}", path.display()))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} names the errors it must produce",
            path.display()
        );
        let out = exporter()
            .args(["--config.check", "--config.file"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{} exits 1", path.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let got: Vec<&str> = stderr.lines().collect();
        assert_eq!(got, expected, "{}", path.display());
        assert!(
            !stderr.contains("hunter2") && !stderr.contains("4609123456789"),
            "a misplaced secret is not echoed: {stderr}"
        );
    }
}

#[test]
fn secrets_are_resolved_and_never_printed() {
    // RTC_TEST_SECRET is set for the child processes only; in process, a variable of its own.
    let text = std::fs::read_to_string("tests/fixtures/config/full.ok.yaml")
        .unwrap()
        .replace(
            "{ env: RTC_TEST_SECRET }",
            "{ env: RTC_TEST_SECRET_INPROC }",
        );
    // Only this test reads this variable.
    std::env::set_var("RTC_TEST_SECRET_INPROC", SECRET_FROM_ENV);
    let cfg = config::parse(&text, Path::new("tests/fixtures/config/full.ok.yaml")).unwrap();
    let debug = format!("{cfg:?}");
    assert!(
        !debug.contains(SECRET_FROM_ENV) && !debug.contains("file-secret-value"),
        "{debug}"
    );
    assert_eq!(cfg.targets.len(), 2);
    assert_eq!(cfg.global.timezone, chrono_tz::Asia::Shanghai);
}

#[test]
fn version_and_help() {
    let out = exporter().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = exporter().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config.file",
        "--config.check",
        "--web.listen-address",
        "--web.telemetry-path",
        "--log.level",
        "--log.format",
        "demo",
        "simulate",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
    let out = exporter().arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_missing_config_file_is_named() {
    let out = exporter()
        .args([
            "--config.check",
            "--config.file",
            "/nonexistent/exporter.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/exporter.yaml: cannot read")
    );
}

#[test]
fn the_shipped_example_is_valid() {
    // Its secrets are systemd credentials, as the unit loads them.
    let all = [
        ("urtc_private_key", "example-private-key"),
        ("volc_secret_access_key", "example-secret-access-key"),
        ("trtc_secret_key", "example-secret-key"),
        ("talkcloud_key", "example-key-0123"),
    ];
    let dir = credentials_dir("example", &all);
    let out = exporter()
        .args(["--config.check", "--config.file", "exporter.yaml.example"])
        .env("CREDENTIALS_DIRECTORY", &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OK, 4 target(s)"), "{stdout}");
    for (_, value) in all {
        assert!(!stdout.contains(value));
    }

    std::fs::remove_file(dir.join("urtc_private_key")).unwrap();
    let out = exporter()
        .args(["--config.check", "--config.file", "exporter.yaml.example"])
        .env("CREDENTIALS_DIRECTORY", &dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "exporter.yaml.example: targets[0] (urtc-classes): credentials.private_key: cannot read \
             credential urtc_private_key from {}: No such file or directory (os error 2)",
            dir.join("urtc_private_key").display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn credential_secrets_without_credentials_directory_or_with_an_empty_file() {
    let out = exporter()
        .args(["--config.check", "--config.file", "exporter.yaml.example"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 4, "one error per target: {stderr}");
    assert!(
        stderr
            .lines()
            .all(|l| l.contains("CREDENTIALS_DIRECTORY is not set")),
        "{stderr}"
    );

    let dir = credentials_dir(
        "empty",
        &[
            ("urtc_private_key", ""),
            ("volc_secret_access_key", "x"),
            ("trtc_secret_key", "x"),
            ("talkcloud_key", "x"),
        ],
    );
    let out = exporter()
        .args(["--config.check", "--config.file", "exporter.yaml.example"])
        .env("CREDENTIALS_DIRECTORY", &dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim_end().ends_with(&format!(
            "credentials.private_key: credential urtc_private_key ({}) is empty",
            dir.join("urtc_private_key").display()
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_check_reports_the_requests_a_poll_needs_and_warns_where_they_cannot_fit() {
    let dir = std::env::temp_dir().join(format!("rtc-budget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rooms = |n: usize| {
        (0..n)
            .map(|i| format!("r{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let file = dir.join("budget.yaml");
    std::fs::write(
        &file,
        format!(
            "global:\n  interval: 60s\n  poll_timeout: 50s\ntargets:\n  - name: small\n    vendor: volcengine_rtc\n    app_id: \"1\"\n    credentials: {{ access_key_id: a, secret_access_key: b }}\n    rooms: [{}]\n  - name: big\n    vendor: volcengine_rtc\n    app_id: \"1\"\n    credentials: {{ access_key_id: a, secret_access_key: b }}\n    rooms: [{}]\n",
            rooms(100),
            rooms(5000)
        ),
    )
    .unwrap();
    let out = exporter()
        .args(["--config.check", "--config.file"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let small = stdout
        .lines()
        .find(|l| l.contains("target small"))
        .unwrap_or("");
    assert!(
        small.contains("100 requests at 40 QPS, about 2.5s"),
        "{stdout}"
    );
    assert!(!small.starts_with("warning"), "{stdout}");
    let big = stdout
        .lines()
        .find(|l| l.contains("target big"))
        .unwrap_or("");
    assert!(big.starts_with("warning: "), "{stdout}");
    assert!(
        big.contains("5000 requests at 40 QPS, about 125.0s"),
        "{stdout}"
    );
    assert!(big.contains("reads about 2000 rooms"), "{stdout}");
    assert!(big.contains("the target stays up"), "{stdout}");
    assert!(big.contains("at least 3 polls"), "{stdout}");
}

#[test]
fn config_check_reports_talkcloud_requests_one_per_room_at_5_qps() {
    let dir = std::env::temp_dir().join(format!("rtc-budget-talk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rooms = |n: usize| {
        (0..n)
            .map(|i| format!("\"{}\"", 7_100_000_000u64 + i as u64))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let file = dir.join("budget.yaml");
    std::fs::write(
        &file,
        format!(
            "global:\n  interval: 60s\n  poll_timeout: 50s\ntargets:\n  - name: classes\n    vendor: talkcloud\n    credentials: {{ key: abcdefabcdef1234 }}\n    rooms: [{}, {{ thirdroomid: my-class }}]\n  - name: school\n    vendor: talkcloud\n    credentials: {{ key: abcdefabcdef1234 }}\n    rooms: [{}]\n  - name: slow\n    vendor: talkcloud\n    qps: 2\n    credentials: {{ key: abcdefabcdef1234 }}\n    rooms: [{}]\n",
            rooms(9),
            rooms(300),
            rooms(120)
        ),
    )
    .unwrap();
    let out = exporter()
        .args(["--config.check", "--config.file"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("abcdefabcdef1234"), "{stdout}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.contains(&format!("target {name}:")))
            .unwrap_or("")
            .to_string()
    };
    // Nine serials and a thirdroomid: one request each.
    let classes = line("classes");
    assert!(
        classes.contains("a poll needs 10 requests at 5 QPS, about 2.0s"),
        "{stdout}"
    );
    assert!(!classes.starts_with("warning"), "{stdout}");
    // 300 rooms at 5 QPS: 60 s, over poll_timeout.
    let school = line("school");
    assert!(school.starts_with("warning: "), "{stdout}");
    assert!(
        school.contains("300 requests at 5 QPS, about 60.0s"),
        "{stdout}"
    );
    // `qps:` lowers the pace: 120 rooms at 2 QPS do not fit either.
    let slow = line("slow");
    assert!(slow.starts_with("warning: "), "{stdout}");
    assert!(
        slow.contains("120 requests at 2 QPS, about 60.0s"),
        "{stdout}"
    );
}

#[test]
fn occupancy_thresholds_and_classes_are_read_with_their_defaults() {
    let text = std::fs::read_to_string("tests/fixtures/config/occupancy.ok.yaml").unwrap();
    let cfg = config::parse(&text, Path::new("occupancy.yaml")).unwrap();
    assert_eq!(cfg.global.capacity_warning_ratio, 0.85);
    let talk = &cfg.targets[0].expected;
    assert_eq!(talk.max_users, Some(2000));
    let cap = &talk.capacity;
    // A room's own capacity and ratio, else the target's, else the global ratio.
    assert_eq!(cap.of("7100000001"), Some(1000));
    assert_eq!(cap.warning_ratio_of("7100000001"), 0.8);
    assert_eq!(cap.of("7100000002"), Some(40));
    assert_eq!(cap.warning_ratio_of("7100000002"), 0.95);
    assert_eq!(
        cap.of("open-day"),
        Some(600),
        "a ratio alone keeps the default capacity"
    );
    assert_eq!(cap.warning_ratio_of("open-day"), 0.5);
    let classes = talk.classes.list();
    assert_eq!(classes.len(), 3);
    assert_eq!(classes[1].rooms, ["open-day"]);
    assert_eq!(
        classes[1].duration,
        std::time::Duration::from_secs(3 * 3600)
    );
    assert!(talk.classes.covers("7100000009") && !talk.classes.covers("7100000010"));

    let urtc = &cfg.targets[1].expected;
    assert_eq!(urtc.max_users, None);
    assert!(urtc.classes.is_empty());
    assert_eq!(urtc.capacity.of("closed"), Some(0));
    assert_eq!(
        urtc.capacity.warning_ratio_of("closed"),
        0.85,
        "the global ratio where the target sets none"
    );
    let default = config::parse(
        "targets:\n  - name: a\n    vendor: ucloud_urtc\n    app_id: x\n    credentials: { public_key: p, private_key: k }\n    capacity: { default: 10 }\n",
        Path::new("d.yaml"),
    )
    .unwrap();
    assert_eq!(
        default.targets[0].expected.capacity.warning_ratio_of("r"),
        0.9
    );
}

#[test]
fn config_check_warns_where_request_timeout_is_over_poll_timeout() {
    let dir = std::env::temp_dir().join(format!("rtc-timeouts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let check = |global: &str| {
        let file = dir.join("timeouts.yaml");
        std::fs::write(
            &file,
            format!("global:\n{global}targets:\n  - name: a\n    vendor: ucloud_urtc\n    app_id: x\n    credentials: {{ public_key: p, private_key: k }}\n"),
        )
        .unwrap();
        let out = exporter()
            .args(["--config.check", "--config.file"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "a warning, not an error");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let over = check("  poll_timeout: 1500ms\n");
    let line = over.lines().find(|l| l.contains("request_timeout"));
    assert_eq!(
        line,
        Some(
            format!(
                "warning: {}: global.request_timeout (10s) is longer than global.poll_timeout (1500ms): a request never gets its whole time, the poll's deadline cuts it first",
                dir.join("timeouts.yaml").display()
            )
            .as_str()
        ),
        "{over}"
    );
    let equal = check("  poll_timeout: 10s\n  request_timeout: 10s\n");
    assert!(!equal.contains("request_timeout"), "{equal}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_check_prints_the_state_file_resolved_beside_the_config_file() {
    let dir = std::env::temp_dir().join(format!("rtc-state-path-{}", std::process::id()));
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(
        dir.join("etc/exporter.yaml"),
        "global:\n  state_file: state/today.json\ntargets: []\n",
    )
    .unwrap();
    // Run from another folder, the config named relative to it: the state file is beside the
    // config file, not in the working directory.
    let out = exporter()
        .current_dir(&elsewhere)
        .args(["--config.check", "--config.file", "../etc/exporter.yaml"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("global.state_file: "))
        .unwrap_or_else(|| panic!("no state file line: {stdout}"));
    assert_eq!(
        std::fs::canonicalize(Path::new(line).parent().unwrap().parent().unwrap()).unwrap(),
        std::fs::canonicalize(dir.join("etc")).unwrap(),
        "{line}"
    );
    assert!(line.ends_with("state/today.json"), "{line}");
    assert!(Path::new(line).is_absolute(), "{line}");
    // Its targets' files are in the folder beside it.
    assert!(
        stdout.contains(&format!("state folder: {line}.d (one file per target)")),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

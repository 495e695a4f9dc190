//! What the Debian package and the README's "Deploy" ship, checked from the repository: the
//! package's config is the example with every target commented out and starts with none, the
//! unit runs what the package installs and loads the credentials the example reads, and the
//! Prometheus and Grafana examples are valid. (`.ci/run` builds, installs and checks the package
//! itself with dpkg and systemd-analyze.)

use std::collections::BTreeSet;
use std::process::Command;

const EXAMPLE: &str = "exporter.yaml.example";
const PACKAGED: &str = "packaging/exporter.yaml";
const UNIT: &str = "systemd/rtc-exporter.service";

/// The lines the package's config starts with, before the example.
const PACKAGED_HEADER: &str = "\
# /etc/rtc-exporter/exporter.yaml, as the rtc-exporter package installs it: the example
# (/usr/share/rtc-exporter/examples/exporter.yaml.example) with every target commented out, so
# the service starts, serving only its own metrics, until a target is configured. Uncomment and
# edit a target (remove the leading \"# \"), then:
#   rtc-exporter --config.check --config.file=/etc/rtc-exporter/exporter.yaml
#   systemctl enable --now rtc-exporter      (or `systemctl reload rtc-exporter` once it runs)
#
";

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The example with each line under `targets:` that is not blank or a comment commented out
/// with a leading `# `.
fn packaged_from(example: &str) -> String {
    let mut out = String::from(PACKAGED_HEADER);
    let mut in_targets = false;
    for line in example.split_inclusive('\n') {
        let code = !line.trim().is_empty() && !line.trim_start().starts_with('#');
        if in_targets && code {
            out.push_str("# ");
        }
        out.push_str(line);
        in_targets |= line.trim_end() == "targets:";
    }
    out
}

#[test]
fn packaged_config_is_the_example_with_every_target_commented_out() {
    let want = packaged_from(&read(EXAMPLE));
    if std::env::var_os("RTC_EXPORTER_BLESS").is_some() {
        std::fs::write(PACKAGED, &want).unwrap();
    }
    assert!(
        read(PACKAGED) == want,
        "{PACKAGED} is not {EXAMPLE} with its targets commented out; after changing the example, \
         run  RTC_EXPORTER_BLESS=1 cargo test --test package  and commit both"
    );
    // Uncommenting gives the example back.
    let uncommented: String = read(PACKAGED)
        .strip_prefix(PACKAGED_HEADER)
        .unwrap()
        .split_inclusive('\n')
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect();
    // Compared from `targets:` on: above it, the example's own column-0 comments lose their
    // "# " too.
    let example = read(EXAMPLE);
    let (_, tail) = example.split_once("\ntargets:\n").unwrap();
    let (_, got_tail) = uncommented.split_once("\ntargets:\n").unwrap();
    assert_eq!(got_tail, tail, "uncommented targets differ from {EXAMPLE}");
}

#[test]
fn packaged_config_starts_with_no_targets_and_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_rtc-exporter"))
        .args(["--config.check", "--config.file", PACKAGED])
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK, 0 target(s)"), "{stdout}");
    assert!(
        stdout.contains("warning: ") && stdout.contains("no targets"),
        "{stdout}"
    );
}

/// The values of `Key=` lines in the unit.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn the_unit_loads_the_credentials_the_example_reads() {
    let unit = read(UNIT);
    let loaded: BTreeSet<&str> = unit_values(&unit, "LoadCredentialEncrypted")
        .into_iter()
        .collect();
    let example = read(EXAMPLE);
    let read_by_example: BTreeSet<&str> = example
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once("{ credential: ")?.1.split_once(" }"))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(read_by_example.len(), 4, "{read_by_example:?}");
    assert_eq!(loaded, read_by_example);
}

#[test]
fn the_unit_runs_what_the_package_installs() {
    let unit = read(UNIT);
    let cargo = read("Cargo.toml");
    let exec = unit_values(&unit, "ExecStart");
    assert_eq!(
        exec,
        ["/usr/bin/rtc-exporter --config.file=/etc/rtc-exporter/exporter.yaml $ARGS"]
    );
    assert!(cargo.contains(r#"["target/release/rtc-exporter", "usr/bin/", "755"]"#));
    assert!(
        cargo.contains(r#"["packaging/exporter.yaml", "etc/rtc-exporter/exporter.yaml", "640"]"#)
    );
    assert!(cargo.contains(r#"unit-scripts = "systemd""#));
    assert_eq!(unit_values(&unit, "Type"), ["exec"]);
    assert_eq!(unit_values(&unit, "ExecReload"), ["kill -HUP $MAINPID"]);
    // Exit status 78 is the exporter's "bad config" (src/main.rs EXIT_CONFIG).
    assert!(unit_values(&unit, "RestartPreventExitStatus")
        .iter()
        .any(|v| v.split_whitespace().any(|s| s == "78")));
    assert_eq!(unit_values(&unit, "StateDirectory"), ["rtc-exporter"]);
    // The example's state file is in the unit's StateDirectory.
    assert!(read(EXAMPLE).contains("state_file: /var/lib/rtc-exporter/"));
    for key in ["MemoryMax", "TasksMax"] {
        assert_eq!(unit_values(&unit, key).len(), 1, "{key}");
    }
}

#[test]
fn example_prometheus_config_and_its_rules_pass_promtool() {
    let out = Command::new("promtool")
        .args(["check", "config", "examples/prometheus.yml"])
        .output()
        .expect("promtool on the PATH (Debian: apt-get install prometheus)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("1 rule files found"),
        "the rules are loaded: {text}"
    );
}

#[test]
fn grafana_provisioning_points_at_the_packaged_dashboards() {
    let providers: serde_yaml::Value =
        serde_yaml::from_str(&read("examples/grafana/dashboards.yml")).unwrap();
    let provider = &providers["providers"][0];
    assert_eq!(provider["type"].as_str(), Some("file"));
    let path = provider["options"]["path"].as_str().unwrap();
    assert_eq!(path, "/usr/share/rtc-exporter/dashboards");
    assert!(read("Cargo.toml")
        .contains(r#"["dashboards/*.json", "usr/share/rtc-exporter/dashboards/", "644"]"#));

    let sources: serde_yaml::Value =
        serde_yaml::from_str(&read("examples/grafana/datasource.yml")).unwrap();
    assert_eq!(sources["apiVersion"].as_u64(), Some(1));
    assert_eq!(
        sources["datasources"][0]["type"].as_str(),
        Some("prometheus")
    );
    // The dashboard picks any Prometheus data source.
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("dashboards/rtc-exporter.json")).unwrap();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(variables
        .iter()
        .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"));
}

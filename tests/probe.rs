//! `rtc-exporter probe`, the real binary, against every vendor's simulator: one poll of one
//! target shows its requests, answers and figures, exits 0, and shows no secret; against a
//! simulator fault it shows the failing request and exits 1; `--save` writes a fixture that
//! holds no secret.

use std::process::Command;

use rtc_exporter::sim::{Fault, Faults, SimServer, Simulator};

/// Every string under a `credentials:` key of the config.
fn credentials(v: &serde_yaml::Value, under: bool, out: &mut Vec<String>) {
    match v {
        serde_yaml::Value::String(s) if under && s.len() >= 6 => out.push(s.clone()),
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                credentials(v, under || k.as_str() == Some("credentials"), out);
            }
        }
        serde_yaml::Value::Sequence(s) => s.iter().for_each(|v| credentials(v, under, out)),
        _ => {}
    }
}

fn faults(sim: &dyn Simulator) -> &Faults {
    sim.faults()
        .unwrap_or_else(|| panic!("{}'s simulator has no fault switches", sim.vendor()))
}

async fn probe(args: Vec<String>) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_rtc-exporter"))
            .args(&args)
            .output()
            .expect("the binary runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    })
    .await
    .expect("joined")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_polls_each_vendor_once_shows_no_secret_and_exits_1_on_a_fault() {
    let dir = tempfile_dir();
    let mut servers = Vec::new();
    for (i, entry) in rtc_exporter::clouds::REGISTRY.iter().enumerate() {
        let sim = rtc_exporter::simulate::simulator(entry.name, 7 + i as u64).unwrap();
        servers.push(
            SimServer::start(sim, "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        );
    }
    let config = dir.join("sim.yaml");
    rtc_exporter::simulate::write_config(&config, &servers).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut secrets = Vec::new();
    credentials(&yaml, false, &mut secrets);
    assert!(secrets.len() >= 4, "credentials found: {}", secrets.len());
    let names: Vec<String> = yaml["targets"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), servers.len());
    let config_arg = format!("--config.file={}", config.display());

    for (name, server) in names.iter().zip(&servers) {
        let vendor = server.sim.vendor();
        let (code, out) = probe(vec![
            "probe".into(),
            config_arg.clone(),
            format!("--target={name}"),
        ])
        .await;
        assert_eq!(code, 0, "{vendor}: probe of a healthy simulator:\n{out}");
        assert!(
            out.contains(&format!("probe of target {name} ({vendor})"))
                && out.contains("request 1: ")
                && out.contains("HTTP 200")
                && out.contains("answer (")
                && out.contains("figures after this poll:")
                && out.contains("  target: rooms in progress ")
                && out.contains("result: the poll succeeded"),
            "{vendor}:\n{out}"
        );
        for s in &secrets {
            assert!(
                !out.contains(s.as_str()),
                "{vendor}: a secret in probe's output:\n{out}"
            );
        }

        // Every API answers 502: the failing request is shown, exit 1.
        faults(server.sim.as_ref()).set_all(Fault {
            http_status: Some(502),
            ..Fault::default()
        });
        let failed_dir = dir.join(format!("failed-{vendor}"));
        let (code, out) = probe(vec![
            "probe".into(),
            config_arg.clone(),
            format!("--target={name}"),
            format!("--save={}", failed_dir.display()),
        ])
        .await;
        faults(server.sim.as_ref()).clear();
        // The saved fixture of a failed poll says so: down, nothing published.
        let saved: Vec<_> = std::fs::read_dir(&failed_dir).unwrap().flatten().collect();
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(saved[0].path()).unwrap()).unwrap();
        assert_eq!(doc["expect"]["up"].as_bool(), Some(false), "{vendor}");
        assert_eq!(
            doc["expect"]["no_figures"].as_bool(),
            Some(true),
            "{vendor}"
        );
        assert_eq!(code, 1, "{vendor}: probe of a failing simulator:\n{out}");
        assert!(
            out.contains("HTTP 502") && out.contains("result: the poll failed"),
            "{vendor}:\n{out}"
        );
        for s in &secrets {
            assert!(
                !out.contains(s.as_str()),
                "{vendor}: a secret in probe's output:\n{out}"
            );
        }
    }

    // --save: a fixture file in the tests/answers format, without a secret.
    let saved = dir.join("saved");
    let (code, out) = probe(vec![
        "probe".into(),
        config_arg.clone(),
        format!("--target={}", names[0]),
        format!("--save={}", saved.display()),
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    let files: Vec<_> = std::fs::read_dir(&saved).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "{out}");
    let fixture = std::fs::read_to_string(files[0].path()).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&fixture).unwrap();
    assert_eq!(doc["vendor"].as_str(), Some(servers[0].sim.vendor()));
    assert!(doc["answers"].as_sequence().is_some_and(|a| !a.is_empty()));
    assert_eq!(doc["expect"]["up"].as_bool(), Some(true));
    assert!(doc["target"].get("credentials").is_none());
    for s in &secrets {
        assert!(
            !fixture.contains(s.as_str()),
            "a secret in the saved fixture:\n{fixture}"
        );
    }

    // An unknown target: named, exit 1.
    let (code, out) = probe(vec!["probe".into(), config_arg, "--target=nope".into()]).await;
    assert_eq!(code, 1);
    assert!(
        out.contains("no target named \"nope\"") && out.contains(&names[0]),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rtc-exporter-probe-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

//! Every answer under `tests/answers/` (the vendors' own published examples, shapes the docs
//! describe, answers captured with `probe --save`) is served by a replay server and read by the
//! real vendor client through `probe`'s code path, on a clock set to the fixture's `now`; the
//! figures it gives must be the ones the fixture states. Format: `tests/answers/README.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use rtc_exporter::clock::ManualClock;
use rtc_exporter::clouds::Anomaly;
use rtc_exporter::sim::replay::{Recorded, Replay};
use rtc_exporter::sim::SimServer;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    vendor: String,
    source: String,
    now: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    target: Option<Mapping>,
    answers: Vec<Answer>,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    api: String,
    #[serde(default)]
    when: Option<String>,
    #[serde(default = "ok_status")]
    status: u16,
    body: String,
}

fn ok_status() -> u16 {
    200
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    up: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    rooms_failed: Option<Vec<String>>,
    #[serde(default)]
    users: Option<u64>,
    #[serde(default)]
    peak: Option<u64>,
    #[serde(default)]
    accumulated: Option<u64>,
    #[serde(default)]
    rooms: Option<BTreeMap<String, RoomExpect>>,
    /// `absent`, or users by device label.
    #[serde(default)]
    devices: Option<Value>,
    /// Room → role label → users now; a room listed with `absent` has no role figures.
    #[serde(default)]
    roles: Option<BTreeMap<String, Value>>,
    /// Watched user → online; `absent`: none published.
    #[serde(default)]
    watched: Option<Value>,
    /// No figures at all: nothing answered.
    #[serde(default)]
    no_figures: bool,
    #[serde(default)]
    anomalies: Option<Vec<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RoomExpect {
    #[serde(default)]
    active: Option<bool>,
    #[serde(default)]
    users: Option<u64>,
    #[serde(default)]
    peak: Option<u64>,
    #[serde(default)]
    accumulated: Option<u64>,
    #[serde(default)]
    invisible: Option<u64>,
}

/// The target keys a fixture gets unless it gives its own (the replay checks no signature).
fn defaults(vendor: &str) -> Mapping {
    let text = match vendor {
        "ucloud_urtc" => {
            "app_id: URtc-fixture\ncredentials: {public_key: fixture-public-key, private_key: fixture-private-key}"
        }
        "volcengine_rtc" => {
            "app_id: 661e0000543cf\ncredentials: {access_key_id: AKLTfixtureAccessKeyId, secret_access_key: fixtureSecretAccessKey}"
        }
        "tencent_trtc" => {
            "sdk_app_id: 1400000001\ncredentials: {secret_id: AKIDfixtureSecretId, secret_key: fixtureSecretKey}"
        }
        "talkcloud" => "credentials: {key: fixturekey123456}",
        "agora" => {
            "app_id: 4855fixtureappid0000000000000eae2\ncredentials: {customer_id: fixturecustomerid, customer_secret: fixtureCustomerSecret}"
        }
        "livekit" => "credentials: {api_key: APIfixtureKey, api_secret: fixtureApiSecret}",
        "alibaba_artc" => {
            "app_id: a2hzfixture\ncredentials: {access_key_id: LTAIfixtureAccessKeyId, access_key_secret: fixtureAccessKeySecret}"
        }
        "zego" => "app_id: 1234567890\ncredentials: {server_secret: fixtureServerSecret}",
        _ => "{}",
    };
    serde_yaml::from_str(text).unwrap_or_default()
}

const SECRETS: &[&str] = &[
    "fixtureAccessKeySecret",
    "fixture-private-key",
    "fixtureCustomerSecret",
    "fixtureSecretAccessKey",
    "fixtureSecretKey",
    "fixturekey123456",
    "fixtureApiSecret",
    "fixtureServerSecret",
];

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/answers");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

fn room_check(
    errors: &mut Vec<String>,
    room: &str,
    got: &rtc_exporter::snapshot::RoomRow,
    want: &RoomExpect,
) {
    let mut check = |what: &str, got: u64, want: Option<u64>| {
        if let Some(w) = want {
            if got != w {
                errors.push(format!("room {room}: {what} {got}, expected {w}"));
            }
        }
    };
    check("users", got.users, want.users);
    check("peak", got.peak, want.peak);
    check("accumulated", got.accumulated, want.accumulated);
    if want.invisible.is_some() {
        check(
            "invisible",
            got.invisible.unwrap_or(u64::MAX),
            want.invisible,
        );
    }
    if let Some(a) = want.active {
        if got.active != a {
            errors.push(format!("room {room}: active {}, expected {a}", got.active));
        }
    }
}

/// Counts by label, zeros left out (a fixture may leave them out).
fn nonzero<'a>(counts: impl Iterator<Item = (&'a str, u64)>) -> BTreeMap<String, u64> {
    counts
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_string(), n))
        .collect()
}

/// A fixture's `label: count` mapping, zeros left out.
fn wanted_nonzero(want: &Mapping) -> BTreeMap<String, u64> {
    nonzero(
        want.iter()
            .filter_map(|(k, v)| Some((k.as_str()?, v.as_u64()?))),
    )
}

/// Reads one fixture to its figures; every way it differs from `expect`.
async fn check(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let f: Fixture = match serde_yaml::from_str(&text) {
        Ok(f) => f,
        Err(e) => return vec![format!("not a fixture: {e}")],
    };
    let mut errors = Vec::new();
    if f.source.trim().is_empty() {
        errors.push("source: say where the answer comes from".into());
    }
    let Some(entry) = rtc_exporter::clouds::lookup(&f.vendor) else {
        return vec![format!("unknown vendor {}", f.vendor)];
    };
    let recorded = f
        .answers
        .iter()
        .map(|a| Recorded {
            api: a.api.clone(),
            when: a.when.clone(),
            status: a.status,
            body: a.body.clone().into_bytes(),
        })
        .collect();
    let replay = Arc::new(Replay::new(entry.name, recorded));
    let server = SimServer::start(replay.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut target = defaults(&f.vendor);
    for (k, v) in f.target.clone().unwrap_or_default() {
        target.insert(k, v);
    }
    target.insert("name".into(), "fixture".into());
    target.insert("vendor".into(), f.vendor.clone().into());
    target.insert("endpoint".into(), server.endpoint.clone().into());
    let mut global = Mapping::new();
    global.insert(
        "timezone".into(),
        f.timezone.clone().unwrap_or_else(|| "UTC".into()).into(),
    );
    global.insert("poll_timeout".into(), "20s".into());
    global.insert("request_timeout".into(), "5s".into());
    let mut root = Mapping::new();
    root.insert("global".into(), global.into());
    root.insert("targets".into(), vec![Value::Mapping(target)].into());
    let config_text = serde_yaml::to_string(&root).unwrap();
    let config = match rtc_exporter::config::parse(&config_text, Path::new("fixture.yaml")) {
        Ok(c) => c,
        Err(e) => return vec![format!("config: {e}")],
    };
    let clock = Arc::new(ManualClock::at(f.now.timestamp()));
    let report = match rtc_exporter::probe::probe(&config, "fixture", clock).await {
        Ok(r) => r,
        Err(e) => return vec![format!("probe: {e}")],
    };
    drop(server);
    let e = &f.expect;
    if report.outcome.is_ok() != e.up {
        errors.push(format!(
            "up {}, expected {} ({:?})",
            report.outcome.is_ok(),
            e.up,
            report.outcome
        ));
    }
    if let (Some(want), Err(got)) = (&e.error, &report.outcome) {
        if !got.contains(want.as_str()) {
            errors.push(format!("error {got:?} does not contain {want:?}"));
        }
    }
    if let Some(want) = &e.rooms_failed {
        let got: BTreeSet<&String> = report.rooms_failed.iter().collect();
        let want: BTreeSet<&String> = want.iter().collect();
        if got != want {
            errors.push(format!("rooms failed {got:?}, expected {want:?}"));
        }
    }
    if let Some(want) = &e.anomalies {
        let got: BTreeSet<&str> = report.anomalies.iter().map(|a| a.kind.label()).collect();
        for w in want {
            if Anomaly::from_label(w).is_none() {
                errors.push(format!("anomalies: {w} is not a kind"));
            }
        }
        let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
        if got != want {
            errors.push(format!(
                "anomalies {got:?}, expected {want:?}: {:?}",
                report.anomalies
            ));
        }
    }
    let rendered = rtc_exporter::probe::render(&report);
    for s in SECRETS {
        if rendered.contains(s) {
            errors.push(format!("probe output shows the secret {s}"));
        }
    }
    let Some(data) = &report.data else {
        if !e.no_figures {
            errors.push(format!(
                "no figures (nothing answered), expected some; asked {:?}",
                replay.asked()
            ));
        }
        return errors;
    };
    if e.no_figures {
        errors.push(format!("figures published, expected none:\n{rendered}"));
    }
    let mut total = |what: &str, got: u64, want: Option<u64>| {
        if let Some(w) = want {
            if got != w {
                errors.push(format!("target {what} {got}, expected {w}"));
            }
        }
    };
    total("users", data.users, e.users);
    total("peak", data.peak, e.peak);
    total("accumulated", data.accumulated, e.accumulated);
    for r in &data.rooms {
        if r.peak > r.accumulated {
            errors.push(format!(
                "room {}: peak {} above accumulated {}",
                r.room, r.peak, r.accumulated
            ));
        }
    }
    if data.peak > data.accumulated {
        errors.push(format!(
            "target peak {} above accumulated {}",
            data.peak, data.accumulated
        ));
    }
    if let Some(want) = &e.rooms {
        let got: BTreeSet<&str> = data.rooms.iter().map(|r| r.room.as_str()).collect();
        let names: BTreeSet<&str> = want.keys().map(String::as_str).collect();
        if got != names {
            errors.push(format!("rooms {got:?}, expected {names:?}"));
        }
        for r in &data.rooms {
            if let Some(w) = want.get(&r.room) {
                room_check(&mut errors, &r.room, r, w);
            }
        }
    }
    match (&e.devices, &data.devices) {
        (None, _) => {}
        (Some(Value::String(s)), got) if s == "absent" => {
            if let Some(got) = got {
                errors.push(format!("devices {got:?}, expected absent (never measured)"));
            }
        }
        (Some(Value::Mapping(want)), Some(got)) => {
            let got_nonzero = nonzero(got.iter().map(|(d, n)| (d.label(), *n)));
            let want_nonzero = wanted_nonzero(want);
            if got_nonzero != want_nonzero {
                errors.push(format!(
                    "devices {got_nonzero:?}, expected {want_nonzero:?}"
                ));
            }
        }
        (Some(w), got) => errors.push(format!("devices {got:?}, expected {w:?}")),
    }
    if let Some(want) = &e.roles {
        for (room, w) in want {
            let Some(row) = data.rooms.iter().find(|r| &r.room == room) else {
                errors.push(format!("roles: no room {room}"));
                continue;
            };
            match (w, &row.roles) {
                (Value::String(s), None) if s == "absent" => {}
                (Value::String(s), Some(got)) if s == "absent" => {
                    errors.push(format!("room {room}: roles {got:?}, expected absent"))
                }
                (Value::Mapping(w), got) => {
                    let got = nonzero(got.iter().flatten().map(|(r, n)| (r.label(), *n)));
                    let w = wanted_nonzero(w);
                    if got != w {
                        errors.push(format!("room {room}: roles {got:?}, expected {w:?}"));
                    }
                }
                (w, got) => errors.push(format!("room {room}: roles {got:?}, expected {w:?}")),
            }
        }
    }
    match (&e.watched, data.watched.is_empty()) {
        (None, _) => {}
        (Some(Value::String(s)), empty) if s == "absent" => {
            if !empty {
                errors.push(format!("watched {:?}, expected absent", data.watched));
            }
        }
        (Some(Value::Mapping(w)), _) => {
            let got: BTreeMap<String, bool> = data.watched.iter().cloned().collect();
            let w: BTreeMap<String, bool> = w
                .iter()
                .filter_map(|(k, v)| {
                    let k = match k {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        _ => return None,
                    };
                    Some((k, v.as_bool()?))
                })
                .collect();
            if got != w {
                errors.push(format!("watched {got:?}, expected {w:?}"));
            }
        }
        (Some(w), _) => errors.push(format!("watched: {w:?} is neither absent nor a mapping")),
    }
    errors
}

#[tokio::test]
async fn every_recorded_answer_reads_to_its_stated_figures() {
    let files = fixtures();
    assert!(!files.is_empty(), "no fixtures under tests/answers/");
    let mut failures = Vec::new();
    let mut vendors = BTreeSet::new();
    for path in &files {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if let Some(v) = name.split('-').next() {
            vendors.insert(v.to_string());
        }
        let errors = check(path).await;
        if !errors.is_empty() {
            failures.push(format!("{name}:\n  {}", errors.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures read wrong:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    for entry in rtc_exporter::clouds::REGISTRY {
        assert!(
            vendors.contains(entry.name),
            "no fixture for {} (files are named <vendor>-<what>.yaml)",
            entry.name
        );
    }
}

//! The ARTC simulator against Alibaba's official Python SDK (`alibabacloud-rtc20180111` with
//! `alibabacloud-tea-openapi`): `DescribeChannels` as the SDK sends it by default (the V3
//! signature, ACS3-HMAC-SHA256) and with `signature_algorithm="v2"` (the RPC HMAC-SHA1
//! signature) is accepted over real HTTP on 127.0.0.1, and the same request signed with a wrong
//! secret is refused with `SignatureDoesNotMatch`. So the simulator checks what Alibaba's SDK
//! sends, not only what our client sends.
//!
//! Also our client, poll by poll: users and roles as the simulator's truth, a channel that
//! ends read as a real 0, and an exporter clock more than 15 minutes off named by Alibaba's
//! code; and through `probe`, both signatures.
//!
//! The SDK test needs `python3` with `alibabacloud-rtc20180111`; `RTC_PYTHON` names another interpreter
//! (CI's virtual environment). Without them the test says so and passes; with `RTC_PYTHON` set,
//! a missing package fails it (CI must run it).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rtc_exporter::clock::ManualClock;
use rtc_exporter::clouds::{self, DayFigures, Observation, Plumbing, PollCtx, Role, Vendor};
use rtc_exporter::metrics::SelfMetrics;
use rtc_exporter::sim::alibaba_artc::{ArtcSim, EMPTIED_FOR};
use rtc_exporter::sim::SimServer;
use serde_json::Value;

mod common;

/// One `DescribeChannels` call through the SDK; prints its body as JSON, or `{"error": code}`.
const SCRIPT: &str = r#"
import json, sys
from alibabacloud_rtc20180111.client import Client
from alibabacloud_rtc20180111 import models
from alibabacloud_tea_openapi import models as open_api
from alibabacloud_tea_util import models as util
endpoint, key_id, secret, app_id, algorithm = sys.argv[1:6]
config = open_api.Config(access_key_id=key_id, access_key_secret=secret,
                         endpoint=endpoint, protocol="http")
if algorithm != "default":
    config.signature_algorithm = algorithm
request = models.DescribeChannelsRequest(app_id=app_id, page_no=1, page_size=100)
try:
    resp = Client(config).describe_channels_with_options(request, util.RuntimeOptions())
    print(json.dumps(resp.body.to_map()))
except Exception as e:
    print(json.dumps({"error": getattr(e, "code", None) or type(e).__name__}))
"#;

/// Runs [`SCRIPT`] once: (endpoint, access key id, secret, app id, algorithm).
fn sdk_call(python: &str, args: [&str; 5]) -> Value {
    let out = Command::new(python)
        .args(["-W", "ignore", "-c", SCRIPT])
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "the SDK script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout).trim()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_channels_from_the_official_python_sdk_is_accepted_and_a_wrong_secret_refused() {
    let Some((python, version)) = common::python_with(
        "alibabacloud-rtc20180111",
        "import alibabacloud_rtc20180111.client, importlib.metadata as m; print(m.version('alibabacloud-rtc20180111'), m.version('alibabacloud-tea-openapi'))",
    ) else {
        return;
    };
    eprintln!("alibabacloud-rtc20180111, alibabacloud-tea-openapi: {version} ({python})");

    let server = SimServer::start(
        Arc::new(ArtcSim::new(21, 10)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let sim = server.get::<ArtcSim>().expect("the ARTC simulator");
    // The SDK takes `host:port`; `protocol="http"`.
    let endpoint = server.endpoint.trim_start_matches("http://").to_string();
    let secret = sim.secret();
    // Frozen at the real time: the SDK's clock agrees, and the channels stand still.
    let now = sim.clock.now();
    sim.clock.freeze(now);
    let want: Vec<String> = sim.truth(now).into_iter().map(|c| c.channel).collect();
    assert!(!want.is_empty(), "channels in progress");

    let (key_id, app_id) = (sim.access_key_id.clone(), sim.app_id.clone());
    // The SDK blocks: it runs off the runtime's threads while the simulator serves.
    let run = |secret: String, algorithm: &'static str| {
        let (python, endpoint) = (python.clone(), endpoint.clone());
        let (key_id, app_id) = (key_id.clone(), app_id.clone());
        tokio::task::spawn_blocking(move || {
            sdk_call(&python, [&endpoint, &key_id, &secret, &app_id, algorithm])
        })
    };

    // The SDK's default: the V3 signature.
    let v3 = run(secret.clone(), "default").await.unwrap();
    let records: Vec<String> =
        serde_json::from_value(v3["Records"].clone()).unwrap_or_else(|e| panic!("{e}: {v3}"));
    assert_eq!(records, want, "{v3}");
    assert_eq!(v3["TotalCnt"], Value::from(want.len()), "{v3}");
    assert_eq!(sim.accepted(), (1, 0), "the default request was signed V3");

    // The RPC HMAC-SHA1 signature, when the SDK is told to.
    let rpc = run(secret.clone(), "v2").await.unwrap();
    assert_eq!(rpc["Records"], v3["Records"], "{rpc}");
    assert_eq!(
        sim.accepted(),
        (1, 1),
        "the v2 request was signed RPC HMAC-SHA1"
    );

    // A wrong secret, both ways: refused with Alibaba's code.
    for algorithm in ["default", "v2"] {
        let wrong = run(format!("{secret}x"), algorithm).await.unwrap();
        assert_eq!(
            wrong["error"],
            Value::from("SignatureDoesNotMatch"),
            "{algorithm}: {wrong}"
        );
    }
    assert_eq!(sim.accepted(), (1, 1));
}

/// Our client, both ways: `probe` (the real binary, one poll) against the simulator with the
/// default V3 signature and with `signature: rpc`; each poll succeeds, the simulator counts the
/// requests under the scheme asked, and a wrong secret fails the poll with Alibaba's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_signs_both_ways_and_a_wrong_secret_is_named() {
    let server = SimServer::start(
        Arc::new(ArtcSim::new(22, 10)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let sim = server.get::<ArtcSim>().expect("the ARTC simulator");
    let now = sim.clock.now();
    sim.clock.freeze(now);
    let channels = sim.truth(now).len() as u64;
    assert!(channels > 0, "channels in progress");
    let dir = std::env::temp_dir().join(format!("rtc-artc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let probe = |signature: &str, secret: &str| {
        let file = dir.join(format!("{signature}.yaml"));
        std::fs::write(
            &file,
            format!(
                "targets:\n  - name: artc\n    vendor: alibaba_artc\n    endpoint: {}\n    app_id: \"{}\"\n    page_size: 4\n    signature: {signature}\n    credentials:\n      access_key_id: \"{}\"\n      access_key_secret: \"{secret}\"\n",
                server.endpoint, sim.app_id, sim.access_key_id
            ),
        )
        .unwrap();
        let file = file.display().to_string();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(env!("CARGO_BIN_EXE_rtc-exporter"))
                    .args(["probe", "--target", "artc"])
                    .arg(format!("--config.file={file}"))
                    .output()
                    .expect("the binary runs")
            })
            .await
            .unwrap()
        }
    };
    let requests = channels / 4 + 1 + channels;
    let out = probe("v3", &sim.secret()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(sim.accepted(), (requests, 0));
    let out = probe("rpc", &sim.secret()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(sim.accepted(), (requests, requests));
    for signature in ["v3", "rpc"] {
        let out = probe(signature, "wrong-secret").await;
        assert!(!out.status.success(), "{signature}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("SignatureDoesNotMatch"),
            "{signature}: {text}"
        );
        assert!(
            !text.contains("wrong-secret"),
            "{signature}: the secret shown"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

const T0: i64 = 1_795_176_000;

/// One poll at `T0` with the exporter's wall clock at `wall`.
async fn poll_at(c: &dyn Vendor, s: &SimServer, wall: i64) -> Result<Observation, String> {
    let metrics = Arc::new(SelfMetrics::new().unwrap());
    let p = Arc::new(
        Plumbing::new(Duration::from_secs(5), metrics)
            .unwrap()
            .with_clock(Arc::new(ManualClock::at(wall))),
    );
    let now = chrono::DateTime::from_timestamp(T0, 0).unwrap();
    let mut ctx = PollCtx::new("artc-test", "alibaba_artc", now, chrono_tz::UTC, p);
    ctx.endpoint = Some(s.endpoint.clone());
    let rest = c.poll(&ctx).await.map_err(|e| e.to_string())?;
    let mut obs = ctx.progress.take();
    obs.merge(rest);
    Ok(obs)
}

#[tokio::test]
async fn users_and_roles_equal_the_truth_and_an_ended_channel_is_a_real_zero() {
    let sim = ArtcSim::at(7, 14, T0);
    sim.clock.freeze(T0);
    let s = SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sim = s.get::<ArtcSim>().unwrap();
    let text = format!(
        "app_id: \"{}\"\npage_size: 3\ncredentials: {{access_key_id: \"{}\", access_key_secret: \"{}\"}}\n",
        sim.app_id,
        sim.access_key_id,
        sim.secret()
    );
    let c =
        match (clouds::lookup("alibaba_artc").unwrap().parse)(serde_yaml::from_str(&text).unwrap())
        {
            Ok(c) => c,
            Err(e) => panic!("{e:?}"),
        };
    let truth = sim.truth(T0);
    assert!(truth.len() >= 4, "{} channels", truth.len());
    assert!(truth.iter().any(|t| t.live) && truth.iter().any(|t| !t.live));

    let first = poll_at(c.as_ref(), &s, T0).await.unwrap();
    assert!(first.failed.is_empty(), "{:?}", first.first_error);
    let got: BTreeMap<String, (bool, u64)> = first
        .rooms
        .iter()
        .map(|r| (r.room.clone(), (r.active, r.users)))
        .collect();
    let want: BTreeMap<String, (bool, u64)> = truth
        .iter()
        .map(|t| (t.channel.clone(), (true, t.users)))
        .collect();
    assert_eq!(got, want);
    for t in &truth {
        let r = first.rooms.iter().find(|r| r.room == t.channel).unwrap();
        match (&r.day, t.live) {
            (DayFigures::PresentByRole { ids, roles }, true) => {
                assert_eq!(roles[&Role::Broadcaster], t.broadcasters, "{}", t.channel);
                assert_eq!(roles[&Role::Viewer], t.audience, "{}", t.channel);
                assert_eq!(ids.len() as u64, t.users);
            }
            (DayFigures::Present(ids), false) => assert_eq!(ids.len() as u64, t.users),
            (day, live) => panic!("{}: live {live}, read {day:?}", t.channel),
        }
    }

    // A channel ends: the listing no longer has it, and asked by name (`rooms:`) it exists
    // with nobody for a few seconds, then not at all: users 0 both times, never an error.
    let gone = truth[0].channel.clone();
    assert!(sim.end_channel(&gone));
    let second = poll_at(c.as_ref(), &s, T0).await.unwrap();
    assert!(second.rooms.iter().all(|r| r.room != gone));
    let named = match (clouds::lookup("alibaba_artc").unwrap().parse)(
        serde_yaml::from_str(&format!("{text}rooms: [\"{gone}\"]\n")).unwrap(),
    ) {
        Ok(c) => c,
        Err(e) => panic!("{e:?}"),
    };
    for at in [T0 + 1, T0 + EMPTIED_FOR + 1] {
        sim.clock.freeze(at);
        let obs = poll_at(named.as_ref(), &s, at).await.unwrap();
        assert!(obs.failed.is_empty(), "{:?}", obs.first_error);
        let r = &obs.rooms[0];
        assert_eq!(
            (r.room.as_str(), r.active, r.users),
            (gone.as_str(), false, 0)
        );
    }

    // The exporter's clock 16 minutes off: refused with Alibaba's code, not a wrong figure.
    sim.clock.freeze(T0);
    let e = poll_at(c.as_ref(), &s, T0 + 16 * 60).await.unwrap_err();
    assert!(e.contains("InvalidTimeStamp.Expired"), "{e}");
}

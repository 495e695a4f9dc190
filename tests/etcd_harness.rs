//! The etcd test harness (`tests/common/etcd.rs`) against real etcd servers: a member answers the
//! key-value helpers and keeps its data over a restart; a three-member cluster keeps answering
//! with its leader killed, a member paused or all members restarted, and a restarted member
//! catches up; with authentication on, a user reaches its prefix only; a TLS member answers only
//! clients with a certificate from its CA; nothing of a harness outlives its test, a panicking
//! one included. Skipped with a line where etcd is not installed (a failure under
//! `RTC_REQUIRE_ETCD=1`).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use common::etcd::Etcd;
use common::wait_for;

/// One POST to etcd's JSON gateway, with a token or none: (status, body).
async fn post(endpoint: &str, path: &str, token: Option<&str>, body: Value) -> (u16, String) {
    let mut request = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(format!("{endpoint}{path}"))
        .body(body.to_string());
    if let Some(token) = token {
        request = request.header("authorization", token);
    }
    let r = request.send().await.expect("etcd answers");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

#[tokio::test]
async fn one_member_serves_the_helpers_and_keeps_its_data_over_a_restart() {
    let Some(mut etcd) = Etcd::single().await else {
        return;
    };
    assert_eq!(etcd.len(), 1);
    let endpoint = etcd.endpoint(0);
    assert_eq!(etcd.endpoints(), vec![endpoint.clone()]);
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert!(!endpoint.ends_with(":2379"), "{endpoint}");
    assert!(etcd.is_healthy(0).await);
    assert_eq!(etcd.leader().await, Some(0));

    assert_eq!(etcd.get("/t/a").await, None);
    etcd.put("/t/a", "1").await;
    etcd.put("/t/b", b"\x00\xff").await;
    etcd.put("/t/empty", "").await;
    etcd.put("/u", "outside").await;
    assert_eq!(etcd.get("/t/a").await, Some(b"1".to_vec()));
    assert_eq!(etcd.get("/t/empty").await, Some(Vec::new()));
    assert_eq!(
        etcd.get_prefix("/t/").await,
        vec![
            ("/t/a".to_string(), b"1".to_vec()),
            ("/t/b".to_string(), b"\x00\xff".to_vec()),
            ("/t/empty".to_string(), Vec::new()),
        ]
    );
    assert_eq!(etcd.get_prefix("/t/b").await.len(), 1);

    assert_eq!(etcd.leases().await, 0);
    let lease = etcd.grant(60).await;
    etcd.put_leased("/t/leased", "x", lease).await;
    assert_eq!(etcd.leases().await, 1);
    assert_eq!(etcd.get("/t/leased").await, Some(b"x".to_vec()));

    assert_eq!(etcd.delete_prefix("/t/").await, 4);
    assert!(etcd.get_prefix("/t/").await.is_empty());
    assert_eq!(etcd.get("/u").await, Some(b"outside".to_vec()));

    // etcd shuts down on SIGTERM, then dies of the signal it re-raises.
    let status = etcd.stop(0).await;
    assert_eq!(status.signal(), Some(15), "etcd exited {status} on SIGTERM");
    let log = std::fs::read_to_string(etcd.log_path(0)).expect("log");
    assert!(log.contains("received signal; shutting down"), "{log}");
    assert_eq!(etcd.pid(0), None);
    assert!(!etcd.is_healthy(0).await);
    etcd.start(0).await;
    assert!(etcd.is_healthy(0).await);
    assert_eq!(etcd.get("/u").await, Some(b"outside".to_vec()));

    let pid = etcd.pid(0).expect("running");
    let log = etcd.log_path(0);
    let dir = log
        .parent()
        .and_then(Path::parent)
        .expect("temp dir")
        .to_path_buf();
    assert!(std::fs::read_to_string(&log).is_ok_and(|l| l.contains("starting m0")));
    drop(etcd);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "etcd {pid} outlived its harness"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
async fn a_cluster_answers_with_its_leader_killed_or_a_member_paused() {
    let Some(mut etcd) = Etcd::cluster(3).await else {
        return;
    };
    let endpoints = etcd.endpoints();
    assert_eq!(endpoints.len(), 3);
    assert!(endpoints[0] != endpoints[1] && endpoints[1] != endpoints[2]);
    for i in 0..3 {
        assert!(etcd.is_healthy(i).await, "member {i}");
    }
    let old = etcd.leader().await.expect("a leader");
    etcd.put("/k/1", "before").await;

    etcd.kill(old);
    assert_eq!(etcd.pid(old), None);
    assert!(!etcd.is_healthy(old).await);
    etcd.put("/k/2", "without the old leader").await;
    assert_eq!(
        etcd.get("/k/2").await,
        Some(b"without the old leader".to_vec())
    );
    let new = etcd.leader().await.expect("a new leader");
    assert_ne!(new, old);

    etcd.start(old).await;
    assert!(etcd.is_healthy(old).await);
    wait_for(
        "the restarted member to apply /k/2",
        Duration::from_secs(10),
        || {
            let etcd = &etcd;
            async move { etcd.get_at(old, "/k/2").await }
        },
    )
    .await;
    assert_eq!(etcd.get_at(old, "/k/1").await, Some(b"before".to_vec()));

    let leader = wait_for("an agreed leader", Duration::from_secs(10), || {
        etcd.leader()
    })
    .await;
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    etcd.pause(follower).await;
    assert!(!etcd.is_healthy(follower).await, "a paused member answered");
    assert!(etcd.pid(follower).is_some());
    etcd.put("/k/3", "while paused").await;
    etcd.resume(follower).await; // waits until it is healthy
    wait_for("the resumed member", Duration::from_secs(10), || {
        let etcd = &etcd;
        async move { etcd.get_at(follower, "/k/3").await }
    })
    .await;

    // A whole-cluster outage: one member back is no quorum (no wait, not healthy); the second
    // restores it, and the data is there.
    for i in 0..3 {
        etcd.kill(i);
    }
    etcd.start(0).await;
    assert!(!etcd.is_healthy(0).await, "one member of three is healthy");
    etcd.start(1).await;
    assert!(etcd.is_healthy(0).await && etcd.is_healthy(1).await);
    assert_eq!(etcd.get("/k/3").await, Some(b"while paused".to_vec()));
    etcd.start_all().await;
    assert!(etcd.is_healthy(2).await);
    assert_eq!(etcd.leases().await, 0);
}

#[tokio::test]
async fn with_auth_on_a_user_reaches_its_prefix_only_and_the_helpers_go_on() {
    let Some(mut etcd) = Etcd::single().await else {
        return;
    };
    etcd.put("/before", "x").await;
    etcd.enable_auth("rtc-exporter", "s3cret", "/rtc/").await;
    etcd.put("/rtc/a", "1").await;
    assert_eq!(etcd.get("/before").await, Some(b"x".to_vec()));
    let url = etcd.endpoint(0);

    let range = json!({"key": B64.encode("/rtc/a")});
    let (status, text) = post(&url, "/v3/kv/range", None, range.clone()).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("user name is empty"), "{text}");
    let wrong = json!({"name": "rtc-exporter", "password": "wrong"});
    let (status, text) = post(&url, "/v3/auth/authenticate", None, wrong).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("authentication failed"), "{text}");

    let right = json!({"name": "rtc-exporter", "password": "s3cret"});
    let (status, text) = post(&url, "/v3/auth/authenticate", None, right).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("json");
    let token = answer["token"].as_str().expect("a token");
    let (status, text) = post(&url, "/v3/kv/range", Some(token), range).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(&B64.encode("1")), "{text}");
    let inside = json!({"key": B64.encode("/rtc/b"), "value": B64.encode("2")});
    let (status, text) = post(&url, "/v3/kv/put", Some(token), inside).await;
    assert_eq!(status, 200, "{text}");
    let outside = json!({"key": B64.encode("/other"), "value": B64.encode("3")});
    let (status, text) = post(&url, "/v3/kv/put", Some(token), outside).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("permission denied"), "{text}");
    let (status, text) = post(&url, "/v3/lease/grant", Some(token), json!({"TTL": 30})).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(etcd.leases().await, 1);

    // A restart forgets the tokens: the helpers authenticate again.
    etcd.stop(0).await;
    etcd.start(0).await;
    assert_eq!(etcd.get("/rtc/b").await, Some(b"2".to_vec()));
    assert_eq!(etcd.get("/other").await, None);
}

#[tokio::test]
async fn a_tls_member_serves_only_clients_with_a_certificate_from_its_ca() {
    let Some(etcd) = Etcd::cluster_tls(1).await else {
        return;
    };
    let url = etcd.endpoint(0);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    etcd.put("/tls", "on").await;
    assert_eq!(etcd.get("/tls").await, Some(b"on".to_vec()));
    let files = etcd.tls().expect("TLS files");
    for f in [&files.ca_file, &files.cert_file, &files.key_file] {
        assert!(f.exists(), "{}", f.display());
    }

    let health = format!("{url}/health");
    let client = |identity: bool| {
        let b = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(files.ca_certificate());
        let b = if identity {
            b.identity(files.client_identity())
        } else {
            b
        };
        b.build().expect("client")
    };
    let r = client(true).get(&health).send().await.expect("answer");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.expect("body").contains("true"));
    let refused = client(false).get(&health).send().await;
    assert!(
        refused.is_err(),
        "answered without a client certificate: {refused:?}"
    );
    let plain = health.replacen("https://", "http://", 1);
    let plain = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(&plain)
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.expect("answer").status().is_success(),
        "answered plain HTTP"
    );
}

#[test]
fn a_panicking_test_leaves_no_etcd_running() {
    if common::etcd::binary().is_none() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let etcd = Etcd::single().await.expect("etcd is installed");
            tx.send((etcd.pid(0).expect("running"), etcd.log_path(0)))
                .expect("send");
            panic!("deliberate panic with an etcd running");
        });
    })
    .join();
    assert!(outcome.is_err(), "the test thread did not panic");
    let (pid, log) = rx.try_recv().expect("the test thread started etcd");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "etcd {pid} outlived a panic"
    );
    let member = log.parent().expect("member dir");
    assert!(!member.join("data").exists(), "data dir left after a panic");
    assert!(log.exists(), "the log a failure names was removed");
    std::fs::remove_dir_all(member.parent().expect("temp dir")).expect("remove temp dir");
}

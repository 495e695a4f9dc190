//! A target's lifecycle end to end: reload (SIGHUP's code path and `POST /-/reload`), today's
//! figures across a restart (the state file), backoff after failed polls, and cron across a
//! DST change on a clock the test drives.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{all, samples, scrape, value, wait_for, wait_polls};
use rtc_exporter::app::{self, Running, ServeOptions};
use rtc_exporter::clock::ManualClock;
use rtc_exporter::config;
use rtc_exporter::sim::ucloud_urtc::UrtcSim;
use rtc_exporter::sim::volcengine_rtc::VolcSim;
use rtc_exporter::sim::{Fault, SimServer};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rtc-lifecycle-{name}-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn urtc_sim(seed: u64) -> SimServer {
    let sim = UrtcSim::new(seed, 12);
    sim.clock.freeze(chrono::Utc::now().timestamp());
    SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn urtc(s: &SimServer) -> &UrtcSim {
    s.get::<UrtcSim>().unwrap()
}

/// One URTC target entry.
fn urtc_target(s: &SimServer, name: &str, extra: &str) -> String {
    let u = urtc(s);
    format!(
        "  - name: {name}\n    vendor: ucloud_urtc\n    endpoint: {}\n    app_id: {}\n    credentials:\n      public_key: {}\n      private_key: {}\n{extra}",
        s.endpoint,
        u.app_id,
        u.public_key,
        u.private_key()
    )
}

async fn start_file(path: &Path, lifecycle: bool) -> Running {
    let config = config::load(path).unwrap_or_else(|e| panic!("config: {e}"));
    let options = ServeOptions {
        enable_lifecycle: lifecycle,
        ..ServeOptions::new(&["127.0.0.1:0".to_string()], "/metrics")
    };
    app::start_with(config, options).await.unwrap()
}

async fn post(url: &str) -> (u16, String) {
    let r = reqwest::Client::new().post(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn targets_in(text: &str) -> std::collections::BTreeSet<String> {
    samples(text)
        .into_iter()
        .filter_map(|s| s.label("target").map(str::to_string))
        .collect()
}

#[tokio::test]
async fn reload_keeps_unchanged_targets_restarts_changed_ones_and_drops_removed_ones() {
    let s = urtc_sim(31).await;
    let dir = temp_dir("reload");
    let path = dir.join("exporter.yaml");
    let global = "global:\n  interval: 1s\n  poll_timeout: 5s\n  request_timeout: 2s\ntargets:\n";
    let first = format!(
        "{global}{}{}{}{}",
        urtc_target(&s, "keep", ""),
        urtc_target(&s, "change", ""),
        urtc_target(&s, "rekey", ""),
        urtc_target(&s, "gone", ""),
    );
    std::fs::write(&path, &first).unwrap();
    let running = start_file(&path, true).await;
    let base = running.url();
    for t in ["keep", "change", "rekey", "gone"] {
        wait_polls(&base, t, "success", 1.0).await;
    }
    let text = scrape(&base).await;
    assert_eq!(
        value(&text, "rtc_exporter_config_last_reload_successful", &[]),
        Some(1.0)
    );
    let keep = running.fleet.supervisor("keep").unwrap();

    // A bad file: 500 with every error, the running config stays, the gauge turns 0.
    std::fs::write(&path, format!("{first}    colour: blue\n")).unwrap();
    let (status, body) = post(&format!("{base}/-/reload")).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("failed to reload config") && body.contains("colour"),
        "{body}"
    );
    let text = scrape(&base).await;
    assert_eq!(
        value(&text, "rtc_exporter_config_last_reload_successful", &[]),
        Some(0.0)
    );
    let polls = value(
        &text,
        "rtc_exporter_polls_total",
        &[("target", "gone"), ("result", "success")],
    )
    .unwrap();
    wait_polls(&base, "gone", "success", polls + 1.0).await;

    // Other methods: 405, as Prometheus answers.
    let r = reqwest::get(format!("{base}/-/reload")).await.unwrap();
    assert_eq!(r.status().as_u16(), 405);

    // A good file: `keep` as it was, `change` polled less often, `rekey` on another app,
    // `gone` removed, `new` added.
    let second = format!(
        "{global}{}{}{}{}",
        urtc_target(&s, "keep", ""),
        urtc_target(&s, "change", "    interval: 2s\n"),
        urtc_target(&s, "rekey", "").replace(&urtc(&s).app_id, "URtc-other"),
        urtc_target(&s, "new", ""),
    );
    std::fs::write(&path, &second).unwrap();
    let report = running.reload().await.unwrap();
    assert_eq!(report.unchanged, vec!["keep".to_string()]);
    assert_eq!(report.restarted, vec!["change".to_string()]);
    assert_eq!(report.replaced, vec!["rekey".to_string()]);
    assert_eq!(report.added, vec!["new".to_string()]);
    assert_eq!(report.removed, vec!["gone".to_string()]);
    assert!(
        Arc::ptr_eq(&keep, &running.fleet.supervisor("keep").unwrap()),
        "an unchanged target keeps its supervisor (schedule phase, ledger, vendor state)"
    );
    // The restarted target shows its day and its poll state at once, before its first poll
    // (a target that was up stays up; one that was down stays down).
    let change = running.fleet.supervisor("change").unwrap().view();
    assert!(change.data.is_some(), "the day's figures carried over");
    assert!(change.polled && change.up && change.last_success.is_some());
    assert_eq!(change.interval_seconds, 2.0);
    // Another app: the day starts afresh.
    assert!(running
        .fleet
        .supervisor("rekey")
        .unwrap()
        .view()
        .data
        .is_none());

    let text = wait_polls(&base, "new", "success", 1.0).await;
    let names = targets_in(&text);
    assert!(
        !names.contains("gone"),
        "every series of a removed target goes: {names:?}"
    );
    for t in ["keep", "change", "rekey", "new"] {
        assert!(names.contains(t), "{t} missing: {names:?}");
    }
    assert_eq!(
        value(&text, "rtc_exporter_config_last_reload_successful", &[]),
        Some(1.0)
    );
    let at = value(
        &text,
        "rtc_exporter_config_last_reload_success_timestamp_seconds",
        &[],
    )
    .unwrap();
    assert!(at > 1.7e9, "{at}");
    // PUT reloads too (an unchanged file changes nothing).
    let r = reqwest::Client::new()
        .put(format!("{base}/-/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_the_lifecycle_flag_reload_over_http_is_forbidden() {
    let s = urtc_sim(32).await;
    let dir = temp_dir("nolifecycle");
    let path = dir.join("exporter.yaml");
    std::fs::write(
        &path,
        format!("targets:\n{}", urtc_target(&s, "a", "    interval: 1s\n")),
    )
    .unwrap();
    let running = start_file(&path, false).await;
    let (status, body) = post(&format!("{}/-/reload", running.url())).await;
    assert_eq!(
        (status, body.as_str()),
        (403, "Lifecycle API is not enabled.")
    );
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Volcengine target reports who is in now: its peak and accumulated are what the
/// exporter observed, so only the state file keeps them across a restart.
#[tokio::test]
async fn a_restart_never_lowers_todays_figures() {
    let sim = VolcSim::new(41, 12);
    sim.clock.freeze(sim.t0());
    let s = SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let v = s.get::<VolcSim>().unwrap();
    let busy: Vec<String> = v
        .room_ids()
        .into_iter()
        .filter(|r| v.room_truth(r).users > 0)
        .take(4)
        .collect();
    assert!(!busy.is_empty(), "the scenario has busy rooms at t0");
    let dir = temp_dir("state");
    let state = dir.join("state.json");
    let text = |state_file: Option<&Path>| {
        let global = match state_file {
            Some(p) => format!("global:\n  interval: 1s\n  state_file: {}\n", p.display()),
            None => "global:\n  interval: 1s\n".to_string(),
        };
        format!(
            "{global}targets:\n  - name: volc\n    vendor: volcengine_rtc\n    endpoint: {}\n    app_id: \"{}\"\n    credentials:\n      access_key_id: {}\n      secret_access_key: \"{}\"\n    rooms: [{}]\n",
            s.endpoint,
            v.app_id,
            v.access_key_id,
            v.secret_access_key(),
            busy.join(", ")
        )
    };
    let figures = |t: &str| {
        (
            value(t, "rtc_peak_users", &[("target", "volc")]),
            value(t, "rtc_accumulated_users", &[("target", "volc")]),
        )
    };

    let first = common::start(&text(Some(&state))).await;
    let before = wait_polls(&first.url(), "volc", "success", 2.0).await;
    let (peak, acc) = figures(&before);
    let (peak, acc) = (peak.unwrap(), acc.unwrap());
    assert!(peak > 0.0 && acc >= peak, "{peak} {acc}");
    first.stop().await.unwrap();
    let own = dir.join("state.json.d/volc.json");
    assert!(own.is_file(), "stop writes the target's state file");

    // Everyone leaves while the exporter is down.
    for r in &busy {
        assert!(v.end_room(r));
    }
    let second = common::start(&text(Some(&state))).await;
    // Before its first poll, the day so far is already served.
    let early = scrape(&second.url()).await;
    if value(
        &early,
        "rtc_exporter_polls_total",
        &[("target", "volc"), ("result", "success")],
    ) == Some(0.0)
    {
        assert_eq!(figures(&early), (Some(peak), Some(acc)), "{early}");
    }
    let after = wait_polls(&second.url(), "volc", "success", 2.0).await;
    assert_eq!(value(&after, "rtc_users", &[("target", "volc")]), Some(0.0));
    assert_eq!(
        figures(&after),
        (Some(peak), Some(acc)),
        "nothing went back"
    );
    let written = value(
        &after,
        "rtc_exporter_state_last_write_timestamp_seconds",
        &[],
    );
    assert!(written.is_some_and(|t| t > 1.7e9), "{written:?}");
    assert_eq!(
        value(&after, "rtc_exporter_state_write_failures_total", &[]),
        Some(0.0)
    );
    second.stop().await.unwrap();

    // Without the state file the same restart does lower them: the check above can fail.
    let control = common::start(&text(None)).await;
    let fresh = wait_polls(&control.url(), "volc", "success", 2.0).await;
    let (p, _) = figures(&fresh);
    assert!(p.unwrap_or(0.0) < peak, "control: {p:?} vs {peak}");
    control.stop().await.unwrap();

    // A damaged file is logged and ignored, never fatal.
    std::fs::write(&own, b"{\"version\":2,\"targ").unwrap();
    let third = common::start(&text(Some(&state))).await;
    wait_polls(&third.url(), "volc", "success", 1.0).await;
    third.stop().await.unwrap();
    let reread = rtc_exporter::state::load_target(&state, "volc").unwrap();
    assert_eq!(reread.unwrap().version, 2, "rewritten whole");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn failed_polls_back_off_and_the_first_success_returns_to_the_schedule() {
    let s = urtc_sim(33).await;
    let config = format!(
        "global:\n  interval: 1s\n  poll_timeout: 3s\n  request_timeout: 2s\ntargets:\n{}",
        urtc_target(&s, "flaky", "")
    );
    let running = common::start(&config).await;
    let base = running.url();
    let text = wait_polls(&base, "flaky", "success", 1.0).await;
    let rooms = all(&text, "rtc_room_users").len() as f64;
    assert!(rooms > 0.0);
    urtc(&s).faults.set(
        "QueryURtcOnlineUsers",
        Fault {
            http_status: Some(502),
            ..Fault::default()
        },
    );
    let text = wait_polls(&base, "flaky", "failure", 1.0).await;
    // No room answered: every room the day knows failed to refresh.
    assert_eq!(
        value(
            &text,
            "rtc_exporter_target_rooms_failed",
            &[("target", "flaky")]
        ),
        Some(rooms)
    );
    let t0 = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let text = scrape(&base).await;
    let failed = value(
        &text,
        "rtc_exporter_polls_total",
        &[("target", "flaky"), ("result", "failure")],
    )
    .unwrap();
    let elapsed = t0.elapsed().as_secs_f64();
    // Gaps of 1, 2, 4, 8 intervals: at most 5 polls in 10+ s, where the schedule alone
    // would make about 11. (A slow machine only makes fewer.)
    assert!(failed <= 5.0, "{failed} failed polls in {elapsed:.1}s");
    let next = value(
        &text,
        "rtc_exporter_target_next_poll_timestamp_seconds",
        &[("target", "flaky")],
    )
    .unwrap();
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    assert!(
        next > now - 3.5,
        "the next poll is planned, not overdue: {next} vs {now}"
    );

    urtc(&s).faults.clear();
    let text = wait_polls(&base, "flaky", "success", 2.0).await;
    assert_eq!(
        value(&text, "rtc_exporter_target_up", &[("target", "flaky")]),
        Some(1.0)
    );
    // Back on the plain schedule: two more successes come about a second apart.
    wait_for(
        "polls every interval again",
        Duration::from_secs(8),
        || async {
            let t = scrape(&base).await;
            let ok = value(
                &t,
                "rtc_exporter_polls_total",
                &[("target", "flaky"), ("result", "success")],
            )?;
            (ok >= 4.0).then_some(())
        },
    )
    .await;
    running.stop().await.unwrap();
}

fn rfc(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
}

/// Runs one cron target on a manual clock and returns (polls, next planned poll) after each
/// step of the clock.
async fn cron_steps(start: &str, steps: &[&str]) -> Vec<(f64, i64)> {
    let s = urtc_sim(34).await;
    let clock = Arc::new(ManualClock::at(rfc(start)));
    urtc(&s).clock.freeze(rfc(start));
    let text = format!(
        "global:\n  timezone: Europe/Berlin\n  poll_timeout: 5s\n  request_timeout: 2s\ntargets:\n{}",
        urtc_target(&s, "cron", "    schedule: \"0 0 9 * * *\"\n")
    );
    let running = app::start_with_clock(
        common::config(&text),
        &["127.0.0.1:0".to_string()],
        "/metrics",
        clock.clone(),
    )
    .await
    .unwrap();
    let base = running.url();
    let polls = |t: &str| {
        all(t, "rtc_exporter_polls_total")
            .iter()
            .filter(|s| s.label("result") != Some("overlap"))
            .map(|s| s.value)
            .sum::<f64>()
    };
    // Waits until `want` polls ran and the plan moved past `after`.
    let observe = |want: f64, after: i64| {
        let base = base.clone();
        async move {
            wait_for(
                &format!("poll {want} and a plan after {after}"),
                Duration::from_secs(20),
                || async {
                    let t = scrape(&base).await;
                    let next = value(
                        &t,
                        "rtc_exporter_target_next_poll_timestamp_seconds",
                        &[("target", "cron")],
                    )? as i64;
                    (polls(&t) >= want && next > after).then_some((polls(&t), next))
                },
            )
            .await
        }
    };
    let mut out = vec![observe(1.0, rfc(start)).await];
    for (i, step) in steps.iter().enumerate() {
        clock.set(rfc(step));
        urtc(&s).clock.freeze(rfc(step));
        out.push(observe((i + 2) as f64, rfc(step)).await);
    }
    running.stop().await.unwrap();
    out
}

#[tokio::test]
async fn cron_fires_at_the_configured_local_time_on_both_sides_of_dst() {
    // Europe/Berlin, 09:00 local: 08:00Z in winter time, 07:00Z in summer time.
    // Spring forward on 2026-03-29.
    let spring = cron_steps(
        "2026-03-28T07:30:00Z",
        &["2026-03-28T08:00:00Z", "2026-03-29T07:00:00Z"],
    )
    .await;
    assert_eq!(
        spring,
        vec![
            (1.0, rfc("2026-03-28T08:00:00Z")),
            (2.0, rfc("2026-03-29T07:00:00Z")),
            (3.0, rfc("2026-03-30T07:00:00Z")),
        ]
    );
    // Fall back on 2026-10-25.
    let autumn = cron_steps(
        "2026-10-24T06:30:00Z",
        &["2026-10-24T07:00:00Z", "2026-10-25T08:00:00Z"],
    )
    .await;
    assert_eq!(
        autumn,
        vec![
            (1.0, rfc("2026-10-24T07:00:00Z")),
            (2.0, rfc("2026-10-25T08:00:00Z")),
            (3.0, rfc("2026-10-26T08:00:00Z")),
        ]
    );
}

/// (date, target peak, target accumulated, per-room (peak, accumulated)) of the state file.
type Day = (String, u64, u64, Vec<(String, u64, u64)>);

fn read_state(path: &Path) -> Option<Day> {
    let file = rtc_exporter::state::load_target(path, "volc")
        .unwrap_or_else(|e| panic!("the state file always parses: {e}"))?;
    let v = serde_json::to_value(&file).unwrap();
    let l = &v["ledger"];
    let rooms = l["rooms"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                r["peak"].as_u64().unwrap(),
                r["accumulated"].as_u64().unwrap(),
            )
        })
        .collect();
    Some((
        l["date"].as_str()?.to_string(),
        l["peak"].as_u64()?,
        l["accumulated"].as_u64()?,
        rooms,
    ))
}

/// The real binary, killed with SIGKILL at random moments during polls and state writes, 200
/// times: after each kill the file parses and no figure of the day went back.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_never_corrupts_or_lowers_the_day() {
    // A running scenario: users come and go, so the observed figures keep moving.
    let sim = VolcSim::new(43, 20);
    let s = SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let v = s.get::<VolcSim>().unwrap();
    let dir = temp_dir("kill9");
    let state = dir.join("state.json");
    let config = dir.join("exporter.yaml");
    std::fs::write(
        &config,
        format!(
            "global:\n  interval: 200ms\n  poll_timeout: 2s\n  request_timeout: 1s\n  state_file: {}\ntargets:\n  - name: volc\n    vendor: volcengine_rtc\n    endpoint: {}\n    app_id: \"{}\"\n    credentials:\n      access_key_id: {}\n      secret_access_key: \"{}\"\n    rooms: [{}]\n",
            state.display(),
            s.endpoint,
            v.app_id,
            v.access_key_id,
            v.secret_access_key(),
            v.room_ids()[..3].join(", ")
        ),
    )
    .unwrap();
    let mut last: Option<Day> = None;
    let mut last_bytes: Vec<u8> = Vec::new();
    let (mut rewritten, mut rng) = (0, fastrand::Rng::with_seed(9));
    for round in 0..200 {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rtc-exporter"))
            .arg(format!("--config.file={}", config.display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--log.level=error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(rng.u64(50..800))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let Some(now) = read_state(&state) else {
            assert!(last.is_none(), "round {round}: the state file vanished");
            continue;
        };
        if let Some(prev) = &last {
            if prev.0 == now.0 {
                assert!(
                    now.1 >= prev.1 && now.2 >= prev.2,
                    "round {round}: target went back: {prev:?} -> {now:?}"
                );
                for (room, peak, acc) in &prev.3 {
                    let after = now.3.iter().find(|r| &r.0 == room);
                    let (_, p, a) = after.unwrap_or_else(|| panic!("round {round}: {room} lost"));
                    assert!(p >= peak && a >= acc, "round {round}: {room} went back");
                }
            }
        }
        let bytes = std::fs::read(dir.join("state.json.d/volc.json")).unwrap_or_default();
        if bytes != last_bytes {
            rewritten += 1;
            last_bytes = bytes;
        }
        last = Some(now);
    }
    // Writes went on throughout, so kills hit polls and writes. (A write stamps its second:
    // rounds within one second can leave equal files, so this counts at most the seconds.)
    assert!(
        rewritten >= 40,
        "only {rewritten} of 200 rounds left a new file"
    );
    let (_, peak, acc, _) = last.unwrap();
    assert!(peak > 0 && acc >= peak, "{peak} {acc}");
    let leftovers = std::fs::read_dir(dir.join("state.json.d"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().contains(".tmp."))
        })
        .count();
    assert!(leftovers <= 1, "{leftovers} temporary files left");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real binary: SIGHUP reloads (never ends the process), a bad file keeps it running.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_running_binary() {
    let s = urtc_sim(35).await;
    let dir = temp_dir("sighup");
    let path = dir.join("exporter.yaml");
    let global = "global:\n  interval: 1s\ntargets:\n";
    std::fs::write(&path, format!("{global}{}", urtc_target(&s, "one", ""))).unwrap();
    let port = common::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rtc-exporter"))
        .arg(format!("--config.file={}", path.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let hup = |pid: u32| {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    let wait_until = |what: &'static str, check: fn(&str) -> bool| {
        let base = base.clone();
        async move {
            wait_for(what, Duration::from_secs(30), || async {
                let text = common::try_scrape(&base).await?;
                check(&text).then_some(text)
            })
            .await
        }
    };
    wait_until("the first target", |t| targets_in(t).contains("one")).await;

    std::fs::write(
        &path,
        format!(
            "{global}{}{}",
            urtc_target(&s, "one", ""),
            urtc_target(&s, "two", "")
        ),
    )
    .unwrap();
    hup(child.id());
    wait_until("the added target", |t| targets_in(t).contains("two")).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended the process"
    );

    std::fs::write(&path, "global: [").unwrap();
    hup(child.id());
    let text = wait_until("the failed reload", |t| {
        value(t, "rtc_exporter_config_last_reload_successful", &[]) == Some(0.0)
    })
    .await;
    assert!(
        targets_in(&text).contains("two"),
        "the running config stays"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "a bad file ended the process"
    );
    let status = common::terminate(&mut child);
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

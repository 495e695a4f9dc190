//! High availability with real etcd servers (Debian's etcd-server): replicas of the binary
//! against simulated vendors, counted at the simulators; `kill -9`, etcd stopped and back,
//! three replicas over six shards.
//!
//! Skipped with a line where `etcd` is not installed, unless `RTC_REQUIRE_ETCD=1` (CI).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::etcd::Etcd;
use common::{all, free_port, terminate, try_scrape, value, wait_for};
use rtc_exporter::sim::ucloud_urtc::UrtcSim;
use rtc_exporter::sim::SimServer;
use tokio::time::Instant;

/// The lease of these tests: the shortest the exporter accepts, or `RTC_HA_LEASE_SECS` (the
/// failover measurement at the default lease: `RTC_HA_LEASE_SECS=15`).
fn lease() -> Duration {
    Duration::from_secs(lease_secs())
}

fn lease_secs() -> u64 {
    std::env::var("RTC_HA_LEASE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}
/// Their poll interval.
const INTERVAL: Duration = Duration::from_secs(1);

/// One simulated URTC account and the targets pointed at it.
struct Vendor {
    server: SimServer,
    app: String,
    public: String,
    private: String,
}

impl Vendor {
    async fn start(seed: u64) -> Vendor {
        let sim = UrtcSim::new(seed, 6);
        let (app, public, private) = (
            sim.app_id.clone(),
            sim.public_key.clone(),
            sim.private_key(),
        );
        let server = SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        Vendor {
            server,
            app,
            public,
            private,
        }
    }

    fn served(&self) -> u64 {
        self.server.served.load(Ordering::SeqCst)
    }

    fn target(&self, name: &str) -> String {
        format!(
            "  - name: {name}\n    vendor: ucloud_urtc\n    endpoint: {}\n    app_id: {}\n    credentials: {{ public_key: {}, private_key: {} }}\n",
            self.server.endpoint, self.app, self.public, self.private
        )
    }
}

/// A config of `targets` with `ha:` on `etcd` (no `ha:` where `etcd` is `None`).
fn config(
    vendor: &Vendor,
    targets: &[String],
    etcd: Option<&[String]>,
    prefix: &str,
    shards: u32,
    id: &str,
) -> String {
    let mut text = format!(
        "global: {{ interval: {}ms, poll_timeout: 900ms, request_timeout: 800ms }}\ntargets:\n",
        INTERVAL.as_millis()
    );
    for t in targets {
        text.push_str(&vendor.target(t));
    }
    if let Some(endpoints) = etcd {
        text.push_str(&format!(
            "ha:\n  etcd: {{ endpoints: [{}] }}\n  prefix: {prefix}\n  lease: {}s\n  shards: {shards}\n  id: {id}\n",
            endpoints.join(", "),
            lease().as_secs()
        ));
    }
    text
}

/// One exporter process.
struct Replica {
    child: Option<Child>,
    base: String,
    log: PathBuf,
}

impl Replica {
    fn start(dir: &Path, id: &str, config: &str) -> Replica {
        let file = dir.join(format!("{id}.yaml"));
        std::fs::write(&file, config).unwrap();
        let log = dir.join(format!("{id}.log"));
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_rtc-exporter"))
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Replica {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    async fn scrape(&self) -> Option<String> {
        self.child.as_ref()?;
        try_scrape(&self.base).await
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            assert!(
                terminate(&mut c).success(),
                "exit after SIGTERM\n{}",
                self.logs()
            );
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn gauge(text: &str, name: &str) -> f64 {
    value(text, name, &[]).unwrap_or(-1.0)
}

/// The targets whose series a scrape shows (it leads their shard).
fn shown(text: &str) -> BTreeSet<String> {
    all(text, "rtc_exporter_target_up")
        .into_iter()
        .filter_map(|s| s.label("target").map(str::to_string))
        .collect()
}

/// Vendor requests an exporter counted, all targets.
fn requests(text: &str) -> f64 {
    all(text, "rtc_exporter_vendor_requests_total")
        .iter()
        .map(|s| s.value)
        .sum()
}

fn polls(text: &str) -> f64 {
    all(text, "rtc_exporter_polls_total")
        .iter()
        .filter(|s| s.label("result") != Some("overlap"))
        .map(|s| s.value)
        .sum()
}

/// A quiet moment's counts: the exporter's requests and polls, and the simulator's, read
/// between two scrapes that agree (no poll ran in between).
async fn settled(r: &Replica, others: &[&Replica], vendor: &Vendor) -> (f64, f64, u64, f64) {
    wait_for(
        "a moment between polls",
        Duration::from_secs(30),
        || async {
            let a = r.scrape().await?;
            let served = vendor.served();
            let mut other = 0.0;
            for o in others {
                other += requests(&o.scrape().await?);
            }
            let b = r.scrape().await?;
            (requests(&a) == requests(&b) && polls(&a) == polls(&b))
                .then(|| (requests(&a), polls(&a), served, other))
        },
    )
    .await
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rtc-ha-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The leader among `replicas` once exactly one leads: its index.
async fn one_leader(replicas: &[&Replica], within: Duration) -> usize {
    wait_for("exactly one leader", within, || async {
        let mut leaders = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            if let Some(t) = r.scrape().await {
                if gauge(&t, "rtc_exporter_ha_leader") == 1.0 {
                    leaders.push(i);
                }
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_makes_exactly_the_vendor_requests_of_one_exporter() {
    let Some(etcd) = Etcd::single().await else {
        return;
    };
    let dir = temp("pair");
    let vendor = Vendor::start(31).await;
    let targets = vec!["urtc-a".to_string(), "urtc-b".to_string()];
    let endpoints = etcd.endpoints();

    // One exporter alone (no ha:): its requests per poll.
    let mut alone = Replica::start(
        &dir,
        "alone",
        &config(&vendor, &targets, None, "", 1, "alone"),
    );
    wait_for("six polls alone", Duration::from_secs(30), || async {
        let t = alone.scrape().await?;
        (polls(&t) >= 6.0).then_some(())
    })
    .await;
    let (req_alone, polls_alone, served_alone, _) = settled(&alone, &[], &vendor).await;
    alone.stop();
    assert_eq!(
        served_alone as f64, req_alone,
        "every request the simulator served was counted"
    );
    let per_poll = req_alone / polls_alone;

    // A pair on etcd against the same account.
    let before = vendor.served();
    let prefix = "/rtc-test/pair";
    let (a, b) = pair(&dir, &vendor, &targets, &endpoints, prefix);
    let leader = one_leader(&[&a, &b], Duration::from_secs(30)).await;
    let (lead, follow) = if leader == 0 { (&a, &b) } else { (&b, &a) };
    wait_for(
        "six polls by the leader",
        Duration::from_secs(30),
        || async {
            let t = lead.scrape().await?;
            (polls(&t) >= 6.0).then_some(())
        },
    )
    .await;
    let (req_lead, polls_lead, served, req_follow) = settled(lead, &[follow], &vendor).await;
    assert_eq!(req_follow, 0.0, "the follower sent no vendor request");
    assert_eq!(
        (served - before) as f64,
        req_lead,
        "the simulator served exactly the leader's requests"
    );
    assert_eq!(
        req_lead / polls_lead,
        per_poll,
        "a poll of the pair asks what a poll of one exporter asks"
    );
    let t = follow.scrape().await.unwrap();
    assert!(
        shown(&t).is_empty(),
        "a follower shows no target's series:\n{t}"
    );
    assert_eq!(gauge(&t, "rtc_exporter_ha_leader"), 0.0);
    assert_eq!(gauge(&t, "rtc_exporter_ha_replicas"), 2.0);
    let (status, _) = common::get(&follow.base, "/-/ready").await;
    assert_eq!(status, 200, "a follower is ready");
}

/// Two replicas `a` and `b` of `targets` under `prefix`.
fn pair(
    dir: &Path,
    vendor: &Vendor,
    targets: &[String],
    etcd: &[String],
    prefix: &str,
) -> (Replica, Replica) {
    let start =
        |id: &str| Replica::start(dir, id, &config(vendor, targets, Some(etcd), prefix, 1, id));
    (start("a"), start("b"))
}

/// Today's peak and accumulated figures of every target a scrape shows.
fn figures(text: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for name in [
        "rtc_peak_users",
        "rtc_accumulated_users",
        "rtc_room_peak_users",
        "rtc_room_accumulated_users",
    ] {
        for s in all(text, name) {
            let key = format!(
                "{}/{}",
                s.label("target").unwrap_or(""),
                s.label("room").unwrap_or("")
            );
            out.insert((name.to_string(), key), s.value);
        }
    }
    out
}

/// Kills the leader of a pair and measures until the other has polled: `(seconds, lowered)`
/// where `lowered` lists any figure below what the killed leader served.
async fn kill_and_take_over(a: &mut Replica, b: &mut Replica) -> (f64, Vec<String>) {
    let leader = one_leader(&[a, b], Duration::from_secs(30)).await;
    let (lead, other) = if leader == 0 { (a, b) } else { (b, a) };
    let polled_before = polls(&other.scrape().await.unwrap());
    // What the leader serves now is in etcd a moment later (written after each poll).
    let lead_text = lead.scrape().await.unwrap();
    let before = figures(&lead_text);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let killed = Instant::now();
    lead.kill9();
    let targets = shown(&lead_text);
    let after = wait_for(
        "the other replica leads and shows every target",
        Duration::from_secs(30),
        || async {
            let t = other.scrape().await?;
            (gauge(&t, "rtc_exporter_ha_leader") == 1.0
                && polls(&t) > polled_before
                && shown(&t) == targets)
                .then_some(t)
        },
    )
    .await;
    let took = killed.elapsed().as_secs_f64();
    let now = figures(&after);
    let lowered = before
        .iter()
        .filter(|(k, v)| now.get(*k).is_none_or(|n| n < *v))
        .map(|(k, v)| format!("{k:?}: {v} before, {:?} after", now.get(k)))
        .collect();
    (took, lowered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_hands_over_within_a_lease_and_an_interval_lowering_nothing() {
    let Some(etcd) = Etcd::single().await else {
        return;
    };
    let dir = temp("kill");
    let vendor = Vendor::start(32).await;
    let targets = vec!["urtc-a".to_string(), "urtc-b".to_string()];
    let endpoints = etcd.endpoints();
    let prefix = "/rtc-test/kill";
    let (mut a, mut b) = pair(&dir, &vendor, &targets, &endpoints, prefix);
    // Three polls, so the day has figures.
    tokio::time::sleep(lease() + 3 * INTERVAL).await;
    let (took, lowered) = kill_and_take_over(&mut a, &mut b).await;
    assert!(
        lowered.is_empty(),
        "figures lowered by the failover: {lowered:#?}"
    );
    // One lease plus one interval, and the scrapes' own 100 ms steps.
    let bound = (lease() + INTERVAL).as_secs_f64() + 0.5;
    assert!(
        took <= bound,
        "took {took:.2}s, more than a lease plus an interval ({bound}s)"
    );
    eprintln!("failover: {took:.2}s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_gone_stops_the_leader_within_its_lease_and_etcd_back_gives_one_leader() {
    let Some(mut etcd) = Etcd::single().await else {
        return;
    };
    let dir = temp("etcd-gone");
    let vendor = Vendor::start(33).await;
    let targets = vec!["urtc-a".to_string()];
    let endpoints = etcd.endpoints();
    let prefix = "/rtc-test/gone";
    let (a, b) = pair(&dir, &vendor, &targets, &endpoints, prefix);
    one_leader(&[&a, &b], Duration::from_secs(30)).await;
    tokio::time::sleep(2 * INTERVAL).await;

    let stopped = Instant::now();
    etcd.stop(0).await;
    // Within the lease both say they lead nothing, and no request reaches the vendor.
    wait_for(
        "no leader while etcd is down",
        lease() + Duration::from_secs(1),
        || async {
            let (ta, tb) = (a.scrape().await?, b.scrape().await?);
            (gauge(&ta, "rtc_exporter_ha_leader") == 0.0
                && gauge(&tb, "rtc_exporter_ha_leader") == 0.0
                && gauge(&ta, "rtc_exporter_ha_etcd_up") == 0.0)
                .then_some(())
        },
    )
    .await;
    assert!(stopped.elapsed() <= lease() + Duration::from_secs(1));
    let served = vendor.served();
    tokio::time::sleep(3 * INTERVAL).await;
    assert_eq!(
        vendor.served(),
        served,
        "no vendor request while nobody leads"
    );
    let (ta, tb) = (a.scrape().await.unwrap(), b.scrape().await.unwrap());
    assert!(
        shown(&ta).is_empty() && shown(&tb).is_empty(),
        "no target series without a leader"
    );

    etcd.start(0).await;
    one_leader(&[&a, &b], Duration::from_secs(30)).await;
    // And it stays one.
    tokio::time::sleep(lease()).await;
    one_leader(&[&a, &b], Duration::from_secs(1)).await;
    wait_for("polls again", Duration::from_secs(30), || async {
        (vendor.served() > served).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_over_six_shards_cover_every_target_once_also_after_a_kill() {
    let Some(mut etcd) = Etcd::cluster(3).await else {
        return;
    };
    let dir = temp("shards");
    // Six accounts of two targets each: an account's two go to one shard (one rate limit).
    let mut vendors = Vec::new();
    for seed in 34..40 {
        vendors.push(Vendor::start(seed).await);
    }
    let mut accounts: Vec<Vec<String>> = Vec::new();
    let mut text = config(&vendors[0], &[], None, "", 1, "");
    for (v, vendor) in vendors.iter().enumerate() {
        let names: Vec<String> = (0..2).map(|i| format!("urtc-{v}{i}")).collect();
        for n in &names {
            text.push_str(&vendor.target(n));
        }
        accounts.push(names);
    }
    let targets: Vec<String> = accounts.concat();
    let endpoints = etcd.endpoints();
    let prefix = "/rtc-test/shards";
    let with_ha = |id: &str| {
        format!(
            "{text}ha:\n  etcd: {{ endpoints: [{}] }}\n  prefix: {prefix}\n  lease: {}s\n  shards: 6\n  id: {id}\n",
            endpoints.join(", "),
            lease().as_secs()
        )
    };
    let mut replicas: Vec<Replica> = ["r0", "r1", "r2"]
        .iter()
        .map(|id| Replica::start(&dir, id, &with_ha(id)))
        .collect();
    let everyone: BTreeSet<String> = targets.iter().cloned().collect();

    // Every target shown by exactly one replica, each leading at most ⌈6/n⌉ shards.
    async fn covered(
        replicas: &[Replica],
        everyone: &BTreeSet<String>,
        accounts: &[Vec<String>],
        share: f64,
    ) -> bool {
        let mut seen: Vec<String> = Vec::new();
        for r in replicas {
            let Some(t) = r.scrape().await else { continue };
            let led: f64 = all(&t, "rtc_exporter_ha_shard_leader")
                .iter()
                .map(|s| s.value)
                .sum();
            if led > share {
                return false;
            }
            let mine = shown(&t);
            // An account's targets are shown together or not at all.
            if accounts
                .iter()
                .any(|a| a.iter().filter(|n| mine.contains(*n)).count() == 1)
            {
                return false;
            }
            seen.extend(mine);
        }
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        seen.len() == everyone.len() && &unique == everyone
    }
    async fn until_covered(
        replicas: &[Replica],
        everyone: &BTreeSet<String>,
        accounts: &[Vec<String>],
        share: f64,
        what: &str,
    ) {
        wait_for(what, Duration::from_secs(40), || async {
            covered(replicas, everyone, accounts, share)
                .await
                .then_some(())
        })
        .await
    }
    until_covered(
        &replicas,
        &everyone,
        &accounts,
        2.0,
        "3 replicas cover 12 targets once",
    )
    .await;

    // One etcd member down: the group goes on.
    etcd.kill(2);
    tokio::time::sleep(lease()).await;
    assert!(
        covered(&replicas, &everyone, &accounts, 2.0).await,
        "one etcd member down changes nothing"
    );

    // One replica killed: the two left take its shards within a lease (and a round).
    replicas[1].kill9();
    let killed = Instant::now();
    until_covered(
        &replicas,
        &everyone,
        &accounts,
        3.0,
        "2 replicas cover 12 targets once",
    )
    .await;
    eprintln!(
        "shards of the killed replica taken in {:.2}s",
        killed.elapsed().as_secs_f64()
    );
    assert!(killed.elapsed() <= lease() * 2 + Duration::from_secs(2));
    for r in &mut replicas {
        r.stop();
    }
}

/// Not run by default: the failover time of ten kills, for the README's figure
/// (`cargo test --test ha -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn failover_time_of_ten_kills() {
    let Some(etcd) = Etcd::single().await else {
        return;
    };
    let dir = temp("ten-kills");
    let vendor = Vendor::start(35).await;
    let targets = vec!["urtc-a".to_string(), "urtc-b".to_string()];
    let endpoints = etcd.endpoints();
    let prefix = "/rtc-test/ten";
    let cfg = |id: &str| config(&vendor, &targets, Some(&endpoints), prefix, 1, id);
    let mut a = Replica::start(&dir, "a0", &cfg("a"));
    let mut b = Replica::start(&dir, "b0", &cfg("b"));
    let mut times = Vec::new();
    for k in 0..10 {
        tokio::time::sleep(lease() + 2 * INTERVAL).await;
        let (took, lowered) = kill_and_take_over(&mut a, &mut b).await;
        assert!(lowered.is_empty(), "kill {k}: {lowered:#?}");
        times.push(took);
        // The killed one comes back as a follower.
        if a.child.is_none() {
            a = Replica::start(&dir, &format!("a{}", k + 1), &cfg("a"));
        } else {
            b = Replica::start(&dir, &format!("b{}", k + 1), &cfg("b"));
        }
    }
    times.sort_by(f64::total_cmp);
    eprintln!(
        "failover of 10 kills (lease {}s, interval {}s): median {:.2}s, min {:.2}s, max {:.2}s",
        lease().as_secs(),
        INTERVAL.as_secs(),
        (times[4] + times[5]) / 2.0,
        times[0],
        times[9]
    );
}

fn ha_config(endpoints: &[String], prefix: &str, id: &str) -> rtc_exporter::ha::HaConfig {
    let text = format!(
        "{{etcd: {{endpoints: [{}]}}, prefix: {prefix}, lease: 3s, id: {id}}}",
        endpoints.join(", ")
    );
    rtc_exporter::ha::parse(serde_yaml::from_str(&text).unwrap(), |p| p)
        .unwrap_or_else(|e| panic!("{e:?}"))
}

async fn leads(ha: &rtc_exporter::ha::Ha, target: &str, within: Duration) {
    let mut gate = ha.gate(target).open;
    tokio::time::timeout(within, gate.wait_for(|l| *l))
        .await
        .expect("leads in time")
        .expect("gate open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_never_overwrites_the_new_leaders_day_and_large_days_go_in_chunks() {
    use rtc_exporter::ha::{etcd, Ha};
    use rtc_exporter::metrics::SelfMetrics;
    let Some(server) = Etcd::single().await else {
        return;
    };
    let endpoints = server.endpoints();
    let prefix = "/rtc-test/deposed";
    let a = Ha::new(
        ha_config(&endpoints, prefix, "a"),
        Arc::new(SelfMetrics::new().unwrap()),
    )
    .unwrap();
    a.start();
    leads(&a, "t", Duration::from_secs(10)).await;
    let b = Ha::new(
        ha_config(&endpoints, prefix, "b"),
        Arc::new(SelfMetrics::new().unwrap()),
    )
    .unwrap();
    b.start();

    // A day of 2.5 chunks goes in three, and reads back whole.
    let big: Vec<u8> = (0..(rtc_exporter::ha::CHUNK * 5 / 2))
        .map(|i| (i % 251) as u8)
        .collect();
    assert_eq!(a.save_day("t", &big).await, Ok(true));
    assert!(b
        .load_day("t")
        .await
        .unwrap()
        .is_some_and(|d| d.data == big && !d.own));
    let client = etcd::Etcd::new(&endpoints, None, None, Duration::from_secs(2)).unwrap();
    let keys = client
        .range_prefix(&format!("{prefix}/state/t/"))
        .await
        .unwrap();
    assert_eq!(keys.len(), 3);
    // A smaller one replaces it, and the old chunks go.
    assert_eq!(a.save_day("t", b"day of a").await, Ok(true));
    assert_eq!(
        b.load_day("t").await.unwrap().map(|d| d.data),
        Some(b"day of a".to_vec())
    );
    let keys = client
        .range_prefix(&format!("{prefix}/state/t/"))
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "older chunks removed");

    // A's lease revoked behind its back (as if it hung past its lease): B takes the shard.
    let shard = client
        .range_prefix(&format!("{prefix}/shards/"))
        .await
        .unwrap();
    assert_eq!(shard.len(), 1);
    client.revoke(shard[0].lease).await.unwrap();
    leads(&b, "t", Duration::from_secs(10)).await;
    assert_eq!(b.save_day("t", b"day of b").await, Ok(true));
    // A still thinks it may hold the shard until its next round; etcd refuses its write.
    assert_eq!(a.save_day("t", b"stale day of a").await, Ok(false));
    assert_eq!(
        b.load_day("t").await.unwrap().map(|d| d.data),
        Some(b"day of b".to_vec())
    );
    // And A sees it lost the shard within a round.
    let mut gate = a.gate("t").open;
    tokio::time::timeout(Duration::from_secs(3), gate.wait_for(|l| !*l))
        .await
        .expect("A stops leading")
        .expect("gate");
    a.resign().await;
    b.resign().await;
}

#[test]
fn config_check_takes_ha_at_its_limits_and_names_the_field_past_them() {
    let dir = temp("check");
    let run = |ha: &str| {
        let file = dir.join("c.yaml");
        std::fs::write(
            &file,
            format!("targets:\nha:\n  etcd: {{endpoints: [http://127.0.0.1:1]}}\n{ha}"),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_rtc-exporter"))
            .args(["--config.check", "--config.file"])
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    for ok in [
        "  lease: 3s\n",
        "  lease: 300s\n",
        "  lease: 5m\n",
        "  shards: 256\n",
        "  shards: 1\n",
    ] {
        let (code, text) = run(ok);
        assert_eq!(code, Some(0), "{ok}: {text}");
    }
    for (bad, says) in [
        ("  lease: 2s\n", "ha.lease: must be from 3s to 300s"),
        ("  lease: 301s\n", "ha.lease: must be from 3s to 300s"),
        ("  lease: 3500ms\n", "ha.lease: must be whole seconds"),
        ("  shards: 0\n", "ha.shards: must be from 1 to 256"),
        ("  shards: 257\n", "ha.shards: must be from 1 to 256"),
        ("  shards: -1\n", "ha.shards"),
        ("  id: 'two words'\n", "ha.id: must be"),
        ("  prefix: /\n", "ha.prefix: must start with /"),
        ("  lead: 1\n", "unknown field `lead`"),
        (
            "  endpoint: x\n  leader_election: true\n  lease: 1s\n",
            "ha.leader_election: unknown field",
        ),
        (
            "  endpoint: x\n  leader_election: true\n  lease: 1s\n",
            "ha.endpoint: unknown field",
        ),
        (
            "  endpoint: x\n  leader_election: true\n  lease: 1s\n",
            "ha.lease: must be from 3s",
        ),
    ] {
        let (code, text) = run(bad);
        assert_eq!(code, Some(1), "{bad}: {text}");
        assert!(text.contains(says), "{bad}: want {says:?} in:\n{text}");
    }
}

/// `Ha` on `config` text for a fresh set of metrics.
fn ha_from(text: &str) -> Arc<rtc_exporter::ha::Ha> {
    let c = rtc_exporter::ha::parse(serde_yaml::from_str(text).unwrap(), |p| p)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let metrics = Arc::new(rtc_exporter::metrics::SelfMetrics::new().unwrap());
    rtc_exporter::ha::Ha::new(c, metrics).unwrap()
}

/// Whether `ha` comes to lead within `within`.
async fn comes_to_lead(ha: &rtc_exporter::ha::Ha, within: Duration) -> bool {
    let mut gate = ha.gate("t").open;
    let led = matches!(
        tokio::time::timeout(within, gate.wait_for(|l| *l)).await,
        Ok(Ok(_))
    );
    led
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_a_client_certificate_and_with_a_user_and_password() {
    let Some(server) = Etcd::cluster_tls(1).await else {
        return;
    };
    let tls = server.tls().unwrap();
    let endpoint = server.endpoint(0);
    let with_cert = format!(
        "{{etcd: {{endpoints: [{endpoint}], tls: {{ca_file: {}, cert_file: {}, key_file: {}}}}}, prefix: /tls, lease: 3s, id: a}}",
        tls.ca_file.display(),
        tls.cert_file.display(),
        tls.key_file.display()
    );
    let ha = ha_from(&with_cert);
    ha.start();
    assert!(
        comes_to_lead(&ha, Duration::from_secs(10)).await,
        "leads over TLS"
    );
    assert_eq!(ha.save_day("t", b"day").await, Ok(true));
    ha.resign().await;
    // Without the client certificate etcd refuses it: it never leads.
    let without = format!(
        "{{etcd: {{endpoints: [{endpoint}], tls: {{ca_file: {}}}}}, prefix: /tls, lease: 3s, id: b}}",
        tls.ca_file.display()
    );
    let ha = ha_from(&without);
    ha.start();
    assert!(
        !comes_to_lead(&ha, Duration::from_secs(3)).await,
        "no certificate, no lead"
    );
    ha.resign().await;

    let Some(mut server) = Etcd::single().await else {
        return;
    };
    let endpoint = server.endpoint(0);
    server
        .enable_auth("exporter", "s3cret-pass", "/auth/")
        .await;
    let login = |password: &str| {
        format!(
            "{{etcd: {{endpoints: [{endpoint}], username: exporter, password: {password}}}, prefix: /auth, lease: 3s, id: a}}"
        )
    };
    let ha = ha_from(&login("s3cret-pass"));
    ha.start();
    assert!(
        comes_to_lead(&ha, Duration::from_secs(10)).await,
        "leads with its user"
    );
    assert_eq!(ha.save_day("t", b"day").await, Ok(true));
    assert_eq!(
        ha.load_day("t").await.unwrap().map(|d| d.data),
        Some(b"day".to_vec())
    );
    ha.resign().await;
    let ha = ha_from(&login("wrong-pass"));
    ha.start();
    assert!(
        !comes_to_lead(&ha, Duration::from_secs(3)).await,
        "a wrong password never leads"
    );
    let err = ha
        .load_day("t")
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("authentication failed"), "{err}");
    assert!(
        !err.contains("wrong-pass"),
        "the password reached an error: {err}"
    );
    ha.resign().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_joins_gets_its_share_and_no_shard_is_ever_led_twice() {
    let Some(server) = Etcd::single().await else {
        return;
    };
    let endpoint = server.endpoint(0);
    let text = |id: &str| {
        format!(
            "{{etcd: {{endpoints: [{endpoint}]}}, prefix: /join, lease: 3s, shards: 4, id: {id}}}"
        )
    };
    // One target name per shard.
    let names: Vec<String> = (0..4)
        .map(|k| {
            (0..)
                .map(|i| format!("t{i}"))
                .find(|n| rtc_exporter::ha::shard_of(n, 4) == k)
                .unwrap()
        })
        .collect();
    let led = |ha: &rtc_exporter::ha::Ha| -> Vec<bool> {
        names.iter().map(|n| ha.gate(n).is_open()).collect()
    };
    let a = ha_from(&text("a"));
    a.start();
    wait_for("a leads all four", Duration::from_secs(10), || async {
        led(&a).iter().all(|l| *l).then_some(())
    })
    .await;
    let b = ha_from(&text("b"));
    b.start();
    let until = Instant::now() + Duration::from_secs(15);
    let mut balanced = false;
    while Instant::now() < until {
        let (la, lb) = (led(&a), led(&b));
        for k in 0..4 {
            assert!(!(la[k] && lb[k]), "shard {k} led by both: {la:?} {lb:?}");
        }
        let (na, nb) = (
            la.iter().filter(|l| **l).count(),
            lb.iter().filter(|l| **l).count(),
        );
        if na == 2 && nb == 2 {
            balanced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        balanced,
        "two shards each: a {:?}, b {:?}",
        led(&a),
        led(&b)
    );
    a.resign().await;
    // a's shards come to b at its next round (the lease revoked, not run out).
    let took = Instant::now();
    wait_for("b leads all four", Duration::from_secs(5), || async {
        led(&b).iter().all(|l| *l).then_some(())
    })
    .await;
    assert!(
        took.elapsed() < Duration::from_secs(2),
        "{:?}",
        took.elapsed()
    );
    b.resign().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_at_its_longest_leads_and_a_reload_keeps_the_group_and_adds_a_target() {
    let Some(etcd) = Etcd::single().await else {
        return;
    };
    let dir = temp("reload");
    let vendor = Vendor::start(36).await;
    let endpoints = etcd.endpoints();
    let text = |targets: &[String], lease: &str| {
        config(
            &vendor,
            targets,
            Some(&endpoints),
            "/rtc-test/reload",
            1,
            "r",
        )
        .replace(
            &format!("lease: {}s", lease_secs()),
            &format!("lease: {lease}"),
        )
    };
    let one = vec!["urtc-a".to_string()];
    let mut r = Replica::start(&dir, "r", &text(&one, "300s"));
    wait_for(
        "leads with a 300 s lease",
        Duration::from_secs(30),
        || async {
            let t = r.scrape().await?;
            (gauge(&t, "rtc_exporter_ha_leader") == 1.0
                && shown(&t) == ["urtc-a".to_string()].into())
            .then_some(())
        },
    )
    .await;
    // A reload that changes ha: and adds a target: the group stays, the new target is polled.
    let two = vec!["urtc-a".to_string(), "urtc-b".to_string()];
    std::fs::write(dir.join("r.yaml"), text(&two, "299s")).unwrap();
    let pid = r.child.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    wait_for(
        "both targets shown after the reload",
        Duration::from_secs(30),
        || async {
            let t = r.scrape().await?;
            (gauge(&t, "rtc_exporter_config_last_reload_successful") == 1.0
                && gauge(&t, "rtc_exporter_ha_leader") == 1.0
                && shown(&t).len() == 2
                && polls(&t) >= 3.0)
                .then_some(())
        },
    )
    .await;
    r.stop();
    let logs = r.logs();
    assert!(logs.contains("applies at the next restart"), "{logs}");
    assert!(
        logs.contains("lease revoked"),
        "a stop revokes the lease: {logs}"
    );
}

#[test]
fn the_example_configs_ha_block_uncommented_is_valid() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/exporter.yaml.example"
    ))
    .unwrap();
    let block: String = example
        .lines()
        .skip_while(|l| *l != "# ha:")
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
        .collect();
    assert!(block.starts_with("ha:\n"), "{block}");
    let dir = temp("example-ha");
    std::fs::write(dir.join("etcd_password"), "pw\n").unwrap();
    // The TLS files it names, made here: they are read when the config is.
    let ca = rcgen::generate_simple_self_signed(vec!["etcd-0.example".into()]).unwrap();
    std::fs::write(dir.join("etcd-ca.pem"), ca.cert.pem()).unwrap();
    std::fs::write(dir.join("etcd.pem"), ca.cert.pem()).unwrap();
    std::fs::write(dir.join("etcd-key.pem"), ca.signing_key.serialize_pem()).unwrap();
    let block = block.replace("/etc/rtc-exporter/", &format!("{}/", dir.display()));
    let file = dir.join("c.yaml");
    std::fs::write(&file, format!("targets:\n{block}")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rtc-exporter"))
        .args(["--config.check", "--config.file"])
        .arg(&file)
        .env("CREDENTIALS_DIRECTORY", &dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ha: etcd https://etcd-0.example:2379 https://etcd-1.example:2379 https://etcd-2.example:2379, prefix /rtc-exporter/prod, lease 15s, 1 shard(s), id rtc-1"), "{text}");
}

#[test]
fn an_empty_ha_is_an_error_not_a_silent_single_exporter() {
    let dir = temp("empty-ha");
    let file = dir.join("c.yaml");
    std::fs::write(
        &file,
        "targets:\nha:\n#  etcd: {endpoints: [http://127.0.0.1:1]}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rtc-exporter"))
        .args(["--config.check", "--config.file"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("ha: empty"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_renews_but_cannot_use_its_keys_stops_within_its_lease() {
    let Some(mut server) = Etcd::single().await else {
        return;
    };
    let endpoint = server.endpoint(0);
    let ha = ha_from(&format!(
        "{{etcd: {{endpoints: [{endpoint}]}}, prefix: /keys, lease: 3s, id: a}}"
    ));
    ha.start();
    assert!(comes_to_lead(&ha, Duration::from_secs(10)).await);
    // Auth on, and this replica has no user: etcd 3.4 still renews its lease, but every read
    // and write of its keys is refused.
    server.enable_auth("someone", "pw", "/elsewhere/").await;
    let gate = ha.gate("t");
    let lost = Instant::now();
    tokio::time::timeout(lease(), gate.closed())
        .await
        .expect("stops leading within its lease");
    assert!(!gate.is_open());
    eprintln!(
        "stopped leading {:.2}s after auth came on",
        lost.elapsed().as_secs_f64()
    );
    ha.resign().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_day_in_etcd_is_named_and_left_a_big_one_reads_back_and_its_own_is_known() {
    use rtc_exporter::ha::LoadError;
    let Some(server) = Etcd::single().await else {
        return;
    };
    let endpoint = server.endpoint(0);
    let text = |id: &str| {
        format!("{{etcd: {{endpoints: [{endpoint}]}}, prefix: /days, lease: 3s, id: {id}}}")
    };
    let a = ha_from(&text("a"));
    a.start();
    assert!(comes_to_lead(&a, Duration::from_secs(10)).await);
    let b = ha_from(&text("b"));
    // Incompressible and larger than an etcd answer is let be (8 MiB): read chunk by chunk.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<u8> = (0..10 << 20)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        })
        .collect();
    assert_eq!(a.save_day("t", &big).await, Ok(true));
    let mine = a.load_day("t").await.unwrap().unwrap();
    assert!(mine.own, "a knows its own day");
    assert_eq!(mine.data.len(), big.len());
    assert!(mine.data == big);
    let theirs = b.load_day("t").await.unwrap().unwrap();
    assert!(!theirs.own, "b does not take a's day for its own");
    // A target whose name starts with another's is its own key.
    assert_eq!(a.save_day("t-2", b"other").await, Ok(true));
    assert!(a.load_day("t").await.unwrap().unwrap().data == big);
    // What cannot be a day: damaged, not "try again".
    for bad in [
        "not json",
        r#"{"generation":"x"}"#,
        r#"{"generation":"x","chunks":2,"bytes":3}"#,
    ] {
        server.put("/days/state/t", bad).await;
        match a.load_day("t").await {
            Err(LoadError::Damaged(e)) => assert!(e.contains("/days/state/t"), "{e}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    a.resign().await;
}

/// A Volcengine room `Room1` replayed with these users in it now.
async fn volc_replay(users: &[&str]) -> SimServer {
    use rtc_exporter::sim::replay::{Recorded, Replay};
    let list: Vec<String> = users.iter().map(|u| format!("\"{u}\"")).collect();
    let body = format!(
        r#"{{"ResponseMetadata": {{"RequestId": "r", "Action": "GetRoomOnlineUsers", "Version": "2023-11-01", "Service": "rtc", "Region": "cn-north-1"}}, "Result": {{"TotalUser": {}, "TotalInvisibleUser": 0, "VisibleUserList": [{}], "InvisibleUserList": [], "RoomExists": true}}}}"#,
        users.len(),
        list.join(", ")
    );
    let r = Replay::new(
        "volcengine_rtc",
        vec![Recorded {
            api: "GetRoomOnlineUsers".into(),
            when: None,
            status: 200,
            body: body.into_bytes(),
        }],
    );
    SimServer::start(Arc::new(r), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// An in-process replica polling `sim` every hour (so only its first poll runs), on a manual
/// clock standing at `at`.
async fn at_clock(
    sim: &SimServer,
    endpoints: &[String],
    prefix: &str,
    id: &str,
    at: i64,
) -> (
    rtc_exporter::app::Running,
    Arc<rtc_exporter::clock::ManualClock>,
) {
    let text = format!(
        "global:\n  timezone: Asia/Shanghai\ntargets:\n\
         - name: volc\n  vendor: volcengine_rtc\n  interval: 1h\n  endpoint: {}\n  app_id: a\n  credentials: {{access_key_id: k, secret_access_key: s}}\n  rooms: [Room1]\n\
         ha:\n  etcd: {{endpoints: [{}]}}\n  prefix: {prefix}\n  lease: 3s\n  id: {id}\n",
        sim.endpoint,
        endpoints.join(", ")
    );
    let clock = Arc::new(rtc_exporter::clock::ManualClock::at(at));
    let running = rtc_exporter::app::start_with_clock(
        common::config(&text),
        &["127.0.0.1:0".to_string()],
        "/metrics",
        clock.clone(),
    )
    .await
    .unwrap();
    (running, clock)
}

/// Waits until `check` holds for a scrape of `base`; returns it, or panics with the last one.
async fn scrape_until(base: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = try_scrape(base).await.unwrap_or_default();
        if check(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last scrape:\n{t}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn volc(text: &str, name: &str) -> Option<f64> {
    value(text, name, &[("target", "volc")])
}

fn polled_once(text: &str) -> bool {
    value(
        text,
        "rtc_exporter_polls_total",
        &[("target", "volc"), ("result", "success")],
    ) == Some(1.0)
        && volc(text, "rtc_accumulated_users").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_across_local_midnight_takes_todays_day_and_never_yesterdays() {
    use chrono::TimeZone;
    let Some(etcd) = Etcd::single().await else {
        return;
    };
    let endpoints = etcd.endpoints();
    // 2026-11-20 24:00 in Shanghai.
    let midnight = chrono::Utc
        .with_ymd_and_hms(2026, 11, 20, 16, 0, 0)
        .unwrap()
        .timestamp();
    // The first leader sees u1, u2 and u3 in the room; the next one only u1 (the others left).
    let first = volc_replay(&["u1", "u2", "u3"]).await;
    let next = volc_replay(&["u1"]).await;

    // The leader crosses midnight without a poll: the day rolls (the three were in at its last
    // poll, so today begins with them), goes to etcd, and the leader stops. The next leader
    // goes on from today's day: 3, not the 1 of its own poll alone.
    let (a, clock) = at_clock(&first, &endpoints, "/mid/rolled", "a", midnight - 60).await;
    let text = scrape_until(&a.url(), "a's first poll", polled_once).await;
    assert_eq!(volc(&text, "rtc_accumulated_users"), Some(3.0));
    clock.set(midnight + 1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (b, _) = at_clock(&next, &endpoints, "/mid/rolled", "b", midnight + 2).await;
    a.stop().await.unwrap();
    let text = scrape_until(&b.url(), "b leads and polls", polled_once).await;
    assert_eq!(volc(&text, "rtc_users"), Some(1.0), "{text}");
    assert_eq!(volc(&text, "rtc_accumulated_users"), Some(3.0), "{text}");
    assert_eq!(volc(&text, "rtc_peak_users"), Some(3.0));
    b.stop().await.unwrap();

    // The leader stops before midnight: etcd holds yesterday's day. A leader after midnight
    // does not take it: today is its own poll's.
    let (a, _) = at_clock(&first, &endpoints, "/mid/yesterday", "a", midnight - 60).await;
    scrape_until(&a.url(), "a's first poll", polled_once).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.stop().await.unwrap();
    let (b, _) = at_clock(&next, &endpoints, "/mid/yesterday", "b", midnight + 5).await;
    let text = scrape_until(&b.url(), "b leads and polls", polled_once).await;
    assert_eq!(volc(&text, "rtc_accumulated_users"), Some(1.0), "{text}");
    assert_eq!(volc(&text, "rtc_peak_users"), Some(1.0));
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_may_not_read_the_day_still_polls_and_its_unwritten_days_are_counted() {
    use base64::Engine;
    let Some(etcd) = Etcd::single().await else {
        return;
    };
    let dir = temp("no-day-read");
    let vendor = Vendor::start(37).await;
    let endpoint = etcd.endpoint(0);
    // A role with read and write on <prefix>/members/ and <prefix>/shards/ only (the range
    // [/np/m, /np/st) leaves /np/state/ out), then auth on.
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let http = reqwest::Client::new();
    for (path, body) in [
        ("/v3/auth/role/add", serde_json::json!({"name": "elect"})),
        (
            "/v3/auth/role/grant",
            serde_json::json!({"name": "elect", "perm": {"permType": "READWRITE", "key": b64("/np/m"), "range_end": b64("/np/st")}}),
        ),
        (
            "/v3/auth/user/add",
            serde_json::json!({"name": "root", "password": "root-pw"}),
        ),
        (
            "/v3/auth/user/grant",
            serde_json::json!({"user": "root", "role": "root"}),
        ),
        (
            "/v3/auth/user/add",
            serde_json::json!({"name": "elector", "password": "pw"}),
        ),
        (
            "/v3/auth/user/grant",
            serde_json::json!({"user": "elector", "role": "elect"}),
        ),
        ("/v3/auth/enable", serde_json::json!({})),
    ] {
        let r = http
            .post(format!("{endpoint}{path}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap_or_default()
        );
    }
    let targets = vec!["urtc-a".to_string()];
    let text = config(
        &vendor,
        &targets,
        Some(std::slice::from_ref(&endpoint)),
        "/np",
        1,
        "a",
    )
    .replace(
        &format!("etcd: {{ endpoints: [{endpoint}] }}"),
        &format!("etcd: {{ endpoints: [{endpoint}], username: elector, password: pw }}"),
    );
    let r = Replica::start(&dir, "a", &text);
    let t = wait_for("it leads and polls", Duration::from_secs(30), || async {
        let t = r.scrape().await?;
        (gauge(&t, "rtc_exporter_ha_leader") == 1.0
            && shown(&t).len() == 1
            && value(
                &t,
                "rtc_exporter_ha_state_writes_total",
                &[("result", "failure")],
            )
            .unwrap_or(0.0)
                >= 1.0)
            .then_some(t)
    })
    .await;
    assert_eq!(gauge(&t, "rtc_exporter_ha_etcd_up"), 1.0);
    assert!(requests(&t) > 0.0);
    let logs = r.logs();
    assert!(
        logs.contains("etcd refused the day kept for this target"),
        "{logs}"
    );
    assert_eq!(
        logs.matches("day not written to etcd").count(),
        1,
        "logged once: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_an_accounts_first_target_moves_its_targets_together() {
    use rtc_exporter::ha::shard_of;
    let dir = temp("move");
    let vendor = Vendor::start(41).await;
    let other = Vendor::start(42).await;
    let shards = 256;
    let (first, second, third) = ("urtc-a", "urtc-m", "urtc-z");
    assert_ne!(shard_of(first, shards), shard_of(second, shards));
    // No etcd is needed to place targets: an endpoint nobody answers.
    let ha = format!(
        "ha:\n  etcd: {{ endpoints: [http://127.0.0.1:{}] }}\n  shards: {shards}\n  id: m\n",
        free_port()
    );
    let write = |targets: &[(&Vendor, &str)]| {
        let mut text = config(&vendor, &[], None, "", 1, "");
        for (v, n) in targets {
            text.push_str(&v.target(n));
        }
        text.push_str(&ha);
        let file = dir.join("exporter.yaml");
        std::fs::write(&file, text).unwrap();
        file
    };
    let file = write(&[(&vendor, second), (&other, third)]);
    let config = rtc_exporter::config::load(&file).unwrap();
    let running = rtc_exporter::app::start(config, &["127.0.0.1:0".to_string()], "/metrics")
        .await
        .unwrap();
    let group = running.ha.clone().unwrap();
    assert_eq!(group.shard(second), shard_of(second, shards));
    // A target of the same account with a first name: both go to its shard; the other
    // account stays where it was.
    write(&[(&vendor, second), (&vendor, first), (&other, third)]);
    let report = running.reload().await.unwrap();
    assert_eq!(group.shard(first), shard_of(first, shards));
    assert_eq!(group.shard(second), shard_of(first, shards));
    assert_eq!(group.shard(third), shard_of(third, shards));
    assert!(report.restarted.contains(&second.to_string()), "{report:?}");
    assert!(report.unchanged.contains(&third.to_string()), "{report:?}");
    assert_eq!(report.added, vec![first.to_string()]);
    running.stop().await.unwrap();
}

#[test]
fn an_account_is_the_same_whatever_the_order_or_form_of_its_credentials() {
    let dir = temp("account");
    let key = dir.join("pk");
    std::fs::write(&key, "secret-1\n").unwrap();
    let target = |name: &str, creds: &str| {
        format!(
            "  - name: {name}\n    vendor: ucloud_urtc\n    app_id: a\n    credentials: {creds}\n"
        )
    };
    let text = format!(
        "targets:\n{}{}{}{}",
        target("t1", "{ public_key: p, private_key: secret-1 }"),
        target("t2", "{ private_key: secret-1, public_key: p }"),
        target(
            "t3",
            &format!(
                "{{ public_key: p, private_key: {{ file: {} }} }}",
                key.display()
            )
        ),
        target("t4", "{ public_key: q, private_key: secret-1 }"),
    );
    let c = common::config(&text);
    let account: Vec<u64> = c.targets.iter().map(|t| t.account).collect();
    assert_eq!(account[0], account[1], "keys in another order");
    assert_eq!(account[0], account[2], "a secret from a file");
    assert_ne!(account[0], account[3], "another public key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_place_targets_apart_lead_neither_shard_until_they_agree() {
    use rtc_exporter::ha::{assign, shard_of};
    let Some(server) = Etcd::single().await else {
        return;
    };
    let endpoint = server.endpoint(0);
    let text = |id: &str| {
        format!(
            "{{etcd: {{endpoints: [{endpoint}]}}, prefix: /apart, lease: 3s, shards: 4, id: {id}}}"
        )
    };
    // "t" and "a" of one account: a replica that knows "a" places "t" in "a"'s shard.
    let (t, a) = (
        "t",
        (0..)
            .map(|i| format!("a{i}"))
            .find(|n| shard_of(n, 4) != shard_of("t", 4))
            .unwrap(),
    );
    let old = assign([(t, 1u64)], 4);
    let new = assign([(t, 1u64), (a.as_str(), 1u64)], 4);
    let (from, to) = (old[t], new[t]);
    assert_ne!(from, to);
    let x = ha_from(&text("x"));
    let y = ha_from(&text("y"));
    x.place(old.clone());
    y.place(new.clone());
    x.start();
    y.start();
    // The shards they agree on are led; the two they place apart are led by nobody.
    let other = (0..4).find(|k| *k != from && *k != to).unwrap();
    let named = |k: u32| {
        (0..)
            .map(|i| format!("n{i}"))
            .find(|n| shard_of(n, 4) == k)
            .unwrap()
    };
    let led = |k: u32| {
        // A name that falls in shard k on both replicas (not placed: by its own name).
        let n = named(k);
        x.gate(&n).is_open() || y.gate(&n).is_open()
    };
    wait_for(
        "an agreed shard is led",
        Duration::from_secs(10),
        || async { led(other).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !x.gate(t).is_open() && !y.gate(t).is_open(),
        "{t} is led while placed apart"
    );
    // Both on the new config: one leads "t" again.
    x.place(new.clone());
    wait_for(
        "agreed again, t is led",
        Duration::from_secs(10),
        || async { (x.gate(t).is_open() || y.gate(t).is_open()).then_some(()) },
    )
    .await;
    x.resign().await;
    y.resign().await;
}

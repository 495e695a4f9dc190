//! The Agora client against the simulated Agora API over real HTTP on loopback, poll by poll:
//! users and roles as the simulator's truth, a channel missing from one listing kept until a
//! second listing lacks it, pages that repeat and miss channels, and platforms sampled between
//! polls.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rtc_exporter::clouds::{self, DayFigures, Observation, Plumbing, PollCtx, Role, Vendor};
use rtc_exporter::metrics::SelfMetrics;
use rtc_exporter::model::Device;
use rtc_exporter::sim::agora::AgoraSim;
use rtc_exporter::sim::SimServer;

const T0: i64 = 1_795_176_000;

async fn server(channels: usize) -> SimServer {
    let sim = AgoraSim::at(7, channels, T0);
    sim.clock.freeze(T0);
    SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn client(s: &SimServer, extra: &str) -> Arc<dyn Vendor> {
    let a = s.get::<AgoraSim>().unwrap();
    let text = format!(
        "app_id: \"{}\"\ncredentials: {{customer_id: \"{}\", customer_secret: \"{}\"}}\n{extra}",
        a.app_id,
        a.customer_id,
        a.secret()
    );
    let entry = clouds::lookup("agora").unwrap();
    match (entry.parse)(serde_yaml::from_str(&text).unwrap()) {
        Ok(c) => c,
        Err(e) => panic!("{e:?}"),
    }
}

fn plumbing() -> Arc<Plumbing> {
    let metrics = Arc::new(SelfMetrics::new().unwrap());
    Arc::new(Plumbing::new(Duration::from_secs(5), metrics).unwrap())
}

/// One poll: every room reported (also through the progress) and the rest.
async fn poll(c: &dyn Vendor, s: &SimServer, p: &Arc<Plumbing>) -> Observation {
    let now = chrono::DateTime::from_timestamp(T0, 0).unwrap();
    let mut ctx = PollCtx::new("agora-test", "agora", now, chrono_tz::UTC, p.clone());
    ctx.endpoint = Some(s.endpoint.clone());
    let rest = c.poll(&ctx).await.expect("the poll answers");
    let mut obs = ctx.progress.take();
    obs.merge(rest);
    obs
}

/// One poll at `qps` cut after `cut`, as `poll_timeout` cuts it: the rooms reported by then.
async fn cut_poll(
    c: &dyn Vendor,
    s: &SimServer,
    p: &Arc<Plumbing>,
    qps: f64,
    cut: Duration,
) -> BTreeSet<String> {
    let now = chrono::DateTime::from_timestamp(T0, 0).unwrap();
    let mut ctx = PollCtx::new("agora-test", "agora", now, chrono_tz::UTC, p.clone());
    ctx.endpoint = Some(s.endpoint.clone());
    ctx.qps = Some(qps);
    let _ = tokio::time::timeout(cut, c.poll(&ctx)).await;
    ctx.progress
        .take()
        .rooms
        .into_iter()
        .map(|r| r.room)
        .collect()
}

fn by_room(obs: &Observation) -> BTreeMap<String, (bool, u64)> {
    obs.rooms
        .iter()
        .map(|r| (r.room.clone(), (r.active, r.users)))
        .collect()
}

#[tokio::test]
async fn users_and_roles_equal_the_truth_and_a_channel_missing_once_is_kept_once() {
    let s = server(12).await;
    let sim = s.get::<AgoraSim>().unwrap();
    let c = client(&s, "page_size: 3\ndevices: false\n");
    let p = plumbing();
    let truth = sim.truth(T0);
    assert!(truth.len() >= 4, "{} channels", truth.len());

    let first = poll(c.as_ref(), &s, &p).await;
    assert!(first.failed.is_empty(), "{:?}", first.first_error);
    let want: BTreeMap<String, (bool, u64)> = truth
        .iter()
        .map(|t| (t.channel.clone(), (true, t.users)))
        .collect();
    assert_eq!(by_room(&first), want);
    for t in &truth {
        let r = first.rooms.iter().find(|r| r.room == t.channel).unwrap();
        match (&r.day, t.live) {
            (DayFigures::PresentByRole { ids, roles }, true) => {
                assert_eq!(roles[&Role::Broadcaster], t.broadcasters);
                assert_eq!(roles[&Role::Viewer], t.audience);
                assert_eq!(ids.len() as u64, t.users);
            }
            (DayFigures::Present(ids), false) => assert_eq!(ids.len() as u64, t.users),
            (day, live) => panic!("{}: live {live}, read {day:?}", t.channel),
        }
    }

    // The channel ends: the next listing lacks it, and it is kept with its last reading.
    let gone = truth[0].channel.clone();
    assert!(sim.end_channel(&gone));
    let second = poll(c.as_ref(), &s, &p).await;
    assert_eq!(
        by_room(&second).get(&gone),
        Some(&(true, truth[0].users)),
        "kept after one listing without it"
    );
    // A second listing without it: no longer reported (the ledger ends it).
    let third = poll(c.as_ref(), &s, &p).await;
    assert_eq!(by_room(&third).get(&gone), None, "ended by the second miss");
    assert_eq!(third.rooms.len(), truth.len() - 1);
}

#[tokio::test]
async fn pages_that_repeat_and_miss_channels_lose_no_channel() {
    let s = server(16).await;
    let sim = s.get::<AgoraSim>().unwrap();
    let c = client(&s, "page_size: 2\ndevices: false\n");
    let p = plumbing();
    let want: BTreeMap<String, (bool, u64)> = sim
        .truth(T0)
        .into_iter()
        .map(|t| (t.channel, (true, t.users)))
        .collect();
    assert_eq!(by_room(&poll(c.as_ref(), &s, &p).await), want);
    sim.set_shifting(true);
    // Listings that repeat some channels and miss others, poll after poll: a channel missed
    // once is kept; the rows repeated are merged, never summed.
    for _ in 0..2 {
        let obs = poll(c.as_ref(), &s, &p).await;
        let got = by_room(&obs);
        assert_eq!(obs.rooms.len(), got.len(), "a channel reported twice");
        for (room, v) in &got {
            assert_eq!(want.get(room), Some(v), "{room}");
        }
        sim.set_shifting(false);
    }
    let settled = poll(c.as_ref(), &s, &p).await;
    assert_eq!(by_room(&settled), want);
}

#[tokio::test]
async fn platforms_are_sampled_between_polls_until_every_user_present_is_known() {
    let s = server(5).await;
    let sim = s.get::<AgoraSim>().unwrap();
    let c = client(&s, "");
    let p = plumbing();
    let mut want: BTreeMap<Device, u64> = Device::ALL.iter().map(|d| (*d, 0)).collect();
    for t in sim.truth(T0) {
        for (d, n) in t.devices {
            *want.entry(d).or_default() += n;
        }
    }
    let users: u64 = want.values().sum();
    assert!(users > 0);
    let first = poll(c.as_ref(), &s, &p).await;
    assert_eq!(first.devices, None, "no platform known yet: absent, not 0");
    // The sampler asks every user present once, at 20 per second.
    tokio::time::sleep(Duration::from_secs_f64(users as f64 / 19.0 + 1.0)).await;
    let later = poll(c.as_ref(), &s, &p).await;
    assert_eq!(later.devices, Some(want));
}

#[tokio::test]
async fn a_poll_cut_short_is_continued_by_the_next_from_where_it_stopped() {
    // A `rooms:` list longer than a poll can read at the rate: each poll cut short reads a
    // few channels, and the next begins where it stopped, so every channel is read in turn
    // (beginning again from the top each time, the last ones would never be).
    let s = server(16).await;
    let sim = s.get::<AgoraSim>().unwrap();
    let channels: BTreeSet<String> = sim.truth(T0).into_iter().map(|t| t.channel).collect();
    assert!(channels.len() >= 8, "{} channels", channels.len());
    let list: Vec<&str> = channels.iter().map(String::as_str).collect();
    let c = client(
        &s,
        &format!("rooms: [{}]\ndevices: false\n", list.join(", ")),
    );
    let p = plumbing();
    let mut seen = BTreeSet::new();
    let mut polls = 0;
    while seen.len() < channels.len() {
        polls += 1;
        assert!(
            polls <= 12,
            "after {polls} polls cut short, channels never read: {:?}",
            channels.difference(&seen).collect::<Vec<_>>()
        );
        let got = cut_poll(c.as_ref(), &s, &p, 2.0, Duration::from_millis(1500)).await;
        assert!(
            !got.is_empty() && got.len() < channels.len(),
            "a cut poll read {} of {} channels",
            got.len(),
            channels.len()
        );
        assert!(
            !got.is_subset(&seen) || seen.len() == channels.len(),
            "poll {polls} read only channels read before: {got:?}"
        );
        seen.extend(got);
    }
}

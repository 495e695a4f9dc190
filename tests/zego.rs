//! The ZEGO client against the simulated ZEGO server API over real HTTP on loopback, poll by
//! poll: users and LiveRoom roles as the simulator's truth, a room that ends, an unknown room
//! counting 0, and the signature's timestamp taken from the exporter's clock (a clock 11
//! minutes off is refused with 100000004, a wrong secret with 100000005).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rtc_exporter::clock::ManualClock;
use rtc_exporter::clouds::{
    self, DayFigures, Observation, Plumbing, PollCtx, PollError, Role, Vendor,
};
use rtc_exporter::metrics::SelfMetrics;
use rtc_exporter::sim::zego::{ZegoSim, UNKNOWN_ROOM};
use rtc_exporter::sim::SimServer;

const T0: i64 = 1_795_176_000;

async fn server(rooms: usize) -> SimServer {
    let sim = ZegoSim::at(11, rooms, T0);
    sim.clock.freeze(T0);
    SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn client(s: &SimServer, secret: Option<&str>) -> Arc<dyn Vendor> {
    let z = s.get::<ZegoSim>().unwrap();
    let rooms: Vec<String> = z.rooms().iter().map(|r| format!("\"{r}\"")).collect();
    let text = format!(
        "app_id: {}\ncredentials: {{server_secret: \"{}\"}}\nrooms: [{}]\npage_size: 7\n",
        z.app_id,
        secret.map_or_else(|| z.secret(), str::to_string),
        rooms.join(", ")
    );
    let entry = clouds::lookup("zego").unwrap();
    match (entry.parse)(serde_yaml::from_str(&text).unwrap()) {
        Ok(c) => c,
        Err(e) => panic!("{e:?}"),
    }
}

/// Plumbing whose clock stands at `t` (the signature's `Timestamp` comes from it).
fn plumbing(t: i64) -> Arc<Plumbing> {
    let metrics = Arc::new(SelfMetrics::new().unwrap());
    let clock = Arc::new(ManualClock::at(t));
    Arc::new(
        Plumbing::new(Duration::from_secs(5), metrics)
            .unwrap()
            .with_clock(clock),
    )
}

async fn poll(c: &dyn Vendor, s: &SimServer, p: &Arc<Plumbing>) -> Result<Observation, PollError> {
    let now = chrono::DateTime::from_timestamp(T0, 0).unwrap();
    let mut ctx = PollCtx::new("zego-test", "zego", now, chrono_tz::UTC, p.clone());
    ctx.endpoint = Some(s.endpoint.clone());
    let rest = c.poll(&ctx).await?;
    let mut obs = ctx.progress.take();
    obs.merge(rest);
    Ok(obs)
}

fn by_room(obs: &Observation) -> BTreeMap<String, (bool, u64)> {
    obs.rooms
        .iter()
        .map(|r| (r.room.clone(), (r.active, r.users)))
        .collect()
}

#[tokio::test]
async fn users_and_roles_equal_the_truth_and_a_room_that_ends_shows_empty() {
    let s = server(6).await;
    let sim = s.get::<ZegoSim>().unwrap();
    let c = client(&s, None);
    let p = plumbing(T0);
    let rooms = sim.rooms();
    let truth = sim.truth(&rooms, T0);
    assert!(
        truth.iter().filter(|t| t.users > 7).count() >= 1,
        "{truth:?}"
    );
    assert!(truth.iter().any(|t| t.broadcasters > 0), "{truth:?}");

    let first = poll(c.as_ref(), &s, &p).await.expect("the poll answers");
    assert!(first.failed.is_empty(), "{:?}", first.first_error);
    let want: BTreeMap<String, (bool, u64)> = truth
        .iter()
        .map(|t| (t.room.clone(), (t.users > 0, t.users)))
        .collect();
    assert_eq!(by_room(&first), want);
    assert_eq!(want.get(UNKNOWN_ROOM), Some(&(false, 0)));
    for t in truth.iter().filter(|t| t.users > 0) {
        let r = first.rooms.iter().find(|r| r.room == t.room).unwrap();
        match &r.day {
            DayFigures::PresentByRole { ids, roles } => {
                assert_eq!(roles[&Role::Broadcaster], t.broadcasters, "{}", t.room);
                assert_eq!(
                    roles[&Role::Broadcaster] + roles[&Role::Viewer],
                    t.users,
                    "{}",
                    t.room
                );
                assert_eq!(ids.len() as u64, t.users);
            }
            // Express rooms (odd numbers) send no meaningful role.
            DayFigures::Present(ids) => {
                assert!(t.room.ends_with(['1', '3', '5', '7', '9']), "{}", t.room);
                assert_eq!(ids.len() as u64, t.users);
            }
            day => panic!("{}: {day:?}", t.room),
        }
    }

    // A class ends: the next poll reads it empty (no list asked), the others unchanged.
    let busy = truth.iter().find(|t| t.users > 0).unwrap().room.clone();
    assert!(sim.end_room(&busy));
    let second = poll(c.as_ref(), &s, &p).await.expect("the poll answers");
    let mut want = want;
    want.insert(busy, (false, 0));
    assert_eq!(by_room(&second), want);
}

#[tokio::test]
async fn the_timestamp_is_the_exporters_clock_and_a_wrong_secret_is_refused() {
    let s = server(3).await;
    // The exporter's clock 11 minutes ahead of the vendor's: signature expired.
    let c = client(&s, None);
    let e = poll(c.as_ref(), &s, &plumbing(T0 + 660)).await.unwrap_err();
    assert!(e.to_string().contains("100000004"), "{e}");
    // 9 minutes behind: within ZEGO's 10.
    assert!(poll(c.as_ref(), &s, &plumbing(T0 - 540)).await.is_ok());
    let wrong = client(&s, Some("0123456789abcdef0123456789abcdef"));
    let e = poll(wrong.as_ref(), &s, &plumbing(T0)).await.unwrap_err();
    assert!(e.to_string().contains("100000005"), "{e}");
    assert!(!e
        .to_string()
        .contains(&s.get::<ZegoSim>().unwrap().secret()));
}

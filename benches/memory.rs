//! Resident memory per room: what the exporter holds for one target between polls (its
//! ledger, the published data and the rendered exposition, plain and gzip), read from
//! `/proc/self/status` (`VmRSS`) in a fresh process per case. Run: `cargo bench --bench memory`.
//!
//! - URTC-like: 50 000 rooms whose vendor reports peak and accumulated (no sessions, no ids),
//!   `max_rooms` 50 000 so every room has its series; three polls.
//! - Talk-cloud-like: 10 000 rooms with sessions (join/leave, device, role; about one user in
//!   five comes back), once with 10 and once with 50 sessions a room by the last poll; bytes
//!   per session from the difference, bytes per room from the rest.
//!
//! Each case runs in a child process (this binary again, with `--case`), so one case's freed
//! memory is not another's; the figure is the growth of `VmRSS` from before the first poll to
//! after the last, over the rooms. Goal: at most 1.0 KiB a room for URTC at 50 000 rooms.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use rtc_exporter::board::Board;
use rtc_exporter::clock::SystemClock;
use rtc_exporter::clouds::VendorEntry;
use rtc_exporter::config::{Capacity, Expected};
use rtc_exporter::ledger::{Day, Ledger, Limits};
use rtc_exporter::metrics::SelfMetrics;
use rtc_exporter::model::{
    DayFigures, Device, Observation, Role, RoomObservation, SessionObs, TargetInfo,
};
use rtc_exporter::snapshot::TargetView;

const URTC_ROOMS: usize = 50_000;
const SESSION_ROOMS: usize = 10_000;
const SESSIONS: [usize; 2] = [10, 50];
const POLLS: i64 = 3;
/// Local midnight of the measured day (UTC), and the first poll an hour later.
const MIDNIGHT: i64 = 1_767_225_600;

/// `VmRSS` of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn view(name: &str, vendor: &'static VendorEntry, expected: Arc<Expected>) -> TargetView {
    TargetView {
        name: name.into(),
        vendor,
        info: TargetInfo {
            app: "app".into(),
            region: String::new(),
        },
        interval_seconds: 60.0,
        polled: false,
        up: false,
        last_success: None,
        last_duration: None,
        consecutive_failures: 0,
        consecutive_empty: 0,
        last_error: None,
        next_poll: None,
        rooms_failed: 0,
        rooms_dropped: 0,
        data: None,
        expected,
    }
}

/// One poll of `rooms` URTC-like rooms: figures reported by the vendor, growing poll by poll.
fn urtc_poll(rooms: usize, poll: i64, rng: &mut fastrand::Rng) -> Observation {
    let rooms = (0..rooms)
        .map(|i| {
            let active = rng.u32(..3) < 2;
            let users = if active { rng.u64(1..40) } else { 0 };
            let peak = users + rng.u64(0..10) + poll as u64;
            RoomObservation {
                room: format!("class-{i:05}"),
                active,
                users,
                invisible: None,
                day: DayFigures::Reported {
                    peak,
                    accumulated: peak + rng.u64(0..30),
                },
            }
        })
        .collect();
    Observation {
        rooms,
        ..Observation::default()
    }
}

/// The whole day's sessions of one Talk-cloud-like room, up to the last poll: `per_room` stays
/// of about an hour (one in five a return of the same user), teacher first, then students.
fn day_of_room(room: usize, per_room: usize) -> Vec<(String, i64, i64, Device, Role)> {
    let mut rng = fastrand::Rng::with_seed(room as u64);
    let last = MIDNIGHT + 3600 * POLLS;
    (0..per_room)
        .map(|k| {
            let user = if k > 0 && rng.u32(..5) == 0 {
                format!("{room}-{}", k - 1)
            } else {
                format!("{room}-{k}")
            };
            let join = MIDNIGHT + rng.i64(0..last - MIDNIGHT);
            let leave = join + rng.i64(60..7200);
            let device = Device::ALL[rng.usize(..Device::ALL.len())];
            let role = if k == 0 { Role::Teacher } else { Role::Student };
            (user, join, leave, device, role)
        })
        .collect()
}

/// One poll at `now` of `rooms` Talk-cloud-like rooms: every session of the day so far (as a
/// first poll, or a restart, asks for), open where its leave is still to come.
fn session_poll(rooms: usize, per_room: usize, now: i64) -> Observation {
    let rooms = (0..rooms)
        .map(|i| {
            let sessions = day_of_room(i, per_room)
                .into_iter()
                .filter(|s| s.1 <= now)
                .map(|(user, join, leave, device, role)| SessionObs {
                    user,
                    join,
                    leave: (leave <= now).then_some(leave),
                    device,
                    role: Some(role),
                })
                .collect();
            RoomObservation {
                room: format!("room-{i:05}"),
                active: true,
                users: 0,
                invisible: None,
                day: DayFigures::Sessions {
                    since: MIDNIGHT,
                    sessions,
                },
            }
        })
        .collect();
    Observation {
        rooms,
        ..Observation::default()
    }
}

/// Runs one case in this process; prints the growth of `VmRSS` in KiB.
async fn case(kind: &str, rooms: usize, per_room: usize) {
    let expected = Arc::new(Expected::default());
    let capacity = Capacity::default();
    let limits = Limits {
        capacity: &capacity,
        max_rooms: rooms,
        stale_after: 3,
    };
    let metrics = Arc::new(SelfMetrics::new().unwrap());
    let vendor = if kind == "urtc" {
        &rtc_exporter::clouds::ucloud_urtc::ENTRY
    } else {
        &rtc_exporter::clouds::talkcloud::ENTRY
    };
    let board = Board::new(
        vec![view("bench", vendor, expected.clone())],
        metrics,
        Arc::new(SystemClock),
    );
    board.rendered().await;
    let mut ledger = Ledger::new();
    let mut rng = fastrand::Rng::with_seed(17);
    let before = rss_kib();
    for poll in 1..=POLLS {
        let now = MIDNIGHT + 3600 * poll;
        let obs = if kind == "urtc" {
            urtc_poll(rooms, poll, &mut rng)
        } else {
            session_poll(rooms, per_room, now)
        };
        let day = Day {
            date: chrono::DateTime::from_timestamp(MIDNIGHT, 0)
                .unwrap()
                .date_naive(),
            start: MIDNIGHT,
            now,
        };
        let data = ledger.apply(&day, &obs, true, &limits);
        drop(obs);
        let mut v = view("bench", vendor, expected.clone());
        v.polled = true;
        v.up = true;
        v.data = Some(Arc::new(data));
        board.publish(v);
        board.rendered().await;
    }
    let after = rss_kib();
    let text = board.snapshot().text.len();
    println!("{} {text}", after.saturating_sub(before));
    drop(ledger);
}

/// Runs one case in a child process: (growth of `VmRSS` in bytes, exposition bytes).
fn child(kind: &str, rooms: usize, per_room: usize) -> (f64, usize) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--case", kind, &rooms.to_string(), &per_room.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let kib: f64 = words.next().and_then(|w| w.parse().ok()).unwrap();
    let exposition: usize = words.next().and_then(|w| w.parse().ok()).unwrap();
    (kib * 1024.0, exposition)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let kind = args[i + 1].clone();
        let rooms: usize = args[i + 2].parse().unwrap();
        let per_room: usize = args[i + 3].parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(case(&kind, rooms, per_room));
        return;
    }

    let (bytes, text) = child("urtc", URTC_ROOMS, 0);
    println!(
        "URTC-like, {URTC_ROOMS} rooms, no sessions: {:.0} KiB resident, {:.2} KiB per room (goal <= 1.0; exposition {:.0} B per room)",
        bytes / 1024.0,
        bytes / 1024.0 / URTC_ROOMS as f64,
        text as f64 / URTC_ROOMS as f64
    );

    let measured: BTreeMap<usize, f64> = SESSIONS
        .iter()
        .map(|&n| (n, child("sessions", SESSION_ROOMS, n).0))
        .collect();
    let (lo, hi) = (SESSIONS[0], SESSIONS[1]);
    let per_session = (measured[&hi] - measured[&lo]) / (SESSION_ROOMS * (hi - lo)) as f64;
    let per_room = measured[&lo] / SESSION_ROOMS as f64 - lo as f64 * per_session;
    for (n, bytes) in &measured {
        println!(
            "Talk-cloud-like, {SESSION_ROOMS} rooms x {n} sessions: {:.0} KiB resident, {:.2} KiB per room",
            bytes / 1024.0,
            bytes / 1024.0 / SESSION_ROOMS as f64
        );
    }
    println!(
        "sessions: {per_session:.0} B per session, {per_room:.0} B per room besides its sessions"
    );
}

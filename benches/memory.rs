//! Memory per room: what the exporter holds for one target between polls (its ledger, the
//! published data and the rendered exposition, plain and gzip), polled hourly for 20 hours.
//! Run: `cargo bench --bench memory`.
//!
//! - URTC-like: 50 000 rooms whose vendor reports peak and accumulated (no sessions, no ids),
//!   once with every room's series (`max_rooms: 50000`) and once with the default `max_rooms`
//!   (5 000 rooms with series, all 50 000 in the ledger and the totals).
//! - Talk-cloud-like: 10 000 rooms with sessions (join/leave, device, role; about one user in
//!   five comes back), once with 10 and once with 50 sessions a room, every room's series;
//!   bytes per session from the difference, bytes per room from the rest. The first poll
//!   reports the day so far, later ones what changed since the poll before.
//!
//! Figures per case, each in a fresh process (this binary again, with `--case`):
//!
//! - resident: the growth of `VmRSS` (`/proc/self/status`) from before the first poll, settled:
//!   the median after polls 11 to 20 (the allocator keeps what transient buffers freed, so the
//!   first polls read low);
//! - ledger: the bytes the ledger holds after the last poll, counted by the allocator below
//!   (exact, whatever the allocator keeps besides);
//! - for URTC: the time from publishing a view to its snapshot being served (render and gzip on
//!   the board's thread; median of the polls), and the longest pause of a task ticking every
//!   millisecond on the (only) async worker while a render runs: a render held on the worker would show
//!   as a pause as long as the render.
//!
//! The cases start as the binary does (`malloc::give_big_buffers_back`); one more URTC case
//! runs with glibc's moving threshold, for comparison.
//!
//! Goal: at most 1.0 KiB resident a room for URTC at 50 000 rooms.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// The system allocator, counting the bytes held (to tell the ledger's bytes from the rest).
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to the system allocator with the caller's own arguments; the
// counter only adds and subtracts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(new_size, Ordering::Relaxed);
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const URTC_ROOMS: usize = 50_000;
const DEFAULT_MAX_ROOMS: usize = 5_000;
const SESSION_ROOMS: usize = 10_000;
const SESSIONS: [usize; 2] = [10, 50];
const POLLS: i64 = 20;
/// Polls whose resident figure counts (the median of them).
const SETTLED: std::ops::RangeInclusive<i64> = 11..=20;
/// Local midnight of the measured day (UTC); polls every hour from 01:00.
const MIDNIGHT: i64 = 1_767_225_600;
/// Session rooms: everyone joins within the first three hours.
const JOINS: i64 = 3 * 3600;

/// `VmRSS` of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn view(vendor: &'static VendorEntry, expected: Arc<Expected>) -> TargetView {
    TargetView {
        name: "bench".into(),
        vendor,
        info: TargetInfo {
            app: "app".into(),
            region: String::new(),
        },
        interval_seconds: 3600.0,
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

/// The day's sessions of one Talk-cloud-like room: `per_room` stays of up to two hours, joined
/// within the first three hours (one in five a return of the same user), teacher first.
fn day_of_room(room: usize, per_room: usize) -> Vec<(String, i64, i64, Device, Role)> {
    let mut rng = fastrand::Rng::with_seed(room as u64);
    (0..per_room)
        .map(|k| {
            let user = if k > 0 && rng.u32(..5) == 0 {
                format!("{room}-{}", k - 1)
            } else {
                format!("{room}-{k}")
            };
            let join = MIDNIGHT + rng.i64(0..JOINS);
            let leave = join + rng.i64(60..7200);
            let device = Device::ALL[rng.usize(..Device::ALL.len())];
            let role = if k == 0 { Role::Teacher } else { Role::Student };
            (user, join, leave, device, role)
        })
        .collect()
}

/// One poll at `now` of `rooms` Talk-cloud-like rooms: every session overlapping
/// [`since`, `now`], open where its leave is still to come.
fn session_poll(rooms: usize, per_room: usize, since: i64, now: i64) -> Observation {
    let rooms = (0..rooms)
        .map(|i| {
            let sessions = day_of_room(i, per_room)
                .into_iter()
                .filter(|s| s.1 <= now && s.2 > since)
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
                day: DayFigures::Sessions { since, sessions },
            }
        })
        .collect();
    Observation {
        rooms,
        ..Observation::default()
    }
}

/// Runs one case in this process; prints the settled growth of `VmRSS` in KiB and the bytes
/// the ledger holds.
async fn case(kind: &str, rooms: usize, per_room: usize, max_rooms: usize) {
    let expected = Arc::new(Expected::default());
    let capacity = Capacity::default();
    let limits = Limits {
        capacity: &capacity,
        max_rooms,
        stale_after: 3,
    };
    let metrics = Arc::new(SelfMetrics::new().unwrap());
    let vendor = if kind == "urtc" {
        &rtc_exporter::clouds::ucloud_urtc::ENTRY
    } else {
        &rtc_exporter::clouds::talkcloud::ENTRY
    };
    let board = Board::new(
        vec![view(vendor, expected.clone())],
        metrics,
        Arc::new(SystemClock),
    );
    board.rendered().await;
    let mut ledger = Ledger::new();
    let mut rng = fastrand::Rng::with_seed(17);
    let date = chrono::DateTime::from_timestamp(MIDNIGHT, 0)
        .unwrap()
        .date_naive();
    // A task on this (only) async worker, ticking every millisecond: the longest gap between
    // its ticks while a render runs shows whether the render ever held the worker.
    let ticks = Arc::new(std::sync::Mutex::new(Vec::<std::time::Instant>::new()));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                ticks.lock().unwrap().push(std::time::Instant::now());
            }
        }
    });
    let mut gap = std::time::Duration::ZERO;
    let mut renders = Vec::new();
    let before = rss_kib();
    let mut settled = Vec::new();
    for poll in 1..=POLLS {
        let now = MIDNIGHT + 3600 * poll;
        let obs = if kind == "urtc" {
            urtc_poll(rooms, poll, &mut rng)
        } else {
            let since = if poll == 1 { MIDNIGHT } else { now - 3600 };
            session_poll(rooms, per_room, since, now)
        };
        let day = Day {
            date,
            start: MIDNIGHT,
            now,
        };
        let data = ledger.apply(&day, &obs, true, &limits);
        drop(obs);
        let mut v = view(vendor, expected.clone());
        v.polled = true;
        v.up = true;
        v.data = Some(Arc::new(data));
        ticks.lock().unwrap().clear();
        let t = std::time::Instant::now();
        board.publish(v);
        board.rendered().await;
        let end = std::time::Instant::now();
        renders.push(end - t);
        let mut seen = vec![t];
        seen.extend(ticks.lock().unwrap().iter().copied());
        seen.push(end);
        for w in seen.windows(2) {
            gap = gap.max(w[1].saturating_duration_since(w[0]));
        }
        if SETTLED.contains(&poll) {
            settled.push(rss_kib().saturating_sub(before));
        }
    }
    settled.sort_unstable();
    let resident = settled[settled.len() / 2];
    let held = HELD.load(Ordering::Relaxed);
    drop(ledger);
    let ledger_bytes = held - HELD.load(Ordering::Relaxed);
    ticker.abort();
    renders.sort_unstable();
    let render_ms = renders[renders.len() / 2].as_secs_f64() * 1e3;
    let gap_ms = gap.as_secs_f64() * 1e3;
    println!("{resident} {ledger_bytes} {render_ms:.1} {gap_ms:.1}");
}

/// Runs one case in a child process: (resident bytes, ledger bytes).
fn child(kind: &str, rooms: usize, per_room: usize, max_rooms: usize) -> (f64, f64) {
    let (resident, ledger, _, _) = child_with(kind, rooms, per_room, max_rooms, &[]);
    (resident, ledger)
}

/// [`child`], with more arguments (`--moving-threshold`).
fn child_with(
    kind: &str,
    rooms: usize,
    per_room: usize,
    max_rooms: usize,
    more: &[&str],
) -> (f64, f64, f64, f64) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "--case",
            kind,
            &rooms.to_string(),
            &per_room.to_string(),
            &max_rooms.to_string(),
        ])
        .args(more)
        .env_remove("MALLOC_MMAP_THRESHOLD_")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let kib: f64 = words.next().and_then(|w| w.parse().ok()).unwrap();
    let mut next = || -> f64 { words.next().and_then(|w| w.parse().ok()).unwrap() };
    let (ledger, render_ms, gap_ms) = (next(), next(), next());
    (kib * 1024.0, ledger, render_ms, gap_ms)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let number = |k: usize| -> usize { args[i + k].parse().unwrap() };
        // As the binary does first thing (`--moving-threshold`: glibc's own default).
        if !args.iter().any(|a| a == "--moving-threshold") {
            rtc_exporter::malloc::give_big_buffers_back();
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(case(&args[i + 1], number(2), number(3), number(4)));
        return;
    }

    for (max_rooms, what) in [
        (URTC_ROOMS, "every room's series"),
        (DEFAULT_MAX_ROOMS, "default max_rooms"),
    ] {
        let (resident, ledger, render_ms, gap_ms) =
            child_with("urtc", URTC_ROOMS, 0, max_rooms, &[]);
        println!(
            "URTC-like, {URTC_ROOMS} rooms, {what}: {:.2} KiB resident per room ({:.0} MiB; goal <= 1.0), the ledger {:.0} B per room",
            resident / 1024.0 / URTC_ROOMS as f64,
            resident / 1048576.0,
            ledger / URTC_ROOMS as f64
        );
        println!(
            "  render + gzip on the board's thread: {render_ms:.1} ms a poll (median); the async worker's longest pause while renders ran {gap_ms:.1} ms (a 1 ms ticker)"
        );
    }

    let (resident, _, _, _) =
        child_with("urtc", URTC_ROOMS, 0, URTC_ROOMS, &["--moving-threshold"]);
    println!(
        "URTC-like, {URTC_ROOMS} rooms, every room's series, glibc's moving mmap threshold (not the binary's fixed one): {:.2} KiB resident per room",
        resident / 1024.0 / URTC_ROOMS as f64
    );

    let measured: Vec<(usize, f64, f64)> = SESSIONS
        .iter()
        .map(|&n| {
            let (resident, ledger) = child("sessions", SESSION_ROOMS, n, SESSION_ROOMS);
            (n, resident, ledger)
        })
        .collect();
    for (n, resident, ledger) in &measured {
        println!(
            "Talk-cloud-like, {SESSION_ROOMS} rooms x {n} sessions: {:.2} KiB resident per room ({:.0} MiB), the ledger {:.0} B per room",
            resident / 1024.0 / SESSION_ROOMS as f64,
            resident / 1048576.0,
            ledger / SESSION_ROOMS as f64
        );
    }
    let (lo, hi) = (&measured[0], &measured[1]);
    let sessions = (SESSION_ROOMS * (hi.0 - lo.0)) as f64;
    let per_session = |i: usize| match i {
        0 => (hi.1 - lo.1) / sessions,
        _ => (hi.2 - lo.2) / sessions,
    };
    let per_room = |i: usize, at: f64| at / SESSION_ROOMS as f64 - lo.0 as f64 * per_session(i);
    println!(
        "sessions: {:.0} B resident per session and {:.2} KiB per room besides; the ledger {:.0} B per session and {:.0} B per room besides",
        per_session(0),
        per_room(0, lo.1) / 1024.0,
        per_session(1),
        per_room(1, lo.2)
    );
}

//! One write of the state at 1 000 000 sessions, its size in etcd (`ha:`), and an incremental
//! one. Run:
//! `cargo bench --bench state_write`.
//!
//! A day of 2 000 rooms × 500 sessions (300 000 distinct user ids, 7 devices, 6 roles, a tenth
//! still open) is written as the writer does it: [`Ledger::save`] (the plain copy taken under
//! the target's lock), [`rtc_exporter::ledger::PackedLedger::compact`], then
//! [`state::write_target`] (JSON encoded into a temporary file, fsync, rename, fsync of the
//! folder). Measured: wall time (median of 7), bytes on disk, and the peak of heap memory above
//! what was allocated before (a counting allocator), against `serde_json::to_vec` of the same
//! compacted day once. Then the same million sessions as 100 targets of 10 000: every target
//! written (a start, or a move to the new layout), and one target of the 100 changed (a poll).
//!
//! Goals: a write takes at most 3× one serialisation of the day (it is one copy, one
//! serialisation and the disk) and no more memory than that serialisation (its output is never
//! whole in memory); one changed target of 100 costs about a hundredth of writing them all.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use rtc_exporter::config::Capacity;
use rtc_exporter::ledger::{Day, Ledger, Limits};
use rtc_exporter::model::{DayFigures, Device, Observation, Role, RoomObservation, SessionObs};
use rtc_exporter::state::{self, TargetFile};

/// Counts the heap in use and its peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        IN_USE.fetch_sub(layout.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        let q = System.realloc(p, layout, size);
        if !q.is_null() {
            if size >= layout.size() {
                let now = IN_USE.fetch_add(size - layout.size(), Relaxed) + size - layout.size();
                PEAK.fetch_max(now, Relaxed);
            } else {
                IN_USE.fetch_sub(layout.size() - size, Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ROOMS: usize = 2000;
const PER_ROOM: usize = 500;
const USERS: u32 = 300_000;
const TARGETS: usize = 100;
const RUNS: usize = 7;
/// 2026-11-20 00:00 UTC, and 20:00 that day.
const START: i64 = 1_795_132_800;
const NOW: i64 = START + 20 * 3600;

/// `rooms` rooms of [`PER_ROOM`] sessions each, folded into a ledger.
fn day_of(rooms: usize, rng: &mut fastrand::Rng) -> Ledger {
    let rooms = (0..rooms)
        .map(|r| RoomObservation {
            room: format!("room-{r:05}"),
            active: true,
            users: 0,
            invisible: None,
            day: DayFigures::Sessions {
                since: START - 86_400,
                sessions: (0..PER_ROOM)
                    .map(|_| {
                        let join = rng.i64(START..NOW);
                        let leave = join + rng.i64(30..7200);
                        SessionObs {
                            user: format!("{}", 20_000_000 + rng.u32(0..USERS)),
                            join,
                            leave: (leave < NOW && rng.u8(..10) > 0).then_some(leave),
                            device: Device::ALL[rng.usize(..Device::ALL.len())],
                            role: Some(Role::ALL[rng.usize(..Role::ALL.len())]),
                        }
                    })
                    .collect(),
            },
        })
        .collect();
    let obs = Observation {
        rooms,
        ..Observation::default()
    };
    let day = Day {
        date: NaiveDate::from_ymd_opt(2026, 11, 20).unwrap_or_default(),
        start: START,
        now: NOW,
    };
    let capacity = Capacity::default();
    let limits = Limits {
        capacity: &capacity,
        max_rooms: 5000,
        stale_after: 3,
    };
    let mut ledger = Ledger::new();
    ledger.apply(&day, &obs, true, &limits);
    ledger
}

/// Runs `f`, returning its result, its wall time and the peak of heap above the start.
fn measured<T>(f: impl FnOnce() -> T) -> (T, Duration, usize) {
    let base = IN_USE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let t = Instant::now();
    let out = f();
    let took = t.elapsed();
    (out, took, PEAK.load(Relaxed).saturating_sub(base))
}

/// The write of one target, as the writer does it: the copy, then the file. Returns the bytes
/// on disk.
fn write(state_file: &Path, name: &str, ledger: &Ledger) -> u64 {
    state::write_target(state_file, &file_of(name, ledger)).unwrap_or_else(|e| panic!("{e}"))
}

/// One target's file content, the day compacted as the writer does.
fn file_of(name: &str, ledger: &Ledger) -> TargetFile {
    TargetFile {
        version: state::VERSION,
        target: name.to_string(),
        vendor: "talkcloud".into(),
        identity: format!("{:016x}", 7u64),
        timezone: "UTC".into(),
        written_at: NOW,
        cursors: None,
        ledger: {
            let mut copy = ledger.save().unwrap_or_else(|| panic!("a day"));
            copy.compact();
            copy
        },
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn main() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("state_write");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let state_file = dir.join("state.json");
    let mut rng = fastrand::Rng::with_seed(7);

    let ledger = day_of(ROOMS, &mut rng);
    let sessions = ROOMS * PER_ROOM;
    let (mut snapshot, mut whole, mut serial) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bytes, mut json_bytes, mut peak, mut json_peak) = (0, 0, 0, 0);
    // Interleaved, so both see the same machine load.
    for _ in 0..RUNS {
        let (copy, took, _) = measured(|| ledger.save());
        snapshot.push(took);
        drop(copy);
        let (b, took, p) = measured(|| write(&state_file, "big", &ledger));
        whole.push(took);
        (bytes, peak) = (b, peak.max(p));
        let mut copy = ledger.save().unwrap_or_else(|| panic!("a day"));
        copy.compact();
        let (json, took, p) = measured(|| serde_json::to_vec(&copy));
        serial.push(took);
        json_bytes = json.map(|j| j.len()).unwrap_or_default();
        drop(copy);
        json_peak = json_peak.max(p);
    }
    let (snapshot, whole, serial) = (median(snapshot), median(whole), median(serial));
    println!("state write of one target, {sessions} sessions in {ROOMS} rooms, {USERS} users:");
    println!(
        "  write: {:.0} ms ({:.0} ms of it the copy under the target's lock), {:.1} MB on disk, peak +{:.1} MiB",
        ms(whole),
        ms(snapshot),
        bytes as f64 / 1e6,
        mib(peak)
    );
    println!(
        "  serde_json::to_vec of the same day once: {:.0} ms, {:.1} MB, peak +{:.1} MiB",
        ms(serial),
        json_bytes as f64 / 1e6,
        mib(json_peak)
    );
    println!(
        "  ratio: time {:.2} (goal <= 3), memory {:.2} (goal <= 1)",
        whole.as_secs_f64() / serial.as_secs_f64(),
        peak as f64 / json_peak.max(1) as f64
    );
    let (back, took, p) = measured(|| {
        let file = state::load_target(&state_file, "big");
        let file = file.unwrap_or_else(|e| panic!("{e}"));
        let file = file.unwrap_or_else(|| panic!("written"));
        Ledger::restore_packed(file.ledger).unwrap_or_else(|e| panic!("{e}"))
    });
    println!(
        "  read back at start: {:.0} ms, peak +{:.1} MiB (the restored day included)",
        ms(took),
        mib(p)
    );
    // What a leader keeps in etcd (`ha:`): the same content, gzipped, in chunks.
    let file = file_of("big", &ledger);
    let (gz, took, p) = measured(|| state::to_compressed(&file).unwrap_or_else(|e| panic!("{e}")));
    println!(
        "  in etcd (ha:): {:.1} MB gzipped, {:.0} bytes per 1 000 sessions, {} chunks of {} KiB; encoded in {:.0} ms, peak +{:.1} MiB",
        gz.len() as f64 / 1e6,
        gz.len() as f64 * 1000.0 / sessions as f64,
        gz.len().div_ceil(rtc_exporter::ha::CHUNK),
        rtc_exporter::ha::CHUNK / 1024,
        ms(took),
        mib(p)
    );
    drop((back, ledger, file, gz));

    // The same million sessions as 100 targets: all written, then one changed.
    let rooms = ROOMS / TARGETS;
    let ledgers: Vec<Ledger> = (0..TARGETS).map(|_| day_of(rooms, &mut rng)).collect();
    let (mut all, mut one) = (Vec::new(), Vec::new());
    let (mut all_bytes, mut one_bytes, mut all_peak, mut one_peak) = (0, 0, 0, 0);
    for _ in 0..RUNS {
        let (b, took, p) = measured(|| {
            ledgers
                .iter()
                .enumerate()
                .map(|(i, l)| write(&state_file, &format!("t{i:03}"), l))
                .sum::<u64>()
        });
        all.push(took);
        (all_bytes, all_peak) = (b, all_peak.max(p));
        let changed = rng.usize(..TARGETS);
        let (b, took, p) = measured(|| {
            ledgers
                .iter()
                .enumerate()
                .filter(|(i, _)| *i == changed)
                .map(|(i, l)| write(&state_file, &format!("t{i:03}"), l))
                .sum::<u64>()
        });
        one.push(took);
        (one_bytes, one_peak) = (b, one_peak.max(p));
    }
    let (all, one) = (median(all), median(one));
    println!(
        "{TARGETS} targets of {} sessions: all written {:.0} ms, {:.1} MB, peak +{:.1} MiB; one changed {:.1} ms, {:.2} MB, peak +{:.1} MiB (ratio {:.3})",
        sessions / TARGETS,
        ms(all),
        all_bytes as f64 / 1e6,
        mib(all_peak),
        ms(one),
        one_bytes as f64 / 1e6,
        mib(one_peak),
        one.as_secs_f64() / all.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

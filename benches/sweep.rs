//! The session sweep (exact peak concurrency) on a day of 1 000 000 sessions, timed against a
//! plain sort of the same 2 000 000 join/leave events, in the same run, and the memory of the
//! day's distinct ids. Run: `cargo bench --bench sweep`.
//!
//! Goal: the sweep takes at most twice the plain sort (it must sort the events too; merging
//! each user's overlapping stays costs one more sort of the sessions).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rtc_exporter::ledger::{peak_concurrency, Presence};

const SESSIONS: usize = 1_000_000;
const USERS: u64 = 300_000;
const DAY: i64 = 86_400;
const RUNS: usize = 7;

fn day_of_sessions(seed: u64) -> Vec<Presence> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..SESSIONS)
        .map(|_| {
            let start = rng.i64(0..DAY);
            let stay = rng.i64(30..7200);
            (rng.u64(0..USERS), start, (start + stay).min(DAY))
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let sessions = day_of_sessions(7);
    let events: Vec<i64> = sessions
        .iter()
        .flat_map(|(_, s, e)| [s * 2 + 1, e * 2])
        .collect();
    let mut sweep = Vec::new();
    let mut sort = Vec::new();
    let mut peak = 0;
    // Interleaved, so both see the same machine load.
    for _ in 0..RUNS {
        let mut input = sessions.clone();
        let t = Instant::now();
        peak = peak_concurrency(&mut input);
        sweep.push(t.elapsed());

        let mut input = events.clone();
        let t = Instant::now();
        input.sort_unstable();
        sort.push(t.elapsed());
        assert!(input.windows(2).all(|w| w[0] <= w[1]));
    }
    let (sweep, sort) = (median(sweep), median(sort));
    println!(
        "sweep of {SESSIONS} sessions: {:.1} ms (peak {peak}); plain sort of {} events: {:.1} ms; ratio {:.2} (goal <= 2)",
        sweep.as_secs_f64() * 1e3,
        events.len(),
        sort.as_secs_f64() * 1e3,
        sweep.as_secs_f64() / sort.as_secs_f64()
    );

    // Bytes per distinct id in the ledger's 64-bit hash sets, at 1 000 000 ids.
    let ids: HashSet<u64> = (0..1_000_000u64)
        .map(|i| rtc_exporter::ledger::user_key(&format!("user-{i}")))
        .collect();
    let slots = (ids.capacity() * 8 / 7).next_power_of_two();
    let bytes = slots * (std::mem::size_of::<u64>() + 1);
    println!(
        "1000000 distinct ids: {} ids kept, about {bytes} bytes ({:.1} bytes per id: 8 a slot, 1 control byte, {} slots)",
        ids.len(),
        bytes as f64 / 1e6,
        slots
    );
}

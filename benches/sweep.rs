//! The session sweep (exact peak concurrency) on a day of 1 000 000 sessions, timed against a
//! plain sort of the same 2 000 000 join/leave events, in the same run, and the memory of the
//! day's distinct ids. Run: `cargo bench --bench sweep`.
//!
//! Goal: the sweep takes at most twice the plain sort (it sorts the same events, then makes
//! one pass with a presence count per user).

use std::time::{Duration, Instant};

use rtc_exporter::ledger::{peak_concurrency, Presence, Users};

const SESSIONS: usize = 1_000_000;
const USERS: u32 = 300_000;
const DAY: i64 = 86_400;
const RUNS: usize = 7;

fn day_of_sessions(seed: u64) -> Vec<Presence> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..SESSIONS)
        .map(|_| {
            let start = rng.i64(0..DAY);
            let stay = rng.i64(30..7200);
            (rng.u32(0..USERS), start, (start + stay).min(DAY))
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let sessions = day_of_sessions(7);
    // The same events as the sweep sorts: time, leave before join, user, in one u64.
    let events: Vec<u64> = sessions
        .iter()
        .flat_map(|&(u, s, e)| {
            [
                (s as u64) << 33 | 1 << 32 | u64::from(u),
                (e as u64) << 33 | u64::from(u),
            ]
        })
        .collect();
    let mut sweep = Vec::new();
    let mut sort = Vec::new();
    let mut peak = 0;
    // Interleaved, so both see the same machine load.
    for _ in 0..RUNS {
        let t = Instant::now();
        peak = peak_concurrency(&sessions);
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

    // Bytes per distinct id in the ledger's interned 64-bit keys, at 1 000 000 ids.
    let mut users = Users::default();
    for i in 0..1_000_000u64 {
        users.intern(rtc_exporter::ledger::user_key(&format!("user-{i}")));
    }
    println!(
        "1000000 distinct ids: {} kept in about {} bytes ({:.1} bytes per id)",
        users.len(),
        users.bytes(),
        users.bytes() as f64 / users.len() as f64
    );
}

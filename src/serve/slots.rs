//! `--web.max-connections`: connection slots, and which connection gives its slot up.
//!
//! Every open connection holds a slot, from its accept to its close, whatever it does: the
//! limit bounds sockets and memory. A connection that has no request in flight (a TLS handshake
//! or a request head still coming, a keep-alive connection waiting for its next request, an
//! HTTP/2 connection with no stream open) does not keep a newcomer out: when every slot is
//! taken, the oldest such connection is closed at once and the newcomer gets its slot, as nginx
//! reuses its idle and waiting connections when it runs out. Only connections with a request in
//! flight (its response not yet sent) make a newcomer wait; it is admitted when one of them
//! closes or turns idle.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How often a newcomer that waits for a slot looks again for a connection that turned idle
/// (one asked to close may have started a request in between, and declined).
const LOOK_AGAIN: Duration = Duration::from_millis(250);

/// The connection slots shared by every listener.
pub struct Slots {
    permits: Arc<Semaphore>,
    /// Open connections by accept order: the first idle one is the oldest.
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next: AtomicU64,
}

impl Slots {
    /// `limit` slots (at least 1).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Slots {
            permits: Arc::new(Semaphore::new(limit.clamp(1, Semaphore::MAX_PERMITS))),
            open: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
        })
    }

    /// A slot for a connection just accepted: a free one, else the slot of the oldest
    /// connection without a request in flight (closed for it). While every connection has a
    /// request in flight, waits until one closes or turns idle.
    pub async fn admit(self: &Arc<Self>) -> Slot {
        loop {
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return self.register(permit);
            }
            self.close_oldest_idle();
            match tokio::time::timeout(LOOK_AGAIN, self.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => return self.register(permit),
                // Never closed; should it be, wait as if full.
                Ok(Err(_)) => tokio::time::sleep(LOOK_AGAIN).await,
                Err(_) => {}
            }
        }
    }

    fn register(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Slot {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new());
        self.lock().insert(id, conn.clone());
        Slot {
            slots: self.clone(),
            id,
            conn,
            _permit: permit,
        }
    }

    /// Asks the oldest connection without a request in flight, not already asked, to close.
    fn close_oldest_idle(&self) {
        let open = self.lock();
        if let Some(victim) = open
            .values()
            .find(|c| c.in_flight() == 0 && !c.asked.swap(true, Ordering::SeqCst))
        {
            victim.close.notify_one();
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        crate::lock::lock(&self.open)
    }
}

/// One connection's slot, given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    conn: Arc<Conn>,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    /// What the connection's requests report to.
    pub fn conn(&self) -> Arc<Conn> {
        self.conn.clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().remove(&self.id);
    }
}

/// What one connection is doing: requests in flight, idle since when, asked to close.
pub struct Conn {
    activity: Mutex<Activity>,
    /// Asked to give its slot up (not asked twice).
    asked: AtomicBool,
    close: Notify,
    /// Turned idle while its watch keeps an idle timeout: [`Conn::check`] may now answer an
    /// earlier time than the one the watch sleeps until.
    turned: Notify,
    /// Its watch keeps an idle timeout (HTTP/2).
    idle_watched: AtomicBool,
}

struct Activity {
    in_flight: usize,
    /// Since when no request has been in flight (meaningful while none is).
    idle_since: Instant,
    /// Since when some request has been in flight without a pause (while one is).
    busy_since: Instant,
}

/// What a connection's watch finds: wait (until then), or close it.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Nothing is due before this time.
    Until(Instant),
    /// No request for the idle time.
    Idle,
    /// Requests in flight without a pause for the response timeout.
    Stuck,
}

impl Conn {
    fn new() -> Self {
        Conn {
            activity: Mutex::new(Activity {
                in_flight: 0,
                idle_since: Instant::now(),
                busy_since: Instant::now(),
            }),
            asked: AtomicBool::new(false),
            close: Notify::new(),
            turned: Notify::new(),
            idle_watched: AtomicBool::new(false),
        }
    }

    fn activity(&self) -> MutexGuard<'_, Activity> {
        crate::lock::lock(&self.activity)
    }

    fn in_flight(&self) -> usize {
        self.activity().in_flight
    }

    /// Marks a request in flight until the returned guard drops (with its response body).
    ///
    /// The watch is not woken: turning busy never makes [`Conn::check`] due sooner than the
    /// time the watch sleeps until (it looks again then), so a request costs no wake-up of it.
    pub fn busy(self: &Arc<Self>) -> Busy {
        let mut a = self.activity();
        if a.in_flight == 0 {
            a.busy_since = Instant::now();
        }
        a.in_flight += 1;
        Busy(self.clone())
    }

    /// Starts the idle clock again (the connection's HTTP begins after its TLS handshake).
    pub fn touch(&self) {
        let mut a = self.activity();
        if a.in_flight == 0 {
            a.idle_since = Instant::now();
        }
    }

    /// Whether the connection is due to close at `now`: idle for `idle` (when given), or
    /// with requests in flight without a pause for `response`.
    pub fn check(&self, idle: Option<Duration>, response: Duration, now: Instant) -> Check {
        let a = self.activity();
        let (due, verdict) = match (a.in_flight, idle) {
            (0, Some(idle)) => (a.idle_since + idle, Check::Idle),
            // Nothing to watch while idle: look again later.
            (0, None) => return Check::Until(now + response),
            (_, _) => (a.busy_since + response, Check::Stuck),
        };
        if now >= due {
            verdict
        } else {
            Check::Until(due)
        }
    }

    /// Its watch keeps an idle timeout: turning idle must wake it (the idle time may end before
    /// the response timeout it sleeps until).
    pub fn watch_idle(&self, watched: bool) {
        self.idle_watched.store(watched, Ordering::Relaxed);
    }

    /// Resolves when the connection turns idle while its idle time is watched (at once if it
    /// did since the last call).
    pub async fn turned(&self) {
        self.turned.notified().await;
    }

    /// Resolves when the connection is asked to give its slot up while no request is in
    /// flight; asked while one is, it declines and may be asked again.
    pub async fn closing(&self) {
        loop {
            self.close.notified().await;
            if self.in_flight() == 0 {
                return;
            }
            self.asked.store(false, Ordering::SeqCst);
        }
    }
}

/// A request in flight on a connection; dropped with its response body.
pub struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut a = self.0.activity();
        a.in_flight = a.in_flight.saturating_sub(1);
        if a.in_flight == 0 {
            a.idle_since = Instant::now();
            if self.0.idle_watched.load(Ordering::Relaxed) {
                self.0.turned.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_newcomer_takes_the_slot_of_the_oldest_idle_connection() {
        let slots = Slots::new(2);
        let first = slots.admit().await;
        let second = slots.admit().await;
        let busy = first.conn().busy();
        // The first has a request in flight: the second, idle, is asked to close.
        let second_conn = second.conn();
        let asked = tokio::spawn(async move { second_conn.closing().await });
        let third = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.admit().await })
        };
        asked.await.unwrap();
        drop(second);
        let third = third.await.unwrap();
        // Now the third is idle and the first busy: a fourth waits for the third's slot...
        let third_conn = third.conn();
        let fourth = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.admit().await })
        };
        third_conn.closing().await;
        drop(third);
        let fourth = fourth.await.unwrap();
        // ... and with both busy, a fifth waits until a request ends.
        let _fourth_busy = fourth.conn().busy();
        let fifth = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.admit().await })
        };
        tokio::time::sleep(LOOK_AGAIN * 3).await;
        assert!(
            !fifth.is_finished(),
            "admitted while every connection was busy"
        );
        let first_conn = first.conn();
        drop(busy);
        first_conn.closing().await;
        drop(first);
        fifth.await.unwrap();
    }

    #[test]
    fn the_idle_clock_runs_without_a_request_in_flight_and_the_response_clock_with_one() {
        let conn = Arc::new(Conn::new());
        let (idle, response) = (Duration::from_secs(10), Duration::from_secs(60));
        let t0 = Instant::now();
        let check = |at: Duration| conn.check(Some(idle), response, t0 + at);
        assert!(matches!(check(Duration::ZERO), Check::Until(_)));
        assert_eq!(check(idle + Duration::from_secs(1)), Check::Idle);
        let a = conn.busy();
        let b = conn.busy();
        assert!(matches!(check(idle * 2), Check::Until(_)), "busy, not idle");
        drop(a);
        assert_eq!(check(response * 2), Check::Stuck, "one still in flight");
        drop(b);
        assert_eq!(check(response * 2), Check::Idle);
        assert!(matches!(
            conn.check(None, response, t0 + response * 2),
            Check::Until(_)
        ));
    }
}

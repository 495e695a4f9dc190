//! The one wall clock the exporter reads: the system's, or a manual one tests set, so local
//! midnight, windows, cursors and cron schedules (DST included) can be tested end to end
//! without waiting.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use tokio::sync::watch;

use futures_util::future::BoxFuture;

use crate::lock::lock;

/// Where "now" comes from, and how to wait for a wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> DateTime<Utc>;
    /// Resolves once the clock reads `at` or later.
    fn sleep_until(&self, at: DateTime<Utc>) -> BoxFuture<'_, ()>;
}

/// The longest single sleep on the system clock: the wall clock can jump (NTP, a suspended
/// VM), so a wait for a wall-clock time looks at it again at least this often.
const RECHECK: Duration = Duration::from_secs(30);

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            loop {
                let Ok(left) = (at - Utc::now()).to_std() else {
                    return;
                };
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left.min(RECHECK)).await;
            }
        })
    }
}

/// A clock that stands still until it is set (tests). Waiters wake when it is set.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
    moved: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock standing at `unix_seconds`.
    pub fn at(unix_seconds: i64) -> Self {
        let t = DateTime::from_timestamp(unix_seconds, 0).unwrap_or_default();
        ManualClock {
            now: Mutex::new(t),
            moved: watch::channel(t).0,
        }
    }

    /// Sets the time, waking whoever waits for it.
    pub fn set(&self, unix_seconds: i64) {
        let t = DateTime::from_timestamp(unix_seconds, 0).unwrap_or_default();
        *lock(&self.now) = t;
        self.moved.send_replace(t);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *lock(&self.now)
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> BoxFuture<'_, ()> {
        let mut rx = self.moved.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock, which outlives this borrow.
            let _ = rx.wait_for(|t| *t >= at).await;
        })
    }
}

/// Midnight of `date` in `tz` (the earliest instant of that date, across DST gaps).
pub fn local_midnight(tz: Tz, date: NaiveDate) -> DateTime<Tz> {
    let mut t = date.and_time(chrono::NaiveTime::MIN);
    for _ in 0..48 {
        if let Some(dt) = tz.from_local_datetime(&t).earliest() {
            return dt;
        }
        t += chrono::Duration::minutes(30);
    }
    Utc.from_utc_datetime(&date.and_time(chrono::NaiveTime::MIN))
        .with_timezone(&tz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_its_sleepers_when_set() {
        let clock = std::sync::Arc::new(ManualClock::at(100));
        let c = clock.clone();
        let waiter = tokio::spawn(async move {
            c.sleep_until(DateTime::from_timestamp(200, 0).unwrap_or_default())
                .await
        });
        tokio::task::yield_now().await;
        clock.set(150);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "woke before its time");
        clock.set(200);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woke")
            .expect("joined");
    }
}

//! The one wall clock the exporter reads: the system's, or a manual one tests set, so local
//! midnight, windows and cursors can be tested end to end without waiting.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// Where "now" comes from.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until it is set (tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock standing at `unix_seconds`.
    pub fn at(unix_seconds: i64) -> Self {
        ManualClock(Mutex::new(
            DateTime::from_timestamp(unix_seconds, 0).unwrap_or_default(),
        ))
    }

    /// Sets the time.
    pub fn set(&self, unix_seconds: i64) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) =
            DateTime::from_timestamp(unix_seconds, 0).unwrap_or_default();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

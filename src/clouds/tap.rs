//! A record of every request one poll made and every anomaly it found, for `probe` and the
//! answer fixtures. Off in the daemon (no [`Tap`] on the plumbing): nothing is kept there.

use std::sync::Mutex;

use bytes::Bytes;

use super::anomaly::Found;

use crate::lock::lock;

/// One request and its answer, as sent and received.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The API (the `api` label).
    pub api: &'static str,
    /// HTTP method.
    pub method: String,
    /// The URL as sent (query included: mask before printing).
    pub url: String,
    /// Request headers as sent (mask before printing).
    pub headers: Vec<(String, String)>,
    /// The request body as sent (mask before printing).
    pub body: Bytes,
    /// HTTP status, where an answer came.
    pub status: Option<u16>,
    /// Seconds from send to the end of the answer.
    pub seconds: f64,
    /// `ok`, or the error the answer was read as.
    pub outcome: Result<(), String>,
    /// The answer's body, where one came.
    pub answer: Option<Bytes>,
}

/// What one poll sent, received and found, in order.
#[derive(Debug, Default)]
pub struct Tap {
    exchanges: Mutex<Vec<Exchange>>,
    anomalies: Mutex<Vec<Found>>,
}

impl Tap {
    /// Records one exchange.
    pub fn exchange(&self, e: Exchange) {
        lock(&self.exchanges).push(e);
    }

    /// Records one anomaly.
    pub fn anomaly(&self, f: Found) {
        lock(&self.anomalies).push(f);
    }

    /// Everything recorded so far.
    pub fn take(&self) -> (Vec<Exchange>, Vec<Found>) {
        (
            std::mem::take(&mut *lock(&self.exchanges)),
            std::mem::take(&mut *lock(&self.anomalies)),
        )
    }
}

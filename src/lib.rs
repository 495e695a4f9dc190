//! rtc-exporter: real-time audio/video rooms of several cloud vendors as Prometheus metrics.
//!
//! # Layout
//!
//! The modules in the order data flows, from a config file to the bytes of a scrape. Each
//! imports only modules above it in this list (`cargo test --test layout` checks it, so no
//! import circle can form):
//!
//! ```text
//! malloc          glibc told once to give big buffers (the exposition) back when they are freed
//! lock, clock     one way to take a std mutex; the one wall clock (tests drive it), local midnight
//! fields          secrets that never print, durations, field errors; redaction, the message cut
//! schedule        intervals and cron in the zone (DST-safe), backoff gaps
//! classes         scheduled classes: which rooms the config expects in use now
//! model           what a poll saw, vendor-neutral: rooms, users now; day figures reported by
//!                 the vendor, observed presence, or sessions
//! metrics         the exporter's own counters (requests, polls, anomalies, state file)
//! clouds          trait Vendor + REGISTRY; one HTTP client, the rate limiters, `Api::call` (the
//!                 one place requests are timed, counted and logged); one file per vendor
//!                 (client + signing), each reporting in `model` terms
//! ha              etcd: the lease, which shards of the targets this replica leads, the day's
//!                 copy in etcd (a small client of etcd's JSON gateway)
//! config          YAML -> validated Config: vendor keys parsed by the registry's parsers
//! snapshot        one target's immutable view: the rows its series are rendered from
//! ledger          the local day per target: peak / accumulated per room and target, the day's
//!                 sessions and the exact sweep, the midnight roll
//! state           the day and the vendor cursors across restarts: one compact file per target
//!                 in <state_file>.d/, written when its day changed, atomically, off the workers
//! exposition      the text format of the views and the own counters
//! board           the latest views, rendered and gzipped on a thread of its own, swapped whole
//! supervisor      one owner per target: schedule, poll, fold into the ledger, publish; the
//!                 fleet of them applies a reload, rolls the day and writes the state file
//! web_config      --web.config.file (exporter-toolkit format): TLS, basic auth, headers
//! serve           hyper: /metrics, /, /-/healthy, /-/ready, /-/reload; slots and limits
//! sim             simulated vendor servers on loopback (they know only `model`)
//! simulate        each vendor paired with its simulator; `simulate --write-config`
//! probe           `probe`: one poll of one target, every request, answer and anomaly shown
//! app             wiring: the exporter, the demo, the simulators
//! ```
//!
//! A scrape never waits on a vendor: polls publish views, the board renders them once per
//! batch of changes, and `/metrics` serves the latest bytes.
#![deny(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod app;
pub mod board;
pub mod classes;
pub mod clock;
pub mod clouds;
pub mod config;
pub mod exposition;
pub mod fields;
pub mod ha;
pub mod ledger;
pub mod lock;
pub mod malloc;
pub mod metrics;
pub mod model;
pub mod probe;
pub mod schedule;
pub mod serve;
pub mod sim;
pub mod simulate;
pub mod snapshot;
pub mod state;
pub mod supervisor;
pub mod web_config;

#[cfg(test)]
mod fuzz;

/// The exporter's version, from Cargo.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision the binary was built from, or `unknown`.
pub const REVISION: &str = match option_env!("RTC_EXPORTER_REVISION") {
    Some(r) => r,
    None => "unknown",
};

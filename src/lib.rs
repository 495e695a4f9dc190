//! rtc-exporter: real-time audio/video rooms of several cloud vendors as Prometheus metrics.
//!
//! # Layout
//!
//! The flow, one module a step:
//!
//! ```text
//! fields    secrets, durations, field errors; redaction and the message cut
//! config    YAML -> validated Config (secrets resolved, never printed)
//! supervisor one owner per target: schedule, ledger, vendor state, backoff, series; the fleet
//!           of them applies a reload and keeps the state file
//! schedule  when polls are due: interval grid or cron in the zone (DST-safe), backoff gaps
//! state     today's figures across restarts: one compact file per target in
//!           <state_file>.d/, written when its day changed, atomically, off the async workers
//! clouds    trait Vendor + REGISTRY; shared HTTP, rate limiter and request accounting;
//!           one file per vendor (client + signing); `clouds::util` the helpers they share
//! model     the vendor-neutral observation: rooms, users now, reported / present / sessions
//! ledger    peak / accumulated per room and target for the local day; the day's sessions
//!           and the exact sweep where a vendor gives join and leave times
//! classes   scheduled classes: which rooms the config expects in use now (cron + duration)
//! clock     the one wall clock polls and renders read (tests drive it)
//! snapshot  immutable per-target views; the board's render thread renders the exposition and
//!           its gzip once per batch of changes and swaps the snapshot whole
//! metrics   self-metrics registry and the text renderer
//! serve     hyper: /metrics, /, /-/healthy, /-/ready, /-/reload; connection slots (idle ones
//!           give way), the scrape limit, header and idle timeouts
//! web_config --web.config.file (exporter-toolkit format): TLS via rustls, basic auth (bcrypt),
//!           response headers, rate limit; re-read when the file changes
//! sim       simulated vendor servers on loopback (demo, tests, benchmarks)
//! app       wiring: run the exporter, the demo and the simulators
//! simulate  `simulate --write-config`: an exporter.yaml pointed at the simulators
//! probe     `probe`: one poll of one target, every request, answer and anomaly shown
//! ```
//!
//! A scrape never waits on a vendor or a render: polls publish views, a render thread turns
//! them into bytes once per batch of changes, and `/metrics` serves the latest bytes.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod app;
pub mod classes;
pub mod clock;
pub mod clouds;
pub mod config;
pub mod fields;
pub mod ledger;
pub mod lock;
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

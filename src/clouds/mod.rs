//! The vendor trait, the registry, the vendor-neutral [`Observation`], and the plumbing every
//! vendor shares: one HTTP client, a rate limiter per (vendor, limit bucket, account), and the
//! one place ([`Api::call`]) that times, counts and logs every request and vendor error code.
//!
//! A vendor module knows its own config keys, signing, paging and error codes, nothing else.
//! Adding one: a new file here, its simulator twin in `sim/`, and one [`REGISTRY`] line.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use governor::clock::{Clock as _, DefaultClock};
use governor::{Quota, RateLimiter};

use crate::clock::{Clock, SystemClock};
use crate::fields::FieldError;
use crate::lock::lock;
use crate::metrics::SelfMetrics;

pub use anomaly::{Anomaly, Found};
pub use tap::{Exchange, Tap};

pub mod agora;
pub mod alibaba_artc;
pub mod anomaly;
pub mod livekit;
pub mod merged;
pub mod talkcloud;
pub mod tap;
pub mod tencent_trtc;
pub mod ucloud_urtc;
pub mod util;
pub mod volcengine_rtc;
pub mod zego;

pub use crate::model::{
    DayFigures, Device, DeviceCounts, Observation, Role, RoleCounts, RoomObservation, SessionObs,
    TargetInfo,
};
/// A boxed future, as the trait returns (the trait is used as `dyn Vendor`).
pub use futures_util::future::BoxFuture;

/// One configured target's client: built from the vendor's config keys, polled by the scheduler.
pub trait Vendor: Send + Sync + 'static {
    /// Static facts for `rtc_target_info`.
    fn info(&self) -> TargetInfo;
    /// Polls the vendor once: every room of the target, with all pages and windows.
    fn poll<'a>(&'a self, ctx: &'a PollCtx) -> BoxFuture<'a, Result<Observation, PollError>>;
    /// The requests one poll needs at least, where the target has a fixed room list, for
    /// `--config.check`; `None` where the vendor finds its rooms itself.
    fn budget(&self) -> Option<Budget> {
        None
    }
    /// The highest rate, in requests per second per account, that the vendor documents (or
    /// that this exporter decided, where the vendor publishes none) for any of its APIs: a
    /// `qps:` above it could lower nothing, and `--config.check` refuses it. `None`: not
    /// checked.
    fn documented_qps(&self) -> Option<f64> {
        None
    }
    /// The client's own reading state (cursors), for the state file and for the client that
    /// replaces it on a restart: `None` where it keeps none.
    fn cursors(&self) -> Option<serde_json::Value> {
        None
    }
    /// Takes back what [`Vendor::cursors`] gave, from a client of the same vendor and account;
    /// what it cannot read is refused with why (the client then starts afresh).
    fn restore_cursors(&self, _saved: serde_json::Value) -> Result<(), String> {
        Ok(())
    }
    /// The endpoint the target polls, from its `endpoint:` key: as the vendor reads it, or why
    /// it is refused (LiveKit has no default host and maps a `wss://` project URL to
    /// `https://`). By default the key as it is, where only http(s) URLs pass.
    fn endpoint(&self, configured: Option<&str>) -> Result<Option<String>, String> {
        match configured {
            Some(ep) if ep.starts_with("ws://") || ep.starts_with("wss://") => {
                Err(format!("\"{ep}\" is not an http(s) URL"))
            }
            other => Ok(other.map(str::to_string)),
        }
    }
}

/// The requests one poll needs and the documented limit they go at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Requests a poll makes at least (one page per room).
    pub requests: u64,
    /// The documented requests per second of the API they go to.
    pub qps: f64,
}

/// A registry row: the `vendor:` name and its config parser. (Its simulator is paired with it
/// above both, in [`crate::simulate::SIMULATORS`].)
pub struct VendorEntry {
    /// The `vendor:` value and the `vendor` label.
    pub name: &'static str,
    /// Builds a client from the target's vendor-specific keys (unknown keys are errors).
    pub parse: fn(serde_yaml::Value) -> Result<Arc<dyn Vendor>, FieldError>,
}

/// A vendor is its registry row: two are the same vendor when they are the same row (by
/// name); it shows as its name (the `vendor` label).
impl PartialEq for VendorEntry {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for VendorEntry {}

impl fmt::Debug for VendorEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl fmt::Display for VendorEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Every vendor, by name. One line per vendor.
pub static REGISTRY: &[VendorEntry] = &[
    ucloud_urtc::ENTRY,
    volcengine_rtc::ENTRY,
    tencent_trtc::ENTRY,
    talkcloud::ENTRY,
    agora::ENTRY,
    livekit::ENTRY,
    alibaba_artc::ENTRY,
    zego::ENTRY,
];

/// Finds a vendor by its `vendor:` name.
pub fn lookup(name: &str) -> Option<&'static VendorEntry> {
    REGISTRY.iter().find(|e| e.name == name)
}

/// What a poll has produced so far. Vendors report each room here as soon as it is refreshed
/// ([`PollCtx::room_done`], [`PollCtx::room_failed`]), so that a poll cut short by
/// `poll_timeout` still publishes the rooms it got, and a vendor may advance its own cursors
/// (what it fetched already) in the same step: nothing reported here is lost.
#[derive(Debug, Default)]
pub struct Progress(Mutex<Observation>);

impl Progress {
    /// Takes everything reported so far.
    pub fn take(&self) -> Observation {
        std::mem::take(&mut *lock(&self.0))
    }
}

/// Why one request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The vendor answered with an error code.
    #[error("{api}: vendor error {code}: {message}")]
    Vendor {
        /// The API.
        api: &'static str,
        /// The code as the vendor sent it.
        code: String,
        /// The code as counted: documented codes as they are, the rest `other`.
        label: &'static str,
        /// The vendor's message.
        message: String,
        /// The code means "too many requests".
        throttled: bool,
    },
    /// The HTTP request did not finish within `request_timeout`.
    #[error("{api}: request timed out")]
    Timeout {
        /// The API.
        api: &'static str,
    },
    /// Connection refused, reset, TLS failure, ...
    #[error("{api}: transport error: {message}")]
    Transport {
        /// The API.
        api: &'static str,
        /// What failed.
        message: String,
    },
    /// Not sent, or dropped under way: this replica stopped leading the target's shard (`ha:`).
    #[error("{api}: not sent: this replica no longer leads the target's shard")]
    NotLeader {
        /// The API.
        api: &'static str,
    },
    /// An HTTP status the vendor does not use for its own errors, e.g. 502.
    #[error("{api}: HTTP {status} without a vendor error")]
    Http {
        /// The API.
        api: &'static str,
        /// The status.
        status: u16,
    },
    /// The body was larger than `max_response_bytes`; reading stopped there.
    #[error("{api}: response larger than {limit} bytes")]
    TooLarge {
        /// The API.
        api: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The body is not what the vendor documents.
    #[error("{api}: malformed response: {message}")]
    Malformed {
        /// The API.
        api: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// Why a whole poll failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PollError {
    /// A request failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The poll did not finish within `poll_timeout`.
    #[error("poll did not finish within poll_timeout ({0:?})")]
    Deadline(Duration),
}

/// What a vendor may use during one poll: time, zone, endpoint and the shared plumbing.
pub struct PollCtx {
    /// The target's name.
    pub target: String,
    /// The vendor's registry name.
    pub vendor: &'static str,
    /// Wall-clock time at the start of the poll.
    pub now: DateTime<Utc>,
    /// `global.timezone`.
    pub tz: Tz,
    /// Endpoint override.
    pub endpoint: Option<String>,
    /// QPS lowered by config.
    pub qps: Option<f64>,
    /// Shared HTTP client, limiters and self-metrics.
    pub plumbing: Arc<Plumbing>,
    /// What the poll has produced so far.
    pub progress: Arc<Progress>,
    /// `global.request_timeout` (the client's own default otherwise).
    pub request_timeout: Option<Duration>,
    /// `global.max_response_bytes` (the plumbing's otherwise).
    pub max_response_bytes: Option<usize>,
    /// With `ha:`, whether this replica leads the target's shard: while it does not, no
    /// request is sent, and one under way is dropped ([`CallError::NotLeader`]).
    pub gate: Option<LeaderGate>,
}

/// With `ha:`, whether this replica may send a target's requests: its shard's gate is open
/// *and* the lease's deadline on this process's own clock has not passed. The deadline is
/// checked at each request, so a process frozen past it (a paused VM, SIGSTOP) sends nothing
/// even before its campaign has run to close the gate.
#[derive(Clone)]
pub struct LeaderGate {
    /// Open while this replica leads the shard.
    pub open: tokio::sync::watch::Receiver<bool>,
    /// Until when its lease lets it lead (`None`: no lease).
    pub until: Arc<Mutex<Option<tokio::time::Instant>>>,
}

impl LeaderGate {
    /// Whether requests may go out now.
    pub fn is_open(&self) -> bool {
        *self.open.borrow()
            && self
                .deadline()
                .is_some_and(|u| tokio::time::Instant::now() < u)
    }

    /// The lease's deadline on this process's clock.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        *lock(&self.until)
    }

    /// Returns once requests may no longer go out: the gate closes or the deadline passes.
    pub async fn closed(&self) {
        let mut open = self.open.clone();
        loop {
            let Some(until) = self.deadline().filter(|_| *open.borrow()) else {
                return;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {
                    // The deadline may have moved on (a renewal): look again.
                    if self.deadline().is_none_or(|u| u <= tokio::time::Instant::now()) {
                        return;
                    }
                }
                r = open.changed() => if r.is_err() { return },
            }
        }
    }
}

impl PollCtx {
    /// A context for one poll of `target` at `now`.
    pub fn new(
        target: &str,
        vendor: &'static str,
        now: DateTime<Utc>,
        tz: Tz,
        plumbing: Arc<Plumbing>,
    ) -> Self {
        PollCtx {
            target: target.to_string(),
            vendor,
            now,
            tz,
            endpoint: None,
            qps: None,
            plumbing,
            progress: Arc::new(Progress::default()),
            request_timeout: None,
            max_response_bytes: None,
            gate: None,
        }
    }

    /// Whether requests may go out: always without `ha:`; with it, while this replica leads
    /// the target's shard.
    pub fn leading(&self) -> bool {
        self.gate.as_ref().is_none_or(LeaderGate::is_open)
    }

    /// A copy a task may own, reporting into the same [`Progress`].
    pub fn to_owned_ctx(&self) -> PollCtx {
        PollCtx {
            target: self.target.clone(),
            vendor: self.vendor,
            now: self.now,
            tz: self.tz,
            endpoint: self.endpoint.clone(),
            qps: self.qps,
            plumbing: self.plumbing.clone(),
            progress: self.progress.clone(),
            request_timeout: self.request_timeout,
            max_response_bytes: self.max_response_bytes,
            gate: self.gate.clone(),
        }
    }

    /// Reports one refreshed room.
    pub fn room_done(&self, room: RoomObservation) {
        let mut p = lock(&self.progress.0);
        p.rooms.push(room);
    }

    /// Reports a room whose refresh failed (the request was counted and logged where it was
    /// made): it keeps its last values.
    pub fn room_failed(&self, room: &str, error: &CallError) {
        let mut p = lock(&self.progress.0);
        p.failed.push(room.to_string());
        if p.first_error.is_none() {
            p.first_error = Some(format!("room {room}: {error}"));
        }
    }

    /// Reports an answer that disagreed with itself but still read (README, "Answers that disagree with themselves"): counted in
    /// `rtc_exporter_vendor_anomalies_total`, logged at `warn` at most once an hour per target
    /// and kind, and recorded for `probe`. `detail` names rooms and numbers, never a secret.
    pub fn anomaly(&self, api: &'static str, kind: Anomaly, detail: impl Into<String>) {
        let detail = detail.into();
        self.plumbing
            .metrics
            .record_anomaly(&self.target, self.vendor, api, kind.label());
        if self.plumbing.first_this_hour(&self.target, kind) {
            tracing::warn!(
                target_name = %self.target,
                api,
                kind = kind.label(),
                detail = %detail,
                "vendor answer disagrees with itself; read from its rows (logged once an hour per target and kind)"
            );
        }
        if let Some(tap) = &self.plumbing.tap {
            tap.anomaly(Found { api, kind, detail });
        }
    }

    /// The wall clock now (the shared [`Clock`]; tests drive it).
    pub fn wall_now(&self) -> DateTime<Utc> {
        self.plumbing.clock.now()
    }

    /// The local date of `now`.
    pub fn today(&self) -> NaiveDate {
        self.now.with_timezone(&self.tz).date_naive()
    }

    /// Local midnight of today, as Unix seconds.
    pub fn day_start(&self) -> i64 {
        local_midnight(self.tz, self.today()).timestamp()
    }

    /// A handle for one API of one account: rate limited at `documented_qps`, or lower where
    /// the target's `qps:` says so. Every target on the same account shares the limiter.
    pub fn api(&self, api: &'static str, account: &str, documented_qps: f64) -> Api<'_> {
        self.api_bucket(api, api, account, documented_qps)
    }

    /// Like [`PollCtx::api`], for an API whose variants have limits of their own (Volcengine
    /// `GetRoomOnlineUsers`: 40 QPS, 1 QPS with `Property=true`): `bucket` names the limiter,
    /// `api` the label.
    pub fn api_bucket(
        &self,
        api: &'static str,
        bucket: &'static str,
        account: &str,
        documented_qps: f64,
    ) -> Api<'_> {
        let qps = self.qps.map_or(documented_qps, |q| q.min(documented_qps));
        let limiter = self
            .plumbing
            .limiter(self.vendor, bucket, account, &self.target, qps);
        Api {
            ctx: self,
            api,
            limiter,
        }
    }

    /// The endpoint to use: the override, or the vendor's default.
    pub fn endpoint_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.endpoint.as_deref().unwrap_or(default)
    }
}

pub use crate::clock::local_midnight;

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    DefaultClock,
    governor::middleware::NoOpMiddleware,
>;

/// (vendor, bucket, account)
type BucketKey = (&'static str, &'static str, String);

/// One limit bucket of one account: its pacing, and a pause after the vendor said "too many
/// requests" that every target on the account honours.
pub(crate) struct Bucket {
    /// The pacing now: the lowest rate any current target of the account asks for.
    pacing: Mutex<Pacing>,
    pause: Mutex<Pause>,
}

/// A bucket's pacing and who asked for which rate.
struct Pacing {
    qps: f64,
    limiter: Arc<Limiter>,
    /// The rate each target asked for last (a reload replaces it; a removed target's goes).
    asked: HashMap<String, f64>,
}

/// A limiter spacing requests for `qps`.
fn pacing_limiter(qps: f64) -> Limiter {
    let mut period = PACING_HEADROOM / qps;
    if qps <= 1.5 {
        // A vendor bucket of one token absorbs no jitter at all: leave it 50 ms more.
        period += SLOW_MARGIN;
    }
    let period = Duration::from_secs_f64(period);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::MIN);
    RateLimiter::direct(quota)
}

impl Bucket {
    fn new() -> Self {
        Bucket {
            pacing: Mutex::new(Pacing {
                qps: f64::INFINITY,
                limiter: Arc::new(pacing_limiter(f64::MAX)),
                asked: HashMap::new(),
            }),
            pause: Mutex::new(Pause::default()),
        }
    }

    /// Notes the rate `target` asks for; the bucket paces at the lowest of its targets'.
    fn ask(&self, target: &str, qps: f64) {
        let qps = qps.max(0.001);
        let mut p = lock(&self.pacing);
        if p.asked.get(target) == Some(&qps) {
            return;
        }
        p.asked.insert(target.to_string(), qps);
        p.repace();
    }

    /// Forgets the targets not in `keep`.
    fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        let mut p = lock(&self.pacing);
        let before = p.asked.len();
        p.asked.retain(|t, _| keep(t));
        if p.asked.len() != before {
            p.repace();
        }
    }

    /// The rate it paces at now.
    #[cfg(test)]
    fn qps(&self) -> f64 {
        lock(&self.pacing).qps
    }
}

impl Pacing {
    fn repace(&mut self) {
        let lowest = self.asked.values().copied().fold(f64::INFINITY, f64::min);
        if lowest != self.qps && lowest.is_finite() {
            self.qps = lowest;
            self.limiter = Arc::new(pacing_limiter(lowest));
        }
    }
}

#[derive(Default)]
struct Pause {
    until: Option<tokio::time::Instant>,
    strikes: u32,
}

/// The first pause after a throttle answer; it doubles with each further one in a row.
pub const THROTTLE_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause.
pub const THROTTLE_PAUSE_MAX: Duration = Duration::from_secs(30);

impl Bucket {
    /// Waits out a pause, then for a turn at the pacing.
    async fn wait_turn(&self) {
        loop {
            let until = lock(&self.pause).until;
            match until {
                Some(t) if t > tokio::time::Instant::now() => tokio::time::sleep_until(t).await,
                _ => break,
            }
        }
        let clock = DefaultClock::default();
        let limiter = lock(&self.pacing).limiter.clone();
        while let Err(not_until) = limiter.check() {
            tokio::time::sleep(not_until.wait_time_from(clock.now())).await;
        }
    }

    /// After an answer: a throttle pauses the bucket (1 s, doubling, at most 30 s, jittered);
    /// any other answer ends the run of strikes.
    fn answered(&self, throttled: bool) {
        let mut p = lock(&self.pause);
        if !throttled {
            p.strikes = 0;
            return;
        }
        p.strikes = p.strikes.saturating_add(1);
        let pause = THROTTLE_PAUSE
            .saturating_mul(1 << (p.strikes - 1).min(5))
            .min(THROTTLE_PAUSE_MAX)
            .mul_f64(1.0 + 0.2 * fastrand::f64());
        let until = tokio::time::Instant::now() + pause;
        p.until = Some(p.until.map_or(until, |u| u.max(until)));
        tracing::debug!(
            strikes = p.strikes,
            pause_seconds = pause.as_secs_f64(),
            "vendor throttled: the account's bucket pauses"
        );
    }
}

/// Pacing headroom: requests are spaced 2 % wider than the documented QPS, so jitter on the
/// way to the vendor cannot push two of them into one of its windows.
const PACING_HEADROOM: f64 = 1.02;
/// Extra spacing, in seconds, for limits of about one request a second.
const SLOW_MARGIN: f64 = 0.05;

/// The one HTTP client, the limiters and the self-metrics, shared by every target.
pub struct Plumbing {
    /// The HTTP client (rustls; `request_timeout` on every request).
    pub http: reqwest::Client,
    /// Counters and histograms of the exporter itself.
    pub metrics: Arc<SelfMetrics>,
    /// The wall clock polls read (tests drive it).
    pub clock: Arc<dyn Clock>,
    /// Vendor answers larger than this fail their request.
    pub max_response_bytes: usize,
    /// Where `probe` records every exchange; `None` in the daemon.
    pub tap: Option<Arc<Tap>>,
    limiters: Mutex<HashMap<BucketKey, Arc<Bucket>>>,
    /// When each (target, anomaly kind) was last logged.
    warned: Mutex<HashMap<(String, Anomaly), std::time::Instant>>,
}

/// An anomaly of one kind is logged at most this often per target.
pub const ANOMALY_LOG_EVERY: Duration = Duration::from_secs(3600);

impl Plumbing {
    /// Builds the shared client.
    pub fn new(
        request_timeout: Duration,
        metrics: Arc<SelfMetrics>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("rtc-exporter/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Plumbing {
            http,
            metrics,
            clock: Arc::new(SystemClock),
            max_response_bytes: 8 << 20,
            tap: None,
            limiters: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashMap::new()),
        })
    }

    /// The same plumbing recording every exchange and anomaly in `tap`.
    pub fn with_tap(mut self, tap: Arc<Tap>) -> Self {
        self.tap = Some(tap);
        self
    }

    /// Whether an anomaly of `kind` on `target` is the first in [`ANOMALY_LOG_EVERY`].
    fn first_this_hour(&self, target: &str, kind: Anomaly) -> bool {
        let now = std::time::Instant::now();
        let mut warned = lock(&self.warned);
        match warned.get_mut(&(target.to_string(), kind)) {
            Some(at) if now.duration_since(*at) < ANOMALY_LOG_EVERY => false,
            Some(at) => {
                *at = now;
                true
            }
            None => {
                warned.insert((target.to_string(), kind), now);
                true
            }
        }
    }

    /// The same plumbing with another cap on vendor answers.
    pub fn with_max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// The same plumbing with another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn limiter(
        &self,
        vendor: &'static str,
        api: &'static str,
        account: &str,
        target: &str,
        qps: f64,
    ) -> Arc<Bucket> {
        let bucket = {
            let mut map = lock(&self.limiters);
            map.entry((vendor, api, account.to_string()))
                .or_insert_with(|| Arc::new(Bucket::new()))
                .clone()
        };
        // The lowest rate any current target of the account asks for wins for the whole
        // account; a reload that raises or removes a target's `qps:` takes effect.
        bucket.ask(target, qps);
        bucket
    }

    /// Forgets the rates asked by targets not in `keep` (removed by a reload).
    pub fn retain_targets(&self, keep: &std::collections::BTreeSet<String>) {
        let map = lock(&self.limiters);
        for bucket in map.values() {
            bucket.retain(&|t| keep.contains(t));
        }
    }
}

/// One API of one account, for one poll: rate limited, timed and counted.
pub struct Api<'a> {
    ctx: &'a PollCtx,
    api: &'static str,
    limiter: Arc<Bucket>,
}

impl Api<'_> {
    /// The API name (the `api` label).
    pub fn name(&self) -> &'static str {
        self.api
    }

    async fn wait_turn(&self) {
        self.limiter.wait_turn().await;
    }

    /// Sends one request after its turn at the limiter; `parse` turns the HTTP status and
    /// body into a value or a [`CallError`]. Counts the outcome, the vendor code and the
    /// duration, and logs failures, all here.
    pub async fn call<T>(
        &self,
        request: reqwest::RequestBuilder,
        parse: impl FnOnce(u16, &[u8]) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        self.wait_turn().await;
        let api = self.api;
        if !self.ctx.leading() {
            return Err(CallError::NotLeader { api });
        }
        let sent_as = match &self.ctx.plumbing.tap {
            Some(_) => request.try_clone().and_then(|r| r.build().ok()),
            None => None,
        };
        let start = tokio::time::Instant::now();
        let limit = self
            .ctx
            .max_response_bytes
            .unwrap_or(self.ctx.plumbing.max_response_bytes);
        let request = match self.ctx.request_timeout {
            Some(t) => request.timeout(t),
            None => request,
        };
        let sent = async {
            let mut resp = request.send().await.map_err(|e| classify(api, e))?;
            let status = resp.status().as_u16();
            // Read incrementally and stop at the cap: a hostile or broken endpoint cannot make
            // the exporter hold more than `max_response_bytes` per request. The chunks are
            // kept as they came and joined once the whole body is in: a growing buffer would
            // hold half as much again while it is copied to a larger one.
            if resp.content_length().is_some_and(|n| n > limit as u64) {
                return Err(CallError::TooLarge { api, limit });
            }
            let mut chunks = Vec::new();
            let mut len = 0usize;
            while let Some(chunk) = resp.chunk().await.map_err(|e| classify(api, e))? {
                len += chunk.len();
                if len > limit {
                    return Err(CallError::TooLarge { api, limit });
                }
                chunks.push(chunk);
            }
            let body = match chunks.len() {
                1 => chunks.pop().unwrap_or_default(),
                _ => {
                    let mut body = bytes::BytesMut::with_capacity(len);
                    for c in chunks.drain(..) {
                        body.extend_from_slice(&c);
                    }
                    body.freeze()
                }
            };
            Ok::<_, CallError>((status, body))
        };
        // A replica that stops leading drops the request where it stands.
        let sent = match &self.ctx.gate {
            Some(gate) => {
                tokio::select! {
                    r = sent => r,
                    _ = gate.closed() => return Err(CallError::NotLeader { api }),
                }
            }
            None => sent.await,
        };
        let elapsed = start.elapsed().as_secs_f64();
        let answer = sent
            .as_ref()
            .ok()
            .map(|(status, body)| (*status, body.clone()));
        let status = answer.as_ref().map(|a| a.0);
        let result = sent
            .and_then(|(status, body)| parse(status, &body))
            .map_err(|e| throttle_on_429(e, status).shortened());
        if let (Some(tap), Some(req)) = (&self.ctx.plumbing.tap, sent_as) {
            tap.exchange(Exchange {
                api,
                method: req.method().to_string(),
                url: req.url().to_string(),
                headers: req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                    .collect(),
                body: req
                    .body()
                    .and_then(|b| b.as_bytes())
                    .map(Bytes::copy_from_slice)
                    .unwrap_or_default(),
                status: answer.as_ref().map(|a| a.0),
                seconds: elapsed,
                outcome: result.as_ref().map(|_| ()).map_err(|e| e.to_string()),
                answer: answer.map(|a| a.1),
            });
        }
        self.limiter
            .answered(result.as_ref().err().is_some_and(CallError::is_throttle));
        let failed = result.as_ref().err();
        self.ctx.plumbing.metrics.record_request(
            &self.ctx.target,
            self.ctx.vendor,
            api,
            elapsed,
            failed.map(|e| (e.outcome(), e.code_label())),
        );
        match failed {
            None => {
                tracing::debug!(target_name = %self.ctx.target, api, seconds = elapsed, "vendor request ok")
            }
            // Debug only: the poll that made the request logs its failure once.
            Some(e) => {
                tracing::debug!(target_name = %self.ctx.target, api, outcome = e.outcome(), error = %e, "vendor request failed")
            }
        }
        result
    }
}

pub use crate::fields::MAX_MESSAGE;

fn shorten(message: &mut String) {
    if message.len() > MAX_MESSAGE {
        *message = crate::fields::cut(message, MAX_MESSAGE);
    }
}

/// HTTP 429 is "too many requests" from any vendor, whatever its body says: a vendor error
/// that came with it is a throttle too.
fn throttle_on_429(e: CallError, status: Option<u16>) -> CallError {
    match e {
        CallError::Vendor {
            api,
            code,
            label,
            message,
            throttled: false,
        } if status == Some(429) => CallError::Vendor {
            api,
            code,
            label,
            message,
            throttled: true,
        },
        e => e,
    }
}

impl CallError {
    /// The `outcome` label of `rtc_exporter_vendor_requests_total` for this failure.
    pub fn outcome(&self) -> &'static str {
        match self {
            e if e.is_throttle() => "throttled",
            CallError::Timeout { .. } => "timeout",
            CallError::Transport { .. } => "transport",
            CallError::Malformed { .. } => "malformed",
            CallError::TooLarge { .. } => "too_large",
            _ => "error",
        }
    }

    /// The `code` label of `rtc_exporter_vendor_errors_total`, for a vendor error.
    pub fn code_label(&self) -> Option<&str> {
        match self {
            CallError::Vendor { label, .. } => Some(label),
            _ => None,
        }
    }

    /// The vendor said "too many requests": a throttle code, or HTTP 429 without one. The
    /// account's bucket pauses.
    pub fn is_throttle(&self) -> bool {
        matches!(
            self,
            CallError::Vendor {
                throttled: true,
                ..
            } | CallError::Http { status: 429, .. }
        )
    }

    /// The same error with its vendor or parser message cut to [`MAX_MESSAGE`] bytes.
    pub fn shortened(mut self) -> Self {
        match &mut self {
            CallError::Vendor { message, .. }
            | CallError::Malformed { message, .. }
            | CallError::Transport { message, .. } => shorten(message),
            _ => {}
        }
        self
    }
}

fn classify(api: &'static str, e: reqwest::Error) -> CallError {
    if e.is_timeout() {
        return CallError::Timeout { api };
    }
    // Never the URL: some vendors carry keys in it.
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    CallError::Transport { api, message }
}

impl fmt::Debug for Plumbing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plumbing").finish_non_exhaustive()
    }
}

/// Reads a JSON body, naming the API in the error.
pub fn json<T: serde::de::DeserializeOwned>(
    api: &'static str,
    body: &[u8],
) -> Result<T, CallError> {
    serde_json::from_slice(body).map_err(|e| CallError::Malformed {
        api,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_throttle_answer_pauses_the_accounts_bucket_for_every_caller() {
        let metrics = Arc::new(SelfMetrics::new().unwrap());
        let plumbing = Plumbing::new(Duration::from_secs(1), metrics).unwrap();
        // Two targets of one account get the same bucket.
        let a = plumbing.limiter("v", "Api", "account", "t1", 100.0);
        let b = plumbing.limiter("v", "Api", "account", "t2", 100.0);
        assert!(Arc::ptr_eq(&a, &b));
        let pause = |bk: &Bucket| {
            let p = bk.pause.lock().unwrap();
            (p.strikes, p.until.map(|u| u - tokio::time::Instant::now()))
        };
        a.answered(true);
        let (strikes, left) = pause(&b);
        assert_eq!(strikes, 1);
        let left = left.unwrap();
        assert!(left > Duration::from_millis(900) && left <= Duration::from_millis(1200));
        a.answered(true);
        a.answered(true);
        let (strikes, left) = pause(&b);
        assert_eq!(strikes, 3);
        assert!(
            left.unwrap() > Duration::from_millis(3500),
            "doubles: 1, 2, 4 s"
        );
        for _ in 0..10 {
            a.answered(true);
        }
        assert!(pause(&b).1.unwrap() <= THROTTLE_PAUSE_MAX.mul_f64(1.2));
        // Any other answer ends the run of strikes (the pause already set runs out).
        b.answered(false);
        assert_eq!(pause(&a).0, 0);
    }

    #[test]
    fn the_account_paces_at_the_lowest_rate_its_current_targets_ask() {
        let metrics = Arc::new(SelfMetrics::new().unwrap());
        let plumbing = Plumbing::new(Duration::from_secs(1), metrics).unwrap();
        let b = plumbing.limiter("v", "Api", "acct", "t1", 10.0);
        assert_eq!(b.qps(), 10.0);
        plumbing.limiter("v", "Api", "acct", "t2", 2.0);
        assert_eq!(b.qps(), 2.0, "the lowest of the targets wins");
        // A reload raises t2's qps: the account follows.
        plumbing.limiter("v", "Api", "acct", "t2", 8.0);
        assert_eq!(b.qps(), 8.0);
        // A reload removes t2: t1's rate again.
        plumbing.limiter("v", "Api", "acct", "t2", 1.0);
        plumbing.retain_targets(&["t1".to_string()].into_iter().collect());
        assert_eq!(b.qps(), 10.0);
        // Another account is its own bucket.
        let other = plumbing.limiter("v", "Api", "other", "t1", 3.0);
        assert_eq!((b.qps(), other.qps()), (10.0, 3.0));
    }

    #[test]
    fn http_429_is_a_throttle_whatever_the_body_says() {
        let plain = CallError::Http {
            api: "x",
            status: 429,
        };
        assert!(plain.is_throttle());
        let vendor = |throttled| CallError::Vendor {
            api: "x",
            code: "SomeLimit".into(),
            label: "other",
            message: String::new(),
            throttled,
        };
        assert!(!vendor(false).is_throttle());
        assert!(throttle_on_429(vendor(false), Some(429)).is_throttle());
        assert!(!throttle_on_429(vendor(false), Some(400)).is_throttle());
        assert!(throttle_on_429(vendor(true), Some(200)).is_throttle());
        let other = CallError::Http {
            api: "x",
            status: 502,
        };
        assert!(!throttle_on_429(other, Some(502)).is_throttle());
    }

    #[test]
    fn devices_map_known_names() {
        assert_eq!(Device::from_name("iOS"), Device::Ios);
        assert_eq!(Device::from_name("Android"), Device::Android);
        assert_eq!(Device::from_name("harmony"), Device::Other);
        assert_eq!(Device::from_name(""), Device::Other);
    }

    #[test]
    fn long_vendor_messages_are_cut() {
        let e = CallError::Vendor {
            api: "x",
            code: "c".into(),
            label: "other",
            message: "é".repeat(500),
            throttled: false,
        }
        .shortened();
        let CallError::Vendor { message, .. } = e else {
            unreachable!("still a vendor error")
        };
        assert!(message.len() <= MAX_MESSAGE + 3 && message.ends_with('…'));
    }

    #[test]
    fn midnight_in_zone() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap_or_default();
        let m = local_midnight(chrono_tz::Asia::Shanghai, d);
        assert_eq!(
            m.with_timezone(&Utc).to_rfc3339(),
            "2026-11-21T16:00:00+00:00"
        );
    }
}

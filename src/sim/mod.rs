//! Simulated vendor servers on loopback, for `demo`, `simulate`, the tests and the benchmarks.
//!
//! Each vendor's simulator checks signatures with its own code (not the client's), answers with
//! the vendor's envelope and codes, throttles at the documented QPS, pages and limits windows as
//! documented, and drives rooms from a seeded [`scenario::Scenario`] whose ground truth tests can
//! read. Faults can be switched on per API ([`Fault`]).

use std::any::Any;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use futures_util::future::BoxFuture;

use crate::lock::lock;

pub mod agora;
pub mod alibaba_artc;
pub mod livekit;
pub mod replay;
pub mod scenario;
pub mod talkcloud;
pub mod tencent_trtc;
pub mod ucloud_urtc;
pub mod volcengine_rtc;
pub mod zego;

/// A request as a simulator sees it.
#[derive(Debug, Clone)]
pub struct SimRequest {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Raw query string (still percent-encoded), without `?`.
    pub query: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl SimRequest {
    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// A simulator's answer.
#[derive(Debug, Clone)]
pub struct SimResponse {
    /// HTTP status.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
    /// Whitespace sent after the body (still valid JSON), generated as it is sent.
    pub pad: usize,
    /// Sent without a `Content-Length`, in chunks: the client learns the size only by reading.
    pub chunked: bool,
}

impl SimResponse {
    /// An answer with `body` as it is.
    pub fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        SimResponse {
            status,
            content_type,
            body,
            pad: 0,
            chunked: false,
        }
    }
    /// A JSON answer.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        SimResponse::new(status, "application/json", value.to_string().into_bytes())
    }
    /// A gateway error page, as a load balancer sends it.
    pub fn gateway(status: u16) -> Self {
        SimResponse::new(
            status,
            "text/html",
            format!("<html><body><h1>{status} Bad Gateway</h1></body></html>").into_bytes(),
        )
    }
    /// No answer at all: the server drops the connection (the reset fault).
    pub fn reset() -> Self {
        SimResponse::new(RESET, "text/plain", Vec::new())
    }
    /// Cuts the body short, for the malformed-body fault.
    pub fn truncated(mut self) -> Self {
        let keep = self.body.len() / 2;
        self.body.truncate(keep);
        self
    }
    /// Appends `bytes` of whitespace (still valid JSON), for the `pad_bytes` fault.
    pub fn padded(mut self, bytes: usize) -> Self {
        self.pad = self.pad.saturating_add(bytes);
        self
    }
    /// The answer with the body faults of `fault` applied: `malformed` (the body cut in half),
    /// `pad_bytes` after it, `chunked`.
    pub fn with_body_faults(self, fault: &Fault) -> Self {
        let mut r = if fault.malformed {
            self.truncated()
        } else {
            self
        };
        r.chunked |= fault.chunked;
        r.padded(fault.pad_bytes)
    }
}

/// Padding is sent in frames of this size.
const PAD_FRAME: usize = 64 << 10;

/// A [`SimResponse`] body on the wire: the body, then the padding frame by frame (never held
/// whole), with its exact length announced unless chunked.
struct SimBody {
    head: Option<Bytes>,
    pad: usize,
    spaces: Bytes,
    exact: bool,
}

impl SimBody {
    fn new(r: SimResponse) -> Self {
        SimBody {
            head: Some(Bytes::from(r.body)),
            pad: r.pad,
            spaces: Bytes::from(vec![b' '; r.pad.min(PAD_FRAME)]),
            exact: !r.chunked,
        }
    }
    fn remaining(&self) -> u64 {
        self.head.as_ref().map_or(0, |h| h.len() as u64) + self.pad as u64
    }
}

impl hyper::body::Body for SimBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(head) = this.head.take().filter(|h| !h.is_empty()) {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(head))));
        }
        if this.pad == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = this.pad.min(PAD_FRAME);
        this.pad -= n;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(this.spaces.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining() == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.exact {
            hyper::body::SizeHint::with_exact(self.remaining())
        } else {
            hyper::body::SizeHint::default()
        }
    }
}

/// The status that stands for "drop the connection" ([`SimResponse::reset`]).
const RESET: u16 = 0;

/// One simulated vendor.
pub trait Simulator: Send + Sync + 'static {
    /// The vendor's registry name.
    fn vendor(&self) -> &'static str;
    /// Answers one request.
    fn handle<'a>(&'a self, req: SimRequest) -> BoxFuture<'a, SimResponse>;
    /// A target entry (YAML mapping) that polls this simulator at `endpoint`.
    fn demo_target(&self, endpoint: &str) -> serde_yaml::Value;
    /// Human-readable keys and ids, for `simulate`.
    fn describe(&self) -> String;
    /// For tests: the concrete simulator (ground truth, faults, clock).
    fn as_any(&self) -> &dyn Any;
    /// Its fault switches, where it has them (a vendor's simulator has; the replay server of
    /// recorded answers has none).
    fn faults(&self) -> Option<&Faults> {
        None
    }
}

/// Faults to inject into one API's answers.
#[derive(Debug, Clone, Default)]
pub struct Fault {
    /// Added before answering.
    pub latency: Duration,
    /// Answer with this vendor error code.
    pub code: Option<String>,
    /// Answer with this HTTP status and an HTML body.
    pub http_status: Option<u16>,
    /// Cut the JSON body in half.
    pub malformed: bool,
    /// Send numeric codes as strings (e.g. UCloud `"RetCode": "0"`).
    pub code_as_string: bool,
    /// Leave out optional fields (UCloud: entries with only `RoomId` and `Num`, as the seed's
    /// example; no `TotalCount`).
    pub missing_fields: bool,
    /// Drop the connection without answering.
    pub reset: bool,
    /// A null where a list is documented, the declared total kept.
    pub null_list: bool,
    /// Pages after the first come back empty, the declared total kept.
    pub empty_later_pages: bool,
    /// An empty listing with a total of 0 (rows seen earlier the same day vanish; Talk-cloud:
    /// 4105, no data).
    pub lose_rows: bool,
    /// Whitespace appended to a valid answer, in bytes.
    pub pad_bytes: usize,
    /// The answer sent in chunks without a `Content-Length` (a large one cannot be refused
    /// before reading it).
    pub chunked: bool,
    /// The declared total (`TotalCount`, `Total`, `TotalUser`, `count`) larger than the rows
    /// the vendor sends: an anomaly, read from the rows (README, "Answers that disagree with themselves").
    pub total_larger: bool,
    /// The declared total smaller than the rows sent (but not 0 where rows are): an anomaly.
    pub total_smaller: bool,
    /// Rows repeated: the first page's rows sent again on later pages (or twice on one page
    /// where the API has one page): merged by identity, never summed.
    pub duplicate_rows: bool,
    /// The list left out altogether while its count says people are there: a failed request.
    pub absent_list: bool,
}

/// The key of [`Faults::set_all`] (no API has this name).
const EVERY_API: &str = "*";

/// Faults by API name.
#[derive(Debug, Default)]
pub struct Faults(Mutex<HashMap<String, Fault>>);

impl Faults {
    /// Sets the fault of one API (replacing any).
    pub fn set(&self, api: &str, fault: Fault) {
        lock(&self.0).insert(api.to_string(), fault);
    }
    /// Sets one fault for every API that has none of its own.
    pub fn set_all(&self, fault: Fault) {
        lock(&self.0).insert(EVERY_API.to_string(), fault);
    }
    /// Clears every fault.
    pub fn clear(&self) {
        lock(&self.0).clear();
    }
    /// The fault of one API (its own, else the one for every API, else none: the default).
    pub fn get(&self, api: &str) -> Fault {
        let faults = lock(&self.0);
        faults
            .get(api)
            .or_else(|| faults.get(EVERY_API))
            .cloned()
            .unwrap_or_default()
    }
}

/// The simulator's clock: live, or frozen at a Unix time (tests).
#[derive(Debug, Default)]
pub struct SimClock {
    frozen: Mutex<Option<i64>>,
    skew: Mutex<i64>,
}

impl SimClock {
    /// Unix seconds now, as the simulator sees it.
    pub fn now(&self) -> i64 {
        let frozen = *lock(&self.frozen);
        frozen.unwrap_or_else(|| chrono::Utc::now().timestamp()) + self.skew()
    }
    /// Freezes the scenario at `t`.
    pub fn freeze(&self, t: i64) {
        *lock(&self.frozen) = Some(t);
    }
    /// Lets time run again.
    pub fn thaw(&self) {
        *lock(&self.frozen) = None;
    }
    /// Shifts the simulator's clock against the real one (a vendor with a wrong clock).
    pub fn set_skew(&self, seconds: i64) {
        *lock(&self.skew) = seconds;
    }
    fn skew(&self) -> i64 {
        *lock(&self.skew)
    }
}

/// The vendor side's rate limit: a token bucket per (account, API) holding at most one
/// second's worth of requests (at least one), refilled continuously.
#[derive(Debug, Default)]
pub struct Throttle {
    buckets: Mutex<HashMap<(String, String), (f64, Instant)>>,
    refused: std::sync::atomic::AtomicU64,
}

impl Throttle {
    /// Takes a token; `false` means the vendor would answer with its throttle error.
    pub fn allow(&self, account: &str, api: &str, qps: f64) -> bool {
        let mut b = lock(&self.buckets);
        let now = Instant::now();
        let cap = qps.max(1.0);
        let entry = b
            .entry((account.to_string(), api.to_string()))
            .or_insert((cap, now));
        let refill = now.duration_since(entry.1).as_secs_f64() * qps;
        entry.0 = (entry.0 + refill).min(cap);
        entry.1 = now;
        if entry.0 >= 1.0 {
            entry.0 -= 1.0;
            true
        } else {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            false
        }
    }
    /// How many requests were refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A random key of `len` hex characters (demo and simulate credentials).
pub fn random_key(rng: &mut fastrand::Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(b"0123456789abcdef"[rng.usize(..16)]))
        .collect()
}

/// A running simulator server.
pub struct SimServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The simulator.
    pub sim: Arc<dyn Simulator>,
    /// Requests served.
    pub served: Arc<std::sync::atomic::AtomicU64>,
    stop: watch::Sender<bool>,
}

impl SimServer {
    /// Binds `addr` (use port 0 for any) and serves `sim` in the background.
    pub async fn start(sim: Arc<dyn Simulator>, addr: SocketAddr) -> std::io::Result<SimServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let s = sim.clone();
        let count = served.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(x) => x, Err(_) => continue },
                    _ = stopped.changed() => return,
                };
                let sim = s.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let sim = sim.clone();
                            let count = count.clone();
                            async move {
                                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                answer(sim.as_ref(), req).await
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(SimServer {
            addr,
            endpoint: format!("http://{addr}"),
            sim,
            served,
            stop,
        })
    }

    /// The concrete simulator, for tests.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.sim.as_any().downcast_ref::<T>()
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Answers one request; an `Err` makes hyper drop the connection without an answer (the
/// connection-reset fault).
async fn answer(
    sim: &dyn Simulator,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<SimBody>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let sreq = SimRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers,
        body,
    };
    let r = sim.handle(sreq).await;
    if r.status == RESET {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "fault: connection reset",
        ));
    }
    let status =
        hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = HeaderValue::from_static(r.content_type);
    let mut resp = Response::new(SimBody::new(r));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, content_type);
    Ok(resp)
}

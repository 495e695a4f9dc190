//! The HTTP side (hyper): `/metrics` serves the latest rendered bytes (gzip when asked), `/` a
//! landing page with every target's state, `/-/healthy`, and `/-/ready` once every target has
//! finished one poll. A task per connection; nothing here waits on a vendor.
//!
//! With `--web.config.file`, every request first passes the [`Guard`] (rate limit, headers,
//! basic auth), and when the file enables TLS every connection is a rustls handshake first
//! (HTTP/2 when ALPN picks it).
//!
//! What a client can hold, and for how long:
//! - `--web.max-connections` bounds the connections open at once, but only a connection with a
//!   request in flight keeps a newcomer out: when every slot is taken, the oldest idle one
//!   (handshake or request head still coming, keep-alive, HTTP/2 without a stream) is closed
//!   for the newcomer ([`Slots`]).
//! - A connection must send a whole request head within the header timeout: after it opens
//!   (the TLS handshake included, then again for the first request), and after each response
//!   (HTTP/1 keep-alive; an HTTP/2 connection with no stream open). Otherwise it is closed.
//! - HTTP/2 pings a connection with streams open; an unanswered ping closes it.
//! - A connection with requests in flight without a pause for the response timeout (a client
//!   that does not take its response) is closed, its slots freed.
//! - `--web.max-requests` bounds the scrapes of the telemetry path in flight (until the whole
//!   body is sent), after the web config's gate, as node_exporter does; over it, 503 at once.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, ALLOW, AUTHORIZATION, CONTENT_ENCODING,
    CONTENT_LENGTH, CONTENT_TYPE, VARY, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::board::Board;
use crate::web_config::{Gate, Guard};

mod slots;
pub use slots::{Busy, Check, Conn, Slot, Slots};

/// Default of `--web.max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Default of `--web.max-requests`, node_exporter's.
pub const DEFAULT_MAX_REQUESTS: usize = 40;

/// Default header timeout: how long a client may take to send a request head, counted from
/// the connection's start (and, over TLS, the whole handshake within it) or from the end of its
/// last response.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2: how often a connection with a stream open is pinged, and how long the answer may
/// take before the connection is closed.
const H2_PING_EVERY: Duration = Duration::from_secs(10);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an HTTP/2 connection closed for idleness (GOAWAY sent) may take to go; then it is
/// dropped.
const H2_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Default response timeout: how long a connection may have requests in flight without a
/// pause (a response its client does not take: a zero HTTP/2 window, a reader that stalls).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);

/// net/http's answer to plain HTTP on a TLS port.
const HTTP_ON_TLS_PORT: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Content type of the text exposition format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Errors binding a listen address.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address does not parse.
    #[error("--web.listen-address {0:?}: expected host:port, :port or [v6]:port")]
    Address(String),
    /// Binding failed (in use, not permitted, ...).
    #[error("--web.listen-address {addr}: cannot listen: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Parses a Prometheus-style listen address: `:10063` means every interface.
pub fn parse_listen(addr: &str) -> Result<SocketAddr, ServeError> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else if addr == "localhost" || addr.starts_with("localhost:") {
        addr.replacen("localhost", "127.0.0.1", 1)
    } else {
        addr.to_string()
    };
    full.parse()
        .map_err(|_| ServeError::Address(addr.to_string()))
}

/// Binds every listen address before anything else starts, so a busy port fails fast.
pub async fn bind_all(addrs: &[String]) -> Result<Vec<TcpListener>, ServeError> {
    let mut out = Vec::new();
    for a in addrs {
        let sa = parse_listen(a)?;
        // `:PORT` means every interface: IPv6 and IPv4 (dual stack) where the host has IPv6.
        let dual = a
            .starts_with(':')
            .then(|| SocketAddr::from(([0u16; 8], sa.port())));
        let bound = match dual {
            Some(v6) => match TcpListener::bind(v6).await {
                Ok(l) => Ok(l),
                Err(_) => TcpListener::bind(sa).await,
            },
            None => TcpListener::bind(sa).await,
        };
        out.push(bound.map_err(|source| ServeError::Bind {
            addr: a.clone(),
            source,
        })?);
    }
    Ok(out)
}

/// How to serve: where, what path, which web config, how many connections at once.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `--web.listen-address` values.
    pub listen: Vec<String>,
    /// `--web.telemetry-path`.
    pub telemetry_path: String,
    /// `--web.config.file`; `None`: plain HTTP, no authentication.
    pub web_config: Option<PathBuf>,
    /// `--web.max-connections`, over all listen addresses (at least 1).
    pub max_connections: usize,
    /// `--web.max-requests`: scrapes of the telemetry path in flight at once; 0: no limit.
    pub max_requests: usize,
    /// How long a client may take to send a request head (see [`DEFAULT_HEADER_TIMEOUT`]).
    pub header_timeout: Duration,
    /// How long a response may take to be taken (see [`DEFAULT_RESPONSE_TIMEOUT`]).
    pub response_timeout: Duration,
    /// `--web.enable-lifecycle`: `POST /-/reload` reloads the config.
    pub enable_lifecycle: bool,
}

impl ServeOptions {
    /// Plain HTTP on `listen` with the default limits and timeouts.
    pub fn new(listen: &[String], telemetry_path: &str) -> Self {
        ServeOptions {
            listen: listen.to_vec(),
            telemetry_path: telemetry_path.to_string(),
            web_config: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_requests: DEFAULT_MAX_REQUESTS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            enable_lifecycle: false,
        }
    }
}

/// `--web.max-requests`: scrapes in flight, each holding a permit until its body is sent.
pub struct RequestLimit {
    permits: Arc<Semaphore>,
    max: usize,
}

impl RequestLimit {
    /// At most `max` at once; `None` for 0 (no limit).
    pub fn new(max: usize) -> Option<Self> {
        (max > 0).then(|| RequestLimit {
            permits: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
        })
    }
}

/// A scrape's permit, carried from the handler to its response body.
#[derive(Clone)]
struct InFlight {
    _permit: Arc<OwnedSemaphorePermit>,
}

/// What the server needs to answer.
pub struct Site {
    /// Where polls publish.
    pub board: Arc<Board>,
    /// `--web.telemetry-path`.
    pub telemetry_path: String,
    /// `--web.config.file`, checked at startup; `None`: plain HTTP, no authentication.
    pub web: Option<Arc<Guard>>,
    /// `--web.max-connections`: one slot per open connection, shared by every listener.
    pub connections: Arc<Slots>,
    /// `--web.max-requests`; `None`: no limit.
    pub scrapes: Option<RequestLimit>,
    /// See [`ServeOptions::header_timeout`].
    pub header_timeout: Duration,
    /// See [`ServeOptions::response_timeout`].
    pub response_timeout: Duration,
    /// `POST /-/reload`, with `--web.enable-lifecycle`; `None`: 403 as Prometheus answers.
    pub reload: Option<Reloader>,
}

/// Reloads the config; an error says why the running config stays.
pub type Reloader =
    Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Serves `listener` until `shutdown` turns true. Each connection accepted is served once it
/// has a slot of `site.connections` (see [`Slots::admit`]): beyond the limit, it waits while
/// admitted ones keep being served.
pub async fn serve(listener: TcpListener, site: Arc<Site>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, _peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = tokio::select! {
            s = site.connections.admit() => s,
            _ = shutdown.changed() => return,
        };
        let site = site.clone();
        tokio::spawn(async move {
            let conn = slot.conn();
            let served = async {
                match site.web.clone().filter(|w| w.tls()) {
                    Some(web) => serve_tls(stream, web, site, conn.clone()).await,
                    None => serve_http(stream, site, false, conn.clone()).await,
                }
            };
            tokio::select! {
                () = served => {}
                () = conn.closing() => tracing::debug!("idle connection closed for a new one"),
            }
            drop(slot);
        });
    }
}

/// One TLS connection: the file as it is now decides the TLS settings of this handshake.
async fn serve_tls(stream: TcpStream, web: Arc<Guard>, site: Arc<Site>, conn: Arc<Conn>) {
    let deadline = tokio::time::Instant::now() + site.header_timeout;
    // A TLS connection starts with a handshake record (0x16); a letter is plain HTTP, answered
    // with 400 as net/http does.
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return,
    }
    if first[0] != 0x16 {
        if first[0].is_ascii_alphabetic() {
            let mut stream = stream;
            let _ = tokio::time::timeout_at(deadline, stream.write_all(HTTP_ON_TLS_PORT)).await;
            let _ = stream.shutdown().await;
        }
        return;
    }
    let acceptor =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match tokio::time::timeout_at(deadline, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let config = match web.server_config().await {
        Ok(c) => c,
        // Logged once per change of the file, where it is read.
        Err(_) => return,
    };
    let tls = match tokio::time::timeout_at(deadline, start.into_stream(config)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    serve_http(tls, site, h2, conn).await;
}

/// A response body, holding what must live until it is sent: the connection's request in
/// flight and, for a scrape, its `--web.max-requests` permit.
type Body = BoxBody<Bytes, Infallible>;

/// HTTP/1.1 (or HTTP/2 when ALPN chose it) on one connection.
async fn serve_http<I>(io: I, site: Arc<Site>, h2: bool, conn: Arc<Conn>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (header_timeout, response_timeout) = (site.header_timeout, site.response_timeout);
    conn.touch();
    let requests = conn.clone();
    let svc = hyper::service::service_fn(move |req| {
        // Called on the connection's task as the request head is read: in flight from now.
        let busy = requests.busy();
        let site = site.clone();
        async move { Ok::<_, Infallible>(holding(respond(&site, req).await, busy)) }
    });
    let io = TokioIo::new(io);
    let result = if h2 {
        let c = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_PING_EVERY)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .serve_connection(io, svc);
        watch(c, &conn, Some(header_timeout), response_timeout).await
    } else {
        // hyper's header timeout runs from the start of every request head it waits for: the
        // first, and the next one on a keep-alive connection (its idle timeout).
        let c = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(io, svc);
        watch(c, &conn, None, response_timeout).await
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Serves a connection until it ends, or until it has had no request in flight for `idle`
/// (HTTP/2, which hyper gives no idle timeout: GOAWAY, then dropped after [`H2_CLOSE_GRACE`] at
/// most), or requests in flight without a pause for `response` (dropped: its client does not
/// take what it asked for, and would hold its slots for ever).
async fn watch<C>(
    conn: C,
    state: &Conn,
    idle: Option<Duration>,
    response: Duration,
) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    tokio::pin!(conn);
    state.watch_idle(idle.is_some());
    loop {
        match state.check(idle, response, tokio::time::Instant::now()) {
            Check::Until(at) => tokio::select! {
                r = conn.as_mut() => return r,
                () = tokio::time::sleep_until(at) => {}
                () = state.turned() => {}
            },
            Check::Idle => {
                conn.as_mut().graceful_shutdown();
                return tokio::time::timeout(H2_CLOSE_GRACE, conn)
                    .await
                    .unwrap_or(Ok(()));
            }
            Check::Stuck => {
                tracing::debug!(
                    seconds = response.as_secs_f64(),
                    "a response not taken in time; connection closed"
                );
                return Ok(());
            }
        }
    }
}

/// `r` with a body that holds `busy` and the scrape's permit, if any, until it is sent.
fn holding(r: Response<Full<Bytes>>, busy: Busy) -> Response<Body> {
    let (mut parts, body) = r.into_parts();
    let permit = parts.extensions.remove::<InFlight>();
    // The mapped body no longer tells its length: say it, or HTTP/1 would be chunked.
    if let Some(len) = body.size_hint().exact() {
        parts.headers.entry(CONTENT_LENGTH).or_insert(len.into());
    }
    let body = body
        .map_frame(move |frame| {
            let _held = (&busy, &permit);
            frame
        })
        .boxed();
    Response::from_parts(parts, body)
}

/// The web config's gate, then the handler.
async fn respond(site: &Site, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(web) = &site.web else {
        return handle(site, req).await;
    };
    let (mut r, headers) = match web.admit(req.headers().get(AUTHORIZATION)).await {
        Gate::Pass(headers) => (handle(site, req).await, headers),
        Gate::Unauthorized(headers) => {
            let mut r = refusal(StatusCode::UNAUTHORIZED);
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
            (r, headers)
        }
        Gate::TooManyRequests => return refusal(StatusCode::TOO_MANY_REQUESTS),
        Gate::ServerError => return refusal(StatusCode::INTERNAL_SERVER_ERROR),
    };
    for (name, value) in headers.iter() {
        r.headers_mut().insert(name.clone(), value.clone());
    }
    r
}

/// A refusal as Go's `http.Error` writes it: the status text and `nosniff`.
fn refusal(status: StatusCode) -> Response<Full<Bytes>> {
    refusal_with(
        status,
        format!("{}\n", status.canonical_reason().unwrap_or("")),
    )
}

/// Go's `http.Error` with its own message.
fn refusal_with(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let mut r = text(status, message);
    r.headers_mut()
        .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Whether `Accept-Encoding` allows gzip: explicit `gzip` (or its alias `x-gzip`) entries
/// decide, else `*`; a q-value of 0 refuses. Names and parameter names are case-insensitive.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let (mut gzip, mut any) = (None::<bool>, None);
    for item in headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let q = parts
            .filter_map(|p| p.split_once('='))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .find_map(|(_, q)| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            // Several gzip entries: the most favourable one counts.
            gzip = Some(gzip.unwrap_or(false) || q > 0.0);
        } else if name == "*" {
            any = Some(q > 0.0);
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// `/-/reload` as Prometheus answers it: POST or PUT reload (200, or 500 with the errors);
/// other methods 405; without `--web.enable-lifecycle`, POST and PUT get 403.
async fn lifecycle_reload(site: &Site, method: &Method) -> Response<Full<Bytes>> {
    if method != Method::POST && method != Method::PUT {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "Only POST or PUT requests allowed",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST, PUT"));
        return r;
    }
    let Some(reload) = &site.reload else {
        return text(StatusCode::FORBIDDEN, "Lifecycle API is not enabled.");
    };
    match reload().await {
        Ok(()) => text(StatusCode::OK, ""),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        ),
    }
}

async fn handle(site: &Site, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/-/reload" {
        return lifecycle_reload(site, req.method()).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET\n",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = req.uri().path();
    if path == site.telemetry_path {
        let permit = match &site.scrapes {
            None => None,
            Some(limit) => match limit.permits.clone().try_acquire_owned() {
                Ok(p) => Some(InFlight {
                    _permit: Arc::new(p),
                }),
                // promhttp's answer (Go's http.Error).
                Err(_) => {
                    return refusal_with(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "Limit of concurrent requests reached ({}), try again later.\n",
                            limit.max
                        ),
                    )
                }
            },
        };
        let snap = site.board.snapshot();
        let gzip = accepts_gzip(req.headers()) && !snap.gzip.is_empty();
        let body = if gzip {
            snap.gzip.clone()
        } else {
            snap.text.clone()
        };
        let mut r = Response::new(Full::new(body));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
        h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        if gzip {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if let Some(p) = permit {
            r.extensions_mut().insert(p);
        }
        return r;
    }
    match path {
        "/" => landing(site),
        "/-/healthy" => text(StatusCode::OK, "Healthy\n"),
        "/-/ready" => {
            let snap = site.board.snapshot();
            let done = snap.targets.values().filter(|t| t.polled).count();
            if snap.ready() {
                text(StatusCode::OK, "Ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "Not ready: {done} of {} targets have finished a poll\n",
                        snap.targets.len()
                    ),
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn html_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// A span of seconds for people: `42s`, `5m`, `1h30m`, `2d3h`.
fn age(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=3599 => format!("{}m{}", s / 60, unit_or_empty(s % 60, "s")),
        3600..=86_399 => format!("{}h{}", s / 3600, unit_or_empty(s % 3600 / 60, "m")),
        _ => format!("{}d{}", s / 86_400, unit_or_empty(s % 86_400 / 3600, "h")),
    }
}

fn unit_or_empty(n: u64, unit: &str) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("{n}{unit}")
    }
}

/// The state column of a target: its class and text. A partial poll (some rooms failed, the
/// target up) says how many rooms fail, so it does not read as plain "up".
fn state_cell(polled: bool, up: bool, rooms_failed: u64) -> (&'static str, String) {
    match (polled, up, rooms_failed) {
        (false, _, _) => ("", "pending".into()),
        (true, true, 0) => ("up", "up".into()),
        (true, true, 1) => ("partial", "up, 1 room failing".into()),
        (true, true, n) => ("partial", format!("up, {n} rooms failing")),
        (true, false, _) => ("down", "down".into()),
    }
}

fn landing(site: &Site) -> Response<Full<Bytes>> {
    let snap = site.board.snapshot();
    let mut h = String::with_capacity(2048);
    h.push_str("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>rtc-exporter</title>");
    h.push_str("<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em .8em;text-align:left}.down{color:#b00}.up{color:#070}.partial{color:#a60}</style></head><body>");
    let _ = write!(
        h,
        "<h1>rtc-exporter</h1><p>version {} ({})</p><ul><li><a href=\"",
        crate::VERSION,
        crate::REVISION
    );
    html_escape(&site.telemetry_path, &mut h);
    h.push_str("\">Metrics</a></li><li><a href=\"/-/healthy\">Health</a></li><li><a href=\"/-/ready\">Readiness</a></li></ul>");
    h.push_str("<h2>Targets</h2><table><tr><th>target</th><th>vendor</th><th>state</th><th>rooms</th><th>users</th><th>last success</th><th>interval</th><th>next poll</th><th>poll duration</th><th>failures in a row</th><th>last error</th></tr>");
    let now = site.board.now().timestamp_millis() as f64 / 1000.0;
    for t in snap.targets.values() {
        let (class, state) = state_cell(t.polled, t.up, t.rooms_failed);
        h.push_str("<tr><td>");
        html_escape(&t.name, &mut h);
        let _ = write!(
            h,
            "</td><td>{}</td><td class=\"{class}\">{state}</td>",
            t.vendor
        );
        match &t.data {
            Some(d) => {
                let _ = write!(h, "<td>{}</td><td>{}</td>", d.rooms_active, d.users);
            }
            None => h.push_str("<td>-</td><td>-</td>"),
        }
        let _ = write!(
            h,
            "<td>{}</td><td>{}</td><td>{}</td>",
            t.last_success
                .map_or("never".to_string(), |at| format!("{} ago", age(now - at))),
            age(t.interval_seconds),
            t.next_poll.map_or("-".to_string(), |at| if at >= now {
                format!("in {}", age(at - now))
            } else {
                format!("{} overdue", age(now - at))
            }),
        );
        match t.last_duration {
            Some(d) => {
                let _ = write!(h, "<td>{d:.3} s</td>");
            }
            None => h.push_str("<td>-</td>"),
        }
        let _ = write!(h, "<td>{}</td><td>", t.consecutive_failures);
        html_escape(t.last_error.as_deref().unwrap_or(""), &mut h);
        h.push_str("</td></tr>");
    }
    h.push_str("</table></body></html>\n");
    let mut r = Response::new(Full::new(Bytes::from(h)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(age(0.0), "0s");
        assert_eq!(age(-3.0), "0s");
        assert_eq!(age(59.6), "60s");
        assert_eq!(age(119.0), "119s");
        assert_eq!(age(120.0), "2m");
        assert_eq!(age(330.0), "5m30s");
        assert_eq!(age(3600.0), "1h");
        assert_eq!(age(5400.0), "1h30m");
        assert_eq!(age(86_400.0 * 2.0 + 3.0 * 3600.0), "2d3h");
    }

    #[test]
    fn a_partially_failing_target_is_up_with_its_failing_rooms() {
        assert_eq!(state_cell(false, false, 0), ("", "pending".to_string()));
        assert_eq!(state_cell(true, true, 0), ("up", "up".to_string()));
        assert_eq!(
            state_cell(true, true, 1),
            ("partial", "up, 1 room failing".to_string())
        );
        assert_eq!(
            state_cell(true, true, 3),
            ("partial", "up, 3 rooms failing".to_string())
        );
        // Down: every room the day knows failed; the count adds nothing.
        assert_eq!(state_cell(true, false, 4), ("down", "down".to_string()));
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen(":10063").ok(), "0.0.0.0:10063".parse().ok());
        assert_eq!(parse_listen("127.0.0.1:9").ok(), "127.0.0.1:9".parse().ok());
        assert_eq!(parse_listen("[::1]:9").ok(), "[::1]:9".parse().ok());
        assert!(parse_listen("nonsense").is_err());
        assert!(parse_listen(":99999").is_err());
    }

    fn gzip(values: &[&str]) -> bool {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        accepts_gzip(&h)
    }

    #[test]
    fn accept_encoding() {
        assert!(!gzip(&[]));
        assert!(gzip(&["gzip"]));
        assert!(gzip(&["GZIP, deflate"]));
        assert!(gzip(&["deflate", "gzip;q=0.5"]));
        assert!(!gzip(&["gzip;q=0"]));
        assert!(!gzip(&["gzip;Q=0"]), "parameter names are case-insensitive");
        assert!(!gzip(&["gzip; Q = 0"]));
        assert!(!gzip(&["gzip;q=0.000"]));
        assert!(gzip(&["x-gzip"]), "x-gzip is gzip");
        assert!(gzip(&["X-GZIP;q=1"]));
        assert!(!gzip(&["x-gzip;q=0"]));
        assert!(!gzip(&["x-gzip;q=0, gzip;Q=0"]));
        assert!(gzip(&["*"]));
        assert!(!gzip(&["*;q=0"]));
        assert!(
            !gzip(&["gzip;q=0, *"]),
            "an explicit gzip entry wins over *"
        );
        assert!(gzip(&["*;q=0, gzip"]));
        assert!(!gzip(&["deflate, br"]));
        assert!(!gzip(&["identity"]));
    }
}

//! `--web.config.file`: the exporter-toolkit web configuration (TLS, basic auth, extra response
//! headers, a rate limit), read strictly and re-read when it changes.
//!
//! The file format and its behaviour follow prometheus/exporter-toolkit, so one file serves every
//! exporter of a fleet:
//!
//! - at startup, in this order: YAML (unknown or duplicate keys are errors) and headers, the
//!   bcrypt hashes, then the TLS settings (cert, key, pair, client CA, client auth type), then
//!   what rustls cannot do (TLS 1.0/1.1, CBC and static-RSA ciphers, P-521), then the HTTP/2
//!   cipher check. Whether TLS is on, HTTP/2 and the rate limiter are fixed at startup;
//! - every TLS handshake re-reads the file and the cert, key and CA files it names (a failure
//!   fails the handshake); every request re-reads it for the headers and users (a failure is a
//!   500). Both reuse the last result while the files' modification time and length are
//!   unchanged;
//! - per request: file (500), rate limit (429), configured headers, basic auth (401).
//!
//! Key material and password hashes are secrets: never in a log line, an error or `Debug`.

mod auth;
mod tls;

use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use hyper::header::{HeaderName, HeaderValue};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use self::auth::{Auth, Users};
use self::tls::{RawTls, TlsSection};

/// An error in the web config file: the file, then the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct WebConfigError {
    /// The web config file.
    pub path: PathBuf,
    /// The key (`tls_server_config.cert_file`) and the problem; never a secret value.
    pub message: String,
}

impl WebConfigError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        WebConfigError {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

use crate::fields::redact_values;
pub(crate) use crate::fields::Secret;

/// A secret of the web config file (an inline private key, a password hash), as written: only
/// a string (exporter-toolkit reads no `{env:}` or `{file:}` forms there), and a value of the
/// wrong type is refused without echoing it.
pub(crate) struct Inline(pub(crate) Secret);

impl<'de> Deserialize<'de> for Inline {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        fn refused<E: de::Error>() -> E {
            E::custom("expected a string (the value is not shown: it may be a secret)")
        }
        impl Visitor<'_> for V {
            type Value = Inline;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Inline, E> {
                Ok(Inline(Secret::new(v)))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Inline, E> {
                Err(refused())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Inline, E> {
                Err(refused())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Inline, E> {
                Err(refused())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Inline, E> {
                Err(refused())
            }
        }
        d.deserialize_any(V)
    }
}

/// A YAML mapping in file order (duplicate keys are refused earlier, when the YAML is read).
struct Ordered<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Visit<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Ordered(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<Ordered<Inline>>,
    rate_limit: Option<RawRateLimit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<Ordered<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    burst: Option<i64>,
    interval: Option<GoDuration>,
}

/// The headers exporter-toolkit lets a file add to every response, with their allowed values
/// (`None`: any value). Names are exact-case.
const HEADERS: &[(&str, Option<&[&str]>)] = &[
    ("Strict-Transport-Security", None),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-XSS-Protection", None),
    ("Content-Security-Policy", None),
];

/// `rate_limit`: one token bucket for the whole server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimit {
    /// One token per `interval`; `None` (0 or negative): no limit.
    pub(crate) interval: Option<Duration>,
    /// Bucket size; 0 or less refuses every request when `interval` is set.
    pub(crate) burst: i64,
}

/// One reading of the file: YAML parsed strictly, headers checked, relative paths resolved
/// against the file's directory. Hashes are checked at startup only, as exporter-toolkit does.
#[derive(Debug)]
pub(crate) struct WebConfig {
    pub(crate) tls: TlsSection,
    pub(crate) http2: bool,
    pub(crate) headers: Arc<[(HeaderName, HeaderValue)]>,
    pub(crate) users: Users,
    pub(crate) rate_limit: RateLimit,
}

impl WebConfig {
    /// Reads and parses `path`.
    pub(crate) fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| WebConfigError::new(path, format!("cannot read: {e}")))?;
        WebConfig::parse(&text, path)
    }

    /// Parses the text of `path` (relative paths in it resolve against `path`'s directory).
    pub(crate) fn parse(text: &str, path: &Path) -> Result<WebConfig, WebConfigError> {
        let err = |m: String| WebConfigError::new(path, m);
        // Through `Value` first: it refuses duplicate keys at any depth and tells an empty file
        // (valid: nothing configured) from a scalar (not a web config).
        let value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| err(redact_values(&e.to_string())))?;
        let raw: RawFile = match value {
            serde_yaml::Value::Null => RawFile {
                tls_server_config: None,
                http_server_config: None,
                basic_auth_users: None,
                rate_limit: None,
            },
            serde_yaml::Value::Mapping(_) => {
                serde_path_to_error::deserialize(value).map_err(|e| {
                    let key = e.path().to_string();
                    let msg = redact_values(&e.into_inner().to_string());
                    if key == "." {
                        err(msg)
                    } else {
                        err(format!("{key}: {msg}"))
                    }
                })?
            }
            _ => {
                return Err(err(
                    "expected a mapping of tls_server_config, http_server_config, \
                     basic_auth_users and rate_limit"
                        .into(),
                ))
            }
        };
        let dir = path.parent().unwrap_or(Path::new(""));
        let tls = TlsSection::from_raw(raw.tls_server_config, dir);
        let http = raw.http_server_config;
        let http2 = http.as_ref().and_then(|h| h.http2).unwrap_or(true);
        let mut headers = Vec::new();
        for (name, value) in http
            .and_then(|h| h.headers)
            .map(|o| o.0)
            .unwrap_or_default()
        {
            headers.push(header(&name, &value).map_err(err)?);
        }
        let users = Users::new(
            raw.basic_auth_users
                .map(|o| o.0.into_iter().map(|(u, Inline(s))| (u, s)).collect())
                .unwrap_or_default(),
        );
        let rate_limit = match raw.rate_limit {
            None => RateLimit {
                interval: None,
                burst: 0,
            },
            Some(r) => RateLimit {
                interval: r
                    .interval
                    .and_then(|d| u64::try_from(d.0).ok())
                    .filter(|ns| *ns > 0)
                    .map(Duration::from_nanos),
                burst: r.burst.unwrap_or(0),
            },
        };
        Ok(WebConfig {
            tls,
            http2,
            headers: headers.into(),
            users,
            rate_limit,
        })
    }
}

/// Checks one configured header as exporter-toolkit does (exact-case name from [`HEADERS`],
/// enumerated values), and that it is a valid HTTP header value.
fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let Some((_, allowed)) = HEADERS.iter().find(|(n, _)| *n == name) else {
        return Err(format!(
            "http_server_config.headers: HTTP header {name:?} can not be configured"
        ));
    };
    if let Some(allowed) = allowed {
        if !allowed.contains(&value) {
            let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
            return Err(format!(
                "http_server_config.headers: invalid value for {name}. Expected one of: [{}], but got: {value:?}",
                list.join(" ")
            ));
        }
    }
    let v = HeaderValue::from_str(value).map_err(|_| {
        format!("http_server_config.headers: {name}: not a valid HTTP header value")
    })?;
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("http_server_config.headers: {name:?}: not a header name"))?;
    Ok((n, v))
}

/// A Go `time.Duration` as YAML gives it: a string in Go syntax or an integer of nanoseconds.
#[derive(Debug, Clone, Copy)]
struct GoDuration(i64);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Go duration such as 1s or 500ms")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<GoDuration, E> {
                parse_go_duration(s).map(GoDuration).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<GoDuration, E> {
                Ok(GoDuration(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<GoDuration, E> {
                i64::try_from(n)
                    .map(GoDuration)
                    .map_err(|_| E::custom("duration out of range"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Go's `time.ParseDuration`, in nanoseconds: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` with units `ns`,
/// `us` (`µs`, `μs`), `ms`, `s`, `m`, `h`; `0` needs no unit. Errors use Go's wording.
pub(crate) fn parse_go_duration(orig: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {orig:?}");
    let mut s = orig;
    let mut neg = false;
    if let Some(rest) = s.strip_prefix('-') {
        neg = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int: u128 = if int_len == 0 {
            0
        } else {
            s[..int_len].parse().map_err(|_| invalid())?
        };
        s = &s[int_len..];
        let mut frac = "";
        if let Some(rest) = s.strip_prefix('.') {
            let n = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac = &rest[..n];
            s = &rest[n..];
        }
        if int_len == 0 && frac.is_empty() {
            return Err(invalid());
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {orig:?}"));
        }
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {orig:?}")),
        };
        let mut v = int.checked_mul(scale).ok_or_else(invalid)?;
        // The fraction: as many digits as matter at this unit (Go stops at overflow).
        let mut frac_scale = scale;
        for d in frac.bytes() {
            frac_scale /= 10;
            if frac_scale == 0 {
                break;
            }
            v += u128::from(d - b'0') * frac_scale;
        }
        total = total.checked_add(v).ok_or_else(invalid)?;
        if total > 1 << 63 {
            return Err(invalid());
        }
    }
    if neg {
        i64::try_from(-(total as i128)).map_err(|_| invalid())
    } else {
        i64::try_from(total).map_err(|_| invalid())
    }
}

/// What a file looked like when it was read: modification time and length, `None` if it could
/// not be examined. A change of either means "read it again".
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The rate limiter, fixed at startup.
enum Limiter {
    /// `burst` 0 with an interval: every request is refused.
    Closed,
    Bucket(governor::DefaultDirectRateLimiter),
}

impl Limiter {
    fn new(r: RateLimit) -> Option<Limiter> {
        let interval = r.interval?;
        let quota = governor::Quota::with_period(interval)?;
        let burst = u32::try_from(r.burst.max(0)).unwrap_or(u32::MAX);
        Some(match NonZeroU32::new(burst) {
            None => Limiter::Closed,
            Some(b) => Limiter::Bucket(governor::RateLimiter::direct(quota.allow_burst(b))),
        })
    }

    fn allow(&self) -> bool {
        match self {
            Limiter::Closed => false,
            Limiter::Bucket(l) => l.check().is_ok(),
        }
    }
}

/// The answer to one request before it reaches a handler.
pub(crate) enum Gate {
    /// Go on, and add these headers to the response.
    Pass(Arc<[(HeaderName, HeaderValue)]>),
    /// 401 with `WWW-Authenticate: Basic` and these headers.
    Unauthorized(Arc<[(HeaderName, HeaderValue)]>),
    /// 429: the rate limit (no configured headers, as exporter-toolkit does).
    TooManyRequests,
    /// 500: the file cannot be read or parsed now.
    ServerError,
}

/// Summary of a checked web config, for `--config.check` and the startup log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// TLS is served.
    pub tls: bool,
    /// HTTP/2 is offered (over TLS only).
    pub http2: bool,
    /// Number of basic-auth users (0: no authentication).
    pub users: usize,
    /// Number of configured response headers.
    pub headers: usize,
    /// A rate limit is configured.
    pub rate_limited: bool,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TLS {}, HTTP/2 {}, {} basic-auth user(s), {} header(s), rate limit {}",
            if self.tls { "on" } else { "off" },
            if self.tls && self.http2 { "on" } else { "off" },
            self.users,
            self.headers,
            if self.rate_limited { "on" } else { "off" }
        )
    }
}

type Loaded<T> = Result<Arc<T>, WebConfigError>;

#[derive(Default)]
struct State {
    /// The last reading of the file, by its stamp.
    parsed: Option<(Stamp, Loaded<WebConfig>)>,
    /// The last TLS config, by the stamps of the file and of the files it names.
    tls: Option<(Vec<Stamp>, Loaded<rustls::ServerConfig>)>,
}

/// The web config in force: fixed startup decisions (TLS on or off, HTTP/2, the rate limiter)
/// plus the file, re-read when it changes, for every handshake and request.
pub struct Guard {
    path: PathBuf,
    summary: Summary,
    alpn: Vec<Vec<u8>>,
    limiter: Option<Limiter>,
    auth: Auth,
    state: Mutex<State>,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("path", &self.path)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// exporter-toolkit's `Validate`: the file, its hashes and its TLS settings, without the
/// serve-time HTTP/2 cipher check. `--config.check` uses [`Guard::start`], which adds it.
pub fn validate(path: &Path) -> Result<Summary, WebConfigError> {
    let (config, built) = load_and_build(path, &[])?;
    Ok(summary(&config, built.is_some()))
}

fn summary(config: &WebConfig, tls: bool) -> Summary {
    Summary {
        tls,
        http2: config.http2,
        users: config.users.len(),
        headers: config.headers.len(),
        rate_limited: config.rate_limit.interval.is_some(),
    }
}

/// The startup checks, in exporter-toolkit's order; the TLS config when TLS is on.
fn load_and_build(
    path: &Path,
    alpn: &[Vec<u8>],
) -> Result<(WebConfig, Option<tls::Built>), WebConfigError> {
    let config = WebConfig::load(path)?;
    config
        .users
        .check_hashes()
        .map_err(|m| WebConfigError::new(path, m))?;
    let built = tls::build(&config.tls, alpn).map_err(|m| WebConfigError::new(path, m))?;
    Ok((config, built))
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Guard {
    /// Reads and checks `path` as the server starts: everything [`validate`] checks, plus
    /// net/http's HTTP/2 cipher check when HTTP/2 is on over TLS. Logs what rustls narrows.
    pub fn start(path: &Path) -> Result<Guard, WebConfigError> {
        let first = stamp(path);
        // ALPN is decided by the file as it is now; the check below needs the parsed file, so
        // parse once without ALPN, then set it on the built config.
        let (config, built) = load_and_build(path, &[])?;
        let tls_on = built.is_some();
        let http2 = tls_on && config.http2;
        if http2 {
            tls::http2_cipher_check(&config.tls).map_err(|m| WebConfigError::new(path, m))?;
        }
        let alpn: Vec<Vec<u8>> = if http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let summary = summary(&config, tls_on);
        let limiter = Limiter::new(config.rate_limit);
        let mut state = State::default();
        if let Some(built) = built {
            for w in &built.warnings {
                tracing::warn!(file = %path.display(), "web config: {w}");
            }
            let mut server = built.config;
            server.alpn_protocols = alpn.clone();
            let mut stamps = vec![first];
            stamps.extend(config.tls.files().iter().map(|p| stamp(p)));
            state.tls = Some((stamps, Ok(Arc::new(server))));
        }
        state.parsed = Some((first, Ok(Arc::new(config))));
        tracing::info!(file = %path.display(), "web config: {summary}");
        Ok(Guard {
            path: path.to_path_buf(),
            summary,
            alpn,
            limiter,
            auth: Auth::new(),
            state: Mutex::new(state),
        })
    }

    /// What the file set up at startup.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Whether connections are TLS (fixed at startup).
    pub fn tls(&self) -> bool {
        self.summary.tls
    }

    /// The file as it is now (re-read if its stamp changed); blocking.
    fn current(&self, state: &mut State) -> Result<Arc<WebConfig>, WebConfigError> {
        let now = stamp(&self.path);
        if let Some((s, r)) = &state.parsed {
            if *s == now {
                return r.clone();
            }
        }
        let r = WebConfig::load(&self.path).map(Arc::new);
        match &r {
            Ok(_) => tracing::info!(file = %self.path.display(), "web config re-read"),
            Err(e) => tracing::error!(error = %e, "web config: cannot use the changed file"),
        }
        state.parsed = Some((now, r.clone()));
        r
    }

    fn server_config_blocking(&self) -> Result<Arc<rustls::ServerConfig>, WebConfigError> {
        let mut state = lock(&self.state);
        let config = self.current(&mut state)?;
        let mut stamps = vec![stamp(&self.path)];
        stamps.extend(config.tls.files().iter().map(|p| stamp(p)));
        if let Some((s, r)) = &state.tls {
            if *s == stamps {
                return r.clone();
            }
        }
        let r = match tls::build(&config.tls, &self.alpn) {
            Ok(Some(built)) => {
                for w in &built.warnings {
                    tracing::warn!(file = %self.path.display(), "web config: {w}");
                }
                tracing::info!(file = %self.path.display(), "web config: TLS settings reloaded");
                Ok(Arc::new(built.config))
            }
            Ok(None) => Err(WebConfigError::new(
                &self.path,
                "tls_server_config: TLS config is not present (TLS was on at startup; restart to \
                 serve plain HTTP)",
            )),
            Err(m) => Err(WebConfigError::new(&self.path, m)),
        };
        if let Err(e) = &r {
            tracing::error!(error = %e, "web config: TLS handshakes fail until the file is fixed");
        }
        state.tls = Some((stamps, r.clone()));
        r
    }

    /// The TLS config for one handshake: the file and the files it names as they are now.
    pub(crate) async fn server_config(
        self: &Arc<Self>,
    ) -> Result<Arc<rustls::ServerConfig>, WebConfigError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.server_config_blocking())
            .await
            .unwrap_or_else(|e| {
                Err(WebConfigError::new(
                    &self.path,
                    format!("reading the file failed: {e}"),
                ))
            })
    }

    /// Decides whether one request may proceed: the file (500), the rate limit (429), the
    /// headers, basic auth (401).
    pub(crate) async fn admit(self: &Arc<Self>, authorization: Option<&HeaderValue>) -> Gate {
        let me = self.clone();
        let config = tokio::task::spawn_blocking(move || {
            let mut state = lock(&me.state);
            me.current(&mut state)
        })
        .await;
        let Ok(Ok(config)) = config else {
            return Gate::ServerError;
        };
        if let Some(l) = &self.limiter {
            if !l.allow() {
                return Gate::TooManyRequests;
            }
        }
        let headers = config.headers.clone();
        if config.users.is_empty() || self.auth.check(&config.users, authorization).await {
            Gate::Pass(headers)
        } else {
            Gate::Unauthorized(headers)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, String> {
        WebConfig::parse(text, Path::new("/etc/web.yml")).map_err(|e| e.message)
    }

    #[test]
    fn go_durations() {
        let ok = [
            ("0", 0),
            ("1s", 1_000_000_000),
            ("-1s", -1_000_000_000),
            ("+5ms", 5_000_000),
            ("1.5s", 1_500_000_000),
            (".5s", 500_000_000),
            ("1h2m3s", 3_723_000_000_000),
            ("10us", 10_000),
            ("10µs", 10_000),
            ("10μs", 10_000),
            ("3ns", 3),
            ("1.000000001s", 1_000_000_001),
        ];
        for (s, ns) in ok {
            assert_eq!(parse_go_duration(s), Ok(ns), "{s}");
        }
        assert_eq!(
            parse_go_duration("1d").unwrap_err(),
            "time: unknown unit \"d\" in duration \"1d\""
        );
        assert_eq!(
            parse_go_duration("10").unwrap_err(),
            "time: missing unit in duration \"10\""
        );
        for bad in ["", "s", ".s", "-", "1s2", "9999999999999999999h", "x1s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_file_is_plain_http() {
        for text in ["", "# nothing\n", "---\n"] {
            let c = parse(text).unwrap();
            assert!(!c.tls.enabled());
            assert!(c.http2 && c.headers.is_empty() && c.users.is_empty());
            assert_eq!(c.rate_limit.interval, None);
        }
    }

    #[test]
    fn strict_yaml() {
        let e = parse("tls_server_config:\n  cert_filse: x\n").unwrap_err();
        assert!(
            e.starts_with("tls_server_config.cert_filse: unknown field `cert_filse`"),
            "{e}"
        );
        let e = parse("basic_auth_users:\n  a: x\n  a: y\n").unwrap_err();
        assert!(e.contains("duplicate entry with key \"a\""), "{e}");
        let e = parse("just some text").unwrap_err();
        assert!(e.starts_with("expected a mapping"), "{e}");
        let e = parse("foo: 1\n").unwrap_err();
        assert!(
            e.starts_with("foo: unknown field `foo`, expected one of"),
            "{e}"
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let c = parse("tls_server_config:\n  cert_file: c.pem\n  key_file: /abs/k.pem\n").unwrap();
        assert_eq!(
            c.tls.files(),
            vec![PathBuf::from("/etc/c.pem"), PathBuf::from("/abs/k.pem")]
        );
    }

    #[test]
    fn headers_as_exporter_toolkit_allows() {
        let c = parse(
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n",
        )
        .unwrap();
        assert_eq!(c.headers.len(), 2);
        assert_eq!(c.headers[0].0, "x-frame-options");
        assert_eq!(
            parse("http_server_config:\n  headers:\n    Content-Type: foo\n").unwrap_err(),
            "http_server_config.headers: HTTP header \"Content-Type\" can not be configured"
        );
        assert_eq!(
            parse("http_server_config:\n  headers:\n    X-Frame-Options: foo\n").unwrap_err(),
            "http_server_config.headers: invalid value for X-Frame-Options. Expected one of: [\"deny\" \"sameorigin\"], but got: \"foo\""
        );
        // Names are exact-case, as in exporter-toolkit.
        assert!(parse("http_server_config:\n  headers:\n    x-frame-options: deny\n").is_err());
        assert!(
            parse("http_server_config:\n  headers:\n    Content-Security-Policy: \"a\\nb\"\n")
                .is_err()
        );
    }

    #[test]
    fn rate_limit_values() {
        let c = parse("rate_limit:\n  interval: 1s\n  burst: 0\n").unwrap();
        assert_eq!(c.rate_limit.interval, Some(Duration::from_secs(1)));
        assert!(!Limiter::new(c.rate_limit).unwrap().allow());
        let c = parse("rate_limit:\n  interval: 1000000000\n  burst: 2\n").unwrap();
        assert_eq!(c.rate_limit.interval, Some(Duration::from_secs(1)));
        let l = Limiter::new(c.rate_limit).unwrap();
        assert!(l.allow() && l.allow() && !l.allow());
        let c = parse("rate_limit:\n  burst: 3\n").unwrap();
        assert!(Limiter::new(c.rate_limit).is_none());
        let c = parse("rate_limit:\n  interval: -1s\n").unwrap();
        assert!(Limiter::new(c.rate_limit).is_none());
        let e = parse("rate_limit:\n  interval: 1d\n").unwrap_err();
        assert_eq!(
            e,
            "rate_limit.interval: time: unknown unit \"d\" in duration \"1d\""
        );
    }

    #[test]
    fn secrets_stay_out_of_errors_and_debug() {
        let e = parse("tls_server_config:\n  key: 4609123456789\n").unwrap_err();
        assert!(!e.contains("4609123456789"), "{e}");
        assert!(e.starts_with("tls_server_config.key:"), "{e}");
        let e = parse("http_server_config:\n  http2: \"-----BEGIN PRIVATE KEY----- hunter2\"\n")
            .unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        let c = parse(
            "tls_server_config:\n  cert: CERT\n  key: \"-----BEGIN PRIVATE KEY----- hunter2\"\nbasic_auth_users:\n  alice: $2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi\n",
        )
        .unwrap();
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("QOauhQ"),
            "{debug}"
        );
    }
}

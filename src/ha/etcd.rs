//! A small etcd v3 client over etcd's own JSON gateway (`/v3/...` on the client port, served
//! by every etcd since 3.4): leases, ranges, transactions, and the user/password login. Keys
//! and values travel base64-encoded, 64-bit numbers as strings, as the gateway does.
//!
//! Endpoints are tried in turn: a request that fails on one (connection refused, timeout, a
//! 5xx) goes to the next, and the last that answered is asked first next time. With
//! `username`, a token is fetched once and again when etcd says it is no longer valid.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::fields::{cut, FieldError, Secret};
use crate::lock::lock;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The longest etcd answer read (a range of shard keys, members, one state chunk).
const MAX_ANSWER: usize = 8 << 20;

/// What went wrong talking to etcd. Never holds a password or a token.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint answered (each one's error, joined).
    #[error("etcd unreachable: {0}")]
    Unreachable(String),
    /// etcd answered with an error.
    #[error("etcd {path}: HTTP {status}: {message}")]
    Refused {
        /// The API path.
        path: &'static str,
        /// The HTTP status.
        status: u16,
        /// etcd's message.
        message: String,
    },
    /// An answer that is not what the API returns.
    #[error("etcd {path}: unreadable answer: {message}")]
    Malformed {
        /// The API path.
        path: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// One key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The lease it is attached to (0: none).
    pub lease: i64,
    /// The revision that created it.
    pub create_revision: i64,
}

/// TLS towards etcd (`https://` endpoints).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// CA bundle (PEM) that signed etcd's certificates; the system's roots otherwise.
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate (PEM), with `key_file`.
    pub cert_file: Option<std::path::PathBuf>,
    /// Client key (PEM), with `cert_file`.
    pub key_file: Option<std::path::PathBuf>,
}

impl Tls {
    /// Reads the files: the CA's certificates (none: the system's roots) and the client's
    /// identity. Every file that is missing or wrong is named (`etcd.tls.ca_file`, ...).
    pub fn load(
        &self,
    ) -> Result<(Vec<reqwest::Certificate>, Option<reqwest::Identity>), Vec<FieldError>> {
        let mut errs = Vec::new();
        // A file's PEM where it holds a block labelled `label`.
        let mut pem_of = |field: &str, path: &std::path::Path, label: &str, what: &str| {
            let found = std::fs::read(path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|pem| {
                    if pem_has(&pem, label) {
                        Ok(pem)
                    } else {
                        Err(format!("{}: no PEM {what} in it", path.display()))
                    }
                });
            found
                .map_err(|m| errs.push(FieldError::new(format!("etcd.tls.{field}"), m)))
                .ok()
        };
        let ca = self
            .ca_file
            .as_ref()
            .map(|ca| pem_of("ca_file", ca, "CERTIFICATE", "certificate"));
        let cert = self
            .cert_file
            .as_ref()
            .map(|c| pem_of("cert_file", c, "CERTIFICATE", "certificate"));
        let key = self
            .key_file
            .as_ref()
            .map(|k| pem_of("key_file", k, "PRIVATE KEY", "private key"));
        let mut roots = Vec::new();
        if let (Some(Some(pem)), Some(path)) = (&ca, &self.ca_file) {
            match reqwest::Certificate::from_pem_bundle(pem) {
                Ok(c) if !c.is_empty() => roots = c,
                _ => errs.push(FieldError::new(
                    "etcd.tls.ca_file",
                    format!("{}: no readable PEM certificate in it", path.display()),
                )),
            }
        }
        let mut identity = None;
        if let (Some(Some(cert)), Some(Some(key))) = (cert, key) {
            let mut pem = cert;
            pem.push(b'\n');
            pem.extend(key);
            match reqwest::Identity::from_pem(&pem) {
                Ok(id) => identity = Some(id),
                Err(e) => errs.push(FieldError::new(
                    "etcd.tls",
                    format!("cert_file and key_file are not a certificate and its key: {e}"),
                )),
            }
        }
        if errs.is_empty() {
            Ok((roots, identity))
        } else {
            Err(errs)
        }
    }
}

/// Whether `pem` has a block whose label ends with `label` (`-----BEGIN ... CERTIFICATE-----`).
fn pem_has(pem: &[u8], label: &str) -> bool {
    String::from_utf8_lossy(pem)
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{label}-----")))
}

/// An etcd cluster's client.
pub struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The endpoint that answered last.
    current: AtomicUsize,
    login: Option<(String, Secret)>,
    token: Mutex<Option<Secret>>,
}

impl Etcd {
    /// A client of `endpoints` (base URLs); each request gives up after `timeout`.
    pub fn new(
        endpoints: &[String],
        tls: Option<&Tls>,
        login: Option<(String, Secret)>,
        timeout: Duration,
    ) -> Result<Etcd, String> {
        let mut b = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("rtc-exporter/", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = tls {
            let (roots, identity) = tls.load().map_err(|errs| {
                errs.iter()
                    .map(|e| format!("ha.{}: {}", e.path, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
            if !roots.is_empty() {
                b = b.tls_built_in_root_certs(false);
                for c in roots {
                    b = b.add_root_certificate(c);
                }
            }
            if let Some(id) = identity {
                b = b.identity(id);
            }
        }
        let http = b.build().map_err(|e| format!("etcd HTTP client: {e}"))?;
        Ok(Etcd {
            http,
            endpoints: endpoints
                .iter()
                .map(|e| e.trim_end_matches('/').to_string())
                .collect(),
            current: AtomicUsize::new(0),
            login,
            token: Mutex::new(None),
        })
    }

    /// POSTs `body` to `path` on the endpoints in turn, logging in first where needed.
    async fn call(&self, path: &'static str, body: &Value) -> Result<Value, EtcdError> {
        let mut errors = Vec::new();
        let n = self.endpoints.len().max(1);
        let first = self.current.load(Ordering::Relaxed);
        for k in 0..n {
            let i = (first + k) % n;
            let Some(base) = self.endpoints.get(i) else {
                break;
            };
            match self.call_at(base, path, body, true).await {
                Ok(v) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(Attempt::Next(e)) => errors.push(format!("{base}: {e}")),
                Err(Attempt::Final(e)) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Err(EtcdError::Unreachable(errors.join("; ")))
    }

    async fn call_at(
        &self,
        base: &str,
        path: &'static str,
        body: &Value,
        may_login: bool,
    ) -> Result<Value, Attempt> {
        let token = match &self.login {
            Some(_) => Some(self.token(base).await?),
            None => None,
        };
        let mut req = self
            .http
            .post(format!("{base}{path}"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(t) = &token {
            req = req.header(reqwest::header::AUTHORIZATION, t.expose());
        }
        let (status, answer) = send(req).await.map_err(Attempt::Next)?;
        if status == 200 {
            return serde_json::from_slice(&answer).map_err(|e| {
                Attempt::Final(EtcdError::Malformed {
                    path,
                    message: e.to_string(),
                })
            });
        }
        let message = error_message(&answer);
        if status >= 500 && !message.contains("auth") {
            return Err(Attempt::Next(format!("HTTP {status}: {message}")));
        }
        if may_login && self.login.is_some() && message.contains("invalid auth token") {
            *lock(&self.token) = None;
            return Box::pin(self.call_at(base, path, body, false)).await;
        }
        Err(Attempt::Final(EtcdError::Refused {
            path,
            status,
            message,
        }))
    }

    /// The auth token, fetched from `base` when there is none.
    async fn token(&self, base: &str) -> Result<Secret, Attempt> {
        if let Some(t) = lock(&self.token).clone() {
            return Ok(t);
        }
        let Some((name, password)) = &self.login else {
            return Err(Attempt::Next("no login".into()));
        };
        let body = json!({"name": name, "password": password.expose()});
        let req = self
            .http
            .post(format!("{base}/v3/auth/authenticate"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let (status, answer) = send(req).await.map_err(Attempt::Next)?;
        if status != 200 {
            return Err(Attempt::Final(EtcdError::Refused {
                path: "/v3/auth/authenticate",
                status,
                message: error_message(&answer),
            }));
        }
        let token = serde_json::from_slice::<Value>(&answer)
            .ok()
            .and_then(|v| v.get("token").and_then(Value::as_str).map(Secret::new))
            .ok_or(Attempt::Final(EtcdError::Malformed {
                path: "/v3/auth/authenticate",
                message: "no token".into(),
            }))?;
        *lock(&self.token) = Some(token.clone());
        Ok(token)
    }

    /// Grants a lease of `ttl`: its id and the TTL etcd granted, in seconds.
    pub async fn grant(&self, ttl: Duration) -> Result<(i64, i64), EtcdError> {
        const P: &str = "/v3/lease/grant";
        let v = self
            .call(P, &json!({"TTL": ttl.as_secs().to_string()}))
            .await?;
        Ok((int(&v, "ID", P)?, int(&v, "TTL", P)?))
    }

    /// Renews lease `id`: the TTL etcd gives it from now, in seconds; 0 or less when the
    /// lease is gone.
    pub async fn keep_alive(&self, id: i64) -> Result<i64, EtcdError> {
        const P: &str = "/v3/lease/keepalive";
        let v = self.call(P, &json!({"ID": id.to_string()})).await?;
        // One answer of the stream, under `result`; a lease that is gone has no TTL.
        let r = v.get("result").ok_or(EtcdError::Malformed {
            path: P,
            message: "no result".into(),
        })?;
        Ok(opt_int(r, "TTL", P)?.unwrap_or(0))
    }

    /// Revokes lease `id`: every key attached to it is deleted.
    pub async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", &json!({"ID": id.to_string()}))
            .await
            .map(|_| ())
    }

    /// The key `key` itself, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, EtcdError> {
        let v = self
            .call("/v3/kv/range", &json!({"key": B64.encode(key)}))
            .await?;
        Ok(kvs(&v, "/v3/kv/range")?.into_iter().next())
    }

    /// Every key under `prefix`, in key order.
    pub async fn range_prefix(&self, prefix: &str) -> Result<Vec<Kv>, EtcdError> {
        let end = prefix_end(prefix.as_bytes());
        let v = self
            .call(
                "/v3/kv/range",
                &json!({"key": B64.encode(prefix), "range_end": B64.encode(end)}),
            )
            .await?;
        kvs(&v, "/v3/kv/range")
    }

    /// A transaction: `success` runs when every `compare` holds. Returns whether it ran, and
    /// the answers of the ops that ran.
    pub async fn txn(
        &self,
        compare: Vec<Value>,
        success: Vec<Value>,
        failure: Vec<Value>,
    ) -> Result<(bool, Vec<Value>), EtcdError> {
        const P: &str = "/v3/kv/txn";
        let v = self
            .call(
                P,
                &json!({"compare": compare, "success": success, "failure": failure}),
            )
            .await?;
        let ran = v.get("succeeded").and_then(Value::as_bool).unwrap_or(false);
        let answers = v
            .get("responses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok((ran, answers))
    }
}

/// A compare: `key` exists with no other writer (`create_revision` 0: absent).
pub fn absent(key: &str) -> Value {
    json!({"target": "CREATE", "result": "EQUAL", "key": B64.encode(key), "create_revision": "0"})
}

/// A compare: `key` is attached to lease `lease`.
pub fn held_by(key: &str, lease: i64) -> Value {
    json!({"target": "LEASE", "result": "EQUAL", "key": B64.encode(key), "lease": lease.to_string()})
}

/// An op: puts `value` at `key`, attached to `lease` (0: none).
pub fn put(key: &str, value: &[u8], lease: i64) -> Value {
    let mut p = json!({"key": B64.encode(key), "value": B64.encode(value)});
    if lease != 0 {
        p["lease"] = Value::String(lease.to_string());
    }
    json!({"request_put": p})
}

/// An op: deletes the keys in `[from, to)`.
pub fn delete_range(from: &str, to: &[u8]) -> Value {
    json!({"request_delete_range": {"key": B64.encode(from), "range_end": B64.encode(to)}})
}

/// An op: deletes `key`.
pub fn delete(key: &str) -> Value {
    json!({"request_delete_range": {"key": B64.encode(key)}})
}

/// The end of the range of every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the key space.
    vec![0]
}

enum Attempt {
    /// Try the next endpoint.
    Next(String),
    /// etcd answered: the answer stands.
    Final(EtcdError),
}

async fn send(req: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), String> {
    let mut resp = req.send().await.map_err(|e| transport(&e))?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&e))? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(format!("answer larger than {MAX_ANSWER} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    // The URL is the endpoint's, never a secret; the chain says what failed.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    cut(&msg, 300)
}

/// etcd's message in an error answer (`{"error": ..., "message": ..., "code": ...}`).
fn error_message(body: &[u8]) -> String {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let m = v
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("error")))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    cut(&m, 300)
}

fn opt_int(v: &Value, key: &str, path: &'static str) -> Result<Option<i64>, EtcdError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| EtcdError::Malformed {
            path,
            message: format!("{key} is not a number"),
        }),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(EtcdError::Malformed {
            path,
            message: format!("{key} is not an integer"),
        }),
        Some(_) => Err(EtcdError::Malformed {
            path,
            message: format!("{key} is not a number"),
        }),
    }
}

fn int(v: &Value, key: &str, path: &'static str) -> Result<i64, EtcdError> {
    opt_int(v, key, path)?.ok_or(EtcdError::Malformed {
        path,
        message: format!("no {key}"),
    })
}

fn bytes(v: &Value, key: &str, path: &'static str) -> Result<Vec<u8>, EtcdError> {
    match v.get(key).and_then(Value::as_str) {
        None => Ok(Vec::new()),
        Some(s) => B64.decode(s).map_err(|_| EtcdError::Malformed {
            path,
            message: format!("{key} is not base64"),
        }),
    }
}

/// The keys of a range answer (or of a txn's `response_range`).
pub fn kvs(v: &Value, path: &'static str) -> Result<Vec<Kv>, EtcdError> {
    let Some(list) = v.get("kvs") else {
        return Ok(Vec::new());
    };
    let list = list.as_array().ok_or(EtcdError::Malformed {
        path,
        message: "kvs is not a list".into(),
    })?;
    list.iter()
        .map(|kv| {
            Ok(Kv {
                key: bytes(kv, "key", path)?,
                value: bytes(kv, "value", path)?,
                lease: opt_int(kv, "lease", path)?.unwrap_or(0),
                create_revision: opt_int(kv, "create_revision", path)?.unwrap_or(0),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_its_last_byte_plus_one() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn a_range_answer_is_read_with_its_leases() {
        let v: Value = serde_json::from_str(
            r#"{"header":{"revision":"2"},"kvs":[{"key":"L2Evc2hhcmQvMA==","create_revision":"2","mod_revision":"2","version":"1","value":"bWU=","lease":"2324035848708925959"}],"count":"1"}"#,
        )
        .unwrap_or_default();
        let got = kvs(&v, "/v3/kv/range").unwrap_or_default();
        assert_eq!(
            got,
            vec![Kv {
                key: b"/a/shard/0".to_vec(),
                value: b"me".to_vec(),
                lease: 2324035848708925959,
                create_revision: 2,
            }]
        );
        // No kvs: nothing under the prefix.
        let none: Value =
            serde_json::from_str(r#"{"header":{"revision":"2"}}"#).unwrap_or_default();
        assert_eq!(kvs(&none, "/v3/kv/range").map(|k| k.len()).ok(), Some(0));
    }

    #[test]
    fn a_lease_that_is_gone_renews_to_zero() {
        // etcd's answer to a keepalive of an unknown lease: no TTL.
        let v: Value =
            serde_json::from_str(r#"{"result":{"header":{"revision":"2"},"ID":"12345"}}"#)
                .unwrap_or_default();
        let r = &v["result"];
        assert_eq!(opt_int(r, "TTL", "x").ok().flatten(), None);
    }
}

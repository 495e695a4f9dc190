//! Signature check of the simulated Volcengine OpenAPI gateway.
//!
//! Written from vendors.md §2 independently of the client signer (no shared code), so that a
//! canonicalisation bug in one does not hide the same bug in the other.
//!
//! Order of checks, and the gateway error each failure maps to:
//!
//! 1. `Authorization` missing or not `HMAC-SHA256 Credential=AK/date/region/service/request,
//!    SignedHeaders=..., Signature=...` → `MissingParameter` (100002, HTTP 400).
//! 2. `X-Date` missing or not `YYYYMMDDTHHMMSSZ` → `MissingParameter`.
//! 3. Access key unknown → `InvalidAccessKey` (100009, HTTP 401).
//! 4. `X-Date` more than 900 s away from now, either way → `InvalidTimestamp` (100006, HTTP 400).
//! 5. Everything else → `SignatureDoesNotMatch` (100010, HTTP 401): scope date / region / service
//!    / terminator wrong; `SignedHeaders` not a sorted, duplicate-free list of lower-case names
//!    including `host` and `x-date`; a signed header absent; a signed `x-content-sha256` not
//!    equal to the body's hash; or the recomputed signature differs (compared in constant time).
//!
//! The canonical query is rebuilt from the *decoded* pairs of the raw query, so the client's own
//! choice of escaping does not matter, only the decoded values. Decoding follows
//! `application/x-www-form-urlencoded` as most HTTP servers do (Go's `net/url` included): `%XX`
//! is decoded and a literal `+` means a space; a client must therefore send a plus sign as `%2B`.

use chrono::NaiveDate;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Largest accepted distance, in seconds, between `X-Date` and the server clock.
pub const MAX_SKEW_SECONDS: i64 = 900;

/// A request as the simulated gateway received it.
pub struct Incoming<'a> {
    /// HTTP method as received (`"GET"`, `"POST"`).
    pub method: &'a str,
    /// Request path as received (`"/"`); an empty path counts as `"/"`.
    pub path: &'a str,
    /// Query string as received, still percent-encoded, without the leading `?`.
    pub raw_query: &'a str,
    /// Header lookup by lower-case name; returns the header's value if present.
    pub header: &'a dyn Fn(&str) -> Option<String>,
    /// The request body exactly as received.
    pub body: &'a [u8],
}

/// Why the gateway refused a request: the fields of the error envelope plus the HTTP status.
///
/// Contains no secret material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status to answer with.
    pub http_status: u16,
    /// `ResponseMetadata.Error.Code`.
    pub code: &'static str,
    /// `ResponseMetadata.Error.CodeN`.
    pub code_n: u32,
    /// `ResponseMetadata.Error.Message`.
    pub message: String,
}

impl Rejection {
    fn missing_parameter(message: impl Into<String>) -> Self {
        Rejection {
            http_status: 400,
            code: "MissingParameter",
            code_n: 100002,
            message: message.into(),
        }
    }

    fn invalid_timestamp(message: impl Into<String>) -> Self {
        Rejection {
            http_status: 400,
            code: "InvalidTimestamp",
            code_n: 100006,
            message: message.into(),
        }
    }

    fn invalid_access_key(message: impl Into<String>) -> Self {
        Rejection {
            http_status: 401,
            code: "InvalidAccessKey",
            code_n: 100009,
            message: message.into(),
        }
    }

    fn signature_mismatch(message: impl Into<String>) -> Self {
        Rejection {
            http_status: 401,
            code: "SignatureDoesNotMatch",
            code_n: 100010,
            message: message.into(),
        }
    }
}

/// Checks the request's Volcengine signature.
///
/// `secret_for` maps an access key id to its secret access key (`None` = unknown key);
/// `region` and `service` are what the credential scope must name (`"cn-north-1"`, `"rtc"`);
/// `now_unix` is the server clock. Returns the access key id of a correctly signed request.
pub fn verify(
    req: &Incoming<'_>,
    secret_for: &dyn Fn(&str) -> Option<String>,
    region: &str,
    service: &str,
    now_unix: i64,
) -> Result<String, Rejection> {
    // 1. Authorization
    let authorization = (req.header)("authorization")
        .ok_or_else(|| Rejection::missing_parameter("Authorization header is missing"))?;
    let auth = parse_authorization(&authorization).ok_or_else(|| {
        Rejection::missing_parameter(
            "Authorization header is malformed; expected \
             `HMAC-SHA256 Credential=AK/Date/Region/Service/request, SignedHeaders=..., Signature=...`",
        )
    })?;

    // 2. X-Date
    let x_date_raw = (req.header)("x-date")
        .ok_or_else(|| Rejection::missing_parameter("X-Date header is missing"))?;
    let x_date = x_date_raw.trim();
    let request_time = parse_x_date(x_date).ok_or_else(|| {
        Rejection::missing_parameter(format!(
            "X-Date header `{x_date}` is not of the form YYYYMMDDTHHMMSSZ"
        ))
    })?;

    // 3. Access key
    let secret = secret_for(auth.access_key_id).ok_or_else(|| {
        Rejection::invalid_access_key(format!(
            "The access key id `{}` does not exist",
            auth.access_key_id
        ))
    })?;

    // 4. Clock skew
    let skew = request_time.abs_diff(now_unix);
    if skew > MAX_SKEW_SECONDS.unsigned_abs() {
        return Err(Rejection::invalid_timestamp(format!(
            "X-Date `{x_date}` is {skew} s away from the server time; at most \
             {MAX_SKEW_SECONDS} s are allowed"
        )));
    }

    // 5a. Credential scope
    if auth.date != &x_date[..8] {
        return Err(Rejection::signature_mismatch(format!(
            "Credential scope date `{}` does not match X-Date `{x_date}`",
            auth.date
        )));
    }
    if auth.region != region || auth.service != service || auth.terminator != "request" {
        return Err(Rejection::signature_mismatch(format!(
            "Credential scope `{}/{}/{}/{}` should be `{}/{region}/{service}/request`",
            auth.date, auth.region, auth.service, auth.terminator, auth.date
        )));
    }

    // 5b. Signed header list
    let names: Vec<&str> = auth.signed_headers.split(';').collect();
    for name in &names {
        if name.is_empty() || name.bytes().any(|b| !is_header_name_byte(b)) {
            return Err(Rejection::signature_mismatch(format!(
                "SignedHeaders `{}` contains an invalid header name `{name}`",
                auth.signed_headers
            )));
        }
    }
    if names.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Rejection::signature_mismatch(format!(
            "SignedHeaders `{}` must be sorted and free of duplicates",
            auth.signed_headers
        )));
    }
    for required in ["host", "x-date"] {
        if !names.contains(&required) {
            return Err(Rejection::signature_mismatch(format!(
                "SignedHeaders `{}` must include `{required}`",
                auth.signed_headers
            )));
        }
    }

    // 5c. Body hash
    let body_hash = hex::encode(Sha256::digest(req.body));

    // 5d. Canonical headers
    let mut canonical_headers = String::new();
    for name in &names {
        let value = (req.header)(name).ok_or_else(|| {
            Rejection::signature_mismatch(format!("Signed header `{name}` is missing"))
        })?;
        let value = value.trim();
        if *name == "x-content-sha256" && !value.eq_ignore_ascii_case(&body_hash) {
            return Err(Rejection::signature_mismatch(format!(
                "X-Content-Sha256 `{value}` does not match the body's sha256 `{body_hash}`"
            )));
        }
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(value);
        canonical_headers.push('\n');
    }

    // 5e. Canonical request and string to sign
    let path = if req.path.is_empty() { "/" } else { req.path };
    let canonical_request = [
        req.method,
        path,
        &canonicalize_raw_query(req.raw_query),
        &canonical_headers,
        auth.signed_headers,
        &body_hash,
    ]
    .join("\n");
    let scope = [auth.date, auth.region, auth.service, auth.terminator].join("/");
    let string_to_sign = [
        "HMAC-SHA256",
        x_date,
        &scope,
        &hex::encode(Sha256::digest(canonical_request.as_bytes())),
    ]
    .join("\n");

    // 5f. Signature, compared in constant time
    let mut key = mac(secret.as_bytes(), auth.date.as_bytes());
    key = mac(&key, auth.region.as_bytes());
    key = mac(&key, auth.service.as_bytes());
    key = mac(&key, b"request");
    let provided = hex::decode(auth.signature).unwrap_or_default();
    let mut check = match HmacSha256::new_from_slice(&key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 accepts any key length"),
    };
    check.update(string_to_sign.as_bytes());
    if check.verify_slice(&provided).is_err() {
        return Err(Rejection::signature_mismatch(format!(
            "The request signature we calculated does not match the signature you provided. \
             Canonical request:\n{canonical_request}\nString to sign:\n{string_to_sign}"
        )));
    }
    Ok(auth.access_key_id.to_owned())
}

/// The parts of an `Authorization` header.
struct Authorization<'h> {
    access_key_id: &'h str,
    date: &'h str,
    region: &'h str,
    service: &'h str,
    terminator: &'h str,
    signed_headers: &'h str,
    signature: &'h str,
}

fn parse_authorization(header: &str) -> Option<Authorization<'_>> {
    let rest = header.trim().strip_prefix("HMAC-SHA256")?;
    if !rest.starts_with(' ') {
        return None;
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for item in rest.split(',') {
        let (key, value) = item.trim().split_once('=')?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return None,
        };
        if slot.replace(value).is_some() {
            return None; // the same field twice
        }
    }
    let mut scope = credential?.split('/');
    let auth = Authorization {
        access_key_id: scope.next()?,
        date: scope.next()?,
        region: scope.next()?,
        service: scope.next()?,
        terminator: scope.next()?,
        signed_headers: signed_headers?,
        signature: signature?,
    };
    if scope.next().is_some()
        || auth.access_key_id.is_empty()
        || auth.signed_headers.is_empty()
        || auth.signature.is_empty()
    {
        return None;
    }
    Some(auth)
}

/// Parses `YYYYMMDDTHHMMSSZ` strictly into Unix seconds.
fn parse_x_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let mut n = 0u32;
        for &c in &b[range] {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u32::from(c - b'0');
        }
        Some(n)
    };
    let year = i32::try_from(digits(0..4)?).ok()?;
    let date = NaiveDate::from_ymd_opt(year, digits(4..6)?, digits(6..8)?)?;
    let time = date.and_hms_opt(digits(9..11)?, digits(11..13)?, digits(13..15)?)?;
    Some(time.and_utc().timestamp())
}

fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
}

/// Decodes the raw query into byte pairs, then sorts them by key bytes (stable) and re-encodes
/// everything but `A-Z a-z 0-9 - _ . ~` as upper-case `%XX`.
fn canonicalize_raw_query(raw: &str) -> String {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = raw
        .split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| match segment.split_once('=') {
            Some((k, v)) => (form_decode(k), form_decode(v)),
            None => (form_decode(segment), Vec::new()),
        })
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(raw.len() + 16);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        escape_into(&mut out, k);
        out.push('=');
        escape_into(&mut out, v);
    }
    out
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; a `%` not followed
/// by two hex digits is kept literally.
fn form_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = b.get(i + 1).copied().and_then(hex_val);
                let lo = b.get(i + 2).copied().and_then(hex_val);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    i += 3;
                } else {
                    out.push(b'%');
                    i += 1;
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn escape_into(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in bytes {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(c));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(c >> 4)]));
            out.push(char::from(HEX[usize::from(c & 0x0F)]));
        }
    }
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 accepts any key length"),
    };
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AK: &str = "AKLTexampleAccessKeyId";
    const SK: &str = "exampleSecretAccessKey==";
    /// 20250102T030405Z
    const T0: i64 = 1_735_787_045;
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const POST_BODY: &[u8] = br#"{"AppId":123,"UserIds":[10001]}"#;
    const POST_SHA256: &str = "9accbb9607b308723ba4314e67d45080a68c033662e40c4b4b79f7eb161b0697";
    const GET_QUERY: &str =
        "Action=GetRoomOnlineUsers&AppId=661e0000543cf&RoomId=room%201%2F%2B%2A~&Version=2023-11-01";
    const GET_SIG: &str = "fe0fa95e21114e935d7b212313b82cad04091e11bf6e3d63bac15fa0d9bd0379";
    const POST_SIG: &str = "b05dddf4068b16ba0b601bf530af6db6c6666419fd437e182f7f673cc2d0a390";
    const FULL: &str = "content-type;host;x-content-sha256;x-date";

    /// Header map of a request signed per the ✔ rtc vectors.
    struct Case {
        headers: Vec<(String, String)>,
    }

    impl Case {
        fn new(content_type: &str, body_sha: &str, signed: &str, signature: &str) -> Self {
            Self::with_auth(
                content_type,
                body_sha,
                "20250102T030405Z",
                &format!(
                    "HMAC-SHA256 Credential={AK}/20250102/cn-north-1/rtc/request, \
                     SignedHeaders={signed}, Signature={signature}"
                ),
            )
        }

        fn with_auth(content_type: &str, body_sha: &str, x_date: &str, auth: &str) -> Self {
            let headers = [
                ("content-type", content_type),
                ("host", "rtc.volcengineapi.com"),
                ("x-content-sha256", body_sha),
                ("x-date", x_date),
                ("authorization", auth),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            Case { headers }
        }

        fn get() -> Self {
            Self::new(
                "application/x-www-form-urlencoded; charset=utf-8",
                EMPTY_SHA256,
                FULL,
                GET_SIG,
            )
        }

        fn post() -> Self {
            Self::new("application/json", POST_SHA256, FULL, POST_SIG)
        }

        fn without(mut self, name: &str) -> Self {
            self.headers.retain(|(k, _)| k != name);
            self
        }

        fn run(
            &self,
            method: &str,
            raw_query: &str,
            body: &[u8],
            secret: &str,
            now: i64,
        ) -> Result<String, Rejection> {
            let lookup = |name: &str| {
                self.headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            let req = Incoming {
                method,
                path: "/",
                raw_query,
                header: &lookup,
                body,
            };
            let secret = secret.to_owned();
            let secret_for = move |ak: &str| (ak == AK).then(|| secret.clone());
            verify(&req, &secret_for, "cn-north-1", "rtc", now)
        }

        fn run_get(&self) -> Result<String, Rejection> {
            self.run("GET", GET_QUERY, b"", SK, T0)
        }

        fn run_post(&self) -> Result<String, Rejection> {
            self.run(
                "POST",
                "Action=QueryOnlineStatus&Version=2020-12-01",
                POST_BODY,
                SK,
                T0,
            )
        }
    }

    fn code(r: Result<String, Rejection>) -> (&'static str, u32, u16) {
        match r {
            Ok(ak) => panic!("expected a rejection, got Ok({ak})"),
            Err(e) => (e.code, e.code_n, e.http_status),
        }
    }

    const MISMATCH: (&str, u32, u16) = ("SignatureDoesNotMatch", 100010, 401);
    const MISSING: (&str, u32, u16) = ("MissingParameter", 100002, 400);

    #[test]
    fn rtc_get_vector_verifies() {
        assert_eq!(Case::get().run_get(), Ok(AK.to_owned()));
    }

    #[test]
    fn rtc_post_vector_verifies() {
        assert_eq!(Case::post().run_post(), Ok(AK.to_owned()));
    }

    #[test]
    fn iam_vector_verifies_with_host_and_date_only() {
        let headers = [
            ("host", "iam.volcengineapi.com"),
            ("x-date", "20240619T071306Z"),
            (
                "authorization",
                "HMAC-SHA256 Credential=AKLTYWViMTVmZGYzM2E0NDI5Mzk2MDZjNjFmMjc2MjRjMzg/20240619/cn-beijing/iam/request, \
                 SignedHeaders=host;x-date, \
                 Signature=e31c4558bcfe08a286001f59cedbf0791ffd0b2362f10e55ee2627467bcdde93",
            ),
        ];
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let secret_for = |_: &str| {
            Some("WkRZeE1EQmxPVGhsWWpWak5HVmtNbUUxTXpZeU9UVXlOMlE1TmpZeVlqTQ==".to_owned())
        };
        let mut req = Incoming {
            method: "GET",
            path: "/",
            // unsorted on the wire; the verifier sorts
            raw_query: "Action=ListUsers&Version=2018-01-01&Limit=10&Offset=0",
            header: &lookup,
            body: b"",
        };
        let now = 1_718_781_186;
        assert!(verify(&req, &secret_for, "cn-beijing", "iam", now).is_ok());
        // The body hash is part of the canonical request even when x-content-sha256 is not signed.
        req.body = b"x";
        assert_eq!(
            code(verify(&req, &secret_for, "cn-beijing", "iam", now)),
            MISMATCH
        );
    }

    #[test]
    fn near_x_date_accepted_up_to_900_s_either_way() {
        let c = Case::get();
        for now in [T0 - 900, T0 - 1, T0 + 1, T0 + 900] {
            assert!(c.run("GET", GET_QUERY, b"", SK, now).is_ok(), "now = {now}");
        }
    }

    #[test]
    fn skew_of_901_s_is_invalid_timestamp() {
        let c = Case::get();
        for now in [T0 - 901, T0 + 901] {
            assert_eq!(
                code(c.run("GET", GET_QUERY, b"", SK, now)),
                ("InvalidTimestamp", 100006, 400)
            );
        }
    }

    #[test]
    fn one_byte_body_change_rejected() {
        let c = Case::post();
        let mut body = POST_BODY.to_vec();
        body[10] ^= 1;
        let r = c.run(
            "POST",
            "Action=QueryOnlineStatus&Version=2020-12-01",
            &body,
            SK,
            T0,
        );
        assert_eq!(code(r), MISMATCH);
    }

    #[test]
    fn body_change_with_matching_header_hash_still_rejected() {
        // A client that updates X-Content-Sha256 but not the signature.
        let body = br#"{"AppId":124,"UserIds":[10001]}"#;
        let sha = hex::encode(Sha256::digest(body));
        let c = Case::new("application/json", &sha, FULL, POST_SIG);
        let r = c.run(
            "POST",
            "Action=QueryOnlineStatus&Version=2020-12-01",
            body,
            SK,
            T0,
        );
        assert_eq!(code(r), MISMATCH);
    }

    #[test]
    fn one_byte_query_change_rejected() {
        let q = GET_QUERY.replace("543cf", "543cg");
        assert_eq!(code(Case::get().run("GET", &q, b"", SK, T0)), MISMATCH);
    }

    #[test]
    fn one_byte_secret_change_rejected() {
        let r = Case::get().run("GET", GET_QUERY, b"", "exampleSecretAccessKey=A", T0);
        assert_eq!(code(r), MISMATCH);
    }

    #[test]
    fn one_byte_signature_change_rejected() {
        let sig = GET_SIG.replace("fe0f", "fe0e");
        let c = Case::new(
            "application/x-www-form-urlencoded; charset=utf-8",
            EMPTY_SHA256,
            FULL,
            &sig,
        );
        assert_eq!(code(c.run_get()), MISMATCH);
        let short = Case::new(
            "application/x-www-form-urlencoded; charset=utf-8",
            EMPTY_SHA256,
            FULL,
            "zz",
        );
        assert_eq!(code(short.run_get()), MISMATCH);
    }

    #[test]
    fn method_change_rejected() {
        let r = Case::get().run("POST", GET_QUERY, b"", SK, T0);
        assert_eq!(code(r), MISMATCH);
    }

    #[test]
    fn unknown_access_key_is_invalid_access_key() {
        let c = Case::with_auth(
            "application/json",
            POST_SHA256,
            "20250102T030405Z",
            &format!(
                "HMAC-SHA256 Credential=AKLTsomeoneElse/20250102/cn-north-1/rtc/request, \
                 SignedHeaders={FULL}, Signature={POST_SIG}"
            ),
        );
        assert_eq!(code(c.run_post()), ("InvalidAccessKey", 100009, 401));
    }

    #[test]
    fn signed_headers_without_x_date_rejected() {
        let c = Case::new(
            "application/json",
            POST_SHA256,
            "content-type;host;x-content-sha256",
            POST_SIG,
        );
        assert_eq!(code(c.run_post()), MISMATCH);
    }

    #[test]
    fn signed_headers_without_host_rejected() {
        let c = Case::new(
            "application/json",
            POST_SHA256,
            "content-type;x-content-sha256;x-date",
            POST_SIG,
        );
        assert_eq!(code(c.run_post()), MISMATCH);
    }

    #[test]
    fn signed_headers_unsorted_or_upper_case_rejected() {
        for signed in [
            "host;content-type;x-content-sha256;x-date",
            "Content-Type;host;x-content-sha256;x-date",
            "content-type;host;host;x-content-sha256;x-date",
            "content-type;;host;x-content-sha256;x-date",
        ] {
            let c = Case::new("application/json", POST_SHA256, signed, POST_SIG);
            assert_eq!(code(c.run_post()), MISMATCH, "{signed}");
        }
    }

    #[test]
    fn signed_header_absent_rejected() {
        let c = Case::post().without("content-type");
        assert_eq!(code(c.run_post()), MISMATCH);
    }

    #[test]
    fn wrong_x_content_sha256_rejected() {
        let c = Case::new("application/json", EMPTY_SHA256, FULL, POST_SIG);
        assert_eq!(code(c.run_post()), MISMATCH);
    }

    #[test]
    fn scope_mismatch_rejected() {
        for scope in [
            "20250101/cn-north-1/rtc/request",
            "20250102/cn-beijing/rtc/request",
            "20250102/cn-north-1/iam/request",
            "20250102/cn-north-1/rtc/aws4_request",
        ] {
            let c = Case::with_auth(
                "application/json",
                POST_SHA256,
                "20250102T030405Z",
                &format!(
                    "HMAC-SHA256 Credential={AK}/{scope}, SignedHeaders={FULL}, Signature={POST_SIG}"
                ),
            );
            assert_eq!(code(c.run_post()), MISMATCH, "{scope}");
        }
    }

    #[test]
    fn missing_authorization_or_x_date_is_missing_parameter() {
        assert_eq!(
            code(Case::get().without("authorization").run_get()),
            MISSING
        );
        assert_eq!(code(Case::get().without("x-date").run_get()), MISSING);
    }

    #[test]
    fn garbled_authorization_is_missing_parameter() {
        for auth in [
            "",
            "HMAC-SHA256",
            "AWS4-HMAC-SHA256 Credential=AKLTexampleAccessKeyId/20250102/cn-north-1/rtc/request, SignedHeaders=host;x-date, Signature=00",
            "HMAC-SHA256Credential=AKLTexampleAccessKeyId/20250102/cn-north-1/rtc/request, SignedHeaders=host;x-date, Signature=00",
            "HMAC-SHA256 Credential=AKLTexampleAccessKeyId/20250102/cn-north-1/rtc, SignedHeaders=host;x-date, Signature=00",
            "HMAC-SHA256 Credential=AKLTexampleAccessKeyId/20250102/cn-north-1/rtc/request/x, SignedHeaders=host;x-date, Signature=00",
            "HMAC-SHA256 Credential=/20250102/cn-north-1/rtc/request, SignedHeaders=host;x-date, Signature=00",
            "HMAC-SHA256 Credential=AKLTexampleAccessKeyId/20250102/cn-north-1/rtc/request, SignedHeaders=host;x-date",
            "HMAC-SHA256 Credential=AKLTexampleAccessKeyId/20250102/cn-north-1/rtc/request, Signature=00",
            "HMAC-SHA256 Credential=AKLTexampleAccessKeyId/20250102/cn-north-1/rtc/request, SignedHeaders=host;x-date, Signature=00, Signature=00",
            "HMAC-SHA256 Credential=AKLTexampleAccessKeyId/20250102/cn-north-1/rtc/request, SignedHeaders=host;x-date, Signature=00, Extra=1",
        ] {
            let c = Case::with_auth("application/json", POST_SHA256, "20250102T030405Z", auth);
            assert_eq!(code(c.run_post()), MISSING, "{auth}");
        }
    }

    #[test]
    fn garbled_x_date_is_missing_parameter() {
        for x_date in [
            "",
            "20250102T030405",
            "20250102 030405Z",
            "2025-01-02T03:04:05Z",
            "20251302T030405Z",
            "20250102T250405Z",
            "2025010aT030405Z",
            "+2025012T030405Z",
        ] {
            let auth = format!(
                "HMAC-SHA256 Credential={AK}/20250102/cn-north-1/rtc/request, \
                 SignedHeaders={FULL}, Signature={POST_SIG}"
            );
            let c = Case::with_auth("application/json", POST_SHA256, x_date, &auth);
            assert_eq!(code(c.run_post()), MISSING, "{x_date}");
        }
    }

    #[test]
    fn equivalent_query_encodings_verify() {
        let c = Case::get();
        for q in [
            // different order, `~` escaped, lower-case hex, `+` for space, `/` and `*` unescaped
            "Version=2023-11-01&RoomId=room+1/%2b*%7E&AppId=661e0000543cf&Action=GetRoomOnlineUsers",
            "Action=GetRoomOnlineUsers&&AppId=661e0000543cf&RoomId=room%201%2F%2B%2A%7e&Version=2023-11-01&",
            "%41ction=GetRoomOnlineUsers&AppId=661e0000543cf&RoomId=room%201%2F%2B%2A~&Version=2023-11-01",
        ] {
            assert_eq!(c.run("GET", q, b"", SK, T0), Ok(AK.to_owned()), "{q}");
        }
        // A literal `+` means a space, so `room+1` != `room%2B1`.
        let plus = GET_QUERY.replace("%2B", "+");
        assert_eq!(code(c.run("GET", &plus, b"", SK, T0)), MISMATCH);
    }

    #[test]
    fn canonical_query_edge_cases() {
        assert_eq!(canonicalize_raw_query(""), "");
        assert_eq!(canonicalize_raw_query("b&a="), "a=&b=");
        assert_eq!(
            canonicalize_raw_query("a=2&B=x&a=1&a%20b=y&_=z"),
            "B=x&_=z&a=2&a=1&a%20b=y"
        );
        assert_eq!(canonicalize_raw_query("k=%C3%A9%zz%4"), "k=%C3%A9%25zz%254");
        assert_eq!(canonicalize_raw_query("k=a=b"), "k=a%3Db");
        assert_eq!(canonicalize_raw_query("k=AZaz09-_.~"), "k=AZaz09-_.~");
        assert_eq!(canonicalize_raw_query("k=%00%ff"), "k=%00%FF");
    }

    #[test]
    fn parse_x_date_is_strict() {
        assert_eq!(parse_x_date("20250102T030405Z"), Some(T0));
        assert_eq!(parse_x_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_x_date("20240229T000000Z"), Some(1_709_164_800));
        assert_eq!(parse_x_date("20230229T000000Z"), None);
        assert_eq!(parse_x_date("20250102t030405Z"), None);
        assert_eq!(parse_x_date("20250102T030405z"), None);
    }

    #[test]
    fn rejection_messages_never_contain_the_secret() {
        let r = Case::get().run("GET", GET_QUERY, b"x", SK, T0);
        match r {
            Err(e) => assert!(!e.message.contains(SK), "{}", e.message),
            Ok(_) => panic!("expected a rejection"),
        }
    }
}

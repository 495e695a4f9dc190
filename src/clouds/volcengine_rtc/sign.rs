//! Volcengine OpenAPI request signing (HMAC-SHA256, "V4 style"), client side.
//!
//! Pure functions: no I/O, no clock. The caller supplies the `X-Date` (see [`x_date`]) and
//! sends exactly what [`sign`] returns: the query string [`Signed::canonical_query`] and the
//! headers `X-Date`, `X-Content-Sha256`, `Authorization` (plus `Host` and, when given,
//! `Content-Type` with the same values that were signed).
//!
//! Algorithm (vendors.md §2):
//!
//! ```text
//! ShortDate        = X-Date[0..8]
//! Scope            = ShortDate/region/service/request
//! CanonicalRequest = Method \n Path \n CanonicalQuery \n CanonicalHeaders \n SignedHeaders \n hex(sha256(body))
//! StringToSign     = "HMAC-SHA256" \n X-Date \n Scope \n hex(sha256(CanonicalRequest))
//! kSigning         = HMAC(HMAC(HMAC(HMAC(SecretAccessKey, ShortDate), region), service), "request")
//! Signature        = hex(HMAC(kSigning, StringToSign))
//! ```
//!
//! The secret access key is only ever fed into the HMAC key schedule; it never appears in any
//! returned string nor in `Debug` output.

use std::fmt;

use chrono::{DateTime, Datelike};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::clouds::util::{hmac_sha256, sha256_hex};

/// Signing algorithm name, first word of `Authorization` and first line of the string to sign.
pub const ALGORITHM: &str = "HMAC-SHA256";

/// Everything except the unreserved characters `A-Z a-z 0-9 - _ . ~` is escaped as `%XX`
/// (upper-case hex; a space becomes `%20`, never `+`).
const QUERY_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The request to sign, as it will be sent.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// HTTP method, upper case as sent (`"GET"`, `"POST"`).
    pub method: &'a str,
    /// Value of the `Host` header exactly as it will be sent, including `:port` when the port is
    /// not the scheme's default (e.g. `"rtc.volcengineapi.com"`, `"127.0.0.1:8080"`).
    pub host: &'a str,
    /// Request path; Volcengine OpenAPI always uses `"/"`. An empty path is signed as `"/"`.
    pub path: &'a str,
    /// Decoded (not percent-encoded) query parameters, in any order; duplicates are allowed and
    /// keep their relative order.
    pub query: &'a [(&'a str, &'a str)],
    /// `Content-Type` header value to send, if any. Signed only when present.
    pub content_type: Option<&'a str>,
    /// Request body bytes (empty for GET).
    pub body: &'a [u8],
}

/// Account credentials and signing scope.
///
/// `Debug` is implemented by hand and redacts the secret.
#[derive(Clone, Copy)]
pub struct Credentials<'a> {
    /// Access key id (`AK...`), sent in clear in `Authorization`.
    pub access_key_id: &'a str,
    /// Secret access key. Never leaves this module except as HMAC key material.
    pub secret_access_key: &'a str,
    /// Signing region, e.g. `"cn-north-1"` for RTC.
    pub region: &'a str,
    /// Signing service, e.g. `"rtc"`.
    pub service: &'a str,
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish()
    }
}

/// Which headers go into the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderSet {
    /// What the official SDKs sign and what rtc-exporter uses:
    /// `content-type;host;x-content-sha256;x-date` (`content-type` is left out when
    /// [`Request::content_type`] is `None`).
    #[default]
    Full,
    /// Only `host;x-date`, the minimum a Volcengine gateway accepts (the IAM documentation
    /// example signs this set).
    HostAndDate,
}

/// The result of signing: what to send, plus the intermediate strings for debugging.
///
/// Contains no secret material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// Canonical query string; also the exact query string to send (without the leading `?`).
    pub canonical_query: String,
    /// The canonical request that was hashed.
    pub canonical_request: String,
    /// The string that was HMAC-ed with the signing key.
    pub string_to_sign: String,
    /// The `;`-joined lower-case list of signed header names.
    pub signed_headers: String,
    /// Hex (lower case) HMAC-SHA256 signature.
    pub signature: String,
    /// Value for the `X-Date` header.
    pub x_date: String,
    /// Value for the `X-Content-Sha256` header: hex sha256 of the body.
    pub x_content_sha256: String,
    /// Value for the `Authorization` header.
    pub authorization: String,
}

/// Signs `req` with the SDK header set ([`HeaderSet::Full`]).
///
/// `x_date` must be the `"YYYYMMDDTHHMMSSZ"` UTC timestamp that is sent as `X-Date` (see
/// [`x_date`]); its first 8 characters form the credential scope date.
pub fn sign(req: &Request<'_>, creds: &Credentials<'_>, x_date: &str) -> Signed {
    sign_with(req, creds, x_date, HeaderSet::Full)
}

/// Signs `req`, choosing which headers are signed.
///
/// Header values are trimmed of surrounding whitespace before signing; send them the same way.
pub fn sign_with(
    req: &Request<'_>,
    creds: &Credentials<'_>,
    x_date: &str,
    headers: HeaderSet,
) -> Signed {
    let short_date = x_date.get(..8).unwrap_or(x_date);
    let scope = format!("{short_date}/{}/{}/request", creds.region, creds.service);
    let body_hash = sha256_hex(req.body);
    let canonical_query = canonical_query(req.query);

    // Already in lexicographic order of the lower-case names.
    let mut header_list: Vec<(&str, &str)> = Vec::with_capacity(4);
    if headers == HeaderSet::Full {
        if let Some(ct) = req.content_type {
            header_list.push(("content-type", ct.trim()));
        }
    }
    header_list.push(("host", req.host.trim()));
    if headers == HeaderSet::Full {
        header_list.push(("x-content-sha256", &body_hash));
    }
    header_list.push(("x-date", x_date));

    let canonical_headers: String = header_list
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    let signed_headers = header_list
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(";");
    let path = if req.path.is_empty() { "/" } else { req.path };

    let canonical_request = format!(
        "{}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{body_hash}",
        req.method
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{x_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );

    let mut key = hmac_sha256(creds.secret_access_key.as_bytes(), short_date.as_bytes());
    for part in [creds.region, creds.service, "request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));

    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key_id
    );

    Signed {
        canonical_query,
        canonical_request,
        string_to_sign,
        signed_headers,
        signature,
        x_date: x_date.to_owned(),
        x_content_sha256: body_hash,
        authorization,
    }
}

/// Builds the canonical query string from decoded pairs: pairs are sorted by key bytes (a stable
/// sort, so duplicate keys keep their order), and keys and values are escaped except for
/// `A-Z a-z 0-9 - _ . ~`, with upper-case hex and `%20` for a space.
pub fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(&str, &str)> = query.to_vec();
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, QUERY_ESCAPE),
                utf8_percent_encode(v, QUERY_ESCAPE)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Formats a Unix time as the `X-Date` value `"YYYYMMDDTHHMMSSZ"` (UTC).
///
/// Returns `None` when the time is outside years 0000–9999, which the format cannot express.
pub fn x_date(unix_seconds: i64) -> Option<String> {
    let t = DateTime::from_timestamp(unix_seconds, 0)?;
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    Some(t.format("%Y%m%dT%H%M%SZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    const RTC_CREDS: Credentials<'static> = Credentials {
        access_key_id: "AKLTexampleAccessKeyId",
        secret_access_key: "exampleSecretAccessKey==",
        region: "cn-north-1",
        service: "rtc",
    };

    /// ✔ official IAM example: signs only `host;x-date`, query given unsorted.
    #[test]
    fn vector_iam_list_users() {
        let creds = Credentials {
            access_key_id: "AKLTYWViMTVmZGYzM2E0NDI5Mzk2MDZjNjFmMjc2MjRjMzg",
            secret_access_key: "WkRZeE1EQmxPVGhsWWpWak5HVmtNbUUxTXpZeU9UVXlOMlE1TmpZeVlqTQ==",
            region: "cn-beijing",
            service: "iam",
        };
        let req = Request {
            method: "GET",
            host: "iam.volcengineapi.com",
            path: "/",
            query: &[
                ("Action", "ListUsers"),
                ("Version", "2018-01-01"),
                ("Limit", "10"),
                ("Offset", "0"),
            ],
            content_type: None,
            body: b"",
        };
        let s = sign_with(&req, &creds, "20240619T071306Z", HeaderSet::HostAndDate);
        assert_eq!(
            s.canonical_query,
            "Action=ListUsers&Limit=10&Offset=0&Version=2018-01-01"
        );
        assert_eq!(
            s.canonical_request,
            "GET\n\
             /\n\
             Action=ListUsers&Limit=10&Offset=0&Version=2018-01-01\n\
             host:iam.volcengineapi.com\n\
             x-date:20240619T071306Z\n\
             \n\
             host;x-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            s.string_to_sign,
            "HMAC-SHA256\n\
             20240619T071306Z\n\
             20240619/cn-beijing/iam/request\n\
             5ed5bca3905e1fcbf789abb56a17c2d819674a3bcfa468ae476bd1ea80d135cb"
        );
        assert_eq!(
            s.signature,
            "e31c4558bcfe08a286001f59cedbf0791ffd0b2362f10e55ee2627467bcdde93"
        );
        assert_eq!(s.signed_headers, "host;x-date");
        assert_eq!(
            s.authorization,
            "HMAC-SHA256 Credential=AKLTYWViMTVmZGYzM2E0NDI5Mzk2MDZjNjFmMjc2MjRjMzg/20240619/cn-beijing/iam/request, \
             SignedHeaders=host;x-date, \
             Signature=e31c4558bcfe08a286001f59cedbf0791ffd0b2362f10e55ee2627467bcdde93"
        );
    }

    /// ✔ rtc GET vector; RoomId decodes to `room 1/+*~`.
    #[test]
    fn vector_rtc_get_room_online_users() {
        let req = Request {
            method: "GET",
            host: "rtc.volcengineapi.com",
            path: "/",
            query: &[
                ("Version", "2023-11-01"),
                ("RoomId", "room 1/+*~"),
                ("Action", "GetRoomOnlineUsers"),
                ("AppId", "661e0000543cf"),
            ],
            content_type: Some("application/x-www-form-urlencoded; charset=utf-8"),
            body: b"",
        };
        let s = sign(&req, &RTC_CREDS, "20250102T030405Z");
        assert_eq!(
            s.canonical_query,
            "Action=GetRoomOnlineUsers&AppId=661e0000543cf&RoomId=room%201%2F%2B%2A~&Version=2023-11-01"
        );
        assert_eq!(
            s.canonical_request,
            "GET\n\
             /\n\
             Action=GetRoomOnlineUsers&AppId=661e0000543cf&RoomId=room%201%2F%2B%2A~&Version=2023-11-01\n\
             content-type:application/x-www-form-urlencoded; charset=utf-8\n\
             host:rtc.volcengineapi.com\n\
             x-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-date:20250102T030405Z\n\
             \n\
             content-type;host;x-content-sha256;x-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            s.string_to_sign,
            "HMAC-SHA256\n\
             20250102T030405Z\n\
             20250102/cn-north-1/rtc/request\n\
             7373254674fcb05c37b9d05e07db8c9550998e8cb9107641049ac4e0ba9fee40"
        );
        assert_eq!(
            s.signature,
            "fe0fa95e21114e935d7b212313b82cad04091e11bf6e3d63bac15fa0d9bd0379"
        );
        assert_eq!(s.x_date, "20250102T030405Z");
        assert_eq!(s.x_content_sha256, EMPTY_SHA256);
        assert_eq!(
            s.authorization,
            "HMAC-SHA256 Credential=AKLTexampleAccessKeyId/20250102/cn-north-1/rtc/request, \
             SignedHeaders=content-type;host;x-content-sha256;x-date, \
             Signature=fe0fa95e21114e935d7b212313b82cad04091e11bf6e3d63bac15fa0d9bd0379"
        );
    }

    /// ✔ rtc POST vector with a JSON body.
    #[test]
    fn vector_rtc_post_query_online_status() {
        let req = Request {
            method: "POST",
            host: "rtc.volcengineapi.com",
            path: "/",
            query: &[("Action", "QueryOnlineStatus"), ("Version", "2020-12-01")],
            content_type: Some("application/json"),
            body: br#"{"AppId":123,"UserIds":[10001]}"#,
        };
        let s = sign(&req, &RTC_CREDS, "20250102T030405Z");
        assert_eq!(
            s.canonical_request,
            "POST\n\
             /\n\
             Action=QueryOnlineStatus&Version=2020-12-01\n\
             content-type:application/json\n\
             host:rtc.volcengineapi.com\n\
             x-content-sha256:9accbb9607b308723ba4314e67d45080a68c033662e40c4b4b79f7eb161b0697\n\
             x-date:20250102T030405Z\n\
             \n\
             content-type;host;x-content-sha256;x-date\n\
             9accbb9607b308723ba4314e67d45080a68c033662e40c4b4b79f7eb161b0697"
        );
        assert_eq!(
            s.string_to_sign,
            "HMAC-SHA256\n\
             20250102T030405Z\n\
             20250102/cn-north-1/rtc/request\n\
             1a879cf995a2262e7c076c0905b0d357188014c17f26f2e85767d4d6e5515408"
        );
        assert_eq!(
            s.signature,
            "b05dddf4068b16ba0b601bf530af6db6c6666419fd437e182f7f673cc2d0a390"
        );
        assert_eq!(
            s.x_content_sha256,
            "9accbb9607b308723ba4314e67d45080a68c033662e40c4b4b79f7eb161b0697"
        );
    }

    #[test]
    fn full_set_without_content_type_omits_it() {
        let req = Request {
            method: "GET",
            host: "127.0.0.1:8080",
            path: "",
            query: &[],
            content_type: None,
            body: b"",
        };
        let s = sign(&req, &RTC_CREDS, "20250102T030405Z");
        assert_eq!(s.signed_headers, "host;x-content-sha256;x-date");
        assert_eq!(s.canonical_query, "");
        assert!(s
            .canonical_request
            .starts_with("GET\n/\n\nhost:127.0.0.1:8080\n"));
    }

    #[test]
    fn escapes_reserved_and_keeps_unreserved() {
        assert_eq!(canonical_query(&[("k", "AZaz09-_.~")]), "k=AZaz09-_.~");
        assert_eq!(
            canonical_query(&[("k", " +*/=&%?#!'()")]),
            "k=%20%2B%2A%2F%3D%26%25%3F%23%21%27%28%29"
        );
    }

    #[test]
    fn escapes_utf8_as_uppercase_hex_bytes() {
        assert_eq!(
            canonical_query(&[("név", "é😀")]),
            "n%C3%A9v=%C3%A9%F0%9F%98%80"
        );
    }

    #[test]
    fn empty_values_and_keys() {
        assert_eq!(canonical_query(&[("b", ""), ("a", "")]), "a=&b=");
        assert_eq!(canonical_query(&[]), "");
    }

    #[test]
    fn sorts_by_key_bytes_and_keeps_duplicate_order() {
        assert_eq!(
            canonical_query(&[("a", "2"), ("B", "x"), ("a", "1"), ("a b", "y"), ("_", "z")]),
            // 'B' (0x42) < '_' (0x5F) < 'a' (0x61); "a" < "a b"; duplicates keep input order
            "B=x&_=z&a=2&a=1&a%20b=y"
        );
    }

    #[test]
    fn header_values_are_trimmed() {
        let req = Request {
            method: "POST",
            host: " rtc.volcengineapi.com ",
            path: "/",
            query: &[],
            content_type: Some("  application/json\t"),
            body: b"",
        };
        let s = sign(&req, &RTC_CREDS, "20250102T030405Z");
        assert!(s
            .canonical_request
            .contains("\ncontent-type:application/json\nhost:rtc.volcengineapi.com\n"));
    }

    #[test]
    fn x_date_formats_utc() {
        assert_eq!(x_date(0).as_deref(), Some("19700101T000000Z"));
        assert_eq!(x_date(1_735_787_045).as_deref(), Some("20250102T030405Z"));
        assert_eq!(x_date(1_718_781_186).as_deref(), Some("20240619T071306Z"));
        assert_eq!(x_date(253_402_300_799).as_deref(), Some("99991231T235959Z"));
        assert_eq!(x_date(253_402_300_800), None);
        assert_eq!(x_date(i64::MAX), None);
    }

    #[test]
    fn secret_never_in_output() {
        let req = Request {
            method: "GET",
            host: "rtc.volcengineapi.com",
            path: "/",
            query: &[("Action", "GetRoomOnlineUsers")],
            content_type: None,
            body: b"",
        };
        let s = sign(&req, &RTC_CREDS, "20250102T030405Z");
        let secret = RTC_CREDS.secret_access_key;
        assert!(!format!("{s:?}").contains(secret));
        let dbg = format!("{RTC_CREDS:?}");
        assert!(!dbg.contains(secret));
        assert!(dbg.contains("<redacted>"));
        assert!(dbg.contains("AKLTexampleAccessKeyId"));
    }
}

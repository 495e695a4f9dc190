//! TC3-HMAC-SHA256 check of the simulated Tencent Cloud API gateway.
//!
//! Written from vendors.md §3 and Tencent's signature v3 page, with no code shared with any
//! client signer, so that a canonicalisation bug in one does not hide the same bug in the other.
//! Only `POST /` with the body as payload is handled (the simulator refuses other methods
//! before it gets here), so the canonical request always starts `POST\n/\n\n`.
//!
//! Order of checks, and the error code each failure maps to:
//!
//! 1. `Authorization` absent → `MissingParameter`; not `TC3-HMAC-SHA256 Credential=ID/DATE/
//!    SERVICE/tc3_request, SignedHeaders=..., Signature=...` → `AuthFailure.SignatureFailure`.
//! 2. SecretId unknown → `AuthFailure.SecretIdNotFound`.
//! 3. `X-TC-Timestamp` absent → `MissingParameter`; not an integer →
//!    `AuthFailure.SignatureFailure`; more than 300 s away from now, either way →
//!    `AuthFailure.SignatureExpire`.
//! 4. Everything else → `AuthFailure.SignatureFailure`: scope date not the UTC date of the
//!    timestamp, scope service or terminator wrong, `SignedHeaders` neither `content-type;host`
//!    nor `content-type;host;x-tc-action`, a signed header absent, or the recomputed signature
//!    differs (compared in constant time).
//!
//! Canonical header values are trimmed and lower-cased, as Tencent's page says ("头部 key 和
//! value 统一转成小写，并去掉首尾空格"); the action is therefore lower-cased too.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Largest accepted distance, in seconds, between `X-TC-Timestamp` and the server clock.
pub const MAX_SKEW_SECONDS: i64 = 300;

/// The two accepted `SignedHeaders` lists: the SDKs' and the current documentation's.
const SIGNED_HEADERS: [&str; 2] = ["content-type;host", "content-type;host;x-tc-action"];

/// A request as the simulated gateway received it (method `POST`, path `/`).
pub struct Incoming<'a> {
    /// Header lookup by lower-case name.
    pub header: &'a dyn Fn(&str) -> Option<String>,
    /// The request body exactly as received.
    pub body: &'a [u8],
}

/// Why the gateway refused a request. Contains no secret material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `Response.Error.Code`.
    pub code: &'static str,
    /// `Response.Error.Message`.
    pub message: String,
}

/// `AuthFailure.SignatureFailure`.
pub const SIGNATURE_FAILURE: &str = "AuthFailure.SignatureFailure";
/// `AuthFailure.SignatureExpire`.
pub const SIGNATURE_EXPIRE: &str = "AuthFailure.SignatureExpire";
/// `AuthFailure.SecretIdNotFound`.
pub const SECRET_ID_NOT_FOUND: &str = "AuthFailure.SecretIdNotFound";
/// `MissingParameter`.
pub const MISSING_PARAMETER: &str = "MissingParameter";

fn reject(code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        message: message.into(),
    }
}

/// Checks the request's TC3-HMAC-SHA256 signature.
///
/// `secret_for` maps a SecretId to its SecretKey (`None`: unknown); `service` is what the
/// credential scope must name (`"trtc"`); `now_unix` is the server clock. Returns the SecretId
/// of a correctly signed request.
pub fn verify(
    req: &Incoming<'_>,
    secret_for: &dyn Fn(&str) -> Option<String>,
    service: &str,
    now_unix: i64,
) -> Result<String, Rejection> {
    // 1. Authorization
    let authorization = (req.header)("authorization")
        .ok_or_else(|| reject(MISSING_PARAMETER, "The Authorization header is missing"))?;
    let auth = parse_authorization(&authorization).ok_or_else(|| {
        reject(
            SIGNATURE_FAILURE,
            "The Authorization header is malformed; expected `TC3-HMAC-SHA256 \
             Credential=SecretId/Date/Service/tc3_request, SignedHeaders=..., Signature=...`",
        )
    })?;

    // 2. SecretId
    let secret = secret_for(auth.secret_id).ok_or_else(|| {
        reject(
            SECRET_ID_NOT_FOUND,
            format!("The SecretId `{}` is not found", auth.secret_id),
        )
    })?;

    // 3. Timestamp
    let raw_ts = (req.header)("x-tc-timestamp")
        .ok_or_else(|| reject(MISSING_PARAMETER, "The X-TC-Timestamp header is missing"))?;
    let raw_ts = raw_ts.trim();
    let ts: i64 = raw_ts
        .parse()
        .ok()
        .filter(|_| raw_ts.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            reject(
                SIGNATURE_FAILURE,
                format!("X-TC-Timestamp `{raw_ts}` is not Unix seconds"),
            )
        })?;
    let skew = ts.abs_diff(now_unix);
    if skew > MAX_SKEW_SECONDS.unsigned_abs() {
        return Err(reject(
            SIGNATURE_EXPIRE,
            format!(
                "X-TC-Timestamp {ts} is {skew} s away from the server time {now_unix}; at most \
                 {MAX_SKEW_SECONDS} s are allowed"
            ),
        ));
    }

    // 4a. Credential scope
    let date =
        utc_date(ts).ok_or_else(|| reject(SIGNATURE_FAILURE, "X-TC-Timestamp is out of range"))?;
    if auth.date != date || auth.service != service || auth.terminator != "tc3_request" {
        return Err(reject(
            SIGNATURE_FAILURE,
            format!(
                "Credential scope `{}/{}/{}` should be `{date}/{service}/tc3_request`",
                auth.date, auth.service, auth.terminator
            ),
        ));
    }

    // 4b. Signed headers
    if !SIGNED_HEADERS.contains(&auth.signed_headers) {
        return Err(reject(
            SIGNATURE_FAILURE,
            format!(
                "SignedHeaders `{}` must be `content-type;host` or \
                 `content-type;host;x-tc-action`",
                auth.signed_headers
            ),
        ));
    }
    let mut canonical_headers = String::new();
    for name in auth.signed_headers.split(';') {
        let value = (req.header)(name).ok_or_else(|| {
            reject(
                SIGNATURE_FAILURE,
                format!("The signed header `{name}` is missing"),
            )
        })?;
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&value.trim().to_ascii_lowercase());
        canonical_headers.push('\n');
    }

    // 4c. Signature
    let canonical_request = format!(
        "POST\n/\n\n{canonical_headers}\n{}\n{}",
        auth.signed_headers,
        hex::encode(Sha256::digest(req.body))
    );
    let string_to_sign = format!(
        "TC3-HMAC-SHA256\n{raw_ts}\n{date}/{service}/tc3_request\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = mac(format!("TC3{secret}").as_bytes(), date.as_bytes());
    let k_service = mac(&k_date, service.as_bytes());
    let k_signing = mac(&k_service, b"tc3_request");
    let given = hex::decode(auth.signature).ok().filter(|_| {
        auth.signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    let mut m = hmac_of(&k_signing);
    m.update(string_to_sign.as_bytes());
    match given {
        Some(sig) if m.verify_slice(&sig).is_ok() => Ok(auth.secret_id.to_string()),
        _ => Err(reject(
            SIGNATURE_FAILURE,
            format!(
                "The signature does not match; the string to sign was `{}`",
                string_to_sign.replace('\n', "\\n")
            ),
        )),
    }
}

struct Authorization<'h> {
    secret_id: &'h str,
    date: &'h str,
    service: &'h str,
    terminator: &'h str,
    signed_headers: &'h str,
    signature: &'h str,
}

fn parse_authorization(header: &str) -> Option<Authorization<'_>> {
    let rest = header.trim().strip_prefix("TC3-HMAC-SHA256 ")?;
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
        secret_id: scope.next()?,
        date: scope.next()?,
        service: scope.next()?,
        terminator: scope.next()?,
        signed_headers: signed_headers?,
        signature: signature?,
    };
    if scope.next().is_some() || auth.secret_id.is_empty() || auth.signature.is_empty() {
        return None;
    }
    Some(auth)
}

/// The UTC date of a Unix time, `YYYY-MM-DD`.
fn utc_date(ts: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(ts, 0).map(|t| t.format("%Y-%m-%d").to_string())
}

fn hmac_of(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 accepts any key length"),
    }
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = hmac_of(key);
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CVM_ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
    const CVM_KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
    const CVM_TS: i64 = 1_551_113_065;
    const CVM_BODY: &[u8] =
        br#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
    const CVM_SIG: &str = "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168";

    const TRTC_ID: &str = "AKIDexampleSecretId";
    const TRTC_KEY: &str = "exampleSecretKey";
    const TRTC_TS: i64 = 1_735_787_045;
    const TRTC_BODY: &[u8] = br#"{"SdkAppId": 1400000001, "StartTime": 1735700645, "EndTime": 1735787045, "PageNumber": 0, "PageSize": 100}"#;
    const TRTC_SIG: &str = "76727108bc9fc9fb3fc2223c8bc3118588f618421d41ce5b93d70b273011cef5";
    const TRTC_SIG_ACTION: &str =
        "ced8e6412af34be1484123abf218c6239016aff2f88c41a7fa49f3c4f1dcbdff";

    /// Headers of one request, run through [`verify`].
    struct Case {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        secret_id: &'static str,
        secret_key: String,
        service: &'static str,
    }

    impl Case {
        fn new(
            host: &str,
            content_type: &str,
            action: &str,
            ts: i64,
            auth: String,
            body: &[u8],
        ) -> Self {
            let headers = [
                ("content-type", content_type.to_string()),
                ("host", host.to_string()),
                ("x-tc-action", action.to_string()),
                ("x-tc-timestamp", ts.to_string()),
                ("authorization", auth),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            Case {
                headers,
                body: body.to_vec(),
                secret_id: TRTC_ID,
                secret_key: TRTC_KEY.to_string(),
                service: "trtc",
            }
        }

        /// The published trtc DescribeRoomInfo vector, with `signed` and `signature`.
        fn trtc(signed: &str, signature: &str) -> Self {
            Self::new(
                "trtc.tencentcloudapi.com",
                "application/json",
                "DescribeRoomInfo",
                TRTC_TS,
                format!(
                    "TC3-HMAC-SHA256 Credential={TRTC_ID}/2025-01-02/trtc/tc3_request, \
                     SignedHeaders={signed}, Signature={signature}"
                ),
                TRTC_BODY,
            )
        }

        fn set(mut self, name: &str, value: &str) -> Self {
            self.headers.retain(|(k, _)| k != name);
            self.headers.push((name.to_string(), value.to_string()));
            self
        }

        fn without(mut self, name: &str) -> Self {
            self.headers.retain(|(k, _)| k != name);
            self
        }

        fn run_at(&self, now: i64) -> Result<String, Rejection> {
            let lookup = |name: &str| {
                self.headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            let req = Incoming {
                header: &lookup,
                body: &self.body,
            };
            let id = self.secret_id;
            let key = self.secret_key.clone();
            let secret_for = move |s: &str| (s == id).then(|| key.clone());
            verify(&req, &secret_for, self.service, now)
        }

        fn run(&self) -> Result<String, Rejection> {
            self.run_at(TRTC_TS)
        }
    }

    fn code(r: Result<String, Rejection>) -> &'static str {
        match r {
            Ok(id) => panic!("expected a rejection, got Ok({id})"),
            Err(e) => e.code,
        }
    }

    #[test]
    fn published_cvm_vector_verifies() {
        let mut case = Case::new(
            "cvm.tencentcloudapi.com",
            "application/json; charset=utf-8",
            "DescribeInstances",
            CVM_TS,
            format!(
                "TC3-HMAC-SHA256 Credential={CVM_ID}/2019-02-25/cvm/tc3_request, \
                 SignedHeaders=content-type;host, Signature={CVM_SIG}"
            ),
            CVM_BODY,
        );
        case.secret_id = CVM_ID;
        case.secret_key = CVM_KEY.to_string();
        case.service = "cvm";
        assert_eq!(case.run_at(CVM_TS), Ok(CVM_ID.to_string()));
        // The same request checked as trtc fails on the scope.
        case.service = "trtc";
        assert_eq!(code(case.run_at(CVM_TS)), SIGNATURE_FAILURE);
    }

    #[test]
    fn published_trtc_vectors_verify() {
        let plain = Case::trtc("content-type;host", TRTC_SIG);
        assert_eq!(plain.run(), Ok(TRTC_ID.to_string()));
        let with_action = Case::trtc("content-type;host;x-tc-action", TRTC_SIG_ACTION);
        assert_eq!(with_action.run(), Ok(TRTC_ID.to_string()));
        // Header values are trimmed and lower-cased; the signature is lower-case hex.
        let blanks = Case::trtc("content-type;host", TRTC_SIG)
            .set("content-type", " Application/JSON ")
            .set("host", "TRTC.tencentcloudapi.com");
        assert_eq!(blanks.run(), Ok(TRTC_ID.to_string()));
        let upper = Case::trtc("content-type;host", &TRTC_SIG.to_uppercase());
        assert_eq!(code(upper.run()), SIGNATURE_FAILURE);
    }

    #[test]
    fn the_action_is_signed_only_when_listed() {
        // Another action: the plain variant does not sign it, the other does.
        let plain =
            Case::trtc("content-type;host", TRTC_SIG).set("x-tc-action", "DescribeUserInfo");
        assert!(plain.run().is_ok());
        let signed = Case::trtc("content-type;host;x-tc-action", TRTC_SIG_ACTION)
            .set("x-tc-action", "DescribeUserInfo");
        assert_eq!(code(signed.run()), SIGNATURE_FAILURE);
        let absent =
            Case::trtc("content-type;host;x-tc-action", TRTC_SIG_ACTION).without("x-tc-action");
        assert_eq!(code(absent.run()), SIGNATURE_FAILURE);
    }

    #[test]
    fn one_byte_changes_are_rejected() {
        let mut body = Case::trtc("content-type;host", TRTC_SIG);
        body.body[1] = b'X';
        assert_eq!(code(body.run()), SIGNATURE_FAILURE);
        let mut key = Case::trtc("content-type;host", TRTC_SIG);
        key.secret_key.push('x');
        assert_eq!(code(key.run()), SIGNATURE_FAILURE);
        let mut sig = TRTC_SIG.to_string();
        sig.replace_range(0..1, "8");
        assert_eq!(
            code(Case::trtc("content-type;host", &sig).run()),
            SIGNATURE_FAILURE
        );
        let host = Case::trtc("content-type;host", TRTC_SIG).set("host", "127.0.0.1:1");
        assert_eq!(code(host.run()), SIGNATURE_FAILURE);
        let short = Case::trtc("content-type;host", &TRTC_SIG[..62]);
        assert_eq!(code(short.run()), SIGNATURE_FAILURE);
    }

    #[test]
    fn other_signed_header_lists_are_rejected() {
        for signed in [
            "host;content-type",
            "content-type",
            "content-type;host;x-tc-timestamp",
            "",
        ] {
            let case = Case::trtc(signed, TRTC_SIG);
            assert_eq!(code(case.run()), SIGNATURE_FAILURE, "{signed}");
        }
    }

    #[test]
    fn authorization_absent_or_garbled() {
        let absent = Case::trtc("content-type;host", TRTC_SIG).without("authorization");
        assert_eq!(code(absent.run()), MISSING_PARAMETER);
        for garbled in [
            "HMAC-SHA256 Credential=a/b/c/d, SignedHeaders=x, Signature=y".to_string(),
            format!("TC3-HMAC-SHA256 Credential={TRTC_ID}/2025-01-02/trtc, SignedHeaders=content-type;host, Signature={TRTC_SIG}"),
            format!("TC3-HMAC-SHA256 Credential={TRTC_ID}/2025-01-02/trtc/tc3_request/x, SignedHeaders=content-type;host, Signature={TRTC_SIG}"),
            format!("TC3-HMAC-SHA256 Credential={TRTC_ID}/2025-01-02/trtc/tc3_request, SignedHeaders=content-type;host"),
            format!("TC3-HMAC-SHA256 Credential={TRTC_ID}/2025-01-02/trtc/tc3_request, Signature={TRTC_SIG}, Signature={TRTC_SIG}, SignedHeaders=content-type;host"),
            "garbage".to_string(),
        ] {
            let case = Case::trtc("content-type;host", TRTC_SIG).set("authorization", &garbled);
            assert_eq!(code(case.run()), SIGNATURE_FAILURE, "{garbled}");
        }
    }

    #[test]
    fn unknown_secret_id_before_the_clock() {
        let mut case = Case::trtc("content-type;host", TRTC_SIG);
        case.secret_id = "AKIDsomeoneElse";
        assert_eq!(code(case.run_at(TRTC_TS + 10_000)), SECRET_ID_NOT_FOUND);
    }

    #[test]
    fn skew_over_300_s_expires() {
        let case = Case::trtc("content-type;host", TRTC_SIG);
        assert!(case.run_at(TRTC_TS + 300).is_ok());
        assert!(case.run_at(TRTC_TS - 300).is_ok());
        assert_eq!(code(case.run_at(TRTC_TS + 301)), SIGNATURE_EXPIRE);
        assert_eq!(code(case.run_at(TRTC_TS - 301)), SIGNATURE_EXPIRE);
        let absent = Case::trtc("content-type;host", TRTC_SIG).without("x-tc-timestamp");
        assert_eq!(code(absent.run()), MISSING_PARAMETER);
        for bad in ["1735787045.0", "-1", "abc", ""] {
            let case = Case::trtc("content-type;host", TRTC_SIG).set("x-tc-timestamp", bad);
            assert_eq!(code(case.run()), SIGNATURE_FAILURE, "{bad}");
        }
    }

    #[test]
    fn scope_must_match_the_timestamp_and_service() {
        for scope in [
            "2025-01-03/trtc/tc3_request",
            "2025-01-02/cvm/tc3_request",
            "2025-01-02/trtc/request",
            "20250102/trtc/tc3_request",
        ] {
            let auth = format!(
                "TC3-HMAC-SHA256 Credential={TRTC_ID}/{scope}, \
                 SignedHeaders=content-type;host, Signature={TRTC_SIG}"
            );
            let case = Case::trtc("content-type;host", TRTC_SIG).set("authorization", &auth);
            assert_eq!(code(case.run()), SIGNATURE_FAILURE, "{scope}");
        }
    }

    #[test]
    fn rejection_messages_never_contain_the_secret() {
        let mut case = Case::trtc("content-type;host", &"0".repeat(64));
        case.secret_key = "verySecretKeyValue123".to_string();
        let e = case.run().err().map(|e| e.message).unwrap_or_default();
        assert!(e.contains("string to sign"), "{e}");
        assert!(!e.contains("verySecretKeyValue123"), "{e}");
    }
}

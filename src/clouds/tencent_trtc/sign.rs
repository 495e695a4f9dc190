//! TC3-HMAC-SHA256, Tencent Cloud API 3.0 signing (vendors.md §3), as a pure function.
//!
//! ```text
//! CanonicalRequest = Method \n / \n Query \n CanonicalHeaders \n SignedHeaders \n hex(sha256(payload))
//!   CanonicalHeaders: "content-type:<v>\nhost:<v>\n" [+ "x-tc-action:<action, lower case>\n"]
//! StringToSign = "TC3-HMAC-SHA256" \n Timestamp \n Date/service/tc3_request \n hex(sha256(CanonicalRequest))
//! kDate = HMAC("TC3" + SecretKey, Date); kService = HMAC(kDate, service);
//! kSigning = HMAC(kService, "tc3_request"); Signature = hex(HMAC(kSigning, StringToSign))
//! ```
//!
//! The SDKs sign `content-type;host`; the current documentation adds `x-tc-action`. The
//! exporter signs the latter; both are tested against the published vectors.

use std::fmt;

use chrono::DateTime;

use crate::clouds::util::{hmac_sha256, sha256_hex};

/// The algorithm name.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";

/// What is signed.
pub struct Request<'a> {
    /// `POST` (the query is then empty).
    pub method: &'a str,
    /// The `Host` header as sent (`host[:port]`).
    pub host: &'a str,
    /// The action, e.g. `DescribeRoomInfo`.
    pub action: &'a str,
    /// The `Content-Type` header as sent.
    pub content_type: &'a str,
    /// The body.
    pub payload: &'a [u8],
    /// `X-TC-Timestamp`, Unix seconds.
    pub timestamp: i64,
    /// The service, `trtc`.
    pub service: &'a str,
    /// Sign `x-tc-action` too.
    pub sign_action: bool,
}

/// A signature and what it was computed from (secret-free, for debugging a mismatch).
pub struct Signed {
    /// The `Authorization` header.
    pub authorization: String,
    /// The canonical request.
    pub canonical_request: String,
    /// The string to sign.
    pub string_to_sign: String,
    /// The signature, lower-case hex.
    pub signature: String,
}

impl fmt::Debug for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("string_to_sign", &self.string_to_sign)
            .finish_non_exhaustive()
    }
}

/// The UTC date of a timestamp, `YYYY-MM-DD`.
pub fn date(timestamp: i64) -> String {
    DateTime::from_timestamp(timestamp, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

/// Signs `req` with the secret id and key.
pub fn sign(req: &Request<'_>, secret_id: &str, secret_key: &str) -> Signed {
    let mut headers = format!(
        "content-type:{}\nhost:{}\n",
        req.content_type.trim(),
        req.host.trim()
    );
    let mut signed_headers = "content-type;host".to_string();
    if req.sign_action {
        headers.push_str("x-tc-action:");
        headers.push_str(&req.action.to_ascii_lowercase());
        headers.push('\n');
        signed_headers.push_str(";x-tc-action");
    }
    let canonical_request = format!(
        "{}\n/\n\n{headers}\n{signed_headers}\n{}",
        req.method,
        sha256_hex(req.payload)
    );
    let date = date(req.timestamp);
    let scope = format!("{date}/{}/tc3_request", req.service);
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{scope}\n{}",
        req.timestamp,
        sha256_hex(canonical_request.as_bytes())
    );
    let k_date = hmac_sha256(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k_service = hmac_sha256(&k_date, req.service.as_bytes());
    let k_signing = hmac_sha256(&k_service, b"tc3_request");
    let signature = hex::encode(hmac_sha256(&k_signing, string_to_sign.as_bytes()));
    Signed {
        authorization: format!(
            "{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
        ),
        canonical_request,
        string_to_sign,
        signature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_cvm_vector() {
        let body = r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
        let s = sign(
            &Request {
                method: "POST",
                host: "cvm.tencentcloudapi.com",
                action: "DescribeInstances",
                content_type: "application/json; charset=utf-8",
                payload: body.as_bytes(),
                timestamp: 1551113065,
                service: "cvm",
                sign_action: false,
            },
            "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
            "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
        );
        assert_eq!(
            s.signature,
            "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
        assert!(s
            .string_to_sign
            .starts_with("TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n"));
        assert_eq!(
            s.authorization,
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, SignedHeaders=content-type;host, Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
    }

    fn trtc(sign_action: bool) -> Signed {
        let body = r#"{"SdkAppId": 1400000001, "StartTime": 1735700645, "EndTime": 1735787045, "PageNumber": 0, "PageSize": 100}"#;
        sign(
            &Request {
                method: "POST",
                host: "trtc.tencentcloudapi.com",
                action: "DescribeRoomInfo",
                content_type: "application/json",
                payload: body.as_bytes(),
                timestamp: 1735787045,
                service: "trtc",
                sign_action,
            },
            "AKIDexample",
            "exampleSecretKey",
        )
    }

    #[test]
    fn published_trtc_vector_content_type_and_host() {
        assert_eq!(
            trtc(false).signature,
            "76727108bc9fc9fb3fc2223c8bc3118588f618421d41ce5b93d70b273011cef5"
        );
    }

    #[test]
    fn published_trtc_vector_with_x_tc_action() {
        let s = trtc(true);
        assert!(s
            .canonical_request
            .contains("x-tc-action:describeroominfo\n\ncontent-type;host;x-tc-action\n"));
        assert_eq!(
            s.signature,
            "ced8e6412af34be1484123abf218c6239016aff2f88c41a7fa49f3c4f1dcbdff"
        );
    }

    #[test]
    fn the_secret_is_in_no_output() {
        let s = trtc(true);
        for text in [
            &s.authorization,
            &s.canonical_request,
            &s.string_to_sign,
            &format!("{s:?}"),
        ] {
            assert!(!text.contains("exampleSecretKey"));
        }
    }
}

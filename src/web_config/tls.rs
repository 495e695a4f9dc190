//! `tls_server_config` -> a rustls `ServerConfig` (ring provider), in exporter-toolkit's order of
//! checks, then what rustls cannot do: TLS 1.0/1.1 (min raised to TLS 1.2), CBC and static-RSA
//! cipher suites (dropped), P-521 (dropped); each narrowing is a warning, and a file left with
//! nothing usable is refused naming the key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::ring::{cipher_suite as cs, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme, SupportedCipherSuite, SupportedProtocolVersion,
};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::{Inline, Secret};

/// `tls_server_config` as written, before paths are resolved.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    cert: Option<String>,
    key: Option<Inline>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    cipher_suites: Option<Vec<GoCipher>>,
    curve_preferences: Option<Vec<GoCurve>>,
    min_version: Option<TlsVersion>,
    max_version: Option<TlsVersion>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

/// `tls_server_config`, paths resolved; an empty string is "not set", as in Go.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSection {
    cert: Option<String>,
    key: Option<Secret>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    cipher_suites: Vec<GoCipher>,
    curve_preferences: Vec<GoCurve>,
    min_version: TlsVersion,
    max_version: TlsVersion,
    prefer_server_cipher_suites: bool,
    client_allowed_sans: Option<Vec<String>>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl TlsSection {
    pub(crate) fn from_raw(raw: Option<RawTls>, dir: &Path) -> TlsSection {
        let Some(r) = raw else {
            return TlsSection {
                min_version: TlsVersion::Tls12,
                max_version: TlsVersion::Tls13,
                prefer_server_cipher_suites: true,
                ..TlsSection::default()
            };
        };
        let path = |p: Option<String>| non_empty(p).map(|p| dir.join(p));
        TlsSection {
            cert: non_empty(r.cert),
            key: r.key.map(|Inline(k)| k).filter(|k| !k.expose().is_empty()),
            client_ca: non_empty(r.client_ca),
            cert_file: path(r.cert_file),
            key_file: path(r.key_file),
            client_auth_type: non_empty(r.client_auth_type),
            client_ca_file: path(r.client_ca_file),
            cipher_suites: r.cipher_suites.unwrap_or_default(),
            curve_preferences: r.curve_preferences.unwrap_or_default(),
            min_version: r.min_version.unwrap_or(TlsVersion::Tls12),
            max_version: r.max_version.unwrap_or(TlsVersion::Tls13),
            prefer_server_cipher_suites: r.prefer_server_cipher_suites.unwrap_or(true),
            client_allowed_sans: r.client_allowed_sans,
        }
    }

    /// exporter-toolkit's `IsEnabled`: a cert, key or CA (inline or file) or a client auth type.
    /// Versions, ciphers, curves and SANs alone do not turn TLS on.
    pub(crate) fn enabled(&self) -> bool {
        self.cert.is_some()
            || self.key.is_some()
            || self.client_ca.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.client_ca_file.is_some()
            || self.client_auth_type.is_some()
    }

    /// The files a handshake reads: a change in any of them means "build again".
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        [&self.cert_file, &self.key_file, &self.client_ca_file]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// `min_version` / `max_version`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TlsVersion {
    Tls10,
    Tls11,
    #[default]
    Tls12,
    Tls13,
}

impl TlsVersion {
    const NAMES: [(&'static str, TlsVersion); 4] = [
        ("TLS10", TlsVersion::Tls10),
        ("TLS11", TlsVersion::Tls11),
        ("TLS12", TlsVersion::Tls12),
        ("TLS13", TlsVersion::Tls13),
    ];

    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(n, _)| n)
    }
}

/// Deserializes from a string looked up by `lookup`, or fails with `unknown <what>: <name>`.
fn by_name<'de, D: Deserializer<'de>, T>(
    d: D,
    what: &'static str,
    lookup: fn(&str) -> Option<T>,
) -> Result<T, D::Error> {
    struct V<T> {
        what: &'static str,
        lookup: fn(&str) -> Option<T>,
    }
    impl<T> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a {} name", self.what)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            (self.lookup)(s).ok_or_else(|| E::custom(format!("unknown {}: {s}", self.what)))
        }
    }
    d.deserialize_str(V { what, lookup })
}

fn lookup<T: Copy>(table: &[(&str, T)], name: &str) -> Option<T> {
    table.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        by_name(d, "TLS version", |s| lookup(&TlsVersion::NAMES, s))
    }
}

/// What rustls makes of a Go cipher suite name.
#[derive(Debug, Clone, Copy)]
enum Support {
    /// A TLS 1.3 suite: Go ignores the list for TLS 1.3, and so do we.
    Tls13,
    /// A TLS 1.2 suite rustls (ring) has.
    Tls12(fn() -> SupportedCipherSuite),
    /// CBC or static RSA: rustls has none; dropped with a warning.
    Dropped,
}

/// A cipher suite by its Go name (`tls.CipherSuites()`, static-RSA ones included).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GoCipher {
    name: &'static str,
    support: Support,
}

macro_rules! suite {
    ($s:ident) => {
        Support::Tls12(|| cs::$s)
    };
}

/// Every name Go knows, so "unknown cipher" means an invented one.
const GO_CIPHERS: &[(&str, Support)] = &[
    ("TLS_AES_128_GCM_SHA256", Support::Tls13),
    ("TLS_AES_256_GCM_SHA384", Support::Tls13),
    ("TLS_CHACHA20_POLY1305_SHA256", Support::Tls13),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        suite!(TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        suite!(TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        suite!(TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        suite!(TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        suite!(TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        suite!(TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", Support::Dropped),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", Support::Dropped),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", Support::Dropped),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", Support::Dropped),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", Support::Dropped),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", Support::Dropped),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", Support::Dropped),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", Support::Dropped),
];

impl<'de> Deserialize<'de> for GoCipher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        by_name(d, "cipher", |s| {
            GO_CIPHERS
                .iter()
                .find(|(n, _)| *n == s)
                .map(|(name, support)| GoCipher {
                    name,
                    support: *support,
                })
        })
    }
}

/// `curve_preferences` by Go name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GoCurve {
    P256,
    P384,
    P521,
    X25519,
}

const GO_CURVES: [(&str, GoCurve); 4] = [
    ("CurveP256", GoCurve::P256),
    ("CurveP384", GoCurve::P384),
    ("CurveP521", GoCurve::P521),
    ("X25519", GoCurve::X25519),
];

impl<'de> Deserialize<'de> for GoCurve {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        by_name(d, "curve", |s| lookup(&GO_CURVES, s))
    }
}

/// `client_auth_type`, case-sensitive as in Go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    None,
    Request,
    RequireAny,
    VerifyIfGiven,
    RequireAndVerify,
}

fn client_auth(s: Option<&str>) -> Result<ClientAuth, String> {
    Ok(match s.unwrap_or("") {
        "" | "NoClientCert" => ClientAuth::None,
        "RequestClientCert" => ClientAuth::Request,
        // `RequireClientCert`: exporter-toolkit's old name, still accepted.
        "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAny,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type: invalid ClientAuth: {other}"
            ))
        }
    })
}

/// A built TLS config and what rustls narrowed on the way.
pub(crate) struct Built {
    pub(crate) config: ServerConfig,
    pub(crate) warnings: Vec<String>,
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "tls_server_config.{key}: cannot read {}: {e}",
            path.display()
        )
    })
}

/// Where a PEM came from, for errors: `cert_file: path` or `cert` (inline).
fn origin(key: &str, file_key: &str, file: Option<&PathBuf>) -> String {
    match file {
        Some(p) => format!("tls_server_config.{file_key}: {}", p.display()),
        None => format!("tls_server_config.{key}"),
    }
}

/// exporter-toolkit's `ConfigToTLSConfig`, on rustls: `Ok(None)` when the file enables no TLS.
/// `alpn` is set on the result (the startup decision about HTTP/2).
pub(crate) fn build(t: &TlsSection, alpn: &[Vec<u8>]) -> Result<Option<Built>, String> {
    if !t.enabled() {
        return Ok(None);
    }
    if t.cert_file.is_none() && t.cert.is_none() {
        return Err("tls_server_config: missing one of cert or cert_file".into());
    }
    if t.key_file.is_none() && t.key.is_none() {
        return Err("tls_server_config: missing one of key or key_file".into());
    }
    let mut provider = rustls::crypto::ring::default_provider();

    // The certificate and its key (a file wins over inline text, as in Go).
    let cert_pem = match (&t.cert_file, &t.cert) {
        (Some(p), _) => read("cert_file", p)?,
        (None, Some(c)) => c.as_bytes().to_vec(),
        (None, None) => Vec::new(),
    };
    let key_pem = match (&t.key_file, &t.key) {
        (Some(p), _) => read("key_file", p)?,
        (None, Some(k)) => k.expose().as_bytes().to_vec(),
        (None, None) => Vec::new(),
    };
    let cert_from = origin("cert", "cert_file", t.cert_file.as_ref());
    let key_from = origin("key", "key_file", t.key_file.as_ref());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        // No parser detail: a file holding cert and key together could have it quote the key.
        .map_err(|_| format!("{cert_from}: not valid PEM"))?;
    if chain.is_empty() {
        return Err(format!("{cert_from}: no CERTIFICATE found in the PEM data"));
    }
    // Key errors carry no detail from the parser: they could quote key material.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("{key_from}: no PRIVATE KEY found in the PEM data (PKCS#8, RSA or EC)")
        }
        _ => format!("{key_from}: not valid PEM"),
    })?;
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            format!("{key_from}: the private key does not match the certificate in {cert_from}")
        }
        rustls::Error::InvalidCertificate(c) => {
            format!("{cert_from}: not a usable certificate: {c:?}")
        }
        _ => format!("{key_from}: not a usable private key (RSA, ECDSA P-256/P-384 or Ed25519)"),
    })?;

    // Client CAs: a file wins over inline text; what does not parse is skipped, as in Go.
    let ca_pem = match (&t.client_ca_file, &t.client_ca) {
        (Some(p), _) => Some(read("client_ca_file", p)?),
        (None, Some(c)) => Some(c.as_bytes().to_vec()),
        (None, None) => None,
    };
    let auth = client_auth(t.client_auth_type.as_deref())?;
    if ca_pem.is_some() && auth == ClientAuth::None {
        return Err(
            "tls_server_config: client CA's have been configured without a Client Auth Policy"
                .into(),
        );
    }
    if t.client_allowed_sans.is_some()
        && !matches!(auth, ClientAuth::RequireAny | ClientAuth::RequireAndVerify)
    {
        return Err(
            "tls_server_config.client_allowed_sans: requires client_auth_type to be one \
                    of RequireAnyClientCert or RequireAndVerifyClientCert"
                .into(),
        );
    }

    // From here on: what rustls cannot do.
    let mut warnings = Vec::new();
    let versions = versions(t, &mut warnings)?;
    let tls12 = versions
        .iter()
        .any(|v| v.version == rustls::ProtocolVersion::TLSv1_2);
    if let Some(suites) = cipher_suites(t, tls12, &mut warnings)? {
        provider.cipher_suites = suites;
    }
    if let Some(groups) = curves(t, &mut warnings)? {
        provider.kx_groups = groups;
    }
    let provider = Arc::new(provider);
    let verifier = verifier(t, auth, ca_pem, &provider)?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.ignore_client_order = t.prefer_server_cipher_suites;
    config.alpn_protocols = alpn.to_vec();
    Ok(Some(Built { config, warnings }))
}

fn versions(
    t: &TlsSection,
    warnings: &mut Vec<String>,
) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    if t.max_version < TlsVersion::Tls12 {
        return Err(format!(
            "tls_server_config.max_version: {}: rustls supports only TLS12 and TLS13",
            t.max_version.name()
        ));
    }
    let mut min = t.min_version;
    if min < TlsVersion::Tls12 {
        warnings.push(format!(
            "tls_server_config.min_version: {} raised to TLS12: rustls has no TLS 1.0 or 1.1",
            min.name()
        ));
        min = TlsVersion::Tls12;
    }
    if min > t.max_version {
        return Err(format!(
            "tls_server_config.min_version: {} is above max_version {}",
            min.name(),
            t.max_version.name()
        ));
    }
    let mut out = Vec::new();
    if min <= TlsVersion::Tls12 {
        out.push(&rustls::version::TLS12);
    }
    if t.max_version >= TlsVersion::Tls13 {
        out.push(&rustls::version::TLS13);
    }
    Ok(out)
}

/// The provider's suites for `cipher_suites` (`None`: the list is empty, keep the defaults).
/// TLS 1.3 suites are always all offered: Go ignores the list for TLS 1.3.
fn cipher_suites(
    t: &TlsSection,
    tls12: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<Vec<SupportedCipherSuite>>, String> {
    if t.cipher_suites.is_empty() {
        return Ok(None);
    }
    let mut out: Vec<SupportedCipherSuite> = vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    let mut dropped = Vec::new();
    let mut any12 = false;
    for c in &t.cipher_suites {
        match c.support {
            Support::Tls13 => {}
            Support::Tls12(s) => {
                let s = s();
                if !out.contains(&s) {
                    out.push(s);
                }
                any12 = true;
            }
            Support::Dropped => dropped.push(c.name),
        }
    }
    if !dropped.is_empty() && tls12 {
        warnings.push(format!(
            "tls_server_config.cipher_suites: rustls has no CBC or static-RSA suites; dropped {}",
            dropped.join(", ")
        ));
    }
    if tls12 && !any12 {
        return Err(
            "tls_server_config.cipher_suites: no suite rustls supports for TLS 1.2 remains \
             (rustls has only ECDHE with AES-GCM or CHACHA20-POLY1305); add one, or set \
             min_version: TLS13"
                .into(),
        );
    }
    Ok(Some(out))
}

/// net/http's check before serving HTTP/2 over TLS: a TLS 1.2 cipher list must hold an
/// ECDHE AES-128-GCM suite. Startup only, and only while HTTP/2 is on.
pub(crate) fn http2_cipher_check(t: &TlsSection) -> Result<(), String> {
    if t.cipher_suites.is_empty() || t.min_version >= TlsVersion::Tls13 {
        return Ok(());
    }
    let required = [
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ];
    if t.cipher_suites.iter().any(|c| required.contains(&c.name)) {
        return Ok(());
    }
    Err(
        "tls_server_config.cipher_suites: missing an HTTP/2-required AES_128_GCM_SHA256 cipher \
         (need at least one of TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 or \
         TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256), or set http_server_config.http2: false"
            .into(),
    )
}

fn curves(
    t: &TlsSection,
    warnings: &mut Vec<String>,
) -> Result<Option<Vec<&'static dyn SupportedKxGroup>>, String> {
    if t.curve_preferences.is_empty() {
        return Ok(None);
    }
    let mut out: Vec<&'static dyn SupportedKxGroup> = Vec::new();
    for c in &t.curve_preferences {
        let g: &'static dyn SupportedKxGroup = match c {
            GoCurve::P256 => kx_group::SECP256R1,
            GoCurve::P384 => kx_group::SECP384R1,
            GoCurve::X25519 => kx_group::X25519,
            GoCurve::P521 => continue,
        };
        if !out.iter().any(|o| o.name() == g.name()) {
            out.push(g);
        }
    }
    if out.is_empty() {
        return Err(
            "tls_server_config.curve_preferences: CurveP521 not supported by rustls; \
                    add CurveP256, CurveP384 or X25519"
                .into(),
        );
    }
    if t.curve_preferences.contains(&GoCurve::P521) {
        warnings.push(
            "tls_server_config.curve_preferences: CurveP521 dropped: not supported by rustls"
                .into(),
        );
    }
    Ok(Some(out))
}

/// The client certificate policy; `None` for `NoClientCert`.
fn verifier(
    t: &TlsSection,
    auth: ClientAuth,
    ca_pem: Option<Vec<u8>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, String> {
    let mut roots = RootCertStore::empty();
    if let Some(pem) = &ca_pem {
        roots.add_parsable_certificates(CertificateDer::pem_slice_iter(pem).filter_map(Result::ok));
    }
    let algs = provider.signature_verification_algorithms;
    let inner: Arc<dyn ClientCertVerifier> = match auth {
        ClientAuth::None => return Ok(None),
        ClientAuth::Request | ClientAuth::RequireAny => Arc::new(AnyCert {
            mandatory: auth == ClientAuth::RequireAny,
            hints: roots.subjects(),
            algs,
        }),
        ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify => {
            let system = ca_pem.is_none();
            if system {
                // Go verifies against the system's roots when no CA is given; so do we, and
                // never skip verification when there are none.
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(format!(
                        "tls_server_config.client_auth_type: {} without client_ca_file or \
                         client_ca verifies against the system's CA certificates, and none were \
                         found (set client_ca_file, or SSL_CERT_FILE)",
                        t.client_auth_type.as_deref().unwrap_or("")
                    ));
                }
            } else if roots.is_empty() {
                let key = if t.client_ca_file.is_some() {
                    "client_ca_file"
                } else {
                    "client_ca"
                };
                return Err(format!(
                    "tls_server_config.{key}: no CA certificate could be read from it: rustls \
                     cannot verify client certificates without one"
                ));
            }
            let mut b =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if system {
                // Like Go without ClientCAs: do not list every system CA in the request.
                b = b.clear_root_hint_subjects();
            }
            if auth == ClientAuth::VerifyIfGiven {
                b = b.allow_unauthenticated();
            }
            b.build()
                .map_err(|e| format!("tls_server_config.client_auth_type: {e}"))?
        }
    };
    Ok(Some(match &t.client_allowed_sans {
        Some(allowed) => Arc::new(SanCheck {
            inner,
            allowed: allowed.clone(),
        }),
        None => inner,
    }))
}

/// `RequestClientCert` / `RequireAnyClientCert`: a certificate is asked for (required for the
/// latter) but its chain is not checked; its handshake signature still is.
#[derive(Debug)]
struct AnyCert {
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// `client_allowed_sans`: after the inner policy accepts the chain, one SAN of the leaf (DNS,
/// email, IP or URI, as text) must equal an entry; otherwise a `bad_certificate` alert.
#[derive(Debug)]
struct SanCheck {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for SanCheck {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        // Only RequireAny and RequireAndVerify get here; a missing certificate cannot match.
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = subject_alt_names(end_entity.as_ref()).ok_or(
            rustls::Error::InvalidCertificate(CertificateError::BadEncoding),
        )?;
        if names.iter().any(|n| self.allowed.contains(n)) {
            Ok(ok)
        } else {
            tracing::debug!(
                allowed = ?self.allowed,
                "client certificate has none of the allowed SANs"
            );
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// One DER element: (tag, content, rest). Single-byte tags only (all X.509 needs here).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The subject alternative names of a DER certificate as Go prints them (DNS names, emails,
/// IP addresses, URIs); `None` if the certificate does not parse that far.
pub(crate) fn subject_alt_names(cert: &[u8]) -> Option<Vec<String>> {
    const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];
    let (0x30, cert, _) = der(cert)? else {
        return None;
    };
    let (0x30, mut tbs, _) = der(cert)? else {
        return None;
    };
    let mut out = Vec::new();
    while !tbs.is_empty() {
        let (tag, content, rest) = der(tbs)?;
        tbs = rest;
        if tag != 0xa3 {
            continue;
        }
        let (0x30, mut exts, _) = der(content)? else {
            return None;
        };
        while !exts.is_empty() {
            let (_, ext, rest) = der(exts)?;
            exts = rest;
            let (0x06, oid, mut fields) = der(ext)? else {
                return None;
            };
            if oid != SAN_OID {
                continue;
            }
            // An optional `critical` BOOLEAN, then the OCTET STRING holding GeneralNames.
            let mut value = None;
            while !fields.is_empty() {
                let (tag, content, rest) = der(fields)?;
                fields = rest;
                if tag == 0x04 {
                    value = Some(content);
                }
            }
            let (0x30, mut names, _) = der(value?)? else {
                return None;
            };
            while !names.is_empty() {
                let (tag, content, rest) = der(names)?;
                names = rest;
                match tag {
                    // rfc822Name, dNSName, uniformResourceIdentifier: IA5String.
                    0x81 | 0x82 | 0x86 => {
                        if let Ok(s) = std::str::from_utf8(content) {
                            out.push(s.to_string());
                        }
                    }
                    0x87 => {
                        if let Ok(b) = <[u8; 4]>::try_from(content) {
                            out.push(std::net::Ipv4Addr::from(b).to_string());
                        } else if let Ok(b) = <[u8; 16]>::try_from(content) {
                            let v6 = std::net::Ipv6Addr::from(b);
                            // Go prints an IPv4-mapped address as IPv4.
                            out.push(match v6.to_ipv4_mapped() {
                                Some(v4) => v4.to_string(),
                                None => v6.to_string(),
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(yaml: &str) -> TlsSection {
        let raw: RawTls = serde_yaml::from_str(yaml).unwrap();
        TlsSection::from_raw(Some(raw), Path::new("/etc"))
    }

    fn self_signed() -> (String, String) {
        let k = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&k)
            .unwrap();
        (c.pem(), k.serialize_pem())
    }

    fn inline(extra: &str) -> TlsSection {
        let (cert, key) = self_signed();
        let indent = |s: &str| s.replace('\n', "\n    ");
        section(&format!(
            "cert: |\n    {}\nkey: |\n    {}\n{extra}",
            indent(cert.trim_end()),
            indent(key.trim_end())
        ))
    }

    #[test]
    fn what_turns_tls_on() {
        assert!(!section("min_version: TLS13\ncipher_suites: [TLS_AES_128_GCM_SHA256]\ncurve_preferences: [X25519]\nclient_allowed_sans: [a]\n").enabled());
        assert!(section("client_auth_type: RequestClientCert").enabled());
        assert!(section("client_ca: x").enabled());
        assert!(!section("cert_file: \"\"").enabled());
    }

    #[test]
    fn check_order_follows_exporter_toolkit() {
        let e = |y: &str| build(&section(y), &[]).err().unwrap();
        assert_eq!(
            e("client_auth_type: x"),
            "tls_server_config: missing one of cert or cert_file"
        );
        assert_eq!(
            e("cert_file: c.pem"),
            "tls_server_config: missing one of key or key_file"
        );
        assert!(e("cert_file: nonexistent.pem\nkey_file: k.pem")
            .starts_with("tls_server_config.cert_file: cannot read /etc/nonexistent.pem: "));
        assert_eq!(
            build(&inline("client_auth_type: x"), &[]).err().unwrap(),
            "tls_server_config.client_auth_type: invalid ClientAuth: x"
        );
        assert_eq!(
            build(&inline("client_ca: junk"), &[]).err().unwrap(),
            "tls_server_config: client CA's have been configured without a Client Auth Policy"
        );
        assert!(build(&inline("client_ca_file: /nonexistent/ca.pem"), &[])
            .err()
            .unwrap()
            .starts_with("tls_server_config.client_ca_file: cannot read /nonexistent/ca.pem"));
    }

    #[test]
    fn rustls_narrowing() {
        let b = build(&inline("min_version: TLS10"), &[]).unwrap().unwrap();
        assert!(b.warnings[0].contains("raised to TLS12"));
        assert!(build(&inline("max_version: TLS11"), &[])
            .err()
            .unwrap()
            .contains("rustls supports only TLS12 and TLS13"));
        assert!(
            build(&inline("min_version: TLS13\nmax_version: TLS12"), &[])
                .err()
                .unwrap()
                .contains("above max_version")
        );
        let all: Vec<&str> = GO_CIPHERS.iter().map(|(n, _)| *n).collect();
        let b = build(
            &inline(&format!("cipher_suites: [{}]", all.join(", "))),
            &[],
        )
        .unwrap()
        .unwrap();
        assert!(b.warnings[0].contains("dropped TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"));
        assert_eq!(b.config.crypto_provider().cipher_suites.len(), 9);
        let e = build(
            &inline("cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]"),
            &[],
        )
        .err()
        .unwrap();
        assert!(e.contains("no suite rustls supports for TLS 1.2"), "{e}");
        // With TLS 1.3 only, the list does not matter (Go ignores it for TLS 1.3).
        assert!(build(
            &inline("min_version: TLS13\ncipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]"),
            &[]
        )
        .is_ok());
        let b = build(
            &inline("curve_preferences: [CurveP256, CurveP384, CurveP521, X25519]"),
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!(b.config.crypto_provider().kx_groups.len(), 3);
        assert!(b.warnings[0].contains("CurveP521 dropped"));
        assert!(build(&inline("curve_preferences: [CurveP521]"), &[])
            .err()
            .unwrap()
            .contains("CurveP521 not supported by rustls"));
    }

    #[test]
    fn http2_needs_aes_128_gcm_with_a_tls12_cipher_list() {
        let t =
            section("cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\nmax_version: TLS12");
        assert!(http2_cipher_check(&t)
            .unwrap_err()
            .contains("missing an HTTP/2-required AES_128_GCM_SHA256 cipher"));
        let t = section("cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]");
        assert!(http2_cipher_check(&t).is_ok());
        let t =
            section("cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\nmin_version: TLS13");
        assert!(http2_cipher_check(&t).is_ok());
        assert!(http2_cipher_check(&section("{}")).is_ok());
    }

    #[test]
    fn unknown_names_are_named() {
        let e = |y: &str| serde_yaml::from_str::<RawTls>(y).err().unwrap().to_string();
        assert!(e("cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA2048]")
            .contains("unknown cipher: TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA2048"));
        assert!(e("curve_preferences: [CurveP257]").contains("unknown curve: CurveP257"));
        assert!(e("min_version: TLS111").contains("unknown TLS version: TLS111"));
    }

    #[test]
    fn san_extraction() {
        let k = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![
            rcgen::SanType::DnsName("test3".try_into().unwrap()),
            rcgen::SanType::Rfc822Name("ops@example.com".try_into().unwrap()),
            rcgen::SanType::IpAddress("10.1.2.3".parse().unwrap()),
            rcgen::SanType::IpAddress("2001:db8::1".parse().unwrap()),
            rcgen::SanType::URI("spiffe://cluster/ns/monitoring".try_into().unwrap()),
        ];
        let c = p.self_signed(&k).unwrap();
        assert_eq!(
            subject_alt_names(c.der()).unwrap(),
            vec![
                "test3",
                "ops@example.com",
                "10.1.2.3",
                "2001:db8::1",
                "spiffe://cluster/ns/monitoring"
            ]
        );
        let none = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&k)
            .unwrap();
        assert_eq!(subject_alt_names(none.der()).unwrap(), Vec::<String>::new());
        // Truncated or junk input: None, never a panic.
        let der = c.der().to_vec();
        for cut in [0, 1, 2, 10, der.len() / 2, der.len() - 1] {
            let _ = subject_alt_names(&der[..cut]);
        }
        assert_eq!(subject_alt_names(b"\x30\x84\xff\xff\xff\xff"), None);
    }
}

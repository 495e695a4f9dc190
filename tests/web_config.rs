//! `--web.config.file`, `--web.max-connections` and `--web.max-requests` over real sockets:
//! fixtures (each `tests/fixtures/web/*.bad.yml` fails with exactly its `# error:` line), HTTPS
//! with basic auth, client certificates, changes on disk without a restart, TLS versions, ciphers
//! and curves, HTTP/2 by ALPN, the connection and request limits, idle, silent and slow clients
//! (closed by the header timeout, never keeping a scrape waiting), clients that do not take their
//! response (closed by the response timeout), and a real Prometheus scraping through TLS.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rtc_exporter::app::{self, Running, ServeOptions};
use rtc_exporter::web_config;
use rustls::crypto::ring::{cipher_suite as cs, kx_group};
use rustls::crypto::SupportedKxGroup;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, ClientConfig, SupportedCipherSuite, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use common::wait_for;

const FIXTURES: &str = "tests/fixtures/web";

/// An exporter config whose one target fails fast (nothing listens on port 9): `/metrics` still
/// serves the exporter's own series, which is all these tests need.
const EXPORTER: &str = "targets:
  - name: t
    vendor: ucloud_urtc
    app_id: a
    endpoint: http://127.0.0.1:9
    credentials: { public_key: p, private_key: k }
";

fn fixtures(suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no {suffix} fixtures");
    v
}

#[test]
fn ok_fixtures_start_and_bad_fixtures_fail_with_exactly_their_message() {
    for path in fixtures(".ok.yml") {
        if let Err(e) = web_config::Guard::start(&path) {
            panic!("{}: {e}", path.display());
        }
    }
    for path in fixtures(".bad.yml") {
        let text = std::fs::read_to_string(&path).unwrap();
        let expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# error: "))
            .map(|m| format!("{}: {m}", path.display()))
            .collect();
        assert_eq!(expected.len(), 1, "{} names its error", path.display());
        let got = web_config::Guard::start(&path).unwrap_err().to_string();
        assert_eq!(got, expected[0]);
        assert!(!got.contains("hunter2") && !got.contains("4609123456789"));
    }
    let missing = Path::new("tests/fixtures/web/nonexistent.yml");
    assert_eq!(
        web_config::Guard::start(missing).unwrap_err().to_string(),
        "tests/fixtures/web/nonexistent.yml: cannot read: No such file or directory (os error 2)"
    );
}

/// exporter-toolkit's `Validate` passes a cipher list without AES-128-GCM; only serving HTTP/2
/// refuses it (net/http's check), and with `http2: false` it serves.
#[test]
fn the_http2_cipher_check_is_a_serve_time_check() {
    let s =
        web_config::validate(Path::new("tests/fixtures/web/h2-without-aes128.bad.yml")).unwrap();
    assert!(s.tls && s.http2);
    let g = web_config::Guard::start(Path::new("tests/fixtures/web/no-http2.ok.yml")).unwrap();
    assert!(g.tls() && !g.summary().http2);
}

fn exporter() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rtc-exporter"))
}

#[test]
fn config_check_checks_the_web_config_file() {
    let out = exporter()
        .args([
            "--config.check",
            "--config.file=tests/fixtures/config/minimal.ok.yaml",
            "--web.config.file=tests/fixtures/web/tls-files.ok.yml",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("tests/fixtures/web/tls-files.ok.yml: OK, TLS on, HTTP/2 on"),
        "{stdout}"
    );
    let out = exporter()
        .args([
            "--config.check",
            "--config.file=tests/fixtures/config/minimal.ok.yaml",
            "--web.config.file=tests/fixtures/web/client-auth-invalid.bad.yml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tests/fixtures/web/client-auth-invalid.bad.yml: tls_server_config.client_auth_type: invalid ClientAuth: x"), "{stderr}");
    let out = exporter()
        .args(["--web.max-connections=0", "--config.check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "0 connections is refused");
    for bad in ["--web.max-requests=-1", "--web.max-requests=many"] {
        let out = exporter().args([bad, "--config.check"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
    let out = exporter()
        .args(["--web.max-requests=3", "demo"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "the demo takes no limits");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not use --web.max-requests"));
}

/// A bad file stops the binary before it serves, naming the file and the key.
#[test]
fn a_bad_file_at_startup_is_a_clear_error() {
    let dir = scratch("startup");
    std::fs::write(dir.join("exporter.yaml"), EXPORTER).unwrap();
    std::fs::write(
        dir.join("web.yml"),
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  min_version: TLS14\n",
    )
    .unwrap();
    let out = exporter()
        .arg(format!(
            "--config.file={}",
            dir.join("exporter.yaml").display()
        ))
        .arg(format!(
            "--web.config.file={}",
            dir.join("web.yml").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0")
        .output()
        .unwrap();
    // 78 (EX_CONFIG): the unit does not restart on it.
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: tls_server_config.min_version: unknown TLS version: TLS14",
            dir.join("web.yml").display()
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Certificates and a TLS client.

struct Identity {
    cert_pem: String,
    key_pem: String,
}

impl Identity {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }
    fn key(&self) -> PrivateKeyDer<'static> {
        use rustls::pki_types::pem::PemObject;
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap()
    }
}

/// A CA, a server certificate for 127.0.0.1 and localhost, client certificates from the CA
/// (SAN `prometheus`, SAN `intruder`) and one from a stranger.
struct Pki {
    ca_pem: String,
    server: Identity,
    client: Identity,
    intruder: Identity,
    stranger: Identity,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Identity {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, sans[0]);
    p.extended_key_usages = vec![usage];
    let cert = p.signed_by(&key, issuer).unwrap();
    Identity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn pki() -> Pki {
    let ca = new_ca("rtc-exporter test CA");
    let other = new_ca("someone else's CA");
    Pki {
        ca_pem: ca.pem(),
        server: leaf(
            &ca,
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        client: leaf(&ca, &["prometheus"], ExtendedKeyUsagePurpose::ClientAuth),
        intruder: leaf(&ca, &["intruder"], ExtendedKeyUsagePurpose::ClientAuth),
        stranger: leaf(&other, &["prometheus"], ExtendedKeyUsagePurpose::ClientAuth),
    }
}

/// A fresh directory holding the CA and the server's cert and key.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rtc-exporter-web-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_pki(dir: &Path, pki: &Pki) {
    std::fs::write(dir.join("ca.pem"), &pki.ca_pem).unwrap();
    std::fs::write(dir.join("server.pem"), &pki.server.cert_pem).unwrap();
    std::fs::write(dir.join("server.key"), &pki.server.key_pem).unwrap();
}

/// Replaces the web config as an operator's tooling would: a new file renamed over the old.
fn write_web(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("web.yml");
    let tmp = dir.join("web.yml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

const TLS: &str = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n";

async fn start(dir: &Path, web: &str, max_connections: usize) -> Running {
    let path = write_web(dir, web);
    let options = ServeOptions {
        web_config: Some(path),
        max_connections,
        ..ServeOptions::new(&["127.0.0.1:0".to_string()], "/metrics")
    };
    app::start_with(common::config(EXPORTER), options)
        .await
        .expect("exporter starts")
}

struct Client {
    versions: Vec<&'static SupportedProtocolVersion>,
    suites: Option<Vec<SupportedCipherSuite>>,
    groups: Option<Vec<&'static dyn SupportedKxGroup>>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: Vec<Vec<u8>>,
}

impl Client {
    fn new() -> Client {
        Client {
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            suites: None,
            groups: None,
            identity: None,
            alpn: Vec::new(),
        }
    }
    fn with_cert(mut self, id: &Identity) -> Client {
        self.identity = Some((id.chain(), id.key()));
        self
    }
    fn config(self, pki: &Pki) -> Arc<ClientConfig> {
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(s) = self.suites {
            provider.cipher_suites = s;
        }
        if let Some(g) = self.groups {
            provider.kx_groups = g;
        }
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        roots
            .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let b = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&self.versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut c = match self.identity {
            Some((chain, key)) => b.with_client_auth_cert(chain, key).unwrap(),
            None => b.with_no_client_auth(),
        };
        c.alpn_protocols = self.alpn;
        Arc::new(c)
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn handshake(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// One HTTP/1.1 response: status, headers (lower-case names), body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn request(path: &str, auth: Option<(&str, &str)>, close: bool) -> String {
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
    if close {
        r.push_str("Connection: close\r\n");
    }
    if let Some((u, p)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        r.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    r.push_str("\r\n");
    r
}

/// Reads one response (headers, then `Content-Length` bytes).
async fn read_reply<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Reply> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    path: &str,
    auth: Option<(&str, &str)>,
) -> std::io::Result<Reply> {
    s.write_all(request(path, auth, false).as_bytes()).await?;
    s.flush().await?;
    read_reply(s).await
}

/// GET over a new TLS connection.
async fn https_get(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
    auth: Option<(&str, &str)>,
) -> std::io::Result<Reply> {
    let mut tls = handshake(addr, config).await?;
    exchange(&mut tls, path, auth).await
}

/// The TLS alert behind a failed connection or request, if it was one.
fn alert(result: &std::io::Result<Reply>) -> Option<AlertDescription> {
    let e = result.as_ref().err()?;
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(a) => Some(*a),
        _ => None,
    }
}

fn bcrypt4(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn https_with_basic_auth_and_headers() {
    let (dir, pki) = (scratch("auth"), pki());
    write_pki(&dir, &pki);
    let web = format!(
        "{TLS}http_server_config:\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\nbasic_auth_users:\n  dave: {}\n",
        bcrypt4("right")
    );
    let running = start(&dir, &web, 512).await;
    assert!(running.url().starts_with("https://127.0.0.1:"));
    let addr = running.addrs[0];
    let client = Client::new().config(&pki);

    let ok = https_get(addr, client.clone(), "/metrics", Some(("dave", "right")))
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    assert!(ok.body.contains("rtc_exporter_build_info"), "{}", ok.body);
    assert_eq!(ok.header("x-frame-options"), Some("deny"));
    assert_eq!(
        ok.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    for auth in [
        Some(("dave", "wrong")),
        None,
        Some(("nobody", "right")),
        Some(("", "")),
    ] {
        let r = https_get(addr, client.clone(), "/metrics", auth)
            .await
            .unwrap();
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.header("www-authenticate"), Some("Basic"));
        assert_eq!(
            r.header("x-frame-options"),
            Some("deny"),
            "headers on 401 too"
        );
        assert_eq!(r.body, "Unauthorized\n");
    }
    // Every path is behind the gate, health included.
    let r = https_get(addr, client.clone(), "/-/healthy", None)
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    // A remembered login still needs the right password.
    for password in ["right", "wrong", "right"] {
        let r = https_get(addr, client.clone(), "/-/healthy", Some(("dave", password)))
            .await
            .unwrap();
        assert_eq!(r.status == 200, password == "right");
    }
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn client_certificates_and_allowed_sans() {
    let (dir, pki) = (scratch("mtls"), pki());
    write_pki(&dir, &pki);
    let web = format!("{TLS}  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans: [prometheus, 10.9.8.7]\n");
    let running = start(&dir, &web, 512).await;
    let addr = running.addrs[0];

    let without = https_get(addr, Client::new().config(&pki), "/metrics", None).await;
    assert_eq!(
        alert(&without),
        Some(AlertDescription::CertificateRequired),
        "{without:?}"
    );
    let with = https_get(
        addr,
        Client::new().with_cert(&pki.client).config(&pki),
        "/metrics",
        None,
    )
    .await
    .unwrap();
    assert_eq!(with.status, 200);
    let stranger = https_get(
        addr,
        Client::new().with_cert(&pki.stranger).config(&pki),
        "/metrics",
        None,
    )
    .await;
    assert_eq!(
        alert(&stranger),
        Some(AlertDescription::UnknownCA),
        "{stranger:?}"
    );
    // Signed by the CA, but its SAN is not allowed: bad_certificate, as in Go.
    let intruder = https_get(
        addr,
        Client::new().with_cert(&pki.intruder).config(&pki),
        "/metrics",
        None,
    )
    .await;
    assert_eq!(
        alert(&intruder),
        Some(AlertDescription::BadCertificate),
        "{intruder:?}"
    );
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn changes_on_disk_apply_without_a_restart() {
    let (dir, pki) = (scratch("reload"), pki());
    write_pki(&dir, &pki);
    let dave = format!("basic_auth_users:\n  dave: {}\n", bcrypt4("d"));
    let carol = format!("  carol: {}\n", bcrypt4("c"));
    let running = start(&dir, &format!("{TLS}{dave}"), 512).await;
    let addr = running.addrs[0];
    let client = Client::new().config(&pki);
    let get = |auth| {
        let client = client.clone();
        async move {
            https_get(addr, client, "/metrics", auth)
                .await
                .unwrap()
                .status
        }
    };
    assert_eq!(get(Some(("dave", "d"))).await, 200);
    assert_eq!(get(Some(("carol", "c"))).await, 401);

    // A user added: honoured by the next request.
    write_web(&dir, &format!("{TLS}{dave}{carol}"));
    assert_eq!(get(Some(("carol", "c"))).await, 200);
    assert_eq!(get(Some(("dave", "d"))).await, 200);

    // Client certificates become required: the next handshake without one fails...
    let verify = |policy: &str| {
        format!("{TLS}  client_ca_file: ca.pem\n  client_auth_type: {policy}\n{dave}")
    };
    write_web(&dir, &verify("RequireAndVerifyClientCert"));
    let r = https_get(addr, client.clone(), "/metrics", Some(("dave", "d"))).await;
    assert_eq!(
        alert(&r),
        Some(AlertDescription::CertificateRequired),
        "{r:?}"
    );
    // ... and succeeds again once they are optional.
    write_web(&dir, &verify("VerifyClientCertIfGiven"));
    assert_eq!(get(Some(("dave", "d"))).await, 200);

    // A new server certificate on disk is served by the next handshake.
    let ca2 = new_ca("rotated CA");
    let rotated = leaf(&ca2, &["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(dir.join("server.key"), &rotated.key_pem).unwrap();
    std::fs::write(dir.join("server.pem"), &rotated.cert_pem).unwrap();
    let old_ca = https_get(addr, client.clone(), "/metrics", Some(("dave", "d"))).await;
    assert!(
        old_ca.is_err(),
        "the rotated certificate is served: {old_ca:?}"
    );
    let pki2 = Pki {
        ca_pem: ca2.pem(),
        ..pki
    };
    let r = https_get(
        addr,
        Client::new().config(&pki2),
        "/metrics",
        Some(("dave", "d")),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);

    // A broken file: handshakes fail (nothing to build a TLS config from) until it is fixed.
    write_web(&dir, "tls_server_config: [oops\n");
    assert!(
        https_get(addr, Client::new().config(&pki2), "/metrics", None)
            .await
            .is_err()
    );
    write_web(&dir, &format!("{TLS}{dave}"));
    assert_eq!(
        https_get(
            addr,
            Client::new().config(&pki2),
            "/metrics",
            Some(("dave", "d"))
        )
        .await
        .unwrap()
        .status,
        200
    );
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn plain_http_with_headers_users_and_a_broken_file() {
    let dir = scratch("plain");
    let web = format!(
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n    Content-Security-Policy: default-src 'self'\nbasic_auth_users:\n  dave: {}\n",
        bcrypt4("d")
    );
    let running = start(&dir, &web, 512).await;
    assert!(running.url().starts_with("http://"));
    let base = running.url();
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{base}/metrics"))
        .basic_auth("dave", Some("d"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["content-security-policy"], "default-src 'self'");
    let r = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // The file breaks: every request is a 500 until it is fixed.
    write_web(&dir, "basic_auth_users: [\n");
    let r = client
        .get(format!("{base}/metrics"))
        .basic_auth("dave", Some("d"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.text().await.unwrap(), "Internal Server Error\n");
    write_web(&dir, &web);
    let r = client
        .get(format!("{base}/metrics"))
        .basic_auth("dave", Some("d"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn rate_limit_with_burst_0_refuses_every_request_without_the_headers() {
    let dir = scratch("ratelimit");
    let web = "rate_limit:\n  interval: 1s\n  burst: 0\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n";
    let running = start(&dir, web, 512).await;
    for _ in 0..3 {
        let r = reqwest::get(format!("{}/metrics", running.url()))
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        assert!(r.headers().get("x-frame-options").is_none());
        assert_eq!(r.text().await.unwrap(), "Too Many Requests\n");
    }
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn http2_by_alpn_unless_disabled_and_400_for_plain_http() {
    let (dir, pki) = (scratch("h2"), pki());
    write_pki(&dir, &pki);
    let alpn = |pki: &Pki| {
        let mut c = Client::new();
        c.alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        c.config(pki)
    };
    let running = start(&dir, TLS, 512).await;
    let addr = running.addrs[0];
    let tls = handshake(addr, alpn(&pki)).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    // Plain HTTP on the TLS port: net/http's 400.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request("/metrics", None, true).as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(
            "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server."
        ),
        "{answer}"
    );
    running.stop().await.unwrap();

    let running = start(
        &dir,
        &format!("{TLS}http_server_config:\n  http2: false\n"),
        512,
    )
    .await;
    let mut tls = handshake(running.addrs[0], alpn(&pki)).await.unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(b"http/1.1".as_slice())
    );
    assert_eq!(
        exchange(&mut tls, "/metrics", None).await.unwrap().status,
        200
    );
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tls_versions_ciphers_and_curves() {
    let (dir, pki) = (scratch("ciphers"), pki());
    write_pki(&dir, &pki);
    let get = |running: &Running, c: Client| {
        https_get(running.addrs[0], c.config(&pki), "/-/healthy", None)
    };
    let only12 = || Client {
        versions: vec![&rustls::version::TLS12],
        ..Client::new()
    };
    let ecdsa = |suites: &[SupportedCipherSuite]| Client {
        suites: Some(suites.to_vec()),
        ..only12()
    };

    // Defaults: a TLS 1.2 client is served; with min_version TLS13 it is refused.
    let running = start(&dir, TLS, 512).await;
    assert_eq!(get(&running, only12()).await.unwrap().status, 200);
    running.stop().await.unwrap();
    let running = start(&dir, &format!("{TLS}  min_version: TLS13\n"), 512).await;
    let r = get(&running, only12()).await;
    assert_eq!(alert(&r), Some(AlertDescription::ProtocolVersion), "{r:?}");
    running.stop().await.unwrap();

    // No common cipher: handshake_failure (HTTP/2 off: this list lacks its AES-128-GCM suite).
    let web = format!(
        "{TLS}  max_version: TLS12\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\nhttp_server_config:\n  http2: false\n"
    );
    let running = start(&dir, &web, 512).await;
    let r = get(
        &running,
        ecdsa(&[cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]),
    )
    .await;
    assert_eq!(alert(&r), Some(AlertDescription::HandshakeFailure), "{r:?}");
    running.stop().await.unwrap();

    // Cipher choice, exporter-toolkit's cases: the client offers AES-128 then AES-256; the
    // server lists [128, 256] preferring its order, or [256, 128] following the client's.
    for (list, prefer) in [("128, 256", true), ("256, 128", false)] {
        let name = |bits: &str| match bits {
            "128" => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            _ => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        };
        let names: Vec<&str> = list.split(", ").map(name).collect();
        let web = format!(
            "{TLS}  max_version: TLS12\n  cipher_suites: [{}]\n  prefer_server_cipher_suites: {prefer}\n",
            names.join(", ")
        );
        let running = start(&dir, &web, 512).await;
        let client = ecdsa(&[
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ]);
        let tls = handshake(running.addrs[0], client.config(&pki))
            .await
            .unwrap();
        let suite = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(
            suite,
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            "[{list}] prefer_server_cipher_suites: {prefer}"
        );
        running.stop().await.unwrap();
    }

    // Curves: TLS 1.3 with P-384 only; a P-384 client is served, an X25519-only one is not.
    let web = format!("{TLS}  min_version: TLS13\n  curve_preferences: [CurveP384]\n");
    let running = start(&dir, &web, 512).await;
    let groups = |g: &'static dyn SupportedKxGroup| Client {
        groups: Some(vec![g]),
        ..Client::new()
    };
    assert_eq!(
        get(&running, groups(kx_group::SECP384R1))
            .await
            .unwrap()
            .status,
        200
    );
    let r = get(&running, groups(kx_group::X25519)).await;
    assert_eq!(alert(&r), Some(AlertDescription::HandshakeFailure), "{r:?}");
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// An exporter on loopback with these serving options (plain HTTP unless `web` is given).
async fn start_with(dir: &Path, web: Option<&str>, options: ServeOptions) -> Running {
    let options = ServeOptions {
        web_config: web.map(|w| write_web(dir, w)),
        ..options
    };
    app::start_with(common::config(EXPORTER), options)
        .await
        .expect("exporter starts")
}

fn options() -> ServeOptions {
    ServeOptions::new(&["127.0.0.1:0".to_string()], "/metrics")
}

/// The ALPN `h2` client.
fn h2_client(pki: &Pki) -> Arc<ClientConfig> {
    let mut c = Client::new();
    c.alpn = vec![b"h2".to_vec()];
    c.config(pki)
}

/// A scrape over HTTP/2 whose body cannot move (the client grants no flow-control window): its
/// response head arrives and the request stays in flight until this is dropped.
struct StalledScrape {
    status: u16,
    _body: h2::RecvStream,
    _send: h2::client::SendRequest<bytes::Bytes>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for StalledScrape {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn stalled_scrape(addr: SocketAddr, pki: &Pki) -> StalledScrape {
    let tls = handshake(addr, h2_client(pki)).await.unwrap();
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tls)
        .await
        .unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut send = send.ready().await.unwrap();
    let request = hyper::Request::get(format!("https://{addr}/metrics"))
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    StalledScrape {
        status: response.status().as_u16(),
        _body: response.into_body(),
        _send: send,
        driver,
    }
}

/// `--web.max-requests` counts scrapes until their body is sent, over every connection: beyond
/// it a scrape gets promhttp's 503 at once, other paths are served, and a slot frees when a
/// scrape ends.
#[tokio::test]
async fn max_requests_answers_503_at_once_beyond_the_scrapes_in_flight() {
    let (dir, pki) = (scratch("max-requests"), pki());
    write_pki(&dir, &pki);
    let running = start_with(
        &dir,
        Some(TLS),
        ServeOptions {
            max_requests: 2,
            ..options()
        },
    )
    .await;
    let addr = running.addrs[0];
    let client = Client::new().config(&pki);
    let first = stalled_scrape(addr, &pki).await;
    let second = stalled_scrape(addr, &pki).await;
    assert_eq!((first.status, second.status), (200, 200));
    let refused = https_get(addr, client.clone(), "/metrics", None)
        .await
        .unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused.body,
        "Limit of concurrent requests reached (2), try again later.\n"
    );
    assert_eq!(refused.header("x-content-type-options"), Some("nosniff"));
    let health = https_get(addr, client.clone(), "/-/healthy", None)
        .await
        .unwrap();
    assert_eq!(health.status, 200, "only scrapes count");
    drop(first);
    let served = wait_for("a scrape slot to free", Duration::from_secs(10), || {
        let client = client.clone();
        async move {
            let r = https_get(addr, client, "/metrics", None).await.ok()?;
            (r.status == 200).then_some(r)
        }
    })
    .await;
    assert!(served.body.contains("rtc_exporter_build_info"));
    drop(second);
    running.stop().await.unwrap();

    // 0: no limit.
    let running = start_with(
        &dir,
        Some(TLS),
        ServeOptions {
            max_requests: 0,
            ..options()
        },
    )
    .await;
    let addr = running.addrs[0];
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(stalled_scrape(addr, &pki).await);
    }
    let r = https_get(addr, client, "/metrics", None).await.unwrap();
    assert_eq!(r.status, 200);
    drop(stalled);
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that does not take its response (here an HTTP/2 window of 0) holds its scrape
/// slot only until the response timeout (1 s here): then its connection is closed.
#[tokio::test]
async fn a_response_not_taken_in_time_frees_its_slots() {
    let (dir, pki) = (scratch("response-timeout"), pki());
    write_pki(&dir, &pki);
    let running = start_with(
        &dir,
        Some(TLS),
        ServeOptions {
            max_requests: 1,
            response_timeout: Duration::from_secs(1),
            ..options()
        },
    )
    .await;
    let addr = running.addrs[0];
    let client = Client::new().config(&pki);
    let stalled = stalled_scrape(addr, &pki).await;
    assert_eq!(stalled.status, 200);
    let held = https_get(addr, client.clone(), "/metrics", None)
        .await
        .unwrap();
    assert_eq!(held.status, 503, "the stalled scrape holds the only slot");
    let served = wait_for(
        "the stalled scrape to be dropped",
        Duration::from_secs(15),
        || {
            let client = client.clone();
            async move {
                let r = https_get(addr, client, "/metrics", None).await.ok()?;
                (r.status == 200).then_some(r)
            }
        },
    )
    .await;
    assert!(served.body.contains("rtc_exporter_build_info"));
    wait_for(
        "the stalled connection to close",
        Duration::from_secs(15),
        || {
            let closed = stalled.driver.is_finished();
            async move { closed.then_some(()) }
        },
    )
    .await;
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Beyond `--web.max-connections`, an idle connection gives its slot to a newcomer, while one
/// with a request in flight keeps it: the newcomer then waits, unserved, and is served once
/// the request ends.
#[tokio::test]
async fn max_connections_keep_a_newcomer_waiting_only_behind_requests_in_flight() {
    let (dir, pki) = (scratch("max-connections"), pki());
    write_pki(&dir, &pki);
    let running = start_with(
        &dir,
        Some(TLS),
        ServeOptions {
            max_connections: 1,
            ..options()
        },
    )
    .await;
    let addr = running.addrs[0];
    let client = Client::new().config(&pki);

    // An idle keep-alive connection holds the only slot; a newcomer is served at once and the
    // idle one is closed for it.
    let mut idle = handshake(addr, client.clone()).await.unwrap();
    assert_eq!(
        exchange(&mut idle, "/-/healthy", None)
            .await
            .unwrap()
            .status,
        200
    );
    let newcomer = tokio::time::timeout(
        Duration::from_secs(10),
        https_get(addr, client.clone(), "/-/healthy", None),
    )
    .await
    .expect("served beside an idle connection")
    .unwrap();
    assert_eq!(newcomer.status, 200);
    tokio::time::timeout(Duration::from_secs(10), until_closed(&mut idle, b""))
        .await
        .expect("the idle connection is closed");

    // A scrape in flight holds the slot: a newcomer waits, not even through its handshake...
    let stalled = stalled_scrape(addr, &pki).await;
    assert_eq!(stalled.status, 200);
    let mut waiting = Box::pin(https_get(addr, client.clone(), "/-/healthy", None));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "a newcomer was served beyond the limit"
    );
    // ... until the scrape ends.
    drop(stalled);
    let reply = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("served once the scrape ended")
        .unwrap();
    assert_eq!(reply.status, 200);
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends `dribble` a byte a second and reads whatever comes, until the server closes the
/// connection (end of stream or an error).
async fn until_closed<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, dribble: &[u8]) {
    let mut dribble = dribble.iter();
    loop {
        if let Some(b) = dribble.next() {
            if s.write_all(&[*b]).await.is_err() || s.flush().await.is_err() {
                return;
            }
        }
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
}

/// The start of a ClientHello: a handshake record announcing 200 bytes, one sent.
const HELLO_START: &[u8] = &[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01];
/// What a slowloris sends, a byte a second: a request head that never ends.
const SLOWLORIS: &[u8] =
    b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-a: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
/// The HTTP/2 client preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The kinds of connections that hold a slot without a request in flight, each as a task that
/// keeps it open (dribbling) until the server closes it. `tls`: the exporter serves TLS.
async fn hostile(addr: SocketAddr, pki: &Pki, tls: bool) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let spawn =
        |tasks: &mut Vec<_>, f: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
            tasks.push(tokio::spawn(f))
        };
    for _ in 0..2 {
        // A TCP connection that sends nothing.
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        spawn(
            &mut tasks,
            Box::pin(async move { until_closed(&mut tcp, b"").await }),
        );
        if tls {
            // A TLS handshake that never completes.
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(HELLO_START).await.unwrap();
            spawn(
                &mut tasks,
                Box::pin(async move { until_closed(&mut tcp, b"").await }),
            );
            // A slowloris over TLS (the server may have closed it for a newcomer already).
            if let Ok(mut s) = handshake(addr, Client::new().config(pki)).await {
                spawn(
                    &mut tasks,
                    Box::pin(async move { until_closed(&mut s, SLOWLORIS).await }),
                );
            }
            // HTTP/2: the preface, then nothing.
            if let Ok(mut s) = handshake(addr, h2_client(pki)).await {
                let _ = s.write_all(H2_PREFACE).await;
                spawn(
                    &mut tasks,
                    Box::pin(async move { until_closed(&mut s, b"").await }),
                );
            }
            // A keep-alive client after one request.
            if let Ok(mut s) = handshake(addr, Client::new().config(pki)).await {
                let _ = exchange(&mut s, "/-/healthy", None).await;
                spawn(
                    &mut tasks,
                    Box::pin(async move { until_closed(&mut s, b"").await }),
                );
            }
        } else {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            spawn(
                &mut tasks,
                Box::pin(async move { until_closed(&mut tcp, SLOWLORIS).await }),
            );
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let _ = exchange(&mut tcp, "/-/healthy", None).await;
            spawn(
                &mut tasks,
                Box::pin(async move { until_closed(&mut tcp, b"").await }),
            );
        }
    }
    tasks
}

/// More idle and slow connections than `--web.max-connections=2` (silent TCP, a TLS handshake
/// that never completes, slowloris, an HTTP/2 preface alone, idle keep-alive clients), all
/// still open on the client's side, and header timeouts far from over: scrapes are answered.
#[tokio::test]
async fn idle_and_slow_connections_never_keep_a_scrape_waiting() {
    let (dir, pki) = (scratch("hostile"), pki());
    write_pki(&dir, &pki);
    let limited = || ServeOptions {
        max_connections: 2,
        ..options()
    };
    for tls in [true, false] {
        let running = start_with(&dir, tls.then_some(TLS), limited()).await;
        let addr = running.addrs[0];
        let tasks = hostile(addr, &pki, tls).await;
        for _ in 0..3 {
            let scrape = async {
                if tls {
                    https_get(addr, Client::new().config(&pki), "/metrics", None).await
                } else {
                    let mut tcp = TcpStream::connect(addr).await?;
                    exchange(&mut tcp, "/metrics", None).await
                }
            };
            let r = tokio::time::timeout(Duration::from_secs(10), scrape)
                .await
                .unwrap_or_else(|_| panic!("tls {tls}: a scrape not answered within 10 s"))
                .unwrap();
            assert_eq!(r.status, 200);
            assert!(r.body.contains("rtc_exporter_build_info"));
        }
        for t in tasks {
            t.abort();
        }
        running.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// With room to spare (no newcomer asks for their slots), connections that send no request
/// are closed by the header timeout (1 s here): silent TCP, an unfinished TLS handshake, a
/// slowloris, HTTP/2 with the preface alone or nothing at all, keep-alive after a response.
#[tokio::test]
async fn silent_slow_and_idle_connections_are_closed_after_the_header_timeout() {
    let (dir, pki) = (scratch("header-timeout"), pki());
    write_pki(&dir, &pki);
    let quick = || ServeOptions {
        header_timeout: Duration::from_secs(1),
        ..options()
    };
    for tls in [true, false] {
        let running = start_with(&dir, tls.then_some(TLS), quick()).await;
        let addr = running.addrs[0];
        let mut tasks = hostile(addr, &pki, tls).await;
        if tls {
            let mut s = handshake(addr, h2_client(&pki)).await.unwrap();
            tasks.push(tokio::spawn(async move { until_closed(&mut s, b"").await }));
        }
        let n = tasks.len();
        for (i, t) in tasks.into_iter().enumerate() {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .unwrap_or_else(|_| {
                    panic!("tls {tls}: connection {i} of {n} still open after 20 s")
                })
                .unwrap();
        }
        running.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// With no `client_ca_file`, `VerifyClientCertIfGiven` verifies against the system's CAs (here
/// `SSL_CERT_FILE`, for the binary only), never against nothing.
#[tokio::test]
async fn without_a_client_ca_the_system_roots_verify() {
    let (dir, pki) = (scratch("system-roots"), pki());
    write_pki(&dir, &pki);
    std::fs::write(dir.join("exporter.yaml"), EXPORTER).unwrap();
    let web = write_web(
        &dir,
        &format!("{TLS}  client_auth_type: VerifyClientCertIfGiven\n"),
    );
    let port = free_port();
    let _child = KillOnDrop(
        exporter()
            .arg(format!(
                "--config.file={}",
                dir.join("exporter.yaml").display()
            ))
            .arg(format!("--web.config.file={}", web.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.max-connections=4")
            .env("SSL_CERT_FILE", dir.join("ca.pem"))
            .env_remove("SSL_CERT_DIR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let with = wait_for("the exporter to serve TLS", Duration::from_secs(30), || {
        let config = Client::new().with_cert(&pki.client).config(&pki);
        async move { https_get(addr, config, "/-/healthy", None).await.ok() }
    })
    .await;
    assert_eq!(with.status, 200);
    let without = https_get(addr, Client::new().config(&pki), "/-/healthy", None)
        .await
        .unwrap();
    assert_eq!(without.status, 200, "the certificate is optional");
    let stranger = https_get(
        addr,
        Client::new().with_cert(&pki.stranger).config(&pki),
        "/-/healthy",
        None,
    )
    .await;
    assert_eq!(
        alert(&stranger),
        Some(AlertDescription::UnknownCA),
        "{stranger:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real Prometheus scrapes the exporter over TLS (HTTP/2 enabled) with basic auth: `up` is 1
/// with the right password and 0 with a wrong one.
#[tokio::test]
async fn a_real_prometheus_scrapes_through_tls_with_basic_auth() {
    let (dir, pki) = (scratch("prometheus"), pki());
    write_pki(&dir, &pki);
    let web = format!(
        "{TLS}basic_auth_users:\n  prometheus: {}\n",
        bcrypt4("s3cret")
    );
    let running = start(&dir, &web, 512).await;
    let target = running.addrs[0];
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    enable_http2: true\n    tls_config: {{ ca_file: \"{}\" }}\n    basic_auth: {{ username: prometheus, password: \"{password}\" }}\n    static_configs: [{{ targets: [\"{target}\"] }}]\n",
            dir.join("ca.pem").display()
        )
    };
    let config = format!(
        "global: {{ scrape_interval: 1s }}\nscrape_configs:\n{}{}",
        job("good", "s3cret"),
        job("wrong-password", "nope")
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let _prom = KillOnDrop(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (Debian: apt-get install prometheus)"),
    );
    let api = format!("http://127.0.0.1:{port}/api/v1/query");
    let up = wait_for(
        "Prometheus to scrape both jobs",
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let r = reqwest::Client::new()
                    .get(&api)
                    .query(&[("query", "up")])
                    .send()
                    .await
                    .ok()?;
                let v: serde_json::Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
                let mut by_job = Vec::new();
                for s in v["data"]["result"].as_array()? {
                    let job = s["metric"]["job"].as_str()?.to_string();
                    by_job.push((job, s["value"][1].as_str()?.to_string()));
                }
                by_job.sort();
                (by_job.len() == 2 && by_job.iter().any(|(j, v)| j == "good" && v == "1"))
                    .then_some(by_job)
            }
        },
    )
    .await;
    assert_eq!(
        up,
        vec![
            ("good".to_string(), "1".to_string()),
            ("wrong-password".to_string(), "0".to_string())
        ]
    );
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

//! Real etcd servers for the tests: one member, or a cluster bootstrapped statically, each member
//! on loopback ports of its own (free ports, never etcd's default 2379/2380, so a system etcd
//! neither serves a test nor is disturbed by one), with its data directory and its log in a temp
//! dir. The binary is `etcd` on the `PATH` (Debian: `apt-get install etcd-server`), or
//! `RTC_ETCD`. Where it is missing a test says it is skipped and passes; with
//! `RTC_REQUIRE_ETCD=1` (CI), or `RTC_ETCD` set, it fails instead.
//!
//! Dropping an [`Etcd`] kills every member it started and removes its temp dir, also when the
//! test panics (then the members' logs are kept and their path printed). Each member also runs
//! under `setpriv --pdeathsig KILL` where util-linux has it, so a test process killed outright
//! takes its members with it: the signal follows the thread that started the member, so start
//! members from the test's own thread or a runtime worker, not from `spawn_blocking`.
//!
//! The key-value helpers speak etcd's JSON gateway on the client port (etcd 3.4 and later:
//! `POST /v3/kv/range`, `/v3/kv/put`, `/v3/kv/deleterange`, `/v3/lease/leases`, keys and values
//! in base64), to any member that runs and is not paused, retried for a while (an election after
//! a member is killed takes a second or two); a refused request fails the test at once.
//! [`Etcd::enable_auth`] turns etcd's authentication on, with a user confined to a prefix;
//! [`Etcd::cluster_tls`] serves the client URLs on TLS and requires a client certificate.
//! Waits and timeouts run on the real clock: a test that pauses tokio's clock cannot use this.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::time::Instant;

/// How long a start (first boot or restart) may take until the members are healthy.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a member may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// One HTTP request to one member (a paused member answers nothing).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// One `/health` request.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a key-value helper keeps trying the live members before it fails the test.
const RETRY_FOR: Duration = Duration::from_secs(10);
/// First boots with fresh ports when a port was taken between choosing it and etcd binding it.
const BOOT_ATTEMPTS: usize = 3;
/// Log lines quoted in a failure.
const TAIL_LINES: usize = 25;

/// The root user's password once [`Etcd::enable_auth`] has turned authentication on.
pub const ROOT_PASSWORD: &str = "rtc-test-root";

/// Numbers each `Etcd` of a test process: its temp dir and cluster token.
static SEQ: AtomicUsize = AtomicUsize::new(0);

/// One etcd member or a statically bootstrapped cluster of them.
pub struct Etcd {
    binary: String,
    dir: PathBuf,
    cluster_token: String,
    /// Where the client URLs are on TLS, the certificates.
    tls: Option<TlsFiles>,
    members: Vec<Member>,
    http: reqwest::Client,
    /// Whether etcd authentication is on (the helpers then authenticate as root).
    auth: bool,
    /// The root user's token, once authenticated.
    auth_token: std::sync::Mutex<Option<String>>,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    paused: bool,
}

/// Why a wait for healthy members ended early.
enum NotReady {
    /// Member `i` exited; `clash` when its log says a port was taken.
    Exited(usize, ExitStatus, bool),
    TimedOut(String),
}

/// Why a request to a member failed.
enum Failure {
    /// Refused (4xx): the same request fails again.
    Fatal(String),
    /// The token is unknown to the member (401).
    Unauthenticated(String),
    /// No answer, or no leader yet (5xx): worth another try.
    Retry(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Fatal(e) | Failure::Unauthenticated(e) | Failure::Retry(e) => f.write_str(e),
        }
    }
}

/// The etcd binary, or `None` after a line saying the test is skipped (a failure instead under
/// `RTC_REQUIRE_ETCD=1` or `RTC_ETCD`).
pub fn binary() -> Option<String> {
    let (binary, named) = match std::env::var("RTC_ETCD") {
        Ok(b) if !b.is_empty() => (b, true),
        _ => ("etcd".to_string(), false),
    };
    let required = named || std::env::var("RTC_REQUIRE_ETCD").is_ok_and(|v| v == "1");
    let why = match Command::new(&binary).arg("--version").output() {
        Ok(o) if o.status.success() => return Some(binary),
        Ok(o) => format!(
            "{binary} --version: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("{binary}: {e}"),
    };
    assert!(
        !required,
        "etcd is needed (Debian: apt-get install etcd-server; RTC_REQUIRE_ETCD=1 or RTC_ETCD \
         is set, so a missing etcd fails the test): {why}"
    );
    // Straight to stderr, past the test harness's capture, so a passing run shows the skip.
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let _ = writeln!(
        std::io::stderr(),
        "skipped {test}: etcd is not installed (Debian: apt-get install etcd-server; \
         RTC_REQUIRE_ETCD=1 makes this a failure): {why}"
    );
    None
}

impl Etcd {
    /// One member, healthy; `None` (the test skipped) where etcd is not installed.
    pub async fn single() -> Option<Etcd> {
        Etcd::cluster(1).await
    }

    /// `size` members bootstrapped together (`--initial-cluster`), all healthy and agreeing on a
    /// leader; `None` (the test skipped) where etcd is not installed.
    pub async fn cluster(size: usize) -> Option<Etcd> {
        Etcd::boot(size, false).await
    }

    /// As [`Etcd::cluster`], with the client URLs on TLS (`https://127.0.0.1:PORT`): server
    /// certificates from a test CA, and a client certificate from that CA required
    /// (`--client-cert-auth`); [`Etcd::tls`] names the files a client needs.
    pub async fn cluster_tls(size: usize) -> Option<Etcd> {
        Etcd::boot(size, true).await
    }

    async fn boot(size: usize, tls: bool) -> Option<Etcd> {
        assert!(size >= 1, "an etcd cluster has at least one member");
        let binary = binary()?;
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("rtc-etcd-{pid}-{seq}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT);
        let tls = tls.then(|| TlsFiles::write(&dir.join("tls")));
        if let Some(files) = &tls {
            http = http
                .add_root_certificate(files.ca_certificate())
                .identity(files.client_identity());
        }
        let http = http.build().expect("HTTP client");
        let mut etcd = Etcd {
            binary,
            dir,
            tls,
            cluster_token: String::new(),
            members: Vec::new(),
            http,
            auth: false,
            auth_token: std::sync::Mutex::new(None),
        };
        for attempt in 1..=BOOT_ATTEMPTS {
            etcd.cluster_token = format!("rtc-test-{pid}-{seq}-{attempt}");
            etcd.members = fresh_members(size);
            for i in 0..size {
                let member_dir = etcd.member_dir(i);
                let _ = std::fs::remove_dir_all(&member_dir);
                std::fs::create_dir_all(&member_dir)
                    .unwrap_or_else(|e| panic!("{}: {e}", member_dir.display()));
            }
            for i in 0..size {
                etcd.spawn(i);
            }
            let all: Vec<usize> = (0..size).collect();
            match etcd.wait_ready(&all, true).await {
                Ok(()) => return Some(etcd),
                Err(NotReady::Exited(_, _, true)) if attempt < BOOT_ATTEMPTS => {
                    for i in 0..size {
                        etcd.kill(i);
                    }
                }
                Err(e) => etcd.fail("did not start", e),
            }
        }
        unreachable!("the last boot attempt returns or fails")
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Every member's client URL (`http://127.0.0.1:PORT`, `https://` for a
    /// [`Etcd::cluster_tls`]), running or not: the endpoint list of a client config.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[i].client_port)
    }

    /// The certificates of a [`Etcd::cluster_tls`], `None` for a plain one.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Member `i`'s process id while it runs (also while paused).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Member `i`'s log (every run of it, appended).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.member_dir(i).join("etcd.log")
    }

    /// Stops member `i` with SIGTERM and waits for it to exit (a paused member is resumed so
    /// it sees the signal). Fails the test when it has not exited within 10 s. etcd shuts
    /// down, then re-raises the signal: a clean stop's status is "killed by SIGTERM".
    pub async fn stop(&mut self, i: usize) -> ExitStatus {
        let name = self.members[i].name.clone();
        let Some(pid) = self.pid(i) else {
            panic!("etcd member {name} is not running");
        };
        signal(pid, "TERM");
        if self.members[i].paused {
            signal(pid, "CONT");
            self.members[i].paused = false;
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let child = self.members[i].child.as_mut().expect("running member");
            if let Some(status) = child.try_wait().expect("wait for etcd") {
                self.members[i].child = None;
                return status;
            }
            if Instant::now() > deadline {
                self.kill(i);
                panic!(
                    "etcd member {name} did not exit within {STOP_TIMEOUT:?} of SIGTERM (killed); \
                     log {}:\n{}",
                    self.log_path(i).display(),
                    tail(&self.log_path(i))
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills member `i` with SIGKILL (paused or not) and reaps it; nothing when it is not
    /// running.
    pub fn kill(&mut self, i: usize) {
        let member = &mut self.members[i];
        if let Some(mut child) = member.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        member.paused = false;
    }

    /// Starts member `i` again, with its data dir and ports, and waits until every live member
    /// (running, not paused) is healthy and they agree on a leader. Where the live members are
    /// still no majority it does not wait (a cluster without quorum is never healthy): after
    /// a whole-cluster outage, the start that restores the quorum is the one that waits.
    pub async fn start(&mut self, i: usize) {
        assert!(
            self.members[i].child.is_none(),
            "etcd member {} is already running",
            self.members[i].name
        );
        self.spawn(i);
        self.settle("did not come back").await;
    }

    /// Starts every member that is not running, then waits as [`Etcd::start`] does.
    pub async fn start_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.spawn(i);
            }
        }
        self.settle("did not come back").await;
    }

    /// Freezes member `i` (SIGSTOP) and waits until every thread of it has stopped: it keeps
    /// its ports, connections are accepted and never answered, as with a hung etcd.
    pub async fn pause(&mut self, i: usize) {
        let Some(pid) = self.pid(i) else {
            panic!("etcd member {} is not running", self.members[i].name);
        };
        signal(pid, "STOP");
        self.members[i].paused = true;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "etcd member {} (pid {pid}) not stopped {STOP_TIMEOUT:?} after SIGSTOP",
                self.members[i].name
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Thaws member `i` (SIGCONT), then waits as [`Etcd::start`] does.
    pub async fn resume(&mut self, i: usize) {
        let Some(pid) = self.pid(i) else {
            panic!("etcd member {} is not running", self.members[i].name);
        };
        signal(pid, "CONT");
        self.members[i].paused = false;
        self.settle("did not recover from a pause").await;
    }

    /// Whether member `i` answers `GET /health` with `{"health":"true"}` within 1 s (false for
    /// a stopped member without asking).
    pub async fn is_healthy(&self, i: usize) -> bool {
        if self.members[i].child.is_none() {
            return false;
        }
        let url = format!("{}/health", self.endpoint(i));
        let Ok(r) = self.http.get(&url).timeout(HEALTH_TIMEOUT).send().await else {
            return false;
        };
        let Ok(text) = r.text().await else {
            return false;
        };
        serde_json::from_str::<Value>(&text).is_ok_and(|v| v["health"] == "true")
    }

    /// The member every live member names as leader (`/v3/maintenance/status`), or `None` while
    /// they disagree, have none, or none answers.
    pub async fn leader(&self) -> Option<usize> {
        let mut leader_id = None;
        for i in self.live() {
            let status = self
                .post(i, "/v3/maintenance/status", &json!({}))
                .await
                .ok()?;
            let id = number(&status["leader"]);
            if id == 0 || leader_id.is_some_and(|l| l != id) {
                return None;
            }
            leader_id = Some(id);
        }
        let leader_id = leader_id?;
        let i = self.live().next()?;
        let list = self
            .post(i, "/v3/cluster/member/list", &json!({}))
            .await
            .ok()?;
        let name = list["members"]
            .as_array()?
            .iter()
            .find(|m| number(&m["ID"]) == leader_id)?["name"]
            .as_str()?
            .to_string();
        self.members.iter().position(|m| m.name == name)
    }

    /// Turns etcd authentication on: user `root` (password [`ROOT_PASSWORD`]) may do
    /// everything, `user` (with `password`) may read and write the keys under `prefix` and use
    /// leases, nothing else; a request without a valid token is refused. The helpers go on as
    /// root.
    pub async fn enable_auth(&mut self, user: &str, password: &str, prefix: &str) {
        assert_ne!(user, "root", "root is the harness's own user");
        let role = format!("{user}-keys");
        let range = json!({
            "permType": "READWRITE",
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix.as_bytes())),
        });
        for (path, body) in [
            ("/v3/auth/role/add", json!({"name": role})),
            ("/v3/auth/role/grant", json!({"name": role, "perm": range})),
            (
                "/v3/auth/user/add",
                json!({"name": "root", "password": ROOT_PASSWORD}),
            ),
            (
                "/v3/auth/user/grant",
                json!({"user": "root", "role": "root"}),
            ),
            (
                "/v3/auth/user/add",
                json!({"name": user, "password": password}),
            ),
            ("/v3/auth/user/grant", json!({"user": user, "role": role})),
            ("/v3/auth/enable", json!({})),
        ] {
            self.call(path, body).await;
        }
        self.auth = true;
    }

    /// The value of `key` (linearizable read), `None` when it is absent.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let answer = self
            .call("/v3/kv/range", json!({"key": B64.encode(key)}))
            .await;
        kvs(&answer).into_iter().next().map(|(_, v)| v)
    }

    /// The value of `key` in member `i`'s own store (serializable read: what that member has
    /// applied, not a quorum's answer), `None` when absent. Fails the test when `i` does not
    /// answer.
    pub async fn get_at(&self, i: usize, key: &str) -> Option<Vec<u8>> {
        let body = json!({"key": B64.encode(key), "serializable": true});
        match self.post(i, "/v3/kv/range", &body).await {
            Ok(answer) => kvs(&answer).into_iter().next().map(|(_, v)| v),
            Err(e) => panic!("etcd member {}: {e}", self.members[i].name),
        }
    }

    /// Every key under `prefix` with its value, sorted by key.
    pub async fn get_prefix(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let body = json!({
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix.as_bytes())),
        });
        let mut out = kvs(&self.call("/v3/kv/range", body).await);
        out.sort();
        out
    }

    /// Writes `key`.
    pub async fn put(&self, key: &str, value: impl AsRef<[u8]>) {
        let body = json!({"key": B64.encode(key), "value": B64.encode(value)});
        self.call("/v3/kv/put", body).await;
    }

    /// Writes `key` attached to `lease` (it goes when the lease expires or is revoked).
    pub async fn put_leased(&self, key: &str, value: impl AsRef<[u8]>, lease: i64) {
        let body = json!({"key": B64.encode(key), "value": B64.encode(value), "lease": lease});
        self.call("/v3/kv/put", body).await;
    }

    /// Grants a lease of `ttl_secs`; returns its id.
    pub async fn grant(&self, ttl_secs: u64) -> i64 {
        let answer = self.call("/v3/lease/grant", json!({"TTL": ttl_secs})).await;
        let id = number(&answer["ID"]);
        i64::try_from(id).unwrap_or_else(|_| panic!("lease id {id} out of range"))
    }

    /// Deletes every key under `prefix`; returns how many there were.
    pub async fn delete_prefix(&self, prefix: &str) -> u64 {
        let body = json!({
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix.as_bytes())),
        });
        number(&self.call("/v3/kv/deleterange", body).await["deleted"])
    }

    /// How many leases exist.
    pub async fn leases(&self) -> usize {
        let answer = self.call("/v3/lease/leases", json!({})).await;
        answer["leases"].as_array().map_or(0, Vec::len)
    }

    fn member_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("m{i}"))
    }

    /// Members that run and are not paused.
    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some() && !self.members[i].paused)
    }

    fn spawn(&mut self, i: usize) {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let log_path = self.log_path(i);
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("{}: {e}", log_path.display()));
        let m = &self.members[i];
        let _ = writeln!(log, "=== test harness: starting {} ===", m.name);
        let client = self.endpoint(i);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let data = self.member_dir(i).join("data");
        let mut cmd = if Path::new("/usr/bin/setpriv").exists() {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args(["--pdeathsig", "KILL", "--", &self.binary]);
            c
        } else {
            Command::new(&self.binary)
        };
        cmd.arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg("--initial-cluster-state=new")
            .arg(format!("--initial-cluster-token={}", self.cluster_token))
            .args(
                self.tls
                    .as_ref()
                    .map_or_else(Vec::new, TlsFiles::server_flags),
            )
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log);
        // etcd takes every ETCD_* variable as a flag: a developer's shell must not change a
        // test member.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary));
        self.members[i].child = Some(child);
        self.members[i].paused = false;
    }

    /// Where the live members are a majority, waits until all are healthy with a leader.
    async fn settle(&mut self, what: &str) {
        let live: Vec<usize> = self.live().collect();
        if live.len() * 2 <= self.members.len() {
            return;
        }
        if let Err(e) = self.wait_ready(&live, true).await {
            self.fail(what, e);
        }
    }

    /// Waits until the members `which` answer `/health` (and, with `leader`, all live members
    /// agree on a leader), or one of them exits, or the start timeout passes.
    async fn wait_ready(&mut self, which: &[usize], leader: bool) -> Result<(), NotReady> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            for &i in which {
                let child = self.members[i].child.as_mut().expect("started member");
                if let Some(status) = child.try_wait().expect("wait for etcd") {
                    self.members[i].child = None;
                    let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                    let clash = log.contains("address already in use");
                    return Err(NotReady::Exited(i, status, clash));
                }
            }
            let mut unhealthy = Vec::new();
            for &i in which {
                if !self.is_healthy(i).await {
                    unhealthy.push(i);
                }
            }
            let ready = unhealthy.is_empty() && (!leader || self.leader().await.is_some());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let names: Vec<&str> = unhealthy
                    .iter()
                    .map(|&i| self.members[i].name.as_str())
                    .collect();
                let what = if unhealthy.is_empty() {
                    format!("healthy but no agreed leader within {START_TIMEOUT:?}")
                } else {
                    format!("not healthy within {START_TIMEOUT:?}: {}", names.join(", "))
                };
                return Err(NotReady::TimedOut(what));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails the test with what went wrong and the logs' last lines.
    fn fail(&self, what: &str, why: NotReady) -> ! {
        let (summary, logs): (String, Vec<usize>) = match why {
            NotReady::Exited(i, status, _) => (
                format!("member {} exited ({status})", self.members[i].name),
                vec![i],
            ),
            NotReady::TimedOut(s) => (s, (0..self.members.len()).collect()),
        };
        let mut text = format!(
            "etcd {what} ({} member(s), client URLs {:?}): {summary}",
            self.members.len(),
            self.endpoints()
        );
        for i in logs {
            let path = self.log_path(i);
            text.push_str(&format!(
                "\n--- {} log {} (last lines):\n{}",
                self.members[i].name,
                path.display(),
                tail(&path)
            ));
        }
        panic!("{text}");
    }

    /// One POST to member `i`'s JSON gateway, as root where authentication is on.
    async fn post(&self, i: usize, path: &str, body: &Value) -> Result<Value, Failure> {
        if !self.auth {
            return self.send(i, path, body, None).await;
        }
        let cached = self.auth_token.lock().expect("token lock").clone();
        let token = match cached {
            Some(t) => t,
            None => {
                let who = json!({"name": "root", "password": ROOT_PASSWORD});
                let answer = self.send(i, "/v3/auth/authenticate", &who, None).await?;
                let Some(t) = answer["token"].as_str() else {
                    return Err(Failure::Fatal(format!(
                        "authenticate: no token in {answer}"
                    )));
                };
                *self.auth_token.lock().expect("token lock") = Some(t.to_string());
                t.to_string()
            }
        };
        let answer = self.send(i, path, body, Some(&token)).await;
        if matches!(answer, Err(Failure::Unauthenticated(_))) {
            // Expired, or issued before this member restarted: authenticate again.
            *self.auth_token.lock().expect("token lock") = None;
        }
        answer
    }

    async fn send(
        &self,
        i: usize,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.endpoint(i));
        let mut request = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        let r = request
            .send()
            .await
            .map_err(|e| Failure::Retry(format!("POST {url}: {e}")))?;
        let status = r.status();
        let text = r
            .text()
            .await
            .map_err(|e| Failure::Retry(format!("POST {url}: {e}")))?;
        let what = format!("POST {url}: {status}: {text}");
        match status.as_u16() {
            200..=299 => serde_json::from_str(&text)
                .map_err(|e| Failure::Fatal(format!("POST {url}: {e}: {text}"))),
            401 => Err(Failure::Unauthenticated(what)),
            // A refused request (bad argument, permission denied): asking again cannot help.
            400..=499 => Err(Failure::Fatal(what)),
            // No leader, leader changed, timed out: another try, or another member, may answer.
            _ => Err(Failure::Retry(what)),
        }
    }

    /// A POST to any live member, retried until one answers or [`RETRY_FOR`] passes; a refused
    /// request fails the test at once.
    async fn call(&self, path: &str, body: Value) -> Value {
        let deadline = Instant::now() + RETRY_FOR;
        let mut errors = Vec::new();
        loop {
            for i in self.live() {
                match self.post(i, path, &body).await {
                    Ok(v) => return v,
                    Err(Failure::Fatal(e)) => panic!("etcd refused {body}: {e}"),
                    Err(Failure::Retry(e) | Failure::Unauthenticated(e)) => errors.push(e),
                }
            }
            assert!(
                self.live().next().is_some(),
                "etcd {path}: no member is running and unpaused"
            );
            if Instant::now() > deadline {
                let last: Vec<&String> = errors.iter().rev().take(3).collect();
                panic!("etcd {path}: no live member answered within {RETRY_FOR:?}; last errors: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            // Keep the logs a failure names; drop the data (etcd preallocates its WAL).
            for i in 0..self.members.len() {
                let _ = std::fs::remove_dir_all(self.member_dir(i).join("data"));
            }
            let _ = writeln!(
                std::io::stderr(),
                "etcd logs kept in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The PEM files of a TLS cluster, in its temp dir: a test CA, the members' server certificate
/// (127.0.0.1 and localhost) and a client certificate the members accept (CN `rtc-exporter`).
pub struct TlsFiles {
    /// The CA that signed the server and client certificates.
    pub ca_file: PathBuf,
    /// A client certificate from that CA.
    pub cert_file: PathBuf,
    /// Its key.
    pub key_file: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl TlsFiles {
    fn write(dir: &Path) -> TlsFiles {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "rtc-exporter etcd test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
        let leaf = |sans: &[&str], usages: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().expect("key");
            let names: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
            let mut p = CertificateParams::new(names).expect("certificate params");
            p.distinguished_name.push(DnType::CommonName, sans[0]);
            p.extended_key_usages = usages;
            let cert = p.signed_by(&key, &ca).expect("certificate");
            (cert.pem(), key.serialize_pem())
        };
        // etcd's JSON gateway dials the member's own gRPC with the server certificate, so
        // under --client-cert-auth it must serve as a client certificate too.
        let (server_cert, server_key) = leaf(
            &["127.0.0.1", "localhost"],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let (client_cert, client_key) =
            leaf(&["rtc-exporter"], vec![ExtendedKeyUsagePurpose::ClientAuth]);
        let file = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            path
        };
        TlsFiles {
            ca_file: file("ca.pem", &ca.pem()),
            cert_file: file("client.pem", &client_cert),
            key_file: file("client-key.pem", &client_key),
            server_cert: file("server.pem", &server_cert),
            server_key: file("server-key.pem", &server_key),
        }
    }

    fn server_flags(&self) -> Vec<String> {
        vec![
            format!("--cert-file={}", self.server_cert.display()),
            format!("--key-file={}", self.server_key.display()),
            format!("--trusted-ca-file={}", self.ca_file.display()),
            "--client-cert-auth".to_string(),
        ]
    }

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The CA, for a client to trust.
    pub fn ca_certificate(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(&TlsFiles::read(&self.ca_file)).expect("CA PEM")
    }

    /// The client certificate and key, for a client to present.
    pub fn client_identity(&self) -> reqwest::Identity {
        let mut pem = TlsFiles::read(&self.cert_file);
        pem.extend(TlsFiles::read(&self.key_file));
        reqwest::Identity::from_pem(&pem).expect("client certificate PEM")
    }
}

/// `size` members named m0.. with distinct free client and peer ports.
fn fresh_members(size: usize) -> Vec<Member> {
    let mut ports: Vec<u16> = Vec::new();
    while ports.len() < 2 * size {
        let p = super::free_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    (0..size)
        .map(|i| Member {
            name: format!("m{i}"),
            client_port: ports[2 * i],
            peer_port: ports[2 * i + 1],
            child: None,
            paused: false,
        })
        .collect()
}

/// Sends `SIG<name>` to `pid` with kill(1).
fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{name} {pid} failed");
}

/// Whether every thread of `pid` is stopped (state `T` in `/proc/PID/task/*/stat`).
fn stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue; // a thread that just exited
        };
        // "TID (comm) STATE ...": the state follows the last ')'.
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        if !state.is_some_and(|r| r.starts_with('T')) {
            return false;
        }
        any = true;
    }
    any
}

/// The end of the range of keys under `prefix` (etcd's `range_end`): the prefix with its last
/// byte below 0xff incremented; `\0` (every key) for an empty prefix or one of 0xff bytes.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A JSON gateway number: int64 fields come as strings, and a zero is left out.
fn number(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("not a number: {v}")),
        Value::Number(n) => n.as_u64().unwrap_or_else(|| panic!("not a u64: {v}")),
        Value::Null => 0,
        other => panic!("not a number: {other}"),
    }
}

/// The key-value pairs of a range answer (an empty value is left out of the JSON).
fn kvs(answer: &Value) -> Vec<(String, Vec<u8>)> {
    let Some(kvs) = answer["kvs"].as_array() else {
        return Vec::new();
    };
    kvs.iter()
        .map(|kv| {
            let decode = |field: &str| match kv[field].as_str() {
                None => Vec::new(),
                Some(s) => B64
                    .decode(s)
                    .unwrap_or_else(|e| panic!("etcd {field} is not base64 ({e}): {kv}")),
            };
            (
                String::from_utf8_lossy(&decode("key")).into_owned(),
                decode("value"),
            )
        })
        .collect()
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

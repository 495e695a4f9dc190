//! High availability on etcd (`ha:`): which shards of the targets this replica leads, and the
//! day's figures kept in etcd so that a new leader goes on from them.
//!
//! Targets go into `shards` shards, the targets of one account (one rate limit) together, by a
//! stable hash of the first of their names ([`assign`]); each shard has one leader, the
//! replica whose lease holds the shard's key (`<prefix>/shards/<k>`), and only the leader polls
//! the shard's targets. Every replica registers under `<prefix>/members/` with its lease, so
//! each sees how many are alive (N) and takes at most ⌈shards/N⌉ shards: free ones, when it has
//! fewer; it gives up the extra ones when a replica joins. A replica that dies loses its lease
//! after `lease`, its keys go with it, and the others take its shards at their next round
//! (a round every fifth of a lease, at most [`MAX_ROUND`] apart).
//!
//! A leader that cannot renew its lease stops leading on its own clock before etcd can expire
//! the lease: at two thirds of the TTL counted from when the last good renewal was *sent*, so
//! with clocks that run at the same rate the old leader has stopped a third of a lease before
//! any other replica can take its shards. Stopping aborts polls in flight and every vendor
//! request not yet sent ([`crate::clouds::PollCtx::gate`]).
//!
//! The leader writes each target's day (its state file's content, gzipped) to
//! `<prefix>/state/<target>` after its polls, in chunks of at most [`CHUNK`] bytes (under etcd's
//! default request limit of 1.5 MiB), each write guarded by the shard key still being held by
//! this replica's lease: a replica that lost a shard can never overwrite the new leader's day.

pub mod etcd;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use serde_yaml::Value as Yaml;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clouds::LeaderGate;
use crate::fields::{from_value, FieldError, PromDuration, Secret};
use crate::lock::lock;
use crate::metrics::SelfMetrics;
use etcd::{Etcd, EtcdError};

/// The longest time between two rounds (renewal, count, take or give shards): a long lease
/// still takes a free shard, or one of a replica that just started, within seconds.
pub const MAX_ROUND: Duration = Duration::from_secs(2);
/// The shortest `ha.lease`: renewals go every fifth of it.
pub const MIN_LEASE: Duration = Duration::from_secs(3);
/// Why every shard is given up at a stop (logged as information, not a warning).
const STOPPING: &str = "stopping";
/// The longest `ha.lease`.
pub const MAX_LEASE: Duration = Duration::from_secs(300);
/// The most shards.
pub const MAX_SHARDS: u32 = 256;
/// The largest value written at one key (a chunk of a target's day).
pub const CHUNK: usize = 1 << 20;

/// `ha:`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct HaConfig {
    /// etcd's client URLs.
    pub endpoints: Vec<String>,
    /// etcd user and password, where etcd has auth on.
    pub login: Option<(String, Secret)>,
    /// TLS towards etcd.
    pub tls: Option<etcd::Tls>,
    /// Every key of this exporter's group lives under it.
    pub prefix: String,
    /// The lease's TTL.
    pub lease: Duration,
    /// Shards the targets are spread over.
    pub shards: u32,
    /// This replica's name in etcd.
    pub id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHa {
    etcd: RawEtcd,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    lease: Option<PromDuration>,
    #[serde(default)]
    shards: Option<u32>,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcd {
    endpoints: Vec<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    tls: Option<RawTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
}

/// The default `ha.prefix`.
pub const DEFAULT_PREFIX: &str = "/rtc-exporter";
/// The default `ha.lease`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// Parses `ha:`; `resolve` makes a relative TLS path absolute (beside the config file). Every
/// error names its field under `ha`.
pub fn parse(
    mut raw: Yaml,
    resolve: impl Fn(PathBuf) -> PathBuf,
) -> Result<HaConfig, Vec<FieldError>> {
    let mut errs = Vec::new();
    // Every unknown key is named, not only the first (then the rest is read without them).
    unknown_keys(
        &mut raw,
        "",
        &["etcd", "prefix", "lease", "shards", "id"],
        &mut errs,
    );
    if let Some(etcd) = raw.get_mut("etcd") {
        unknown_keys(
            etcd,
            "etcd.",
            &["endpoints", "username", "password", "tls"],
            &mut errs,
        );
        if let Some(tls) = etcd.get_mut("tls") {
            unknown_keys(
                tls,
                "etcd.tls.",
                &["ca_file", "cert_file", "key_file"],
                &mut errs,
            );
        }
    }
    let raw: RawHa = match from_value(raw) {
        Ok(r) => r,
        Err(e) => {
            errs.push(e);
            return Err(errs);
        }
    };
    let mut endpoints = Vec::new();
    if raw.etcd.endpoints.is_empty() {
        errs.push(FieldError::new(
            "etcd.endpoints",
            "must list at least one URL",
        ));
    }
    for (i, e) in raw.etcd.endpoints.iter().enumerate() {
        match check_endpoint(e) {
            Ok(u) if endpoints.contains(&u) => errs.push(FieldError::new(
                format!("etcd.endpoints[{i}]"),
                format!("{u} is listed twice"),
            )),
            Ok(u) => endpoints.push(u),
            Err(why) => errs.push(FieldError::new(format!("etcd.endpoints[{i}]"), why)),
        }
    }
    let login = match (raw.etcd.username, raw.etcd.password) {
        (Some(u), Some(p)) if !u.is_empty() => Some((u, p)),
        (Some(_), Some(_)) => {
            errs.push(FieldError::new("etcd.username", "must not be empty"));
            None
        }
        (Some(_), None) => {
            errs.push(FieldError::new(
                "etcd.password",
                "missing: username needs a password",
            ));
            None
        }
        (None, Some(_)) => {
            errs.push(FieldError::new(
                "etcd.username",
                "missing: password needs a username",
            ));
            None
        }
        (None, None) => None,
    };
    let tls = raw.etcd.tls.map(|t| etcd::Tls {
        ca_file: t.ca_file.map(&resolve),
        cert_file: t.cert_file.map(&resolve),
        key_file: t.key_file.map(&resolve),
    });
    if let Some(t) = &tls {
        // Read now, so --config.check finds a missing or wrong file, not the start.
        if let Err(e) = t.load() {
            errs.extend(e);
        }
        if t.cert_file.is_some() != t.key_file.is_some() {
            errs.push(FieldError::new(
                "etcd.tls",
                "cert_file and key_file go together (a client certificate and its key)",
            ));
        }
        if endpoints.iter().any(|e: &String| e.starts_with("http://")) {
            errs.push(FieldError::new(
                "etcd.tls",
                "set, but an endpoint is http://: TLS needs https:// endpoints",
            ));
        }
    }
    let prefix = raw.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_string());
    if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
        errs.push(FieldError::new(
            "prefix",
            "must start with / and not end with one, e.g. /rtc-exporter/prod",
        ));
    } else if prefix.len() > 200 || prefix.chars().any(|c| c.is_control()) {
        errs.push(FieldError::new(
            "prefix",
            "must be at most 200 characters, without control characters",
        ));
    }
    let lease = raw.lease.map(|d| d.0).unwrap_or(DEFAULT_LEASE);
    if lease < MIN_LEASE || lease > MAX_LEASE {
        errs.push(FieldError::new(
            "lease",
            format!(
                "must be from {}s to {}s",
                MIN_LEASE.as_secs(),
                MAX_LEASE.as_secs()
            ),
        ));
    } else if lease.subsec_nanos() != 0 {
        errs.push(FieldError::new(
            "lease",
            "must be whole seconds (etcd counts a lease's TTL in seconds)",
        ));
    }
    let shards = raw.shards.unwrap_or(1);
    if !(1..=MAX_SHARDS).contains(&shards) {
        errs.push(FieldError::new(
            "shards",
            format!("must be from 1 to {MAX_SHARDS}"),
        ));
    }
    let id = match raw.id {
        Some(id) => id,
        None => default_id(),
    };
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        errs.push(FieldError::new(
            "id",
            "must be 1 to 128 of A-Z a-z 0-9 - _ . (the default is the host name)",
        ));
    }
    if errs.is_empty() {
        Ok(HaConfig {
            endpoints,
            login,
            tls,
            prefix,
            lease,
            shards,
            id,
        })
    } else {
        Err(errs)
    }
}

/// Names the keys of mapping `v` not in `known` (under `path`) and removes them.
fn unknown_keys(v: &mut Yaml, path: &str, known: &[&str], errs: &mut Vec<FieldError>) {
    let Yaml::Mapping(m) = v else { return };
    let unknown: Vec<Yaml> = m
        .keys()
        .filter(|k| k.as_str().is_none_or(|k| !known.contains(&k)))
        .cloned()
        .collect();
    for k in unknown {
        let name = k.as_str().unwrap_or("(not a string)").to_string();
        errs.push(FieldError::new(
            format!("{path}{name}"),
            format!(
                "unknown field `{name}`, expected one of {}",
                known.join(", ")
            ),
        ));
        m.remove(&k);
    }
}

/// An etcd client URL: `http://` or `https://`, a host, no path.
fn check_endpoint(e: &str) -> Result<String, String> {
    if !e.contains("://") {
        return Err(format!(
            "{e:?} has no scheme: write http://{e} (or https:// with etcd.tls)"
        ));
    }
    let u = reqwest::Url::parse(e).map_err(|why| format!("not a URL ({why}): {e:?}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "must be http:// or https://, not {}://",
            u.scheme()
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !matches!(u.path(), "" | "/") || u.query().is_some() {
        return Err("must be a base URL such as http://etcd:2379, without a path".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not hold a user or password: use ha.etcd.username and password".into());
    }
    Ok(e.trim_end_matches('/').to_string())
}

/// What `--config.check` says of `ha:`: the group, and which targets each shard holds (every
/// replica computes the same), from `(name, account)` pairs.
pub fn summary<'a>(
    ha: &HaConfig,
    targets: impl IntoIterator<Item = (&'a str, u64)>,
) -> Vec<String> {
    let mut lines = vec![format!(
        "ha: etcd {}, prefix {}, lease {}s, {} shard(s), id {}",
        ha.endpoints.join(" "),
        ha.prefix,
        ha.lease.as_secs(),
        ha.shards,
        ha.id
    )];
    let mut by_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (name, shard) in assign(targets, ha.shards) {
        by_shard.entry(shard).or_default().push(name);
    }
    for k in 0..ha.shards {
        let names = by_shard.remove(&k).unwrap_or_default();
        if ha.shards > 1 || !names.is_empty() {
            let shown = if names.is_empty() {
                "(no target)".to_string()
            } else {
                names.join(" ")
            };
            lines.push(format!("ha: shard {k}: {shown}"));
        }
    }
    lines
}

/// `$HOSTNAME` (a pod's name in Kubernetes), else the kernel's host name, else `rtc-exporter`.
fn default_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty());
    host.unwrap_or_else(|| "rtc-exporter".to_string())
}

/// The shard of every target among `shards`, from `(name, account)` pairs: the targets of one
/// account (one rate limit: [`crate::config::Target::account`]) go to one shard, the one of the
/// first of their names, so one leader paces the whole account and never two at once; every
/// replica with the same targets computes the same.
pub fn assign<'a>(
    targets: impl IntoIterator<Item = (&'a str, u64)>,
    shards: u32,
) -> BTreeMap<String, u32> {
    let targets: Vec<(&str, u64)> = targets.into_iter().collect();
    let mut first: BTreeMap<u64, &str> = BTreeMap::new();
    for (name, account) in &targets {
        first
            .entry(*account)
            .and_modify(|f| *f = (*f).min(*name))
            .or_insert(name);
    }
    targets
        .iter()
        .map(|(name, account)| {
            let group = first.get(account).copied().unwrap_or(name);
            (name.to_string(), shard_of(group, shards))
        })
        .collect()
}

/// The shard of the name `name` among `shards`: a stable hash (xxh3, the same on every replica
/// and every release), so every replica agrees without asking anyone.
pub fn shard_of(name: &str, shards: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(name.as_bytes()) % u64::from(shards.max(1))) as u32
}

/// A target's day as read from etcd.
#[derive(Debug, PartialEq, Eq)]
pub struct KeptDay {
    /// The state file's content, gzipped.
    pub data: Vec<u8>,
    /// Written by this very process: its own day is as new or newer.
    pub own: bool,
}

/// Why a day could not be read from etcd.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// etcd did not answer: try again.
    #[error("{0}")]
    Unreachable(String),
    /// etcd answered with an error (a user without read on the day's keys): asking again
    /// gives the same.
    #[error("{0}")]
    Refused(String),
    /// What etcd holds cannot be a day: no use trying again.
    #[error("{0}")]
    Damaged(String),
}

/// The lease this replica holds and until when, on its own clock, it may lead.
struct Lease {
    id: i64,
    valid_until: Instant,
    /// Shards beyond this replica's share: no longer polled, their keys given back at the next
    /// round, once the last poll's day has been written to etcd (about 0.2 s after it).
    releasing: BTreeSet<u32>,
    /// The placement its member key tells (see [`Ha::place`]).
    told: u64,
}

/// What the writers of the day need: the lease and the shards its keys hold.
#[derive(Default)]
struct Held {
    lease: i64,
    shards: BTreeSet<u32>,
    /// The shards every live replica places the same targets in.
    agreed: BTreeSet<u32>,
}

/// This replica's part in the group: its lease, the shards it leads, the day in etcd.
pub struct Ha {
    config: HaConfig,
    etcd: Etcd,
    gates: Vec<watch::Sender<bool>>,
    metrics: Arc<SelfMetrics>,
    held: Mutex<Held>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// The etcd errors logged since the last round that went through (each once).
    last_error: Mutex<BTreeSet<String>>,
    /// Called when a gauge changed, so `/metrics` shows it without waiting for a poll.
    changed: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// Until when the lease lets this replica lead, on its own clock: every gate checks it at
    /// each vendor request.
    until: Arc<Mutex<Option<Instant>>>,
    /// This process among every writer of the days in etcd: a day it wrote itself is not read
    /// back over its own (newer) one.
    writer: String,
    /// The shard of every configured target ([`assign`]), and how often it changed.
    shards_of: Mutex<BTreeMap<String, u32>>,
    placed: std::sync::atomic::AtomicU64,
    /// The shards the replicas last disagreed on (logged when it changes).
    apart: Mutex<Vec<u32>>,
}

impl Ha {
    /// The group's client for `config`; nothing is asked of etcd before [`Ha::start`].
    pub fn new(config: HaConfig, metrics: Arc<SelfMetrics>) -> Result<Arc<Ha>, String> {
        // A request never outlasts a round.
        let timeout = round_of(config.lease).max(Duration::from_millis(500));
        let etcd = Etcd::new(
            &config.endpoints,
            config.tls.as_ref(),
            config.login.clone(),
            timeout,
        )?;
        metrics.enable_ha(config.shards);
        metrics.ha.leader.set(0.0);
        metrics.ha.etcd_up.set(0.0);
        let gates = (0..config.shards)
            .map(|_| watch::channel(false).0)
            .collect();
        Ok(Arc::new(Ha {
            config,
            etcd,
            gates,
            metrics,
            held: Mutex::new(Held::default()),
            stop: watch::channel(false).0,
            task: Mutex::new(None),
            last_error: Mutex::new(BTreeSet::new()),
            changed: Mutex::new(None),
            until: Arc::new(Mutex::new(None)),
            writer: format!("{:016x}", fastrand::u64(..)),
            shards_of: Mutex::new(BTreeMap::new()),
            placed: std::sync::atomic::AtomicU64::new(0),
            apart: Mutex::new(Vec::new()),
        }))
    }

    /// Calls `f` whenever one of the HA gauges changes (the exporter re-renders `/metrics`).
    pub fn on_change(&self, f: impl Fn() + Send + Sync + 'static) {
        *lock(&self.changed) = Some(Arc::new(f));
    }

    /// Sets `gauge` to `v`, telling [`Ha::on_change`]'s hook when that changed it.
    fn set(&self, gauge: &prometheus::Gauge, v: f64) {
        if gauge.get() != v {
            gauge.set(v);
            let hook = lock(&self.changed).clone();
            if let Some(f) = hook {
                f();
            }
        }
    }

    /// Its config.
    pub fn config(&self) -> &HaConfig {
        &self.config
    }

    /// The targets already placed that `next` puts in another shard.
    pub fn moves(&self, next: &BTreeMap<String, u32>) -> BTreeSet<String> {
        let current = lock(&self.shards_of);
        next.iter()
            .filter(|(name, k)| current.get(*name).is_some_and(|c| c != *k))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Takes `next` as the placement (told to the other replicas at the next round).
    pub fn place(&self, next: BTreeMap<String, u32>) {
        *lock(&self.shards_of) = next;
        self.placed
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// What each shard holds, as a hash of its targets' names: replicas lead a shard only
    /// while they all agree on it (a config reloaded on one replica but not yet on another
    /// would otherwise have both poll one account).
    fn contents(&self) -> Vec<String> {
        let mut per: Vec<Vec<&str>> = vec![Vec::new(); self.config.shards as usize];
        let placed = lock(&self.shards_of).clone();
        for (name, k) in &placed {
            if let Some(v) = per.get_mut(*k as usize) {
                v.push(name);
            }
        }
        per.iter()
            .map(|names| {
                format!(
                    "{:016x}",
                    xxhash_rust::xxh3::xxh3_64(names.join("\n").as_bytes())
                )
            })
            .collect()
    }

    /// The shard of target `name` (placed by [`Ha::place`]; by its own name otherwise).
    pub fn shard(&self, name: &str) -> u32 {
        lock(&self.shards_of)
            .get(name)
            .copied()
            .unwrap_or_else(|| shard_of(name, self.config.shards))
    }

    /// Whether this replica leads target `name`'s shard, as it changes, and until when its
    /// lease lets it.
    pub fn gate(&self, name: &str) -> LeaderGate {
        let open = match self.gates.get(self.shard(name) as usize) {
            Some(g) => g.subscribe(),
            None => watch::channel(false).1,
        };
        LeaderGate {
            open,
            until: self.until.clone(),
        }
    }

    /// Sets the lease's deadline, as every gate reads it.
    fn valid_until(&self, until: Option<Instant>) {
        *lock(&self.until) = until;
    }

    /// Starts campaigning: renewing the lease and taking or giving up shards every round (a
    /// fifth of a lease, at most [`MAX_ROUND`]).
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        *lock(&self.task) = Some(tokio::spawn(me.campaign()));
    }

    /// Stops leading (every gate closes) and revokes the lease, so the other replicas take
    /// the shards at their next round rather than after the lease runs out.
    pub async fn resign(&self) {
        let _ = self.stop.send(true);
        let task = lock(&self.task).take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
        self.close_all(STOPPING);
        let lease = std::mem::take(&mut *lock(&self.held)).lease;
        if lease != 0 {
            match self.etcd.revoke(lease).await {
                Ok(()) => tracing::info!("ha: lease revoked; the other replicas take over"),
                Err(e) => {
                    tracing::warn!(error = %e, "ha: lease not revoked; it runs out on its own")
                }
            }
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.config.prefix)
    }

    fn shard_key(&self, shard: u32) -> String {
        self.key(&format!("shards/{shard}"))
    }

    fn tick(&self) -> Duration {
        round_of(self.config.lease)
    }

    async fn campaign(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut lease: Option<Lease> = None;
        loop {
            let deadline = lease.as_ref().map(|l| l.valid_until);
            let leading = self.gates.iter().any(|g| *g.borrow());
            let outcome = tokio::select! {
                r = self.round(&mut lease) => Some(r),
                // Past the deadline, no answer from etcd counts: stop leading now.
                _ = sleep_until_or_never(deadline.filter(|_| leading)) => None,
                _ = stop.changed() => return,
            };
            match outcome {
                Some(Ok(())) => {
                    self.set(&self.metrics.ha.etcd_up, 1.0);
                    if !std::mem::take(&mut *lock(&self.last_error)).is_empty() {
                        tracing::info!("ha: etcd answers again");
                    }
                }
                Some(Err(e)) => self.failed(&e),
                None => self.failed(
                    &"no round went through before the lease ran out on the clock of this replica",
                ),
            }
            let expired = lease
                .as_ref()
                .is_none_or(|l| Instant::now() >= l.valid_until);
            if expired {
                self.close_all("the lease could not be renewed in time");
            }
            let next = Instant::now() + self.tick();
            let wake = match lease.as_ref().map(|l| l.valid_until) {
                Some(d) if d > Instant::now() => next.min(d),
                _ => next,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Puts this replica's member key (attached to `lease`): its id, `shards` and what it
    /// places in each shard.
    async fn tell(&self, member: &str, lease: i64) -> Result<(), EtcdError> {
        let value = json!({
            "id": self.config.id,
            "shards": self.config.shards,
            "placement": self.contents(),
        });
        self.etcd
            .txn(
                vec![],
                vec![etcd::put(member, value.to_string().as_bytes(), lease)],
                vec![],
            )
            .await
            .map(|_| ())
    }

    fn failed(&self, e: &dyn std::fmt::Display) {
        self.set(&self.metrics.ha.etcd_up, 0.0);
        self.set(&self.metrics.ha.replicas, 0.0);
        let msg = e.to_string();
        if lock(&self.last_error).insert(msg.clone()) {
            tracing::warn!(error = %msg, "ha: etcd request failed");
        } else {
            tracing::debug!(error = %msg, "ha: etcd request failed");
        }
    }

    /// One round: renew (or get) the lease, count the replicas, give up or take shards.
    async fn round(&self, lease: &mut Option<Lease>) -> Result<(), EtcdError> {
        let sent = Instant::now();
        // A renewal counts only once the whole round went through: a replica that can renew
        // its lease but not read or write its keys (etcd auth without the key permissions, a
        // failing etcd) stops leading at its deadline like one that cannot renew.
        let mut renewed = None;
        if let Some(l) = lease.as_mut() {
            let ttl = self.etcd.keep_alive(l.id).await?;
            if ttl <= 0 {
                if lock(&self.held).shards.is_empty() {
                    tracing::info!("ha: the lease ran out in etcd; joining again");
                } else {
                    tracing::warn!("ha: the lease ran out in etcd; every shard is given up");
                }
                self.valid_until(None);
                self.close_all("lease gone");
                *lease = None;
                lock(&self.held).shards.clear();
            } else {
                renewed = Some(sent + valid_for(ttl));
            }
        }
        let l = match lease {
            Some(l) => l,
            None => {
                let (id, ttl) = self.etcd.grant(self.config.lease).await?;
                let member = self.key(&format!("members/{}/{id:x}", self.config.id));
                let told = self.placed.load(std::sync::atomic::Ordering::Acquire);
                self.tell(&member, id).await?;
                lock(&self.held).lease = id;
                tracing::info!(id = %self.config.id, lease = %format!("{id:x}"), ttl, "ha: joined the group");
                // Shards are taken from the next round on, once every replica that starts now
                // has registered.
                self.valid_until(Some(sent + valid_for(ttl)));
                *lease = Some(Lease {
                    id,
                    valid_until: sent + valid_for(ttl),
                    releasing: BTreeSet::new(),
                    told,
                });
                return Ok(());
            }
        };
        let (me, shards) = (l.id, self.config.shards);
        let placed = self.placed.load(std::sync::atomic::Ordering::Acquire);
        if l.told != placed {
            let member = self.key(&format!("members/{}/{me:x}", self.config.id));
            self.tell(&member, me).await?;
            l.told = placed;
        }
        let mine = self.contents();
        let mut agreed: BTreeSet<u32> = (0..shards).collect();
        let members = self.etcd.range_prefix(&self.key("members/")).await?;
        let mut alike = 0u32;
        let mut others = BTreeSet::new();
        for m in &members {
            let v: Value = serde_json::from_slice(&m.value).unwrap_or_default();
            match v.get("shards").and_then(Value::as_u64) {
                Some(k) if k == u64::from(shards) => {
                    alike += 1;
                    if let Some(theirs) = v.get("placement").and_then(Value::as_array) {
                        for (k, c) in mine.iter().enumerate() {
                            if theirs.get(k).and_then(Value::as_str) != Some(c.as_str()) {
                                agreed.remove(&(k as u32));
                            }
                        }
                    }
                }
                _ => {
                    others.insert(
                        v.get("id")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .to_string(),
                    );
                }
            }
        }
        if !others.is_empty() {
            tracing::error!(replicas = ?others, shards, "ha: replicas with another ha.shards run under the same prefix; no shard is taken until every replica has the same");
        }
        let apart: Vec<u32> = (0..shards).filter(|k| !agreed.contains(k)).collect();
        let was = std::mem::replace(&mut *lock(&self.apart), apart.clone());
        if was != apart && !apart.is_empty() {
            tracing::warn!(shards = ?apart, "ha: the replicas place targets apart in these shards (their configs differ: a reload that has not reached every replica); not polled until they agree");
        } else if was != apart {
            tracing::info!("ha: the replicas agree on every shard again");
        }
        let alive = alike.max(1);
        self.set(&self.metrics.ha.replicas, f64::from(alive));
        let quota = shards.div_ceil(alive) as usize;

        let mut owners: BTreeMap<u32, i64> = BTreeMap::new();
        let base = self.key("shards/");
        for kv in self.etcd.range_prefix(&base).await? {
            let k = String::from_utf8_lossy(&kv.key);
            if let Some(n) = k.strip_prefix(&base).and_then(|n| n.parse::<u32>().ok()) {
                owners.insert(n, kv.lease);
            }
        }
        let mut held: BTreeSet<u32> = owners
            .iter()
            .filter(|(_, l)| **l == me)
            .map(|(k, _)| *k)
            .collect();
        // A replica joined: the shards beyond this one's share go back, the last ones first.
        // Polling stops at once; the key goes at the next round, after the last day's write.
        let extra: BTreeSet<u32> = held
            .iter()
            .rev()
            .take(held.len().saturating_sub(quota))
            .copied()
            .collect();
        l.releasing.retain(|k| extra.contains(k));
        for &k in &extra {
            if !l.releasing.insert(k) {
                let key = self.shard_key(k);
                self.etcd
                    .txn(
                        vec![etcd::held_by(&key, me)],
                        vec![etcd::delete(&key)],
                        vec![],
                    )
                    .await?;
                held.remove(&k);
                l.releasing.remove(&k);
                tracing::info!(
                    shard = k,
                    share = quota,
                    "ha: shard given up for another replica"
                );
            }
        }
        if others.is_empty() {
            // Free shards, from a place of this replica's own so that replicas starting together
            // do not all race for the same one.
            let start = shard_of(&self.config.id, shards);
            for i in 0..shards {
                if held.len() >= quota {
                    break;
                }
                let k = (start + i) % shards;
                if owners.contains_key(&k) {
                    continue;
                }
                let key = self.shard_key(k);
                let (won, _) = self
                    .etcd
                    .txn(
                        vec![etcd::absent(&key)],
                        vec![etcd::put(&key, self.config.id.as_bytes(), me)],
                        vec![],
                    )
                    .await?;
                if won {
                    held.insert(k);
                }
            }
        }
        {
            let mut h = lock(&self.held);
            h.shards = held.clone();
            h.agreed = agreed.clone();
        }
        if let Some(until) = renewed {
            l.valid_until = until;
            self.valid_until(Some(until));
        }
        for k in 0..shards {
            let lead = held.contains(&k) && !l.releasing.contains(&k) && agreed.contains(&k);
            if !lead || Instant::now() < l.valid_until {
                self.set_gate(k, lead);
            }
        }
        Ok(())
    }

    fn set_gate(&self, shard: u32, leading: bool) {
        let changed = self
            .gates
            .get(shard as usize)
            .is_some_and(|g| g.send_if_modified(|v| std::mem::replace(v, leading) != leading));
        if changed && leading {
            tracing::info!(shard, "ha: leading shard");
        } else if changed {
            tracing::info!(
                shard,
                "ha: no longer leading shard; its targets are not polled here"
            );
        }
        let gauge = self
            .metrics
            .ha
            .shard_leader
            .with_label_values(&[&shard.to_string()]);
        self.set(&gauge, if leading { 1.0 } else { 0.0 });
        let any = self.gates.iter().any(|g| *g.borrow());
        self.set(&self.metrics.ha.leader, if any { 1.0 } else { 0.0 });
    }

    fn close_all(&self, why: &str) {
        let was = self.gates.iter().any(|g| *g.borrow());
        for k in 0..self.config.shards {
            self.set_gate(k, false);
        }
        if was && why == STOPPING {
            tracing::info!("ha: stopped leading every shard (stopping)");
        } else if was {
            tracing::warn!(
                reason = why,
                "ha: stopped leading every shard; no vendor is polled"
            );
        }
    }

    /// Whether this replica's lease holds target `name`'s shard key (its day may be written).
    pub fn holds(&self, name: &str) -> bool {
        let k = self.shard(name);
        let h = lock(&self.held);
        h.shards.contains(&k) && h.agreed.contains(&k)
    }

    fn state_key(&self, name: &str) -> String {
        self.key(&format!("state/{name}"))
    }

    /// Writes target `name`'s day (`data`: the state file's content, compressed) where this
    /// replica still holds its shard. `Ok(false)`: not written, another replica leads it.
    pub async fn save_day(&self, name: &str, data: &[u8]) -> Result<bool, String> {
        let k = self.shard(name);
        let (lease, holds) = {
            let h = lock(&self.held);
            (h.lease, h.shards.contains(&k) && h.agreed.contains(&k))
        };
        if !holds || lease == 0 {
            return Ok(false);
        }
        let guard = etcd::held_by(&self.shard_key(self.shard(name)), lease);
        let base = self.state_key(name);
        let generation = format!("{:016x}", fastrand::u64(..));
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[]]
        } else {
            data.chunks(CHUNK).collect()
        };
        for (i, c) in chunks.iter().enumerate() {
            let key = format!("{base}/{generation}/{i:05}");
            let (ran, _) = self
                .etcd
                .txn(vec![guard.clone()], vec![etcd::put(&key, c, 0)], vec![])
                .await
                .map_err(|e| e.to_string())?;
            if !ran {
                return Ok(false);
            }
        }
        let pointer = json!({
            "generation": generation,
            "chunks": chunks.len(),
            "bytes": data.len(),
            "writer": self.writer,
        });
        let dir = format!("{base}/");
        let this = format!("{base}/{generation}/");
        let after = format!("{base}/{generation}0");
        let (ran, _) = self
            .etcd
            .txn(
                vec![guard],
                vec![
                    etcd::put(&base, pointer.to_string().as_bytes(), 0),
                    // Every other generation's chunks go: older ones and any a write cut short
                    // left behind.
                    etcd::delete_range(&dir, this.as_bytes()),
                    etcd::delete_range(&after, &etcd::prefix_end(dir.as_bytes())),
                ],
                vec![],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(ran)
    }

    /// Reads target `name`'s day from etcd: `None` where none was written. The pointer and
    /// each chunk are read at their own keys (one answer never holds more than a chunk).
    pub async fn load_day(&self, name: &str) -> Result<Option<KeptDay>, LoadError> {
        let base = self.state_key(name);
        let unreachable = |e: EtcdError| match e {
            EtcdError::Unreachable(_) => LoadError::Unreachable(e.to_string()),
            _ => LoadError::Refused(e.to_string()),
        };
        let Some(pointer) = self.etcd.get(&base).await.map_err(unreachable)? else {
            return Ok(None);
        };
        let p: Value = serde_json::from_slice(&pointer.value)
            .map_err(|e| LoadError::Damaged(format!("{base}: not the pointer of a day: {e}")))?;
        let (Some(generation), Some(n), Some(bytes)) = (
            p.get("generation").and_then(Value::as_str),
            p.get("chunks").and_then(Value::as_u64),
            p.get("bytes").and_then(Value::as_u64),
        ) else {
            return Err(LoadError::Damaged(format!(
                "{base}: the pointer of the day lacks generation, chunks or bytes"
            )));
        };
        if n == 0 || n > 1 << 16 || bytes > n.saturating_mul(CHUNK as u64) {
            return Err(LoadError::Damaged(format!(
                "{base}: a pointer to {n} chunks of {bytes} bytes"
            )));
        }
        let mut data = Vec::with_capacity(bytes as usize);
        for i in 0..n {
            let key = format!("{base}/{generation}/{i:05}");
            match self.etcd.get(&key).await.map_err(unreachable)? {
                Some(c) => data.extend_from_slice(&c.value),
                None => {
                    return Err(LoadError::Damaged(format!(
                        "{base}: chunk {i} of the {n} of the day is missing"
                    )))
                }
            }
        }
        if data.len() as u64 != bytes {
            return Err(LoadError::Damaged(format!(
                "{base}: the chunks of the day hold {} bytes, not {bytes}",
                data.len()
            )));
        }
        let own = p.get("writer").and_then(Value::as_str) == Some(self.writer.as_str());
        Ok(Some(KeptDay { data, own }))
    }

    /// Whether the last round with etcd went through (writes are not tried while it does not).
    pub fn etcd_up(&self) -> bool {
        self.metrics.ha.etcd_up.get() == 1.0
    }
}

/// The time between two rounds for `lease`.
fn round_of(lease: Duration) -> Duration {
    (lease / 5).min(MAX_ROUND)
}

/// How long after sending a renewal that etcd answered with `ttl` this replica may lead: two
/// thirds of the TTL, a third kept as the margin for clock rates and the answer's travel.
fn valid_for(ttl: i64) -> Duration {
    Duration::from_millis((ttl.max(0) as u64).saturating_mul(1000) * 2 / 3)
}

async fn sleep_until_or_never(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<HaConfig, Vec<String>> {
        let v: Yaml = serde_yaml::from_str(text).unwrap_or_default();
        parse(v, |p| PathBuf::from("/etc/rtc").join(p)).map_err(|errs| {
            errs.into_iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect()
        })
    }

    #[test]
    fn the_defaults_and_the_limits_of_ha() {
        let c = parsed("{etcd: {endpoints: [http://127.0.0.1:2379]}, id: a}").ok();
        let c = c.as_ref();
        assert_eq!(c.map(|c| c.lease), Some(DEFAULT_LEASE));
        assert_eq!(c.map(|c| c.shards), Some(1));
        assert_eq!(c.map(|c| c.prefix.as_str()), Some(DEFAULT_PREFIX));
        // At the limits, and one step past them.
        for (text, ok) in [
            ("lease: 3s", true),
            ("lease: 300s", true),
            ("lease: 2s", false),
            ("lease: 301s", false),
            ("lease: 2500ms", false),
            ("lease: 3500ms", false),
            ("shards: 1", true),
            ("shards: 256", true),
            ("shards: 0", false),
            ("shards: 257", false),
            ("prefix: /", false),
            ("prefix: a/b", false),
            ("prefix: /a/", false),
            ("id: 'a b'", false),
        ] {
            let got = parsed(&format!(
                "{{etcd: {{endpoints: [http://127.0.0.1:2379]}}, id: a, {text}}}"
            ));
            assert_eq!(got.is_ok(), ok, "{text}: {got:?}");
        }
    }

    #[test]
    fn every_error_names_its_field() {
        let errs = parsed(
            "{etcd: {endpoints: ['ftp://x', 'http://h:2379/v3', 'http://u:p@h:1', 'http://ok:2379'], username: u, tls: {cert_file: c}}, lease: 1s}",
        )
        .err()
        .unwrap_or_default();
        let text = errs.join("\n");
        for want in [
            "etcd.endpoints[0]: must be http:// or https://",
            "etcd.endpoints[1]: must be a base URL",
            "etcd.endpoints[2]: must not hold a user or password",
            "etcd.password: missing",
            "etcd.tls: cert_file and key_file go together",
            "etcd.tls: set, but an endpoint is http://",
            "lease: must be from 3s to 300s",
        ] {
            assert!(text.contains(want), "{want} not in:\n{text}");
        }
        // The password never shows, also where it is wrong.
        let errs = parsed("{etcd: {endpoints: [http://h:1], password: hunter2}}")
            .err()
            .unwrap_or_default()
            .join("\n");
        assert!(!errs.contains("hunter2"), "{errs}");
        assert!(parsed("{etcd: {endpoints: []}}").is_err());
        // Every unknown key at once, and the other errors beside them.
        let errs = parsed(
            "{etcd: {endpoints: ['localhost:2379', 'http://h:1', 'http://h:1/'], peers: 1, tls: {ca: x}}, leader: x, lease: 1s}",
        )
        .err()
        .unwrap_or_default()
        .join("\n");
        for want in [
            "leader: unknown field `leader`",
            "etcd.peers: unknown field `peers`",
            "etcd.tls.ca: unknown field `ca`",
            "lease: must be from 3s to 300s",
            "etcd.endpoints[0]: \"localhost:2379\" has no scheme: write http://localhost:2379",
            "etcd.endpoints[2]: http://h:1 is listed twice",
        ] {
            assert!(errs.contains(want), "{want} not in:\n{errs}");
        }
    }

    #[test]
    fn tls_files_are_read_when_the_config_is() {
        let dir = std::env::temp_dir().join(format!("rtc-ha-tls-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let garbage = dir.join("garbage.pem");
        let _ = std::fs::write(&garbage, "garbage\n");
        for (tls, want) in [
            (
                format!("{{ca_file: {}}}", dir.join("missing.pem").display()),
                "etcd.tls.ca_file: ",
            ),
            (
                format!("{{ca_file: {}}}", garbage.display()),
                "etcd.tls.ca_file: ",
            ),
            (
                format!("{{cert_file: {0}, key_file: {0}}}", garbage.display()),
                "etcd.tls.cert_file: ",
            ),
            // Every wrong file is named, not only the first.
            (
                format!(
                    "{{ca_file: {0}, cert_file: {0}, key_file: {0}}}",
                    garbage.display()
                ),
                "etcd.tls.key_file: ",
            ),
            (
                format!(
                    "{{ca_file: {0}, cert_file: {0}, key_file: {0}}}",
                    garbage.display()
                ),
                "etcd.tls.ca_file: ",
            ),
        ] {
            let errs = parsed(&format!(
                "{{etcd: {{endpoints: [https://h:2379], tls: {tls}}}, id: a}}"
            ))
            .err()
            .unwrap_or_default()
            .join("\n");
            assert!(errs.contains(want), "{tls}: {want} not in {errs}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shards_are_stable_and_spread() {
        // Pinned: a change of hash would move every target to another shard at an upgrade,
        // with replicas of two releases disagreeing.
        assert_eq!(shard_of("urtc-main", 6), shard_of("urtc-main", 6));
        let spread: BTreeSet<u32> = (0..60).map(|i| shard_of(&format!("t{i}"), 6)).collect();
        assert_eq!(spread.len(), 6);
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(
            [
                shard_of("a", 6),
                shard_of("urtc-main", 6),
                shard_of("zego", 6)
            ],
            [
                (xxhash_rust::xxh3::xxh3_64(b"a") % 6) as u32,
                (xxhash_rust::xxh3::xxh3_64(b"urtc-main") % 6) as u32,
                (xxhash_rust::xxh3::xxh3_64(b"zego") % 6) as u32
            ]
        );
    }

    #[test]
    fn one_accounts_targets_share_a_shard_named_by_its_first_target() {
        // Three accounts: 1 (a, m, z), 2 (b), 3 (c, y).
        let targets = [("z", 1), ("a", 1), ("b", 2), ("m", 1), ("y", 3), ("c", 3)];
        for shards in [2, 3, 6, 256] {
            let got = assign(targets, shards);
            assert_eq!(got.len(), 6);
            for (name, account) in targets {
                let group = targets
                    .iter()
                    .filter(|(_, a)| *a == account)
                    .map(|(n, _)| *n)
                    .min()
                    .unwrap_or(name);
                assert_eq!(got.get(name), Some(&shard_of(group, shards)), "{name}");
            }
            assert_eq!(got.get("a"), got.get("z"));
            assert_eq!(got.get("c"), got.get("y"));
        }
        // Order does not matter: every replica computes the same.
        let mut reversed = targets;
        reversed.reverse();
        assert_eq!(assign(targets, 6), assign(reversed, 6));
        // Many accounts spread over every shard.
        let many: Vec<(String, u64)> = (0..60).map(|i| (format!("t{i}"), i)).collect();
        let spread: BTreeSet<u32> = assign(many.iter().map(|(n, a)| (n.as_str(), *a)), 6)
            .into_values()
            .collect();
        assert_eq!(spread.len(), 6);
    }

    #[test]
    fn config_check_says_which_targets_each_shard_holds() {
        let c = parsed("{etcd: {endpoints: [http://e:2379]}, id: r1, shards: 3, prefix: /p}");
        let Ok(c) = c else { panic!("{c:?}") };
        let names = ["a", "urtc-main", "zego"];
        let lines = summary(&c, names.iter().enumerate().map(|(i, n)| (*n, i as u64)));
        assert_eq!(
            lines[0],
            "ha: etcd http://e:2379, prefix /p, lease 15s, 3 shard(s), id r1"
        );
        assert_eq!(lines.len(), 4, "{lines:?}");
        for n in names {
            let k = shard_of(n, 3);
            assert!(
                lines[1 + k as usize].contains(n),
                "{n} in shard {k}: {lines:?}"
            );
        }
        let one = parsed("{etcd: {endpoints: [http://e:2379]}, id: r1}");
        let Ok(one) = one else { panic!("{one:?}") };
        assert_eq!(
            summary(&one, std::iter::empty()).len(),
            1,
            "one shard and no target: the group line only"
        );
    }

    #[tokio::test]
    async fn a_gate_past_its_deadline_is_closed_even_while_still_open() {
        // A process frozen past its lease's deadline wakes with the gate still open (its
        // campaign has not run yet): no request may go out.
        let (tx, open) = watch::channel(true);
        let until = Arc::new(Mutex::new(Some(Instant::now() + Duration::from_secs(60))));
        let gate = LeaderGate {
            open,
            until: until.clone(),
        };
        assert!(gate.is_open());
        *lock(&until) = Some(Instant::now() - Duration::from_millis(1));
        assert!(!gate.is_open(), "past the deadline");
        tokio::time::timeout(Duration::from_secs(1), gate.closed())
            .await
            .expect("closed() returns at once past the deadline");
        // Renewed: open again; then the gate closes.
        *lock(&until) = Some(Instant::now() + Duration::from_secs(60));
        assert!(gate.is_open());
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.closed().await }
        });
        tx.send_replace(false);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("closed() returns when the gate closes")
            .expect("task");
        *lock(&until) = None;
        assert!(!gate.is_open(), "no lease");
    }

    #[test]
    fn a_leader_stops_a_third_of_a_lease_early() {
        assert_eq!(valid_for(15), Duration::from_secs(10));
        assert_eq!(valid_for(3), Duration::from_secs(2));
        assert_eq!(valid_for(0), Duration::ZERO);
        assert_eq!(valid_for(-1), Duration::ZERO);
    }
}

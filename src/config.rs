//! `exporter.yaml` -> a validated [`Config`]: parse, default, validate, model.
//!
//! Every error names the file, the target and the field
//! (`exporter.yaml: targets[2] (urtc-main): credentials.private_key: ...`), and all errors of a
//! file are collected before giving up, so `--config.check` can list them at once. Secrets are
//! resolved here (`{env: NAME}`, `{file: PATH}`, `{credential: NAME}` or a plain string) and live
//! on only inside [`Secret`], which never prints its value.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use crate::classes::{Class, Classes};
use crate::clouds::{self, Vendor};
use crate::fields::redact_values;
pub use crate::fields::{from_value, FieldError, PromDuration, Secret, CREDENTIALS_DIRECTORY};
use crate::schedule::{never_fires, parse_cron, Schedule};

/// The longest `interval` (global or a target's): "today" needs a poll a day.
pub const MAX_INTERVAL: Duration = Duration::from_secs(86_400);
/// The longest `poll_timeout` and `request_timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3_600);
/// The longest class (`classes[].duration`).
pub const MAX_CLASS_DURATION: Duration = Duration::from_secs(7 * 86_400);

/// The `global:` section, defaults applied.
#[derive(Debug, Clone)]
pub struct Global {
    /// "Today" starts at midnight in this zone.
    pub timezone: Tz,
    /// Default poll interval.
    pub interval: Duration,
    /// Deadline of one whole poll of one target.
    pub poll_timeout: Duration,
    /// Deadline of one HTTP request.
    pub request_timeout: Duration,
    /// Failed polls after which a target's room series are dropped.
    pub stale_after: u32,
    /// Rooms per target that get their own series.
    pub max_rooms: usize,
    /// A vendor answer larger than this fails its request (`too_large`).
    pub max_response_bytes: usize,
    /// Where today's figures are kept across restarts, if anywhere; resolved at load (a
    /// relative path is beside the config file: [`beside`]).
    pub state_file: Option<PathBuf>,
    /// The share of a room's capacity from which it counts as near capacity, where the target
    /// or room sets none.
    pub capacity_warning_ratio: f64,
}

impl Global {
    /// Whether every key that shapes a target's polls or its day is the same (zone, timeouts,
    /// `stale_after`, `max_rooms`, `max_response_bytes`): a reload that changes only the others
    /// (`capacity_warning_ratio`, `state_file`; `interval` where every target sets its own)
    /// restarts no target.
    pub fn polls_alike(&self, other: &Global) -> bool {
        self.timezone == other.timezone
            && self.poll_timeout == other.poll_timeout
            && self.request_timeout == other.request_timeout
            && self.stale_after == other.stale_after
            && self.max_rooms == other.max_rooms
            && self.max_response_bytes == other.max_response_bytes
    }
}

impl Default for Global {
    fn default() -> Self {
        Global {
            timezone: Tz::UTC,
            interval: Duration::from_secs(60),
            poll_timeout: Duration::from_secs(50),
            request_timeout: Duration::from_secs(10),
            stale_after: 3,
            max_rooms: 5000,
            max_response_bytes: 8 << 20,
            state_file: None,
            capacity_warning_ratio: DEFAULT_WARNING_RATIO,
        }
    }
}

/// The default of `global.capacity_warning_ratio`.
pub const DEFAULT_WARNING_RATIO: f64 = 0.9;

/// Room capacities and the share of them from which a room counts as near capacity, for
/// `rtc_room_capacity`, `rtc_room_capacity_warning_ratio` and the capacity alerts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Capacity {
    /// Capacity of rooms not listed in `rooms`.
    pub default: Option<u64>,
    /// Per-room capacities.
    pub rooms: BTreeMap<String, u64>,
    /// The target's warning ratio (`global.capacity_warning_ratio` where it sets none).
    pub warning_ratio: Option<f64>,
    /// Per-room warning ratios.
    pub room_warning_ratios: BTreeMap<String, f64>,
}

impl Capacity {
    /// The capacity of one room, if configured.
    pub fn of(&self, room: &str) -> Option<u64> {
        self.rooms.get(room).copied().or(self.default)
    }

    /// The share of one room's capacity from which it is near capacity.
    pub fn warning_ratio_of(&self, room: &str) -> f64 {
        self.room_warning_ratios
            .get(room)
            .copied()
            .or(self.warning_ratio)
            .unwrap_or(DEFAULT_WARNING_RATIO)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapacity {
    #[serde(default)]
    default: Option<u64>,
    #[serde(default)]
    rooms: BTreeMap<String, RoomCapacity>,
    #[serde(default)]
    warning_ratio: Option<f64>,
}

/// One room under `capacity.rooms`: `N`, or `{ capacity: N, warning_ratio: R }` (either key).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomCapacityMap {
    #[serde(default)]
    capacity: Option<u64>,
    #[serde(default)]
    warning_ratio: Option<f64>,
}

struct RoomCapacity(RoomCapacityMap);

impl<'de> Deserialize<'de> for RoomCapacity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RoomCapacity;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a capacity (a number of users) or { capacity: N, warning_ratio: R }")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<RoomCapacity, E> {
                Ok(RoomCapacity(RoomCapacityMap {
                    capacity: Some(n),
                    warning_ratio: None,
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RoomCapacity, A::Error> {
                let m = RoomCapacityMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if m.capacity.is_none() && m.warning_ratio.is_none() {
                    return Err(de::Error::custom("give capacity, warning_ratio or both"));
                }
                Ok(RoomCapacity(m))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Capacity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawCapacity::deserialize(d)?;
        let mut c = Capacity {
            default: raw.default,
            warning_ratio: raw.warning_ratio,
            ..Capacity::default()
        };
        for (room, RoomCapacity(m)) in raw.rooms {
            if let Some(n) = m.capacity {
                c.rooms.insert(room.clone(), n);
            }
            if let Some(r) = m.warning_ratio {
                c.room_warning_ratios.insert(room, r);
            }
        }
        Ok(c)
    }
}

/// What the config expects of a target's rooms, exported beside its series so that one alert
/// rule serves every room: capacities and warning ratios, the licensed concurrency, the
/// scheduled classes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expected {
    /// Room capacities and warning ratios.
    pub capacity: Capacity,
    /// `max_users`: the concurrent users the account is licensed or billed for.
    pub max_users: Option<u64>,
    /// When rooms are expected in use.
    pub classes: Classes,
}

/// One configured target, validated.
#[derive(Clone)]
pub struct Target {
    /// Unique name; the `target` label.
    pub name: String,
    /// The vendor (its registry row; its name is the `vendor` label).
    pub vendor: &'static clouds::VendorEntry,
    /// When to poll.
    pub schedule: Schedule,
    /// Endpoint override (the demo points it at a simulator).
    pub endpoint: Option<String>,
    /// Lowered QPS, if configured.
    pub qps: Option<f64>,
    /// Capacities, licensed users and scheduled classes.
    pub expected: Arc<Expected>,
    /// The vendor client, built from the vendor's own keys.
    pub client: Arc<dyn Vendor>,
    /// A hash of the entry but its render-only keys (capacity, max_users, classes), secrets
    /// resolved: equal means its polls are unchanged on reload.
    pub fingerprint: u64,
    /// A hash of the vendor, app and credentials (secrets resolved): equal means the same
    /// account's data, so its day's figures carry over a reload and a restart.
    pub identity: u64,
    /// A hash of the vendor and credentials (secrets resolved): the account whose rate limit
    /// the target shares. `ha:` keeps one account's targets in one shard.
    pub account: u64,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("vendor", &self.vendor)
            .field("schedule", &self.schedule)
            .field("endpoint", &self.endpoint)
            .field("qps", &self.qps)
            .finish_non_exhaustive()
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    /// The `global:` section.
    pub global: Global,
    /// The targets, in file order.
    pub targets: Vec<Target>,
    /// `ha:`: leader election and the day on etcd, where configured.
    pub ha: Option<crate::ha::HaConfig>,
}

impl Config {
    /// What is valid but probably not meant, one line each (`--config.check` prints them, the
    /// daemon logs them at start).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.targets.is_empty() {
            w.push(format!(
                "{}: no targets: only the exporter's own metrics are served",
                self.path.display()
            ));
        }
        let g = &self.global;
        if g.request_timeout > g.poll_timeout {
            w.push(format!(
                "{}: global.request_timeout ({}) is longer than global.poll_timeout ({}): a request never gets its whole time, the poll's deadline cuts it first",
                self.path.display(),
                show_duration(g.request_timeout),
                show_duration(g.poll_timeout)
            ));
        }
        w
    }
}

/// Every error found in one config file.
#[derive(Debug, thiserror::Error)]
#[error("{}", .errors.join("\n"))]
pub struct ConfigError {
    /// One line per error, each naming the file, target and field.
    pub errors: Vec<String>,
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        errors: vec![format!("{}: cannot read: {e}", path.display())],
    })?;
    parse(&text, path)
}

const TARGET_KEYS: &[&str] = &[
    "name",
    "vendor",
    "interval",
    "schedule",
    "endpoint",
    "qps",
    "capacity",
    "max_users",
    "classes",
];

/// Parses and validates config text; `path` names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let mut errors = Vec::new();
    let root: Value = serde_yaml::from_str(text).map_err(|e| ConfigError {
        errors: vec![format!("{file}: {}", redact_values(&e.to_string()))],
    })?;
    let Value::Mapping(mut root) = root else {
        return Err(ConfigError {
            errors: vec![format!(
                "{file}: expected a mapping with `global` and `targets`"
            )],
        });
    };
    let raw_global = root.remove("global").unwrap_or(Value::Null);
    let raw_targets = root.remove("targets");
    let raw_ha = root.remove("ha");
    for (k, _) in root.iter() {
        errors.push(format!(
            "{file}: unknown top-level key {}, expected global, targets or ha",
            key_name(k)
        ));
    }
    let ha = match raw_ha {
        None => None,
        Some(Value::Null) => {
            errors.push(format!(
                "{file}: ha: empty: give it at least etcd.endpoints, or remove the key"
            ));
            None
        }
        Some(mut raw) => {
            anchor_secret_files(&mut raw, path);
            match crate::ha::parse(raw, |p| beside(path, p)) {
                Ok(ha) => Some(ha),
                Err(errs) => {
                    for e in errs {
                        if e.path.is_empty() {
                            errors.push(format!("{file}: ha: {}", e.message));
                        } else {
                            errors.push(format!("{file}: ha.{}: {}", e.path, e.message));
                        }
                    }
                    None
                }
            }
        }
    };

    let mut global = parse_global(raw_global, &file, &mut errors);
    global.state_file = global.state_file.map(|p| beside(path, p));

    let mut targets = Vec::new();
    match raw_targets {
        None => errors.push(format!(
            "{file}: targets: missing (an empty `targets:` or `targets: []` starts with none)"
        )),
        // No targets is valid (a fresh package's config): the exporter serves its own metrics
        // and warns; see `Config::warnings`.
        Some(Value::Null) => {}
        Some(Value::Sequence(seq)) => {
            let mut first_at: HashMap<String, usize> = HashMap::new();
            for (i, mut raw) in seq.into_iter().enumerate() {
                anchor_secret_files(&mut raw, path);
                let (name, result) = parse_target(raw, &global);
                let mut errs = match result {
                    Ok(t) => {
                        targets.push(t);
                        Vec::new()
                    }
                    Err(errs) => errs,
                };
                // A duplicate is reported with the entry's other errors, whatever they are.
                if let Some(n) = &name {
                    match first_at.get(n) {
                        Some(first) => errs.insert(
                            0,
                            FieldError::new(
                                "name",
                                format!("duplicate target name, also used by targets[{first}]"),
                            ),
                        ),
                        None => {
                            first_at.insert(n.clone(), i);
                        }
                    }
                }
                let who = match &name {
                    Some(n) => format!("targets[{i}] ({n})"),
                    None => format!("targets[{i}]"),
                };
                for e in errs {
                    if e.path.is_empty() {
                        errors.push(format!("{file}: {who}: {}", e.message));
                    } else {
                        errors.push(format!("{file}: {who}: {}: {}", e.path, e.message));
                    }
                }
            }
        }
        Some(_) => errors.push(format!("{file}: targets: expected a list of targets")),
    }

    if errors.is_empty() {
        Ok(Config {
            path: path.to_path_buf(),
            global,
            targets,
            ha,
        })
    } else {
        Err(ConfigError { errors })
    }
}

/// A path written in the config file: a relative one resolves against the directory of the
/// config file, as Prometheus resolves `rule_files`, not against the working directory; made
/// absolute where the working directory is known, so `--config.check` shows where it is.
pub fn beside(config: &Path, written: PathBuf) -> PathBuf {
    if written.is_absolute() {
        return written;
    }
    let joined = config.parent().unwrap_or(Path::new("")).join(written);
    std::path::absolute(&joined).unwrap_or(joined)
}

/// Makes every relative `{file: PATH}` secret source in `v` a path beside the config file (see
/// [`beside`]): a secret file read by a service started in `/` is found where the config
/// says, whatever the working directory.
pub fn anchor_secret_files(v: &mut Value, config: &Path) {
    match v {
        Value::Mapping(m) => {
            if m.len() == 1 {
                if let Some(Value::String(written)) = m.get_mut("file") {
                    let anchored = beside(config, PathBuf::from(written.as_str()));
                    *written = anchored.display().to_string();
                    return;
                }
            }
            for (_, v) in m.iter_mut() {
                anchor_secret_files(v, config);
            }
        }
        Value::Sequence(items) => {
            for v in items {
                anchor_secret_files(v, config);
            }
        }
        _ => {}
    }
}

fn key_name(k: &Value) -> String {
    match k {
        Value::String(s) => format!("`{s}`"),
        _ => "(not a string)".to_string(),
    }
}

fn take<T: de::DeserializeOwned>(
    map: &mut Mapping,
    key: &str,
    errs: &mut Vec<FieldError>,
) -> Option<T> {
    let v = map.remove(key)?;
    match from_value::<T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            let path = if e.path.is_empty() {
                key.to_string()
            } else if e.path.starts_with('[') {
                format!("{key}{}", e.path)
            } else {
                format!("{key}.{}", e.path)
            };
            errs.push(FieldError::new(path, e.message));
            None
        }
    }
}

/// Checks a target name: `[A-Za-z0-9_-]{1,64}`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A size: a number of bytes, or a number with `KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB` or `B`.
pub fn parse_size(v: &Value) -> Result<usize, String> {
    let text = match v {
        Value::Number(n) => {
            return n
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| "expected a size such as 8MiB".to_string())
        }
        Value::String(s) => s.trim(),
        _ => return Err("expected a size such as 8MiB".into()),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("\"{text}\" is not a size such as 8MiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => {
            return Err(format!(
                "unknown unit \"{u}\" (B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("\"{text}\" is too large"))
}

/// A warning ratio: a share of the capacity in (0, 1].
fn check_ratio(r: f64) -> Result<f64, String> {
    if r.is_finite() && r > 0.0 && r <= 1.0 {
        Ok(r)
    } else {
        Err("must be a share of the capacity, above 0 and at most 1 (0.9 is 90 %)".into())
    }
}

/// A duration as a config would write it: `10s`, `1500ms`.
fn show_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

const GLOBAL_KEYS: &[&str] = &[
    "timezone",
    "interval",
    "poll_timeout",
    "request_timeout",
    "stale_after",
    "max_rooms",
    "max_response_bytes",
    "state_file",
    "capacity_warning_ratio",
];

/// The `global:` section, key by key, so every bad key is reported.
fn parse_global(raw: Value, file: &str, errors: &mut Vec<String>) -> Global {
    let mut global = Global::default();
    let mut map = match raw {
        Value::Null => return global,
        Value::Mapping(m) => m,
        _ => {
            errors.push(format!("{file}: global: expected a mapping"));
            return global;
        }
    };
    let mut errs = Vec::new();
    if let Some(tz) = take::<String>(&mut map, "timezone", &mut errs) {
        match tz.parse::<Tz>() {
            Ok(tz) => global.timezone = tz,
            Err(_) => errs.push(FieldError::new(
                "timezone",
                format!("unknown IANA time zone \"{tz}\""),
            )),
        }
    }
    for (key, slot, max) in [
        ("interval", &mut global.interval, MAX_INTERVAL),
        ("poll_timeout", &mut global.poll_timeout, MAX_TIMEOUT),
        ("request_timeout", &mut global.request_timeout, MAX_TIMEOUT),
    ] {
        if let Some(PromDuration(d)) = take(&mut map, key, &mut errs) {
            if d < Duration::from_millis(100) {
                errs.push(FieldError::new(key, "must be at least 100ms"));
            } else if d > max {
                errs.push(FieldError::new(
                    key,
                    format!("must be at most {}", show_duration(max)),
                ));
            } else {
                *slot = d;
            }
        }
    }
    if let Some(n) = take::<u32>(&mut map, "stale_after", &mut errs) {
        if n == 0 {
            errs.push(FieldError::new("stale_after", "must be at least 1"));
        } else {
            global.stale_after = n;
        }
    }
    if let Some(v) = take::<Value>(&mut map, "max_response_bytes", &mut errs) {
        match parse_size(&v) {
            Ok(n) if n >= 1024 => global.max_response_bytes = n,
            Ok(_) => errs.push(FieldError::new(
                "max_response_bytes",
                "must be at least 1KiB",
            )),
            Err(e) => errs.push(FieldError::new("max_response_bytes", e)),
        }
    }
    if let Some(p) = take::<PathBuf>(&mut map, "state_file", &mut errs) {
        if p.as_os_str().is_empty() {
            errs.push(FieldError::new("state_file", "must not be empty"));
        } else if p.file_name().is_none() {
            errs.push(FieldError::new("state_file", "must name a file"));
        } else {
            global.state_file = Some(p);
        }
    }
    if let Some(n) = take::<usize>(&mut map, "max_rooms", &mut errs) {
        if n == 0 {
            errs.push(FieldError::new("max_rooms", "must be at least 1"));
        } else {
            global.max_rooms = n;
        }
    }
    if let Some(r) = take::<f64>(&mut map, "capacity_warning_ratio", &mut errs) {
        match check_ratio(r) {
            Ok(r) => global.capacity_warning_ratio = r,
            Err(e) => errs.push(FieldError::new("capacity_warning_ratio", e)),
        }
    }
    for (k, _) in map.iter() {
        errs.push(FieldError::new(
            key_name(k).trim_matches('`'),
            format!("unknown key, expected one of: {}", GLOBAL_KEYS.join(", ")),
        ));
    }
    for e in errs {
        errors.push(format!("{file}: global.{}: {}", e.path, e.message));
    }
    global
}

/// Hashes a target entry with its secrets resolved: the whole entry (`fingerprint`), what
/// identifies the account's data (`identity`: vendor, app or account ids, credentials), and
/// the account whose rate limit it shares (`account`: vendor and credentials).
fn hashes(map: &Mapping) -> (u64, u64, u64) {
    fn resolved(v: &Value, out: &mut Vec<u8>) {
        // A secret source is hashed by its value, so a rotated secret counts as a change.
        if let Value::Mapping(m) = v {
            let source = m.len() == 1
                && m.keys()
                    .all(|k| matches!(k.as_str(), Some("env" | "file" | "credential")));
            if source {
                if let Ok(s) = from_value::<Secret>(v.clone()) {
                    out.extend_from_slice(
                        &xxhash_rust::xxh3::xxh3_64(s.expose().as_bytes()).to_le_bytes(),
                    );
                    return;
                }
            }
            for (k, v) in m {
                out.extend_from_slice(serde_yaml::to_string(k).unwrap_or_default().as_bytes());
                resolved(v, out);
            }
        } else {
            out.extend_from_slice(serde_yaml::to_string(v).unwrap_or_default().as_bytes());
        }
    }
    let mut all = Vec::new();
    let polls: Mapping = map
        .iter()
        .filter(|(k, _)| !k.as_str().is_some_and(|k| RENDER_ONLY.contains(&k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    resolved(&Value::Mapping(polls), &mut all);
    let mut id = Vec::new();
    // The account: the vendor and the credentials' values, resolved, in key order, whatever
    // the order or the form they are written in (inline or from a file, the environment).
    let mut account = Vec::new();
    if let Some(v) = map.get("vendor") {
        account.extend_from_slice(serde_yaml::to_string(v).unwrap_or_default().as_bytes());
    }
    if let Some(Value::Mapping(creds)) = map.get("credentials") {
        let mut keys: Vec<(String, &Value)> = creds
            .iter()
            .map(|(k, v)| (serde_yaml::to_string(k).unwrap_or_default(), v))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in keys {
            account.extend_from_slice(k.as_bytes());
            match from_value::<Secret>(v.clone()) {
                Ok(s) => account.extend_from_slice(
                    &xxhash_rust::xxh3::xxh3_64(s.expose().as_bytes()).to_le_bytes(),
                ),
                Err(_) => resolved(v, &mut account),
            }
        }
    }
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default();
        let identifying = matches!(key, "vendor" | "credentials" | "region")
            || key.ends_with("app_id")
            || key.ends_with("appid");
        if identifying {
            id.extend_from_slice(key.as_bytes());
            resolved(v, &mut id);
        }
    }
    (
        xxhash_rust::xxh3::xxh3_64(&all),
        xxhash_rust::xxh3::xxh3_64(&id),
        xxhash_rust::xxh3::xxh3_64(&account),
    )
}

/// Target keys that shape only what is rendered beside its series (`Expected`), not its polls:
/// a reload that changes only these restarts nothing.
const RENDER_ONLY: &[&str] = &["capacity", "max_users", "classes"];

/// One target entry: its name where it has a valid one (errors and duplicates name it), and
/// the target or every error of the entry.
fn parse_target(raw: Value, global: &Global) -> (Option<String>, Result<Target, Vec<FieldError>>) {
    let Value::Mapping(mut map) = raw else {
        return (None, Err(vec![FieldError::new("", "expected a mapping")]));
    };
    let (fingerprint, identity, account) = hashes(&map);
    let mut errs = Vec::new();
    let name: Option<String> = take(&mut map, "name", &mut errs);
    let shown_name = name.clone().filter(|n| valid_name(n));
    match &name {
        None if errs.is_empty() => errs.push(FieldError::new("name", "missing")),
        Some(n) if !valid_name(n) => errs.push(FieldError::new(
            "name",
            format!("\"{n}\" must match [A-Za-z0-9_-]{{1,64}}"),
        )),
        _ => {}
    }
    let vendor_name: Option<String> = take(&mut map, "vendor", &mut errs);
    let interval: Option<PromDuration> = take(&mut map, "interval", &mut errs);
    let schedule: Option<String> = take(&mut map, "schedule", &mut errs);
    let endpoint: Option<String> = take(&mut map, "endpoint", &mut errs);
    let qps: Option<f64> = take(&mut map, "qps", &mut errs);
    let capacity: Option<Capacity> = take(&mut map, "capacity", &mut errs);
    let max_users: Option<u64> = take(&mut map, "max_users", &mut errs);
    let raw_classes: Option<Vec<RawClass>> = take(&mut map, "classes", &mut errs);
    let now = chrono::Utc::now();

    let schedule = match (interval, schedule) {
        (Some(_), Some(_)) => {
            errs.push(FieldError::new(
                "schedule",
                "give interval or schedule, not both",
            ));
            None
        }
        (Some(PromDuration(d)), None) if d < Duration::from_millis(100) => {
            errs.push(FieldError::new("interval", "must be at least 100ms"));
            None
        }
        (Some(PromDuration(d)), None) if d > MAX_INTERVAL => {
            errs.push(FieldError::new(
                "interval",
                "must be at most 24h (a day's figures need at least a poll a day; use schedule: for fixed times)",
            ));
            None
        }
        (Some(PromDuration(d)), None) => Some(Schedule::Interval(d)),
        (None, Some(expr)) => match parse_cron(&expr) {
            Ok(cron) if never_fires(&cron, global.timezone, now) => {
                errs.push(FieldError::new(
                    "schedule",
                    format!("\"{expr}\" never fires: no run after now, so the target would never be polled"),
                ));
                None
            }
            Ok(_) => Some(Schedule::Cron(expr)),
            Err(e) => {
                errs.push(FieldError::new("schedule", e));
                None
            }
        },
        (None, None) => Some(Schedule::Interval(global.interval)),
    };
    // `ws://` and `wss://` are the vendor's to read (below, once its client is built).
    if let Some(ep) = endpoint
        .as_ref()
        .filter(|ep| !ep.starts_with("ws://") && !ep.starts_with("wss://"))
    {
        match reqwest::Url::parse(ep) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => errs.push(FieldError::new(
                "endpoint",
                format!("\"{ep}\" is not an http(s) URL"),
            )),
        }
    }
    if let Some(q) = qps {
        if !(q.is_finite() && q > 0.0) {
            errs.push(FieldError::new("qps", "must be a positive number"));
        }
    }
    let mut capacity = capacity.unwrap_or_default();
    if let Some(r) = capacity.warning_ratio {
        if let Err(e) = check_ratio(r) {
            errs.push(FieldError::new("capacity.warning_ratio", e));
        }
    }
    for (room, r) in &capacity.room_warning_ratios {
        if let Err(e) = check_ratio(*r) {
            errs.push(FieldError::new(
                format!("capacity.rooms.{room}.warning_ratio"),
                e,
            ));
        }
    }
    capacity
        .warning_ratio
        .get_or_insert(global.capacity_warning_ratio);
    if max_users == Some(0) {
        errs.push(FieldError::new(
            "max_users",
            "must be at least 1 (the concurrent users the account is licensed for)",
        ));
    }
    let classes = raw_classes
        .map(|raw| parse_classes(raw, global.timezone, now, &mut errs))
        .unwrap_or_default();

    let entry = match vendor_name.as_deref() {
        None => {
            if !errs.iter().any(|e| e.path == "vendor") {
                errs.push(FieldError::new("vendor", "missing"));
            }
            None
        }
        Some(v) => match clouds::lookup(v) {
            Some(entry) => Some(entry),
            None => {
                errs.push(FieldError::new(
                    "vendor",
                    format!(
                        "unknown vendor \"{v}\" (known: {})",
                        clouds::REGISTRY
                            .iter()
                            .map(|e| e.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
                None
            }
        },
    };
    // What is left belongs to the vendor, which rejects keys it does not know.
    let client = entry.and_then(|entry| match (entry.parse)(Value::Mapping(map)) {
        Ok(c) => Some(c),
        Err(e) => {
            let known = e.message.starts_with("unknown field") && !e.path.contains('.');
            let message = if known {
                format!("{} (common keys: {})", e.message, TARGET_KEYS.join(", "))
            } else {
                e.message
            };
            errs.push(FieldError::new(e.path, message));
            None
        }
    });

    // The vendor reads the endpoint (LiveKit: required, `wss://` taken as `https://`).
    let endpoint = match &client {
        Some(c) => match c.endpoint(endpoint.as_deref()) {
            Ok(Some(ep)) if ep != endpoint.as_deref().unwrap_or_default() => {
                match reqwest::Url::parse(&ep) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                        Some(ep)
                    }
                    _ => {
                        errs.push(FieldError::new(
                            "endpoint",
                            format!(
                                "\"{}\" (read as \"{ep}\") is not an http(s) URL",
                                endpoint.as_deref().unwrap_or_default()
                            ),
                        ));
                        None
                    }
                }
            }
            Ok(ep) => ep,
            Err(message) => {
                errs.push(FieldError::new("endpoint", message));
                None
            }
        },
        None => endpoint,
    };

    // A lower qps is all the key can do: above the vendor's documented limit it would raise
    // nothing, and is most likely a misunderstanding.
    if let (Some(q), Some(limit)) = (qps, client.as_ref().and_then(|c| c.documented_qps())) {
        if q > limit {
            errs.push(FieldError::new(
                "qps",
                format!(
                    "{q} is above the documented limit of {limit} requests per second for {}: qps may only lower it",
                    entry.map_or("this vendor", |e| e.name)
                ),
            ));
        }
    }

    let result = match (name, entry, schedule, client) {
        (Some(name), Some(entry), Some(schedule), Some(client)) if errs.is_empty() => Ok(Target {
            name,
            vendor: entry,
            schedule,
            endpoint,
            qps,
            expected: Arc::new(Expected {
                capacity,
                max_users,
                classes,
            }),
            client,
            fingerprint,
            identity,
            account,
        }),
        _ => Err(errs),
    };
    (shown_name, result)
}

/// One entry of `classes:`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    rooms: RoomList,
    schedule: String,
    duration: PromDuration,
}

/// A room id or glob, or a list of them.
struct RoomList(Vec<String>);

impl<'de> Deserialize<'de> for RoomList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RoomList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RoomList, E> {
                Ok(RoomList(vec![v.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RoomList, A::Error> {
                let mut rooms = Vec::new();
                while let Some(r) = seq.next_element::<String>()? {
                    rooms.push(r);
                }
                Ok(RoomList(rooms))
            }
        }
        d.deserialize_any(V)
    }
}

/// Validates `classes:` (errors at `classes[i].key`) into the target's [`Classes`].
fn parse_classes(
    raw: Vec<RawClass>,
    tz: Tz,
    now: chrono::DateTime<chrono::Utc>,
    errs: &mut Vec<FieldError>,
) -> Classes {
    let mut list = Vec::new();
    for (i, c) in raw.into_iter().enumerate() {
        let at = |key: &str| format!("classes[{i}].{key}");
        let mut ok = true;
        if c.rooms.0.is_empty() || c.rooms.0.iter().any(|r| r.is_empty()) {
            errs.push(FieldError::new(
                at("rooms"),
                "name at least one room id or glob, none empty",
            ));
            ok = false;
        }
        let PromDuration(duration) = c.duration;
        if duration < Duration::from_secs(1) {
            errs.push(FieldError::new(at("duration"), "must be at least 1s"));
        } else if duration > MAX_CLASS_DURATION {
            errs.push(FieldError::new(
                at("duration"),
                "must be at most 7d (a class is held within a week of its start)",
            ));
            ok = false;
        }
        let cron = match parse_cron(&c.schedule) {
            Ok(cron) if never_fires(&cron, tz, now) => {
                errs.push(FieldError::new(
                    at("schedule"),
                    format!("\"{}\" never fires: no start after now", c.schedule),
                ));
                None
            }
            Ok(cron) => Some(cron),
            Err(e) => {
                errs.push(FieldError::new(at("schedule"), e));
                None
            }
        };
        if let (Some(cron), true) = (cron, ok) {
            list.push(Class::new(c.rooms.0, c.schedule, cron, duration));
        }
    }
    Classes::new(tz, list)
}

/// For `--config.check`: per target with a fixed room list, the requests one poll needs
/// against its interval, `poll_timeout` and QPS. Returns (warning?, line) pairs.
pub fn budget_report(config: &Config) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    for t in &config.targets {
        let Some(b) = t.client.budget() else {
            continue;
        };
        let qps = t.qps.map_or(b.qps, |q| q.min(b.qps));
        let seconds = b.requests as f64 / qps.max(0.001);
        let interval = crate::schedule::interval_seconds(
            &t.schedule,
            config.global.timezone,
            chrono::Utc::now(),
        );
        let timeout = config.global.poll_timeout.as_secs_f64();
        let fits = seconds <= timeout && (interval == 0.0 || seconds <= interval);
        let mut line = format!(
            "target {}: a poll needs {} requests at {qps} QPS, about {seconds:.1}s (poll_timeout {timeout}s, interval {interval}s)",
            t.name, b.requests
        );
        if !fits {
            let per_poll = (timeout.min(if interval > 0.0 { interval } else { timeout }) * qps)
                .floor()
                .max(1.0);
            let polls = (b.requests as f64 / per_poll).ceil();
            line.push_str(&format!(
                ": does not fit; a poll reads about {per_poll} rooms before it is cut (the target stays up; a room it does not reach keeps its last values, is named by rtc_exporter_room_refresh_failures and loses its series after stale_after polls; at least {polls} polls to read every room where the vendor continues a cut poll)"
            ));
            let stale_after = config.global.stale_after;
            if polls > f64::from(stale_after) {
                line.push_str(&format!(
                    "; stale_after {stale_after} is below that: rooms lose their series between two reads"
                ));
            }
        }
        out.push((!fits, line));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(PromDuration::parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(PromDuration::parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(PromDuration::parse("250ms"), Ok(Duration::from_millis(250)));
        assert!(PromDuration::parse("30").is_err());
        assert!(PromDuration::parse("5x").is_err());
        assert!(PromDuration::parse("").is_err());
        assert!(PromDuration::parse("s").is_err());
    }

    #[test]
    fn a_relative_secret_file_is_beside_the_config_file() {
        let dir = std::env::temp_dir().join(format!("rtc-secret-beside-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        std::fs::write(dir.join("keys/private"), "s3cret-beside\n").unwrap();
        let text = "targets:\n  - name: u\n    vendor: ucloud_urtc\n    app_id: a\n    rooms: [r]\n    credentials: { public_key: p, private_key: { file: keys/private } }\n";
        // The working directory has no keys/private: only the config's folder does.
        assert!(!Path::new("keys/private").exists());
        let config = dir.join("exporter.yaml");
        let parsed = parse(text, &config);
        assert!(parsed.is_ok(), "{:?}", parsed.err());
        // The same entry as `probe` reads it names the file beside the config.
        let mut raw: Value = serde_yaml::from_str(text).unwrap();
        anchor_secret_files(&mut raw, &config);
        let written = raw["targets"][0]["credentials"]["private_key"]["file"].clone();
        assert_eq!(
            written.as_str().map(PathBuf::from),
            Some(dir.join("keys/private"))
        );
        // A missing one is named where it was looked for.
        std::fs::remove_file(dir.join("keys/private")).unwrap();
        let err = parse(text, &config).unwrap_err().to_string();
        assert!(
            err.contains(&dir.join("keys/private").display().to_string()),
            "{err}"
        );
        // An absolute path and a value that is no source stay as written.
        let mut v: Value =
            serde_yaml::from_str("{ a: { file: /run/x }, b: { file: y, other: z } }").unwrap();
        anchor_secret_files(&mut v, &config);
        assert_eq!(v["a"]["file"].as_str(), Some("/run/x"));
        assert_eq!(v["b"]["file"].as_str(), Some("y"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_relative_state_file_is_beside_the_config_file() {
        let text = |p: &str| format!("global:\n  state_file: {p}\ntargets: []\n");
        let at = |config: &str, written: &str| {
            parse(&text(written), Path::new(config))
                .unwrap()
                .global
                .state_file
                .unwrap()
        };
        assert_eq!(
            at("/etc/rtc-exporter/exporter.yaml", "state.json"),
            PathBuf::from("/etc/rtc-exporter/state.json")
        );
        assert_eq!(
            at("/etc/rtc-exporter/exporter.yaml", "state/today.json"),
            PathBuf::from("/etc/rtc-exporter/state/today.json")
        );
        // An absolute path stays as written.
        assert_eq!(
            at("/etc/rtc-exporter/exporter.yaml", "/var/lib/x/state.json"),
            PathBuf::from("/var/lib/x/state.json")
        );
        // A config file named without a folder is in the working directory.
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(at("exporter.yaml", "state.json"), cwd.join("state.json"));
        assert_eq!(
            at("conf/exporter.yaml", "state.json"),
            cwd.join("conf/state.json")
        );
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn a_secret_takes_one_known_source() {
        let parse = |yaml: &str| serde_yaml::from_str::<Secret>(yaml).map(|_| ());
        let two = parse("{ env: A, credential: B }").unwrap_err().to_string();
        assert!(
            two.contains("exactly one of env, file or credential"),
            "{two}"
        );
        let unknown = parse("{ vault: A }").unwrap_err().to_string();
        assert!(
            unknown.contains("expected env, file or credential"),
            "{unknown}"
        );
    }

    #[test]
    fn no_targets_is_valid_with_a_warning() {
        for text in [
            "targets:\n",
            "targets: []\n",
            "global: {}\ntargets:\n# - name: x\n",
        ] {
            let c = parse(text, Path::new("e.yaml")).unwrap();
            assert!(c.targets.is_empty());
            assert_eq!(
                c.warnings(),
                ["e.yaml: no targets: only the exporter's own metrics are served"]
            );
        }
        let missing = parse("global: {}\n", Path::new("e.yaml")).unwrap_err();
        assert_eq!(
            missing.errors,
            ["e.yaml: targets: missing (an empty `targets:` or `targets: []` starts with none)"]
        );
    }

    #[test]
    fn wrong_type_values_are_cut_from_messages() {
        assert_eq!(
            redact_values("invalid type: string \"hunter2\", expected a map"),
            "invalid type: string, expected a map"
        );
        assert_eq!(
            redact_values("invalid type: integer `4609123456789`, expected a string"),
            "invalid type: integer, expected a string"
        );
        assert_eq!(
            redact_values("invalid value: string \"x\", expected y"),
            "invalid value: string, expected y"
        );
        assert_eq!(
            redact_values("unknown field `regoin`, expected `app_id`"),
            "unknown field `regoin`, expected `app_id`"
        );
    }

    #[test]
    fn names() {
        assert!(valid_name("urtc-main_1"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}

//! `rtc-exporter probe`: one poll of one target against the real vendor, outside the daemon,
//! showing every request (API, parameters, HTTP status, duration, outcome), every answer, every
//! anomaly (README, "Answers that disagree with themselves") and the figures the poll gives. Like blackbox_exporter's `debug=true`:
//! how an operator answers "why does this room show 0?".
//!
//! Nothing secret is printed or saved: parameters and headers named like a key, secret,
//! signature, token or credential are masked, and so is every value they held wherever it
//! appears again (an answer that echoes the key, a gateway that echoes its canonical request).
//! `--save` writes each answer as a fixture in the `tests/answers/` format.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use crate::clock::Clock;
use crate::clouds::{Exchange, Found, Plumbing, Tap};
use crate::config::{Config, Target};
use crate::ledger::{Day, Ledger};
use crate::metrics::SelfMetrics;
use crate::snapshot::TargetData;
use crate::supervisor::{limits, poll_ctx, poll_target};

/// An answer is printed up to this many bytes.
pub const MAX_SHOWN: usize = 16 << 10;
/// What a masked value prints as.
pub const MASK: &str = "<masked>";

/// What one probe saw.
#[derive(Debug)]
pub struct Report {
    /// The target's name.
    pub target: String,
    /// Its vendor.
    pub vendor: &'static crate::clouds::VendorEntry,
    /// The poll's clock.
    pub now: DateTime<Utc>,
    /// `global.timezone`.
    pub tz: Tz,
    /// Every request, in order.
    pub exchanges: Vec<Exchange>,
    /// Every anomaly, in order.
    pub anomalies: Vec<Found>,
    /// `Ok` when the poll succeeded whole; otherwise why not.
    pub outcome: Result<(), String>,
    /// Rooms whose refresh failed.
    pub rooms_failed: Vec<String>,
    /// The figures the poll gives, as the daemon would publish them after this one poll
    /// (`None` when nothing answered).
    pub data: Option<TargetData>,
    /// The target's configured credentials, resolved: masked wherever they appear.
    pub masks: Masks,
}

/// Values never to show. `Debug` shows only how many.
#[derive(Default)]
pub struct Masks(BTreeSet<String>);

impl std::fmt::Debug for Masks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masks({} redacted)", self.0.len())
    }
}

/// The target's credentials as the config file gives them, resolved the way the config
/// resolves them (strings, `{env}`, `{file}`, `{credential}`); what cannot be read is skipped.
fn configured_secrets(config_path: &Path, target: &str) -> Masks {
    let mut out = BTreeSet::new();
    let raw = raw_target(config_path, target);
    let creds = raw
        .as_ref()
        .and_then(|t| t.get("credentials"))
        .and_then(|c| c.as_mapping());
    for v in creds.into_iter().flat_map(|c| c.values()) {
        if let Ok(secret) = serde_yaml::from_value::<crate::config::Secret>(v.clone()) {
            if secret.expose().len() >= 4 {
                out.insert(secret.expose().to_string());
            }
        }
    }
    Masks(out)
}

/// The target's entry as the config file writes it (`None` if the file cannot be read again).
fn raw_target(config_path: &Path, target: &str) -> Option<serde_yaml::Value> {
    let text = std::fs::read_to_string(config_path).ok()?;
    let root = serde_yaml::from_str::<serde_yaml::Value>(&text).ok()?;
    let mut raw = root
        .get("targets")?
        .as_sequence()?
        .iter()
        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(target))
        .cloned()?;
    crate::config::anchor_secret_files(&mut raw, config_path);
    Some(raw)
}

impl Report {
    /// The process's exit status: 0 when the poll succeeded, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.outcome.is_err())
    }
}

/// Polls `target` of `config` once, now by `clock`, recording everything.
pub async fn probe(config: &Config, target: &str, clock: Arc<dyn Clock>) -> Result<Report, String> {
    let t: &Target = config
        .targets
        .iter()
        .find(|t| t.name == target)
        .ok_or_else(|| {
            let names: Vec<&str> = config.targets.iter().map(|t| t.name.as_str()).collect();
            format!(
                "no target named {target:?} in {} (targets: {})",
                config.path.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )
        })?;
    let global = &config.global;
    let metrics = Arc::new(SelfMetrics::new().map_err(|e| format!("metrics: {e}"))?);
    let tap = Arc::new(Tap::default());
    let plumbing = Plumbing::new(global.request_timeout, metrics)
        .map_err(|e| format!("HTTP client: {e}"))?
        .with_max_response_bytes(global.max_response_bytes)
        .with_clock(clock.clone())
        .with_tap(tap.clone());
    let now = clock.now();
    let ctx = poll_ctx(t, global, Arc::new(plumbing), now);
    let (obs, outcome) = poll_target(t, global, &ctx).await;
    let data = (!obs.rooms.is_empty() || outcome.is_ok()).then(|| {
        Ledger::new().apply(
            &Day::at(now, global.timezone),
            &obs,
            outcome.is_ok(),
            &limits(t, global),
        )
    });
    let (exchanges, anomalies) = tap.take();
    Ok(Report {
        target: t.name.clone(),
        vendor: t.vendor,
        now,
        tz: global.timezone,
        exchanges,
        anomalies,
        outcome,
        rooms_failed: obs.failed,
        data,
        masks: configured_secrets(&config.path, target),
    })
}

/// Whether a parameter, header or JSON key names something secret.
pub fn sensitive(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "key",
        "secret",
        "signature",
        "token",
        "password",
        "authorization",
        "credential",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// The secret values one request carried: those of its sensitive parameters and headers, and
/// the access key and signature inside an `Authorization` header.
fn secrets_of(e: &Exchange) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |v: &str| {
        let v = v.trim();
        if v.len() >= 4 {
            out.insert(v.to_string());
        }
    };
    if let Ok(url) = reqwest::Url::parse(&e.url) {
        for (k, v) in url.query_pairs() {
            if sensitive(&k) {
                add(&v);
            }
        }
    }
    for (k, v) in &e.headers {
        if sensitive(k) {
            add(v);
            // `Credential=<access key>/<scope>` and `Signature=<hex>`: only those values (the
            // scope's date and region, and the scheme's words, are not secret).
            for part in v.split([',', ' ']) {
                if let Some(c) = part.strip_prefix("Credential=") {
                    add(c.split('/').next().unwrap_or_default());
                }
                if let Some(sig) = part.strip_prefix("Signature=") {
                    add(sig);
                }
            }
            // `Bearer <token>` (LiveKit's JWT): the token alone, wherever it is echoed.
            if let Some(token) = v.strip_prefix("Bearer ") {
                add(token);
            }
        }
    }
    for (k, v) in form_urlencoded::parse(&e.body) {
        if sensitive(&k) {
            add(&v);
        }
    }
    if let Ok(json) = serde_json::from_slice::<Value>(&e.body) {
        json_secrets(&json, &mut |v| add(v));
    }
    out
}

fn json_secrets(v: &Value, add: &mut dyn FnMut(&str)) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                match v {
                    Value::String(s) if sensitive(k) => add(s),
                    Value::Number(n) if sensitive(k) => add(&n.to_string()),
                    _ => json_secrets(v, add),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| json_secrets(v, add)),
        _ => {}
    }
}

fn mask_json(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                if sensitive(k) && !matches!(v, Value::Object(_) | Value::Array(_) | Value::Null) {
                    *v = Value::String(MASK.into());
                } else {
                    mask_json(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_json),
        _ => {}
    }
}

/// Every secret value replaced by [`MASK`], longest first.
fn mask_text(text: &str, secrets: &BTreeSet<String>) -> String {
    let mut by_length: Vec<&String> = secrets.iter().collect();
    by_length.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for s in by_length {
        out = out.replace(s.as_str(), MASK);
    }
    out
}

/// A body (request or answer) to show: JSON pretty with sensitive keys masked, a form with
/// sensitive fields masked, other text as it is; every secret value masked after that.
fn shown_body(body: &[u8], secrets: &BTreeSet<String>, pretty: bool) -> String {
    let text = if let Ok(mut json) = serde_json::from_slice::<Value>(body) {
        mask_json(&mut json);
        if pretty {
            serde_json::to_string_pretty(&json)
        } else {
            serde_json::to_string(&json)
        }
        .unwrap_or_default()
    } else if !body.is_empty() && body.iter().all(|b| b.is_ascii_graphic()) && body.contains(&b'=')
    {
        form_urlencoded::parse(body)
            .map(|(k, v)| {
                let v = if sensitive(&k) { MASK.into() } else { v };
                format!("{k}={v}")
            })
            .collect::<Vec<_>>()
            .join("&")
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    mask_text(&text, secrets)
}

/// Every value to mask in a report: those its requests carried and the configured ones.
fn all_secrets(r: &Report) -> BTreeSet<String> {
    let mut s: BTreeSet<String> = r.exchanges.iter().flat_map(secrets_of).collect();
    s.extend(r.masks.0.iter().cloned());
    s
}

/// The URL with sensitive query values masked.
fn shown_url(url: &str, secrets: &BTreeSet<String>) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        return mask_text(url, secrets);
    };
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let v = if sensitive(&k) {
                MASK.into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    if pairs.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    mask_text(u.as_str(), secrets)
}

/// Cuts `text` at [`MAX_SHOWN`] bytes, saying how much was left out.
fn cut(text: &str) -> String {
    if text.len() <= MAX_SHOWN {
        return text.to_string();
    }
    let mut at = MAX_SHOWN;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    format!(
        "{}\n… ({} more bytes not shown; --save keeps the whole answer)",
        &text[..at],
        text.len() - at
    )
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}\n"))
        .collect::<String>()
}

/// The report as text, every secret masked.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "probe of target {} ({}) at {}, day {} in {}",
        r.target,
        r.vendor,
        r.now.to_rfc3339_opts(SecondsFormat::Secs, true),
        r.now.with_timezone(&r.tz).date_naive(),
        r.tz
    );
    for (i, e) in r.exchanges.iter().enumerate() {
        let mut secrets = secrets_of(e);
        secrets.extend(r.masks.0.iter().cloned());
        let status = e
            .status
            .map_or("no answer".to_string(), |s| format!("HTTP {s}"));
        let outcome = match &e.outcome {
            Ok(()) => "ok".to_string(),
            Err(why) => mask_text(why, &secrets),
        };
        let _ = writeln!(
            out,
            "\nrequest {}: {} {} {}\n  {status}, {:.3} s: {outcome}",
            i + 1,
            e.api,
            e.method,
            shown_url(&e.url, &secrets),
            e.seconds,
        );
        if !e.body.is_empty() {
            let _ = writeln!(out, "  sent: {}", shown_body(&e.body, &secrets, false));
        }
        if let Some(answer) = &e.answer {
            let _ = writeln!(out, "  answer ({} bytes):", answer.len());
            out.push_str(&indent(&cut(&shown_body(answer, &secrets, true)), "    "));
        }
    }
    let _ = writeln!(out, "\nanomalies: {}", r.anomalies.len());
    for a in &r.anomalies {
        let _ = writeln!(out, "  {} {}: {}", a.api, a.kind, a.detail);
    }
    let _ = writeln!(out, "\nfigures after this poll:");
    match &r.data {
        None => {
            let _ = writeln!(out, "  none: no room answered");
        }
        Some(d) => {
            let _ = writeln!(
                out,
                "  target: rooms in progress {}, users {}, peak {}, accumulated {}",
                d.rooms_active, d.users, d.peak, d.accumulated
            );
            match &d.devices {
                None => {
                    let _ = writeln!(out, "  devices: not measured");
                }
                Some(devs) => {
                    let list: Vec<String> = devs
                        .iter()
                        .map(|(d, n)| format!("{}={n}", d.label()))
                        .collect();
                    let _ = writeln!(out, "  devices: {}", list.join(" "));
                }
            }
            for w in &d.watched {
                let _ = writeln!(out, "  user {}: online {}", w.0, u8::from(w.1));
            }
            for room in &d.rooms {
                let mut line = format!(
                    "  room {}: active {}, users {}, peak {}, accumulated {}",
                    room.room,
                    u8::from(room.active),
                    room.users,
                    room.peak,
                    room.accumulated
                );
                if let Some(inv) = room.invisible {
                    let _ = write!(line, ", invisible {inv}");
                }
                if let Some(roles) = &room.roles {
                    let list: Vec<String> = roles
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(r, n)| format!("{}={n}", r.label()))
                        .collect();
                    let _ = write!(line, ", roles {}", list.join(" "));
                }
                let _ = writeln!(out, "{line}");
            }
            if d.rooms_dropped > 0 {
                let _ = writeln!(out, "  rooms over max_rooms: {}", d.rooms_dropped);
            }
        }
    }
    for room in &r.rooms_failed {
        let _ = writeln!(out, "  room {room}: refresh failed, no figures");
    }
    match &r.outcome {
        Ok(()) => {
            let _ = writeln!(out, "\nresult: the poll succeeded (target_up 1)");
        }
        Err(e) => {
            let secrets = all_secrets(r);
            let _ = writeln!(
                out,
                "\nresult: the poll failed (target_up 0): {}",
                mask_text(e, &secrets)
            );
        }
    }
    out
}

/// The target's own keys from the config file, without anything that names an account or a
/// secret, nor what the fixture harness sets itself.
fn target_keys(config_path: &Path, target: &str) -> serde_yaml::Mapping {
    let raw = raw_target(config_path, target);
    let Some(m) = raw.as_ref().and_then(|t| t.as_mapping()) else {
        return serde_yaml::Mapping::new();
    };
    m.iter()
        .filter(|(k, _)| {
            k.as_str().is_some_and(|name| {
                !matches!(
                    name,
                    "name"
                        | "vendor"
                        | "endpoint"
                        | "interval"
                        | "schedule"
                        | "qps"
                        | "credentials"
                ) && !sensitive(name)
            })
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Writes the probe's answers as one fixture file in the `tests/answers/` format (every answer,
/// secrets and signatures masked; the figures this build read from them as `expect`), and
/// returns its path.
pub fn save(r: &Report, config: &Config, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let secrets = all_secrets(r);
    let mut answers = Vec::new();
    for e in &r.exchanges {
        let mut a = serde_yaml::Mapping::new();
        a.insert("api".into(), e.api.into());
        if let Some(status) = e.status {
            a.insert("status".into(), u64::from(status).into());
        }
        let body = e.answer.as_deref().unwrap_or_default();
        let body = if let Ok(mut json) = serde_json::from_slice::<Value>(body) {
            mask_json(&mut json);
            serde_json::to_string_pretty(&json).unwrap_or_default()
        } else {
            String::from_utf8_lossy(body).into_owned()
        };
        a.insert("body".into(), mask_text(&body, &secrets).into());
        answers.push(serde_yaml::Value::Mapping(a));
    }
    let mut expect = serde_yaml::Mapping::new();
    expect.insert("up".into(), r.outcome.is_ok().into());
    if let Err(e) = &r.outcome {
        expect.insert("error".into(), mask_text(e, &secrets).into());
    }
    if !r.rooms_failed.is_empty() {
        expect.insert(
            "rooms_failed".into(),
            r.rooms_failed
                .iter()
                .map(|room| serde_yaml::Value::from(room.as_str()))
                .collect::<Vec<_>>()
                .into(),
        );
    }
    if r.data.is_none() {
        expect.insert("no_figures".into(), true.into());
    }
    if let Some(d) = &r.data {
        if !d.watched.is_empty() {
            let m: serde_yaml::Mapping = d
                .watched
                .iter()
                .map(|(u, on)| (u.as_str().into(), (*on).into()))
                .collect();
            expect.insert("watched".into(), m.into());
        }
        expect.insert("users".into(), d.users.into());
        expect.insert("peak".into(), d.peak.into());
        expect.insert("accumulated".into(), d.accumulated.into());
        let mut rooms = serde_yaml::Mapping::new();
        for room in &d.rooms {
            let mut f = serde_yaml::Mapping::new();
            f.insert("active".into(), room.active.into());
            f.insert("users".into(), room.users.into());
            f.insert("peak".into(), room.peak.into());
            f.insert("accumulated".into(), room.accumulated.into());
            if let Some(inv) = room.invisible {
                f.insert("invisible".into(), inv.into());
            }
            rooms.insert(room.room.clone().into(), f.into());
        }
        expect.insert("rooms".into(), rooms.into());
        expect.insert(
            "devices".into(),
            match &d.devices {
                None => "absent".into(),
                Some(devs) => {
                    let m: serde_yaml::Mapping = devs
                        .iter()
                        .map(|(d, n)| (d.label().into(), (*n).into()))
                        .collect();
                    m.into()
                }
            },
        );
    }
    let kinds: BTreeSet<&str> = r.anomalies.iter().map(|a| a.kind.label()).collect();
    expect.insert(
        "anomalies".into(),
        kinds
            .into_iter()
            .map(serde_yaml::Value::from)
            .collect::<Vec<_>>()
            .into(),
    );
    let mut doc = serde_yaml::Mapping::new();
    doc.insert("vendor".into(), r.vendor.name.into());
    doc.insert(
        "source".into(),
        format!(
            "rtc-exporter {} probe of target {} at {}",
            crate::VERSION,
            r.target,
            r.now.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
        .into(),
    );
    doc.insert(
        "now".into(),
        r.now.to_rfc3339_opts(SecondsFormat::Secs, true).into(),
    );
    doc.insert("timezone".into(), r.tz.name().into());
    let keys = target_keys(&config.path, &r.target);
    if !keys.is_empty() {
        let text = mask_text(&serde_yaml::to_string(&keys).unwrap_or_default(), &secrets);
        if let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(&text) {
            doc.insert("target".into(), v);
        }
    }
    doc.insert("answers".into(), answers.into());
    doc.insert("expect".into(), expect.into());
    let text = serde_yaml::to_string(&doc).map_err(|e| e.to_string())?;
    let header = "# Saved by `rtc-exporter probe --save`: the vendor's answers as they came (secrets and\n\
                  # signatures masked) and, under `expect`, the figures this build read from them.\n\
                  # Correct `expect` to what the answers should give, then attach the file to a bug\n\
                  # report or add it to tests/answers/.\n";
    let stamp = r.now.format("%Y%m%dT%H%M%SZ");
    let path = dir.join(format!("{}-{}-{stamp}.yaml", r.vendor, r.target));
    std::fs::write(&path, format!("{header}{text}"))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(url: &str, headers: &[(&str, &str)], body: &str, answer: &str) -> Exchange {
        Exchange {
            api: "X",
            method: "POST".into(),
            url: url.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
            status: Some(200),
            seconds: 0.1,
            outcome: Ok(()),
            answer: Some(bytes::Bytes::copy_from_slice(answer.as_bytes())),
        }
    }

    #[test]
    fn secrets_are_masked_wherever_they_appear() {
        let e = exchange(
            "https://h/?Action=A&Signature=abcdef0123&AppId=app",
            &[(
                "authorization",
                "HMAC-SHA256 Credential=AKLTsecretAccessId/20250102/cn-north-1/rtc/request, SignedHeaders=host, Signature=feedfacefeedface",
            )],
            "key=K3yK3yK3yK3yK3yK&serial=123&PublicKey=pubkey1234",
            r#"{"echo":"K3yK3yK3yK3yK3yK PRIVKEY-never-sent","msg":"canonical AKLTsecretAccessId feedfacefeedface","SecretKey":"x","Region":"cn-north-1","Code":"SignatureDoesNotMatch"}"#,
        );
        let r = Report {
            target: "t".into(),
            vendor: &crate::clouds::talkcloud::ENTRY,
            now: Utc::now(),
            tz: Tz::UTC,
            exchanges: vec![e],
            anomalies: vec![],
            outcome: Err("room 1: echo K3yK3yK3yK3yK3yK".into()),
            rooms_failed: vec![],
            data: None,
            masks: Masks(["PRIVKEY-never-sent".to_string()].into_iter().collect()),
        };
        let text = render(&r);
        for secret in [
            "K3yK3yK3yK3yK3yK",
            "abcdef0123",
            "AKLTsecretAccessId",
            "feedfacefeedface",
            "pubkey1234",
            "PRIVKEY-never-sent",
        ] {
            assert!(!text.contains(secret), "{secret} in:\n{text}");
        }
        // The scheme's words, the scope's region: not secrets.
        assert!(
            text.contains("cn-north-1") && text.contains("SignatureDoesNotMatch"),
            "{text}"
        );
        assert!(
            text.contains("serial=123") && text.contains("AppId=app"),
            "{text}"
        );
    }

    #[test]
    fn a_bearer_token_is_masked_where_an_answer_echoes_it() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJBUEkxMjMifQ.c2lnbmF0dXJl";
        let e = exchange(
            "https://h/twirp/livekit.RoomService/ListRooms",
            &[("authorization", &format!("Bearer {jwt}"))],
            "{}",
            &format!(r#"{{"code":"unauthenticated","msg":"token {jwt} is expired"}}"#),
        );
        let r = Report {
            target: "t".into(),
            vendor: &crate::clouds::livekit::ENTRY,
            now: Utc::now(),
            tz: Tz::UTC,
            exchanges: vec![e],
            anomalies: vec![],
            outcome: Err(format!("ListRooms: token {jwt} is expired")),
            rooms_failed: vec![],
            data: None,
            masks: Masks(Default::default()),
        };
        let text = render(&r);
        assert!(!text.contains(jwt), "{text}");
        assert!(text.contains("unauthenticated"), "{text}");
    }

    #[test]
    fn long_answers_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_SHOWN);
        let shown = cut(&long);
        assert!(shown.len() < long.len() && shown.contains("more bytes not shown"));
    }
}

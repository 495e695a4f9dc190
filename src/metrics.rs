//! The exporter's own counters ([`SelfMetrics`]) and the text renderer for a snapshot.
//!
//! Domain series (`rtc_*`) and per-target state are written by hand from the snapshot, in a
//! fixed order (targets and rooms sorted), so output is stable; counters, the histogram and the
//! `process_*` metrics come from a long-lived `prometheus` registry.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

use crate::clouds::CallError;
use crate::snapshot::TargetView;

/// Every metric family the exporter can serve, besides the standard `process_*` ones.
pub const FAMILIES: &[&str] = &[
    "rtc_room_users",
    "rtc_room_invisible_users",
    "rtc_room_peak_users",
    "rtc_room_accumulated_users",
    "rtc_room_active",
    "rtc_room_capacity",
    "rtc_room_capacity_warning_ratio",
    "rtc_room_class_scheduled",
    "rtc_rooms",
    "rtc_users",
    "rtc_peak_users",
    "rtc_accumulated_users",
    "rtc_target_max_users",
    "rtc_device_users",
    "rtc_room_role_users",
    "rtc_user_online",
    "rtc_target_info",
    "rtc_exporter_build_info",
    "rtc_exporter_target_up",
    "rtc_exporter_target_last_success_timestamp_seconds",
    "rtc_exporter_target_poll_duration_seconds",
    "rtc_exporter_target_interval_seconds",
    "rtc_exporter_target_consecutive_failures",
    "rtc_exporter_target_rooms_dropped",
    "rtc_exporter_target_rooms_failed",
    "rtc_exporter_room_refresh_failures",
    "rtc_exporter_target_next_poll_timestamp_seconds",
    "rtc_exporter_polls_total",
    "rtc_exporter_vendor_requests_total",
    "rtc_exporter_vendor_errors_total",
    "rtc_exporter_vendor_anomalies_total",
    "rtc_exporter_vendor_request_duration_seconds",
    "rtc_exporter_config_last_reload_successful",
    "rtc_exporter_config_last_reload_success_timestamp_seconds",
    "rtc_exporter_state_last_write_timestamp_seconds",
    "rtc_exporter_state_write_failures_total",
];

/// Poll results, the `result` label of `rtc_exporter_polls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollResult {
    /// The whole poll succeeded.
    Success,
    /// Some request failed or the deadline passed.
    Failure,
    /// The previous poll was still running; this one was skipped.
    Overlap,
}

impl PollResult {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            PollResult::Success => "success",
            PollResult::Failure => "failure",
            PollResult::Overlap => "overlap",
        }
    }
}

/// Counters and histograms of the exporter itself, registered once.
pub struct SelfMetrics {
    registry: Registry,
    polls: IntCounterVec,
    requests: IntCounterVec,
    errors: IntCounterVec,
    anomalies: IntCounterVec,
    duration: HistogramVec,
    /// `rtc_exporter_config_last_reload_successful`.
    pub reload_ok: Gauge,
    /// `rtc_exporter_config_last_reload_success_timestamp_seconds`.
    pub reload_ok_at: Gauge,
    /// `rtc_exporter_state_last_write_timestamp_seconds` (registered once a state file is set).
    pub state_written_at: Gauge,
    /// `rtc_exporter_state_write_failures_total`.
    pub state_write_failures: IntCounter,
    state_registered: std::sync::Once,
}

impl SelfMetrics {
    /// Registers the self-metrics and the process collector.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let polls = IntCounterVec::new(
            Opts::new("rtc_exporter_polls_total", "Polls of a target by result."),
            &["target", "vendor", "result"],
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "rtc_exporter_vendor_requests_total",
                "HTTP requests to vendor APIs (every page counts) by outcome: ok, error, throttled, timeout, transport, malformed (unreadable, or lacking what the figures need), too_large (over max_response_bytes); throttled also counts HTTP 429.",
            ),
            &["target", "vendor", "api", "outcome"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "rtc_exporter_vendor_errors_total",
                "Vendor error codes by API; codes outside the documented set count as other.",
            ),
            &["target", "vendor", "api", "code"],
        )?;
        let anomalies = IntCounterVec::new(
            Opts::new(
                "rtc_exporter_vendor_anomalies_total",
                "Vendor answers that disagreed with themselves but were read (a declared total unlike the rows, a repeated row, a count above its list, ...), by API and kind.",
            ),
            &["target", "vendor", "api", "kind"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "rtc_exporter_vendor_request_duration_seconds",
                "Duration of vendor API requests, waiting for the rate limiter excluded.",
            )
            .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["target", "vendor", "api"],
        )?;
        registry.register(Box::new(polls.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(anomalies.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        let reload_ok = Gauge::new(
            "rtc_exporter_config_last_reload_successful",
            "1 after a good (re)load of the config file, 0 after a bad one (the running config stays).",
        )?;
        let reload_ok_at = Gauge::new(
            "rtc_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last good (re)load of the config file.",
        )?;
        let state_written_at = Gauge::new(
            "rtc_exporter_state_last_write_timestamp_seconds",
            "Unix time of the last good write of the state file.",
        )?;
        let state_write_failures = IntCounter::new(
            "rtc_exporter_state_write_failures_total",
            "Writes of the state file that failed.",
        )?;
        registry.register(Box::new(reload_ok.clone()))?;
        registry.register(Box::new(reload_ok_at.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(SelfMetrics {
            registry,
            polls,
            requests,
            errors,
            anomalies,
            duration,
            reload_ok,
            reload_ok_at,
            state_written_at,
            state_write_failures,
            state_registered: std::sync::Once::new(),
        })
    }

    /// Registers the state-file metrics (only exporters with a state file serve them).
    pub fn enable_state(&self) {
        self.state_registered.call_once(|| {
            let _ = self
                .registry
                .register(Box::new(self.state_written_at.clone()));
            let _ = self
                .registry
                .register(Box::new(self.state_write_failures.clone()));
        });
    }

    /// Removes every counter and histogram series of a target (it left the config, or changed
    /// vendor), so its label values vanish from `/metrics`.
    pub fn forget_target(&self, target: &str) {
        for family in self.registry.gather() {
            for m in family.get_metric() {
                let labels: std::collections::HashMap<&str, &str> = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                if labels.get("target") != Some(&target) {
                    continue;
                }
                let _ = match family.name() {
                    "rtc_exporter_polls_total" => self.polls.remove(&labels),
                    "rtc_exporter_vendor_requests_total" => self.requests.remove(&labels),
                    "rtc_exporter_vendor_errors_total" => self.errors.remove(&labels),
                    "rtc_exporter_vendor_anomalies_total" => self.anomalies.remove(&labels),
                    "rtc_exporter_vendor_request_duration_seconds" => self.duration.remove(&labels),
                    _ => Ok(()),
                };
            }
        }
    }

    /// Creates a target's poll counters at zero, so `rate()` works from the first scrape.
    pub fn init_target(&self, target: &str, vendor: &str) {
        for r in [
            PollResult::Success,
            PollResult::Failure,
            PollResult::Overlap,
        ] {
            self.polls.with_label_values(&[target, vendor, r.label()]);
        }
    }

    /// Counts one answer that disagreed with itself but was read.
    pub fn record_anomaly(
        &self,
        target: &str,
        vendor: &str,
        api: &str,
        kind: crate::clouds::Anomaly,
    ) {
        self.anomalies
            .with_label_values(&[target, vendor, api, kind.label()])
            .inc();
    }

    /// Counts one poll.
    pub fn record_poll(&self, target: &str, vendor: &str, result: PollResult) {
        self.polls
            .with_label_values(&[target, vendor, result.label()])
            .inc();
    }

    /// Counts one request, its vendor code and duration, and logs a failure: the one place
    /// where requests are accounted for.
    pub fn record_request(
        &self,
        target: &str,
        vendor: &str,
        api: &str,
        seconds: f64,
        error: Option<&CallError>,
    ) {
        let outcome = match error {
            None => "ok",
            Some(e) if e.is_throttle() => "throttled",
            Some(CallError::Timeout { .. }) => "timeout",
            Some(CallError::Transport { .. }) => "transport",
            Some(CallError::Malformed { .. }) => "malformed",
            Some(CallError::TooLarge { .. }) => "too_large",
            Some(_) => "error",
        };
        self.requests
            .with_label_values(&[target, vendor, api, outcome])
            .inc();
        self.duration
            .with_label_values(&[target, vendor, api])
            .observe(seconds);
        match error {
            None => tracing::debug!(target_name = target, api, seconds, "vendor request ok"),
            Some(e) => {
                if let CallError::Vendor { label, .. } = e {
                    self.errors
                        .with_label_values(&[target, vendor, api, label])
                        .inc();
                }
                // Debug only: the poll that made the request logs its failure once.
                tracing::debug!(target_name = target, api, outcome, error = %e, "vendor request failed");
            }
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, out) {
            tracing::error!(error = %e, "cannot encode self-metrics");
        }
    }
}

/// Escapes a label value for the text format.
fn escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// One metric family, written only if it has samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    body: String,
}

impl<'a> Family<'a> {
    fn new(
        out: &'a mut String,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
    ) -> Self {
        Family {
            out,
            name,
            help,
            kind,
            body: String::new(),
        }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.body.push_str(self.name);
        if !labels.is_empty() {
            self.body.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.body.push(',');
                }
                self.body.push_str(k);
                self.body.push_str("=\"");
                escape(v, &mut self.body);
                self.body.push('"');
            }
            self.body.push('}');
        }
        let _ = writeln!(self.body, " {value}");
    }
}

impl Drop for Family<'_> {
    fn drop(&mut self) {
        if !self.body.is_empty() {
            let _ = writeln!(self.out, "# HELP {} {}", self.name, self.help);
            let _ = writeln!(self.out, "# TYPE {} {}", self.name, self.kind);
            self.out.push_str(&self.body);
        }
    }
}

fn bool_value(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Renders the whole exposition: domain series, target state, build info, self-metrics.
/// `now` decides which classes are scheduled.
pub fn render(
    targets: &BTreeMap<String, Arc<TargetView>>,
    self_metrics: &SelfMetrics,
    now: DateTime<Utc>,
) -> Vec<u8> {
    let mut out = String::with_capacity(4096);
    let with_data = || {
        targets
            .values()
            .filter_map(|t| t.data.as_ref().map(|d| (t, d)))
    };

    type RoomField = fn(&crate::snapshot::RoomRow) -> Option<f64>;
    let room_families: [(&str, &str, RoomField); 6] = [
        ("rtc_room_users", "Users in the room now (visible + invisible). Bots (recording, CDN push, ASR) are excluded where the vendor marks them; volcengine_rtc marks them only in Property=true answers, asked for with devices: true.", |r| Some(r.users as f64)),
        ("rtc_room_invisible_users", "Invisible users in the room now, where the vendor tells; bots excluded as for rtc_room_users.", |r| r.invisible.map(|v| v as f64)),
        ("rtc_room_peak_users", "Peak concurrent users in the room today (local day). Exact where the vendor gives join and leave times (tencent_trtc, talkcloud: a sweep over the sessions, distinct users at once); vendor-reported for ucloud_urtc; the maximum observed by polling for volcengine_rtc, a lower bound.", |r| Some(r.peak as f64)),
        ("rtc_room_accumulated_users", "Users who were in the room today (local day). Exact distinct user ids where the vendor gives sessions (tencent_trtc, talkcloud); vendor-reported for ucloud_urtc; distinct ids observed by polling for volcengine_rtc, a lower bound.", |r| Some(r.accumulated as f64)),
        ("rtc_room_active", "1 while the room is in progress, 0 once it ended today.", |r| Some(bool_value(r.active))),
        ("rtc_room_capacity", "Configured capacity of the room.", |r| r.capacity.map(|v| v as f64)),
    ];
    for (name, help, field) in room_families {
        let mut f = Family::new(&mut out, name, "gauge", help);
        for (t, d) in with_data() {
            for r in &d.rooms {
                if let Some(v) = field(r) {
                    f.sample(
                        &[("target", &t.name), ("vendor", t.vendor), ("room", &r.room)],
                        v,
                    );
                }
            }
        }
    }

    {
        let mut f = Family::new(
            &mut out,
            "rtc_room_capacity_warning_ratio",
            "gauge",
            "Share of the room's capacity from which it counts as near capacity (capacity.rooms.ROOM.warning_ratio, capacity.warning_ratio or global.capacity_warning_ratio); rooms that have a capacity.",
        );
        for (t, d) in with_data() {
            for r in d.rooms.iter().filter(|r| r.capacity.is_some()) {
                f.sample(
                    &[("target", &t.name), ("vendor", t.vendor), ("room", &r.room)],
                    t.expected.capacity.warning_ratio_of(&r.room),
                );
            }
        }
    }
    {
        let mut f = Family::new(
            &mut out,
            "rtc_room_class_scheduled",
            "gauge",
            "1 while a class is scheduled in the room (classes: in global.timezone), else 0. Rooms named in classes always; rooms matched by a glob once the vendor has shown them today.",
        );
        for t in targets.values() {
            let classes = &t.expected.classes;
            if classes.is_empty() {
                continue;
            }
            let sessions = classes.sessions(now);
            let mut rooms: std::collections::BTreeSet<&str> = classes.named_rooms().collect();
            if let Some(d) = &t.data {
                rooms.extend(
                    d.rooms
                        .iter()
                        .map(|r| r.room.as_str())
                        .filter(|r| classes.covers(r)),
                );
            }
            for room in rooms {
                f.sample(
                    &[("target", &t.name), ("vendor", t.vendor), ("room", room)],
                    bool_value(classes.scheduled(room, &sessions)),
                );
            }
        }
    }

    type TotalField = fn(&crate::snapshot::TargetData) -> f64;
    let totals: [(&str, &str, TotalField); 4] = [
        ("rtc_rooms", "Rooms in progress now, including rooms beyond max_rooms.", |d| d.rooms_active as f64),
        ("rtc_users", "Users now over all rooms of the target (tencent_trtc, talkcloud: distinct users, one in two rooms counts once).", |d| d.users as f64),
        ("rtc_peak_users", "Peak concurrent users of the target today (local day). Exact for tencent_trtc and talkcloud (a sweep over the union of the rooms' sessions); otherwise the maximum observed total, at least the largest room peak, a lower bound.", |d| d.peak as f64),
        ("rtc_accumulated_users", "Users of the target today (local day): distinct user ids across rooms (exact for tencent_trtc and talkcloud, observed for volcengine_rtc), plus the vendor's per-room accumulated counts for ucloud_urtc (a user in two rooms then counts twice).", |d| d.accumulated as f64),
    ];
    for (name, help, field) in totals {
        let mut f = Family::new(&mut out, name, "gauge", help);
        for (t, d) in with_data() {
            f.sample(&[("target", &t.name), ("vendor", t.vendor)], field(d));
        }
    }
    {
        let mut f = Family::new(
            &mut out,
            "rtc_target_max_users",
            "gauge",
            "Concurrent users the target's account is licensed or billed for (max_users); compare with rtc_users.",
        );
        for t in targets.values() {
            if let Some(n) = t.expected.max_users {
                f.sample(&[("target", &t.name), ("vendor", t.vendor)], n as f64);
            }
        }
    }
    {
        let mut f = Family::new(
            &mut out,
            "rtc_device_users",
            "gauge",
            "Users now by device type, where the vendor tells. volcengine_rtc: each room's last Property=true refresh (1 QPS, round robin, so a figure can be older than the poll) plus watched users online outside those rooms.",
        );
        for (t, d) in with_data() {
            for (device, n) in d.devices.iter().flatten() {
                f.sample(
                    &[
                        ("target", &t.name),
                        ("vendor", t.vendor),
                        ("device", device.label()),
                    ],
                    *n as f64,
                );
            }
        }
    }
    {
        let mut f = Family::new(
            &mut out,
            "rtc_exporter_room_refresh_failures",
            "gauge",
            "Failed refreshes in a row of a room whose last refresh failed (its figures are its last good ones, or gone after stale_after); rooms that refresh have no series.",
        );
        for (t, d) in with_data() {
            for (room, n) in &d.failing_rooms {
                f.sample(
                    &[("target", &t.name), ("vendor", t.vendor), ("room", room)],
                    f64::from(*n),
                );
            }
        }
    }
    {
        let mut f = Family::new(
            &mut out,
            "rtc_room_role_users",
            "gauge",
            "Users in the room now by role, where the vendor tells roles (talkcloud): teacher, assistant, student, viewer, inspector, other.",
        );
        for (t, d) in with_data() {
            for r in &d.rooms {
                for (role, n) in r.roles.iter().flatten() {
                    f.sample(
                        &[
                            ("target", &t.name),
                            ("vendor", t.vendor),
                            ("room", &r.room),
                            ("role", role.label()),
                        ],
                        *n as f64,
                    );
                }
            }
        }
    }
    {
        let mut f = Family::new(
            &mut out,
            "rtc_user_online",
            "gauge",
            "Watched users: 1 online, 0 not.",
        );
        for (t, d) in with_data() {
            for (user, online) in &d.watched {
                f.sample(
                    &[("target", &t.name), ("vendor", t.vendor), ("user", user)],
                    bool_value(*online),
                );
            }
        }
    }
    {
        let mut f = Family::new(
            &mut out,
            "rtc_target_info",
            "gauge",
            "Static facts of a target; always 1.",
        );
        for t in targets.values() {
            f.sample(
                &[
                    ("target", &t.name),
                    ("vendor", t.vendor),
                    ("app", &t.info.app),
                    ("region", &t.info.region),
                ],
                1.0,
            );
        }
    }
    {
        let mut f = Family::new(
            &mut out,
            "rtc_exporter_build_info",
            "gauge",
            "Build of the exporter; always 1.",
        );
        f.sample(
            &[("version", crate::VERSION), ("revision", crate::REVISION)],
            1.0,
        );
    }
    type StateField = fn(&TargetView) -> Option<f64>;
    let state: [(&str, &str, StateField); 8] = [
        (
            "rtc_exporter_target_up",
            "1 if the last poll of the target answered (whole, or some rooms refreshed while others failed: see rtc_exporter_target_rooms_failed), 0 if it failed as a whole.",
            |t| t.polled.then_some(bool_value(t.up)),
        ),
        (
            "rtc_exporter_target_last_success_timestamp_seconds",
            "Unix time at the end of the last successful poll.",
            |t| t.last_success,
        ),
        (
            "rtc_exporter_target_poll_duration_seconds",
            "Duration of the last poll.",
            |t| t.last_duration,
        ),
        (
            "rtc_exporter_target_interval_seconds",
            "The target's poll interval (cron: time between its next two runs).",
            |t| Some(t.interval_seconds),
        ),
        (
            "rtc_exporter_target_consecutive_failures",
            "Polls failed in a row.",
            |t| t.polled.then_some(t.consecutive_failures as f64),
        ),
        (
            "rtc_exporter_target_rooms_dropped",
            "Rooms over max_rooms in the last poll: counted in totals, no series of their own.",
            |t| t.polled.then_some(t.rooms_dropped as f64),
        ),
        (
            "rtc_exporter_target_rooms_failed",
            "Rooms whose refresh failed in the last poll (all known rooms when the poll failed before any answered); they keep their last values until stale.",
            |t| t.polled.then_some(t.rooms_failed as f64),
        ),
        (
            "rtc_exporter_target_next_poll_timestamp_seconds",
            "Unix time of the next planned poll (the schedule, and backoff after failed polls).",
            |t| t.next_poll,
        ),
    ];
    for (name, help, field) in state {
        let mut f = Family::new(&mut out, name, "gauge", help);
        for t in targets.values() {
            if let Some(v) = field(t) {
                f.sample(&[("target", &t.name), ("vendor", t.vendor)], v);
            }
        }
    }
    let mut bytes = out.into_bytes();
    self_metrics.encode(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        escape("a\"b\\c\nd", &mut s);
        assert_eq!(s, "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn empty_families_are_left_out() {
        let mut out = String::new();
        {
            let _f = Family::new(&mut out, "x", "gauge", "h");
        }
        assert!(out.is_empty());
        {
            let mut f = Family::new(&mut out, "x", "gauge", "h");
            f.sample(&[("a", "b")], 2.0);
        }
        assert_eq!(out, "# HELP x h\n# TYPE x gauge\nx{a=\"b\"} 2\n");
    }
}

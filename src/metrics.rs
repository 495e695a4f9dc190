//! The exporter's own counters ([`SelfMetrics`]): requests, polls, anomalies, reloads, the
//! state file, in a long-lived `prometheus` registry with the `process_*` metrics. The domain
//! series are written from the snapshot by [`crate::exposition`].

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry, TextEncoder,
};

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
    "rtc_exporter_ha_leader",
    "rtc_exporter_ha_shard_leader",
    "rtc_exporter_ha_replicas",
    "rtc_exporter_ha_etcd_up",
    "rtc_exporter_ha_state_writes_total",
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
    /// The HA gauges and counter (registered where `ha:` is configured: [`Self::enable_ha`]).
    pub ha: HaMetrics,
    ha_registered: std::sync::Once,
}

/// `rtc_exporter_ha_*`: what this replica leads and how etcd answers.
pub struct HaMetrics {
    /// `rtc_exporter_ha_leader`: 1 while this replica leads at least one shard.
    pub leader: Gauge,
    /// `rtc_exporter_ha_shard_leader{shard}`: 1 where this replica leads the shard.
    pub shard_leader: GaugeVec,
    /// `rtc_exporter_ha_replicas`: the live replicas seen in etcd, this one included.
    pub replicas: Gauge,
    /// `rtc_exporter_ha_etcd_up`: 1 when the last renewal of the lease succeeded.
    pub etcd_up: Gauge,
    /// `rtc_exporter_ha_state_writes_total{result}`.
    pub state_writes: IntCounterVec,
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
        let ha = HaMetrics {
            leader: Gauge::new(
                "rtc_exporter_ha_leader",
                "1 while this replica leads at least one shard (only a shard's leader polls its targets and serves their series), else 0.",
            )?,
            shard_leader: GaugeVec::new(
                Opts::new(
                    "rtc_exporter_ha_shard_leader",
                    "1 where this replica leads the shard, else 0; sum by shard over the replicas is 1 when all is well.",
                ),
                &["shard"],
            )?,
            replicas: Gauge::new(
                "rtc_exporter_ha_replicas",
                "Live replicas this one sees in etcd, itself included (0 while etcd does not answer).",
            )?,
            etcd_up: Gauge::new(
                "rtc_exporter_ha_etcd_up",
                "1 when this replica's last round with etcd went through (renewing the lease, reading the members and shard keys, taking or giving shards), else 0.",
            )?,
            state_writes: IntCounterVec::new(
                Opts::new(
                    "rtc_exporter_ha_state_writes_total",
                    "Writes of a target's day to etcd by result (success, failure).",
                ),
                &["result"],
            )?,
        };
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
            ha,
            ha_registered: std::sync::Once::new(),
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

    /// Registers the HA metrics with one `rtc_exporter_ha_shard_leader` series per shard (only
    /// replicas with `ha:` serve them).
    pub fn enable_ha(&self, shards: u32) {
        self.ha_registered.call_once(|| {
            let h = &self.ha;
            for shard in 0..shards {
                h.shard_leader
                    .with_label_values(&[&shard.to_string()])
                    .set(0.0);
            }
            for result in ["success", "failure"] {
                h.state_writes.with_label_values(&[result]);
            }
            for c in [
                Box::new(h.leader.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(h.shard_leader.clone()),
                Box::new(h.replicas.clone()),
                Box::new(h.etcd_up.clone()),
                Box::new(h.state_writes.clone()),
            ] {
                let _ = self.registry.register(c);
            }
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
    pub fn record_anomaly(&self, target: &str, vendor: &str, api: &str, kind: &str) {
        self.anomalies
            .with_label_values(&[target, vendor, api, kind])
            .inc();
    }

    /// Counts one poll.
    pub fn record_poll(&self, target: &str, vendor: &str, result: PollResult) {
        self.polls
            .with_label_values(&[target, vendor, result.label()])
            .inc();
    }

    /// Counts one request, its vendor code and duration: the one place where requests are
    /// accounted for. `failed`: its outcome label and, for a vendor error, the code's label
    /// (the caller logs the failure).
    pub fn record_request(
        &self,
        target: &str,
        vendor: &str,
        api: &str,
        seconds: f64,
        failed: Option<(&str, Option<&str>)>,
    ) {
        let outcome = failed.map_or("ok", |(outcome, _)| outcome);
        self.requests
            .with_label_values(&[target, vendor, api, outcome])
            .inc();
        self.duration
            .with_label_values(&[target, vendor, api])
            .observe(seconds);
        if let Some((_, Some(code))) = failed {
            self.errors
                .with_label_values(&[target, vendor, api, code])
                .inc();
        }
    }

    /// Appends the registry's families in the text format.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, out) {
            tracing::error!(error = %e, "cannot encode self-metrics");
        }
    }
}

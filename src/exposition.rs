//! The text exposition of a snapshot: the domain series (`rtc_*`) and per-target state
//! written by hand from the [`TargetView`]s, in a fixed order (targets and rooms sorted) so
//! output is stable, then the exporter's own counters
//! ([`crate::metrics::SelfMetrics`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::snapshot::TargetView;

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

/// One metric family, written only if it has samples: its `HELP` and `TYPE` lines go out with
/// its first sample, and every sample straight into the exposition (no buffer of its own: at
/// 50 000 rooms a family is megabytes).
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    started: bool,
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
            started: false,
        }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        if !self.started {
            self.started = true;
            let _ = writeln!(self.out, "# HELP {} {}", self.name, self.help);
            let _ = writeln!(self.out, "# TYPE {} {}", self.name, self.kind);
        }
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape(v, self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn bool_value(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The targets, by name.
type Targets = BTreeMap<String, Arc<TargetView>>;

/// The targets that have data, with it.
fn with_data(
    targets: &Targets,
) -> impl Iterator<Item = (&Arc<TargetView>, &crate::snapshot::TargetData)> {
    targets
        .values()
        .filter_map(|t| t.data.as_deref().map(|d| (t, d)))
}

/// Renders the whole exposition: domain series, target state, build info, then `own` (the
/// exporter's own counters, already in the text format). `now` decides which classes are
/// scheduled.
pub fn render(targets: &Targets, own: Vec<u8>, now: DateTime<Utc>) -> Vec<u8> {
    let mut out = String::with_capacity(4096);
    rooms(&mut out, targets);
    classes(&mut out, targets, now);
    totals(&mut out, targets);
    devices_failures_roles_watched(&mut out, targets);
    info(&mut out, targets);
    state(&mut out, targets);
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&own);
    bytes
}

/// Each room's users, peak, accumulated, activity, capacity and warning ratio.
fn rooms(out: &mut String, targets: &Targets) {
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
        let mut f = Family::new(out, name, "gauge", help);
        for (t, d) in with_data(targets) {
            for r in &d.rooms {
                if let Some(v) = field(r) {
                    f.sample(
                        &[
                            ("target", &t.name),
                            ("vendor", t.vendor.name),
                            ("room", &r.room),
                        ],
                        v,
                    );
                }
            }
        }
    }

    {
        let mut f = Family::new(
            out,
            "rtc_room_capacity_warning_ratio",
            "gauge",
            "Share of the room's capacity from which it counts as near capacity (capacity.rooms.ROOM.warning_ratio, capacity.warning_ratio or global.capacity_warning_ratio); rooms that have a capacity.",
        );
        for (t, d) in with_data(targets) {
            for r in d.rooms.iter().filter(|r| r.capacity.is_some()) {
                f.sample(
                    &[
                        ("target", &t.name),
                        ("vendor", t.vendor.name),
                        ("room", &r.room),
                    ],
                    t.expected.capacity.warning_ratio_of(&r.room),
                );
            }
        }
    }
}

/// Whether a class is scheduled now in each room the classes name or cover.
fn classes(out: &mut String, targets: &Targets, now: DateTime<Utc>) {
    {
        let mut f = Family::new(
            out,
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
                    &[
                        ("target", &t.name),
                        ("vendor", t.vendor.name),
                        ("room", room),
                    ],
                    bool_value(classes.scheduled(room, &sessions)),
                );
            }
        }
    }
}

/// Each target's totals and its licensed users.
fn totals(out: &mut String, targets: &Targets) {
    type TotalField = fn(&crate::snapshot::TargetData) -> f64;
    let totals: [(&str, &str, TotalField); 4] = [
        ("rtc_rooms", "Rooms in progress now, including rooms beyond max_rooms.", |d| d.rooms_active as f64),
        ("rtc_users", "Users now over all rooms of the target (tencent_trtc, talkcloud: distinct users, one in two rooms counts once).", |d| d.users as f64),
        ("rtc_peak_users", "Peak concurrent users of the target today (local day). Exact for tencent_trtc and talkcloud (a sweep over the union of the rooms' sessions); otherwise the maximum observed total, at least the largest room peak, a lower bound.", |d| d.peak as f64),
        ("rtc_accumulated_users", "Users of the target today (local day): distinct user ids across rooms (exact for tencent_trtc and talkcloud, observed for volcengine_rtc), plus the vendor's per-room accumulated counts for ucloud_urtc (a user in two rooms then counts twice).", |d| d.accumulated as f64),
    ];
    for (name, help, field) in totals {
        let mut f = Family::new(out, name, "gauge", help);
        for (t, d) in with_data(targets) {
            f.sample(&[("target", &t.name), ("vendor", t.vendor.name)], field(d));
        }
    }
    {
        let mut f = Family::new(
            out,
            "rtc_target_max_users",
            "gauge",
            "Concurrent users the target's account is licensed or billed for (max_users); compare with rtc_users.",
        );
        for t in targets.values() {
            if let Some(n) = t.expected.max_users {
                f.sample(&[("target", &t.name), ("vendor", t.vendor.name)], n as f64);
            }
        }
    }
}

/// Users by device, rooms whose refresh fails, users by role, watched users.
fn devices_failures_roles_watched(out: &mut String, targets: &Targets) {
    {
        let mut f = Family::new(
            out,
            "rtc_device_users",
            "gauge",
            "Users now by device type, where the vendor tells. volcengine_rtc: each room's last Property=true refresh (1 QPS, round robin, so a figure can be older than the poll) plus watched users online outside those rooms.",
        );
        for (t, d) in with_data(targets) {
            for (device, n) in d.devices.iter().flatten() {
                f.sample(
                    &[
                        ("target", &t.name),
                        ("vendor", t.vendor.name),
                        ("device", device.label()),
                    ],
                    *n as f64,
                );
            }
        }
    }
    {
        let mut f = Family::new(
            out,
            "rtc_exporter_room_refresh_failures",
            "gauge",
            "Failed refreshes in a row of a room whose last refresh failed (its figures are its last good ones, or gone after stale_after); rooms that refresh have no series.",
        );
        for (t, d) in with_data(targets) {
            for (room, n) in &d.failing_rooms {
                f.sample(
                    &[
                        ("target", &t.name),
                        ("vendor", t.vendor.name),
                        ("room", room),
                    ],
                    f64::from(*n),
                );
            }
        }
    }
    {
        let mut f = Family::new(
            out,
            "rtc_room_role_users",
            "gauge",
            "Users in the room now by role, where the vendor tells roles (talkcloud, agora): teacher, assistant, student, viewer, inspector, broadcaster, other.",
        );
        for (t, d) in with_data(targets) {
            for r in &d.rooms {
                for (role, n) in r.roles.iter().flatten() {
                    f.sample(
                        &[
                            ("target", &t.name),
                            ("vendor", t.vendor.name),
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
            out,
            "rtc_user_online",
            "gauge",
            "Watched users: 1 online, 0 not.",
        );
        for (t, d) in with_data(targets) {
            for (user, online) in &d.watched {
                f.sample(
                    &[
                        ("target", &t.name),
                        ("vendor", t.vendor.name),
                        ("user", user),
                    ],
                    bool_value(*online),
                );
            }
        }
    }
}

/// Each target's static facts and the exporter's build.
fn info(out: &mut String, targets: &Targets) {
    {
        let mut f = Family::new(
            out,
            "rtc_target_info",
            "gauge",
            "Static facts of a target; always 1.",
        );
        for t in targets.values() {
            f.sample(
                &[
                    ("target", &t.name),
                    ("vendor", t.vendor.name),
                    ("app", &t.info.app),
                    ("region", &t.info.region),
                ],
                1.0,
            );
        }
    }
    {
        let mut f = Family::new(
            out,
            "rtc_exporter_build_info",
            "gauge",
            "Build of the exporter; always 1.",
        );
        f.sample(
            &[("version", crate::VERSION), ("revision", crate::REVISION)],
            1.0,
        );
    }
}

/// Each target's polling state.
fn state(out: &mut String, targets: &Targets) {
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
        let mut f = Family::new(out, name, "gauge", help);
        for t in targets.values() {
            if let Some(v) = field(t) {
                f.sample(&[("target", &t.name), ("vendor", t.vendor.name)], v);
            }
        }
    }
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

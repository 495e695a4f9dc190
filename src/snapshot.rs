//! Immutable per-target views: what one target looks like after its last poll (or the day
//! so far, before it), the rows its series are rendered from. Built by the supervisor from the
//! ledger, rendered by [`crate::metrics`], swapped whole by the [`crate::board::Board`].

use std::sync::Arc;

use crate::config::Expected;
use crate::model::{DeviceCounts, RoleCounts, TargetInfo};

/// One room's series values.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomRow {
    /// Room id.
    pub room: String,
    /// In progress now.
    pub active: bool,
    /// Users now.
    pub users: u64,
    /// Invisible users now, where the vendor tells.
    pub invisible: Option<u64>,
    /// Peak today.
    pub peak: u64,
    /// Accumulated today.
    pub accumulated: u64,
    /// Configured capacity.
    pub capacity: Option<u64>,
    /// Users now by role, where the vendor tells roles (every role, zeros included).
    pub roles: Option<RoleCounts>,
}

/// The data of a target's last good poll.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetData {
    /// Rooms with their own series (at most `max_rooms`, busiest first kept), sorted by id.
    pub rooms: Vec<RoomRow>,
    /// Rooms in progress now, all of them.
    pub rooms_active: u64,
    /// Users now over all rooms.
    pub users: u64,
    /// Peak concurrent users of the target today.
    pub peak: u64,
    /// Accumulated users of the target today.
    pub accumulated: u64,
    /// Users by device.
    pub devices: Option<DeviceCounts>,
    /// Watched users: (id, online).
    pub watched: Vec<(String, bool)>,
    /// Rooms beyond `max_rooms`.
    pub rooms_dropped: u64,
    /// Rooms whose refresh failed in the last poll (their last values kept).
    pub rooms_failed: u64,
    /// Rooms whose last refresh failed, with their failed refreshes in a row (also those past
    /// `stale_after`, whose series are gone), sorted by room.
    pub failing_rooms: Vec<(String, u32)>,
}

/// Everything known about one target at one moment.
#[derive(Debug, Clone)]
pub struct TargetView {
    /// Target name.
    pub name: String,
    /// The vendor (its name is the `vendor` label).
    pub vendor: &'static crate::clouds::VendorEntry,
    /// Static facts.
    pub info: TargetInfo,
    /// Poll interval (cron: time between its next two runs).
    pub interval_seconds: f64,
    /// A poll has finished (success or failure).
    pub polled: bool,
    /// The last poll succeeded whole.
    pub up: bool,
    /// Unix time of the end of the last successful poll.
    pub last_success: Option<f64>,
    /// Duration of the last poll, seconds.
    pub last_duration: Option<f64>,
    /// Polls failed in a row (a partial poll counts).
    pub consecutive_failures: u32,
    /// Polls in a row in which no room answered: at `stale_after`, the data is dropped.
    pub consecutive_empty: u32,
    /// Why the last poll failed.
    pub last_error: Option<String>,
    /// Unix time of the next planned poll (schedule and backoff).
    pub next_poll: Option<f64>,
    /// Rooms whose refresh failed in the last poll (every known room when the poll failed
    /// before any room answered).
    pub rooms_failed: u64,
    /// Rooms over `max_rooms` in the last poll that gave data.
    pub rooms_dropped: u64,
    /// Last good data; `None` before the first success and once stale.
    pub data: Option<Arc<TargetData>>,
    /// What the config expects: capacities, warning ratios, licensed users, classes.
    pub expected: Arc<Expected>,
}

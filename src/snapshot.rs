//! Immutable per-target views and the [`Board`] that swaps them whole.
//!
//! A poll publishes a new [`TargetView`]; the board renders the exposition text once and swaps
//! the whole [`Snapshot`] atomically. A scrape loads the current snapshot (no lock) and serves
//! its bytes, plain or gzip-compressed at render time. What depends on the time of day
//! (whether a class is scheduled) is rendered from the board's clock, the one the polls read,
//! at every render: each poll and every [`crate::app::REFRESH_EVERY`].

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::clock::Clock;
use crate::config::Expected;
use crate::lock::lock;
use crate::metrics::{self, SelfMetrics};
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
    /// Vendor name.
    pub vendor: &'static str,
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

/// An immutable, rendered state of every target.
pub struct Snapshot {
    /// The views it was rendered from.
    pub targets: BTreeMap<String, Arc<TargetView>>,
    /// The exposition text.
    pub text: Bytes,
    /// The same, gzip-compressed (Prometheus asks for gzip).
    pub gzip: Bytes,
}

impl Snapshot {
    /// Every target has finished at least one poll.
    pub fn ready(&self) -> bool {
        self.targets.values().all(|t| t.polled)
    }
}

/// Where polls publish and scrapes read.
pub struct Board {
    views: Mutex<BTreeMap<String, Arc<TargetView>>>,
    current: ArcSwap<Snapshot>,
    metrics: Arc<SelfMetrics>,
    clock: Arc<dyn Clock>,
}

impl Board {
    /// A board with the initial views of every target, rendering with `clock`'s time.
    pub fn new(initial: Vec<TargetView>, metrics: Arc<SelfMetrics>, clock: Arc<dyn Clock>) -> Self {
        let views: BTreeMap<_, _> = initial
            .into_iter()
            .map(|v| (v.name.clone(), Arc::new(v)))
            .collect();
        let snapshot = Self::render_snapshot(views.clone(), &metrics, clock.now());
        Board {
            views: Mutex::new(views),
            current: ArcSwap::from_pointee(snapshot),
            metrics,
            clock,
        }
    }

    /// The wall-clock time, from the clock the polls read.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    fn render_snapshot(
        targets: BTreeMap<String, Arc<TargetView>>,
        metrics: &SelfMetrics,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Snapshot {
        let text = metrics::render(&targets, metrics, now);
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(text.len() / 4),
            flate2::Compression::fast(),
        );
        // Writing into a Vec cannot fail; should it, scrapers get the plain text.
        let gzip = match enc.write_all(&text).and_then(|()| enc.finish()) {
            Ok(g) => Bytes::from(g),
            Err(_) => Bytes::new(),
        };
        Snapshot {
            targets,
            text: Bytes::from(text),
            gzip,
        }
    }

    /// Replaces one target's view and swaps in a newly rendered snapshot.
    pub fn publish(&self, view: TargetView) {
        let mut views = lock(&self.views);
        views.insert(view.name.clone(), Arc::new(view));
        self.swap(&views);
    }

    /// Keeps only the targets named (the others left the config) and re-renders.
    pub fn retain(&self, names: &std::collections::BTreeSet<String>) {
        let mut views = lock(&self.views);
        views.retain(|name, _| names.contains(name));
        self.swap(&views);
    }

    /// Re-renders with the current views (fresh self-metrics and process figures).
    pub fn refresh(&self) {
        let views = lock(&self.views);
        self.swap(&views);
    }

    /// Renders and stores a snapshot. Called with the views lock held, so snapshots are stored
    /// in publish order; the lock is never held across a poll, and scrapes do not take it.
    fn swap(&self, views: &BTreeMap<String, Arc<TargetView>>) {
        self.current.store(Arc::new(Self::render_snapshot(
            views.clone(),
            &self.metrics,
            self.clock.now(),
        )));
    }

    /// The current view of one target.
    pub fn view(&self, name: &str) -> Option<Arc<TargetView>> {
        self.current.load().targets.get(name).cloned()
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

//! The [`Board`]: the latest [`TargetView`] of every target and the exposition rendered from
//! them.
//!
//! A poll publishes a new [`TargetView`]; the board's render thread renders the exposition text
//! and its gzip once per batch of changes and swaps the whole [`Snapshot`] atomically. A scrape
//! loads the current snapshot (no lock) and serves its bytes, plain or gzip-compressed at render
//! time. What depends on the time of day (whether a class is scheduled) is rendered from the
//! board's clock, the one the polls read, at every render: after polls and every
//! [`crate::app::REFRESH_EVERY`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::exposition;
use crate::metrics::SelfMetrics;
use crate::snapshot::TargetView;

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
///
/// Publishing only records the change; a thread of the board's own renders the exposition
/// (text and gzip) and swaps the snapshot in, so neither a poll nor a scrape waits for a render,
/// and the async workers never run one. Changes that arrive while a render runs are folded into
/// the next one: a burst of polls ending together renders once or twice, never once per poll.
/// Snapshots are swapped in publish order; a scrape loads the current one without a lock.
pub struct Board {
    shared: Arc<Shared>,
}

/// What the board and its render thread share.
struct Shared {
    pending: Mutex<Pending>,
    /// Signals the render thread: a change, or the board dropped.
    wake: Condvar,
    current: ArcSwap<Snapshot>,
    /// The last change rendered; [`Board::rendered`] waits on it.
    done: watch::Sender<u64>,
    renders: AtomicU64,
    metrics: Arc<SelfMetrics>,
    clock: Arc<dyn Clock>,
}

/// The views and the changes not yet rendered, behind one lock: a change and its number are
/// recorded together, so a render knows exactly which changes it shows.
struct Pending {
    views: BTreeMap<String, Arc<TargetView>>,
    /// Changes so far (publish, retain, refresh).
    changes: u64,
    /// Changes shown by the current snapshot or the render under way.
    taken: u64,
    /// Targets of the initial views that have not published a view of their own yet.
    unpublished: BTreeSet<String>,
    /// No render thread: the board is gone (the thread ends), or the thread could not start
    /// (changes render where they are made).
    closed: bool,
}

impl Board {
    /// A board with the initial views of every target, rendering with `clock`'s time (the
    /// first render here, the later ones on the board's render thread).
    pub fn new(initial: Vec<TargetView>, metrics: Arc<SelfMetrics>, clock: Arc<dyn Clock>) -> Self {
        let views: BTreeMap<_, _> = initial
            .into_iter()
            .map(|v| (v.name.clone(), Arc::new(v)))
            .collect();
        let snapshot = render_snapshot(views.clone(), own(&metrics), clock.now());
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                unpublished: views.keys().cloned().collect(),
                views,
                changes: 0,
                taken: 0,
                closed: false,
            }),
            wake: Condvar::new(),
            current: ArcSwap::from_pointee(snapshot),
            done: watch::channel(0).0,
            renders: AtomicU64::new(1),
            metrics,
            clock,
        });
        let renderer = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("rtc-render".into())
            .spawn(move || renderer.keep_rendering());
        if let Err(e) = spawned {
            // Without the thread, every change renders where it is made.
            tracing::warn!(error = %e, "cannot start the render thread; rendering in place");
            shared.lock().closed = true;
        }
        Board { shared }
    }

    /// The wall-clock time, from the clock the polls read.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.shared.clock.now()
    }

    /// Replaces one target's view and, in the same instant as far as any snapshot can tell,
    /// runs `count` (a poll counting itself); a new snapshot follows.
    pub fn publish_counted(&self, view: TargetView, count: impl FnOnce()) {
        self.change(|p| {
            p.unpublished.remove(&view.name);
            p.views.insert(view.name.clone(), Arc::new(view));
            count();
        });
    }

    /// Replaces one target's view; a new snapshot follows.
    pub fn publish(&self, view: TargetView) {
        self.change(|p| {
            p.unpublished.remove(&view.name);
            p.views.insert(view.name.clone(), Arc::new(view));
        });
    }

    /// Keeps only the targets named (the others left the config); a new snapshot follows.
    pub fn retain(&self, names: &BTreeSet<String>) {
        self.change(|p| {
            p.views.retain(|name, _| names.contains(name));
            p.unpublished.retain(|name| names.contains(name));
        });
    }

    /// Takes one target's view off (its shard is led by another replica: `ha:`); a new
    /// snapshot follows.
    pub fn withdraw(&self, name: &str) {
        self.change(|p| {
            p.views.remove(name);
            p.unpublished.remove(name);
        });
    }

    /// Renders again with the current views (fresh self-metrics and process figures).
    pub fn refresh(&self) {
        self.change(|_| {});
    }

    fn change(&self, f: impl FnOnce(&mut Pending)) {
        let mut p = self.shared.lock();
        f(&mut p);
        p.changes += 1;
        if p.closed {
            // No render thread (it could not start): render here, in order, under the lock.
            let (changes, views) = (p.changes, p.views.clone());
            self.shared
                .render(views, own(&self.shared.metrics), changes);
        } else {
            self.shared.wake.notify_one();
        }
    }

    /// Resolves once the snapshot shows every change made before the call (a reload answers
    /// only then, so the next scrape sees it).
    pub async fn rendered(&self) {
        let wanted = self.shared.lock().changes;
        let mut done = self.shared.done.subscribe();
        // The sender lives in `shared`, which `self` keeps.
        let _ = done.wait_for(|d| *d >= wanted).await;
    }

    /// Resolves once every target of the initial views has published a view of its own (a
    /// target restored from the state file shows its day so far) and the snapshot shows it:
    /// the exporter serves from then on.
    pub async fn published(&self) {
        let mut done = self.shared.done.subscribe();
        loop {
            let (all, changes) = {
                let p = self.shared.lock();
                (p.unpublished.is_empty(), p.changes)
            };
            if all && *done.borrow_and_update() >= changes {
                return;
            }
            if done.changed().await.is_err() {
                return;
            }
        }
    }

    /// Renders so far, the first one included (tests and benchmarks).
    pub fn renders(&self) -> u64 {
        self.shared.renders.load(Ordering::Relaxed)
    }

    /// The current view of one target.
    pub fn view(&self, name: &str) -> Option<Arc<TargetView>> {
        self.shared.current.load().targets.get(name).cloned()
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        crate::lock::lock(&self.pending)
    }

    /// The render thread: waits for changes, takes every one made so far, renders them once.
    fn keep_rendering(&self) {
        loop {
            let (views, own, changes) = {
                let mut p = self.lock();
                while p.taken == p.changes && !p.closed {
                    p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                }
                if p.closed {
                    return;
                }
                p.taken = p.changes;
                // The views and the exporter's own counters as of one instant: a poll counts
                // itself under this lock as it publishes its view (`publish_counted`), so no
                // snapshot shows a poll's count without its figures.
                (p.views.clone(), own(&self.metrics), p.changes)
            };
            self.render(views, own, changes);
        }
    }

    /// Renders `views` (the first `changes` changes) and swaps the snapshot in. A render that
    /// panics keeps the last snapshot, and the thread and whoever waits for it go on.
    fn render(&self, views: BTreeMap<String, Arc<TargetView>>, own: Vec<u8>, changes: u64) {
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            render_snapshot(views, own, self.clock.now())
        }));
        match rendered {
            Ok(snapshot) => {
                self.current.store(Arc::new(snapshot));
                self.renders.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => tracing::error!("rendering /metrics failed; the last exposition stays"),
        }
        self.done.send_replace(changes);
    }
}

/// The exporter's own counters in the text format, as they stand.
fn own(metrics: &SelfMetrics) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * 1024);
    metrics.encode(&mut out);
    out
}

/// The exposition of `targets` at `now`, plain and gzip-compressed.
fn render_snapshot(
    targets: BTreeMap<String, Arc<TargetView>>,
    own: Vec<u8>,
    now: chrono::DateTime<chrono::Utc>,
) -> Snapshot {
    // Text and gzip each hold exactly their bytes for as long as the snapshot is served: grown
    // by doubling, a block can be twice its length, and once freed, its size decides which later
    // blocks the allocator keeps resident (benches/memory: 0.3 KiB a room at 50 000 rooms,
    // every room with its series).
    let mut text = exposition::render(&targets, own, now);
    text.shrink_to_fit();
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(text.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail; should it, scrapers get the plain text.
    let gzip = match enc.write_all(&text).and_then(|()| enc.finish()) {
        Ok(mut g) => {
            g.shrink_to_fit();
            Bytes::from(g)
        }
        Err(_) => Bytes::new(),
    };
    Snapshot {
        targets,
        text: Bytes::from(text),
        gzip,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Condvar;
    use std::time::Duration;

    use crate::config::Expected;
    use crate::model::TargetInfo;

    use chrono::{DateTime, Utc};

    use super::*;
    use futures_util::future::BoxFuture;

    /// A clock whose `now` can be made to block: a render reads it, so a render can be held
    /// while changes arrive.
    struct HeldClock {
        state: Mutex<(bool, usize)>,
        moved: Condvar,
    }

    impl HeldClock {
        fn hold(&self, held: bool) {
            self.state.lock().unwrap().0 = held;
            self.moved.notify_all();
        }
        /// Waits until a render is blocked in `now`.
        fn wait_for_render(&self) {
            let mut s = self.state.lock().unwrap();
            while s.1 == 0 {
                s = self.moved.wait(s).unwrap();
            }
        }
    }

    impl Clock for HeldClock {
        fn now(&self) -> DateTime<Utc> {
            let mut s = self.state.lock().unwrap();
            s.1 += 1;
            self.moved.notify_all();
            while s.0 {
                s = self.moved.wait(s).unwrap();
            }
            s.1 -= 1;
            DateTime::from_timestamp(1_700_000_000, 0).unwrap()
        }
        fn sleep_until(&self, _at: DateTime<Utc>) -> BoxFuture<'_, ()> {
            Box::pin(std::future::pending())
        }
    }

    fn view(name: &str, polled: bool) -> TargetView {
        TargetView {
            name: name.into(),
            vendor: &crate::clouds::ucloud_urtc::ENTRY,
            info: TargetInfo {
                app: "app".into(),
                region: String::new(),
            },
            interval_seconds: 60.0,
            polled,
            up: polled,
            last_success: None,
            last_duration: None,
            consecutive_failures: 0,
            consecutive_empty: 0,
            last_error: None,
            next_poll: None,
            rooms_failed: 0,
            rooms_dropped: 0,
            data: None,
            expected: Arc::new(Expected::default()),
        }
    }

    #[tokio::test]
    async fn a_burst_of_changes_renders_once_after_the_render_under_way() {
        let clock = Arc::new(HeldClock {
            state: Mutex::new((false, 0)),
            moved: Condvar::new(),
        });
        let metrics = Arc::new(SelfMetrics::new().unwrap());
        let board = Board::new(vec![view("t0", false)], metrics, clock.clone());
        assert_eq!(board.renders(), 1);
        clock.hold(true);
        board.publish(view("t0", true));
        // A render is under way (blocked reading the clock) ...
        clock.wait_for_render();
        // ... while a hundred polls end; scrapes still get the last snapshot at once.
        for i in 1..=100 {
            board.publish(view(&format!("t{i}"), true));
        }
        assert_eq!(board.snapshot().targets.len(), 1);
        assert!(board.view("t0").is_some_and(|v| !v.polled));
        clock.hold(false);
        tokio::time::timeout(Duration::from_secs(30), board.rendered())
            .await
            .expect("rendered");
        assert_eq!(
            board.renders(),
            3,
            "the one under way, then one for the burst"
        );
        let snap = board.snapshot();
        assert_eq!(snap.targets.len(), 101);
        assert!(snap.ready());
        let text = String::from_utf8_lossy(&snap.text);
        assert!(text.contains("rtc_target_info{target=\"t100\""), "{text}");
    }

    #[tokio::test]
    async fn published_waits_for_every_initial_target_to_publish() {
        let clock = Arc::new(HeldClock {
            state: Mutex::new((false, 0)),
            moved: Condvar::new(),
        });
        let metrics = Arc::new(SelfMetrics::new().unwrap());
        let board = Arc::new(Board::new(
            vec![view("a", false), view("b", false), view("c", false)],
            metrics,
            clock,
        ));
        let waiting = {
            let board = board.clone();
            tokio::spawn(async move { board.published().await })
        };
        board.publish(view("a", true));
        board.refresh();
        board.rendered().await;
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "b and c have not published");
        // c leaves the config; b publishes.
        board.retain(&["a".to_string(), "b".to_string()].into_iter().collect());
        board.publish(view("b", true));
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("published")
            .unwrap();
        assert!(board.snapshot().ready());
    }

    #[tokio::test]
    async fn retain_and_refresh_render_too() {
        let clock = Arc::new(HeldClock {
            state: Mutex::new((false, 0)),
            moved: Condvar::new(),
        });
        let metrics = Arc::new(SelfMetrics::new().unwrap());
        let board = Board::new(vec![view("a", true), view("b", true)], metrics, clock);
        board.retain(&["a".to_string()].into_iter().collect());
        board.rendered().await;
        assert!(board.view("b").is_none() && board.view("a").is_some());
        let before = board.renders();
        board.refresh();
        board.rendered().await;
        assert!(board.renders() > before);
    }
}

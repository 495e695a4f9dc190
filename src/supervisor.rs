//! One owner per target's lifecycle ([`Supervisor`]): its schedule, ledger, vendor state,
//! backoff and series, from start through polls, saves and reloads to stop; and the
//! [`Fleet`] of them, which applies a (re)loaded config and keeps the state file.
//!
//! One poll per target at a time: a planned poll that comes while the previous one still runs
//! is skipped and counted as an overlap. Every poll has a deadline (`poll_timeout`); a failed
//! poll keeps the last good values for `stale_after` polls, then drops them. Scrapes never
//! drive a poll.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::board::Board;
use crate::clouds::{LeaderGate, Plumbing, PollCtx, PollError};
use crate::config::{Config, Global, Target};
use crate::ha::{Ha, LoadError};
use crate::ledger::{Day, Ledger, Limits};
use crate::lock::lock;
use crate::metrics::PollResult;
use crate::model::Observation;
use crate::schedule::Schedule;
use crate::schedule::{backoff_gap, interval_seconds, next_cron};
use crate::snapshot::TargetView;
use crate::state::{self, Saved, StateFile, TargetFile};

/// How long shutdown (and a reload that restarts a target) waits for a poll in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Polls that finish within this time of each other share one write of the state file.
pub const SAVE_DEBOUNCE: Duration = Duration::from_millis(200);
/// The longest phase of an interval target's first poll.
const MAX_PHASE: Duration = Duration::from_secs(10);

/// The initial (not yet polled) view of a target.
pub fn initial_view(target: &Target, global: &Global, now: DateTime<Utc>) -> TargetView {
    TargetView {
        name: target.name.clone(),
        vendor: target.vendor,
        info: target.client.info(),
        interval_seconds: interval_seconds(&target.schedule, global.timezone, now),
        polled: false,
        up: false,
        last_success: None,
        last_duration: None,
        consecutive_failures: 0,
        consecutive_empty: 0,
        last_error: None,
        next_poll: None,
        rooms_failed: 0,
        rooms_dropped: 0,
        data: None,
        expected: target.expected.clone(),
    }
}

struct RunState {
    ledger: Ledger,
    view: TargetView,
    /// The vendor client's cursors as of the last poll folded into `ledger`: saved and
    /// carried over with it, so the two never disagree (the client's own move during a poll,
    /// before the poll is folded).
    cursors: Option<serde_json::Value>,
    /// Counts the changes of `ledger` and `cursors`: the state file is written when it moved
    /// since the last write ([`Supervisor::written`]).
    generation: u64,
}

/// Owns one target: its schedule task, ledger, view and vendor client (the client keeps the
/// vendor's own state: cursors, device refresh).
pub struct Supervisor {
    target: Target,
    global: Global,
    plumbing: Arc<Plumbing>,
    board: Arc<Board>,
    state: Mutex<RunState>,
    saved: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// When its last poll began: a restart keeps the schedule's phase from it.
    last_poll: Mutex<Option<Instant>>,
    /// The [`RunState::generation`] its state file holds (0: not written by this supervisor).
    written: AtomicU64,
    /// With `ha:`: the group, and whether this replica leads the target's shard.
    ha: Option<(Arc<Ha>, LeaderGate)>,
    /// Whether its view is on the board (always without `ha:`; with it, while leading).
    shown: Mutex<bool>,
    /// The [`RunState::generation`] its day in etcd holds (`ha:`).
    etcd_written: AtomicU64,
    /// Its day is the leader's own, current (a reload while leading): not read from etcd at
    /// the first take-over.
    current: AtomicBool,
}

fn unix(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

impl Supervisor {
    /// A supervisor of `fleet` for `target`, with the day's ledger so far (a reload or the
    /// state file), not yet running.
    fn new(
        fleet: &Fleet,
        target: Target,
        global: Global,
        ledger: Option<Ledger>,
        previous: Option<&Supervisor>,
    ) -> Arc<Self> {
        let (plumbing, board) = (fleet.plumbing.clone(), fleet.board.clone());
        let (saved, ha) = (fleet.saved.clone(), fleet.ha.clone());
        // A reload while this replica leads the target, polling (past its take-over), hands
        // over the day as it is now: newer than what etcd holds until the next write.
        let current = ledger.is_some() && previous.is_some_and(|p| *lock(&p.shown));
        let previous = previous.map(Supervisor::view);
        plumbing
            .metrics
            .init_target(&target.name, target.vendor.name);
        let now = plumbing.clock.now();
        let mut view = initial_view(&target, &global, now);
        if let Some(p) = previous.filter(|p| p.vendor == target.vendor) {
            // A restart by reload keeps what its polls said until its next poll: a target that
            // was down stays down (its alert does not resolve), and its last success stays.
            view.polled = p.polled;
            view.up = p.up;
            view.last_success = p.last_success;
            view.last_duration = p.last_duration;
            view.consecutive_failures = p.consecutive_failures;
            view.consecutive_empty = p.consecutive_empty;
            view.last_error = p.last_error;
            view.rooms_failed = p.rooms_failed;
            view.rooms_dropped = p.rooms_dropped;
        }
        let mut ledger = ledger.unwrap_or_default();
        if ledger.day().is_some() {
            // The day so far, shown at once: a restart or reload never lowers today's figures,
            // not even until the first poll.
            let day = Day::at(now, global.timezone);
            if ledger.day() == Some(day.date) {
                let data = ledger.apply(
                    &day,
                    &Observation::default(),
                    false,
                    &limits(&target, &global),
                );
                view.data = Some(Arc::new(data));
            } else {
                ledger.reset();
            }
        }
        let cursors = target.client.cursors();
        let ha = ha.map(|ha| {
            let gate = ha.gate(&target.name);
            (ha, gate)
        });
        // Only where this replica leads its shard now: a day handed over to a target that
        // waits for its shard would be old by the time it leads.
        let current = current && ha.as_ref().is_none_or(|(_, g)| g.is_open());
        Arc::new(Supervisor {
            current: AtomicBool::new(current),
            shown: Mutex::new(ha.is_none()),
            ha,
            etcd_written: AtomicU64::new(0),
            target,
            global,
            plumbing,
            board,
            state: Mutex::new(RunState {
                ledger,
                view,
                cursors,
                generation: 1,
            }),
            saved,
            stop: watch::channel(false).0,
            task: Mutex::new(None),
            last_poll: Mutex::new(None),
            written: AtomicU64::new(0),
        })
    }

    /// The target it owns.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The current view.
    pub fn view(&self) -> TargetView {
        self.lock().view.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunState> {
        lock(&self.state)
    }

    /// Puts its view on the board, where it is shown (a follower's is not: `ha:`).
    fn show(&self, view: TargetView) {
        self.show_counted(view, || {});
    }

    /// [`Board::publish_counted`] where its view is shown; else only `count` runs. With `ha:`,
    /// a target this replica has not polled yet is not shown: a new leader serves a target
    /// from its first poll on (and stays ready meanwhile).
    fn show_counted(&self, view: TargetView, count: impl FnOnce()) {
        let shown = lock(&self.shown);
        if *shown && (self.ha.is_none() || view.polled) {
            self.board.publish_counted(view, count);
        } else {
            count();
        }
    }

    /// Shows its view from now on (`ha:`: it leads), or takes it off the board.
    fn set_shown(&self, on: bool) {
        let mut shown = lock(&self.shown);
        *shown = on;
        if on {
            let view = self.lock().view.clone();
            if view.polled {
                self.board.publish(view);
            }
        } else {
            // Shown again only from its next poll (the view may be old by then).
            self.lock().view.polled = false;
            self.board.withdraw(&self.target.name);
        }
    }

    /// Starts its schedule: an interval target's first poll after `phase`; a cron target's
    /// at once where `at_once` (a start), else at its next planned time (a restart).
    fn spawn(self: &Arc<Self>, phase: Duration, at_once: bool) {
        let me = self.clone();
        let stop = self.stop.subscribe();
        let span = tracing::info_span!("target", target_name = %self.target.name, vendor = self.target.vendor.name);
        let handle = tokio::spawn(me.run(stop, phase, at_once).instrument(span));
        *lock(&self.task) = Some(handle);
    }

    /// Stops its schedule and waits for a poll in flight, at most until `deadline` (then the
    /// poll is abandoned: nothing it did is published).
    async fn halt(&self, deadline: Instant) {
        let _ = self.stop.send(true);
        let handle = lock(&self.task).take();
        if let Some(mut h) = handle {
            if tokio::time::timeout_at(deadline, &mut h).await.is_err() {
                tracing::warn!(target_name = %self.target.name, "poll still running at stop; abandoned");
                h.abort();
            }
        }
    }

    /// Takes its ledger away (a reload hands it to the target's next supervisor).
    /// Begins a new local day at its midnight, polled or not ([`Ledger::roll`]): the "today"
    /// figures restart from what is in progress now. Nothing happens on the same day.
    fn roll_day(&self, now: DateTime<Utc>) {
        let day = Day::at(now, self.global.timezone);
        let view = {
            let mut st = self.lock();
            let RunState {
                ledger,
                view,
                generation,
                ..
            } = &mut *st;
            // What answered within two intervals of midnight (at least a minute, at most an
            // hour) is in progress at midnight; nothing is, for a target that is down.
            let window = (2.0 * view.interval_seconds).clamp(60.0, 3600.0) as i64;
            let fresh_since = if view.up {
                day.start - window
            } else {
                i64::MAX
            };
            if !ledger.roll(&day, fresh_since) {
                return;
            }
            *generation += 1;
            self.rerender(ledger, view, &day);
            view.clone()
        };
        tracing::info!(target_name = %self.target.name, day = %day.date, "local midnight: a new day's figures begin");
        self.show(view);
        self.saved.notify_one();
    }

    /// What the config now expects of its rooms (a reload that restarts nothing). Returns
    /// whether that changed (applied in place), else nothing happens.
    fn set_expected(&self, expected: Arc<crate::config::Expected>) -> bool {
        let day = Day::at(self.plumbing.clock.now(), self.global.timezone);
        let view = {
            let mut st = self.lock();
            let RunState {
                ledger,
                view,
                generation,
                ..
            } = &mut *st;
            if view.expected == expected {
                return false;
            }
            view.expected = expected;
            // The rooms' capacities are in their rows: the same figures, new capacities (and a
            // day that had not rolled yet rolls).
            self.rerender(ledger, view, &day);
            *generation += 1;
            view.clone()
        };
        self.show(view);
        true
    }

    /// The view's data again from the ledger as it is (no new reading), where it has data.
    fn rerender(&self, ledger: &mut Ledger, view: &mut TargetView, day: &Day) {
        if view.data.is_some() {
            let data = ledger.apply(
                day,
                &Observation::default(),
                false,
                &limits_of(&view.expected, &self.global),
            );
            view.data = Some(Arc::new(data));
        }
    }

    /// Whether its day's figures still hold in `tz` (a reload that changes the zone): the same
    /// zone, no day yet, or a day that is still today's date there. Otherwise they are dropped,
    /// and the log says which day, and why.
    fn day_holds_in(&self, tz: chrono_tz::Tz) -> bool {
        let from = self.global.timezone;
        if from == tz {
            return true;
        }
        let Some(day) = self.lock().ledger.day() else {
            return true;
        };
        let today = Day::at(self.plumbing.clock.now(), tz).date;
        let (name, from, to) = (&self.target.name, from.name(), tz.name());
        if day == today {
            tracing::info!(target_name = %name, %day, from, to, "time zone changed: the day's figures are kept, it is still today there");
            true
        } else {
            tracing::warn!(target_name = %name, %day, %today, from, to, "time zone changed: the day's figures are dropped, it is no longer today there");
            false
        }
    }

    fn take_ledger(&self) -> Ledger {
        std::mem::take(&mut self.lock().ledger)
    }

    fn publish(&self, next: Option<DateTime<Utc>>) {
        let view = {
            let mut st = self.lock();
            st.view.next_poll = next.map(unix);
            st.view.interval_seconds = interval_seconds(
                &self.target.schedule,
                self.global.timezone,
                self.plumbing.clock.now(),
            );
            st.view.clone()
        };
        self.show(view);
    }

    fn overlap(&self, missed: u64) {
        for _ in 0..missed.min(1000) {
            self.plumbing.metrics.record_poll(
                &self.target.name,
                self.target.vendor.name,
                PollResult::Overlap,
            );
        }
        if missed > 0 {
            tracing::warn!(
                missed,
                "the poll ran past its next planned time; those polls are skipped"
            );
        }
    }

    /// Its schedule; with `ha:`, only while this replica leads its shard: on taking the
    /// shard, the day kept in etcd first, then a poll at once; on losing it, the poll in
    /// flight is dropped and its view leaves the board.
    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>, phase: Duration, at_once: bool) {
        let Some((ha, gate)) = self.ha.clone() else {
            return self.schedule(stop, phase, at_once).await;
        };
        let mut open = gate.open.clone();
        loop {
            tokio::select! {
                r = open.wait_for(|leading| *leading) => if r.is_err() { return },
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            let led = tokio::select! {
                _ = self.take_over(&ha) => true,
                _ = gate.closed() => false,
                _ = stop.wait_for(|stopped| *stopped) => return,
            };
            if led {
                self.set_shown(true);
                tokio::select! {
                    _ = self.clone().schedule(stop.clone(), Duration::ZERO, true) => return,
                    _ = gate.closed() => {
                        tracing::debug!("this replica no longer leads the shard of the target; its polls stop here");
                    }
                }
            }
            self.set_shown(false);
            // The deadline passed with the gate still open (a frozen process): wait for the
            // campaign to close it, or to renew, before leading again.
            if *open.borrow() {
                tokio::select! {
                    _ = open.wait_for(|leading| !*leading) => {}
                    _ = async { while !gate.is_open() { tokio::time::sleep(Duration::from_millis(100)).await } } => {}
                    _ = stop.wait_for(|stopped| *stopped) => return,
                }
            }
        }
    }

    /// Loads the target's day from etcd, where the last leader wrote it, in place of its own
    /// (which may be older), unless this process wrote that day itself (its own is as new).
    /// While etcd does not answer it tries again every second (polling without the day would
    /// begin its figures afresh; the lease's deadline ends the wait); what cannot be a day is
    /// logged and left, and its own day goes on.
    async fn take_over(&self, ha: &Ha) {
        if self.current.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut warned = false;
        loop {
            match ha.load_day(&self.target.name).await {
                Ok(None) => {
                    tracing::info!("leading this target; etcd holds no day of it yet");
                    return;
                }
                Ok(Some(day)) if day.own => {
                    tracing::info!("leading this target again; the day in etcd was written by this replica, which goes on with its own");
                    return;
                }
                Ok(Some(day)) => {
                    let name = self.target.name.clone();
                    let file = tokio::task::spawn_blocking(move || {
                        state::from_compressed(&day.data, &name)
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("decoding task failed: {e}")));
                    match file {
                        Ok(f) => self.adopt(f),
                        Err(e) => {
                            tracing::warn!(error = %e, "the day kept in etcd is ignored; this replica goes on with its own")
                        }
                    }
                    return;
                }
                Err(LoadError::Refused(e)) => {
                    tracing::warn!(error = %e, "etcd refused the day kept for this target; this replica polls with its own (does its etcd user have read and write on the whole prefix?)");
                    return;
                }
                Err(LoadError::Damaged(e)) => {
                    tracing::warn!(error = %e, "the day kept in etcd is damaged and ignored; this replica goes on with its own (the next write replaces it)");
                    return;
                }
                Err(LoadError::Unreachable(e)) => {
                    if !warned {
                        tracing::warn!(error = %e, "cannot read the day kept in etcd; trying again every second before polling");
                        warned = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Takes `file` (the day the last leader kept in etcd) as its ledger and cursors, where it
    /// is of the same account and still today.
    fn adopt(&self, file: TargetFile) {
        let mut saved = Saved::own(file, PathBuf::from("(etcd)"));
        let now = self.plumbing.clock.now();
        let day = Day::at(now, self.global.timezone);
        let t = &self.target;
        if let Err(why) = state::entry_for(
            &saved,
            t.vendor.name,
            t.identity,
            self.global.timezone.name(),
            day.date,
        ) {
            tracing::info!(reason = %why, "the day kept in etcd is not used");
            return;
        }
        let cursors = saved.cursors.clone();
        restore_cursors(&mut saved, t);
        let ledger = match saved.day.restore() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "the day kept in etcd is damaged; this replica goes on with its own");
                return;
            }
        };
        let mut st = self.lock();
        let RunState {
            ledger: mine,
            view,
            generation,
            cursors: kept,
        } = &mut *st;
        *mine = ledger;
        *kept = cursors;
        let data = mine.apply(
            &day,
            &Observation::default(),
            false,
            &limits(t, &self.global),
        );
        view.data = Some(Arc::new(data));
        *generation += 1;
        // Already in etcd as it is; the state file (if any) gets it at the next write.
        self.etcd_written.store(*generation, Ordering::Release);
        tracing::info!(day = %day.date, "leading this target; its day goes on from etcd");
    }

    async fn schedule(
        self: Arc<Self>,
        mut stop: watch::Receiver<bool>,
        phase: Duration,
        at_once: bool,
    ) {
        let clock = self.plumbing.clock.clone();
        let mut rng = fastrand::Rng::new();
        let stopped = |rx: &watch::Receiver<bool>| *rx.borrow();
        match self.target.schedule.clone() {
            Schedule::Interval(every) => {
                // A grid of the interval from the phase (monotonic time).
                let origin = Instant::now() + phase;
                // Checked: a slot past what the clock can hold is a year away.
                let slot_at = |k: u64| {
                    origin
                        .checked_add(every.saturating_mul(k.min(u32::MAX as u64) as u32))
                        .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 86_400))
                };
                let mut k = 0u64;
                loop {
                    let at = slot_at(k);
                    let wall = clock.now()
                        + chrono::Duration::from_std(at.saturating_duration_since(Instant::now()))
                            .unwrap_or_default();
                    self.publish(Some(wall));
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = stop.changed() => {}
                    }
                    if stopped(&stop) {
                        return;
                    }
                    let failures = self.poll_once().await;
                    let not_before = at + backoff_gap(failures, every, rng.f64());
                    let now = Instant::now();
                    // Slots that passed while the poll ran are overlaps; slots inside the
                    // backoff are skipped as planned.
                    let slots_to = |t: Instant| -> u64 {
                        let since = t.saturating_duration_since(origin).as_nanos();
                        let every = every.as_nanos().max(1);
                        since.div_ceil(every) as u64
                    };
                    let after_poll = slots_to(now).max(k + 1);
                    let after_backoff = slots_to(not_before).max(after_poll);
                    self.overlap(after_poll.saturating_sub(k + 1));
                    k = after_backoff;
                }
            }
            Schedule::Cron(expr) => {
                let Ok(cron) = crate::schedule::parse_cron(&expr) else {
                    tracing::error!(schedule = %expr, "invalid cron expression; the target is not polled");
                    return;
                };
                let tz = self.global.timezone;
                // A first poll at start, so the target is ready without waiting for its slot;
                // a restarted target keeps to its plan.
                let mut due = if at_once {
                    Some(clock.now())
                } else {
                    next_cron(&cron, tz, clock.now())
                };
                loop {
                    let Some(at) = due else {
                        tracing::warn!(schedule = %expr, "the cron expression has no further runs");
                        self.publish(None);
                        let _ = stop.changed().await;
                        return;
                    };
                    self.publish(Some(at));
                    tokio::select! {
                        _ = clock.sleep_until(at) => {}
                        _ = stop.changed() => {}
                    }
                    if stopped(&stop) {
                        return;
                    }
                    let started = clock.now();
                    let failures = self.poll_once().await;
                    let gap = interval_seconds(&self.target.schedule, tz, started);
                    let gap = Duration::from_secs_f64(gap.max(0.0));
                    let not_before = started
                        + chrono::Duration::from_std(backoff_gap(failures, gap, rng.f64()))
                            .unwrap_or_default();
                    let now = clock.now();
                    // Runs that passed while the poll ran are overlaps.
                    let mut missed = 0u64;
                    let mut t = at;
                    while let Some(n) = next_cron(&cron, tz, t) {
                        if n > now || missed >= 1000 {
                            break;
                        }
                        missed += 1;
                        t = n;
                    }
                    self.overlap(missed);
                    // The first run after now, and at or after the end of a backoff.
                    let from = if failures > 1 && not_before > now {
                        not_before - chrono::Duration::milliseconds(1)
                    } else {
                        now
                    };
                    due = next_cron(&cron, tz, from);
                }
            }
        }
    }

    /// Polls once now and folds the result into the day. Returns the failed polls in a row.
    ///
    /// Whatever the vendor reported before a failure or the deadline is published: the rooms
    /// that answered get their new values, the others keep their last ones. The target is up
    /// only when the whole poll succeeded. A failed poll is logged once, here.
    pub async fn poll_once(&self) -> u32 {
        let started = Instant::now();
        *lock(&self.last_poll) = Some(started);
        let now = self.plumbing.clock.now();
        let mut ctx = poll_ctx(&self.target, &self.global, self.plumbing.clone(), now);
        ctx.gate = self.ha.as_ref().map(|(_, gate)| gate.clone());
        let (obs, whole) = poll_target(&self.target, &self.global, &ctx).await;
        if !ctx.leading() {
            // Led no more when it ended (a process frozen mid-poll past its lease): what it
            // read is not this replica's to fold or count.
            tracing::debug!("poll ended after this replica stopped leading; dropped");
            return 0;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let day = Day {
            date: ctx.today(),
            start: ctx.day_start(),
            now: now.timestamp(),
        };
        let (failures, view, result) = {
            let mut st = self.lock();
            let cursors = self.target.client.cursors();
            // Only a change is written to the state file.
            let changed = cursors != st.cursors;
            st.cursors = cursors;
            let RunState {
                ledger,
                view,
                generation,
                ..
            } = &mut *st;
            view.polled = true;
            view.last_duration = Some(elapsed);
            let day_changed = self.fold(ledger, view, &day, &obs, whole.is_ok());
            if changed || day_changed {
                *generation += 1;
            }
            let result = self.account(view, &obs, whole, elapsed);
            (view.consecutive_failures, view.clone(), result)
        };
        // The view and the poll's count reach the page together.
        self.show_counted(view, || {
            self.plumbing
                .metrics
                .record_poll(&self.target.name, self.target.vendor.name, result)
        });
        self.saved.notify_one();
        failures
    }

    /// Folds what a poll saw into the day: the rooms that answered (none from a poll that
    /// began before local midnight and ended after the roll), or, when nothing answered, every
    /// room the day knows as failing (and yesterday's figures gone on a new day). Returns
    /// whether the day changed (its state file is then written).
    fn fold(
        &self,
        ledger: &mut Ledger,
        view: &mut TargetView,
        day: &Day,
        obs: &Observation,
        whole: bool,
    ) -> bool {
        let answered = !obs.rooms.is_empty() || whole;
        // A poll that began before local midnight and ended after the roll is
        // yesterday's: its figures are not folded into the new day (the next poll's are).
        let yesterdays = ledger.day().is_some_and(|d| d > day.date);
        if yesterdays {
            tracing::debug!("poll began before local midnight: not folded into the new day");
            false
        } else if answered {
            let data = ledger.apply(day, obs, whole, &limits_of(&view.expected, &self.global));
            view.rooms_failed = data.rooms_failed;
            view.rooms_dropped = data.rooms_dropped;
            view.data = Some(Arc::new(data));
            true
        } else {
            // Nothing answered: every room the day knows failed to refresh.
            let failed: std::collections::HashSet<&String> = obs.failed.iter().collect();
            view.rooms_failed = (failed.len() as u64).max(ledger.rooms() as u64);
            if ledger.day().is_some_and(|d| d != day.date) {
                // A new local day began without a good poll: yesterday's figures must
                // not pass for today's.
                ledger.reset();
                view.data = None;
                return true;
            }
            false
        }
    }

    /// The poll's outcome in the view and the log, and for the poll counter: answered (whole,
    /// or partial) or failed as a whole, with the failures in a row that backoff reads.
    fn account(
        &self,
        view: &mut TargetView,
        obs: &Observation,
        whole: Result<(), String>,
        elapsed: f64,
    ) -> PollResult {
        // A partial poll (some rooms refreshed, others failed or the deadline cut it) is a
        // poll that answered: the target is up and not backed off; the failed rooms keep
        // their last values and show in rtc_exporter_target_rooms_failed and
        // rtc_exporter_room_refresh_failures.
        let partial = whole.is_err() && !obs.rooms.is_empty();
        // The poll's outcome: answered (whole or partial), or failed as a whole.
        let outcome = match whole {
            Err(e) if !partial => Err(e),
            answered => Ok(answered),
        };
        match outcome {
            Ok(whole) => {
                match (&whole, &view.data) {
                    (Err(e), _) => tracing::warn!(
                        error = %e,
                        rooms_refreshed = obs.rooms.len(),
                        rooms_failed = obs.failed.len(),
                        seconds = elapsed,
                        "poll partial: the rooms that answered are published"
                    ),
                    (Ok(()), Some(data)) => tracing::info!(
                        rooms = data.rooms_active,
                        users = data.users,
                        seconds = elapsed,
                        "poll ok"
                    ),
                    (Ok(()), None) => {}
                }
                view.up = true;
                view.consecutive_failures = 0;
                view.consecutive_empty = 0;
                view.last_error = whole.err();
                view.last_success = Some(unix(self.plumbing.clock.now()));
                PollResult::Success
            }
            Err(e) => {
                view.up = false;
                view.consecutive_failures += 1;
                // Nothing answered. Series go when that happened `stale_after` polls in
                // a row (a partial poll resets the count; the ledger ages its failed rooms).
                view.consecutive_empty += 1;
                let stale = view.consecutive_empty >= self.global.stale_after;
                let dropped = stale && view.data.take().is_some();
                tracing::warn!(
                    error = %e,
                    failures = view.consecutive_failures,
                    rooms_refreshed = obs.rooms.len(),
                    rooms_failed = obs.failed.len(),
                    series_dropped = dropped,
                    "poll failed"
                );
                view.last_error = Some(e);
                PollResult::Failure
            }
        }
    }

    /// Its state file's content, with the generation it holds, where its day or cursors
    /// changed since the last write and it has a day. Only a plain copy of the day (numbers, no
    /// `String` but room names) is taken under its lock; compacting, encoding and writing come
    /// after, without it.
    fn snapshot(
        &self,
        timezone: &str,
        written_at: i64,
        written: &AtomicU64,
    ) -> Option<(u64, TargetFile)> {
        let (generation, mut ledger, cursors) = {
            let st = self.lock();
            if st.generation == written.load(Ordering::Acquire) {
                return None;
            }
            (st.generation, st.ledger.save()?, st.cursors.clone())
        };
        ledger.compact();
        Some((
            generation,
            TargetFile {
                version: state::VERSION,
                target: self.target.name.clone(),
                vendor: self.target.vendor.name.to_string(),
                identity: format!("{:016x}", self.target.identity),
                timezone: timezone.to_string(),
                written_at,
                cursors,
                ledger,
            },
        ))
    }
}

/// Gives `t`'s client the cursors saved for it, where the entry is of the same vendor and
/// account (any day: a cursor is a point in time, and the client drops one too old).
fn restore_cursors(saved: &mut Saved, t: &Target) {
    let Some(cursors) = saved.cursors.take() else {
        return;
    };
    if saved.vendor != t.vendor.name || saved.identity != format!("{:016x}", t.identity) {
        return;
    }
    match t.client.restore_cursors(cursors) {
        Ok(()) => tracing::debug!(target_name = %t.name, "vendor cursors restored"),
        Err(e) => {
            tracing::warn!(target_name = %t.name, error = %e, "saved vendor cursors damaged; ignored")
        }
    }
}

/// The context of one poll of `target` at `now`: its zone, endpoint, QPS and timeouts.
pub fn poll_ctx(
    target: &Target,
    global: &Global,
    plumbing: Arc<Plumbing>,
    now: DateTime<Utc>,
) -> PollCtx {
    let mut ctx = PollCtx::new(
        &target.name,
        target.vendor.name,
        now,
        global.timezone,
        plumbing,
    );
    ctx.endpoint = target.endpoint.clone();
    ctx.qps = target.qps;
    ctx.request_timeout = Some(global.request_timeout);
    ctx.max_response_bytes = Some(global.max_response_bytes);
    ctx
}

/// Polls `target` once within `poll_timeout`: what every room reported (also before a failure
/// or the deadline), and whether the poll succeeded whole (every room refreshed).
pub async fn poll_target(
    target: &Target,
    global: &Global,
    ctx: &PollCtx,
) -> (Observation, Result<(), String>) {
    let deadline = global.poll_timeout;
    let result = match tokio::time::timeout(deadline, target.client.poll(ctx)).await {
        Ok(r) => r,
        Err(_) => Err(PollError::Deadline(deadline)),
    };
    let mut obs = ctx.progress.take();
    let whole = match result {
        Ok(rest) => {
            obs.merge(rest);
            if obs.failed.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} of {} rooms failed, their last values kept; first: {}",
                    obs.failed.len(),
                    obs.failed.len() + obs.rooms.len(),
                    obs.first_error.as_deref().unwrap_or("unknown")
                ))
            }
        }
        Err(e) => Err(e.to_string()),
    };
    (obs, whole)
}

/// The ledger's limits for what the config expects of a target's rooms.
fn limits_of<'a>(expected: &'a crate::config::Expected, global: &Global) -> Limits<'a> {
    Limits {
        capacity: &expected.capacity,
        max_rooms: global.max_rooms,
        stale_after: global.stale_after,
    }
}

/// The ledger's limits for `target`.
pub fn limits<'a>(target: &'a Target, global: &Global) -> Limits<'a> {
    limits_of(&target.expected, global)
}

/// What a reload did, for its log line and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Targets kept running untouched.
    pub unchanged: Vec<String>,
    /// Targets kept running whose render-only keys (`capacity`, `max_users`, `classes`,
    /// `global.capacity_warning_ratio`) changed: applied without a restart.
    pub applied_in_place: Vec<String>,
    /// Targets restarted with their day's figures.
    pub restarted: Vec<String>,
    /// Targets restarted afresh (another vendor, app or credentials; or a new time zone where
    /// their day is no longer today).
    pub replaced: Vec<String>,
    /// New targets.
    pub added: Vec<String>,
    /// Targets gone, with their series.
    pub removed: Vec<String>,
}

/// Every target's supervisor, and the state file.
pub struct Fleet {
    board: Arc<Board>,
    plumbing: Arc<Plumbing>,
    global: Mutex<Global>,
    supervisors: Mutex<BTreeMap<String, Arc<Supervisor>>>,
    /// Serialises reloads and the final stop.
    changing: tokio::sync::Mutex<()>,
    saved: Arc<Notify>,
    saver: Mutex<Option<JoinHandle<()>>>,
    stopping: watch::Sender<bool>,
    rng: Mutex<fastrand::Rng>,
    /// The state on disk: what the writer keeps between writes.
    disk: Arc<Disk>,
    /// With `ha:`, the group (which targets this replica polls; the day in etcd).
    ha: Option<Arc<Ha>>,
    /// Targets whose last write to etcd failed (their next failure is not logged again).
    etcd_failing: Mutex<BTreeSet<String>>,
}

/// What the state's writer keeps between writes (it runs on a blocking thread).
#[derive(Default)]
struct Disk {
    /// One write at a time (the saver's, and the last one at stop).
    writing: Mutex<()>,
    /// Files that could not be used, to keep as `<name>.damaged` before a write replaces them
    /// (or the single file of format 1 is retired).
    damaged: Mutex<BTreeSet<PathBuf>>,
    /// The single file of format 1 read at start: retired after the first write with no
    /// failure, which writes every target into its own file.
    single: Mutex<Option<PathBuf>>,
    /// The files of targets no longer configured are removed at the next write (a start, a
    /// reload).
    tidy: AtomicBool,
}

impl Disk {
    /// Writes the file of every target in `all` whose day or cursors changed since its last
    /// write, one after the other (one day's copy in memory at a time); then, if none failed,
    /// removes the files of other targets (with `tidy`) and retires the single file of format 1.
    /// Returns the failed writes.
    fn write(
        &self,
        path: &Path,
        timezone: &str,
        now: i64,
        all: &[Arc<Supervisor>],
        tidy: bool,
    ) -> u64 {
        let _one = lock(&self.writing);
        let mut failures = 0;
        for s in all {
            let name = &s.target.name;
            let Some((generation, file)) = s.snapshot(timezone, now, &s.written) else {
                continue;
            };
            let at = state::target_file(path, name);
            // A file that could not be used is kept first; if it cannot be, it is not replaced
            // (the next write tries again).
            if lock(&self.damaged).remove(&at) {
                match state::keep_damaged(&at) {
                    Ok(Some(copy)) => {
                        tracing::info!(target_name = %name, copy = %copy.display(), "the damaged state file is kept")
                    }
                    Ok(None) => {}
                    Err(e) => {
                        lock(&self.damaged).insert(at);
                        failures += 1;
                        tracing::warn!(target_name = %name, error = %e, "state file not written: the damaged file is not replaced");
                        continue;
                    }
                }
            }
            match state::write_target(path, &file) {
                Ok(_) => s.written.store(generation, Ordering::Release),
                Err(e) => {
                    failures += 1;
                    tracing::warn!(target_name = %name, error = %e, "state file not written");
                }
            }
        }
        if failures > 0 {
            if tidy {
                self.tidy.store(true, Ordering::Release);
            }
            return failures;
        }
        if tidy {
            let keep = all.iter().map(|s| s.target.name.clone()).collect();
            match state::remove_others(path, &keep) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    files = n,
                    "state files of targets no longer configured removed"
                ),
                Err(e) => {
                    self.tidy.store(true, Ordering::Release);
                    failures += 1;
                    tracing::warn!(error = %e, "state files of targets no longer configured not removed");
                }
            }
        }
        let single = lock(&self.single).take();
        if let Some(old) = single {
            let damaged = lock(&self.damaged).remove(&old);
            match state::retire_v1(&old, damaged) {
                Ok(Some(copy)) => {
                    tracing::info!(copy = %copy.display(), "the damaged state file is kept")
                }
                Ok(None) => tracing::info!(
                    path = %old.display(),
                    "the state file of the previous format is removed: every target has its own file"
                ),
                Err(e) => {
                    if damaged {
                        lock(&self.damaged).insert(old.clone());
                    }
                    *lock(&self.single) = Some(old);
                    failures += 1;
                    tracing::warn!(error = %e, "the state file of the previous format is not retired");
                }
            }
        }
        failures
    }
}

impl Fleet {
    /// Starts every target of `config` (with today's figures from the state file, where it
    /// has them) and the state file's writer.
    pub fn start(
        config: &Config,
        board: Arc<Board>,
        plumbing: Arc<Plumbing>,
        ha: Option<Arc<Ha>>,
    ) -> Arc<Fleet> {
        let fleet = Arc::new(Fleet {
            board,
            plumbing,
            global: Mutex::new(config.global.clone()),
            supervisors: Mutex::new(BTreeMap::new()),
            changing: tokio::sync::Mutex::new(()),
            saved: Arc::new(Notify::new()),
            saver: Mutex::new(None),
            stopping: watch::channel(false).0,
            rng: Mutex::new(fastrand::Rng::new()),
            disk: Arc::new(Disk {
                tidy: AtomicBool::new(true),
                ..Disk::default()
            }),
            ha,
            etcd_failing: Mutex::new(BTreeSet::new()),
        });
        if config.global.state_file.is_some() {
            // Served from the first scrape, before the first write (and with no target that
            // would publish): the board rendered before they were registered. Before any
            // target starts, so this render never shows a poll's counters without its data.
            fleet.plumbing.metrics.enable_state();
            fleet.board.refresh();
        }
        let mut single = fleet.load_single(&config.global);
        let mut read = 0;
        for t in &config.targets {
            let saved = fleet.saved(t, single.as_mut(), &config.global);
            read += usize::from(saved.is_some());
            let ledger = saved.and_then(|mut saved| {
                restore_cursors(&mut saved, t);
                fleet.restored(saved, t, &config.global)
            });
            let s = fleet.supervise(t.clone(), &config.global, ledger, None);
            fleet.lock().insert(t.name.clone(), s);
        }
        if let Some(path) = &config.global.state_file {
            if read > 0 {
                tracing::info!(folder = %state::folder(path).display(), targets = read, "state read");
            }
        }
        let me = fleet.clone();
        *lock(&fleet.saver) = Some(tokio::spawn(async move { me.keep_saving().await }));
        let me = fleet.clone();
        tokio::spawn(async move { me.keep_rolling().await });
        fleet
    }

    /// Rolls every target's day at local midnight (of `global.timezone`, DST included),
    /// whether or not a poll runs then. Wakes at the next midnight, or sooner (a reload may
    /// change the zone); a roll on the same day does nothing.
    async fn keep_rolling(self: Arc<Self>) {
        let mut stopping = self.stopping.subscribe();
        let clock = self.plumbing.clock.clone();
        loop {
            let now = clock.now();
            let tz = self.global().timezone;
            let today = now.with_timezone(&tz).date_naive();
            let next = today
                .succ_opt()
                .map(|d| crate::clouds::local_midnight(tz, d).with_timezone(&Utc))
                .unwrap_or(now);
            let later = now + chrono::Duration::minutes(15);
            let wake = if next > now { next.min(later) } else { later };
            tokio::select! {
                _ = clock.sleep_until(wake) => {}
                _ = stopping.changed() => return,
            }

            let now = clock.now();
            let all: Vec<Arc<Supervisor>> = self.lock().values().cloned().collect();
            for s in all {
                s.roll_day(now);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Supervisor>>> {
        lock(&self.supervisors)
    }

    fn global(&self) -> Global {
        lock(&self.global).clone()
    }

    /// Re-renders `/metrics` (after a change of the self-metrics, such as a reload).
    pub fn refresh(&self) {
        self.board.refresh();
    }

    /// The exporter's own metrics.
    pub fn metrics(&self) -> Arc<crate::metrics::SelfMetrics> {
        self.plumbing.metrics.clone()
    }

    /// The supervisor of one target (tests).
    pub fn supervisor(&self, name: &str) -> Option<Arc<Supervisor>> {
        self.lock().get(name).cloned()
    }

    /// Starts `target`; `previous`: the supervisor it replaces (a reload), whose schedule
    /// phase it keeps (an interval target polls an interval after the last poll began, a cron
    /// target at its next planned time).
    fn supervise(
        &self,
        target: Target,
        global: &Global,
        ledger: Option<Ledger>,
        previous: Option<&Supervisor>,
    ) -> Arc<Supervisor> {
        let last = previous.and_then(|p| *lock(&p.last_poll));
        let phase = match (&target.schedule, last) {
            (Schedule::Interval(every), Some(last)) => {
                (last + *every).saturating_duration_since(Instant::now())
            }
            (Schedule::Interval(every), None) => {
                (*every).min(MAX_PHASE).mul_f64(lock(&self.rng).f64())
            }
            (Schedule::Cron(_), _) => Duration::ZERO,
        };
        let s = Supervisor::new(self, target, global.clone(), ledger, previous);
        s.spawn(phase, previous.is_none());
        s
    }

    /// Reads the single state file of format 1 (earlier releases), where there is one: it is
    /// retired after the first good write, kept as `<name>.damaged` if it cannot be used.
    fn load_single(&self, global: &Global) -> Option<StateFile> {
        let path = global.state_file.as_ref()?;
        let left = state::remove_leftovers(path);
        if left > 0 {
            tracing::info!(
                files = left,
                "removed temporary state files of an interrupted write"
            );
        }
        // A path that is not a file is not ours to move or remove.
        let is_file = std::fs::metadata(path).is_ok_and(|m| m.is_file());
        if is_file {
            *lock(&self.disk.single) = Some(path.clone());
        }
        match state::load(path) {
            Ok(Some(f)) => {
                tracing::info!(path = %path.display(), targets = f.targets.len(), "state file of the previous format read: each target moves to its own file at the first write");
                Some(f)
            }
            Ok(None) => None,
            Err(e) => {
                if is_file {
                    lock(&self.disk.damaged).insert(path.clone());
                    tracing::warn!(
                        error = %e,
                        copy = %state::damaged_copy(path).display(),
                        "state file ignored; today's figures start afresh; it is kept as the copy before the first write replaces it"
                    );
                } else {
                    tracing::warn!(error = %e, "state file ignored; today's figures start afresh");
                }
                None
            }
        }
    }

    /// What is saved for `t`: its own file, else its entry in the single file of format 1.
    fn saved(&self, t: &Target, single: Option<&mut StateFile>, global: &Global) -> Option<Saved> {
        let path = global.state_file.as_ref()?;
        match state::load_target(path, &t.name) {
            Ok(Some(f)) => Some(Saved::own(f, state::target_file(path, &t.name))),
            Ok(None) => single.and_then(|f| Saved::from_v1(f, &t.name, path)),
            Err(e) => {
                // Unreadable or damaged, or of another format version: kept before it is
                // replaced (a path that is not a file is not ours to move).
                let file = state::target_file(path, &t.name);
                if std::fs::metadata(&file).is_ok_and(|m| m.is_file()) {
                    tracing::warn!(
                        target_name = %t.name,
                        error = %e,
                        copy = %state::damaged_copy(&file).display(),
                        "state file ignored; today's figures start afresh; it is kept as the copy before the first write replaces it"
                    );
                    lock(&self.disk.damaged).insert(file);
                } else {
                    tracing::warn!(target_name = %t.name, error = %e, "state file ignored; today's figures start afresh");
                }
                None
            }
        }
    }

    fn restored(&self, saved: Saved, t: &Target, global: &Global) -> Option<Ledger> {
        let today = Day::at(self.plumbing.clock.now(), global.timezone).date;
        let zone = global.timezone.name();
        if let Err(why) = state::entry_for(&saved, t.vendor.name, t.identity, zone, today) {
            tracing::info!(target_name = %t.name, reason = %why, "saved figures not used");
            return None;
        }
        let (day, from, file) = (saved.day.date(), saved.timezone, saved.file);
        match saved.day.restore() {
            Ok(l) => {
                if from != zone {
                    tracing::info!(
                        target_name = %t.name,
                        %day,
                        %from,
                        to = zone,
                        "saved in another time zone: the day's figures are kept, it is still today there"
                    );
                }
                Some(l)
            }
            Err(e) => {
                // The next write would lose them for good: the file is kept first.
                tracing::warn!(
                    target_name = %t.name,
                    error = %e,
                    copy = %state::damaged_copy(&file).display(),
                    "saved figures damaged; ignored; the state file is kept as the copy before the first write replaces it"
                );
                lock(&self.disk.damaged).insert(file);
                None
            }
        }
    }

    /// Applies a newly loaded config: unchanged targets keep running untouched (ledger,
    /// schedule phase, vendor state); changed ones restart, keeping the day's figures when
    /// vendor, app and credentials are the same; removed ones stop and their series vanish;
    /// added ones start.
    pub async fn reload(&self, config: Config) -> ReloadReport {
        let _one = self.changing.lock().await;
        if config.ha.as_ref() != self.ha.as_ref().map(|h| h.config()) {
            tracing::warn!("ha: changed in the config file; it applies at the next restart (the running group keeps its lease and shards)");
        }
        let old_global = self.global();
        let new_global = config.global.clone();
        // Only the global keys that shape polls or the day restart targets (the zone also
        // decides what "today" is); the default interval is in each target's schedule.
        let global_changed = !old_global.polls_alike(&new_global);
        // With `ha:`, a target whose account's first name changed moves to another shard:
        // stopped and its day written (to etcd under the shard it leaves) first, then restarted
        // under its new shard's gate.
        let moved = match &self.ha {
            Some(ha) => {
                let next = crate::ha::assign(
                    config.targets.iter().map(|t| (t.name.as_str(), t.account)),
                    ha.config().shards,
                );
                let moved = ha.moves(&next);
                let leaving: Vec<Arc<Supervisor>> = moved
                    .iter()
                    .filter_map(|name| self.lock().get(name).cloned())
                    .collect();
                if !leaving.is_empty() {
                    let deadline = Instant::now() + SHUTDOWN_GRACE;
                    for s in &leaving {
                        s.halt(deadline).await;
                    }
                    self.save_now().await;
                }
                ha.place(next);
                moved
            }
            None => BTreeSet::new(),
        };
        if old_global.state_file != new_global.state_file {
            tracing::info!("state_file changed: the next write goes to the new path");
        }
        let mut report = ReloadReport::default();
        let old: BTreeMap<String, Arc<Supervisor>> = self.lock().clone();
        let wanted: BTreeSet<String> = config.targets.iter().map(|t| t.name.clone()).collect();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        for (name, s) in &old {
            if !wanted.contains(name) {
                s.halt(deadline).await;
                self.lock().remove(name);
                self.plumbing.metrics.forget_target(name);
                report.removed.push(name.clone());
            }
        }
        *lock(&self.global) = new_global.clone();
        for t in &config.targets {
            match old.get(&t.name) {
                Some(s)
                    if s.target.fingerprint == t.fingerprint
                        && s.target.schedule == t.schedule
                        && !global_changed
                        && !moved.contains(&t.name) =>
                {
                    // What only shapes rendering (warning ratios) applies without a restart.
                    if s.set_expected(t.expected.clone()) {
                        report.applied_in_place.push(t.name.clone());
                    } else {
                        report.unchanged.push(t.name.clone());
                    }
                }
                Some(s) => {
                    s.halt(deadline).await;
                    let same = s.target.identity == t.identity
                        && s.target.vendor == t.vendor
                        && s.day_holds_in(new_global.timezone);
                    let ledger = same.then(|| s.take_ledger());
                    // The same account's reading goes on where it stood (vendor cursors).
                    if s.target.identity == t.identity && s.target.vendor == t.vendor {
                        let cursors = s.lock().cursors.clone();
                        if let Some(c) = cursors {
                            if let Err(e) = t.client.restore_cursors(c) {
                                tracing::warn!(target_name = %t.name, error = %e, "vendor cursors not carried over");
                            }
                        }
                    }
                    if s.target.vendor != t.vendor {
                        self.plumbing.metrics.forget_target(&t.name);
                    }
                    if same {
                        report.restarted.push(t.name.clone());
                    } else {
                        report.replaced.push(t.name.clone());
                    }
                    let next = self.supervise(t.clone(), &new_global, ledger, Some(s));
                    // With `ha:`, the old view leaves the board unless this replica leads the
                    // target's (new) shard: the new supervisor shows it when it leads.
                    if next.ha.as_ref().is_some_and(|(_, g)| !g.is_open()) {
                        self.board.withdraw(&t.name);
                    }
                    self.lock().insert(t.name.clone(), next);
                }
                None => {
                    let next = self.supervise(t.clone(), &new_global, None, None);
                    self.lock().insert(t.name.clone(), next);
                    report.added.push(t.name.clone());
                }
            }
        }
        self.board.retain(&wanted);
        // A removed target's `qps:` no longer lowers its account's pacing.
        self.plumbing.retain_targets(&wanted);
        if old_global.state_file != new_global.state_file {
            // Every target's file goes to the new folder.
            for s in self.lock().values() {
                s.written.store(0, Ordering::Release);
            }
        }
        // Removed targets' files go at the next write.
        self.disk.tidy.store(true, Ordering::Release);
        if new_global.state_file.is_some() {
            self.plumbing.metrics.enable_state();
        }
        self.saved.notify_one();
        report
    }

    /// Stops every target (waiting for polls in flight, at most [`SHUTDOWN_GRACE`]) and writes
    /// the state file a last time.
    pub async fn stop(&self) {
        let _one = self.changing.lock().await;
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let all: Vec<Arc<Supervisor>> = self.lock().values().cloned().collect();
        for s in &all {
            let _ = s.stop.send(true);
        }
        for s in &all {
            s.halt(deadline).await;
        }
        let _ = self.stopping.send(true);
        let saver = lock(&self.saver).take();
        if let Some(h) = saver {
            let _ = h.await;
        }
        // The saver may have been writing a snapshot taken before the last polls ended (they
        // end during `halt`): one more write, after every target has stopped, holds them all.
        self.save_now().await;
    }

    /// Writes the state file after polls (at most once per [`SAVE_DEBOUNCE`]) and once more at
    /// stop.
    async fn keep_saving(self: Arc<Self>) {
        let mut stopping = self.stopping.subscribe();
        loop {
            tokio::select! {
                _ = self.saved.notified() => {
                    tokio::select! {
                        _ = tokio::time::sleep(SAVE_DEBOUNCE) => {}
                        _ = stopping.changed() => {}
                    }
                }
                _ = stopping.changed() => {}
            }
            self.save_now().await;
            if *stopping.borrow() {
                return;
            }
        }
    }

    /// Writes the state now (if a state file is configured): the file of every target whose
    /// day or cursors changed since its last write, on a blocking thread.
    pub async fn save_now(&self) {
        self.save_to_disk().await;
        // Bounded: a slow etcd neither holds up the next write of the state file nor a stop
        // (what is not written now goes at the next save).
        if tokio::time::timeout(SHUTDOWN_GRACE, self.save_to_etcd())
            .await
            .is_err()
        {
            tracing::warn!(
                seconds = SHUTDOWN_GRACE.as_secs(),
                "writing the days to etcd took too long; the rest go at the next save"
            );
        }
    }

    /// Writes the day of every target whose shard this replica holds to etcd (`ha:`), where
    /// it changed since its last write there.
    async fn save_to_etcd(&self) {
        let Some(ha) = &self.ha else {
            return;
        };
        // Not tried while etcd does not answer (each would wait out its timeout): the day goes
        // at the first save after etcd is back.
        if !ha.etcd_up() {
            return;
        }
        let global = self.global();
        let timezone = global.timezone.name().to_string();
        let supervisors: Vec<Arc<Supervisor>> = self.lock().values().cloned().collect();
        let metrics = &self.plumbing.metrics.ha;
        for s in supervisors {
            let name = s.target.name.clone();
            if !ha.holds(&name) {
                continue;
            }
            let now = self.plumbing.clock.now().timestamp();
            let (tz, me) = (timezone.clone(), s.clone());
            let encoded = tokio::task::spawn_blocking(move || {
                me.snapshot(&tz, now, &me.etcd_written)
                    .map(|(generation, file)| (generation, state::to_compressed(&file)))
            })
            .await;
            let (generation, data) = match encoded {
                Ok(Some((generation, Ok(data)))) => (generation, data),
                Ok(None) => continue,
                Ok(Some((_, Err(e)))) => {
                    self.etcd_write_failed(&name, &e);
                    continue;
                }
                Err(e) => {
                    self.etcd_write_failed(&name, &e.to_string());
                    continue;
                }
            };
            match ha.save_day(&name, &data).await {
                Ok(true) => {
                    s.etcd_written.store(generation, Ordering::Release);
                    metrics.state_writes.with_label_values(&["success"]).inc();
                    tracing::debug!(target_name = %name, bytes = data.len(), "day written to etcd");
                    if lock(&self.etcd_failing).remove(&name) {
                        tracing::info!(target_name = %name, "day written to etcd again");
                    }
                }
                // Another replica leads it now: its day is that one's to write.
                Ok(false) => {}
                Err(e) => self.etcd_write_failed(&name, &e),
            }
        }
    }

    /// Counts a failed write of a target's day to etcd; logs the first of a run of them (the
    /// next success says so).
    fn etcd_write_failed(&self, name: &str, error: &str) {
        self.plumbing
            .metrics
            .ha
            .state_writes
            .with_label_values(&["failure"])
            .inc();
        if lock(&self.etcd_failing).insert(name.to_string()) {
            tracing::warn!(target_name = %name, error = %error, "day not written to etcd (logged once until a write goes through; rtc_exporter_ha_state_writes_total counts them)");
        } else {
            tracing::debug!(target_name = %name, error = %error, "day not written to etcd");
        }
    }

    async fn save_to_disk(&self) {
        let global = self.global();
        let Some(path) = global.state_file.clone() else {
            return;
        };
        // Taken before the list: a reload that comes after sets it again for the next write.
        let tidy = self.disk.tidy.swap(false, Ordering::AcqRel);
        let supervisors: Vec<Arc<Supervisor>> = self.lock().values().cloned().collect();
        let now = self.plumbing.clock.now().timestamp();
        let disk = self.disk.clone();
        let timezone = global.timezone.name().to_string();
        let written = tokio::task::spawn_blocking(move || {
            disk.write(&path, &timezone, now, &supervisors, tidy)
        })
        .await;
        let metrics = &self.plumbing.metrics;
        match written {
            Ok(0) => metrics
                .state_written_at
                .set(unix(self.plumbing.clock.now())),
            Ok(failed) => metrics.state_write_failures.inc_by(failed),
            Err(e) => {
                if tidy {
                    self.disk.tidy.store(true, Ordering::Release);
                }
                metrics.state_write_failures.inc();
                tracing::warn!(error = %e, "state file writer failed");
            }
        }
    }
}

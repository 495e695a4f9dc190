//! When targets are polled: an interval with a phase drawn once per target, or a cron schedule
//! (tokio-cron-scheduler, seconds first, in `global.timezone`). One poll per target at a time:
//! a tick that finds the previous poll still running is skipped and counted as an overlap. Every
//! poll has a deadline (`poll_timeout`); a failed poll keeps the last good values for
//! `stale_after` polls, then drops them. Scrapes never drive a poll.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::Instrument;

use crate::config::{Config, Global, Schedule, Target};
use crate::ledger::{Day, Ledger, Limits};
use crate::metrics::PollResult;
use crate::snapshot::{Board, TargetView};
use crate::vendor::{Plumbing, PollCtx, PollError};

/// How long shutdown waits for polls in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors starting the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// tokio-cron-scheduler refused a job or failed to start.
    #[error("cron scheduler: {0}")]
    Cron(#[from] tokio_cron_scheduler::JobSchedulerError),
}

/// The seconds between a target's polls (cron: between its next two runs).
pub fn interval_seconds(schedule: &Schedule, tz: chrono_tz::Tz) -> f64 {
    match schedule {
        Schedule::Interval(d) => d.as_secs_f64(),
        Schedule::Cron(expr) => {
            let Ok(cron) = crate::config::parse_cron(expr) else {
                return 0.0;
            };
            let now = Utc::now().with_timezone(&tz);
            let next = cron.find_next_occurrence(&now, false);
            let after = next
                .as_ref()
                .ok()
                .and_then(|n| cron.find_next_occurrence(n, false).ok());
            match (next, after) {
                (Ok(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
                _ => 0.0,
            }
        }
    }
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
        let interval = interval_seconds(&t.schedule, config.global.timezone);
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
                ": does not fit; each poll covers about {per_poll} rooms and reports the target down, every room is refreshed every {polls} polls"
            ));
        }
        out.push((!fits, line));
    }
    out
}

/// The initial (not yet polled) view of a target.
pub fn initial_view(target: &Target, global: &Global) -> TargetView {
    TargetView {
        name: target.name.clone(),
        vendor: target.vendor,
        info: target.client.info(),
        interval_seconds: interval_seconds(&target.schedule, global.timezone),
        polled: false,
        up: false,
        last_success: None,
        last_duration: None,
        consecutive_failures: 0,
        consecutive_empty: 0,
        last_error: None,
        data: None,
    }
}

struct RunState {
    ledger: Ledger,
    view: TargetView,
}

/// Polls one target; owns its ledger and its view.
pub struct Runner {
    target: Target,
    global: Global,
    plumbing: Arc<Plumbing>,
    board: Arc<Board>,
    busy: Arc<Semaphore>,
    state: Mutex<RunState>,
}

impl Runner {
    /// A runner for one target.
    pub fn new(
        target: Target,
        global: Global,
        plumbing: Arc<Plumbing>,
        board: Arc<Board>,
    ) -> Arc<Self> {
        plumbing.metrics.init_target(&target.name, target.vendor);
        let view = initial_view(&target, &global);
        Arc::new(Runner {
            target,
            global,
            plumbing,
            board,
            busy: Arc::new(Semaphore::new(1)),
            state: Mutex::new(RunState {
                ledger: Ledger::new(),
                view,
            }),
        })
    }

    /// Starts a poll unless one is running (then counts an overlap). Returns at once.
    pub fn trigger(self: &Arc<Self>) {
        match self.busy.clone().try_acquire_owned() {
            Ok(permit) => {
                let me = self.clone();
                let span = tracing::info_span!("poll", target = %self.target.name, vendor = self.target.vendor);
                tokio::spawn(
                    async move {
                        me.poll_once().await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Err(_) => {
                self.plumbing.metrics.record_poll(
                    &self.target.name,
                    self.target.vendor,
                    PollResult::Overlap,
                );
                tracing::warn!(target_name = %self.target.name, "previous poll still running; this one is skipped");
            }
        }
    }

    /// Polls once now, waiting for the result (tests and the first poll use it too).
    ///
    /// Whatever the vendor reported before a failure or the deadline is published: the rooms
    /// that answered get their new values, the others keep their last ones. The target is up
    /// only when the whole poll succeeded.
    pub async fn poll_once(&self) {
        let started = Instant::now();
        let now = self.plumbing.clock.now();
        let mut ctx = PollCtx::new(
            &self.target.name,
            self.target.vendor,
            now,
            self.global.timezone,
            self.plumbing.clone(),
        );
        ctx.endpoint = self.target.endpoint.clone();
        ctx.qps = self.target.qps;
        let deadline = self.global.poll_timeout;
        let result = match tokio::time::timeout(deadline, self.target.client.poll(&ctx)).await {
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
        let elapsed = started.elapsed().as_secs_f64();
        let today = ctx.today();
        let day = Day {
            date: today,
            start: ctx.day_start(),
            now: now.timestamp(),
        };
        let view = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let RunState { ledger, view } = &mut *st;
            view.polled = true;
            view.last_duration = Some(elapsed);
            let answered = !obs.rooms.is_empty() || whole.is_ok();
            if answered {
                let limits = Limits {
                    capacity: &self.target.capacity,
                    max_rooms: self.global.max_rooms,
                    stale_after: self.global.stale_after,
                };
                let data = ledger.apply(&day, &obs, whole.is_ok(), &limits);
                view.data = Some(Arc::new(data));
            } else if ledger.day().is_some_and(|d| d != today) {
                // A new local day began without a good poll: yesterday's figures must not
                // pass for today's.
                ledger.reset();
                view.data = None;
            }
            match whole {
                Ok(()) => {
                    if let Some(data) = &view.data {
                        tracing::info!(
                            rooms = data.rooms_active,
                            users = data.users,
                            seconds = elapsed,
                            "poll ok"
                        );
                    }
                    view.up = true;
                    view.consecutive_failures = 0;
                    view.consecutive_empty = 0;
                    view.last_error = None;
                    view.last_success =
                        Some(self.plumbing.clock.now().timestamp_millis() as f64 / 1000.0);
                    self.plumbing.metrics.record_poll(
                        &self.target.name,
                        self.target.vendor,
                        PollResult::Success,
                    );
                }
                Err(e) => {
                    view.up = false;
                    view.consecutive_failures += 1;
                    if answered {
                        view.consecutive_empty = 0;
                    } else {
                        view.consecutive_empty += 1;
                    }
                    view.last_error = Some(e.clone());
                    // Series go only when nothing answered `stale_after` polls in a row; a
                    // partial poll refreshed some rooms (the ledger ages the others).
                    let stale = view.consecutive_empty >= self.global.stale_after;
                    if stale && view.data.take().is_some() {
                        tracing::warn!(
                            failures = view.consecutive_failures,
                            "room series dropped after stale_after failed polls"
                        );
                    }
                    tracing::warn!(
                        error = %e,
                        failures = view.consecutive_failures,
                        rooms_refreshed = obs.rooms.len(),
                        rooms_failed = obs.failed.len(),
                        "poll failed"
                    );
                    self.plumbing.metrics.record_poll(
                        &self.target.name,
                        self.target.vendor,
                        PollResult::Failure,
                    );
                }
            }
            view.clone()
        };
        self.board.publish(view);
    }

    /// Waits until no poll is running, at most until `deadline`.
    async fn drain(&self, deadline: Instant) -> bool {
        tokio::time::timeout_at(deadline, self.busy.acquire())
            .await
            .is_ok()
    }
}

/// Builds the board's initial views for a config.
pub fn initial_views(config: &Config) -> Vec<TargetView> {
    config
        .targets
        .iter()
        .map(|t| initial_view(t, &config.global))
        .collect()
}

/// Starts every target's schedule (a cron scheduler error is returned here, at start) and
/// returns the task that, once `shutdown` turns true, stops scheduling and waits for polls in
/// flight (at most [`SHUTDOWN_GRACE`]).
pub async fn start(
    config: &Config,
    board: Arc<Board>,
    plumbing: Arc<Plumbing>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, ScheduleError> {
    let runners: Vec<Arc<Runner>> = config
        .targets
        .iter()
        .map(|t| {
            Runner::new(
                t.clone(),
                config.global.clone(),
                plumbing.clone(),
                board.clone(),
            )
        })
        .collect();
    // One generator, seeded once: every target draws its own phase.
    let mut rng = fastrand::Rng::new();
    let mut cron: Option<JobScheduler> = None;
    let mut tickers = Vec::new();
    for runner in &runners {
        match &runner.target.schedule {
            Schedule::Interval(every) => {
                let every = *every;
                let phase = every.min(Duration::from_secs(10)).mul_f64(rng.f64());
                let runner = runner.clone();
                tickers.push(tokio::spawn(async move {
                    let mut ticks = tokio::time::interval_at(Instant::now() + phase, every);
                    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
                    loop {
                        ticks.tick().await;
                        runner.trigger();
                    }
                }));
            }
            Schedule::Cron(expr) => {
                let sched = match &cron {
                    Some(s) => s.clone(),
                    None => {
                        let s = JobScheduler::new().await?;
                        cron = Some(s.clone());
                        s
                    }
                };
                let r = runner.clone();
                let job = Job::new_async_tz(expr.as_str(), config.global.timezone, move |_, _| {
                    let r = r.clone();
                    Box::pin(async move { r.trigger() })
                })?;
                sched.add(job).await?;
            }
        }
    }
    if let Some(s) = &cron {
        s.start().await?;
    }
    for runner in &runners {
        if matches!(runner.target.schedule, Schedule::Cron(_)) {
            // A first poll at start, so the target is ready without waiting for its slot.
            runner.trigger();
        }
    }
    Ok(tokio::spawn(async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        if let Some(mut s) = cron {
            if let Err(e) = s.shutdown().await {
                tracing::warn!(error = %e, "cron scheduler did not shut down cleanly");
            }
        }
        for t in tickers {
            t.abort();
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        for r in &runners {
            if !r.drain(deadline).await {
                tracing::warn!(target_name = %r.target.name, "poll still running at shutdown; abandoned");
            }
        }
    }))
}

//! Wiring: the exporter (scheduler + board + HTTP), the demo and the simulators.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config, ConfigError};
use crate::metrics::SelfMetrics;
use crate::schedule;
use crate::serve::{self, ServeError, Site};
use crate::sim::{self, SimServer};
use crate::snapshot::Board;
use crate::vendor::Plumbing;

/// How often the exposition is re-rendered without a poll, so `process_*` and the request
/// counters stay fresh for slow schedules.
pub const REFRESH_EVERY: Duration = Duration::from_secs(15);

/// Errors starting the exporter.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad configuration.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A listen address.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// Registering self-metrics.
    #[error("self-metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Building the HTTP client.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// Starting a simulator.
    #[error("simulator: {0}")]
    Sim(#[from] std::io::Error),
    /// Starting the scheduler.
    #[error(transparent)]
    Schedule(#[from] schedule::ScheduleError),
}

/// A running exporter.
pub struct Running {
    /// The addresses it listens on.
    pub addrs: Vec<SocketAddr>,
    /// Its board (tests read views from it).
    pub board: Arc<Board>,
    stop: watch::Sender<bool>,
    scheduler: JoinHandle<()>,
    others: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops scheduling, waits for polls in flight (bounded), stops serving.
    pub async fn stop(self) -> Result<(), AppError> {
        let _ = self.stop.send(true);
        let _ = self.scheduler.await;
        for t in self.others {
            t.abort();
        }
        Ok(())
    }

    /// The first listen address as an `http://` base URL.
    pub fn url(&self) -> String {
        match self.addrs.first() {
            Some(a) if a.ip().is_unspecified() => format!("http://127.0.0.1:{}", a.port()),
            Some(a) => format!("http://{a}"),
            None => String::new(),
        }
    }
}

/// Starts the exporter: binds every address first, then polls and serves.
pub async fn start(
    config: Config,
    listen: &[String],
    telemetry_path: &str,
) -> Result<Running, AppError> {
    start_with_clock(config, listen, telemetry_path, Arc::new(SystemClock)).await
}

/// [`start`] with the wall clock polls read (tests drive a [`crate::clock::ManualClock`]).
pub async fn start_with_clock(
    config: Config,
    listen: &[String],
    telemetry_path: &str,
    clock: Arc<dyn Clock>,
) -> Result<Running, AppError> {
    let listeners = serve::bind_all(listen).await?;
    let addrs = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let metrics = Arc::new(SelfMetrics::new()?);
    for t in &config.targets {
        metrics.init_target(&t.name, t.vendor);
    }
    let plumbing =
        Arc::new(Plumbing::new(config.global.request_timeout, metrics.clone())?.with_clock(clock));
    let board = Arc::new(Board::new(schedule::initial_views(&config), metrics));
    let (stop, stopped) = watch::channel(false);
    // Scheduling starts before serving, so a scheduler error leaves nothing running.
    let scheduler = schedule::start(&config, board.clone(), plumbing, stopped.clone()).await?;
    let site = Arc::new(Site {
        board: board.clone(),
        telemetry_path: telemetry_path.to_string(),
    });
    let mut others = Vec::new();
    for l in listeners {
        others.push(tokio::spawn(serve::serve(l, site.clone(), stopped.clone())));
    }
    let b = board.clone();
    others.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            b.refresh();
        }
    }));
    Ok(Running {
        addrs,
        board,
        stop,
        scheduler,
        others,
    })
}

/// The demo's config: one target per simulator, polled every 5 s.
pub fn demo_config(sims: &[SimServer]) -> Result<Config, ConfigError> {
    let targets: Vec<serde_yaml::Value> = sims
        .iter()
        .map(|s| s.sim.demo_target(&s.endpoint))
        .collect();
    let mut root = serde_yaml::Mapping::new();
    let global: serde_yaml::Value = serde_yaml::from_str(
        "{timezone: UTC, interval: 5s, poll_timeout: 4s, request_timeout: 3s, stale_after: 3}",
    )
    .unwrap_or_default();
    root.insert("global".into(), global);
    root.insert("targets".into(), serde_yaml::Value::Sequence(targets));
    let text = serde_yaml::to_string(&root).map_err(|e| ConfigError {
        errors: vec![format!("demo config: {e}")],
    })?;
    config::parse(&text, Path::new("(demo)"))
}

/// Starts every simulator on loopback and the exporter against them.
pub async fn demo(
    listen: &[String],
    telemetry_path: &str,
    seed: u64,
) -> Result<(Vec<SimServer>, Running), AppError> {
    let sims = sim::start_all(IpAddr::V4(Ipv4Addr::LOCALHOST), seed).await?;
    let config = demo_config(&sims)?;
    let running = start(config, listen, telemetry_path).await?;
    Ok((sims, running))
}

//! Wiring: the exporter (scheduler + board + HTTP), the demo and the simulators.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::board::Board;
use crate::clock::{Clock, SystemClock};
use crate::clouds::Plumbing;
use crate::config::{self, Config, ConfigError};
use crate::ha::Ha;
use crate::metrics::SelfMetrics;
use crate::serve::{self, RequestLimit, ServeError, Site, Slots};
use crate::sim::SimServer;
use crate::supervisor::{self, Fleet, ReloadReport};
use crate::web_config::{Guard, WebConfigError};

pub use crate::serve::ServeOptions;

/// How often the exposition is re-rendered without a poll, so `process_*` and the request
/// counters stay fresh for slow schedules.
pub const REFRESH_EVERY: Duration = Duration::from_secs(15);

/// How long serving waits at start for every target's first view.
const FIRST_VIEWS: Duration = Duration::from_secs(1);

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
    /// `--web.config.file`.
    #[error(transparent)]
    Web(#[from] WebConfigError),
    /// `ha:` (a TLS file that cannot be read).
    #[error("{0}")]
    Ha(String),
}

/// A running exporter.
pub struct Running {
    /// The addresses it listens on.
    pub addrs: Vec<SocketAddr>,
    /// Its board (tests read views from it).
    pub board: Arc<Board>,
    /// Every target's supervisor.
    pub fleet: Arc<Fleet>,
    config_file: Option<PathBuf>,
    /// With `ha:`, this replica's part in the group.
    pub ha: Option<Arc<Ha>>,
    stop: watch::Sender<bool>,
    others: Vec<JoinHandle<()>>,
    scheme: &'static str,
}

impl Running {
    /// Stops scheduling, waits for polls in flight (bounded), writes the state file, stops
    /// serving.
    pub async fn stop(self) -> Result<(), AppError> {
        let _ = self.stop.send(true);
        self.fleet.stop().await;
        // After the last write of the day: the others take over from it at once.
        if let Some(ha) = &self.ha {
            ha.resign().await;
        }
        for t in self.others {
            t.abort();
        }
        Ok(())
    }

    /// Reloads the config file (SIGHUP, `POST /-/reload`): see [`reload`].
    pub async fn reload(&self) -> Result<ReloadReport, String> {
        match &self.config_file {
            Some(path) => reload(&self.fleet, &self.board, path).await,
            None => Err("no config file to reload (demo)".into()),
        }
    }

    /// The first listen address as an `http://` (or, with TLS, `https://`) base URL.
    pub fn url(&self) -> String {
        let scheme = self.scheme;
        match self.addrs.first() {
            Some(a) if a.ip().is_unspecified() => format!("{scheme}://127.0.0.1:{}", a.port()),
            Some(a) => format!("{scheme}://{a}"),
            None => String::new(),
        }
    }
}

/// Starts the exporter: binds every address first, then polls and serves (plain HTTP, default
/// connection limit; see [`start_with`]).
pub async fn start(
    config: Config,
    listen: &[String],
    telemetry_path: &str,
) -> Result<Running, AppError> {
    start_with(config, ServeOptions::new(listen, telemetry_path)).await
}

/// [`start`] with another wall clock (tests drive local midnight and vendor windows with it).
pub async fn start_with_clock(
    config: Config,
    listen: &[String],
    telemetry_path: &str,
    clock: Arc<dyn Clock>,
) -> Result<Running, AppError> {
    launch(config, ServeOptions::new(listen, telemetry_path), clock).await
}

/// Starts the exporter with every serving option: checks the web config file, binds every
/// address, then polls and serves.
pub async fn start_with(config: Config, options: ServeOptions) -> Result<Running, AppError> {
    launch(config, options, Arc::new(SystemClock)).await
}

/// Reads `path` again and applies it. A bad file keeps the running config: every error is
/// logged as `--config.check` prints it, and `rtc_exporter_config_last_reload_successful`
/// turns 0; a good one turns it 1 and stamps the success time. Returns once `board` shows the
/// outcome, so a scrape after the answer sees it.
pub async fn reload(fleet: &Fleet, board: &Board, path: &Path) -> Result<ReloadReport, String> {
    let metrics = fleet.metrics();
    let loaded = {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(|e| format!("reload task failed: {e}"))?
    };
    match loaded {
        Ok(config) => {
            let report = fleet.reload(config).await;
            metrics.reload_ok.set(1.0);
            metrics.reload_ok_at.set(now_seconds());
            fleet.refresh();
            board.rendered().await;
            tracing::info!(
                unchanged = report.unchanged.len(),
                applied_in_place = ?report.applied_in_place,
                restarted = ?report.restarted,
                replaced = ?report.replaced,
                added = ?report.added,
                removed = ?report.removed,
                "config reloaded"
            );
            Ok(report)
        }
        Err(e) => {
            metrics.reload_ok.set(0.0);
            fleet.refresh();
            board.rendered().await;
            for line in &e.errors {
                tracing::error!(error = %line, "config reload failed; the running config stays");
            }
            Err(e.to_string())
        }
    }
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

async fn launch(
    config: Config,
    options: ServeOptions,
    clock: Arc<dyn Clock>,
) -> Result<Running, AppError> {
    // A bad web config file exits before anything is bound.
    let web = match &options.web_config {
        Some(path) => Some(Arc::new(Guard::start(path)?)),
        None => None,
    };
    let listeners = serve::bind_all(&options.listen).await?;
    let addrs = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let metrics = Arc::new(SelfMetrics::new()?);
    for t in &config.targets {
        metrics.init_target(&t.name, t.vendor.name);
    }
    metrics.reload_ok.set(1.0);
    metrics.reload_ok_at.set(now_seconds());
    let now = clock.now();
    let plumbing = Arc::new(
        Plumbing::new(config.global.request_timeout, metrics.clone())?
            .with_clock(clock.clone())
            .with_max_response_bytes(config.global.max_response_bytes),
    );
    let ha = match &config.ha {
        Some(c) => {
            let ha = Ha::new(c.clone(), metrics.clone()).map_err(AppError::Ha)?;
            ha.place(crate::ha::assign(
                config.targets.iter().map(|t| (t.name.as_str(), t.account)),
                c.shards,
            ));
            Some(ha)
        }
        None => None,
    };
    // With `ha:`, a target shows on the board only once this replica leads it.
    let views = config
        .targets
        .iter()
        .filter(|_| ha.is_none())
        .map(|t| supervisor::initial_view(t, &config.global, now))
        .collect();
    let board = Arc::new(Board::new(views, metrics, clock));
    let (stop, stopped) = watch::channel(false);
    let fleet = Fleet::start(&config, board.clone(), plumbing, ha.clone());
    if let Some(ha) = &ha {
        let b = board.clone();
        ha.on_change(move || b.refresh());
        ha.start();
    }
    let config_file: Option<PathBuf> = Some(config.path.clone()).filter(|p| p.is_file());
    let reloader: Option<serve::Reloader> = match (&config_file, options.enable_lifecycle) {
        (Some(path), true) => {
            let (fleet, board, path) = (fleet.clone(), board.clone(), path.clone());
            Some(Arc::new(move || {
                let (fleet, board, path) = (fleet.clone(), board.clone(), path.clone());
                Box::pin(async move { reload(&fleet, &board, &path).await.map(|_| ()) })
            }))
        }
        _ => None,
    };
    let scheme = match &web {
        Some(w) if w.tls() => "https",
        _ => "http",
    };
    let site = Arc::new(Site {
        board: board.clone(),
        telemetry_path: options.telemetry_path.clone(),
        web,
        connections: Slots::new(options.max_connections),
        scrapes: RequestLimit::new(options.max_requests),
        header_timeout: options.header_timeout,
        response_timeout: options.response_timeout,
        reload: reloader,
    });
    // Every target shows its first view (the day so far, from the state file) before the first
    // scrape is answered; a target that never publishes delays serving by a second at most.
    let _ = tokio::time::timeout(FIRST_VIEWS, board.published()).await;
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
        fleet,
        config_file,
        ha,
        stop,
        others,
        scheme,
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
        "{timezone: UTC, interval: 5s, poll_timeout: 9s, request_timeout: 3s, stale_after: 3}",
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
    let sims = crate::simulate::start_all(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, seed).await?;
    let config = demo_config(&sims)?;
    let running = start(config, listen, telemetry_path).await?;
    Ok((sims, running))
}

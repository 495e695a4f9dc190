//! `rtc-exporter`: flags, logging and exit codes; the work is in the library.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use rtc_exporter::{app, config, serve, simulate, web_config};

/// Exit status for a configuration that cannot work (`EX_CONFIG` of BSD's sysexits): a bad
/// `--config.file` or `--web.config.file` at start. The systemd unit does not restart on it
/// (`RestartPreventExitStatus=`); a restart would only fail again.
const EXIT_CONFIG: u8 = 78;

/// What the demo says to `--config.file`, which it does not read.
const DEMO_READS_NO_CONFIG: &str = "demo reads no config file: it polls simulated vendors with \
    its own config. To try a config file against the simulators, run \
    `rtc-exporter simulate --write-config=FILE`, then `rtc-exporter --config.file=FILE`";

#[derive(Parser)]
#[command(
    name = "rtc-exporter",
    version = env!("RTC_EXPORTER_VERSION_LINE"),
    about = "Prometheus exporter for real-time audio/video rooms"
)]
struct Cli {
    /// Configuration file.
    #[arg(long = "config.file", default_value = "exporter.yaml")]
    config_file: PathBuf,
    /// Validate the configuration (resolving every secret) and exit: 0 if valid, 1 if not.
    #[arg(long = "config.check")]
    config_check: bool,
    /// Address to listen on; repeat for several [default: :10063].
    #[arg(long = "web.listen-address")]
    listen: Vec<String>,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics", value_parser = telemetry_path)]
    telemetry_path: String,
    /// exporter-toolkit web config file (TLS, basic auth, headers, rate limit); re-read when
    /// it changes.
    #[arg(long = "web.config.file")]
    web_config_file: Option<PathBuf>,
    /// Connections open at once, over all listen addresses; a new one takes the slot of the
    /// oldest idle one, or waits while every one has a request in flight.
    #[arg(
        long = "web.max-connections",
        default_value_t = 512,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    max_connections: u32,
    /// Scrapes of the telemetry path served at once; over it, 503 at once. 0: no limit.
    #[arg(long = "web.max-requests", default_value_t = 40)]
    max_requests: u32,
    /// Enable `POST /-/reload` (and PUT), as Prometheus's flag does. SIGHUP always reloads.
    #[arg(long = "web.enable-lifecycle")]
    enable_lifecycle: bool,
    /// Only log messages of this level or more severe.
    #[arg(long = "log.level", value_enum, default_value = "info", global = true)]
    log_level: Level,
    /// Log line format.
    #[arg(
        long = "log.format",
        value_enum,
        default_value = "logfmt",
        global = true
    )]
    log_format: Format,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Simulated vendors on loopback plus the exporter against them: no account needed.
    Demo {
        /// Address to listen on; repeat for several [default: 127.0.0.1:10063].
        #[arg(long = "web.listen-address")]
        listen: Vec<String>,
        /// Path under which to expose metrics [default: /metrics].
        #[arg(long = "web.telemetry-path", value_parser = telemetry_path)]
        telemetry_path: Option<String>,
        /// Seed of the simulated rooms.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Refused with a note: the demo reads no config file.
        #[arg(long = "config.file", hide = true)]
        config_file: Option<PathBuf>,
    },
    /// One poll of one target against its vendor, outside the daemon: every request, answer
    /// and anomaly, and the figures it gives (secrets masked). Exit 0 when the poll succeeded.
    Probe {
        /// Configuration file [default: exporter.yaml].
        #[arg(long = "config.file")]
        config_file: Option<PathBuf>,
        /// The target to poll (its `name:` in --config.file).
        #[arg(long)]
        target: String,
        /// Also write the answers to DIR as a fixture in the tests/answers/ format.
        #[arg(long, value_name = "DIR")]
        save: Option<PathBuf>,
    },
    /// The simulated vendor servers alone, printing their endpoints and keys.
    Simulate {
        /// Address of the first simulator; port 0 picks free ports, a fixed port counts up.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Seed of the simulated rooms.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write an exporter.yaml pointed at the simulators (with their keys) to FILE.
        #[arg(long = "write-config", value_name = "FILE")]
        write_config: Option<PathBuf>,
    },
}

/// `--web.telemetry-path`: an absolute path that shadows none of the other endpoints.
fn telemetry_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err("must start with /, e.g. /metrics".to_string());
    }
    if matches!(path, "/" | "/-/healthy" | "/-/ready" | "/-/reload") {
        return Err(format!(
            "{path} is the exporter's own endpoint; choose another path, e.g. /metrics"
        ));
    }
    Ok(path.to_string())
}

/// The top-level flags given on the command line that `command` does not use. (Before a
/// subcommand, clap accepts every top-level flag; this turns "silently ignored" into an error.)
fn unused_flags(matches: &ArgMatches, command: &Command) -> Vec<&'static str> {
    let unused: &[(&str, &'static str)] = match command {
        // The demo listens where the top-level flags say, too.
        Command::Demo { .. } => &[
            ("config_check", "--config.check"),
            ("web_config_file", "--web.config.file"),
            ("max_connections", "--web.max-connections"),
            ("max_requests", "--web.max-requests"),
        ],
        Command::Probe { .. } => &[
            ("config_check", "--config.check"),
            ("listen", "--web.listen-address"),
            ("telemetry_path", "--web.telemetry-path"),
            ("web_config_file", "--web.config.file"),
            ("max_connections", "--web.max-connections"),
            ("max_requests", "--web.max-requests"),
            ("enable_lifecycle", "--web.enable-lifecycle"),
        ],
        Command::Simulate { .. } => &[
            ("config_file", "--config.file"),
            ("config_check", "--config.check"),
            ("listen", "--web.listen-address"),
            ("telemetry_path", "--web.telemetry-path"),
            ("web_config_file", "--web.config.file"),
            ("max_connections", "--web.max-connections"),
            ("max_requests", "--web.max-requests"),
        ],
    };
    unused
        .iter()
        .filter(|(id, _)| matches.value_source(id) == Some(ValueSource::CommandLine))
        .map(|(_, flag)| *flag)
        .collect()
}

#[derive(Clone, Copy, ValueEnum)]
enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Logfmt,
    Json,
}

fn init_logging(level: Level, format: Format) {
    let filter = match level {
        Level::Debug => LevelFilter::DEBUG,
        Level::Info => LevelFilter::INFO,
        Level::Warn => LevelFilter::WARN,
        Level::Error => LevelFilter::ERROR,
    };
    // Our own crate at the chosen level; dependencies (hyper, reqwest, the cron library) at warn
    // or above, so --log.level=debug stays readable.
    let filter = Targets::new()
        .with_target("rtc_exporter", filter)
        .with_default(filter.min(LevelFilter::WARN));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        Format::Logfmt => registry
            .with(
                tracing_logfmt::builder()
                    .with_target(false)
                    .layer()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        Format::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

/// A runtime with every driver, or `None` with the reason on stderr.
fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    match builder.enable_all().build() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            None
        }
    }
}

/// `probe`: one poll of one target, printed; exit 0 when it succeeded, 1 otherwise (a bad
/// config too).
fn probe(config_file: &std::path::Path, target: &str, save: Option<&std::path::Path>) -> ExitCode {
    let config = match config::load(config_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    let clock: std::sync::Arc<dyn rtc_exporter::clock::Clock> =
        std::sync::Arc::new(rtc_exporter::clock::SystemClock);
    let report = match runtime.block_on(rtc_exporter::probe::probe(&config, target, clock)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rtc-exporter probe: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", rtc_exporter::probe::render(&report));
    if let Some(dir) = save {
        match rtc_exporter::probe::save(&report, &config, dir) {
            Ok(path) => println!("saved the answers to {}", path.display()),
            Err(e) => {
                eprintln!("rtc-exporter probe: --save: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::from(report.exit_code())
}

enum Signal {
    Stop,
    Reload,
}

/// SIGHUP, caught from before the exporter starts: from then on it reloads, never ends the
/// process.
struct Hangups(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

impl Hangups {
    fn catch() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Hangups(signal(SignalKind::hangup()).ok())
        }
        #[cfg(not(unix))]
        Hangups()
    }

    /// The next SIGTERM or Ctrl-C (stop) or SIGHUP (reload).
    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        if let Some(hup) = &mut self.0 {
            return tokio::select! {
                _ = until_signal() => Signal::Stop,
                _ = hup.recv() => Signal::Reload,
            };
        }
        until_signal().await;
        Signal::Stop
    }
}

/// SIGTERM, registered when the runtime starts.
#[cfg(unix)]
static TERM: std::sync::OnceLock<tokio::sync::Mutex<tokio::signal::unix::Signal>> =
    std::sync::OnceLock::new();

async fn until_signal() {
    #[cfg(unix)]
    {
        match TERM.get() {
            Some(term) => {
                let mut term = term.lock().await;
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> ExitCode {
    // Before any thread starts: the exposition's buffers go back to the system when replaced.
    rtc_exporter::malloc::give_big_buffers_back();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Some(command) = &cli.command {
        let name = match command {
            Command::Demo { .. } => "demo",
            Command::Probe { .. } => "probe",
            Command::Simulate { .. } => "simulate",
        };
        let demo_config = matches!(
            command,
            Command::Demo {
                config_file: Some(_),
                ..
            }
        ) || (matches!(command, Command::Demo { .. })
            && matches.value_source("config_file") == Some(ValueSource::CommandLine));
        if demo_config {
            Cli::command()
                .error(ErrorKind::ArgumentConflict, DEMO_READS_NO_CONFIG)
                .exit();
        }
        let unused = unused_flags(&matches, command);
        if !unused.is_empty() {
            Cli::command()
                .error(
                    ErrorKind::ArgumentConflict,
                    format!("`{name}` does not use {}", unused.join(", ")),
                )
                .exit();
        }
    }
    init_logging(cli.log_level, cli.log_format);
    let listen = if cli.listen.is_empty() {
        vec![":10063".to_string()]
    } else {
        cli.listen.clone()
    };

    // `--web.config.file=` (empty) means none, as in exporter-toolkit.
    let web_config_file = cli
        .web_config_file
        .clone()
        .filter(|p| !p.as_os_str().is_empty());

    if cli.config_check {
        let mut ok = match config::load(&cli.config_file) {
            Ok(c) => {
                println!(
                    "{}: OK, {} target(s)",
                    cli.config_file.display(),
                    c.targets.len()
                );
                if let Some(p) = &c.global.state_file {
                    // Resolved: a relative path is beside the config file.
                    println!("global.state_file: {}", p.display());
                    println!(
                        "state folder: {} (one file per target)",
                        rtc_exporter::state::folder(p).display()
                    );
                }
                if let Some(ha) = &c.ha {
                    for line in rtc_exporter::ha::summary(
                        ha,
                        c.targets.iter().map(|t| (t.name.as_str(), t.account)),
                    ) {
                        println!("{line}");
                    }
                }
                for w in c.warnings() {
                    println!("warning: {w}");
                }
                for (warn, line) in rtc_exporter::config::budget_report(&c) {
                    println!("{}{line}", if warn { "warning: " } else { "" });
                }
                true
            }
            Err(e) => {
                eprintln!("{e}");
                false
            }
        };
        if let Some(path) = &web_config_file {
            // The startup checks, HTTP/2 cipher check included: OK means it will serve.
            match web_config::Guard::start(path) {
                Ok(g) => println!("{}: OK, {}", path.display(), g.summary()),
                Err(e) => {
                    eprintln!("{e}");
                    ok = false;
                }
            }
        }
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }

    if let Some(Command::Probe {
        config_file,
        target,
        save,
    }) = &cli.command
    {
        let file = config_file.as_ref().unwrap_or(&cli.config_file);
        return probe(file, target, save.as_deref());
    }

    let Some(runtime) = runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async move {
        // SIGTERM is caught from the start and kept, so a stop that comes before the wait
        // begins is still seen by it and ends the process cleanly, with status 0.
        #[cfg(unix)]
        if let Ok(term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            let _ = TERM.set(tokio::sync::Mutex::new(term));
        }
        match cli.command {
            None => {
                // Bad config exits before anything is bound.
                let config = config::load(&cli.config_file)?;
                for w in config.warnings() {
                    tracing::warn!("{w}");
                }
                let options = app::ServeOptions {
                    web_config: web_config_file,
                    max_connections: cli.max_connections as usize,
                    max_requests: cli.max_requests as usize,
                    enable_lifecycle: cli.enable_lifecycle,
                    ..app::ServeOptions::new(&listen, &cli.telemetry_path)
                };
                let mut hangups = Hangups::catch();
                let running = app::start_with(config, options).await?;
                tracing::info!(addresses = ?running.addrs, version = rtc_exporter::VERSION, "listening");
                while let Signal::Reload = hangups.next().await {
                    if let Err(e) = running.reload().await {
                        tracing::warn!(error = %e, "SIGHUP: config not reloaded");
                    }
                }
                tracing::info!("shutting down");
                running.stop().await
            }
            Some(Command::Demo {
                listen: demo_listen,
                telemetry_path,
                seed,
                config_file: _,
            }) => {
                // Loopback unless told otherwise: the demo is for the person at this machine.
                let listen = match (demo_listen.is_empty(), cli.listen.is_empty()) {
                    (false, _) => demo_listen,
                    (true, false) => cli.listen.clone(),
                    (true, true) => vec!["127.0.0.1:10063".to_string()],
                };
                let telemetry_path = telemetry_path.unwrap_or(cli.telemetry_path);
                let (sims, running) = app::demo(&listen, &telemetry_path, seed).await?;
                for s in &sims {
                    println!("simulated {} at {}", s.sim.vendor(), s.endpoint);
                }
                println!(
                    "rtc-exporter demo: open {}{} (targets: {}/)",
                    running.url(),
                    telemetry_path,
                    running.url()
                );
                until_signal().await;
                running.stop().await
            }
            Some(Command::Probe { .. }) => Ok(()),
            Some(Command::Simulate {
                listen,
                seed,
                write_config,
            }) => {
                let base: SocketAddr = serve::parse_listen(&listen)?;
                let servers = simulate::start_all(base.ip(), base.port(), seed).await?;
                for (pair, s) in simulate::SIMULATORS.iter().zip(&servers) {
                    println!("{} {} {}", pair.vendor, s.endpoint, s.sim.describe());
                }
                if base.ip() != IpAddr::from([127, 0, 0, 1]) {
                    tracing::warn!("simulators listen on {}, not loopback", base.ip());
                }
                if let Some(path) = write_config {
                    simulate::write_config(&path, &servers).map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("--write-config {}: {e}", path.display()),
                        )
                    })?;
                    println!(
                        "wrote {p}: rtc-exporter --config.file={p}",
                        p = path.display()
                    );
                }
                until_signal().await;
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtc-exporter: {e}");
            match e {
                app::AppError::Config(_) | app::AppError::Web(_) | app::AppError::Ha(_) => {
                    ExitCode::from(EXIT_CONFIG)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

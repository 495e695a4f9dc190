//! How many `/metrics` answers per second the exporter gives at 5 000 rooms, with 1 and with 8
//! clients hammering it at once. Run: `cargo bench --bench load` (`LOAD_SECS`, default 10:
//! seconds per case).
//!
//! One URTC target of 5 000 rooms from the simulator, polled once (interval 1h), so every answer
//! is the same page. Each client is its own keep-alive HTTP/1.1 connection on loopback, sending
//! the next request as soon as the last answer's body is in; plain, or gzip asked for in the
//! `Accept-Encoding` header (the body is counted as sent, not unpacked). The clients run on a
//! runtime of their own, as a scraper in another process would. Prints requests/s, p50 and p99
//! latency and bytes per answer for each case, the CPU time per answer of the exporter's runtime
//! threads and of the clients' (read from `/proc`: on a busy machine requests/s moves with what
//! else runs, CPU per answer much less), then the process's peak resident memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc_exporter::app;
use rtc_exporter::sim::ucloud_urtc::UrtcSim;
use rtc_exporter::sim::SimServer;

const ROOMS: usize = 5000;
const WARM_UP: Duration = Duration::from_secs(1);
/// The names of the exporter's runtime threads and of the clients'.
const EXPORTER: &str = "exporter";
const SCRAPERS: &str = "scrapers";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// What one client saw: each answer's latency, the bytes of the last body, answers not 200.
struct Tally {
    times: Vec<Duration>,
    bytes: usize,
    errors: usize,
}

/// One keep-alive connection sending requests back to back until `until`.
async fn client(url: String, gzip: bool, until: Instant) -> Tally {
    let http = reqwest::Client::builder()
        .no_gzip()
        .http1_only()
        .build()
        .unwrap();
    let mut tally = Tally {
        times: Vec::new(),
        bytes: 0,
        errors: 0,
    };
    while Instant::now() < until {
        let mut req = http.get(&url);
        if gzip {
            req = req.header("Accept-Encoding", "gzip");
        }
        let t = Instant::now();
        let answer = req.send().await.unwrap();
        let ok = answer.status().is_success();
        let body = answer.bytes().await.unwrap();
        tally.times.push(t.elapsed());
        tally.bytes = body.len();
        tally.errors += usize::from(!ok);
    }
    tally
}

/// CPU time so far of this process's threads named `name` (a runtime's threads), from
/// `/proc/self/task/*/schedstat`; zero where `/proc` does not tell.
fn cpu(name: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut ns = 0;
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(ns)
}

/// `clients` clients for `secs`, after a warm-up of the same shape; requests/s over the run.
async fn case(url: &str, clients: usize, gzip: bool, secs: Duration) {
    for (length, report) in [(WARM_UP, false), (secs, true)] {
        let (served, scraped) = (cpu(EXPORTER), cpu(SCRAPERS));
        let start = Instant::now();
        let until = start + length;
        let tasks: Vec<_> = (0..clients)
            .map(|_| tokio::spawn(client(url.to_string(), gzip, until)))
            .collect();
        let mut times = Vec::new();
        let (mut bytes, mut errors) = (0, 0);
        for task in tasks {
            let tally = task.await.unwrap();
            times.extend(tally.times);
            bytes = tally.bytes;
            errors += tally.errors;
        }
        let elapsed = start.elapsed();
        let (served, scraped) = (
            cpu(EXPORTER).saturating_sub(served),
            cpu(SCRAPERS).saturating_sub(scraped),
        );
        if !report {
            continue;
        }
        times.sort();
        let mode = if gzip { "gzip" } else { "plain" };
        let per_answer = |d: Duration| d.as_secs_f64() * 1e6 / times.len() as f64;
        println!(
            "C={clients:<2} {mode:<5} {:>9.1} req/s  p50 {:>8.1} µs  p99 {:>8.1} µs  {bytes:>8} B/answer  \
             CPU/answer: exporter {:>6.1} µs, clients {:>6.1} µs  {} answers  {errors} not 200",
            times.len() as f64 / elapsed.as_secs_f64(),
            percentile(&times, 0.5).as_secs_f64() * 1e6,
            percentile(&times, 0.99).as_secs_f64() * 1e6,
            per_answer(served),
            per_answer(scraped),
            times.len(),
        );
    }
}

/// Waits until the exporter is ready and `/metrics` shows the target's rooms, the same page
/// twice in a row (the first poll's render is in).
async fn wait_for_data(base: &str) {
    let http = reqwest::Client::builder().no_gzip().build().unwrap();
    let mut last = 0;
    for _ in 0..1200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ready = http.get(format!("{base}/-/ready")).send().await;
        if !ready.is_ok_and(|r| r.status().is_success()) {
            continue;
        }
        let page = http.get(format!("{base}/metrics")).send().await.unwrap();
        let page = page.text().await.unwrap();
        if page.contains("rtc_room_users{") && page.len() == last {
            return;
        }
        last = page.len();
    }
    panic!("the first poll's data never showed");
}

/// The process's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let secs = std::env::var("LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_secs_f64);
    let exporter = tokio::runtime::Builder::new_multi_thread()
        .thread_name(EXPORTER)
        .enable_all()
        .build()
        .unwrap();
    let scrapers = tokio::runtime::Builder::new_multi_thread()
        .thread_name(SCRAPERS)
        .enable_all()
        .build()
        .unwrap();
    let (server, running) = exporter.block_on(async {
        let sim = UrtcSim::new(3, ROOMS);
        let (app_id, public, private) = (sim.app_id.clone(), sim.public_key.clone(), sim.private_key());
        let server = SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let cfg = format!(
            "global: {{ interval: 1h }}\ntargets:\n  - name: big\n    vendor: ucloud_urtc\n    endpoint: {}\n    app_id: {app_id}\n    credentials: {{ public_key: {public}, private_key: {private} }}\n",
            server.endpoint
        );
        let config = rtc_exporter::config::parse(&cfg, std::path::Path::new("bench.yaml")).unwrap();
        let running = app::start(config, &["127.0.0.1:0".into()], "/metrics").await.unwrap();
        (server, running)
    });
    let base = running.url();
    scrapers.block_on(async {
        wait_for_data(&base).await;
        println!(
            "URTC, {ROOMS} rooms, {:.0} s per case, HTTP/1.1 keep-alive on loopback",
            secs.as_secs_f64()
        );
        let url = format!("{base}/metrics");
        for clients in [1, 8] {
            for gzip in [false, true] {
                case(&url, clients, gzip, secs).await;
            }
        }
    });
    if let Some(kib) = peak_rss_kib() {
        println!("peak resident memory {:.1} MiB", kib as f64 / 1024.0);
    }
    exporter.block_on(running.stop()).unwrap();
    drop(server);
}

//! How long `/metrics` takes to answer, and how long a render takes, with the demo's data and
//! with a large URTC target. Run: `cargo bench --bench scrape`.
//!
//! Scrapes go over real HTTP on loopback with keep-alive, one at a time, as Prometheus does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc_exporter::app;
use rtc_exporter::sim::ucloud_urtc::UrtcSim;
use rtc_exporter::sim::SimServer;

const SCRAPES: usize = 2000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn wait_ready(base: &str) {
    for _ in 0..600 {
        if let Ok(r) = reqwest::get(format!("{base}/-/ready")).await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("exporter not ready");
}

async fn measure(label: &str, running: &app::Running) {
    let base = running.url();
    wait_ready(&base).await;
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    for (mode, gzip) in [("plain", false), ("gzip", true)] {
        let mut times = Vec::with_capacity(SCRAPES);
        let mut bytes = 0;
        for _ in 0..SCRAPES {
            let mut req = client.get(format!("{base}/metrics"));
            if gzip {
                req = req.header("Accept-Encoding", "gzip");
            }
            let t = Instant::now();
            let body = req.send().await.unwrap().bytes().await.unwrap();
            times.push(t.elapsed());
            bytes = body.len();
        }
        times.sort();
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        println!(
            "{label:<28} {mode:<5} {bytes:>8} B  mean {:>8.1} µs  p50 {:>8.1} µs  p99 {:>8.1} µs",
            mean.as_secs_f64() * 1e6,
            percentile(&times, 0.5).as_secs_f64() * 1e6,
            percentile(&times, 0.99).as_secs_f64() * 1e6,
        );
    }
    // One change at a time, each waited for: the render and gzip on the board's thread.
    let t = Instant::now();
    let renders = 200;
    for _ in 0..renders {
        running.board.refresh();
        running.board.rendered().await;
    }
    println!(
        "{label:<28} render + gzip, one change at a time: {:.1} µs",
        t.elapsed().as_secs_f64() * 1e6 / renders as f64
    );
    // A burst: as many changes at once, rendered together.
    let (before, t) = (running.board.renders(), Instant::now());
    for _ in 0..renders {
        running.board.refresh();
    }
    running.board.rendered().await;
    println!(
        "{label:<28} a burst of {renders} changes: {} renders, {:.1} ms",
        running.board.renders() - before,
        t.elapsed().as_secs_f64() * 1e3
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (sims, running) = app::demo(&["127.0.0.1:0".into()], "/metrics", 1).await.unwrap();
        measure("demo data", &running).await;
        running.stop().await.unwrap();
        drop(sims);

        let sim = UrtcSim::new(3, 2000);
        let (app_id, public, private) = (sim.app_id.clone(), sim.public_key.clone(), sim.private_key());
        let server = SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let cfg = format!(
            "global: {{ interval: 1h }}\ntargets:\n  - name: big\n    vendor: ucloud_urtc\n    endpoint: {}\n    app_id: {app_id}\n    credentials: {{ public_key: {public}, private_key: {private} }}\n",
            server.endpoint
        );
        let config = rtc_exporter::config::parse(&cfg, std::path::Path::new("bench.yaml")).unwrap();
        let running = app::start(config, &["127.0.0.1:0".into()], "/metrics").await.unwrap();
        measure("URTC, 2000 rooms", &running).await;
        running.stop().await.unwrap();
    });
}

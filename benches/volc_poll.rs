//! One poll of a 400-room Volcengine RTC target against the simulator, over real HTTP on
//! loopback, compared with the floor that 40 QPS sets (400 / 40 = 10 s). Once as occupancy
//! only, once with `devices: true` (whose 1 QPS refresher must not slow the poll).
//! Run: `cargo bench --bench volc_poll`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc_exporter::clouds::{Plumbing, PollCtx};
use rtc_exporter::config;
use rtc_exporter::metrics::SelfMetrics;
use rtc_exporter::sim::volcengine_rtc::VolcSim;
use rtc_exporter::sim::SimServer;

const ROOMS: usize = 400;
const QPS: f64 = 40.0;

async fn poll_once(label: &str, devices: bool) {
    let sim = VolcSim::new(400, ROOMS);
    sim.clock.freeze(sim.t0());
    let server = SimServer::start(Arc::new(sim), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let v = server.get::<VolcSim>().unwrap();
    let rooms = v.generated_rooms();
    let text = format!(
        "targets:\n  - name: bench\n    vendor: volcengine_rtc\n    endpoint: {}\n    app_id: \"{}\"\n    credentials:\n      access_key_id: {}\n      secret_access_key: \"{}\"\n    devices: {devices}\n    rooms: [{}]\n",
        server.endpoint,
        v.app_id,
        v.access_key_id,
        v.secret_access_key(),
        rooms.join(", ")
    );
    let cfg = config::parse(&text, Path::new("bench.yaml")).unwrap();
    let target = &cfg.targets[0];
    let metrics = Arc::new(SelfMetrics::new().unwrap());
    let plumbing = Arc::new(Plumbing::new(Duration::from_secs(10), metrics).unwrap());
    let mut ctx = PollCtx::new(
        &target.name,
        target.vendor.name,
        chrono::Utc::now(),
        cfg.global.timezone,
        plumbing,
    );
    ctx.endpoint = target.endpoint.clone();
    ctx.qps = target.qps;
    let started = Instant::now();
    let mut obs = target.client.poll(&ctx).await.unwrap();
    obs.merge(ctx.progress.take());
    let wall = started.elapsed().as_secs_f64();
    let floor = rooms.len() as f64 / QPS;
    println!(
        "{label:<22} rooms {:>3}  active {:>3}  wall {wall:>6.2} s  floor {floor:.1} s  ratio {:.3}  throttled by the simulator {}",
        obs.rooms.len(),
        obs.rooms.iter().filter(|r| r.active).count(),
        wall / floor,
        v.refused()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    poll_once("occupancy only", false).await;
    poll_once("with devices: true", true).await;
}

//! `rtc-exporter simulate --write-config=FILE`: an `exporter.yaml` pointed at the running
//! simulators, so the real daemon (its flags, its state file, reload, TLS) can be tried with
//! no vendor account.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use crate::sim::livekit::LkSim;
use crate::sim::talkcloud::TalkSim;
use crate::sim::tencent_trtc::TrtcSim;
use crate::sim::ucloud_urtc::UrtcSim;
use crate::sim::volcengine_rtc::VolcSim;
use crate::sim::{SimServer, Simulator};

/// A vendor (its `vendor:` name, as in [`crate::clouds::REGISTRY`]) and its simulator.
pub struct Pair {
    /// The vendor's `vendor:` name.
    pub vendor: &'static str,
    /// Builds its simulated server for the demo, tests and benchmarks.
    pub simulator: fn(seed: u64) -> Arc<dyn Simulator>,
}

/// Every vendor's simulator, in the registry's order: the clients and the simulators never
/// import each other, they meet here.
pub static SIMULATORS: &[Pair] = &[
    Pair {
        vendor: "ucloud_urtc",
        simulator: |seed| Arc::new(UrtcSim::new(seed, 12)),
    },
    Pair {
        vendor: "volcengine_rtc",
        simulator: |seed| Arc::new(VolcSim::new(seed, 10)),
    },
    Pair {
        vendor: "tencent_trtc",
        simulator: |seed| Arc::new(TrtcSim::new(seed, 10)),
    },
    Pair {
        vendor: "talkcloud",
        simulator: |seed| Arc::new(TalkSim::new(seed)),
    },
    Pair {
        vendor: "agora",
        simulator: |seed| Arc::new(crate::sim::agora::AgoraSim::new(seed, 12)),
    },
    Pair {
        vendor: "livekit",
        simulator: |seed| Arc::new(LkSim::new(seed, 8)),
    },
    Pair {
        vendor: "alibaba_artc",
        simulator: |seed| Arc::new(crate::sim::alibaba_artc::ArtcSim::new(seed, 12)),
    },
    Pair {
        vendor: "zego",
        simulator: |seed| Arc::new(crate::sim::zego::ZegoSim::new(seed, 12)),
    },
];

/// The simulator of `vendor`, seeded with `seed`.
pub fn simulator(vendor: &str, seed: u64) -> Option<Arc<dyn Simulator>> {
    SIMULATORS
        .iter()
        .find(|p| p.vendor == vendor)
        .map(|p| (p.simulator)(seed))
}

/// Starts one simulator per vendor on `ip` (port 0 each, or consecutive ports from `port`),
/// the `i`th seeded with `seed + i`.
pub async fn start_all(ip: IpAddr, port: u16, seed: u64) -> std::io::Result<Vec<SimServer>> {
    let mut out = Vec::new();
    for (i, pair) in SIMULATORS.iter().enumerate() {
        let port = if port == 0 {
            0
        } else {
            port.saturating_add(i as u16)
        };
        let sim = (pair.simulator)(seed.wrapping_add(i as u64));
        out.push(SimServer::start(sim, SocketAddr::new(ip, port)).await?);
    }
    Ok(out)
}

/// The config text: one target per simulator, with the simulator's own keys inline.
pub fn config_yaml(servers: &[SimServer]) -> Result<String, serde_yaml::Error> {
    let targets: Vec<serde_yaml::Value> = servers
        .iter()
        .map(|s| name_first(s.sim.demo_target(&s.endpoint)))
        .collect();
    let targets = serde_yaml::to_string(&targets)?;
    let mut text = String::from(
        "# Written by `rtc-exporter simulate --write-config`: targets pointed at the simulated\n\
         # vendors of that command, which stop when it stops. The keys are the simulators' own,\n\
         # not an account's. Try the daemon on it:\n\
         #   rtc-exporter --config.check --config.file=THIS_FILE\n\
         #   rtc-exporter --config.file=THIS_FILE --web.listen-address=127.0.0.1:10063\n\
         global:\n  \
           timezone: UTC\n  \
           interval: 10s\n  \
           poll_timeout: 8s\n  \
           request_timeout: 5s\n  \
           stale_after: 3\n  \
           state_file: rtc-exporter-state.json   # today's figures across restarts; beside this file\n\
         targets:\n",
    );
    for line in targets.lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    Ok(text)
}

/// `name` and `vendor` first, as a person writes a target; the rest as the simulator gave it.
fn name_first(target: serde_yaml::Value) -> serde_yaml::Value {
    let serde_yaml::Value::Mapping(mut rest) = target else {
        return target;
    };
    let mut out = serde_yaml::Mapping::new();
    for key in ["name", "vendor"] {
        if let Some(v) = rest.remove(key) {
            out.insert(key.into(), v);
        }
    }
    out.extend(rest);
    serde_yaml::Value::Mapping(out)
}

/// Writes [`config_yaml`] to `path` whole: a temporary file beside it, then a rename, so a
/// reader never sees half a file.
pub fn write_config(path: &Path, servers: &[SimServer]) -> std::io::Result<()> {
    let text = config_yaml(servers).map_err(std::io::Error::other)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod pairing {
    use super::*;

    #[test]
    fn every_vendor_has_one_simulator_and_every_simulator_a_vendor() {
        let vendors: Vec<&str> = crate::clouds::REGISTRY.iter().map(|e| e.name).collect();
        let sims: Vec<&str> = SIMULATORS.iter().map(|p| p.vendor).collect();
        assert_eq!(vendors, sims);
    }
}

//! The unlock storm in one process, for `bench/unlock-storm.sh`: `N` threads start at the
//! same instant, each an appliance with the given volumes: its own KMIP client (its own
//! TLS connection, the Credential, the client's busy retries), and for each volume the
//! unlock path of `atrest serve` and `atrest open`: the key identifier from the header, a
//! Get plus the key-state check (`fetch_usable`), the key proven against the header's
//! digest and its schedule set up. Prints one JSON line: the time until the last appliance
//! had every volume unlocked, the median, and the failures with their first reasons.
//!
//! `cargo run --release -p atrest --example unlock_storm -- CONFIG N IMAGE...`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use service::config::Config;
use service::keys::KeyManager;
use volume::backend::{BlockBackend, MemBackend};
use volume::convert::{self, Devices, Found};

/// One appliance's start: every volume unlocked, or why not.
fn appliance(kmip: kmip::client::ClientConfig, volumes: &[Arc<MemBackend>]) -> Result<(), String> {
    let mut kms = KeyManager::for_servers(kmip).map_err(|e| e.to_string())?;
    for dev in volumes {
        let uid = match convert::inspect(Devices::attached(&**dev)).map_err(|e| e.to_string())? {
            Found::Volume { key_uid, .. } => key_uid,
            other => return Err(format!("not a finished volume: {other:?}")),
        };
        let secret = kms.fetch_usable(&uid).map_err(|e| e.to_string())?;
        let data: Arc<dyn BlockBackend> = dev.clone();
        volume::volume::unlock(data, &secret).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, n, images @ ..] = args.as_slice() else {
        eprintln!("usage: unlock_storm CONFIG N IMAGE...");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N");
    let config = Config::load(&PathBuf::from(config)).expect("configuration");
    // The images are read once and shared: unlocking only reads them.
    let volumes: Vec<Arc<MemBackend>> = images
        .iter()
        .map(|p| Arc::new(MemBackend::from_bytes(std::fs::read(p).expect("image"))))
        .collect();
    let barrier = std::sync::Barrier::new(n + 1);
    let (results, wall) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let (kmip, volumes, barrier) = (config.kmip.clone(), &volumes, &barrier);
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn_scoped(s, move || {
                        barrier.wait();
                        let t = Instant::now();
                        let r = appliance(kmip, volumes);
                        (r, t.elapsed())
                    })
                    .expect("thread")
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let results: Vec<(Result<(), String>, Duration)> = handles
            .into_iter()
            .map(|h| h.join().expect("appliance thread"))
            .collect();
        (results, start.elapsed())
    });
    let mut times: Vec<f64> = results.iter().map(|r| r.1.as_secs_f64()).collect();
    times.sort_by(f64::total_cmp);
    let failed: Vec<&String> = results.iter().filter_map(|r| r.0.as_ref().err()).collect();
    let mut reasons: Vec<String> = failed.iter().map(|e| (*e).clone()).collect();
    reasons.sort();
    reasons.dedup();
    reasons.truncate(3);
    println!(
        "{}",
        serde_json::json!({
            "appliances": n,
            "volumes_each": volumes.len(),
            "seconds": (wall.as_secs_f64() * 100.0).round() / 100.0,
            "p50_seconds": (times[times.len() / 2] * 100.0).round() / 100.0,
            "failed": failed.len(),
            "reasons": reasons,
        })
    );
}

//! Get load generator for `bench/kmip-get.sh`: `CLIENTS` threads, each with its own
//! connection, each fetching key `UID` `COUNT` times. Prints one JSON line with the
//! latency percentiles and the total Gets per second.
//!
//! `cargo run --release -p atrest --example kmip_get_load -- CONFIG UID CLIENTS COUNT`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kmip::client::Client;
use service::config::Config;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, uid, clients, count] = args.as_slice() else {
        eprintln!("usage: kmip_get_load CONFIG UID CLIENTS COUNT");
        std::process::exit(2);
    };
    let clients: usize = clients.parse().expect("CLIENTS");
    let count: usize = count.parse().expect("COUNT");
    let config = Config::load(&PathBuf::from(config)).expect("configuration");
    let barrier = std::sync::Barrier::new(clients + 1);
    let (lat, wall) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let kmip = config.kmip.clone();
                let barrier = &barrier;
                s.spawn(move || {
                    let mut c = Client::new(kmip).expect("client");
                    // Connect and negotiate before the clock starts.
                    c.get_symmetric_key(uid).expect("first get");
                    barrier.wait();
                    let mut lat = Vec::with_capacity(count);
                    for _ in 0..count {
                        let t = Instant::now();
                        let k = c.get_symmetric_key(uid).expect("get");
                        lat.push(t.elapsed());
                        assert_eq!(k.len(), 32);
                    }
                    lat
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut all: Vec<Duration> = Vec::new();
        for h in handles {
            all.extend(h.join().expect("client thread"));
        }
        (all, start.elapsed())
    });
    let mut lat = lat;
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1000.0;
    println!(
        "{{\"client\":\"atrest\",\"clients\":{clients},\"gets\":{},\"seconds\":{:.3},\"gets_per_s\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
        lat.len(),
        wall.as_secs_f64(),
        lat.len() as f64 / wall.as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
}

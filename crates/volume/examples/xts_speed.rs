//! XTS-AES throughput of atrest's engine, for `bench/xts.sh`: prints one JSON line per
//! (cipher, sector size, threads, buffer) with MB/s (10^6 bytes per second) for encryption
//! and decryption. Each thread works on its own buffer, as `openssl speed -multi` does.
//!
//! `cargo run --release -p volume --example xts_speed -- [SECONDS]`

use std::time::{Duration, Instant};

use volume::xts::Xts;

fn rate(x: &Xts, buf: &mut [u8], sector: usize, encrypt: bool, secs: f64) -> f64 {
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut tweak = 0u64;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        if encrypt {
            x.encrypt_serial(buf, sector, tweak);
        } else {
            x.decrypt_serial(buf, sector, tweak);
        }
        tweak += 1;
        bytes += buf.len() as u64;
    }
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// OpenSSL EVP used as a disk engine must use it: one context, the IV reset per sector.
fn openssl_rate(key: &[u8], buf: &mut [u8], sector: usize, secs: f64) -> f64 {
    use openssl::cipher::Cipher;
    use openssl::cipher_ctx::CipherCtx;
    let cipher = if key.len() == 32 {
        Cipher::aes_128_xts()
    } else {
        Cipher::aes_256_xts()
    };
    let mut ctx = CipherCtx::new().expect("context");
    ctx.encrypt_init(Some(cipher), Some(key), None)
        .expect("init");
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        for chunk in buf.chunks_mut(sector) {
            let iv = u128::from(n).to_le_bytes();
            ctx.encrypt_init(None, None, Some(&iv)).expect("iv");
            ctx.cipher_update_inplace(chunk, sector).expect("update");
            n += 1;
        }
        bytes += buf.len() as u64;
    }
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let probe = volume::xts::Xts::new(&[[1u8; 16], [2u8; 16]].concat()).expect("key");
    println!("{{\"engine\":\"{}\"}}", probe.engine());
    for (name, key_len) in [("aes-128-xts", 32usize), ("aes-256-xts", 64)] {
        let key: Vec<u8> = (0..key_len as u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(1))
            .collect();
        let x = Xts::new(&key).expect("key");
        for sector in [512usize, 4096] {
            // 4 KiB is one small request (what per-call overhead costs); 256 KiB stays in
            // cache (the cipher's speed); 64 MiB does not (memory's).
            for buf_len in [4 << 10, 256 << 10, 64 << 20] {
                for threads in [1usize, 2] {
                    let results: Vec<(f64, f64, f64)> = std::thread::scope(|s| {
                        let handles: Vec<_> = (0..threads)
                            .map(|_| {
                                let (x, key) = (&x, &key);
                                s.spawn(move || {
                                    let mut buf = vec![0x5Au8; buf_len];
                                    let e = rate(x, &mut buf, sector, true, secs);
                                    let d = rate(x, &mut buf, sector, false, secs);
                                    let o = openssl_rate(key, &mut buf, sector, secs);
                                    (e, d, o)
                                })
                            })
                            .collect();
                        handles
                            .into_iter()
                            .map(|h| h.join().expect("thread"))
                            .collect()
                    });
                    let enc: f64 = results.iter().map(|r| r.0).sum();
                    let dec: f64 = results.iter().map(|r| r.1).sum();
                    let ossl: f64 = results.iter().map(|r| r.2).sum();
                    println!(
                        "{{\"cipher\":\"{name}\",\"sector\":{sector},\"buffer\":{buf_len},\"threads\":{threads},\"encrypt_mb_s\":{enc:.0},\"decrypt_mb_s\":{dec:.0},\"openssl_per_sector_mb_s\":{ossl:.0}}}"
                    );
                }
            }
        }
    }
    // The ceiling for large buffers: the rate at which one thread (and two) can read and
    // rewrite a 64 MiB buffer in place (an XOR with a constant), with no cipher at all.
    for threads in [1usize, 2] {
        let mb_s: f64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(move || {
                        let mut buf = vec![0x5Au8; 64 << 20];
                        let start = std::time::Instant::now();
                        let mut n = 0u64;
                        while start.elapsed().as_secs_f64() < secs {
                            buf.iter_mut().for_each(|b| *b ^= 0x33);
                            std::hint::black_box(&mut buf);
                            n += buf.len() as u64;
                        }
                        n as f64 / start.elapsed().as_secs_f64() / 1e6
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("thread")).sum()
        });
        println!("{{\"memory_in_place_64MiB\":true,\"threads\":{threads},\"mb_s\":{mb_s:.0}}}");
    }
}

//! `atrest demo`: the whole story on the embedded development KMIP server: Save and Test,
//! then an image encrypted in place, unlocked with the key fetched again, rekeyed, decrypted.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kms::server::{Options, Server};

use service::config::Config;
use service::device::Location;
use service::keys::KeyManager;
use service::ops;
use service::ops::convert::{ConvertReport, DecryptRequest, EncryptRequest, KeySpec, RekeyRequest};
use service::progress::{Observer, Quiet, Stop};
use service::ServiceError;

use crate::cli::args::ConfigArg;

pub fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
    match dir {
        Some(d) => demo(&d),
        None => {
            // A fresh folder with a random name, removed when `scratch` drops: on success,
            // on error and on a panic alike.
            let scratch = tempfile::Builder::new()
                .prefix("atrest-demo-")
                .tempdir()
                .context("creating a temporary directory")?;
            demo(&scratch.path().join("kms"))
        }
    }
}

fn demo(dir: &std::path::Path) -> anyhow::Result<()> {
    let any_port = "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!());
    kms::setup::ensure(dir, any_port).context("preparing the development KMS directory")?;
    let server =
        Server::bind(dir, Options::new(any_port)).context("starting the development KMS")?;
    let addr = server.local_addr();
    // client.toml must name the port the server really got.
    kms::setup::ensure(dir, addr).context("writing client.toml")?;
    let stopper = server.stopper();
    let running = std::thread::spawn(move || server.run());
    println!(
        "1. Development KMIP server (not for production) on {addr}, directory {}",
        dir.display()
    );
    println!("   It made a CA, a server certificate, a client identity (PKCS#12 + passphrase),");
    println!(
        "   a KMIP user with a password, and {}.",
        dir.join("client.toml").display()
    );
    println!();
    println!("2. Save and Test, with a throwaway key (atrest kmip test --probe-key):");
    println!();
    let config = ConfigArg {
        config: dir.join("client.toml"),
    };
    let tested = super::kmip::test(&config, false, true).and_then(|()| volume_story(dir, &config));
    stopper.stop();
    let _ = running.join();
    tested
}

/// The appliance's data encrypted in place, read back with the key fetched again,
/// rekeyed, and decrypted back to the original bytes: the same service operations the
/// commands and the daemon run.
fn volume_story(dir: &Path, config: &ConfigArg) -> anyhow::Result<()> {
    let img = dir.join("appliance-data.img");
    let mut data = vec![0u8; 64 << 20];
    let text = b"# appliance configuration\nlisten = 443\n\n2026-11-28T10:00:00Z session 42 opened by alice\n";
    data[..text.len()].copy_from_slice(text);
    openssl::rand::rand_bytes(&mut data[1 << 20..]).context("random data")?;
    std::fs::write(&img, &data).with_context(|| format!("writing {}", img.display()))?;
    let want = openssl::sha::sha256(&data);
    let location = Location {
        path: img.clone(),
        header: None,
    };
    println!();
    println!(
        "3. Encrypt in place: {} (64 MiB: configuration text, audit lines, recordings)",
        img.display()
    );
    let req = EncryptRequest {
        location: location.clone(),
        key: KeySpec::default(),
        reduce_device_size: None,
        step: None,
    };
    convert(config, ops::convert::encrypt, &req)?;
    println!();
    println!("4. What the header says (no key needed):");
    super::status::run(&img, None, false)?;
    println!();
    // What `atrest open` and `atrest serve` do at every start: the key fetched again by
    // the identifier in the header, proven, kept only as a locked key schedule.
    let opened = ops::open::open(
        &mut KeyManager::new(Config::load(&config.config)?)?,
        &location,
    )?;
    let mut back = vec![0u8; opened.volume.size() as usize];
    opened.volume.read_at(&mut back, 0)?;
    anyhow::ensure!(
        openssl::sha::sha256(&back) == want,
        "the volume does not read back the original data"
    );
    let uid = opened.key_uid.clone();
    drop(opened);
    println!("5. As at every start: key {uid} fetched again by its identifier, volume unlocked,");
    println!("   all 64 MiB read back identical to the original (served with `atrest open` or");
    println!("   `atrest serve` over NBD, FUSE or dm-crypt).");
    println!();
    println!("6. Key rotation: rewrap under a new KMIP key, then a deep rekey (every sector):");
    for deep in [false, true] {
        let req = RekeyRequest {
            location: location.clone(),
            deep,
            keep_old: false,
            key_name: None,
            step: None,
        };
        convert(config, ops::convert::rekey, &req)?;
    }
    println!();
    println!("7. Decrypt in place, back to the original file:");
    let req = DecryptRequest {
        location,
        keep_old: false,
        step: None,
    };
    convert(config, ops::convert::decrypt, &req)?;
    anyhow::ensure!(
        openssl::sha::sha256(&std::fs::read(&img)?) == want,
        "the decrypted image differs from the original"
    );
    println!("   {} is byte for byte the original again.", img.display());
    Ok(())
}

/// A conversion as its own command would run it: a key manager of its own, no progress
/// shown, never stopped; prints the report's sentence.
fn convert<R>(
    config: &ConfigArg,
    op: fn(&mut KeyManager, &R, &mut dyn Observer, &Stop) -> Result<ConvertReport, ServiceError>,
    req: &R,
) -> anyhow::Result<()> {
    let mut kms = KeyManager::new(Config::load(&config.config)?)?;
    let report = op(&mut kms, req, &mut Quiet, &Stop::new())?;
    println!("   {}", report.message);
    Ok(())
}

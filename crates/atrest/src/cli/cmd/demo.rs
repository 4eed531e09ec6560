//! `atrest demo`: the story so far, on the embedded development KMIP server.

use std::path::PathBuf;

use anyhow::Context;
use kms::server::{Options, Server};

use crate::cli::args::ConfigArg;

pub fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let (dir, temporary) = match dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("atrest-demo-{}", std::process::id())),
            true,
        ),
    };
    let result = demo(&dir);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
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
    let tested = super::kmip::test(&config, false, true);
    stopper.stop();
    let _ = running.join();
    tested?;
    println!();
    println!("The KMIP side works end to end. Next (as the issues land): format or encrypt a");
    println!("volume with a key from this server, and unlock it again at start.");
    Ok(())
}

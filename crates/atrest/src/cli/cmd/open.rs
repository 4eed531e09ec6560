//! `atrest open`: a volume's plaintext served over NBD, FUSE or dm-crypt while the data
//! stays encrypted, in the foreground until SIGTERM or Ctrl-C.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use service::config::Config;
use service::device::{Device, Location};
use service::exports;
use service::keys::KeyManager;
use service::ops::open;
use service::progress::Stop;
use volume::volume::cipher_text;

use super::convert::stop_on_signals;
use crate::cli::args::OpenArgs;
use crate::cli::output::event;

pub fn run(a: OpenArgs) -> anyhow::Result<()> {
    // What goes wrong while serving (a client's I/O error, a FUSE reply that failed) and
    // the warnings about how the data is exposed go to stderr.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_target(false)
        // fuser warns of every request it does not implement (xattrs) and of an unmount
        // atrest already did; its errors still show.
        .filter_module("fuser", log::LevelFilter::Error)
        .init();
    let stop = stop_on_signals()?;
    let config = Config::load(&a.config.config)?;
    let loc = Location {
        path: a.device.clone(),
        header: a.header.clone(),
    };
    let name = a
        .device
        .file_name()
        .map_or_else(|| "volume".into(), |n| n.to_string_lossy().into_owned());
    if let Some(dm) = &a.export.dm {
        return serve_dm(&a, config, &loc, dm, &stop);
    }
    let v = open::open(&mut KeyManager::new(config)?, &loc)?;
    if let Some(r) = &v.repaired {
        eprintln!("{}: {r}", a.device.display());
    }
    let what = format!(
        "{} ({} bytes, {}, key {})",
        a.device.display(),
        v.status.data_size,
        cipher_text(v.status.key_bits),
        v.status.key_uid
    );
    if let Some(dir) = &a.export.fuse {
        let mut export = exports::fuse::mount(v.volume.clone(), dir, &name)?;
        ready(&a, &what, "fuse", &export.file().display().to_string());
        wait(&stop);
        export.close()?;
    } else if let Some(addr) = &a.export.nbd {
        let server = exports::nbd::serve(v.volume.clone(), addr, &name, a.discard)?;
        ready(&a, &what, "nbd", &server.uri());
        wait(&stop);
        server.stop()?;
    }
    stopped(&a);
    Ok(())
}

/// dm-crypt: the key is proven here, then handed to cryptsetup on a pipe; the kernel
/// serves until stopped, when the mapping is removed.
fn serve_dm(
    a: &OpenArgs,
    config: Config,
    loc: &Location,
    name: &str,
    stop: &Stop,
) -> anyhow::Result<()> {
    let dev = Device::open(loc, false)?;
    let (uid, mode) = open::key_of(&dev)?;
    let secret = KeyManager::new(config)?.fetch(&uid)?;
    let (mut mapping, _held) = exports::dm::open_proven(dev, name, mode, &secret)?;
    drop(secret);
    let what = format!("{} (key {uid})", loc.path.display());
    ready(a, &what, "dm", &mapping.device().display().to_string());
    wait(stop);
    mapping.close().context("removing the mapping")?;
    stopped(a);
    Ok(())
}

fn ready(a: &OpenArgs, what: &str, road: &str, at: &str) {
    if a.json {
        // The process's own word on its hardening, as `atrest ctl status` gives the daemon's:
        // PR_SET_DUMPABLE cannot be read from outside the process.
        event(json!({
            "event": "ready",
            "device": a.device,
            "export": road,
            "at": at,
            "hardening": {"dumpable": secmem::is_dumpable()},
        }));
    } else {
        println!("serving {what} over {road} at {at}; Ctrl-C or SIGTERM stops");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

fn stopped(a: &OpenArgs) {
    if a.json {
        event(json!({"event": "stopped", "device": a.device}));
    } else {
        println!(
            "stopped: {} flushed and closed, keys zeroized",
            a.device.display()
        );
    }
}

fn wait(stop: &Stop) {
    while !stop.requested() {
        std::thread::sleep(Duration::from_millis(100));
    }
}

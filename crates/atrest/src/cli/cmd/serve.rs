//! `atrest serve`: the daemon, in the foreground (systemd runs it so; see
//! contrib/atrest.service). SIGTERM and Ctrl-C stop it, SIGHUP rereads the configuration.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;

use super::convert::stop_on_signals;

struct Lines;

impl service::daemon::Reporter for Lines {
    fn line(&mut self, text: &str) {
        log::info!("{text}");
    }

    fn warn(&mut self, text: &str) {
        log::warn!("{text}");
    }

    fn error(&mut self, text: &str) {
        log::error!("{text}");
    }
}

pub fn run(config: &Path) -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        // fuser warns of every request it does not implement (xattrs) and of an unmount
        // atrest already did; its errors still show.
        .filter_module("fuser", log::LevelFilter::Error)
        .init();
    let stop = stop_on_signals()?;
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .context("installing the SIGHUP handler")?;
    service::daemon::run(config, stop, reload, &mut Lines, Some(&admin::start))?;
    log::info!("stopped");
    Ok(())
}

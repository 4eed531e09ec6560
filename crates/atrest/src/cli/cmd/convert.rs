//! What encrypt, decrypt and rekey share on the command line: the stop request wired to
//! Ctrl-C and SIGTERM, progress shown the way the reader wants it, exit status 3 when a
//! conversion stopped at a safe point.

use anyhow::Context;
use service::device::Location;
use service::ops::convert::ConvertReport;
use service::progress::Stop;
use service::ServiceError;

use crate::cli::args::{ConfigArg, ConvertArgs};
use crate::cli::output::Reporter;

/// Set by Ctrl-C or SIGTERM; the conversion stops at its next committed step.
pub fn stop_on_signals() -> anyhow::Result<Stop> {
    let stop = Stop::new();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.flag().clone())
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

/// Where the volume of `a` is.
pub fn location(a: &ConvertArgs) -> Location {
    Location {
        path: a.device.clone(),
        header: a.header.clone(),
    }
}

/// Runs a conversion with progress shown and signals wired; a stop is
/// [`crate::cli::Stopped`] (exit status 3).
pub fn run(
    a: &ConvertArgs,
    op: impl FnOnce(&mut Reporter, &Stop) -> Result<ConvertReport, ServiceError>,
) -> anyhow::Result<()> {
    let stop = stop_on_signals()?;
    let mut rep = Reporter::new(a.json, &a.device);
    let report = op(&mut rep, &stop)?;
    if rep.finish(&report) {
        Ok(())
    } else {
        Err(crate::cli::Stopped.into())
    }
}

/// A session with the key servers (and the key policy) of the configuration `config` names.
pub fn key_manager(config: &ConfigArg) -> anyhow::Result<service::keys::KeyManager> {
    Ok(service::keys::KeyManager::new(
        service::config::Config::load(&config.config)?,
    )?)
}

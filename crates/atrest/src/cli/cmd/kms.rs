//! `atrest kms serve`: the development KMIP server.

use anyhow::Context;
use kms::server::{Options, Server};

use crate::cli::args::KmsCommand;

pub fn run(cmd: KmsCommand) -> anyhow::Result<()> {
    let KmsCommand::Serve {
        dir,
        listen,
        idle_timeout,
    } = cmd;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    let created = kms::setup::ensure(&dir, listen).context("preparing the server directory")?;
    let mut options = Options::new(listen);
    options.idle_timeout = std::time::Duration::from_secs(idle_timeout.max(1));
    let server = Server::bind(&dir, options)
        .with_context(|| format!("starting the KMIP server in {}", dir.display()))?;
    let stopper = server.stopper();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("installing signal handlers")?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            log::info!("signal {sig}: stopping");
            stopper.stop();
        }
    });
    if created {
        log::info!(
            "created {} (CA, certificates, user, client.toml)",
            dir.display()
        );
    }
    log::info!(
        "atrest development KMS (not for production) listening on {}; client configuration: {}",
        server.local_addr(),
        dir.join("client.toml").display()
    );
    server.run();
    Ok(())
}

//! atrest's admin web page: what an appliance operator uses instead of the command line.
//! `atrest serve` starts it beside the control API when `[web] listen` is configured. It
//! serves Storage › Encryption (the KMIP servers, certificate uploads, passphrase and
//! credential; "Save and Test Changes"; "Encrypt", offered only after the saved settings
//! passed a test, with live progress), Volumes (state, key, cipher, exports; rotate,
//! decrypt, lock, unlock) and the audit log, over HTTPS with one admin account.
//!
//! It holds no logic of its own about volumes or keys: it calls the same typed requests as
//! the control API ([`service::daemon::api::route`]) and Save and Test
//! ([`service::ops::test`]), reads the daemon's status and feed, and writes the audit log.
//! What is its own: TLS ([`tls`]), the password ([`password`]), sessions and CSRF
//! ([`sessions`]), login throttling ([`throttle`]), saving settings atomically
//! ([`settings`]), the transport's bounds ([`server`]) and the HTML ([`pages`]).

#![forbid(unsafe_code)]

pub mod app;
pub mod assets;
pub mod audit_budget;
pub mod error;
pub mod files;
pub mod pages;
pub mod password;
pub mod request;
pub mod server;
pub mod sessions;
pub mod settings;
pub mod throttle;
pub mod tls;

use std::sync::Arc;

use service::config::Config;
use service::daemon::api::Shared;
use service::daemon::Reporter;

pub use error::AdminError;

/// Starts the page for the daemon whose state is `shared`, if `[web] listen` is set; the
/// returned box keeps it running. `serve` passes this to
/// [`service::daemon::run`].
pub fn start(
    shared: Arc<Shared>,
    config: &Config,
    out: &mut dyn Reporter,
) -> Result<Option<Box<dyn std::any::Any>>, String> {
    match start_server(shared, config, out) {
        Ok(s) => Ok(s.map(|s| Box::new(s) as Box<dyn std::any::Any>)),
        Err(e) => Err(e.to_string()),
    }
}

/// [`start`], typed.
pub fn start_server(
    shared: Arc<Shared>,
    config: &Config,
    out: &mut dyn Reporter,
) -> Result<Option<server::Server>, AdminError> {
    let web = &config.web;
    let Some(listen) = web.listen else {
        return Ok(None);
    };
    if web.admin_password_hash.is_none() {
        return Err(AdminError::NoPassword {
            config: config.path.clone(),
        });
    }
    let dir = config.path.parent().unwrap_or(std::path::Path::new("."));
    let id = tls::identity(web, dir)?;
    if id.generated {
        out.line(&format!(
            "web page: made a self-signed certificate {} (ECDSA P-256)",
            id.cert_path.display()
        ));
    }
    let app = Arc::new(app::App::new(shared.clone(), web));
    let server = server::start(listen, id.acceptor, app)?;
    let text = format!(
        "web page at https://{} (certificate SHA-256 {}, expires {})",
        server.addr, id.fingerprint, id.not_after
    );
    out.line(&text);
    shared.audit.event(None, "web_started", None, text);
    Ok(Some(server))
}

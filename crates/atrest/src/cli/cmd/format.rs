//! `atrest format`: a new, empty volume keyed from KMIP.

use serde_json::json;
use service::config::Config;
use service::device::Location;
use service::keys::KeyManager;
use service::ops::format::{format, FormatRequest};
use volume::volume::cipher_text;

use crate::cli::args::FormatArgs;

pub fn run(a: FormatArgs) -> anyhow::Result<()> {
    let req = FormatRequest {
        location: Location {
            path: a.device.clone(),
            header: None,
        },
        key: a.key.spec(),
        force: a.force,
    };
    let mut kms = KeyManager::new(Config::load(&a.config.config)?)?;
    let r = format(&mut kms, &req)?;
    let s = &r.status;
    if a.json {
        println!("{}", json!({"device": r.device, "status": s}));
    } else {
        println!(
            "{}: formatted, {}, {}-byte sectors, {} mode, KMIP key {}, {} bytes of data space",
            r.device.display(),
            cipher_text(s.key_bits),
            s.sector_size,
            s.key_mode,
            s.key_uid,
            s.data_size
        );
    }
    Ok(())
}

//! `atrest format`: a new, empty volume keyed from KMIP.

use anyhow::{bail, Context};
use kmip::client::Client;
use kmip::enums::RevocationReasonCode;
use serde_json::json;
use service::config::Config;
use volume::backend::{Access, FileBackend};
use volume::volume::{cipher_text, format, status, FormatOptions, KeyMode};

use crate::cli::args::{CipherArg, FormatArgs};

pub fn run(a: FormatArgs) -> anyhow::Result<()> {
    if a.key.direct && a.key.cipher == CipherArg::XtsAes256 {
        bail!("direct mode uses the KMIP key as the volume key, and KMIP AES keys are at most 256 bits: XTS-AES-256 needs wrapped mode");
    }
    // The same lock as the conversions take: a format must never race one.
    let dev = FileBackend::open(&a.device, Access::Exclusive)?;
    if let Some(what) = volume::probe::existing_content(&dev).context("reading the device")? {
        if !a.force {
            bail!(
                "{} holds {what}; formatting would destroy it. To keep the data, encrypt it in place with `atrest encrypt`; to destroy it, give --force",
                a.device.display()
            );
        }
    }
    // Check the device geometry before a key is created for it.
    let len = volume::backend::BlockBackend::len(&dev)?;
    if len <= volume::volume::DATA_OFFSET
        || !(len - volume::volume::DATA_OFFSET).is_multiple_of(u64::from(a.key.sector_size))
    {
        bail!(
            "{} holds {len} bytes: an atrest volume needs more than {} bytes of header area and a data area of whole {}-byte sectors",
            a.device.display(),
            volume::volume::DATA_OFFSET,
            a.key.sector_size
        );
    }
    let config = Config::load(&a.config.config)?;
    let mut client = Client::new(config.kmip)?;
    let name = a.key.key_name.clone().unwrap_or_else(|| {
        format!(
            "atrest-{}",
            a.device
                .file_name()
                .map_or_else(|| "volume".into(), |n| n.to_string_lossy().into_owned())
        )
    });
    let uid = client
        .create_aes_key(256, Some(&name))
        .context("creating the key on the KMIP server")?;
    let result = (|| -> anyhow::Result<()> {
        client.activate(&uid).context("activating the key")?;
        let secret = client
            .get_symmetric_key(&uid)
            .context("fetching the new key")?;
        let server = client.server_info().map(|s| s.server.to_string());
        let opts = FormatOptions {
            mode: if a.key.direct {
                KeyMode::Direct
            } else {
                KeyMode::Wrapped
            },
            volume_key_len: if a.key.cipher == CipherArg::XtsAes256 {
                64
            } else {
                32
            },
            sector_size: a.key.sector_size,
            key_uid: uid.clone(),
            server_hint: server,
            data_size: None,
            detached: false,
        };
        format(&dev, &secret, &opts).context("writing the volume header")?;
        Ok(())
    })();
    if let Err(e) = result {
        // The key protects nothing: do not leave it behind.
        let cleanup = client
            .revoke(
                &uid,
                RevocationReasonCode::CESSATION_OF_OPERATION,
                Some("atrest format failed"),
            )
            .and_then(|()| client.destroy(&uid));
        return Err(match cleanup {
            Ok(()) => e.context(format!("the unused key {uid} was revoked and destroyed")),
            Err(c) => e.context(format!(
                "the unused key {uid} could not be removed from the server: {c}"
            )),
        });
    }
    let s = status(&dev)?;
    if a.json {
        println!("{}", json!({"device": a.device, "status": s}));
    } else {
        println!(
            "{}: formatted, {}, {}-byte sectors, {} mode, KMIP key {}, {} bytes of data space",
            a.device.display(),
            cipher_text(s.key_bits),
            s.sector_size,
            s.key_mode,
            s.key_uid,
            s.data_size
        );
    }
    Ok(())
}

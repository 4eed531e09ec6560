//! `atrest encrypt`: existing data becomes a volume, in place; or the interrupted
//! encryption of this device is finished.

use anyhow::{bail, Context};
use volume::backend::BlockBackend;
use volume::convert::park::HeaderPlan;
use volume::convert::{Found, Keys, Kind};
use volume::text::shown;
use volume::volume::{cipher_text, KeyMode};

use super::convert::{drive, print_done, Device, Kms};
use crate::cli::args::{CipherArg, EncryptArgs};

pub fn run(a: EncryptArgs) -> anyhow::Result<()> {
    let c = &a.common;
    if a.key.direct && a.key.cipher == CipherArg::XtsAes256 {
        bail!("direct mode uses the KMIP key as the volume key, and KMIP AES keys are at most 256 bits: XTS-AES-256 needs wrapped mode");
    }
    let dev = Device::open(&c.device, c.header.as_deref(), true)?;
    let mut kms = Kms::connect(&c.config.config)?;
    let found = volume::convert::inspect(dev.devices())
        .with_context(|| format!("reading {}", c.device.display()))?;
    let secret = match found {
        Found::Plain => {
            let len = dev.backend.len()?;
            if c.header.is_some() {
                if a.reduce_device_size.is_some() {
                    bail!("--header and --reduce-device-size exclude each other: with a detached header the data stays where it is");
                }
                if volume::luks2::header::read(&dev.backend).is_ok() {
                    bail!(
                        "{} holds a LUKS header itself: it is encrypted already",
                        c.device.display()
                    );
                }
            }
            if c.header.is_none()
                && a.reduce_device_size.is_none()
                && !volume::backend::BlockBackend::resizable(&dev.backend)
            {
                bail!(
                    "{} is a block device, which cannot grow: give --reduce-device-size 32M (its last 32 MiB unused: shrink the filesystem first) or --header FILE (a detached header; the data stays where it is)",
                    c.device.display()
                );
            }
            let reduce = a.reduce_device_size.unwrap_or(0);
            if reduce >= len {
                bail!("--reduce-device-size {reduce} is not smaller than the device ({len} bytes)");
            }
            let size = len - reduce;
            if !size.is_multiple_of(u64::from(a.key.sector_size)) {
                bail!(
                    "{} bytes of data are not a whole number of {}-byte sectors: pad the image (e.g. `truncate -s %{}`){}",
                    size,
                    a.key.sector_size,
                    a.key.sector_size,
                    if a.key.sector_size == 4096 { " or use --sector-size 512" } else { "" }
                );
            }
            let name = a
                .key
                .key_name
                .clone()
                .unwrap_or_else(|| format!("atrest-{}", dev.name));
            let (uid, secret, server) = kms.create(&name)?;
            let plan = HeaderPlan {
                key_uid: uid.clone(),
                key_mode: if a.key.direct {
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
                server_hint: server,
            };
            // Until the park record (or the detached header) is durable nothing refers to
            // the key: on failure it goes. After, it is named there and must stay.
            let begun = if c.header.is_some() {
                volume::convert::begin_encrypt_in_place(dev.devices(), &plan, &secret)
            } else {
                volume::convert::begin_encrypt(&dev.backend, &plan, size)
            };
            if let Err(e) = begun {
                let e = anyhow::Error::new(e).context(format!("preparing {}", c.device.display()));
                return Err(kms.discard(&uid, e));
            }
            secret
        }
        Found::InProgress(p) if p.kind == Kind::Encrypt => {
            if !c.json {
                eprintln!(
                    "{}: resuming an interrupted encryption ({} of {} bytes done), key {}",
                    c.device.display(),
                    p.done,
                    p.size,
                    shown(&p.key_uid)
                );
            }
            kms.fetch(&p.key_uid)?
        }
        Found::InProgress(p) => bail!(
            "an {} of {} is in progress: run `{}` to finish it first",
            p.kind.noun(),
            c.device.display(),
            p.kind.command()
        ),
        Found::Volume { key_uid, .. } => bail!(
            "{} is already an atrest volume (KMIP key {}); nothing to encrypt",
            c.device.display(),
            shown(&key_uid)
        ),
        Found::OtherLuks => bail!(
            "{} holds a LUKS volume that atrest did not make; it is encrypted already",
            c.device.display()
        ),
    };
    let keys = Keys {
        current: Some(&secret),
        new: None,
    };
    drive(&dev, keys, c, "encrypt")?;
    let s = dev.status()?;
    print_done(
        c,
        &dev,
        &format!(
            "encrypted: {} bytes of data, {}, {} mode, KMIP key {}",
            s.data_size,
            cipher_text(s.key_bits),
            s.key_mode,
            s.key_uid
        ),
    )?;
    Ok(())
}

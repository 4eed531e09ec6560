//! `atrest decrypt`: a volume back to plaintext, in place; or the interrupted decryption
//! of this device is finished.

use anyhow::{bail, Context};
use volume::convert::{Found, Keys, Kind};

use super::convert::{drive, print_done, Device, Kms};
use crate::cli::args::ConvertArgs;

pub fn run(a: ConvertArgs) -> anyhow::Result<()> {
    let dev = Device::open(&a.device, a.header.as_deref(), false)?;
    let found = volume::convert::inspect(dev.devices())
        .with_context(|| format!("reading {}", a.device.display()))?;
    let (uid, secret) = match found {
        Found::Volume { key_uid, .. } => {
            let secret = Kms::connect(&a.config.config)?.fetch(&key_uid)?;
            volume::convert::begin_decrypt(dev.devices(), &secret)
                .with_context(|| format!("preparing {}", a.device.display()))?;
            (key_uid, Some(secret))
        }
        Found::InProgress(p) if p.kind == Kind::Decrypt => {
            let secret = if p.needs_current {
                Some(Kms::connect(&a.config.config)?.fetch(&p.key_uid)?)
            } else {
                None
            };
            (p.key_uid, secret)
        }
        Found::InProgress(p) => bail!(
            "a {} of {} is in progress: run `atrest {}` to finish it first",
            p.kind.as_str(),
            a.device.display(),
            p.kind.as_str()
        ),
        Found::Plain if a.header.is_some() => bail!(
            "{} holds no header: nothing to decrypt (a finished decrypt wipes and removes it)",
            a.header.as_deref().unwrap_or(a.device.as_path()).display()
        ),
        Found::Plain => bail!(
            "{} is not an atrest volume (no LUKS header): nothing to decrypt",
            a.device.display()
        ),
        Found::OtherLuks => bail!(
            "{} holds a LUKS volume that atrest did not make: decrypt it with cryptsetup",
            a.device.display()
        ),
    };
    let keys = Keys {
        current: secret.as_deref().map(|s| &s[..]),
        new: None,
    };
    drive(&dev, keys, &a, "decrypt")?;
    if let Some(h) = &a.header {
        // Wiped by the decryption; the file itself goes too.
        std::fs::remove_file(h).with_context(|| format!("removing {}", h.display()))?;
    }
    let tail = if uid.is_empty() {
        String::new()
    } else {
        format!("; the KMIP key {uid} protects nothing now (revoke it with `atrest kmip revoke`)")
    };
    print_done(
        &a,
        &dev,
        &format!("decrypted: the device holds plaintext again{tail}"),
    )?;
    Ok(())
}

//! `atrest decrypt`: a volume back to plaintext, in place; or the interrupted decryption
//! of this device is finished.

use anyhow::{bail, Context};
use kmip::enums::RevocationReasonCode;
use volume::convert::{Found, Keys, Kind};
use volume::text::shown;

use super::convert::{drive, print_done, Device, Kms};
use crate::cli::args::DecryptArgs;

pub fn run(d: DecryptArgs) -> anyhow::Result<()> {
    let a = &d.common;
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
            if !a.json {
                eprintln!(
                    "{}: resuming an interrupted decryption ({} of {} bytes done)",
                    a.device.display(),
                    p.done,
                    p.size
                );
            }
            let secret = if p.needs_current {
                Some(Kms::connect(&a.config.config)?.fetch(&p.key_uid)?)
            } else {
                None
            };
            (p.key_uid, secret)
        }
        Found::InProgress(p) => bail!(
            "an {} of {} is in progress: run `{}` to finish it first",
            p.kind.noun(),
            a.device.display(),
            p.kind.command()
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
    drive(&dev, keys, a, "decrypt")?;
    if let Some(h) = &a.header {
        // Wiped by the decryption; the file itself goes too.
        std::fs::remove_file(h).with_context(|| format!("removing {}", h.display()))?;
    }
    // The key protects nothing now. Revoked, not destroyed: a backup made while the
    // volume was encrypted still needs it.
    let tail = if uid.is_empty() {
        String::new()
    } else if d.old.keep_old {
        format!(
            "; the KMIP key {} protects nothing now and is still Active (--keep-old)",
            shown(&uid)
        )
    } else {
        Kms::connect(&a.config.config)?.revoke_unused(
            &uid,
            RevocationReasonCode::CESSATION_OF_OPERATION,
            "atrest decrypt: the volume holds plaintext",
        )?;
        format!(
            "; the KMIP key {} is revoked (Cessation of Operation; it can still be fetched to read old backups)",
            shown(&uid)
        )
    };
    print_done(
        a,
        &dev,
        &format!("decrypted: the device holds plaintext again{tail}"),
    )?;
    Ok(())
}

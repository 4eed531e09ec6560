//! `atrest rekey`: the volume under a new KMIP key, by rewrapping (instant) or by
//! re-encrypting every sector (--deep); or the interrupted deep rekey is finished.

use std::time::Instant;

use anyhow::{bail, Context};
use kmip::enums::RevocationReasonCode;
use volume::convert::{Found, Keys, Kind};
use volume::text::shown;
use volume::volume::KeyMode;

use super::convert::{drive, print_done, Device, Kms};
use crate::cli::args::RekeyArgs;

pub fn run(a: RekeyArgs) -> anyhow::Result<()> {
    let c = &a.common;
    let started = Instant::now();
    let dev = Device::open(&c.device, c.header.as_deref(), false)?;
    let mut kms = Kms::connect(&c.config.config)?;
    let found = volume::convert::inspect(dev.devices())
        .with_context(|| format!("reading {}", c.device.display()))?;
    let (old_uid, old, new_uid, new) = match found {
        Found::Volume { key_uid, key_mode } => {
            if !a.deep && key_mode == KeyMode::Direct {
                bail!("{} is in direct mode: its KMIP key is the volume key, so a new key means re-encrypting every sector; use `atrest rekey --deep`", c.device.display());
            }
            let old = kms.fetch(&key_uid)?;
            let name = a
                .key_name
                .clone()
                .unwrap_or_else(|| format!("atrest-{}", dev.name));
            let (new_uid, new, _) = kms.create(&name)?;
            let r = if a.deep {
                volume::convert::begin_rekey(dev.devices(), &old, &new, &new_uid)
            } else {
                volume::convert::rewrap(dev.devices(), &old, &new, &new_uid)
            };
            if let Err(e) = r {
                let e = anyhow::Error::new(e).context(format!("rekeying {}", c.device.display()));
                return Err(kms.discard(&new_uid, e));
            }
            if !a.deep {
                let old = retire(&mut kms, &key_uid, a.old.keep_old)?;
                let ms = started.elapsed().as_millis();
                print_done(c, &dev, &format!(
                    "rekeyed in {ms} ms: the volume key is now wrapped under KMIP key {new_uid}; {old}"
                ))?;
                return Ok(());
            }
            (key_uid, Some(old), new_uid, new)
        }
        Found::InProgress(p) if p.kind == Kind::Rekey => {
            let new_uid = p.new_key_uid.clone().unwrap_or_default();
            if !c.json {
                eprintln!(
                    "{}: resuming an interrupted re-encryption ({} of {} bytes done), from key {} to key {}",
                    c.device.display(),
                    p.done,
                    p.size,
                    shown(&p.key_uid),
                    shown(&new_uid)
                );
            }
            let old = if p.needs_current {
                Some(kms.fetch(&p.key_uid)?)
            } else {
                None
            };
            let new = kms.fetch(&new_uid)?;
            (p.key_uid, old, new_uid, new)
        }
        Found::InProgress(p) => bail!(
            "an {} of {} is in progress: run `{}` to finish it first",
            p.kind.noun(),
            c.device.display(),
            p.kind.command()
        ),
        Found::Plain => bail!(
            "{} is not an atrest volume: nothing to rekey",
            c.device.display()
        ),
        Found::OtherLuks => bail!(
            "{} holds a LUKS volume that atrest did not make",
            c.device.display()
        ),
    };
    let keys = Keys {
        current: old.as_deref().map(|s| &s[..]),
        new: Some(&new),
    };
    drive(&dev, keys, c, "rekey")?;
    let old = retire(&mut kms, &old_uid, a.old.keep_old)?;
    print_done(
        c,
        &dev,
        &format!(
            "rekeyed: every sector re-encrypted under a new volume key, KMIP key {}; {old}",
            shown(&new_uid)
        ),
    )?;
    Ok(())
}

/// Revokes the key the volume no longer uses (unless kept); says what happened to it.
fn retire(kms: &mut Kms, old_uid: &str, keep: bool) -> anyhow::Result<String> {
    let old = shown(old_uid);
    if keep {
        return Ok(format!("the old key {old} is still Active (--keep-old)"));
    }
    kms.revoke_unused(
        old_uid,
        RevocationReasonCode::SUPERSEDED,
        "atrest rekey: replaced",
    )?;
    Ok(format!(
        "the old key {old} is revoked (Superseded; it can still be fetched to read old backups)"
    ))
}

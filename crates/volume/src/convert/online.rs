//! A conversion while the volume is in use: the exports keep reading and writing the
//! [`Unlocked`] volume as the conversion rewrites it. Three conversions leave every byte
//! where it is and can run so: a deep rekey, and an encrypt or a decrypt with a detached
//! header (the data device is converted in place). The volume learns the side it is
//! converted to and follows the boundary ([`follow`]); the loop runs each step (read the
//! hot zone, journal it, rewrite it, commit) holding the volume's sides for writing, so
//! that no I/O of the exports meets a hot zone half rewritten, and moves the boundary at
//! the commit ([`Gate`]). The crash invariants are those of the offline loop
//! (`docs/journal.md`): the exports never write inside a step, and what they write outside
//! one is on the side the committed boundary says. After a crash the conversion is
//! finished at the next start, before anything is exported, as before.
//!
//! Encrypt and decrypt with the header on the volume move the data by the header area:
//! an export's offset would be in two places at once, and the first bytes wait in the
//! park behind a checksum that a write would break. Those run with the exports closed
//! (cryptsetup, likewise, runs a data-shift encryption or decryption only offline).
//!
//! A step that fails part-way leaves its hot zone as a crash would: neither side may read
//! it until the resume redoes it from the journal, and an export that wrote beside the
//! journal's copy would be undone by that redo. So the volume stops taking I/O then
//! ([`crate::volume::VolumeError::Halted`]) and the caller takes it down.

use super::inspect::read_layout;
use super::state::Conversion;
use super::{ConvertError, Devices};
use crate::volume::{key_schedule, volume_key, Side, Unlocked};

/// What a conversion step runs under when the volume is in use.
pub trait Gate: Sync {
    /// Runs one step (`work` returns the bytes done after it) with every I/O of the
    /// volume held off, then moves the boundary there. When `work` fails, the volume
    /// takes no more I/O.
    fn step(
        &self,
        work: &mut dyn FnMut() -> Result<u64, ConvertError>,
    ) -> Result<u64, ConvertError>;
    /// The conversion is committed: the side it converted to is the volume's only one.
    fn finished(&self);
}

/// Makes `vol` follow the conversion that `d`'s header holds (begun with
/// [`super::begin_rekey`], [`super::begin_encrypt_in_place`] or [`super::begin_decrypt`]
/// on a detached header, or being resumed): from now on the sectors below its committed
/// progress are read and written on the new side. `secret` is the KMIP secret of that
/// side's key: the new key of a rekey, the volume's key of an encrypt; a decrypt needs
/// none (its new side is plaintext).
pub fn follow(vol: &Unlocked, d: Devices<'_>, secret: Option<&[u8]>) -> Result<(), ConvertError> {
    let (h, l) = read_layout(d)?;
    let Some(c) = l.conversion().map(|s| &s.conversion) else {
        return Err(ConvertError::NothingInProgress);
    };
    if vol.data.offset != l.data.offset || vol.data.size != l.data.size {
        return Err(ConvertError::Refused(format!(
            "a header whose data area ({} bytes at byte {}) is not the one served ({} bytes at byte {})",
            l.data.size, l.data.offset, vol.data.size, vol.data.offset
        )));
    }
    let side = |digest: &str| -> Result<Side, ConvertError> {
        let secret = secret.ok_or(ConvertError::KeyNeeded("new"))?;
        let key = volume_key(d.header, &h.metadata, digest, secret)?;
        Ok(Side::xts(key_schedule(&key)?, &l.data))
    };
    if let Some(why) = vol.halted() {
        return Err(ConvertError::Refused(format!(
            "a volume that stopped taking I/O ({why})"
        )));
    }
    if vol.converting() {
        return Err(ConvertError::Refused(
            "a volume that follows another conversion already".into(),
        ));
    }
    let plain_now = vol.is_plaintext();
    let (new, done) = match c {
        Conversion::Rekey {
            done, new_digest, ..
        } if !plain_now => (side(new_digest)?, *done),
        Conversion::EncryptInPlace { done, .. } if plain_now => (side(&l.digest)?, *done),
        Conversion::DecryptInPlace { done, .. } if !plain_now => (Side::Plain, *done),
        other => return Err(ConvertError::NotOnline(other.kind())),
    };
    let mut k = vol.keys.write().unwrap_or_else(|p| p.into_inner());
    k.next = Some((new, done));
    Ok(())
}

impl Gate for Unlocked {
    fn step(
        &self,
        work: &mut dyn FnMut() -> Result<u64, ConvertError>,
    ) -> Result<u64, ConvertError> {
        let mut k = self.keys.write().unwrap_or_else(|p| p.into_inner());
        match work() {
            Ok(done) => {
                if let Some((_, boundary)) = k.next.as_mut() {
                    *boundary = done;
                }
                Ok(done)
            }
            Err(e) => {
                k.halted = Some(format!("a conversion step failed ({e})"));
                Err(e)
            }
        }
    }

    fn finished(&self) {
        let mut k = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if let Some((new, _)) = k.next.take() {
            k.current = new;
        }
    }
}

//! A deep rekey while the volume is in use: the exports keep reading and writing the
//! [`Unlocked`] volume as the rekey rewrites it. The volume learns the new key and follows
//! the rekey's boundary ([`follow_rekey`]); the rekey runs each step (read the hot zone,
//! journal it, rewrite it, commit) holding the volume's keys for writing, so that no I/O
//! of the exports meets a hot zone half rewritten, and moves the boundary at the commit
//! ([`Gate`]). The crash invariants are those of the offline rekey (`docs/journal.md`):
//! the exports never write inside a step, and what they write outside one is under the key
//! its side of the committed boundary says. After a crash the rekey is finished at the
//! next start, before anything is exported, as before.

use super::inspect::read_layout;
use super::state::Conversion;
use super::{ConvertError, Devices};
use crate::volume::{key_schedule, volume_key, Unlocked};

/// What a conversion step runs under when the volume is in use.
pub trait Gate: Sync {
    /// Runs one step (`work` returns the bytes done after it) with every I/O of the
    /// volume held off, then moves the boundary there.
    fn step(
        &self,
        work: &mut dyn FnMut() -> Result<u64, ConvertError>,
    ) -> Result<u64, ConvertError>;
    /// The rekey is committed: the new key is the volume's only key.
    fn finished(&self);
}

/// Makes `vol` follow the deep rekey that `d`'s header holds (begun with
/// [`super::begin_rekey`], or being resumed): from now on the sectors below the rekey's
/// committed progress are read and written under the new key, derived from `new_secret`.
pub fn follow_rekey(vol: &Unlocked, d: Devices<'_>, new_secret: &[u8]) -> Result<(), ConvertError> {
    let (h, l) = read_layout(d)?;
    let Some(Conversion::Rekey {
        done, new_digest, ..
    }) = l.conversion().map(|s| &s.conversion)
    else {
        return Err(ConvertError::NothingInProgress);
    };
    let key = volume_key(d.header, &h.metadata, new_digest, new_secret)?;
    let new = key_schedule(&key)?;
    let mut k = vol.keys.write().unwrap_or_else(|p| p.into_inner());
    k.rekey = Some((new, *done));
    Ok(())
}

impl Gate for Unlocked {
    fn step(
        &self,
        work: &mut dyn FnMut() -> Result<u64, ConvertError>,
    ) -> Result<u64, ConvertError> {
        let mut k = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let done = work()?;
        if let Some((_, boundary)) = k.rekey.as_mut() {
            *boundary = done;
        }
        Ok(done)
    }

    fn finished(&self) {
        let mut k = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if let Some((new, _)) = k.rekey.take() {
            k.current = new;
        }
    }
}

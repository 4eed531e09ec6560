//! The deep rekey (`atrest rekey --deep`): every sector re-encrypted in place under a new
//! volume key through the journaled loop ([`super::in_place`]), then one commit makes the
//! new key the volume's. Until that commit segment 0 keeps the old digest and the new key
//! has a digest of its own; the state is tagged under the new key, which is all a resume
//! needs once every sector is converted.

use super::disk::{sync, zero};
use super::run::Step;
use super::state::{commit, Conversion};
use super::{ConvertError, Outcome};
use crate::layout::{JOURNAL_END, JOURNAL_OFFSET};
use crate::luks2::header::Header;
use crate::luks2::token;

impl Step<'_> {
    /// Every sector re-encrypted under a new volume key, in place.
    pub(super) fn rekey(
        &mut self,
        h: &mut Header,
        size: u64,
        done: u64,
        new_key_uid: &str,
        new_digest: &str,
    ) -> Result<Outcome, ConvertError> {
        let hdr = self.hdr;
        let state = |done| Conversion::Rekey {
            size,
            done,
            new_key_uid: new_key_uid.to_owned(),
            new_digest: new_digest.to_owned(),
        };
        let old_digest = self.layout.digest.clone();
        let new = self.key(h, new_digest, self.keys.new, "new")?;
        self.report(&state(done));
        if done < size {
            let old = self.key(h, &old_digest, self.keys.current, "volume's current")?;
            // The new key's identifier names the run: a journal left by another rekey
            // never matches.
            if let Some(o) =
                self.journaled(h, new_key_uid, Some(&*old), Some(&*new), done, &state)?
            {
                return Ok(o);
            }
        }
        // Every sector is under the new key: wipe the journal and the old keyslots, then
        // one commit makes the new key the volume's.
        zero(hdr, JOURNAL_OFFSET, JOURNAL_END)?;
        let m = &mut h.metadata;
        let old_slots: Vec<String> = m
            .digests
            .get(&old_digest)
            .map(|d| d.keyslots.clone())
            .unwrap_or_default();
        for k in &old_slots {
            if let Some(slot) = m.keyslots.get(k) {
                let (a, l) = (slot.area.offset, slot.area.size);
                zero(hdr, a, a + l)?;
            }
        }
        sync(hdr)?;
        let m = &mut h.metadata;
        for k in &old_slots {
            m.keyslots.remove(k);
        }
        m.digests.remove(&old_digest);
        let mut slots = Vec::new();
        if let Some(d) = m.digests.get_mut(new_digest) {
            d.segments = vec!["0".into()];
            slots = d.keyslots.clone();
        }
        token::set_uid(&mut h.metadata, new_key_uid);
        token::set_keyslots(&mut h.metadata, &slots);
        commit(hdr, h, None, self.rk)?;
        if let Some(gate) = self.gate {
            gate.finished();
        }
        Ok(Outcome::Finished)
    }
}

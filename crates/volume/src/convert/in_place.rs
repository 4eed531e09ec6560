//! Converting the data where it lies, one hot zone at a time: before a zone is rewritten,
//! the checksums of its old content and a record are made durable in the journal
//! (invariant 2 for data that does not move; `journal` says why checksums suffice). The
//! journaled loop serves the deep rekey ([`super::rekey`]) and encrypt and decrypt with a
//! detached header, whose data device has no room to move into; the journal lives on the
//! header's device.

use super::disk::{io, sync, write, zero};
use super::pipeline::{forward_chunks, pipeline};
use super::run::{step_len, Step};
use super::state::{commit, Conversion, Kind};
use super::{journal, park, ConvertError, Outcome};
use crate::layout::{JOURNAL_END, JOURNAL_OFFSET, MAX_HOTZONE};
use crate::luks2::header::Header;
use crate::xts::Xts;

impl Step<'_> {
    /// In place, forward from `done`, one journaled hot zone at a time: `from` removes the
    /// old encryption (`None`: the data is plaintext), `to` applies the new one (`None`: to
    /// plaintext); `state(done)` is what each step commits. `Some` when stopped.
    pub(super) fn journaled(
        &mut self,
        h: &mut Header,
        run_id: &str,
        from: Option<&Xts>,
        to: Option<&Xts>,
        done: u64,
        state: &dyn Fn(u64) -> Conversion,
    ) -> Result<Option<Outcome>, ConvertError> {
        let (hdr, dev) = (self.hdr, self.dev);
        let data = self.layout.data;
        let (off, ss) = (data.offset, data.sector_size);
        let hot = step_len(self.opts, MAX_HOTZONE, ss);
        let transform = |b: &mut [u8], at: u64| {
            if let Some(x) = from {
                x.decrypt(b, ss as usize, data.tweak(at));
            }
            if let Some(x) = to {
                x.encrypt(b, ss as usize, data.tweak(at));
            }
        };
        // The step's transform reversed. XTS treats each 16-byte block of a sector on its
        // own, so a sector torn between old and new gives back the old content of its new
        // blocks (and garbage for the old ones, which `recover` takes from the disk).
        let undo = |b: &mut [u8], at: u64| {
            if let Some(x) = to {
                x.decrypt(b, ss as usize, data.tweak(at));
            }
            if let Some(x) = from {
                x.encrypt(b, ss as usize, data.tweak(at));
            }
        };
        let checksums = journal::Checksums::new(self.rk)?;
        let record = |pos: u64, len: u64, sums: &[u8]| journal::Record {
            run: run_id.to_owned(),
            pos,
            len,
            sha256: park::sha256_hex(sums),
            checksums: Some(journal::CHECKSUM_BLOCK as u32),
            mac: String::new(),
        };
        let mut now = state(done);
        let size = now.size();
        // The hot zone a crash interrupted is redone from its old content: the disk's may
        // be half old, half new, and the journal says which block is which (or, from a
        // record of an earlier format, holds the old content itself).
        if let Some((rec, saved)) = journal::load(hdr, run_id, done, self.rk)?
            .filter(|(r, _)| r.len > 0 && done + r.len <= size)
        {
            let mut redo = || -> Result<u64, ConvertError> {
                let at = off + done;
                let mut b = match &saved {
                    journal::Saved::Old(old) => old.clone(),
                    journal::Saved::Checksums(sums) => {
                        let mut disk = vec![0u8; rec.len as usize];
                        dev.read_at(&mut disk, at).map_err(io(at))?;
                        let mut undone = disk.clone();
                        undo(&mut undone, done);
                        checksums.recover(&disk, &undone, sums, at)?
                    }
                };
                transform(&mut b, done);
                write(dev, &b, at)?;
                sync(dev)?;
                now = state(done + rec.len);
                commit(hdr, h, Some(&now), self.rk)?;
                Ok(now.done())
            };
            match self.gate {
                Some(gate) => gate.step(&mut redo)?,
                None => redo()?,
            };
            self.report(&now);
        }
        let chunks = forward_chunks(now.done(), size, hot, off);
        let mut stopped = None;
        if let Some(gate) = self.gate {
            // In use: one step at a time, each read and rewritten while the volume's I/O
            // is held off (no read-ahead: an export could write a chunk read ahead).
            let mut buf = Vec::new();
            for c in &chunks {
                if let Some(o) = self.stopped(&now) {
                    return Ok(Some(o));
                }
                let mut step = || -> Result<u64, ConvertError> {
                    buf.resize(c.len as usize, 0);
                    dev.read_at(&mut buf, c.at).map_err(io(c.at))?;
                    let sums = checksums.of(&buf);
                    journal::save(hdr, &record(c.logical, c.len, &sums), &sums, self.rk)?;
                    transform(&mut buf, c.logical);
                    write(dev, &buf, c.at)?;
                    sync(dev)?;
                    let next = state(c.logical + c.len);
                    commit(hdr, h, Some(&next), self.rk)?;
                    now = next;
                    Ok(c.logical + c.len)
                };
                gate.step(&mut step)?;
                self.report(&now);
            }
            return Ok(None);
        }
        // Each hot zone: the checksums of its old content to the journal (synced; the
        // reader thread computes them while this one writes the zone before), then the
        // new content in place (synced), then the commit.
        let summarise = |b: &[u8]| checksums.of(b);
        pipeline(
            dev,
            &chunks,
            Some(&summarise),
            &transform,
            &mut |c, sums, out| {
                if let Some(o) = self.stopped(&now) {
                    stopped = Some(o);
                    return Ok(false);
                }
                let sums = sums.unwrap_or_default();
                journal::save(hdr, &record(c.logical, c.len, sums), sums, self.rk)?;
                write(dev, out, c.at)?;
                sync(dev)?;
                now = state(c.logical + c.len);
                commit(hdr, h, Some(&now), self.rk)?;
                self.report(&now);
                Ok(true)
            },
        )?;
        Ok(stopped)
    }

    /// Encrypt (`encrypt`) or decrypt with a detached header: the data stays where it is.
    pub(super) fn in_place(
        &mut self,
        h: &mut Header,
        encrypt: bool,
        size: u64,
        done: u64,
    ) -> Result<Outcome, ConvertError> {
        let hdr = self.hdr;
        let kind = if encrypt {
            Kind::Encrypt
        } else {
            Kind::Decrypt
        };
        let state = |done| {
            if encrypt {
                Conversion::EncryptInPlace { size, done }
            } else {
                Conversion::DecryptInPlace { size, done }
            }
        };
        let run_id = format!("{}:{}", kind.as_str(), h.binary.uuid);
        // The key proves the header before anything is written. A decryption with every
        // byte converted is the exception: what remains is wiping the header file itself
        // (its keyslots may already be gone), and the data device is not written again.
        let xts = match (encrypt, done < size) {
            (false, false) => None,
            _ => Some(self.key(h, &self.layout.digest, self.keys.current, "volume's")?),
        };
        self.report(&state(done));
        if let Some(xts) = xts.as_ref().filter(|_| done < size) {
            let (from, to) = if encrypt {
                (None, Some(&**xts))
            } else {
                (Some(&**xts), None)
            };
            if let Some(o) = self.journaled(h, &run_id, from, to, done, &state)? {
                return Ok(o);
            }
        }
        zero(hdr, JOURNAL_OFFSET, JOURNAL_END)?;
        sync(hdr)?;
        if encrypt {
            commit(hdr, h, None, self.rk)?;
            if let Some(gate) = self.gate {
                gate.finished();
            }
        } else {
            // Every sector is plaintext: from here the volume in use needs no key, even
            // if wiping the header file fails.
            if let Some(gate) = self.gate {
                gate.finished();
            }
            // The data is plaintext again: the header file has nothing left to say. The
            // keyslots go first, the two header copies last, so a crash before the end
            // leaves a copy that still says "finished" and leads here again.
            let len = hdr.len().map_err(io(0))?;
            let headers_end = 2 * h.binary.hdr_size;
            zero(hdr, headers_end, len)?;
            sync(hdr)?;
            zero(hdr, 0, headers_end)?;
            sync(hdr)?;
        }
        Ok(Outcome::Finished)
    }
}

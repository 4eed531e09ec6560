//! Converting the data where it lies, one hot zone at a time: before a zone is rewritten,
//! its old content and a record are made durable in the journal (invariant 2 for data
//! that does not move). The journaled loop serves the deep rekey ([`super::rekey`]) and
//! encrypt and decrypt with a detached header, whose data device has no room to move
//! into; the journal lives on the header's device.

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
        let mut now = state(done);
        let size = now.size();
        // The hot zone a crash interrupted is redone from the journal's copy of its old
        // content: the disk's may be half old, half new.
        if let Some(mut b) = journal::load(hdr, run_id, done, self.rk)?
            .filter(|d| !d.is_empty() && done + d.len() as u64 <= size)
        {
            let mut redo = || -> Result<u64, ConvertError> {
                transform(&mut b, done);
                write(dev, &b, off + done)?;
                sync(dev)?;
                now = state(done + b.len() as u64);
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
                    let rec = journal::Record {
                        run: run_id.to_owned(),
                        pos: c.logical,
                        len: c.len,
                        sha256: park::sha256_hex(&buf),
                        mac: String::new(),
                    };
                    journal::save(hdr, &rec, &buf, self.rk)?;
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
        // Each hot zone: its old content to the journal (synced), then the new content in
        // place (synced), then the commit.
        pipeline(dev, &chunks, true, &transform, &mut |c, source, out| {
            if let Some(o) = self.stopped(&now) {
                stopped = Some(o);
                return Ok(false);
            }
            let source = source.unwrap_or_default();
            let rec = journal::Record {
                run: run_id.to_owned(),
                pos: c.logical,
                len: c.len,
                sha256: park::sha256_hex(source),
                mac: String::new(),
            };
            journal::save(hdr, &rec, source, self.rk)?;
            write(dev, out, c.at)?;
            sync(dev)?;
            now = state(c.logical + c.len);
            commit(hdr, h, Some(&now), self.rk)?;
            self.report(&now);
            Ok(true)
        })?;
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

//! Encrypt and decrypt with the header on the volume: the data moves by the header area
//! (16 MiB), in chunks no larger than that, towards already-converted space, so a chunk's
//! source is never its own or a later chunk's destination (invariant 2), and the first
//! bytes, whose place the header takes, wait in the park at the device's end. Here too
//! are the two steps the park record drives when there is no header to ask: writing
//! encrypt's header, and restoring decrypt's first bytes.

use super::auth::RecordKey;
use super::begin::{check_plan, plan_options};
use super::disk::{io, read, sync, write, zero};
use super::park::{self, Record};
use super::pipeline::{forward_chunks, pipeline, Chunk};
use super::run::{step_len, Step};
use super::state::{commit, Conversion, Kind, Park, Parked};
use super::{ConvertError, Outcome};
use crate::backend::BlockBackend;
use crate::layout::RECORD_LEN;
use crate::luks2::header::Header;
use crate::volume::{new_header, VolumeError};

impl Step<'_> {
    /// Runs `chunks` through the pipeline from state `now`: each is written at
    /// `dest(chunk)` and synced, then `next(chunk)` is committed. `Some` when stopped on
    /// request.
    fn convert(
        &mut self,
        h: &mut Header,
        mut now: Conversion,
        chunks: &[Chunk],
        transform: &(dyn Fn(&mut [u8], u64) + Sync),
        next: &dyn Fn(&Chunk) -> Conversion,
        dest: &dyn Fn(&Chunk) -> u64,
    ) -> Result<Option<Outcome>, ConvertError> {
        let dev = self.dev;
        let mut stopped = None;
        pipeline(dev, chunks, None, transform, &mut |c, _, out| {
            if let Some(o) = self.stopped(&now) {
                stopped = Some(o);
                return Ok(false);
            }
            write(dev, out, dest(c))?;
            sync(dev)?;
            now = next(c);
            commit(self.hdr, h, Some(&now), self.rk)?;
            self.report(&now);
            Ok(true)
        })?;
        Ok(stopped)
    }

    /// Backward from the end: chunk `[low - c, low)` of the plaintext goes, encrypted, to
    /// `data_offset + low - c`; the last chunk comes from the park.
    pub(super) fn encrypt(
        &mut self,
        h: &mut Header,
        size: u64,
        done: u64,
        park: Park,
        sha256: &str,
    ) -> Result<Outcome, ConvertError> {
        let dev = self.dev;
        let data = self.layout.data;
        let (off, ss) = (data.offset, data.sector_size);
        let chunk = step_len(self.opts, off, ss);
        let state = |done| Conversion::Encrypt {
            size,
            done,
            park,
            sha256: sha256.to_owned(),
        };
        // The key proves the header before anything is written, even when only the final
        // wipes remain.
        let xts = self.key(h, &self.layout.digest, self.keys.current, "volume's")?;
        self.report(&state(done));
        if done < size {
            let mut chunks = Vec::new();
            let mut low = size - done;
            while low > park.len {
                let c = chunk.min(low - park.len);
                chunks.push(Chunk {
                    at: low - c,
                    len: c,
                    logical: low - c,
                    sha256: None,
                });
                low -= c;
            }
            if low > 0 {
                chunks.push(Chunk {
                    at: park.offset,
                    len: park.len,
                    logical: 0,
                    sha256: Some(sha256.to_owned()),
                });
            }
            let transform = |b: &mut [u8], at: u64| xts.encrypt(b, ss as usize, data.tweak(at));
            let next = |c: &Chunk| state(size - c.logical);
            let dest = |c: &Chunk| off + c.logical;
            if let Some(o) = self.convert(h, state(done), &chunks, &transform, &next, &dest)? {
                return Ok(o);
            }
        }
        // Wipe what the plaintext left in the header area and the park, drop the tail of
        // a file, then lift the fence. Each of these may run again after a crash.
        zero(dev, self.layout.slots_end, off)?;
        let len = dev.len().map_err(io(0))?;
        let end = off + size;
        if len <= end {
            // An earlier run got as far as dropping the tail.
        } else if dev.resizable() {
            zero(dev, park.offset, park.offset + park.len)?;
            sync(dev)?;
            dev.set_len(end).map_err(io(end))?;
        } else {
            zero(dev, len - RECORD_LEN, len)?;
            sync(dev)?;
            zero(dev, end, len - RECORD_LEN)?;
        }
        sync(dev)?;
        commit(dev, h, None, self.rk)?;
        Ok(Outcome::Finished)
    }

    /// Forward: first the first bytes go to the park, then chunk `[done, done + c)` comes
    /// down from `data_offset + done`, decrypted; last, the park returns to the start.
    pub(super) fn decrypt(
        &mut self,
        h: &mut Header,
        size: u64,
        park: Park,
        parked: Option<Parked>,
    ) -> Result<Outcome, ConvertError> {
        let dev = self.dev;
        let data = self.layout.data;
        let (off, ss) = (data.offset, data.sector_size);
        let chunk = step_len(self.opts, off, ss);
        let done = parked.as_ref().map_or(0, |p| p.done);
        self.report(&Conversion::Decrypt {
            size,
            park,
            parked: parked.clone(),
        });
        if done < size {
            let xts = self.key(h, &self.layout.digest, self.keys.current, "volume's")?;
            let parked = match parked {
                Some(p) => p,
                None => {
                    let mut first = read(dev, park.len, off)?.to_vec();
                    xts.decrypt(&mut first, ss as usize, data.tweak(0));
                    write(dev, &first, park.offset)?;
                    sync(dev)?;
                    let sha256 = park::sha256_hex(&first);
                    let rec = Record {
                        kind: Kind::Decrypt,
                        size,
                        data_offset: off,
                        park_len: park.len,
                        sha256: sha256.clone(),
                        header: None,
                        key_uid: self.layout.token.as_ref().map(|t| t.key_uid.clone()),
                        mac: String::new(),
                    }
                    .sealed(self.rk)?;
                    write(
                        dev,
                        &park::encode(&rec).map_err(io(0))?,
                        park.offset + park.len,
                    )?;
                    sync(dev)?;
                    let p = Parked {
                        done: park.len,
                        sha256,
                    };
                    let now = Conversion::Decrypt {
                        size,
                        park,
                        parked: Some(p.clone()),
                    };
                    commit(dev, h, Some(&now), self.rk)?;
                    self.report(&now);
                    p
                }
            };
            let state = |done| Conversion::Decrypt {
                size,
                park,
                parked: Some(Parked {
                    done,
                    sha256: parked.sha256.clone(),
                }),
            };
            let chunks = forward_chunks(parked.done, size, chunk, off);
            let transform = |b: &mut [u8], at: u64| xts.decrypt(b, ss as usize, data.tweak(at));
            let next = |c: &Chunk| state(c.logical + c.len);
            let dest = |c: &Chunk| c.logical;
            if let Some(o) =
                self.convert(h, state(parked.done), &chunks, &transform, &next, &dest)?
            {
                return Ok(o);
            }
        }
        let rec = park::read(dev)?.ok_or(ConvertError::ParkDamaged {
            offset: park.offset,
            len: park.len,
        })?;
        restore(dev, &rec, self.rk)?;
        Ok(Outcome::Finished)
    }
}

/// Encrypt before its header exists: checks the park, then writes the header (with the
/// conversion state) where the parked bytes were.
pub(super) fn write_encrypt_header(
    dev: &dyn BlockBackend,
    rec: &Record,
    secret: &[u8],
) -> Result<(), ConvertError> {
    let plan = rec
        .header
        .as_ref()
        .ok_or_else(|| VolumeError::Invalid("encrypt's park record has no header plan".into()))?;
    check_plan(plan)?;
    let rk = RecordKey::derive(secret)?;
    rec.verify(&rk)?;
    let len = dev.len().map_err(io(0))?;
    let at = park::park_at(len, rec)?;
    if park::sha256_hex(&read(dev, rec.park_len, at)?) != rec.sha256 {
        return Err(ConvertError::ParkDamaged {
            offset: at,
            len: rec.park_len,
        });
    }
    let opts = plan_options(plan, Some(rec.size), false);
    let mut h = new_header(dev, secret, &opts)?;
    let s = Conversion::Encrypt {
        size: rec.size,
        done: 0,
        park: Park {
            offset: at,
            len: rec.park_len,
        },
        sha256: rec.sha256.clone(),
    };
    commit(dev, &mut h, Some(&s), &rk)
}

/// Decrypt's last step, when the header is gone or about to go: the parked plaintext
/// returns to the start, then the tail is dropped (a file) or wiped record first (a block
/// device, so a crash in the wipe never leaves a record over a half-wiped park).
pub(super) fn restore(
    dev: &dyn BlockBackend,
    rec: &Record,
    rk: &RecordKey,
) -> Result<(), ConvertError> {
    rec.verify(rk)?;
    let len = dev.len().map_err(io(0))?;
    let at = park::park_at(len, rec)?;
    let first = read(dev, rec.park_len, at)?;
    if park::sha256_hex(&first) != rec.sha256 {
        return Err(ConvertError::ParkDamaged {
            offset: at,
            len: rec.park_len,
        });
    }
    write(dev, &first, 0)?;
    sync(dev)?;
    if dev.resizable() {
        dev.set_len(rec.size).map_err(io(rec.size))?;
    } else {
        zero(dev, len - RECORD_LEN, len)?;
        sync(dev)?;
        zero(dev, rec.size, len - RECORD_LEN)?;
        sync(dev)?;
    }
    Ok(())
}

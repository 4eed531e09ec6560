//! Running (or resuming) the conversion a device holds, in the order `docs/journal.md`
//! proves safe. [`run`] finds the state (the validated header or, with no header to ask,
//! the park record), verifies it under the key, and hands it to the loop of its kind:
//! [`super::moving`] (encrypt and decrypt by moving the data), [`super::in_place`] (the
//! same with a detached header) or [`super::rekey`]. [`Step`] is what those loops share.
//!
//! Every loop either completes a step and commits it, or returns an error having committed
//! nothing new: the header then still describes the durable data. Nothing is written
//! before the header has been validated and a key proven against its digest (or, with no
//! header to ask, the park record's checksum verified).

use std::sync::atomic::{AtomicBool, Ordering};

use super::auth::RecordKey;
use super::inspect::read_layout;
use super::moving::{restore, write_encrypt_header};
use super::state::{Conversion, Kind};
use super::{park, ConvertError, Devices, Keys, Options, Outcome, Progress};
use crate::backend::BlockBackend;
use crate::luks2::header::{self, Header};
use crate::luks2::validate::Layout;
use crate::volume::{volume_key, VolumeError};
use crate::xts::Xts;

/// The record key of a run: derived from the secret the conversion cannot do without (the
/// new key for a rekey, the volume's key otherwise).
fn record_key(kind: Kind, keys: Keys<'_>) -> Result<RecordKey, ConvertError> {
    let secret = match kind {
        Kind::Rekey => keys.new.ok_or(ConvertError::KeyNeeded("new"))?,
        _ => keys.current.ok_or(ConvertError::KeyNeeded("volume's"))?,
    };
    RecordKey::derive(secret)
}

/// Runs (or resumes) the conversion in progress on `dev` until it finishes or `stop` is
/// set; `progress` hears of every committed step.
pub fn run(
    d: Devices<'_>,
    keys: Keys<'_>,
    opts: Options,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<Outcome, ConvertError> {
    run_with(d, keys, opts, stop, progress, None)
}

/// [`run`] for a volume in use, each step under `gate` (the unlocked volume the exports
/// use, made to follow the conversion with [`super::follow`]): a deep rekey, or an encrypt
/// or decrypt with a detached header. Encrypt and decrypt with the header on the volume
/// are refused ([`ConvertError::NotOnline`]): they move the data, which an export cannot
/// follow.
pub fn run_online(
    d: Devices<'_>,
    keys: Keys<'_>,
    opts: Options,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
    gate: &dyn super::Gate,
) -> Result<Outcome, ConvertError> {
    run_with(d, keys, opts, stop, progress, Some(gate))
}

fn run_with(
    d: Devices<'_>,
    keys: Keys<'_>,
    opts: Options,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
    gate: Option<&dyn super::Gate>,
) -> Result<Outcome, ConvertError> {
    let dev = d.data;
    let (mut h, l) = match header::read(d.header) {
        Ok(_) => read_layout(d)?,
        Err(e) if d.is_detached() => return Err(e.into()),
        Err(e) => match park::read(dev)? {
            Some(rec) if rec.kind == Kind::Encrypt => {
                write_encrypt_header(
                    dev,
                    &rec,
                    keys.current.ok_or(ConvertError::KeyNeeded("volume's"))?,
                )?;
                read_layout(d)?
            }
            Some(rec) => {
                restore(dev, &rec, &record_key(rec.kind, keys)?)?;
                progress(Progress {
                    kind: Kind::Decrypt,
                    done: rec.size,
                    total: rec.size,
                });
                return Ok(Outcome::Finished);
            }
            None => return Err(e.into()),
        },
    };
    let s = match l.in_progress() {
        Some(Some(_)) => l
            .conversion()
            .cloned()
            .ok_or(ConvertError::NothingInProgress)?,
        Some(None) => return Err(VolumeError::ConversionInProgress { kind: None }.into()),
        None => return Err(ConvertError::NothingInProgress),
    };
    // Nothing the state says is acted on before its tag verifies under the key. A key
    // that is simply not the volume's is named as such first (the digest says so without
    // trusting the state), so an operator's mix-up does not read as an attack.
    if gate.is_some()
        && matches!(
            s.conversion,
            Conversion::Encrypt { .. } | Conversion::Decrypt { .. }
        )
    {
        return Err(ConvertError::NotOnline(s.conversion.kind()));
    }
    let rk = record_key(s.conversion.kind(), keys)?;
    prove_key(d.header, &h, &l, &s.conversion, keys)?;
    rk.verify_state(&h, &s)?;
    let mut cx = Step {
        hdr: d.header,
        dev,
        layout: &l,
        rk: &rk,
        keys,
        opts,
        stop,
        progress,
        gate,
    };
    match s.conversion {
        Conversion::Encrypt {
            size,
            done,
            park,
            sha256,
        } => cx.encrypt(&mut h, size, done, park, &sha256),
        Conversion::Decrypt { size, park, parked } => cx.decrypt(&mut h, size, park, parked),
        Conversion::EncryptInPlace { size, done } => cx.in_place(&mut h, true, size, done),
        Conversion::DecryptInPlace { size, done } => cx.in_place(&mut h, false, size, done),
        Conversion::Rekey {
            size,
            done,
            new_key_uid,
            new_digest,
        } => cx.rekey(&mut h, size, done, &new_key_uid, &new_digest),
    }
}

/// Checks the key a run's record key comes from against its digest (read only). A
/// finished decryption is the exception: with a detached header its keyslots may already
/// be wiped, and the record's tag is what proves the key.
fn prove_key(
    dev: &dyn BlockBackend,
    h: &Header,
    l: &Layout,
    c: &Conversion,
    keys: Keys<'_>,
) -> Result<(), ConvertError> {
    let (digest, secret) = match c {
        Conversion::Rekey { new_digest, .. } if h.metadata.digests.contains_key(new_digest) => {
            (new_digest.as_str(), keys.new)
        }
        Conversion::Rekey { .. } => return Ok(()),
        _ if c.kind() == Kind::Decrypt && c.done() >= c.size() => return Ok(()),
        _ => (l.digest.as_str(), keys.current),
    };
    let secret = secret.ok_or(ConvertError::KeyNeeded("volume's"))?;
    volume_key(dev, &h.metadata, digest, secret)?;
    Ok(())
}

/// What every conversion loop works with, fixed for the run.
pub(super) struct Step<'a> {
    /// Where the header (and a journal) lives.
    pub(super) hdr: &'a dyn BlockBackend,
    /// Where the data lives (the same device unless the header is detached).
    pub(super) dev: &'a dyn BlockBackend,
    /// The validated header as the run found it.
    pub(super) layout: &'a Layout,
    /// Tags every state committed and every record written, verifies those read.
    pub(super) rk: &'a RecordKey,
    pub(super) keys: Keys<'a>,
    pub(super) opts: Options,
    stop: &'a AtomicBool,
    progress: &'a mut dyn FnMut(Progress),
    /// The volume in use, when the conversion runs online: each step runs under it.
    pub(super) gate: Option<&'a dyn super::Gate>,
}

impl Step<'_> {
    pub(super) fn report(&mut self, s: &Conversion) {
        (self.progress)(Progress {
            kind: s.kind(),
            done: s.done(),
            total: s.size(),
        });
    }

    /// `Some` when a stop was asked for: the loops look before each step, so a run stops
    /// only at a committed point.
    pub(super) fn stopped(&self, s: &Conversion) -> Option<Outcome> {
        self.stop
            .load(Ordering::SeqCst)
            .then_some(Outcome::Stopped(Progress {
                kind: s.kind(),
                done: s.done(),
                total: s.size(),
            }))
    }

    /// The cipher of the volume key that `secret` opens through `digest`; an error names
    /// `which` key is missing.
    pub(super) fn key(
        &self,
        h: &Header,
        digest: &str,
        secret: Option<&[u8]>,
        which: &'static str,
    ) -> Result<secmem::Locked<Xts>, ConvertError> {
        let secret = secret.ok_or(ConvertError::KeyNeeded(which))?;
        Ok(crate::volume::key_schedule(&volume_key(
            self.hdr,
            &h.metadata,
            digest,
            secret,
        )?)?)
    }
}

/// Bytes per step: the requested chunk, at most `limit` (what the loop's invariant
/// allows), at least one sector, a whole number of sectors.
pub(super) fn step_len(opts: Options, limit: u64, ss: u32) -> u64 {
    let ss = u64::from(ss);
    opts.chunk.min(limit).max(ss) / ss * ss
}

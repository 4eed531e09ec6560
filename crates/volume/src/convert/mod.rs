//! Converting a volume in place: `encrypt` (plaintext → atrest volume, the data moved up by
//! the header area), `decrypt` (the reverse) and `rekey` (every sector re-encrypted under a
//! new volume key), each crash-safe and resumable. `docs/journal.md` states the design; in
//! short, the invariants every step keeps are:
//!
//! 1. What the header commits ([`state::Conversion::done`]) is always true of the durable data: every
//!    converted byte is durable in its new place before `done` counts it.
//! 2. Nothing that a redo of the next step needs is overwritten before that step starts:
//!    encrypt and decrypt move data by the header area (16 MiB) in chunks no larger than
//!    that, towards already-converted space, so a chunk's source is never its own or a
//!    later chunk's destination; a rekey rewrites data in place, so its hot zone's old
//!    ciphertext is first made durable in a journal.
//! 3. The first bytes of the plaintext, whose place the header takes, are parked at the
//!    end of the device behind a self-checking record before the header is written
//!    (encrypt), or before anything else moves (decrypt); the record alone says what to do
//!    when there is no header to ask.
//! 4. While a conversion runs, the header carries the mandatory requirement
//!    [`state::REQUIREMENT`], so stock cryptsetup refuses to open the half-converted volume
//!    and atrest's own [`crate::volume::unlock`] sends the operator back to finish it.
//!
//! Stopping (Ctrl-C) happens only between steps, at a committed point.
//!
//! Where things are: [`inspect()`] says what a device holds; `begin` starts each kind;
//! [`run()`] resumes whatever runs and hands it to its loop (`moving`: encrypt and decrypt
//! by moving the data; `in_place`: the journaled loop, and encrypt and decrypt with a
//! detached header; `rekey`), each feeding its chunks through `pipeline`. The records the
//! loops rely on are [`state`] (the header's), [`park`] and [`journal`], all tagged by
//! [`auth`]. A rewrap, which moves no data, lives with the keyslot code (`crate::rewrap`)
//! and is re-exported here.

pub mod auth;
mod begin;
pub(crate) mod disk;
mod in_place;
pub(crate) mod inspect;
pub mod journal;
mod moving;
pub mod online;
pub mod park;
mod pipeline;
pub mod record;
mod rekey;
mod run;
pub mod state;

pub use crate::rewrap::rewrap;
pub use begin::{begin_decrypt, begin_encrypt, begin_encrypt_in_place, begin_rekey};
pub use inspect::inspect;
pub use online::{follow, Gate};
pub use run::{run, run_online};
pub use state::Kind;

use crate::backend::BlockBackend;
use crate::luks2::Luks2Error;
use crate::volume::VolumeError;

/// The devices a conversion works on: where the header lives and where the data lives;
/// the same device unless the header is detached (cryptsetup's `--header`).
#[derive(Clone, Copy)]
pub struct Devices<'a> {
    /// The header's device (a detached header file, or the volume itself).
    pub header: &'a dyn BlockBackend,
    /// The data's device.
    pub data: &'a dyn BlockBackend,
    detached: bool,
}

impl<'a> Devices<'a> {
    /// Header and data on one device.
    pub fn attached(dev: &'a dyn BlockBackend) -> Self {
        Self {
            header: dev,
            data: dev,
            detached: false,
        }
    }

    /// The header on its own device (at least 16 MiB), the data from byte 0 of `data`.
    pub fn detached(header: &'a dyn BlockBackend, data: &'a dyn BlockBackend) -> Self {
        Self {
            header,
            data,
            detached: true,
        }
    }

    /// True when the header has its own device.
    pub fn is_detached(&self) -> bool {
        self.detached
    }
}

/// Tuning of a conversion run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Bytes per step. Encrypt and decrypt clamp it to the data offset (invariant 2), a rekey
    /// to [`crate::layout::MAX_HOTZONE`]. Larger steps mean fewer header commits.
    pub chunk: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            chunk: crate::layout::DATA_OFFSET,
        }
    }
}

/// Progress after a committed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// What runs.
    pub kind: Kind,
    /// Bytes converted and committed.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The conversion is complete; the volume (or the plaintext) is ready.
    Finished,
    /// Stopped on request at a committed point; running again continues from there.
    Stopped(Progress),
}

/// The secrets from KMIP a run needs: the key the volume is under now (`current`), and for
/// a rekey the new one.
#[derive(Clone, Copy, Default)]
pub struct Keys<'a> {
    /// The secret of the key recorded in the token.
    pub current: Option<&'a [u8]>,
    /// Rekey: the secret of the new key.
    pub new: Option<&'a [u8]>,
}

/// What a device holds, as far as conversion is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No LUKS header and no park record: plaintext (or blank).
    Plain,
    /// A finished atrest volume.
    Volume {
        /// Its KMIP key.
        key_uid: String,
        /// Wrapped or direct.
        key_mode: crate::luks2::token::KeyMode,
    },
    /// A conversion that has not finished.
    InProgress(Pending),
    /// A LUKS2 volume that atrest did not make.
    OtherLuks,
}

/// An unfinished conversion and the keys needed to finish it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// What was running.
    pub kind: Kind,
    /// The key the data is (partly) under; needed unless `needs_current` is false.
    pub key_uid: String,
    /// Whether the current key is still needed (not once every byte is converted).
    pub needs_current: bool,
    /// Rekey: the new key, always needed.
    pub new_key_uid: Option<String>,
    /// Committed progress.
    pub done: u64,
    /// Total.
    pub size: u64,
}

/// Why a conversion could not start or continue. None of these leaves data in a state
/// that running the same command again cannot finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The header, the key or the volume.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// A read, write or sync failed.
    #[error("I/O at byte {offset}: {source}; the conversion stopped at its last committed step and resumes when the command is run again")]
    Io {
        /// Where.
        offset: u64,
        /// The OS error.
        source: std::io::Error,
    },
    /// The device is not what the command converts.
    #[error("the device holds {0}")]
    Refused(String),
    /// The device has no room for what the conversion must place at its end.
    #[error("the device holds {have} bytes, and this conversion needs {need}: {hint}")]
    NoRoom {
        /// Bytes needed.
        need: u64,
        /// Bytes there.
        have: u64,
        /// What to do.
        hint: String,
    },
    /// The parked first bytes fail their checksum: media damage, or a device changed
    /// behind atrest's back. Nothing more is written.
    #[error("the parked copy of the first {len} bytes (at byte {offset}) fails its checksum; nothing more was written. Restore the device from a backup or contact support with this message")]
    ParkDamaged {
        /// Where the park is.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// Nothing to resume.
    #[error("no conversion is in progress on this device")]
    NothingInProgress,

    /// Resuming a hot zone, a 512-byte block on the disk is neither its old content (as
    /// the journal's checksums say) nor its new content: the disk changed beyond what a
    /// crash can do.
    #[error("the {len} bytes at byte {offset} of the data are neither their content before the interrupted step nor after it (the journal's checksums say so); nothing was written. Someone or something wrote the device during the conversion: keep it as it is, restore from a backup or contact support with this message")]
    ZoneDamaged {
        /// Where on the data device.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
    /// This conversion does not run while the volume is in use: encrypt and decrypt with
    /// the header on the volume move the data.
    #[error("an {} with the header on the volume cannot run while the volume is served: it moves the data by the header's size, which an export cannot follow (with a detached header it can)", .0.noun())]
    NotOnline(Kind),
    /// A different conversion holds the device.
    #[error(
        "an {} of this device is in progress: run `{}` to finish it first", running.noun(), running.command()
    )]
    OtherInProgress {
        /// What runs.
        running: Kind,
    },
    /// A record that steers the conversion does not verify under the key: forged, altered,
    /// or another key's. Nothing was written.
    #[error("{record} does not verify: {why}. Nothing was changed on the device. If no atrest run was interrupted on this device, someone who can write the disk altered it: keep the device as it is and investigate")]
    Unauthenticated {
        /// Which record.
        record: &'static str,
        /// Why it fails.
        why: &'static str,
    },
    /// The crypto library failed (not a property of the device).
    #[error("computing a conversion record's tag: {0}")]
    Crypto(String),
    /// A key the next step needs was not supplied.
    #[error("the {0} key from KMIP is needed to continue")]
    KeyNeeded(&'static str),
}

impl From<Luks2Error> for ConvertError {
    fn from(e: Luks2Error) -> Self {
        Self::Volume(e.into())
    }
}

//! Encrypt, decrypt and rekey a volume in place, start to finish: the devices opened and
//! locked, the keys created or fetched on KMIP (a new key removed again if the conversion
//! cannot start), an interrupted conversion of the same kind resumed, the old key retired
//! at the end. The conversion itself, and its crash safety, is `volume::convert`'s.

use std::path::PathBuf;
use std::time::Instant;

use kmip::enums::RevocationReasonCode;
use volume::backend::BlockBackend;
use volume::convert::park::HeaderPlan;
use volume::convert::{self, Found, Keys, Kind, Options, Outcome};
use volume::text::shown;
use volume::volume::{cipher_text, KeyMode, Status};
use zeroize::Zeroizing;

use crate::device::{Device, Location};
use crate::error::ServiceError;
use crate::keys::{KeyManager, KeyUse, RetiredKey};
use crate::progress::{Event, Observer, Stop};
use crate::refusal::{ForeignAction, Refusal};

/// The cipher of a new volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cipher {
    /// XTS-AES-128 (256-bit XTS key).
    XtsAes128,
    /// XTS-AES-256 (512-bit XTS key; wrapped mode only).
    XtsAes256,
}

impl Cipher {
    /// The volume key's length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Self::XtsAes128 => 32,
            Self::XtsAes256 => 64,
        }
    }
}

/// How a new volume is keyed (what `format` and `encrypt` share).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeySpec {
    /// Wrapped (default) or direct.
    pub mode: KeyMode,
    /// The cipher.
    pub cipher: Cipher,
    /// 512 or 4096.
    pub sector_size: u32,
    /// The key's Name on the server (default: atrest-<device file name>).
    pub key_name: Option<String>,
}

impl Default for KeySpec {
    fn default() -> Self {
        Self {
            mode: KeyMode::Wrapped,
            cipher: Cipher::XtsAes128,
            sector_size: 512,
            key_name: None,
        }
    }
}

impl KeySpec {
    /// Refuses combinations that cannot work, before anything is touched.
    pub fn check(&self) -> Result<(), ServiceError> {
        if self.mode == KeyMode::Direct && self.cipher == Cipher::XtsAes256 {
            return Err(Refusal::Aes256NeedsWrapped.into());
        }
        if ![512, 4096].contains(&self.sector_size) {
            return Err(Refusal::SectorSize(self.sector_size).into());
        }
        Ok(())
    }

    /// The key's Name for a device.
    pub fn name_for(&self, dev: &Device) -> String {
        key_name(self.key_name.as_deref(), dev)
    }
}

/// A new key's Name on the server: the one asked for, else atrest-<device file name>.
fn key_name(asked: Option<&str>, dev: &Device) -> String {
    asked.map_or_else(|| format!("atrest-{}", dev.name()), str::to_owned)
}

/// `encrypt`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EncryptRequest {
    /// The device (and detached header file, made if missing).
    pub location: Location,
    /// How to key it.
    pub key: KeySpec,
    /// Bytes at the end of a block device left unused for the header area.
    pub reduce_device_size: Option<u64>,
    /// Bytes per committed step (tests and tuning).
    pub step: Option<u64>,
}

/// `decrypt`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DecryptRequest {
    /// The volume.
    pub location: Location,
    /// Leave the volume's key Active afterwards.
    pub keep_old: bool,
    /// Bytes per committed step.
    pub step: Option<u64>,
}

/// `rekey`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RekeyRequest {
    /// The volume.
    pub location: Location,
    /// Re-encrypt every sector under a new volume key (else: rewrap).
    pub deep: bool,
    /// Leave the old KMIP key Active afterwards.
    pub keep_old: bool,
    /// The new key's Name on the server.
    pub key_name: Option<String>,
    /// Bytes per committed step.
    pub step: Option<u64>,
}

/// Where a stopped conversion stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StoppedAt {
    /// Bytes converted and committed.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// How a conversion ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConvertReport {
    /// encrypt, decrypt or rekey.
    pub operation: Kind,
    /// The data device.
    pub device: PathBuf,
    /// `None` when finished; where it stopped (on request) otherwise.
    pub stopped: Option<StoppedAt>,
    /// Wall time of this run.
    pub seconds: f64,
    /// One sentence for the operator.
    pub message: String,
    /// The header's facts afterwards (none once decrypted).
    pub status: Option<Status>,
    /// The key the volume no longer uses, and how it was left.
    pub retired: Option<RetiredKey>,
}

fn options(step: Option<u64>) -> Options {
    let mut o = Options::default();
    if let Some(s) = step {
        o.chunk = s;
    }
    o
}

fn refuse_other(p: &convert::Pending, loc: &Location) -> ServiceError {
    Refusal::ConversionInProgress {
        path: loc.path.clone(),
        kind: p.kind,
    }
    .into()
}

fn refuse_foreign(loc: &Location, action: ForeignAction) -> ServiceError {
    Refusal::ForeignLuks {
        path: loc.path.clone(),
        action,
    }
    .into()
}

/// Plaintext where `decrypt` or `rekey` needs a volume.
fn refuse_plain(loc: &Location, action: &'static str) -> ServiceError {
    Refusal::NotAVolume {
        path: loc.path.clone(),
        in_header_file: false,
        action,
    }
    .into()
}

/// The old key once a rekey of either kind has put the volume under the new one.
fn retire_replaced(
    kms: &mut KeyManager,
    uid: &str,
    keep_old: bool,
) -> Result<RetiredKey, ServiceError> {
    kms.retire(
        uid,
        RevocationReasonCode::SUPERSEDED,
        "atrest rekey: replaced",
        keep_old,
    )
}

fn resuming(obs: &mut dyn Observer, p: &convert::Pending) {
    obs.event(&Event::Resuming {
        kind: p.kind,
        done: p.done,
        total: p.size,
        key_uid: p.key_uid.clone(),
        new_key_uid: p.new_key_uid.clone(),
    });
}

/// One conversion of one device, as its reports describe it.
struct Run<'a> {
    kind: Kind,
    dev: &'a Device,
    started: Instant,
}

impl<'a> Run<'a> {
    fn new(kind: Kind, dev: &'a Device, started: Instant) -> Self {
        Self { kind, dev, started }
    }

    /// Runs the conversion in progress to its end (`None`) or to a requested stop (the
    /// report that says where it stopped and how to go on).
    fn drive(
        &self,
        keys: Keys<'_>,
        step: Option<u64>,
        obs: &mut dyn Observer,
        stop: &Stop,
    ) -> Result<Option<ConvertReport>, ServiceError> {
        self.drive_with(keys, step, obs, stop, None)
    }

    /// [`Self::drive`], each step under `gate` when the volume is in use.
    fn drive_with(
        &self,
        keys: Keys<'_>,
        step: Option<u64>,
        obs: &mut dyn Observer,
        stop: &Stop,
        gate: Option<&dyn convert::Gate>,
    ) -> Result<Option<ConvertReport>, ServiceError> {
        let mut progress = |p: convert::Progress| {
            obs.event(&Event::Progress {
                kind: p.kind,
                done: p.done,
                total: p.total,
            })
        };
        let out = match gate {
            None => convert::run(
                self.dev.devices(),
                keys,
                options(step),
                stop.flag(),
                &mut progress,
            )?,
            Some(g) => convert::run_online(
                self.dev.devices(),
                keys,
                options(step),
                stop.flag(),
                &mut progress,
                g,
            )?,
        };
        Ok(match out {
            Outcome::Finished => None,
            Outcome::Stopped(p) => {
                let s = StoppedAt {
                    done: p.done,
                    total: p.total,
                };
                let message = format!(
                    "{} stopped at a safe point, {} of {} bytes done; run `{}` again to continue",
                    self.kind.noun(),
                    s.done,
                    s.total,
                    self.kind.command()
                );
                Some(self.report(Some(s), message, None, None))
            }
        })
    }

    fn report(
        &self,
        stopped: Option<StoppedAt>,
        message: String,
        status: Option<Status>,
        retired: Option<RetiredKey>,
    ) -> ConvertReport {
        ConvertReport {
            operation: self.kind,
            device: self.dev.location.path.clone(),
            stopped,
            seconds: self.started.elapsed().as_secs_f64(),
            message,
            status,
            retired,
        }
    }
}

/// Encrypts existing data in place, or finishes an interrupted encryption.
pub fn encrypt(
    kms: &mut KeyManager,
    req: &EncryptRequest,
    obs: &mut dyn Observer,
    stop: &Stop,
) -> Result<ConvertReport, ServiceError> {
    let started = Instant::now();
    req.key.check()?;
    let loc = &req.location;
    let dev = Device::open(loc, true)?;
    let run = Run::new(Kind::Encrypt, &dev, started);
    let secret: Zeroizing<Vec<u8>> = match convert::inspect(dev.devices())? {
        Found::Plain => start_encrypt(&dev, kms, req)?,
        Found::InProgress(p) if p.kind == Kind::Encrypt => {
            resuming(obs, &p);
            kms.fetch_usable(&p.key_uid)?
        }
        Found::InProgress(p) => return Err(refuse_other(&p, loc)),
        Found::Volume { key_uid, .. } => {
            return Err(Refusal::AlreadyEncrypted {
                path: loc.path.clone(),
                key_uid,
            }
            .into())
        }
        Found::OtherLuks => return Err(refuse_foreign(loc, ForeignAction::Encrypt)),
    };
    let keys = Keys {
        current: Some(&secret),
        new: None,
    };
    if let Some(stopped) = run.drive(keys, req.step, obs, stop)? {
        return Ok(stopped);
    }
    encrypted(&run, &dev, "encrypted")
}

/// A finished encryption's report, from the volume's header (`done` says how it ran).
fn encrypted(run: &Run<'_>, dev: &Device, done: &str) -> Result<ConvertReport, ServiceError> {
    let s = dev.status()?;
    let message = format!(
        "{done}: {} bytes of data, {}, {} mode, KMIP key {}",
        s.data_size,
        cipher_text(s.key_bits),
        s.key_mode,
        s.key_uid
    );
    Ok(run.report(None, message, Some(s), None))
}

/// Checks a plaintext device, creates the key and records it (park record or header file)
/// before any data moves; the key is removed again if that fails.
fn start_encrypt(
    dev: &Device,
    kms: &mut KeyManager,
    req: &EncryptRequest,
) -> Result<Zeroizing<Vec<u8>>, ServiceError> {
    let loc = &req.location;
    let io = |error| ServiceError::Io {
        what: "reading",
        path: loc.path.clone(),
        error,
    };
    let len = dev.data.len().map_err(io)?;
    if loc.header.is_some() {
        if req.reduce_device_size.is_some() {
            return Err(Refusal::HeaderWithReduce.into());
        }
        if volume::luks2::header::read(dev.data.as_ref()).is_ok() {
            return Err(Refusal::HeaderOnDataDevice {
                path: loc.path.clone(),
            }
            .into());
        }
    } else if req.reduce_device_size.is_none() && !dev.data.resizable() {
        return Err(Refusal::BlockDeviceCannotGrow {
            path: loc.path.clone(),
        }
        .into());
    }
    let reduce = req.reduce_device_size.unwrap_or(0);
    if reduce >= len {
        return Err(Refusal::ReduceTooLarge { reduce, len }.into());
    }
    let size = len - reduce;
    let ss = req.key.sector_size;
    if !size.is_multiple_of(u64::from(ss)) {
        return Err(Refusal::NotWholeSectors { size, sector: ss }.into());
    }
    let key = kms.create(&req.key.name_for(dev))?;
    let plan = HeaderPlan {
        key_uid: key.uid.clone(),
        key_mode: req.key.mode,
        volume_key_len: req.key.cipher.key_len(),
        sector_size: ss,
        server_hint: key.server.clone(),
    };
    // Until the park record (or the detached header) is durable nothing refers to the
    // key: on failure it goes. After, it is named there and must stay.
    let begun = if loc.header.is_some() {
        convert::begin_encrypt_in_place(dev.devices(), &plan, &key.secret)
    } else {
        convert::begin_encrypt(dev.data.as_ref(), &plan, size, &key.secret)
    };
    match begun {
        Ok(()) => Ok(key.secret),
        Err(e) => Err(kms.discard(&key.uid, e.into())),
    }
}

/// Decrypts a volume in place, or finishes an interrupted decryption; then retires its key.
pub fn decrypt(
    kms: &mut KeyManager,
    req: &DecryptRequest,
    obs: &mut dyn Observer,
    stop: &Stop,
) -> Result<ConvertReport, ServiceError> {
    let started = Instant::now();
    let loc = &req.location;
    let dev = Device::open(loc, false)?;
    let run = Run::new(Kind::Decrypt, &dev, started);
    let (uid, secret) = match convert::inspect(dev.devices())? {
        Found::Volume { key_uid, .. } => {
            let secret = kms.fetch_usable(&key_uid)?;
            convert::begin_decrypt(dev.devices(), &secret)?;
            (key_uid, Some(secret))
        }
        Found::InProgress(p) if p.kind == Kind::Decrypt => {
            resuming(obs, &p);
            let secret = if p.needs_current {
                Some(kms.fetch_usable(&p.key_uid)?)
            } else {
                None
            };
            (p.key_uid, secret)
        }
        Found::InProgress(p) => return Err(refuse_other(&p, loc)),
        Found::Plain if loc.header.is_some() => {
            return Err(Refusal::NoHeaderInFile {
                path: loc.header.clone().unwrap_or_else(|| loc.path.clone()),
            }
            .into())
        }
        Found::Plain => return Err(refuse_plain(loc, "decrypt")),
        Found::OtherLuks => return Err(refuse_foreign(loc, ForeignAction::Decrypt)),
    };
    let keys = Keys {
        current: secret.as_deref().map(|s| &s[..]),
        new: None,
    };
    if let Some(stopped) = run.drive(keys, req.step, obs, stop)? {
        return Ok(stopped);
    }
    finish_decrypt(kms, &run, loc, &uid, req.keep_old, "decrypted")
}

/// A decryption's end, once every byte is plaintext: the wiped header file is removed, and
/// the key retired.
fn finish_decrypt(
    kms: &mut KeyManager,
    run: &Run<'_>,
    loc: &Location,
    uid: &str,
    keep_old: bool,
    done: &str,
) -> Result<ConvertReport, ServiceError> {
    if let Some(h) = &loc.header {
        // Wiped by the decryption; the file itself goes too.
        std::fs::remove_file(h).map_err(|error| ServiceError::Io {
            what: "removing the wiped header file",
            path: h.clone(),
            error,
        })?;
    }
    // The key protects nothing now. Revoked, not destroyed: a backup made while the
    // volume was encrypted still needs it.
    let retired = if uid.is_empty() {
        None
    } else {
        Some(kms.retire(
            uid,
            RevocationReasonCode::CESSATION_OF_OPERATION,
            "atrest decrypt: the volume holds plaintext",
            keep_old,
        )?)
    };
    let message = match &retired {
        Some(r) => format!(
            "{done}: the device holds plaintext again; {}",
            r.sentence().replace("the old key", "its KMIP key")
        ),
        None => format!("{done}: the device holds plaintext again"),
    };
    Ok(run.report(None, message, None, retired))
}

/// An encrypt of a plaintext volume that is in use (`serve_plaintext`), with a detached
/// header: `dev` is the device its worker holds and `vol` the plaintext its exports read
/// and write. The key is created, the header written (nothing of the data changes), then
/// the data is encrypted in place while `vol` follows the boundary, each step with its
/// I/O held off. With the header on the volume the data moves, which an export cannot
/// follow: refused here, and the daemon runs that one with the exports closed.
pub fn encrypt_held(
    kms: &mut KeyManager,
    dev: &mut Device,
    vol: &volume::volume::Unlocked,
    key: &KeySpec,
    step: Option<u64>,
    obs: &mut dyn Observer,
    stop: &Stop,
) -> Result<ConvertReport, ServiceError> {
    let started = Instant::now();
    key.check()?;
    if !dev.has_detached_header() {
        return Err(convert::ConvertError::NotOnline(Kind::Encrypt).into());
    }
    dev.open_header()?;
    let req = EncryptRequest {
        location: dev.location.clone(),
        key: key.clone(),
        reduce_device_size: None,
        step,
    };
    let secret = match convert::inspect(dev.devices())? {
        Found::Plain => start_encrypt(dev, kms, &req)?,
        Found::Volume { key_uid, .. } => {
            return Err(Refusal::AlreadyEncrypted {
                path: dev.location.path.clone(),
                key_uid,
            }
            .into())
        }
        Found::InProgress(p) => return Err(refuse_other(&p, &dev.location)),
        Found::OtherLuks => return Err(refuse_foreign(&dev.location, ForeignAction::Encrypt)),
    };
    let dev = &*dev;
    let run = Run::new(Kind::Encrypt, dev, started);
    convert::follow(vol, dev.devices(), Some(&secret))?;
    let keys = Keys {
        current: Some(&secret),
        new: None,
    };
    if let Some(stopped) = run.drive_with(keys, step.or(Some(ONLINE_STEP)), obs, stop, Some(vol))? {
        return Ok(stopped);
    }
    encrypted(&run, dev, "encrypted while serving")
}

/// A decrypt of a volume that is in use (with a detached header, and `serve_plaintext`):
/// the data is decrypted in place while `vol` follows the boundary; at the end `vol` is
/// plaintext, the header file is wiped and removed, and the key retired.
#[allow(clippy::too_many_arguments)]
pub fn decrypt_held(
    kms: &mut KeyManager,
    dev: &mut Device,
    vol: &volume::volume::Unlocked,
    key_uid: &str,
    keep_old: bool,
    step: Option<u64>,
    obs: &mut dyn Observer,
    stop: &Stop,
) -> Result<ConvertReport, ServiceError> {
    let started = Instant::now();
    if !dev.has_detached_header() || dev.header.is_none() {
        return Err(convert::ConvertError::NotOnline(Kind::Decrypt).into());
    }
    let secret = kms.fetch_usable(key_uid)?;
    {
        let run = Run::new(Kind::Decrypt, dev, started);
        convert::begin_decrypt(dev.devices(), &secret)?;
        convert::follow(vol, dev.devices(), None)?;
        let keys = Keys {
            current: Some(&secret),
            new: None,
        };
        if let Some(stopped) =
            run.drive_with(keys, step.or(Some(ONLINE_STEP)), obs, stop, Some(vol))?
        {
            return Ok(stopped);
        }
    }
    // The header file is wiped; it is removed below, and not held any more.
    dev.header = None;
    let run = Run::new(Kind::Decrypt, dev, started);
    // The data is plaintext and served so: what fails now (the file's removal, the key's
    // retirement) is for the operator to finish, not a failed decrypt.
    Ok(finish_decrypt(
        kms,
        &run,
        &dev.location,
        key_uid,
        keep_old,
        "decrypted while serving",
    )
    .unwrap_or_else(|e| {
        run.report(
            None,
            format!(
                "decrypted while serving: the device holds plaintext again, but the rest failed: {e}. Remove the header file if it is still there, and revoke the key with `atrest kmip revoke {key_uid}`"
            ),
            None,
            None,
        )
    }))
}

/// The rewrap of a volume whose device is open already, `dev` (the daemon's, while its
/// exports keep serving: only the header's keyslot area and its two header copies are
/// written, never a data sector, and the volume key the exports use does not change). The
/// old key `key_uid` must still open the keyslot, and not be Compromised (then only a deep
/// rekey helps). Then retires the old key.
pub fn rewrap_held(
    kms: &mut KeyManager,
    dev: &Device,
    key_uid: &str,
    keep_old: bool,
    new_key_name: Option<&str>,
) -> Result<ConvertReport, ServiceError> {
    let started = Instant::now();
    let run = Run::new(Kind::Rekey, dev, started);
    // Before any request to the key server: a direct-mode volume has no keyslot to rewrap
    // (the daemon used to create, and discard, a key before finding that out).
    if let Found::Volume {
        key_mode: KeyMode::Direct,
        ..
    } = convert::inspect(dev.devices())?
    {
        return Err(Refusal::DirectModeNeedsDeepRekey {
            path: dev.location.path.clone(),
        }
        .into());
    }
    // A rewrap keeps the volume key, which a compromised KMIP key may have exposed
    // (whoever had the KMIP key could open the keyslot): only a deep rekey, which makes a
    // new volume key, answers a compromise.
    if kms.state(key_uid)? == kmip::enums::State::COMPROMISED {
        return Err(Refusal::CompromisedNeedsDeepRekey {
            path: dev.location.path.clone(),
            key_uid: key_uid.to_owned(),
        }
        .into());
    }
    let old = kms.fetch_for(key_uid, KeyUse::MoveOff)?;
    let new = kms.create(&key_name(new_key_name, dev))?;
    if let Err(e) = convert::rewrap(dev.devices(), &old, &new.secret, &new.uid) {
        return Err(kms.discard(&new.uid, e.into()));
    }
    let retired = retire_replaced(kms, key_uid, keep_old)?;
    let ms = started.elapsed().as_millis();
    let message = format!(
        "rekeyed in {ms} ms: the volume key is now wrapped under KMIP key {}; {}",
        shown(&new.uid),
        retired.sentence()
    );
    Ok(run.report(None, message, dev.status().ok(), Some(retired)))
}

/// The hot zone of a deep rekey while serving, unless the job asks for another.
pub const ONLINE_STEP: u64 = 1 << 20;

/// A deep rekey of a volume that is in use: `dev` is the device its worker holds and
/// `vol` the unlocked volume its exports read and write. The exports keep serving: `vol`
/// follows the rekey's boundary, and each step runs with its I/O held off
/// ([`volume::convert::online`]). A stop ends it at a committed step; the daemon finishes
/// it at the next start, before exporting. Then retires the old key.
#[allow(clippy::too_many_arguments)]
pub fn deep_rekey_held(
    kms: &mut KeyManager,
    dev: &Device,
    vol: &volume::volume::Unlocked,
    key_uid: &str,
    keep_old: bool,
    step: Option<u64>,
    obs: &mut dyn Observer,
    stop: &Stop,
) -> Result<ConvertReport, ServiceError> {
    let started = Instant::now();
    let run = Run::new(Kind::Rekey, dev, started);
    let old = kms.fetch_for(key_uid, KeyUse::MoveOff)?;
    let new = kms.create(&key_name(None, dev))?;
    if let Err(e) = convert::begin_rekey(dev.devices(), &old, &new.secret, &new.uid) {
        return Err(kms.discard(&new.uid, e.into()));
    }
    convert::follow(vol, dev.devices(), Some(&new.secret))?;
    let keys = Keys {
        current: Some(&old),
        new: Some(&new.secret),
    };
    // A step holds the exports' I/O off for its hot zone's read, journal, rewrite, two
    // syncs and commit: 1 MiB steps keep that pause short (the offline default is 8 MiB).
    let step = step.or(Some(ONLINE_STEP));
    if let Some(stopped) = run.drive_with(keys, step, obs, stop, Some(vol))? {
        return Ok(stopped);
    }
    let retired = retire_replaced(kms, key_uid, keep_old)?;
    let message = format!(
        "rekeyed while serving: every sector re-encrypted under a new volume key, KMIP key {}; {}",
        shown(&new.uid),
        retired.sentence()
    );
    Ok(run.report(None, message, dev.status().ok(), Some(retired)))
}

/// Puts a volume under a new KMIP key (rewrap, or `deep`: every sector re-encrypted), or
/// finishes an interrupted deep rekey; then retires the old key.
pub fn rekey(
    kms: &mut KeyManager,
    req: &RekeyRequest,
    obs: &mut dyn Observer,
    stop: &Stop,
) -> Result<ConvertReport, ServiceError> {
    let started = Instant::now();
    let loc = &req.location;
    let dev = Device::open(loc, false)?;
    let run = Run::new(Kind::Rekey, &dev, started);
    let (old_uid, old, new_uid, new) = match convert::inspect(dev.devices())? {
        Found::Volume { key_uid, key_mode } => {
            if !req.deep && key_mode == KeyMode::Direct {
                return Err(Refusal::DirectModeNeedsDeepRekey {
                    path: loc.path.clone(),
                }
                .into());
            }
            if !req.deep {
                return rewrap_held(kms, &dev, &key_uid, req.keep_old, req.key_name.as_deref());
            }
            let old = kms.fetch_for(&key_uid, KeyUse::MoveOff)?;
            let new = kms.create(&key_name(req.key_name.as_deref(), &dev))?;
            if let Err(e) = convert::begin_rekey(dev.devices(), &old, &new.secret, &new.uid) {
                return Err(kms.discard(&new.uid, e.into()));
            }
            (key_uid, Some(old), new.uid.clone(), new.secret)
        }
        Found::InProgress(p) if p.kind == Kind::Rekey => {
            resuming(obs, &p);
            let new_uid = p.new_key_uid.clone().unwrap_or_default();
            let old = if p.needs_current {
                Some(kms.fetch_for(&p.key_uid, KeyUse::MoveOff)?)
            } else {
                None
            };
            let new = kms.fetch_usable(&new_uid)?;
            (p.key_uid, old, new_uid, new)
        }
        Found::InProgress(p) => return Err(refuse_other(&p, loc)),
        Found::Plain => return Err(refuse_plain(loc, "rekey")),
        Found::OtherLuks => return Err(refuse_foreign(loc, ForeignAction::Rekey)),
    };
    let keys = Keys {
        current: old.as_deref().map(|s| &s[..]),
        new: Some(&new),
    };
    if let Some(stopped) = run.drive(keys, req.step, obs, stop)? {
        return Ok(stopped);
    }
    let retired = retire_replaced(kms, &old_uid, req.keep_old)?;
    let message = format!(
        "rekeyed: every sector re-encrypted under a new volume key, KMIP key {}; {}",
        shown(&new_uid),
        retired.sentence()
    );
    Ok(run.report(None, message, dev.status().ok(), Some(retired)))
}
